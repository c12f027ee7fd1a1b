"""Console lines the training commands share."""

from __future__ import annotations

from typing import Sequence

from rich.console import Console

from runtime.errors import ImageError


def print_skipped(failures: Sequence[ImageError], console: Console) -> None:
    """One `skipped <file>: <problem>` line per image left out."""
    for failure in failures:
        console.print(f"[yellow]skipped[/yellow] {failure}", highlight=False)
