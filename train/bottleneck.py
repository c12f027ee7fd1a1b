"""The bottleneck phase: compute each image's backbone features once, through the cache."""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import keras
import numpy as np
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from runtime.errors import ImageError
from runtime.imaging import load_for_model
from train.cache import BottleneckCache


@dataclass
class BottleneckResult:
    """Features of every readable image, plus what was computed, reused and skipped."""

    features: dict[Path, np.ndarray] = field(default_factory=dict)
    computed: int = 0
    reused: int = 0
    failures: list[ImageError] = field(default_factory=list)


def compute_bottlenecks(
    paths: Sequence[Path],
    extractor: keras.Model,
    cache: BottleneckCache,
    input_size: tuple[int, int],
    batch_size: int = 32,
    console: Console | None = None,
) -> BottleneckResult:
    """Features for `paths`, read from `cache` or computed with `extractor` and stored.

    Unreadable images are collected in `failures` and skipped. Decoding runs in a thread pool.
    """
    console = console or Console(soft_wrap=True, highlight=False)
    result = BottleneckResult()
    todo: list[tuple[Path, str, bytes]] = []
    for path in paths:
        try:
            data = path.read_bytes()
        except OSError as error:
            result.failures.append(ImageError(path, f"cannot read file ({error.strerror})"))
            continue
        content_hash = hashlib.sha256(data).hexdigest()
        cached = cache.get(content_hash)
        if cached is None:
            todo.append((path, content_hash, data))
        else:
            result.features[path] = cached
            result.reused += 1
    if not todo:
        console.print(f"Bottlenecks: all {result.reused} found in cache, nothing computed")
        return result
    console.print(f"Bottlenecks: {result.reused} cached, {len(todo)} to compute")

    def decode(item: tuple[Path, str, bytes]) -> np.ndarray | ImageError:
        path, _, data = item
        try:
            return load_for_model(data, input_size, name=str(path))
        except ImageError as error:
            return error

    with _progress(console) as progress, ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        task = progress.add_task("Computing bottlenecks", total=len(todo))
        for start in range(0, len(todo), batch_size):
            chunk = todo[start : start + batch_size]
            decoded = list(pool.map(decode, chunk))
            good = [(item, pixels) for item, pixels in zip(chunk, decoded) if not isinstance(pixels, ImageError)]
            result.failures.extend(pixels for pixels in decoded if isinstance(pixels, ImageError))
            if good:
                batch = np.stack([pixels for _, pixels in good])
                features = np.asarray(extractor.predict_on_batch(batch), dtype=np.float32)
                for ((path, content_hash, _), _), row in zip(good, features):
                    cache.put(content_hash, row)
                    result.features[path] = row
                    result.computed += 1
            progress.advance(task, len(chunk))
    for failure in result.failures:
        console.print(f"[yellow]skipped[/yellow] {failure}", highlight=False)
    return result


class _ImagesPerSecond(ProgressColumn):
    """Progress column showing the processing rate in images per second."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:.1f} images/s" if speed else "-- images/s")


def _progress(console: Console) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        _ImagesPerSecond(),
        TimeRemainingColumn(),
        console=console,
    )
