"""Fields across stages: a run's values of the configs of the runs it was built on.

A field path ``a.b.c`` of a run resolves in its own config first: each part
names a key of a dict; a value that is a reference (a DRef, or a RefPath
``[dref, "file"]``) before the path ends is followed to that derivation's
config (``model.lr``: evaluate's ``model`` holds train's DRef). If ``a`` is not
a key of the run's config, it is the name of a stage in the run's lineage:
the realizations named ``a`` that this run was built on, directly or not,
following the recorded dependency edges (`realization_deps`; for a collected
run, the context kept in its record), so it is the run actually used, not
any run of that stage. When a run was built on several runs of that stage
that disagree, the value is a `Several`: the sorted list of their values.

`FieldResolver` answers this for rows of `history`; `upstream_fields` gives
every upstream field of runs (the browser's columns, `diff`, ``--varying``).
Each reads the catalogue in a few statements, whatever the number of runs.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TypeVar

from lightstore.catalogue import Catalogue
from lightstore.foundation.refs import isdref, isrefpath, rref2dref
from lightstore.query.errors import QueryError
from lightstore.query.filters import ConfigCondition, json_path
from lightstore.query.graph import flatten
from lightstore.query.rows import Several

__all__ = [
    "FieldResolver",
    "Several",
    "derivation_upstream_fields",
    "lineage_pairs",
    "record_configs",
    "stage_name",
    "upstream_fields",
    "upstream_pairs",
]
from lightstore.store.view import StoreView

#: Most (run, upstream realization) pairs the browser reads for one page, and `history`
#: for fields across stages (a chain of N checkpoints has N * N / 2 of them).
MAX_PAIRS = 200_000

_MISSING: Any = object()
_Row = TypeVar("_Row", bound=Mapping[str, Any])


def stage_name(ref: str) -> str:
    """The derivation name in a DRef or RRef."""
    body = ref.split(":", 1)[1]
    # <R>-<H>-<name> or <H>-<name>: the hashes are hex, the name may hold '-'.
    return body.split("-", 2)[2] if ref.startswith("rref:") else body.split("-", 1)[1]


def value_order(value: Any) -> tuple[int, Any]:
    """A sort key: numbers (booleans as 0 and 1, as SQLite reads them), then text, then
    lists and dicts by their JSON text; every number compares exactly."""
    if isinstance(value, bool):
        return (0, int(value))
    if isinstance(value, int | float):
        return (0, -math.inf) if isinstance(value, float) and math.isnan(value) else (0, value)
    if isinstance(value, str):
        return (1, value)
    return (2, json.dumps(value, sort_keys=True, separators=(",", ":")))


def combine(values: Iterable[Any]) -> Any:
    """One value, or a `Several` of the distinct ones (compared as JSON), or None if none."""
    distinct: dict[str, Any] = {}
    for v in values:
        distinct.setdefault(json.dumps(v, sort_keys=True, default=str), v)
    if not distinct:
        return None
    if len(distinct) == 1:
        return next(iter(distinct.values()))
    return Several(sorted(distinct.values(), key=value_order))


def _catalogue(store: StoreView | Catalogue) -> Catalogue:
    return store.catalogue if isinstance(store, StoreView) else store


def upstream_pairs(
    store: StoreView | Catalogue, rrefs: Sequence[str], limit: int | None = None
) -> list[tuple[str, str]]:
    """(run, upstream realization) for every realization each of `rrefs` was built on,
    directly or not; at most `limit` pairs.

    Present realizations are followed through `realization_deps`; a collected one has no
    edges left, so its dependencies are read from the context its record keeps (at any
    depth: a collected run built on collected runs is followed too).
    """
    if not rrefs:
        return []
    rows = _catalogue(store).query(
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
          UNION
          SELECT up.run, r.value FROM up
            CROSS JOIN collected_realizations AS c ON c.rref = up.dep,
            json_each(c.context) AS d, json_each(d.value) AS r
        )
        SELECT run, dep FROM up LIMIT :limit
        """,
        {"runs": json.dumps(sorted(set(rrefs))), "limit": -1 if limit is None else int(limit)},
    )
    return [(run, dep) for run, dep in rows]


def lineage_pairs(store: StoreView | Catalogue, rrefs: Sequence[str]) -> list[tuple[str, str]]:
    """`upstream_pairs` of `rrefs`, all of them: QueryError if there are more than
    `MAX_PAIRS` (reading them all would take minutes and gigabytes)."""
    pairs = upstream_pairs(store, rrefs, MAX_PAIRS + 1)
    if len(pairs) > MAX_PAIRS:
        raise QueryError(
            f"the lineages of the {len(set(rrefs))} runs asked about hold more than {MAX_PAIRS} "
            "runs (counted once per run asked about), too many to read fields across stages: "
            "ask about fewer runs (--limit, -n, --since, -t)"
        )
    return pairs


def derivation_pairs(store: StoreView | Catalogue, drefs: Sequence[str]) -> list[tuple[str, str]]:
    """(derivation, upstream derivation) for every derivation each of `drefs` names in its
    config, directly or not. Read from the configs (present or collected: a collected
    derivation's edges are gone, its config is kept), one statement per level."""
    configs = record_configs(store, drefs)
    direct: dict[str, set[str]] = {}
    level = set(configs)
    while level:
        for dref in level:
            direct[dref] = set(_config_references(configs.get(dref)))
        level = {d for ds in direct.values() for d in ds} - set(direct)
        configs.update(record_configs(store, level - set(configs)))
    pairs = []
    for top in sorted(set(drefs)):
        seen: set[str] = set()
        todo = list(direct.get(top, ()))
        while todo:
            dep = todo.pop()
            if dep not in seen:
                seen.add(dep)
                todo += direct.get(dep, ())
        pairs += [(top, dep) for dep in sorted(seen)]
    return pairs


def _config_references(value: Any) -> list[str]:
    """Every DRef a config value holds, at any depth (RefPaths' heads included)."""
    found: list[str] = []
    todo = [value]
    while todo:
        v = todo.pop()
        if isdref(v):
            found.append(str(v))
        elif isinstance(v, dict):
            todo += v.values()
        elif isinstance(v, list):
            todo += v
    return found


def record_configs(store: StoreView | Catalogue, drefs: Iterable[str]) -> dict[str, Any]:
    """The config of each of `drefs` the catalogue records, present or collected (parsed
    JSON; a damaged one is left out)."""
    wanted = sorted(set(drefs))
    if not wanted:
        return {}
    rows = _catalogue(store).query(
        "SELECT dref, config FROM derivations WHERE dref IN (SELECT value FROM json_each(:d)) "
        "UNION ALL SELECT dref, config FROM collected_derivations "
        "WHERE dref IN (SELECT value FROM json_each(:d))",
        {"d": json.dumps(wanted)},
    )
    out: dict[str, Any] = {}
    for dref, text in rows:
        try:
            out.setdefault(dref, json.loads(text))
        except (TypeError, ValueError, RecursionError):
            continue
    return out


def _references(value: Any) -> list[str]:
    """The DRefs a config value refers to: a DRef, a RefPath's head, or each DRef of a list
    of them (a stage built on several runs); else none."""
    if isdref(value):
        return [str(value)]
    if isrefpath(value):
        return [str(value[0])]
    if isinstance(value, list) and value and all(isdref(v) or isrefpath(v) for v in value):
        return [str(v) if isdref(v) else str(v[0]) for v in value]
    return []


def upstream_fields(
    store: StoreView | Catalogue,
    rrefs: Sequence[str],
    limit: int | None = None,
    *,
    bounded: bool = False,
) -> dict[str, dict[str, Any]]:
    """The config fields of the stages each of `rrefs` was built on, directly or not:
    ``{rref: {"train.lr": 0.1, "data.rows": 500, ...}}`` (the stage's name, a dot, its
    flattened field; `name` left out). Where a run was built on several runs of one stage
    that disagree on a field, the value is a `Several`. `limit` bounds the pairs read;
    `bounded` reads them all, or raises QueryError past `MAX_PAIRS` (`lineage_pairs`)."""
    pairs = lineage_pairs(store, rrefs) if bounded else upstream_pairs(store, rrefs, limit)
    configs = record_configs(store, {rref2dref(dep) for _, dep in pairs})
    return _gather(pairs, lambda dep: configs.get(rref2dref(dep)))


def derivation_upstream_fields(
    store: StoreView | Catalogue, drefs: Sequence[str]
) -> dict[str, dict[str, Any]]:
    """As `upstream_fields`, for derivations: the configs of the derivations each of
    `drefs` names, directly or not."""
    pairs = derivation_pairs(store, drefs)
    configs = record_configs(store, {dep for _, dep in pairs})
    return _gather(pairs, configs.get)


def _gather(pairs: Sequence[tuple[str, str]], config_of: Any) -> dict[str, dict[str, Any]]:
    flat: dict[str, dict[str, Any]] = {}
    for dep in {dep for _, dep in pairs}:
        config = config_of(dep)
        if not isinstance(config, dict):
            continue
        fields = flatten(config)
        fields.pop("name", None)
        flat[dep] = {f"{stage_name(dep)}.{k}": v for k, v in fields.items()}
    gathered: dict[str, dict[str, list[Any]]] = {}
    for run, dep in pairs:
        into = gathered.setdefault(run, {})
        for key, value in flat.get(dep, {}).items():
            into.setdefault(key, []).append(value)
    return {
        run: {key: combine(values) for key, values in sorted(fields.items())}
        for run, fields in gathered.items()
    }


class FieldResolver:
    """Resolves field paths for runs of `history` (rows with ``rref`` and ``dref``).

    Configs and lineages are read once for all the rows, when a field first needs them.
    """

    def __init__(self, store: StoreView | Catalogue, rows: Sequence[Mapping[str, Any]]) -> None:
        self.catalogue = _catalogue(store)
        self.rows = rows
        self.configs: dict[str, Any] = {}
        self._lineage: dict[str, dict[str, list[str]]] | None = None
        self._closure_read = False

    def _config(self, dref: str) -> Any:
        if dref not in self.configs and not self._closure_read:
            # A reference is followed: read the configs of every derivation the rows'
            # configs name, directly or not, at once.
            self._closure_read = True
            tops = [str(r["dref"]) for r in self.rows]
            deps = {dep for _, dep in derivation_pairs(self.catalogue, tops)}
            self.configs.update(record_configs(self.catalogue, deps - set(self.configs)))
        if dref not in self.configs:
            self.configs.update(record_configs(self.catalogue, [dref]))
            self.configs.setdefault(dref, None)
        return self.configs[dref]

    def load_own(self) -> None:
        """Read the configs of the rows' own derivations (once)."""
        missing = {str(r["dref"]) for r in self.rows} - set(self.configs)
        if missing:
            found = record_configs(self.catalogue, missing)
            self.configs.update({d: found.get(d) for d in missing})

    def lineage(self, rref: str) -> dict[str, list[str]]:
        """The derivations of the runs `rref` was built on, by stage name."""
        if self._lineage is None:
            pairs = lineage_pairs(self.catalogue, [str(r["rref"]) for r in self.rows])
            self._lineage = {}
            for run, dep in pairs:
                drefs = self._lineage.setdefault(run, {}).setdefault(stage_name(dep), [])
                dref = rref2dref(dep)
                if dref not in drefs:
                    drefs.append(dref)
            needed = {d for by in self._lineage.values() for ds in by.values() for d in ds}
            self.configs.update(record_configs(self.catalogue, needed - set(self.configs)))
        return self._lineage.get(rref, {})

    def _walk(self, dref: str, parts: Sequence[str]) -> list[tuple[str, str]]:
        """Where the value of `parts` from the config of `dref` lives: (derivation, path in
        its config) for each place, following references on the way (several for a list of
        references); none where a followed derivation's config is not recorded."""
        node, path = self._config(dref), list[str]()
        for i, part in enumerate(parts):
            refs = _references(node) if i else []
            if refs:  # references before the path ends: into their configs
                return [place for ref in refs for place in self._walk(ref, parts[i:])]
            if not isinstance(node, dict) or part not in node:
                return [] if node is None else [(dref, ".".join([*path, *parts[i:]]))]
            node = node[part]
            path.append(part)
        return [(dref, ".".join(path))]

    def locations(self, row: Mapping[str, Any], field: str) -> list[tuple[str, str]]:
        """Where `field` of `row` is read: (derivation, field of its config) for each
        derivation that holds it (several for a stage the run was built on several times,
        or a list of references); none if it names neither a config field nor a stage of
        the run's lineage."""
        json_path(field)  # checks the syntax
        parts = field.split(".")
        self.load_own()
        own = self.configs.get(str(row["dref"]))
        if isinstance(own, dict) and parts[0] in own:
            return self._walk(str(row["dref"]), parts)
        if len(parts) < 2:
            return []
        return [
            place
            for dref in self.lineage(str(row["rref"])).get(parts[0], [])
            for place in self._walk(dref, parts[1:])
        ]

    def value(self, row: Mapping[str, Any], field: str) -> Any:
        """The value of `field` for `row` (None if missing; a `Several` where the runs of
        a stage it was built on disagree)."""
        values = []
        for dref, path in self.locations(row, field):
            node = self.configs.get(dref)
            for part in path.split(".") if path else []:
                node = node.get(part, _MISSING) if isinstance(node, dict) else _MISSING
            if node is not _MISSING:
                values.append(node)
        return combine(values)

    def matching(self, rows: Sequence[_Row], condition: ConfigCondition) -> list[_Row]:
        """The `rows` for which `condition` holds on its field resolved across stages: it is
        tested in SQL on each derivation the field is read from (as a condition on the
        run's own config is), and holds if it holds for any of them. A field that names
        nothing is missing: only ``FIELD=null`` holds."""
        places = {id(row): self.locations(row, condition.field) for row in rows}
        by_path: dict[str, set[str]] = {}
        for found in places.values():
            for dref, path in found:
                by_path.setdefault(path, set()).add(dref)
        holds: set[tuple[str, str]] = set()
        for path, drefs in by_path.items():
            term, params = ConfigCondition(path, condition.op, condition.value).sql("config")
            holds.update((d, path) for d in self._test(drefs, term, params))
        missing_holds = condition.value is None and condition.op == "="
        return [
            row
            for row in rows
            if (any(p in holds for p in places[id(row)]) if places[id(row)] else missing_holds)
        ]

    def _test(self, drefs: set[str], term: str, params: list[Any]) -> list[str]:
        wanted = json.dumps(sorted(drefs))
        return self.catalogue.column(
            "SELECT dref FROM (SELECT dref, config FROM derivations WHERE dref IN "
            "(SELECT value FROM json_each(?)) UNION ALL SELECT dref, config FROM "
            "collected_derivations WHERE dref IN (SELECT value FROM json_each(?))) "
            f"WHERE {term}",
            [wanted, wanted, *params],
        )
