"""`quantize-model`: int8 (and fp16) versions of an exported model, checked on its test split.

Needs onnx and onnxruntime (the train extra) but not TensorFlow. The test split is rebuilt from the
model's own metadata (proportions, seed, label source and group pattern of its training run), so the
check runs on the same held-out images as training's evaluation when given the same data folder.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from train import ONNX_TOOLS, require_train_extra

require_train_extra("quantize-model", ONNX_TOOLS)

import typer  # noqa: E402

from runtime import Classifier  # noqa: E402
from train.console import training_console  # noqa: E402
from train.cli_common import CALIBRATION_OPTION, FORCE_OPTION, HALF_OPTION, TOLERANCE_OPTION, edge_config, exit_on_error  # noqa: E402
from train.data import DatasetError, LabelSource, load_dataset  # noqa: E402
from train.edge import make_variants  # noqa: E402

app = typer.Typer(add_completion=False, help="Make int8 / fp16 versions of an exported model and check them on its test split.")


@app.command()
def quantize_model(
    model: Path = typer.Argument(..., help="An ONNX model exported by train-model."),
    calibrate: Path = typer.Option(..., "--calibrate", help="The labelled data folder the model was trained on."),
    int8: bool = typer.Option(True, "--int8/--no-int8", help="Write MODEL.int8.onnx."),
    half: bool = HALF_OPTION,
    calibration_images: int = CALIBRATION_OPTION,
    tolerance: float = TOLERANCE_OPTION,
    force: bool = FORCE_OPTION,
) -> None:
    """Write MODEL.int8.onnx (and MODEL.fp16.onnx with --half) with a report beside each."""
    if not int8 and not half:
        raise typer.BadParameter("nothing to do: --no-int8 without --half", param_hint="'--no-int8'")
    config = edge_config(int8, half, calibration_images, tolerance, force)  # refuses options no variant uses
    console = training_console()
    with exit_on_error("variants finished before it are kept; none is half-written"):
        metadata = Classifier(model, providers="cpu").metadata
        split = metadata.split or {}
        if not split:
            console.print(f"note: {model} does not record its split; using train-model's defaults (70,15,15, seed 0)")
        seed = int(split.get("seed", 0))
        dataset = load_dataset(
            calibrate,
            LabelSource(split.get("labels_from", LabelSource.folder.value)),
            tuple(split.get("proportions", (0.7, 0.15, 0.15))),
            seed,
            split.get("group_pattern"),
        )
        if dataset.labels != metadata.labels:
            raise DatasetError(f"{calibrate}: classes {dataset.labels} differ from the model's labels {metadata.labels}")
        make_variants(model, dataset, replace(config, seed=seed), console)


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
