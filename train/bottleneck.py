"""The bottleneck phase: compute each image's backbone features once, through the cache."""

from __future__ import annotations

from collections import Counter
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
from runtime.imaging import try_load_for_model
from train.atomic import bytes_sha256, file_sha256
from train.cache import BottleneckCache
from train.console import print_skipped, training_console
from train.engines import Chunk, EngineConfig, WorkerSpec, feature_batches
from train.feature_worker import ImageFeatures


@dataclass
class BottleneckResult:
    """Features of every readable image ((views, feature_dim) each), plus what was computed, reused and skipped."""

    features: dict[Path, np.ndarray] = field(default_factory=dict)
    #: SHA-256 of the bytes of every image that could be read (the cache key).
    content_hashes: dict[Path, str] = field(default_factory=dict)
    #: Images whose features were (partly) computed, and how many views that took in all.
    computed: int = 0
    views_computed: int = 0
    #: Images whose views were all in the cache.
    reused: int = 0
    #: Images skipped because an earlier run found their bytes unreadable (see `BottleneckCache.unreadable`).
    known_unreadable: int = 0
    failures: list[ImageError] = field(default_factory=list)


def compute_bottlenecks(
    paths: Sequence[Path],
    spec: WorkerSpec,
    cache: BottleneckCache,
    extract: Callable[[np.ndarray], np.ndarray],
    batch_size: int = 32,
    console: Console | None = None,
    engine: EngineConfig = EngineConfig(),
) -> BottleneckResult:
    """Features of every view (`spec.views`) of every image in `paths`, read from `cache` or computed and stored.

    `extract` maps a uint8 (N, H, W, 3) batch to (N, feature_dim) features in this process (an
    `OnnxExtractor` in training); `engine` may run the work in worker processes or on Ray instead, from
    `spec.onnx_path`. An image counts as reused when all its views are cached; of the others only the
    missing views are computed. Unreadable images, and
    files that changed or disappeared while their features were computed (hashed again before caching),
    are collected in `failures` and skipped; the cache notes the bytes that cannot be decoded, so the next
    run skips them without decoding them again. Each image is decoded once for all its missing views; byte-identical
    files are computed once. Only the file names to compute are held in memory, never all their bytes.
    """
    console = console or training_console()
    result = BottleneckResult()
    pending: dict[str, _Pending] = {}  # by content hash: byte-identical files are computed once
    for path in paths:
        try:
            content_hash = file_sha256(path)
        except OSError as error:
            result.failures.append(ImageError(path, f"cannot read file ({error.strerror})"))
            continue
        result.content_hashes[path] = content_hash
        if content_hash in pending:
            pending[content_hash].paths.append(path)
            continue
        known_problem = cache.unreadable(content_hash)
        if known_problem is not None:
            result.failures.append(ImageError(path, known_problem))
            result.known_unreadable += 1
            continue
        cached = [cache.get(content_hash, view.name) for view in spec.views]
        if any(features is None for features in cached):
            pending[content_hash] = _Pending([path], cached)
        else:
            result.features[path] = np.stack(cached)
            result.reused += 1
    known = f"; {result.known_unreadable} unreadable in an earlier run, skipped" if result.known_unreadable else ""
    if not pending:
        console.print(f"Bottlenecks: all {result.reused} found in cache, nothing computed{known}")
        print_skipped(result.failures, console)
        return result
    groups = _by_missing_views(pending)
    console.print(f"Bottlenecks: {result.reused} cached, {len(pending)} to compute{_views_to_compute(groups, len(spec.views))}{known}")
    chunk_hashes = [
        hashes[start : start + per_batch]
        for missing, hashes in groups.items()
        for per_batch in [max(1, batch_size // len(missing))]  # images per backbone batch of these views
        for start in range(0, len(hashes), per_batch)
    ]
    chunks = [Chunk([str(pending[content_hash].paths[0]) for content_hash in part], pending[part[0]].missing) for part in chunk_hashes]
    with _progress(console) as progress:
        task = progress.add_task("Computing bottlenecks", total=len(pending))
        for hashes, outcomes in zip(chunk_hashes, feature_batches(chunks, spec, engine, extract)):  # one engine for all groups
            for content_hash, outcome in zip(hashes, outcomes):
                _store(content_hash, outcome, pending[content_hash], spec, cache, result)
            progress.advance(task, len(hashes))
    print_skipped(result.failures, console)
    return result


@dataclass
class _Pending:
    """One image (by content) whose features are not all cached: every path holding its bytes, and its
    views' cached features (None where missing)."""

    paths: list[Path]
    cached: list[np.ndarray | None]

    @property
    def missing(self) -> tuple[int, ...]:
        """Indices of the views to compute."""
        return tuple(index for index, features in enumerate(self.cached) if features is None)


def _by_missing_views(pending: dict[str, _Pending]) -> dict[tuple[int, ...], list[str]]:
    """The content hashes to compute, grouped by which views they miss: an image whose other views are
    cached computes only the missing ones (going from `--views 8` to 16, say)."""
    groups: dict[tuple[int, ...], list[str]] = {}
    for content_hash, image in pending.items():
        groups.setdefault(image.missing, []).append(content_hash)
    return groups


def _views_to_compute(groups: dict[tuple[int, ...], list[str]], view_count: int) -> str:
    """How many views the images to compute need, for the console: " (8 views each)", or, where some of
    their views are cached, ": 20 with all 8 views, 60 with 4 of 8 views; the other views are cached"."""
    images_by_count = Counter()
    for missing, hashes in groups.items():
        images_by_count[len(missing)] += len(hashes)
    if list(images_by_count) == [view_count]:
        return f" ({view_count} {'view' if view_count == 1 else 'views'} each)"
    parts = [
        f"{images} with {f'all {count}' if count == view_count else f'{count} of {view_count}'} views"
        for count, images in sorted(images_by_count.items(), reverse=True)
    ]
    return f": {', '.join(parts)}; the other views are cached"


def _store(
    content_hash: str,
    outcome: ImageFeatures,
    image: _Pending,
    spec: WorkerSpec,
    cache: BottleneckCache,
    result: BottleneckResult,
) -> None:
    """Cache the computed views of one image (`outcome`: its missing views' features, or its error) and give
    all its paths the full (views, feature_dim) features; a failure or a change since hashing is recorded in
    `result` instead."""
    copies = image.paths
    if isinstance(outcome, ImageError):
        result.failures.extend(ImageError(path, outcome.problem) for path in copies)
        if _hashed_bytes_do_not_load(copies[0], content_hash, spec.input_size):
            cache.note_unreadable(content_hash, outcome.problem)
        return
    change = _change_since_hashed(copies[0], content_hash)
    if change:
        result.failures.extend(_skipped_for_change(copies, change))
        return
    features = list(image.cached)
    for index, row in zip(image.missing, outcome):
        cache.put(content_hash, row, spec.views[index].name)
        features[index] = row
    result.features.update(dict.fromkeys(copies, np.stack(features)))
    result.computed += 1
    result.views_computed += len(image.missing)


def _hashed_bytes_do_not_load(path: Path, content_hash: str, size: tuple[int, int]) -> bool:
    """True when the file still holds the bytes that were hashed and those bytes, read again here, do not
    load: a fault of the content. A passing read error (EIO, too many open files, a worker that could not
    reach the file) is not a fault of the bytes, so it is not noted and the next run tries again."""
    try:
        data = path.read_bytes()
    except OSError:
        return False
    return bytes_sha256(data) == content_hash and isinstance(try_load_for_model(data, size), ImageError)


def _change_since_hashed(path: Path, content_hash: str) -> str | None:
    """What happened to the file since it was hashed, if anything: "changed" (other bytes, so caching the
    features under the old hash would be wrong) or "disappeared"."""
    try:
        return None if file_sha256(path) == content_hash else "changed"
    except OSError:
        return "disappeared"


def _skipped_for_change(copies: list[Path], change: str) -> list[ImageError]:
    """Skip notices for a file that changed or disappeared while its features were computed, and for its
    byte-identical copies (their features were to come from it)."""
    first, *others = copies
    later = "run again to include it"
    return [ImageError(first, f"{change} while its features were computed; {later}")] + [
        ImageError(path, f"its byte-identical copy {first} {change} while features were computed; {later}") for path in others
    ]


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
