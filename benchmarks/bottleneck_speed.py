"""The bottleneck phase: features for real images with a naive TensorFlow loop vs the toolkit's path
(onnxruntime with decode-ahead, through the cache), a re-run on the warm cache, and whole `train-model`
runs, cold and warm."""

from __future__ import annotations

import io
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from rich.console import Console

from benchmarks.models import BackboneChoice
from runtime.imaging import load_for_model
from train.bottleneck import compute_bottlenecks
from train.cache import BottleneckCache
from train.engines import WorkerSpec
from train.extractor import EXTRACTOR_FILE, onnx_extractor
from train.views import View
from train.pipeline import TrainConfig, run


def measure_bottlenecks(choice: BackboneChoice, paths: Sequence[Path], workspace: Path, batch_size: int = 32) -> dict[str, object]:
    """Images/s of both paths over `paths` (one view each), the warm re-run, and the one-time ONNX conversion."""
    backbone = choice.backbone()
    extractor = backbone.build_extractor()
    started = time.perf_counter()
    for start in range(0, len(paths), batch_size):  # the naive loop: decode one by one, then run TensorFlow
        batch = np.stack([load_for_model(path, backbone.input_size) for path in paths[start : start + batch_size]])
        extractor.predict_on_batch(batch)
    tensorflow_seconds = time.perf_counter() - started

    cache = BottleneckCache(workspace, backbone)
    started = time.perf_counter()
    extract = onnx_extractor(extractor, cache.directory)
    conversion_seconds = time.perf_counter() - started
    quiet = Console(file=io.StringIO())
    spec = WorkerSpec(cache.directory / EXTRACTOR_FILE, backbone.input_size, (View(),))
    started = time.perf_counter()
    cold = compute_bottlenecks(paths, spec, cache, extract, batch_size=batch_size, console=quiet)
    cold_seconds = time.perf_counter() - started
    started = time.perf_counter()
    warm = compute_bottlenecks(paths, spec, cache, extract, batch_size=batch_size, console=quiet)
    warm_seconds = time.perf_counter() - started
    return {
        "backbone": choice.arch, "weights": choice.weights, "images": len(paths),
        "tensorflow_naive_images_per_s": len(paths) / tensorflow_seconds,
        "onnxruntime_cached_images_per_s": len(paths) / cold_seconds,
        "speedup": tensorflow_seconds / cold_seconds,
        "onnx_conversion_seconds_once": conversion_seconds,
        "cold_seconds": cold_seconds, "cold_computed": cold.computed,
        "warm_seconds": warm_seconds, "warm_computed": warm.computed,
        "warm_over_cold": warm_seconds / cold_seconds,
    }


def measure_training_rerun(data_dir: Path, workspace: Path, export: Path) -> dict[str, object]:
    """Two default training runs on `data_dir` sharing a fresh cache: seconds of each, whole and bottleneck phase."""
    quiet = Console(file=io.StringIO())
    cold, warm = (run(TrainConfig(data_dir=data_dir, export=export, workspace=workspace), console=quiet).report for _ in range(2))
    return {
        "data": str(data_dir), "views": TrainConfig.views,
        "cold_seconds": cold["seconds"], "warm_seconds": warm["seconds"],
        "cold_bottleneck_seconds": cold["bottlenecks"]["seconds"], "warm_bottleneck_seconds": warm["bottlenecks"]["seconds"],
        "warm_computed": warm["bottlenecks"]["computed"],
        "bottleneck_warm_over_cold": warm["bottlenecks"]["seconds"] / cold["bottlenecks"]["seconds"],
        "whole_run_warm_over_cold": warm["seconds"] / cold["seconds"],
    }
