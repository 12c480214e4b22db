"""Metrics of runs as rows: curves (metric series over steps) and plain values, for
`lightstore metrics`, pandas and the browser.

Two shapes of the same data:

- `metric_points`: long rows (rref, metric, step, value), one per value: what a plot
  or ``DataFrame.pivot`` wants;
- `metric_table`: wide rows (rref, step, one column per metric), one per run and step:
  what a person reads. Plain metrics (one number, no step) are a row with step None.

Values are ints or floats, NaN and infinities included.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from lightstore.catalogue import Catalogue
from lightstore.foundation.errors import InvalidMetricError
from lightstore.foundation.metrics import Number, check_metric_name, series_summary
from lightstore.query.errors import QueryError
from lightstore.query.rows import Rows, cell_text
from lightstore.store.view import StoreView

#: The columns of `metric_points`.
POINT_COLUMNS = ("rref", "metric", "step", "value")


def _catalogue(store: StoreView | Catalogue) -> Catalogue:
    return store.catalogue if isinstance(store, StoreView) else store


def _names(names: Sequence[str] | None) -> list[str] | None:
    if names is None:
        return None
    try:
        return [check_metric_name(n) for n in names]
    except InvalidMetricError as e:
        raise QueryError(str(e)) from None


def metric_points(
    store: StoreView | Catalogue,
    rrefs: Iterable[str],
    names: Sequence[str] | None = None,
    *,
    plain: bool = True,
) -> Rows:
    """One row per value of the metrics of `rrefs` (only `names`, if given): ``rref``,
    ``metric``, ``step`` and ``value``; series by step, then (with `plain`) the metrics
    that are one number, with step None. In the order of `rrefs`, then by name.

    Raises QueryError for an invalid metric name.
    """
    catalogue = _catalogue(store)
    wanted = _names(names)
    order = list(dict.fromkeys(rrefs))
    series = catalogue.series_of(order, wanted)
    values = catalogue.plain_metrics_of(order) if plain else {}
    rows = Rows(columns=list(POINT_COLUMNS))
    for rref in order:
        for name, points in sorted(series.get(rref, {}).items()):
            rows += [
                {"rref": rref, "metric": name, "step": step, "value": value}
                for step, value in points.items()
            ]
        for name, value in sorted(values.get(rref, {}).items()):
            if wanted is None or name in wanted:
                rows.append({"rref": rref, "metric": name, "step": None, "value": value})
    return rows


def metric_table(
    store: StoreView | Catalogue,
    rrefs: Iterable[str],
    names: Sequence[str] | None = None,
) -> Rows:
    """The metrics of `rrefs` as a table: one row per run and step (``rref``, ``step``,
    then one column per metric name, None where a metric has no value at that step);
    a run's metrics that are one number come first, in a row whose step is None. A
    metric named ``rref`` or ``step`` has the column ``metric.rref`` / ``metric.step``.

    Raises QueryError for an invalid metric name.
    """
    points = metric_points(store, rrefs, names)
    metrics = sorted({p["metric"] for p in points})
    keys = {m: (f"metric.{m}" if m in ("rref", "step") else m) for m in metrics}
    by_row: dict[tuple[str, int | None], dict[str, Any]] = {}
    for p in points:
        row = by_row.setdefault((p["rref"], p["step"]), {"rref": p["rref"], "step": p["step"]})
        row[keys[p["metric"]]] = p["value"]
    runs = {r: i for i, r in enumerate(dict.fromkeys(p["rref"] for p in points))}
    ordered = sorted(
        by_row.values(),
        key=lambda r: (runs[r["rref"]], r["step"] is not None, r["step"] or 0),
    )
    return Rows(ordered, ["rref", "step", *keys.values()])


def series_summaries(store: StoreView | Catalogue, rref: str) -> dict[str, dict[str, Any]]:
    """For each metric series of `rref`: its steps, first and last step, last value, and
    smallest and largest values with their steps (see `series_summary`)."""
    found = _catalogue(store).series_of([rref]).get(rref, {})
    return {name: series_summary(points) for name, points in sorted(found.items())}


def metric_values(
    store: StoreView | Catalogue, rrefs: Iterable[str]
) -> dict[str, dict[str, Number]]:
    """The metrics of each of `rrefs` that has any, one number per name: ``{rref: {name:
    value}}``, a series' value at its last step (what ``lightstore history -m NAME`` shows)."""
    return _catalogue(store).metrics_of(list(dict.fromkeys(rrefs)))


def series_ranges(
    store: StoreView | Catalogue, rrefs: Iterable[str]
) -> dict[str, dict[str, dict[str, Any]]]:
    """For each series of each of `rrefs`: ``{rref: {name: {"steps", "min", "max"}}}``,
    NaN never the smallest nor the largest (None when every value is NaN), as
    ``lightstore history -m NAME:min`` reads them. One grouped statement over the
    catalogue's index, not the points: for tables of many runs."""
    order = list(dict.fromkeys(rrefs))
    found: dict[str, dict[str, dict[str, Any]]] = {}
    if not order:
        return found
    for rref, name, steps, low, high in _catalogue(store).query(
        "SELECT rref, name, count(*), min(value), max(value) FROM metric_steps "
        "WHERE rref IN (SELECT value FROM json_each(?)) GROUP BY rref, name",
        (json.dumps(order),),
    ):
        found.setdefault(rref, {})[name] = {"steps": steps, "min": low, "max": high}
    return found


def value_text(value: Number | None) -> str:
    """A metric value for people: ``0.125``, ``7``, ``nan``, ``inf``, ``-inf``; empty for
    None."""
    if value is None:
        return ""
    return cell_text(value, None)
