"""What push and pull share: the references asked for as RRefs, and transfers run on a pool of
threads with progress.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from typing import Any

from lightstore.foundation.refs import DRef, RRef, isdref, parse_dref, parse_rref

#: ``progress(done_bytes, total_bytes)`` while transferring.
Progress = Callable[[int, int], None]
#: How many transfers run at once.
DEFAULT_JOBS = 8


#: A task of a pool carries items up to this many bytes, or this many items: a future per
#: small file costs more than copying it.
BATCH_BYTES = 8 * 1024 * 1024
BATCH_ITEMS = 64


def run_all(
    pool: ThreadPoolExecutor,
    fn: Callable[..., Any],
    items: Iterable[Any],
    on_done: Callable[[Any], None],
    weight: Callable[[Any], int] | None = None,
    workers: int = 1,
    here: Callable[[Any], bool] | None = None,
) -> None:
    """Run `fn(*item)` for every item in `pool`; stop at the first error and raise it.

    With `weight` (an item's size in bytes), items go in batches (see `batches`; `workers`
    is the pool's size), each one task. Items that `here` picks are run by the calling
    thread itself while the pool runs the others: small files on a local disk, where
    threads would only contend for the interpreter. `on_done` sees every result, always
    in the calling thread.
    """
    items = list(items)
    mine: list[Any] = []
    if here is not None:
        mine = [item for item in items if here(item)]
        items = [item for item in items if not here(item)]
    groups = [[item] for item in items] if weight is None else batches(items, weight, workers)
    pending: set[Future[Any]] = {pool.submit(_run_group, fn, group) for group in groups}
    try:
        for item in mine:
            on_done(fn(*item))
    except BaseException:
        for p in pending:
            p.cancel()
        raise
    while pending:
        finished, pending = wait(pending, timeout=0.5, return_when=FIRST_EXCEPTION)
        for f in finished:
            exc = f.exception()
            if exc is not None:
                for p in pending:
                    p.cancel()
                raise exc
            for result in f.result():
                on_done(result)


def _run_group(fn: Callable[..., Any], group: list[Any]) -> list[Any]:
    return [fn(*item) for item in group]


def batches(items: Iterable[Any], weight: Callable[[Any], int], workers: int) -> list[list[Any]]:
    """`items` in order, in groups of at most BATCH_ITEMS items and BATCH_BYTES bytes (a
    heavier item alone), and small enough that each of `workers` threads gets a few."""
    items = list(items)
    per_group = max(1, min(BATCH_ITEMS, len(items) // (4 * max(1, workers))))
    groups: list[list[Any]] = []
    group: list[Any] = []
    size = 0
    for item in items:
        w = weight(item)
        if group and (len(group) >= per_group or size + w > BATCH_BYTES):
            groups.append(group)
            group, size = [], 0
        group.append(item)
        size += w
    if group:
        groups.append(group)
    return groups


def expand_refs(
    refs: Iterable[str], realizations_of: Callable[[DRef], list[RRef]], nothing: str
) -> list[RRef]:
    """RRefs for `refs`: an RRef stands for itself, a DRef for `realizations_of` it.

    Raises UnknownReferenceError for a DRef with none (`nothing` ends the message).
    """
    from lightstore.foundation.errors import UnknownReferenceError

    out: list[RRef] = []
    for ref in refs:
        if isdref(ref):
            found = realizations_of(parse_dref(ref))
            if not found:
                raise UnknownReferenceError(f"{ref} has no realizations {nothing}", ref)
            out += found
        else:
            out.append(parse_rref(ref))
    return sorted(set(out))
