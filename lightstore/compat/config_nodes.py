"""Navigating configs: a `ConfigNode` is a value inside the config of a derivation; stepping
into its fields follows references (a DRef through the realization context to the
dependency's config, a RefPath to its file) and ends at values or system paths. `Attrs`
is the resolved, read-only view of a config that stage functions receive; lenses
(`lightstore.compat.lens`) navigate the same way.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from typing import Any

from lightstore.compat.wrapper import Build
from lightstore.engine.registry import pending_config
from lightstore.foundation.config import replace_selfrefs
from lightstore.foundation.errors import (
    InvalidReferenceError,
    UnknownReferenceError,
    UsageError,
)
from lightstore.foundation.refs import (
    Context,
    DRef,
    Path,
    RRef,
    check_relpath,
    isdref,
    isrefpath,
    isrref,
    rref2dref,
)
from lightstore.store import LocalStore


@dataclass(frozen=True)
class ConfigNode:
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


def context_rref(node: ConfigNode, dref: DRef) -> RRef | None:
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


def no_context_error(what: str, dref: DRef) -> InvalidReferenceError:
    # As Pylightnix: a derivation's realizations are not the lens's to choose.
    return InvalidReferenceError(
        f"{what} points into {dref}, and the lens has no realization context to "
        "choose its realization; start the lens from an RRef or a Build"
    )


def enter_config(node: ConfigNode) -> ConfigNode:
    """Turn a reference-valued node into the node of the referenced config."""
    v = node.value
    store = node.store
    if isinstance(v, dict):
        return node
    if isrref(v):
        rref = RRef(v)
        dref = rref2dref(rref)
        return ConfigNode(
            store, replace_selfrefs(_config(store, dref), dref), dref, rref, store.context(rref)
        )
    if isrefpath(v):
        # A RefPath to a JSON file holding a dict: navigate into that dict (as Pylightnix does).
        import json

        path = node_syspath(node)
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
            return ConfigNode(store, b.config, dref, None, b.context, b, node.index)
        chosen = context_rref(node, dref)
        if chosen is not None:
            return enter_config(replace(node, value=chosen, build=None))
        # The lens's context goes on: it may resolve what this config refers to.
        return ConfigNode(store, replace_selfrefs(_config(store, dref), dref), dref, deps=node.deps)
    raise UsageError(f"cannot navigate into {v!r}: it is neither a config, a DRef nor an RRef")


def step_into(node: ConfigNode, key: str) -> ConfigNode:
    inner = enter_config(node)
    cfg = inner.value
    if key not in cfg:
        raise UnknownReferenceError(
            f"field {key!r} not found in the config of {inner.owner or 'the dict'}; "
            f"fields: {', '.join(sorted(cfg))}",
            key,
        )
    return replace(inner, value=cfg[key])


def node_syspath(node: ConfigNode) -> Path:
    v = node.value
    store = node.store
    if isrefpath(v):
        dref, rest = DRef(v[0]), check_relpath(v[1:], f"RefPath {v!r}")
        if node.build is not None and dref == node.build.dref:
            return node.build.path(v, node.index)
        rref = context_rref(node, dref)
        if rref is None:
            raise no_context_error(str(v), dref)
        return Path(os.path.join(store.rref_path(rref), *rest))
    if isrref(v):
        return store.rref_path(RRef(v))
    if isdref(v):
        dref = DRef(v)
        if node.build is not None and dref == node.build.dref:
            return node.build.outpaths[node.index]
        chosen = context_rref(node, dref)
        return store.rref_path(chosen) if chosen is not None else store.dref_path(dref)
    if isinstance(v, str) and os.path.isabs(v):
        return Path(v)
    raise InvalidReferenceError(f"{v!r} is not a path, a RefPath, a DRef or an RRef")


class Attrs:
    """A read-only view of a realization's config whose references are resolved:
    DRefs become `Attrs` of the dependency realization, RefPaths become system paths.
    `_rref` is the realization."""

    _node: ConfigNode

    def __init__(self, node: ConfigNode) -> None:
        object.__setattr__(self, "_node", enter_config(node))

    @property
    def _rref(self) -> RRef | None:
        return self._node.owner_rref

    def __getattr__(self, key: str) -> Any:
        if key.startswith("__"):
            raise AttributeError(key)
        return unroll_value(step_into(self._node, key))

    def __setattr__(self, key: str, value: Any) -> None:
        raise AttributeError("Attrs are read-only")

    def __dir__(self) -> list[str]:
        return sorted(self._node.value)

    def __repr__(self) -> str:
        return f"Attrs({self._node.owner_rref or self._node.owner})"


def unroll_value(node: ConfigNode, always_multiref: bool = False) -> Any:
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
        return node_syspath(node)
    if isinstance(v, list):
        return [unroll_value(replace(node, value=x), always_multiref) for x in v]
    if isinstance(v, dict):
        return {k: unroll_value(replace(node, value=x), always_multiref) for k, x in v.items()}
    return v


def build_node(b: Build, index: int = 0) -> ConfigNode:
    """The node of a build's own config, for output `index`."""
    return ConfigNode(b.store, b.config, b.dref, None, b.context, b, index)
