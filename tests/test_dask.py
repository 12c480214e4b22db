"""Realizing on a real Dask LocalCluster of 2 worker processes.

One cluster serves the module (starting one takes seconds). Realizers are
closures shipped by cloudpickle; this module is pickled by value because
the workers cannot import it by name.
"""

from __future__ import annotations

import builtins
import logging
import os
import signal
import sys
import threading
import time

import pytest

distributed = pytest.importorskip("distributed")
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
    realizeMany,
    selfref,
)
from lightstore.engine.plan import BuildsFailed  # noqa: E402
from lightstore.facade import Store  # noqa: E402
from lightstore.foundation.errors import StoreNotFoundError, UsageError  # noqa: E402
from lightstore.remote import list_remote  # noqa: E402

cloudpickle.register_pickle_by_value(sys.modules[__name__])


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    cluster = distributed.LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address="127.0.0.1:0",
        silence_logs=logging.ERROR,
    )
    c = distributed.Client(cluster)
    c.run(lambda: __import__("lightstore.executors.dask"))  # warm: imports done once
    try:
        # Warm the build path too (first unpickling, store opening) on both workers.
        warm = Store.open(str(tmp_path_factory.mktemp("warm") / "store"), create=True)
        realize(instantiate(fanout(4, 0.05), r=Registry(warm)), client=c)
        yield c
    finally:
        c.close()
        cluster.close()


def test_fan_out_runs_in_parallel_on_workers(client, S, store, tmp_path):
    n, sleep = 8, 1.0
    t0 = time.monotonic()
    ctx = realize(instantiate(fanout(n, sleep), r=Registry(S)), client=client)[2]
    wall = time.monotonic() - t0
    assert len(ctx) == n
    # 8 x 1 s serially is 8 s; two workers take about half.
    assert wall < 0.75 * n * sleep, wall
    pids = set()
    for rs in ctx.values():
        with open(os.path.join(store.rref_path(rs[0]), "pid")) as f:
            pids.add(int(f.read()))
    assert os.getpid() not in pids and len(pids) == 2
    rows = builds(store)
    assert len(rows) == n and {row[1] for row in rows} == {"succeeded"}
    assert {row[2] for row in rows} == pids  # the builds table says which worker built


def test_dag_gives_the_same_rrefs_as_serial(client, tmp_path):
    serial_store = Store.open(str(tmp_path / "serial"), create=True)
    cluster_store = Store.open(str(tmp_path / "cluster"), create=True)
    serial = realize(instantiate(dag, r=Registry(serial_store)))[2]
    parallel = realize(instantiate(dag, r=Registry(cluster_store)), client=client)[2]
    assert serial == parallel and len(serial) == 7
    # Cached through the cluster path too: nothing is submitted, nothing built again.
    again = realize(instantiate(dag, r=Registry(cluster_store)), client=client)[2]
    assert again == parallel and len(builds(cluster_store)) == 7


def test_match_some_of_a_nondeterministic_stage_gives_exactly_k(client, S, store):
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

    rrefs = realizeMany(instantiate(stage, r=Registry(S)), client=client)
    assert len(rrefs) == 3 and len(set(rrefs)) == 3


def test_two_callers_through_one_cluster_build_each_once(client, S, store, tmp_path):
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
            results[k] = realize1(instantiate(overlapping(k), r=Registry(S)), client=client)
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


def test_failures_are_confined_to_dependents(client, S, store):
    def stage(r):
        ok = node(r, "ok", sleep=0.2)
        bad1 = node(r, "bad1", fail=True)
        bad2 = node(r, "bad2", fail=True)
        after = node(r, "after", [bad1])
        return [ok, after, bad2]

    r = Registry(S)
    with pytest.raises(BuildsFailed) as info:
        realize(instantiate(stage, r=r), client=client)
    err = info.value
    assert isinstance(err, BuildError) and len(err.failures) == 2
    assert "bad1 broke" in str(err) and "bad2 broke" in str(err)
    for d in err.failures:
        assert d in str(err)
    # The independent branch is published; the dependent was never built.
    statuses = {
        row[0].split("-", 1)[1]: row[1]
        for row in store.catalogue.query("SELECT dref, status FROM builds")
    }
    assert statuses == {"ok": "succeeded", "bad1": "failed", "bad2": "failed"}
    report = store.verify(check_contents=True)
    assert report.ok, report.problems


def test_one_failure_raises_it_and_keep_going_false_stops(client, S, store, tmp_path):
    log = tmp_path / "log"
    log.mkdir()

    def stage(r):
        bad = node(r, "bad", fail=True)
        slow = [node(r, f"slow{i}", [bad]) for i in range(3)]
        return [*slow, node(r, "other", sleep=0.5, log=str(log))]

    with pytest.raises(BuildError, match="bad broke") as info:
        realize(instantiate(stage, r=Registry(S)), client=client)
    assert not isinstance(info.value, BuildsFailed)

    def chain(r):
        first = node(r, "first", fail=True)
        return [first] + [node(r, f"x{i}", sleep=0.5, log=str(log)) for i in range(6)]

    with pytest.raises(BuildError, match="first broke"):
        realize(instantiate(chain, r=Registry(S)), client=client, keep_going=False)
    # Stopped at the first failure: not all six independent builds were submitted after it.
    assert len([f for f in os.listdir(log) if f.startswith("x")]) < 6


def test_separate_roots_exchange_through_a_remote_cache(client, tmp_path):
    caller = Store.open(str(tmp_path / "caller"), create=True)
    url = "file://" + str(tmp_path / "cache")
    os.makedirs(tmp_path / "cache")
    ctx = realize(
        instantiate(dag, r=Registry(caller)),
        client=client,
        remote=url,
        worker_root=str(tmp_path / "workers"),
    )[2]
    serial_store = Store.open(str(tmp_path / "serial"), create=True)
    assert ctx == realize(instantiate(dag, r=Registry(serial_store)))[2]
    # Nothing was built in the caller's store; the targets were pulled into it.
    assert builds(caller) == []
    _, cl = instantiate(dag, r=Registry(caller))
    for t in cl.targets:
        assert caller.catalogue.known_rrefs(ctx[t]) == set(ctx[t])
    assert caller.verify(check_contents=True).ok
    with pytest.raises(UsageError, match="worker_root"):
        realize(instantiate(dag, r=Registry(caller)), client=client, remote=url)


def test_a_worker_killed_mid_build_is_rerun_and_the_store_verifies(client, S, store, tmp_path):
    log = tmp_path / "log"
    log.mkdir()
    killed = []

    def killer():
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            started = [f for f in os.listdir(log) if f.startswith("victim.")]
            if started:
                pid = int(started[0].split(".")[1])
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
                return
            time.sleep(0.02)

    def stage(r):
        victim = node(r, "victim", sleep=2.0, log=str(log))
        return node(r, "after", [victim])

    thread = threading.Thread(target=killer)
    thread.start()
    try:
        rref = realize1(instantiate(stage, r=Registry(S)), client=client)
    finally:
        thread.join(timeout=60)
    assert killed and rref
    attempts = sorted(f for f in os.listdir(log) if f.startswith("victim."))
    assert len(attempts) == 2  # killed once, rerun once
    statuses = [row[1] for row in builds(store) if row[0].endswith("-victim")]
    assert statuses == ["interrupted", "succeeded"]
    report = store.verify(check_contents=True)
    assert report.ok, report.problems
    assert os.listdir(store.tmp_dir) == []
    client.wait_for_workers(2, timeout=60)


def test_without_dask_the_error_names_the_extra(S, monkeypatch):
    real_import = builtins.__import__

    def hiding(name, *args, **kwargs):
        if name == "distributed" or name.startswith("distributed."):
            raise ModuleNotFoundError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", hiding)
    for mod in [m for m in sys.modules if m == "distributed" or m.startswith("distributed.")]:
        monkeypatch.delitem(sys.modules, mod)
    closure = instantiate(fanout(1, 0), r=Registry(S))
    with pytest.raises(UsageError, match=r"pip install 'lightstore\[dask\]'"):
        realize1(closure, client="tcp://127.0.0.1:1")


def test_workers_that_cannot_see_the_root_say_so(client, S, store):
    closure = instantiate(fanout(1, 0), r=Registry(S))
    _, cl = closure
    # The caller's root, as workers on another machine would see it: missing.
    cl.store.root, real = cl.store.root + "-elsewhere", cl.store.root
    try:
        from lightstore.engine.plan import Plan, RealizeOptions
        from lightstore.executors.dask import DaskExecutor

        plan = Plan(cl, RealizeOptions())
        DaskExecutor(client=client).run(plan, plan.options)
    finally:
        cl.store.root = real
    with pytest.raises(StoreNotFoundError, match="shared-root mode needs the root"):
        plan.result()


def test_a_build_paused_in_the_callers_repl_is_refused_not_waited_for(client, S):
    """The paused build's lock is the caller's: a worker would wait for it forever."""
    import lightstore as ls

    closure = instantiate(lambda r: node(r, "top", [node(r, "base")]), r=Registry(S))
    rh = ls.repl_realize(closure, force_interrupt=True)
    try:
        with pytest.raises(UsageError, match="paused in a REPL session"):
            realize1(closure, client=client)
    finally:
        ls.repl_cancel(rh)
    assert realize1(closure, client=client)


# -- trust and keys: decided where the realize was asked for, shipped to the workers ------


def test_workers_trust_what_the_caller_trusts(client, tmp_path, monkeypatch):
    pytest.importorskip("cryptography")
    from lightstore.remote import generate_signing_key

    key = generate_signing_key("team-1")
    unsigned, signed = (f"file://{tmp_path}/{n}" for n in ("unsigned", "signed"))
    alice = Store.open(str(tmp_path / "alice"), create=True)
    realize(instantiate(dag, r=Registry(alice)), push_to=unsigned)
    alice.push(signed, alice.catalogue.all_rrefs(), signing_key=key)
    # The caller trusts the key through its environment; the workers, started before, do not.
    monkeypatch.setenv("LIGHTSTORE_TRUSTED_KEYS", key.public)
    serial = Store.open(str(tmp_path / "serial"), create=True)
    realize(instantiate(dag, r=Registry(serial)), substituters=[unsigned])
    cluster = Store.open(str(tmp_path / "cluster"), create=True)
    realize(instantiate(dag, r=Registry(cluster)), client=client, substituters=[unsigned])
    for store in (serial, cluster):  # both refused the unsigned ones and built
        assert len(builds(store)) == 7 and imported(store) == [(0,)]
    fetched = Store.open(str(tmp_path / "fetched"), create=True)
    realize(instantiate(dag, r=Registry(fetched)), client=client, substituters=[signed])
    assert builds(fetched) == [] and imported(fetched) == [(7,)]


def test_separate_roots_sign_with_the_callers_key(client, tmp_path, monkeypatch):
    pytest.importorskip("cryptography")
    from lightstore.remote import add_trusted_key, generate_signing_key

    key = generate_signing_key("team-1")
    keyfile = tmp_path / "team.key"
    keyfile.write_text(key.secret_text())
    caller = Store.open(str(tmp_path / "caller"), create=True)
    add_trusted_key(caller.root, key.public)
    url = f"file://{tmp_path}/cache"
    separate = {"client": client, "remote": url, "worker_root": str(tmp_path / "workers")}
    # Trusting only signed realizations, with no key to sign: refused before any build.
    with pytest.raises(UsageError, match="signing key"):
        realize(instantiate(dag, r=Registry(caller)), **separate)
    assert not os.path.exists(tmp_path / "cache")
    # The key from the caller's environment (the workers' has none) signs the workers' pushes.
    monkeypatch.setenv("LIGHTSTORE_SIGNING_KEY", str(keyfile))
    ctx = realize(instantiate(dag, r=Registry(caller)), **separate)[2]
    _, cl = instantiate(dag, r=Registry(caller))
    for t in cl.targets:
        assert caller.catalogue.known_rrefs(ctx[t]) == set(ctx[t])
    assert builds(caller) == [] and caller.verify(check_contents=True).ok
    reader = Store.open(str(tmp_path / "reader"), create=True)
    everything = [x.rref for x in list_remote(url)]
    assert len(reader.pull(url, everything, trusted_keys=[key.public])) == 7


def test_separate_roots_also_ask_the_realizes_substituters(client, tmp_path):
    alice = Store.open(str(tmp_path / "alice"), create=True)
    other = f"file://{tmp_path}/other"
    built = realize(instantiate(dag, r=Registry(alice)), push_to=other)[2]
    caller = Store.open(str(tmp_path / "caller"), create=True)
    ctx = realize(
        instantiate(dag, r=Registry(caller)),
        client=client,
        remote=f"file://{tmp_path}/cache",
        worker_root=str(tmp_path / "workers"),
        substituters=[other],
    )[2]
    assert ctx == built
    # Every derivation came from the substituter: no worker and not the caller built one.
    assert builds(Store.open(str(tmp_path / "workers"))) == [] and builds(caller) == []
    assert imported(caller) == [(7,)]  # the closures of the targets, pulled at the end


def test_separate_roots_reach_the_remote_with_storage_options(
    client, tmp_path, s3_url, aws_env, monkeypatch
):
    import s3fs

    # Credentials only in storage_options: not in the caller's environment, nor the workers'.
    for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(k)
    s3fs.S3FileSystem.clear_instance_cache()
    options = {
        "key": aws_env["AWS_ACCESS_KEY_ID"],
        "secret": aws_env["AWS_SECRET_ACCESS_KEY"],
        "client_kwargs": {"endpoint_url": aws_env["AWS_ENDPOINT_URL"], "region_name": "us-east-1"},
    }
    caller = Store.open(str(tmp_path / "caller"), create=True)
    ctx = realize(
        instantiate(dag, r=Registry(caller)),
        client=client,
        remote=s3_url,
        worker_root=str(tmp_path / "workers"),
        storage_options=options,
    )[2]
    _, cl = instantiate(dag, r=Registry(caller))
    for t in cl.targets:  # the caller's final pull reached the remote too
        assert caller.catalogue.known_rrefs(ctx[t]) == set(ctx[t])
    assert len(list_remote(s3_url, storage_options=options)) == 7


def _record_warnings() -> None:
    """On a worker: keep the lightstore warnings it logs from now on."""

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            logger.kept.append(record.getMessage())  # type: ignore[attr-defined]

    logger = logging.getLogger("lightstore")
    logger.kept = []  # type: ignore[attr-defined]
    logger.keeper = Keep(logging.WARNING)  # type: ignore[attr-defined]
    logger.addHandler(logger.keeper)  # type: ignore[attr-defined]


def _recorded_warnings() -> list[str]:
    logger = logging.getLogger("lightstore")
    logger.removeHandler(logger.keeper)  # type: ignore[attr-defined]
    return list(logger.kept)  # type: ignore[attr-defined]


def test_an_unreachable_substituter_is_asked_once_per_realize_on_dask(
    client, S, store, caplog, monkeypatch
):
    pytest.importorskip("s3fs")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    options = {
        "key": "testing-key-id",
        "secret": "testing-secret",
        # Nothing listens on port 9 (discard) of 127.0.0.1: every request fails at once.
        "client_kwargs": {"endpoint_url": "http://127.0.0.1:9", "region_name": "us-east-1"},
        "config_kwargs": {"retries": {"max_attempts": 1}, "connect_timeout": 1},
    }
    client.run(_record_warnings)
    try:
        with caplog.at_level(logging.WARNING, logger="lightstore"):
            ctx = realize(
                instantiate(fanout(4, 0), r=Registry(S)),
                client=client,
                substituters=["s3://no-bucket-here/cache"],
                storage_options=options,
            )[2]
    finally:
        on_workers = client.run(_recorded_warnings)
    assert len(ctx) == 4 and len(builds(store)) == 4
    here = [m for m in caplog.messages if "substituter" in m]
    there = [m for ms in on_workers.values() for m in ms if "substituter" in m]
    # Four derivations, one remote: one warning, and no worker asked it again.
    assert len(here) + len(there) == 1, (here, there)
    assert "not asked again" in (here + there)[0]


def test_an_unpicklable_realizer_is_named_with_its_derivation(client, S, store):
    """Dask's own error ("Could not serialize object of type LLGExpr") says neither."""
    lock = threading.Lock()

    def real(b):
        with lock, open(os.path.join(build_outpath(b), "out.txt"), "w") as f:
            f.write("x")

    def stage(r):
        cfg = {"name": "holds-a-lock", "out": [selfref, "out.txt"]}
        return mkdrv(cfg, match_only(), build_wrapper(real), r)

    closure = instantiate(stage, r=Registry(S))
    with pytest.raises(UsageError) as raised:
        realize1(closure, client=client)
    message = str(raised.value)
    assert closure[0] in message and "realizer" in message and "_thread.lock" in message
    assert builds(store) == [] and store.verify().ok
