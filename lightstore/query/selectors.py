"""Selectors: references to runs by name, config and age (``train@latest``, ``train[lr=0.01]``).

Grammar (whitespace around the pieces is ignored)::

    SELECTOR := BASE PART*
    BASE     := a derivation name or glob ('train', 'eval*'), a pin naming a
                derivation, a DRef or a hash prefix of one
    PART     := '[' COND (',' COND)* ']'      config conditions, ANDed
              | '@' COND                      one config condition (shell-safe)
              | '@latest'                     the newest realization of what matched
              | '@all'                        every realization of what matched
    COND     := FIELD OP VALUE, as `lightstore ls --config`: FIELD is dotted
                ('model.depth'), OP one of = != < <= > >=, VALUE is JSON when
                it parses (0.01, 4, true, null, "quoted text", [1,2]) else text

``@latest`` and ``@all`` end a selector. Without them a selector designates
the derivations that match; with them, realizations (runs). ``@`` is not
special to any common shell, so ``train@lr=0.01@latest`` needs no quotes;
``[ ]`` are glob characters (zsh refuses an unmatched glob) and ``< >`` are
redirections, so quote those forms: ``'train[lr<1e-3]@all'``. A value with
``@ , [ ]`` in it is written as a JSON string: ``train@tag="a@b"``.

Numbers compare as numbers, exactly, integers of any size included
(``lr=0.01`` and ``lr=1e-2`` are the same condition, and match a config
holding 0.01; ``n=18446744073709551617`` matches that integer, not 2**64);
to match the text "1" write ``seed="1"``. ``field=null`` also matches a
missing field.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from lightstore.foundation.errors import InvalidSelectorError, QueryError
from lightstore.query.filters import ConfigCondition, condition_json, parse_condition

Pick = Literal["latest", "all"]
PICKS: tuple[Pick, ...] = ("latest", "all")
_OPEN, _CLOSE = "[", "]"
#: Limits that keep the SQL a selector becomes well inside SQLite's own limits.
MAX_CONDITIONS = 64
MAX_SELECTOR_LENGTH = 4096


@dataclass(frozen=True)
class Selector:
    """A parsed selector: a base, config conditions, and an optional pick of runs."""

    base: str
    conditions: tuple[ConfigCondition, ...] = ()
    pick: Pick | None = None

    def __str__(self) -> str:
        out = self.base
        if self.conditions:
            out += "[" + ",".join(format_condition(c) for c in self.conditions) + "]"
        if self.pick:
            out += "@" + self.pick
        return out


def format_condition(c: ConfigCondition) -> str:
    """A condition as text that `parse_condition` reads back to the same condition."""
    return f"{c.field}{c.op}{condition_json(c.value)}"


def is_selector(text: str) -> bool:
    """Whether `text` uses selector syntax (``@`` or ``[``), as opposed to a plain reference."""
    return "@" in text or _OPEN in text


def _error(text: str, why: str) -> InvalidSelectorError:
    return InvalidSelectorError(
        f"invalid selector {text!r}: {why}. Write NAME@latest, NAME@all, NAME[FIELD=VALUE,...] "
        "or NAME@FIELD=VALUE (see `lightstore --help`)",
        text,
    )


def _split(text: str) -> list[tuple[str, str]]:
    """Split into (kind, body) pieces: ('base', ...), ('@', ...), ('[', ...).

    Separators inside JSON strings and nested brackets (list values) do not count.
    """
    pieces: list[tuple[str, str]] = []
    kind, buf = "base", ""
    depth = 0
    quoted = escaped = False
    for ch in text:
        if quoted:
            buf += ch
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                quoted = False
            continue
        if ch == '"':
            quoted = True
            buf += ch
        elif kind == "[" and ch == _OPEN:
            depth += 1
            buf += ch
        elif kind == "[" and ch == _CLOSE:
            if depth:
                depth -= 1
                buf += ch
            else:
                pieces.append((kind, buf))
                kind, buf = "after]", ""
        elif kind != "[" and ch in "@" + _OPEN:
            if kind != "after]":
                pieces.append((kind, buf))
            elif buf.strip():
                raise _error(text, f"unexpected {buf.strip()!r} after ']'")
            kind, buf = ("@" if ch == "@" else "["), ""
        elif kind != "[" and ch == _CLOSE:
            raise _error(text, "']' without '['")
        else:
            buf += ch
    if quoted:
        raise _error(text, "a quoted value is not closed")
    if kind == "[":
        raise _error(text, "'[' is not closed")
    if kind == "after]":
        if buf.strip():
            raise _error(text, f"unexpected {buf.strip()!r} after ']'")
    else:
        pieces.append((kind, buf))
    return pieces


def _split_conditions(body: str) -> list[str]:
    """Split a bracket's body on commas outside JSON strings and nested brackets."""
    out, buf, depth, quoted, escaped = [], "", 0, False, False
    for ch in body:
        if quoted:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                quoted = False
            buf += ch
            continue
        if ch == '"':
            quoted = True
        elif ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        elif ch == "," and depth == 0:
            out.append(buf)
            buf = ""
            continue
        buf += ch
    out.append(buf)
    return out


def _condition(text: str, body: str) -> ConfigCondition:
    try:
        return parse_condition(body)
    except QueryError as e:
        raise _error(text, str(e)) from None


def parse_selector(text: str) -> Selector:
    """Parse selector `text` (see the module docstring). Raises InvalidSelectorError."""
    if len(text) > MAX_SELECTOR_LENGTH:
        raise _error(text[:40] + "...", f"it is longer than {MAX_SELECTOR_LENGTH} characters")
    pieces = _split(text)
    base = pieces[0][1].strip()
    if not base:
        raise _error(text, "it has no name before '@' or '['")
    conditions: list[ConfigCondition] = []
    pick: Pick | None = None
    for kind, body in pieces[1:]:
        if pick is not None:
            raise _error(text, f"@{pick} must come last")
        word = body.strip()
        if kind == "@" and word in PICKS:
            pick = "latest" if word == "latest" else "all"
        elif kind == "@":
            if not word:
                raise _error(text, "nothing after '@'")
            if word.isidentifier() and word not in PICKS:
                raise _error(text, f"unknown selector @{word} (known: @latest, @all)")
            conditions.append(_condition(text, word))
        else:
            if not word:
                raise _error(text, "empty '[]'")
            conditions += [_condition(text, c) for c in _split_conditions(body)]
    if len(conditions) > MAX_CONDITIONS:
        raise _error(text, f"more than {MAX_CONDITIONS} conditions")
    return Selector(base, tuple(conditions), pick)
