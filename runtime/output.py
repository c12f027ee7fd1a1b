"""Where results go: the folder of an output file, made ready (and checked) before any work starts."""

from __future__ import annotations

import tempfile
from pathlib import Path

from runtime.errors import OutputError, first_line


def make_folder_for(path: Path) -> None:
    """Create the folder `path` goes in, if missing; `OutputError` (one line naming `path`) when it cannot be."""
    _make_folder(path.parent, path)


def prepare_output(path: Path) -> None:
    """`make_folder_for`, then check that a file can be written as `path`: not a folder of that name, not
    a device, pipe or socket (the file is written beside it and moved into place, which would replace the
    node), and a file can be created beside it (permissions, read-only disks). Call it before the work that
    ends in writing `path`, so a bad output path fails in one line at once rather than after the work."""
    make_folder_for(path)
    if path.is_dir():
        raise OutputError(path, "cannot write (a folder of that name is in the way)")
    if path.exists() and not path.is_file():
        raise OutputError(path, "cannot write (not a regular file: a device, pipe or socket is in the way)")
    _probe(path.parent, path)


def prepare_folder(folder: Path) -> None:
    """Create `folder` (and its parents) if missing and check files can be written in it; `OutputError`
    naming it when it is a file or cannot take files."""
    if folder.exists() and not folder.is_dir():
        raise OutputError(folder, "cannot write (a file of that name is in the way; a folder is needed)")
    _make_folder(folder, folder)
    _probe(folder, folder)


def _make_folder(folder: Path, named: Path) -> None:
    """Create `folder` and its parents if missing; `OutputError` naming `named` when that fails."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OutputError.from_os_error(named, error) from error


def _probe(folder: Path, named: Path) -> None:
    """Create and remove one temporary file in `folder`; `OutputError` naming `named` when that fails."""
    try:
        with tempfile.TemporaryFile(dir=folder, prefix=".write-check."):
            pass
    except OSError as error:
        raise OutputError(named, f"cannot write (no file can be created in {folder}: {error.strerror or first_line(error)})") from error
