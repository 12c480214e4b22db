"""The interface of the drivers that run a plan's build tasks.

An executor takes a `Plan` and, until it is finished, executes the tasks
`plan.next_tasks()` hands out (each with the build step,
`lightstore.engine.step.execute`, in a store the caller's results reach) and
reports back with `plan.done(task, rrefs)` or `plan.failed(task, error)`. It
decides nothing else: what to build, in which context, and what the matchers
choose are the plan's. `lightstore.engine.serial.SerialExecutor` builds in
this process; `lightstore.executors` has the others (Dask).
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from lightstore.engine.plan import BuildTask, Plan, RealizeOptions
from lightstore.store import LocalStore


@runtime_checkable
class Executor(Protocol):
    """Runs a plan's build tasks (see the module docstring)."""

    def run(self, plan: Plan, options: RealizeOptions) -> None:
        """Execute the plan's tasks until it is finished; record build failures in the plan
        (with `options.keep_going` false, stop at the first). Raise only for errors of
        the executor itself (a cluster that cannot start, a task that cannot travel)."""
        ...


@runtime_checkable
class TravellingSubstituter(Protocol):
    """A substituter (`RealizeOptions.substitute`) whose decisions an executor shares
    between the caller and the copies it ships with each task.

    The executor calls `prepare` in the caller once, before the first task
    travels (decide trust, find the remotes that cannot be reached); a copy
    that ran elsewhere gives what it learnt with `report`, and the executor
    hands that to the caller's substituter with `merge`, so the tasks it
    ships afterwards know it too.
    """

    def __call__(self, store: LocalStore, task: BuildTask, /) -> bool: ...

    def prepare(self, task: BuildTask) -> None: ...

    def report(self) -> Any: ...

    def merge(self, report: Any) -> None: ...
