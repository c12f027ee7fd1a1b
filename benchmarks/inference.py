"""Inference speed of one model in onnxruntime (through `runtime`) and in TensorFlow, side by side."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from benchmarks.models import BenchModel
from benchmarks.timing import batch_of, latency_ms, throughput
from runtime import Classifier

ENGINES = ("onnxruntime", "tensorflow")


def measure_inference(
    model: BenchModel,
    pixels: np.ndarray,
    batch_sizes: Sequence[int],
    latency_runs: int,
    min_seconds: float,
    flops_per_image: float,
) -> list[dict[str, object]]:
    """One row per (engine, batch size): images/s, ms per image, GFLOP per image; latency percentiles at batch 1.

    `pixels` is a pool of real decoded images at the model's input size; batches are cut from it in turn.
    """
    classifier = Classifier(model.onnx_path, providers="cpu")
    tensorflow = model.tensorflow_function()
    calls = {
        "onnxruntime": lambda batch: classifier.predict_pixels(batch),
        "tensorflow": lambda batch: tensorflow(tf.constant(batch)).numpy(),
    }
    rows = []
    for batch_size in batch_sizes:
        batch = batch_of(pixels, batch_size)
        for engine in ENGINES:
            call = calls[engine]
            rate = throughput(lambda: call(batch), batch_size, min_seconds)
            row = {
                "backbone": model.choice.arch, "weights": model.choice.weights, "input": list(model.input_size),
                "views": model.views, "engine": engine, "batch": batch_size, "images_per_s": rate,
                "ms_per_image": 1000 / rate, "gflops_per_image": flops_per_image / 1e9,
            }
            if batch_size == 1:
                row.update(latency_ms(lambda: call(batch), latency_runs))
            rows.append(row)
    return rows


def speedups(rows: list[dict[str, object]]) -> list[dict[str, object]]:
    """onnxruntime / TensorFlow throughput per (backbone, views, batch), from rows of one run."""
    found = []
    for row in rows:
        if row["engine"] != "onnxruntime":
            continue
        twin = next(
            other for other in rows
            if other["engine"] == "tensorflow" and (other["backbone"], other["views"], other["batch"]) == (row["backbone"], row["views"], row["batch"])
        )
        found.append({
            "backbone": row["backbone"], "views": row["views"], "batch": row["batch"],
            "onnxruntime_over_tensorflow": row["images_per_s"] / twin["images_per_s"],
        })
    return found
