"""Lenses: dotted navigation through configs, following dependencies.

``mklens(rref).ref_anneal.out.syspath`` starts at a realization, steps into
its config field ``ref_anneal`` (a DRef, resolved through the realization's
context to the dependency's RRef), then into that config's ``out`` field (a
RefPath) and ends with its system path. A lens ends with ``.val``,
``.optval``, ``.syspath``, ``.rref``, ``.dref``, ``.refpath`` or ``.contents``.
"""

from __future__ import annotations

import os
from typing import Any, NamedTuple

from lightstore.compat.config_nodes import (
    Attrs,
    ConfigNode,
    context_rref,
    enter_config,
    no_context_error,
    node_syspath,
    step_into,
)
from lightstore.compat.current import store_of
from lightstore.compat.wrapper import Build
from lightstore.engine.registry import Closure
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
    isdref,
    isrefpath,
    isrref,
    rref2dref,
)


class Lens:
    """A position inside a config tree; see the module docstring."""

    _node: ConfigNode
    _path: tuple[str, ...]
    _start: Any
    _ctx: LensContext | None

    def __init__(
        self,
        node: ConfigNode,
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
        return Lens(step_into(self._node, key), (*self._path, key), self._start, self._ctx)

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
        rref = context_rref(self._node, dref)
        if rref is None:
            raise no_context_error(dref, dref)
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
        return node_syspath(self._node)

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
        node = ConfigNode(x.store, x.dref, build=x, index=build_output_idx)
        return Lens(node, ctx=LensContext(x.S, None, x.context, None))
    if isinstance(x, Closure):
        lens = mklens(x.result, o, b, rref, ctx, x, build_output_idx, S or x.store, r)
        return lens
    store = b.store if b is not None and S is None else store_of(S)
    if ctx is None and rref is not None:
        parsed = RRef(rref)
        ctx = {**store.context(parsed), rref2dref(parsed): [parsed]}
    if ctx is None and b is not None:
        ctx = b.context
    if isinstance(x, dict | str):
        node = ConfigNode(
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


def _lens_node(v: Any, ctx: LensContext) -> ConfigNode:
    store = store_of(ctx.S)
    return ConfigNode(store, v, deps=ctx.context)


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
        return dict(enter_config(_lens_node(v, ctx)).value)
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
    return node_syspath(_lens_node(v, ctx))


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
