"""The catalogue's derivations and realizations: recording, reading, removing."""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Iterable, Sequence
from typing import Any, cast

from lightstore.catalogue.annotations import notes_to_add, record_annotations, record_notes
from lightstore.catalogue.builds import close_build
from lightstore.catalogue.connection import Database
from lightstore.catalogue.records import (
    COLLECT_REASONS,
    HOST,
    REALIZATION_COLUMNS,
    NewDerivation,
    NewRealization,
    json_list,
)
from lightstore.foundation.errors import LightstoreError
from lightstore.foundation.refs import DRef, RRef


class ByBuildTime(list[RRef]):
    """Realizations listed oldest build first, as the catalogue returns them."""


class ObjectTables(Database):
    """The tables `derivations` and `realizations` (with their dependency edges)."""

    # -- derivations -------------------------------------------------------

    def known_drefs(self, drefs: Sequence[str]) -> set[str]:
        """Which of `drefs` are recorded."""
        if not drefs:
            return set()
        if len(drefs) == 1:  # the common case of a one-stage realize: no JSON to parse
            return set(self.column("SELECT dref FROM derivations WHERE dref = ?", (drefs[0],)))
        return set(
            self.column(
                "SELECT dref FROM derivations WHERE dref IN (SELECT value FROM json_each(?))",
                (json_list(drefs),),
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
            edges = [(d.dref, dep) for d in new for dep in d.deps]
            if edges:
                conn.executemany(
                    "INSERT OR IGNORE INTO derivation_deps (dref, dep) VALUES (?, ?)", edges
                )

    def config_json(self, dref: str) -> str | None:
        """The canonical JSON config of a derivation, or None if unknown."""
        rows = self.query("SELECT config FROM derivations WHERE dref = ?", (dref,))
        return rows[0][0] if rows else None

    def configs(self) -> list[tuple[DRef, str]]:
        """Every recorded derivation with its canonical JSON config."""
        return [(DRef(d), c) for d, c in self.query("SELECT dref, config FROM derivations")]

    def all_drefs(self) -> list[DRef]:
        """Every recorded derivation."""
        return cast(list[DRef], self.sorted_refs("dref", "derivations"))

    # -- realizations ------------------------------------------------------

    def realizations(self, dref: str, context_hash: str) -> list[RRef]:
        """Realizations of `dref` in one context, oldest build first (one index lookup).

        The list is a `ByBuildTime`, so `match_latest` needs no second query.
        """
        # RRef is `str` at run time: the column's values need no wrapping.
        return ByBuildTime(
            self.column(
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
                (json_list(rrefs),),
            )
        )

    def context_json(self, rref: str) -> str | None:
        """The context of a realization as JSON, or None if unknown."""
        rows = self.query("SELECT context FROM realizations WHERE rref = ?", (rref,))
        return rows[0][0] if rows else None

    def contexts(self) -> list[tuple[RRef, str, str]]:
        """Every recorded realization with its context (JSON) and context hash, by RRef."""
        rows = self.query("SELECT rref, context, context_hash FROM realizations ORDER BY rref")
        return [(RRef(r), c, h) for r, c, h in rows]

    def build_times(self, rrefs: Sequence[str]) -> dict[str, float]:
        """When each realization's build stopped (for `match_latest`)."""
        if not rrefs:
            return {}
        rows = self.query(
            "SELECT rref, coalesce(build_stopped, created) FROM realizations "
            "WHERE rref IN (SELECT value FROM json_each(?))",
            (json_list(rrefs),),
        )
        return {r: t for r, t in rows}

    def created_times(self, rrefs: Sequence[str]) -> dict[str, float]:
        """When each of `rrefs` that is recorded was recorded in this store."""
        if not rrefs:
            return {}
        rows = self.query(
            "SELECT rref, created FROM realizations WHERE rref IN (SELECT value FROM json_each(?))",
            (json_list(rrefs),),
        )
        return {r: t for r, t in rows}

    def sizes(self) -> list[tuple[RRef, DRef, int]]:
        """Every realization with its derivation and the bytes of its folder's files (the
        artifacts and context.json, which holds the context as recorded here)."""
        rows = self.query(
            "SELECT rref, dref, size + length(CAST(context AS BLOB)) FROM realizations"
        )
        return [(RRef(r), DRef(d), s) for r, d, s in rows]

    def config_sizes(self) -> list[tuple[DRef, int]]:
        """Every derivation with the bytes of its config.json (the config as recorded here)."""
        rows = self.query("SELECT dref, length(CAST(config AS BLOB)) FROM derivations")
        return [(DRef(d), s) for d, s in rows]

    def find_realizations(self, name: str | None, since: float | None) -> list[RRef]:
        """Realizations whose derivation name matches the glob `name` and whose build
        stopped (or, unbuilt here, that were recorded) at or after `since`; oldest first."""
        sql = "SELECT r.rref FROM realizations r JOIN derivations d ON d.dref = r.dref WHERE 1"
        params: list[Any] = []
        if name is not None:
            sql += " AND d.name GLOB ?"
            params.append(name)
        if since is not None:
            sql += " AND coalesce(r.build_stopped, r.created) >= ?"
            params.append(since)
        sql += " ORDER BY coalesce(r.build_stopped, r.created)"
        return [RRef(r) for r in self.column(sql, params)]

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
            noted = notes_to_add(conn, new) if any(r.notes for r in new) else []
            conn.executemany(
                f"INSERT OR IGNORE INTO realizations ({REALIZATION_COLUMNS}) "
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
            edges = [(r.rref, dep) for r in new for dep in r.deps]
            if edges:
                conn.executemany(
                    "INSERT OR IGNORE INTO realization_deps (rref, dep) VALUES (?, ?)", edges
                )
            record_annotations(conn, new, now)
            record_notes(conn, noted)
            if build_id is not None:
                close_build(conn, build_id, "succeeded", None)

    # -- removal -------------------------------------------------------------

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
                    f"INSERT INTO collected_realizations ({REALIZATION_COLUMNS}, collected, reason) "
                    f"SELECT {REALIZATION_COLUMNS}, ?, ? FROM realizations "
                    "WHERE rref IN (SELECT value FROM json_each(?))",
                    (now, reason, json_list(doomed_r)),
                )
            if doomed_d:
                conn.execute(
                    "INSERT OR REPLACE INTO collected_derivations "
                    "(dref, name, config, created, collected, reason) "
                    "SELECT dref, name, config, created, ?, ? FROM derivations "
                    "WHERE dref IN (SELECT value FROM json_each(?))",
                    (now, reason, json_list(doomed_d)),
                )
            # Edges out of the doomed rows first: RESTRICT is checked row by row.
            params_r = [(r,) for r in doomed_r]
            params_d = [(d,) for d in doomed_d]
            conn.executemany("DELETE FROM realization_deps WHERE rref = ?", params_r)
            conn.executemany("DELETE FROM realizations WHERE rref = ?", params_r)
            conn.executemany("DELETE FROM derivation_deps WHERE dref = ?", params_d)
            conn.executemany("DELETE FROM derivations WHERE dref = ?", params_d)
