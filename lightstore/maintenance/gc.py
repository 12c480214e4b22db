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
import re
import sqlite3
import stat
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from lightstore.catalogue.database import translate_error
from lightstore.foundation.errors import CatalogueCorruptError, InvalidReferenceError, UsageError
from lightstore.foundation.failpoints import failpoint
from lightstore.foundation.files import remove_tree
from lightstore.foundation.refs import _DREF_RE, _RREF_RE, DRef, RRef, parse_dref, parse_rref
from lightstore.foundation.times import parse_optional_time, parse_timeout
from lightstore.maintenance.roots import roots
from lightstore.store import CONFIG_FILE, DEFAULT_GC_TIMEOUT_S
from lightstore.store.layout import Layout, log_build_id
from lightstore.store.recovery import restore_trash

if TYPE_CHECKING:
    from lightstore.store import LocalStore

# `keep_since` keeps what was built or imported since: a run pulled today
# but built a month ago is as new to this store as a fresh build.
_KEPT_SINCE = (
    "max(coalesce(build_stopped, created), coalesce(imported, build_stopped, created)) >= :since"
)
_LIVE_CTE = f"""
WITH RECURSIVE
  root_rrefs(rref) AS (
    SELECT value FROM json_each(:rrefs)
    UNION SELECT rref FROM realizations WHERE dref IN (SELECT value FROM json_each(:drefs))
    UNION SELECT rref FROM realizations WHERE :since IS NOT NULL AND {_KEPT_SINCE}
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
    SELECT group_concat(rref), coalesce(sum(size), 0) FROM (
      SELECT rref, size FROM realizations INDEXED BY realizations_by_rref_size
      WHERE rref NOT IN (SELECT rref FROM live_rrefs) ORDER BY rref)
  )
SELECT
  refs,
  bytes,
  (SELECT group_concat(dref) FROM (
    SELECT dref FROM derivations WHERE dref NOT IN (SELECT dref FROM live_drefs) ORDER BY dref))
FROM dead_rrefs
"""
)
# Dense marking (`_mark_dense`). The realizations that are not roots; all of
# them (from the covering index) when no root is given by derivation or time.
_ALL_RREFS = "SELECT group_concat(rref) FROM realizations INDEXED BY realizations_by_rref_size"
_NON_ROOT_RREFS = f"""
SELECT group_concat(rref) FROM realizations
WHERE dref NOT IN (SELECT value FROM json_each(:drefs))
  AND (:since IS NULL OR NOT {_KEPT_SINCE})
"""
_BYTES_OF = (
    "SELECT coalesce(sum(size), 0) FROM realizations "
    "WHERE rref IN (SELECT value FROM json_each(:refs))"
)
# Of the candidates in temp.gc_cand, those reachable from a non-candidate
# along `edges` (src depends on dst): the seeds have a referrer that is not a
# candidate; the walk goes down from them. Correlated subqueries test
# membership through the temporary table's primary key (an IN over a CTE
# inside one would be rebuilt for every row).
_LIVE_CANDIDATES = """
WITH RECURSIVE live(ref) AS (
  SELECT c.ref FROM temp.gc_cand AS c WHERE EXISTS (
    SELECT 1 FROM {edges} AS e WHERE e.{dst} = c.ref
      AND NOT EXISTS (SELECT 1 FROM temp.gc_cand AS x WHERE x.ref = e.{src}))
  UNION
  SELECT e.{dst} FROM live AS l
    JOIN {edges} AS e ON e.{src} = l.ref
    JOIN temp.gc_cand AS c ON c.ref = e.{dst}
)
SELECT group_concat(ref) FROM live
"""
# Derivation candidates: not kept, and every realization of theirs dead (the
# dead realizations are in temp.gc_cand).
_DREF_CANDIDATES = """
SELECT group_concat(v.dref) FROM derivations AS v
WHERE v.dref NOT IN (SELECT value FROM json_each(:drefs))
  AND NOT EXISTS (
    SELECT 1 FROM realizations AS r WHERE r.dref = v.dref
      AND NOT EXISTS (SELECT 1 FROM temp.gc_cand AS x WHERE x.ref = r.rref))
"""
# The same answer a row at a time, for a garbage list longer than SQLite's
# longest string (1 GB: about ten million references).
_DEAD_RREF_ROWS = (
    _LIVE_CTE
    + "SELECT rref, size FROM realizations WHERE rref NOT IN (SELECT rref FROM live_rrefs)"
)
_DEAD_DREF_ROWS = (
    _LIVE_CTE + "SELECT dref FROM derivations WHERE dref NOT IN (SELECT dref FROM live_drefs)"
)


@dataclass
class GCReport:
    """What a collection removed (or, for a dry run, would remove)."""

    drefs: list[DRef] = field(default_factory=list)
    rrefs: list[RRef] = field(default_factory=list)
    bytes_freed: int = 0
    stale_links: list[str] = field(default_factory=list)
    dry_run: bool = False


def _as_set(refs: Iterable[str], parse: Callable[[str], str]) -> set[str]:
    """`refs` as a set of plain strings (not yet checked to be well-formed: see `_check`)."""
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


def _check(refs: Iterable[str], pattern: re.Pattern[str], parse: Callable[[str], str]) -> None:
    """Raise InvalidReferenceError (through `parse`) unless every string is well-formed.

    One C-level pass: a million references are checked in about half a
    second, where parsing each into a typed reference takes seconds.
    """
    if not all(map(pattern.fullmatch, refs)):
        for item in refs:
            parse(item)


def _mark(
    store: LocalStore,
    keep_drefs: Iterable[str],
    keep_rrefs: Iterable[str],
    use_roots: bool,
    keep_since: float | str | None,
    mode: str = "auto",
) -> tuple[list[str], list[str], int, list[str]]:
    """The dead derivations and realizations (each list sorted), their bytes, the stale links.

    Two ways to the same answer, chosen by how much of the store the roots
    hold (see `_dense_roots`): few roots, walk forward from them (`_LIVE_SQL`,
    work in proportion to what is live); roots covering most of the store,
    decide only the realizations that are not roots (`_mark_dense`, work in
    proportion to those). `mode` ("dense" or "sparse") forces one, for tests.
    """
    keep_since = parse_optional_time(keep_since, "keep_since")
    drefs = _as_set(keep_drefs, parse_dref)
    _check(drefs, _DREF_RE, parse_dref)
    # Kept realizations found in the store were checked when they were recorded:
    # the dense marking checks the others only (for a million keeps, half a second).
    rrefs = _as_set(keep_rrefs, parse_rref)
    stale: list[str] = []
    if use_roots:
        found = roots(store)
        drefs |= found.drefs
        rrefs |= found.rrefs
        stale = found.stale_links
    conn = store.catalogue.conn
    try:
        with _snapshot(conn):
            marked = None
            if mode == "dense" or (mode == "auto" and _dense_roots(conn, rrefs, drefs, keep_since)):
                marked = _mark_dense(conn, rrefs, drefs, keep_since)
            if marked is None:
                _check(rrefs, _RREF_RE, parse_rref)
                marked = _mark_sparse(conn, rrefs, drefs, keep_since)
    except sqlite3.Error as e:
        raise translate_error(e, store.catalogue.path, "marking garbage") from e
    dead_d, dead_r, size = marked
    return dead_d, dead_r, size, stale


@contextlib.contextmanager
def _snapshot(conn: sqlite3.Connection) -> Iterator[None]:
    """One read transaction, so that several statements see the same catalogue."""
    if conn.in_transaction:
        yield
        return
    conn.execute("BEGIN")
    try:
        yield
    finally:
        # Only temp.gc_cand was written. COMMIT, unlike ROLLBACK after a write,
        # does not abort a statement of the caller still reading this connection.
        if conn.in_transaction:
            conn.execute("COMMIT")


def _dense_roots(
    conn: sqlite3.Connection, rrefs: set[str], drefs: set[str], since: float | None
) -> bool:
    """Whether the roots are (about) half the realizations or more: an estimate, from
    indexes, that only chooses between two ways to the same answer."""
    total = conn.execute("SELECT count(*) FROM realizations").fetchone()[0]
    estimate = len(rrefs)
    if drefs and estimate * 2 < total:
        estimate += conn.execute(
            "SELECT count(*) FROM realizations WHERE dref IN (SELECT value FROM json_each(?))",
            (json.dumps(list(drefs)),),
        ).fetchone()[0]
    if since is not None and estimate * 2 < total:
        estimate += conn.execute(
            "SELECT count(*) FROM realizations WHERE build_stopped >= ?", (since,)
        ).fetchone()[0]
    return total > 0 and estimate * 2 >= total


def _bytes(conn: sqlite3.Connection, size: Any) -> int:
    """A sum of recorded sizes as an int; CatalogueCorruptError if a size is not finite (an
    edited catalogue: 9e999 is infinity to SQLite)."""
    try:
        return int(size)
    except (OverflowError, ValueError, TypeError):
        path = conn.execute("PRAGMA database_list").fetchone()[2]
        raise CatalogueCorruptError(
            f"the catalogue {path} is damaged: the recorded sizes of realizations add up to "
            f"{size!r}; run `lightstore reindex` to rebuild it from the tree"
        ) from None


def _mark_sparse(
    conn: sqlite3.Connection, rrefs: set[str], drefs: set[str], since: float | None
) -> tuple[list[str], list[str], int]:
    """Mark by walking forward from the roots: one SQL statement that also sorts and
    joins the dead references, so Python only splits two strings."""
    # NOT IN builds one temporary index of the live set: linear in the store,
    # where a correlated NOT EXISTS would rescan the live set for every row.
    params = {"rrefs": json.dumps(list(rrefs)), "drefs": json.dumps(list(drefs)), "since": since}
    try:
        dead_r, size, dead_d = conn.execute(_LIVE_SQL, params).fetchone()
    except sqlite3.DataError:  # "string or blob too big"
        rows = conn.execute(_DEAD_RREF_ROWS, params).fetchall()
        dead_r = ",".join(r for r, _ in rows)
        size = sum(s for _, s in rows)
        dead_d = ",".join(d for (d,) in conn.execute(_DEAD_DREF_ROWS, params))
    # References hold no comma (they are checked when recorded). SQLite
    # returns them in order; sorting a sorted list is one linear pass.
    return _split(dead_d), _split(dead_r), _bytes(conn, size)


def _mark_dense(
    conn: sqlite3.Connection, rrefs: set[str], drefs: set[str], since: float | None
) -> tuple[list[str], list[str], int] | None:
    """Mark when the roots are most of the store, or None past SQLite's longest string.

    A realization that is not a root is live only if a live realization
    depends on it, so only the non-roots are decided: those nothing depends
    on are dead; the rest are live if a root depends on them, or (walking
    down) a realization found live that way. Derivations the same way, with
    the derivations of live realizations as roots.
    """
    if drefs or since is not None:
        query, params = _NON_ROOT_RREFS, {"drefs": json.dumps(list(drefs)), "since": since}
    else:
        query, params = _ALL_RREFS, {}
    try:
        joined = conn.execute(query, params).fetchone()[0]
        every = joined.split(",") if joined else []
        del joined
        candidates = [r for r in every if r not in rrefs]
        if drefs or since is not None or len(every) - len(candidates) < len(rrefs):
            # Not every kept reference is known to be in the store: check each is well-formed.
            _check(rrefs, _RREF_RE, parse_rref)
        del every
        live = _live_candidates(conn, candidates, "realization_deps", "rref", "dep")
        dead_r = sorted(r for r in candidates if r not in live)
        size = conn.execute(_BYTES_OF, {"refs": json.dumps(dead_r)}).fetchone()[0]
        _fill_candidates(conn, dead_r)
        joined = conn.execute(_DREF_CANDIDATES, {"drefs": json.dumps(list(drefs))}).fetchone()[0]
        dref_candidates = joined.split(",") if joined else []
        live = _live_candidates(conn, dref_candidates, "derivation_deps", "dref", "dep")
        dead_d = sorted(d for d in dref_candidates if d not in live)
    except sqlite3.DataError:  # a list longer than SQLite's longest string
        return None
    finally:
        try:
            conn.execute("DROP TABLE IF EXISTS temp.gc_cand")
        except sqlite3.OperationalError:  # "table is locked": a statement is still reading
            conn.execute("DELETE FROM temp.gc_cand")
    return dead_d, dead_r, _bytes(conn, size)


def _fill_candidates(conn: sqlite3.Connection, refs: list[str]) -> None:
    """Put `refs` into the temporary table temp.gc_cand, emptied first."""
    # Not dropped and made anew: DROP fails while the caller reads this connection.
    conn.execute("CREATE TEMP TABLE IF NOT EXISTS gc_cand (ref TEXT PRIMARY KEY) WITHOUT ROWID")
    conn.execute("DELETE FROM temp.gc_cand")
    conn.execute(
        "INSERT OR IGNORE INTO temp.gc_cand SELECT value FROM json_each(?)", (json.dumps(refs),)
    )


def _live_candidates(
    conn: sqlite3.Connection, candidates: list[str], edges: str, src: str, dst: str
) -> set[str]:
    """Of `candidates` (references that are not roots), those a root reaches along `edges`."""
    _fill_candidates(conn, candidates)
    sql = _LIVE_CANDIDATES.format(edges=edges, src=src, dst=dst)
    joined = conn.execute(sql).fetchone()[0]
    return set(joined.split(",")) if joined else set()


def _split(joined: str | None) -> list[str]:
    """The references of a group_concat (comma-separated; None for none), sorted."""
    out = joined.split(",") if joined else []
    out.sort()
    return out


def garbage_sets(
    store: LocalStore,
    keep_drefs: Iterable[str] = (),
    keep_rrefs: Iterable[str] = (),
    use_roots: bool = True,
    keep_since: float | None = None,
) -> tuple[set[DRef], set[RRef], int, list[str]]:
    """Mark: the derivations and realizations not reachable from the roots (and the extra
    keeps, and realizations built or imported at or after `keep_since`), the bytes they hold, and the
    stale links. One SQL statement."""
    dead_d, dead_r, size, stale = _mark(store, keep_drefs, keep_rrefs, use_roots, keep_since)
    return cast(set[DRef], set(dead_d)), cast(set[RRef], set(dead_r)), size, stale


def garbage(
    store: LocalStore,
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
    return GCReport(cast(list[DRef], dead_d), cast(list[RRef], dead_r), size, stale, dry_run=True)


def collect(
    store: LocalStore,
    dry_run: bool = False,
    timeout: float | None = DEFAULT_GC_TIMEOUT_S,
    progress: Callable[[int, int], None] | None = None,
    keep_since: float | str | None = None,
    only: GCReport | None = None,
    keep_drefs: Iterable[str] = (),
    keep_rrefs: Iterable[str] = (),
) -> GCReport:
    """Remove everything not reachable from the roots from the tree; keep its record.

    Realizations built or imported at or after `keep_since` (Unix time), and `keep_drefs` /
    `keep_rrefs`, are kept as if pinned. With `only` (a dry run's report),
    nothing outside that report is removed. Waits up to `timeout` seconds for
    running realizations (they hold the collector lock shared), then raises
    LockTimeout (QueryError for a NaN or negative `timeout`). Raises
    UsageError inside an open catalogue transaction (the removal commits on
    its own, after the folders are moved).
    """
    timeout = parse_timeout(timeout)
    keep_drefs, keep_rrefs = list(keep_drefs), list(keep_rrefs)
    if dry_run:
        return garbage(store, keep_drefs, keep_rrefs, keep_since=keep_since)
    if store.catalogue.conn.in_transaction:
        raise UsageError(
            "gc cannot run inside an open catalogue transaction: its removal commits on its "
            "own, after the folders are moved; run it after the transaction ends"
        )
    with store.collecting(timeout=timeout):
        store.recover()  # finish an earlier gc that died, before marking
        report = garbage(store, keep_drefs, keep_rrefs, keep_since=keep_since, only=only)
        report.dry_run = False
        # Logs follow build records, which outlive gc; this only clears logs
        # whose record is gone (forgotten, or lost to a reindex).
        remove_orphan_logs(store, lambda: set(store.catalogue.column("SELECT id FROM builds")))
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


def _sweep(store: LocalStore, area: str, report: GCReport) -> list[str]:
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


def _trash(store: LocalStore, area: str, path: str) -> str:
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
    store: LocalStore,
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

    before = parse_optional_time(before, "before")
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
        remove_orphan_logs(store, lambda: set(store.catalogue.column("SELECT id FROM builds")))
        store.catalogue.shrink()
    return report


def remove_orphan_logs(store: Layout, known_build_ids: Callable[[], set[int]] | set[int]) -> int:
    """Delete the logs whose build is not in `known_build_ids`; return how many went.

    Give a function that reads the build ids from the catalogue: it is called
    after the folder is listed, so a build that started meanwhile (its row is
    committed before its log is created) keeps its log. `forget` and gc call it.
    """
    folder = store.logs_dir
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return 0
    known = known_build_ids() if callable(known_build_ids) else known_build_ids
    removed = 0
    for name in names:
        build_id = log_build_id(name)
        if build_id is None or build_id in known:
            continue
        try:
            os.remove(os.path.join(folder, name))
            removed += 1
        except FileNotFoundError:
            pass
    return removed
