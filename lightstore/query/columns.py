"""The columns of a `history` row: their names, the keys of fields and metrics, and
the SQL that reads its tags and metrics (and tests a tag)."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from typing import Any

from lightstore.foundation.errors import InvalidAnnotationError, InvalidMetricError
from lightstore.foundation.metrics import check_metric_name
from lightstore.foundation.tags import parse_tag
from lightstore.query.errors import QueryError
from lightstore.query.rows import Rows

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
TAGS_COLUMN = (
    "(SELECT json_group_object(t.name, t.value) FROM tags AS t WHERE t.rref = history.rref) AS tags"
)


def field_keys(fields: Sequence[str], taken: Iterable[str] = HISTORY_COLUMNS) -> list[str]:
    """The row keys `history` uses for config `fields`: the field, or ``config.<field>``
    when a history column already has that name."""
    return unique_keys(fields, taken, "config.")


def unique_keys(names: Sequence[str], taken: Iterable[str], prefix: str) -> list[str]:
    """Row keys for `names`: the name, or `prefix` + the name when a column in `taken`
    (or an earlier key) already has it."""
    used = set(taken)
    keys = []
    for n in names:
        key = n if n not in used else f"{prefix}{n}"
        used.add(key)
        keys.append(key)
    return keys


def metric_keys(metrics: Sequence[str], taken: Iterable[str]) -> list[str]:
    """The row keys `history` uses for `metrics`: the name, or ``metric.<name>`` when taken."""
    return unique_keys(metrics, taken, "metric.")


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


def decode_annotations(rows: Rows, mkeys: Sequence[str]) -> None:
    """Tags as a dict, and a metric's 'NaN' (SQL has no NaN) as a float NaN."""
    for row in rows:
        text = row.get("tags")
        row["tags"] = json.loads(text) if text and text != "{}" else {}
        for key in mkeys:
            if row.get(key) == "NaN":
                row[key] = math.nan
