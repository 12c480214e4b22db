"""mknode and mkfile: built-in stages made from in-memory data."""

from __future__ import annotations

import os

import pytest

from lightstore import (
    InvalidConfigError,
    allrrefs,
    cfgdict,
    drefcfg,
    fsinit,
    instantiate,
    mkfile,
    mklens,
    mknode,
    mkSS,
    realize1,
    rrefdeps,
)


def test_mknode_stores_its_artifacts(S):
    rref = realize1(
        instantiate(
            lambda r: mknode(r, {"name": "n", "a": 1}, {"x.txt": "text", "y.bin": b"\x00\xff"}), S=S
        )
    )
    folder = mklens(rref, S=S).syspath
    assert sorted(os.listdir(folder)) == ["context.json", "x.txt", "y.bin"]
    with open(os.path.join(folder, "y.bin"), "rb") as f:
        assert f.read() == b"\x00\xff"
    cfg = cfgdict(drefcfg(mklens(rref, S=S).dref, S))
    assert cfg["a"] == 1 and cfg["name"] == "n"
    assert set(cfg["__artifacts__"]) == {"x.txt", "y.bin"}


def test_mknode_is_deterministic_across_stores(tmp_path):
    stage = lambda r: mknode(r, {"k": [1, 2]}, {"f": "same"})  # noqa: E731
    a = realize1(instantiate(stage, S=fsinit(mkSS(str(tmp_path / "a")))))
    b = realize1(instantiate(stage, S=fsinit(mkSS(str(tmp_path / "b")))))
    assert a == b


def test_mknode_content_changes_the_derivation(S):
    d1, _ = instantiate(lambda r: mknode(r, {"k": 1}, {"f": "one"}), S=S)
    d2, _ = instantiate(lambda r: mknode(r, {"k": 1}, {"f": "two"}), S=S)
    d3, _ = instantiate(lambda r: mknode(r, {"k": 1}, {"f": "one"}), S=S)
    assert d1 != d2 and d1 == d3


def test_mknode_names(S):
    assert instantiate(lambda r: mknode(r, {}), S=S)[0].endswith("-mknode")
    assert instantiate(lambda r: mknode(r, {"name": "own"}), S=S)[0].endswith("-own")
    assert instantiate(lambda r: mknode(r, {"name": "own"}, name="given"), S=S)[0].endswith(
        "-given"
    )


def test_mknode_without_artifacts(S):
    rref = realize1(instantiate(lambda r: mknode(r, {"only": "config"}), S=S))
    assert os.listdir(mklens(rref, S=S).syspath) == ["context.json"]


def test_mknode_dependencies(S):
    def stage(r):
        base = mknode(r, {"name": "base"}, {"b": "b"})
        return mknode(r, {"name": "top", "base": base}, {"t": "t"})

    top = realize1(instantiate(stage, S=S))
    (dep,) = rrefdeps([top], S)
    assert dep.endswith("-base")
    assert mklens(top, S=S).base.rref == dep


def test_mknode_pylightnix_call_shape(S):
    """Positional (r, sources, artifacts) as in Pylightnix."""
    rref = realize1(instantiate(lambda r: mknode(r, {"a": 1}, {"f": b"x"}), S=S))
    assert mklens(rref, S=S).a.val == 1


@pytest.mark.parametrize(
    ("config", "artifacts", "match"),
    [
        ({"__artifacts__": {}}, {}, "reserved"),
        ({}, {"a/b": "x"}, "plain file name"),
        ({}, {"..": "x"}, "plain file name"),
        ({}, {"": "x"}, "plain file name"),
        ({}, {"context.json": "x"}, "reserved"),
        ({}, {"f": 3}, "bytes or str"),
        ({"t": (1, 2)}, {}, "tuple"),
        ("not a dict", {}, "dict"),
    ],
)
def test_mknode_bad_input(S, config, artifacts, match):
    with pytest.raises(InvalidConfigError, match=match):
        instantiate(lambda r: mknode(r, config, artifacts), S=S)


def test_mkfile(S):
    rref = realize1(instantiate(lambda r: mkfile(r, "greeting", "hello"), S=S))
    assert rref.endswith("-greeting")
    assert mklens(rref, S=S).output.contents == "hello"
    assert mklens(rref, S=S).output.syspath.endswith("/greeting")


def test_mkfile_filename_and_dotted_names(S):
    rref = realize1(instantiate(lambda r: mkfile(r, "data.csv", b"1,2\n"), S=S))
    assert rref.endswith("-data_csv")  # a derivation name cannot hold a dot
    assert os.path.basename(mklens(rref, S=S).output.syspath) == "data.csv"
    other = realize1(instantiate(lambda r: mkfile(r, "data", "x", filename="d.txt"), S=S))
    assert os.path.basename(mklens(other, S=S).output.syspath) == "d.txt"
    assert len(allrrefs(S)) == 2


@pytest.mark.parametrize(("name", "filename"), [("", None), ("x", "a/b"), ("x", "..")])
def test_mkfile_bad_names(S, name, filename):
    with pytest.raises(InvalidConfigError):
        instantiate(lambda r: mkfile(r, name, "x", filename=filename), S=S)
