"""Derivations, the registry that collects them, and the closure to realize."""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from lightstore.defaults import current, resolve_store
from lightstore.engine.sources import SOURCE_FIELD, sources_hash
from lightstore.foundation.config import Config, mkconfig
from lightstore.foundation.errors import InvalidConfigError, UnknownReferenceError, UsageError
from lightstore.foundation.hashing import config_hash
from lightstore.foundation.refs import Context, DRef, RRef, isdref
from lightstore.store import LocalStore, StorageSettings

_REF = TypeVar("_REF")


class Output(Generic[_REF]):
    """An ordered collection of output folders (`Path`) or realizations (`RRef`) in `val`
    (Pylightnix's type for matchers and realizers that use it)."""

    def __init__(self, val: Iterable[_REF]) -> None:
        self.val: list[_REF] = list(val)

    def __repr__(self) -> str:
        return f"Output({self.val!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Output) and self.val == other.val

    __hash__ = None  # type: ignore[assignment]


#: ``(S, rrefs) -> None | [rref, ...]``: which realizations to use, or None to build.
Matcher = Callable[[StorageSettings, list[RRef]], list[RRef] | None]
#: ``(S, dref, context, realize_arg) -> [output folder, ...]``.
Realizer = Callable[[StorageSettings, DRef, Context, Any], list[str]]


@dataclass(frozen=True)
class Derivation:
    """A config with the matcher and realizer that produce its realizations."""

    dref: DRef
    config: Config
    matcher: Matcher
    realizer: Realizer
    deps: tuple[DRef, ...]
    promises: tuple[tuple[str, ...], ...]
    #: Set by `realized()`: building this derivation is an error.
    must_be_realized: bool = False

    def __repr__(self) -> str:
        return f"<Derivation {self.dref}>"


class Registry:
    """Collects the derivations that stage functions declare, in declaration order.

    `S` is the store (LocalStore, StorageSettings, a root path, or None for the
    current/default store).
    """

    def __init__(self, S: Any = None) -> None:
        self.store: LocalStore = resolve_store(S)
        self.S: StorageSettings = self.store.settings
        self.derivations: dict[DRef, Derivation] = {}
        self.in_instantiate = False
        with _live_lock:
            _live_registries.add(self)

    @property
    def builders(self) -> dict[DRef, Derivation]:
        """The registered derivations by DRef (Pylightnix's name for `derivations`)."""
        return self.derivations

    def __contains__(self, dref: object) -> bool:
        return dref in self.derivations

    def __getitem__(self, dref: DRef) -> Derivation:
        try:
            return self.derivations[dref]
        except KeyError:
            raise UnknownReferenceError(
                f"{dref} is not registered in this registry; call its stage with the same `r` first",
                dref,
            ) from None

    def add(self, config: Config | dict[str, Any], matcher: Matcher, realizer: Realizer) -> DRef:
        """Register a derivation and return its DRef.

        Raises InvalidConfigError for a bad config and UnknownReferenceError if
        the config depends on a DRef this registry does not know.
        """
        cfg = mkconfig(config)
        # The hash is ours and mkconfig checked the name: no need to re-validate.
        dref = DRef(f"dref:{config_hash(cfg.val)}-{cfg.name}")
        deps = cfg.deps
        for dep in deps:
            if dep not in self.derivations:
                raise UnknownReferenceError(
                    f"the config of {dref} depends on {dep}, which this registry does not know; "
                    "create the dependency with a stage called with the same registry `r`",
                    dep,
                )
        promises = cfg.promises
        self.derivations[dref] = Derivation(dref, cfg, matcher, realizer, deps, promises)
        return dref

    def closure_of(self, targets: list[DRef]) -> list[Derivation]:
        """The targets and everything they depend on, dependencies first."""
        needed: set[DRef] = set()
        stack = list(targets)
        while stack:
            d = stack.pop()
            if d not in needed:
                needed.add(d)
                stack.extend(self[d].deps)
        # Registration order is a topological order: mkdrv refuses unknown deps.
        return [drv for dref, drv in self.derivations.items() if dref in needed]


@dataclass
class Closure:
    """What `instantiate` returns: the stage's result and the derivations to realize."""

    result: Any
    targets: list[DRef]
    derivations: list[Derivation]
    S: StorageSettings
    store: LocalStore = field(repr=False)

    def __repr__(self) -> str:
        # Short: a sweep's closure holds hundreds of configs and functions.
        counts: dict[str, int] = {}
        for drv in self.derivations:
            name = drv.dref.rsplit("-", 1)[1]
            counts[name] = counts.get(name, 0) + 1
        names = ", ".join(f"{n} x{c}" if c > 1 else n for n, c in counts.items())
        if len(names) > 120:
            names = names[:117] + "..."
        targets = self.targets[0] if len(self.targets) == 1 else f"{len(self.targets)} targets"
        return (
            f"<Closure of {targets}: {len(self.derivations)} derivation(s) ({names}) "
            f"in {self.S.root}>"
        )


# Registries alive in this process: the configs they hold are readable
# (drefcfg, mklens) before `instantiate` records them in the store.
_live_registries: weakref.WeakSet[Registry] = weakref.WeakSet()
_live_lock = threading.Lock()


def pending_config(store: LocalStore, dref: str) -> dict[str, Any] | None:
    """The config of `dref` if a live registry of `store` holds it (recorded or not), else None."""
    with _live_lock:
        registries = list(_live_registries)
    for reg in registries:
        if reg.store is store:
            drv = reg.derivations.get(dref)  # type: ignore[call-overload]
            if drv is not None:
                return drv.config.val
    return None


def find_drefs(value: Any) -> list[DRef]:
    """DRefs inside a stage result (a DRef, or lists/tuples/dicts holding them), in order."""
    found: list[DRef] = []

    def visit(v: Any) -> None:
        if isinstance(v, str):
            if isdref(v) and v not in found:
                found.append(DRef(v))
        elif isinstance(v, list | tuple | set):
            for x in v:
                visit(x)
        elif isinstance(v, dict):
            for x in v.values():
                visit(x)

    visit(value)
    return found


def current_registry_or_new(r: Registry | None, S: Any = None) -> Registry:
    """`r`, else the thread's current registry, else a new one for `S`."""
    if r is not None:
        return r
    if current.registry is not None:
        return current.registry
    return Registry(S)


def mkdrv(
    config: Config | dict[str, Any] | Registry,
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
    if isinstance(config, Registry):
        config, matcher, realizer, r = matcher, realizer, r, config
    if sourcedeps and not isinstance(config, Registry):
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
    if not isinstance(r, Registry):
        raise UsageError(f"mkdrv: r must be a Registry, got {type(r).__name__}")
    if isinstance(config, Registry):
        raise UsageError("mkdrv: give one registry, as r= or as the first argument")
    return r.add(config, _any_matcher(matcher), _any_realizer(realizer))


def _any_matcher(matcher: Matcher) -> Matcher:
    """A matcher that also serves Pylightnix `MatcherO` functions (`Output` in and out)."""
    if getattr(matcher, "_lightstore_any", False):
        return matcher

    def wrapped(S: Any, rrefs: list[RRef]) -> list[RRef] | None:
        result: Any = matcher(S, _with_val(rrefs))
        if result is not None and not isinstance(result, list) and hasattr(result, "val"):
            result = list(result.val)
        return result

    wrapped._lightstore_any = True  # type: ignore[attr-defined]
    wrapped.__wrapped__ = matcher  # type: ignore[attr-defined]
    wrapped.__name__ = getattr(matcher, "__name__", "matcher")
    return wrapped


def _any_realizer(realizer: Realizer) -> Realizer:
    """A realizer that also serves Pylightnix `RealizerO` functions (returning `Output`)."""
    if getattr(realizer, "_lightstore_any", False):
        return realizer

    def wrapped(S: Any, dref: DRef, context: Context, args: Any) -> list[str]:
        result: Any = realizer(S, dref, context, args)
        if not isinstance(result, list) and hasattr(result, "val"):
            result = list(result.val)
        return result

    wrapped._lightstore_any = True  # type: ignore[attr-defined]
    wrapped.__wrapped__ = realizer  # type: ignore[attr-defined]
    wrapped.__name__ = getattr(realizer, "__name__", "realizer")
    return wrapped


def _with_val(rrefs: list[RRef]) -> list[RRef]:
    """`rrefs` as a list that is also an `Output` (with `.val`), keeping its class."""
    cls = _VAL_CLASSES.get(type(rrefs))
    if cls is None:
        base = type(rrefs) if isinstance(rrefs, list) else list
        cls = type(base.__name__, (base, Output), {"val": property(lambda self: list(self))})
        _VAL_CLASSES[type(rrefs)] = cls
    return cls(rrefs)


_VAL_CLASSES: dict[type, type] = {}


def instantiate(
    stage: Any, *args: Any, S: Any = None, r: Registry | None = None, **kwargs: Any
) -> tuple[Any, Closure]:
    """Run a stage function (or take DRefs) and return ``(result, closure)``.

    The derivations of the closure are recorded in the store. Raises
    UnknownReferenceError if the result names DRefs the registry does not hold,
    and UsageError if the stage returns no DRef.
    """
    reg = current_registry_or_new(r, S)
    if S is not None and resolve_store(S) is not reg.store:
        raise UsageError(
            f"S={S} differs from the registry's store {reg.store.root}; pass one of them"
        )
    if callable(stage):
        if reg.in_instantiate:
            raise UsageError(
                "instantiate was called recursively with the same registry; call stages directly"
            )
        reg.in_instantiate = True
        try:
            result = stage(*args, r=reg, **kwargs)
        finally:
            reg.in_instantiate = False
    else:
        result = stage
    targets = find_drefs(result)
    if not targets:
        raise UsageError(
            f"nothing to instantiate: the stage returned {result!r}, which holds no DRef"
        )
    derivations = reg.closure_of(targets)
    reg.store.record_derivations([(d.dref, d.config) for d in derivations])
    return result, Closure(result, targets, derivations, reg.S, reg.store)
