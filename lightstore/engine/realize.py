"""Realizing a closure: the plan, driven by an executor, under the store's realization lock.

For each derivation of a closure, dependencies first: compute its context
from the realizations chosen for its dependencies, ask the matcher about the
realizations that exist in that context (one indexed catalogue lookup), and
only if it is unsatisfied build it (`lightstore.engine.step.execute`). A
cached realize therefore reads the catalogue and writes nothing.

The pieces: `Plan` (lightstore.engine.plan) schedules; an `Executor`
(lightstore.engine.executor) runs the plan's tasks: `SerialExecutor` in this
process (lightstore.engine.serial), others elsewhere (`lightstore.executors`).
The store's collector lock is held (shared) for the whole realization, so
garbage collection never removes what was chosen but not yet used.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from lightstore.engine.executor import Executor
from lightstore.engine.plan import Plan, RealizeOptions
from lightstore.engine.registry import Closure
from lightstore.engine.serial import SerialExecutor
from lightstore.foundation.errors import InvalidReferenceError, LightstoreError
from lightstore.foundation.refs import Context, DRef, parse_dref

__all__ = ["force_list", "realize_closure", "unpack_closure"]

_SERIAL = SerialExecutor()


def realize_closure(
    closure: Closure, options: RealizeOptions | None = None, executor: Executor | None = None
) -> Context:
    """Realize every derivation of the closure with `executor` (default: serially, in
    this process); return the chosen RRefs of each.

    With `dry_run`, nothing is built: derivations that would be built, and
    everything downstream of them, map to an empty list. Raises BuildError
    (BuildsFailed when several builds failed), PromiseError, MatcherError,
    NotRealizedError, and what the executor raises.
    """
    options = options or RealizeOptions()
    store = closure.store
    with store.realizing():
        # Cheap when cached (one query), and it re-creates derivations that a
        # garbage collection removed since `instantiate`.
        store.record_derivations([(d.dref, d.config) for d in closure.derivations])
        plan = Plan(closure, options)
        (executor or _SERIAL).run(plan, options)
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
