"""Copying closures directly between stores: same checks as archives, and resumable after kill -9."""

from __future__ import annotations

import os
import random
import shutil
import signal
import time

import pytest
from helpers import assert_unchanged, holdings, run_job, snapshot

from lightstore import (
    ArchiveError,
    Store,
    UnknownReferenceError,
    allrrefs,
    copy_closure,
    fsinit,
    instantiate,
    mknode,
    mkSS,
    realize,
    rrefdeps,
)


def wide_stage(n: int, tag: str = "w"):
    """`n` layers of two nodes each, every layer depending on the previous one, then a top."""

    def stage(r):
        prev: list = []
        for i in range(n):
            layer = [
                mknode(
                    r, {"name": f"{tag}{i}{side}", "prev": prev}, {"f": f"{tag}{i}{side}" * (i + 1)}
                )
                for side in "ab"
            ]
            prev = layer
        return mknode(r, {"name": f"{tag}top", "prev": prev}, {"top": "top"})

    return stage


def closure_tree(store: Store, rrefs: set[str]) -> dict[str, tuple]:
    """The entries of objects/ belonging to `rrefs`: their folders, and their derivations'
    folders and config files."""
    folders = {os.path.relpath(store.rref_path(r), store.objects_dir) for r in rrefs}
    exact = {os.path.dirname(f) for f in folders}
    exact |= {f"{d}/config.json" for d in exact}
    return {
        rel: entry
        for rel, entry in holdings(store)["tree"].items()
        if rel in exact or any(rel == f or rel.startswith(f + "/") for f in folders)
    }


def make_source(path, n: int = 5) -> tuple[Store, str]:
    src = fsinit(mkSS(str(path)))
    _, closure, ctx = realize(instantiate(wide_stage(n), S=src))
    (top,) = ctx[closure.targets[0]]
    return src, top


def assert_complete(src: Store, dst: Store, top: str) -> None:
    closure = {top} | rrefdeps([top], src)
    assert closure <= set(allrrefs(dst))
    assert closure_tree(dst, closure) == closure_tree(src, closure)
    src_rows, dst_rows = holdings(src)["rows"], holdings(dst)["rows"]
    for key in src_rows:
        assert src_rows[key] <= dst_rows[key], key
    report = dst.verify(check_contents=True)
    assert report.ok, [(p.kind, p.ref, p.detail) for p in report.problems]
    assert os.listdir(dst.tmp_dir) == []


# -- plain copies --------------------------------------------------------------------


def test_copy_into_empty_store(tmp_path):
    src, top = make_source(tmp_path / "src")
    dst = fsinit(mkSS(str(tmp_path / "dst")))
    seen = []
    added = copy_closure(
        [top], src, dst, progress=lambda done, total, r: seen.append((done, total))
    )
    assert set(added) == {top} | rrefdeps([top], src)
    assert added[-1] == top  # dependencies first
    assert seen[-1] == (len(added), len(added))
    assert holdings(dst) == holdings(src)
    assert_complete(src, dst, top)
    assert copy_closure([top], src, dst) == []


def test_copy_into_overlapping_store(tmp_path):
    src, top = make_source(tmp_path / "src")
    dst = fsinit(mkSS(str(tmp_path / "dst")))
    realize(instantiate(wide_stage(2), S=dst))  # the same first layers: same RRefs
    realize(instantiate(wide_stage(1, tag="other"), S=dst))
    before = set(allrrefs(dst))
    added = copy_closure([top], src.settings, str(dst.root))
    assert not set(added) & before
    assert set(allrrefs(dst)) == before | {top} | rrefdeps([top], src)
    assert_complete(src, dst, top)


def test_copy_to_the_same_store_is_a_no_op(tmp_path):
    src, top = make_source(tmp_path / "src", n=1)
    assert copy_closure([top], src, src) == []


def test_unknown_rref(tmp_path):
    src, top = make_source(tmp_path / "src", n=1)
    dst = fsinit(mkSS(str(tmp_path / "dst")))
    ghost = "rref:" + "1" * 32 + top[37:]
    before = snapshot(dst)
    with pytest.raises(UnknownReferenceError):
        copy_closure([ghost], src, dst)
    assert_unchanged(dst, before)


def test_corrupt_source_is_refused(tmp_path):
    src, top = make_source(tmp_path / "src", n=2)
    victim = next(r for r in rrefdeps([top], src) if r.endswith("-w1a"))
    path = os.path.join(src.rref_path(victim), "f")
    os.chmod(path, 0o644)
    with open(path, "w") as f:
        f.write("tampered")
    dst = fsinit(mkSS(str(tmp_path / "dst")))
    with pytest.raises(ArchiveError, match="does not hash"):
        copy_closure([top], src, dst)
    assert victim not in allrrefs(dst)
    assert top not in allrrefs(dst)
    assert dst.verify(check_contents=True).ok
    assert os.listdir(dst.tmp_dir) == []


@pytest.mark.parametrize("valid", [True, False])
def test_unrecorded_folder_in_destination(tmp_path, valid):
    """A folder in objects/ without its row is verified and recorded, or replaced."""
    src, top = make_source(tmp_path / "src", n=1)
    dst = fsinit(mkSS(str(tmp_path / "dst")))
    leftover = dst.rref_path(top)
    if valid:
        shutil.copytree(src.rref_path(top), leftover, symlinks=True)
    else:
        os.makedirs(leftover)
        with open(os.path.join(leftover, "top"), "w") as f:
            f.write("wrong")
    os.chmod(leftover, 0o555)
    copy_closure([top], src, dst)
    assert_complete(src, dst, top)


# -- killed half way, then run again ---------------------------------------------------


def check_consistent(dst: Store) -> None:
    """What a killed copy left: every recorded realization has its folder and its dependencies."""
    Store.forget_instances()
    fresh = Store.open(dst.root)  # as the next process would: recover() runs
    report = fresh.verify(check_contents=True)
    assert report.ok, [(p.kind, p.ref, p.detail) for p in report.problems]
    assert os.listdir(fresh.tmp_dir) == []


@pytest.mark.parametrize(
    "point",
    [
        "copy:staged:4",  # copied into tmp/, not yet installed
        "publish:renamed",  # renamed into objects/, not yet recorded
        "copy:recorded:6",  # some recorded, the rest not started
    ],
)
def test_resume_after_kill_at_failpoint(tmp_path, point):
    src, top = make_source(tmp_path / "src")
    dst = fsinit(mkSS(str(tmp_path / "dst")))
    if point == "publish:renamed":
        # Copy part of the closure first, so the child dies half way through the rest.
        part = next(r for r in rrefdeps([top], src) if r.endswith("-w2a"))
        copy_closure([part], src, dst)
    died = run_job("copy", src.root, dst.root, top, failpoint=point, timeout=60)
    assert died.returncode == -signal.SIGKILL, died.stderr
    recorded = set(allrrefs(dst))
    assert top not in recorded
    if point == "publish:renamed":  # the window between rename and commit was hit
        assert any(os.path.isdir(dst.rref_path(r)) for r in rrefdeps([top], src) - recorded)
    elif point.startswith("copy:staged"):
        assert os.listdir(dst.tmp_dir) != []  # the dead child's copy, until recovered
    check_consistent(dst)
    dst = Store.open(dst.root)
    added = copy_closure([top], src, dst)
    assert set(added) == ({top} | rrefdeps([top], src)) - recorded
    assert_complete(src, dst, top)


def test_resume_after_kills_at_random_instants(tmp_path, workers):
    src, top = make_source(tmp_path / "src", n=12)
    dst = fsinit(mkSS(str(tmp_path / "dst")))
    # How long a whole copy takes in a child, once it has started.
    probe = workers.start("copy", src.root, fsinit(mkSS(str(tmp_path / "probe"))).root, top)
    probe.wait_for("start")
    started = time.monotonic()
    probe.result(timeout=60)
    duration = time.monotonic() - started
    rng = random.Random(7)
    progress: list[int] = []
    total = 1 + len(rrefdeps([top], src))
    fraction = 0.2
    # Kill at random instants; wait longer after a kill that came before any progress,
    # and start again in a fresh store, sooner, after one that came too late, until a
    # kill lands in the middle of the copy.
    fresh = 0
    while len(progress) < 16 and not any(0 < n < total for n in progress):
        child = workers.start("copy", src.root, dst.root, top)
        child.wait_for("start")
        time.sleep(rng.uniform(0.8, 1.2) * fraction * duration)
        child.kill()
        progress.append(len(allrrefs(dst)))
        check_consistent(dst)
        dst = Store.open(dst.root)
        if progress[-1] == 0:
            fraction *= 1.3
        elif progress[-1] == total:
            fresh += 1
            dst = fsinit(mkSS(str(tmp_path / f"dst{fresh}")))
            fraction *= 0.5
    copy_closure([top], src, dst)
    assert_complete(src, dst, top)
    assert any(0 < n < total for n in progress), progress  # a kill hit mid-copy
