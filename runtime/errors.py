"""The toolkit's error types: every failure a user can cause is one of these, with a one-line message."""

from __future__ import annotations

from pathlib import Path


class RetrainOnnxError(Exception):
    """Base class of every error this toolkit raises on bad input."""


class ImageError(RetrainOnnxError):
    """An image could not be read or decoded. The message names the source and the problem."""

    def __init__(self, source: str | Path, problem: str) -> None:
        self.source = str(source)
        self.problem = problem
        super().__init__(f"{self.source}: {problem}")

    def __reduce__(self) -> tuple[type, tuple[str, str]]:
        """Pickle as (source, problem), so the error travels back from worker processes and Ray actors."""
        return (type(self), (self.source, self.problem))


class FileProblem(RetrainOnnxError):
    """A problem with one file, as `path: problem`; `ModelError` and `OutputError` are the kinds."""

    def __init__(self, path: str | Path, problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")

    def __reduce__(self) -> tuple[type, tuple[str, str]]:
        """Pickle as (path, problem), like `ImageError`."""
        return (type(self), (self.path, self.problem))


class ModelError(FileProblem):
    """A model file is missing, unreadable, or not an ONNX model exported by this toolkit."""


class OutputError(FileProblem):
    """A result file (CSV, report, model) cannot be written where it was asked for."""

    @classmethod
    def from_os_error(cls, path: str | Path, error: OSError) -> "OutputError":
        """The `OutputError` for `path` from the `OSError` that stopped writing it (naming the file in the
        way when that is not `path` itself, e.g. a file where a folder should be)."""
        reason = error.strerror or first_line(error)
        in_the_way = str(error.filename) if error.filename is not None else ""
        detail = f"{reason}: {in_the_way}" if in_the_way and in_the_way != str(path) else reason
        return cls(path, f"cannot write ({detail})")


def first_line(error: BaseException) -> str:
    """The first line of an exception's message (or its type name), for one-line error reports."""
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__
