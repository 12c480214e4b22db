"""Configs: JSON-compatible dicts that define derivations.

A config is validated once (`mkconfig`), stored in canonical JSON (sorted keys,
fixed separators, no NaN), and scanned for the references it holds: DRefs of
dependencies, and ``[selfref, ...]`` promises of output paths.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from lightstore.errors import InvalidConfigError
from lightstore.refs import DRef, Name, isdref, isrref, isselfpath, mkname, selfref

DEFAULT_NAME = "unnamed"


def _check_str(value: str, where: str) -> str:
    if isrref(value):
        raise InvalidConfigError(
            f"{where}: configs may not contain realization references ({value!r}); "
            "refer to the derivation (DRef) instead and let the matcher choose"
        )
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidConfigError(
            f"{where}: {value!r} is not valid Unicode (lone surrogate)"
        ) from None
    return value


def _check(value: Any, where: str) -> Any:
    """Return a deep copy of `value` made of plain JSON types, or raise."""
    t = type(value)
    if t is str:
        return _check_str(value, where)
    if value is None or t is bool or t is int:
        return value
    if t is float:
        if not math.isfinite(value):
            raise InvalidConfigError(
                f"{where}: {value!r} is not allowed in configs (JSON has no NaN/inf)"
            )
        return value
    if t is list:
        return [_check(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if t is dict:
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise InvalidConfigError(
                    f"{where}: key {k!r} is not a string; config keys must be str"
                )
            out[_check_str(str(k), f"{where} key")] = _check(v, f"{where}[{k!r}]")
        return out
    # Subclasses of the JSON types (DRef, Path, IntEnum...) become their base type.
    for base in (bool, int, float, str):
        if isinstance(value, base) and t is not base and base is not bool:
            return _check(base(value), where)
    hint = "; use a list" if isinstance(value, tuple) else ""
    raise InvalidConfigError(
        f"{where}: value of type {t.__name__} is not JSON-compatible{hint}. "
        "Configs hold str, int, float, bool, None, and lists/dicts of these"
    )


@dataclass(frozen=True)
class Config:
    """A validated config. `val` is the plain dict (do not mutate it)."""

    val: dict[str, Any]

    @property
    def name(self) -> Name:
        return Name(self.val.get("name", DEFAULT_NAME))


def mkconfig(d: dict[str, Any] | Config) -> Config:
    """Validate a dict and return it as a `Config`.

    Raises InvalidConfigError naming the offending field for tuples, bytes,
    sets, NaN/inf, non-str keys, RRefs, other objects, or an invalid `name`.
    """
    if isinstance(d, Config):
        # Pylightnix code builds Config({...}) directly: validate it too.
        _check(d.val, "config")
        if "name" in d.val:
            mkname(d.val["name"])
        return d
    if not isinstance(d, dict):
        raise InvalidConfigError(f"a config must be a dict, not {type(d).__name__}")
    val = _check(d, "config")
    if "name" in val:
        mkname(val["name"])
    return Config(val)


def cfgdict(c: Config | dict[str, Any]) -> dict[str, Any]:
    """A deep copy of the config's dict (Pylightnix name)."""
    return copy.deepcopy(c.val if isinstance(c, Config) else c)


def cfgname(c: Config) -> Name:
    """The config's name, `unnamed` if it sets none."""
    return c.name


def canonical_json(value: Any) -> str:
    """The canonical JSON text of a config or context: the input of hashing."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )


def _walk(value: Any) -> Iterator[Any]:
    yield value
    if isinstance(value, list):
        for v in value:
            yield from _walk(v)
    elif isinstance(value, dict):
        for v in value.values():
            yield from _walk(v)


def config_deps(c: Config) -> list[DRef]:
    """The DRefs a config mentions anywhere (its dependencies), sorted, unique."""
    return sorted({DRef(v) for v in _walk(c.val) if isinstance(v, str) and isdref(v)})


def config_promises(c: Config) -> list[list[str]]:
    """The relative paths a config promises, from every ``[selfref, ...]`` in it."""
    return [list(v[1:]) for v in _walk(c.val) if isselfpath(v)]


def resolve_selfrefs(value: Any, dref: DRef) -> Any:
    """A copy of `value` in which every ``[selfref, ...]`` reads ``[dref, ...]``."""
    if isinstance(value, list):
        if isselfpath(value):
            return [dref, *value[1:]]
        return [resolve_selfrefs(v, dref) for v in value]
    if isinstance(value, dict):
        return {k: resolve_selfrefs(v, dref) for k, v in value.items()}
    return value


__all__ = [
    "DEFAULT_NAME",
    "Config",
    "canonical_json",
    "cfgdict",
    "cfgname",
    "config_deps",
    "config_promises",
    "mkconfig",
    "resolve_selfrefs",
    "selfref",
]
