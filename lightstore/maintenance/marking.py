"""Garbage collection's plan: what nothing kept reaches, and so what a collection removes.

What gc keeps (pins, live links, inputs of running builds, `gc_keeps`) and the
caller's keeps are gathered here; the catalogue marks in SQL (`Catalogue.unreachable`).
Nothing is removed: `gc.collect` sweeps what the plan names.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, cast

from lightstore.foundation.errors import InvalidReferenceError
from lightstore.foundation.refs import DRef, RRef, parse_dref, parse_rref
from lightstore.foundation.times import parse_optional_time
from lightstore.maintenance.pins import gc_keeps

if TYPE_CHECKING:
    from lightstore.store import LocalStore


@dataclass
class GCReport:
    """What a collection removed (or, for a dry run, would remove)."""

    drefs: list[DRef] = field(default_factory=list)
    rrefs: list[RRef] = field(default_factory=list)
    bytes_freed: int = 0
    stale_links: list[str] = field(default_factory=list)
    dry_run: bool = False


def _as_set(refs: Iterable[str], parse: Callable[[str], str]) -> set[str]:
    """`refs` as a set of plain strings (not yet checked to be well-formed: the catalogue
    checks them while marking)."""
    if isinstance(refs, str):
        raise InvalidReferenceError(f"expected a list of references, not the string {refs!r}")
    try:
        items = list(refs)
    except TypeError:
        raise InvalidReferenceError(f"expected a list of references, not {refs!r}") from None
    if not all(type(r) is str for r in items):
        # A str subclass may lack a hash or redefine ==: keep its plain value.
        items = [str.__str__(r) if isinstance(r, str) else parse(r) for r in items]
    return set(items)


def _mark(
    store: LocalStore,
    keep_drefs: Iterable[str],
    keep_rrefs: Iterable[str],
    use_gc_keeps: bool,
    keep_since: float | str | None,
    mode: str = "auto",
) -> tuple[list[str], list[str], int, list[str]]:
    """The dead derivations and realizations (each list sorted), their bytes, the stale links.

    `mode` ("dense" or "sparse") forces a way of marking, for tests (see
    `lightstore.catalogue.marking`).
    """
    keep_since = parse_optional_time(keep_since, "keep_since")
    drefs = _as_set(keep_drefs, parse_dref)
    rrefs = _as_set(keep_rrefs, parse_rref)
    stale: list[str] = []
    if use_gc_keeps:
        found = gc_keeps(store)
        drefs |= found.drefs
        rrefs |= found.rrefs
        stale = found.stale_links
    dead_d, dead_r, size = store.catalogue.unreachable(rrefs, drefs, keep_since, mode)
    return dead_d, dead_r, size, stale


def garbage_sets(
    store: LocalStore,
    keep_drefs: Iterable[str] = (),
    keep_rrefs: Iterable[str] = (),
    use_gc_keeps: bool = True,
    keep_since: float | None = None,
) -> tuple[set[DRef], set[RRef], int, list[str]]:
    """Mark: the derivations and realizations not reachable from what gc keeps (and the extra
    keeps, and realizations built or imported at or after `keep_since`), the bytes they hold, and the
    stale links. One SQL statement."""
    dead_d, dead_r, size, stale = _mark(store, keep_drefs, keep_rrefs, use_gc_keeps, keep_since)
    return cast(set[DRef], set(dead_d)), cast(set[RRef], set(dead_r)), size, stale


def garbage(
    store: LocalStore,
    keep_drefs: Iterable[str] = (),
    keep_rrefs: Iterable[str] = (),
    use_gc_keeps: bool = True,
    keep_since: float | str | None = None,
    only: GCReport | None = None,
) -> GCReport:
    """What a collection would remove, as a report (sorted lists).

    With `only` (an earlier report, say one a user confirmed), nothing outside
    it is removed: what became garbage since is kept, with its closure.
    """
    dead_d, dead_r, size, stale = _mark(store, keep_drefs, keep_rrefs, use_gc_keeps, keep_since)
    if only is not None:
        extra_d = set(dead_d) - set(only.drefs)
        extra_r = set(dead_r) - set(only.rrefs)
        if extra_d or extra_r:
            dead_d, dead_r, size, stale = _mark(
                store, [*keep_drefs, *extra_d], [*keep_rrefs, *extra_r], use_gc_keeps, keep_since
            )
        stale = [s for s in stale if s in set(only.stale_links)]
    return GCReport(cast(list[DRef], dead_d), cast(list[RRef], dead_r), size, stale, dry_run=True)
