"""Values as the browser shows, sorts and plots them: flattened configs, cell text, which
numbers a chart can place, which columns vary, and the JSON the pages' scripts read.

Pure functions of plain data (no store, no Datasette), so the pages and the
tests share them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from typing import Any

from lightstore.foundation.refs import isdref, isrref

#: Text that stands for a non-finite metric value (how a catalogue may hand one back).
NON_FINITE_TEXT = {
    "nan": math.nan,
    "inf": math.inf,
    "+inf": math.inf,
    "-inf": -math.inf,
    "infinity": math.inf,
    "+infinity": math.inf,
    "-infinity": -math.inf,
}


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested config keys joined by dots (``{"model": {"depth": 4}}`` -> ``model.depth``); a
    key with a dot of its own is quoted as JSON (``{"model.depth": 4}`` -> ``"model.depth"``),
    so both stay columns of their own.

    Lists stay values (shown as JSON).
    """
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key_segment(key)}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def key_segment(key: str) -> str:
    """A config key as one part of a dotted name: as it is, or quoted as JSON if it holds
    a dot (or starts with a quote), which would read as more parts."""
    return json.dumps(key) if "." in key or key.startswith('"') else key


def cell_text(value: Any) -> str:
    """How a config or metric value is written in a table cell and in a facet link."""
    if value is None:
        return "null"
    if isinstance(value, str):
        return value
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    return json.dumps(value, sort_keys=True)


def metric_number(value: Any) -> Any:
    """A metric value as a Python number: non-finite values written as text (``"NaN"``,
    ``"inf"``) become floats; anything else is returned as it is."""
    if isinstance(value, str):
        return NON_FINITE_TEXT.get(value.strip().lower(), value)
    return value


def is_number(value: Any) -> bool:
    """Whether `value` is an int or float (not a bool)."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def finite_float(value: Any) -> float | None:
    """`value` as a finite float, or None if it is not a number or has no finite float."""
    return plot_number(value)[0]


def plot_number(value: Any) -> tuple[float | None, str | None]:
    """(`value` as a finite float, None), or (None, why a chart cannot place it): ``NaN``,
    ``inf``, ``-inf``, ``too large for a float``, ``missing`` or ``not a number``."""
    if value is None:
        return None, "missing"
    if not is_number(value):
        return None, "not a number"
    try:
        number = float(value)
    except OverflowError:  # an int beyond 1.8e308: configs take integers of any size
        return None, "too large for a float"
    if math.isnan(number):
        return None, "NaN"
    if math.isinf(number):
        return None, "inf" if number > 0 else "-inf"
    return number, None


def sort_key(value: Any) -> tuple[int, Any]:
    """Numbers (NaN last among them) before text before the rest."""
    if isinstance(value, bool):
        return (2, str(value))
    if is_number(value):
        if isinstance(value, float) and math.isnan(value):
            return (1, 0)
        return (0, value)
    if isinstance(value, str):
        return (2, value)
    return (3, json.dumps(value, sort_keys=True))


def chart_value(value: Any) -> Any:
    """A value for the pages' scripts (JSON without NaN): a finite number as a float,
    a number a chart cannot place as ``{"nf": reason}``, anything else as its cell text."""
    if is_number(value):
        number, why = plot_number(value)
        return number if number is not None else {"nf": why}
    return cell_text(value)


def distinct(values: Iterable[Any]) -> int:
    """How many different values (compared as their JSON text) `values` holds."""
    return len({json.dumps(v, sort_keys=True, default=str) for v in values})


def script_json(value: Any) -> str:
    """JSON for inside an HTML ``<script type="application/json">`` element: no NaN, and
    ``<``, ``>``, ``&`` and quotes escaped, so no value can close the element."""
    text = json.dumps(value, allow_nan=False, separators=(",", ":"))
    return (
        text.replace("<", "\\u003c")
        .replace(">", "\\u003e")
        .replace("&", "\\u0026")
        .replace("'", "\\u0027")
        .replace("\u2028", "\\u2028")
        .replace("\u2029", "\\u2029")
    )


def short_value(value: Any, limit: int = 24) -> str:
    """A value cut to `limit` characters, for labels; a reference as ``name:3fa2c9d1``."""
    if isinstance(value, str) and (isdref(value) or isrref(value)):
        body = value.split(":", 1)[1]
        return f"{body.rsplit('-', 1)[1]}:{body[:8]}"
    text = cell_text(value) if not isinstance(value, list | dict) else json.dumps(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def tag_texts(tags: Mapping[str, str]) -> list[str]:
    """Tags as the command line writes them, by name: ``baseline`` (no value) or
    ``status=diverged``."""
    return [f"{k}={v}" if v else k for k, v in sorted(tags.items())]


def has_tag(tags: Mapping[str, str], wanted: str) -> bool:
    """Whether `tags` (name -> value) hold `wanted`: ``NAME`` (with any value) or
    ``NAME=VALUE`` (that value), as ``lightstore history --tag`` reads it."""
    name, eq, value = wanted.partition("=")
    name = name.strip()
    return name in tags and (not eq or tags[name] == value)
