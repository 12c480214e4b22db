"""Derivations, the registry that collects them, and the closure to realize."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from lightstore.config import Config, mkconfig
from lightstore.defaults import current, resolve_store
from lightstore.engine.sources import SOURCE_FIELD, sources_hash
from lightstore.errors import InvalidConfigError, LightstoreError, UnknownReferenceError
from lightstore.hashing import config_hash
from lightstore.refs import Context, DRef, RRef, isdref
from lightstore.store import StorageSettings, Store

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


class Registry:
    """Collects the derivations that stage functions declare, in declaration order.

    `S` is the store (Store, StorageSettings, a root path, or None for the
    current/default store).
    """

    def __init__(self, S: Any = None) -> None:
        self.store: Store = resolve_store(S)
        self.S: StorageSettings = self.store.settings
        self.derivations: dict[DRef, Derivation] = {}
        self.in_instantiate = False

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
    store: Store = field(repr=False)


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
    config: Config | dict[str, Any],
    matcher: Matcher,
    realizer: Realizer,
    r: Registry | None = None,
    *,
    sourcedeps: Sequence[Any] = (),
) -> DRef:
    """Register a derivation (config + matcher + realizer) in `r` and return its DRef.

    The realizer's code is not part of the config: editing it reuses old
    results. `sourcedeps` (functions, classes, modules or source text) hashes
    their source into the config field ``__source__``, so an edit makes a new
    derivation. Raises InvalidConfigError (bad config, unreadable source, or
    a config that already has ``__source__``), UnknownReferenceError,
    LightstoreError (no registry).
    """
    if sourcedeps:
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
            raise LightstoreError(
                "mkdrv needs a registry: pass `r=` (stage functions receive it from instantiate) "
                "or use `with current_registry(Registry()):`"
            )
    return r.add(config, matcher, realizer)


def instantiate(
    stage: Any, *args: Any, S: Any = None, r: Registry | None = None, **kwargs: Any
) -> tuple[Any, Closure]:
    """Run a stage function (or take DRefs) and return ``(result, closure)``.

    The derivations of the closure are recorded in the store. Raises
    UnknownReferenceError if the result names DRefs the registry does not hold,
    and LightstoreError if the stage returns no DRef.
    """
    reg = current_registry_or_new(r, S)
    if S is not None and resolve_store(S) is not reg.store:
        raise LightstoreError(
            f"S={S} differs from the registry's store {reg.store.root}; pass one of them"
        )
    if callable(stage):
        if reg.in_instantiate:
            raise LightstoreError(
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
        raise LightstoreError(
            f"nothing to instantiate: the stage returned {result!r}, which holds no DRef"
        )
    derivations = reg.closure_of(targets)
    reg.store.record_derivations([(d.dref, d.config) for d in derivations])
    return result, Closure(result, targets, derivations, reg.S, reg.store)
