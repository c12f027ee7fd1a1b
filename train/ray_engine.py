"""The bottleneck phase on Ray: one actor per worker, each holding one backbone session.

Imported only for `--engine ray` (Ray is the optional `[ray]` extra). Chunks go to the actors in turn;
the driver reads a chunk's file bytes when it submits it and sends them along with the work, and gets
the features back, so the workers need neither the data folder nor the cache on their disk. Two chunks
per actor are in flight (one running, one waiting, so no actor idles between chunks): memory stays
bounded however large the data set.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from pathlib import Path

import ray

from runtime.distributed import actor_count, ray_connection
from train.engines import Chunk, EngineConfig, WorkerSpec, in_order
from train.feature_worker import FeatureWorker, ImageFeatures


def ray_feature_batches(chunks: Sequence[Chunk], spec: WorkerSpec, config: EngineConfig) -> Iterator[list[ImageFeatures]]:
    """Each chunk's features, in chunk order, computed by Ray actors."""
    with ray_connection(config.ray_address):
        model = ray.put(spec.onnx_path.read_bytes())
        actor = ray.remote(num_cpus=1)(FeatureWorker)
        actors = [actor.remote(model, spec.input_size, spec.views, 1) for _ in range(actor_count(config.workers))]
        turns = itertools.cycle(actors)
        yield from in_order(
            lambda chunk: next(turns).run.remote(_with_bytes(chunk.names), chunk.views).future(), chunks, window=2 * len(actors),
            died=(ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError),
        )


def _with_bytes(names: Sequence[str]) -> list[tuple[str, bytes | None]]:
    """(name, bytes) per file; None when this machine cannot read it (the worker then reports the error)."""
    items: list[tuple[str, bytes | None]] = []
    for name in names:
        try:
            items.append((name, Path(name).read_bytes()))
        except OSError:
            items.append((name, None))
    return items
