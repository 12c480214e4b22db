"""Marking for garbage collection, in SQL: which derivations and realizations nothing kept
reaches (kept: what the caller passes, pins, links and running builds' inputs among them).

Two ways to the same answer, chosen by how much of the store is kept
(`dense_keeps`): little, walk forward from it (`_LIVE_SQL`, work in
proportion to what is live); most of the store, decide only
the realizations that are not kept (`_mark_dense`, work in proportion to
those). Both run in one read transaction, writing only a temporary table.
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Callable, Iterable
from typing import Any

from lightstore.catalogue.connection import Database
from lightstore.foundation.errors import CatalogueCorruptError
from lightstore.foundation.refs import _DREF_RE, _RREF_RE, parse_dref, parse_rref

# `keep_since` keeps what was built or imported since: a run pulled today
# but built a month ago is as new to this store as a fresh build.
_KEPT_SINCE = (
    "max(coalesce(build_stopped, created), coalesce(imported, build_stopped, created)) >= :since"
)
_LIVE_CTE = f"""
WITH RECURSIVE
  kept_rrefs(rref) AS (
    SELECT value FROM json_each(:rrefs)
    UNION SELECT rref FROM realizations WHERE dref IN (SELECT value FROM json_each(:drefs))
    UNION SELECT rref FROM realizations WHERE :since IS NOT NULL AND {_KEPT_SINCE}
  ),
  live_rrefs(rref) AS (
    SELECT rref FROM kept_rrefs
    UNION SELECT d.dep FROM realization_deps AS d JOIN live_rrefs AS l ON d.rref = l.rref
  ),
  kept_drefs(dref) AS (
    SELECT value FROM json_each(:drefs)
    UNION SELECT r.dref FROM realizations AS r JOIN live_rrefs AS l ON r.rref = l.rref
  ),
  live_drefs(dref) AS (
    SELECT dref FROM kept_drefs
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
# Dense marking (`_mark_dense`). The realizations that are not kept; all of
# them (from the covering index) when nothing is kept by derivation or time.
_ALL_RREFS = "SELECT group_concat(rref) FROM realizations INDEXED BY realizations_by_rref_size"
_NOT_KEPT_RREFS = f"""
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


def check_refs(refs: Iterable[str], pattern: re.Pattern[str], parse: Callable[[str], str]) -> None:
    """Raise InvalidReferenceError (through `parse`) unless every string is well-formed.

    One C-level pass: a million references are checked in about half a
    second, where parsing each into a typed reference takes seconds.
    """
    if not all(map(pattern.fullmatch, refs)):
        for item in refs:
            parse(item)


class Marking(Database):
    """Garbage collection's marking over the catalogue."""

    def unreachable(
        self, keep_rrefs: set[str], keep_drefs: set[str], since: float | None, mode: str = "auto"
    ) -> tuple[list[str], list[str], int]:
        """The derivations and realizations (each list sorted) that nothing kept reaches,
        and the bytes those realizations hold.

        Kept: `keep_rrefs`, `keep_drefs` with their realizations, the
        realizations built or imported at or after `since`, and their closure.
        Raises InvalidReferenceError for a malformed reference in the keeps
        (one kept realization the store holds was checked when recorded). `mode`
        ("dense" or "sparse") forces a way of marking, for tests.
        """
        check_refs(keep_drefs, _DREF_RE, parse_dref)
        conn = self.conn
        try:
            with self.snapshot():
                marked = None
                if mode == "dense" or (
                    mode == "auto" and dense_keeps(conn, keep_rrefs, keep_drefs, since)
                ):
                    marked = _mark_dense(conn, keep_rrefs, keep_drefs, since)
                if marked is None:
                    check_refs(keep_rrefs, _RREF_RE, parse_rref)
                    marked = _mark_sparse(conn, keep_rrefs, keep_drefs, since)
        except sqlite3.Error as e:
            raise self._translate(e, "marking garbage") from e
        return marked


def dense_keeps(
    conn: sqlite3.Connection, rrefs: set[str], drefs: set[str], since: float | None
) -> bool:
    """Whether what is kept is (about) half the realizations or more: an estimate, from
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
    """Mark by walking forward from what is kept: one SQL statement that also sorts and
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
    """Mark when most of the store is kept, or None past SQLite's longest string.

    A realization that is not kept is live only if a live realization
    depends on it, so only those are decided: those nothing depends
    on are dead; the rest are live if a kept one depends on them, or (walking
    down) a realization found live that way. Derivations the same way, with
    the derivations of live realizations as kept.
    """
    if drefs or since is not None:
        query, params = _NOT_KEPT_RREFS, {"drefs": json.dumps(list(drefs)), "since": since}
    else:
        query, params = _ALL_RREFS, {}
    try:
        joined = conn.execute(query, params).fetchone()[0]
        every = joined.split(",") if joined else []
        del joined
        candidates = [r for r in every if r not in rrefs]
        if drefs or since is not None or len(every) - len(candidates) < len(rrefs):
            # Not every kept reference is known to be in the store: check each is well-formed.
            check_refs(rrefs, _RREF_RE, parse_rref)
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
    """Of `candidates` (references that are not kept), those a kept one reaches along `edges`."""
    _fill_candidates(conn, candidates)
    sql = _LIVE_CANDIDATES.format(edges=edges, src=src, dst=dst)
    joined = conn.execute(sql).fetchone()[0]
    return set(joined.split(",")) if joined else set()


def _split(joined: str | None) -> list[str]:
    """The references of a group_concat (comma-separated; None for none), sorted."""
    out = joined.split(",") if joined else []
    out.sort()
    return out
