"""Pylightnix's matchers and keys: the engine's matchers, with keys that take `S`.

A key is ``key(S, rref) -> sortable | None`` (higher is better; None
excludes); Pylightnix code gets its storage settings there, as in
Pylightnix, while the engine hands its matchers the store.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from lightstore.compat.current import store_of
from lightstore.compat.registry import as_matcher
from lightstore.engine import matchers as _engine
from lightstore.engine.matchers import match_all, match_exact, match_latest, match_only
from lightstore.engine.registry import Matcher, engine_typed
from lightstore.foundation.refs import RRef, unrref
from lightstore.store import LocalStore

__all__ = [
    "Key",
    "exact",
    "latest",
    "match",
    "match_all",
    "match_exact",
    "match_latest",
    "match_only",
    "match_some",
    "texthash",
]

#: ``(S, rref) -> sortable | None``: a score for `match` (higher is better; None excludes).
Key = Callable[[Any, RRef], Any]


def as_key(key: Key) -> _engine.Key:
    """An engine key (given the store) calling a Pylightnix one (given `S`)."""

    def engine_key(store: Any, rref: RRef) -> Any:
        return key(store.settings if isinstance(store, LocalStore) else store, rref)

    return engine_key


def match_some(n: int = 1, key: Key | None = None) -> Matcher:
    """The `n` best realizations by `key` (any `n`, in a stable order, without a key)."""
    return _engine.match_some(n, None if key is None else as_key(key))


def texthash() -> Key:
    """A key ordering realizations by their hash text."""
    return lambda S, rref: str(unrref(rref)[0])


def latest() -> Key:
    """A key ordering realizations by build time (from the catalogue)."""

    def _key(S: Any, rref: RRef) -> float:
        return store_of(S).catalogue.build_times([rref]).get(rref, 0.0)

    return _key


def exact(expected: list[RRef]) -> Key:
    """A key accepting only the given realizations."""
    chosen = set(expected)
    return lambda S, rref: 1 if rref in chosen else None


def match(
    key: Key,
    trim: Callable[[list[RRef]], list[RRef] | None],
    mnext: Any = None,
) -> Matcher:
    """A matcher ordering realizations by `key` (best first), cut by `trim`, then passed to `mnext`."""
    first = _engine.match(as_key(key), trim)
    if mnext is None:
        return first
    then = as_matcher(mnext)

    def matcher(store: Any, rrefs: list[RRef]) -> list[RRef] | None:
        res = first(store, rrefs)
        return then(store, res) if res else None

    return engine_typed(matcher)
