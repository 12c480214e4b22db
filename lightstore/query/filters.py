"""Parsing the filters users type: config conditions (``lr<1e-3``) and times (``7d``, ``2024-05-01``).

Times are parsed by `lightstore.foundation.times.parse_time`, the one parser of every time-like input.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

from lightstore.catalogue import COMPARE_JSON_FUNCTION, name_condition
from lightstore.foundation.times import parse_time
from lightstore.query.errors import QueryError

__all__ = ["ConfigCondition", "json_path", "name_condition", "parse_condition", "parse_time"]

_FIELD = r"[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*"
_FIELD_RE = re.compile(_FIELD)
_CONDITION_RE = re.compile(rf"\s*({_FIELD})\s*(<=|>=|!=|==|=|<|>)\s*(.*?)\s*", re.DOTALL)
_OPERATORS = {"=": "=", "==": "=", "!=": "!=", "<": "<", "<=": "<=", ">": ">", ">=": ">="}


def json_path(field: str) -> str:
    """The SQLite JSON path of a config field: ``model.lr`` -> ``$."model"."lr"``.

    Raises QueryError for a field that is not dot-separated names.
    """
    if not isinstance(field, str) or not _FIELD_RE.fullmatch(field):
        raise QueryError(
            f"invalid config field {field!r}: use names of letters, digits, '_' and '-', "
            "separated by dots (e.g. lr or model.depth)"
        )
    return "$" + "".join(f'."{part}"' for part in field.split("."))


@dataclass(frozen=True)
class ConfigCondition:
    """``field op value`` on a derivation's config; `value` is JSON (else a string)."""

    field: str
    op: str
    value: Any

    @property
    def path(self) -> str:
        """The SQLite JSON path of the field."""
        return json_path(self.field)

    def sql(self, column: str = "config") -> tuple[str, list[Any]]:
        """A SQL condition on the JSON `column`, with its parameters.

        Numbers compare by value, exactly, integers of any size included.
        """
        value, path = self.value, self.path
        if isinstance(value, (dict, list)):
            return f"json_extract({column}, ?) {self.op} json(?)", [
                path,
                json.dumps(value, sort_keys=True, separators=(",", ":")),
            ]
        if value is None:  # missing, or JSON null
            neg = "NOT " if self.op == "!=" else ""
            return f"json_extract({column}, ?) IS {neg}NULL", [path]
        if _is_number(value) and abs(value) >= _EXACT_BOUND:
            # SQLite compares 64-bit integers and reals exactly, but reads a JSON integer
            # beyond 64 bits as the nearest REAL, which can only be equal to a value this
            # large: there the numbers of the config are compared in Python. Other kinds
            # (text, true/false) compare as below, against a stand-in of the same sign.
            bindable = isinstance(value, float) or -(2**63) <= value < 2**63
            stand_in = value if bindable else math.copysign(math.inf, value)
            return (
                f"CASE WHEN json_type({column}, ?) IN ('integer', 'real') "
                f"THEN {COMPARE_JSON_FUNCTION}(json_extract({column}, ?, ?), ?, ?) "
                f"ELSE json_extract({column}, ?) {self.op} ? END",
                [path, path, path, self.op, json.dumps(value), path, stand_in],
            )
        return f"json_extract({column}, ?) {self.op} ?", [path, value]


#: Numbers at least this large in magnitude (and -2**63 itself) may compare wrongly in SQLite.
_EXACT_BOUND = 2**63


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def parse_condition(text: str) -> ConfigCondition:
    """Parse ``lr<1e-3``, ``model.depth=4``, ``optimizer=adam``, ``flag=true``.

    The value is read as JSON when it parses (numbers, true/false/null, quoted
    strings, lists), else taken as a plain string. ``field=null`` matches a
    missing field too. Raises QueryError.
    """
    m = _CONDITION_RE.fullmatch(text)
    # An empty or operator-like value is a typo ('lr<', 'lr<<1'); '""' is the empty string.
    if not m or m.group(3)[:1] in ("", "<", ">", "=", "!"):
        raise QueryError(
            f"invalid config condition {text!r}: write FIELD OP VALUE with OP one of "
            "= != < <= > >=, e.g. 'lr<1e-3' or 'optimizer=adam'"
        )
    field, op, raw = m.groups()
    json_path(field)
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError):
        value = raw
    if value is None and op not in ("=", "==", "!="):
        raise QueryError(f"invalid config condition {text!r}: null only compares with = or !=")
    if isinstance(value, float) and math.isnan(value):
        raise QueryError(f"invalid config condition {text!r}: NaN is equal to nothing")
    return ConfigCondition(field, _OPERATORS[op], value)
