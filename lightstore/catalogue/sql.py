"""The SQL that lightstore adds to SQLite's, shared with the query layer: its SQL
function comparing JSON numbers exactly, and the condition on a derivation name."""

from __future__ import annotations

import json
import operator
import sqlite3
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from lightstore.foundation.errors import QueryError

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
    # Both are read as Decimals, which compare exactly as written (0.1 is not a binary 0.1).
    try:
        x = json.loads(pair, parse_float=Decimal, parse_int=Decimal)[0]
        v = json.loads(value, parse_float=Decimal, parse_int=Decimal)
    except (TypeError, ValueError, IndexError, KeyError, RecursionError):
        return None  # not JSON
    compare = _COMPARISONS.get(op)
    numbers = (int, float, Decimal)
    if compare is None or isinstance(x, bool) or not isinstance(x, numbers):
        return None
    if isinstance(v, bool) or not isinstance(v, numbers):
        return None
    return int(compare(x, v))  # Python compares ints and floats exactly


def register_functions(conn: sqlite3.Connection) -> None:
    """Add lightstore's SQL functions (`COMPARE_JSON_FUNCTION`) to a connection."""
    conn.create_function(COMPARE_JSON_FUNCTION, 3, _compare_json, deterministic=True)


def name_condition(name: str, column: str = "name") -> tuple[str, list[Any]]:
    """Equality on a derivation name, or GLOB when it has wildcards (``train*``).

    Raises QueryError for a name that is not UTF-8 text."""
    utf8_text(name, "the name")
    if any(c in name for c in "*?["):
        return f"{column} GLOB ?", [name]
    return f"{column} = ?", [name]


def utf8_text(text: str, what: str) -> str:
    """`text`, if it is UTF-8 text; else raise QueryError naming `what`. A command-line
    argument holding bytes that are not UTF-8 arrives with surrogates (``\\udcff``), which
    SQLite cannot be given."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        chunk = text[e.start : e.end]
        try:
            bad = chunk.encode("utf-8", "surrogateescape")  # the bytes the argument had
        except UnicodeEncodeError:
            bad = chunk.encode("utf-8", "surrogatepass")
        shown = text if len(text) <= 80 else text[:77] + "..."
        raise QueryError(
            f"{what} {shown!r} is not UTF-8 text (byte(s) {bad.hex(' ')} at {e.start}): "
            "names, conditions, selectors and SQL must be"
        ) from None
    return text
