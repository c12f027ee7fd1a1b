"""End-to-end `classify` of a folder: images/s, and how the time splits between decoding and inference."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from runtime import Classifier
from runtime.imaging import load_for_model


def measure_classify_folder(onnx_path: Path, paths: Sequence[Path], batch_size: int = 32) -> dict[str, object]:
    """Wall time of `Classifier.classify_files` (decode overlapped with inference) and of each part alone."""
    classifier = Classifier(onnx_path, providers="cpu")
    list(classifier.classify_files(paths[:batch_size], batch_size))  # warm-up
    started = time.perf_counter()
    results = list(classifier.classify_files(paths, batch_size))
    wall = time.perf_counter() - started
    started = time.perf_counter()
    pixels = [load_for_model(path, classifier.input_size) for path in paths]
    decode = time.perf_counter() - started
    started = time.perf_counter()
    for start in range(0, len(pixels), batch_size):
        classifier.predict_pixels(np.stack(pixels[start : start + batch_size]))
    inference = time.perf_counter() - started
    return {
        "images": len(results), "views": classifier.metadata.views, "images_per_s": len(results) / wall,
        "wall_seconds": wall, "decode_seconds_one_thread": decode, "inference_seconds": inference,
        "decode_share": decode / (decode + inference),
    }
