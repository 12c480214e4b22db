"""Pylightnix's `bashlike`, `garb`, `arch` and `stages.fetch2` modules, from lightstore."""

from __future__ import annotations

import hashlib
import io
import os
import stat
import sys
import tarfile

import pytest
from helpers import read

import lightstore as ls


def _stage(r, name, text):
    def make(b):
        with open(os.path.join(ls.build_outpath(b), "f"), "w") as f:
            f.write(text)

    return ls.mkdrv(
        {"name": name, "t": text, "f": [ls.selfref, "f"]},
        ls.match_only(),
        ls.build_wrapper(make),
        r,
    )


def test_listing_and_cat(S):
    r = ls.Registry(S)
    d = _stage(r, "a", "line1\nline2\n")
    rref = ls.realize1(ls.instantiate(d, r=r))
    assert list(ls.lsdref_(d, S)) == [rref[5:37]]
    assert ls.lsrref(rref, S=S) == ["context.json", "f"] == list(ls.lsrref_(rref, S=S))
    assert list(ls.catrref_(rref, ["f"], S)) == ["line1\n", "line2\n"]
    with pytest.raises(AssertionError):
        ls.lsref("foobar", S=S)


def test_shell_runs_the_given_program_in_the_right_folder(S, tmp_path, monkeypatch):
    r = ls.Registry(S)
    d = _stage(r, "sh", "x")
    rref = ls.realize1(ls.instantiate(d, r=r))
    script = tmp_path / "fake-shell"
    log = tmp_path / "cwd.log"
    script.write_text(f"#!/bin/sh\npwd >> {log}\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("SHELL", str(script))
    assert ls.shell(rref, S=S, timeout=30) == 0
    ls.shellref(d, S=S, timeout=30)
    ls.shell(None, S=S, timeout=30)
    assert ls.shell(S.root, command=["/bin/sh", "-c", "exit 3"], timeout=30) == 3
    cwds = log.read_text().split()
    assert cwds == [ls.rref2path(rref, S), ls.dref2path(d, S), S.storage]
    with pytest.raises(AssertionError):
        ls.shellref("foo", S=S)  # type: ignore[arg-type]


def test_links_and_console_gc(S, tmp_path):
    r = ls.Registry(S)
    keep = ls.realize1(ls.instantiate(_stage(r, "keep", "k"), r=r))
    drop = ls.realize1(ls.instantiate(_stage(r, "drop", "d"), r=r))
    os.makedirs(tmp_path / "keep")
    links = ls.linkrrefs([keep], destdir=str(tmp_path / "keep"), S=S)
    assert os.path.basename(links[0]).startswith("_rref_") and links[0].endswith("_keep")
    assert os.path.realpath(links[0]) == ls.rref2path(keep, S)
    assert ls.gc_exceptions([ls.Path(str(tmp_path / "keep"))]) == ([], [keep])
    _, rrefs = ls.gc_candidates(([], [keep]), S)
    assert drop in rrefs and keep not in rrefs
    assert ls.diskspace_h(5 * 2**20) == "   5 M" and ls.diskspace_h(2**31) == "   2 G"
    with pytest.raises(AssertionError):
        ls.gc([ls.Path(str(tmp_path / "keep"))], interactive=True, S=S)
    ls.gc([ls.Path(str(tmp_path / "keep"))], interactive=False, verbose=False, S=S)
    assert keep in ls.allrrefs(S) and drop not in ls.allrrefs(S)


def test_copyclosure_and_deref(tmp_path):
    A = ls.fsinit(ls.mkSS(str(tmp_path / "a")))
    B = ls.fsinit(ls.mkSS(str(tmp_path / "b")))
    r = ls.Registry(A)
    base = _stage(r, "base", "b")
    top = ls.mkdrv(
        {"name": "top", "base": base}, ls.match_only(), ls.build_wrapper(lambda b: None), r
    )
    rtop = ls.realize1(ls.instantiate(top, r=r))
    rbase = ls.deref_(rtop, base, A)[0]
    assert ls.deref_(rtop, top, A) == [rtop]
    ls.copyclosure([rtop], A, B)
    assert set(ls.allrrefs(B)) == {rtop, rbase}
    assert callable(ls.AUNPACK) and callable(ls.APACK) and callable(ls.CURL) and callable(ls.WGET)


def _tarball(path):
    with tarfile.open(path, "w:gz") as t:
        data = b"hello"
        info = tarfile.TarInfo("pkg/hello.txt")
        info.size = len(data)
        t.addfile(info, io.BytesIO(data))
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_fetchurl2_and_unpack(S, tmp_path):
    archive = tmp_path / "pkg.tar.gz"
    sha = _tarball(archive)
    r = ls.Registry(S)
    f1 = ls.fetchurl2(f"file://{archive}", sha256=sha, r=r)
    assert ls.mklens(f1, r=r).out.refpath == [f1, "pkg.tar.gz"]
    f2 = ls.fetchurl2(str(archive), r=r)  # a local path is hashed now
    assert ls.drefcfg(f2, S)["sha256"] == sha
    u = ls.unpack(refpath=ls.mklens(f1, r=r).out.refpath, sha256=sha, r=r)
    rref = ls.realize1(ls.instantiate(u, r=r))
    assert read(os.path.join(ls.rref2path(rref, S), "pkg", "hello.txt")) == "hello"
    u2 = ls.unpack(path=str(archive), name="local", r=r)
    rref2 = ls.realize1(ls.instantiate(u2, r=r))
    assert sorted(os.listdir(ls.rref2path(rref2, S))) == ["context.json", "pkg"]
    bad = ls.fetchurl2(f"file://{archive}", sha256="0" * 64, name="bad", r=r)
    with pytest.raises(ls.ChecksumError):
        ls.realize1(ls.instantiate(bad, r=r))
    assert bad not in {ls.rref2dref(x) for x in ls.allrrefs(S)}
    with pytest.raises(AssertionError):
        ls.fetchurl2("http://example.invalid/x", r=r)  # a URL needs a checksum
    with pytest.raises(AssertionError):
        ls.unpack(path="a", refpath=["b"], r=r)
    with pytest.raises(AssertionError):
        ls.unpack(path=str(archive), aunpack_args=["-q"], r=r)


def test_link_formats_du_diff_and_json_lenses(S, tmp_path):
    r = ls.Registry(S)
    d = _stage(r, "fmt", "t")
    rref = ls.realize1(ls.instantiate(d, r=r))
    link = ls.linkrref(rref, str(tmp_path), format="_rref_%(T)s_%(N)s", S=S)
    assert os.path.basename(link) == f"_rref_{ls.rrefbstart(rref, S)}_fmt"
    dlink = ls.linkdref(d, str(tmp_path), format="_d_%(N)s", S=S)
    assert os.path.basename(dlink) == "_d_fmt"
    lone = ls.mkdrv_(ls.mkconfig({"name": "lone"}), S)
    assert ls.du(S)[lone] == (
        os.path.getsize(os.path.join(ls.dref2path(lone, S), "config.json")),
        {},
    )
    assert "fmt" in ls.diff(lambda r: _stage(r, "fmt", "t"), lambda r: _stage(r, "other", "t"), S)

    def make_json(b):
        with open(os.path.join(ls.build_outpath(b), "result.json"), "w") as f:
            f.write('{"score": 3}')

    j = ls.mkdrv(
        {"name": "j", "out": [ls.selfref, "result.json"]},
        ls.match_only(),
        ls.build_wrapper(make_json),
        r,
    )
    rj = ls.realize1(ls.instantiate(j, r=r))
    assert ls.mklens(rj, S=S).out.score.val == 3


def test_console_gc_keeps_what_was_built_meanwhile_on_a_shown_object(S, tmp_path, monkeypatch):
    """Between the list shown and the answer, another realization starts to depend on a
    shown object: the removal marks again under the collector lock and keeps both."""
    r = ls.Registry(S)
    base_stage = _stage(r, "base", "b")
    base = ls.realize1(ls.instantiate(base_stage, r=r))
    gone = ls.realize1(ls.instantiate(_stage(r, "gone", "g"), r=r))

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    def answer(*_):
        # Another user of the store builds on top of `base` while the question is shown.
        r2 = ls.Registry(S)
        dep = _stage(r2, "base", "b")
        top = ls.mkdrv(
            {"name": "top", "base": dep}, ls.match_only(), ls.build_wrapper(lambda b: None), r2
        )
        built.append(ls.realize1(ls.instantiate(top, r=r2)))
        return "y"

    built: list[str] = []
    monkeypatch.setattr(sys, "stdin", Terminal())
    monkeypatch.setattr("builtins.input", answer)
    ls.gc([], interactive=True, verbose=True, S=S)
    left = set(ls.allrrefs(S))
    assert gone not in left  # shown and still garbage: removed
    assert base in left and built[0] in left  # a new user keeps what it depends on
    assert ls.Store.open(S.root).verify().ok


def test_gc_refuses_to_run_inside_an_open_catalogue_transaction(store):
    with store.catalogue.write(), pytest.raises(ls.UsageError):
        store.gc()


def test_console_gc_takes_the_end_of_input_for_no(S, monkeypatch):
    r = ls.Registry(S)
    gone = ls.realize1(ls.instantiate(_stage(r, "gone", "g"), r=r))

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    def eof(*_):
        raise EOFError

    monkeypatch.setattr(sys, "stdin", Terminal())
    monkeypatch.setattr("builtins.input", eof)
    ls.gc([], interactive=True, S=S)
    assert gone in ls.allrrefs(S)
