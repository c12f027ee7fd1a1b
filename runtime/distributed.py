"""What the local and the Ray engines share, without importing Ray: the engine choice and the connection.

Ray is the optional `[ray]` extra; only `--engine ray` imports it (inside `ray_connection`), so the
runtime and every default path run without it.
"""

from __future__ import annotations

import importlib.util
import logging
import socket
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from runtime.errors import RetrainOnnxError, first_line
from runtime.list_stream import is_standard_input

#: How long the check that a Ray address answers waits for it.
CONNECT_TIMEOUT_SECONDS = 10


class Engine(str, Enum):
    """Where the heavy, parallel work runs: on this machine, or on a Ray cluster (or a local Ray instance)."""

    local = "local"
    ray = "ray"


@dataclass(frozen=True)
class RayInput:
    """What `classify` classifies: files and folders, and/or a list file (one path per line).

    A list file alone is read by Ray itself, as a stream, so the driver never holds the paths; a list on
    standard input (`-`) is read by the driver, as the names given with it are.
    """

    inputs: Sequence[Path]
    list_file: Path | None = None

    @property
    def streamed_list(self) -> Path | None:
        """The list file when Ray can read it directly (a file, and no other inputs), else None."""
        return self.list_file if not self.inputs and not is_standard_input(self.list_file) else None


class EngineError(RetrainOnnxError):
    """Ray is missing, its cluster cannot be reached, or a worker (process or actor) died."""


def require_ray() -> None:
    """`EngineError` (one line saying what to install) when Ray is not installed."""
    if importlib.util.find_spec("ray") is None:
        raise EngineError("--engine ray needs Ray: pip install ray (or the project's ray extra, from the checkout: pip install -e '.[ray]')")


@contextmanager
def ray_connection(address: str | None) -> Iterator[None]:
    """Connect to the Ray cluster at `address` ("auto", "ray://head:10001", ...), or with None start a
    local Ray instance for the block. A connection that already exists is used and left open."""
    require_ray()
    import ray

    if ray.is_initialized():
        yield
        return
    _check_answers(address)
    try:
        ray.init(address=address, include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
        logging.getLogger("ray.data").setLevel(logging.ERROR)  # progress notes, not results
    except (ConnectionError, RuntimeError, ValueError) as error:
        raise EngineError(f"cannot connect to the Ray cluster at {address!r} ({first_line(error)})") from error
    try:
        yield
    finally:
        ray.shutdown()


def _check_answers(address: str | None) -> None:
    """For a "host:port" or "ray://host:port" address, check that something answers there: Ray itself
    retries an unreachable address for minutes before it gives up."""
    host, _, port = (address or "").removeprefix("ray://").rpartition(":")
    host = host.strip("[]")  # "[::1]:6379"
    if not host or not port.isdigit():
        return  # None (a local instance), "auto", or a form Ray resolves itself
    try:
        socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_SECONDS).close()
    except OSError as error:
        problem = error.strerror or first_line(error)
        raise EngineError(f"cannot connect to the Ray cluster at {address!r} (nothing answers at {host}:{port}: {problem})") from error


def actor_count(workers: int | None) -> int:
    """One actor per CPU of the connected Ray cluster, or `workers` when fewer (each actor takes one CPU;
    more would never be scheduled and their work would wait for ever)."""
    import ray

    cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
    return min(workers, cpus) if workers else cpus
