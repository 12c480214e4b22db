"""`jobs=N`: building on a pool of worker processes on this machine, kept for the process.

A Dask LocalCluster per realize cost about 1.4 s to start and 8 ms of round
trip per derivation; this pool starts plain interpreters once (the first
`jobs=` realize, about the time of importing lightstore) and later realizes
reuse them, each worker building one task at a time sent over its own pipe.

Each worker (`lightstore.executors.local_worker`):

- is a fresh interpreter (`sys.executable` with the caller's interpreter
  flags and sys.path) that imports lightstore but never the caller's main
  script: realizers, matchers and what they use travel with cloudpickle
  (functions and classes of ``__main__`` by value), so a script needs no
  ``if __name__ == "__main__":`` block;
- takes the caller's environment, working directory and sys.path at the
  start of each run, so a kept worker builds as a fresh one would (a module
  changed and reloaded in the caller is not reloaded there: `close_workers`);
- runs the Dask workers' task (`lightstore.executors.worker.build_on_worker`):
  the build step in the caller's store root (shared root), or in
  `worker_root` exchanging through a remote cache (separate roots);
- runs in its own session, so Ctrl-C reaches only the caller, which stops
  the builds still running.

The scheduling is the Dask executor's: the caller's plan resolves what is
cached and hands out ready tasks; each goes to an idle worker, and results
make dependents ready. Failures too: a failed build fails only its
dependents (`keep_going=False` stops at the first failure and stops the
builds still running). A worker that dies mid-build (killed, out of memory)
is replaced and its task runs again (the new worker takes the freed build
lock and records the dead build as interrupted); a task whose worker dies
more than `MAX_DEATHS` times fails, and so does one whose worker was
stopped with SIGTERM (`lightstore cancel`). The caller's recovery then removes what
a dead worker left in the store.
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import json
import logging
import os
import pickle
import signal
import subprocess
import sys
import threading
from multiprocessing.connection import Connection, Pipe, wait
from typing import Any, cast

from lightstore.engine.executor import TravellingSubstituter
from lightstore.engine.plan import BuildTask, Plan, RealizeOptions
from lightstore.executors.driving import (
    SeparateRoots,
    build_failure,
    not_shippable,
    pull_targets,
    refusal,
    start,
    task_options,
)
from lightstore.executors.worker import Exchange
from lightstore.foundation.errors import BuildError, UsageError
from lightstore.foundation.terminal import Progress

log = logging.getLogger("lightstore")

#: A task whose worker died this many times runs again; once more, and it fails
#: (Dask's default `allowed-failures` is the same).
MAX_DEATHS = 3

_WHERE = "the worker processes of jobs="
_HINT = (
    "a worker loads the realizer, matcher and config with cloudpickle, importing by name "
    "the modules they use: those must be importable there, with the caller's sys.path"
)
_EXTRA_HINT = "install it with `pip install 'lightstore[dask]'` (or `pip install cloudpickle`)"

# Run by `python -c` in a new worker: the caller's sys.path first, then the loop.
_BOOT = (
    "import json, sys; sys.path[:] = json.loads(sys.argv[2]); "
    "from lightstore.executors.local_worker import main; main(int(sys.argv[1]))"
)


def _cloudpickle() -> Any:
    try:
        import cloudpickle
    except ImportError as e:
        raise UsageError(
            f"realizing with jobs= needs cloudpickle to ship realizers ({e}); {_EXTRA_HINT}"
        ) from e
    return cloudpickle


class LocalExecutor:
    """Builds a plan's tasks on `jobs` worker processes of this machine (an `Executor`;
    see the module docstring); `jobs` defaults to the number of CPUs.

    Raises UsageError without cloudpickle or for arguments that do not fit together.
    """

    def __init__(self, jobs: int | None = None, separate: SeparateRoots | None = None) -> None:
        self.cloudpickle = _cloudpickle()
        if jobs is None:
            jobs = os.cpu_count() or 1
        if not isinstance(jobs, int) or isinstance(jobs, bool) or jobs < 1:
            raise UsageError(f"jobs must be a positive integer, got {jobs!r}")
        if separate is not None:
            separate.check()
        self.jobs = jobs
        self.separate = separate

    def __repr__(self) -> str:
        return f"LocalExecutor(jobs={self.jobs!r})"

    def run(self, plan: Plan, options: RealizeOptions) -> None:
        """Build the plan's tasks on the pool; the caller then reads `plan.result()`.

        Raises UsageError (a task that cannot be pickled, workers that cannot
        start, separate roots whose trust the signing key does not meet),
        InvalidKeyError; build failures are recorded in the plan
        (`keep_going`, default True here, decides whether to go on).
        """
        started = start(plan, options, self.separate)
        if started is None:
            return
        first, exchange = started
        keep_going = True if options.keep_going is None else options.keep_going
        run = _Run(self, plan, options, keep_going, exchange)
        try:
            run.drive(first)
        finally:
            run.close()
            if run.died and exchange is None:
                plan.store.recover()  # what a dead worker left in the caller's store
        if exchange is not None and not plan.failures:
            pull_targets(plan, exchange)


class _Worker:
    """One worker process and the caller's end of its pipe."""

    def __init__(self) -> None:
        if not sys.executable:
            raise UsageError(f"{_WHERE} need a Python executable (sys.executable is empty)")
        ours, theirs = Pipe()
        try:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    *_interpreter_flags(),
                    "-c",
                    _BOOT,
                    str(theirs.fileno()),
                    json.dumps(sys.path),
                ],
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        except OSError as e:
            ours.close()
            raise UsageError(f"{_WHERE} could not start: {e}") from e
        finally:
            theirs.close()
        self.conn: Connection = ours
        self.ready = False  # answered once, after its imports
        self.task: BuildTask | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def send(self, kind: str, body: Any) -> None:
        """Raises OSError if the worker is gone."""
        self.conn.send_bytes(pickle.dumps((kind, body)))

    def reap(self) -> int:
        """Close the pipe and wait for the process; its exit status."""
        self.conn.close()
        return self.proc.wait()

    def kill(self) -> None:
        """Stop the worker and whatever its build started (its session)."""
        with contextlib.suppress(OSError):  # already gone
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.reap()

    def stop(self, timeout: float) -> None:
        """Close the pipe (an idle worker then exits); kill it if it does not."""
        self.conn.close()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()


def _interpreter_flags() -> list[str]:
    """The caller's -O, -X, -W, ... (what multiprocessing gives its children)."""
    flags: list[str] = subprocess._args_from_interpreter_flags()  # type: ignore[attr-defined]
    return flags


def _status(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit status {code}"


# -- the pool: idle workers kept for the process ------------------------------------

_idle: list[_Worker] = []
_idle_lock = threading.Lock()


def _take(n: int) -> list[_Worker]:
    """`n` workers for a run: idle ones first, new ones for the rest."""
    taken: list[_Worker] = []
    with _idle_lock:
        while _idle and len(taken) < n:
            worker = _idle.pop()
            if worker.alive():
                taken.append(worker)
            else:
                worker.reap()
    try:
        while len(taken) < n:
            taken.append(_Worker())
    except BaseException:
        _give_back(taken)
        raise
    return taken


def _give_back(workers: list[_Worker]) -> None:
    with _idle_lock:
        _idle.extend(w for w in workers if w.alive())


def close_workers(timeout: float = 5.0) -> None:
    """Stop the idle worker processes that `jobs=` keeps for the process.

    The next `jobs=` realize starts new ones: call it after changing a module
    the realizers import, or to give back their memory. Runs at exit.
    """
    with _idle_lock:
        workers, _idle[:] = list(_idle), []
    for worker in workers:
        worker.stop(timeout)


def _forget_in_child() -> None:
    """In a forked child, the parent's workers are not ours to use or to stop."""
    global _idle, _idle_lock
    _inherited.extend(_idle)  # kept referenced: never waited for, never closed here
    _idle = []
    _idle_lock = threading.Lock()


_inherited: list[_Worker] = []
atexit.register(close_workers)
os.register_at_fork(after_in_child=_forget_in_child)


# -- one run -------------------------------------------------------------------


class _Run:
    """The caller's loop of one realize on the pool."""

    def __init__(
        self,
        executor: LocalExecutor,
        plan: Plan,
        options: RealizeOptions,
        keep_going: bool,
        exchange: Exchange | None,
    ) -> None:
        self.dumps = executor.cloudpickle.dumps
        self.plan = plan
        self.options = options
        self.keep_going = keep_going
        self.exchange = exchange
        self.root = str(plan.store.root)
        sub = options.substitute
        self.shared = sub if isinstance(sub, TravellingSubstituter) else None
        self.deaths: collections.Counter[str] = collections.Counter()
        self.died = False
        self.stopped = False
        try:
            cwd: str | None = os.getcwd()
        except OSError:  # the caller's folder was deleted
            cwd = None
        self.setup = {"path": list(sys.path), "cwd": cwd, "env": dict(os.environ)}
        self.workers = _take(executor.jobs)
        self.idle: list[_Worker] = []
        self.busy: dict[Connection, _Worker] = {}
        for worker in self.workers:
            self._welcome(worker)
        self.progress = Progress(plan.total)  # last: nothing above may fail with the bar on

    def drive(self, first: list[BuildTask]) -> None:
        pending = collections.deque(first)
        self.progress.show(len(self.plan.chosen))
        while True:
            while pending and self.idle and not self.stopped:
                self._send(pending.popleft(), pending)
            if not self.busy or self.stopped:
                return
            for conn in wait(list(self.busy)):
                self._receive(self.busy[cast(Connection, conn)], pending)

    def close(self) -> None:
        """Stop the builds still running (an error, or a stop at the first failure); the
        other workers go back to the pool."""
        for worker in self.busy.values():
            worker.kill()
            self.workers.remove(worker)
            self.died = True
        self.busy.clear()
        self.progress.close()
        _give_back(self.workers)

    def _welcome(self, worker: _Worker) -> None:
        with contextlib.suppress(OSError):  # gone: found when it is given a task
            worker.send("setup", self.setup)
        self.idle.append(worker)

    def _send(self, task: BuildTask, pending: collections.deque[BuildTask]) -> None:
        refused = refusal(self.plan, task, self.options)
        if refused is not None:
            self.plan.failed(task, refused)
            self.stopped = not self.keep_going
            return
        opts = task_options(task, self.options)
        try:
            payload = self.dumps((self.root, task, opts, self.exchange, self.progress.on))
        except Exception as e:  # whatever an object's own pickling raises
            problem = not_shippable(task, opts, _WHERE) or UsageError(
                f"cannot ship the build of {task.dref} to {_WHERE}: {type(e).__name__}: {e}"
            )
            raise problem from e
        worker = self.idle.pop()
        try:
            worker.send("build", payload)
        except OSError:  # it died while idle: the task never started
            self._replace(worker)
            pending.appendleft(task)
            return
        worker.task = task
        self.busy[worker.conn] = worker

    def _receive(self, worker: _Worker, pending: collections.deque[BuildTask]) -> None:
        try:
            data = worker.conn.recv_bytes()
        except (EOFError, OSError):
            self._dead(worker, pending)
            return
        try:
            message = pickle.loads(data)
        except Exception as e:  # an answer that does not load here
            message = ("failed", None, f"its answer could not be loaded: {type(e).__name__}: {e}")
        if message[0] == "ready":
            worker.ready = True
            return
        if message[0] == "output":  # what the build printed: above the progress bar
            self.progress.output(message[1], message[2])
            return
        task = worker.task
        if task is None:  # not ours to read (no task was sent)
            return
        del self.busy[worker.conn]
        worker.task = None
        self.idle.append(worker)
        if message[0] == "done":
            answer = message[1]
            log.info("%s built on %s", task.dref, answer["worker"])
            if self.shared is not None and answer.get("substituter") is not None:
                self.shared.merge(answer["substituter"])
            self.plan.done(task, answer["rrefs"])
            pending.extend(self.plan.next_tasks())
            self.progress.show(len(self.plan.chosen))
        else:
            self._failed(task, _loaded_error(message[1], message[2]))

    def _failed(self, task: BuildTask, error: BaseException) -> None:
        self.plan.failed(task, build_failure(task, error, f"in {_WHERE}", _HINT))
        if not self.keep_going:
            self.stopped = True

    def _dead(self, worker: _Worker, pending: collections.deque[BuildTask]) -> None:
        """A worker's pipe closed: it died. Replace it and run its task again."""
        del self.busy[worker.conn]
        task, was_ready = worker.task, worker.ready
        code = worker.reap()
        status = _status(code)
        self.died = True
        self.workers.remove(worker)
        if not was_ready:
            raise UsageError(
                f"a worker process of jobs= did not start ({status}); see its error above"
            )
        self._replace(None)
        if task is None:
            return
        if code == -signal.SIGTERM:  # stopped on purpose (`lightstore cancel`): not again
            self._failed(
                task,
                BuildError(
                    f"the build of {task.dref} was cancelled: its worker process {worker.pid} "
                    "was stopped with SIGTERM; nothing of it was published",
                    task.dref,
                ),
            )
            return
        self.deaths[task.dref] += 1
        if self.deaths[task.dref] > MAX_DEATHS:
            self._failed(
                task,
                BuildError(
                    f"the worker process building {task.dref} died {self.deaths[task.dref]} "
                    f"times, the last {status} (out of memory, or killed); nothing of it "
                    "was published",
                    task.dref,
                ),
            )
            return
        log.warning(
            "lightstore: worker process %d died (%s) while building %s; building it again",
            worker.pid,
            status,
            task.dref,
        )
        pending.appendleft(task)

    def _replace(self, worker: _Worker | None) -> None:
        if worker is not None:
            worker.reap()
            self.workers.remove(worker)
            self.died = True
        new = _Worker()
        self.workers.append(new)
        self._welcome(new)


def _loaded_error(blob: bytes | None, text: str) -> BaseException:
    """The worker's exception, or an Exception of its text if it does not load here."""
    if blob is not None:
        try:
            error = pickle.loads(blob)
        except Exception:  # its class or state does not load in the caller
            error = None
        if isinstance(error, BaseException):
            return error
    return Exception(text)
