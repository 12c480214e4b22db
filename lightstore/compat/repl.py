"""Step-by-step realization (`realizeSeq`) and the REPL built on it (Pylightnix's
``pylightnix.repl``, and the ``repl_*`` functions of ``pylightnix.build``).

`realizeSeq` is a driver of the one realization engine: it takes the builds
from `lightstore.engine.serial.build_requests` (the same plan `realize`
follows) and executes each with `execute`, except those it was asked to
interrupt. For those it pauses like a build in progress: it holds the build
lock of (derivation, context), so other processes needing it wait as for any
build; the catalogue shows a ``running`` build (host, pid, since when) whose
inputs gc keeps; and it yields ``(S, dref, context, derivation, realize
arg)``. The consumer sends back ``(rrefs, abort)``: realizations to use, None
to run the realizer, or ``abort=True`` to cancel. A cancelled or abandoned
pause is recorded as an ``interrupted`` build; its build folders are removed.

While a session is paused, the process holds the store's realization lock
shared, so a garbage collection elsewhere waits for it (up to its timeout).
A realization in the thread that owns a paused session cannot wait for
itself: needing the paused build there, it builds it under the session's
hold of the build lock (as Pylightnix builds it again), while other threads
and processes wait for the session. Pausing it a second time in that thread
raises UsageError.
"""

from __future__ import annotations

import time
from collections.abc import Generator, Iterable
from typing import Any

from lightstore.compat.build import output_validate
from lightstore.compat.output import Output
from lightstore.compat.paused import guard, paused
from lightstore.compat.realize import realize1
from lightstore.compat.registry import instantiate
from lightstore.compat.wrapper import Build, BuildArgs, build_markstart, build_markstop
from lightstore.engine.plan import RealizeOptions, check_matched
from lightstore.engine.realize import unpack_closure
from lightstore.engine.registry import Closure, Derivation, find_drefs
from lightstore.engine.serial import build_requests
from lightstore.engine.step import execute, run_build
from lightstore.foundation.config import canonical_json
from lightstore.foundation.errors import MatcherError, UsageError
from lightstore.foundation.files import remove_tree
from lightstore.foundation.hashing import canonical_context
from lightstore.foundation.refs import (
    Context,
    DRef,
    Path,
    RRef,
    map_drefs,
    parse_dref,
    parse_rref,
    rref2dref,
)
from lightstore.store import LocalStore, StorageSettings

#: What `realizeSeq` yields, receives and returns.
RealizeSeqGen = Generator[
    tuple[StorageSettings, DRef, Context, Derivation, Any],
    tuple[list[RRef] | None, bool],
    Context,
]

ERR_INVALID_RH = "no REPL session: pass rh= or start one with repl_realize()"
ERR_INACTIVE_RH = "the REPL session is not paused (it finished or was cancelled)"
NO_OUTPUT = (
    "no output for {dref}: give repl_continue at least one output folder (out_paths) or "
    "realization (out_rrefs), or neither to run its realizer; the session stays paused"
)

#: The session `repl_realize` started last in this process (Pylightnix's global helper).
PYLIGHTNIX_REPL_HELPER: ReplHelper | None = None


class _Paths(list[str]):
    """Output folders sent back to a paused build: publish them as its realizations."""


def _pause(
    store: LocalStore, task: Any, options: Any
) -> Generator[tuple[StorageSettings, DRef, Context, Derivation, Any], Any, list[RRef] | None]:
    """Hold the build of `task` paused; return its realizations, or None if cancelled."""
    drv: Derivation = task.derivation
    if guard(store, drv.dref, task.context_hash):
        raise UsageError(
            f"{drv.dref} is already paused in a REPL session of this thread; finish that one "
            "with repl_continue() or repl_cancel() before pausing it again"
        )
    key = store.build_locks.key(drv.dref, task.context_hash)
    with store.build_locks.hold(
        key, holders=lambda: store.catalogue.running_builds(drv.dref, task.context_hash)
    ):
        ctx = canonical_context(task.context)
        inputs = sorted({r for rrefs in ctx.values() for r in rrefs})
        build_id = store.catalogue.start_build(
            drv.dref, task.context_hash, canonical_json(ctx), inputs
        )
        started = time.time()
        closed = False
        with paused(store, key):
            try:
                reply = yield (store.settings, drv.dref, task.context, drv, task.args)
                if not (isinstance(reply, tuple) and len(reply) == 2):
                    raise UsageError(f"send (rrefs or None, abort) to realizeSeq, not {reply!r}")
                rrefs, abort = reply
                if abort:
                    store.catalogue.finish_build(build_id, "interrupted", "cancelled in the REPL")
                    closed = True
                    return None
                if rrefs is not None and not rrefs:
                    raise UsageError(NO_OUTPUT.format(dref=drv.dref))
                if isinstance(rrefs, _Paths):
                    closed = True  # publishing closes the build record, or marks it failed
                    try:
                        store.publish(
                            drv.dref, task.context, list(rrefs), drv.promises, build_id, started
                        )
                    except BaseException as e:
                        store.catalogue.finish_build(build_id, "failed", f"{type(e).__name__}: {e}")
                        raise
                    return _matched(store, drv, task.context_hash)
                if rrefs is not None:
                    given = [parse_rref(r) for r in rrefs]
                    known = store.catalogue.known_rrefs(given)
                    bad = [r for r in given if rref2dref(r) != drv.dref or r not in known]
                    if bad:
                        raise UsageError(
                            f"{bad[0]} is not a realization of {drv.dref} in this store"
                        )
                    store.catalogue.finish_build(
                        build_id, "interrupted", "continued in the REPL with existing realizations"
                    )
                    closed = True
                    return given
                closed = True
                run_build(store, drv, task.context, task.context_hash, options, build_id)
                return _matched(store, drv, task.context_hash)
            finally:
                if not closed:
                    store.catalogue.finish_build(
                        build_id, "interrupted", "REPL session abandoned while paused"
                    )


def _matched(store: LocalStore, drv: Derivation, ctx_hash: str) -> list[RRef]:
    """What the matcher chooses once a build has published; MatcherError if it is unsatisfied."""
    available = store.catalogue.realizations(drv.dref, ctx_hash)
    matched = drv.matcher(store, available)
    if matched is None:
        raise MatcherError(
            f"the matcher of {drv.dref} is still unsatisfied after its build", drv.dref
        )
    return check_matched(drv, matched, available)


def realizeSeq(
    closure: Closure,
    force_interrupt: Iterable[DRef] = (),
    assert_realized: Iterable[DRef] = (),
    realize_args: dict[DRef, Any] | None = None,
    dry_run: bool = False,
) -> RealizeSeqGen:
    """Realize `closure` step by step, pausing before each derivation of `force_interrupt`.

    See the module docstring for the protocol. Returns (as StopIteration's
    value) the chosen RRefs of every derivation, or ``{}`` if cancelled.
    Raises what `realize` raises, and UsageError for a malformed reply.
    """
    interrupt = {parse_dref(d) for d in force_interrupt}
    options = RealizeOptions(
        force_rebuild=interrupt,
        assert_realized={parse_dref(d) for d in assert_realized},
        realize_args=dict(realize_args or {}),
        dry_run=dry_run,
        guard=guard,
    )
    store = closure.store
    requests = build_requests(closure, options)
    try:
        task = next(requests)
        while True:
            outcome: Any
            try:
                if task.dref in interrupt:
                    outcome = yield from _pause(store, task, options)
                    if outcome is None:
                        return {}
                else:
                    outcome = execute(store, task, options)
            except (KeyboardInterrupt, SystemExit, GeneratorExit):
                raise
            except Exception as e:
                outcome = e
            task = requests.send(outcome)
    except StopIteration as stop:
        return stop.value
    finally:
        requests.close()


def evaluate(stage: Any, *args: Any, **kwargs: Any) -> RRef:
    """``realize1(instantiate(stage, *args, **kwargs))``."""
    return realize1(instantiate(stage, *args, **kwargs))


class ReplHelper:
    """The state of a REPL realization: the paused generator and what it paused at."""

    def __init__(
        self, gen: RealizeSeqGen | None, result: Any, store: LocalStore | None = None
    ) -> None:
        self.gen: RealizeSeqGen | None = gen
        self.S: StorageSettings | None = None
        self.dref: DRef | None = None
        self.context: Context | None = None
        self.drv: Derivation | None = None
        self.result: Any = result
        self.rarg: Any = None
        self.store = store
        #: Builds made by `repl_build` for this session (their folders go on cancel).
        self.builds: list[Build] = []

    def __repr__(self) -> str:
        state = f"paused at {self.dref}" if self.gen is not None else "finished"
        return f"ReplHelper({state})"


def _helper(rh: ReplHelper | None) -> ReplHelper:
    rh = rh if rh is not None else PYLIGHTNIX_REPL_HELPER
    if rh is None:
        raise UsageError(ERR_INVALID_RH)
    return rh


def _advance(rh: ReplHelper, reply: tuple[Any, bool] | None) -> None:
    if rh.gen is None:
        raise UsageError(ERR_INACTIVE_RH)
    try:
        step = next(rh.gen) if reply is None else rh.gen.send(reply)
        rh.S, rh.dref, rh.context, rh.drv, rh.rarg = step
    except StopIteration as stop:
        rh.gen = None
        rh.context = stop.value
    except BaseException:
        rh.gen = None
        raise


def repl_realize(
    arg: Any,
    force_interrupt: bool | list[DRef] = True,
    realize_args: dict[DRef, Any] | None = None,
) -> ReplHelper:
    """Start realizing a closure, pausing before `force_interrupt` (True: the targets).

    Returns the session (also kept as the process's current one). Raises
    UsageError for a bad `force_interrupt`, and what `realize` raises.
    """
    global PYLIGHTNIX_REPL_HELPER
    result, closure = unpack_closure(arg)
    if isinstance(force_interrupt, bool):
        interrupt = list(closure.targets) if force_interrupt else []
    elif isinstance(force_interrupt, list | tuple | set):
        interrupt = [parse_dref(d) for d in force_interrupt]
    else:
        raise UsageError(
            f"force_interrupt is True, False or a list of DRefs, not {force_interrupt!r}"
        )
    rh = ReplHelper(
        realizeSeq(closure, interrupt, realize_args=realize_args), result, closure.store
    )
    PYLIGHTNIX_REPL_HELPER = rh
    _advance(rh, None)
    return rh


def repl_continue(
    out_paths: list[Path] | None = None,
    out_rrefs: list[RRef] | None = None,
    rh: ReplHelper | None = None,
) -> tuple[Any, Context]:
    """Continue a paused session: publish `out_paths` as the paused derivation's
    realizations, or use `out_rrefs`, or (neither) run its realizer.

    Returns ``(stage result, context so far)``. Raises UsageError if the
    session is not paused, both are given or one is empty (the session stays
    paused), PromiseError (the session stays paused) if a folder lacks a
    promised path, MatcherError if the matcher rejects what was published.
    """
    rh = _helper(rh)
    if rh.gen is None or rh.dref is None:
        raise UsageError(ERR_INACTIVE_RH)
    if out_paths is not None and out_rrefs is not None:
        raise UsageError("give out_paths or out_rrefs, not both")
    reply: tuple[Any, bool]
    if out_paths is not None:
        paths = list(out_paths.val if isinstance(out_paths, Output) else out_paths)
        if not paths:
            raise UsageError(NO_OUTPUT.format(dref=rh.dref))
        output_validate(rh.dref, Output(paths), rh.S)
        reply = (_Paths(paths), False)
    elif out_rrefs is not None:
        if not out_rrefs:
            raise UsageError(NO_OUTPUT.format(dref=rh.dref))
        reply = ([parse_rref(r) for r in out_rrefs], False)
    else:
        reply = (None, False)
    _advance(rh, reply)
    if rh.context is None:
        raise UsageError(ERR_INACTIVE_RH)
    return rh.result, rh.context


def _single_target(result: Any) -> DRef:
    drefs = find_drefs(result)
    if len(drefs) != 1:
        raise UsageError(f"expected a stage with one target, it has {len(drefs)}")
    return drefs[0]


def repl_continueMany(
    out_paths: list[Path] | None = None,
    out_rrefs: list[RRef] | None = None,
    rh: ReplHelper | None = None,
) -> list[RRef] | None:
    """`repl_continue`, then the realizations of the one target (None if not there yet)."""
    res, ctx = repl_continue(out_paths, out_rrefs, rh)
    return ctx.get(_single_target(res))


def repl_continue1(
    out_paths: list[Path] | None = None,
    out_rrefs: list[RRef] | None = None,
    rh: ReplHelper | None = None,
) -> RRef | None:
    """`repl_continue`, then the one realization of the one target (None if not there yet)."""
    rrefs = repl_continueMany(out_paths, out_rrefs, rh)
    if rrefs is None:
        return None
    if len(rrefs) != 1:
        raise UsageError(f"expected one realization, the target has {len(rrefs)}")
    return rrefs[0]


def repl_continueAll(
    out_paths: list[Path] | None = None,
    out_rrefs: list[RRef] | None = None,
    rh: ReplHelper | None = None,
) -> Context | None:
    """`repl_continue`; the whole context once the session has finished, else None."""
    helper = _helper(rh)
    _, ctx = repl_continue(out_paths, out_rrefs, helper)
    return ctx if helper.gen is None else None


def repl_result(rh: ReplHelper) -> Any:
    """The stage result with each DRef replaced by its realizations, or None until all are there."""
    ctx = rh.context or {}
    incomplete = False

    def realizations(dref: DRef) -> Any:
        nonlocal incomplete
        if dref not in ctx:
            incomplete = True
            return None
        return ctx[dref]

    out = map_drefs(rh.result, realizations)
    return None if incomplete or rh.gen is not None else out


def repl_rrefs(rh: ReplHelper) -> list[RRef] | None:
    """The realizations of the one target, None until the session has them."""
    if rh.gen is not None or rh.context is None:
        return None
    return rh.context.get(_single_target(rh.result))


def repl_rref(rh: ReplHelper) -> RRef | None:
    """The one realization of the one target, None until the session has it."""
    rrefs = repl_rrefs(rh)
    if rrefs is None:
        return None
    if len(rrefs) != 1:
        raise UsageError(f"expected one realization, the target has {len(rrefs)}")
    return rrefs[0]


def repl_cancel(rh: ReplHelper | None = None) -> None:
    """Cancel a session: nothing more is built or published; the pause is recorded as
    ``interrupted`` and the folders of its `repl_build` builds are removed."""
    rh = _helper(rh)
    try:
        while rh.gen is not None:
            try:
                rh.gen.send((None, True))
            except StopIteration:
                break
    finally:
        rh.gen = None
        for b in rh.builds:
            for out in b.outpaths:
                remove_tree(out)
        rh.builds.clear()


def repl_buildargs(rh: ReplHelper | None = None) -> BuildArgs:
    """The `BuildArgs` of the paused derivation."""
    rh = _helper(rh)
    if rh.gen is None or rh.dref is None or rh.context is None:
        raise UsageError(ERR_INACTIVE_RH)
    return BuildArgs(rh.S, rh.dref, rh.context, "AUTO", "AUTO", {}, rh.rarg)


def repl_build(rh: ReplHelper | None = None, nouts: int | None = 1) -> Build:
    """A `Build` of the paused derivation to work on by hand (with `nouts` output folders)."""
    rh = _helper(rh)
    b = Build(repl_buildargs(rh))
    if nouts is not None:
        build_markstart(b, nouts)
    rh.builds.append(b)
    return b


def repl_continueBuild(b: Build, rh: ReplHelper | None = None) -> RRef | None:
    """Publish what was built by hand in `b` and continue (see `repl_continue1`)."""
    rh = _helper(rh)
    build_markstop(b)
    rrefs = repl_continue1(out_paths=list(b.outpaths), rh=rh)
    if b in rh.builds:
        rh.builds.remove(b)
    return rrefs


def repl_cancelBuild(b: Build, rh: ReplHelper | None = None) -> None:
    """Cancel the session of `b` and remove `b`'s folders."""
    build_markstop(b)
    try:
        repl_cancel(rh)
    finally:
        for out in b.outpaths:
            remove_tree(out)


__all__ = [
    "ERR_INACTIVE_RH",
    "ERR_INVALID_RH",
    "PYLIGHTNIX_REPL_HELPER",
    "RealizeSeqGen",
    "ReplHelper",
    "evaluate",
    "realizeSeq",
    "repl_build",
    "repl_buildargs",
    "repl_cancel",
    "repl_cancelBuild",
    "repl_continue",
    "repl_continue1",
    "repl_continueAll",
    "repl_continueBuild",
    "repl_continueMany",
    "repl_realize",
    "repl_result",
    "repl_rref",
    "repl_rrefs",
]
