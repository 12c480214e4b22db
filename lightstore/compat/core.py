"""The rest of Pylightnix's ``pylightnix.core``: thread-local defaults, storage
paths, config and context helpers, keys for matchers, and the ``assert_valid_*``
checks (which raise errors that are also `AssertionError`, never ``assert``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from typing import Any

from lightstore.compat.current import (
    current,
    settings_of,
    store_of,
    tlregistry,
    tlstorage,
)
from lightstore.compat.matchers import Key, exact, latest, match, texthash
from lightstore.compat.output import RConfig
from lightstore.compat.registry import Registry
from lightstore.compat.types import ConfigAttrs
from lightstore.compat.utils import traverse_dict
from lightstore.engine.realize import unpack_closure
from lightstore.engine.registry import Closure, find_drefs
from lightstore.engine.registry import Registry as EngineRegistry
from lightstore.foundation.config import Config, canonical_json, mkconfig, replace_selfrefs
from lightstore.foundation.errors import (
    InvalidConfigError,
    InvalidReferenceError,
    StoreError,
    UnknownReferenceError,
    UsageError,
)
from lightstore.foundation.hashing import canonical_context, config_hash
from lightstore.foundation.refs import (
    Context,
    DRef,
    HashPart,
    Name,
    Path,
    RefPath,
    RRef,
    isrefpath,
    isrref,
    isselfpath,
    mkname,
    parse_dref,
    parse_rref,
    rref2dref,
)
from lightstore.store import CONFIG_FILE, StorageSettings
from lightstore.store.layout import OBJECTS_DIR, TMP_DIR

#: The layout version of the store (lightstore's first layout).
PYLIGHTNIX_STORE_VERSION = 1
#: One valid character of a name.
PYLIGHTNIX_NAMEPAT = "[a-zA-Z0-9_-]"
#: File names the core writes into realizations; realizers must not create them.
PYLIGHTNIX_RESERVED = ["context.json", "group.json"]

#: The per-thread defaults (`current_registry`, `current_storage`): each thread has its own.
TL = current


def setstorage(S: Any) -> StorageSettings | None:
    """Make `S` this thread's current storage (None: the default store); return the previous one."""
    old = current.storage
    current.storage = None if S is None else settings_of(S)
    return old


def setregistry(r: EngineRegistry | None) -> EngineRegistry | None:
    """Make `r` this thread's current registry; return the previous one."""
    if r is not None and not isinstance(r, EngineRegistry):
        raise UsageError(f"setregistry expects a Registry or None, got {type(r).__name__}")
    old = current.registry
    current.registry = r
    return old


def storagename() -> str:
    """The name of the folder of objects inside a store root."""
    return OBJECTS_DIR


def fsroot(S: Any = None) -> Path:
    """The root folder of the store `S` (default: the current/default store)."""
    return Path(settings_of(tlstorage(S)).root)


def fstmpdir(S: Any = None) -> Path:
    """The build area of the store `S` (on the same filesystem as its objects)."""
    return Path(os.path.join(fsroot(S), TMP_DIR))


def fsstorage(S: Any = None) -> Path:
    """The folder of objects of the store `S`."""
    return Path(os.path.join(fsroot(S), storagename()))


def assert_valid_storage(S: Any = None) -> None:
    """Raise UsageError (an AssertionError) unless `S` names a usable store."""
    try:
        store_of(tlstorage(S))
    except StoreError as e:
        raise UsageError(f"{e}; create the store with fsinit() first") from e


def reserved(folder: Path, name: str) -> Path:
    """The path of reserved file `name` in `folder`; raises UsageError for other names."""
    if name not in PYLIGHTNIX_RESERVED:
        raise UsageError(f"{name!r} is not a reserved file name ({PYLIGHTNIX_RESERVED})")
    return Path(os.path.join(folder, name))


def trimhash(h: str) -> HashPart:
    """The first 32 characters of a hash: the part references carry."""
    return HashPart(h[:32])


# -- configs -------------------------------------------------------------------


def _cfg(c: Any) -> Config:
    return mkconfig(c if isinstance(c, Config) else dict(c))


def cfgcattrs(c: Any) -> Any:
    """A config's fields as attributes (`ConfigAttrs`)."""
    return ConfigAttrs(json.loads(canonical_json(_cfg(c).val)))


def cfgserialize(c: Any) -> str:
    """The canonical JSON text of a config (what its hash covers)."""
    return canonical_json(_cfg(c).val)


def cfghash(c: Any) -> str:
    """The hash part of the DRef a config gets (32 hex digits of blake3)."""
    return config_hash(_cfg(c).val)


def cfgname(c: Any) -> Name:
    """The config's `name`, ``unnamed`` if it has none."""
    return mkname(_cfg(c).val.get("name", "unnamed"))


def cfgdeps(c: Any) -> set[DRef]:
    """The DRefs a config mentions (its dependencies)."""
    return set(_cfg(c).deps)


def cfgsp(c: Any) -> list[tuple[str, RefPath]]:
    """``(key, [selfref, ...])`` of every promise in the config."""
    found: list[tuple[str, RefPath]] = []

    def visit(k: Any, v: Any) -> Any:
        if isselfpath(v):
            found.append((str(k), list(v)))
        return v

    traverse_dict(json.loads(canonical_json(_cfg(c).val)), visit)
    return found


def mkrefpath(r: DRef, items: list[str] | None = None) -> RefPath:
    """The RefPath ``[r, *items]``."""
    return [str(parse_dref(r)), *(items or [])]


def resolve(c: Any, r: DRef) -> RConfig:
    """The config with every ``[selfref, ...]`` turned into ``[r, ...]``."""
    return RConfig(replace_selfrefs(_cfg(c).val, parse_dref(r)))


def drefcfgpath(r: DRef, S: Any = None) -> Path:
    """The path of a derivation's config.json."""
    return Path(os.path.join(store_of(S).dref_path(parse_dref(r)), CONFIG_FILE))


def rrefpath2path(r: RRef, refpath: RefPath, S: Any = None) -> Path:
    """The system path of a RefPath into realization `r`; raises InvalidReferenceError if it points elsewhere."""
    if not isrefpath(refpath) or rref2dref(parse_rref(r)) != refpath[0]:
        raise InvalidReferenceError(f"{refpath!r} is not a RefPath into {r}")
    return Path(os.path.join(store_of(S).rref_path(RRef(r)), *refpath[1:]))


def drefattrs(r: DRef, S: Any = None) -> Any:
    """The resolved config of a derivation as attributes."""
    from lightstore.compat.queries import drefcfg

    return ConfigAttrs(drefcfg(r, S))


def rrefattrs(r: RRef, S: Any = None) -> Any:
    """The resolved config of a realization's derivation as attributes."""
    return drefattrs(rref2dref(parse_rref(r)), S)


def rrefdata(rref: RRef, S: Any = None) -> Iterable[Path]:
    """The top-level artifacts of a realization (reserved files left out)."""
    root = store_of(S).rref_path(parse_rref(rref))
    for e in sorted(os.scandir(root), key=lambda e: e.name):
        if not (e.is_file(follow_symlinks=False) and e.name in PYLIGHTNIX_RESERVED):
            yield Path(e.path)


def mkdrv_(c: Any, S: Any = None) -> DRef:
    """Record a derivation in the store directly (no registry, no realizer); return its DRef.

    Raises UnknownReferenceError if the config depends on derivations the store lacks.
    """
    store = store_of(tlstorage(S))
    cfg = _cfg(c)
    missing = set(cfg.deps) - store.catalogue.known_drefs(list(cfg.deps))
    if missing:
        raise UnknownReferenceError(
            f"the config depends on {sorted(missing)[0]}, which the store does not hold",
            sorted(missing)[0],
        )
    dref = store.derivation_of(cfg)
    store.record_derivations([(dref, cfg)])
    return dref


def mkrealization(dref: DRef, l: Context, o: Path, S: Any = None) -> RRef:  # noqa: E741
    """Publish folder `o` as a realization of recorded derivation `dref` in context `l`.

    The folder is moved (or, outside the store's build area, copied) into the
    store. Raises UnknownReferenceError for an unrecorded `dref` and
    PromiseError if a promised path is missing.
    """
    store = store_of(tlstorage(S))
    d = store.check_known_dref(parse_dref(dref))
    cfg = mkconfig(store.config(d))
    with store.realizing():
        return store.publish(d, dict(l), [o], cfg.promises)[0]


# -- contexts ------------------------------------------------------------------


def mkcontext() -> Context:
    """An empty context."""
    return {}


def context_eq(a: Context, b: Context) -> bool:
    """True if two contexts name the same realizations."""
    return canonical_context(a) == canonical_context(b)


def context_add(ctx: Context, dref: DRef, rrefs: list[RRef] | None) -> Context:
    """A new context: `ctx` plus ``dref -> sorted(rrefs)``; raises UsageError if `dref` is there."""
    if dref in ctx:
        raise UsageError(f"{dref} is already in the context, with {ctx[dref]}; not adding {rrefs}")
    out: dict[DRef, Any] = dict(ctx)
    out[DRef(dref)] = sorted(rrefs) if rrefs else None
    return dict(sorted(out.items()))


def context_deref(context: Context, dref: DRef) -> list[RRef]:
    """The realizations of `dref` in a context; raises UnknownReferenceError if it is not there."""
    if dref not in context:
        raise UnknownReferenceError(f"{dref} is not in the context {sorted(context)}", dref)
    return context[dref]


def context_derefpath(context: Context, refpath: RefPath, S: Any = None) -> list[Path]:
    """The system paths of a RefPath in each realization the context gives for its DRef."""
    if not isrefpath(refpath):
        raise InvalidReferenceError(f"not a RefPath: {refpath!r}")
    store = store_of(S)
    return [
        Path(os.path.join(store.rref_path(r), *refpath[1:]))
        for r in context_deref(context, DRef(refpath[0]))
    ]


def context_serialize(c: Context) -> str:
    """A context as JSON (checked first)."""
    assert_valid_context(c)
    return json.dumps(canonical_context(c), indent=4)


# -- closures and keys ---------------------------------------------------------


def mkclosure(result: Any, r: Registry) -> Closure:
    """The closure of the DRefs in `result`, from registry `r` (recorded in its store).

    Raises UsageError if `result` holds no DRef, UnknownReferenceError if `r` lacks one.
    """
    targets = find_drefs(result)
    if not targets:
        raise UsageError(f"no DRefs to instantiate in {result!r}")
    assert_have_realizers(r, targets)
    return r.closure(result, targets)


def unpack_closure_arg_(arg: Any) -> tuple[Any, Closure]:
    """``(result, closure)`` from a Closure or from what `instantiate` returns."""
    return unpack_closure(arg)


# -- checks --------------------------------------------------------------------


def assert_valid_refpath(refpath: RefPath) -> None:
    """Raise InvalidReferenceError (an AssertionError) unless `refpath` is a RefPath."""
    if not isrefpath(refpath):
        raise InvalidReferenceError(
            f"{refpath!r} is not a RefPath: expected a list of strings starting with a DRef"
        )


def assert_valid_config(c: Any) -> Any:
    """Return `c` if it is a valid config; raise InvalidConfigError (an AssertionError) otherwise."""
    if c is None:
        raise InvalidConfigError("expected a Config, got None")
    _cfg(c)
    return c


def assert_valid_name(s: Any) -> None:
    """Raise InvalidConfigError (an AssertionError) unless `s` is a valid name."""
    mkname(s)


def assert_valid_rref(ref: Any) -> None:
    """Raise InvalidReferenceError (an AssertionError) unless `ref` is an RRef."""
    parse_rref(ref)


def assert_valid_dref(ref: Any) -> None:
    """Raise InvalidReferenceError (an AssertionError) unless `ref` is a DRef."""
    parse_dref(ref)


def _hex(h: Any, n: int, what: str) -> None:
    if not isinstance(h, str) or len(h) != n or any(c not in "0123456789abcdef" for c in h):
        raise InvalidReferenceError(f"{what} must be {n} lowercase hex digits, got {h!r}")


def assert_valid_hashpart(hp: Any) -> None:
    """Raise InvalidReferenceError unless `hp` is a 32-digit hash part."""
    _hex(hp, 32, "a hash part")


def assert_valid_hash(h: Any) -> None:
    """Raise InvalidReferenceError unless `h` is a 64-digit hash."""
    _hex(h, 64, "a hash")


def assert_valid_context(c: Any) -> None:
    """Raise InvalidReferenceError unless `c` maps DRefs to lists of RRefs."""
    if not isinstance(c, dict):
        raise InvalidReferenceError(f"a context is a dict, got {type(c).__name__}")
    for dref, rrefs in c.items():
        parse_dref(dref)
        if not isinstance(rrefs, list):
            raise InvalidReferenceError(f"the context gives {rrefs!r} for {dref}, not a list")
        for rref in rrefs:
            parse_rref(rref)


def assert_valid_closure(closure: Any) -> None:
    """Raise UsageError unless `closure` is a non-empty Closure that holds its targets."""
    if not isinstance(closure, Closure) or not closure.derivations:
        raise UsageError("a closure must hold at least one derivation")
    have = {d.dref for d in closure.derivations}
    if any(t not in have for t in closure.targets):
        raise UsageError("the closure does not hold its target derivations")


def assert_rref_deps(c: Any) -> None:
    """Raise InvalidConfigError if a config holds RRefs (configs refer to derivations only)."""
    found: list[str] = []

    def visit(_: Any, v: Any) -> Any:
        if isrref(v):
            found.append(v)
        return v

    traverse_dict(dict(c.val if isinstance(c, Config) else c), visit)
    if found:
        raise InvalidConfigError(
            f"the config holds realization references ({found[0]}); refer to the DRef instead"
        )


def assert_have_realizers(r: Registry, drefs: list[DRef]) -> None:
    """Raise UnknownReferenceError unless `r` holds the derivations `drefs` need."""
    missing = [d for d in drefs if d not in r]
    if missing:
        raise UnknownReferenceError(
            f"{missing[0]} is not in this registry: did you mix DRefs of several registries?",
            missing[0],
        )
    r.closure_of(list(drefs))


__all__ = [
    "PYLIGHTNIX_NAMEPAT",
    "PYLIGHTNIX_RESERVED",
    "PYLIGHTNIX_STORE_VERSION",
    "TL",
    "Key",
    "assert_have_realizers",
    "assert_rref_deps",
    "assert_valid_closure",
    "assert_valid_config",
    "assert_valid_context",
    "assert_valid_dref",
    "assert_valid_hash",
    "assert_valid_hashpart",
    "assert_valid_name",
    "assert_valid_refpath",
    "assert_valid_rref",
    "assert_valid_storage",
    "cfgcattrs",
    "cfgdeps",
    "cfghash",
    "cfgname",
    "cfgserialize",
    "cfgsp",
    "context_add",
    "context_deref",
    "context_derefpath",
    "context_eq",
    "context_serialize",
    "drefattrs",
    "drefcfgpath",
    "exact",
    "fsroot",
    "fsstorage",
    "fstmpdir",
    "latest",
    "match",
    "mkclosure",
    "mkcontext",
    "mkdrv_",
    "mkname",
    "mkrealization",
    "mkrefpath",
    "reserved",
    "resolve",
    "rrefattrs",
    "rrefdata",
    "rrefpath2path",
    "setregistry",
    "setstorage",
    "storagename",
    "texthash",
    "tlregistry",
    "tlstorage",
    "trimhash",
    "unpack_closure_arg_",
]
