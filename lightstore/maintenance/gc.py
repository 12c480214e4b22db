"""Garbage collection: keep the closure of the roots, delete the rest.

Marking is SQL (recursive CTEs over the dependency tables). Sweeping holds the
collector lock exclusively, so no realization runs meanwhile, and goes in an
order that a crash at any instant leaves recoverable:

1. move the doomed folders into a trash area ``tmp/<host>.<pid>.<r>.gc/``;
2. delete their catalogue rows in one transaction;
3. delete the trash.

If the process dies after 1, `recover_gc_area` moves back what the catalogue
still lists; after 2, it deletes the trash.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from lightstore.engine.logs import remove_orphan_logs
from lightstore.failpoints import failpoint
from lightstore.files import remove_tree
from lightstore.maintenance.roots import roots
from lightstore.refs import DRef, RRef, parse_dref, parse_rref
from lightstore.store import CONFIG_FILE, DEFAULT_GC_TIMEOUT_S

if TYPE_CHECKING:
    from lightstore.store import Store

_LIVE_SQL = """
WITH RECURSIVE
  root_rrefs(rref) AS (
    SELECT value FROM json_each(:rrefs)
    UNION SELECT rref FROM realizations WHERE dref IN (SELECT value FROM json_each(:drefs))
  ),
  live_rrefs(rref) AS (
    SELECT rref FROM root_rrefs
    UNION SELECT d.dep FROM realization_deps AS d JOIN live_rrefs AS l ON d.rref = l.rref
  ),
  root_drefs(dref) AS (
    SELECT value FROM json_each(:drefs)
    UNION SELECT r.dref FROM realizations AS r JOIN live_rrefs AS l ON r.rref = l.rref
  ),
  live_drefs(dref) AS (
    SELECT dref FROM root_drefs
    UNION SELECT d.dep FROM derivation_deps AS d JOIN live_drefs AS l ON d.dref = l.dref
  )
SELECT 'r', rref, size FROM realizations WHERE rref NOT IN (SELECT rref FROM live_rrefs)
UNION ALL
SELECT 'd', dref, 0 FROM derivations WHERE dref NOT IN (SELECT dref FROM live_drefs)
"""


@dataclass
class GCReport:
    """What a collection removed (or, for a dry run, would remove)."""

    drefs: list[DRef] = field(default_factory=list)
    rrefs: list[RRef] = field(default_factory=list)
    bytes_freed: int = 0
    stale_links: list[str] = field(default_factory=list)
    dry_run: bool = False


def garbage_sets(
    store: Store,
    keep_drefs: Iterable[str] = (),
    keep_rrefs: Iterable[str] = (),
    use_roots: bool = True,
) -> tuple[set[DRef], set[RRef], int, list[str]]:
    """Mark: the derivations and realizations not reachable from the roots (and the extra
    keeps), the bytes they hold, and the stale links. One SQL statement."""
    drefs = {parse_dref(d) for d in keep_drefs}
    rrefs = {parse_rref(r) for r in keep_rrefs}
    stale: list[str] = []
    if use_roots:
        found = roots(store)
        drefs |= found.drefs
        rrefs |= found.rrefs
        stale = found.stale_links
    # NOT IN builds one temporary index of the live set: linear in the store,
    # where a correlated NOT EXISTS would rescan the live set for every row.
    params = {"rrefs": json.dumps(sorted(rrefs)), "drefs": json.dumps(sorted(drefs))}
    dead_r: set[RRef] = set()
    dead_d: set[DRef] = set()
    size = 0
    for kind, ref, bytes_ in store.catalogue.conn.execute(_LIVE_SQL, params):
        if kind == "r":
            dead_r.add(RRef(ref))
            size += bytes_
        else:
            dead_d.add(DRef(ref))
    return dead_d, dead_r, size, stale


def garbage(
    store: Store,
    keep_drefs: Iterable[str] = (),
    keep_rrefs: Iterable[str] = (),
    use_roots: bool = True,
) -> GCReport:
    """What a collection would remove, as a report (sorted lists)."""
    dead_d, dead_r, size, stale = garbage_sets(store, keep_drefs, keep_rrefs, use_roots)
    return GCReport(sorted(dead_d), sorted(dead_r), size, stale, dry_run=True)


def collect(
    store: Store,
    dry_run: bool = False,
    timeout: float | None = DEFAULT_GC_TIMEOUT_S,
    progress: Callable[[int, int], None] | None = None,
) -> GCReport:
    """Delete everything not reachable from the roots, in tree and catalogue.

    Waits up to `timeout` seconds for running realizations (they hold the
    collector lock shared), then raises LockTimeout.
    """
    if dry_run:
        return garbage(store)
    with store.collecting(timeout=timeout):
        store.recover()  # finish an earlier gc that died, before marking
        report = garbage(store)
        report.dry_run = False
        remove_orphan_logs(store.root, set(store.catalogue.column("SELECT id FROM builds")))
        if not report.rrefs and not report.drefs and not report.stale_links:
            return report
        area = store.new_build_area("gc")
        try:
            moved = _sweep(store, area, report)
        except BaseException:
            # Nothing was deleted: put back whatever the catalogue still lists.
            recover_gc_area(store, area)
            remove_tree(area)
            raise
        # Deleting files is the slow part on a big store: one object at a time, with progress.
        for i, folder in enumerate(moved):
            remove_tree(folder)
            if progress is not None:
                progress(i + 1, len(moved))
        remove_tree(area)
        # Build logs go with their build records (deleted with their derivation).
        remove_orphan_logs(store.root, set(store.catalogue.column("SELECT id FROM builds")))
    store.catalogue.shrink()
    return report


def _sweep(store: Store, area: str, report: GCReport) -> list[str]:
    """Move the doomed objects into the trash area, then delete their rows in one transaction."""
    moved = [_trash(store, area, store.rref_path(r)) for r in report.rrefs]
    for dref in report.drefs:
        # Only what the catalogue knows goes: a folder unknown to it is left for verify.
        moved.append(_trash(store, area, os.path.join(store.dref_path(dref), CONFIG_FILE)))
        with contextlib.suppress(OSError):
            os.rmdir(store.dref_path(dref))
    failpoint("gc:moved")
    with store.catalogue.write() as conn:
        conn.executemany("DELETE FROM links WHERE path = ?", [(p,) for p in report.stale_links])
        store.catalogue.delete_objects(report.rrefs, report.drefs)  # joins this transaction
    failpoint("gc:committed")
    return moved


def _trash(store: Store, area: str, path: str) -> str:
    """Move an object folder into the trash area, keeping its layout; return where it went."""
    dst = os.path.join(area, os.path.relpath(path, store.root))
    _move(path, dst)
    return dst


def _move(src: str, dst: str) -> None:
    if not os.path.lexists(src):
        return
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    # Moving a folder to another parent rewrites its `..`: it must be writable.
    os.chmod(src, os.stat(src).st_mode | stat.S_IWUSR)
    os.rename(src, dst)


def recover_gc_area(store: Store, area: str) -> None:
    """Finish or undo a gc that died or failed: put back what the catalogue still lists.

    Whatever is already back in place (an identical realization rebuilt
    meanwhile) is left as it is; the trash is deleted by the caller.
    """
    objects = os.path.join(area, "objects")
    if not os.path.isdir(objects):
        return
    for dname in sorted(os.listdir(objects)):
        dhash, _, name = dname.partition("-")
        dref = DRef(f"dref:{dhash}-{name}")
        if not store.catalogue.known_drefs([dref]):
            continue
        trashed = os.path.join(objects, dname)
        home = store.dref_path(dref)
        os.makedirs(home, exist_ok=True)
        for entry in sorted(os.listdir(trashed)):
            source, target = os.path.join(trashed, entry), os.path.join(home, entry)
            if entry == CONFIG_FILE:
                if not os.path.exists(target):
                    os.rename(source, target)
                continue
            rref = RRef(f"rref:{entry}-{dhash}-{name}")
            if store.catalogue.known_rrefs([rref]) and not os.path.lexists(target):
                os.rename(source, target)
