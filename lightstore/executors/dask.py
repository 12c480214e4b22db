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

`jobs=N` does not come here: it runs on the local pool of
`lightstore.executors.local`, which starts in a fraction of a LocalCluster's
time and answers faster; a LocalCluster of your own still works as `client=`.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from lightstore.engine.executor import TravellingSubstituter
from lightstore.engine.plan import BuildTask, Plan, RealizeOptions
from lightstore.executors.dask_cluster import distributed_module
from lightstore.executors.driving import (
    SeparateRoots,
    build_failure,
    not_shippable,
    pull_targets,
    refusal,
    start,
    task_options,
)
from lightstore.executors.worker import OUTPUT_TOPIC, Exchange, build_on_worker
from lightstore.foundation.errors import UsageError
from lightstore.foundation.terminal import Progress

log = logging.getLogger("lightstore")

_WHERE = "the Dask cluster"
_HINT = "a worker that keeps dying is out of memory or killed; see the cluster's logs"


class DaskExecutor:
    """Builds a plan's tasks on a Dask cluster (an `Executor`; see the module docstring).

    `client` is a `distributed.Client` or a scheduler address. Raises
    UsageError without Dask or for arguments that do not fit together.
    """

    def __init__(self, client: Any, separate: SeparateRoots | None = None) -> None:
        self.distributed = distributed_module()
        if client is None:
            raise UsageError("the Dask executor needs client= (a Client or a scheduler address)")
        if separate is not None:
            separate.check()
        self.client = client
        self.separate = separate

    def __repr__(self) -> str:
        return f"DaskExecutor(client={self.client!r})"

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
        started = start(plan, options, self.separate)
        if started is None:
            return
        first, exchange = started
        client = self.client
        owned = None
        try:
            if isinstance(client, str):
                client = owned = distributed.Client(client)
            if getattr(client, "dashboard_link", None) and client.dashboard_link:
                log.info("Dask dashboard: %s", client.dashboard_link)
            _drive(distributed, client, plan, first, options, keep_going, exchange)
        finally:
            if owned is not None:
                owned.close()
            if exchange is None:
                # A worker that died mid-build left a build area behind.
                plan.store.recover()
        if exchange is not None and not plan.failures:
            pull_targets(plan, exchange)


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
    progress = Progress(plan.total)
    queue = distributed.as_completed()

    def submit(tasks: list[BuildTask]) -> bool:
        """Submit `tasks`; False if one was refused and `keep_going` is false."""
        for task in tasks:
            refused = refusal(plan, task, options)
            if refused is not None:
                plan.failed(task, refused)
                if not keep_going:
                    return False
                continue
            opts = task_options(task, options)
            try:
                future = client.submit(
                    build_on_worker,
                    root,
                    task,
                    opts,
                    exchange,
                    progress.on,
                    pure=False,
                    key=f"lightstore-{task.dref.removeprefix('dref:')}-{os.urandom(4).hex()}",
                )
            except Exception as e:  # Dask serializes here: TypeError, PicklingError, ...
                problem = not_shippable(task, opts, _WHERE)
                if problem is None:
                    raise
                raise problem from e
            pending[future] = task
            queue.add(future)
        return True

    if progress.on:
        # What builds print comes as events, written above the bar.
        client.subscribe_topic(
            OUTPUT_TOPIC, lambda event: progress.output(event[1]["fd"], event[1]["data"])
        )
    try:
        if not submit(first):
            return
        progress.show(len(plan.chosen))
        for future in queue:
            task = pending.pop(future)
            try:
                answer = future.result()
            except Exception as e:  # the realizer's error, or KilledWorker
                plan.failed(task, build_failure(task, e, f"on {_WHERE}", _HINT))
                if not keep_going:
                    break
                continue
            log.info("%s built on %s", task.dref, answer["worker"])
            if shared is not None and answer.get("substituter") is not None:
                shared.merge(answer["substituter"])
            plan.done(task, answer["rrefs"])
            if not submit(plan.next_tasks()):
                break
            progress.show(len(plan.chosen))
    finally:
        for future in pending:
            future.cancel()
        if progress.on:
            client.unsubscribe_topic(OUTPUT_TOPIC)
        progress.close()
