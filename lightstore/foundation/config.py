"""Configs: JSON-compatible dicts that define derivations.

A config is validated once (`mkconfig`), stored in canonical JSON (sorted keys,
fixed separators, no NaN), and scanned for the references it holds: DRefs of
dependencies, and ``[selfref, ...]`` promises of output paths.
"""

from __future__ import annotations

import copy
import json
import math
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from lightstore.foundation.errors import InvalidConfigError
from lightstore.foundation.refs import (
    DRef,
    Name,
    check_relpath,
    isdref,
    isrref,
    isselfpath,
    mkname,
    selfref,
)

DEFAULT_NAME = "unnamed"
#: The most digits an integer in a config may have (Python refuses to print
#: more than 4300 by default, and JSON readers lose precision long before).
MAX_INT_DIGITS = 4000
MAX_INT_BITS = int(MAX_INT_DIGITS * math.log2(10))
#: The deepest nesting of lists and dicts a config may have (well within Python's recursion limit).
MAX_CONFIG_DEPTH = 100


def _where(path: tuple[Any, ...]) -> str:
    # `path` is a linked list (parent, key), built cheaply on the way down.
    keys: list[Any] = []
    while path:
        path, key = path
        keys.append(key)
    return "config" + "".join(f"[{k!r}]" for k in reversed(keys))


class _Scan:
    """One pass over a config: validates, copies to plain types, and collects references."""

    def __init__(self) -> None:
        self.deps: set[str] = set()
        self.promises: list[tuple[str, ...]] = []
        self.depth = 0

    def string(self, value: str, path: tuple[Any, ...]) -> str:
        if value.startswith("rref:") and isrref(value):
            raise InvalidConfigError(
                f"{_where(path)}: configs may not contain realization references ({value!r}); "
                "refer to the derivation (DRef) instead and let the matcher choose"
            )
        if value.startswith("dref:") and isdref(value):
            self.deps.add(value)
        try:
            value.isascii() or value.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidConfigError(
                f"{_where(path)}: {value!r} is not valid Unicode (lone surrogate)"
            ) from None
        return value

    def value(self, value: Any, path: tuple[Any, ...]) -> Any:
        t = type(value)
        if t is str:
            return self.string(value, path)
        if t is int and value.bit_length() > MAX_INT_BITS:
            raise InvalidConfigError(
                f"{_where(path)}: an integer of more than {MAX_INT_DIGITS} digits is not allowed "
                "in configs; store it as a string"
            )
        if value is None or t is bool or t is int:
            return value
        if t is float:
            if not math.isfinite(value):
                raise InvalidConfigError(
                    f"{_where(path)}: {value!r} is not allowed in configs (JSON has no NaN/inf)"
                )
            return value
        if t is list or t is dict:
            self.depth += 1
            if self.depth > MAX_CONFIG_DEPTH:
                raise InvalidConfigError(
                    f"{_where(path)[:200]}: nested more than {MAX_CONFIG_DEPTH} lists/dicts deep; "
                    "flatten the config"
                )
            try:
                return self.container(value, path)
            finally:
                self.depth -= 1
        # Subclasses of the JSON types (DRef, Path, IntEnum...) become their base type.
        for base in (int, float, str):
            if isinstance(value, base):
                return self.value(base(value), path)
        hint = "; use a list" if isinstance(value, tuple) else ""
        raise InvalidConfigError(
            f"{_where(path)}: value of type {t.__name__} is not JSON-compatible{hint}. "
            "Configs hold str, int, float, bool, None, and lists/dicts of these"
        )

    def container(self, value: Any, path: tuple[Any, ...]) -> Any:
        if type(value) is list:
            out = [self.value(v, (path, i)) for i, v in enumerate(value)]
            if out and all(type(p) is str for p in out[1:]):
                if out[0] == selfref:
                    check_relpath(out[1:], f"{_where(path)} (a promised path)")
                    self.promises.append(tuple(out[1:]))
                elif isdref(out[0]) and len(out) > 1:
                    check_relpath(out[1:], f"{_where(path)} (a RefPath)")
            return out
        else:
            d = {}
            for k, v in value.items():
                if not isinstance(k, str):
                    raise InvalidConfigError(
                        f"{_where(path)}: key {k!r} is not a string; config keys must be str"
                    )
                d[self.string(str(k), path)] = self.value(v, (path, k))
            return d


@dataclass(frozen=True)
class Config:
    """A validated config. `val` is the plain dict (do not mutate it)."""

    val: dict[str, Any]

    @cached_property
    def name(self) -> Name:
        """The name its DRef carries: the `name` field as `mkname` reads it, else `unnamed`."""
        return mkname(self.val["name"]) if "name" in self.val else Name(DEFAULT_NAME)

    @cached_property
    def deps(self) -> tuple[DRef, ...]:
        """The DRefs the config mentions anywhere (its dependencies), sorted."""
        return mkconfig(self.val).deps

    @cached_property
    def promises(self) -> tuple[tuple[str, ...], ...]:
        """The relative paths promised by ``[selfref, ...]`` lists."""
        return mkconfig(self.val).promises


#: Set in the `__dict__` of a Config that `mkconfig` validated.
_VALID = "_validated"


def mkconfig(d: dict[str, Any] | Config) -> Config:
    """Validate a dict and return it as a `Config`.

    Raises InvalidConfigError naming the offending field for tuples, bytes,
    sets, NaN/inf, non-str keys, RRefs, other objects, an invalid `name`,
    paths that leave their folder, or nesting deeper than `MAX_CONFIG_DEPTH`.
    """
    if isinstance(d, Config):
        # Pylightnix code builds Config({...}) directly: validate it too. One this function
        # made is valid already (its `val` is not to be changed), as a stage passes it on.
        if _VALID not in d.__dict__:
            mkconfig(d.val)
            d.__dict__[_VALID] = True
        return d
    if not isinstance(d, dict):
        raise InvalidConfigError(f"a config must be a dict, not {type(d).__name__}")
    scan = _Scan()
    val = scan.value(d, ())
    name = mkname(val["name"]) if "name" in val else Name(DEFAULT_NAME)
    config = Config(val)
    # Fill the cached properties from this scan (cached_property stores in __dict__).
    config.__dict__["name"] = name
    config.__dict__["deps"] = tuple(DRef(x) for x in sorted(scan.deps))
    config.__dict__["promises"] = tuple(scan.promises)
    config.__dict__[_VALID] = True
    return config


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


def config_deps(c: Config) -> list[DRef]:
    """The DRefs a config mentions anywhere (its dependencies), sorted, unique."""
    return list(c.deps)


def config_promises(c: Config) -> list[list[str]]:
    """The relative paths a config promises, from every ``[selfref, ...]`` in it."""
    return [list(p) for p in c.promises]


def replace_selfrefs(value: Any, dref: DRef) -> Any:
    """A copy of `value` in which every ``[selfref, ...]`` reads ``[dref, ...]``."""
    if isinstance(value, list):
        if isselfpath(value):
            return [dref, *value[1:]]
        return [replace_selfrefs(v, dref) for v in value]
    if isinstance(value, dict):
        return {k: replace_selfrefs(v, dref) for k, v in value.items()}
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
    "replace_selfrefs",
    "selfref",
]
