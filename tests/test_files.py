"""The tree helpers of lightstore.foundation.files: walking, copying, chmod, fsync, deleting and
resolving links at any depth, without recursion."""

from __future__ import annotations

import errno
import os
import stat

import pytest
from hypothesis import given
from hypothesis import strategies as st
from workers import make_deep

from lightstore.foundation.files import (
    MAX_SYMLINKS,
    PATH_MAX,
    copy_tree,
    fsync_tree,
    make_readonly,
    make_writable,
    real_path,
    remove_tree,
    walk,
    walk_tree,
)

#: Past Python's recursion limit (1,000), yet within PATH_MAX with one-letter names.
DEPTH = 1500


def refuse(entry):
    return ValueError(entry.rel)


@pytest.mark.slow
def test_walk_copy_chmod_and_fsync_a_tree_deeper_than_the_recursion_limit(tmp_path):
    src = str(tmp_path / "src")
    os.mkdir(src)
    make_deep(src, DEPTH)
    entries = list(walk_tree(src))
    assert [e.kind for e in entries] == ["dir"] * DEPTH + ["file", "link"]
    assert entries[-2].rel == "d/" * DEPTH + "leaf.txt" and entries[-2].size == 10
    assert entries[-1].target == "leaf.txt"
    assert sum(len(dirs) for _, dirs, _ in walk(src)) == DEPTH
    make_readonly(src)
    assert all(e.mode & 0o222 == 0 for e in walk_tree(src) if e.kind != "link")
    copy = str(tmp_path / "copy")
    copy_tree(src, copy, refuse, keep_modes=True)
    assert [(e.rel, e.kind, e.mode) for e in walk_tree(copy)] == [
        (e.rel, e.kind, e.mode) for e in walk_tree(src)
    ]
    fsync_tree(copy)
    make_writable(copy)
    assert all(e.mode & stat.S_IWUSR for e in walk_tree(copy) if e.kind != "link")
    for root in (src, copy):
        remove_tree(root)
        assert not os.path.lexists(root)


def test_remove_tree_deletes_paths_longer_than_path_max(tmp_path):
    top = tmp_path / "top"
    top.mkdir()
    make_deep(str(top), PATH_MAX // 4 + 50, "ddd")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_text("keep")
    os.symlink(str(outside), str(top / "ddd" / "link-out"))
    # Read-only folders on the way, as published realizations have.
    for p in (top / "ddd" / "ddd", top / "ddd", top):
        os.chmod(p, 0o555)
    remove_tree(str(top))
    assert not top.exists()
    assert (outside / "keep").read_text() == "keep"


def test_real_path_follows_chains_without_recursion(tmp_path):
    (tmp_path / "target").mkdir()
    previous = "target"
    for i in range(MAX_SYMLINKS):
        os.symlink(previous, str(tmp_path / f"l{i}"))
        previous = f"l{i}"
    last = str(tmp_path / previous)
    assert real_path(last) == os.path.realpath(last) == str(tmp_path / "target")
    # A longer chain than the system follows: os.path.realpath recursed once per link.
    for i in range(MAX_SYMLINKS, 2000):
        os.symlink(previous, str(tmp_path / f"l{i}"))
        previous = f"l{i}"
    with pytest.raises(OSError) as raised:
        real_path(str(tmp_path / previous))
    assert raised.value.errno == errno.ELOOP


_NAMES = st.sampled_from(["a", "b", "c", "a/b", "b/c"])
_TARGETS = st.sampled_from(["a", "b", "..", "../a", "a/..", "c/b", "/", ".", "missing", "b/.."])


@given(st.lists(st.tuples(_NAMES, _TARGETS), max_size=8), _NAMES)
def test_real_path_agrees_with_os_realpath(tmp_path_factory, links, probe):
    root = tmp_path_factory.mktemp("links")
    for folder in ("a", "b", "c", "a/b", "b/c"):
        os.makedirs(root / folder, exist_ok=True)
    for folder in (".", "a", "b", "c", "a/b", "b/c"):
        (root / folder / "y").write_text("y")
    for name, target in links:
        path = root / name / "x"
        if not os.path.lexists(path):
            os.symlink(target, path)
    path = str(root / probe / "x" / "y")
    try:
        expected = os.path.realpath(path, strict=True)
    except OSError:  # loops and missing paths: no single answer to compare with
        return
    assert real_path(path) == expected


@given(st.lists(st.sampled_from(["a", "b", "a/c", "b/d", "a/c/e"]), max_size=6))
def test_walk_is_os_walk(tmp_path_factory, folders):
    root = tmp_path_factory.mktemp("walk")
    for f in folders:
        os.makedirs(root / f, exist_ok=True)
        (root / f / "file").write_text("x")
    if folders:
        os.symlink(str(root / folders[0]), str(root / "link"))
    assert list(walk(str(root))) == list(os.walk(str(root)))
