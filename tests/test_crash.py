"""kill -9 at chosen and at random instants leaves a store that verifies clean (SPEC §5)."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest

from lightstore import allrrefs, fsinit, mkSS
from lightstore.facade import Store
from lightstore.foundation.failpoints import VARIABLE

WORKERS = os.path.join(os.path.dirname(__file__), "workers.py")


def run_worker(root: str, *args: str, failpoint: str | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.pop(VARIABLE, None)
    if failpoint:
        env[VARIABLE] = failpoint
    return subprocess.run(
        [sys.executable, WORKERS, *args[:1], root, *args[1:]],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def read(path: str) -> str:
    with open(path) as f:
        return f.read()


def check_clean(root: str) -> Store:
    """Open the store as a new process would, and require a clean verify."""
    Store.forget_instances()
    store = Store.open(root)
    report = store.verify(check_contents=True)
    assert report.ok, [(p.kind, p.ref, p.detail) for p in report.problems]
    assert not store.catalogue.column("SELECT id FROM builds WHERE status = 'running'")
    assert os.listdir(store.tmp_dir) == []
    return store


@pytest.fixture
def root(tmp_path) -> str:
    r = str(tmp_path / "store")
    fsinit(mkSS(r))
    go = tmp_path / "go"
    go.touch()
    return r


POINTS = [
    "derive:written",
    "realizer",
    "publish:hashing",
    "publish:renamed",
    "publish:committed",
    "gc:moved",
    "gc:committed",
]


@pytest.mark.parametrize("point", POINTS)
def test_kill_at_failpoint(root, point):
    collect = "gc" if point.startswith("gc:") else "no"
    for i in range(5):
        died = run_worker(root, "crashpoint", f"{point}{i}", collect, failpoint=point)
        assert died.returncode == -signal.SIGKILL, died.stderr
        store = check_clean(root)
        if point == "publish:renamed":
            # Renamed but never recorded: rolled back, not left as an orphan.
            assert all(
                f"{point}{i}" not in read(os.path.join(store.rref_path(r), "out.txt"))
                for r in allrrefs(store)
                if "-top" in r
            )
        again = run_worker(root, "crashpoint", f"{point}{i}", collect)
        assert again.returncode == 0, again.stderr
        rref = json.loads(again.stdout.strip().splitlines()[-1])["rref"]
        store = check_clean(root)
        if collect == "no":
            assert rref in allrrefs(store)


def test_kill_at_random_instants(root):
    rng = random.Random(1234)
    kills = 0
    for round_ in range(25):
        env = {k: v for k, v in os.environ.items() if k != VARIABLE}
        child = subprocess.Popen(
            [sys.executable, WORKERS, "churn", root, str(round_)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            # Time the kill from when the child has opened the store, so a slow
            # start on a loaded machine does not turn every kill into a kill at import.
            assert child.stdout is not None and child.stdout.readline().strip() == "ready"
            time.sleep(rng.uniform(0.05, 1.2))
            assert child.poll() is None, child.stderr.read() if child.stderr else ""
            child.send_signal(signal.SIGKILL)
        finally:
            child.wait(timeout=30)
            for stream in (child.stdout, child.stderr):
                if stream:
                    stream.close()
        kills += 1
        check_clean(root)
    assert kills == 25
    # gc in the churn may have collected everything; the history keeps the record.
    made = Store.open(root).catalogue.column("SELECT count(*) FROM history")[0]
    assert made > 0, "the churn workers realized nothing"


def test_a_build_that_died_elsewhere_is_cleaned_up_by_the_next_builder(root):
    """A build is its own publishing intent. One that died between its rename and its commit
    on another host (so recovery here leaves it alone) is cleaned up by the next builder of
    that derivation and context: holding the build lock, it removes the unrecorded folder
    before building, and closes the dead build as interrupted."""
    import sqlite3

    died = run_worker(root, "crashpoint", "elsewhere", "no", failpoint="publish:renamed")
    assert died.returncode == -signal.SIGKILL, died.stderr
    conn = sqlite3.connect(os.path.join(root, "catalogue.sqlite"))
    with conn:
        conn.execute("UPDATE builds SET host = 'another-host' WHERE status = 'running'")
    conn.close()
    Store.forget_instances()
    store = Store.open(root)
    # The first build to publish died: the pipeline's base stage.
    (base,) = [d for d in store.catalogue.all_drefs() if d.endswith("-base")]
    orphans = [n for n in os.listdir(store.dref_path(base)) if n != "config.json"]
    assert len(orphans) == 1 and not store.catalogue.realizations_any_context(base)
    again = run_worker(root, "crashpoint", "elsewhere", "no")
    assert again.returncode == 0, again.stderr
    store = check_clean(root)
    statuses = store.catalogue.column("SELECT status FROM builds WHERE dref = ?", (base,))
    assert sorted(statuses) == ["interrupted", "succeeded"]
    (kept,) = store.catalogue.realizations_any_context(base)
    assert sorted(os.listdir(store.dref_path(base))) == sorted(
        ["config.json", kept.split("-")[0][5:]]
    )
