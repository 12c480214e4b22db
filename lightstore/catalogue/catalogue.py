"""What the catalogue records, and the questions it answers, in SQL.

Store-wide questions are single statements over indexed tables; dependency
closures are recursive CTEs. Nothing here reads the tree.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from lightstore.catalogue.database import Database
from lightstore.foundation.errors import LightstoreError
from lightstore.foundation.refs import DRef, RRef

HOST = socket.gethostname()


@dataclass(frozen=True)
class NewDerivation:
    """A derivation to record: its reference, name, canonical config and dependencies."""

    dref: DRef
    name: str
    config_json: str
    deps: Sequence[DRef]


@dataclass(frozen=True)
class NewRealization:
    """A published realization to record."""

    rref: RRef
    dref: DRef
    context_json: str
    context_hash: str
    deps: Sequence[str]
    size: int
    file_count: int
    build_started: float | None
    build_stopped: float | None
    #: The builder's host and pid: None means this process (a local build).
    host: str | None = None
    pid: int | None = None
    #: True for an import (unpack, copy, pull): this process is recorded as
    #: the importer, `host`/`pid` stay the builder's (None if unknown).
    imported: bool = False
    #: Validated metrics (name -> finite number), recorded by the same transaction.
    metrics: dict[str, int | float] = field(default_factory=dict)


#: Why objects left the store (the `reason` of the collected_* tables).
COLLECT_REASONS = ("gc", "rmref", "repair")

_REALIZATION_COLUMNS = (
    "rref, dref, context, context_hash, build_id, build_started, build_stopped, size, "
    "file_count, host, pid, created, imported, import_host, import_pid"
)


class ByBuildTime(list[RRef]):
    """Realizations listed oldest build first, as the catalogue returns them."""


def _json_list(items: Iterable[str]) -> str:
    return json.dumps(list(items))


class Catalogue(Database):
    """The catalogue of one store."""

    # -- derivations -------------------------------------------------------

    def known_drefs(self, drefs: Sequence[str]) -> set[str]:
        """Which of `drefs` are recorded."""
        if not drefs:
            return set()
        return set(
            self.column(
                "SELECT dref FROM derivations WHERE dref IN (SELECT value FROM json_each(?))",
                (_json_list(drefs),),
            )
        )

    def add_derivations(self, new: Sequence[NewDerivation], intent: int | None = None) -> None:
        """Record derivations (dependencies first) in one transaction; known ones are skipped.

        `intent`, if given, is closed by the same transaction.
        """
        now = time.time()
        with self.write("recording derivations") as conn:
            if intent is not None:
                conn.execute("DELETE FROM intents WHERE id = ?", (intent,))
            # A derivation recorded again after it was collected keeps its
            # first `created` and leaves the collected records.
            conn.executemany(
                "INSERT OR IGNORE INTO derivations (dref, name, config, created) VALUES (?, ?, ?, "
                "coalesce((SELECT created FROM collected_derivations WHERE dref = ?), ?))",
                [(d.dref, d.name, d.config_json, d.dref, now) for d in new],
            )
            conn.executemany(
                "DELETE FROM collected_derivations WHERE dref = ?", [(d.dref,) for d in new]
            )
            conn.executemany(
                "INSERT OR IGNORE INTO derivation_deps (dref, dep) VALUES (?, ?)",
                [(d.dref, dep) for d in new for dep in d.deps],
            )

    def config_json(self, dref: str) -> str | None:
        """The canonical JSON config of a derivation, or None if unknown."""
        rows = self.query("SELECT config FROM derivations WHERE dref = ?", (dref,))
        return rows[0][0] if rows else None

    def all_drefs(self) -> list[DRef]:
        """Every recorded derivation."""
        return cast(list[DRef], self.sorted_refs("dref", "derivations"))

    # -- realizations ------------------------------------------------------

    def realizations(self, dref: str, context_hash: str) -> list[RRef]:
        """Realizations of `dref` in one context, oldest build first (one index lookup).

        The list is a `ByBuildTime`, so `match_latest` needs no second query.
        """
        return ByBuildTime(
            RRef(r)
            for r in self.column(
                "SELECT rref FROM realizations WHERE dref = ? AND context_hash = ? ORDER BY build_stopped, rowid",
                (dref, context_hash),
            )
        )

    def realizations_any_context(self, dref: str) -> list[RRef]:
        """Every realization of `dref`, whatever its context, oldest first."""
        return [
            RRef(r)
            for r in self.column(
                "SELECT rref FROM realizations WHERE dref = ? ORDER BY build_stopped, rowid",
                (dref,),
            )
        ]

    def all_rrefs(self) -> list[RRef]:
        """Every recorded realization."""
        return cast(list[RRef], self.sorted_refs("rref", "realizations"))

    def known_rrefs(self, rrefs: Sequence[str]) -> set[str]:
        """Which of `rrefs` are recorded."""
        if not rrefs:
            return set()
        return set(
            self.column(
                "SELECT rref FROM realizations WHERE rref IN (SELECT value FROM json_each(?))",
                (_json_list(rrefs),),
            )
        )

    def context_json(self, rref: str) -> str | None:
        """The context of a realization as JSON, or None if unknown."""
        rows = self.query("SELECT context FROM realizations WHERE rref = ?", (rref,))
        return rows[0][0] if rows else None

    def build_times(self, rrefs: Sequence[str]) -> dict[str, float]:
        """When each realization's build stopped (for `match_latest`)."""
        if not rrefs:
            return {}
        rows = self.query(
            "SELECT rref, coalesce(build_stopped, created) FROM realizations "
            "WHERE rref IN (SELECT value FROM json_each(?))",
            (_json_list(rrefs),),
        )
        return {r: t for r, t in rows}

    def realization_record(self, rref: str) -> dict[str, Any] | None:
        """Everything recorded about one realization, or None."""
        try:
            cur = self.conn.execute("SELECT * FROM realizations WHERE rref = ?", (rref,))
            row = cur.fetchone()
        except sqlite3.Error as e:
            raise self._translate(e, f"reading the record of {rref}") from e
        if row is None:
            return None
        return dict(zip([c[0] for c in cur.description], row, strict=True))

    def add_realizations(
        self, new: Sequence[NewRealization], build_id: int | None, intent: int | None = None
    ) -> None:
        """Record published realizations and their dependency edges; close the build and the intent."""
        now = time.time()
        me = os.getpid()
        with self.write("recording realizations") as conn:
            if intent is not None:
                conn.execute("DELETE FROM intents WHERE id = ?", (intent,))
            conn.executemany(
                f"INSERT OR IGNORE INTO realizations ({_REALIZATION_COLUMNS}) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        r.rref,
                        r.dref,
                        r.context_json,
                        r.context_hash,
                        build_id,
                        r.build_started,
                        r.build_stopped,
                        r.size,
                        r.file_count,
                        r.host if r.imported else (r.host or HOST),
                        r.pid if r.imported else (r.pid if r.pid is not None else me),
                        now,
                        now if r.imported else None,
                        HOST if r.imported else None,
                        me if r.imported else None,
                    )
                    for r in new
                ],
            )
            conn.executemany(
                "INSERT OR IGNORE INTO realization_deps (rref, dep) VALUES (?, ?)",
                [(r.rref, dep) for r in new for dep in r.deps],
            )
            # A realization already recorded keeps the values it had.
            conn.executemany(
                "INSERT OR IGNORE INTO metrics (rref, name, value, recorded) VALUES (?, ?, ?, ?)",
                [(r.rref, k, v, now) for r in new for k, v in r.metrics.items()],
            )
            if build_id is not None:
                self._finish_build(conn, build_id, "succeeded", None)

    def set_metrics(self, rref: str, metrics: dict[str, int | float]) -> bool:
        """Set (insert or replace) validated metrics of a realization, present or collected;
        False if the catalogue has no record of it."""
        now = time.time()
        with self.write() as conn:
            known = conn.execute(
                "SELECT 1 FROM realizations WHERE rref = ? "
                "UNION ALL SELECT 1 FROM collected_realizations WHERE rref = ? LIMIT 1",
                (rref, rref),
            ).fetchone()
            if known is None:
                return False
            conn.executemany(
                "INSERT OR REPLACE INTO metrics (rref, name, value, recorded) VALUES (?, ?, ?, ?)",
                [(rref, k, v, now) for k, v in metrics.items()],
            )
        return True

    def metrics_of(self, rrefs: Sequence[str]) -> dict[str, dict[str, int | float]]:
        """The metrics of each of `rrefs` that has any: rref -> {name: value}."""
        if not rrefs:
            return {}
        found: dict[str, dict[str, int | float]] = {}
        for rref, name, value in self.query(
            "SELECT rref, name, value FROM metrics WHERE rref IN (SELECT value FROM json_each(?)) "
            "ORDER BY rref, name",
            (_json_list(rrefs),),
        ):
            found.setdefault(rref, {})[name] = value
        return found

    def delete_objects(
        self, rrefs: Iterable[str] = (), drefs: Iterable[str] = (), reason: str = "gc"
    ) -> None:
        """Remove realizations and derivations (with their outgoing edges) in one transaction.

        Their rows move to `collected_realizations` / `collected_derivations`,
        stamped with the time and `reason` ('gc', 'rmref' or 'repair'), so
        history outlives them. Raises IntegrityError, removing nothing, if a
        pin, a running build or an object outside the set still refers to one.
        """
        if reason not in COLLECT_REASONS:
            raise LightstoreError(f"unknown reason {reason!r}; expected one of {COLLECT_REASONS}")
        doomed_r = sorted(set(rrefs))
        doomed_d = sorted(set(drefs))
        now = time.time()
        with self.write(
            f"removing {len(doomed_r)} realization(s) and {len(doomed_d)} derivation(s)"
        ) as conn:
            if doomed_r:
                conn.execute(
                    f"INSERT INTO collected_realizations ({_REALIZATION_COLUMNS}, collected, reason) "
                    f"SELECT {_REALIZATION_COLUMNS}, ?, ? FROM realizations "
                    "WHERE rref IN (SELECT value FROM json_each(?))",
                    (now, reason, _json_list(doomed_r)),
                )
            if doomed_d:
                conn.execute(
                    "INSERT OR REPLACE INTO collected_derivations "
                    "(dref, name, config, created, collected, reason) "
                    "SELECT dref, name, config, created, ?, ? FROM derivations "
                    "WHERE dref IN (SELECT value FROM json_each(?))",
                    (now, reason, _json_list(doomed_d)),
                )
            # Edges out of the doomed rows first: RESTRICT is checked row by row.
            params_r = [(r,) for r in doomed_r]
            params_d = [(d,) for d in doomed_d]
            conn.executemany("DELETE FROM realization_deps WHERE rref = ?", params_r)
            conn.executemany("DELETE FROM realizations WHERE rref = ?", params_r)
            conn.executemany("DELETE FROM derivation_deps WHERE dref = ?", params_d)
            conn.executemany("DELETE FROM derivations WHERE dref = ?", params_d)

    # -- intents -------------------------------------------------------------

    def open_intent(self, kind: str, refs: Sequence[Any]) -> int:
        """Record work on the tree that is about to start; returns its id."""
        doing = "recording derivations" if kind == "derive" else "recording realizations"
        with self.write(doing) as conn:
            cur = conn.execute(
                "INSERT INTO intents (kind, refs, host, pid, created) VALUES (?, ?, ?, ?, ?)",
                (kind, json.dumps(list(refs)), HOST, os.getpid(), time.time()),
            )
            return int(cur.lastrowid or 0)

    def close_intent(self, intent: int) -> None:
        """Forget an intent whose work is finished or undone."""
        with self.write("closing finished work on the tree") as conn:
            conn.execute("DELETE FROM intents WHERE id = ?", (intent,))

    def host_intents(self) -> list[tuple[int, str, Any, int]]:
        """Intents of processes on this host: (id, kind, refs, pid)."""
        rows = self.query(
            "SELECT id, kind, refs, pid FROM intents WHERE host = ? ORDER BY id", (HOST,)
        )
        return [(i, k, json.loads(r), p) for i, k, r, p in rows]

    # -- builds ------------------------------------------------------------

    def start_build(
        self, dref: str, context_hash: str, context_json: str, inputs: Sequence[str]
    ) -> int:
        """Record a running build and pin its inputs as temporary roots; return its id."""
        with self.write(f"recording the start of a build of {dref}") as conn:
            cur = conn.execute(
                "INSERT INTO builds (dref, context_hash, context, status, started, host, pid) "
                "VALUES (?, ?, ?, 'running', ?, ?, ?)",
                (dref, context_hash, context_json, time.time(), HOST, os.getpid()),
            )
            build_id = int(cur.lastrowid or 0)
            conn.executemany(
                "INSERT OR IGNORE INTO build_inputs (build_id, rref) VALUES (?, ?)",
                [(build_id, r) for r in inputs],
            )
        return build_id

    def _finish_build(self, conn: Any, build_id: int, status: str, error: str | None) -> None:
        conn.execute(
            "UPDATE builds SET status = ?, stopped = ?, error = ? WHERE id = ?",
            (status, time.time(), error, build_id),
        )
        conn.execute("DELETE FROM build_inputs WHERE build_id = ?", (build_id,))

    def finish_build(self, build_id: int, status: str, error: str | None = None) -> None:
        """Close a build record as 'failed', 'interrupted' or 'succeeded'."""
        with self.write(f"recording that build #{build_id} {status}") as conn:
            self._finish_build(conn, build_id, status, error)

    def running_builds(self, dref: str, context_hash: str) -> list[dict[str, Any]]:
        """Builds of `dref` in a context that are recorded as running (who holds the build lock)."""
        rows = self.query(
            "SELECT pid, host, started FROM builds WHERE dref = ? AND context_hash = ? AND status = 'running'",
            (dref, context_hash),
        )
        return [{"pid": p, "host": h, "since": s} for p, h, s in rows]

    def interrupt_stale_builds(self, dref: str, context_hash: str) -> int:
        """Close the running builds of `dref` in a context as interrupted (caller holds its build lock).

        Only the build lock's holder builds, so while it is held a 'running'
        record belongs to a process that died, on any host. Reads once, writes only if there are some.
        """
        if not self.running_builds(dref, context_hash):
            return 0
        with self.write() as conn:
            ids = [
                r[0]
                for r in conn.execute(
                    "SELECT id FROM builds WHERE dref = ? AND context_hash = ? AND status = 'running'",
                    (dref, context_hash),
                ).fetchall()
            ]
            for build_id in ids:
                self._finish_build(
                    conn,
                    build_id,
                    "interrupted",
                    "the building process died (its build lock was free)",
                )
        return len(ids)

    def mark_interrupted(self, dead_pids: Iterable[int]) -> int:
        """Mark running builds of this host whose process is gone as interrupted."""
        pids = list(dead_pids)
        if not pids:
            return 0
        with self.write("marking the builds of dead processes interrupted") as conn:
            ids = [
                r[0]
                for r in conn.execute(
                    "SELECT id FROM builds WHERE status = 'running' AND host = ? "
                    "AND pid IN (SELECT value FROM json_each(?))",
                    (HOST, json.dumps(pids)),
                ).fetchall()
            ]
            for build_id in ids:
                self._finish_build(conn, build_id, "interrupted", "the building process died")
        return len(ids)

    def running_build_pids(self) -> list[int]:
        """Pids of this host's builds recorded as running."""
        return self.column(
            "SELECT DISTINCT pid FROM builds WHERE status = 'running' AND host = ?", (HOST,)
        )

    # -- dependency graph ----------------------------------------------------

    def _neighbours(
        self, table: str, refs: Sequence[str], *, reverse: bool, closure: bool
    ) -> list[str]:
        """Dependencies (or, `reverse`, referrers) of `refs` along `table`; transitively with `closure`.

        `table` is `derivation_deps` or `realization_deps`, whose columns are
        (object, dep); the closure is one recursive CTE over its indexes.
        """
        obj = "dref" if table == "derivation_deps" else "rref"
        src, dst = ("dep", obj) if reverse else (obj, "dep")
        start = (
            f"SELECT DISTINCT {dst} FROM {table} WHERE {src} IN (SELECT value FROM json_each(?))"
        )
        if not closure:
            return self.column(start, (_json_list(refs),))
        sql = f"""
        WITH RECURSIVE reached(ref) AS (
          {start}
          UNION
          SELECT e.{dst} FROM {table} AS e JOIN reached AS r ON e.{src} = r.ref
        ) SELECT ref FROM reached"""
        return self.column(sql, (_json_list(refs),))

    def drefdeps1(self, drefs: Sequence[str]) -> set[DRef]:
        """Direct dependencies of `drefs`."""
        return {
            DRef(d)
            for d in self._neighbours("derivation_deps", drefs, reverse=False, closure=False)
        }

    def drefdeps(self, drefs: Sequence[str]) -> set[DRef]:
        """All dependencies of `drefs`, transitively (a recursive CTE)."""
        return {
            DRef(d) for d in self._neighbours("derivation_deps", drefs, reverse=False, closure=True)
        }

    def rrefdeps1(self, rrefs: Sequence[str]) -> set[RRef]:
        """Direct dependency realizations of `rrefs`."""
        return {
            RRef(r)
            for r in self._neighbours("realization_deps", rrefs, reverse=False, closure=False)
        }

    def rrefdeps(self, rrefs: Sequence[str]) -> set[RRef]:
        """All dependency realizations of `rrefs`, transitively."""
        return {
            RRef(r)
            for r in self._neighbours("realization_deps", rrefs, reverse=False, closure=True)
        }

    def dref_referrers(self, drefs: Sequence[str]) -> set[DRef]:
        """Derivations that depend on `drefs`, transitively."""
        return {
            DRef(d) for d in self._neighbours("derivation_deps", drefs, reverse=True, closure=True)
        }

    def rref_referrers(self, rrefs: Sequence[str]) -> set[RRef]:
        """Realizations that depend on `rrefs`, transitively."""
        return {
            RRef(r) for r in self._neighbours("realization_deps", rrefs, reverse=True, closure=True)
        }

    def root_drefs(self) -> set[DRef]:
        """Derivations no other derivation depends on."""
        sql = "SELECT dref FROM derivations WHERE dref NOT IN (SELECT dep FROM derivation_deps)"
        return set(map(DRef, self.column(sql)))

    def root_rrefs(self) -> set[RRef]:
        """Realizations no other realization depends on."""
        sql = "SELECT rref FROM realizations WHERE rref NOT IN (SELECT dep FROM realization_deps)"
        return cast(set[RRef], set(self.column(sql)))
