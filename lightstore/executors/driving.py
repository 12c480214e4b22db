"""The caller's side of every executor that builds in other processes (Dask's and the
local pool's): starting a run, what travels with each task, what a failure becomes,
and the final pull of separate roots."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from lightstore.engine.executor import TravellingSubstituter
from lightstore.engine.plan import BuildTask, Plan, RealizeOptions
from lightstore.executors.worker import Exchange, exchange_for
from lightstore.foundation.errors import BuildError, LightstoreError, UsageError


@dataclass(frozen=True)
class SeparateRoots:
    """What a realize asked for separate roots (``remote=``, ``worker_root=`` and the
    keys and driver options that go with them), before the caller resolves it."""

    remote: str | None
    worker_root: str | None
    signing_key: Any = None
    trusted_keys: Iterable[str] | None = None
    storage_options: Mapping[str, Any] | None = None

    def check(self) -> None:
        """UsageError unless both the remote and the worker root are given."""
        if self.remote is None or self.worker_root is None:
            raise UsageError("separate roots need both remote= (a cache URL) and worker_root=")


def start(
    plan: Plan, options: RealizeOptions, separate: SeparateRoots | None
) -> tuple[list[BuildTask], Exchange | None] | None:
    """The first tasks of a run and the resolved exchange; None when nothing is to be built.

    Decided here, in the caller, before any task travels: a substituter that
    shares its decisions is prepared, and separate roots get the caller's trust
    and signing key (UsageError, InvalidKeyError).
    """
    first = plan.next_tasks()
    if not first and plan.finished:
        return None  # all cached: no worker needed
    if isinstance(options.substitute, TravellingSubstituter):
        options.substitute.prepare(first[0])
    exchange = None
    if separate is not None and separate.remote is not None and separate.worker_root is not None:
        exchange = exchange_for(
            plan.store,
            separate.remote,
            separate.worker_root,
            separate.signing_key,
            separate.trusted_keys,
            separate.storage_options,
        )
    return first, exchange


def task_options(task: BuildTask, options: RealizeOptions) -> RealizeOptions:
    """What travels with `task`: its own realize argument (not everyone's) and the substituter."""
    args = {task.dref: task.args} if task.args is not None else {}
    return RealizeOptions(realize_args=args, substitute=options.substitute)


def refusal(plan: Plan, task: BuildTask, options: RealizeOptions) -> Exception | None:
    """What `options.guard` raises for `task`, asked in the caller before the task leaves
    (the REPL's paused builds are the caller's thread's: a worker would wait for one forever)."""
    if options.guard is None:
        return None
    try:
        held_here = options.guard(plan.store, task.dref, task.context_hash)
    except Exception as e:  # the guard's refusal fails this task, as in a serial realize
        return e
    if held_here:
        # Serially this thread would build it under the pause's lock; a worker cannot.
        return UsageError(
            f"{task.dref} is paused in a REPL session of this thread, which holds its build "
            "lock: a worker would wait for it forever; continue or cancel the session, or "
            "realize it without jobs=/client="
        )
    return None


def not_shippable(task: BuildTask, options: RealizeOptions, where: str) -> UsageError | None:
    """A UsageError naming the part of `task` that cannot be pickled; None if all can.

    `where` names the destination ("the Dask cluster", "the worker processes of jobs=").
    """
    import cloudpickle

    drv = task.derivation
    parts = {
        "realizer": drv.realizer,
        "matcher": drv.matcher,
        "config": drv.config,
        "realize argument": task.args,
        "substitute= function": options.substitute,
    }
    for what, value in parts.items():
        try:
            cloudpickle.dumps(value)
        except Exception as e:  # whatever the object's own pickling raises
            return UsageError(
                f"cannot ship the build of {drv.dref} to {where}: its {what} cannot be "
                f"pickled ({type(e).__name__}: {e}). Everything a realizer uses travels to the "
                "worker processes with cloudpickle: create locks, open files, connections and "
                "sockets inside the realizer, or realize without client=/jobs="
            )
    return None


def build_failure(task: BuildTask, error: BaseException, where: str, hint: str) -> LightstoreError:
    """What a task's failure in a worker becomes: a LightstoreError as it is (the realizer's
    error is already a BuildError naming the derivation), anything else a BuildError."""
    if isinstance(error, LightstoreError):
        return error
    return BuildError(
        f"building {task.dref} {where} failed: {type(error).__name__}: {error} ({hint})",
        task.dref,
        error,
    )


def pull_targets(plan: Plan, exchange: Exchange) -> None:
    """Pull what the workers chose for the targets into the caller's store."""
    from lightstore.remote import pull

    wanted = sorted({r for d in plan.closure.targets for r in plan.chosen.get(d, [])})
    missing = sorted(set(wanted) - plan.store.catalogue.known_rrefs(wanted))
    if missing:
        pull(
            plan.store,
            exchange.url,
            missing,
            storage_options=exchange.storage_options,
            trusted_keys=exchange.trusted,
        )
