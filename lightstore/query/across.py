"""`history` across stages: the dotted fields a run's own config does not hold, the
fields that vary among the rows (``--varying``), sorting by a field that may be a
`Several`, and hints for a column no row has.

The reading itself is `lightstore.query.upstream`'s `FieldResolver`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from lightstore.catalogue import Catalogue
from lightstore.foundation.refs import isdref, isrefpath
from lightstore.query.columns import HISTORY_COLUMNS, field_keys, metric_keys, unique_keys
from lightstore.query.graph import flatten
from lightstore.query.rows import Rows
from lightstore.query.upstream import FieldResolver, Several, upstream_fields, value_order
from lightstore.store.view import StoreView


def _catalogue(store: StoreView | Catalogue) -> Catalogue:
    return store.catalogue if isinstance(store, StoreView) else store


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


def fields_across_stages(
    resolver: FieldResolver, rows: Rows, fields: Sequence[str], keys: Sequence[str]
) -> None:
    """Fill in the dotted fields a run's own config does not hold, read across stages."""
    for field, key in zip(fields, keys, strict=True):
        if "." not in field:
            continue
        for row in rows:
            if row.get(key) is None:
                row[key] = resolver.value(row, field)


def sort_rows(rows: Rows, key: str, descending: bool) -> None:
    """Order `rows` by `key` as SQL orders a config field (`_sort_order`): numbers exactly,
    then text, then the rest; a `Several` by its smallest value; missing values last."""
    rows.sort(key=lambda r: (r.get("stopped") is not None, r.get("stopped") or 0, r["rref"]))

    def order(row: dict[str, Any]) -> tuple[int, Any]:
        value = row.get(key)
        return value_order(value[0] if isinstance(value, Several) else value)

    present = [r for r in rows if r.get(key) is not None]
    present.sort(key=order, reverse=descending)
    rows[:] = present + [r for r in rows if r.get(key) is None]


def add_varying(resolver: FieldResolver, rows: Rows, taken: Sequence[str]) -> None:
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
    keys = unique_keys(names, [*taken, *shown], "config.")
    for name, key in zip(names, keys, strict=True):
        source = own if name in {k for f in own for k in f} else ups
        for row, flat in zip(rows, source, strict=True):
            row[key] = flat.get(name)
    rows.columns = [*rows.columns, *keys]


def _is_reference(value: Any) -> bool:
    if isinstance(value, Several):
        return any(_is_reference(v) for v in value)
    return isdref(value) or isrefpath(value)
