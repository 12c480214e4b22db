"""Matchers: which existing realizations of a derivation to use.

A matcher receives the realizations of a derivation that exist in the current
context and returns the ones to use, or None to ask for a build. The
matchers here take the store as their first argument, as the engine calls
them; they also accept anything that names a store in its place (a root),
so code of the compatibility layer may call them with what it holds.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, overload

from lightstore.catalogue.catalogue import ByBuildTime
from lightstore.engine.registry import Matcher, engine_typed, store_of
from lightstore.foundation.errors import InvalidConfigError, MatcherError
from lightstore.foundation.refs import RRef, parse_rref, rref2dref

#: ``(store, rref) -> sortable | None``: a score, higher is better; None excludes.
Key = Callable[[Any, RRef], Any]


def match(key: Key, trim: Callable[[list[RRef]], list[RRef] | None]) -> Matcher:
    """A matcher that orders realizations by `key` (best first) and lets `trim` pick."""

    def matcher(store: Any, rrefs: list[RRef]) -> list[RRef] | None:
        scored = [(k, r) for r in rrefs if (k := key(store, r)) is not None]
        scored.sort(key=lambda kr: (kr[0], kr[1]), reverse=True)
        return trim([r for _, r in scored])

    return engine_typed(matcher)


@engine_typed
def _match_all(store: Any, rrefs: list[RRef]) -> list[RRef] | None:
    return list(rrefs) if rrefs else None


_NOT_GIVEN: Any = object()


@overload
def match_all() -> Matcher: ...
@overload
def match_all(store: Any, rrefs: list[RRef]) -> list[RRef] | None: ...
def match_all(store: Any = _NOT_GIVEN, rrefs: Any = _NOT_GIVEN) -> Any:
    """Use every realization; build if there is none.

    Both spellings work: ``match_all`` is a matcher, and ``match_all()``
    returns one, like every other matcher constructor. Raises TypeError when
    given one argument.
    """
    if store is _NOT_GIVEN and rrefs is _NOT_GIVEN:
        return _match_all
    if rrefs is _NOT_GIVEN:
        raise TypeError("match_all takes no argument (or, as a matcher, a store and rrefs)")
    return _match_all(store, rrefs)


engine_typed(match_all)


def match_only() -> Matcher:
    """Exactly one realization; raises MatcherError if several exist."""

    def matcher(store: Any, rrefs: list[RRef]) -> list[RRef] | None:
        if not rrefs:
            return None
        if len(rrefs) > 1:
            raise MatcherError(
                f"match_only() found {len(rrefs)} realizations of {rref2dref(rrefs[0])} in this context; "
                "use match_latest()/match_some() to choose, or remove the extra ones with rmref",
                rref2dref(rrefs[0]),
            )
        return [rrefs[0]]

    return engine_typed(matcher)


def _positive(n: int, what: str) -> int:
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise InvalidConfigError(f"{what} expects a positive integer, got {n!r}")
    return n


def match_some(n: int = 1, key: Key | None = None) -> Matcher:
    """The `n` best realizations by `key` (any `n`, in a stable order, without a key).

    `key` receives what the matcher receives (the store) and an RRef."""
    _positive(n, "match_some")

    def matcher(store: Any, rrefs: list[RRef]) -> list[RRef] | None:
        if key is None:
            ordered = sorted(rrefs)
        else:
            scored = [(k, r) for r in rrefs if (k := key(store, r)) is not None]
            scored.sort(key=lambda kr: (kr[0], kr[1]), reverse=True)
            ordered = [r for _, r in scored]
        return ordered[:n] if len(ordered) >= n else None

    return engine_typed(matcher)


def match_latest(n: int = 1) -> Matcher:
    """The `n` most recently built realizations (build times come from the catalogue)."""
    _positive(n, "match_latest")

    def matcher(store: Any, rrefs: list[RRef]) -> list[RRef] | None:
        if len(rrefs) < n:
            return None
        if isinstance(rrefs, ByBuildTime):
            return list(reversed(rrefs[-n:]))
        times = store_of(store).catalogue.build_times(rrefs)
        newest = sorted(rrefs, key=lambda r: (times.get(r, 0.0), r), reverse=True)
        return newest[:n]

    return engine_typed(matcher)


def match_exact(rrefs: list[RRef]) -> Matcher:
    """Exactly the given realizations, once they all exist in the current context."""
    expected = [parse_rref(r) for r in rrefs]

    def matcher(store: Any, available: list[RRef]) -> list[RRef] | None:
        have = set(available)
        return list(expected) if all(r in have for r in expected) else None

    return engine_typed(matcher)
