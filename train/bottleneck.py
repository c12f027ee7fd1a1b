"""The bottleneck phase: compute each image's backbone features once, through the cache."""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

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
from runtime.prefetch import decode_ahead
from train.cache import BottleneckCache
from train.views import View


@dataclass
class BottleneckResult:
    """Features of every readable image ((views, feature_dim) each), plus what was computed, reused and skipped."""

    features: dict[Path, np.ndarray] = field(default_factory=dict)
    computed: int = 0
    reused: int = 0
    failures: list[ImageError] = field(default_factory=list)


def compute_bottlenecks(
    paths: Sequence[Path],
    extract: Callable[[np.ndarray], np.ndarray],
    cache: BottleneckCache,
    input_size: tuple[int, int],
    views: Sequence[View] = (View(),),
    batch_size: int = 32,
    console: Console | None = None,
) -> BottleneckResult:
    """Features of every view of every image in `paths`, read from `cache` or computed and stored.

    `extract` maps a uint8 (N, H, W, 3) batch to (N, feature_dim) features (an `OnnxExtractor` in
    training). An image counts as reused when all its views are cached. Unreadable images are collected
    in `failures` and skipped. Each image is decoded once for all its views, in a thread pool and a batch
    ahead of feature extraction, so decoding overlaps inference; byte-identical files are computed once.
    """
    console = console or Console(soft_wrap=True, highlight=False)
    result = BottleneckResult()
    todo: list[tuple[Path, str, bytes]] = []
    copies: dict[str, list[Path]] = {}  # content hash -> every path with those bytes, computed once
    for path in paths:
        try:
            data = path.read_bytes()
        except OSError as error:
            result.failures.append(ImageError(path, f"cannot read file ({error.strerror})"))
            continue
        content_hash = hashlib.sha256(data).hexdigest()
        if content_hash in copies:
            copies[content_hash].append(path)
            continue
        cached = [cache.get(content_hash, view.name) for view in views]
        if any(features is None for features in cached):
            todo.append((path, content_hash, data))
            copies[content_hash] = [path]
        else:
            result.features[path] = np.stack(cached)
            result.reused += 1
    if not todo:
        console.print(f"Bottlenecks: all {result.reused} found in cache, nothing computed")
        return result
    console.print(f"Bottlenecks: {result.reused} cached, {len(todo)} to compute ({len(views)} views each)")

    def decode(item: tuple[Path, str, bytes]) -> np.ndarray | ImageError:
        path, _, data = item
        try:
            return load_for_model(data, input_size, name=str(path))
        except ImageError as error:
            return error

    images_per_batch = max(1, batch_size // len(views))
    chunks = [todo[start : start + images_per_batch] for start in range(0, len(todo), images_per_batch)]
    with _progress(console) as progress, ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        task = progress.add_task("Computing bottlenecks", total=len(todo))
        for chunk, decoded in decode_ahead(pool, chunks, decode):
            good = [(item, pixels) for item, pixels in zip(chunk, decoded) if not isinstance(pixels, ImageError)]
            for (_, content_hash, _), pixels in zip(chunk, decoded):
                if isinstance(pixels, ImageError):
                    result.failures.extend(ImageError(path, pixels.problem) for path in copies[content_hash])
            if good:
                images = np.stack([pixels for _, pixels in good])
                batch = np.concatenate([view.apply(images) for view in views])
                features = np.asarray(extract(batch), dtype=np.float32)
                per_image = features.reshape(len(views), len(good), -1).swapaxes(0, 1)
                for ((_, content_hash, _), _), image_features in zip(good, per_image):
                    for view, row in zip(views, image_features):
                        cache.put(content_hash, row, view.name)
                    result.features.update(dict.fromkeys(copies[content_hash], image_features))
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
