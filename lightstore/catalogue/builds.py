"""The catalogue's build records and intents (work on the tree about to start)."""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Iterable, Sequence
from typing import Any

from lightstore.catalogue.connection import Database
from lightstore.catalogue.records import HOST


def close_build(conn: sqlite3.Connection, build_id: int, status: str, error: str | None) -> None:
    """Inside a transaction on `conn`: close a build record and free its inputs."""
    conn.execute(
        "UPDATE builds SET status = ?, stopped = ?, error = ? WHERE id = ?",
        (status, time.time(), error, build_id),
    )
    conn.execute("DELETE FROM build_inputs WHERE build_id = ?", (build_id,))


class BuildTables(Database):
    """The tables `intents`, `builds` and `build_inputs`."""

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
        """Record a running build, whose inputs gc keeps while it runs; return its id."""
        build_id = self._start_build(dref, context_hash, context_json, inputs, False)
        return build_id or 0

    def start_build_unless_running(
        self, dref: str, context_hash: str, context_json: str, inputs: Sequence[str]
    ) -> int | None:
        """`start_build`, unless a build of `dref` in that context is recorded as running:
        then None, and nothing is recorded. One transaction, no read before it."""
        return self._start_build(dref, context_hash, context_json, inputs, True)

    def _start_build(
        self,
        dref: str,
        context_hash: str,
        context_json: str,
        inputs: Sequence[str],
        unless_running: bool,
    ) -> int | None:
        with self.write(f"recording the start of a build of {dref}") as conn:
            if (
                unless_running
                and conn.execute(
                    "SELECT 1 FROM builds WHERE dref = ? AND context_hash = ? AND status = 'running'",
                    (dref, context_hash),
                ).fetchone()
                is not None
            ):
                return None
            cur = conn.execute(
                "INSERT INTO builds (dref, context_hash, context, status, started, host, pid) "
                "VALUES (?, ?, ?, 'running', ?, ?, ?)",
                (dref, context_hash, context_json, time.time(), HOST, os.getpid()),
            )
            build_id = int(cur.lastrowid or 0)
            if inputs:
                conn.executemany(
                    "INSERT OR IGNORE INTO build_inputs (build_id, rref) VALUES (?, ?)",
                    [(build_id, r) for r in inputs],
                )
        return build_id

    def finish_build(self, build_id: int, status: str, error: str | None = None) -> None:
        """Close a build record as 'failed', 'interrupted' or 'succeeded'."""
        with self.write(f"recording that build #{build_id} {status}") as conn:
            close_build(conn, build_id, status, error)

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
                close_build(
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
                close_build(conn, build_id, "interrupted", "the building process died")
        return len(ids)

    def running_builds_of(self, pids: Iterable[int]) -> list[tuple[int, str, str]]:
        """This host's builds recorded as running by processes `pids`: (id, dref, context hash)."""
        pids = list(pids)
        if not pids:
            return []
        rows = self.query(
            "SELECT id, dref, context_hash FROM builds WHERE status = 'running' AND host = ? "
            "AND pid IN (SELECT value FROM json_each(?)) ORDER BY id",
            (HOST, json.dumps(pids)),
        )
        return [(i, d, c) for i, d, c in rows]

    def interrupt_builds(self, build_ids: Sequence[int], why: str) -> int:
        """Close the given running builds as interrupted; returns how many were running."""
        if not build_ids:
            return 0
        closed = 0
        with self.write("marking the builds of dead processes interrupted") as conn:
            for build_id in build_ids:
                running = conn.execute(
                    "SELECT 1 FROM builds WHERE id = ? AND status = 'running'", (build_id,)
                ).fetchone()
                if running:
                    close_build(conn, build_id, "interrupted", why)
                    closed += 1
        return closed

    def running_build_pids(self) -> list[int]:
        """Pids of this host's builds recorded as running."""
        return self.column(
            "SELECT DISTINCT pid FROM builds WHERE status = 'running' AND host = ?", (HOST,)
        )

    def build_ids(self) -> set[int]:
        """The id of every build record."""
        return set(self.column("SELECT id FROM builds"))

    def build_inputs(self) -> list[tuple[int, str, str, int]]:
        """The inputs running builds hold, which gc keeps: (build id, rref, host, pid), by build."""
        rows = self.query(
            "SELECT i.build_id, i.rref, b.host, b.pid FROM build_inputs AS i "
            "JOIN builds AS b ON b.id = i.build_id ORDER BY i.build_id, i.rref"
        )
        return [(b, r, h, p) for b, r, h, p in rows]

    def build_input_rrefs(self) -> list[str]:
        """The realizations running builds hold as inputs (each once per build)."""
        return self.column("SELECT rref FROM build_inputs")
