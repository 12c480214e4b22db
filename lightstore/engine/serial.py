"""The drivers that build in this process: the serial loop and the step-by-step generator.

`SerialExecutor` is the engine's default `Executor`: it builds the plan's
tasks one after the other, putting aside a task another process is building
and going on with another ready one, so several processes on one sweep share
the work. `build_requests` hands each task to its consumer instead (the
REPL's `realizeSeq` is one).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Generator

from lightstore.engine.plan import BuildTask, Plan, RealizeOptions
from lightstore.engine.registry import Closure
from lightstore.engine.step import _Busy, execute
from lightstore.foundation.errors import UsageError
from lightstore.foundation.locks import POLL_INTERVAL_S
from lightstore.foundation.refs import Context, DRef, RRef
from lightstore.foundation.terminal import Progress

log = logging.getLogger("lightstore")


class SerialExecutor:
    """Builds in this process, sharing the work with other processes on the same store."""

    def run(self, plan: Plan, options: RealizeOptions) -> None:
        """Build the plan's tasks; failures are recorded in the plan (see `_run_serial`)."""
        _run_serial(plan, options)

    def __repr__(self) -> str:
        return "SerialExecutor()"


def _run_serial(plan: Plan, options: RealizeOptions) -> None:
    """Build the plan's tasks in this process, sharing the work with other processes.

    A task whose build lock another live process holds is put aside and the
    next ready one taken; the process waits only when every task it could
    start is held elsewhere (then it reuses the holder's result, or builds
    it if the holder died).
    """
    queue: list[BuildTask] = plan.next_tasks()
    if not queue:
        return  # all cached: no progress bar, not even a look at the terminal
    with Progress(plan.total) as progress:
        _build_queue(plan, options, queue, progress)


def _build_queue(
    plan: Plan, options: RealizeOptions, queue: list[BuildTask], progress: Progress
) -> None:
    store = plan.store
    deferred: set[DRef] = set()
    keep_going = bool(options.keep_going)
    while not plan.finished:
        queue.extend(plan.next_tasks())
        if not queue:
            break
        progress.show(len(plan.chosen))
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
