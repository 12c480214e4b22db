"""The SQLite catalogue: schema, migrations, integrity rules, views and graph queries."""

from __future__ import annotations

import json
import os
import sqlite3
import threading

import pytest
from helpers import assert_unchanged, snapshot

from lightstore import (
    BuildError,
    CatalogueCorruptError,
    CatalogueVersionError,
    IntegrityError,
    Store,
    StoreError,
    build_outpath,
    build_wrapper,
    instantiate,
    match_only,
    mkdrv,
    realize,
    realize1,
    selfref,
)
from lightstore.catalogue import (
    HOST,
    MIGRATION_SET,
    Catalogue,
    Database,
    schema_files,
    split_sql,
)

TABLES = {
    "derivations",
    "derivation_deps",
    "builds",
    "build_inputs",
    "realizations",
    "realization_deps",
    "pins",
    "links",
    "_sqlite_migrations",
}
VIEWS = {"history", "build_log"}


def new_catalogue(tmp_path, name="catalogue.sqlite") -> Catalogue:
    cat = Catalogue(str(tmp_path / name))
    cat.migrate()
    return cat


def raw(path) -> sqlite3.Connection:
    """A plain sqlite3 connection, as a user running SQL against the catalogue would open."""
    conn = sqlite3.connect(str(path), isolation_level=None)
    conn.execute("PRAGMA foreign_keys = ON")
    return conn


# -- opening and migrations -------------------------------------------------------------


def test_open_creates_schema(tmp_path):
    cat = new_catalogue(tmp_path)
    tables = set(cat.column("SELECT name FROM sqlite_master WHERE type = 'table'"))
    views = set(cat.column("SELECT name FROM sqlite_master WHERE type = 'view'"))
    assert tables >= TABLES
    assert views >= VIEWS


def test_pragmas(tmp_path):
    cat = new_catalogue(tmp_path)
    assert cat.query("PRAGMA journal_mode")[0][0].lower() == "wal"
    assert cat.query("PRAGMA foreign_keys")[0][0] == 1
    assert cat.query("PRAGMA busy_timeout")[0][0] > 0
    # WAL is persistent: a plain connection sees it too.
    conn = raw(tmp_path / "catalogue.sqlite")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0].lower() == "wal"
    conn.close()


def test_user_version_and_migration_records(tmp_path):
    cat = new_catalogue(tmp_path)
    shipped = [name for name, _ in schema_files()]
    assert shipped and shipped[0] == "0001_initial"
    assert shipped == sorted(shipped)
    assert cat.schema_version() == len(shipped)
    assert cat.query("PRAGMA user_version")[0][0] == len(shipped)
    rows = cat.query("SELECT migration_set, name FROM _sqlite_migrations ORDER BY id")
    assert rows == [(MIGRATION_SET, n) for n in shipped]


def test_reopen_applies_nothing_new(tmp_path):
    cat = new_catalogue(tmp_path)
    before = cat.query("SELECT * FROM _sqlite_migrations ORDER BY id")
    cat.close()
    again = Catalogue(cat.path)
    assert again.check_version() == []
    assert again.migrate() == len(schema_files())
    assert again.query("SELECT * FROM _sqlite_migrations ORDER BY id") == before


def test_migration_is_idempotent_on_same_object(tmp_path):
    cat = new_catalogue(tmp_path)
    assert cat.migrate() == len(schema_files())
    assert len(cat.query("SELECT * FROM _sqlite_migrations")) == len(schema_files())


def test_newer_catalogue_is_refused(tmp_path):
    cat = new_catalogue(tmp_path)
    cat.close()
    supported = len(schema_files())
    conn = raw(cat.path)
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    with pytest.raises(CatalogueVersionError) as info:
        Catalogue(cat.path).migrate()
    err = info.value
    assert err.found == 99
    assert err.supported == supported
    assert "99" in str(err)
    assert str(supported) in str(err)
    assert "upgrade" in str(err)
    assert isinstance(err, StoreError)
    assert isinstance(err, OSError)


def test_newer_catalogue_is_refused_by_store_open(tmp_path):
    root = tmp_path / "store"
    os.makedirs(root)
    new_catalogue(root).close()
    conn = raw(root / "catalogue.sqlite")
    conn.execute("PRAGMA user_version = 7")
    conn.close()
    with pytest.raises(CatalogueVersionError) as info:
        Store.open(str(root))
    assert "7" in str(info.value)
    assert str(len(schema_files())) in str(info.value)
    # The refused open changed no row, nor the version.
    conn = raw(root / "catalogue.sqlite")
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 7
    conn.close()


@pytest.mark.xfail(
    strict=True,
    reason="Store.open makes objects/, tmp/ and locks/ before it checks the catalogue's version",
)
def test_a_refused_open_of_a_newer_catalogue_changes_nothing(tmp_path):
    root = tmp_path / "store"
    os.makedirs(root)
    new_catalogue(root).close()
    conn = raw(root / "catalogue.sqlite")
    conn.execute("PRAGMA user_version = 7")
    conn.close()
    before = snapshot(str(root))
    with pytest.raises(CatalogueVersionError):
        Store.open(str(root))
    assert_unchanged(str(root), before)


def test_unknown_migration_is_refused(tmp_path):
    cat = new_catalogue(tmp_path)
    cat.close()
    conn = raw(cat.path)
    conn.execute(
        "INSERT INTO _sqlite_migrations (migration_set, name, applied_at) VALUES (?, ?, ?)",
        (MIGRATION_SET, "9999_from_the_future", "2099-01-01"),
    )
    conn.close()
    with pytest.raises(CatalogueVersionError, match="9999_from_the_future"):
        Catalogue(cat.path).migrate()


@pytest.mark.parametrize("content", [b"hello", b"this is not a database " * 400])
def test_not_a_database_is_corrupt(tmp_path, content):
    path = tmp_path / "catalogue.sqlite"
    path.write_bytes(content)
    with pytest.raises(CatalogueCorruptError, match="reindex"):
        Catalogue(str(path)).migrate()


def test_not_a_database_is_corrupt_via_store_open(tmp_path):
    root = tmp_path / "store"
    os.makedirs(root)
    (root / "catalogue.sqlite").write_bytes(os.urandom(8192))
    with pytest.raises(CatalogueCorruptError, match="reindex") as info:
        Store.open(str(root))
    assert isinstance(info.value, StoreError)


def test_schema_files_ship_valid_sql():
    # Each migration applies on top of the ones before it.
    conn = sqlite3.connect(":memory:")
    for name, text in schema_files():
        statements = split_sql(text)
        assert statements, name
        for stmt in statements:
            assert sqlite3.complete_statement(stmt)
            conn.execute(stmt)
    conn.close()


# -- split_sql ---------------------------------------------------------------------------


def test_split_sql_simple():
    assert [s.strip() for s in split_sql("CREATE TABLE a (x);\nCREATE TABLE b (y);\n")] == [
        "CREATE TABLE a (x);",
        "CREATE TABLE b (y);",
    ]


def test_split_sql_semicolons_in_strings_and_comments():
    script = (
        "-- a comment; with a semicolon\n"
        "INSERT INTO t VALUES ('a;b\n"
        "c;\n"
        "d');\n"
        "/* block; comment */ INSERT INTO t VALUES ('x;y');\n"
        "INSERT INTO t VALUES (1); -- trailing; comment\n"
    )
    statements = split_sql(script)
    assert len(statements) == 3
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE t (v)")
    for s in statements:
        conn.execute(s)
    assert [r[0] for r in conn.execute("SELECT v FROM t")] == ["a;b\nc;\nd", "x;y", 1]


def test_split_sql_trigger_body_is_one_statement():
    script = (
        "CREATE TABLE t (v);\n"
        "CREATE TRIGGER trg AFTER INSERT ON t BEGIN\n"
        "  UPDATE t SET v = v + 1;\n"
        "  SELECT 1;\n"
        "END;\n"
    )
    statements = split_sql(script)
    assert len(statements) == 2
    assert "END;" in statements[1]


def test_split_sql_trailing_comments_are_fine():
    assert len(split_sql("SELECT 1;\n-- the end\n\n")) == 1
    assert len(split_sql("SELECT 1;\n/* the end */\n")) == 1


def test_split_sql_two_statements_on_one_line():
    statements = split_sql("CREATE TABLE a (x); CREATE TABLE b (y);\n")
    assert len(statements) == 2
    conn = sqlite3.connect(":memory:")
    for s in statements:
        conn.execute(s)  # one statement at a time, as migrations execute them


def test_split_sql_refuses_incomplete_statement():
    with pytest.raises(ValueError, match="incomplete"):
        split_sql("SELECT 1;\nSELECT 2\n")


def test_split_sql_empty():
    assert split_sql("") == []
    assert split_sql("-- only a comment\n") == []


# -- write transactions ------------------------------------------------------------------


def test_write_rolls_back_on_error(tmp_path):
    cat = new_catalogue(tmp_path)
    with pytest.raises(RuntimeError), cat.write() as conn:
        conn.execute(
            "INSERT INTO derivations (dref, name, config, created) VALUES ('d', 'n', '{}', 0)"
        )
        raise RuntimeError("boom")
    assert cat.query("SELECT * FROM derivations") == []
    assert not cat.conn.in_transaction


def test_nested_write_joins_outer_transaction(tmp_path):
    cat = new_catalogue(tmp_path)
    with pytest.raises(RuntimeError), cat.write() as outer:
        outer.execute(
            "INSERT INTO derivations (dref, name, config, created) VALUES ('d1', 'n', '{}', 0)"
        )
        with cat.write() as inner:
            inner.execute(
                "INSERT INTO derivations (dref, name, config, created) VALUES ('d2', 'n', '{}', 0)"
            )
        raise RuntimeError("boom")
    assert cat.query("SELECT * FROM derivations") == []


def test_check_constraints(tmp_path):
    cat = new_catalogue(tmp_path)
    with pytest.raises(IntegrityError), cat.write() as conn:
        conn.execute(
            "INSERT INTO derivations (dref, name, config, created) VALUES ('d', 'n', 'not json', 0)"
        )
    with cat.write() as conn:
        conn.execute(
            "INSERT INTO derivations (dref, name, config, created) VALUES ('d', 'n', '{}', 0)"
        )
    with pytest.raises(IntegrityError), cat.write() as conn:
        conn.execute(
            "INSERT INTO builds (dref, context_hash, context, status, started, host, pid) "
            "VALUES ('d', 'h', '{}', 'exploded', 0, 'h', 1)"
        )
    with pytest.raises(IntegrityError), cat.write() as conn:
        conn.execute(
            "INSERT INTO realizations (rref, dref, context, context_hash, size, file_count, created) "
            "VALUES ('r', 'd', '{}', 'h', -1, 0, 0)"
        )
    with pytest.raises(IntegrityError), cat.write() as conn:
        conn.execute(
            "INSERT INTO realizations (rref, dref, context, context_hash, size, file_count, created) "
            "VALUES ('r', 'unknown', '{}', 'h', 0, 0, 0)"
        )


# -- a small graph, realized through the public API ------------------------------------------


def leaf(name: str, text: str, **deps):
    def real(b):
        with open(os.path.join(build_outpath(b), "out.txt"), "w") as f:
            f.write(text)

    def stage(r):
        return mkdrv(
            {"name": name, "out": [selfref, "out.txt"], **deps},
            match_only(),
            build_wrapper(real),
            r,
        )

    return stage


@pytest.fixture
def graph(store, S):
    """A <- B <- C, A <- C, and an independent D; returns drefs and rrefs by letter."""

    def pipeline(r):
        a = leaf("a", "A")(r)
        b = leaf("b", "BB", dep=a)(r)
        c = leaf("c", "CCC", x=a, y=[b, "out.txt"])(r)
        d = leaf("d", "DDDD")(r)
        return {"a": a, "b": b, "c": c, "d": d}

    drefs, _, ctx = realize(instantiate(pipeline, S=S))
    rrefs = {k: ctx[v][0] for k, v in drefs.items()}
    return drefs, rrefs


def test_drefdeps(store, graph):
    d, _ = graph
    cat = store.catalogue
    assert cat.drefdeps([d["c"]]) == {d["a"], d["b"]}
    assert cat.drefdeps([d["b"]]) == {d["a"]}
    assert cat.drefdeps([d["a"]]) == set()
    assert cat.drefdeps([d["c"], d["d"]]) == {d["a"], d["b"]}
    assert cat.drefdeps([]) == set()
    assert cat.drefdeps1([d["c"]]) == {d["a"], d["b"]}
    assert cat.drefdeps1([d["b"]]) == {d["a"]}


def test_rrefdeps(store, graph):
    _, r = graph
    cat = store.catalogue
    assert cat.rrefdeps([r["c"]]) == {r["a"], r["b"]}
    assert cat.rrefdeps([r["b"]]) == {r["a"]}
    assert cat.rrefdeps([r["a"]]) == set()
    assert cat.rrefdeps([r["d"]]) == set()
    assert cat.rrefdeps1([r["b"]]) == {r["a"]}


def test_referrers(store, graph):
    d, r = graph
    cat = store.catalogue
    assert cat.dref_referrers([d["a"]]) == {d["b"], d["c"]}
    assert cat.dref_referrers([d["b"]]) == {d["c"]}
    assert cat.dref_referrers([d["c"]]) == set()
    assert cat.dref_referrers([d["d"]]) == set()
    assert cat.rref_referrers([r["a"]]) == {r["b"], r["c"]}
    assert cat.rref_referrers([r["b"]]) == {r["c"]}
    assert cat.rref_referrers([r["d"]]) == set()


def test_roots(store, graph):
    d, r = graph
    assert store.catalogue.root_drefs() == {d["c"], d["d"]}
    assert store.catalogue.root_rrefs() == {r["c"], r["d"]}


def test_listing_and_lookup(store, graph):
    d, r = graph
    cat = store.catalogue
    assert set(cat.all_drefs()) == set(d.values())
    assert set(cat.all_rrefs()) == set(r.values())
    assert cat.known_drefs([d["a"], "dref:" + "0" * 32 + "-nope"]) == {d["a"]}
    assert cat.known_rrefs([r["a"], r["b"]]) == {r["a"], r["b"]}
    assert cat.known_drefs([]) == set()
    assert cat.realizations_any_context(d["b"]) == [r["b"]]
    assert cat.config_json("dref:" + "0" * 32 + "-nope") is None
    assert cat.context_json("rref:" + "0" * 64 + "-nope") is None
    rec = cat.realization_record(r["b"])
    assert rec is not None
    assert rec["dref"] == d["b"]
    assert rec["host"] == HOST
    assert rec["pid"] == os.getpid()
    assert set(cat.build_times([r["a"], r["b"]])) == {r["a"], r["b"]}


def test_realization_deps_match_context(store, graph):
    d, r = graph
    ctx = json.loads(store.catalogue.context_json(r["c"]))
    assert ctx == {d["a"]: [r["a"]], d["b"]: [r["b"]]}
    rows = store.catalogue.query(
        "SELECT dep FROM realization_deps WHERE rref = ? ORDER BY dep", (r["c"],)
    )
    assert [x[0] for x in rows] == sorted([r["a"], r["b"]])


def test_realizations_in_context_is_an_indexed_lookup(store, graph):
    d, r = graph
    cat = store.catalogue
    row = cat.query("SELECT context_hash FROM realizations WHERE rref = ?", (r["c"],))
    statements: list[str] = []
    cat.conn.set_trace_callback(statements.append)
    try:
        assert cat.realizations(d["c"], row[0][0]) == [r["c"]]
    finally:
        cat.conn.set_trace_callback(None)
    lookup = [s for s in statements if "realizations" in s]
    assert lookup
    # The trace shows the statement with its parameters expanded.
    plan = " ".join(str(x) for x in cat.query("EXPLAIN QUERY PLAN " + lookup[0]))
    assert "USING INDEX" in plan or "USING COVERING INDEX" in plan
    assert "SCAN realizations" not in plan


# -- foreign keys -------------------------------------------------------------------------


def test_cannot_delete_a_used_realization(store, graph):
    _, r = graph
    with pytest.raises(IntegrityError), store.catalogue.write() as conn:
        conn.execute("DELETE FROM realizations WHERE rref = ?", (r["a"],))
    assert store.catalogue.known_rrefs([r["a"]]) == {r["a"]}


def test_cannot_delete_a_used_realization_from_plain_sqlite(store, graph):
    _, r = graph
    conn = raw(store.catalogue.path)
    with pytest.raises(sqlite3.IntegrityError):
        conn.execute("DELETE FROM realizations WHERE rref = ?", (r["b"],))
    conn.close()


def test_cannot_delete_a_derivation_with_realizations(store, graph):
    d, _ = graph
    with pytest.raises(IntegrityError), store.catalogue.write() as conn:
        conn.execute("DELETE FROM derivations WHERE dref = ?", (d["d"],))


def test_deleting_a_root_realization_cascades_its_edges(store, graph):
    _, r = graph
    with store.catalogue.write() as conn:
        conn.execute("DELETE FROM realizations WHERE rref = ?", (r["c"],))
    assert store.catalogue.root_rrefs() == {r["b"], r["d"]}
    assert store.catalogue.rref_referrers([r["a"]]) == {r["b"]}
    # Now B has no user and can go, then A.
    with store.catalogue.write() as conn:
        conn.execute("DELETE FROM realizations WHERE rref = ?", (r["b"],))
        conn.execute("DELETE FROM realizations WHERE rref = ?", (r["a"],))
    assert store.catalogue.root_rrefs() == {r["d"]}


def test_pins_restrict_deletion(store, graph):
    _, r = graph
    with store.catalogue.write() as conn:
        conn.execute(
            "INSERT INTO pins (name, rref, created) VALUES ('keep', ?, 0)",
            (r["d"],),
        )
    with pytest.raises(IntegrityError), store.catalogue.write() as conn:
        conn.execute("DELETE FROM realizations WHERE rref = ?", (r["d"],))
    with pytest.raises(IntegrityError), store.catalogue.write() as conn:
        conn.execute(
            "INSERT INTO pins (name, rref, dref, created) VALUES ('both', ?, ?, 0)",
            (r["d"], "dref:x"),
        )


def test_build_inputs_restrict_deletion(store, graph):
    d, r = graph
    cat = store.catalogue
    build_id = cat.start_build(d["b"], "h", "{}", [r["a"]])
    assert cat.query("SELECT rref FROM build_inputs WHERE build_id = ?", (build_id,)) == [(r["a"],)]
    with store.catalogue.write() as conn:
        conn.execute("DELETE FROM realizations WHERE rref = ?", (r["c"],))
        conn.execute("DELETE FROM realizations WHERE rref = ?", (r["b"],))
    with pytest.raises(IntegrityError), store.catalogue.write() as conn:
        conn.execute("DELETE FROM realizations WHERE rref = ?", (r["a"],))
    cat.finish_build(build_id, "failed", "test")
    assert cat.query("SELECT * FROM build_inputs") == []
    with store.catalogue.write() as conn:
        conn.execute("DELETE FROM realizations WHERE rref = ?", (r["a"],))


# -- views ---------------------------------------------------------------------------------


def test_history_view(store, graph):
    d, r = graph
    rows = store.catalogue.query(
        "SELECT rref, dref, name, config, duration, size, file_count, started, stopped FROM history"
    )
    assert len(rows) == 4
    by_rref = {row[0]: row for row in rows}
    assert set(by_rref) == set(r.values())
    sizes = {"a": 1, "b": 2, "c": 3, "d": 4}
    for k, rref in r.items():
        _, dref, name, config, duration, size, files, started, stopped = by_rref[rref]
        assert dref == d[k]
        assert name == k
        assert '"out.txt"' in config
        assert size == sizes[k]  # context.json is not counted
        assert files == 1
        assert duration is not None and duration >= 0
        assert stopped - started == pytest.approx(duration)


def test_history_is_queryable_by_plain_sqlite(store, graph):
    conn = raw(store.catalogue.path)
    (n,) = conn.execute("SELECT count(*) FROM history WHERE size > 2").fetchone()
    conn.close()
    assert n == 2


def test_build_log_records_success_and_failure(store, S):
    def ok(r):
        return leaf("ok", "fine")(r)

    realize1(instantiate(ok, S=S))

    def bad_real(b):
        raise ValueError("deliberate failure")

    def bad(r):
        return mkdrv({"name": "bad"}, match_only(), build_wrapper(bad_real), r)

    with pytest.raises(BuildError):
        realize1(instantiate(bad, S=S))
    rows = store.catalogue.query("SELECT name, status, error, duration FROM build_log ORDER BY id")
    assert [(n, s) for n, s, _, _ in rows] == [("ok", "succeeded"), ("bad", "failed")]
    assert rows[0][2] is None
    assert "deliberate failure" in rows[1][2]
    assert all(dur is not None and dur >= 0 for *_, dur in rows)


# -- builds --------------------------------------------------------------------------------


def test_build_lifecycle(store, graph):
    d, _ = graph
    cat = store.catalogue
    build_id = cat.start_build(d["a"], "ctx", "{}", [])
    assert cat.running_builds(d["a"], "ctx")[0]["pid"] == os.getpid()
    assert os.getpid() in cat.running_build_pids()
    cat.finish_build(build_id, "interrupted", "stopped")
    assert cat.running_builds(d["a"], "ctx") == []
    status, stopped = cat.query("SELECT status, stopped FROM builds WHERE id = ?", (build_id,))[0]
    assert status == "interrupted"
    assert stopped is not None


def test_mark_interrupted_only_touches_given_pids_of_this_host(store, graph):
    d, _ = graph
    cat = store.catalogue
    with cat.write() as conn:
        for host, pid in ((HOST, 111111), (HOST, 222222), ("elsewhere", 111111)):
            conn.execute(
                "INSERT INTO builds (dref, context_hash, context, status, started, host, pid) "
                "VALUES (?, 'h', '{}', 'running', 0, ?, ?)",
                (d["a"], host, pid),
            )
    assert cat.mark_interrupted([]) == 0
    assert cat.mark_interrupted([111111]) == 1
    rows = dict(
        ((h, p), s)
        for h, p, s in cat.query(
            "SELECT host, pid, status FROM builds WHERE pid IN (111111, 222222)"
        )
    )
    assert rows == {
        (HOST, 111111): "interrupted",
        (HOST, 222222): "running",
        ("elsewhere", 111111): "running",
    }


def test_database_is_per_process_and_thread(tmp_path):
    cat = new_catalogue(tmp_path)
    main = cat.conn
    seen = []

    def other():
        seen.append(cat.conn)
        seen.append(cat.query("SELECT count(*) FROM derivations")[0][0])
        cat.close()

    t = threading.Thread(target=other)
    t.start()
    t.join(10)
    assert seen[0] is not main
    assert seen[1] == 0
    assert cat.conn is main


def test_database_class_alone_opens_a_file(tmp_path):
    db = Database(str(tmp_path / "x.sqlite"))
    assert db.query("SELECT 1") == [(1,)]
    assert db.schema_version() == 0


def test_every_foreign_key_column_is_indexed(store):
    """Deleting an object makes SQLite check each foreign key pointing at it: without an
    index on the referring column, that check reads the whole table (collecting 10,000
    realizations beside 49,000 pins took 79 s)."""
    conn = store.catalogue.conn
    tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    assert {"pins", "links", "realizations", "realization_deps"} <= set(tables)
    for table in tables:
        # The columns each index (the rowid alias too) starts with.
        prefixes = []
        for _, index, *_ in conn.execute(f"PRAGMA index_list({table})"):
            info = sorted(conn.execute(f"PRAGMA index_info({index})"))
            prefixes.append(tuple(r[2] for r in info))
        pk = [r for r in conn.execute(f"PRAGMA table_info({table})") if r[5] == 1]
        if pk and pk[0][2].upper() == "INTEGER":
            prefixes.append((pk[0][1],))  # the rowid alias is its own index
        keys: dict[int, list[str]] = {}
        for fk in conn.execute(f"PRAGMA foreign_key_list({table})"):
            keys.setdefault(fk[0], []).append(fk[3])  # a key of several columns, in order
        for columns in keys.values():
            found = any(p[: len(columns)] == tuple(columns) for p in prefixes)
            assert found, f"{table}.{columns} refers to another table without an index"
