"""`autostage`: a plain Python function becomes a stage.

The function's keyword defaults, updated by the decorator's keywords and then
by the keywords the stage is called with, form the config. At build time the
function is called with the config's fields unrolled: promise paths
``[selfref, ...]`` arrive as system paths in the output folder, DRef
parameters as `Attrs` of the dependency's realization, and ``rindex`` gives
the output index when ``nouts > 1``. ``build`` is passed if the function
takes it.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from lightstore.compat.config_nodes import build_node, unroll_value
from lightstore.compat.registry import Registry, current_registry_or_new, mkdrv
from lightstore.compat.wrapper import Build, build_wrapper
from lightstore.engine.matchers import match_latest
from lightstore.engine.registry import Matcher
from lightstore.engine.sources import SOURCE_FIELD, sources_hash
from lightstore.foundation.errors import InvalidConfigError
from lightstore.foundation.refs import DRef

_RESERVED = ("build", "rindex")


def _defaults(f: Callable[..., Any]) -> dict[str, Any]:
    sig = inspect.signature(f)
    return {
        name: p.default
        for name, p in sig.parameters.items()
        if p.default is not inspect.Parameter.empty and name not in _RESERVED
    }


def _call(f: Callable[..., Any], kwargs: dict[str, Any]) -> Any:
    params = inspect.signature(f).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return f(**kwargs)
    return f(**{k: v for k, v in kwargs.items() if k in params})


def autostage(
    _f: Callable[..., Any] | None = None,
    *,
    nouts: int = 1,
    matcher: Matcher | None = None,
    sourcedeps: Sequence[Any] = (),
    always_multiref: bool = False,
    r: Registry | None = None,
    **params: Any,
) -> Any:
    """Decorator turning a function into a stage; use bare (``@autostage``) or with keywords.

    The stage is called as ``stage(r=None, **overrides)`` and returns a DRef.
    `matcher` defaults to ``match_latest(nouts)``. Parameters whose value is a
    stage function are instantiated with the same registry.
    """

    def decorate(f: Callable[..., Any]) -> Callable[..., DRef]:
        base = _defaults(f)
        base.update(params)
        base.setdefault("name", f.__name__)
        try:
            source = sources_hash([f, *sourcedeps])
        except InvalidConfigError:
            if sourcedeps:
                raise
            # A function typed at a prompt or made by exec has no source file;
            # without sourcedeps that only means its edits are not tracked.
            source = sources_hash([])
        chosen = matcher if matcher is not None else match_latest(nouts)

        def make(b: Build) -> None:
            for i in range(len(b.outpaths)):
                node = build_node(b, i)
                kwargs = {
                    k: unroll_value(replace(node, value=v), always_multiref)
                    for k, v in b.config.items()
                    if k != SOURCE_FIELD
                }
                kwargs["build"] = b
                if nouts > 1:
                    kwargs["rindex"] = i
                _call(f, kwargs)

        realizer = build_wrapper(make, nouts=nouts)

        def stage(
            r_: Registry | None = None, *, r: Registry | None = None, **overrides: Any
        ) -> DRef:
            reg = current_registry_or_new(r or r_ or decorator_registry)
            config: dict[str, Any] = {}
            for k, v in {**base, **overrides}.items():
                config[k] = v(r=reg) if callable(v) else v
            config[SOURCE_FIELD] = source
            return mkdrv(config, chosen, realizer, r=reg)

        stage.__name__ = f.__name__
        stage.__doc__ = f.__doc__
        stage.__wrapped__ = f  # type: ignore[attr-defined]
        return stage

    decorator_registry = r
    if _f is not None:
        return decorate(_f)
    return decorate
