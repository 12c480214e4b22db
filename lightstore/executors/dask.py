"""Realizing on a Dask distributed cluster (``pip install 'lightstore[dask]'``).

The scheduling stays in the caller: a `Plan` resolves what the catalogue
already satisfies and hands out the builds that are ready; every ready build
is submitted to the cluster at once, and as results arrive their dependents
become ready and are submitted in turn (the graph is dynamic: a dependent's
context is known only once its dependencies' matchers have chosen).
Realizers and matchers travel with cloudpickle, as Dask ships functions.

Shared root (the default): the workers open the caller's store root (one
machine, or a shared POSIX filesystem) and run the same build step as a
serial realize (`lightstore.engine.step.execute`): build lock, re-read,
build, publish. So two callers on one cluster, or a caller and a plain
process, still build each (derivation, context) once.

Separate roots (`remote=URL`, `worker_root=PATH`): each worker keeps its own
store at `worker_root` and exchanges through the remote cache: it pulls the
inputs of a build, substitutes from the remote if it holds the result,
else from the realize's own substituters, otherwise builds, then pushes; the
caller pulls the targets at the end. The remote's `storage_options` travel
with each task and serve the caller's final pull too.

Trust and keys are the caller's: the caller resolves its trusted keys and
signing key once and they travel with each task (the signing key too, so
reach remote workers over TLS), so a worker never decides from its own
environment. A substitute hook carries the caller's trust inside it
(resolved here, before the first task is submitted). A hook that shares its
decisions (`TravellingSubstituter`) is prepared in the caller first (a
remote that cannot be reached is found, and warned about, once), and what
each worker's copy learns comes back with the task's result, so the tasks
submitted afterwards do not ask such a remote again.

Failures: a failed build fails only its dependents; independent branches
finish and stay published, then one error names every failed derivation
(`keep_going=False` stops submitting at the first failure). A worker that
dies mid-build is handled the Dask way (the task runs again on another
worker, which takes the freed build lock, records the dead build as
interrupted and builds); the dead worker's build area is removed by the
caller's recovery at the end of the call.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from lightstore.engine.executor import TravellingSubstituter
from lightstore.engine.plan import BuildTask, Plan, RealizeOptions
from lightstore.executors.dask_cluster import distributed_module, local_cluster
from lightstore.executors.dask_worker import Exchange, build_on_worker, exchange_for
from lightstore.foundation.errors import BuildError, LightstoreError, UsageError

log = logging.getLogger("lightstore")


@dataclass(frozen=True)
class SeparateRoots:
    """What a realize asked for separate roots (``remote=``, ``worker_root=`` and the
    keys and driver options that go with them), before the caller resolves it."""

    remote: str | None
    worker_root: str | None
    signing_key: Any = None
    trusted_keys: Iterable[str] | None = None
    storage_options: Mapping[str, Any] | None = None


class DaskExecutor:
    """Builds a plan's tasks on a Dask cluster (an `Executor`; see the module docstring).

    `client` is a `distributed.Client` or a scheduler address; `jobs=N`
    starts a LocalCluster of N worker processes for each run. Raises
    UsageError without Dask or for arguments that do not fit together.
    """

    def __init__(
        self, client: Any = None, jobs: int | None = None, separate: SeparateRoots | None = None
    ) -> None:
        self.distributed = distributed_module()
        if client is not None and jobs is not None:
            raise UsageError("give client= or jobs=, not both")
        if jobs is not None and (not isinstance(jobs, int) or isinstance(jobs, bool) or jobs < 1):
            raise UsageError(f"jobs must be a positive integer, got {jobs!r}")
        if separate is not None and (separate.remote is None or separate.worker_root is None):
            raise UsageError("separate roots need both remote= (a cache URL) and worker_root=")
        self.client = client
        self.jobs = jobs
        self.separate = separate

    def __repr__(self) -> str:
        return f"DaskExecutor(client={self.client!r}, jobs={self.jobs!r})"

    def run(self, plan: Plan, options: RealizeOptions) -> None:
        """Build the plan's tasks on the cluster; the caller then reads `plan.result()`.

        With separate roots, trust, the signing key and the driver options are
        resolved here and shipped to the workers. Raises UsageError (a store
        that trusts keys but no trusted signing key for separate roots, a task
        that cannot be pickled), InvalidKeyError; build failures are recorded
        in the plan (`keep_going`, default True here, decides whether to go on).
        """
        distributed = self.distributed
        keep_going = True if options.keep_going is None else options.keep_going
        first = plan.next_tasks()
        if not first and plan.finished:
            return  # all cached: no cluster needed
        if isinstance(options.substitute, TravellingSubstituter):
            options.substitute.prepare(first[0])  # decided in the caller, before tasks travel
        exchange = None
        sep = self.separate
        if sep is not None and sep.remote is not None and sep.worker_root is not None:
            exchange = exchange_for(
                plan.store,
                sep.remote,
                sep.worker_root,
                sep.signing_key,
                sep.trusted_keys,
                sep.storage_options,
            )
        client = self.client
        owned: list[Any] = []
        try:
            if client is None:
                cluster = local_cluster(distributed, self.jobs)
                owned.append(cluster)
                client = distributed.Client(cluster)
                owned.insert(0, client)
            elif isinstance(client, str):
                client = distributed.Client(client)
                owned.append(client)
            if getattr(client, "dashboard_link", None) and client.dashboard_link:
                log.info("Dask dashboard: %s", client.dashboard_link)
            _drive(distributed, client, plan, first, options, keep_going, exchange)
        finally:
            for thing in owned:
                thing.close()
            if exchange is None:
                # A worker that died mid-build left a build area behind.
                plan.store.recover()
        if exchange is not None and not plan.failures:
            _pull_targets(plan, exchange)


def _pull_targets(plan: Plan, exchange: Exchange) -> None:
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


def _drive(
    distributed: Any,
    client: Any,
    plan: Plan,
    first: list[BuildTask],
    options: RealizeOptions,
    keep_going: bool,
    exchange: Exchange | None,
) -> None:
    root = str(plan.store.root)
    sub = options.substitute
    shared = sub if isinstance(sub, TravellingSubstituter) else None
    pending: dict[Any, BuildTask] = {}
    done_count = 0
    progress = _Progress(plan.total)
    queue = distributed.as_completed()

    def submit(tasks: list[BuildTask]) -> None:
        for task in tasks:
            # Only this task's realize argument travels, not everyone's.
            args = {task.dref: task.args} if task.args is not None else {}
            opts = RealizeOptions(realize_args=args, substitute=options.substitute)
            try:
                future = client.submit(
                    build_on_worker,
                    root,
                    task,
                    opts,
                    exchange,
                    pure=False,
                    key=f"lightstore-{task.dref.removeprefix('dref:')}-{os.urandom(4).hex()}",
                )
            except Exception as e:  # Dask serializes here: TypeError, PicklingError, ...
                problem = _not_shippable(task, opts)
                if problem is None:
                    raise
                raise problem from e
            pending[future] = task
            queue.add(future)

    try:
        submit(first)
        progress.show(len(plan.chosen))
        for future in queue:
            task = pending.pop(future)
            try:
                answer = future.result()
            except Exception as e:  # the realizer's error, or KilledWorker
                if not isinstance(e, LightstoreError):
                    e = BuildError(
                        f"building {task.dref} on the cluster failed: {type(e).__name__}: {e} "
                        "(a worker that keeps dying is out of memory or killed; see the "
                        "cluster's logs)",
                        task.dref,
                        e,
                    )
                plan.failed(task, e)
                if not keep_going:
                    break
                continue
            log.info("%s built on %s", task.dref, answer["worker"])
            if shared is not None and answer.get("substituter") is not None:
                shared.merge(answer["substituter"])
            plan.done(task, answer["rrefs"])
            done_count += 1
            submit(plan.next_tasks())
            progress.show(len(plan.chosen))
    finally:
        for future in pending:
            future.cancel()
        progress.close()


def _not_shippable(task: BuildTask, options: RealizeOptions) -> UsageError | None:
    """A UsageError naming the part of `task` that cannot be pickled; None if all can."""
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
                f"cannot ship the build of {drv.dref} to the Dask cluster: its {what} cannot be "
                f"pickled ({type(e).__name__}: {e}). Everything a realizer uses travels to the "
                "worker processes with cloudpickle: create locks, open files, connections and "
                "sockets inside the realizer, or realize without client=/jobs="
            )
    return None


class _Progress:
    """derivations done/total on a terminal (stderr), nothing elsewhere."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.on = sys.stderr.isatty()

    def show(self, done: int) -> None:
        if self.on:
            width = 30
            filled = width * done // max(self.total, 1)
            sys.stderr.write(
                f"\rrealize [{'#' * filled}{'.' * (width - filled)}] {done}/{self.total}"
            )
            sys.stderr.flush()

    def close(self) -> None:
        if self.on:
            sys.stderr.write("\n")
