"""`train-model`: train a classifier on a labelled image folder and export it as one ONNX file."""

from __future__ import annotations

import math
import os
import re

from train import TRAINING, require_train_extra

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is imported below
require_train_extra("train-model", TRAINING)

from enum import Enum
from pathlib import Path
from typing import Optional

import typer

from train.backbones import DEFAULT_ARCH, OFFLINE_BACKBONES, REGISTRY
from train.data import LabelSource
from runtime.cli import refuse_unused_options
from runtime.distributed import Engine
from train.engines import EngineConfig
from train.cli_common import CALIBRATION_OPTION, FORCE_OPTION, HALF_OPTION, TOLERANCE_OPTION, edge_config, exit_on_error
from train.fine_tune import FineTuneConfig
from train.head import C_GRID, HeadConfig
from train.pipeline import TrainConfig, run

class Precision(str, Enum):
    """Quantized formats `--quantize` can write."""

    int8 = "int8"

#: Smallest share of the images a non-empty split may have (a class would need 1 / share images).
MIN_SPLIT_SHARE = 0.001

app = typer.Typer(add_completion=False, help="Train an image classifier by transfer learning and export it to ONNX.")


def _numbers(text: str, option: str, example: str) -> list[float]:
    """The comma-separated finite numbers of `option`'s value, or a usage error naming the option."""
    try:
        values = [float(part) for part in text.split(",")]
    except ValueError:
        values = []
    if not values or not all(math.isfinite(value) for value in values):
        raise typer.BadParameter(f"{text!r}: give numbers separated by commas, e.g. {example}", param_hint=option)
    return values


def _parse_split(text: str) -> tuple[float, float, float]:
    parts = _numbers(text, "--split", "70,15,15")
    if len(parts) != 3 or min(parts) < 0 or parts[0] <= 0:  # so the sum is above 0 too
        raise typer.BadParameter(f"{text!r}: give three non-negative numbers train,validation,test with train above 0, e.g. 70,15,15", param_hint="--split")
    total = sum(parts)
    shares = (parts[0] / total, parts[1] / total, parts[2] / total)
    if any(0 < share < MIN_SPLIT_SHARE for share in shares):
        raise typer.BadParameter(f"{text!r}: a split that is not empty needs at least {MIN_SPLIT_SHARE:.1%} of the images", param_hint="--split")
    return shares


#: The inverse regularisation strengths --c-values accepts (the default grid spans 3e-4 to 0.1).
C_RANGE = (1e-6, 1e6)


def _parse_c_values(text: str) -> tuple[float, ...]:
    values = tuple(_numbers(text, "--c-values", "0.001,0.01,0.1"))
    if min(values) < C_RANGE[0] or max(values) > C_RANGE[1]:  # beyond it L-BFGS overflows or the head is constant
        raise typer.BadParameter(f"{text!r}: C values must lie between {C_RANGE[0]:g} and {C_RANGE[1]:g}", param_hint="--c-values")
    return values


def _check_group_pattern(pattern: str | None) -> str | None:
    if pattern is not None:
        try:
            re.compile(pattern)
        except re.error as error:
            raise typer.BadParameter(f"{pattern!r} is not a regular expression ({error})", param_hint="--group-pattern") from error
    return pattern


@app.command()
def train_model(
    data_dir: Path = typer.Argument(..., help="Folder of images, one sub-folder per class (or see --labels-from)."),
    export: Path = typer.Option(Path("model.onnx"), "--export", help="Where to write the ONNX model."),
    arch: str = typer.Option(DEFAULT_ARCH, "--arch", help=f"Backbone: {', '.join(REGISTRY)}."),
    weights: Optional[str] = typer.Option(
        None, "--weights",
        help=f"bundled (offline ImageNet, for {', '.join(OFFLINE_BACKBONES)}), imagenet (Keras download), "
        "none (random), or a weights file. Default: bundled where present, else imagenet.",
    ),
    image_size: Optional[int] = typer.Option(None, "--image-size", min=32, help="Square input size; default: the backbone's."),
    labels_from: LabelSource = typer.Option(LabelSource.folder, "--labels-from", help="Labels from sub-folder names or file-name prefixes."),
    split: str = typer.Option("70,15,15", "--split", help="Train,validation,test proportions."),
    group_pattern: Optional[str] = typer.Option(None, "--group-pattern", help=r"Regex; files sharing its first group stay in one split, e.g. '^(\d+)-'."),
    views: int = typer.Option(
        TrainConfig.views, "--views",
        help="Symmetry views to train on and average over: 1 (image only, fastest model), 2 (+ mirror), "
        "4 (all flips), 8 (flips and 90-degree rotations) or 16 (those 8 and the same 8 of the image's "
        "central 87.5%, zoomed: a second scale, twice the backbone work).",
    ),
    workspace: Path = typer.Option(Path(".retrain-cache"), "--workspace", help="Folder for the bottleneck cache."),
    engine: Engine = typer.Option(Engine.local, "--engine", help="Where the bottleneck phase runs: local (this machine) or ray."),
    workers: Optional[int] = typer.Option(
        None, "--workers", min=1,
        help="local: processes for decoding + features (default 1: this process); ray: actors (default: one per cluster CPU).",
    ),
    ray_address: Optional[str] = typer.Option(
        None, "--ray-address", help="Existing Ray cluster, e.g. ray://head:10001 or auto; default: start a local Ray instance."
    ),
    c_values: str = typer.Option(
        ",".join(f"{c:g}" for c in C_GRID), "--c-values",
        help="Inverse L2 strengths C to try for the logistic-regression head; validation picks one.",
    ),
    class_weights: bool = typer.Option(HeadConfig.class_weights, "--class-weights/--no-class-weights", help="Weight classes by inverse frequency."),
    seed: int = typer.Option(TrainConfig.seed, "--seed", min=0, max=2**32 - 1, help="Seed for the split and random weights."),
    augment: int = typer.Option(0, "--augment", min=0, help="Seeded augmented views per training image (crops, flips, turns, brightness/contrast), cached."),
    fine_tune_layers: int = typer.Option(0, "--fine-tune-layers", min=0, help="After the head, train the top K backbone layers end to end (low learning rate)."),
    fine_tune_epochs: int = typer.Option(FineTuneConfig.epochs, "--fine-tune-epochs", min=1, help="Epochs of --fine-tune-layers."),
    positive: Optional[str] = typer.Option(None, "--positive", help="Two classes: the positive class for the decision threshold (default: the second label)."),
    target_recall: Optional[float] = typer.Option(
        None, "--target-recall", min=0.0, max=1.0,
        help="Two classes: pick the threshold that reaches this recall of the positive class on validation (default: best balanced accuracy).",
    ),
    quantize: Optional[Precision] = typer.Option(None, "--quantize", help="Also write MODEL.int8.onnx, checked on the test split."),
    half: bool = HALF_OPTION,
    calibration_images: int = CALIBRATION_OPTION,
    tolerance: float = TOLERANCE_OPTION,
    force: bool = FORCE_OPTION,
) -> None:
    """Train on DATA_DIR and export one ONNX file plus MODEL.report.json."""
    refuse_unused_options({"--ray-address": ray_address is not None}, engine is Engine.ray, "--engine ray")
    refuse_unused_options({"--fine-tune-epochs": fine_tune_epochs != FineTuneConfig.epochs}, fine_tune_layers > 0, "--fine-tune-layers")
    config = TrainConfig(
        data_dir=data_dir,
        export=export,
        arch=arch,
        weights=weights,
        image_size=(image_size, image_size) if image_size else None,
        labels_from=labels_from,
        split=_parse_split(split),
        group_pattern=_check_group_pattern(group_pattern),
        workspace=workspace,
        views=views,
        seed=seed,
        head=HeadConfig(c_values=_parse_c_values(c_values), class_weights=class_weights),
        engine=EngineConfig(engine=engine, workers=workers, ray_address=ray_address),
        augment=augment,
        fine_tune=FineTuneConfig(layers=fine_tune_layers, epochs=fine_tune_epochs),
        positive=positive,
        target_recall=target_recall,
        edge=edge_config(quantize is Precision.int8, half, calibration_images, tolerance, force),
    )
    with exit_on_error("finished work is kept (cached features, written files); run the same command again to resume"):
        run(config)


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
