"""The SQL that lightstore adds to SQLite's, shared with the query layer: its SQL
function comparing JSON numbers exactly, and the condition on a derivation name."""

from __future__ import annotations

import json
import operator
import sqlite3
from collections.abc import Callable
from typing import Any

#: The SQL function comparing a JSON number with a number exactly, whatever their sizes:
#: ``lightstore_compare_json(json_extract(doc, path, path), op, json_value)`` is 1 or 0 (NULL
#: when the field is not a number). SQLite reads JSON integers beyond 64 bits as the
#: nearest REAL, so its own comparison cannot tell 2**64 from 2**64 + 1.
COMPARE_JSON_FUNCTION = "lightstore_compare_json"
_COMPARISONS: dict[str, Callable[[Any, Any], bool]] = {
    "=": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}


def _compare_json(pair: Any, op: Any, value: Any) -> int | None:
    # `pair` is json_extract with the path given twice: JSON text '[x,x]' that keeps x's digits.
    try:
        x, v = json.loads(pair)[0], json.loads(value)
    except (TypeError, ValueError, IndexError, KeyError, RecursionError):
        return None  # not JSON, or an integer longer than Python parses
    compare = _COMPARISONS.get(op)
    numbers = (int, float)
    if compare is None or isinstance(x, bool) or not isinstance(x, numbers):
        return None
    if isinstance(v, bool) or not isinstance(v, numbers):
        return None
    return int(compare(x, v))  # Python compares ints and floats exactly


def register_functions(conn: sqlite3.Connection) -> None:
    """Add lightstore's SQL functions (`COMPARE_JSON_FUNCTION`) to a connection."""
    conn.create_function(COMPARE_JSON_FUNCTION, 3, _compare_json, deterministic=True)


def name_condition(name: str, column: str = "name") -> tuple[str, list[Any]]:
    """Equality on a derivation name, or GLOB when it has wildcards (``train*``)."""
    if any(c in name for c in "*?["):
        return f"{column} GLOB ?", [name]
    return f"{column} = ?", [name]
