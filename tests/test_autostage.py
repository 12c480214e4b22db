"""`autostage`, the decorator: plain functions as stages."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
from helpers import read, write

from lightstore import (
    Attrs,
    Build,
    InvalidConfigError,
    Registry,
    autostage,
    current_registry,
    drefcfg,
    fsinit,
    instantiate,
    isrref,
    match_all,
    mklens,
    mkregistry,
    mkSS,
    realize1,
    realizeMany,
    rref2dref,
    rref2path,
    selfref,
)


def test_bare_autostage_with_keyword_defaults(S):
    seen = {}

    @autostage
    def plain(a=1, b="two", c=[1, 2], out=[selfref, "out.txt"], build=None):  # noqa: B006
        seen.update(a=a, b=b, c=c, out=out, build=build)
        write(out, f"{a}{b}")

    dref, clo = instantiate(plain, S=S)
    cfg = drefcfg(dref, S)
    assert cfg["name"] == "plain"
    assert (cfg["a"], cfg["b"], cfg["c"]) == (1, "two", [1, 2])
    assert cfg["out"] == [dref, "out.txt"]
    assert "build" not in cfg
    rref = realize1(clo)
    assert seen["a"] == 1 and seen["b"] == "two" and seen["c"] == [1, 2]
    assert isinstance(seen["build"], Build)
    # The promise arrived as a ready system path inside the output folder.
    assert os.path.isabs(seen["out"])
    assert seen["out"] == os.path.join(seen["build"].outpaths[0], "out.txt")
    assert read(os.path.join(rref2path(rref, S), "out.txt")) == "1two"
    assert mklens(rref, S=S).out.contents == "1two"


def test_autostage_with_keywords(S):
    seen = {}

    @autostage(name="named", out=[selfref, "f"], a=1)
    def g(out, a):
        seen["out"] = out
        write(out, str(a))

    dref, clo = instantiate(g, S=S)
    assert dref.endswith("-named")
    rref = realize1(clo)
    assert read(os.path.join(rref2path(rref, S), "f")) == "1"
    assert os.path.basename(seen["out"]) == "f"
    assert mklens(rref, S=S).a.val == 1


def test_decorator_keywords_override_defaults(S):
    @autostage(a=2)
    def st(a=1, build=None):
        pass

    dref, _ = instantiate(st, S=S)
    assert drefcfg(dref, S)["a"] == 2


def test_overriding_params_at_call_time(S):
    @autostage(a=1, out=[selfref, "a.txt"])
    def st(a, out):
        write(out, str(a))

    r = Registry(S)
    d1 = st(r=r)
    d5 = st(r=r, a=5)
    assert d1 != d5
    assert st(r=r, a=5) == d5
    rref = realize1(instantiate(st, a=5, S=S))
    assert rref2dref(rref) == d5
    assert mklens(rref, S=S).out.contents == "5"
    # The registry may also be passed positionally, as Pylightnix allows.
    assert st(r) == d1


def test_dref_parameters_arrive_as_attrs(S):
    seen = {}

    @autostage(a=42, out=[selfref, "parent.txt"], nested={"p": [selfref, "parent.txt"]})
    def parent(a, out):
        write(out, "from parent")

    @autostage(b=33, ref_x=parent, out=[selfref, "child.txt"])
    def child(b, ref_x, out, build):
        seen["ref_x"] = ref_x
        seen["a"] = ref_x.a
        seen["name"] = ref_x.name
        seen["out"] = ref_x.out
        seen["nested"] = ref_x.nested
        seen["rref"] = ref_x._rref
        seen["text"] = read(ref_x.out)
        write(out, str(b))

    rref = realize1(instantiate(child, S=S))
    parent_rref = mklens(rref, S=S).ref_x.rref
    assert isinstance(seen["ref_x"], Attrs)
    assert seen["a"] == 42 and seen["name"] == "parent"
    assert seen["out"] == os.path.join(rref2path(parent_rref, S), "parent.txt")
    assert seen["nested"] == {"p": seen["out"]}
    assert os.path.isfile(seen["out"])
    assert seen["text"] == "from parent"
    assert seen["rref"] == parent_rref and isrref(parent_rref)
    assert "a" in dir(seen["ref_x"])
    with pytest.raises(AttributeError):
        seen["ref_x"].a = 1


def test_dref_parameter_given_as_a_dref(S):
    seen = {}
    with current_registry(mkregistry(S)):

        @autostage(a=42)
        def first(a, build):
            seen["first_a"] = a

        @autostage(b=33, ref_first=first(a=111))
        def second(b, ref_first, build):
            seen["ref_first_a"] = ref_first.a

        rref = realize1(instantiate(second))
    assert seen == {"first_a": 111, "ref_first_a": 111}
    assert mklens(rref, S=S).b.val == 33
    assert mklens(rref, S=S).ref_first.a.val == 111


def test_dref_parameter_passed_at_call_time_and_lists_of_drefs(S):
    seen = {}

    @autostage(v=1, out=[selfref, "v.txt"])
    def src(v, out):
        write(out, str(v))

    @autostage
    def use(ref1=None, refs=None, build=None):
        seen["ref1"] = ref1.v
        seen["refs"] = [(x.v, read(x.out), isrref(x._rref)) for x in refs]

    r = Registry(S)
    d1 = src(r=r)
    d2 = src(r=r, v=2)
    rref = realize1(instantiate(use(r=r, ref1=d1, refs=[d1, d2]), r=r))
    assert seen == {"ref1": 1, "refs": [(1, "1", True), (2, "2", True)]}
    assert isrref(rref)


def test_nouts_passes_rindex(S):
    seen = []

    @autostage(nouts=2, out=[selfref, "i.txt"])
    def multi(out, rindex, build):
        seen.append((rindex, out))
        write(out, f"index {rindex}")

    rrefs = realizeMany(instantiate(multi, S=S))
    assert sorted(i for i, _ in seen) == [0, 1]
    assert seen[0][1] != seen[1][1]
    assert len(rrefs) == 2
    texts = sorted(read(os.path.join(rref2path(x, S), "i.txt")) for x in rrefs)
    assert texts == ["index 0", "index 1"]
    assert "rindex" not in drefcfg(rref2dref(rrefs[0]), S)


def test_multi_output_dependency_arrives_as_a_list(S):
    seen = {}

    @autostage(nouts=3, out=[selfref, "o.txt"], a=111)
    def many(out, rindex):
        write(out, str(rindex))

    @autostage(ref_many=many)
    def user(ref_many, build):
        seen["a"] = [x.a for x in ref_many]
        seen["texts"] = sorted(read(x.out) for x in ref_many)

    realize1(instantiate(user, S=S))
    assert seen == {"a": [111, 111, 111], "texts": ["0", "1", "2"]}


def test_custom_matcher(S):
    @autostage(matcher=match_all, nouts=2, out=[selfref, "o"])
    def st(out, rindex):
        write(out, str(rindex))

    assert len(realizeMany(instantiate(st, S=S))) == 2


def test_autostage_lens_from_the_build(S):
    seen = {}

    @autostage(out_file=[selfref, "result.txt"])
    def producer(out_file):
        write(out_file, "Haha")

    @autostage(ref1=producer)
    def consumer(ref1, build):
        seen["contents"] = mklens(build).ref1.out_file.contents
        seen["dref"] = mklens(build).ref1.dref

    realize1(instantiate(consumer, S=S))
    assert seen["contents"] == "Haha"
    assert seen["dref"].endswith("-producer")


def test_autostage_realizer_errors_are_build_errors(S):
    from lightstore import BuildError

    @autostage
    def failing(build=None):
        raise ZeroDivisionError("nope")

    with pytest.raises(BuildError) as info:
        realize1(instantiate(failing, S=S))
    assert isinstance(info.value.cause, ZeroDivisionError)


def test_sourcedeps_rejects_objects_without_source():
    with pytest.raises(InvalidConfigError):

        @autostage(sourcedeps=[len])
        def st(build=None):
            pass


# -- sourcedeps across processes --------------------------------------------------

HELPERS = '''
def helper(x):
    total = x + \\
        1 + \\
        2
    return total


class Model:
    """A class listed in sourcedeps."""

    scale = 3

    def predict(self, x):
        return x * self.scale
'''

STAGES = """
from lightstore import autostage, selfref
from {helpers} import helper, Model


@autostage(sourcedeps=[helper, Model], out=[selfref, "out.txt"])
def tracked(out, build=None):
    with open(out, "w") as f:
        f.write(str(helper(1)) + str(Model().predict(2)))
"""

RUNNER = """
import importlib, json, sys
sys.path.insert(0, sys.argv[1])
from lightstore import Registry
r = Registry(sys.argv[2])
out = {}
for suffix in sys.argv[3:]:
    dref = importlib.import_module("stages_" + suffix).tracked(r=r)
    out[suffix] = {"dref": dref, "source": r[dref].config.val["__source__"]}
print(json.dumps(out))
"""

VARIANTS = {
    "orig": HELPERS,
    # The same text in another module file.
    "copy": HELPERS,
    # Unrelated code added to the helpers' file.
    "unrelated": HELPERS + "\n\ndef unrelated():\n    return 0\n",
    # An edit inside the helper function (in a continued line).
    "editfn": HELPERS.replace("2\n    return total", "3\n    return total"),
    # An edit inside the class.
    "editcls": HELPERS.replace("scale = 3", "scale = 4"),
}


@pytest.fixture(scope="module")
def source_runs(tmp_path_factory):
    """Module folders for every variant, and what two fresh processes computed for them."""
    folder = tmp_path_factory.mktemp("mods")
    root = str(tmp_path_factory.mktemp("sourcestore") / "store")
    fsinit(mkSS(root))
    for suffix, text in VARIANTS.items():
        (folder / f"helpers_{suffix}.py").write_text(text)
        (folder / f"stages_{suffix}.py").write_text(STAGES.format(helpers=f"helpers_{suffix}"))
    runner = folder / "runner.py"
    runner.write_text(RUNNER)
    runs = []
    for seed in ("1", "2"):
        proc = subprocess.run(
            [sys.executable, str(runner), str(folder), root, *VARIANTS],
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONHASHSEED": seed},
            timeout=60,
        )
        assert proc.returncode == 0, proc.stderr
        runs.append(json.loads(proc.stdout))
    return folder, runs


def test_sourcedeps_hash_is_the_same_in_every_process(source_runs):
    _, (first, second) = source_runs
    assert first == second
    assert first["orig"]["source"]
    assert first["copy"] == first["orig"]
    assert first["unrelated"] == first["orig"]


@pytest.mark.parametrize("variant", ["editfn", "editcls"])
def test_sourcedeps_edit_changes_the_dref(source_runs, variant):
    _, (first, _) = source_runs
    assert VARIANTS[variant] != HELPERS
    assert first[variant]["source"] != first["orig"]["source"]
    assert first[variant]["dref"] != first["orig"]["dref"]


def test_sourcedeps_in_process_matches_subprocess(store, source_runs, monkeypatch):
    folder, (first, _) = source_runs
    monkeypatch.syspath_prepend(str(folder))
    import importlib

    try:
        mod = importlib.import_module("stages_orig")
        r = Registry(store)
        dref = mod.tracked(r=r)
        assert dref == first["orig"]["dref"]
        rref = realize1(instantiate(dref, r=r))
        assert mklens(rref, S=store).out.contents == "46"
    finally:
        sys.modules.pop("stages_orig", None)
        sys.modules.pop("helpers_orig", None)


def test_sourcedeps_accepts_source_text():
    @autostage(sourcedeps=["def f():\n    return 1\n"])
    def a(build=None):
        pass

    @autostage(sourcedeps=["def f():\n    return 2\n"])
    def a2(build=None):
        pass

    r = Registry()
    assert r[a(r=r)].config.val["__source__"] != r[a2(r=r)].config.val["__source__"]


def test_source_snippet_with_backslashes_is_fine(S):
    snippet = textwrap.dedent(
        """\
        x = 1 + \\
            2
        """
    )

    @autostage(sourcedeps=[snippet])
    def st(build=None):
        pass

    assert isrref(realize1(instantiate(st, S=S)))


def test_autostage_of_a_function_without_source_file(S):
    """Pylightnix pipelines also run from `python -c`, `exec` or notebooks without files.

    Without `sourcedeps`, nothing asks for source text, so nothing may fail for lack of it.
    """
    namespace = {"autostage": autostage, "selfref": selfref}
    exec(
        "@autostage(out=[selfref, 'o.txt'])\n"
        "def from_exec(out, a=1):\n"
        "    open(out, 'w').write(str(a))\n",
        namespace,
    )
    rref = realize1(instantiate(namespace["from_exec"], S=S))
    assert mklens(rref, S=S).out.contents == "1"
