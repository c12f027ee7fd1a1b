"""The public `Classifier`: images in, labelled predictions out, on onnxruntime alone."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np

from runtime.errors import ImageError
from runtime.imaging import ImageSource, describe_source, load_for_model, try_load_for_model
from runtime.metadata import INPUT_NAME, PROBABILITIES_OUTPUT, DecisionThreshold, ModelMetadata
from runtime.model import Providers, load_model
from runtime.prefetch import chunked, decode_ahead
from runtime.session import SessionSettings


#: Most backbone images per onnxruntime run. A model averaging over V symmetry views runs V backbone
#: images per input image, so batches are cut to MAX_BACKBONE_BATCH // V images to bound memory.
MAX_BACKBONE_BATCH = 32


@dataclass(frozen=True)
class Prediction:
    """One image's result: the winning label, its probability, and every class's probability."""

    label: str
    score: float
    index: int
    probabilities: dict[str, float]
    source: str

    def top_k(self, k: int) -> list[tuple[str, float]]:
        """`k` (label, probability) pairs: the predicted label first, then the others, most probable first.

        Without a decision threshold that is simply the `k` most probable. With one (two-class models,
        `Classifier.prediction_from`), the predicted label can be the less probable class, and it still
        comes first.
        """
        if k < 1:
            raise ValueError(f"top_k needs k >= 1, not {k}")
        others = sorted(((label, p) for label, p in self.probabilities.items() if label != self.label), key=lambda item: item[1], reverse=True)
        return [(self.label, self.score), *others][:k]

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready dict: file, label, score, probabilities."""
        return {"file": self.source, "label": self.label, "score": self.score, "probabilities": self.probabilities}


@dataclass(frozen=True)
class FileResult:
    """The outcome for one file of a folder run: a prediction, or the error that stopped it."""

    file: str
    prediction: Prediction | None = None
    error: ImageError | None = None


def _check_batch_size(batch_size: int) -> None:
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, not {batch_size}")


def decide(row: np.ndarray, labels: Sequence[str], threshold: DecisionThreshold | None) -> int:
    """The predicted class index for probabilities `row`: by `threshold` when given, else the most probable."""
    if threshold is None:
        return int(np.argmax(row))
    positive = list(labels).index(threshold.positive)
    return positive if row[positive] >= threshold.threshold else 1 - positive


class Classifier:
    """An exported retrain-onnx model, ready to classify images.

    `providers` is "auto" (CUDA when onnxruntime-gpu offers it, else CPU), "cpu", "cuda", or an explicit
    list of onnxruntime provider names; `settings` tunes threads and graph optimisation. Images may be
    paths, encoded bytes, PIL images or uint8 arrays (HxW, HxWx1, HxWx3 or HxWx4); they are decoded and
    resized exactly as in training. One Classifier may be used from several threads at once.
    """

    def __init__(self, path: str | Path, providers: Providers = "auto", settings: SessionSettings | None = None) -> None:
        self._model = load_model(path, providers, settings)
        self._labels = self._model.metadata.labels

    @property
    def metadata(self) -> ModelMetadata:
        """Everything the model file says about itself."""
        return self._model.metadata

    @property
    def labels(self) -> list[str]:
        """Class labels in output order."""
        return list(self._labels)

    @property
    def input_size(self) -> tuple[int, int]:
        """(height, width) the model takes."""
        return self._model.metadata.input_size

    @property
    def provider(self) -> str:
        """The onnxruntime execution provider in use, e.g. "CPUExecutionProvider"."""
        return self._model.provider

    def predict(self, image: ImageSource) -> Prediction:
        """Classify one image. Raises `ImageError` when it cannot be decoded."""
        return self.predict_batch([image], batch_size=1)[0]

    def predict_batch(self, images: Sequence[ImageSource], batch_size: int = 32) -> list[Prediction]:
        """Classify images in batches of `batch_size`; raises `ImageError` on the first bad image."""
        _check_batch_size(batch_size)
        predictions: list[Prediction] = []
        for chunk in chunked(images, batch_size):
            pixels = np.stack([load_for_model(image, self.input_size) for image in chunk])
            predictions.extend(self.predict_pixels(pixels, [describe_source(image) for image in chunk]))
        return predictions

    def predict_pixels(self, pixels: np.ndarray, sources: Sequence[str] | None = None) -> list[Prediction]:
        """Classify an already resized uint8 NHWC batch at the model's input size (run in memory-bounded pieces)."""
        if pixels.dtype != np.uint8 or pixels.shape[1:] != (*self.input_size, 3):
            raise ValueError(f"pixels must be uint8 of shape (N, {self.input_size[0]}, {self.input_size[1]}, 3)")
        step = max(1, MAX_BACKBONE_BATCH // self.metadata.views)
        runs = [self._probabilities(pixels[start : start + step]) for start in range(0, len(pixels), step)]
        probabilities = np.concatenate(runs) if runs else np.zeros((0, len(self._labels)), np.float32)
        names = sources if sources is not None else [f"<image {i}>" for i in range(len(pixels))]
        return [self.prediction_from(row, name) for row, name in zip(probabilities, names)]

    def classify_files(self, paths: Iterable[str | Path], batch_size: int = 32) -> Iterator[FileResult]:
        """Classify files in order; a file that cannot be decoded yields a result with its error.

        `paths` may be a lazy stream (a huge `--list`): it is read a batch or two ahead, never held whole.

        Decoding runs in a thread pool, a batch ahead of inference, so the two overlap.
        """
        _check_batch_size(batch_size)
        chunks = chunked((str(path) for path in paths), batch_size)
        with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
            for chunk, decoded in decode_ahead(pool, chunks, lambda path: try_load_for_model(path, self.input_size)):
                good = [(name, pixels) for name, pixels in zip(chunk, decoded) if not isinstance(pixels, ImageError)]
                predictions = iter(
                    self.predict_pixels(np.stack([p for _, p in good]), [n for n, _ in good]) if good else []
                )
                for name, pixels in zip(chunk, decoded):
                    if isinstance(pixels, ImageError):
                        yield FileResult(file=name, error=pixels)
                    else:
                        yield FileResult(file=name, prediction=next(predictions))

    def _probabilities(self, pixels: np.ndarray) -> np.ndarray:
        (probabilities,) = self._model.session.run([PROBABILITIES_OUTPUT], {INPUT_NAME: pixels})
        return probabilities

    def prediction_from(self, row: np.ndarray, source: str) -> Prediction:
        """The `Prediction` for one image's class probabilities `row` (in label order), e.g. computed elsewhere.

        A two-class model with a decision threshold in its metadata predicts its positive class when that
        class's probability reaches the threshold; otherwise the most probable class wins.
        """
        index = decide(row, self._labels, self.metadata.decision_threshold)
        return Prediction(
            label=self._labels[index],
            score=float(row[index]),
            index=index,
            probabilities={label: float(p) for label, p in zip(self._labels, row)},
            source=source,
        )
