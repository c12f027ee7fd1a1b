"""Names of the files written beside a model: its report, plots and int8/fp16 variants."""

from __future__ import annotations

from pathlib import Path

#: The ending a model file normally has; other endings are kept as part of the name.
MODEL_SUFFIX = ".onnx"
#: The variants `train-model --quantize int8 --half` and `quantize-model` write beside a model.
PRECISIONS = ("int8", "fp16")


def model_stem(model_path: Path) -> Path:
    """`model.onnx` -> `model`; a name without `.onnx` stays whole (`model.v2` -> `model.v2`), so models
    named `model.v1` and `model.v2` never share a report."""
    return model_path.with_suffix("") if model_path.suffix.lower() == MODEL_SUFFIX else model_path


def report_path_for(model_path: Path) -> Path:
    """`model.onnx` -> `model.report.json`."""
    return sibling(model_path, ".report.json")


def variant_path(model_path: Path, precision: str) -> Path:
    """`model.onnx` -> `model.int8.onnx` / `model.fp16.onnx`."""
    return sibling(model_path, f".{precision}{MODEL_SUFFIX}")


def sibling(model_path: Path, ending: str) -> Path:
    """The file named like the model without `.onnx`, plus `ending`."""
    stem = model_stem(model_path)
    return stem.with_name(stem.name + ending)


def own_report_stems(model_path: Path) -> list[Path]:
    """The report stems `train-model` and `quantize-model` write for `model_path` and its variants
    (`model`, `model.int8`, `model.fp16`): another report must not take their place."""
    return [model_stem(model_path), *(model_stem(variant_path(model_path, precision)) for precision in PRECISIONS)]
