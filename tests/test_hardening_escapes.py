"""Hardening (issue 14): nothing a config or a realizer does reaches outside the store."""

from __future__ import annotations

import os
import stat

from lightstore import build_outpath, build_wrapper, instantiate, match_only, mkdrv, realize1


def test_hard_linked_output_is_copied_and_the_outside_file_untouched(store, tmp_path):
    outside = tmp_path / "big.bin"
    outside.write_bytes(b"original")
    os.chmod(outside, 0o664)

    def real(b):
        os.link(outside, os.path.join(build_outpath(b), "big.bin"))
        os.makedirs(os.path.join(build_outpath(b), "sub"))
        os.link(outside, os.path.join(build_outpath(b), "sub", "again.bin"))

    def stage(r):
        return mkdrv({"name": "linker"}, match_only(), build_wrapper(real), r)

    rref = realize1(instantiate(stage, S=store.settings))
    assert stat.S_IMODE(os.stat(outside).st_mode) == 0o664
    assert os.stat(outside).st_nlink == 1
    stored = os.path.join(store.rref_path(rref), "big.bin")
    assert not os.path.samestat(os.stat(stored), os.stat(outside))
    outside.write_bytes(b"edited later")
    with open(stored, "rb") as f:
        assert f.read() == b"original"
    assert store.verify(check_contents=True).problems == []
