"""ONNX export: the fused Keras model (normalisation + backbone + head) to one checked ONNX file.

The file is written to a temporary name, checked with `onnx.checker`, compared with TensorFlow on real
images under onnxruntime, and only then renamed into place: a failed export never leaves a model behind.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import keras
import numpy as np
import onnx
import onnxruntime as ort
import tensorflow as tf
import tf2onnx

from runtime.errors import RetrainOnnxError
from runtime.metadata import INPUT_NAME, LABEL_INDEX_OUTPUT, PROBABILITIES_OUTPUT, ModelMetadata
from train.atomic import atomic_output
from train.onnx_metadata import write_metadata
from train.pixel_path import run_pixel_path_in_uint8
from train.view_layers import MeanOverViews, StackViews
from train.views import View

#: ONNX opset of exported models (onnxruntime >= 1.13 runs it; tf2onnx's well-tested range).
OPSET = 17
#: Largest allowed difference between TensorFlow and onnxruntime probabilities on the parity images.
PARITY_TOLERANCE = 1e-4
#: Parity images per run: small, because a model with symmetry views runs 8 backbone images per image.
PARITY_BATCH = 4

logging.getLogger("tf2onnx").setLevel(logging.ERROR)


class ExportError(RetrainOnnxError):
    """The ONNX model failed a check; nothing was written."""


@dataclass(frozen=True)
class ExportResult:
    """Where the model went and how closely it matches TensorFlow."""

    path: Path
    opset: int
    parity_images: int
    max_abs_difference: float
    tolerance: float


def fuse(extractor: keras.Model, head: keras.Model, views: Sequence[View] = (View(),)) -> keras.Model:
    """One Keras model: uint8 images -> class probabilities, averaged over the symmetry `views`.

    All views of a batch go through the backbone as one batch of V * N images.
    """
    image = keras.Input(extractor.input_shape[1:], dtype="uint8", name=INPUT_NAME)
    per_view = head(extractor(StackViews(list(views), name="symmetry_views")(image)))
    return keras.Model(image, MeanOverViews(len(views), name="mean_over_views")(per_view), name="classifier")


def export_onnx(
    model: keras.Model,
    metadata: ModelMetadata,
    path: str | Path,
    parity_pixels: np.ndarray,
    tolerance: float = PARITY_TOLERANCE,
) -> ExportResult:
    """Convert `model` to ONNX with `metadata` inside, verify it, and write it atomically to `path`.

    Raises `ExportError` when the checker fails or onnxruntime and TensorFlow disagree on
    `parity_pixels` (uint8 NHWC) by more than `tolerance` or on any predicted label.
    """
    path = Path(path)
    proto = convert(model, metadata.input_size, _classifier_outputs)
    write_metadata(proto, metadata)
    proto.doc_string = f"retrain-onnx classifier: {metadata.backbone} + softmax head, labels {metadata.labels}"
    try:
        onnx.checker.check_model(proto, full_check=True)
    except onnx.checker.ValidationError as error:
        raise ExportError(f"{path}: exported graph fails onnx.checker ({error})") from error
    with atomic_output(path) as temporary:
        temporary.write_bytes(proto.SerializeToString())
        difference = _check_parity(model, temporary, parity_pixels, tolerance, path)
    return ExportResult(path, OPSET, len(parity_pixels), difference, tolerance)


def convert(model: keras.Model, input_size: tuple[int, int], outputs: Callable[[tf.Tensor], dict[str, tf.Tensor]]) -> onnx.ModelProto:
    """`trace`, then the pixel path rewritten to run in uint8 (`train.pixel_path`; the same values, faster)."""
    proto = trace(model, input_size, outputs)
    run_pixel_path_in_uint8(proto)
    return proto


def trace(model: keras.Model, input_size: tuple[int, int], outputs: Callable[[tf.Tensor], dict[str, tf.Tensor]]) -> onnx.ModelProto:
    """Trace `outputs(model(images))` for uint8 (N, H, W, 3) `images` into an ONNX graph at `OPSET`, as tf2onnx
    converts it."""
    signature = [tf.TensorSpec([None, *input_size, 3], tf.uint8, name=INPUT_NAME)]

    @tf.function(input_signature=signature)
    def serve(images: tf.Tensor) -> dict[str, tf.Tensor]:
        return outputs(model(images, training=False))

    proto, _ = tf2onnx.convert.from_function(serve, input_signature=signature, opset=OPSET)
    return proto


def _classifier_outputs(probabilities: tf.Tensor) -> dict[str, tf.Tensor]:
    return {PROBABILITIES_OUTPUT: probabilities, LABEL_INDEX_OUTPUT: tf.argmax(probabilities, axis=-1)}


def _check_parity(model: keras.Model, onnx_path: Path, pixels: np.ndarray, tolerance: float, target: Path) -> float:
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    chunks = [pixels[start : start + PARITY_BATCH] for start in range(0, len(pixels), PARITY_BATCH)]
    onnx_runs = [session.run([PROBABILITIES_OUTPUT, LABEL_INDEX_OUTPUT], {INPUT_NAME: chunk}) for chunk in chunks]
    onnx_probabilities, onnx_labels = (np.concatenate(parts) for parts in zip(*onnx_runs))
    tf_probabilities = np.concatenate([np.asarray(model(chunk, training=False)) for chunk in chunks])
    difference = float(np.abs(onnx_probabilities - tf_probabilities).max())
    if difference > tolerance:
        raise ExportError(f"{target}: onnxruntime and TensorFlow differ by {difference:.2e} > {tolerance:.0e}; not written")
    if not np.array_equal(onnx_labels, tf_probabilities.argmax(axis=1)):
        raise ExportError(f"{target}: onnxruntime and TensorFlow predict different labels; not written")
    return difference
