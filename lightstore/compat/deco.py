"""The rest of Pylightnix's ``pylightnix.deco``: the building blocks of
`autostage` (`autodrv_`, `autodrv`, `autostage_`, `wrapsig`) and unrolling
realized configs into attribute objects (`unroll`, `unrollR`, `realizeU`).

Dependencies unroll lazily (an attribute is resolved when it is read), so
`max_depth` has nothing to limit; it is accepted for Pylightnix code.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import replace
from types import SimpleNamespace
from typing import Any

from lightstore.compat.autostage import SOURCE_FIELD, sources_hash
from lightstore.compat.config_nodes import Attrs, ConfigNode, build_node, unroll_value
from lightstore.compat.current import store_of
from lightstore.compat.realize import realize
from lightstore.compat.registry import Registry, current_registry_or_new, mkdrv
from lightstore.compat.wrapper import Build, build_wrapper
from lightstore.engine.matchers import match_latest
from lightstore.engine.realize import unpack_closure
from lightstore.engine.registry import Matcher
from lightstore.foundation.errors import UsageError
from lightstore.foundation.refs import Context, DRef, map_drefs


def unroll(
    ctx: Context,
    dref: DRef,
    b: Build | None,
    rindex: int,
    max_depth: int | None = None,
    always_multiref: bool = False,
    S: Any = None,
) -> Any:
    """The config of `dref` as attributes, references resolved through `ctx`.

    With the build `b` of `dref`, promises are paths in its output `rindex`.
    """
    if b is not None and dref == b.dref:
        return Attrs(build_node(b, rindex))
    store = b.store if b is not None else store_of(S)
    return Attrs(ConfigNode(store, DRef(dref), deps=ctx))


def unrollR(
    sr: Any,
    ctx: Context,
    max_depth: int | None = None,
    always_multiref: bool = False,
    S: Any = None,
) -> Any:
    """A stage result with each DRef replaced by the `Attrs` of its realization(s) in `ctx`
    (a list when there are several, or always with `always_multiref`)."""
    store = store_of(S)

    def attrs_of(dref: DRef) -> Any:
        attrs = [Attrs(ConfigNode(store, r, deps=ctx)) for r in ctx.get(dref, [])]
        return attrs[0] if len(attrs) == 1 and not always_multiref else attrs

    return map_drefs(sr, attrs_of)


def realizeU(
    arg: Any,
    *args: Any,
    max_depth: int | None = None,
    always_multiref: bool = False,
    **kwargs: Any,
) -> Any:
    """`realize`, then `unrollR` of the result: the stage result as attribute objects."""
    result, closure = unpack_closure(arg)
    r, _, ctx = realize((result, closure), *args, **kwargs)
    return unrollR(r, ctx, max_depth, always_multiref, S=closure.store)


def wrapsig(
    f: Callable[..., Any], extargs: dict[str, Any]
) -> tuple[dict[str, Any], Callable[[Build, dict[str, Any]], Any]]:
    """``(arguments, call)``: `f`'s keyword defaults plus `extargs`, and a function
    calling `f` with those of them it takes (and `build`/`rindex` if it takes them).

    Raises UsageError if `extargs` repeats one of `f`'s defaults.
    """
    sig = inspect.signature(f)
    args = {
        k: p.default for k, p in sig.parameters.items() if p.default is not inspect.Parameter.empty
    }
    common = set(args) & set(extargs)
    if common:
        raise UsageError(f"conflicting arguments: {sorted(common)}")
    args.update(extargs)

    def _call(build: Build, a: dict[str, Any]) -> Any:
        given = {k: v for k, v in a.items() if k in sig.parameters}
        if "build" in sig.parameters:
            given["build"] = build
        return f(**given)

    return args, _call


def autodrv_(
    *,
    nouts: int = 1,
    matcher: Matcher | None = None,
    always_multiref: bool = False,
    sourcedeps: list[Any] | None = None,
    r: Registry | None = None,
    **kwargs: Any,
) -> Callable[[Callable[[Build, list[Any]], None]], DRef]:
    """Decorator: register a derivation at once; its config is `kwargs` (stage values are
    instantiated) and its realizer calls ``f(build, [args per output])``."""
    chosen = matcher if matcher is not None else match_latest(nouts)

    def deco(f: Callable[[Build, list[Any]], None]) -> DRef:
        reg = current_registry_or_new(r)
        cfg: dict[str, Any] = {}
        for k, v in kwargs.items():
            if k != "r":
                cfg[k] = v(r=reg) if callable(v) else v
        cfg[SOURCE_FIELD] = sources_hash([f, *(sourcedeps or [])])

        def make(b: Build) -> None:
            arglist = []
            for i in range(len(b.outpaths)):
                node = build_node(b, i)
                values = {
                    k: unroll_value(replace(node, value=v), always_multiref)
                    for k, v in b.config.items()
                    if k != SOURCE_FIELD
                }
                if nouts > 1 or always_multiref:
                    values["rindex"] = i
                arglist.append(SimpleNamespace(**values))
            f(b, arglist)

        return mkdrv(cfg, chosen, build_wrapper(make, nouts=nouts), r=reg)

    return deco


def autodrv(*args: Any, sourcedeps: list[Any] | None = None, **kwargs: Any) -> Any:
    """Decorator: like `autodrv_`, but calls ``f(build=b, **args)`` once per output."""

    def deco(f: Callable[..., None]) -> DRef:
        def _fn(build: Build, arglist: list[Any]) -> None:
            for a in arglist:
                f(build=build, **vars(a))

        _fn.__wrapped__ = f  # type: ignore[attr-defined]
        return autodrv_(*args, sourcedeps=[f, *(sourcedeps or [])], **kwargs)(_fn)

    return deco


def autostage_(
    f: Callable[[Build, list[Any]], None] | None = None,
    *,
    nouts: int = 1,
    matcher: Matcher | None = None,
    always_multiref: bool = False,
    sourcedeps: list[Any] | None = None,
    r: Registry | None = None,
    **decokw: Any,
) -> Any:
    """Decorator: ``f(build, arglist)`` becomes a stage ``stage(r=None, **overrides) -> DRef``."""
    r2 = r

    def deco(fn: Callable[[Build, list[Any]], None]) -> Callable[..., DRef]:
        def stage(r: Registry | None = None, **stagekw: Any) -> DRef:
            kw = {**decokw, **stagekw}
            return autodrv_(
                nouts=nouts,
                matcher=matcher,
                always_multiref=always_multiref,
                sourcedeps=[fn, *(sourcedeps or [])],
                r=r or r2,
                **kw,
            )(fn)

        stage.__name__ = getattr(fn, "__name__", "stage")
        return stage

    return deco if f is None else deco(f)


__all__ = [
    "autodrv",
    "autodrv_",
    "autostage_",
    "realizeU",
    "unroll",
    "unrollR",
    "wrapsig",
]
