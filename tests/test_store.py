"""The store: layout, opening, publishing, a full disk, recovery and removal."""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import stat
import subprocess
import sys

import pytest
from helpers import dead_pid, fails, make_writable, ok

from lightstore import (
    BuildError,
    DiskFullError,
    LightstoreError,
    PromiseError,
    StoreError,
    StoreNotFoundError,
    UnknownReferenceError,
    allrrefs,
    build_outpath,
    build_outpaths,
    build_wrapper,
    fsinit,
    instantiate,
    match_all,
    match_only,
    mkconfig,
    mkdrv,
    mkSS,
    realize,
    realize1,
    realizeMany,
    selfref,
)
from lightstore.catalogue import HOST
from lightstore.cli.context import EXIT_REFUSED
from lightstore.facade import Store
from lightstore.foundation.config import canonical_json
from lightstore.foundation.errors import InvalidReferenceError
from lightstore.foundation.files import pid_alive, remove_tree
from lightstore.foundation.refs import mkdref, mkrref, rref2dref, undref, unrref
from lightstore.store import CATALOGUE_FILE, StorageSettings

UNKNOWN_DREF = mkdref("0" * 32, "nothing")
UNKNOWN_RREF = mkrref("f" * 32, "0" * 32, "nothing")


# -- helpers ---------------------------------------------------------------------------------


def simple_stage(writer, name="a", promises=(("out.txt",),), matcher=None, nouts=1, **extra):
    """A stage whose realizer is `writer(b)`, promising the given paths."""

    def stage(r):
        config = {"name": name, **extra}
        for i, p in enumerate(promises):
            config[f"out{i}"] = [selfref, *p]
        return mkdrv(config, matcher or match_only(), build_wrapper(writer, nouts=nouts), r)

    return stage


def write_out(b, text="x"):
    with open(os.path.join(build_outpath(b), "out.txt"), "w") as f:
        f.write(text)


def stored_realization_folders(store) -> list[str]:
    """Every realization folder in the tree (whatever the catalogue says)."""
    found = []
    for dfolder in os.listdir(store.objects_dir):
        for entry in os.listdir(os.path.join(store.objects_dir, dfolder)):
            if entry != "config.json":
                found.append(os.path.join(dfolder, entry))
    return found


def assert_nothing_stored(store):
    assert store.catalogue.all_rrefs() == []
    assert stored_realization_folders(store) == []
    assert os.listdir(store.tmp_dir) == []


def build_statuses(store) -> list[str]:
    return store.catalogue.column("SELECT status FROM builds ORDER BY id")


def writable_bits(path) -> int:
    return os.lstat(path).st_mode & 0o222


# -- opening ----------------------------------------------------------------------------------


def test_open_missing_root_without_create(tmp_path):
    root = tmp_path / "missing"
    with pytest.raises(StoreNotFoundError) as info:
        Store.open(str(root))
    assert str(root) in str(info.value)
    assert "fsinit" in str(info.value) or "init" in str(info.value)
    assert isinstance(info.value, StoreError)
    assert isinstance(info.value, OSError)
    assert not root.exists()


def test_open_folder_without_catalogue(tmp_path):
    root = tmp_path / "empty"
    root.mkdir()
    (root / "something").write_text("x")
    with pytest.raises(StoreNotFoundError):
        Store.open(str(root))
    assert os.listdir(root) == ["something"]


def test_fsinit_creates_layout(store):
    root = store.root
    assert os.path.isfile(os.path.join(root, CATALOGUE_FILE))
    for d in ("objects", "tmp", "locks"):
        assert os.path.isdir(os.path.join(root, d))
    assert os.listdir(store.tmp_dir) == []
    assert os.listdir(store.objects_dir) == []
    assert store.settings == StorageSettings(root)
    assert store.settings.storage == store.objects_dir
    assert store.settings.tmpdir == store.tmp_dir


def test_open_create(tmp_path):
    root = tmp_path / "a" / "b"
    s = Store.open(str(root), create=True)
    assert os.path.isfile(os.path.join(root, CATALOGUE_FILE))
    assert Store.open(str(root)) is s
    assert Store.open(StorageSettings(str(root))) is s


def test_fsinit_returns_existing_store(store):
    assert fsinit(store.settings) is store


def test_fsinit_remove_existing(store, S):
    realize1(instantiate(simple_stage(write_out), S=S))
    assert store.catalogue.all_rrefs()
    fresh = fsinit(S, remove_existing=True)
    assert fresh.catalogue.all_rrefs() == []
    assert fresh.catalogue.all_drefs() == []
    assert os.listdir(fresh.objects_dir) == []


def test_fsinit_remove_existing_refuses_foreign_folder(tmp_path):
    root = tmp_path / "precious"
    root.mkdir()
    (root / "thesis.tex").write_text("years of work")
    with pytest.raises(StoreError, match="refusing"):
        fsinit(mkSS(str(root)), remove_existing=True)
    assert (root / "thesis.tex").read_text() == "years of work"


@pytest.mark.parametrize("which", ["objects", "tmp", "locks"])
def test_store_folder_replaced_by_a_file_is_a_clear_error(store, which):
    path = os.path.join(store.root, which)
    make_writable(path)
    shutil.rmtree(path)
    with open(path, "w") as f:
        f.write("junk")
    Store.forget_instances()
    with pytest.raises(StoreError, match="file where the store needs a folder"):
        Store.open(store.root)
    for args in (["gc"], ["verify", "--repair"], ["unpin", "x"]):
        assert "folder" in fails(EXIT_REFUSED, store.root, *args).output


def test_init_on_an_existing_file(tmp_path):
    path = tmp_path / "file"
    path.write_text("not a store")
    with pytest.raises(StoreError):
        fsinit(mkSS(str(path)))
    fails(EXIT_REFUSED, str(path), "init")


def test_store_open_accepts_a_store_and_refuses_nonsense(store, tmp_path):
    assert Store.open(store) is store
    assert Store.open(pathlib.Path(store.root)) is store
    for bad in (None, 42, "", b"/tmp"):
        with pytest.raises(LightstoreError):
            Store.open(bad)


# -- paths and derivations ---------------------------------------------------------------------


def test_paths(store):
    h, name = undref(UNKNOWN_DREF)
    assert store.dref_path(UNKNOWN_DREF) == os.path.join(store.objects_dir, f"{h}-{name}")
    r, h2, name2 = unrref(UNKNOWN_RREF)
    assert store.rref_path(UNKNOWN_RREF) == os.path.join(store.objects_dir, f"{h2}-{name2}", r)
    assert os.path.dirname(store.rref_path(UNKNOWN_RREF)) == store.dref_path(
        rref2dref(UNKNOWN_RREF)
    )


@pytest.mark.parametrize("bad", ["dref:../../etc", "../x", "", "dref:" + "0" * 32 + "-a/b"])
def test_paths_refuse_malformed_refs(store, bad):
    with pytest.raises(InvalidReferenceError):
        store.dref_path(bad)
    with pytest.raises(InvalidReferenceError):
        store.rref_path(bad)


def test_new_build_area(store):
    area = store.new_build_area("label")
    name = os.path.basename(area)
    assert os.path.dirname(area) == store.tmp_dir
    assert os.path.isdir(area)
    assert f".{os.getpid()}." in name
    assert name.endswith(".label")
    assert store.new_build_area("label") != area


def test_record_derivations_writes_readonly_config(store):
    cfg = mkconfig({"name": "rec", "b": 1, "a": [1, 2]})
    dref = store.derivation_of(cfg)
    store.record_derivations([(dref, cfg)])
    store.record_derivations([(dref, cfg)])  # idempotent
    path = os.path.join(store.dref_path(dref), "config.json")
    with open(path, encoding="utf-8") as f:
        assert f.read() == canonical_json(cfg.val)
    assert writable_bits(path) == 0
    assert store.catalogue.all_drefs() == [dref]
    assert store.config(dref) == cfg.val
    assert store.check_known_dref(str(dref)) == dref


def test_unknown_config_and_context(store):
    with pytest.raises(UnknownReferenceError) as info:
        store.config(UNKNOWN_DREF)
    assert info.value.ref == UNKNOWN_DREF
    assert UNKNOWN_DREF in str(info.value)
    with pytest.raises(KeyError):
        store.config(UNKNOWN_DREF)
    with pytest.raises(UnknownReferenceError) as info:
        store.context(UNKNOWN_RREF)
    assert info.value.ref == UNKNOWN_RREF
    with pytest.raises(KeyError):
        store.context(UNKNOWN_RREF)
    with pytest.raises(UnknownReferenceError):
        store.check_known_dref(UNKNOWN_DREF)
    with pytest.raises(InvalidReferenceError):
        store.check_known_dref(42)


# -- publishing --------------------------------------------------------------------------------


def rich_writer(b):
    out = build_outpath(b)
    os.makedirs(os.path.join(out, "sub", "deeper"))
    os.makedirs(os.path.join(out, "empty"))
    with open(os.path.join(out, "out.txt"), "w") as f:
        f.write("hello")
    with open(os.path.join(out, "sub", "deeper", "data.bin"), "wb") as f:
        f.write(b"\x00" * 10)
    with open(os.path.join(out, "run.sh"), "w") as f:
        f.write("#!/bin/sh\n")
    os.chmod(os.path.join(out, "run.sh"), 0o755)
    os.symlink("out.txt", os.path.join(out, "link"))


def test_published_output_is_readonly(store, S):
    rref = realize1(instantiate(simple_stage(rich_writer), S=S))
    root = store.rref_path(rref)
    assert os.path.isdir(root)
    assert writable_bits(root) == 0
    checked = 0
    for folder, dirs, files in os.walk(root):
        for n in dirs + files:
            p = os.path.join(folder, n)
            if os.path.islink(p):
                continue
            assert writable_bits(p) == 0, p
            checked += 1
    assert checked == 7  # 3 folders, 3 artifacts, context.json


def test_published_output_keeps_exec_bit_and_symlinks(store, S):
    rref = realize1(instantiate(simple_stage(rich_writer), S=S))
    root = store.rref_path(rref)
    assert os.stat(os.path.join(root, "run.sh")).st_mode & stat.S_IXUSR
    assert not os.stat(os.path.join(root, "out.txt")).st_mode & stat.S_IXUSR
    assert os.readlink(os.path.join(root, "link")) == "out.txt"
    with open(os.path.join(root, "sub", "deeper", "data.bin"), "rb") as f:
        assert f.read() == b"\x00" * 10
    assert os.path.isdir(os.path.join(root, "empty"))
    record = store.catalogue.realization_record(rref)
    assert record["size"] == 5 + 10 + len("#!/bin/sh\n")
    assert record["file_count"] == 4


def test_context_json_is_written(store, S):
    def pipeline(r):
        a = simple_stage(write_out, name="a")(r)
        b = simple_stage(write_out, name="b", dep=a)(r)
        return [a, b]

    (a, b), _, ctx = realize(instantiate(pipeline, S=S))
    ra, rb = ctx[a][0], ctx[b][0]
    with open(os.path.join(store.rref_path(ra), "context.json"), encoding="utf-8") as f:
        assert json.load(f) == {}
    with open(os.path.join(store.rref_path(rb), "context.json"), encoding="utf-8") as f:
        assert json.load(f) == {a: [ra]}
    assert store.context(rb) == {a: [ra]}
    assert store.context(ra) == {}
    assert os.listdir(store.tmp_dir) == []


def test_same_output_same_context_dedupes(store, S):
    closure = instantiate(simple_stage(write_out), S=S)
    first = realize1(closure)
    again = realize1(closure, force_rebuild=True)
    assert again == first
    assert store.catalogue.all_rrefs() == [first]
    assert len(stored_realization_folders(store)) == 1
    assert build_statuses(store) == ["succeeded", "succeeded"]
    assert os.listdir(store.tmp_dir) == []


def test_same_output_different_context_differs(store, S):
    # The same bytes built on different dependency realizations are different realizations.
    counter = iter(range(100))

    def varying(b):
        write_out(b, str(next(counter)))

    def pipeline(r):
        a = simple_stage(varying, name="a", matcher=match_all)(r)
        b = simple_stage(write_out, name="b", matcher=match_all, dep=a)(r)
        return [a, b]

    closure = instantiate(pipeline, S=S)
    (a, b), _, ctx1 = realize(closure)
    _, _, ctx2 = realize(closure, force_rebuild=[a])
    assert len(ctx2[a]) == 2  # match_all: b is now built on both realizations of a
    (rb1,), (rb2,) = ctx1[b], ctx2[b]
    assert rb1 != rb2
    assert unrref(rb1)[1:] == unrref(rb2)[1:]
    assert store.context(rb2) == {a: sorted(ctx2[a])}
    assert len(store.catalogue.realizations_any_context(b)) == 2


def test_nondeterministic_outputs_are_distinct(store, S):
    counter = iter(range(100))

    def varying(b):
        write_out(b, str(next(counter)))

    closure = instantiate(simple_stage(varying, matcher=match_all), S=S)
    first = realizeMany(closure)
    both = realizeMany(closure, force_rebuild=True)
    assert len(first) == 1
    assert len(both) == 2 and first[0] in both
    assert len(stored_realization_folders(store)) == 2


def test_missing_promise_stores_nothing(store, S):
    def forgetful(b):
        with open(os.path.join(build_outpath(b), "other.txt"), "w") as f:
            f.write("x")

    stage = simple_stage(forgetful, promises=(("out.txt",), ("dir", "model.bin")))
    closure = instantiate(stage, S=S)
    with pytest.raises(PromiseError) as info:
        realize1(closure)
    assert isinstance(info.value, BuildError)
    assert sorted(map(list, info.value.missing)) == [["dir", "model.bin"], ["out.txt"]]
    assert "out.txt" in str(info.value)
    assert info.value.dref == closure[0]
    assert_nothing_stored(store)
    assert build_statuses(store) == ["failed"]


def test_missing_promise_in_second_output_stores_nothing(store, S):
    def half(b):
        o1, _ = build_outpaths(b)
        with open(os.path.join(o1, "out.txt"), "w") as f:
            f.write("x")

    with pytest.raises(PromiseError):
        realize1(instantiate(simple_stage(half, matcher=match_all, nouts=2), S=S))
    assert_nothing_stored(store)


def test_top_level_context_json_is_refused(store, S):
    def sneaky(b):
        write_out(b)
        with open(os.path.join(build_outpath(b), "context.json"), "w") as f:
            f.write("{}")

    with pytest.raises(BuildError, match=r"context\.json"):
        realize1(instantiate(simple_stage(sneaky), S=S))
    assert_nothing_stored(store)
    assert build_statuses(store) == ["failed"]


def test_nested_context_json_is_an_ordinary_artifact(store, S):
    def nested(b):
        write_out(b)
        os.mkdir(os.path.join(build_outpath(b), "sub"))
        with open(os.path.join(build_outpath(b), "sub", "context.json"), "w") as f:
            f.write("mine")

    rref = realize1(instantiate(simple_stage(nested), S=S))
    with open(os.path.join(store.rref_path(rref), "sub", "context.json")) as f:
        assert f.read() == "mine"


def test_fifo_in_output_stores_nothing(store, S):
    def piper(b):
        write_out(b)
        os.mkfifo(os.path.join(build_outpath(b), "pipe"))

    with pytest.raises(BuildError, match="pipe"):
        realize1(instantiate(simple_stage(piper), S=S))
    assert_nothing_stored(store)


def test_fifo_in_second_output_stores_nothing(store, S):
    # The first output must not enter the tree when a later one cannot be stored.
    def piper(b):
        o1, o2 = build_outpaths(b)
        for o in (o1, o2):
            with open(os.path.join(o, "out.txt"), "w") as f:
                f.write(o)
        os.mkfifo(os.path.join(o2, "pipe"))

    with pytest.raises(BuildError):
        realize1(instantiate(simple_stage(piper, matcher=match_all, nouts=2), S=S))
    assert_nothing_stored(store)


def test_raising_realizer_stores_nothing(store, S):
    def broken(b):
        write_out(b)
        raise ZeroDivisionError("nope")

    closure = instantiate(simple_stage(broken), S=S)
    with pytest.raises(BuildError) as info:
        realize1(closure)
    assert isinstance(info.value.cause, ZeroDivisionError)
    assert info.value.dref == closure[0]
    assert_nothing_stored(store)
    error = store.catalogue.column("SELECT error FROM builds")[0]
    assert "ZeroDivisionError" in error


def test_multiple_outputs(store, S):
    def two(b):
        for i, o in enumerate(build_outpaths(b)):
            with open(os.path.join(o, "out.txt"), "w") as f:
                f.write(str(i))

    rrefs = realizeMany(instantiate(simple_stage(two, matcher=match_all, nouts=2), S=S))
    assert len(set(rrefs)) == 2
    assert sorted(stored_realization_folders(store)) == sorted(
        os.path.relpath(store.rref_path(r), store.objects_dir) for r in rrefs
    )


def recorded(store, name="direct"):
    cfg = mkconfig({"name": name, "out": [selfref, "out.txt"]})
    dref = store.derivation_of(cfg)
    store.record_derivations([(dref, cfg)])
    return dref


def test_publish_copies_folders_outside_the_store(store, tmp_path):
    dref = recorded(store)
    src = tmp_path / "outside"
    src.mkdir()
    (src / "out.txt").write_text("external")
    (rref,) = store.publish(dref, {}, [str(src)], [["out.txt"]])
    assert (src / "out.txt").read_text() == "external"
    assert writable_bits(src / "out.txt") != 0  # the caller's folder is left alone
    assert not (src / "context.json").exists()
    with open(os.path.join(store.rref_path(rref), "out.txt")) as f:
        assert f.read() == "external"
    assert os.listdir(store.tmp_dir) == []
    # Publishing it again is a no-op that returns the same reference.
    assert store.publish(dref, {}, [str(src)], [["out.txt"]]) == [rref]
    assert store.catalogue.all_rrefs() == [rref]


def test_publish_failure_leaves_no_copies(store, tmp_path):
    dref = recorded(store)
    good, bad = tmp_path / "good", tmp_path / "bad"
    good.mkdir()
    bad.mkdir()
    (good / "out.txt").write_text("x")
    with pytest.raises(PromiseError):
        store.publish(dref, {}, [str(good), str(bad)], [["out.txt"]])
    assert_nothing_stored(store)


def test_publish_refuses_a_file(store, tmp_path):
    dref = recorded(store)
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(BuildError, match="not a folder"):
        store.publish(dref, {}, [str(f)])
    assert_nothing_stored(store)


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


# -- recovery ---------------------------------------------------------------------------------


def area_prefix(store) -> str:
    """The `<host>` part of this store's build area names, as the store writes it."""
    probe = os.path.basename(store.new_build_area("probe"))
    remove_tree(os.path.join(store.tmp_dir, probe))
    return probe[: probe.index(f".{os.getpid()}.")]


def make_area(store, name: str, readonly: bool = True) -> str:
    path = os.path.join(store.tmp_dir, name)
    os.makedirs(os.path.join(path, "out", "sub"))
    with open(os.path.join(path, "out", "sub", "f"), "w") as f:
        f.write("partial")
    if readonly:
        for p in (os.path.join(path, "out", "sub", "f"), os.path.join(path, "out", "sub")):
            os.chmod(p, stat.S_IMODE(os.stat(p).st_mode) & ~0o222)
    return path


def test_pid_alive():
    assert pid_alive(os.getpid())
    assert not pid_alive(dead_pid())


def test_recover_removes_build_areas_of_dead_processes(store):
    host = area_prefix(store)
    gone = dead_pid()
    dead_area = make_area(store, f"{host}.{gone}.abc123.build")
    live_area = make_area(store, f"{host}.{os.getpid()}.def456.build")
    foreign = make_area(store, f"otherhost.{gone}.abc123.build")
    odd = make_area(store, "not-a-build-area")
    counts = store.recover()
    assert counts["removed_build_areas"] == 1
    assert not os.path.exists(dead_area)
    for kept in (live_area, foreign, odd):
        assert os.path.isdir(kept)


def test_recover_marks_builds_of_dead_processes_interrupted(store, S):
    dref = realize1(instantiate(simple_stage(write_out), S=S))
    dref = rref2dref(dref)
    gone = dead_pid()
    with store.catalogue.write() as conn:
        for host, pid in ((HOST, gone), (HOST, os.getpid()), ("otherhost", gone)):
            conn.execute(
                "INSERT INTO builds (dref, context_hash, context, status, started, host, pid) "
                "VALUES (?, 'h', '{}', 'running', 1.0, ?, ?)",
                (dref, host, pid),
            )
    counts = store.recover()
    assert counts["interrupted_builds"] == 1
    rows = store.catalogue.query(
        "SELECT host, pid, status, stopped, error FROM builds WHERE context_hash = 'h'"
    )
    status = {(h, p): (s, stopped, err) for h, p, s, stopped, err in rows}
    s, stopped, err = status[(HOST, gone)]
    assert s == "interrupted"
    assert stopped is not None
    assert err
    assert status[(HOST, os.getpid())][0] == "running"
    assert status[("otherhost", gone)][0] == "running"
    assert store.recover()["interrupted_builds"] == 0


def test_open_recovers(tmp_path):
    root = str(tmp_path / "s")
    store = Store.open(root, create=True)
    host = area_prefix(store)
    area = make_area(store, f"{host}.{dead_pid()}.abc.build")
    Store.forget_instances()
    reopened = Store.open(root)
    assert reopened is not store
    assert not os.path.exists(area)
    assert os.listdir(reopened.tmp_dir) == []


def test_recover_with_dotted_hostname(store, monkeypatch):
    # Cluster nodes often report a fully qualified hostname; build areas made
    # under such a name must still be recognised as this host's.
    import lightstore.catalogue.builds as builds_module
    import lightstore.catalogue.objects as objects_module
    import lightstore.store.layout as layout_module
    import lightstore.store.recovery as recovery_module

    dotted = "node7.cluster.example.org"
    for module in (builds_module, objects_module):
        monkeypatch.setattr(module, "HOST", dotted)
    for module in (layout_module, recovery_module):
        monkeypatch.setattr(module, "HOST_TAG", dotted.replace(".", "_"))
    area = store.new_build_area("build")
    name = os.path.basename(area)
    dead_name = name.replace(f".{os.getpid()}.", f".{dead_pid()}.", 1)
    os.rename(area, os.path.join(store.tmp_dir, dead_name))
    assert store.recover()["removed_build_areas"] == 1
    assert os.listdir(store.tmp_dir) == []


def test_a_leftover_recovery_cannot_delete_is_set_aside_and_the_store_opens(store):
    # Even root can meet a leftover it cannot delete (an immutable file, a mount
    # point); the fault point makes the deletion fail here as it would there.
    name = f"{area_prefix(store)}.{dead_pid()}.abc123.pull"
    make_area(store, name)
    for args, fault in ((["gc", "--yes"], "recover:remove"), (["verify", "--repair"], "")):
        result = subprocess.run(
            [sys.executable, "-m", "lightstore", "--root", store.root, *args],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "LIGHTSTORE_FAULT": fault},
        )
        assert result.returncode == 0, result.stderr
        # Reported when it is set aside; later opens leave it alone.
        assert ("quarantine" in result.stderr) == bool(fault), result.stderr
    quarantine = os.path.join(store.tmp_dir, "quarantine")
    assert os.listdir(store.tmp_dir) == ["quarantine"]
    assert os.listdir(quarantine) == [name]
    assert os.path.isfile(os.path.join(quarantine, name, "out", "sub", "f"))
    Store.forget_instances()
    counts = Store.open(store.root).recover()
    assert counts["set_aside"] == 0 and counts["removed_build_areas"] == 0
    assert os.listdir(quarantine) == [name]


def test_recovery_reports_what_it_sets_aside(store, monkeypatch, caplog):
    name = f"{area_prefix(store)}.{dead_pid()}.abc123.build"
    make_area(store, name)
    monkeypatch.setenv("LIGHTSTORE_FAULT", "recover:remove")
    with caplog.at_level("WARNING", logger="lightstore"):
        counts = store.recover()
    assert counts["set_aside"] == 1 and counts["removed_build_areas"] == 0
    assert name in caplog.text and "quarantine" in caplog.text
    assert os.listdir(os.path.join(store.tmp_dir, "quarantine")) == [name]


# -- a full disk: DiskFullError, and a store that stays consistent -----------------------------


def big_stage(size: int, tag: str):
    def real(b):
        with open(os.path.join(build_outpath(b), "big"), "wb") as f:
            f.write(tag.encode() * (size // len(tag)))

    def stage(r):
        return mkdrv(
            {"name": "big", "tag": tag, "size": size}, match_only(), build_wrapper(real), r
        )

    return stage


def fill(root: str) -> str:
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
    kept = realize1(instantiate(big_stage(1000, "a"), S=store.settings))
    # An output larger than the disk: the realizer's own write fails.
    with pytest.raises(DiskFullError, match="disk holding the store is full"):
        realize1(instantiate(big_stage(8 << 20, "b"), S=store.settings))
    assert os.listdir(os.path.join(root, "tmp")) == []
    # No space at all: recording and pinning fail in SQLite or in the tree.
    filler = fill(root)
    with pytest.raises(DiskFullError):
        for i in range(200):
            store.pin(f"p{i}", kept)
    with pytest.raises(DiskFullError):
        for i in range(200):
            realize1(instantiate(big_stage(1000, f"c{i}"), S=store.settings))
    result = fails(EXIT_REFUSED, root, "pin", "best", kept)
    assert "full" in result.output
    os.unlink(filler)
    Store.forget_instances()
    store = Store.open(root)
    assert store.verify(check_contents=True).ok
    assert kept in allrrefs(store)
    ok(root, "verify", "--check-contents")
    ok(root, "pin", "best", kept)


# -- removal ----------------------------------------------------------------------------------


def test_remove_tree_readonly(tmp_path, store, S):
    rref = realize1(instantiate(simple_stage(rich_writer), S=S))
    path = store.rref_path(rref)
    assert writable_bits(path) == 0
    remove_tree(path)
    assert not os.path.lexists(path)


def test_remove_tree_cases(tmp_path):
    remove_tree(str(tmp_path / "missing"))  # fine
    f = tmp_path / "file"
    f.write_text("x")
    os.chmod(f, 0o444)
    remove_tree(str(f))
    assert not f.exists()
    target = tmp_path / "target"
    (target / "inner").mkdir(parents=True)
    (target / "inner" / "keep").write_text("keep")
    os.chmod(target / "inner", 0o555)
    link = tmp_path / "link"
    os.symlink(str(target), str(link))
    remove_tree(str(link))
    assert not os.path.lexists(link)
    assert (target / "inner" / "keep").read_text() == "keep"
    assert stat.S_IMODE(os.stat(target / "inner").st_mode) == 0o555
    tree = tmp_path / "tree"
    (tree / "a" / "b").mkdir(parents=True)
    (tree / "a" / "b" / "f").write_text("x")
    os.symlink(str(target), str(tree / "a" / "outlink"))
    for p in (tree / "a" / "b" / "f", tree / "a" / "b", tree / "a", tree):
        os.chmod(p, 0o555 if p.is_dir() else 0o444)
    remove_tree(str(tree))
    assert not tree.exists()
    assert (target / "inner" / "keep").read_text() == "keep"
    assert stat.S_IMODE(os.stat(target / "inner").st_mode) == 0o555
