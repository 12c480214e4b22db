"""Derivations, the registry that collects them, and the closure to realize.

Everything here takes explicit objects: a `Registry` belongs to one store,
matchers and realizers receive that store. The Pylightnix conventions (an
`S` argument, the current registry, `Output` values) are `lightstore.compat`'s.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar

from lightstore.foundation.config import Config, mkconfig
from lightstore.foundation.errors import NotInStoreError, UnknownReferenceError, UsageError
from lightstore.foundation.hashing import config_hash
from lightstore.foundation.refs import Context, DRef, RRef, isdref
from lightstore.store import LocalStore

#: ``(store, rrefs) -> None | [rref, ...]``: which realizations to use, or None to build.
Matcher = Callable[[LocalStore, list[RRef]], list[RRef] | None]
#: ``(store, dref, context, realize_arg) -> [output folder, ...]``.
Realizer = Callable[[LocalStore, DRef, Context, Any], list[str]]

#: The attribute that marks a matcher or realizer as taking the store itself
#: (the engine's own, and those `lightstore.compat` already wrapped).
ENGINE_TYPED = "_lightstore_engine_typed"


def engine_typed(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Mark `fn` as a matcher or realizer of the engine's types (it receives the store)."""
    setattr(fn, ENGINE_TYPED, True)
    return fn


def store_of(where: Any) -> LocalStore:
    """`where` if it is a store, else the store it names (a root, or anything
    `LocalStore.open` takes), so matchers serve callers that pass a root."""
    return where if isinstance(where, LocalStore) else LocalStore.open(where)


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


@dataclass
class Closure:
    """What `instantiate` returns: the stage's result and the derivations to realize."""

    result: Any
    targets: list[DRef]
    derivations: list[Derivation]
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
            f"in {self.store.root}>"
        )


class Registry:
    """Collects the derivations that stage functions declare for `store`, in declaration order."""

    #: The class of the closures `instantiate` makes from this registry.
    closure_type: ClassVar[type[Closure]] = Closure

    def __init__(self, store: LocalStore) -> None:
        if not isinstance(store, LocalStore):
            raise UsageError(f"a Registry belongs to a store, not to {type(store).__name__}")
        self.store: LocalStore = store
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
                self._unknown_dependency(dref, dep)
        promises = cfg.promises
        drv = Derivation(dref, cfg, matcher, realizer, deps, promises)
        self.derivations[dref] = drv
        _note_unrecorded(self, drv)
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
        # Registration order is a topological order: `add` refuses unknown deps.
        return [drv for dref, drv in self.derivations.items() if dref in needed]

    def _unknown_dependency(self, dref: DRef, dep: DRef) -> None:
        """Raise for a dependency this registry lacks: NotInStoreError if the store lacks
        it too (it comes from another store, where Pylightnix found no file),
        UnknownReferenceError if only this registry does."""
        if (
            not self.store.catalogue.known_drefs([dep])
            and _unrecorded_config(self.store, dep) is None
        ):
            raise NotInStoreError(
                f"the config of {dref} depends on {dep}, which neither this registry nor its "
                f"store {self.store.root} holds (a derivation of another store?); create the "
                "dependency with a stage called with the same registry `r`",
                dep,
            )
        raise UnknownReferenceError(
            f"the config of {dref} depends on {dep}, which this registry does not know; "
            "create the dependency with a stage called with the same registry `r`",
            dep,
        )

    def closure(self, result: Any, targets: list[DRef]) -> Closure:
        """The closure of `targets` (`result` is what the stage returned).

        It is recorded in the store, together with every other derivation
        registered in this process for the store and not recorded yet (as
        Pylightnix's `mkdrv` wrote each at once), in one transaction.
        """
        derivations = self.closure_of(targets)
        with unrecorded(self.store, {d.dref for d in derivations}) as others:
            batch = derivations + others if others else derivations
            self.store.record_derivations([(d.dref, d.config) for d in batch])
        return self.closure_type(result, targets, derivations, self.store)


# Registries alive in this process: the configs they hold are readable
# (drefcfg, mklens) before `instantiate` records them in the store.
_live_registries: weakref.WeakSet[Registry] = weakref.WeakSet()
_live_lock = threading.Lock()

# Derivations registered in this process and not recorded in their store yet,
# per store (keyed by id, the store kept alive with them), each with the
# derivations of its registry (to find its dependencies). Recording each at
# `add` would cost a transaction per derivation; instead `instantiate` records
# them with its closure, and the store-wide queries (`record_unrecorded`)
# before they answer, so no question can tell the difference.
_unrecorded: dict[
    int, tuple[LocalStore, dict[DRef, tuple[Derivation, dict[DRef, Derivation]]]]
] = {}
_unrecorded_lock = threading.Lock()


def _note_unrecorded(registry: Registry, drv: Derivation) -> None:
    with _unrecorded_lock:
        entry = _unrecorded.get(id(registry.store))
        if entry is None:
            entry = _unrecorded[id(registry.store)] = (registry.store, {})
        entry[1][drv.dref] = (drv, registry.derivations)


def _unrecorded_config(store: LocalStore, dref: str) -> dict[str, Any] | None:
    entry = _unrecorded.get(id(store))
    found = entry[1].get(dref) if entry is not None else None  # type: ignore[call-overload]
    return found[0].config.val if found is not None else None


@contextmanager
def unrecorded(store: LocalStore, recording: set[DRef] | None = None) -> Iterator[list[Derivation]]:
    """Take the derivations of `store` not recorded yet (with the dependencies they need),
    dependencies first, for the block to record with `recording` (derivations it records
    anyway, left out of the list); if the block raises, they stay pending."""
    with _unrecorded_lock:
        entry = _unrecorded.pop(id(store), None)
    if entry is None:
        yield []
        return
    pending = entry[1]
    try:
        yield _dependencies_first(pending, recording or set())
    except BaseException:
        with _unrecorded_lock:
            again = _unrecorded.setdefault(id(store), (store, {}))[1]
            for dref, item in pending.items():
                again.setdefault(dref, item)
        raise


def _dependencies_first(
    pending: dict[DRef, tuple[Derivation, dict[DRef, Derivation]]], recording: set[DRef]
) -> list[Derivation]:
    """The pending derivations and the dependencies their registries hold, dependencies
    first, leaving out those in `recording` (recorded with them, with their own closure).

    A dependency recorded earlier is listed again: recording skips known ones
    in the same query, and re-creates one a garbage collection removed since.
    """
    out: dict[DRef, Derivation] = {}
    for drv, owner in pending.values():
        if drv.dref in recording:
            continue  # the common case of instantiate: its closure is all there is
        stack: list[tuple[Derivation, bool]] = [(drv, False)]
        while stack:
            d, expanded = stack.pop()
            if d.dref in out:
                continue
            if expanded:
                out[d.dref] = d
                continue
            stack.append((d, True))
            for dep in d.deps:
                if dep not in out and dep not in recording:
                    found = pending.get(dep)
                    dep_drv = found[0] if found is not None else owner.get(dep)
                    if dep_drv is not None:
                        stack.append((dep_drv, False))
    return list(out.values())


def record_unrecorded(store: LocalStore) -> None:
    """Record in `store` the derivations registered for it in this process and not recorded
    yet (one query when there are none to record, nothing at all when none are pending)."""
    if id(store) not in _unrecorded:
        return
    with unrecorded(store) as batch:
        if batch:
            store.record_derivations([(d.dref, d.config) for d in batch])


def pending_config(store: LocalStore, dref: str) -> dict[str, Any] | None:
    """The config of `dref` if a registry of this process holds it for `store` (recorded
    or not), else None."""
    config = _unrecorded_config(store, dref)
    if config is not None:
        return config
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


def instantiate(registry: Registry, stage: Any, *args: Any, **kwargs: Any) -> Closure:
    """Run a stage function as ``stage(*args, r=registry, **kwargs)`` (or take DRefs) and
    return the closure of the DRefs in its result, recorded in the registry's store.

    Raises UnknownReferenceError if the result names DRefs the registry does not
    hold, and UsageError if the stage returns no DRef or calls `instantiate`
    with the same registry.
    """
    if callable(stage):
        if registry.in_instantiate:
            raise UsageError(
                "instantiate was called recursively with the same registry; call stages directly"
            )
        registry.in_instantiate = True
        try:
            result = stage(*args, r=registry, **kwargs)
        finally:
            registry.in_instantiate = False
    else:
        result = stage
    targets = find_drefs(result)
    if not targets:
        raise UsageError(
            f"nothing to instantiate: the stage returned {result!r}, which holds no DRef"
        )
    return registry.closure(result, targets)
