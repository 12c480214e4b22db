"""The realization algorithm: one scheduler, several drivers.

For each derivation of a closure, dependencies first: compute its context
from the realizations chosen for its dependencies, ask the matcher about the
realizations that exist in that context (one indexed catalogue lookup), and
only if it is unsatisfied take the build lock for (derivation, context),
re-read, build, publish and ask again. A cached realize therefore reads the
catalogue and writes nothing.

The pieces, for drivers of other kinds:

- `Plan(closure, options)` (lightstore.engine.plan) schedules: `next_tasks()`
  resolves what the catalogue satisfies and returns the `BuildTask`s that are
  ready (task.derivation, task.context, task.context_hash, task.args);
  `done(task, rrefs)` / `failed(task, error)` report back; `finished`,
  `result()`.
- `execute(store, task, options, wait=True)` is the build step: the build
  lock, re-read, `options.substitute` (remote caches), `_build`, match.
  With `wait=False` it returns `BUSY` when another process holds the lock.
- Drivers: `_run_serial` (this process; puts aside a task another process
  is building and goes on with another ready one, so several processes on
  one sweep share the work), `build_requests` (a generator: yields each
  task, receives its RRefs or exception), and `lightstore.executors.dask`
  (submits every ready task to a Dask cluster at once).
- `realize_closure(closure, options, client=, jobs=)` picks the driver.

The store's collector lock is held (shared) for the whole realization, so
garbage collection never removes what was chosen but not yet used.
"""

from __future__ import annotations

import logging
import os
import time
import traceback
from collections.abc import Callable, Collection, Generator, Iterable
from contextlib import AbstractContextManager
from typing import Any, Literal, overload

from lightstore.engine.plan import (
    BuildsFailed,
    BuildTask,
    Plan,
    RealizeOptions,
    check_matched,
    match_existing,
)
from lightstore.engine.registry import Closure, Derivation
from lightstore.foundation.config import canonical_json
from lightstore.foundation.errors import (
    ArchiveError,
    BuildError,
    ChecksumError,
    DiskFullError,
    InvalidReferenceError,
    LightstoreError,
    MatcherError,
    UsageError,
    disk_full,
)
from lightstore.foundation.files import remove_tree
from lightstore.foundation.hashing import canonical_context
from lightstore.foundation.locks import POLL_INTERVAL_S
from lightstore.foundation.logs import capture_output
from lightstore.foundation.refs import Context, DRef, RRef, parse_dref
from lightstore.store import LocalStore

log = logging.getLogger("lightstore")

__all__ = [
    "BUSY",
    "BuildTask",
    "BuildsFailed",
    "Plan",
    "RealizeOptions",
    "build_requests",
    "execute",
    "realize_closure",
]


def _tmp_roots(store: LocalStore, outputs: list[str]) -> set[str]:
    """The top-level build-area folders holding `outputs` (to delete after publishing)."""
    tmp = store.tmp_realpath
    roots = set()
    for out in outputs:
        real = os.path.realpath(out)
        if real.startswith(tmp):
            roots.add(os.path.join(store.tmp_dir, real[len(tmp) :].split(os.sep, 1)[0]))
    return {r for r in roots if os.path.lexists(r)}


#: Hooks called by `execute` before it takes a build lock, as ``guard(store, dref,
#: ctx_hash)``; one may raise to refuse a wait that could never end (the REPL
#: refuses to wait, in the same thread, for a build that thread holds paused).
BUILD_GUARDS: list[Callable[[LocalStore, DRef, str], None]] = []


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
) -> list[RRef]:
    """Run the realizer of `drv` once and publish its outputs. Caller holds the build lock."""
    ctx = canonical_context(context)
    inputs = sorted({r for rrefs in ctx.values() for r in rrefs})
    if build_id is None:
        build_id = store.catalogue.start_build(drv.dref, ctx_hash, canonical_json(ctx), inputs)
    outputs: list[str] = []
    try:
        started = time.time()
        with capture_output(store.log_path(build_id)):  # stdout/stderr -> logs/<build id>.log
            outputs = list(
                drv.realizer(store.settings, drv.dref, context, options.realize_args.get(drv.dref))
            )
        if not outputs:
            raise BuildError(f"the realizer of {drv.dref} returned no output folder", drv.dref)
        return store.publish(drv.dref, context, outputs, drv.promises, build_id, started)
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
        for root in _tmp_roots(store, outputs):
            remove_tree(root)


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
    realizer runs. With `wait=False`, returns BUSY at once if another process
    holds the lock. Raises BuildError, PromiseError, MatcherError.
    """
    drv, ctx_hash = task.derivation, task.context_hash
    for guard in BUILD_GUARDS:
        guard(store, drv.dref, ctx_hash)
    locks = store.build_locks
    key = locks.key(drv.dref, ctx_hash)
    lock: AbstractContextManager[bool | None]
    if wait:
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
        # Holding the lock, no other live process is building this: a build
        # still recorded as running belongs to a dead process.
        store.catalogue.interrupt_stale_builds(drv.dref, ctx_hash)
        _build(store, drv, task.context, ctx_hash, options)
        available = store.catalogue.realizations(drv.dref, ctx_hash)
        matched = drv.matcher(store.settings, available)
    if matched is None:
        raise MatcherError(
            f"the matcher of {drv.dref} is still unsatisfied after its realizer ran "
            f"({len(available)} realization(s) exist in this context); make the realizer produce "
            "what the matcher asks for (for example nouts=N for match_some(N))",
            drv.dref,
        )
    return check_matched(drv, matched, available)


def _run_serial(plan: Plan, options: RealizeOptions) -> None:
    """Build the plan's tasks in this process, sharing the work with other processes.

    A task whose build lock another live process holds is put aside and the
    next ready one taken; the process waits only when every task it could
    start is held elsewhere (then it reuses the holder's result, or builds
    it if the holder died).
    """
    store = plan.store
    queue: list[BuildTask] = []
    deferred: set[DRef] = set()
    keep_going = bool(options.keep_going)
    while not plan.finished:
        queue.extend(plan.next_tasks())
        if not queue:
            break
        queue.sort(key=lambda t: t.index)  # dependencies first, as a serial realize
        # Only one candidate left: sleep in the kernel until its lock is free.
        wait = len(queue) == 1
        for task in queue:
            try:
                outcome = execute(store, task, options, wait=wait)
            except (KeyboardInterrupt, SystemExit):
                raise
            except Exception as e:
                queue.remove(task)
                plan.failed(task, e)
                if not keep_going:
                    raise
                break
            if isinstance(outcome, _Busy):
                if task.dref not in deferred:
                    deferred.add(task.dref)
                    log.info("%s is being built by another process; going on", task.dref)
                continue
            queue.remove(task)
            plan.done(task, outcome)
            break  # dependents may be ready now: take them in closure order
        else:
            time.sleep(POLL_INTERVAL_S)


def build_requests(
    closure: Closure, options: RealizeOptions | None = None
) -> Generator[BuildTask, list[RRef] | BaseException, Context]:
    """Realize step by step: yield each build, receive its outcome, return the context.

    The consumer executes each yielded `BuildTask` as it likes (for example
    ``execute(closure.store, task, options)``) and sends back the chosen
    RRefs, or the exception it raised. Raising the exception inside the
    generator ends it (as a serial realize would); with `keep_going`, the
    generator goes on with independent builds and raises at the end.
    """
    options = options or RealizeOptions()
    plan = Plan(closure, options)
    with closure.store.realizing():
        closure.store.record_derivations([(d.dref, d.config) for d in closure.derivations])
        while not plan.finished:
            for task in plan.next_tasks():
                outcome = yield task
                if isinstance(outcome, BaseException):
                    plan.failed(task, outcome)
                    if not options.keep_going:
                        raise outcome
                elif isinstance(outcome, list) and all(isinstance(r, str) for r in outcome):
                    plan.done(task, outcome)
                else:
                    raise UsageError(
                        f"build_requests expects the RRefs of {task.dref} or an exception, "
                        f"got {type(outcome).__name__}"
                    )
    return plan.result()


def realize_closure(
    closure: Closure,
    options: RealizeOptions | None = None,
    *,
    client: Any = None,
    jobs: int | None = None,
    remote: str | None = None,
    worker_root: str | None = None,
    signing_key: Any = None,
    trusted_keys: Iterable[str] | None = None,
) -> Context:
    """Realize every derivation of the closure; return the chosen RRefs of each.

    With `dry_run`, nothing is built: derivations that would be built, and
    everything downstream of them, map to an empty list.

    `client` (a `distributed.Client` or a scheduler address) or `jobs=N` (a
    LocalCluster of N worker processes for this call) build on Dask, in the
    caller's store root, or with `remote=URL, worker_root=PATH` in worker
    stores exchanging through a remote cache (`lightstore.executors.dask`);
    there the workers sign what they push with `signing_key` (default
    ``$LIGHTSTORE_SIGNING_KEY``) and pull with the caller's trust
    (`trusted_keys`, default ``$LIGHTSTORE_TRUSTED_KEYS`` and the store's
    ``trusted-keys`` file), both resolved here in the caller.
    Without either, builds run in this process.
    Raises BuildError (BuildsFailed when several builds failed), PromiseError,
    MatcherError, NotRealizedError, UsageError (client/jobs without
    `lightstore[dask]`, or bad arguments).
    """
    options = options or RealizeOptions()
    store = closure.store
    with store.realizing():
        # Cheap when cached (one query), and it re-creates derivations that a
        # garbage collection removed since `instantiate`.
        store.record_derivations([(d.dref, d.config) for d in closure.derivations])
        plan = Plan(closure, options)
        if client is not None or jobs is not None or remote is not None:
            from lightstore.executors.dask import run_dask

            run_dask(
                plan,
                options,
                client=client,
                jobs=jobs,
                remote=remote,
                worker_root=worker_root,
                signing_key=signing_key,
                trusted_keys=trusted_keys,
            )
        else:
            _run_serial(plan, options)
    return plan.result()


def unpack_closure(arg: Any) -> tuple[Any, Closure]:
    """Accept a Closure or a ``(result, closure)`` pair, as `instantiate` returns."""
    if isinstance(arg, Closure):
        return arg.result, arg
    if isinstance(arg, tuple) and len(arg) == 2 and isinstance(arg[1], Closure):
        return arg[0], arg[1]
    raise LightstoreError(
        f"expected what instantiate() returns (a (result, closure) pair or a Closure), got {type(arg).__name__}"
    )


def force_list(closure: Closure, force_rebuild: bool | Collection[str]) -> list[DRef]:
    """Normalise the `force_rebuild` argument: True means the targets."""
    if isinstance(force_rebuild, bool):
        return list(closure.targets) if force_rebuild else []
    if isinstance(force_rebuild, str):
        raise InvalidReferenceError(
            f"force_rebuild takes True/False or a list of DRefs, not the string {force_rebuild!r}"
        )
    return [parse_dref(d) for d in force_rebuild]
