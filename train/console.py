"""Console lines the training commands share."""

from __future__ import annotations

from typing import Sequence

from rich.console import Console
from rich.text import Text

from runtime.errors import ImageError


def training_console() -> Console:
    """The training commands' console. It prints every string as it is: a file named `photo [copy].jpg` or
    a class folder `intact [ok]` is not read as rich markup (which dropped the brackets, or stopped the run
    on a name like `x[/y].jpg`); colour comes only from `flagged`."""
    return Console(soft_wrap=True, highlight=False, markup=False)


def flagged(flag: str, message: object, style: str = "yellow") -> Text:
    """`flag` (note, warning, skipped, ...) in colour, a space, then `message` verbatim, on any console."""
    return Text.assemble((flag, style), " ", str(message))


def print_skipped(failures: Sequence[ImageError], console: Console) -> None:
    """One `skipped <file>: <problem>` line per image left out."""
    for failure in failures:
        console.print(flagged("skipped", failure))
