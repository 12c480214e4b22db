"""Realizing with `jobs=N`: the pool of local worker processes kept for the process.

Real worker processes, real kill -9, real scripts run as subprocesses. The
pool is the process's: tests share it (as a program's realizes do), and a
test that kills workers leaves it to heal itself.
"""

from __future__ import annotations

import builtins
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

cloudpickle = pytest.importorskip("cloudpickle")

from parallel_stages import builds, dag, fanout, imported, node  # noqa: E402

from lightstore import (  # noqa: E402
    BuildError,
    Registry,
    build_outpath,
    build_wrapper,
    instantiate,
    match_only,
    match_some,
    mkdrv,
    realize,
    realize1,
    realize_closure,
    realizeMany,
    selfref,
)
from lightstore.engine.plan import BuildsFailed  # noqa: E402
from lightstore.executors import local  # noqa: E402
from lightstore.facade import Store  # noqa: E402
from lightstore.foundation.errors import UsageError  # noqa: E402

cloudpickle.register_pickle_by_value(sys.modules[__name__])


@pytest.fixture(scope="module", autouse=True)
def pool(tmp_path_factory):
    """Start the pool once for the module (as a program's first `jobs=` realize does)."""
    warm = Store.open(str(tmp_path_factory.mktemp("warm") / "store"), create=True)
    realize(instantiate(fanout(2, 0), r=Registry(warm)), jobs=2)
    yield
    local.close_workers()


def idle_pids():
    return sorted(w.pid for w in local._idle)


def catalogue_rows(store):
    """What a realize records, without what differs between runs (ids, times, pids)."""
    return {
        "builds": sorted(
            store.catalogue.query("SELECT dref, context_hash, context, status, host FROM builds")
        ),
        "realizations": sorted(
            store.catalogue.query(
                "SELECT rref, dref, context, context_hash, size, file_count, host, imported, "
                "build_id IS NOT NULL FROM realizations"
            )
        ),
        "deps": sorted(store.catalogue.query("SELECT rref, dep FROM realization_deps")),
    }


def test_fan_out_runs_in_parallel_on_two_workers(S, store):
    n, sleep = 8, 0.5
    t0 = time.monotonic()
    ctx = realize(instantiate(fanout(n, sleep), r=Registry(S)), jobs=2)[2]
    wall = time.monotonic() - t0
    assert len(ctx) == n
    # 8 x 0.5 s serially is 4 s; two workers take about half.
    assert wall < 0.75 * n * sleep, wall
    pids = set()
    for rs in ctx.values():
        with open(os.path.join(store.rref_path(rs[0]), "pid")) as f:
            pids.add(int(f.read()))
    assert os.getpid() not in pids and len(pids) == 2
    rows = builds(store)
    assert len(rows) == n and {row[1] for row in rows} == {"succeeded"}
    assert {row[2] for row in rows} == pids  # the builds table says which worker built


def test_the_workers_are_kept_for_the_process(S, store):
    before = idle_pids()
    assert len(before) >= 2
    realize(instantiate(fanout(4, 0), r=Registry(S)), jobs=2)
    # The same processes built it and are idle again; none was started.
    assert {row[2] for row in builds(store)} <= set(before)
    assert idle_pids() == before


def test_dag_gives_the_same_rrefs_and_records_as_serial(tmp_path):
    serial_store = Store.open(str(tmp_path / "serial"), create=True)
    pool_store = Store.open(str(tmp_path / "pool"), create=True)
    serial = realize(instantiate(dag, r=Registry(serial_store)))[2]
    parallel = realize(instantiate(dag, r=Registry(pool_store)), jobs=2)[2]
    assert serial == parallel and len(serial) == 7
    assert catalogue_rows(serial_store) == catalogue_rows(pool_store)
    # Cached through the pool path too: nothing is sent, nothing built again.
    again = realize(instantiate(dag, r=Registry(pool_store)), jobs=2)[2]
    assert again == parallel and len(builds(pool_store)) == 7


@settings(max_examples=20)
@given(
    st.lists(st.lists(st.integers(min_value=0, max_value=30), max_size=3), min_size=1, max_size=8)
)
def test_any_dag_gives_the_same_context_as_serial(tmp_path_factory, shape):
    """Each node depends on some earlier ones (indices modulo its position)."""

    def stage(r):
        made = []
        for i, picks in enumerate(shape):
            deps = sorted({made[p % i] for p in picks}) if i else []
            made.append(node(r, f"n{i}", deps))
        return made

    base = tmp_path_factory.mktemp("dag")
    serial_store = Store.open(str(base / "serial"), create=True)
    pool_store = Store.open(str(base / "pool"), create=True)
    serial = realize(instantiate(stage, r=Registry(serial_store)))[2]
    assert realize(instantiate(stage, r=Registry(pool_store)), jobs=2)[2] == serial
    assert catalogue_rows(serial_store) == catalogue_rows(pool_store)


def test_match_some_of_a_nondeterministic_stage_gives_exactly_k(S):
    def real(b):
        for out in b.outpaths:
            with open(os.path.join(out, "out.txt"), "w") as f:
                f.write(os.urandom(8).hex())

    def stage(r):
        base = node(r, "base")
        return mkdrv(
            {"name": "nd", "base": base, "out": [selfref, "out.txt"]},
            match_some(3),
            build_wrapper(real, nouts=3),
            r,
        )

    rrefs = realizeMany(instantiate(stage, r=Registry(S)), jobs=2)
    assert len(rrefs) == 3 and len(set(rrefs)) == 3


def test_two_threads_realizing_overlapping_closures_build_each_once(S, tmp_path):
    log = tmp_path / "log"
    log.mkdir()

    def overlapping(k):
        def stage(r):
            shared = [node(r, f"shared{i}", sleep=0.3, log=str(log)) for i in range(3)]
            return node(r, f"top{k}", shared, log=str(log))

        return stage

    results, errors = {}, []

    def caller(k):
        try:
            results[k] = realize1(instantiate(overlapping(k), r=Registry(S)), jobs=2)
        except Exception as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=caller, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors and len(results) == 2
    names = sorted(f.split(".")[0] for f in os.listdir(log))
    assert names == ["shared0", "shared1", "shared2", "top0", "top1"]


def test_failures_are_confined_to_dependents(S, store):
    def stage(r):
        ok = node(r, "ok", sleep=0.2)
        bad1 = node(r, "bad1", fail=True)
        bad2 = node(r, "bad2", fail=True)
        after = node(r, "after", [bad1])
        return [ok, after, bad2]

    with pytest.raises(BuildsFailed) as info:
        realize(instantiate(stage, r=Registry(S)), jobs=2)
    err = info.value
    assert isinstance(err, BuildError) and len(err.failures) == 2
    assert "bad1 broke" in str(err) and "bad2 broke" in str(err)
    assert set(err.skipped.values()) <= set(err.failures)
    # The independent branch is published; the dependent was never built.
    statuses = {
        row[0].split("-", 1)[1]: row[1]
        for row in store.catalogue.query("SELECT dref, status FROM builds")
    }
    assert statuses == {"ok": "succeeded", "bad1": "failed", "bad2": "failed"}
    assert store.verify(check_contents=True).ok


def test_one_failure_raises_it_and_keep_going_false_stops(S, store, tmp_path):
    log = tmp_path / "log"
    log.mkdir()

    def stage(r):
        bad = node(r, "bad", fail=True)
        return [*(node(r, f"after{i}", [bad]) for i in range(3)), node(r, "other", sleep=0.3)]

    with pytest.raises(BuildError, match="bad broke") as info:
        realize(instantiate(stage, r=Registry(S)), jobs=2)
    assert not isinstance(info.value, BuildsFailed)

    def chain(r):
        first = node(r, "first", sleep=0.3, fail=True)
        return [first] + [node(r, f"x{i}", sleep=5, log=str(log)) for i in range(6)]

    t0 = time.monotonic()
    with pytest.raises(BuildError, match="first broke"):
        realize(instantiate(chain, r=Registry(S)), jobs=2, keep_going=False)
    # Stopped at the first failure: the build still running was stopped, not waited for,
    # and nothing more was sent.
    assert time.monotonic() - t0 < 4
    assert len([f for f in os.listdir(log) if f.startswith("x")]) <= 1
    assert store.verify(check_contents=True).ok and os.listdir(store.tmp_dir) == []
    assert "running" not in {row[1] for row in builds(store)}


def _kill_when_started(log, name, killed, times=1):
    """Kill -9 each process that starts building `name` (seen in `log`), `times` times."""
    deadline = time.monotonic() + 60
    seen = set()
    while time.monotonic() < deadline and len(killed) < times:
        for f in os.listdir(log):
            if f.startswith(f"{name}.") and f not in seen:
                seen.add(f)
                pid = int(f.split(".")[1])
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
        time.sleep(0.01)


def test_a_worker_killed_mid_build_is_rerun_and_the_store_verifies(S, store, tmp_path):
    log = tmp_path / "log"
    log.mkdir()
    killed = []

    def stage(r):
        victim = node(r, "victim", sleep=2.0, log=str(log))
        return [node(r, "after", [victim]), node(r, "bystander", sleep=0.5)]

    thread = threading.Thread(target=_kill_when_started, args=(str(log), "victim", killed))
    thread.start()
    try:
        ctx = realize(instantiate(stage, r=Registry(S)), jobs=2)[2]
    finally:
        thread.join(timeout=60)
    assert len(killed) == 1 and len(ctx) == 3
    attempts = sorted(f for f in os.listdir(log) if f.startswith("victim."))
    assert len(attempts) == 2  # killed once, run again once
    statuses = {row[0].split("-", 1)[1]: row[1] for row in builds(store)}
    victim = [row[1] for row in builds(store) if row[0].endswith("-victim")]
    assert victim == ["interrupted", "succeeded"]
    assert statuses["bystander"] == statuses["after"] == "succeeded"
    report = store.verify(check_contents=True)
    assert report.ok, report.problems
    assert os.listdir(store.tmp_dir) == []
    # The dead worker was replaced: the pool is whole again, and the killed one is not in it.
    assert len(idle_pids()) >= 2 and killed[0] not in idle_pids()


def test_a_task_whose_worker_keeps_dying_fails_alone(S, store, tmp_path):
    log = tmp_path / "log"
    log.mkdir()
    killed = []

    def stage(r):
        doomed = node(r, "doomed", sleep=30, log=str(log))
        return [node(r, "after", [doomed]), node(r, "fine", sleep=0.2)]

    deaths = local.MAX_DEATHS + 1
    thread = threading.Thread(target=_kill_when_started, args=(str(log), "doomed", killed, deaths))
    thread.start()
    try:
        with pytest.raises(BuildError) as info:
            realize(instantiate(stage, r=Registry(S)), jobs=2)
    finally:
        thread.join(timeout=60)
    message = str(info.value)
    assert info.value.dref.endswith("-doomed")
    assert f"died {deaths} times" in message and "SIGKILL" in message
    statuses = [row[1] for row in builds(store)]
    assert statuses.count("interrupted") == deaths and statuses.count("succeeded") == 1
    assert store.verify(check_contents=True).ok and os.listdir(store.tmp_dir) == []


def test_an_idle_worker_that_died_is_replaced(S, store):
    victim = idle_pids()[0]
    os.kill(victim, signal.SIGKILL)
    ctx = realize(instantiate(fanout(4, 0.1), r=Registry(S)), jobs=2)[2]
    assert len(ctx) == 4 and victim not in {row[2] for row in builds(store)}


def test_ctrl_c_in_the_caller_stops_the_running_builds(S, store, tmp_path):
    log = tmp_path / "log"
    log.mkdir()
    # Python's own Ctrl-C handler: a browser test's event loop, still open in this process,
    # may have left asyncio's (which swallows the first SIGINT).
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)

    def interrupt_when_started():
        deadline = time.monotonic() + 60
        # One running build is enough (on a loaded machine the second may start later).
        while time.monotonic() < deadline and not os.listdir(log):
            time.sleep(0.01)
        # What a terminal's Ctrl-C does: SIGINT to the process, taken by its main thread.
        signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)

    thread = threading.Thread(target=interrupt_when_started)
    thread.start()
    t0 = time.monotonic()
    try:
        with pytest.raises(KeyboardInterrupt):
            realize(instantiate(fanout(2, 60, log=str(log)), r=Registry(S)), jobs=2)
    finally:
        thread.join(timeout=60)
        signal.signal(signal.SIGINT, previous)
    assert time.monotonic() - t0 < 30
    started = {int(f.split(".")[1]) for f in os.listdir(log)}
    for pid in started:  # the workers and their builds are gone
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert {row[1] for row in builds(store)} == {"interrupted"}
    assert store.verify(check_contents=True).ok and os.listdir(store.tmp_dir) == []


def test_workers_build_in_the_callers_environment_and_folder(S, tmp_path, monkeypatch):
    """The workers were started before; what the caller changed since is what they see."""

    def real(b):
        with open(os.path.join(build_outpath(b), "out.txt"), "w") as f:
            f.write(f"{os.environ.get('LIGHTSTORE_TEST_SEED')} {os.getcwd()}")

    def stage(r):
        return mkdrv(
            {"name": "env", "out": [selfref, "out.txt"]}, match_only(), build_wrapper(real), r
        )

    monkeypatch.setenv("LIGHTSTORE_TEST_SEED", "42")
    monkeypatch.chdir(tmp_path)
    rref = realize1(instantiate(stage, r=Registry(S)), jobs=2)
    store = Store.open(S.root)
    with open(os.path.join(store.rref_path(rref), "out.txt")) as f:
        assert f.read() == f"42 {tmp_path}"


def test_workers_trust_what_the_caller_trusts(tmp_path, monkeypatch):
    pytest.importorskip("cryptography")
    from lightstore.remote import generate_signing_key

    key = generate_signing_key("team-1")
    unsigned, signed = (f"file://{tmp_path}/{n}" for n in ("unsigned", "signed"))
    alice = Store.open(str(tmp_path / "alice"), create=True)
    realize(instantiate(dag, r=Registry(alice)), push_to=unsigned)
    alice.push(signed, alice.catalogue.all_rrefs(), signing_key=key)
    # The caller trusts the key through its environment, set after the workers started.
    monkeypatch.setenv("LIGHTSTORE_TRUSTED_KEYS", key.public)
    pooled = Store.open(str(tmp_path / "pooled"), create=True)
    realize(instantiate(dag, r=Registry(pooled)), jobs=2, substituters=[unsigned])
    assert len(builds(pooled)) == 7 and imported(pooled) == [(0,)]  # refused the unsigned
    fetched = Store.open(str(tmp_path / "fetched"), create=True)
    realize(instantiate(dag, r=Registry(fetched)), jobs=2, substituters=[signed])
    assert builds(fetched) == [] and imported(fetched) == [(7,)]


def test_separate_roots_exchange_through_a_remote_cache(tmp_path):
    caller = Store.open(str(tmp_path / "caller"), create=True)
    url = "file://" + str(tmp_path / "cache")
    os.makedirs(tmp_path / "cache")
    ctx = realize(
        instantiate(dag, r=Registry(caller)), jobs=2, remote=url, worker_root=str(tmp_path / "w")
    )[2]
    serial_store = Store.open(str(tmp_path / "serial"), create=True)
    assert ctx == realize(instantiate(dag, r=Registry(serial_store)))[2]
    assert builds(caller) == [] and len(builds(Store.open(str(tmp_path / "w")))) == 7
    _, cl = instantiate(dag, r=Registry(caller))
    for t in cl.targets:  # the targets were pulled into the caller's store
        assert caller.catalogue.known_rrefs(ctx[t]) == set(ctx[t])
    assert caller.verify(check_contents=True).ok
    with pytest.raises(UsageError, match="worker_root"):
        realize(instantiate(dag, r=Registry(caller)), jobs=2, remote=url)


def test_an_unpicklable_realizer_is_named_with_its_derivation(S, store):
    lock = threading.Lock()

    def real(b):
        with lock, open(os.path.join(build_outpath(b), "out.txt"), "w") as f:
            f.write("x")

    def stage(r):
        cfg = {"name": "holds-a-lock", "out": [selfref, "out.txt"]}
        return mkdrv(cfg, match_only(), build_wrapper(real), r)

    closure = instantiate(stage, r=Registry(S))
    with pytest.raises(UsageError) as raised:
        realize1(closure, jobs=2)
    message = str(raised.value)
    assert closure[0] in message and "realizer" in message and "_thread.lock" in message
    assert "jobs=" in message
    assert builds(store) == [] and store.verify().ok


def test_a_realizer_the_workers_cannot_load_fails_naming_its_derivation(
    S, store, tmp_path, monkeypatch
):
    (tmp_path / "only_in_the_caller.py").write_text("def text():\n    return 'x'\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import only_in_the_caller  # pickled by name: the workers import it

    def real(b):
        with open(os.path.join(build_outpath(b), "out.txt"), "w") as f:
            f.write(only_in_the_caller.text())

    def stage(r):
        cfg = {"name": "needs-a-module", "out": [selfref, "out.txt"]}
        return mkdrv(cfg, match_only(), build_wrapper(real), r)

    (tmp_path / "only_in_the_caller.py").unlink()
    closure = instantiate(stage, r=Registry(S))
    with pytest.raises(BuildError) as info:
        realize1(closure, jobs=2)
    message = str(info.value)
    assert info.value.dref == closure[0] and closure[0] in message
    assert "only_in_the_caller" in message and "importable" in message
    assert builds(store) == [] and store.verify().ok
    monkeypatch.delitem(sys.modules, "only_in_the_caller")


def test_a_realizers_own_exception_comes_back_as_its_cause(S):
    class Unloadable(Exception):
        def __reduce__(self):
            raise TypeError("not today")

    def real(b):
        raise Unloadable("the data is bad")

    def stage(r):
        return mkdrv({"name": "raises"}, match_only(), build_wrapper(real), r)

    with pytest.raises(BuildError, match="the data is bad") as info:
        realize1(instantiate(stage, r=Registry(S)), jobs=2)
    assert info.value.dref.endswith("-raises")
    assert "Unloadable: the data is bad" in str(info.value.cause)


def test_a_build_paused_in_the_callers_repl_is_refused_not_waited_for(S):
    """The paused build's lock is the caller's: a worker would wait for it forever."""
    import lightstore as ls

    r = Registry(S)
    closure = instantiate(lambda r: node(r, "top", [node(r, "base")]), r=r)
    rh = ls.repl_realize(closure, force_interrupt=True)
    try:
        with pytest.raises(UsageError, match="paused in a REPL session"):
            realize1(closure, jobs=2)
    finally:
        ls.repl_cancel(rh)
    assert realize1(closure, jobs=2)


def test_a_cached_realize_with_jobs_starts_no_worker(S, monkeypatch):
    closure = instantiate(fanout(2, 0), r=Registry(S))
    ctx = realize(closure)[2]
    monkeypatch.setattr(local, "_Worker", None)  # starting one would raise
    assert realize(closure, jobs=2)[2] == ctx


def test_workers_that_cannot_start_say_so(S, store, monkeypatch):
    local.close_workers()
    monkeypatch.setattr(local, "_BOOT", "import sys; sys.exit(3)")
    with pytest.raises(UsageError, match=r"did not start \(exit status 3\)"):
        realize(instantiate(fanout(2, 0), r=Registry(S)), jobs=2)
    assert local._idle == [] and builds(store) == []


def test_jobs_must_be_a_positive_integer_and_not_with_client(S):
    closure = instantiate(fanout(1, 0), r=Registry(S))
    for bad in (0, -1, True, 1.5, "2"):
        with pytest.raises(UsageError, match="positive integer"):
            realize_closure(closure[1], jobs=bad)
    with pytest.raises(UsageError, match="not both"):
        realize(closure, jobs=2, client="tcp://127.0.0.1:1")


def hide_modules(monkeypatch, *names):
    real_import = builtins.__import__

    def hiding(name, *args, **kwargs):
        if name.split(".")[0] in names:
            raise ModuleNotFoundError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", hiding)
    for mod in [m for m in sys.modules if m.split(".")[0] in names]:
        monkeypatch.delitem(sys.modules, mod)


def test_jobs_needs_no_dask_but_cloudpickle(S, monkeypatch):
    closure = instantiate(fanout(1, 0), r=Registry(S))
    hide_modules(monkeypatch, "distributed", "dask")
    assert len(realize(closure, jobs=2)[2]) == 1
    hide_modules(monkeypatch, "cloudpickle")
    with pytest.raises(UsageError, match=r"cloudpickle.*pip install 'lightstore\[dask\]'"):
        realize(closure, jobs=2)


SCRIPT = """
import os, sys
from lightstore import build_outpath, build_wrapper, instantiate, match_only, mkdrv, mkSS
from lightstore import realize1, selfref

def stage(r):
    def real(b):
        with open(os.path.join(build_outpath(b), "out.txt"), "w") as f:
            f.write("x")
    return mkdrv({"name": "scripted", "out": [selfref, "out.txt"]}, match_only(),
                 build_wrapper(real), r)

"""


@pytest.mark.parametrize(
    "body",
    [
        "print(realize1(instantiate(stage, S=mkSS(sys.argv[1])), jobs=2))\n",
        "print(realize1(instantiate(stage, S=mkSS(sys.argv[1])), jobs=2))\n"
        "if __name__ == '__main__':\n    pass\n",
        "if __name__ == '__main__':\n"
        "    print(realize1(instantiate(stage, S=mkSS(sys.argv[1])), jobs=2))\n",
    ],
    ids=["no-guard", "realize-outside-the-guard", "guarded"],
)
def test_a_script_using_jobs_needs_no_main_guard(tmp_path, body):
    """A real script run as a subprocess: the workers never import it, so it runs once
    whatever its `if __name__ == "__main__":` block, and exits when it is done."""
    from lightstore import fsinit, mkSS

    root = str(tmp_path / "store")
    fsinit(mkSS(root))
    script = tmp_path / "pipeline.py"
    script.write_text(SCRIPT + body)
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    # Its own process group, so that a hang is reaped with every worker it started.
    proc = subprocess.Popen(
        [sys.executable, str(script), root],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=tmp_path,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    assert proc.returncode == 0, err
    assert out.strip().startswith("rref:") and len(out.strip().splitlines()) == 1
    rows = Store.open(root).catalogue.query("SELECT status, pid FROM builds")
    assert len(rows) == 1 and rows[0][0] == "succeeded" and rows[0][1] != proc.pid


def test_a_worker_dying_is_seen_though_its_build_forked_a_lasting_child(S, store, tmp_path):
    """A build that forks a child living on (a server, a data loader), then dies: the
    child holds neither the worker's pipe nor the build lock, so the task runs again at
    once instead of when the child ends."""
    flag, pids = tmp_path / "died-once", tmp_path / "children"

    def real(b):
        child = os.fork()
        if child == 0:
            time.sleep(30)
            os._exit(0)
        with open(pids, "a") as f:
            f.write(f"{child}\n")
        if not flag.exists():
            flag.write_text("")
            os._exit(1)
        with open(os.path.join(build_outpath(b), "out"), "w") as f:
            f.write("built")

    def stage(r):
        return mkdrv(
            {"name": "forks", "out": [selfref, "out"]}, match_only(), build_wrapper(real), r
        )

    started = time.monotonic()
    try:
        rref = realize1(instantiate(stage, r=Registry(S)), jobs=2)
    finally:
        for pid in pids.read_text().split() if pids.exists() else []:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)
    assert time.monotonic() - started < 15
    assert store.verify(check_contents=True).ok and rref
