"""The rest of Pylightnix's ``pylightnix.build``: build arguments, build times
from the catalogue's records, the build environment, and `Output`-typed
matchers and realizers (``output_*``, from ``pylightnix.core``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from lightstore.compat.current import store_of
from lightstore.compat.output import Output
from lightstore.compat.queries import config_of
from lightstore.compat.types import Matcher, MatcherO, Realizer, RealizerO
from lightstore.compat.utils import timestring
from lightstore.compat.wrapper import Build, BuildArgs, build_paths
from lightstore.foundation.config import mkconfig
from lightstore.foundation.errors import PromiseError, UnknownReferenceError
from lightstore.foundation.refs import Context, DRef, Path, RRef, isrefpath, parse_dref, parse_rref


def mkbuildargs(
    S: Any,
    dref: DRef,
    context: Context,
    starttime: str | None,
    stoptime: str | None,
    iarg: dict[str, Any],
    rarg: Any,
) -> BuildArgs:
    """The arguments of a `Build` (checks that `dref`'s config is readable)."""
    config_of(parse_dref(dref), S)
    return BuildArgs(S, DRef(dref), context, starttime, stoptime, iarg, rarg)


def _record(rref: RRef, S: Any) -> dict[str, Any]:
    record = store_of(S).catalogue.realization_record(parse_rref(rref))
    if record is None:
        raise UnknownReferenceError(f"{rref} is not in the store", rref)
    return record


def rrefbstart(rref: RRef, S: Any = None) -> str | None:
    """When the build of a realization started (a `timestring`), from the catalogue; None if unknown."""
    started = _record(rref, S)["build_started"]
    return None if started is None else timestring(started)


def rrefbstop(rref: RRef, S: Any = None) -> str | None:
    """When the build of a realization stopped (a `timestring`), from the catalogue; None if unknown."""
    stopped = _record(rref, S)["build_stopped"]
    return None if stopped is None else timestring(stopped)


def rrefbdelta(rref: RRef, S: Any = None) -> float | None:
    """How many seconds the build of a realization took, from the catalogue; None if unknown."""
    record = _record(rref, S)
    started, stopped = record["build_started"], record["build_stopped"]
    return None if started is None or stopped is None else float(stopped - started)


def build_environ(b: Build, env: Mapping[str, str] | None = None) -> dict[str, str]:
    """`env` (default: os.environ) plus the build's config fields as strings;
    a RefPath with one system path becomes that path."""
    acc = dict(os.environ if env is None else env)
    for k, v in b.config.items():
        if isrefpath(v):
            paths = build_paths(b, v)
            if len(paths) == 1:
                v = paths[0]
        acc[str(k)] = str(v)
    return acc


def output_validate(dref: DRef, o: Output[Path], S: Any = None) -> list[Path]:
    """The folders of `o` if each holds every path `dref`'s config promises.

    Raises PromiseError (`.failed` lists ``(folder, refpath)``) otherwise.
    """
    d = parse_dref(dref)
    promises = mkconfig(config_of(d, S)).promises
    paths = list(o.val if isinstance(o, Output) else o)
    for p in paths:
        missing = [list(pr) for pr in promises if not os.path.lexists(os.path.join(p, *pr))]
        if missing:
            raise PromiseError(
                f"the realizer of {d} did not create the promised path(s) "
                f"{', '.join('/'.join(m) for m in missing)} in {p}",
                d,
                missing,
                p,
            )
    return paths


def output_realizer(f: RealizerO) -> Realizer:
    """A realizer from a function returning `Output[Path]` (checked by `output_validate`)."""

    def _r(S: Any, dref: DRef, ctx: Context, ra: Any) -> list[str]:
        return list(output_validate(dref, f(S, dref, ctx, ra), S))

    _r.__name__ = getattr(f, "__name__", "realizer")
    return _r


def output_matcher(m: MatcherO) -> Matcher:
    """A matcher from a function of `Output[RRef]` returning `Output[RRef]` or None."""

    def _m(S: Any, rrefs: list[RRef]) -> list[RRef] | None:
        res = m(S, Output(rrefs))
        return None if res is None else list(res.val)

    _m.__name__ = getattr(m, "__name__", "matcher")
    return _m


__all__ = [
    "build_environ",
    "mkbuildargs",
    "output_matcher",
    "output_realizer",
    "output_validate",
    "rrefbdelta",
    "rrefbstart",
    "rrefbstop",
]
