"""The records that outlive the tree: forgetting those of collected objects, and carrying
what the tree cannot restore (links, metrics, series, tags, notes) from an old catalogue
into a rebuilt one."""

from __future__ import annotations

import contextlib
import sqlite3
from typing import Any

from lightstore.catalogue.connection import Database, sqlite_uri
from lightstore.catalogue.sql import name_condition


class HistoryTables(Database):
    """The collected_* tables, build records, metrics, tags and notes as history."""

    def forget_collected(
        self, *, before: float | None, name: str | None, dry_run: bool
    ) -> tuple[int, int, int]:
        """Delete the records of collected objects; return how many (realizations,
        derivations, builds) went, or for a `dry_run` would go.

        Selects collected realization records removed before `before` and/or
        whose derivation's `name` matches (exact, or a GLOB with ``*?[``);
        neither selects every one. A collected derivation's record goes once
        none of its realization records is left and it matches the same
        filters; build attempts go with the last record of their derivation,
        metrics, series, tags and notes with the last record of their realization.
        """
        terms_r: list[str] = []
        terms_d: list[str] = []
        params_r: list[Any] = []
        params_d: list[Any] = []
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
        with self.write("forgetting collected records") as conn:
            # A dry run counts by doing and undoing the same statements, so its
            # counts cannot drift from what a real run deletes.
            conn.execute("SAVEPOINT forget")
            realizations = conn.execute(
                f"DELETE FROM collected_realizations WHERE id IN ({doomed_r})", params_r
            ).rowcount
            derivations = conn.execute(
                f"DELETE FROM collected_derivations WHERE dref IN ({doomed_d})", params_d
            ).rowcount
            builds = conn.execute(f"DELETE FROM builds WHERE id IN ({orphan_builds})").rowcount
            # What was said about forgotten records goes with them (a series first:
            # its steps refer to its row in metrics).
            for table in ("metric_steps", "metrics", "tags", "notes"):
                conn.execute(
                    f"DELETE FROM {table} WHERE rref NOT IN (SELECT rref FROM realizations) "
                    "AND rref NOT IN (SELECT rref FROM collected_realizations)"
                )
            if dry_run:
                conn.execute("ROLLBACK TO forget")
            conn.execute("RELEASE forget")
        return realizations, derivations, builds

    def copy_history_from(self, old_path: str) -> None:
        """Copy from the old catalogue file `old_path` what the tree does not hold: the
        registered links, and the metrics, series, tags and notes of the objects this
        catalogue holds.

        Nothing is copied from an old catalogue that cannot be read; a row this
        catalogue's constraints refuse (its object is gone) is left out. An old
        catalogue of an older schema gives what it has.
        """
        for table, columns, older in (
            ("links", "path, dref, rref, created", None),
            # Parents (metrics) before their series' steps.
            ("metrics", "rref, name, value, step, recorded", "rref, name, value, recorded"),
            ("metric_steps", "rref, name, step, value, recorded", None),
            ("tags", "rref, name, value, recorded, author", None),
            ("notes", "id, rref, text, recorded, author", None),
        ):
            found = _old_rows(old_path, table, columns, older)
            if found is None:
                continue
            columns, rows = found
            marks = ", ".join("?" * len(columns.split(",")))
            with self.write(f"copying the {table} of {old_path}") as conn:
                for row in rows:
                    with contextlib.suppress(sqlite3.IntegrityError):
                        conn.execute(f"INSERT INTO {table} ({columns}) VALUES ({marks})", row)


def _old_rows(
    path: str, table: str, columns: str, older: str | None
) -> tuple[str, list[tuple[Any, ...]]] | None:
    """The columns read and the rows of `table` in the catalogue file `path` (the
    `older` columns if it lacks some), or None if it cannot be read."""
    for wanted in (columns, older):
        if wanted is None:
            continue
        try:
            old = sqlite3.connect(sqlite_uri(path, mode="ro"), uri=True, timeout=1)
            try:
                return wanted, old.execute(f"SELECT {wanted} FROM {table}").fetchall()
            finally:
                old.close()
        except sqlite3.Error:
            continue
    return None
