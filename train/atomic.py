"""File output and identity: atomic writes (temporary file beside the target, renamed into place on
success) and the SHA-256 of a file's bytes."""

from __future__ import annotations

import hashlib
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from runtime.errors import OutputError
from runtime.output import make_folder_for


@contextmanager
def atomic_output(path: Path) -> Iterator[Path]:
    """Yield a temporary path next to `path`; when the block succeeds it is renamed to `path`.

    If the block raises, the temporary file is removed and `path` is left as it was, so readers never
    see a half-written file. The file gets the usual permissions (0666 less the umask). Missing folders
    are created; a place that cannot take the file raises `OutputError` (one line naming `path`).
    """
    make_folder_for(path)
    try:
        handle, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as error:
        raise OutputError.from_os_error(path, error) from error
    temporary = Path(name)
    try:
        os.close(handle)
        yield temporary
        umask = os.umask(0)
        os.umask(umask)
        temporary.chmod(0o666 & ~umask)
        try:
            os.replace(temporary, path)
        except OSError as error:  # e.g. `path` is a folder
            raise OutputError.from_os_error(path, error) from error
    finally:
        temporary.unlink(missing_ok=True)


def write_atomically(path: Path, data: bytes) -> None:
    """Write `data` to `path` through `atomic_output`."""
    with atomic_output(path) as temporary:
        temporary.write_bytes(data)


def file_sha256(path: Path) -> str:
    """The hex SHA-256 of the file's bytes: its identity in the cache, checksums and reports."""
    return bytes_sha256(path.read_bytes())


def bytes_sha256(data: bytes) -> str:
    """The hex SHA-256 of `data`, as `file_sha256` gives it for a file holding them."""
    return hashlib.sha256(data).hexdigest()
