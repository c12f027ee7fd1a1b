"""The training side's console scripts (`train-model`, `quantize-model`, `evaluate-model`).

Each imports its command's module only when it runs, so:
- a Ctrl-C while those imports load (TensorFlow alone takes seconds) ends, once they are done, in one
  line and exit code 130, not a traceback or an abort;
- `train-model --workers N` spawns worker processes that re-import the entry point's module, and they
  stay free of TensorFlow.
"""

from __future__ import annotations

import importlib
import signal
import sys

#: Exit code of a run stopped with Ctrl-C (128 + SIGINT, as shells report it).
EXIT_INTERRUPTED = 130


def _run(module: str) -> None:
    """Import `module` and run its `main`; a Ctrl-C during the import exits with one line once it is done.

    While importing, a Ctrl-C is only recorded, never raised: raised there, it can land inside a compiled
    extension's initialisation (onnx's: CI saw the process abort with SIGABRT; onnxruntime's: `ImportError:
    initialization failed`) or in a callback the import machinery runs (a module lock's weakref callback:
    "Exception ignored in ..." with a traceback). So the import completes (TensorFlow's takes seconds), and
    then the run stops with exit code 130 before anything was read or written."""
    interrupts: list[int] = []

    def record(signum: int, frame: object) -> None:
        interrupts.append(signum)

    watching = signal.getsignal(signal.SIGINT) is signal.default_int_handler  # not when Ctrl-C is ignored
    if watching:
        signal.signal(signal.SIGINT, record)
    try:
        command = importlib.import_module(module).main
    finally:
        if watching and signal.getsignal(signal.SIGINT) is record:
            signal.signal(signal.SIGINT, signal.default_int_handler)
    if interrupts:
        print("interrupted: while starting, before anything was read or written", file=sys.stderr)
        raise SystemExit(EXIT_INTERRUPTED)
    command()


def train_model() -> None:
    """Run `train-model`."""
    _run("train.cli")


def quantize_model() -> None:
    """Run `quantize-model`."""
    _run("train.edge_cli")


def evaluate_model() -> None:
    """Run `evaluate-model`."""
    _run("train.evaluate_cli")
