"""Parsing the filters users type: config conditions (``lr<1e-3``) and times (``7d``, ``2024-05-01``).

Times are parsed by `lightstore.foundation.times.parse_time`, the one parser of every time-like input.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from lightstore.catalogue import COMPARE_JSON_FUNCTION, name_condition, utf8_text
from lightstore.foundation.times import parse_time
from lightstore.query.errors import QueryError

__all__ = [
    "ConfigCondition",
    "condition_json",
    "json_path",
    "name_condition",
    "parse_condition",
    "parse_time",
    "utf8_text",
]

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
    """``field op value`` on a derivation's config; `value` is JSON (else a string), a number
    that is not an integer being a `Decimal` with the digits as written (a float given is
    made the Decimal of its shortest text). Raises QueryError for a float that is not
    finite."""

    field: str
    op: str
    value: Any

    def __post_init__(self) -> None:
        # A float means the number its shortest text says (0.1, not the binary 0.1000...055).
        if isinstance(self.value, float):
            if not math.isfinite(self.value):
                raise QueryError(
                    f"invalid config condition on {self.field}: {self.value} is not a finite "
                    "number (configs hold none)"
                )
            object.__setattr__(self, "value", Decimal(repr(self.value)))

    @property
    def path(self) -> str:
        """The SQLite JSON path of the field."""
        return json_path(self.field)

    def sql(self, column: str = "config") -> tuple[str, list[Any]]:
        """A SQL condition on the JSON `column`, with its parameters.

        Numbers compare by value, exactly, whatever their size or digits.
        """
        value, path = self.value, self.path
        if isinstance(value, (dict, list)):
            return f"json_extract({column}, ?) {self.op} json(?)", [path, condition_json(value)]
        if value is None:  # missing, or JSON null
            neg = "NOT " if self.op == "!=" else ""
            return f"json_extract({column}, ?) IS {neg}NULL", [path]
        if _is_number(value):
            # SQLite reads a config's number as a 64-bit integer or the nearest REAL, and
            # rounding can make different numbers equal (2**64 + 1 and 2**64, 0.1 and
            # 0.1000000000000000001), never reverse their order. So both sides are rounded
            # to REALs: where those differ, their order is the numbers'; where they are
            # equal, the digits are: the same text, or else compared in Python. Other kinds
            # (text; true and false, 1 and 0 to SQLite) compare against a stand-in.
            nearest = _nearest_float(value)
            real = f"CAST(json_extract({column}, ?) AS REAL)"
            text = condition_json(value)
            same = 1 if self.op in ("=", "<=", ">=") else 0  # when the digits are the same
            return (
                f"CASE WHEN json_type({column}, ?) IN ('integer', 'real') "
                f"THEN CASE WHEN {real} <> ? THEN {real} {self.op} ? "
                f"WHEN json_extract({column}, ?, ?) = ? THEN {same} "
                f"ELSE {COMPARE_JSON_FUNCTION}(json_extract({column}, ?, ?), ?, ?) END "
                f"ELSE json_extract({column}, ?) {self.op} ? END",
                [
                    path,
                    path,
                    nearest,
                    path,
                    nearest,
                    path,
                    path,
                    f"[{text},{text}]",
                    path,
                    path,
                    self.op,
                    text,
                    path,
                    _stand_in(value, nearest),
                ],
            )
        return f"json_extract({column}, ?) {self.op} ?", [path, value]

    def holds(self, config: Any) -> bool:
        """Whether a config (a parsed JSON object) satisfies the condition, exactly as
        `sql` decides it in SQLite: for the runs of a remote cache, whose configs are in
        no catalogue."""
        found, value = _at_path(config, self.field.split("."))
        target = self.value
        if target is None:
            missing = not found or value is None
            return missing if self.op == "=" else not missing
        if not found or value is None:
            return False  # NULL compares with nothing
        if isinstance(target, (dict, list)):
            return _sql_compare(_sql_value(value), self.op, condition_json(target))
        if _is_number(target):
            if _is_number(value):
                return _COMPARE[self.op](
                    Decimal(repr(value)) if isinstance(value, float) else value, target
                )
            return _sql_compare(
                _sql_value(value), self.op, _stand_in(target, _nearest_float(target))
            )
        return _sql_compare(
            _sql_value(value), self.op, int(target) if isinstance(target, bool) else target
        )


_COMPARE: dict[str, Any] = {
    "=": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
}


def _at_path(config: Any, parts: list[str]) -> tuple[bool, Any]:
    """(found, value) of a dotted field in a config, as SQLite's json_extract finds it."""
    for part in parts:
        if not isinstance(config, dict) or part not in config:
            return False, None
        config = config[part]
    return True, config


def _sql_value(value: Any) -> Any:
    """A JSON value as json_extract gives it to SQL: true and false as 1 and 0, lists and
    dicts as their JSON text."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return value


def _sql_compare(a: Any, op: str, b: Any) -> bool:
    """`a op b` as SQLite compares an INTEGER/REAL or TEXT with another: any number is less
    than any text; text compares by its UTF-8 bytes (code points)."""
    rank_a, rank_b = isinstance(a, str), isinstance(b, str)
    if rank_a != rank_b:
        return _COMPARE[op](int(rank_a), int(rank_b))
    if not rank_a:
        a = Decimal(repr(a)) if isinstance(a, float) else a
        b = Decimal(repr(b)) if isinstance(b, float) else b
    return bool(_COMPARE[op](a, b))


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, Decimal)) and not isinstance(value, bool)


def _nearest_float(value: int | float | Decimal) -> float:
    """The REAL nearest to `value` (infinite beyond the largest)."""
    try:
        return float(value)
    except OverflowError:  # an int beyond the float range
        return math.inf if value > 0 else -math.inf


def _stand_in(value: int | Decimal, nearest: float) -> float:
    """A REAL that compares with 0 and 1 (JSON false and true) as `value` does: the nearest
    one, unless `value` was rounded onto 0 or 1; then the next REAL towards `value`."""
    if nearest in (0.0, 1.0) and Decimal(nearest) != value:
        return math.nextafter(nearest, math.inf if value > nearest else -math.inf)
    return nearest


def condition_json(value: Any) -> str:
    """A condition's value as JSON text; a number with its digits as written."""
    if isinstance(value, Decimal):  # only ever alone: parse_condition reads lists with floats
        return str(value)
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


#: Integers of more digits than this stay Decimals (Python refuses to read longer ones).
_MAX_INT_DIGITS = 4000


def _int(text: str) -> int | Decimal:
    return int(text) if len(text) <= _MAX_INT_DIGITS else Decimal(text)


def _not_finite(text: str) -> Any:
    raise _NotFinite(text)


class _NotFinite(ValueError):
    pass


def parse_condition(text: str) -> ConfigCondition:
    """Parse ``lr<1e-3``, ``model.depth=4``, ``optimizer=adam``, ``flag=true``.

    The value is read as JSON when it parses (numbers, true/false/null, quoted
    strings, lists), else taken as a plain string. A number that is not an
    integer is kept exactly as written (a `Decimal`: ``1e-400`` is not 0).
    ``field=null`` matches a missing field too. Raises QueryError, also for
    ``NaN`` and ``Infinity`` (write ``"Infinity"`` for that text).
    """
    m = _CONDITION_RE.fullmatch(utf8_text(text, "the condition"))
    # An empty or operator-like value is a typo ('lr<', 'lr<<1'); '""' is the empty string.
    if not m or m.group(3)[:1] in ("", "<", ">", "=", "!"):
        raise QueryError(
            f"invalid config condition {text!r}: write FIELD OP VALUE with OP one of "
            "= != < <= > >=, e.g. 'lr<1e-3' or 'optimizer=adam'"
        )
    field, op, raw = m.groups()
    json_path(field)
    try:
        value = json.loads(raw, parse_int=_int, parse_constant=_not_finite)
        if isinstance(value, float):  # a number alone: keep its digits
            value = json.loads(raw, parse_float=Decimal, parse_int=_int)
    except _NotFinite as e:
        raise QueryError(
            f"invalid config condition {text!r}: {e} is not a finite number (configs hold "
            f'none); for the text, quote it: {field}{op}"{e}"'
        ) from None
    except (ValueError, RecursionError):
        value = raw
    if isinstance(value, (list, dict)):
        try:
            json.dumps(value, allow_nan=False)
        except ValueError:  # 1e400 inside: a float, infinite
            raise QueryError(
                f"invalid config condition {text!r}: a number in it is beyond the float range "
                "(configs hold none)"
            ) from None
    if value is None and op not in ("=", "==", "!="):
        raise QueryError(f"invalid config condition {text!r}: null only compares with = or !=")
    return ConfigCondition(field, _OPERATORS[op], value)


#: The SQL function giving numbers a text key that orders exactly, whatever their digits:
#: ``lightstore_number_key(json_extract(doc, path, path))`` (NULL when not a number).
NUMBER_KEY_FUNCTION = "lightstore_number_key"


def number_key(pair: Any) -> str | None:
    """A text whose order is that of the number in JSON text `pair` (``'[x,x]'``, which
    keeps x's digits), exactly; None if x is not a number."""
    try:
        x = json.loads(pair, parse_float=Decimal, parse_int=Decimal)[0]
    except (TypeError, ValueError, IndexError, KeyError, RecursionError):
        return None
    if not isinstance(x, Decimal) or not x.is_finite():
        return None
    if x.is_zero():
        return "1"
    sign, digits, _ = x.as_tuple()
    text = "".join(map(str, digits)).rstrip("0")
    exponent = x.adjusted() + _EXPONENT_OFFSET  # the place of the first digit
    if not sign:  # larger exponent, then larger digits: larger
        return f"2{exponent:0{_EXPONENT_WIDTH}d}{text}"
    # Negative: all reversed; '~' (after every digit) makes a shorter run of digits larger.
    flipped = text.translate(_NINES)
    return f"0{_EXPONENT_SPAN - exponent:0{_EXPONENT_WIDTH}d}{flipped}~"


_EXPONENT_OFFSET = 10**18
_EXPONENT_SPAN = 10**19 - 1
_EXPONENT_WIDTH = 19
_NINES = str.maketrans("0123456789", "9876543210")


def register_query_functions(conn: Any) -> None:
    """Add the query layer's SQL functions (`NUMBER_KEY_FUNCTION`) to a connection."""
    conn.create_function(NUMBER_KEY_FUNCTION, 1, number_key, deterministic=True)
