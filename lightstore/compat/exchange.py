"""Pylightnix's archive and copy functions: a store given in any form (`S`)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from lightstore.compat.current import store_of
from lightstore.exchange import DEFAULT_MAX_BYTES, copy, pack, unpack
from lightstore.foundation.refs import RRef, parse_rref, rref2dref

Progress = Callable[[int, int, RRef], None]


def spack(
    rrefs: Iterable[RRef], archive_path: str, S: Any = None, *, progress: Progress | None = None
) -> None:
    """Pack the realizations `rrefs` and everything they depend on into `archive_path`
    (.zip, .tar, .tar.gz, ...); see `lightstore.exchange.pack`.

    As Pylightnix's spack packs the folders of their derivations whole, the
    other realizations of every derivation in that closure (those its
    matchers did not pick) are packed too, each with what it depends on.
    Raises as `lightstore.exchange.pack`.
    """
    store = store_of(S)
    roots = [parse_rref(r) for r in rrefs]
    closure = store.catalogue.rrefdeps(roots) | set(roots)
    siblings = [
        r
        for d in sorted({rref2dref(r) for r in closure})
        for r in store.catalogue.realizations_any_context(d)
    ]
    # The closure's own realizations stay out of the roots: archives name what was asked for.
    pack(store, roots + [r for r in siblings if r not in closure], archive_path, progress=progress)


def sunpack(
    archive_path: str,
    S: Any = None,
    *,
    max_bytes: int | None = DEFAULT_MAX_BYTES,
    progress: Progress | None = None,
) -> list[RRef]:
    """Add an archive made by `spack` to the store, verifying every hash; return the RRefs
    it was packed from. See `lightstore.exchange.unpack`."""
    return unpack(store_of(S), archive_path, max_bytes=max_bytes, progress=progress)


def copy_closure(
    rrefs: Iterable[RRef], src_store: Any, dst_store: Any, *, progress: Progress | None = None
) -> list[RRef]:
    """Copy the realizations `rrefs` and their closure from one store to another (each a
    Store, StorageSettings or root path); see `lightstore.exchange.copy`."""
    return copy(store_of(src_store), store_of(dst_store), rrefs, progress=progress)
