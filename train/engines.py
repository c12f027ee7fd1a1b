"""Where the bottleneck phase computes features: in this process, in local worker processes, or on Ray.

Every engine takes chunks of image files (one backbone batch each) and yields each chunk's features in
chunk order, so the results, the cache and the trained head are the same whichever engine ran. Writing
the cache stays with the caller (the driver), so Ray workers on other machines need no shared disk.
"""

from __future__ import annotations

import multiprocessing
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from runtime.distributed import Engine, EngineError, require_ray
from runtime.errors import first_line
from runtime.prefetch import decode_ahead
from train.feature_worker import FeatureWorker, ImageFeatures, decode, features_of
from train.views import ImageView

@dataclass(frozen=True)
class Chunk:
    """One backbone batch: image file paths, and which of the spec's views (indices) to compute for each."""

    names: Sequence[str]
    views: tuple[int, ...]


@dataclass(frozen=True)
class EngineConfig:
    """`workers`: local worker processes (None or 1: this process) or Ray actors (None: one per CPU of the
    cluster). `ray_address` is an existing cluster's address (e.g. "ray://head:10001" or "auto"); None
    starts a local Ray instance for the run.
    """

    engine: Engine = Engine.local
    workers: int | None = None
    ray_address: str | None = None

    def check_installed(self) -> None:
        """`EngineError` (one line) before any work when the engine cannot run here: Ray not installed."""
        if self.engine is Engine.ray:
            require_ray()

    @property
    def local_processes(self) -> int:
        """Worker processes of a local run (1 = none: this process does the work)."""
        return self.workers or 1


@dataclass(frozen=True)
class WorkerSpec:
    """What a worker needs to compute features: the backbone's ONNX file (None: only this process's
    `extract` can run it), its input size and the views."""

    onnx_path: Path | None
    input_size: tuple[int, int]
    views: tuple[ImageView, ...]

    def views_at(self, indices: Sequence[int]) -> list[ImageView]:
        """The views at `indices` (a chunk's `views`)."""
        return [self.views[index] for index in indices]


def feature_batches(
    chunks: Sequence[Chunk], spec: WorkerSpec, config: EngineConfig, extract: Callable[[np.ndarray], np.ndarray]
) -> Iterator[list[ImageFeatures]]:
    """Each chunk's features ((the chunk's views, feature_dim) per image, or its `ImageError`), in chunk order.

    `extract` is this process's backbone, used when the run stays in this process.
    """
    if spec.onnx_path is None and (config.engine is Engine.ray or config.local_processes > 1):
        raise ValueError("worker processes and Ray need the backbone as an ONNX file")
    if config.engine is Engine.ray:
        from train.ray_engine import ray_feature_batches  # Ray is an optional extra: import it only here

        return ray_feature_batches(chunks, spec, config)
    if config.local_processes > 1:
        return _in_processes(chunks, spec, config.local_processes)
    return _in_this_process(chunks, spec, extract)


def _in_this_process(chunks: Sequence[Chunk], spec: WorkerSpec, extract: Callable[[np.ndarray], np.ndarray]) -> Iterator[list[ImageFeatures]]:
    """Decode in a thread pool one chunk ahead; run the backbone here."""
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        decoding = decode_ahead(pool, (chunk.names for chunk in chunks), lambda name: decode(name, None, spec.input_size))
        for chunk, (_, decoded) in zip(chunks, decoding):
            yield features_of(decoded, spec.views_at(chunk.views), extract)


_worker: FeatureWorker | None = None


def _start_worker(spec: WorkerSpec) -> None:
    global _worker
    _worker = FeatureWorker(spec.onnx_path, spec.input_size, spec.views, threads=1)


def _run_chunk(chunk: Chunk) -> list[ImageFeatures]:
    assert _worker is not None, "worker process not initialised"
    return _worker.run([(name, None) for name in chunk.names], chunk.views)


def _in_processes(chunks: Sequence[Chunk], spec: WorkerSpec, workers: int) -> Iterator[list[ImageFeatures]]:
    """`workers` processes, each with one single-threaded backbone session, reading and decoding their own files.

    Processes are spawned (not forked): the parent has TensorFlow loaded, the workers never import it.
    """
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_start_worker, initargs=(spec,)) as pool:
        yield from in_order(lambda chunk: pool.submit(_run_chunk, chunk), chunks, window=2 * workers, died=(BrokenProcessPool,))


def in_order(
    submit: Callable[[Chunk], Future], chunks: Iterable[Chunk], window: int, died: tuple[type[BaseException], ...]
) -> Iterator[list[ImageFeatures]]:
    """Results of `submit(chunk)` in chunk order, with at most `window` chunks in flight (bounded memory).

    An exception of a type in `died` (the engine lost a worker) becomes a one-line `EngineError`; the
    features of the chunks before it have been yielded, so the caller has cached them.
    """
    pending: deque[Future] = deque()
    try:
        for chunk in chunks:
            pending.append(submit(chunk))
            if len(pending) >= window:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    except died as error:  # raised by result() or, once the engine knows, by submit()
        raise EngineError(f"a bottleneck worker died ({first_line(error)}); the features computed so far are cached, run again to go on") from error
