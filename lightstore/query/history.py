"""StoreView-wide listings as single SQL statements: history, derivations, realizations, disk usage.

Each function takes a `Store` (or its catalogue) and returns plain rows
(dicts), so the command line only formats them. Filters are bound
parameters, except `where`, an SQL expression over the columns of the
`history` view: it must be one expression (`check_expression`), and a query
with it runs as user SQL does, whatever the catalogue given (read-only,
under the rules of `lightstore.query.sqlguard`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from typing import Any

from lightstore.catalogue import Catalogue
from lightstore.foundation.errors import InvalidAnnotationError, InvalidMetricError
from lightstore.foundation.metrics import check_metric_name
from lightstore.foundation.refs import isdref, isrefpath
from lightstore.foundation.tags import parse_tag
from lightstore.foundation.times import TimeLike, parse_optional_time
from lightstore.query.errors import QueryError
from lightstore.query.filters import (
    NUMBER_KEY_FUNCTION,
    ConfigCondition,
    json_path,
    name_condition,
    parse_condition,
    utf8_text,
)
from lightstore.query.graph import flatten
from lightstore.query.readonly import WHERE_TIMEOUT_S, query_rows
from lightstore.query.rows import TIME_COLUMNS, Rows
from lightstore.query.sqlguard import check_expression
from lightstore.query.upstream import FieldResolver, Several, upstream_fields, value_order
from lightstore.store.view import StoreView

#: Columns of a history row, before the chosen config fields.
HISTORY_COLUMNS = (
    "rref",
    "dref",
    "name",
    "started",
    "stopped",
    "duration",
    "size",
    "file_count",
    "host",
    "pid",
    "build_id",
    "imported",
    "import_host",
    "collected",
    "collected_reason",
    "tags",
)

#: What the `tags` column of a history row is: the realization's tags as one JSON object.
_TAGS_COLUMN = (
    "(SELECT json_group_object(t.name, t.value) FROM tags AS t WHERE t.rref = history.rref) AS tags"
)

# The `history` view's rows for what is present (what version 1's view
# returned), with the same columns: the default listings read this, so
# that they use the indexes of `realizations` alone.
_PRESENT_HISTORY = """(SELECT r.rref, r.dref, d.name, d.config, r.context,
  r.build_started AS started, r.build_stopped AS stopped,
  r.build_stopped - r.build_started AS duration, r.size, r.file_count, r.host, r.pid,
  r.build_id, r.created, r.imported, r.import_host,
  NULL AS collected, NULL AS collected_reason
FROM realizations AS r JOIN derivations AS d ON d.dref = r.dref) AS history"""


def _catalogue(store: StoreView | Catalogue) -> Catalogue:
    return store.catalogue if isinstance(store, StoreView) else store


class _Where:
    """Conditions joined by AND, with their parameters in order."""

    def __init__(self) -> None:
        self.terms: list[str] = []
        self.params: list[Any] = []

    def add(self, term: str, params: Iterable[Any] = ()) -> None:
        self.terms.append(term)
        self.params.extend(params)

    def sql(self) -> str:
        return " WHERE " + " AND ".join(self.terms) if self.terms else ""


def _filters(
    where: _Where,
    name: str | None,
    config: Sequence[str | ConfigCondition],
    since: TimeLike,
    until: TimeLike,
    time_column: str,
    config_column: str = "config",
    name_column: str = "name",
) -> None:
    if name is not None:
        where.add(*name_condition(name, name_column))
    for cond in config:
        c = parse_condition(cond) if isinstance(cond, str) else cond
        where.add(*c.sql(config_column))
    t0, t1 = parse_optional_time(since, "since"), parse_optional_time(until, "until")
    if t0 is not None:
        where.add(f"{time_column} >= ?", [t0])
    if t1 is not None:
        where.add(f"{time_column} < ?", [t1])


def _limit(limit: Any) -> int:
    """A row limit SQLite can bind: a non-negative int, capped at the largest 64-bit value."""
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        raise QueryError(f"limit must be a non-negative integer, not {limit!r}")
    return min(limit, 2**63 - 1)


def field_keys(fields: Sequence[str], taken: Iterable[str] = HISTORY_COLUMNS) -> list[str]:
    """The row keys `history` uses for config `fields`: the field, or ``config.<field>``
    when a history column already has that name."""
    return _unique_keys(fields, taken, "config.")


def _unique_keys(names: Sequence[str], taken: Iterable[str], prefix: str) -> list[str]:
    # A name already used by a column (or an earlier key) gets the prefix.
    used = set(taken)
    keys = []
    for n in names:
        key = n if n not in used else f"{prefix}{n}"
        used.add(key)
        keys.append(key)
    return keys


def _rows(
    catalogue: Catalogue,
    sql: str,
    params: Sequence[Any],
    timeout: float | None = None,
    where: bool = False,
) -> Rows:
    # query_rows turns SQLite's complaints about a user's `where` into QueryError.
    names, rows = query_rows(catalogue, sql, params, timeout, user_sql=where)
    times = [n for n in names if n in TIME_COLUMNS]
    return Rows((dict(zip(names, row, strict=True)) for row in rows), names, times)


def metric_keys(metrics: Sequence[str], taken: Iterable[str]) -> list[str]:
    """The row keys `history` uses for `metrics`: the name, or ``metric.<name>`` when taken."""
    return _unique_keys(metrics, taken, "metric.")


#: The hidden column of the exact order of a config field's numbers (`_sort_order`).
_SORT_KEY = "lightstore sort key"
#: REALs at least this large in magnitude may be rounded, or compare wrongly with integers.
_EXACT_REAL_BOUND = 2**53


def _sort_order(sort: str, keys: Sequence[str], field: bool, by_metric: bool = False) -> str:
    """ORDER BY terms for `sort` (a row key; ``-key`` for descending), missing values last.

    For a config `field`, the select has `_SORT_KEY`: `NUMBER_KEY_FUNCTION` of the numbers
    SQLite may order wrongly (2**64 + 1 and 2**64 are the same REAL), which order exactly
    before the smaller numbers (negative) or after them (positive), then text."""
    descending = sort.startswith("-")
    key = sort[1:] if descending else sort
    if key not in keys:
        raise QueryError(
            f"cannot sort by {key!r}: it is not a column of this listing "
            f"(columns: {', '.join(keys)}); add it with a field (-f) or a metric (-m)"
        )
    column = '"' + key.replace('"', '""') + '"'
    way = " DESC" if descending else ""
    if by_metric:  # NaN (the text 'NaN') last, as missing values, in either direction
        return f"typeof({column}) NOT IN ('integer', 'real'), {column}{way}, stopped, rref"
    if not field:
        return f"{column} IS NULL, {column}{way}, stopped, rref"
    group = (
        f"CASE WHEN typeof({column}) NOT IN ('integer', 'real') THEN 3 "
        f'WHEN "{_SORT_KEY}" IS NULL THEN 1 WHEN "{_SORT_KEY}" < \'1\' THEN 0 ELSE 2 END'
    )
    return f'{column} IS NULL, {group}{way}, "{_SORT_KEY}"{way}, {column}{way}, stopped, rref'


def _time_window_is_smaller(
    catalogue: Catalogue, name: str, t0: float | None, t1: float | None
) -> bool:
    """Whether fewer realizations finished in [t0, t1) than derivations have the name.

    Without statistics (the read-only view cannot ANALYZE) SQLite always
    starts from the name index, even for a name most rows have; the time
    index is better then. Both counts walk one index only, so they cost
    little next to the query they steer.
    """
    term, params = name_condition(name, "name")
    named = catalogue.query(f"SELECT count(*) FROM derivations WHERE {term}", params)[0][0]
    bounds, args = [], []
    if t0 is not None:
        bounds.append("build_stopped >= ?")
        args.append(t0)
    if t1 is not None:
        bounds.append("build_stopped < ?")
        args.append(t1)
    recent = catalogue.query(
        f"SELECT count(*) FROM realizations WHERE {' AND '.join(bounds)}", args
    )[0][0]
    return bool(recent < named)


def history(
    store: StoreView | Catalogue,
    name: str | None = None,
    where: str | None = None,
    fields: Sequence[str] = (),
    *,
    config: Sequence[str | ConfigCondition] = (),
    since: TimeLike = None,
    until: TimeLike = None,
    limit: int | None = None,
    include_collected: bool = False,
    metrics: Sequence[str] = (),
    sort: str | None = None,
    timeout: float | None = None,
    tags: Sequence[str | tuple[str, str | None]] = (),
    varying: bool = False,
) -> Rows:
    """One row per realization, in the order they finished (with `limit`, the newest `limit`).

    Only what is in the store, unless `include_collected`: then also the
    records of realizations gc/rmref/repair removed (`collected` is their
    removal time and `collected_reason` why; None for present ones). A
    realization built again after it was collected has both rows.
    Each row has `HISTORY_COLUMNS` plus one key per config field in `fields`
    (``lr``, ``model.depth``; prefixed ``config.`` if the name is taken) and
    one per metric in `metrics` (``loss``; ``metric.loss`` if taken; None
    where a realization has no such metric; NaN and infinities as floats; a
    series gives its value at its last step, and ``loss:min``, ``loss:max``,
    ``loss:first``, ``loss:steps`` summarise it), and `tags`: the realization's
    tags as a dict (name -> value). A field reads across stages
    (`lightstore.query.upstream`): ``model.lr`` follows a reference held in
    ``model`` to that derivation's config, and ``train.lr``, where the config
    has no ``train``, reads the run of stage ``train`` this run was built on
    (a `Several` of the values where it was built on several that disagree).
    With `varying` (or a field ``'*'``), every field of the runs' configs and
    of the stages they were built on whose value is not the same in all the
    rows is added too, own fields first (references left out: the fields of
    their stages stand for them). `sort` orders by one of the
    row's keys instead (``-key``: descending), missing values last; with
    `limit`, the first `limit` in that order. The result is a `Rows`: a list
    of dicts with `.to_pandas()`.
    Filters: `name` (exact, or a GLOB with ``*?[``), `config` conditions
    (``'lr<1e-3'``, ``'train.lr<1e-3'`` across stages: a run built on several
    runs of train matches if one of them does), `tags` (``'baseline'``: has the
    tag; ``'status=diverged'``: with that value), `since`/`until` on when the
    build finished (Unix
    seconds, or text such as ``'7d'``/``'2024-05-01'``), and `where`, raw SQL
    over the columns of the `history` view. A query with `where` is stopped
    after `timeout` seconds (default `WHERE_TIMEOUT_S`). Raises QueryError
    for malformed filters or SQL, a `where` that runs too long, an invalid
    metric name, or a `sort` that is not a column.
    """
    catalogue = _catalogue(store)
    varying = varying or "*" in fields
    fields = [f for f in fields if f != "*"]
    if varying and sort is not None:
        # Sorting by a field --varying shows: it is read like one given.
        wanted = sort.removeprefix("-")
        if wanted not in [*HISTORY_COLUMNS, *field_keys(fields), *metrics]:
            fields.append(wanted)
    for field in fields:
        json_path(field)
    conditions = [parse_condition(c) if isinstance(c, str) else c for c in config]
    # A dotted field may be read across stages: held in SQL where the run's own config has
    # it, decided after the query (with `upstream`) where it does not.
    across = [c for c in conditions if "." in c.field]
    keys = field_keys(fields)
    mkeys = metric_keys(metrics, [*HISTORY_COLUMNS, *keys])
    sort_key = sort.removeprefix("-") if sort is not None else ""
    sort_across = sort_key in keys and "." in fields[keys.index(sort_key)]
    after = bool(across) or sort_across
    select = list(HISTORY_COLUMNS)
    params: list[Any] = []
    for field, key in zip(fields, keys, strict=True):
        select.append(f'json_extract(config, ?) AS "{key}"')
        params.append(json_path(field))
    for metric, key in zip(metrics, mkeys, strict=True):
        term, args = metric_column(metric)
        select.append(f'{term} AS "{key}"')
        params.extend(args)
    select[select.index("tags")] = _TAGS_COLUMN
    w = _Where()
    t0, t1 = parse_optional_time(since, "since"), parse_optional_time(until, "until")
    name_column = "name"
    timed = t0 is not None or t1 is not None
    if name is not None and timed and _time_window_is_smaller(catalogue, name, t0, t1):
        name_column = "+name"  # unary + keeps SQLite off the name index
    _filters(
        w,
        name,
        [c for c in conditions if c not in across],
        t0,
        t1,
        "stopped",
        name_column=name_column,
    )
    for c in across:
        term, more = c.sql("config")
        w.add(f"(json_type(config, ?) IS NULL OR {term})", [c.path, *more])
    for tag in tags:
        w.add(*tag_condition(tag, "history.rref"))
    if where:
        check_expression(utf8_text(where, "the condition"))
        w.add(f"({where}\n)")  # the newline ends a trailing -- comment
    source = "history" if include_collected else _PRESENT_HISTORY
    sql = f"SELECT {', '.join(select)} FROM {source}{w.sql()}"
    params += w.params
    if sort is not None and not sort_across:
        every = [*HISTORY_COLUMNS, *keys, *mkeys]
        by_field = sort_key in keys
        order = _sort_order(sort, every, by_field, by_metric=sort_key in mkeys)
        if by_field:
            path = json_path(fields[keys.index(sort_key)])
            select.append(
                f"CASE WHEN abs(json_extract(config, ?)) >= {_EXACT_REAL_BOUND} "
                f'THEN {NUMBER_KEY_FUNCTION}(json_extract(config, ?, ?)) END AS "{_SORT_KEY}"'
            )
            sort_params = [path, path, path]
        else:
            sort_params = []
        sql = f"SELECT {', '.join(select)} FROM {source}{w.sql()}"
        params = [*params[: len(params) - len(w.params)], *sort_params, *w.params]
        shown = ", ".join('"' + k.replace('"', '""') + '"' for k in every)
        sql = f"SELECT {shown} FROM ({sql}) ORDER BY {order}"
        if limit is not None and not after:
            sql += " LIMIT ?"
            params.append(_limit(limit))
    elif limit is not None and not after:
        # Newest first, so the time index answers it, then back to oldest first.
        sql += " ORDER BY stopped DESC, rref DESC LIMIT ?"
        params.append(_limit(limit))
        sql = f"SELECT * FROM ({sql}) ORDER BY stopped, rref"
    else:
        if sort is not None:
            _sort_order(sort, [*HISTORY_COLUMNS, *keys, *mkeys], True)  # checks the key
        sql += " ORDER BY stopped, rref"
    if timeout is None and where:
        timeout = WHERE_TIMEOUT_S
    rows = _rows(catalogue, sql, params, timeout, where=bool(where))
    if fields:
        _exact_integers(catalogue, rows, fields, keys)
    _decode_annotations(rows, mkeys)
    resolver = FieldResolver(catalogue, rows)
    for c in across:
        rows[:] = resolver.matching(rows, c)
    _fields_across_stages(resolver, rows, fields, keys)
    if after:
        if sort_across and sort is not None:
            _sort_rows(rows, sort_key, sort.startswith("-"))
        if limit is not None:
            n = _limit(limit)
            rows[:] = rows[:n] if sort is not None else rows[max(len(rows) - n, 0) :]
    if varying:
        _add_varying(resolver, rows, [*HISTORY_COLUMNS, *keys, *mkeys])
    return rows


def empty_column_hints(
    store: StoreView | Catalogue,
    rows: Rows,
    fields: Sequence[str],
    metrics: Sequence[str],
) -> list[str]:
    """A line for each field or metric in `fields`/`metrics` that no row of `rows` (from
    `history`) has, saying what the runs do have: their metrics, their config's fields
    and the stages they were built on."""
    if not rows:
        return []
    fields = [f for f in fields if f != "*"]
    keys = field_keys(fields)
    mkeys = metric_keys(metrics, [*HISTORY_COLUMNS, *keys])
    lines = []
    rrefs = json.dumps(sorted({str(r["rref"]) for r in rows}))
    for metric, key in zip(metrics, mkeys, strict=True):
        if all(r.get(key) is None for r in rows):
            names = _catalogue(store).column(
                "SELECT DISTINCT name FROM metrics WHERE rref IN (SELECT value FROM json_each(?)) "
                "ORDER BY name",
                (rrefs,),
            )
            lines.append(
                f"note: no run listed has a metric {metric!r}; "
                + (f"their metrics: {', '.join(names)}" if names else "they have no metrics")
            )
    resolver: FieldResolver | None = None
    for field, key in zip(fields, keys, strict=True):
        if any(r.get(key) is not None for r in rows):
            continue
        if resolver is None:
            resolver = FieldResolver(store, rows)
            resolver.load_own()
        own = sorted(
            {k for r in rows for k in (resolver.configs.get(str(r["dref"])) or {}) if k != "name"}
        )
        stages = sorted({s for r in rows for s in resolver.lineage(str(r["rref"]))})
        lines.append(
            f"note: no run listed has a value for {field!r}; their configs have "
            f"{', '.join(own) or 'no fields'}"
            + (f"; they were built on the stages {', '.join(stages)}" if stages else "")
            + " (FIELD.SUB reads a field of a referenced config or of such a stage)"
        )
    return lines


def _fields_across_stages(
    resolver: FieldResolver, rows: Rows, fields: Sequence[str], keys: Sequence[str]
) -> None:
    """Fill in the dotted fields a run's own config does not hold, read across stages."""
    for field, key in zip(fields, keys, strict=True):
        if "." not in field:
            continue
        for row in rows:
            if row.get(key) is None:
                row[key] = resolver.value(row, field)


def _sort_rows(rows: Rows, key: str, descending: bool) -> None:
    """Order `rows` by `key` as SQL orders a config field (`_sort_order`): numbers exactly,
    then text, then the rest; a `Several` by its smallest value; missing values last."""
    rows.sort(key=lambda r: (r.get("stopped") is not None, r.get("stopped") or 0, r["rref"]))

    def order(row: dict[str, Any]) -> tuple[int, Any]:
        value = row.get(key)
        return value_order(value[0] if isinstance(value, Several) else value)

    present = [r for r in rows if r.get(key) is not None]
    present.sort(key=order, reverse=descending)
    rows[:] = present + [r for r in rows if r.get(key) is None]


def _add_varying(resolver: FieldResolver, rows: Rows, taken: Sequence[str]) -> None:
    """Add the fields (own, then of upstream stages) whose values differ among `rows`."""
    if not rows:
        return
    resolver.load_own()
    own = [flatten(resolver.configs.get(str(r["dref"])) or {}) for r in rows]
    up = upstream_fields(resolver.catalogue, [str(r["rref"]) for r in rows], bounded=True)
    ups = [up.get(str(r["rref"]), {}) for r in rows]
    shown = {c for c in rows.columns}
    missing = object()
    names: list[str] = []
    for flats in (own, ups):
        for field in sorted({k for f in flats for k in f} - {"name"}):
            values = [f.get(field, missing) for f in flats]
            if any(_is_reference(v) for v in values):
                continue
            texts = {json.dumps(v, sort_keys=True, default=str) for v in values}
            if len(texts) > 1 and field not in names:
                names.append(field)
    names = [n for n in names if n not in shown]
    keys = _unique_keys(names, [*taken, *shown], "config.")
    for name, key in zip(names, keys, strict=True):
        source = own if name in {k for f in own for k in f} else ups
        for row, flat in zip(rows, source, strict=True):
            row[key] = flat.get(name)
    rows.columns = [*rows.columns, *keys]


def _is_reference(value: Any) -> bool:
    if isinstance(value, Several):
        return any(_is_reference(v) for v in value)
    return isdref(value) or isrefpath(value)


#: What a history column of a metric gives for a series (``-m loss:min``): SQL over
#: metric_steps, or None for the value in `metrics` (the last step's).
_SERIES_AGGREGATES = {
    "last": None,
    "min": "min(s.value)",
    "max": "max(s.value)",
    "steps": "count(*)",
    "first": "(SELECT s2.value FROM metric_steps AS s2 WHERE s2.rref = history.rref "
    "AND s2.name = ? ORDER BY s2.step LIMIT 1)",
}


def metric_column(metric: str) -> tuple[str, list[Any]]:
    """The SQL term (and its parameters) of a history column for `metric`: a name
    (the value; a series' at its last step), or ``name:min``, ``name:max``,
    ``name:first``, ``name:last``, ``name:steps`` for a series (a plain metric gives its
    value, and 0 steps). A NaN is the text 'NaN' (SQL has none; made a float again).

    Raises QueryError for an invalid name or an unknown aggregate.
    """
    if not isinstance(metric, str):
        raise QueryError(f"a metric is a name, not {metric!r}")
    name, colon, aggregate = metric.partition(":")
    try:
        check_metric_name(name)
    except InvalidMetricError as e:
        raise QueryError(str(e)) from None
    if colon and aggregate not in _SERIES_AGGREGATES:
        raise QueryError(
            f"unknown summary {aggregate!r} of the metric {name!r}: use "
            f"{', '.join(f'{name}:{a}' for a in _SERIES_AGGREGATES)}"
        )
    # One primary-key lookup per row.
    value = (
        "(SELECT CASE WHEN m.value IS NULL THEN 'NaN' ELSE m.value END FROM metrics AS m "
        "WHERE m.rref = history.rref AND m.name = ?)"
    )
    over = _SERIES_AGGREGATES.get(aggregate) if colon else None
    if over is None:
        return value, [name]
    if aggregate == "steps":
        return (
            "(SELECT count(*) FROM metric_steps AS s WHERE s.rref = history.rref AND s.name = ?)",
            [name],
        )
    if aggregate == "first":
        return f"coalesce({over}, {value})", [name, name]
    # min() and max() leave NaN (NULL) out; a plain metric gives its value.
    return (
        f"coalesce((SELECT {over} FROM metric_steps AS s WHERE s.rref = history.rref "
        f"AND s.name = ?), {value})",
        [name, name],
    )


def tag_condition(tag: str | tuple[str, str | None], rref_column: str) -> tuple[str, list[Any]]:
    """The SQL condition that the realization in `rref_column` has the tag `tag`:
    ``NAME`` (any value) or ``NAME=VALUE`` (that value), or a (name, value or None)
    pair. Raises QueryError for a malformed tag name."""
    try:
        name, value = parse_tag(tag) if isinstance(tag, str) else (parse_tag(tag[0])[0], tag[1])
    except InvalidAnnotationError as e:
        raise QueryError(str(e)) from None
    if value is None:
        return f"{rref_column} IN (SELECT rref FROM tags WHERE name = ?)", [name]
    return f"{rref_column} IN (SELECT rref FROM tags WHERE name = ? AND value = ?)", [name, value]


def _decode_annotations(rows: Rows, mkeys: Sequence[str]) -> None:
    """Tags as a dict, and a metric's 'NaN' (SQL has no NaN) as a float NaN."""
    for row in rows:
        text = row.get("tags")
        row["tags"] = json.loads(text) if text and text != "{}" else {}
        for key in mkeys:
            if row.get(key) == "NaN":
                row[key] = math.nan


def _exact_integers(
    catalogue: Catalogue, rows: Rows, fields: Sequence[str], keys: Sequence[str]
) -> None:
    """Put back the digits of config integers beyond 64 bits, which SQLite read as REALs
    (infinite beyond the float range).

    Only a REAL that large can be one, so the common rows cost one test each.
    """
    for row in rows:
        for field, key in zip(fields, keys, strict=True):
            value = row.get(key)
            if isinstance(value, float) and abs(value) >= 2**63:  # an integer, or infinite
                path = json_path(field)
                found = catalogue.column(
                    "SELECT json_extract(config, ?, ?) FROM derivations WHERE dref = ? UNION ALL "
                    "SELECT json_extract(config, ?, ?) FROM collected_derivations WHERE dref = ?",
                    (path, path, row["dref"], path, path, row["dref"]),
                )
                exact = _first_of_pair(found[0]) if found else None
                if isinstance(exact, int) and not isinstance(exact, bool):
                    row[key] = exact


def _first_of_pair(pair: Any) -> Any:
    try:
        return json.loads(pair)[0]
    except (TypeError, ValueError, IndexError, KeyError, RecursionError):
        return None


#: Failed and interrupted builds of derivation ``d`` (an index range of `builds_by_dref`).
_FAILURES = (
    "(SELECT count(*) FROM builds AS b WHERE b.dref = d.dref "
    "AND b.status IN ('failed', 'interrupted'))"
)


def derivations(
    store: StoreView | Catalogue,
    name: str | None = None,
    *,
    config: Sequence[str | ConfigCondition] = (),
    since: TimeLike = None,
    until: TimeLike = None,
    limit: int | None = None,
    totals: bool = True,
    include_collected: bool = False,
    tags: Sequence[str | tuple[str, str | None]] = (),
) -> list[dict[str, Any]]:
    """One row per derivation (dref, name, created, and with `totals` its number of
    realizations, their size, last_built and `failures`: how many of its builds failed
    or were interrupted), oldest first.

    Filters as in `history`; `since`/`until` apply to when it was recorded.
    Without `totals` no realization is read, which is faster on big stores.
    With `include_collected`, derivations gc removed are listed too, with
    `collected` set (and, with `totals`, their collected realization records
    counted); present ones have ``collected = None``. With `tags`, only derivations
    with a realization (present, or with `include_collected` collected) that has
    them (see `history`).
    """
    w = _Where()
    _filters(w, name, config, since, until, "d.created", "d.config", "d.name")
    _tagged_derivations(w, tags, "realizations")
    collected = ", NULL AS collected" if include_collected else ""
    if totals:
        sql = (
            "SELECT d.dref, d.name, d.created, count(r.rref) AS realizations, "
            f"coalesce(sum(r.size), 0) AS size, max(r.build_stopped) AS last_built, "
            f"{_FAILURES} AS failures{collected} "
            f"FROM derivations AS d LEFT JOIN realizations AS r ON r.dref = d.dref{w.sql()} "
            "GROUP BY d.dref"
        )
    else:
        sql = f"SELECT d.dref, d.name, d.created{collected} FROM derivations AS d{w.sql()}"
    params = list(w.params)
    if include_collected:
        c = _Where()
        _filters(c, name, config, since, until, "d.created", "d.config", "d.name")
        _tagged_derivations(c, tags, "collected_realizations")
        if totals:
            sql += (
                " UNION ALL SELECT d.dref, d.name, d.created, count(r.id), "
                f"coalesce(sum(r.size), 0), max(r.build_stopped), {_FAILURES}, d.collected "
                "FROM collected_derivations AS d LEFT JOIN collected_realizations AS r "
                f"ON r.dref = d.dref{c.sql()} GROUP BY d.dref"
            )
        else:
            sql += (
                " UNION ALL SELECT d.dref, d.name, d.created, d.collected "
                f"FROM collected_derivations AS d{c.sql()}"
            )
        params += c.params
    if limit is not None:
        sql = f"SELECT * FROM ({sql}) ORDER BY created DESC, dref DESC LIMIT ?"
        params.append(_limit(limit))
    return _rows(_catalogue(store), f"SELECT * FROM ({sql}) ORDER BY created, dref", params)


def _tagged_derivations(
    where: _Where, tags: Sequence[str | tuple[str, str | None]], table: str
) -> None:
    """Keep the derivations with a realization in `table` that has every one of `tags`."""
    for tag in tags:
        term, params = tag_condition(tag, "x.rref")
        where.add(f"d.dref IN (SELECT x.dref FROM {table} AS x WHERE {term})", params)


def realizations(
    store: StoreView | Catalogue,
    name: str | None = None,
    *,
    config: Sequence[str | ConfigCondition] = (),
    since: TimeLike = None,
    until: TimeLike = None,
    limit: int | None = None,
    include_collected: bool = False,
    tags: Sequence[str | tuple[str, str | None]] = (),
) -> list[dict[str, Any]]:
    """One row per realization (the `history` columns), oldest first; filters and
    `include_collected` as in `history`."""
    return history(
        store,
        name,
        config=config,
        since=since,
        until=until,
        limit=limit,
        include_collected=include_collected,
        tags=tags,
    )


def disk_usage(store: StoreView | Catalogue, name: str | None = None) -> list[dict[str, Any]]:
    """Bytes per derivation (dref, name, realizations, files, size), largest first."""
    w = _Where()
    if name is not None:
        w.add(*name_condition(name, "d.name"))
    sql = (
        "SELECT r.dref, d.name, count(*) AS realizations, sum(r.file_count) AS files, "
        "sum(r.size) AS size FROM realizations AS r JOIN derivations AS d ON d.dref = r.dref"
        f"{w.sql()} GROUP BY r.dref ORDER BY size DESC, r.dref"
    )
    return _rows(_catalogue(store), sql, w.params)


def sizes_of(store: StoreView | Catalogue, rrefs: Sequence[str]) -> dict[str, int]:
    """The recorded size in bytes of each of `rrefs` (unknown ones are left out)."""
    rows = _catalogue(store).query(
        "SELECT rref, size FROM realizations WHERE rref IN (SELECT value FROM json_each(?))",
        (json.dumps(list(rrefs)),),
    )
    return {r: s for r, s in rows}
