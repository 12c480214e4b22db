"""Realizing on a Dask distributed cluster (``pip install 'lightstore[dask]'``).

The scheduling stays in the caller: a `Plan` resolves what the catalogue
already satisfies and hands out the builds that are ready; every ready build
is submitted to the cluster at once, and as results arrive their dependents
become ready and are submitted in turn (the graph is dynamic: a dependent's
context is known only once its dependencies' matchers have chosen).
Realizers and matchers travel with cloudpickle, as Dask ships functions.

Shared root (the default): the workers open the caller's store root (one
machine, or a shared POSIX filesystem) and run the same build step as a
serial realize (`lightstore.engine.realize.execute`): build lock, re-read,
build, publish. So two callers on one cluster, or a caller and a plain
process, still build each (derivation, context) once.

Separate roots (`remote=URL`, `worker_root=PATH`): each worker keeps its own
store at `worker_root` and exchanges through the remote cache: it pulls the
inputs of a build, substitutes from the remote if it holds the result,
otherwise builds, then pushes; the caller pulls the targets at the end.

Trust and keys are the caller's: the caller resolves its trusted keys and
signing key once and they travel with each task (the signing key too, so
reach remote workers over TLS), so a worker never decides from its own
environment. A substitute hook carries the caller's trust inside it
(resolved here, before the first task is submitted).

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
import socket
import sys
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from lightstore.engine.plan import BuildTask, Plan, RealizeOptions
from lightstore.engine.realize import execute
from lightstore.facade import Store
from lightstore.foundation.errors import BuildError, LightstoreError, StoreNotFoundError, UsageError
from lightstore.foundation.refs import RRef
from lightstore.store import LocalStore

log = logging.getLogger("lightstore")

EXTRA_HINT = "install it with `pip install 'lightstore[dask]'`"


def distributed_module() -> Any:
    """The `distributed` package; UsageError naming the extra if it is missing."""
    try:
        import distributed
    except ImportError as e:
        raise UsageError(
            f"realizing with client= or jobs= needs Dask distributed ({e}); {EXTRA_HINT}"
        ) from e
    return distributed


MAIN_GUARD = (
    "the worker processes of jobs= import the main script again, so the code that realizes "
    'must run under `if __name__ == "__main__":` (see the README, "Running on many cores")'
)


def _local_cluster(distributed: Any, jobs: int | None) -> Any:
    """A LocalCluster of `jobs` worker processes; UsageError if they cannot start."""
    if _importing_main():
        raise UsageError(
            f"realize(..., jobs=N) ran while a worker imported {_main()}: {MAIN_GUARD}"
        )
    unguarded = _unguarded_main()
    if unguarded is not None:
        raise UsageError(f'{unguarded} has no `if __name__ == "__main__":` block; {MAIN_GUARD}')
    try:
        return distributed.LocalCluster(
            n_workers=jobs,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address="127.0.0.1:0",
            silence_logs=logging.WARNING,
        )
    except Exception as e:  # Dask's own errors are plain RuntimeError, OSError, ...
        raise UsageError(
            f"the local Dask cluster of jobs={jobs} did not start ({type(e).__name__}: {e}); "
            f"if the workers' errors above come from importing {_main()}: {MAIN_GUARD}"
        ) from e


def _main() -> str:
    return str(getattr(sys.modules.get("__main__"), "__file__", None) or "the main module")


def _importing_main() -> bool:
    """Whether this process is a spawned child still importing its parent's main module
    (the flag that Python's own check, `multiprocessing.spawn._check_not_importing_main`, reads)."""
    import multiprocessing

    return bool(getattr(multiprocessing.current_process(), "_inheriting", False))


def _unguarded_main() -> str | None:
    """The main script's path if worker processes would re-run it: it has no
    ``if __name__ == "__main__":`` block and workers are not forked."""
    import ast

    import dask

    path = getattr(sys.modules.get("__main__"), "__file__", None)
    if not path or dask.config.get("distributed.worker.multiprocessing-method", "spawn") == "fork":
        return None
    try:
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read())
    except (OSError, SyntaxError, ValueError):
        return None
    for node in tree.body:
        if isinstance(node, ast.If):
            test = ast.unparse(node.test)
            if "__name__" in test and "__main__" in test:
                return None
    return str(path)


def _worker_name() -> str:
    try:
        from distributed import get_worker

        return str(get_worker().address)
    except (ImportError, ValueError):
        return f"{socket.gethostname()}:{os.getpid()}"


def build_on_worker(
    root: str, task: BuildTask, options: RealizeOptions, remote: Mapping[str, Any] | None
) -> dict[str, Any]:
    """The Dask task: build `task` in the store at `root` (or, with `remote`, a worker store).

    Returns the chosen RRefs and where they were built. Raises what
    `execute` raises.
    """
    if remote is None:
        try:
            store = Store.open(root)
        except StoreNotFoundError as e:
            raise StoreNotFoundError(
                f"worker {_worker_name()} cannot open the caller's store {root}: shared-root "
                "mode needs the root on a filesystem every worker sees; otherwise give "
                "remote= and worker_root= (separate roots)"
            ) from e
        with store.realizing():
            rrefs = execute(store, task, options)
    else:
        rrefs = _build_separate(task, options, remote)
    return {"rrefs": rrefs, "worker": _worker_name(), "pid": os.getpid()}


def _build_separate(
    task: BuildTask, options: RealizeOptions, remote: Mapping[str, Any]
) -> list[RRef]:
    from lightstore.remote import pull, push, substitute

    url = remote["url"]
    trusted, key = remote["trusted"], remote["signing_key"]
    store = Store.open(remote["worker_root"], create=True)
    drv = task.derivation
    with store.realizing():
        inputs = sorted({r for rrefs in task.context.values() for r in rrefs})
        missing = sorted(set(inputs) - store.catalogue.known_rrefs(inputs))
        if missing:
            pull(store, url, missing, trusted_keys=trusted)
        store.record_derivations([(drv.dref, drv.config)])

        def from_remote(st: LocalStore, t: BuildTask) -> bool:
            context = {str(d): [str(r) for r in rs] for d, rs in t.context.items()}
            return bool(substitute(st, t.dref, context, [url], trusted_keys=trusted))

        rrefs = execute(store, task, replace(options, substitute=from_remote))
        push(store, url, list(rrefs), signing_key=key or False)
    return list(rrefs)


def _exchange(
    plan: Plan, remote: str, worker_root: str, signing_key: Any, trusted_keys: Any
) -> dict[str, Any]:
    """What separate-roots workers need, resolved in the caller: the remote, the trust
    of the caller's store, and the key to sign with (which that trust must accept)."""
    from lightstore.remote._sign import signing_key_for, trusted_keys_for

    trusted = trusted_keys_for(plan.store.root, trusted_keys)
    key = signing_key_for(signing_key)
    if trusted and (key is None or not trusted.trusts(key)):
        raise UsageError(
            "separate roots exchange through the remote, and this store trusts only signed "
            "realizations: give a signing key whose public key it trusts (signing_key= or "
            "$LIGHTSTORE_SIGNING_KEY; nothing was built)"
        )
    return {"url": remote, "worker_root": worker_root, "trusted": trusted, "signing_key": key}


def run_dask(
    plan: Plan,
    options: RealizeOptions,
    *,
    client: Any = None,
    jobs: int | None = None,
    remote: str | None = None,
    worker_root: str | None = None,
    signing_key: Any = None,
    trusted_keys: Any = None,
) -> None:
    """Build the plan's tasks on a Dask cluster; the caller then reads `plan.result()`.

    `client` is a `distributed.Client` or a scheduler address; `jobs=N`
    starts a LocalCluster of N worker processes for this call. With separate
    roots, `signing_key` and `trusted_keys` are resolved here and shipped to
    the workers. Raises UsageError (no Dask, bad arguments, a store that
    trusts keys but no trusted signing key for separate roots), InvalidKeyError;
    build failures are recorded in the plan (`keep_going`, default True here,
    decides whether to go on).
    """
    distributed = distributed_module()
    if client is not None and jobs is not None:
        raise UsageError("give client= or jobs=, not both")
    if jobs is not None and (not isinstance(jobs, int) or isinstance(jobs, bool) or jobs < 1):
        raise UsageError(f"jobs must be a positive integer, got {jobs!r}")
    if (remote is None) != (worker_root is None):
        raise UsageError("separate roots need both remote= (a cache URL) and worker_root=")
    keep_going = True if options.keep_going is None else options.keep_going
    first = plan.next_tasks()
    if not first and plan.finished:
        return  # all cached: no cluster needed
    if options.substitute is not None:
        from lightstore.remote.substitute import Substituter

        if isinstance(options.substitute, Substituter):
            options.substitute.trusted()  # the caller's trust, decided before tasks travel
    where = None
    if remote is not None and worker_root is not None:
        where = _exchange(plan, remote, worker_root, signing_key, trusted_keys)
    owned: list[Any] = []
    try:
        if client is None:
            cluster = _local_cluster(distributed, jobs)
            owned.append(cluster)
            client = distributed.Client(cluster)
            owned.insert(0, client)
        elif isinstance(client, str):
            client = distributed.Client(client)
            owned.append(client)
        if getattr(client, "dashboard_link", None) and client.dashboard_link:
            log.info("Dask dashboard: %s", client.dashboard_link)
        _drive(distributed, client, plan, first, options, keep_going, where)
    finally:
        for thing in owned:
            thing.close()
        if remote is None:
            # A worker that died mid-build left a build area behind.
            plan.store.recover()
    if where is not None and not plan.failures:
        from lightstore.remote import pull

        wanted = sorted({r for d in plan.closure.targets for r in plan.chosen.get(d, [])})
        missing = sorted(set(wanted) - plan.store.catalogue.known_rrefs(wanted))
        if missing:
            pull(plan.store, where["url"], missing, trusted_keys=where["trusted"])


def _drive(
    distributed: Any,
    client: Any,
    plan: Plan,
    first: list[BuildTask],
    options: RealizeOptions,
    keep_going: bool,
    where: Mapping[str, Any] | None,
) -> None:
    root = str(plan.store.root)
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
                    where,
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
