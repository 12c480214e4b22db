"""Pylightnix-style queries, answered from the catalogue.

Each takes the storage as an optional last argument `S` (StorageSettings,
Store, a root path, or None for the current/default store).
"""

from __future__ import annotations

import copy
import os
from collections.abc import Iterable
from typing import Any

from lightstore.compat.current import store_of, tlstorage
from lightstore.compat.output import RConfig
from lightstore.engine.registry import pending_config, record_unrecorded
from lightstore.facade import Store
from lightstore.foundation.config import Config, mkconfig, replace_selfrefs
from lightstore.foundation.hashing import context_hash
from lightstore.foundation.refs import (
    HASH_LEN,
    Context,
    DRef,
    Path,
    RRef,
    isdref,
    isrref,
    parse_dref,
    parse_rref,
    rref2dref,
)
from lightstore.store.layout import OBJECTS_DIR


def recorded_store(S: Any = None) -> Store:
    """The store `S` names, once the derivations this process registered for it are recorded
    (as Pylightnix's `mkdrv` wrote each at once, store-wide questions see them all)."""
    store = store_of(S)
    record_unrecorded(store)
    return store


def alldrefs(S: Any = None) -> list[DRef]:
    """Every derivation in the store (those `mkdrv` registered in this process included)."""
    return recorded_store(S).catalogue.all_drefs()


def allrrefs(S: Any = None) -> list[RRef]:
    """Every realization in the store."""
    return store_of(S).catalogue.all_rrefs()


def drefrrefs(dref: DRef, S: Any = None) -> list[RRef]:
    """Every realization of a derivation, in any context, oldest first."""
    return store_of(S).catalogue.realizations_any_context(parse_dref(dref))


def drefrrefsC(dref: DRef, context: Context, S: Any = None) -> list[RRef]:
    """Realizations of a derivation made in `context`, oldest first."""
    return store_of(S).catalogue.realizations(parse_dref(dref), context_hash(context))


def rootdrefs(S: Any = None) -> set[DRef]:
    """Derivations no other derivation depends on."""
    return recorded_store(S).catalogue.top_drefs()


def rootrrefs(S: Any = None) -> set[RRef]:
    """Realizations no other realization depends on."""
    return store_of(S).catalogue.top_rrefs()


def drefdeps1(drefs: Iterable[DRef], S: Any = None) -> set[DRef]:
    """Direct dependencies of `drefs`."""
    return recorded_store(S).catalogue.drefdeps1([parse_dref(d) for d in drefs])


def drefdeps(drefs: Iterable[DRef], S: Any = None) -> set[DRef]:
    """All dependencies of `drefs`, transitively."""
    return recorded_store(S).catalogue.drefdeps([parse_dref(d) for d in drefs])


def rrefdeps1(rrefs: Iterable[RRef], S: Any = None) -> set[RRef]:
    """Direct dependency realizations of `rrefs`."""
    return store_of(S).catalogue.rrefdeps1([parse_rref(r) for r in rrefs])


def rrefdeps(rrefs: Iterable[RRef], S: Any = None) -> set[RRef]:
    """All dependency realizations of `rrefs`, transitively."""
    return store_of(S).catalogue.rrefdeps([parse_rref(r) for r in rrefs])


def config_of(dref: DRef, S: Any = None) -> dict[str, Any]:
    """The config of a derivation: from a live registry of this process (so it is
    readable right after `mkdrv`, before `instantiate` records it), else from the store.

    Raises UnknownReferenceError if neither holds it.
    """
    d = parse_dref(dref)
    store = store_of(tlstorage(S))
    pending = pending_config(store, d)
    return pending if pending is not None else store.config(d)


def drefcfg_(dref: DRef, S: Any = None) -> Config:
    """The config of a derivation as stored (selfrefs unresolved)."""
    return mkconfig(copy.deepcopy(config_of(dref, S)))


def drefcfg(dref: DRef, S: Any = None) -> dict[str, Any]:
    """The config of a derivation with ``[selfref, ...]`` resolved to its own DRef (an `RConfig`)."""
    d = parse_dref(dref)
    return RConfig(replace_selfrefs(config_of(d, S), d))


def rrefctx(rref: RRef, S: Any = None) -> Context:
    """The context of a realization: dependency DRef -> RRefs it used."""
    return {k: list(v) for k, v in store_of(S).context(parse_rref(rref)).items()}


def rref2path(rref: RRef, S: Any = None) -> Path:
    """The folder of a realization's artifacts."""
    return store_of(S).rref_path(parse_rref(rref))


def dref2path(dref: DRef, S: Any = None) -> Path:
    """The folder of a derivation (there once it is recorded, see `recorded_store`)."""
    return recorded_store(S).dref_path(parse_dref(dref))


def _hex(s: str) -> bool:
    return len(s) == HASH_LEN and all(c in "0123456789abcdef" for c in s)


def path2dref(path: str) -> DRef | None:
    """The DRef whose folder contains `path`, or None if it is not inside a store's objects."""
    parts = os.path.normpath(os.path.abspath(path)).split(os.sep)
    for i in range(len(parts) - 1, -1, -1):
        head, _, name = parts[i].partition("-")
        if _hex(head) and name and (i == 0 or parts[i - 1] == OBJECTS_DIR):
            candidate = f"dref:{head}-{name}"
            if isdref(candidate):
                return DRef(candidate)
    return None


def path2rref(path: str) -> RRef | None:
    """The RRef whose folder contains `path`, or None."""
    parts = os.path.normpath(os.path.abspath(path)).split(os.sep)
    for i in range(len(parts) - 2, -1, -1):
        head, _, name = parts[i].partition("-")
        if _hex(head) and name and _hex(parts[i + 1]) and (i == 0 or parts[i - 1] == OBJECTS_DIR):
            candidate = f"rref:{parts[i + 1]}-{head}-{name}"
            if isrref(candidate):
                return RRef(candidate)
    return None


__all__ = [
    "alldrefs",
    "allrrefs",
    "dref2path",
    "drefcfg",
    "drefcfg_",
    "drefdeps",
    "drefdeps1",
    "drefrrefs",
    "drefrrefsC",
    "path2dref",
    "path2rref",
    "rootdrefs",
    "rootrrefs",
    "rref2dref",
    "rref2path",
    "rrefctx",
    "rrefdeps",
    "rrefdeps1",
]
