"""What `train-model` and `quantize-model` share: the error exit and the edge-variant options."""

from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Iterator

import typer

from runtime.errors import RetrainOnnxError
from train.edge import CALIBRATION_IMAGES, TOLERANCE_POINTS, EdgeConfig
from train.entry_points import EXIT_INTERRUPTED

#: Exit code of a run stopped by a `RetrainOnnxError` (bad data, refused variant, unusable model).
EXIT_ERROR = 2

HALF_OPTION = typer.Option(False, "--half", help="Also write MODEL.fp16.onnx (fp16 for GPUs; uint8 input kept).")
CALIBRATION_OPTION = typer.Option(CALIBRATION_IMAGES, "--calibration-images", min=1, help="Training images that calibrate int8 ranges (stratified).")


def _finite(value: float) -> float:
    if not math.isfinite(value):
        overflow = "" if math.isnan(value) else " (a number beyond 1.8e308 reads as inf)"
        raise typer.BadParameter(f"must be a finite number of points, not {value}{overflow}")
    return value


TOLERANCE_OPTION = typer.Option(
    TOLERANCE_POINTS, "--tolerance", callback=_finite, help="Largest test accuracy loss, in points, a variant may have before it is refused."
)
FORCE_OPTION = typer.Option(False, "--force", help="Write a variant even when it loses more than --tolerance.")


def edge_config(int8: bool, fp16: bool, calibration_images: int, tolerance: float, force: bool) -> EdgeConfig:
    """The variants to make, refusing (usage error) options that would shape none of them: --tolerance and
    --force without any variant, --calibration-images without int8 (only int8 is calibrated)."""
    config = EdgeConfig(int8=int8, fp16=fp16, calibration_images=calibration_images, tolerance_points=tolerance, force=force)
    unused = [
        option
        for option, given, used in (
            ("--calibration-images", calibration_images != CALIBRATION_IMAGES, int8),
            ("--tolerance", tolerance != TOLERANCE_POINTS, int8 or fp16),
            ("--force", force, int8 or fp16),
        )
        if given and not used
    ]
    if unused:
        what = "int8" if unused == ["--calibration-images"] else "the variants"
        raise typer.BadParameter(f"shapes only {what}, and no such variant is asked for", param_hint=" / ".join(unused))
    return config


@contextmanager
def exit_on_error(kept: str) -> Iterator[None]:
    """Turn a `RetrainOnnxError` into its one-line message on stderr and exit code `EXIT_ERROR`, and Ctrl-C
    into `interrupted: <kept>` and `EXIT_INTERRUPTED`; `kept` tells what an interrupted run of this command
    leaves. Every output is written atomically, so finished files are complete and unfinished ones absent."""
    try:
        yield
    except RetrainOnnxError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(EXIT_ERROR)
    except KeyboardInterrupt:
        typer.echo(f"interrupted: {kept}", err=True)
        raise typer.Exit(EXIT_INTERRUPTED)
