"""The names of a `--list` file, read as a stream by a helper thread so that Ctrl-C always stops the run.

A list may be a pipe or a terminal that delivers names slowly or never ends. Read in the main thread, a
Ctrl-C could be lost until the next name came: Python raises KeyboardInterrupt in the main thread only,
and when the signal lands just before that thread enters its blocking read (or lands on another thread,
such as onnxruntime's), the read is not interrupted. Here a daemon thread does the blocking reads and the
main thread waits for each name with a timeout, so it returns to Python code, where a pending Ctrl-C is
raised, at least every `POLL_SECONDS`.
"""

from __future__ import annotations

import io
import queue
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO, Union

#: Longest wait, in seconds, before the main thread looks for a pending Ctrl-C while no name arrives.
POLL_SECONDS = 0.2
#: Names the helper thread reads ahead of the consumer (a list of millions of names is never held whole).
NAMES_AHEAD = 1024
#: The list name that means standard input (`find ... | classify MODEL --list -`).
STANDARD_INPUT = "-"

def is_standard_input(list_file: Path) -> bool:
    """Whether `list_file` is `STANDARD_INPUT`, the list read from standard input."""
    return str(list_file) == STANDARD_INPUT


#: How a list is decoded: UTF-8, a byte-order mark dropped, other bytes kept as surrogate escapes.
_ENCODING, _ERRORS = "utf-8-sig", "surrogateescape"
_END = object()
_Item = Union[str, OSError, object]


def list_names(list_file: Path) -> Iterator[str]:
    """The non-blank lines of `list_file` (standard input for `STANDARD_INPUT`), stripped, in order, read at
    most `NAMES_AHEAD` lines ahead.

    The list is read as UTF-8; a byte-order mark (Windows Notepad) is dropped, and bytes that are not UTF-8
    stay the bytes they were (surrogate escapes: a name written in Latin-1 still finds its file). An error
    reading the file is raised here, in the caller's thread.
    """
    names: queue.Queue[_Item] = queue.Queue(maxsize=NAMES_AHEAD)
    stop = threading.Event()
    threading.Thread(target=_read_names, args=(list_file, names, stop), name="list-reader", daemon=True).start()
    try:
        while True:
            try:
                item = names.get(timeout=POLL_SECONDS)
            except queue.Empty:
                continue  # back in Python code: a pending Ctrl-C is raised here
            if item is _END:
                return
            if isinstance(item, OSError):
                raise item
            yield str(item)
    finally:
        stop.set()  # the consumer stopped: the reader stops too, unless a read holds it (it is a daemon)


def _read_names(list_file: Path, names: queue.Queue[_Item], stop: threading.Event) -> None:
    """Put each name of `list_file` into `names`, then `_END`, or the `OSError` that stopped the reading."""
    try:
        with _opened(list_file) as lines:
            for line in lines:
                if line.strip() and not _put(names, line.strip(), stop):
                    return
    except OSError as error:
        _put(names, error, stop)
        return
    _put(names, _END, stop)


@contextmanager
def _opened(list_file: Path) -> Iterator[TextIO]:
    """`list_file`, or standard input for `STANDARD_INPUT`, open for reading names (see `list_names`);
    standard input is left open for the rest of the process."""
    if not is_standard_input(list_file):
        with open(list_file, encoding=_ENCODING, errors=_ERRORS) as lines:
            yield lines
        return
    lines = io.TextIOWrapper(sys.stdin.buffer, encoding=_ENCODING, errors=_ERRORS)
    try:
        yield lines
    finally:
        lines.detach()  # closing the wrapper would close standard input


def _put(names: queue.Queue[_Item], item: _Item, stop: threading.Event) -> bool:
    """Put `item` once there is room; False when the consumer stopped first."""
    while not stop.is_set():
        try:
            names.put(item, timeout=POLL_SECONDS)
            return True
        except queue.Full:
            continue
    return False
