"""Hardening (issue 14): a full disk ends in DiskFullError, and the store stays consistent.

Uses a real small filesystem (a tmpfs mounted for the test); skipped where
mounting is not permitted.
"""

from __future__ import annotations

import os

import pytest
from helpers import fails, ok

from lightstore import (
    DiskFullError,
    Store,
    allrrefs,
    build_outpath,
    build_wrapper,
    fsinit,
    instantiate,
    match_only,
    mkdrv,
    mkSS,
    realize1,
)
from lightstore.cli.context import EXIT_REFUSED


def _writer(size: int, tag: str):
    def real(b):
        with open(os.path.join(build_outpath(b), "big"), "wb") as f:
            f.write(tag.encode() * (size // len(tag)))

    def stage(r):
        return mkdrv(
            {"name": "big", "tag": tag, "size": size}, match_only(), build_wrapper(real), r
        )

    return stage


def _fill(root: str) -> str:
    """Fill the filesystem of `root` to the last byte; return the filler's path."""
    filler = os.path.join(os.path.dirname(root), "filler")
    with open(filler, "wb", buffering=0) as f:
        for block in (65536, 4096, 512, 1):
            try:
                while True:
                    f.write(b"\0" * block)
            except OSError:
                pass
    return filler


def test_full_disk_is_a_lightstore_error_and_the_store_verifies_after(small_disk):
    root = os.path.join(small_disk, "store")
    store = fsinit(mkSS(root))
    kept = realize1(instantiate(_writer(1000, "a"), S=store.settings))
    # An output larger than the disk: the realizer's own write fails.
    with pytest.raises(DiskFullError, match="disk holding the store is full"):
        realize1(instantiate(_writer(8 << 20, "b"), S=store.settings))
    assert os.listdir(os.path.join(root, "tmp")) == []
    # No space at all: recording and pinning fail in SQLite or in the tree.
    filler = _fill(root)
    with pytest.raises(DiskFullError):
        for i in range(200):
            store.pin(f"p{i}", kept)
    with pytest.raises(DiskFullError):
        for i in range(200):
            realize1(instantiate(_writer(1000, f"c{i}"), S=store.settings))
    result = fails(EXIT_REFUSED, root, "pin", "best", kept)
    assert "full" in result.output
    os.unlink(filler)
    Store.forget_instances()
    store = Store.open(root)
    assert store.verify(check_contents=True).ok
    assert kept in allrrefs(store)
    ok(root, "verify", "--check-contents")
    ok(root, "pin", "best", kept)
