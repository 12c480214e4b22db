"""Pylightnix's registry conventions over the engine's explicit one.

`Registry(S=None)` is the engine's registry for the store `S` names (see
`lightstore.compat.current`); `mkdrv` takes both of Pylightnix's argument
orders, falls back to the thread's current registry, and accepts matchers and
realizers that take `S` (storage settings) and may work on `Output` values:
it wraps each user function once into the engine's types (the store in, plain
lists out). Matchers and realizers already of the engine's types (the
built-in matchers, `build_wrapper`'s realizers) are taken as they are.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from lightstore.compat.current import current, store_of
from lightstore.compat.output import with_val
from lightstore.engine import registry as _engine
from lightstore.engine.registry import ENGINE_TYPED, Derivation, Matcher, Realizer
from lightstore.engine.sources import SOURCE_FIELD, sources_hash
from lightstore.foundation.config import Config
from lightstore.foundation.errors import InvalidConfigError, UsageError
from lightstore.foundation.refs import Context, DRef, RRef
from lightstore.store import LocalStore, StorageSettings

__all__ = [
    "Closure",
    "Derivation",
    "Registry",
    "as_matcher",
    "as_realizer",
    "current_registry_or_new",
    "instantiate",
    "mkdrv",
]


class Closure(_engine.Closure):
    """The engine's closure, with Pylightnix's `S` (the store's storage settings)."""

    @property
    def S(self) -> StorageSettings:
        """The storage settings of the closure's store."""
        return self.store.settings


class Registry(_engine.Registry):
    """Collects the derivations that stage functions declare, in declaration order.

    `S` is the store (a Store, StorageSettings, a root path, or None for the
    current/default store).
    """

    closure_type = Closure

    def __init__(self, S: Any = None) -> None:
        super().__init__(store_of(S))

    @property
    def S(self) -> StorageSettings:
        """The storage settings of the registry's store."""
        return self.store.settings


def current_registry_or_new(r: _engine.Registry | None, S: Any = None) -> _engine.Registry:
    """`r`, else the thread's current registry, else a new one for `S`."""
    if r is not None:
        return r
    if current.registry is not None:
        return current.registry
    return Registry(S)


def mkdrv(
    config: Config | dict[str, Any] | _engine.Registry,
    matcher: Any,
    realizer: Any,
    r: Any = None,
    *,
    sourcedeps: Sequence[Any] = (),
) -> DRef:
    """Register a derivation (config + matcher + realizer) in `r` and return its DRef.

    Both of Pylightnix's call forms work: ``mkdrv(config, matcher, realizer, r)``
    and the older ``mkdrv(r, config, matcher, realizer)``; matchers and
    realizers may work on plain lists or on `Output` values. The config is
    readable at once (`drefcfg`, `mklens`) in this process; `instantiate`
    records it in the store.

    The realizer's code is not part of the config: editing it reuses old
    results. `sourcedeps` (functions, classes, modules or source text) hashes
    their source into the config field ``__source__``, so an edit makes a new
    derivation.

    Raises UsageError without a registry, InvalidConfigError (as
    `Registry.add`, for unreadable source, or for a config that already has
    ``__source__`` when `sourcedeps` is given) and UnknownReferenceError as
    `Registry.add`.
    """
    if isinstance(config, _engine.Registry):
        config, matcher, realizer, r = matcher, realizer, r, config
    if sourcedeps and not isinstance(config, _engine.Registry):
        val = dict(config.val if isinstance(config, Config) else config)
        if SOURCE_FIELD in val:
            raise InvalidConfigError(
                f"mkdrv: the config already has a {SOURCE_FIELD!r} field; pass sourcedeps or "
                "set the field yourself, not both"
            )
        val[SOURCE_FIELD] = sources_hash(list(sourcedeps))
        config = val
    if r is None:
        r = current.registry
        if r is None:
            raise UsageError(
                "mkdrv needs a registry: pass `r=` (stage functions receive it from instantiate) "
                "or use `with current_registry(Registry()):`"
            )
    if not isinstance(r, _engine.Registry):
        raise UsageError(f"mkdrv: r must be a Registry, got {type(r).__name__}")
    if isinstance(config, _engine.Registry):
        raise UsageError("mkdrv: give one registry, as r= or as the first argument")
    return r.add(config, as_matcher(matcher), as_realizer(realizer))


def as_matcher(matcher: Any) -> Matcher:
    """An engine matcher calling a Pylightnix one: ``matcher(S, rrefs)``, where `rrefs`
    is also an `Output` and the result may be one (engine matchers are kept as they are)."""
    if getattr(matcher, ENGINE_TYPED, False):
        return matcher

    def wrapped(store: Any, rrefs: list[RRef]) -> list[RRef] | None:
        S = store.settings if isinstance(store, LocalStore) else store
        result: Any = matcher(S, with_val(rrefs))
        if result is not None and not isinstance(result, list) and hasattr(result, "val"):
            result = list(result.val)
        return result

    setattr(wrapped, ENGINE_TYPED, True)
    wrapped.__wrapped__ = matcher  # type: ignore[attr-defined]
    wrapped.__name__ = getattr(matcher, "__name__", "matcher")
    return wrapped


def as_realizer(realizer: Any) -> Realizer:
    """An engine realizer calling a Pylightnix one: ``realizer(S, dref, context, arg)``,
    which may return an `Output` (engine realizers are kept as they are)."""
    if getattr(realizer, ENGINE_TYPED, False):
        return realizer

    def wrapped(store: Any, dref: DRef, context: Context, args: Any) -> list[str]:
        S = store.settings if isinstance(store, LocalStore) else store
        result: Any = realizer(S, dref, context, args)
        if not isinstance(result, list) and hasattr(result, "val"):
            result = list(result.val)
        return result

    setattr(wrapped, ENGINE_TYPED, True)
    wrapped.__wrapped__ = realizer  # type: ignore[attr-defined]
    wrapped.__name__ = getattr(realizer, "__name__", "realizer")
    return wrapped


def instantiate(
    stage: Any, *args: Any, S: Any = None, r: _engine.Registry | None = None, **kwargs: Any
) -> tuple[Any, _engine.Closure]:
    """Run a stage function (or take DRefs) and return ``(result, closure)``.

    The registry is `r`, else the thread's current one, else a new one for
    `S`. The derivations of the closure are recorded in the store. Raises
    UnknownReferenceError if the result names DRefs the registry does not hold,
    and UsageError if the stage returns no DRef or `S` names another store
    than `r`'s.
    """
    reg = current_registry_or_new(r, S)
    if S is not None and store_of(S) is not reg.store:
        raise UsageError(
            f"S={S} differs from the registry's store {reg.store.root}; pass one of them"
        )
    closure = _engine.instantiate(reg, stage, *args, **kwargs)
    return closure.result, closure
