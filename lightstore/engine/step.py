"""The build step: realize one task of a plan in one store.

`execute(store, task, options)` takes the build lock of (derivation,
context), reads the catalogue again (another process may have built it
meanwhile), asks `options.substitute` (remote caches), runs the realizer
with its output captured in the build's log, publishes, and asks the matcher
again. Every driver (`lightstore.engine.serial`, the executors) runs this
same step, so two drivers on one store still build each (derivation,
context) once.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
import traceback
from contextlib import AbstractContextManager
from typing import Literal, overload

from lightstore.engine.plan import BuildTask, RealizeOptions, check_matched, match_existing
from lightstore.engine.registry import Derivation
from lightstore.foundation.config import canonical_json
from lightstore.foundation.errors import (
    ArchiveError,
    BuildError,
    ChecksumError,
    DiskFullError,
    MatcherError,
    disk_full,
)
from lightstore.foundation.files import remove_tree
from lightstore.foundation.hashing import canonical_context
from lightstore.foundation.logs import capture_output
from lightstore.foundation.refs import Context, RRef
from lightstore.store import LocalStore

log = logging.getLogger("lightstore")

__all__ = ["BUSY", "execute", "run_build"]


def _build_areas(store: LocalStore, outputs: list[str], published: bool) -> set[str]:
    """The build areas (top-level folders of the store's tmp/) holding `outputs`, to delete
    after the build. An output that is an area itself (as `new_build_area` makes them) is
    gone once published, so a successful build checks no path for it."""
    tmp_dir, tmp = store.tmp_dir, store.tmp_realpath
    areas = set()
    for out in outputs:
        if os.path.dirname(out) == tmp_dir:
            if not published:
                areas.add(out)
            continue
        real = os.path.realpath(out)
        if real.startswith(tmp):
            areas.add(os.path.join(tmp_dir, real[len(tmp) :].split(os.sep, 1)[0]))
    return {a for a in areas if os.path.lexists(a)}


def run_build(
    store: LocalStore,
    drv: Derivation,
    context: Context,
    ctx_hash: str,
    options: RealizeOptions,
    build_id: int,
) -> list[RRef]:
    """`_build` under a build record the caller already started (a paused REPL build).

    The caller holds the build lock. The record is closed as `_build` closes its own.
    """
    return _build(store, drv, context, ctx_hash, options, build_id)


def _build(
    store: LocalStore,
    drv: Derivation,
    context: Context,
    ctx_hash: str,
    options: RealizeOptions,
    build_id: int | None = None,
    close_stale: bool = False,
) -> list[RRef]:
    """Run the realizer of `drv` once and publish its outputs. Caller holds the build lock.

    With `close_stale`, builds recorded as running in this context (of dead processes,
    as the lock is held) are closed first; a build's start reads nothing when there is none.
    """
    ctx = canonical_context(context)
    inputs = sorted({r for rrefs in ctx.values() for r in rrefs})
    if build_id is None:
        ctx_json = canonical_json(ctx)
        catalogue = store.catalogue
        if close_stale:
            build_id = catalogue.start_build_unless_running(drv.dref, ctx_hash, ctx_json, inputs)
            if build_id is None:
                store.interrupt_stale_builds(drv.dref, ctx_hash)
        if build_id is None:
            build_id = catalogue.start_build(drv.dref, ctx_hash, ctx_json, inputs)
    outputs: list[str] = []
    published = False
    try:
        started = time.time()
        with capture_output(store.log_path(build_id)):  # stdout/stderr -> logs/<build id>.log
            outputs = list(
                drv.realizer(store, drv.dref, context, options.realize_args.get(drv.dref))
            )
        if not outputs:
            raise BuildError(f"the realizer of {drv.dref} returned no output folder", drv.dref)
        rrefs = store.publish(drv.dref, context, outputs, drv.promises, build_id, started)
        published = True
        return rrefs
    except (KeyboardInterrupt, SystemExit):
        store.catalogue.finish_build(build_id, "interrupted", "interrupted by the user")
        raise
    except BaseException as e:
        store.catalogue.finish_build(build_id, "failed", "".join(traceback.format_exception(e)))
        if isinstance(e, BuildError):
            e.dref = e.dref or drv.dref
            raise
        if isinstance(e, ChecksumError | ArchiveError | DiskFullError):
            raise  # built-in stages report bad downloads and archives with their own errors
        full = disk_full(e, f"the realizer of {drv.dref} wrote its output")
        if full is not None:
            raise full from e
        raise BuildError(
            f"the realizer of {drv.dref} raised {type(e).__name__}: {e}. The store is unchanged "
            f"(build #{build_id} is recorded as failed; see `.cause` for the original error)",
            drv.dref,
            e,
        ) from e
    finally:
        for area in _build_areas(store, outputs, published):
            remove_tree(area)


class _Busy:
    """What `execute` returns when it would have to wait for another process."""

    def __repr__(self) -> str:
        return "BUSY"


#: Returned by `execute(..., wait=False)` when another process holds the build lock.
BUSY = _Busy()


@overload
def execute(
    store: LocalStore, task: BuildTask, options: RealizeOptions, *, wait: Literal[True] = True
) -> list[RRef]: ...
@overload
def execute(
    store: LocalStore, task: BuildTask, options: RealizeOptions, *, wait: bool
) -> list[RRef] | _Busy: ...
def execute(
    store: LocalStore, task: BuildTask, options: RealizeOptions, *, wait: bool = True
) -> list[RRef] | _Busy:
    """Build a task under its build lock and return the realizations its matcher chooses.

    Under the lock the catalogue is read again (another process may have
    built it meanwhile), then `options.substitute` is asked, then the
    realizer runs. `options.guard` is asked first (see `BuildGuard`). With `wait=False`, returns
    BUSY at once if another process holds the lock. Raises BuildError,
    PromiseError, MatcherError.
    """
    drv, ctx_hash = task.derivation, task.context_hash
    held_here = options.guard is not None and options.guard(store, drv.dref, ctx_hash)
    locks = store.build_locks
    key = locks.key(drv.dref, ctx_hash)
    lock: AbstractContextManager[bool | None]
    if held_here:
        lock = contextlib.nullcontext()
    elif wait:
        lock = locks.hold(
            key,
            holders=lambda: store.catalogue.running_builds(drv.dref, ctx_hash),
            on_wait=lambda msg: log.info("%s: %s", drv.dref, msg),
        )
    else:
        lock = locks.try_hold(key)
    with lock as held:
        if held is False:
            return BUSY
        if not task.forced:
            # Someone may have built it while this process waited for the lock.
            matched = match_existing(store, drv, ctx_hash)
            if matched is not None:
                return matched
            if options.substitute is not None and options.substitute(store, task):
                matched = match_existing(store, drv, ctx_hash)
                if matched is not None:
                    return matched
        # Holding the lock, no other live process is building this: a build still
        # recorded as running belongs to a dead process, which `_build` closes (held
        # here, it is this thread's paused one, left alone).
        _build(store, drv, task.context, ctx_hash, options, close_stale=not held_here)
        available = store.catalogue.realizations(drv.dref, ctx_hash)
        matched = drv.matcher(store, available)
    if matched is None:
        raise MatcherError(
            f"the matcher of {drv.dref} is still unsatisfied after its realizer ran "
            f"({len(available)} realization(s) exist in this context); make the realizer produce "
            "what the matcher asks for (for example nouts=N for match_some(N))",
            drv.dref,
        )
    return check_matched(drv, matched, available)
