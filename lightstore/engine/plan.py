"""The scheduling half of realization: which derivations are ready, cached or to build.

A `Plan` walks a `Closure` as results arrive. A derivation is *ready* once
every dependency has chosen its realizations; its context is then known.
`Plan.next_tasks()` resolves every ready derivation that the matcher
satisfies from the catalogue (one indexed lookup each, nothing written) and
hands out the others as `BuildTask`s. A driver executes the tasks (serially,
one process among several, in a generator, on a Dask cluster) and reports
back with `done(task, rrefs)` or `failed(task, error)`; dependents of a done
task become ready, dependents of a failed one are never built.

The plan itself never builds, locks or writes: `lightstore.engine.step`
holds the build step, `lightstore.engine.serial` the drivers of this process,
and `lightstore.engine.executor` the interface of drivers elsewhere.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from lightstore.engine.registry import Closure, Derivation
from lightstore.foundation.errors import (
    BuildError,
    LightstoreError,
    MatcherError,
    NotRealizedError,
)
from lightstore.foundation.hashing import context_hash
from lightstore.foundation.refs import Context, DRef, RRef

if TYPE_CHECKING:
    from lightstore.store import LocalStore


class Substituter(Protocol):
    """Asked with the task's build lock held when no local realization matches: may
    install realizations of ``(task.dref, task.context)`` from elsewhere (a remote
    cache) and returns True if it did. The matcher is then asked again, and the
    realizer runs only if it is still unsatisfied. Any such function will do;
    `lightstore.remote.substitute.Substituter` is the remote caches' one."""

    def __call__(self, store: LocalStore, task: BuildTask, /) -> bool: ...


#: ``(store, dref, context hash) -> held``: called before a build lock is taken.
#: True means this thread already holds that lock (a REPL session of this thread
#: holds that build paused, and cannot go on while the thread builds): the build
#: runs under that hold instead of waiting for itself forever. It may also raise.
BuildGuard = Callable[["LocalStore", DRef, str], bool | None]


@dataclass
class RealizeOptions:
    """How to realize: which derivations to rebuild, which must be cached, extra realizer args.

    `keep_going` (parallel drivers default to True, the serial one to False):
    after a failed build, go on with everything that does not depend on it,
    then raise one error naming every failure. `substitute` is asked before
    a build (see `Substituter`), `guard` before a build lock is taken (see
    `BuildGuard`).
    """

    force_rebuild: Collection[DRef] = ()
    assert_realized: Collection[DRef] = ()
    realize_args: Mapping[DRef, Any] = field(default_factory=dict)
    dry_run: bool = False
    keep_going: bool | None = None
    substitute: Substituter | None = None
    guard: BuildGuard | None = None


@dataclass(frozen=True)
class BuildTask:
    """One derivation to build in one context: what a driver executes."""

    derivation: Derivation
    context: Context
    context_hash: str
    args: Any = None
    forced: bool = False
    #: The position of the derivation in its closure (dependencies first).
    index: int = 0

    @property
    def dref(self) -> DRef:
        return self.derivation.dref


class BuildsFailed(BuildError):
    """Several builds failed; `failures` maps each failed DRef to its error, `skipped` each
    derivation not built because of them to the failed dependency it waited for."""

    def __init__(
        self,
        message: str,
        failures: dict[DRef, BaseException],
        skipped: dict[DRef, DRef] | None = None,
    ) -> None:
        super().__init__(message, next(iter(failures), ""))
        self.failures = failures
        self.skipped: dict[DRef, DRef] = dict(skipped or {})
        self.cause = next(iter(failures.values()), None)


#: How many derivations that were not built a BuildsFailed message names.
_MAX_SKIPPED_LISTED = 20


def _name_skipped(error: BaseException, lines: list[str]) -> None:
    """Add the dependents not built to the message of the one failure (raised as it is, so
    its type and attributes stay); an error not of lightstore's gets them as a note."""
    text = "\n".join(lines)
    if isinstance(error, LightstoreError) and error.args and isinstance(error.args[0], str):
        if text not in error.args[0]:  # result() may be asked twice
            error.args = (f"{error.args[0]}\n{text}", *error.args[1:])
    elif text not in getattr(error, "__notes__", ()):
        error.add_note(text)


def check_matched(drv: Derivation, matched: Any, available: list[RRef]) -> list[RRef]:
    """`matched` if it is a list of the realizations the matcher was given, else MatcherError."""
    given = set(available)
    if not isinstance(matched, list) or any(r not in given for r in matched):
        raise MatcherError(
            f"the matcher of {drv.dref} returned {matched!r}; a matcher returns None or a list "
            "of the realizations it was given",
            drv.dref,
        )
    return matched


def match_existing(store: LocalStore, drv: Derivation, ctx_hash: str) -> list[RRef] | None:
    """Ask the matcher about the realizations of `drv` in a context (one indexed lookup)."""
    available = store.catalogue.realizations(drv.dref, ctx_hash)
    matched = drv.matcher(store, available)
    return None if matched is None else check_matched(drv, matched, available)


class Plan:
    """The state of one realization of a closure (see the module docstring).

    Not thread-safe: one driver thread calls it. Raises MatcherError and
    NotRealizedError from `next_tasks` (a matcher rejected what exists, or a
    derivation required to be realized would need a build).
    """

    def __init__(self, closure: Closure, options: RealizeOptions | None = None) -> None:
        self.closure = closure
        self.store: LocalStore = closure.store
        self.options = options or RealizeOptions()
        self.chosen: Context = {}
        self.failures: dict[DRef, BaseException] = {}
        #: Derivations not built because a dependency failed: dref -> failed dependency.
        self.skipped: dict[DRef, DRef] = {}
        self.running: dict[DRef, BuildTask] = {}
        self._index = {d.dref: i for i, d in enumerate(closure.derivations)}
        self._missing = {d.dref: len(set(d.deps)) for d in closure.derivations}
        self._dependents: dict[DRef, list[DRef]] = {}
        for d in closure.derivations:
            for dep in set(d.deps):
                self._dependents.setdefault(dep, []).append(d.dref)
        self._ready = [i for i, d in enumerate(closure.derivations) if not self._missing[d.dref]]
        heapq.heapify(self._ready)

    @property
    def total(self) -> int:
        """How many derivations the closure has."""
        return len(self.closure.derivations)

    @property
    def finished(self) -> bool:
        """Nothing ready and nothing running: every derivation is chosen, failed or skipped."""
        return not self._ready and not self.running

    def next_tasks(self) -> list[BuildTask]:
        """Resolve what the catalogue satisfies; return the newly ready builds, dependencies first."""
        tasks: list[BuildTask] = []
        opts = self.options
        while self._ready:
            drv = self.closure.derivations[heapq.heappop(self._ready)]
            if opts.dry_run and any(not self.chosen[d] for d in drv.deps):
                self._choose(drv.dref, [])
                continue
            context = {d: self.chosen[d] for d in drv.deps}
            ctx_hash = context_hash(context)
            forced = drv.dref in opts.force_rebuild
            if not forced:
                matched = match_existing(self.store, drv, ctx_hash)
                if matched is not None:
                    self._choose(drv.dref, matched)
                    continue
            if opts.dry_run:
                self._choose(drv.dref, [])
                continue
            if drv.dref in opts.assert_realized or drv.must_be_realized:
                raise NotRealizedError(
                    f"{drv.dref} has no matching realization in this context and would have to "
                    "be built, but it was required to be realized already",
                    drv.dref,
                )
            task = BuildTask(
                drv,
                context,
                ctx_hash,
                opts.realize_args.get(drv.dref),
                forced,
                self._index[drv.dref],
            )
            self.running[drv.dref] = task
            tasks.append(task)
        return tasks

    def done(self, task: BuildTask, rrefs: list[RRef]) -> None:
        """Record the realizations chosen for a built task; its dependents may become ready."""
        self.running.pop(task.dref, None)
        self._choose(task.dref, list(rrefs))

    def failed(self, task: BuildTask, error: BaseException) -> None:
        """Record a failed task; everything that depends on it is skipped."""
        self.running.pop(task.dref, None)
        self.failures[task.dref] = error
        stack = list(self._dependents.get(task.dref, ()))
        while stack:
            d = stack.pop()
            if d not in self.skipped:
                self.skipped[d] = task.dref
                stack.extend(self._dependents.get(d, ()))

    def result(self) -> Context:
        """The chosen RRefs of every derivation; raises the failure(s) if any build failed."""
        if self.failures:
            raise self.error()
        return self.chosen

    def error(self) -> BaseException:
        """The error to raise for the failures: the failure itself if there is one (its
        message then names the dependents not built), else BuildsFailed."""
        if len(self.failures) == 1:
            error = next(iter(self.failures.values()))
            if self.skipped:
                _name_skipped(error, self._skipped_lines())
            return error
        lines = [f"{len(self.failures)} builds failed:"]
        lines += [f"  {d}: {type(e).__name__}: {e}" for d, e in self.failures.items()]
        lines += self._skipped_lines()
        return BuildsFailed("\n".join(lines), dict(self.failures), dict(self.skipped))

    def _skipped_lines(self) -> list[str]:
        if not self.skipped:
            return []
        lines = [f"{len(self.skipped)} dependent(s) were not built:"]
        listed = list(self.skipped.items())[:_MAX_SKIPPED_LISTED]
        lines += [f"  {d} (needs {failed})" for d, failed in listed]
        if len(self.skipped) > len(listed):
            lines.append(f"  ... and {len(self.skipped) - len(listed)} more")
        return lines

    def _choose(self, dref: DRef, rrefs: list[RRef]) -> None:
        self.chosen[dref] = rrefs
        for dependent in self._dependents.get(dref, ()):
            self._missing[dependent] -= 1
            if not self._missing[dependent] and dependent not in self.skipped:
                heapq.heappush(self._ready, self._index[dependent])
