"""Where lightstore's Pylightnix layer behaves as Pylightnix does: derivations in the store as
soon as `mkdrv` makes them, the built-in exceptions Pylightnix programs catch, names that
are not plain strings, `mknode` and `fetchlocal` called Pylightnix's way, `dirhash` and
friends with Pylightnix's values, `du`, lenses that need a realization context, `spack`
of every realization, build times a realizer declares, dry runs, and a REPL session's own
thread realizing what it holds paused."""

from __future__ import annotations

import gc
import hashlib
import io
import os
import re
import sqlite3
import subprocess
import sys
import tarfile
import textwrap

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import lightstore as ls
from lightstore.foundation.errors import NotInStoreError


def _write(text):
    def make(b):
        with open(os.path.join(ls.build_outpath(b), "out.txt"), "w") as f:
            f.write(text)

    return ls.build_wrapper(make)


def _node(r, cfg, text="x"):
    return ls.mkdrv(dict(cfg, out=[ls.selfref, "out.txt"]), ls.match_only(), _write(text), r)


def _catalogue_drefs(S):
    """The derivations another process sees: read with a connection of its own."""
    db = sqlite3.connect(os.path.join(S.root, "catalogue.sqlite"))
    try:
        return {d for (d,) in db.execute("SELECT dref FROM derivations")}
    finally:
        db.close()


def _builds(S):
    db = sqlite3.connect(os.path.join(S.root, "catalogue.sqlite"))
    try:
        return db.execute("SELECT dref, status, started FROM builds ORDER BY id").fetchall()
    finally:
        db.close()


# -- mkdrv puts the derivation in the store ---------------------------------------------


def test_store_wide_questions_see_what_mkdrv_made(S):
    r = ls.Registry(S)
    d1 = _node(r, {"name": "one"})
    d2 = _node(r, {"name": "two", "dep": d1})
    assert _catalogue_drefs(S) == set()  # recorded in a batch, not one transaction each...
    assert set(ls.alldrefs(S)) == {d1, d2}  # ...before any question is answered
    assert _catalogue_drefs(S) == {d1, d2}  # and from then on other processes see them too
    assert ls.rootdrefs(S) == {d2}
    assert ls.drefdeps([d2], S) == {d1}
    assert os.path.isfile(os.path.join(ls.dref2path(d2, S), "config.json"))


def test_instantiate_records_the_stages_its_result_does_not_need(S):
    def stage(r):
        n1 = _node(r, {"name": "n1"})
        _node(r, {"name": "ignored"})
        n3 = _node(r, {"name": "n3", "dep": n1})
        _node(r, {"name": "also-ignored", "dep": n3})
        return n1, n3

    (n1, n3), clo = ls.instantiate(stage, S=S)
    assert {d.dref for d in clo.derivations} == {n1, n3}
    assert len(_catalogue_drefs(S)) == 4  # instantiate alone recorded all four
    ls.realize(clo)
    assert len(ls.alldrefs(S)) == 4
    assert len(ls.allrrefs(S)) == 2


def test_a_registry_dropped_unused_loses_nothing(S):
    dref = _node(ls.Registry(S), {"name": "orphan", "v": 1})
    gc.collect()  # the registry is gone; its derivation is not
    assert ls.drefcfg(dref, S)["v"] == 1
    assert dref in ls.alldrefs(S)


def test_recorded_but_unrealized_is_garbage_unless_kept(S, store):
    r = ls.Registry(S)
    base = _node(r, {"name": "base"})
    assert ls.alldrefs(S) == [base]
    assert ls.store_gc([], [], S)[0] == {base}
    assert ls.store_gc([base], [], S)[0] == set()
    store.gc()
    assert ls.alldrefs(S) == []
    # A later derivation of the same registry brings its collected dependency back.
    top = _node(r, {"name": "top", "dep": base})
    assert set(ls.alldrefs(S)) == {base, top}
    assert ls.isrref(ls.realize1(ls.instantiate(top, r=r)))


# -- the built-in exceptions Pylightnix raises ---------------------------------------------


def test_a_dependency_from_another_store_is_a_file_not_found(tmp_path):
    S1 = ls.fsinit(ls.mkSS(str(tmp_path / "one"))).settings
    S2 = ls.fsinit(ls.mkSS(str(tmp_path / "two"))).settings
    foreign, _ = ls.instantiate(lambda r: _node(r, {"name": "foreign"}), S=S2)

    def stage(r):
        return _node(r, {"name": "mine", "dep": foreign})

    with pytest.raises(FileNotFoundError) as info:
        ls.instantiate(stage, S=S1)
    assert isinstance(info.value, ls.UnknownReferenceError | AssertionError)
    assert isinstance(info.value, NotInStoreError) and foreign in str(info.value)
    with pytest.raises(FileNotFoundError):
        ls.drefcfg(foreign, S1)
    # In the same store but another registry, it is no missing file (Pylightnix asserts).
    other, _ = ls.instantiate(lambda r: _node(r, {"name": "other"}), S=S1)
    with pytest.raises(ls.UnknownReferenceError) as info:
        ls.instantiate(lambda r: _node(r, {"name": "mine", "dep": other}), S=S1)
    assert not isinstance(info.value, FileNotFoundError)


# -- names -------------------------------------------------------------------------------


def test_names_that_are_no_plain_strings(S, store):
    r = ls.Registry(S)
    one = _node(r, {"name": 1})
    two = _node(r, {"name": "two\n", "dep": one})
    assert one.endswith("-1") and ls.drefcfg(one, S)["name"] == 1
    assert two.endswith("-two") and ls.drefcfg(two, S)["name"] == "two\n"
    rref = ls.realize1(ls.instantiate(two, r=r))
    assert rref.endswith("-two") and "\n" not in "".join(ls.allrrefs(S) + ls.alldrefs(S))
    assert ls.cfgname({"name": 1}) == "1" and ls.cfgname({"name": "x\n"}) == "x"
    report = store.reindex()  # the tree alone gives the same references back
    assert report is not None and set(ls.alldrefs(S)) == {one, two}
    assert store.verify(check_contents=True).ok


#: What Pylightnix's name check lets through: `$` also matches before a final newline.
pylightnix_names = st.from_regex(r"^[a-zA-Z0-9_-]+$").filter(lambda s: len(s) <= 200)


@given(name=pylightnix_names, h=st.text("0123456789abcdef", min_size=32, max_size=32))
def test_every_name_pylightnix_takes_makes_references_without_line_breaks(name, h):
    assert re.match(r"^[a-zA-Z0-9_-]+$", name)
    dref = ls.mkdref(h, name)
    rref = ls.mkrref(h[::-1], h, name)
    assert "\n" not in dref + rref and dref.endswith("-" + name.rstrip("\n"))
    assert ls.mkdref(*ls.undref(dref)) == dref
    assert ls.mkrref(*ls.unrref(rref)) == rref and ls.rref2dref(rref) == dref
    root = os.path.join(os.sep, "somewhere", "objects")
    assert ls.path2dref(os.path.join(root, f"{h}-{ls.undref(dref)[1]}")) == dref
    ls.assert_valid_config({"name": name})


def test_the_thread_holding_a_paused_derivation_realizes_it(S):
    def stage(r):
        first = _node(r, {"name": 1, "a": "1"})
        return _node(r, {"name": 2, "dep": first})

    rh = ls.repl_realize(ls.instantiate(stage, S=S), force_interrupt=True)
    assert ls.repl_rref(rh) is None
    rref = ls.realize1(ls.instantiate(stage, S=S))  # waiting for itself would never end
    ls.repl_cancel(rh)
    assert ls.isrref(rref) and rref.endswith("-2")
    assert [s for d, s, _ in _builds(S) if d.endswith("-2")] == ["interrupted", "succeeded"]


# -- mknode and fetchlocal, called Pylightnix's way ------------------------------------------


finite_configs = st.dictionaries(
    st.text(max_size=5).filter(lambda k: k not in ("name", "__artifacts__")),
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=5),
    max_size=4,
)


@settings(max_examples=15)
@given(
    cfg=finite_configs,
    artifacts=st.dictionaries(pylightnix_names, st.binary(max_size=20), min_size=1, max_size=3),
)
def test_mknode_takes_pylightnix_keywords(tmp_path_factory, cfg, artifacts):
    S = ls.fsinit(ls.mkSS(str(tmp_path_factory.mktemp("mknode") / "store"))).settings
    dref, clo = ls.instantiate(lambda r: ls.mknode(r, cfgdict=cfg, artifacts=artifacts), S=S)
    assert dref.endswith("-mknode") and len(clo.derivations) == 1
    rref = ls.realize1(clo)
    for name, data in artifacts.items():
        with open(os.path.join(ls.rref2path(rref, S), name), "rb") as f:
            assert f.read() == data


def _tgz(path, files):
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_fetchlocal_called_pylightnix_s_way(S, tmp_path, monkeypatch):
    sha = _tgz(tmp_path / "data.tar.gz", {"inside.txt": b"dogfood"})
    archive = str(tmp_path / "data.tar.gz")
    # By default the archive is unpacked into the output and removed.
    rref = ls.realize1(
        ls.instantiate(ls.fetchlocal, path=archive, filename="other.tar.gz", sha256=sha, S=S)
    )
    assert sorted(os.listdir(ls.rref2path(rref, S))) == ["context.json", "inside.txt"]
    # 'unpack' without 'remove' keeps the archive beside what it held.
    rref = ls.realize1(ls.instantiate(ls.fetchlocal, sha, path=archive, mode="unpack", S=S))
    assert {"inside.txt", "data.tar.gz"} <= set(os.listdir(ls.rref2path(rref, S)))
    # 'as-is' keeps the file, promised as out_path; envname names the file.
    monkeypatch.setenv("PLX_DATA", archive)
    rref = ls.realize1(ls.instantiate(ls.fetchlocal, sha, envname="PLX_DATA", mode="as-is", S=S))
    with open(ls.mklens(rref, S=S).out_path.syspath, "rb") as f:
        assert hashlib.sha256(f.read()).hexdigest() == sha
    assert ls.mklens(rref, S=S).envname.val == "PLX_DATA"
    # A file lightstore cannot unpack, with the default mode: refused before anything runs.
    (tmp_path / "plain.csv").write_text("a,b\n")
    with pytest.raises(AssertionError, match="as-is"):
        ls.instantiate(ls.fetchlocal, sha, path=str(tmp_path / "plain.csv"), S=S)
    # lightstore's own call form keeps its meaning: no unpacking unless asked.
    rref = ls.realize1(ls.instantiate(lambda r: ls.fetchlocal(r, archive, sha), S=S))
    assert "data.tar.gz" in os.listdir(ls.rref2path(rref, S))


# -- dirhash, filehash, datahash, dicthash: Pylightnix's sha256 values -----------------------


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_dirhash_values(tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    assert ls.dirhash(str(d)) == _sha(b"")
    (d / "a").write_bytes(b"1")
    assert ls.dirhash(str(d)) == _sha(b"1") == ls.filehash(str(d / "a"))
    assert ls.dirhash(str(d)) == "6b86b273ff34fce19d6b804eff5a3f5747ada4eaa22f1d49c01e52ddb7875b4b"
    (d / "_ignored").write_bytes(b"anything")
    assert ls.dirhash(str(d)) == _sha(b"1")
    # Files in order, a folder's own before those of its sub-folders (by name), names not hashed.
    (d / "z").write_bytes(b"2")
    (d / "sub2").mkdir()
    (d / "sub2" / "c").write_bytes(b"4")
    (d / "sub1").mkdir()
    (d / "sub1" / "b").write_bytes(b"3")
    (d / "sub1" / "_skip").write_bytes(b"x")
    assert ls.dirhash(str(d)) == _sha(b"1234")
    # A symlink to a file: its target text, then the file's bytes.
    os.symlink("z", d / "y")
    assert ls.dirhash(str(d)) == _sha(b"1" + b"z" + b"2" + b"2" + b"34")
    assert ls.dirshash([str(d / "sub1"), str(d / "sub2")]) == _sha(b"34")
    with pytest.raises(AssertionError):
        ls.dirhash(str(d / "a"))


@settings(max_examples=30)
@given(data=st.binary(max_size=3000))
def test_a_one_file_folder_hashes_as_its_file(tmp_path_factory, data):
    d = tmp_path_factory.mktemp("one")
    (d / "f").write_bytes(data)
    assert ls.dirhash(str(d)) == ls.filehash(str(d / "f")) == _sha(data)


def test_datahash_and_dicthash_values():
    assert ls.datahash([("x", b"ab"), ("y", b"c")]) == _sha(b"abc")
    assert ls.dicthash({"b": 2, "a": 1, "_c": 3}) == _sha(b"a=1_b=2")


def test_realizations_are_still_named_by_their_blake3_content_hash(S):
    rref = ls.realize1(ls.instantiate(lambda r: _node(r, {"name": "n"}, "text"), S=S))
    assert ls.dirhash(ls.rref2path(rref, S))[:32] not in rref


# -- du ------------------------------------------------------------------------------------


def test_du_counts_the_config_and_the_realization_folder(S):
    dref, clo = ls.instantiate(lambda r: _node(r, {"name": "n"}, "twelve bytes"), S=S)
    with open(os.path.join(ls.dref2path(dref, S), "config.json"), "rb") as f:
        config_bytes = len(f.read())
    assert ls.du(S) == {dref: (config_bytes, {})}
    rref = ls.realize1(clo)
    folder = ls.rref2path(rref, S)
    files = sum(os.path.getsize(os.path.join(folder, n)) for n in os.listdir(folder))
    assert ls.du(S) == {dref: (config_bytes + files, {rref: files})}


def test_catref_reads_realizations_and_files_not_derivations(S, tmp_path):
    dref, clo = ls.instantiate(lambda r: _node(r, {"name": "n"}, "line one\nline two\n"), S=S)
    rref = ls.realize1(clo)
    assert ls.catref(rref, ["out.txt"], S) == ["line one\n", "line two\n"]
    (tmp_path / "plain.txt").write_text("a\nb")
    assert ls.catref(str(tmp_path / "plain.txt"), S=S) == ["a\n", "b"]
    with pytest.raises(AssertionError, match="derivation"):
        ls.catref(dref, ["out.txt"], S)


# -- lenses ----------------------------------------------------------------------------------


def test_a_lens_on_a_derivation_chooses_no_realization(S):
    def stage(r):
        return _node(r, {"name": "top", "dep": _node(r, {"name": "dep"}, "dep")}, "top")

    dref, clo = ls.instantiate(stage, S=S)
    rref = ls.realize1(clo)  # the store holds exactly one realization of each
    lens = ls.mklens(dref, S=S)
    assert lens.dep.out.refpath[1:] == ["out.txt"]
    assert os.path.isdir(lens.syspath)  # the derivation's own folder
    with pytest.raises(AssertionError, match="context"):
        lens.dep.out.syspath  # noqa: B018
    assert ls.mklens(rref, S=S).dep.out.contents == "dep"
    with pytest.raises(AssertionError, match="navigate"):  # a plain value has no fields
        ls.mklens(rref, S=S).name.get("x")


# -- spack ---------------------------------------------------------------------------------


def test_spack_packs_the_realizations_the_matcher_did_not_pick(tmp_path):
    S1 = ls.fsinit(ls.mkSS(str(tmp_path / "one"))).settings
    S2 = ls.fsinit(ls.mkSS(str(tmp_path / "two"))).settings

    def three(b):
        for i, out in enumerate(ls.build_outpaths(b)):
            with open(os.path.join(out, "out.txt"), "w") as f:
                f.write(str(i))

    def stage(r):
        dep = _node(r, {"name": "dep"})
        return ls.mkdrv(
            {"name": "top", "dep": dep}, ls.match_some(1), ls.build_wrapper(three, nouts=3), r
        )

    picked = ls.realize1(ls.instantiate(stage, S=S1))
    assert len(ls.allrrefs(S1)) == 4
    ls.spack([picked], str(tmp_path / "all.zip"), S=S1)
    ls.sunpack(str(tmp_path / "all.zip"), S=S2)
    assert set(ls.allrrefs(S2)) == set(ls.allrrefs(S1))
    assert set(ls.alldrefs(S2)) == set(ls.alldrefs(S1))


# -- build times a realizer declares ---------------------------------------------------------


def test_declared_build_times_are_the_recorded_ones(S):
    def stage(start, stop, tag, r):
        return ls.mkdrv(
            {"name": "timed", "tag": tag},
            ls.match_only(),
            ls.build_wrapper(lambda b: None, starttime=start, stoptime=stop),
            r,
        )

    rref = ls.realize1(
        ls.instantiate(stage, ls.timestring(100.0), ls.timestring(250.5), "given", S=S)
    )
    assert ls.parsetime(ls.rrefbstart(rref, S)) == 100.0
    assert ls.parsetime(ls.rrefbstop(rref, S)) == 250.5
    assert ls.rrefbdelta(rref, S) == 150.5
    assert all(started > 1e9 for _, _, started in _builds(S))  # the attempt's real time is kept
    rref = ls.realize1(ls.instantiate(stage, None, "AUTO", "none", S=S))
    assert ls.rrefbstart(rref, S) is None and ls.rrefbstop(rref, S) is not None
    with pytest.raises(AssertionError, match="timestring"):
        ls.build_wrapper(lambda b: None, starttime="yesterday")


def test_a_hand_made_build_declares_its_start(S):
    def realizer(S_, dref, context, rarg):
        b = ls.Build(ls.mkbuildargs(S_, dref, context, ls.timestring(7.0), "AUTO", {}, rarg))
        for out in ls.build_markstart(b, 2):
            with open(os.path.join(out, "out.txt"), "w") as f:
                f.write(out)
        ls.build_markstop(b)
        return b.outpaths

    def stage(r):
        return ls.mkdrv({"name": "by-hand"}, ls.match_all, realizer, r)

    rrefs = ls.realizeMany(ls.instantiate(stage, S=S))
    assert [ls.parsetime(ls.rrefbstart(r, S)) for r in rrefs] == [7.0, 7.0]


def test_match_latest_follows_the_declared_stop_time(S):
    stops = iter([ls.timestring(2000.0), ls.timestring(1000.0)])

    def stage(r):
        def make(b):
            with open(os.path.join(ls.build_outpath(b), "out.txt"), "w") as f:
                f.write(b.stoptime)

        return ls.mkdrv(
            {"name": "latest"},
            ls.match_latest(),
            ls.build_wrapper(make, stoptime=next(stops)),
            r,
        )

    first = ls.realize1(ls.instantiate(stage, S=S))
    # Built later, but declared to have stopped earlier: the first stays the latest.
    again = ls.realize1(ls.instantiate(stage, S=S), force_rebuild=True)
    assert len(ls.allrrefs(S)) == 2 and again == first


# -- dry runs ----------------------------------------------------------------------------------


def test_a_dry_run_maps_what_it_would_build_to_none(S):
    def stage(r):
        shared = _node(r, {"name": "shared"})
        left = _node(r, {"name": "left", "dep": shared})
        right = _node(r, {"name": "right", "dep": shared})
        return left, right

    (left, right), clo = ls.instantiate(stage, S=S)
    ls.realize1(ls.instantiate(lambda r: stage(r)[0], S=S))
    _, _, ctx = ls.realize(clo, dry_run=True)
    assert ctx[right] is None
    assert ctx[left] is not None and len(ctx[left]) == 1
    assert sorted(ls.rootdrefs(S)) == sorted([left, right])


# -- a REPL session abandoned to the garbage collector -----------------------------------


def test_a_paused_session_finalized_by_the_garbage_collector_does_not_deadlock(S):
    # The collector may run at any allocation, also one made while this process
    # updates its hold of a store's lock; the session's release then takes that guard.
    code = textwrap.dedent(
        f"""
        import gc, os
        import lightstore as ls
        import lightstore.compat.repl as repl
        from lightstore.foundation.locks import ProcessSharedLock

        def stage(r):
            def make(b):
                open(os.path.join(ls.build_outpath(b), "out.txt"), "w").write("x")
            return ls.mkdrv({{"name": "paused"}}, ls.match_only(), ls.build_wrapper(make), r)

        rh = ls.repl_realize(ls.instantiate(stage, S=ls.mkSS({S.root!r})), force_interrupt=True)
        cycle = [rh]
        cycle.append(cycle)
        repl.PYLIGHTNIX_REPL_HELPER = None
        del rh, cycle
        with ProcessSharedLock._guard:
            gc.collect()  # what an allocation under the guard may set off
        print("finished")
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=os.environ
    )
    assert done.stdout.strip() == "finished", done.stderr
    assert [s for d, s, _ in _builds(S) if d.endswith("-paused")] == ["interrupted"]
