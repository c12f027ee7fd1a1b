"""Feature extraction without TensorFlow: what every bottleneck worker (this process, a local worker
process or a Ray actor) runs on a batch of images.

Only numpy, onnxruntime and `runtime` are imported here, so workers start fast and never load
TensorFlow; the backbone arrives as the ONNX file made by `train.extractor`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort

from runtime.errors import ImageError
from runtime.imaging import try_load_for_model
from runtime.metadata import INPUT_NAME
from runtime.session import SessionSettings
from train.views import ImageView

FEATURES_OUTPUT = "features"

#: Per image: its (views, feature_dim) features, or the error that made it unreadable.
ImageFeatures = np.ndarray | ImageError


class OnnxExtractor:
    """uint8 (N, H, W, 3) images -> float32 (N, feature_dim) features, on onnxruntime's CPU provider.

    `model` is the backbone's ONNX file or its bytes (bytes travel to Ray workers on other machines).
    """

    def __init__(self, model: Path | bytes, settings: SessionSettings | None = None) -> None:
        self._session = ort.InferenceSession(
            model if isinstance(model, bytes) else str(model),
            sess_options=(settings or SessionSettings()).options(),
            providers=["CPUExecutionProvider"],
        )

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        (features,) = self._session.run([FEATURES_OUTPUT], {INPUT_NAME: pixels})
        return features


def decode(name: str, data: bytes | None, input_size: tuple[int, int]) -> np.ndarray | ImageError:
    """Decode and resize one image (from `data`, or read from the file `name`); the error instead of raising."""
    return try_load_for_model(Path(name) if data is None else data, input_size, name=name)


def features_of(
    decoded: Sequence[np.ndarray | ImageError], views: Sequence[ImageView], extract: Callable[[np.ndarray], np.ndarray]
) -> list[ImageFeatures]:
    """Features of every view of each decoded image in one backbone batch (errors passed through, in place).

    The batch is view-major (all images' view 0 first), as the exported graph stacks it.
    """
    good = [pixels for pixels in decoded if not isinstance(pixels, ImageError)]
    if not good:
        return list(decoded)
    images = np.stack(good)
    batch = np.concatenate([view.apply(images) for view in views])
    features = np.asarray(extract(batch), dtype=np.float32)
    per_image = iter(features.reshape(len(views), len(good), -1).swapaxes(0, 1))
    return [pixels if isinstance(pixels, ImageError) else next(per_image) for pixels in decoded]


class FeatureWorker:
    """One backbone session plus the decode step: a batch of image files in, their features out.

    `threads` sets onnxruntime's intra-op threads (0 = one per core); workers that share a machine use 1.
    """

    def __init__(self, model: Path | bytes, input_size: tuple[int, int], views: Sequence[ImageView], threads: int = 0) -> None:
        self.input_size = input_size
        self.views = list(views)
        self.extract = OnnxExtractor(model, SessionSettings(intra_op_threads=threads))

    def run(self, items: Sequence[tuple[str, bytes | None]], view_indices: Sequence[int]) -> list[ImageFeatures]:
        """Features of the views at `view_indices` of (file name, file bytes or None to read the file here)
        items, in order."""
        views = [self.views[index] for index in view_indices]
        return features_of([decode(name, data, self.input_size) for name, data in items], views, self.extract)
