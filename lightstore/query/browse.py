"""The questions the experiment browser asks, as SQL over the catalogue's views.

One function per table a page shows; each returns dict rows (or a count).
The browser (`lightstore.ui.data`) shapes them for its pages.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from lightstore.store import LocalStore


def _dicts(
    store: LocalStore, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()
) -> list[dict[str, Any]]:
    return [row.asdict() for row in store.catalogue.query(sql, params)]


def stage_summaries(store: LocalStore) -> list[dict[str, Any]]:
    """One row per stage name: runs, collected runs, last run, failed builds, total size;
    newest activity first."""
    return _dicts(
        store,
        """
        WITH names AS (SELECT name FROM derivations UNION SELECT name FROM history),
        ran AS (SELECT name, count(*) FILTER (WHERE collected IS NULL) AS runs,
                       count(*) FILTER (WHERE collected IS NOT NULL) AS collected,
                       max(stopped) AS last_run,
                       coalesce(sum(size) FILTER (WHERE collected IS NULL), 0) AS size
                FROM history GROUP BY name),
        failed AS (SELECT name, count(*) AS failures, max(started) AS last_failure
                   FROM build_log WHERE status IN ('failed', 'interrupted') GROUP BY name)
        SELECT n.name, coalesce(r.runs, 0) AS runs, coalesce(r.collected, 0) AS collected,
               r.last_run,
               coalesce(f.failures, 0) AS failures, coalesce(r.size, 0) AS size
        FROM names AS n LEFT JOIN ran AS r USING (name) LEFT JOIN failed AS f USING (name)
        ORDER BY max(coalesce(r.last_run, 0), coalesce(f.last_failure, 0)) DESC, n.name
        """,
    )


def stage_runs(store: LocalStore, name: str, include_collected: bool) -> list[dict[str, Any]]:
    """The runs of stage `name` from the `history` view (config as JSON text), newest
    first; collected ones only with `include_collected`."""
    return _dicts(
        store,
        "SELECT rref, dref, started, stopped, duration, size, file_count, config, "
        "collected FROM history WHERE name = ? AND (? OR collected IS NULL) "
        "ORDER BY stopped DESC, rref DESC",
        (name, int(include_collected)),
    )


def runs_by_rref(store: LocalStore, rrefs: Sequence[str]) -> list[dict[str, Any]]:
    """The history records of `rrefs` (name, config as JSON text, times, size, collected),
    one per realization (its newest record)."""
    if not rrefs:
        return []
    rows = _dicts(
        store,
        "SELECT rref, dref, name, started, stopped, duration, size, file_count, config, "
        "collected FROM history WHERE rref IN (SELECT value FROM json_each(?)) "
        "ORDER BY collected IS NULL, coalesce(collected, 0), coalesce(stopped, 0)",
        (json.dumps(sorted(set(rrefs))),),
    )
    return list({row["rref"]: row for row in rows}.values())  # the present or newest last


def collected_runs(store: LocalStore, name: str) -> int:
    """How many runs of stage `name` gc (or rmref, or a repair) removed."""
    return int(
        store.catalogue.query(
            "SELECT count(*) FROM history WHERE name = ? AND collected IS NOT NULL", (name,)
        )[0][0]
    )


def failure_count(store: LocalStore, name: str) -> int:
    """How many builds of stage `name` failed or were interrupted."""
    return int(
        store.catalogue.query(
            "SELECT count(*) FROM build_log WHERE name = ? AND status IN ('failed', 'interrupted')",
            (name,),
        )[0][0]
    )


def removal(store: LocalStore, rref: str) -> tuple[float, str] | None:
    """When and why (`gc`, `rmref`, `repair`) the realization `rref` was last removed, or
    None if it never was."""
    rows = store.catalogue.query(
        "SELECT max(collected), reason FROM collected_realizations WHERE rref = ?", (rref,)
    )
    if not rows or rows[0][0] is None:
        return None
    return rows[0][0], rows[0][1]


def failed_builds(
    store: LocalStore, name: str | None = None, limit: int = 200
) -> list[dict[str, Any]]:
    """Failed and interrupted builds (of stage `name`, or all) with their errors, newest
    first, at most `limit`."""
    where, params = "status IN ('failed', 'interrupted')", []
    if name is not None:
        where += " AND name = ?"
        params.append(name)
    return _dicts(
        store,
        f"SELECT id, dref, name, status, started, stopped, duration, host, pid, error "
        f"FROM build_log WHERE {where} ORDER BY started DESC, id DESC LIMIT ?",
        [*params, int(limit)],
    )


def failed_builds_of(store: LocalStore, dref: str, limit: int = 50) -> list[dict[str, Any]]:
    """The failed and interrupted builds of the derivation `dref`, newest first."""
    return _dicts(
        store,
        "SELECT id, status, started, stopped, duration, host, pid, error FROM build_log "
        "WHERE dref = ? AND status IN ('failed', 'interrupted') ORDER BY started DESC LIMIT ?",
        (dref, int(limit)),
    )


def pins_and_links(store: LocalStore) -> dict[str, list[dict[str, Any]]]:
    """Named pins (name, ref, created) by name, and registered links (path, ref, created)
    by path."""
    return {
        "pins": _dicts(
            store, "SELECT name, coalesce(rref, dref) AS ref, created FROM pins ORDER BY name"
        ),
        "links": _dicts(
            store, "SELECT path, coalesce(rref, dref) AS ref, created FROM links ORDER BY path"
        ),
    }


def disk_use_by_stage(store: LocalStore) -> list[dict[str, Any]]:
    """Runs, files and bytes per stage name, largest first."""
    return _dicts(
        store,
        "SELECT name, count(*) AS runs, coalesce(sum(file_count), 0) AS files, "
        "coalesce(sum(size), 0) AS size FROM history WHERE collected IS NULL "
        "GROUP BY name ORDER BY size DESC, name",
    )


def upstream_runs(
    store: LocalStore, rrefs: Sequence[str], limit: int = 100_000
) -> list[tuple[str, str]]:
    """(run, upstream realization) for every realization each of `rrefs` was built on,
    directly or not, following `realization_deps`; at most `limit` pairs.

    A collected run has no edges left: its direct dependencies are read from
    its recorded context instead (and followed further while they are present).
    """
    if not rrefs:
        return []
    rows = store.catalogue.query(
        """
        WITH RECURSIVE up(run, dep) AS (
          SELECT d.rref, d.dep FROM json_each(:runs) AS j
            CROSS JOIN realization_deps AS d ON d.rref = j.value
          UNION
          SELECT c.rref, r.value FROM json_each(:runs) AS j
            CROSS JOIN collected_realizations AS c ON c.rref = j.value,
            json_each(c.context) AS d, json_each(d.value) AS r
          UNION
          SELECT up.run, d.dep FROM up CROSS JOIN realization_deps AS d ON d.rref = up.dep
        )
        SELECT run, dep FROM up LIMIT :limit
        """,
        {"runs": json.dumps(list(rrefs)), "limit": int(limit)},
    )
    return [(run, dep) for run, dep in rows]


def run_configs(store: LocalStore, rrefs: Sequence[str]) -> dict[str, tuple[str, str]]:
    """The stage name and config (JSON text) of each of `rrefs` the history knows."""
    if not rrefs:
        return {}
    rows = store.catalogue.query(
        "SELECT rref, name, config FROM history "
        "WHERE rref IN (SELECT value FROM json_each(?)) GROUP BY rref",
        (json.dumps(sorted(set(rrefs))),),
    )
    return {rref: (name, config) for rref, name, config in rows}


def stage_configs(store: LocalStore, name: str, limit: int = 2000) -> dict[str, str]:
    """The configs (JSON text) of up to `limit` derivations named `name`, present or
    collected, newest first: what the runs of a stage differ in."""
    rows = store.catalogue.query(
        "SELECT dref, config FROM (SELECT dref, config, created FROM derivations WHERE name = ? "
        "UNION ALL SELECT dref, config, created FROM collected_derivations WHERE name = ?) "
        "GROUP BY dref ORDER BY max(created) DESC LIMIT ?",
        (name, name, int(limit)),
    )
    return {dref: config for dref, config in rows}


def derivation_configs(store: LocalStore, drefs: Sequence[str]) -> dict[str, str]:
    """The config (JSON text) of each of `drefs`, present or collected."""
    if not drefs:
        return {}
    rows = store.catalogue.query(
        "SELECT dref, config FROM derivations WHERE dref IN (SELECT value FROM json_each(:d)) "
        "UNION ALL SELECT dref, config FROM collected_derivations "
        "WHERE dref IN (SELECT value FROM json_each(:d))",
        {"d": json.dumps(sorted(set(drefs)))},
    )
    return {dref: config for dref, config in rows}
