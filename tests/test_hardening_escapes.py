"""Hardening (issue 14): nothing a config or a realizer does reaches outside the store."""

from __future__ import annotations

import os
import stat

import pytest
from helpers import fails

from lightstore import (
    ArchiveError,
    InvalidConfigError,
    build_outpath,
    build_path,
    build_paths,
    build_wrapper,
    fsinit,
    instantiate,
    match_only,
    mkconfig,
    mkdrv,
    mklens,
    mkSS,
    realize1,
    rref2dref,
    selfref,
    spack,
    sunpack,
)
from lightstore.cli.context import EXIT_BAD_INPUT


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


BAD_TAILS = [
    ["/etc/passwd"],
    ["..", "..", "etc", "passwd"],
    ["a", ""],
    ["a/../../b"],
    ["x\0y"],
    ["a//b"],
]


@pytest.mark.parametrize("tail", BAD_TAILS)
def test_promises_and_refpaths_must_stay_inside(store, tail):
    with pytest.raises(InvalidConfigError):
        mkconfig({"name": "p", "out": [selfref, *tail]})

    def stage(r):
        dep = mkdrv({"name": "dep"}, match_only(), build_wrapper(lambda b: None), r)
        return mkdrv(
            {"name": "user", "in": [dep, *tail]}, match_only(), build_wrapper(lambda b: None), r
        )

    with pytest.raises(InvalidConfigError):
        instantiate(stage, S=store.settings)


def test_good_relative_paths_are_accepted():
    assert mkconfig({"out": [selfref, "sub/f.txt"], "o2": [selfref, ".", "f"]}).promises


@pytest.mark.parametrize("tail", BAD_TAILS)
def test_lens_and_build_path_refuse_escaping_tails(store, tail):
    def real(b):
        with open(os.path.join(build_outpath(b), "f"), "w") as f:
            f.write("x")

    def stage(r):
        return mkdrv({"name": "dep"}, match_only(), build_wrapper(real), r)

    rref = realize1(instantiate(stage, S=store.settings))
    dref = rref2dref(rref)
    lens = mklens({"p": [dref, *tail]}, S=store.settings).p
    with pytest.raises(InvalidConfigError):
        _ = lens.syspath
    with pytest.raises(InvalidConfigError):
        _ = lens.contents
    seen = []

    def user(b):
        seen.append(b)
        with pytest.raises(InvalidConfigError):
            build_path(b, [dref, *tail])
        with pytest.raises(InvalidConfigError):
            build_path(b, [b.dref, *tail])
        with pytest.raises(InvalidConfigError):
            build_paths(b, [dref, *tail])
        with open(os.path.join(build_outpath(b), "f"), "w") as f:
            f.write("y")

    def stage2(r):
        d = stage(r)
        return mkdrv({"name": "user", "in": d}, match_only(), build_wrapper(user), r)

    realize1(instantiate(stage2, S=store.settings))
    assert seen


def test_non_utf8_names_pack_to_tar_and_are_refused_by_zip(store, tmp_path):
    raw = os.fsdecode(b"caf\xe9.txt")

    def real(b):
        with open(os.path.join(build_outpath(b), raw), "w") as f:
            f.write("latin-1 name")

    def stage(r):
        return mkdrv({"name": "latin"}, match_only(), build_wrapper(real), r)

    rref = realize1(instantiate(stage, S=store.settings))
    spack([rref], str(tmp_path / "ok.tar"), store)
    with pytest.raises(ArchiveError, match=r"caf\\\\xe9.*tar"):
        spack([rref], str(tmp_path / "bad.zip"), store)
    assert not (tmp_path / "bad.zip").exists()
    assert [n for n in os.listdir(tmp_path) if n.endswith(".part")] == []
    result = fails(EXIT_BAD_INPUT, store.root, "pack", str(tmp_path / "bad2.zip"), rref)
    assert "tar" in result.output
    other = fsinit(mkSS(str(tmp_path / "other")))
    sunpack(str(tmp_path / "ok.tar"), other)
    assert os.path.isfile(os.path.join(other.rref_path(rref), raw))


def test_lens_contents_stays_inside_the_store(tmp_path):
    from lightstore import (
        build_outpath,
        build_wrapper,
        fsinit,
        instantiate,
        match_only,
        mkdrv,
        mklens,
        mkSS,
        realize1,
        selfref,
    )
    from lightstore.foundation.errors import InvalidReferenceError

    secret = tmp_path / "secret.txt"
    secret.write_text("outside")
    S = fsinit(mkSS(str(tmp_path / "store"))).settings

    def stage(r):
        def real(b):
            out = build_outpath(b)
            os.symlink(str(secret), os.path.join(out, "leak"))
            with open(os.path.join(out, "ok"), "w") as f:
                f.write("inside")
            os.symlink(os.path.join(out, "ok"), os.path.join(out, "alias"))

        config = {"name": "links", "leak": [selfref, "leak"], "ok": [selfref, "ok"]}
        return mkdrv(config, match_only(), build_wrapper(real), r)

    rref = realize1(instantiate(stage, S=S))
    assert mklens(rref, S=S).ok.contents == "inside"
    with pytest.raises(InvalidReferenceError, match="outside the store"):
        _ = mklens(rref, S=S).leak.contents
