"""Decode ahead: while one batch runs through the model, the next batch's images decode in a thread pool."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from itertools import islice
from typing import TypeVar

Item = TypeVar("Item")
Decoded = TypeVar("Decoded")


def chunked(items: Iterable[Item], size: int) -> Iterator[list[Item]]:
    """`items` in lists of `size` (the last may be shorter), read lazily: a stream stays a stream."""
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk


def decode_ahead(
    pool: ThreadPoolExecutor, chunks: Iterable[Sequence[Item]], decode: Callable[[Item], Decoded]
) -> Iterator[tuple[Sequence[Item], list[Decoded]]]:
    """Yield each chunk with its decoded items, in order; the next chunk is already decoding meanwhile.

    `chunks` is read one chunk ahead, so a lazy stream of chunks is never held whole. `decode` must not
    raise (return the error instead) so one bad item never stops the others.
    """
    upcoming = iter(chunks)
    chunk = next(upcoming, None)
    if chunk is None:
        return
    submitted: list[Future[Decoded]] = [pool.submit(decode, item) for item in chunk]
    for following in upcoming:
        following_submitted = [pool.submit(decode, item) for item in following]
        yield chunk, [future.result() for future in submitted]
        chunk, submitted = following, following_submitted
    yield chunk, [future.result() for future in submitted]
