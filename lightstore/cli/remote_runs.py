"""The table of `lightstore remote-ls` when it reads manifests: the runs of a remote with
config fields and metrics as columns, as `lightstore history` shows a store's."""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from typing import Any

from lightstore.cli.output import MACHINE_FORMATS, emit_rows, human_duration, human_time
from lightstore.foundation.refs import isdref
from lightstore.query.among import field_value, metric_value, sort_runs, time_value
from lightstore.query.graph import flatten
from lightstore.query.rows import cell_text
from lightstore.remote.runs import RemoteRun

_COLUMNS = ["name", "rref", "dref", "context", "started", "stopped", "duration"]


def varying_fields(runs: Sequence[RemoteRun]) -> list[str]:
    """The config fields whose values differ among `runs` (references to other stages
    and the name left out), sorted."""
    flats = [flatten(r.config or {}) for r in runs]
    missing = object()
    out = []
    for field in sorted({k for f in flats for k in f} - {"name"}):
        values = [f.get(field, missing) for f in flats]
        if any(isinstance(v, str) and isdref(v) for v in values):
            continue
        texts = {json.dumps(v, sort_keys=True, default=str) for v in values}
        if len(texts) > 1:
            out.append(field)
    return out


def _unique(names: Sequence[str], taken: Sequence[str], prefix: str) -> list[str]:
    out: list[str] = []
    for n in names:
        key = n if n not in taken and n not in out else f"{prefix}{n}"
        out.append(key)
    return out


def emit_runs(
    runs: Sequence[RemoteRun],
    fields: Sequence[str],
    varying: bool,
    metrics: Sequence[str],
    sort: str | None,
    limit: int | None,
    fmt: str,
) -> None:
    """Print `runs` (sorted by `sort`, the first `limit`) with `fields` (and the varying
    ones) and `metrics` (``'*'``: every one the runs have) as columns."""
    if "*" in metrics:
        every = sorted({m for r in runs for m in (*r.metrics, *r.series)})
        metrics = [m for m in metrics if m != "*"] + [m for m in every if m not in metrics]
    ordered = sort_runs(runs, sort, metrics) if sort else list(runs)
    if limit is not None:
        ordered = ordered[:limit]
    fields = list(dict.fromkeys(fields))
    if varying:
        fields += [f for f in varying_fields(ordered) if f not in fields]
    fkeys = _unique(fields, _COLUMNS, "config.")
    mkeys = _unique(list(dict.fromkeys(metrics)), [*_COLUMNS, *fkeys], "metric.")
    rows: list[dict[str, Any]] = []
    for r in ordered:
        row: dict[str, Any] = {
            "name": r.name,
            "rref": r.rref,
            "dref": r.dref,
            "context": r.context_hash,
            "started": r.build_started,
            "stopped": r.build_stopped,
            "duration": time_value(r, "duration"),
        }
        for f, key in zip(fields, fkeys, strict=True):
            row[key] = field_value(r, f)
        for m, key in zip(dict.fromkeys(metrics), mkeys, strict=True):
            row[key] = metric_value(r, m)
        rows.append(row)
    keys = [*fkeys, *mkeys]
    if fmt in MACHINE_FORMATS:
        emit_rows(rows, [*_COLUMNS, *keys], fmt)
        return
    display: dict[str, Any] = {
        "stopped": human_time,
        "duration": human_duration,
    }
    display.update({k: functools.partial(cell_text) for k in keys})
    emit_rows(rows, ["name", "rref", "stopped", "duration", *keys], fmt, display)
