"""The `lightstore` command: every command against a real store, through click's runner
(the `pipeline` fixture is a small store: data -> three train runs -> eval)."""

from __future__ import annotations

import json
import os

import pytest
from helpers import (
    assert_unchanged,
    data_stage,
    fails,
    hexpart,
    ok,
    run,
    snapshot,
    write,
)

from lightstore import (
    CatalogueCorruptError,
    DRef,
    RRef,
    build_metric,
    build_outpath,
    build_wrapper,
    fsinit,
    instantiate,
    linkrref,
    match_only,
    mkdrv,
    mkSS,
    realize1,
    selfref,
)
from lightstore.catalogue import NewDerivation
from lightstore.cli import cli
from lightstore.cli.context import (
    EXIT_BAD_INPUT,
    EXIT_INTERNAL,
    EXIT_NOT_FOUND,
    EXIT_PROBLEMS,
    EXIT_REFUSED,
)
from lightstore.facade import Store
from lightstore.store import CATALOGUE_FILE

# -- init and the root -------------------------------------------------------------------------


def test_init_creates_a_store_once(tmp_path):
    root = str(tmp_path / "new")
    assert "created an empty store" in ok(root, "init")
    assert os.path.isfile(os.path.join(root, CATALOGUE_FILE))
    assert "already" in ok(root, "init")


def test_root_option_after_the_command_and_from_the_environment(tmp_path, pipeline):
    other = str(tmp_path / "other")
    assert "created" in ok(None, "init", "--root", other)
    assert os.path.isfile(os.path.join(other, CATALOGUE_FILE))
    out = run(None, "ls", "-q", env={"LIGHTSTORE_ROOT": pipeline.root})
    assert out.exit_code == 0 and pipeline.dref(pipeline.eval) in out.stdout
    # The option wins over the environment.
    assert ok(None, "ls", "--root", other, "-q") == ""


def _metric_stage(r):
    def real(b):
        write(os.path.join(build_outpath(b), "out.txt"), "same\n")
        build_metric(b, "loss", float(os.environ.get("TEST_LOSS", "1")))

    return mkdrv({"name": "m", "out": [selfref, "out.txt"]}, match_only(), build_wrapper(real), r)


@pytest.mark.parametrize("name", ["a?b", "a#b", "100%", "q?mode=rwc&cache=shared", "%41"])
def test_a_store_at_a_path_that_needs_quoting_is_the_one_read(tmp_path, monkeypatch, name):
    # '%41' unquoted in a SQLite URI is 'A': put another store there, with the same
    # realization but another metric value.
    monkeypatch.setenv("TEST_LOSS", "2")
    decoy = Store.open(str(tmp_path / "A"), create=True)
    realize1(instantiate(_metric_stage, S=decoy.settings))
    monkeypatch.setenv("TEST_LOSS", "1")
    target = Store.open(str(tmp_path / name), create=True)
    rref = realize1(instantiate(_metric_stage, S=target.settings))
    realize1(instantiate(data_stage, S=target.settings))
    root = target.root
    assert sorted(r["name"] for r in json.loads(ok(root, "ls", "--json"))) == ["data", "m"]
    assert json.loads(ok(root, "sql", "SELECT value FROM metrics", "--json")) == [{"value": 1.0}]
    assert json.loads(ok(root, "history", "-m", "loss", "-n", "m", "--json"))[0]["loss"] == 1.0
    assert ok(root, "show", "m@latest").splitlines()[0] == rref
    # reindex carries the metrics of the catalogue it replaces, not of the decoy's.
    ok(root, "reindex")
    assert json.loads(ok(root, "sql", "SELECT value FROM metrics", "--json")) == [{"value": 1.0}]
    assert sorted(os.listdir(tmp_path)) == sorted(["A", name])  # nothing opened beside them


@pytest.mark.parametrize(
    "args",
    [
        ["ls"],
        ["ls", "-r"],
        ["history"],
        ["show", "abcd"],
        ["deps", "abcd"],
        ["referrers", "abcd"],
        ["graph", "abcd"],
        ["du"],
        ["roots"],
        ["sql", "SELECT 1"],
        ["pin", "p", "abcd"],
        ["unpin", "p"],
        ["gc", "--dry-run"],
        ["verify"],
        ["reindex"],
        ["pack", "x.zip", "abcd"],
        ["unpack", __file__],
    ],
)
def test_every_command_reports_a_missing_store_as_not_found(tmp_path, args):
    missing = str(tmp_path / "missing")
    result = fails(EXIT_NOT_FOUND, missing, *args)
    assert "no lightstore store" in result.stderr
    assert not os.path.exists(os.path.join(missing, CATALOGUE_FILE))


def test_help_lists_exit_statuses_and_every_command():
    out = ok(None, "--help")
    assert "Exit status" in out
    for name in cli.commands:
        assert name in out


# -- ls and history ----------------------------------------------------------------------------


def test_ls_lists_derivations_with_counts_and_sizes(pipeline):
    out = ok(pipeline.root, "ls")
    lines = out.splitlines()
    assert lines[0].split() == ["dref", "name", "realizations", "size", "created", "last_built"]
    assert sum(1 for ln in lines if " train " in ln) == 3
    rows = json.loads(ok(pipeline.root, "ls", "--json"))
    assert {r["name"] for r in rows} == {"data", "train", "eval"}
    assert all(r["realizations"] == 1 and r["size"] > 0 for r in rows)


def test_ls_quiet_prints_full_references(pipeline):
    drefs = ok(pipeline.root, "ls", "-q").split()
    assert set(drefs) == {
        pipeline.dref(r) for r in [pipeline.data, pipeline.eval, *pipeline.train.values()]
    }
    rrefs = ok(pipeline.root, "ls", "-r", "-q", "--name", "train").split()
    assert set(rrefs) == set(pipeline.train.values())


def test_ls_filters_by_name_glob_config_and_time(pipeline):
    root = pipeline.root
    assert len(ok(root, "ls", "-q", "-n", "tr*").split()) == 3
    assert ok(root, "ls", "-r", "-q", "-c", "lr<0.05", "-c", "lr>=0.01").split() == [
        pipeline.train[0.01]
    ]
    assert len(ok(root, "ls", "-q", "-c", "model.depth=4").split()) == 3
    assert ok(root, "ls", "-q", "-c", "lr=null") != ""  # configs without lr
    assert ok(root, "ls", "-r", "-q", "--since", "1h").split() != []
    assert ok(root, "ls", "-r", "-q", "--until", "1h").split() == []
    assert ok(root, "ls", "-r", "-q", "--since", "2000-01-01", "--until", "2999-01-01") != ""
    assert len(ok(root, "ls", "-r", "-q", "--limit", "2").split()) == 2


@pytest.mark.parametrize(
    "args",
    [
        ["ls", "--since", "last tuesday"],
        ["ls", "-c", "lr<<1"],
        ["ls", "-c", "bad field=1"],
        ["ls", "-c", "lr<null"],
        ["history", "--field", "a..b"],
        ["history", "--where", "no_such_column > 1"],
        ["history", "--where", "1) ; DELETE FROM pins; --"],
        ["history", "--where", "1)) UNION SELECT 1 --"],
        ["ls", "--fmt", "no-such-style"],
        ["ls", "--limit", "-1"],
    ],
)
def test_bad_filters_are_bad_input(pipeline, args):
    result = fails(EXIT_BAD_INPUT, pipeline.root, *args)
    assert "Error" in result.stderr


def test_history_one_row_per_realization_with_fields(pipeline):
    root = pipeline.root
    out = ok(root, "history", "-n", "train", "-f", "lr", "-f", "model.depth")
    header = out.splitlines()[0].split()
    assert header == ["name", "rref", "dref", "started", "duration", "size", "lr", "model.depth"]
    assert sorted(ln.split()[-2] for ln in out.splitlines()[2:]) == ["0.001", "0.01", "0.1"]
    rows = json.loads(ok(root, "history", "-f", "lr", "-f", "name", "--json"))
    assert len(rows) == 5
    assert {r["rref"] for r in rows} >= set(pipeline.train.values())
    assert all("config.name" in r and r["duration"] >= 0 for r in rows)
    assert [r["lr"] for r in rows if r["name"] == "train"] == [0.1, 0.01, 0.001]


def test_history_where_and_limit(pipeline):
    root = pipeline.root
    rows = json.loads(
        ok(root, "history", "--where", "json_extract(config, '$.lr') < 0.05 AND size > 0", "--json")
    )
    assert {r["rref"] for r in rows} == {pipeline.train[0.01], pipeline.train[0.001]}
    newest = json.loads(ok(root, "history", "--limit", "1", "--json"))
    assert [r["rref"] for r in newest] == [pipeline.eval]
    csv_out = ok(root, "history", "-n", "eval", "--csv").splitlines()
    assert csv_out[0].startswith("rref,dref,name,started")
    assert csv_out[1].startswith(pipeline.eval)
    nl = [json.loads(line) for line in ok(root, "history", "--nl").splitlines()]
    assert len(nl) == 5


# -- show and reference resolution -------------------------------------------------------------


def test_show_a_realization_by_prefix(pipeline):
    rref = pipeline.train[0.1]
    for text in (rref, hexpart(rref)[:8], "rref:" + hexpart(rref)[:6], hexpart(rref)[:4]):
        result = run(pipeline.root, "show", text)
        if result.exit_code == EXIT_BAD_INPUT:  # a 4-digit prefix may collide; fine
            assert "ambiguous" in result.stderr
            continue
        assert result.exit_code == 0, result.output
        out = result.stdout
        assert out.splitlines()[0] == rref
        assert '"lr": 0.1' in out and "model.txt" in out and "logs/loss.txt" in out
        assert pipeline.data in out  # the context
        assert "succeeded" in out


def test_show_json_of_a_realization(pipeline):
    info = json.loads(ok(pipeline.root, "show", pipeline.eval, "--json"))
    assert info["rref"] == pipeline.eval
    assert info["config"]["name"] == "eval"
    assert info["context"] == {pipeline.dref(pipeline.train[0.01]): [pipeline.train[0.01]]}
    assert info["deps"] == [pipeline.train[0.01]]
    assert info["build"]["status"] == "succeeded"
    assert [f["path"] for f in info["files"]] == ["score.txt"]
    assert info["files"][0]["size"] == len("0.93\n")
    assert info["size"] == 5 and info["file_count"] == 1
    assert "files" not in json.loads(
        ok(pipeline.root, "show", pipeline.eval, "--json", "--no-files")
    )


def test_show_no_files_lists_no_files(pipeline, monkeypatch):
    import importlib

    describing = importlib.import_module("lightstore.query.describe")  # the function shadows it

    def no_walk(*_args, **_kw):
        raise AssertionError("the folder was walked")

    # A folder of a million files took seconds to walk, for nothing.
    monkeypatch.setattr(describing, "walk_tree", no_walk)
    out = ok(pipeline.root, "show", pipeline.train[0.1], "--no-files")
    assert out.splitlines()[0] == pipeline.train[0.1] and '"lr": 0.1' in out
    assert "files: (" not in out and "logs/loss.txt" not in out
    info = json.loads(ok(pipeline.root, "show", pipeline.train[0.1], "--no-files", "--json"))
    assert info["rref"] == pipeline.train[0.1] and "files" not in info
    out = ok(pipeline.root, "show", "data", "--no-files")
    assert "realizations: (1)" in out and pipeline.data in out


def test_show_a_derivation_by_name_and_by_pin(pipeline):
    out = ok(pipeline.root, "show", "data")
    assert out.splitlines()[0] == pipeline.dref(pipeline.data)
    assert pipeline.data in out and "realizations: (1)" in out and "builds:" in out
    ok(pipeline.root, "pin", "best", pipeline.train[0.001])
    assert ok(pipeline.root, "show", "best").splitlines()[0] == pipeline.train[0.001]


def test_show_a_failed_build_record(pipeline, S):
    def broken(r):
        def real(b):
            raise RuntimeError("diverged")

        return mkdrv(
            {"name": "broken", "out": [selfref, "x"]}, match_only(), build_wrapper(real), r
        )

    with pytest.raises(Exception, match="diverged"):
        realize1(instantiate(broken, S=S))
    info = json.loads(ok(pipeline.root, "show", "broken", "--json"))
    assert info["realizations"] == []
    assert info["builds"][-1]["status"] == "failed"
    assert "diverged" in info["builds"][-1]["error"]
    assert "diverged" in ok(pipeline.root, "show", "broken")
    statuses = json.loads(
        ok(pipeline.root, "sql", "SELECT status FROM build_log WHERE name = 'broken'", "--json")
    )
    assert statuses == [{"status": "failed"}]


def test_show_ambiguous_prefix_and_name(pipeline, store):
    store.catalogue.add_derivations(
        [
            NewDerivation(DRef(f"dref:abcd{c * 28}-fake"), "fake", '{"name":"fake"}', [])
            for c in "12"
        ]
    )
    result = fails(EXIT_BAD_INPUT, pipeline.root, "show", "abcd")
    assert "ambiguous" in result.stderr
    assert (
        f"dref:abcd{'1' * 28}-fake" in result.stderr
        and f"dref:abcd{'2' * 28}-fake" in result.stderr
    )
    assert ok(pipeline.root, "show", "abcd2").startswith(f"dref:abcd{'2' * 28}-fake")
    result = fails(EXIT_BAD_INPUT, pipeline.root, "show", "train")
    assert "ambiguous" in result.stderr and result.stderr.count("dref:") == 3


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("dref:" + "0" * 32 + "-nothing", EXIT_NOT_FOUND),
        ("rref:" + "0" * 32 + "-" + "1" * 32 + "-nothing", EXIT_NOT_FOUND),
        ("0000000", EXIT_NOT_FOUND),
        ("rref:0000", EXIT_NOT_FOUND),
        ("nothing-named-so", EXIT_NOT_FOUND),
        ("rref:xyz", EXIT_BAD_INPUT),
        ("two words", EXIT_BAD_INPUT),
        ("/not/in/the/store", EXIT_BAD_INPUT),
    ],
)
def test_show_unknown_or_malformed(pipeline, text, code):
    result = fails(code, pipeline.root, "show", text)
    assert result.stderr.startswith("Error:")
    assert "Traceback" not in result.output


def test_show_a_realization_whose_folder_is_missing(pipeline, store):
    folder = store.rref_path(pipeline.eval)
    os.rename(folder, folder + ".moved")
    try:
        out = ok(pipeline.root, "show", pipeline.eval)
        assert "the folder is missing (run `lightstore verify`)" in out
        assert json.loads(ok(pipeline.root, "show", pipeline.eval, "--json"))["files"] is None
        assert "missing" in fails(EXIT_PROBLEMS, pipeline.root, "verify").stdout
    finally:
        os.rename(folder + ".moved", folder)


def test_show_accepts_an_object_folder(pipeline, store):
    path = store.rref_path(pipeline.eval)
    assert ok(pipeline.root, "show", path).splitlines()[0] == pipeline.eval


# -- dependency graph --------------------------------------------------------------------------


def test_deps_direct_closure_and_tree(pipeline):
    root, ev = pipeline.root, pipeline.eval
    assert ok(root, "deps", ev).split() == [pipeline.train[0.01]]
    assert set(ok(root, "deps", "--closure", ev).split()) == {pipeline.train[0.01], pipeline.data}
    tree = ok(root, "deps", "--tree", ev).splitlines()
    assert tree[0] == f"eval {hexpart(ev)[:8]}"
    assert tree[1] == f"└── train {hexpart(pipeline.train[0.01])[:8]}"
    assert tree[2] == f"    └── data {hexpart(pipeline.data)[:8]}"
    full = ok(root, "deps", "--tree", "--full", ev).splitlines()
    assert full[0] == ev and full[2].endswith(pipeline.data)
    assert ok(root, "deps", pipeline.data) == ""
    # Derivations follow their configs.
    assert ok(root, "deps", "eval").split() == [pipeline.dref(pipeline.train[0.01])]


def test_referrers_direct_closure_and_tree(pipeline):
    root, data = pipeline.root, pipeline.data
    assert set(ok(root, "referrers", data).split()) == set(pipeline.train.values())
    assert set(ok(root, "referrers", "-a", data).split()) == {
        *pipeline.train.values(),
        pipeline.eval,
    }
    tree = ok(root, "referrers", "-t", data).splitlines()
    assert len(tree) == 5 and tree[0].startswith("data ")
    assert any(ln.endswith(f"eval {hexpart(pipeline.eval)[:8]}") for ln in tree)
    assert ok(root, "referrers", pipeline.eval) == ""


def test_graph_prints_dot(pipeline):
    out = ok(pipeline.root, "graph", pipeline.eval)
    assert out.startswith("digraph lightstore {") and out.rstrip().endswith("}")
    assert f'"{pipeline.eval}" -> "{pipeline.train[0.01]}";' in out
    assert f'"{pipeline.train[0.01]}" -> "{pipeline.data}";' in out
    assert out.count("shape=box") == 3
    users = ok(pipeline.root, "graph", "--referrers", "data")
    assert users.count("shape=ellipse") == 5 and users.count("->") == 4
    fails(EXIT_BAD_INPUT, pipeline.root, "graph", pipeline.eval, "data")


# -- du, roots, pins ---------------------------------------------------------------------------


def test_du_sorted_by_size(pipeline):
    rows = json.loads(ok(pipeline.root, "du", "--json"))
    sizes = [r["size"] for r in rows]
    assert sizes == sorted(sizes, reverse=True) and len(rows) == 5
    assert rows[0]["name"] == "train" and rows[0]["size"] > 10 / 0.001 * 4
    out = ok(pipeline.root, "du", "--limit", "2")
    assert len(out.splitlines()) == 2 + 2 + 1 and "total" in out.splitlines()[-1]
    assert [r["name"] for r in json.loads(ok(pipeline.root, "du", "-n", "eval", "--json"))] == [
        "eval"
    ]


def test_pin_unpin_and_roots(pipeline, tmp_path, S):
    root = pipeline.root
    assert ok(root, "roots", "--json") == "[]\n"
    ok(root, "pin", "best", hexpart(pipeline.eval)[:10])
    ok(root, "pin", "dataset", "data")
    link = linkrref(pipeline.train[0.1], str(tmp_path), name="result", S=S)
    rows = json.loads(ok(root, "roots", "--json"))
    assert {(r["kind"], r["name"], r["ref"]) for r in rows} == {
        ("pin", "best", pipeline.eval),
        ("pin", "dataset", pipeline.dref(pipeline.data)),
        ("link", link, pipeline.train[0.1]),
    }
    os.unlink(link)
    assert "stale" in ok(root, "roots")
    assert ok(root, "unpin", "best") == "unpinned best\n"
    assert "no pin named 'best'" in fails(EXIT_NOT_FOUND, root, "unpin", "best").stderr
    fails(EXIT_NOT_FOUND, root, "pin", "x", "dref:" + "0" * 32 + "-nothing")
    fails(EXIT_BAD_INPUT, root, "pin", "bad/name", pipeline.eval)
    fails(EXIT_BAD_INPUT, root, "pin", "only-a-name")


# -- gc ----------------------------------------------------------------------------------------


def test_gc_dry_run_then_collect(pipeline, store):
    root = pipeline.root
    ok(root, "pin", "keep", pipeline.eval)
    dry = ok(root, "gc", "--dry-run")
    doomed = {pipeline.train[0.1], pipeline.train[0.001]}
    assert {
        ln.split()[2] for ln in dry.splitlines() if ln.startswith("would remove rref:")
    } == doomed
    expected = sum(json.loads(ok(root, "show", r, "--json"))["size"] for r in doomed)
    assert f"({expected} bytes)" in dry.splitlines()[-1]
    assert set(ok(root, "ls", "-r", "-q").split()) >= doomed  # nothing went
    report = json.loads(ok(root, "gc", "--yes", "--json"))
    assert set(report["rrefs"]) == doomed and report["bytes_freed"] == expected
    assert not report["dry_run"]
    assert set(ok(root, "ls", "-r", "-q").split()) == {
        pipeline.eval,
        pipeline.train[0.01],
        pipeline.data,
    }
    assert not os.path.exists(store.rref_path(pipeline.train[0.1]))
    assert ok(root, "gc", "-y", "-q").startswith("removed 0 realization(s)")


# -- verify and reindex ------------------------------------------------------------------------


def _tamper(store: Store, rref: RRef) -> None:
    folder = store.rref_path(rref)
    os.chmod(folder, 0o755)
    path = os.path.join(folder, "model.txt")
    os.chmod(path, 0o644)
    write(path, "edited\n")


def test_verify_clean_then_damaged_then_repaired(pipeline, store):
    root = pipeline.root
    assert "0 problem(s)" in ok(root, "verify", "--check-contents")
    _tamper(store, pipeline.train[0.1])
    assert "0 problem(s)" in ok(root, "verify")  # without contents, the edit is invisible
    result = fails(EXIT_PROBLEMS, root, "verify", "--check-contents")
    assert "content" in result.stdout and pipeline.train[0.1] in result.stdout
    report = json.loads(fails(EXIT_PROBLEMS, root, "verify", "--check-contents", "--json").stdout)
    assert not report["ok"] and report["problems"][0]["kind"] == "content"
    repaired = ok(root, "verify", "--check-contents", "--repair")
    assert "1 repaired" in repaired
    assert pipeline.train[0.1] not in ok(root, "ls", "-r", "-q")
    assert "0 problem(s)" in ok(root, "verify", "--check-contents")


def test_reindex_rebuilds_a_deleted_or_damaged_catalogue(pipeline, store):
    root = pipeline.root
    before = sorted(ok(root, "ls", "-r", "-q").split())
    ok(root, "pin", "keep", pipeline.eval)
    path = os.path.join(root, CATALOGUE_FILE)
    store.catalogue.close()
    Store.forget_instances()
    with open(path, "r+b") as f:
        f.write(b"this is not a database" * 100)
    for name in ("-wal", "-shm"):
        if os.path.exists(path + name):
            os.unlink(path + name)
    result = fails(EXIT_REFUSED, root, "ls")
    assert "reindex" in result.stderr
    out = ok(root, "reindex")
    assert "recorded 5 derivation(s), 5 realization(s), 1 pin(s)" in out
    assert sorted(ok(root, "ls", "-r", "-q").split()) == before
    os.unlink(path)
    Store.forget_instances()
    fails(EXIT_NOT_FOUND, root, "ls")
    ok(root, "reindex")
    assert sorted(ok(root, "ls", "-r", "-q").split()) == before
    assert "keep" in ok(root, "roots")


def test_a_zero_byte_catalogue_is_refused_never_recreated_empty(pipeline, store, tmp_path):
    """An emptied catalogue (0 bytes) beside a tree of realizations is damage: writing
    commands and the API refuse it (exit 5, naming reindex) rather than start an empty
    catalogue that would forget the tree."""
    root = pipeline.root
    before = sorted(ok(root, "ls", "-r", "-q").split())
    path = os.path.join(root, CATALOGUE_FILE)
    store.catalogue.close()
    Store.forget_instances()
    for name in ("-wal", "-shm"):
        if os.path.exists(path + name):
            os.unlink(path + name)
    open(path, "wb").close()
    for args in (
        ["gc", "--yes"],
        ["pin", "keep", pipeline.eval],
        ["init"],
        ["ls"],
        ["verify"],
        ["history"],
    ):
        result = fails(EXIT_REFUSED, root, *args)
        assert "reindex" in result.output and "internal error" not in result.output, args
        assert os.path.getsize(path) == 0, args
    S = mkSS(root)
    for attempt in (
        lambda: Store.open(root),
        lambda: fsinit(S),
        lambda: realize1(instantiate(data_stage, S=S)),
    ):
        with pytest.raises(CatalogueCorruptError, match="reindex"):
            attempt()
        assert os.path.getsize(path) == 0
    ok(root, "reindex")
    assert sorted(ok(root, "ls", "-r", "-q").split()) == before
    # An init cut short (no objects yet) is no damage: the store opens and works.
    fresh = tmp_path / "fresh"
    (fresh / "objects").mkdir(parents=True)
    (fresh / CATALOGUE_FILE).write_bytes(b"")
    Store.forget_instances()
    assert realize1(instantiate(data_stage, S=mkSS(str(fresh))))


# -- sql ---------------------------------------------------------------------------------------


def test_sql_table_json_csv_and_params(pipeline):
    root = pipeline.root
    sql = "SELECT name, count(*) AS n FROM history GROUP BY name ORDER BY name"
    table = ok(root, "sql", sql).splitlines()
    assert table[0].split() == ["name", "n"] and table[2].split() == ["data", "1"]
    assert json.loads(ok(root, "sql", sql, "--json")) == [
        {"name": "data", "n": 1},
        {"name": "eval", "n": 1},
        {"name": "train", "n": 3},
    ]
    assert ok(root, "sql", sql, "--csv").splitlines() == ["name,n", "data,1", "eval,1", "train,3"]
    assert ok(root, "sql", sql, "--tsv").splitlines()[0] == "name\tn"
    rows = json.loads(
        ok(root, "sql", "SELECT rref FROM history WHERE name = :n", "-p", "n", "eval", "--json")
    )
    assert rows == [{"rref": pipeline.eval}]
    assert "| name" in ok(root, "sql", sql, "--fmt", "github")


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("DELETE FROM pins", "read-only"),
        ("INSERT INTO pins (name, dref, created) VALUES ('x', NULL, 0)", "read-only"),
        ("DROP VIEW history", "read-only"),
        ("UPDATE realizations SET size = 0", "read-only"),
        ("CREATE TABLE t (x)", "read-only"),
        ("ATTACH '{tmp}/other.db' AS other", "not allowed"),
        ("VACUUM INTO '{tmp}/copy.db'", "not allowed"),
        ("PRAGMA query_only = 0", "not allowed"),
        ("PRAGMA journal_mode = DELETE", "not allowed"),
        ("SELEC 1", "syntax error"),
        ("SELECT * FROM no_such_table", "no such table"),
        ("SELECT 1; DELETE FROM pins", "one statement"),
        ("SELECT :missing", "binding"),
    ],
)
def test_sql_refuses_writes_and_reports_bad_sql(pipeline, tmp_path, query, message):
    before = snapshot(pipeline.root)
    result = fails(EXIT_BAD_INPUT, pipeline.root, "sql", query.format(tmp=tmp_path))
    assert message in result.stderr, result.stderr
    assert not os.path.exists(tmp_path / "other.db") and not os.path.exists(tmp_path / "copy.db")
    assert_unchanged(pipeline.root, before)


def test_sql_introspection_pragmas_work(pipeline):
    cols = json.loads(ok(pipeline.root, "sql", "PRAGMA table_info(history)", "--json"))
    assert "duration" in [c["name"] for c in cols]
    assert ok(pipeline.root, "sql", "PRAGMA user_version").splitlines()[-1].strip() != ""


# -- pack and unpack ---------------------------------------------------------------------------


@pytest.mark.parametrize("ext", ["zip", "tar", "tar.gz"])
def test_pack_and_unpack_between_stores(pipeline, tmp_path, ext):
    archive = str(tmp_path / f"eval.{ext}")
    out = ok(pipeline.root, "pack", archive, hexpart(pipeline.eval)[:8])
    assert "packed 1 realization(s) (3 with dependencies)" in out
    bob = str(tmp_path / "bob")
    ok(bob, "init")
    assert ok(bob, "unpack", archive).split() == [pipeline.eval]
    assert set(ok(bob, "ls", "-r", "-q").split()) == {
        pipeline.eval,
        pipeline.train[0.01],
        pipeline.data,
    }
    assert "0 problem(s)" in ok(bob, "verify", "--check-contents")


def test_pack_a_derivation_packs_its_realizations(pipeline, tmp_path):
    archive = str(tmp_path / "data.zip")
    assert "packed 1 realization(s) (1 with dependencies)" in ok(
        pipeline.root, "pack", archive, "data"
    )


def test_pack_and_unpack_bad_input(pipeline, tmp_path, S):
    root = pipeline.root
    fails(EXIT_BAD_INPUT, root, "pack", str(tmp_path / "out.rar"), pipeline.eval)
    fails(EXIT_NOT_FOUND, root, "pack", str(tmp_path / "out.zip"), "nothing-named-so")
    fails(EXIT_NOT_FOUND, root, "unpack", str(tmp_path / "missing.zip"))
    junk = tmp_path / "junk.zip"
    junk.write_bytes(b"PK\x03\x04 not really a zip")
    fails(EXIT_BAD_INPUT, root, "unpack", str(junk))
    fails(EXIT_BAD_INPUT, root, "pack", str(tmp_path / "x.zip"))  # no REF: usage

    def unrealized(r):
        return mkdrv(
            {"name": "never", "out": [selfref, "x"]}, match_only(), build_wrapper(lambda b: None), r
        )

    instantiate(unrealized, S=S)
    fails(EXIT_NOT_FOUND, root, "pack", str(tmp_path / "x.zip"), "never")


# -- demo and internal errors ------------------------------------------------------------------


def test_demo_runs_the_quickstart_on_the_root(tmp_path, monkeypatch):
    import lightstore.demo.quickstart as quickstart

    calls = []
    monkeypatch.setattr(quickstart, "main", lambda argv: calls.append(argv) or 0)
    root = str(tmp_path / "demo-store")
    ok(root, "demo", "--maxiter", "5")
    assert calls == [["--root", root, "--maxiter", "5"]]
    monkeypatch.setattr(quickstart, "main", lambda argv: 7)
    fails(7, root, "demo")


def test_internal_errors_exit_1_with_a_traceback(pipeline, monkeypatch):
    import lightstore.cli.inspect as inspect_module

    def boom(*a, **kw):
        raise ZeroDivisionError("oops")

    monkeypatch.setattr(inspect_module, "disk_usage", boom)
    result = fails(EXIT_INTERNAL, pipeline.root, "du")
    assert "Traceback" in result.stderr and "internal error" in result.stderr
    assert "ZeroDivisionError: oops" in result.stderr


def test_usage_errors_exit_2(pipeline):
    fails(EXIT_BAD_INPUT, pipeline.root, "no-such-command")
    fails(EXIT_BAD_INPUT, pipeline.root, "show")
    fails(EXIT_BAD_INPUT, pipeline.root, "ls", "--no-such-option")


def test_sql_blobs_and_nulls(pipeline):
    rows = json.loads(
        ok(pipeline.root, "sql", "SELECT x'00ff' AS b, NULL AS n, 1.5 AS f", "--json")
    )
    assert rows == [{"b": {"$base64": True, "encoded": "AP8="}, "n": None, "f": 1.5}]
    assert ok(pipeline.root, "sql", "SELECT NULL AS n, 'a,b' AS s", "--csv").splitlines() == [
        "n,s",
        ',"a,b"',
    ]


def test_exported_names():
    import lightstore.cli
    import lightstore.query

    assert lightstore.cli.__all__ == ["cli", "main"]
    assert sorted(lightstore.query.__all__) == sorted(
        [
            "HISTORY_COLUMNS", "AmbiguousReferenceError", "ConfigCondition", "QueryError",
            "ReadOnlyCatalogue", "Rows", "catalogue_path", "closure", "closure_edges", "derivations",
            "describe", "disk_usage", "dot", "field_keys", "files", "history", "json_path",
            "label", "metric_keys", "neighbours", "open_view", "parse_condition", "parse_time", "realizations",
            "resolve", "resolve_all", "run_sql", "iter_sql", "sizes_of", "tree_lines",
            "Selector", "artifact_path", "build_log", "compare", "labels", "parse_selector",
            "select", "metric_points", "metric_table", "series_summaries",
            "Several", "upstream_fields",
        ]
    )  # fmt: skip
    for name in lightstore.query.__all__:
        assert getattr(lightstore.query, name) is not None


def test_main_returns_the_exit_status(pipeline, capsys):
    from lightstore.cli import main

    assert main(["--root", pipeline.root, "ls", "-q"]) == 0
    assert pipeline.dref(pipeline.eval) in capsys.readouterr().out
    assert main(["--root", pipeline.root, "show", "nothing-named-so"]) == EXIT_NOT_FOUND
    assert main(["--root", pipeline.root, "--bogus"]) == EXIT_BAD_INPUT
