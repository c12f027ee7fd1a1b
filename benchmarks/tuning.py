"""onnxruntime session settings compared on one model: the evidence for `runtime.SessionSettings` defaults."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from benchmarks.timing import batch_of, latency_ms, throughput
from runtime import Classifier, SessionSettings


def measure_settings(onnx_path: Path, pixels: np.ndarray, latency_runs: int, min_seconds: float) -> list[dict[str, object]]:
    """Batch-1 latency and batch-32 throughput for thread counts x optimisation levels (plus the defaults)."""
    cores = os.cpu_count() or 1
    grid = [SessionSettings()] + [
        SessionSettings(intra_op_threads=threads, optimization=level)
        for threads in sorted({1, cores}) for level in ("basic", "all")
    ]
    batch = batch_of(pixels, 32)
    rows = []
    for settings in grid:
        classifier = Classifier(onnx_path, providers="cpu", settings=settings)
        rows.append({
            "intra_op_threads": settings.intra_op_threads or f"0 (auto: {cores})", "optimization": settings.optimization,
            "default": settings == SessionSettings(),
            "batch1_p50_ms": latency_ms(lambda: classifier.predict_pixels(batch[:1]), latency_runs)["p50_ms"],
            "batch32_images_per_s": throughput(lambda: classifier.predict_pixels(batch), 32, min_seconds),
        })
    return rows
