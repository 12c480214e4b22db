"""The catalogue's record of what was said about a realization besides its content: metrics
(numbers, NaN included), metric series (curves over steps), tags and notes.

None of it is part of a hash, and all of it belongs to a realization record, present or
collected (a trigger refuses rows of an unknown one), so it outlives gc until `forget`.
SQLite has no NaN: a NaN is stored as NULL (and read back as NaN).
"""

from __future__ import annotations

import math
import sqlite3
import time
from collections.abc import Iterable, Mapping, Sequence

from lightstore.catalogue.connection import Database
from lightstore.catalogue.records import NewRealization, json_list
from lightstore.foundation.metrics import Number, Series, mixed_kinds
from lightstore.foundation.tags import Note, Tag


def _stored(value: Number) -> Number | None:
    # A NaN bound to a statement becomes NULL anyway; said here so the rule is in one place.
    return None if isinstance(value, float) and value != value else value


def _read(value: Number | None) -> Number:
    return math.nan if value is None else value


_UPSERT_VALUE = (
    "INSERT INTO metrics (rref, name, value, step, recorded) VALUES (?, ?, ?, NULL, ?) "
    "ON CONFLICT (rref, name) DO UPDATE SET value = excluded.value, recorded = excluded.recorded"
)
# A series' row in `metrics` keeps the value at its last step (an upsert, not a REPLACE:
# REPLACE deletes the row first, and with it the series' steps).
_UPSERT_SERIES_ROW = (
    "INSERT INTO metrics (rref, name, value, step, recorded) VALUES (?, ?, ?, ?, ?) "
    "ON CONFLICT (rref, name) DO UPDATE SET recorded = excluded.recorded, "
    "value = CASE WHEN excluded.step >= metrics.step THEN excluded.value ELSE metrics.value END, "
    "step = max(metrics.step, excluded.step)"
)
_UPSERT_STEP = (
    "INSERT INTO metric_steps (rref, name, step, value, recorded) VALUES (?, ?, ?, ?, ?) "
    "ON CONFLICT (rref, name, step) DO UPDATE SET value = excluded.value, "
    "recorded = excluded.recorded"
)
_NEW_SERIES_ROW = (
    "INSERT INTO metrics (rref, name, value, step, recorded) VALUES (?, ?, ?, ?, ?) "
    "ON CONFLICT (rref, name) DO NOTHING"
)


def _known(conn: sqlite3.Connection, rref: str) -> bool:
    return (
        conn.execute(
            "SELECT 1 FROM realizations WHERE rref = ? "
            "UNION ALL SELECT 1 FROM collected_realizations WHERE rref = ? LIMIT 1",
            (rref, rref),
        ).fetchone()
        is not None
    )


def record_annotations(conn: sqlite3.Connection, new: Sequence[NewRealization], now: float) -> None:
    """Record the metrics, series, tags and notes of realizations just recorded, inside
    the caller's transaction. A realization already recorded keeps what it had: a name
    it has is not overwritten, and notes are added only to a realization new here."""
    metrics = [(r.rref, k, _stored(v), now) for r in new for k, v in r.metrics.items()]
    if metrics:  # most builds record none: no statement then
        conn.executemany(
            "INSERT INTO metrics (rref, name, value, step, recorded) VALUES (?, ?, ?, NULL, ?) "
            "ON CONFLICT (rref, name) DO NOTHING",
            metrics,
        )
    for r in new:
        for name, points in r.series.items():
            if not points:
                continue
            last = max(points)
            cur = conn.execute(_NEW_SERIES_ROW, (r.rref, name, _stored(points[last]), last, now))
            if cur.rowcount != 1:  # the name is already there: keep what it has
                continue
            conn.executemany(
                "INSERT INTO metric_steps (rref, name, step, value, recorded) "
                "VALUES (?, ?, ?, ?, ?)",
                [(r.rref, name, s, _stored(v), now) for s, v in points.items()],
            )
    tags = [(r.rref, t.name, t.value, t.recorded, t.author) for r in new for t in r.tags]
    if tags:  # imports only: a build publishes none
        conn.executemany(
            "INSERT INTO tags (rref, name, value, recorded, author) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT (rref, name) DO NOTHING",
            tags,
        )


def notes_to_add(conn: sqlite3.Connection, new: Sequence[NewRealization]) -> list[NewRealization]:
    """Of `new`, those with notes and no record yet: asked before they are recorded, so
    that importing a realization again does not repeat its notes."""
    with_notes = [r for r in new if r.notes]
    return [r for r in with_notes if not _known(conn, r.rref)]


def record_notes(conn: sqlite3.Connection, new: Sequence[NewRealization]) -> None:
    """Record the notes of `new` (from `notes_to_add`) inside the caller's transaction."""
    if not new:
        return
    conn.executemany(
        "INSERT INTO notes (rref, text, recorded, author) VALUES (?, ?, ?, ?)",
        [(r.rref, n.text, n.recorded, n.author) for r in new for n in r.notes],
    )


class AnnotationTables(Database):
    """The tables `metrics`, `metric_steps`, `tags` and `notes`."""

    # -- metrics -------------------------------------------------------------

    def set_metrics(self, rref: str, metrics: Mapping[str, Number]) -> bool:
        """Set (insert or replace) validated plain metrics of a realization, present or
        collected; False if the catalogue has no record of it. Raises InvalidMetricError,
        changing nothing, for a name that is a series."""
        now = time.time()
        with self.write("setting metrics") as conn:
            if not _known(conn, rref):
                return False
            self._check_kinds(conn, rref, metrics, series=False)
            conn.executemany(
                _UPSERT_VALUE, [(rref, k, _stored(v), now) for k, v in metrics.items()]
            )
        return True

    def set_series(self, rref: str, series: Mapping[str, Series]) -> bool:
        """Add (or replace) steps of validated series of a realization, present or
        collected; False if the catalogue has no record of it. Raises InvalidMetricError,
        changing nothing, for a name that is one number."""
        now = time.time()
        with self.write("setting metric series") as conn:
            if not _known(conn, rref):
                return False
            self._check_kinds(conn, rref, series, series=True)
            for name, points in series.items():
                if not points:
                    continue
                last = max(points)
                conn.execute(_UPSERT_SERIES_ROW, (rref, name, _stored(points[last]), last, now))
                conn.executemany(
                    _UPSERT_STEP, [(rref, name, s, _stored(v), now) for s, v in points.items()]
                )
        return True

    def _check_kinds(
        self, conn: sqlite3.Connection, rref: str, names: Iterable[str], series: bool
    ) -> None:
        """Raise InvalidMetricError if one of `names` is already of the other kind."""
        for name, is_series in conn.execute(
            "SELECT name, step IS NOT NULL FROM metrics "
            "WHERE rref = ? AND name IN (SELECT value FROM json_each(?))",
            (rref, json_list(names)),
        ):
            if bool(is_series) != series:
                raise mixed_kinds(name, series=bool(is_series))

    def remove_metrics(self, rref: str, names: Sequence[str]) -> int:
        """Remove metrics (and their series) of a realization; how many there were."""
        with self.write("removing metrics") as conn:
            args = (rref, json_list(names))
            conn.execute(
                "DELETE FROM metric_steps WHERE rref = ? "
                "AND name IN (SELECT value FROM json_each(?))",
                args,
            )
            return int(
                conn.execute(
                    "DELETE FROM metrics WHERE rref = ? AND name IN (SELECT value FROM json_each(?))",
                    args,
                ).rowcount
            )

    def metrics_of(self, rrefs: Sequence[str]) -> dict[str, dict[str, Number]]:
        """The metrics of each of `rrefs` that has any: rref -> {name: value} (a series'
        value at its last step; NaN for NaN)."""
        if not rrefs:
            return {}
        found: dict[str, dict[str, Number]] = {}
        for rref, name, value in self.query(
            "SELECT rref, name, value FROM metrics WHERE rref IN (SELECT value FROM json_each(?)) "
            "ORDER BY rref, name",
            (json_list(rrefs),),
        ):
            found.setdefault(rref, {})[name] = _read(value)
        return found

    def plain_metrics_of(self, rrefs: Sequence[str]) -> dict[str, dict[str, Number]]:
        """Like `metrics_of`, without the series (what exchange carries as plain values)."""
        if not rrefs:
            return {}
        found: dict[str, dict[str, Number]] = {}
        for rref, name, value in self.query(
            "SELECT rref, name, value FROM metrics WHERE rref IN (SELECT value FROM json_each(?)) "
            "AND step IS NULL ORDER BY rref, name",
            (json_list(rrefs),),
        ):
            found.setdefault(rref, {})[name] = _read(value)
        return found

    def series_of(
        self, rrefs: Sequence[str], names: Sequence[str] | None = None
    ) -> dict[str, dict[str, Series]]:
        """The series of each of `rrefs` that has any (only `names`, if given):
        rref -> {name: {step: value}}, steps in order."""
        if not rrefs:
            return {}
        sql = "SELECT rref, name, step, value FROM metric_steps WHERE rref IN (SELECT value FROM json_each(?))"
        params: list[str] = [json_list(rrefs)]
        if names is not None:
            sql += " AND name IN (SELECT value FROM json_each(?))"
            params.append(json_list(names))
        found: dict[str, dict[str, Series]] = {}
        for rref, name, step, value in self.query(sql + " ORDER BY rref, name, step", params):
            found.setdefault(rref, {}).setdefault(name, {})[step] = _read(value)
        return found

    # -- tags ----------------------------------------------------------------------

    def set_tags(self, rref: str, tags: Mapping[str, str], author: str | None) -> bool:
        """Set (insert or replace) validated tags of a realization, present or collected;
        False if the catalogue has no record of it."""
        now = time.time()
        with self.write("setting tags") as conn:
            if not _known(conn, rref):
                return False
            conn.executemany(
                "INSERT INTO tags (rref, name, value, recorded, author) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (rref, name) DO UPDATE SET value = excluded.value, "
                "recorded = excluded.recorded, author = excluded.author",
                [(rref, k, v, now, author) for k, v in tags.items()],
            )
        return True

    def remove_tags(self, rref: str, names: Sequence[str]) -> int:
        """Remove tags of a realization; how many there were."""
        with self.write("removing tags") as conn:
            return int(
                conn.execute(
                    "DELETE FROM tags WHERE rref = ? AND name IN (SELECT value FROM json_each(?))",
                    (rref, json_list(names)),
                ).rowcount
            )

    def tags_of(self, rrefs: Sequence[str]) -> dict[str, list[Tag]]:
        """The tags of each of `rrefs` that has any, by name."""
        if not rrefs:
            return {}
        found: dict[str, list[Tag]] = {}
        for rref, name, value, recorded, author in self.query(
            "SELECT rref, name, value, recorded, author FROM tags "
            "WHERE rref IN (SELECT value FROM json_each(?)) ORDER BY rref, name",
            (json_list(rrefs),),
        ):
            found.setdefault(rref, []).append(Tag(name, value, recorded, author))
        return found

    # -- notes ---------------------------------------------------------------------

    def add_note(self, rref: str, text: str, author: str | None) -> int | None:
        """Add a validated note to a realization, present or collected; its id, or None
        if the catalogue has no record of the realization."""
        with self.write("adding a note") as conn:
            if not _known(conn, rref):
                return None
            cur = conn.execute(
                "INSERT INTO notes (rref, text, recorded, author) VALUES (?, ?, ?, ?)",
                (rref, text, time.time(), author),
            )
            return cur.lastrowid

    def remove_note(self, rref: str, note_id: int) -> bool:
        """Remove the note `note_id` of a realization; whether it was there."""
        with self.write("removing a note") as conn:
            return (
                conn.execute(
                    "DELETE FROM notes WHERE rref = ? AND id = ?", (rref, note_id)
                ).rowcount
                == 1
            )

    def notes_of(self, rrefs: Sequence[str]) -> dict[str, list[Note]]:
        """The notes of each of `rrefs` that has any, oldest first."""
        if not rrefs:
            return {}
        found: dict[str, list[Note]] = {}
        for note_id, rref, text, recorded, author in self.query(
            "SELECT id, rref, text, recorded, author FROM notes "
            "WHERE rref IN (SELECT value FROM json_each(?)) ORDER BY rref, recorded, id",
            (json_list(rrefs),),
        ):
            found.setdefault(rref, []).append(Note(note_id, text, recorded, author))
        return found
