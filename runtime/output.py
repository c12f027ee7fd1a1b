"""Where results go: the folder of an output file, made ready before any work starts."""

from __future__ import annotations

from pathlib import Path

from runtime.errors import OutputError


def make_folder_for(path: Path) -> None:
    """Create the folder `path` goes in, if missing; `OutputError` (one line naming `path`) when it cannot be."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OutputError.from_os_error(path, error) from error
