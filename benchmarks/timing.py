"""Timing helpers: per-call latency percentiles and throughput, after warm-up."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

import numpy as np


def batch_of(pixels: np.ndarray, size: int) -> np.ndarray:
    """A contiguous batch of `size` images taken from `pixels` in turn (repeating them when there are fewer)."""
    return np.ascontiguousarray(np.resize(pixels, (size, *pixels.shape[1:])))


def latency_ms(call: Callable[[], object], runs: int, warmup: int = 5) -> dict[str, float]:
    """p50, p95 and p99 of `runs` timed calls of `call`, in milliseconds."""
    for _ in range(warmup):
        call()
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        call()
        samples.append((time.perf_counter() - started) * 1000)
    p50, p95, p99 = np.percentile(samples, [50, 95, 99])
    return {"p50_ms": float(p50), "p95_ms": float(p95), "p99_ms": float(p99), "runs": runs}


def throughput(call: Callable[[], object], batch: int, min_seconds: float, min_runs: int = 3, warmup: int = 2) -> float:
    """Images per second of `call` processing `batch` images, timed over at least `min_seconds` and `min_runs`."""
    for _ in range(warmup):
        call()
    runs, started = 0, time.perf_counter()
    while runs < min_runs or time.perf_counter() - started < min_seconds:
        call()
        runs += 1
    return batch * runs / (time.perf_counter() - started)


def interleaved_throughput(calls: Mapping[str, Callable[[], object]], batch: int, rounds: int, warmup: int = 1) -> dict[str, float]:
    """Images per second of each of `calls` (each processing `batch` images): one timed call of each in turn,
    `rounds` times, the median per call. Taking turns spreads a shared machine's drift over all of them
    alike, so their ratios hold where timing one after the other would not."""
    for call in calls.values():
        for _ in range(warmup):
            call()
    seconds: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(rounds):
        for name, call in calls.items():
            started = time.perf_counter()
            call()
            seconds[name].append(time.perf_counter() - started)
    return {name: batch / float(np.median(taken)) for name, taken in seconds.items()}
