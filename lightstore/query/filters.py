"""Parsing the filters users type: config conditions (``lr<1e-3``) and times (``7d``, ``2024-05-01``).

Times are parsed by `lightstore.times.parse_time`, the one parser of every time-like input.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from lightstore.query.errors import QueryError
from lightstore.times import parse_time

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

    def sql(self, column: str = "config") -> tuple[str, list[Any]]:
        """A SQL condition on the JSON `column`, with its parameters."""
        value = self.value
        if isinstance(value, (dict, list)):
            return f"json_extract({column}, ?) {self.op} json(?)", [
                json_path(self.field),
                json.dumps(value, sort_keys=True, separators=(",", ":")),
            ]
        if value is None:  # missing, or JSON null
            neg = "NOT " if self.op == "!=" else ""
            return f"json_extract({column}, ?) IS {neg}NULL", [json_path(self.field)]
        return f"json_extract({column}, ?) {self.op} ?", [json_path(self.field), value]


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
    return ConfigCondition(field, _OPERATORS[op], value)


def name_condition(name: str, column: str = "name") -> tuple[str, list[Any]]:
    """Equality on a derivation name, or GLOB when it has wildcards (``train*``)."""
    if any(c in name for c in "*?["):
        return f"{column} GLOB ?", [name]
    return f"{column} = ?", [name]
