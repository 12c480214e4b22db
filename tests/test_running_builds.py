"""Running builds: `lightstore builds` lists them (and recent finished ones with --all),
`lightstore cancel ID` stops one of this host with SIGTERM, and the catalogue then says
interrupted and the store verifies clean; a build of another host is refused."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys

import pytest
from helpers import REPO, Worker, child_env, fails, ok, run, wait_until

from lightstore.catalogue.records import HOST
from lightstore.facade import Store
from lightstore.maintenance.cancel import CANCELLED
from lightstore.store import CATALOGUE_FILE


def _running(root: str) -> list[dict]:
    return json.loads(ok(root, "builds", "--json"))


def _cancel_in_a_process(root: str, build_id: int) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "lightstore", "--root", root, "cancel", str(build_id)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=child_env(),
        cwd=REPO,
    )


def _set_host(root: str, build_id: int, host: str) -> None:
    conn = sqlite3.connect(os.path.join(root, CATALOGUE_FILE))
    with conn:
        conn.execute("UPDATE builds SET host = ? WHERE id = ?", (host, build_id))
    conn.close()


def test_list_then_cancel_a_serial_build(tmp_path):
    root = str(tmp_path / "store")
    Store.open(root, create=True)
    assert _running(root) == []
    with Worker("slow_build", root) as worker:
        worker.wait_for("working")
        (build,) = _running(root)
        assert build["name"] == "slow" and build["status"] == "running"
        assert build["pid"] == worker.pid and build["host"] == HOST
        assert build["elapsed"] >= 0 and build["dref"].startswith("dref:")
        table = ok(root, "builds")
        assert f"{build['id']}" in table and "slow" in table and str(worker.pid) in table

        # Another host's build cannot be signalled from here.
        _set_host(root, build["id"], "elsewhere")
        refused = fails(5, root, "cancel", str(build["id"]))
        assert "runs on host 'elsewhere'" in refused.output and "cancel it there" in refused.output
        assert worker.running
        _set_host(root, build["id"], HOST)

        cancel = _cancel_in_a_process(root, build["id"])
        outcome = worker.finish(timeout=60)  # reaped here: the test is its parent
        out, err = cancel.communicate(timeout=60)
    assert outcome.returncode == -15  # stopped by SIGTERM
    assert cancel.returncode == 0, err
    assert f"cancelled build #{build['id']}" in out
    assert _running(root) == []
    (after,) = json.loads(ok(root, "builds", "--all", "--json"))
    assert after["id"] == build["id"] and after["status"] == "interrupted"
    assert after["error"] == CANCELLED
    store = Store.open(root)
    report = store.verify(check_contents=True)
    assert report.ok, report.problems
    assert os.listdir(store.tmp_dir) == []
    # Finished: nothing to cancel; an unknown id is not found.
    assert "not running" in fails(5, root, "cancel", str(build["id"])).output
    fails(3, root, "cancel", "999")


@pytest.mark.slow
def test_cancel_a_build_on_a_worker_of_jobs_fails_it_without_building_again(tmp_path):
    root = str(tmp_path / "store")
    store = Store.open(root, create=True)
    with Worker("slow_build", root, "2") as worker:
        worker.wait_for("working")
        (build,) = store.builds()
        assert build["pid"] != worker.pid  # the pool's worker process builds
        report = store.cancel(build["id"])
        assert report.stopped and report.pid == build["pid"]
        outcome = worker.finish(timeout=60)
    assert outcome.returncode != 0
    assert "was cancelled" in outcome.stderr and "SIGTERM" in outcome.stderr
    (after,) = store.builds(recent=5)  # one attempt: not built again by another worker
    # The caller's own recovery may record the dead worker's build first.
    assert after["status"] == "interrupted"
    assert store.verify(check_contents=True).ok and os.listdir(store.tmp_dir) == []


def test_builds_all_lists_recent_finished_builds_newest_first(tmp_path, pipeline):
    rows = json.loads(ok(pipeline.root, "builds", "--all", "--limit", "2", "--json"))
    assert len(rows) == 2 and {r["status"] for r in rows} == {"succeeded"}
    assert rows[0]["stopped"] >= rows[1]["stopped"]
    assert rows[0]["elapsed"] == pytest.approx(rows[0]["stopped"] - rows[0]["started"])
    assert json.loads(ok(pipeline.root, "builds", "--json")) == []
    assert "no build is running" in run(pipeline.root, "builds").output


def test_builds_in_a_notebook_are_a_table_with_datetimes(pipeline):
    rows = Store.open(pipeline.root).builds(recent=3)
    assert "<table" in rows._repr_html_() and "succeeded" in rows._repr_html_()
    df = rows.to_pandas()
    assert str(df.started.dt.tz) == "UTC" and df.elapsed.dtype.kind == "f"


def test_a_running_record_of_a_dead_process_shows_as_interrupted(tmp_path):
    root = str(tmp_path / "store")
    Store.open(root, create=True)
    with Worker("slow_build", root) as worker:
        worker.wait_for("working")
        (build,) = _running(root)
        worker.kill()
    wait_until(lambda: not _running(root), what="the dead build to leave the list")
    (gone,) = json.loads(ok(root, "builds", "--all", "--json"))
    assert gone["id"] == build["id"] and gone["status"] == "interrupted"


def _record_running_build(root: str, pid: int, started_ago: float) -> int:
    """A running build recorded for process `pid`, started `started_ago` seconds ago."""
    store = Store.open(root, create=True)
    build_id = store.catalogue.start_build("dref:" + "0" * 32 + "-x", "h", "{}", [])
    conn = sqlite3.connect(os.path.join(root, CATALOGUE_FILE))
    with conn:
        conn.execute(
            "UPDATE builds SET pid = ?, started = started - ? WHERE id = ?",
            (pid, started_ago, build_id),
        )
    conn.close()
    return build_id


def test_cancel_leaves_alone_a_later_process_given_the_builds_pid(tmp_path):
    root = str(tmp_path / "store")
    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        build_id = _record_running_build(root, stranger.pid, started_ago=120)
        report = Store.open(root).cancel(build_id, timeout=1)
        assert stranger.poll() is None  # not signalled: it started after the build
        assert report.stopped
        (after,) = json.loads(ok(root, "builds", "--all", "--json"))
        assert after["status"] == "interrupted"
    finally:
        stranger.kill()
        stranger.wait()


@pytest.mark.parametrize("pid", [0, -1])
def test_cancel_refuses_a_recorded_pid_that_names_no_single_process(tmp_path, pid):
    root = str(tmp_path / "store")
    build_id = _record_running_build(root, pid, started_ago=0)
    assert "no process to stop" in fails(5, root, "cancel", str(build_id)).output


def test_cancel_an_id_beyond_sqlite_integers_is_not_found(tmp_path):
    root = str(tmp_path / "store")
    Store.open(root, create=True)
    assert "no build #" in fails(3, root, "cancel", str(2**64)).output
