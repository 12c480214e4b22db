"""Defects found by hostile review r1, each reproduced against the real store."""

from __future__ import annotations

import os
import pathlib
import signal
from contextlib import contextmanager

import pytest
from helpers import assert_unchanged, snapshot

from lightstore import (
    build_outpath,
    build_wrapper,
    instantiate,
    match_only,
    mkconfig,
    mkdrv,
    realize1,
)
from lightstore.facade import Store
from lightstore.foundation.errors import LightstoreError
from lightstore.foundation.hashing import file_digest
from lightstore.remote._layout import blob_key, manifest_key


@contextmanager
def deadline(seconds: int):
    """Fail (instead of hanging the suite) if the block takes longer than `seconds`."""

    def expired(signum, frame):
        raise TimeoutError(f"still running after {seconds}s: the call hangs")

    old = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def _with_empty_file(r):
    def build(b):
        out = build_outpath(b)
        open(os.path.join(out, "empty"), "w").close()
        with open(os.path.join(out, "a"), "w") as f:
            f.write("x" * 10)

    return mkdrv(mkconfig({"name": "e"}), match_only(), build_wrapper(build), r)


def _pushed(tmp_path) -> tuple[Store, Store, str, str]:
    alice = Store.open(str(tmp_path / "alice"), create=True)
    bob = Store.open(str(tmp_path / "bob"), create=True)
    rref = realize1(instantiate(_with_empty_file, S=alice.settings))
    url = f"file://{tmp_path}/remote"
    alice.push(url, [rref])
    return alice, bob, rref, url


def _replace(path: str, make) -> None:
    os.chmod(os.path.dirname(path), 0o755)
    os.unlink(path)
    make(path)


@pytest.mark.parametrize("what", ["manifest", "empty-blob", "blob"])
@pytest.mark.parametrize("special", ["fifo", "zero"])
def test_special_files_on_a_file_remote_are_refused(tmp_path, what, special):
    # A hostile file:// remote serves a FIFO (the pull blocked forever) or a
    # symlink to /dev/zero (an endless stream) in place of an object.
    alice, bob, rref, url = _pushed(tmp_path)
    remote = str(tmp_path / "remote")
    if what == "manifest":
        key = manifest_key(rref)
    else:
        name = "empty" if what == "empty-blob" else "a"
        key = blob_key(file_digest(os.path.join(alice.rref_path(rref), name)).hex())
    path = os.path.join(remote, key)
    _replace(path, os.mkfifo if special == "fifo" else lambda p: os.symlink("/dev/zero", p))
    before = snapshot(bob)
    with deadline(8), pytest.raises(LightstoreError, match=r"not a regular file|missing"):
        bob.pull(url, [rref])
    assert_unchanged(bob, before)
    assert os.listdir(bob.tmp_dir) == []


def _two_stage(r):
    def build(b):
        with open(os.path.join(build_outpath(b), "ok"), "w") as f:
            f.write("ok")

    p = mkdrv(mkconfig({"name": "p"}), match_only(), build_wrapper(build), r)
    return mkdrv(mkconfig({"name": "c", "p": p}), match_only(), build_wrapper(build), r)


def test_a_pin_named_like_a_hash_prefix_is_never_silently_shadowed(tmp_path):
    # `pin 1a2b REF` was accepted, then `cat 1a2b ...` / `resolve("1a2b")`
    # answered with whatever object's hash starts with 1a2b, not the pin.
    from lightstore.query import resolve
    from lightstore.query.errors import AmbiguousReferenceError

    store = Store.open(str(tmp_path / "s"), create=True)
    child = realize1(instantiate(_two_stage, S=store.settings))
    parent = next(iter(store.catalogue.rrefdeps([child])))
    prefix = child[len("rref:") :][:6]
    store.pin(prefix, parent)
    with pytest.raises(AmbiguousReferenceError, match="pin"):
        resolve(store, prefix)
    assert resolve(store, child) == child


@pytest.mark.parametrize("value", [float("nan"), float("inf"), 1e300, -5.0, 10**400, "soon"])
def test_remote_manifest_with_absurd_build_times_is_refused(tmp_path, value):
    # Archives refuse such times (issue 14); a remote manifest stored them.
    import json

    from lightstore.foundation.errors import RemoteIntegrityError

    _alice, bob, rref, url = _pushed(tmp_path)
    path = os.path.join(tmp_path, "remote", manifest_key(rref))
    with open(path) as f:
        doc = json.load(f)
    doc["build_started"] = value
    _replace(path, lambda p: pathlib.Path(p).write_text(json.dumps(doc)))
    before = snapshot(bob)
    with pytest.raises(RemoteIntegrityError, match="build time"):
        bob.pull(url, [rref])
    assert_unchanged(bob, before)
