"""The training side's console scripts (`train-model`, `quantize-model`, `evaluate-model`).

Each imports its command's module only when it runs, so:
- a Ctrl-C while those imports load (TensorFlow alone takes seconds) ends in one line and exit code 130,
  not a traceback;
- `train-model --workers N` spawns worker processes that re-import the entry point's module, and they
  stay free of TensorFlow.
"""

from __future__ import annotations

import importlib
import sys

#: Exit code of a run stopped with Ctrl-C (128 + SIGINT, as shells report it).
EXIT_INTERRUPTED = 130


def _run(module: str) -> None:
    """Import `module` and run its `main`; a Ctrl-C during the import exits with one line."""
    try:
        command = importlib.import_module(module).main
    except KeyboardInterrupt:
        print("interrupted: while starting, before anything was read or written", file=sys.stderr)
        raise SystemExit(EXIT_INTERRUPTED) from None
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
