"""Garbage collection: keep the closure of the roots, delete the rest.

Marking is SQL (recursive CTEs over the dependency tables). Sweeping holds the
collector lock exclusively, so no realization runs meanwhile, and goes in an
order that a crash at any instant leaves recoverable:

1. move the doomed folders into a trash area ``tmp/<host>.<pid>.<r>.gc/``;
2. move their catalogue rows to the collected_* tables in one transaction
   (the record of past experiments outlives the artifacts; `forget` deletes it);
3. delete the trash.

If the process dies after 1, `lightstore.trash.restore_trash` (run by the
next open's recovery) moves back what the catalogue still lists; after 2, it
deletes the trash.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import stat
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from lightstore.catalogue.database import translate_error
from lightstore.failpoints import failpoint
from lightstore.files import remove_tree
from lightstore.layout import CONFIG_FILE, DEFAULT_GC_TIMEOUT_S
from lightstore.logs import remove_orphan_logs
from lightstore.maintenance.roots import roots
from lightstore.refs import DRef, RRef, parse_dref, parse_rref
from lightstore.trash import restore_trash

if TYPE_CHECKING:
    from lightstore.store import Store

_LIVE_CTE = """
WITH RECURSIVE
  root_rrefs(rref) AS (
    SELECT value FROM json_each(:rrefs)
    UNION SELECT rref FROM realizations WHERE dref IN (SELECT value FROM json_each(:drefs))
    UNION SELECT rref FROM realizations
      WHERE :since IS NOT NULL AND coalesce(build_stopped, created) >= :since
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
"""
_LIVE_SQL = (
    _LIVE_CTE
    + """,
  dead_rrefs(refs, bytes) AS (
    -- One pass over the (rref, size) index, in order: nothing to sort.
    SELECT group_concat(rref, char(10)), coalesce(sum(size), 0) FROM (
      SELECT rref, size FROM realizations INDEXED BY realizations_by_rref_size
      WHERE rref NOT IN (SELECT rref FROM live_rrefs) ORDER BY rref)
  )
SELECT
  refs,
  bytes,
  (SELECT group_concat(dref, char(10)) FROM (
    SELECT dref FROM derivations WHERE dref NOT IN (SELECT dref FROM live_drefs) ORDER BY dref))
FROM dead_rrefs
"""
)
# The same answer a row at a time, for a garbage list longer than SQLite's
# longest string (1 GB: about ten million references).
_DEAD_RREF_ROWS = (
    _LIVE_CTE
    + "SELECT rref, size FROM realizations WHERE rref NOT IN (SELECT rref FROM live_rrefs)"
)
_DEAD_DREF_ROWS = (
    _LIVE_CTE + "SELECT dref FROM derivations WHERE dref NOT IN (SELECT dref FROM live_drefs)"
)


def _point_in_time(value: float | int | str | None, what: str) -> float | None:
    """Unix seconds from a number or a text such as '7d' / '2024-05-01'; None stays None.

    A string must never reach SQL as is: SQLite orders every number before
    every text, so `build_stopped >= '7d'` would keep nothing.
    """
    from lightstore.query.errors import QueryError
    from lightstore.query.filters import parse_time

    if value is None:
        return None
    if isinstance(value, str):
        return parse_time(value)
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value == value:
        return float(value)
    raise QueryError(
        f"{what} takes Unix seconds or a time such as '7d' or '2024-05-01', not {value!r}"
    )


@dataclass
class GCReport:
    """What a collection removed (or, for a dry run, would remove)."""

    drefs: list[DRef] = field(default_factory=list)
    rrefs: list[RRef] = field(default_factory=list)
    bytes_freed: int = 0
    stale_links: list[str] = field(default_factory=list)
    dry_run: bool = False


def _mark(
    store: Store,
    keep_drefs: Iterable[str],
    keep_rrefs: Iterable[str],
    use_roots: bool,
    keep_since: float | str | None,
) -> tuple[list[str], list[str], int, list[str]]:
    """The dead derivations and realizations (each list sorted), their bytes, the stale links.

    One SQL statement that also sorts and joins the references: Python only
    splits two strings, instead of handling a row (and a sort key) per object.
    """
    keep_since = _point_in_time(keep_since, "keep_since")
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
    params = {
        "rrefs": json.dumps(list(rrefs)),
        "drefs": json.dumps(list(drefs)),
        "since": keep_since,
    }
    conn = store.catalogue.conn
    try:
        try:
            dead_r, size, dead_d = conn.execute(_LIVE_SQL, params).fetchone()
        except sqlite3.DataError:  # "string or blob too big"
            rows = conn.execute(_DEAD_RREF_ROWS, params).fetchall()
            dead_r = "\n".join(r for r, _ in rows)
            size = sum(s for _, s in rows)
            dead_d = "\n".join(d for (d,) in conn.execute(_DEAD_DREF_ROWS, params))
    except sqlite3.Error as e:
        raise translate_error(e, store.catalogue.path, "marking garbage") from e
    # References hold no newline (they are checked when recorded). SQLite
    # returns them in order; sorting a sorted list is one linear pass.
    rrefs_out = dead_r.split("\n") if dead_r else []
    drefs_out = dead_d.split("\n") if dead_d else []
    rrefs_out.sort()
    drefs_out.sort()
    return drefs_out, rrefs_out, int(size), stale


def garbage_sets(
    store: Store,
    keep_drefs: Iterable[str] = (),
    keep_rrefs: Iterable[str] = (),
    use_roots: bool = True,
    keep_since: float | None = None,
) -> tuple[set[DRef], set[RRef], int, list[str]]:
    """Mark: the derivations and realizations not reachable from the roots (and the extra
    keeps, and realizations built at or after `keep_since`), the bytes they hold, and the
    stale links. One SQL statement."""
    dead_d, dead_r, size, stale = _mark(store, keep_drefs, keep_rrefs, use_roots, keep_since)
    return set(map(DRef, dead_d)), set(map(RRef, dead_r)), size, stale


def garbage(
    store: Store,
    keep_drefs: Iterable[str] = (),
    keep_rrefs: Iterable[str] = (),
    use_roots: bool = True,
    keep_since: float | str | None = None,
    only: GCReport | None = None,
) -> GCReport:
    """What a collection would remove, as a report (sorted lists).

    With `only` (an earlier report, say one a user confirmed), nothing outside
    it is removed: what became garbage since is kept, with its closure.
    """
    dead_d, dead_r, size, stale = _mark(store, keep_drefs, keep_rrefs, use_roots, keep_since)
    if only is not None:
        extra_d = set(dead_d) - set(only.drefs)
        extra_r = set(dead_r) - set(only.rrefs)
        if extra_d or extra_r:
            dead_d, dead_r, size, stale = _mark(
                store, [*keep_drefs, *extra_d], [*keep_rrefs, *extra_r], use_roots, keep_since
            )
        stale = [s for s in stale if s in set(only.stale_links)]
    return GCReport(list(map(DRef, dead_d)), list(map(RRef, dead_r)), size, stale, dry_run=True)


def collect(
    store: Store,
    dry_run: bool = False,
    timeout: float | None = DEFAULT_GC_TIMEOUT_S,
    progress: Callable[[int, int], None] | None = None,
    keep_since: float | str | None = None,
    only: GCReport | None = None,
) -> GCReport:
    """Remove everything not reachable from the roots from the tree; keep its record.

    Realizations built at or after `keep_since` (Unix time) are kept as if
    pinned. With `only` (a dry run's report), nothing outside that report is
    removed. Waits up to `timeout` seconds for running realizations (they
    hold the collector lock shared), then raises LockTimeout.
    """
    if dry_run:
        return garbage(store, keep_since=keep_since)
    with store.collecting(timeout=timeout):
        store.recover()  # finish an earlier gc that died, before marking
        report = garbage(store, keep_since=keep_since, only=only)
        report.dry_run = False
        # Logs follow build records, which outlive gc; this only clears logs
        # whose record is gone (forgotten, or lost to a reindex).
        remove_orphan_logs(store.root, lambda: set(store.catalogue.column("SELECT id FROM builds")))
        if not report.rrefs and not report.drefs and not report.stale_links:
            return report
        area = store.new_build_area("gc")
        try:
            moved = _sweep(store, area, report)
        except BaseException:
            # Nothing was deleted: put back whatever the catalogue still lists.
            restore_trash(store, area)
            remove_tree(area)
            raise
        # Deleting files is the slow part on a big store: one object at a time, with progress.
        for i, folder in enumerate(moved):
            remove_tree(folder)
            if progress is not None:
                progress(i + 1, len(moved))
        remove_tree(area)
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
    with store.catalogue.write("recording what gc removed") as conn:
        conn.executemany("DELETE FROM links WHERE path = ?", [(p,) for p in report.stale_links])
        # Joins this transaction; the rows move to the collected_* tables.
        store.catalogue.delete_objects(report.rrefs, report.drefs, reason="gc")
    store.evict([*report.rrefs, *report.drefs])
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


@dataclass
class ForgetReport:
    """How many records `forget` deleted (or, for a dry run, would delete)."""

    realizations: int = 0
    derivations: int = 0
    builds: int = 0
    dry_run: bool = False


def forget(
    store: Store,
    *,
    before: float | str | None = None,
    name: str | None = None,
    everything: bool = False,
    dry_run: bool = False,
) -> ForgetReport:
    """Delete the records of collected objects (what `history --all` shows as collected).

    Selects collected realization records removed before `before` (Unix
    time) and/or whose derivation's `name` matches (exact, or a GLOB with
    ``*?[``); `everything` selects every collected record. A collected
    derivation's record goes once none of its realization records is left
    and it matches the same filters; build attempts go with the last record
    of their derivation. Present objects are never touched. Raises QueryError
    if no filter is given (and not `everything`), or for a malformed name.
    """
    from lightstore.query.errors import QueryError
    from lightstore.query.filters import name_condition

    before = _point_in_time(before, "before")
    if name is not None and not isinstance(name, str):
        raise QueryError(f"forget takes a derivation name (or a glob), not {name!r}")
    if not everything and before is None and name is None:
        raise QueryError(
            "forget needs a filter: a name, an age (records collected before a time), "
            "or everything collected"
        )
    terms_r: list[str] = []
    terms_d: list[str] = []
    params_r: list[object] = []
    params_d: list[object] = []
    if before is not None:
        terms_r.append("c.collected < ?")
        params_r.append(before)
        terms_d.append("cd.collected < ?")
        params_d.append(before)
    if name is not None:
        term, args = name_condition(name, "n.name")
        terms_r.append(term)
        params_r.extend(args)
        term, args = name_condition(name, "cd.name")
        terms_d.append(term)
        params_d.extend(args)
    where_r = " AND ".join(terms_r) or "1"
    where_d = " AND ".join(terms_d) or "1"
    doomed_r = (
        "SELECT c.id FROM collected_realizations AS c JOIN ("
        "SELECT dref, name FROM derivations UNION ALL SELECT dref, name FROM collected_derivations"
        f") AS n ON n.dref = c.dref WHERE {where_r}"
    )
    doomed_d = (
        f"SELECT cd.dref FROM collected_derivations AS cd WHERE {where_d} AND NOT EXISTS "
        "(SELECT 1 FROM collected_realizations AS c WHERE c.dref = cd.dref)"
    )
    orphan_builds = (
        "SELECT id FROM builds WHERE status != 'running' "
        "AND dref NOT IN (SELECT dref FROM derivations) "
        "AND dref NOT IN (SELECT dref FROM collected_derivations)"
    )
    report = ForgetReport(dry_run=dry_run)
    with store.catalogue.write("forgetting collected records") as conn:
        # A dry run counts by doing and undoing the same statements, so its
        # counts cannot drift from what a real run deletes.
        conn.execute("SAVEPOINT forget")
        report.realizations = conn.execute(
            f"DELETE FROM collected_realizations WHERE id IN ({doomed_r})", params_r
        ).rowcount
        report.derivations = conn.execute(
            f"DELETE FROM collected_derivations WHERE dref IN ({doomed_d})", params_d
        ).rowcount
        report.builds = conn.execute(f"DELETE FROM builds WHERE id IN ({orphan_builds})").rowcount
        conn.execute(
            "DELETE FROM metrics WHERE rref NOT IN (SELECT rref FROM realizations) "
            "AND rref NOT IN (SELECT rref FROM collected_realizations)"
        )
        if dry_run:
            conn.execute("ROLLBACK TO forget")
        conn.execute("RELEASE forget")
    if not dry_run:
        remove_orphan_logs(store.root, lambda: set(store.catalogue.column("SELECT id FROM builds")))
        store.catalogue.shrink()
    return report
