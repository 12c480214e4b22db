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


def run_all(
    pool: ThreadPoolExecutor,
    fn: Callable[..., Any],
    items: Iterable[Any],
    on_done: Callable[[Any], None],
) -> None:
    """Run `fn(*item)` for every item in `pool`; stop at the first error and raise it."""
    pending: set[Future[Any]] = {pool.submit(fn, *item) for item in items}
    while pending:
        finished, pending = wait(pending, timeout=0.5, return_when=FIRST_EXCEPTION)
        for f in finished:
            exc = f.exception()
            if exc is not None:
                for p in pending:
                    p.cancel()
                raise exc
            on_done(f.result())


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
