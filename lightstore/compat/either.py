"""Pylightnix's ``pylightnix.either``: realizations that record failure instead of raising.

A stage made with `mkdrvE` never raises from its realizer: if it fails, the
result is a LEFT realization, a folder holding ``either_status.txt`` with the
traceback, and every stage depending on it becomes LEFT too without running
(its status names the failed dependency). Each failure is also a build record
with status ``failed`` and the error text, so failed experiments are visible in
SQL (see docs/schema.md, "Failed experiments").

One deliberate difference: when a derivation has RIGHT realizations, the
matcher chooses among them and ignores LEFT ones, so after fixing a stage,
``realizeE(..., force_rebuild=True)`` gives RIGHT from then on (Pylightnix
keeps answering LEFT while any LEFT realization exists).
"""

from __future__ import annotations

import dataclasses
import os
import traceback
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from lightstore.compat.build import output_validate
from lightstore.compat.current import store_of
from lightstore.compat.output import Output, with_val
from lightstore.compat.realize import realize, realize1
from lightstore.compat.registry import Registry, current_registry_or_new, mkdrv
from lightstore.compat.types import Matcher, MatcherO, Realizer
from lightstore.engine.realize import unpack_closure
from lightstore.facade import Store
from lightstore.foundation.config import canonical_json
from lightstore.foundation.errors import UsageError
from lightstore.foundation.hashing import canonical_context, context_hash
from lightstore.foundation.refs import Context, DRef, Path, RRef, parse_rref

_REF = TypeVar("_REF")

#: The text of an exception (its traceback).
ExceptionText = str
#: The file a LEFT realization holds: the error text.
STATUS_FILE = "either_status.txt"


class Either(Generic[_REF]):
    """Either RIGHT (`right`: an `Output` of folders or realizations) or LEFT
    (`left`: ``(folders or realizations, error text)``)."""

    def __init__(
        self,
        right: Output[_REF] | None = None,
        left: tuple[list[_REF], ExceptionText] | None = None,
    ) -> None:
        if right is None and left is None:
            raise UsageError("an Either is RIGHT or LEFT: give `right` or `left`")
        self.right = right
        self.left = left

    def __repr__(self) -> str:
        if self.right is not None:
            return f"Either(right={self.right.val!r})"
        return f"Either(left={either_paths(self)!r})"


def mkright(o: Output[_REF]) -> Either[_REF]:
    """A RIGHT Either."""
    return Either(o, None)


def mkleft(paths: list[Path], exc: ExceptionText) -> Either[Path]:
    """A LEFT Either: writes `exc` into ``either_status.txt`` of each folder.

    Raises UsageError if a folder already has that file.
    """
    for p in paths:
        status = os.path.join(p, STATUS_FILE)
        if os.path.lexists(status):
            raise UsageError(f"{p} already holds the reserved file {STATUS_FILE}")
        with open(status, "w", encoding="utf-8") as f:
            f.write(exc)
    return Either(None, (list(paths), exc))


def either_paths(e: Either[_REF]) -> list[_REF]:
    """The folders or realizations of an Either, RIGHT or LEFT."""
    if e.right is not None:
        return list(e.right.val)
    if e.left is None:
        raise UsageError("an Either is RIGHT or LEFT")
    return list(e.left[0])


def either_isRight(e: Either[Any]) -> bool:
    """True for RIGHT."""
    return e.right is not None


def either_isLeft(e: Either[Any]) -> bool:
    """True for LEFT."""
    return e.left is not None


def either_status(e: Either[Any]) -> ExceptionText | None:
    """The error text of a LEFT, None for RIGHT."""
    return e.left[1] if e.left is not None else None


def _status(store: Store, rref: RRef) -> str | None:
    try:
        with open(os.path.join(store.rref_path(rref), STATUS_FILE), encoding="utf-8") as f:
            return f.read()
    except FileNotFoundError:
        return None


def either_loadR(rrefs: list[RRef], S: Any) -> Either[RRef]:
    """LEFT (all of `rrefs`, with their error texts) if any of them is LEFT, else RIGHT."""
    store = store_of(S)
    errors = [s for r in rrefs if (s := _status(store, parse_rref(r))) is not None]
    if errors:
        return Either(None, (list(rrefs), "\n".join(errors)))
    return Either(Output(rrefs), None)


def either_validate(dref: DRef, e: Either[Path], S: Any = None) -> list[Path]:
    """The folders of `e`; a RIGHT one is checked against the promises (PromiseError)."""
    if e.right is not None:
        return output_validate(dref, e.right, S)
    if e.left is None or not e.left[0]:
        raise UsageError(f"a LEFT result of {dref} must have at least one folder")
    return list(e.left[0])


def _record_failure(store: Store, dref: DRef, ctx: Context, error: str) -> None:
    """A failed build record with the error text: how failures show in SQL."""
    cctx = canonical_context(ctx)
    build_id = store.catalogue.start_build(dref, context_hash(cctx), canonical_json(cctx), [])
    store.catalogue.finish_build(build_id, "failed", error)


def either_realizer(f: Callable[[Any, DRef, Context, Any], Output[Path]]) -> Realizer:
    """A realizer that turns failure into a LEFT result (see the module docstring).

    A dependency that is LEFT makes the result LEFT without running `f`.
    """

    def _either(S: Any, dref: DRef, ctx: Context, ra: Any) -> Either[Path]:
        store = store_of(S)
        for dep, rrefs in sorted(ctx.items()):
            e = either_loadR(list(rrefs or []), store)
            if e.left is not None:
                text = f"dependency {dep} failed:\n{e.left[1]}"
                _record_failure(store, dref, ctx, text)
                return mkleft([store.new_build_area("either")], text)
        try:
            return mkright(f(store.settings, dref, ctx, ra))
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception:
            text = traceback.format_exc()
            _record_failure(store, dref, ctx, text)
            return mkleft([store.new_build_area("either")], text)

    def _r(S: Any, dref: DRef, ctx: Context, ra: Any) -> list[str]:
        return list(either_validate(dref, _either(S, dref, ctx, ra), S))

    _r.__name__ = getattr(f, "__name__", "realizer")
    return _r


def either_matcher(m: MatcherO) -> Matcher:
    """A matcher over RIGHT realizations (`m` gets them as an `Output`); LEFT ones
    are used only while no RIGHT one exists."""

    def _matcher(S: Any, rrefs: list[RRef]) -> list[RRef] | None:
        store = store_of(S)
        right = [r for r in rrefs if _status(store, r) is None]
        left = [r for r in rrefs if r not in set(right)]
        if right:
            chosen = m(S, Output(right))
            if chosen is not None:
                return list(chosen.val)
        return left or None

    return _matcher


def _as_matcher_o(m: Any) -> MatcherO:
    """A matcher over `Output` values from any matcher (mkdrv's matchers take either)."""

    def _m(S: Any, o: Output[RRef]) -> Output[RRef] | None:
        res = m(S, with_val(list(o.val)))
        if res is None:
            return None
        return res if isinstance(res, Output) else Output(res)

    return _m


def mkdrvE(
    config: Any,
    matcher: Any,
    realizer: Any,
    m: Registry | None = None,
) -> DRef:
    """`mkdrv` for a stage whose failures become LEFT results (see the module docstring).

    `matcher` and `realizer` may be plain or `Output`-typed.
    """
    reg = current_registry_or_new(m)

    def realizer_o(S: Any, dref: DRef, ctx: Context, ra: Any) -> Output[Path]:
        res = realizer(S, dref, ctx, ra)
        return res if isinstance(res, Output) else Output(res)

    dref = mkdrv(config, either_matcher(_as_matcher_o(matcher)), either_realizer(realizer_o), reg)
    # LEFT results have no promised files: the Either realizer checks RIGHT ones itself.
    reg.derivations[dref] = dataclasses.replace(reg.derivations[dref], promises=())
    return dref


def realizeE(
    closure: Any,
    force_rebuild: bool | list[DRef] = False,
    assert_realized: list[DRef] | None = None,
    realize_args: dict[DRef, Any] | None = None,
) -> Either[RRef]:
    """`realize1`, as an Either of the one realization."""
    _, cl = unpack_closure(closure)
    rref = realize1(closure, force_rebuild, assert_realized, realize_args)
    return either_loadR([rref], cl.store)


def realizeManyE(
    arg: Any,
    force_rebuild: bool | list[DRef] = False,
    assert_realized: list[DRef] | None = None,
    realize_args: dict[DRef, Any] | None = None,
) -> Either[RRef]:
    """`realizeMany`, as an Either of the realizations of the one target."""
    _, cl = unpack_closure(arg)
    if len(cl.targets) != 1:
        raise UsageError(f"realizeManyE expects one target, the closure has {len(cl.targets)}")
    _, clo, ctx = realize(arg, force_rebuild, assert_realized, realize_args)
    return either_loadR(list(ctx[cl.targets[0]]), clo.store)


__all__ = [
    "Either",
    "ExceptionText",
    "either_isLeft",
    "either_isRight",
    "either_loadR",
    "either_matcher",
    "either_paths",
    "either_realizer",
    "either_status",
    "either_validate",
    "mkdrvE",
    "mkleft",
    "mkright",
    "realizeE",
    "realizeManyE",
]
