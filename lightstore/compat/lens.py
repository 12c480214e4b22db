"""Lenses: dotted navigation through configs, following dependencies.

``mklens(rref).ref_anneal.out.syspath`` starts at a realization, steps into
its config field ``ref_anneal`` (a DRef, resolved through the realization's
context to the dependency's RRef), then into that config's ``out`` field (a
RefPath) and ends with its system path. A lens ends with ``.val``,
``.optval``, ``.syspath``, ``.rref``, ``.dref``, ``.refpath`` or ``.contents``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from typing import Any, NamedTuple

from lightstore.compat.current import resolve_store
from lightstore.compat.wrapper import Build
from lightstore.engine.registry import Closure, pending_config
from lightstore.foundation.config import resolve_selfrefs
from lightstore.foundation.errors import (
    InvalidReferenceError,
    LightstoreError,
    UnknownReferenceError,
    UsageError,
)
from lightstore.foundation.refs import (
    Context,
    DRef,
    Path,
    RefPath,
    RRef,
    check_relpath,
    isdref,
    isrefpath,
    isrref,
    rref2dref,
)
from lightstore.store import LocalStore


@dataclass(frozen=True)
class _Node:
    """A value inside the config of `owner`, with what is needed to resolve references in it."""

    store: LocalStore
    value: Any
    owner: DRef | None = None
    owner_rref: RRef | None = None
    deps: Context | None = None
    build: Build | None = None
    index: int = 0


def _config(store: LocalStore, dref: DRef) -> dict[str, Any]:
    """A derivation's config, also right after `mkdrv` (before `instantiate` records it)."""

    pending = pending_config(store, dref)
    return pending if pending is not None else store.config(dref)


def _resolve_dref(node: _Node, dref: DRef) -> RRef | None:
    """The realization of `dref` that the node's context designates, if any."""
    if dref == node.owner and node.owner_rref is not None:
        return node.owner_rref
    if node.build is not None and dref == node.build.dref:
        return None
    if node.deps is not None and dref in node.deps:
        rrefs = node.deps[dref]
        if len(rrefs) != 1:
            raise InvalidReferenceError(
                f"{dref} has {len(rrefs)} realizations in this context; a lens cannot pick one"
            )
        return rrefs[0]
    return None


def _enter(node: _Node) -> _Node:
    """Turn a reference-valued node into the node of the referenced config."""
    v = node.value
    store = node.store
    if isinstance(v, dict):
        return node
    if isrref(v):
        rref = RRef(v)
        dref = rref2dref(rref)
        return _Node(
            store, resolve_selfrefs(_config(store, dref), dref), dref, rref, store.context(rref)
        )
    if isrefpath(v):
        # A RefPath to a JSON file holding a dict: navigate into that dict (as Pylightnix does).
        import json

        path = _syspath(node)
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
        except (OSError, ValueError) as e:
            raise InvalidReferenceError(f"cannot read {v} ({path}) as JSON: {e}") from e
        if not isinstance(data, dict):
            raise InvalidReferenceError(f"{v} ({path}) holds no JSON dict")
        return replace(node, value=data)
    if isdref(v):
        dref = DRef(v)
        if node.build is not None and dref == node.build.dref:
            b = node.build
            return _Node(store, b.config, dref, None, b.context, b, node.index)
        chosen = _resolve_dref(node, dref)
        if chosen is not None:
            return _enter(replace(node, value=chosen, build=None))
        # The lens's context goes on: it may resolve what this config refers to.
        return _Node(store, resolve_selfrefs(_config(store, dref), dref), dref, deps=node.deps)
    raise UsageError(f"cannot navigate into {v!r}: it is neither a config, a DRef nor an RRef")


def _step(node: _Node, key: str) -> _Node:
    inner = _enter(node)
    cfg = inner.value
    if key not in cfg:
        raise UnknownReferenceError(
            f"field {key!r} not found in the config of {inner.owner or 'the dict'}; "
            f"fields: {', '.join(sorted(cfg))}",
            key,
        )
    return replace(inner, value=cfg[key])


def _syspath(node: _Node) -> Path:
    v = node.value
    store = node.store
    if isrefpath(v):
        dref, rest = DRef(v[0]), check_relpath(v[1:], f"RefPath {v!r}")
        if node.build is not None and dref == node.build.dref:
            return node.build.path(v, node.index)
        rref = _resolve_dref(node, dref)
        if rref is None:
            # As Pylightnix: a derivation's realizations are not the lens's to choose.
            raise InvalidReferenceError(
                f"{v} points into {dref}, and the lens has no realization context to "
                "choose its realization; start the lens from an RRef or a Build"
            )
        return Path(os.path.join(store.rref_path(rref), *rest))
    if isrref(v):
        return store.rref_path(RRef(v))
    if isdref(v):
        dref = DRef(v)
        if node.build is not None and dref == node.build.dref:
            return node.build.outpaths[node.index]
        chosen = _resolve_dref(node, dref)
        return store.rref_path(chosen) if chosen is not None else store.dref_path(dref)
    if isinstance(v, str) and os.path.isabs(v):
        return Path(v)
    raise InvalidReferenceError(f"{v!r} is not a path, a RefPath, a DRef or an RRef")


class Lens:
    """A position inside a config tree; see the module docstring."""

    _node: _Node
    _path: tuple[str, ...]
    _start: Any
    _ctx: LensContext | None

    def __init__(
        self,
        node: _Node,
        path: tuple[str, ...] = (),
        start: Any = None,
        ctx: LensContext | None = None,
    ) -> None:
        object.__setattr__(self, "_node", node)
        object.__setattr__(self, "_path", path)
        object.__setattr__(self, "_start", node.value if start is None else start)
        object.__setattr__(self, "_ctx", ctx)

    def __getattr__(self, key: str) -> Lens:
        if key.startswith("__"):
            raise AttributeError(key)
        return self.get(key)

    def __setattr__(self, key: str, value: Any) -> None:
        if key == "val":
            mutate(self, value, lens_repr(self, "val"))
            return
        raise UsageError(f"lens fields cannot be assigned ({key}); use mklens(d).{key}.val = ...")

    def get(self, key: str) -> Lens:
        """The lens of field `key`."""
        return Lens(_step(self._node, key), (*self._path, key), self._start, self._ctx)

    @property
    def closure(self) -> Closure:
        """A closure whose result is the DRef here (from the closure the lens started at)."""
        v = self._node.value
        if not isdref(v):
            raise InvalidReferenceError(f"lens {'.'.join(self._path)} is {v!r}, not a DRef")
        if self._ctx is None or self._ctx.closure is None:
            raise UsageError("lens.closure needs a lens made from a Closure (mklens(closure))")
        c = self._ctx.closure
        return type(c)(DRef(v), [DRef(v)], c.derivations, c.store)

    def __repr__(self) -> str:
        return f"Lens({'.'.join(self._path) or '<start>'} = {self._node.value!r})"

    @property
    def optval(self) -> Any:
        """The raw value here (None allowed)."""
        return self._node.value

    @property
    def val(self) -> Any:
        """The raw value here; raises if it is None."""
        if self._node.value is None:
            raise LightstoreError(
                f"lens {'.'.join(self._path)} is None; use .optval to accept None"
            )
        return self._node.value

    @property
    def dref(self) -> DRef:
        """The DRef here (an RRef is turned into its DRef)."""
        v = self._node.value
        if isdref(v):
            return DRef(v)
        if isrref(v):
            return rref2dref(v)
        if isrefpath(v):
            return DRef(v[0])
        if self._node.owner is not None and isinstance(v, dict):
            return self._node.owner
        raise InvalidReferenceError(f"{v!r} is not a DRef")

    @property
    def rref(self) -> RRef:
        """The RRef here: a DRef is resolved through the realization context."""
        v = self._node.value
        if isrref(v):
            return RRef(v)
        if isinstance(v, dict) and self._node.owner_rref is not None:
            return self._node.owner_rref
        dref = self.dref
        rref = _resolve_dref(self._node, dref)
        if rref is None:  # as in Pylightnix: only a context chooses a realization
            raise InvalidReferenceError(
                f"{dref} has no realization in the lens's context; start the lens from an "
                "RRef or a Build"
            )
        return rref

    @property
    def refpath(self) -> RefPath:
        """The RefPath here."""
        v = self._node.value
        if not isrefpath(v):
            raise InvalidReferenceError(f"{v!r} is not a RefPath")
        return list(v)

    @property
    def syspath(self) -> Path:
        """The system path this value designates."""
        return _syspath(self._node)

    @property
    def contents(self) -> str:
        """The text of the file this value designates."""
        p = self.syspath
        v = self._node.value
        if isrefpath(v) or isrref(v) or isdref(v):
            # A store object's file may be a symlink (realizers link into their
            # dependencies): it may lead anywhere in the store, never outside it.
            root = os.path.realpath(self._node.store.root)
            if not os.path.realpath(p).startswith(root + os.sep):
                raise InvalidReferenceError(
                    f"{p} leads outside the store {root} (a symlink); read it yourself if "
                    "you trust it"
                )
        if not os.path.isfile(p):
            raise InvalidReferenceError(f"{p} is not a file")
        with open(p, encoding="utf-8") as f:
            return f.read()


class LensContext(NamedTuple):
    """What a lens resolves references with: storage, a build's output folder,
    a realization context and the closure it started from."""

    S: Any
    build_path: Path | None
    context: Context | None
    closure: Closure | None


def mklens(
    x: Any,
    o: Any = None,
    b: Build | None = None,
    rref: RRef | None = None,
    ctx: Context | None = None,
    closure: Closure | None = None,
    build_output_idx: int = 0,
    S: Any = None,
    r: Any = None,
) -> Lens:
    """A lens starting at a DRef, RRef, Build, config dict or Closure (Pylightnix's signature).

    `b` gives a build's context (paths of the build's own outputs and of the
    dependencies it uses; a Build given as `o` counts as `b`), `rref` or `ctx`
    a realization context for resolving DRefs, `S` the storage and `r` a
    Registry (a DRef's config is readable right after `mkdrv`).
    Raises LightstoreError for a start it cannot navigate.
    """
    if isinstance(o, Build):
        o, b = None, o
    if S is None and r is not None:
        S = r.S
    if isinstance(x, Build):
        node = _Node(x.store, x.dref, build=x, index=build_output_idx)
        return Lens(node, ctx=LensContext(x.S, None, x.context, None))
    if isinstance(x, Closure):
        lens = mklens(x.result, o, b, rref, ctx, x, build_output_idx, S or x.store, r)
        return lens
    store = b.store if b is not None and S is None else resolve_store(S)
    if ctx is None and rref is not None:
        parsed = RRef(rref)
        ctx = {**store.context(parsed), rref2dref(parsed): [parsed]}
    if ctx is None and b is not None:
        ctx = b.context
    if isinstance(x, dict | str):
        node = _Node(
            store,
            x,
            build=b,
            owner=b.dref if b else None,
            deps=ctx,
            index=build_output_idx,
        )
        return Lens(node, ctx=LensContext(store.settings, o, ctx, closure))
    raise LightstoreError(
        f"mklens cannot start from {type(x).__name__}; give a DRef, RRef, Build, dict or Closure"
    )


def _lens_node(v: Any, ctx: LensContext) -> _Node:
    store = resolve_store(ctx.S)
    return _Node(store, v, deps=ctx.context)


def val2dict(v: Any, ctx: LensContext) -> dict[str, Any] | None:
    """The dict a lens value stands for (a config, a JSON file, the dict itself), or None."""
    if isinstance(v, Build):
        return dict(v.config)
    if isinstance(v, Closure):
        if len(v.targets) != 1:
            raise UsageError("a lens supports closures with one target")
        return val2dict(v.targets[0], ctx)
    if isinstance(v, dict):
        return v
    if isrefpath(v):
        import json

        with open(val2path(v, ctx), encoding="utf-8") as f:
            d = json.load(f)
        if not isinstance(d, dict):
            raise InvalidReferenceError(f"the file of {v} holds no JSON dict")
        return d
    if isdref(v) or isrref(v):
        return dict(_enter(_lens_node(v, ctx)).value)
    return None


def val2rref(v: Any, ctx: LensContext) -> RRef:
    """The RRef a lens value stands for (a DRef is resolved through the context)."""
    if isinstance(v, Closure):
        if len(v.targets) != 1:
            raise UsageError("a lens supports closures with one target")
        return val2rref(v.targets[0], ctx)
    if isrref(v):
        return RRef(v)
    if isdref(v):
        if ctx.context is None or v not in ctx.context:
            raise UnknownReferenceError(
                f"cannot resolve {v} to an RRef without a context holding it", v
            )
        rrefs = ctx.context[DRef(v)]
        if len(rrefs) != 1:
            raise InvalidReferenceError(f"{v} has {len(rrefs)} realizations in the context")
        return rrefs[0]
    raise InvalidReferenceError(f"a lens expected an RRef, got {v!r}")


def val2path(v: Any, ctx: LensContext) -> Path:
    """The system path a lens value stands for."""
    if isinstance(v, Closure):
        if len(v.targets) != 1:
            raise UsageError("a lens supports closures with one target")
        return val2path(v.targets[0], ctx)
    if isinstance(v, Build):
        if ctx.build_path is not None:
            return ctx.build_path
        return v.outpaths[0]
    if (
        isrefpath(v)
        and ctx.build_path is not None
        and (ctx.context is None or v[0] not in ctx.context)
    ):
        return Path(os.path.join(ctx.build_path, *v[1:]))
    return _syspath(_lens_node(v, ctx))


def traverse(l: Lens, hint: str) -> Any:  # noqa: E741
    """The value a lens points at (`hint` names the lens in error messages)."""
    return l._node.value


def mutate(l: Lens, v: Any, hint: str) -> None:  # noqa: E741
    """Set the value a lens points at; only lenses started at a plain dict can do that.

    Raises UsageError otherwise, or for a field the dict does not have.
    """
    if not l._path:
        raise UsageError(f"{hint}: no field to set")
    target = l._start
    if not isinstance(target, dict):
        raise UsageError(
            f"{hint}: only a lens made from a dict can be changed, not from {target!r}"
        )
    for step in l._path[:-1]:
        target = target.get(step) if isinstance(target, dict) else None
        if not isinstance(target, dict):
            raise UsageError(f"{hint}: {step!r} is not a dict of the lens's dict")
    if l._path[-1] not in target:
        raise UsageError(
            f"{hint}: field {l._path[-1]!r} does not exist; a lens sets existing fields"
        )
    target[l._path[-1]] = v


def lens_repr(l: Lens, accessor: str) -> str:  # noqa: E741
    """How a lens reads in code: ``mklens(x).a.b.<accessor>``."""
    return f"mklens(x).{'.'.join([*l._path, accessor])}"


class Attrs:
    """A read-only view of a realization's config whose references are resolved:
    DRefs become `Attrs` of the dependency realization, RefPaths become system paths.
    `_rref` is the realization."""

    _node: _Node

    def __init__(self, node: _Node) -> None:
        object.__setattr__(self, "_node", _enter(node))

    @property
    def _rref(self) -> RRef | None:
        return self._node.owner_rref

    def __getattr__(self, key: str) -> Any:
        if key.startswith("__"):
            raise AttributeError(key)
        return unroll_value(_step(self._node, key))

    def __setattr__(self, key: str, value: Any) -> None:
        raise AttributeError("Attrs are read-only")

    def __dir__(self) -> list[str]:
        return sorted(self._node.value)

    def __repr__(self) -> str:
        return f"Attrs({self._node.owner_rref or self._node.owner})"


def unroll_value(node: _Node, always_multiref: bool = False) -> Any:
    """A config value as a stage function receives it (see `Attrs`)."""
    v = node.value
    if isdref(v):
        dref = DRef(v)
        if node.deps is not None and dref in node.deps and len(node.deps[dref]) != 1:
            return [Attrs(replace(node, value=r)) for r in node.deps[dref]]
        attrs = Attrs(node)
        return [attrs] if always_multiref else attrs
    if isrefpath(v):
        dref = DRef(v[0])
        if node.deps is not None and dref in node.deps and len(node.deps[dref]) != 1:
            rest = check_relpath(v[1:], f"RefPath {v!r}")
            return [Path(os.path.join(node.store.rref_path(r), *rest)) for r in node.deps[dref]]
        return _syspath(node)
    if isinstance(v, list):
        return [unroll_value(replace(node, value=x), always_multiref) for x in v]
    if isinstance(v, dict):
        return {k: unroll_value(replace(node, value=x), always_multiref) for k, x in v.items()}
    return v


def build_node(b: Build, index: int = 0) -> _Node:
    """The node of a build's own config, for output `index`."""
    return _Node(b.store, b.config, b.dref, None, b.context, b, index)


__all__ = [
    "Attrs",
    "Lens",
    "LensContext",
    "lens_repr",
    "mklens",
    "mutate",
    "traverse",
    "val2dict",
    "val2path",
    "val2rref",
]
