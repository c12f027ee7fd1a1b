"""The training side's console scripts (`train-model`, `quantize-model`, `evaluate-model`).

Each imports its command's module only when it runs, so:
- a Ctrl-C while those imports load (TensorFlow alone takes seconds) ends in one line and exit code 130,
  not a traceback;
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
    """Import `module` and run its `main`; a Ctrl-C during the import exits with one line.

    A Ctrl-C that lands inside a compiled extension's initialisation (onnxruntime's) surfaces as that
    module's `ImportError: initialization failed`, not as KeyboardInterrupt; the handler below records the
    signal, so that error is read as the interrupt it was. One that lands inside a callback the import
    machinery runs (a module lock's weakref callback) cannot propagate: Python reports it as "Exception
    ignored in ..." with a traceback, so such reports of KeyboardInterrupt are silenced while importing."""
    interrupts: list[int] = []

    def record_and_interrupt(signum: int, frame: object) -> None:
        interrupts.append(signum)
        raise KeyboardInterrupt

    report_unraisable = sys.unraisablehook

    def report_unless_interrupt(unraisable: sys.UnraisableHookArgs) -> None:
        if not issubclass(unraisable.exc_type, KeyboardInterrupt):
            report_unraisable(unraisable)

    watching = signal.getsignal(signal.SIGINT) is signal.default_int_handler  # not when Ctrl-C is ignored
    if watching:
        signal.signal(signal.SIGINT, record_and_interrupt)
    sys.unraisablehook = report_unless_interrupt
    try:
        command = importlib.import_module(module).main
    except (KeyboardInterrupt, ImportError) as error:
        if isinstance(error, ImportError) and not interrupts:
            raise
        command = None
    finally:
        sys.unraisablehook = report_unraisable
        if watching and signal.getsignal(signal.SIGINT) is record_and_interrupt:
            signal.signal(signal.SIGINT, signal.default_int_handler)
    if command is None or interrupts:  # also an interrupt a library's optional import swallowed
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
