"""Pylightnix's `utils` and `tz` modules, from lightstore (behaviour as in Pylightnix)."""

from __future__ import annotations

import os
import stat
import threading

import pytest
from hypothesis import given
from hypothesis import strategies as st

import lightstore as ls


def test_timestring_parsetime_round_trip():
    t = 1_600_000_000.25
    assert ls.parsetime(ls.timestring(t)) == pytest.approx(t)
    assert ls.parsetime("not a time") is None
    assert abs(ls.parsetime(ls.timestring()) - __import__("time").time()) < 5


# `%y` has two digits: years 1969-2068 round-trip, as in Pylightnix.
@given(st.floats(min_value=0, max_value=3e9))
def test_timestring_round_trips_any_time(t):
    assert ls.parsetime(ls.timestring(t)) == pytest.approx(t, abs=1e-5)


def test_tz_helpers():
    import datetime

    assert datetime.timedelta(0) == ls.ZERO
    assert ls.EPOCH.toordinal() == ls.EPOCHORDINAL
    dt = datetime.datetime(2020, 1, 1, tzinfo=ls.tzlocal())
    assert ls.enfold(dt).fold == 1
    assert dt.utcoffset() is not None


def test_mklogdir_and_forcelink(tmp_path):
    p = ls.mklogdir("run", ls.Path(str(tmp_path)), subdirs=["a", "b"], timetag="T1")
    assert os.path.isdir(os.path.join(p, "a")) and p.endswith("run_T1")
    assert os.readlink(tmp_path / "_run_latest") == "run_T1"
    p2 = ls.mklogdir("run", ls.Path(str(tmp_path)), timetag="T2")
    assert os.readlink(tmp_path / "_run_latest") == "run_T2" and os.path.isdir(p2)


def test_hashes(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "f").write_text("x")
    h1 = ls.dirhash(ls.Path(str(tmp_path / "d")))
    assert len(h1) == 64
    # As in Pylightnix, only the bytes count: renaming a file keeps the hash.
    os.rename(tmp_path / "d" / "f", tmp_path / "d" / "g")
    assert ls.dirhash(ls.Path(str(tmp_path / "d"))) == h1
    assert ls.filehash(ls.Path(str(tmp_path / "d" / "g"))) != ls.datahash([("x", b"y")])
    assert len(ls.dirshash([ls.Path(str(tmp_path / "d"))])) == 64
    assert next(p for p, _ in ls.dirhash_iter(ls.Path(str(tmp_path / "d")))).endswith("g")
    with pytest.raises(AssertionError):
        ls.dirhash(ls.Path(str(tmp_path / "nothing")))
    assert ls.pyobjhash([test_hashes]) == ls.pyobjhash([test_hashes])


def test_permissions_and_removal(tmp_path):
    d = tmp_path / "d"
    (d / "sub").mkdir(parents=True)
    (d / "sub" / "f").write_text("x")
    os.symlink("/etc/passwd", d / "link")
    before = os.lstat("/etc/passwd").st_mode
    ls.dirro(ls.Path(str(d)))
    assert not os.stat(d / "sub" / "f").st_mode & stat.S_IWUSR
    assert os.lstat("/etc/passwd").st_mode == before  # links are never followed
    ls.dirrw(ls.Path(str(d)))
    assert os.stat(d / "sub" / "f").st_mode & stat.S_IWUSR
    ls.dirchmod(ls.Path(str(d)), "ro")
    with pytest.raises(AssertionError):
        ls.dirchmod(ls.Path(str(d)), "xx")
    assert ls.dirsize(ls.Path(str(d))) == 1
    ls.dircp(ls.Path(str(d)), ls.Path(str(tmp_path / "copy")), make_rw=True)
    assert (tmp_path / "copy" / "sub" / "f").read_text() == "x"
    ls.dirrm(ls.Path(str(d)))
    assert not d.exists()
    ls.dirrm(ls.Path(str(d)))  # missing is fine by default
    with pytest.raises(FileNotFoundError):
        ls.dirrm(ls.Path(str(d)), ignore_not_found=False)
    f = tmp_path / "copy" / "sub" / "f"
    ls.filero(ls.Path(str(f)))
    assert not os.stat(f).st_mode & stat.S_IWUSR
    ls.filerw(ls.Path(str(f)))
    assert os.stat(f).st_mode & stat.S_IWUSR


def test_traversal_and_scanning():
    d = {"a": [1, {"b": 2}], "c": (3, 4)}
    ls.traverse_dict(d, lambda k, v: v * 10 if isinstance(v, int) and k == "b" else v)
    assert d["a"][1]["b"] == 20
    with pytest.raises(AssertionError):
        ls.traverse_tuple((1,), lambda k, v: v + 1)
    dref = "dref:" + "a" * 32 + "-x"
    rref = "rref:" + "b" * 32 + "-" + "a" * 32 + "-x"
    assert ls.scanref_dict({"p": [dref, {"q": rref}]}) == ([dref], [rref])
    assert ls.scanref_list([dref]) == ([dref], [])
    assert ls.dicthash({"a": 1, "_b": 2}) == ls.dicthash({"a": 1, "_b": 3})


def test_json_and_try_read(tmp_path):
    p = str(tmp_path / "j.json")
    ls.writejson(p, {"a": [1, 2]})
    assert ls.readjson(p) == {"a": [1, 2]}
    assert ls.tryreadjson(str(tmp_path / "none")) is None
    assert ls.tryreadjson_def(str(tmp_path / "none"), 5) == 5
    assert ls.maybereadjson(p, {}, lambda d: len(d)) == 1
    ls.writestr(str(tmp_path / "s"), "hi")
    assert ls.readstr(str(tmp_path / "s")) == "hi" == ls.tryread(ls.Path(str(tmp_path / "s")))
    assert ls.tryreadstr(str(tmp_path / "none")) is None
    assert ls.tryreadstr_def(str(tmp_path / "none"), "d") == "d"
    assert ls.tryread_def(ls.Path(str(tmp_path / "none")), "d") == "d"
    assert ls.maybereadstr(str(tmp_path / "none"), "12", int) == 12
    assert ls.trywrite(ls.Path(str(tmp_path / "w")), "x") is True
    assert ls.trywrite(ls.Path(str(tmp_path / "no" / "w")), "x") is False
    assert ls.trycatch(lambda: 1 / 0, 7, lambda x: x + 1) == 8
    assert ls.assert_serializable({"a": 1}) == {"a": 1}
    with pytest.raises(AssertionError):
        ls.assert_serializable({"a": (1, 2)})
    with pytest.raises(AssertionError):
        ls.assert_valid_dict([1], "x")  # type: ignore[arg-type]


def test_executables_and_lists():
    sh = ls.try_executable("sh", "LIGHTSTORE_NO_SUCH_VAR", "no sh", None)
    assert os.path.basename(sh()) == "sh"
    missing = ls.try_executable("no-such-program-xyz", "LIGHTSTORE_NO_SUCH_VAR", "gone", None)
    with pytest.raises(AssertionError, match="gone"):
        missing()
    assert ls.concat([[1], [2, 3]]) == [1, 2, 3]


def test_kahntsort_and_dagroots():
    deps = {"c": {"a", "b"}, "b": {"a"}, "a": set()}
    order = ls.kahntsort(deps, lambda n: deps[n])
    assert order == ["a", "b", "c"]
    assert ls.dagroots(order, lambda n: deps[n]) == {"c"}
    cyclic = {"a": {"b"}, "b": {"a"}}
    assert ls.kahntsort(cyclic, lambda n: cyclic[n]) is None


@given(st.dictionaries(st.integers(0, 20), st.sets(st.integers(0, 20), max_size=3), max_size=15))
def test_kahntsort_orders_any_dag(raw):
    # Keep only edges to smaller numbers: a DAG.
    deps = {n: {d for d in ds if d < n and d in raw} for n, ds in raw.items()}
    order = ls.kahntsort(deps, lambda n: deps[n])
    assert order is not None and sorted(order) == sorted(deps)
    pos = {n: i for i, n in enumerate(order)}
    assert all(pos[d] < pos[n] for n in deps for d in deps[n])


def test_selfpath_and_closure_checks(store):
    assert ls.isselfpath([ls.selfref, "a"]) and not ls.isselfpath(["a"])
    assert ls.selfref == ls.PYLIGHTNIX_SELF_TAG
    assert not ls.isclosure(("a", [], [], None))


def test_logging_names():
    assert ls.logger.name.startswith("lightstore")
    for f in (ls.info, ls.warning, ls.debug, ls.error):
        assert callable(f)
    assert threading.current_thread() is not None
