"""Folder trees deeper than Python's recursion limit, end to end with real processes:
realized, shown, verified, packed, pushed, pulled and collected; leftovers of them in
the temporary area; paths longer than realizations allow."""

from __future__ import annotations

import os
import signal

import pytest
from helpers import cli_process, dead_pid, run_job
from workers import make_deep

from lightstore import build_outpath, build_wrapper, instantiate, match_only, mkdrv, realize1
from lightstore.facade import Store
from lightstore.foundation.errors import BuildError
from lightstore.foundation.files import MAX_RELATIVE_PATH, PATH_MAX
from lightstore.store import HOST_TAG

#: Past Python's recursion limit (1,000), yet within PATH_MAX with one-letter names.
DEPTH = 1500
TIMEOUT = 300


def lightstore(root: str, *args: str, env: dict[str, str] | None = None):
    return cli_process(*args, root=root, env=env, timeout=TIMEOUT)


def ok(root: str, *args: str, env: dict[str, str] | None = None) -> str:
    result = lightstore(root, *args, env=env)
    assert result.returncode == 0, (args, result.returncode, result.stderr[-2000:])
    return result.stdout


def realize_deep(root: str, depth: int = DEPTH) -> str:
    """Realize the deep stage in a child process; its RRef."""
    return run_job("deep", root, str(depth), timeout=TIMEOUT).result()["rref"]


def leaf(depth: int = DEPTH) -> str:
    return "d/" * depth + "leaf.txt"


@pytest.mark.slow
def test_a_deep_realization_goes_through_every_command(tmp_path):
    a, b, c = (str(tmp_path / n) for n in "abc")
    for root in (a, b, c):
        ok(root, "init")
    rref = realize_deep(a)
    shown = ok(a, "show", rref)
    assert leaf() in shown
    ok(a, "verify", "--check-contents")
    archive = str(tmp_path / "deep.tar.gz")
    ok(a, "pack", archive, rref)
    ok(b, "unpack", archive)
    remote = f"file://{tmp_path}/remote"
    ok(a, "push", remote, rref)
    ok(c, "pull", remote, rref)
    for root in (b, c):
        assert ok(root, "cat", rref, leaf()) == "the bottom"
        ok(root, "verify", "--check-contents")
    for root in (a, b, c):
        assert rref in ok(root, "gc", "--yes")
        assert os.listdir(os.path.join(root, "tmp")) == []
        assert os.listdir(os.path.join(root, "objects")) == []
        ok(root, "verify")


@pytest.mark.slow
def test_a_gc_killed_with_a_deep_tree_in_its_trash_does_not_stop_the_store(tmp_path):
    root = str(tmp_path / "s")
    ok(root, "init")
    rref = realize_deep(root)
    killed = lightstore(root, "gc", "--yes", env={"LIGHTSTORE_FAILPOINT": "gc:committed"})
    assert killed.returncode == -signal.SIGKILL
    tmp = os.path.join(root, "tmp")
    (area,) = os.listdir(tmp)
    assert area.endswith(".gc")
    # Every writing command opens the store, which recovers first.
    report = ok(root, "verify", "--repair")
    assert "0 problem(s)" in report
    assert os.listdir(tmp) == []
    ok(root, "gc", "--yes")
    assert rref not in ok(root, "ls", "-r")


def test_a_leftover_longer_than_path_max_is_removed_when_the_store_opens(tmp_path):
    root = str(tmp_path / "s")
    Store.open(root, create=True)
    tmp = os.path.join(root, "tmp")
    pid = dead_pid()
    area = os.path.join(tmp, f"{HOST_TAG}.{pid}.0123456789ab.pull")
    os.mkdir(area)
    make_deep(area, PATH_MAX // 4 + 100, "ddd")  # a path of about 4,500 bytes
    os.chmod(area, 0o555)
    Store.forget_instances()
    Store.open(root)
    assert os.listdir(tmp) == []
    # And in a process running a writing command.
    area = os.path.join(tmp, f"{HOST_TAG}.{pid}.0123456789ac.gc")
    os.mkdir(area)
    make_deep(area, PATH_MAX // 4 + 100, "ddd")
    ok(root, "gc", "--yes")
    assert os.listdir(tmp) == []


def test_an_output_with_a_path_longer_than_realizations_allow_is_refused(store, S):
    depth = MAX_RELATIVE_PATH // 4 + 1  # "ddd/" per level: just past the limit

    def stage(r):
        return mkdrv(
            {"name": "too-deep"},
            match_only(),
            build_wrapper(lambda b: make_deep(build_outpath(b), depth, "ddd")),
            r,
        )

    with pytest.raises(BuildError, match="PATH_MAX") as raised:
        realize1(instantiate(stage, S=S))
    assert f"at most {MAX_RELATIVE_PATH} bytes" in str(raised.value)
    assert os.listdir(store.tmp_dir) == []
    assert store.catalogue.query("SELECT count(*) FROM realizations") == [(0,)]


def test_a_chain_of_links_longer_than_the_system_follows_is_refused_cleanly(store, S, tmp_path):
    def chain(b):
        out = build_outpath(b)
        with open(os.path.join(out, "target.txt"), "w") as f:
            f.write("end")
        previous = "target.txt"
        for i in range(DEPTH):
            os.symlink(previous, os.path.join(out, f"l{i}"))
            previous = f"l{i}"

    def stage(r):
        return mkdrv({"name": "chain"}, match_only(), build_wrapper(chain), r)

    rref = realize1(instantiate(stage, S=S))
    assert "l1499" in ok(store.root, "show", rref)
    assert ok(store.root, "cat", rref, "l39") == "end"
    for args in (["cat", rref, "l1499"], ["pack", str(tmp_path / "a.zip"), rref]):
        result = lightstore(store.root, *args)
        assert result.returncode == 2, result.stderr[-2000:]
        assert "symlink" in result.stderr
