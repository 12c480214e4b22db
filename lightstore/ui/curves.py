"""Curves read from a run's artifacts, until the catalogue records metric series.

A file at the top of a realization whose name holds ``curve`` and ends in
``.json`` or ``.csv`` is read as one or more series:

- JSON: a list of numbers (one series named after the file), a list of
  ``[step, value]`` pairs, or an object mapping names to such lists;
- CSV: a header row and numeric columns; a column named ``step``, ``epoch``
  or ``iteration`` gives the steps, every other numeric column is a series.

Values that are not finite (``NaN``, ``Infinity``) are kept as None (a gap in
the line). Small files only, a few per run: a page never reads much.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
from typing import Any

from lightstore.ui.fields import metric_number, plot_number

#: Largest curve file read, in bytes; most curve files read per run; most points per series.
MAX_CURVE_BYTES = 2 * 1024 * 1024
MAX_CURVE_FILES = 4
MAX_POINTS = 5000
CURVE_NAME = re.compile(r"(?i)^[^/]*curve[^/]*\.(json|csv)$")
STEP_COLUMNS = ("step", "epoch", "iteration", "iter")

Series = dict[str, list[tuple[float, float | None]]]


def artifact_series(folder: str) -> Series:
    """The series of the curve files at the top of `folder` ({} if none, or unreadable)."""
    try:
        names = sorted(e.name for e in os.scandir(folder) if CURVE_NAME.match(e.name))
    except OSError:
        return {}
    found: Series = {}
    for name in names[:MAX_CURVE_FILES]:
        path = os.path.join(folder, name)
        try:
            if os.path.islink(path) or os.path.getsize(path) > MAX_CURVE_BYTES:
                continue
            with open(path, "rb") as f:
                text = f.read().decode("utf-8", errors="replace")
        except OSError:
            continue
        stem = os.path.splitext(name)[0]
        parsed = _csv_series(text) if name.lower().endswith(".csv") else _json_series(text)
        for key, points in parsed.items():
            found[stem if key is None else f"{stem}/{key}" if len(parsed) > 1 else key] = points
    return found


def _points(values: Any) -> list[tuple[float, float | None]] | None:
    """A list of numbers or of [step, value] pairs as points, or None if it is neither."""
    if not isinstance(values, list) or not values:
        return None
    points: list[tuple[float, float | None]] = []
    for i, item in enumerate(values):
        if isinstance(item, list) and len(item) == 2:
            step, value = plot_number(item[0])[0], item[1]
            if step is None:
                return None
        else:
            step, value = float(i), item
        number, why = plot_number(metric_number(value))
        if number is None and why in ("missing", "not a number"):
            return None
        points.append((step, number))
    return _thin(points)


def _json_series(text: str) -> dict[str | None, list[tuple[float, float | None]]]:
    try:
        doc = json.loads(text)  # Python's json reads NaN and Infinity
    except (ValueError, RecursionError):
        return {}
    whole = _points(doc)
    if whole is not None:
        return {None: whole}
    if isinstance(doc, dict):
        out: dict[str | None, list[tuple[float, float | None]]] = {}
        for key, values in doc.items():
            points = _points(values)
            if points is not None:
                out[str(key)] = points
        return out
    return {}


def _csv_series(text: str) -> dict[str | None, list[tuple[float, float | None]]]:
    try:
        rows = list(csv.reader(io.StringIO(text)))
    except csv.Error:
        return {}
    if len(rows) < 2:
        return {}
    header = [h.strip() for h in rows[0]]
    step_col = next((i for i, h in enumerate(header) if h.lower() in STEP_COLUMNS), None)
    out: dict[str | None, list[tuple[float, float | None]]] = {}
    for col, name in enumerate(header):
        if col == step_col or not name:
            continue
        points: list[tuple[float, float | None]] = []
        for i, row in enumerate(rows[1:]):
            cell = row[col].strip() if col < len(row) else ""
            step = (
                float(i)
                if step_col is None
                else _float(row[step_col] if step_col < len(row) else "")
            )
            value = _float(cell)
            if step is None or (
                value is None
                and cell.lower() not in ("nan", "inf", "-inf", "infinity", "-infinity")
            ):
                points = []
                break
            points.append((step, value))
        if points:
            out[name] = _thin(points)
    return out


def _float(text: str) -> float | None:
    try:
        return plot_number(float(text.strip()))[0]
    except ValueError:
        return None


def _thin(points: list[tuple[float, float | None]]) -> list[tuple[float, float | None]]:
    """At most MAX_POINTS points, evenly picked, the last one kept."""
    if len(points) <= MAX_POINTS:
        return points
    stride = len(points) / MAX_POINTS
    picked = [points[int(i * stride)] for i in range(MAX_POINTS - 1)]
    return [*picked, points[-1]]
