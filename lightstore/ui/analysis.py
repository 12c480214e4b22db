"""A stage's runs as a table, a chart and a parallel-coordinates view, and several runs
compared side by side: plain data built from `lightstore.ui.data`'s reads.

A run's values are keyed by column: ``config:<field>``, ``metric:<name>``,
``up:<stage>.<field>`` (a field of a stage it was built on). Columns that vary
among the runs shown come first; those the same in every run are listed
apart (the page hides them behind a toggle).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from lightstore.facade import Store
from lightstore.foundation.errors import InvalidReferenceError
from lightstore.foundation.refs import parse_rref
from lightstore.query import browse
from lightstore.ui import data
from lightstore.ui.curves import curve_line, gap_text
from lightstore.ui.fields import (
    cell_text,
    chart_value,
    distinct,
    flatten,
    has_tag,
    is_number,
    plot_number,
    short_value,
    sort_key,
    tag_texts,
)

#: Most runs a stage page lists (newest first, or in the chosen order).
MAX_RUNS = 1000
#: Most runs compared at once.
MAX_COMPARE = 50
#: A facet lists fields with 2 to this many values; a tag facet at most this many tags.
MAX_FACET_VALUES = 20
KINDS = ("config", "metric", "up")
TIME_SORTS = ("stopped", "duration", "size", "started")
#: A numeric axis whose positive values span this factor or more starts on a log scale.
LOG_SPAN = 100.0


def _column(key: str, runs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    kind, _, name = key.partition(":")
    missing = object()
    values = [r["values"].get(key, missing) for r in runs]
    present = [v for v in values if v is not missing]
    numbers = [v for v in present if is_number(v)]
    count = distinct(values)
    return {
        "key": key,
        "kind": kind,
        "name": name,
        "varying": count > 1,
        "distinct": count,
        "numeric": bool(numbers),
        "constant": cell_text(present[0]) if count == 1 and present else None,
    }


def _order(columns: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Varying config fields, metrics, varying upstream fields, then the constant ones."""
    rank = {"config": 0, "metric": 1, "up": 2}
    return sorted(
        columns,
        key=lambda c: (
            not c["varying"] and c["kind"] != "metric",
            rank[c["kind"]],
            c["name"].partition(":"),  # a series' summaries after its last value
        ),
    )


def stage_table(
    store: Store,
    name: str,
    sort: str | None = None,
    descending: bool = False,
    filters: Mapping[str, str] | None = None,
    include_collected: bool = False,
) -> dict[str, Any]:
    """The runs of stage `name` with every config field, metric and upstream field.

    `sort` is a column key (``config:lr``, ``metric:loss``, ``up:train.lr``) or one of
    ``stopped``, ``duration``, ``size`` (default: newest first). `filters` keep the runs
    whose column (a key) has the given `cell_text`, or (``tag``) that have the tag ``NAME``
    or ``NAME=VALUE``. A metric series ``loss`` gives two columns: ``metric:loss`` (its
    value at the last step) and ``metric:loss:min``. Returns the
    rows (each with ``values`` by column key, ``tags``), the columns in display order
    (varying first), facets, and counts. Records that gc removed (history) are left out
    unless `include_collected`.
    """
    runs = browse.stage_runs(store, name, include_collected)
    rrefs = [r["rref"] for r in runs]
    metrics = data.run_metrics(store, rrefs)
    upstream = data.upstream_fields(store, rrefs)
    tags = data.run_tags(store, rrefs)
    shorts = data.short_labels(store, rrefs)
    keys: dict[str, None] = {}
    for run in runs:
        config = flatten(json.loads(run["config"]))
        config.pop("name", None)
        run["label"] = shorts[run["rref"]]
        run["tags"] = tag_texts(tags.get(run["rref"], {}).get("tags", {}))
        run["notes"] = [n["text"] for n in tags.get(run["rref"], {}).get("notes", [])]
        run["values"] = {
            **{f"config:{k}": v for k, v in config.items()},
            **{f"metric:{k}": v for k, v in metrics.get(run["rref"], {}).items()},
            **{f"up:{k}": v for k, v in upstream.get(run["rref"], {}).items()},
        }
        keys.update(dict.fromkeys(run["values"]))
    facets = _facets(runs, keys)
    total, every = len(runs), runs
    for column, wanted in (filters or {}).items():
        if column == "tag":
            runs = [r for r in runs if has_tag(tags.get(r["rref"], {}).get("tags", {}), wanted)]
        elif column in keys:
            runs = [r for r in runs if cell_text(r["values"].get(column)) == wanted]
    if sort:
        runs = _sorted(runs, sort, descending)
    # Filters that leave no run still show the stage's columns (as all its runs have them).
    columns = _order(_column(k, runs or every) for k in keys)
    for c in columns:
        c["title"] = _title(c, keys)
    shown = runs[:MAX_RUNS]
    return {
        "name": name,
        "runs": shown,
        "shown": len(shown),
        "matching": len(runs),
        "total": total,
        "columns": columns,
        "varying": [c for c in columns if c["varying"] or c["kind"] == "metric"],
        "constants": [c for c in columns if not c["varying"] and c["kind"] != "metric"],
        "metric_keys": [c["name"] for c in columns if c["kind"] == "metric"],
        "has_tags": any(r["tags"] or r["notes"] for r in runs),
        "facets": facets,
        "collected": browse.collected_runs(store, name),
        "failures": browse.failure_count(store, name),
    }


def _title(column: Mapping[str, Any], keys: Mapping[str, Any]) -> str:
    """What a column's header says when pointed at."""
    name = column["name"]
    if column["kind"] == "up":
        return f"a config field of the upstream stage {name.split('.')[0]}"
    if column["kind"] != "metric":
        return "a config field"
    if name.endswith(data.SERIES_MIN):
        return f"the smallest value of the series {name[: -len(data.SERIES_MIN)]} (NaN if all are)"
    if f"{column['key']}{data.SERIES_MIN}" in keys:
        return f"the value at the last step of the series {name}"
    return "a metric"


def _facets(runs: Sequence[Mapping[str, Any]], keys: Iterable[str]) -> list[dict[str, Any]]:
    """Value counts of the config and upstream fields with 2 to MAX_FACET_VALUES values, and
    of the tags."""
    facets = []
    for key in sorted(k for k in keys if not k.startswith("metric:")):
        counts = Counter(cell_text(r["values"].get(key)) for r in runs)
        if 2 <= len(counts) <= MAX_FACET_VALUES:
            ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
            kind, _, name = key.partition(":")
            facets.append({"key": key, "kind": kind, "name": name, "values": ranked})
    tagged = Counter(t for r in runs for t in r["tags"])
    # A tag with several values is also offered by its name alone (any value).
    values_of = Counter(t.partition("=")[0] for t in tagged if "=" in t)
    names = Counter(
        t.partition("=")[0] for r in runs for t in r["tags"] if values_of[t.partition("=")[0]] > 1
    )
    tagged.update(names)
    if tagged:
        ranked = sorted(tagged.items(), key=lambda kv: (-kv[1], kv[0]))[:MAX_FACET_VALUES]
        facets.insert(0, {"key": "tag", "kind": "tag", "name": "tags", "values": ranked})
    return facets


def _sorted(runs: list[dict[str, Any]], sort: str, descending: bool) -> list[dict[str, Any]]:
    def value(run: dict[str, Any]) -> Any:
        if sort in TIME_SORTS:
            return run.get(sort)
        return run["values"].get(sort)

    present = [r for r in runs if value(r) is not None]
    missing = [r for r in runs if value(r) is None]
    present.sort(key=lambda r: sort_key(value(r)), reverse=descending)
    return present + missing


# -- the chart -------------------------------------------------------------------------------


def _log_worthy(runs: Sequence[Mapping[str, Any]], key: str) -> bool:
    numbers = [plot_number(r["values"].get(key))[0] for r in runs]
    finite = [n for n in numbers if n is not None]
    return bool(finite) and min(finite) > 0 and max(finite) / min(finite) >= LOG_SPAN


def chart_defaults(table: Mapping[str, Any]) -> dict[str, Any]:
    """The axes a stage's chart starts with: the varying config field with the most
    numeric values (else a varying upstream field, else any varying field) against the
    first metric; log scales where positive values span LOG_SPAN or more."""
    runs, columns = table["runs"], table["columns"]
    varying = [c for c in columns if c["varying"] and c["kind"] != "metric"]

    def preference(c: dict[str, Any]) -> tuple[Any, ...]:
        return (not c["numeric"], c["kind"] != "config", -c["distinct"], c["name"])

    x = min(varying, key=preference)["key"] if varying else None
    metrics = [c["key"] for c in columns if c["kind"] == "metric"]
    y = metrics[0] if metrics else None
    if x is None and columns:
        x = next((c["key"] for c in columns if c["kind"] != "metric"), None)
    return {
        "x": x,
        "y": y,
        "logx": x is not None and _log_worthy(runs, x),
        "logy": y is not None and _log_worthy(runs, y),
    }


def chart_data(table: Mapping[str, Any], url: Any) -> dict[str, Any]:
    """What the stage page's script draws: for each run its label, link and values of the
    varying columns and metrics (`chart_value`: non-finite numbers marked, not dropped),
    and the columns' names and kinds."""
    fields = [
        {"key": c["key"], "kind": c["kind"], "name": c["name"], "numeric": c["numeric"]}
        for c in table["varying"]
    ]
    fields.append({"key": "duration", "kind": "run", "name": "duration (s)", "numeric": True})
    keys = [f["key"] for f in fields[:-1]]
    runs = []
    for run in table["runs"]:
        values = {k: chart_value(run["values"][k]) for k in keys if k in run["values"]}
        if is_number(run.get("duration")):
            values["duration"] = chart_value(run["duration"])
        runs.append(
            {
                "rref": run["rref"],
                "label": run["label"],
                "url": url(run["rref"]),
                "collected": bool(run.get("collected")),
                "tags": run["tags"],
                "v": values,
            }
        )
    return {"fields": fields, "runs": runs}


# -- several runs side by side -----------------------------------------------------------------


def compare_runs(store: Store, texts: Sequence[str]) -> dict[str, Any]:
    """Runs side by side: their config fields, upstream fields, metrics and tags as rows
    (``{"key", "name", "cells": [text per run], "differs"}``, differing rows first), and
    their curves (``{series name: [{"rref", "label", **curve_line}]}``), each run's
    labelled by the fields in which the runs differ.

    Raises InvalidReferenceError for a malformed RRef or more than MAX_COMPARE runs;
    runs the catalogue has no record of are listed in ``unknown``.
    """
    wanted: list[str] = []
    for text in texts:
        rref = str(parse_rref(text))
        if rref not in wanted:
            wanted.append(rref)
    if len(wanted) > MAX_COMPARE:
        raise InvalidReferenceError(
            f"compare at most {MAX_COMPARE} runs at once ({len(wanted)} were selected)"
        )
    records = {r["rref"]: r for r in browse.runs_by_rref(store, wanted)}
    runs = [records[r] for r in wanted if r in records]
    rrefs = [r["rref"] for r in runs]
    metrics = data.run_metrics(store, rrefs)
    upstream = data.upstream_fields(store, rrefs)
    tags = data.run_tags(store, rrefs)
    series = data.run_series(store, rrefs)  # kept for collected runs too, until forget
    shorts = data.short_labels(store, rrefs)
    for run in runs:
        config = flatten(json.loads(run["config"]))
        config.pop("name", None)
        run["label"] = f"{run['name']} {shorts[run['rref']]}"
        run["config"] = config
        run["metrics"] = metrics.get(run["rref"], {})
        run["upstream"] = upstream.get(run["rref"], {})
        run["tags"] = tag_texts(tags.get(run["rref"], {}).get("tags", {}))
        run["notes"] = tags.get(run["rref"], {}).get("notes", [])
    names = sorted({r["name"] for r in runs})
    labels = _trace_labels(runs, several_stages=len(names) > 1)
    curves: dict[str, list[dict[str, Any]]] = {}
    for run in runs:
        for name, points in series.get(run["rref"], {}).items():
            line = curve_line(points)
            curves.setdefault(name, []).append(
                {"rref": run["rref"], "label": labels[run["rref"]], **line, "why": gap_text(line)}
            )
    return {
        "tags_differ": distinct(r["tags"] for r in runs) > 1,
        "runs": runs,
        "unknown": [r for r in wanted if r not in records],
        "stages": names,
        "config": _rows(runs, "config"),
        "upstream": _rows(runs, "upstream"),
        "metrics": _rows(runs, "metrics", keep_order=True),
        "curves": dict(sorted(curves.items())),
    }


def _trace_labels(runs: Sequence[Mapping[str, Any]], several_stages: bool) -> dict[str, str]:
    """A curve's label for each run: the config and upstream fields in which the runs
    differ (``lr=0.001 seed=1``; most distinct values first), the stage's name first if
    they are of several stages, the run's short name where that leaves two alike."""
    values = [{**r["config"], **{f"up:{k}": v for k, v in r["upstream"].items()}} for r in runs]
    missing = object()
    keys = sorted({k for v in values for k in v})
    counts = {k: distinct(v.get(k, missing) for v in values) for k in keys}
    fields = sorted((k for k in keys if counts[k] > 1), key=lambda k: (-counts[k], k))
    fields = fields[: data.MAX_LABEL_FIELDS]
    labels = {}
    for run, shown in zip(runs, values, strict=True):
        parts = [run["name"]] if several_stages else []
        parts += [
            f"{k.removeprefix('up:')}={short_value(shown[k]) if k in shown else '-'}"
            for k in fields
        ]
        labels[run["rref"]] = " ".join(parts)
    alike = Counter(labels.values())
    for run in runs:
        text = labels[run["rref"]]
        if not text or alike[text] > 1:
            labels[run["rref"]] = f"{text} ({run['label']})" if text else run["label"]
    return labels


def _rows(
    runs: Sequence[Mapping[str, Any]], part: str, keep_order: bool = False
) -> list[dict[str, Any]]:
    keys = sorted({k for r in runs for k in r[part]})
    missing = object()
    rows = []
    for key in keys:
        values = [r[part].get(key, missing) for r in runs]
        cells = [
            {
                "text": "" if v is missing else cell_text(v),
                "missing": v is missing,
                "nonfinite": is_number(v) and plot_number(v)[0] is None,
            }
            for v in values
        ]
        rows.append({"key": key, "cells": cells, "differs": distinct(values) > 1})
    if not keep_order:
        rows.sort(key=lambda r: not r["differs"])
    return rows
