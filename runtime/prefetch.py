"""Decode ahead: while one batch runs through the model, the next batch's images decode in a thread pool."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

Item = TypeVar("Item")
Decoded = TypeVar("Decoded")


def decode_ahead(
    pool: ThreadPoolExecutor, chunks: Sequence[Sequence[Item]], decode: Callable[[Item], Decoded]
) -> Iterator[tuple[Sequence[Item], list[Decoded]]]:
    """Yield each chunk with its decoded items, in order; the next chunk is already decoding meanwhile.

    `decode` must not raise (return the error instead) so one bad item never stops the others.
    """
    submitted: list[Future[Decoded]] = [pool.submit(decode, item) for item in chunks[0]] if chunks else []
    for index, chunk in enumerate(chunks):
        current = submitted
        submitted = [pool.submit(decode, item) for item in chunks[index + 1]] if index + 1 < len(chunks) else []
        yield chunk, [future.result() for future in current]
