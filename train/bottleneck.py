"""The bottleneck phase: compute each image's backbone features once, through the cache."""

from __future__ import annotations

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
from train.engines import EngineConfig, WorkerSpec, feature_batches


@dataclass
class BottleneckResult:
    """Features of every readable image ((views, feature_dim) each), plus what was computed, reused and skipped."""

    features: dict[Path, np.ndarray] = field(default_factory=dict)
    #: SHA-256 of the bytes of every image that could be read (the cache key).
    content_hashes: dict[Path, str] = field(default_factory=dict)
    computed: int = 0
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
    `spec.onnx_path`. An image counts as reused when all its views are cached. Unreadable images, and
    files that changed or disappeared while their features were computed (hashed again before caching),
    are collected in `failures` and skipped; the cache notes the bytes that cannot be decoded, so the next
    run skips them without decoding them again. Each image is decoded once for all its views; byte-identical
    files are computed once. Only the file names to compute are held in memory, never all their bytes.
    """
    console = console or training_console()
    views = spec.views
    result = BottleneckResult()
    copies: dict[str, list[Path]] = {}  # content hash -> every path with those bytes, computed once
    for path in paths:
        try:
            content_hash = file_sha256(path)
        except OSError as error:
            result.failures.append(ImageError(path, f"cannot read file ({error.strerror})"))
            continue
        result.content_hashes[path] = content_hash
        if content_hash in copies:
            copies[content_hash].append(path)
            continue
        known_problem = cache.unreadable(content_hash)
        if known_problem is not None:
            result.failures.append(ImageError(path, known_problem))
            result.known_unreadable += 1
            continue
        cached = [cache.get(content_hash, view.name) for view in views]
        if any(features is None for features in cached):
            copies[content_hash] = [path]
        else:
            result.features[path] = np.stack(cached)
            result.reused += 1
    known = f"; {result.known_unreadable} unreadable in an earlier run, skipped" if result.known_unreadable else ""
    if not copies:
        console.print(f"Bottlenecks: all {result.reused} found in cache, nothing computed{known}")
        print_skipped(result.failures, console)
        return result
    console.print(f"Bottlenecks: {result.reused} cached, {len(copies)} to compute ({len(views)} views each){known}")

    todo = list(copies)
    images_per_batch = max(1, batch_size // len(views))
    hash_chunks = [todo[start : start + images_per_batch] for start in range(0, len(todo), images_per_batch)]
    name_chunks = [[str(copies[content_hash][0]) for content_hash in chunk] for chunk in hash_chunks]
    with _progress(console) as progress:
        task = progress.add_task("Computing bottlenecks", total=len(todo))
        for hashes, outcomes in zip(hash_chunks, feature_batches(name_chunks, spec, engine, extract)):
            for content_hash, outcome in zip(hashes, outcomes):
                if isinstance(outcome, ImageError):
                    result.failures.extend(ImageError(path, outcome.problem) for path in copies[content_hash])
                    if _hashed_bytes_do_not_load(copies[content_hash][0], content_hash, spec.input_size):
                        cache.note_unreadable(content_hash, outcome.problem)
                    continue
                change = _change_since_hashed(copies[content_hash][0], content_hash)
                if change:
                    result.failures.extend(_skipped_for_change(copies[content_hash], change))
                    continue
                for view, row in zip(views, outcome):
                    cache.put(content_hash, row, view.name)
                result.features.update(dict.fromkeys(copies[content_hash], outcome))
                result.computed += 1
            progress.advance(task, len(hashes))
    print_skipped(result.failures, console)
    return result


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
