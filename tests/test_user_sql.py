"""SQL that users type: `lightstore sql` (and `history --where`) and the browser's SQL editor
(Datasette's, on the catalogue) run under one set of rules (`lightstore.query.sqlguard`):
the same deny-list, size limits and guards of the functions whose one call could outlast
the deadline. The browser is driven in-process, through Datasette's own client."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import sqlite3
import time
from typing import Any
from urllib.parse import quote

import pytest
from helpers import assert_unchanged, build_pipeline, fails, ok, run_process, snapshot
from hypothesis import given
from hypothesis import strategies as st

from lightstore import (
    build_outpath,
    build_wrapper,
    instantiate,
    match_only,
    mkdrv,
    realize1,
    selfref,
)
from lightstore.cli.context import EXIT_BAD_INPUT
from lightstore.facade import Store
from lightstore.query import QueryError, history, iter_sql, open_view, run_sql, sqlguard
from lightstore.query.sqlguard import MAX_LENGTH

needs_datasette = pytest.mark.skipif(
    importlib.util.find_spec("datasette") is None, reason="the browser needs Datasette"
)

#: Statements refused because of what they would reveal or reach.
DENIED = [
    "SELECT fts3_tokenizer('simple')",  # the address of a C structure of this process
    "SELECT hex(fts3_tokenizer('porter')) AS p",
    "SELECT load_extension('/tmp/nothing.so')",
    "SELECT fts5(NULL)",
    "SELECT sqlite_log(1, 'forged')",
    "SELECT sql FROM sqlite_stmt",  # the statements prepared on this connection
    "SELECT 1 FROM derivations WHERE fts3_tokenizer(name) IS NOT NULL",
]

#: A JSON object of 400,000 keys (about 6.5 MB), its keys starting with a given letter.
_OBJECT = (
    "(SELECT json_group_object('%s' || x, x) FROM (WITH RECURSIVE c(x) AS "
    "(SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 400000) SELECT x FROM c))"
)

#: Single calls that ran for seconds or minutes, each refused at once.
SLOW_CALLS = [
    "SELECT length(printf('%.*c', 1e9, 'x'))",
    "SELECT length(printf('%.*c', 2147483647, 'x'))",
    "SELECT length(format('%.*c', 1e9, 'x'))",
    "SELECT length(printf('%2000000000c', 'x'))",
    "SELECT length(printf('%.1999999999c', 'x'))",
    "SELECT printf('%.*c', '1e9', 'x') IS NULL",
    "SELECT length(printf(CAST('%.1999999999c' AS BLOB), 'x'))",
    "SELECT length(zeroblob(1e9))",
    "SELECT length(randomblob(1e9))",
    "SELECT instr(printf('%.*c', 1000000, 'a'), printf('%.*c', 500000, 'a') || 'b')",
    "SELECT length(replace(printf('%.*c', 1000000, 'a'), printf('%.*c', 500000, 'a') || 'b', ''))",
    "SELECT length(trim(printf('%.*c', 100000, 'a'), printf('%.*c', 100000, 'b') || 'a'))",
    "SELECT printf('%.*c', 1000000, 'a') LIKE '%' || printf('%.*c', 40000, 'a') || 'b'",
    "SELECT printf('%.*c', 1000000, 'a') GLOB '*' || printf('%.*c', 40000, 'a') || 'b'",
    "SELECT length(printf('%.*c', 1e9, 'x')) FROM realizations",
    # json_patch looks up each key of one object among the other's: 400,000 keys each.
    f"SELECT length(json_patch({_OBJECT % 'a'}, {_OBJECT % 'a'}))",
]


def _stage(name: str):
    def stage(r):
        def real(b):
            with open(os.path.join(build_outpath(b), "out.txt"), "w") as f:
                f.write(name)

        return mkdrv(
            {"name": name, "out": [selfref, "out.txt"]}, match_only(), build_wrapper(real), r
        )

    return stage


def browser_sql(root: str, *queries: str) -> list[tuple[int, Any]]:
    """Run `queries` in the browser's SQL editor of the store at `root`: (status, JSON) each."""
    from lightstore.ui import make_datasette

    ds = make_datasette(root)

    async def fetch() -> list[tuple[int, Any]]:
        await ds.invoke_startup()
        out = []
        for sql in queries:
            resp = await ds.client.get(f"/catalogue.json?sql={quote(sql)}&_shape=objects")
            out.append((resp.status_code, json.loads(resp.text)))
        return out

    return asyncio.run(fetch())


@pytest.fixture
def root(S) -> str:
    return build_pipeline(S).root


# -- the deny-list ---------------------------------------------------------------------------


@pytest.mark.parametrize("query", DENIED)
def test_functions_that_leak_process_state_are_refused_by_sql(root, query):
    result = fails(EXIT_BAD_INPUT, root, "sql", query)
    assert "not allowed" in result.stderr and "0x" not in result.stdout


@needs_datasette
def test_the_browser_refuses_the_same(root):
    for query, (status, body) in zip(DENIED, browser_sql(root, *DENIED), strict=True):
        assert status == 400 and body["ok"] is False, (query, body)
        assert "prohibited" in body["error"] or "not authorized" in body["error"], body


def test_the_deny_list_leaves_ordinary_sql_alone(root):
    rows = json.loads(
        ok(
            root,
            "sql",
            "SELECT count(*) AS n, max(length(config)) > 0 AS c, sqlite_version() IS NOT NULL AS v"
            " FROM derivations WHERE name LIKE 'tr%' AND name GLOB 't*'",
            "--json",
        )
    )
    assert rows == [{"n": 3, "c": 1, "v": 1}]


# -- one call cannot outlast the deadline -----------------------------------------------------


@pytest.mark.parametrize("query", SLOW_CALLS, ids=lambda query: query[:70])
def test_one_slow_function_call_is_refused_at_once(root, query):
    started = time.monotonic()
    result = fails(EXIT_BAD_INPUT, root, "sql", query)
    assert time.monotonic() - started < 5, query
    assert result.stderr.startswith("Error: refused:"), result.stderr
    # The limits are lifted afterwards, for lightstore's own reads on the same connection.
    view = open_view(root)
    before = view.catalogue.conn.getlimit(sqlite3.SQLITE_LIMIT_LENGTH)
    with pytest.raises(QueryError, match="refused"):
        run_sql(view.catalogue, query, timeout=60)
    assert view.catalogue.conn.getlimit(sqlite3.SQLITE_LIMIT_LENGTH) == before > MAX_LENGTH


@needs_datasette
def test_the_browser_refuses_them_too(root):
    started = time.monotonic()
    answers = browser_sql(root, *SLOW_CALLS)
    assert time.monotonic() - started < 5 * len(SLOW_CALLS)
    for query, (status, body) in zip(SLOW_CALLS, answers, strict=True):
        assert status == 400 and body["ok"] is False, (query, body)


def test_many_guarded_calls_stop_at_the_deadline(root):
    many = (
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c LIMIT 1000000) "
        "SELECT count(instr(printf('%.*c', 40000, 'a'), printf('%.*c', 20000, 'a') || x)) FROM c"
    )
    started = time.monotonic()
    result = fails(EXIT_BAD_INPUT, root, "sql", many, "--timeout", "1")
    assert "longer than 1 s" in result.stderr
    assert time.monotonic() - started < 5


def test_guarded_functions_still_work(root):
    row = json.loads(
        ok(
            root,
            "sql",
            "SELECT printf('%5.2f|%-4d|%%|%s|%.3c|%,d', 3.14159, 7, 'ok', 'x', 1234567) AS p, "
            "format('%q', 'it''s') AS f, instr('hello', 'll') AS i, replace('abc', 'b', 'x') AS r,"
            " trim('xxhixx', 'x') AS t, ltrim('..a', '.') AS l, rtrim('a  ') AS rt, "
            "length(printf('%.*c', 5000000, 'x')) AS n",
            "--json",
        )
    )
    assert row == [
        {
            "p": " 3.14|7   |%|ok|xxx|1,234,567",
            "f": "it''s",
            "i": 3,
            "r": "axc",
            "t": "hi",
            "l": "a",
            "rt": "a",
            "n": 5000000,
        }
    ]


_ARG = st.one_of(
    st.integers(-(2**63), 2**63 - 1),
    st.integers(-50, 50),
    st.floats(allow_nan=False),
    st.text(max_size=8),
    st.binary(max_size=8),
    st.none(),
)
_FORMAT = st.text(alphabet="%-+ #!0,.*123456789lcdsfgGeExXqQwzoiupnr%abT", max_size=12)


@given(_FORMAT, st.lists(_ARG, max_size=4), st.lists(_ARG, min_size=3, max_size=3))
def test_guards_give_exactly_sqlites_results(fmt, args, three):
    """A guarded call that is not refused returns what SQLite's own function returns."""
    plain = sqlite3.connect(":memory:")
    sqlguard.set_limits(plain, sqlguard.USER_SQL_LIMITS)
    guarded = sqlite3.connect(":memory:")
    sqlguard.prepare_connection(guarded)
    # Text that is not UTF-8 (replace() on blobs) comes back as its bytes (a blob, from a guard).
    plain.text_factory = guarded.text_factory = sqlguard.text_or_bytes
    calls = [
        (f"printf({', '.join('?' * (len(args) + 1))})", [fmt, *args]),
        ("instr(?, ?)", three[:2]),
        ("replace(?, ?, ?)", three),
        ("trim(?, ?)", three[:2]),
        ("ltrim(?, ?)", three[1:]),
        ("rtrim(?, ?)", three[:2]),
    ]
    for call, params in calls:
        try:
            expected: Any = plain.execute(f"SELECT {call}", params).fetchone()[0]
        except sqlite3.Error as e:
            expected = type(e)
        try:
            got: Any = guarded.execute(f"SELECT {call}", params).fetchone()[0]
        except sqlite3.Error:
            got = sqlite3.OperationalError
        if expected is not sqlite3.OperationalError or got is not sqlite3.OperationalError:
            assert got == expected or (got != got and expected != expected), (call, params)


FOREVER = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT max(x) FROM c"


@pytest.mark.slow
def test_user_sql_has_a_deadline(S):
    p = build_pipeline(S)
    started = time.monotonic()
    result = fails(EXIT_BAD_INPUT, p.root, "sql", FOREVER, "--timeout", "0.5")
    assert "longer than 0.5 s" in result.output
    with pytest.raises(QueryError, match="longer than"):
        history(Store.open(p.root), where=f"({FOREVER}) > 0", timeout=0.3)
    result = fails(EXIT_BAD_INPUT, p.root, "history", "-w", f"({FOREVER}) > 0")
    assert "longer than" in result.output
    assert time.monotonic() - started < 30
    # The connection is usable afterwards, without a deadline left behind.
    assert len(history(Store.open(p.root))) == 5


# -- the store that is read ---------------------------------------------------------------------


@needs_datasette
def test_the_browser_reads_the_store_at_a_path_that_needs_quoting(tmp_path):
    # Unquoted in a SQLite URI, '%41' is 'A', the folder of another store.
    decoy = Store.open(str(tmp_path / "A"), create=True)
    realize1(instantiate(_stage("decoy"), S=decoy.settings))
    for name in ("%41", "a?b", "a#b"):
        store = Store.open(str(tmp_path / name), create=True)
        realize1(instantiate(_stage("target"), S=store.settings))
        [(status, body)] = browser_sql(store.root, "SELECT name FROM derivations")
        assert status == 200 and body["rows"] == [{"name": "target"}], (name, body)


# -- reading only, whatever the catalogue given --------------------------------------------------


#: Statements that would make something, if only a temporary object of the connection.
MAKES_SOMETHING = [
    "CREATE TEMP TABLE t AS SELECT * FROM derivations",
    "CREATE TEMP VIEW v AS SELECT 1",
    "CREATE TEMP TRIGGER tr AFTER INSERT ON realizations BEGIN SELECT 1; END",
    "CREATE TABLE zz (a)",
    "DELETE FROM pins",
    "UPDATE realizations SET size = 0",
    "BEGIN",
    "SAVEPOINT s",
    "ANALYZE",
    "PRAGMA foreign_keys = OFF",
]


@pytest.mark.parametrize("query", MAKES_SOMETHING)
def test_sql_makes_nothing_not_even_temporary_objects(root, query):
    before = snapshot(root)
    result = fails(EXIT_BAD_INPUT, root, "sql", query)
    assert result.stderr.startswith("Error: refused:"), result.stderr
    assert_unchanged(root, before)


@pytest.mark.parametrize("query", MAKES_SOMETHING)
def test_run_sql_on_a_writable_catalogue_reads_only(root, query):
    store = Store.open(root)
    before = snapshot(root)
    with pytest.raises(QueryError, match="refused"):
        run_sql(store.catalogue, query)
    assert_unchanged(root, before)
    # Nothing was left on the store's own connection either (a temporary trigger on
    # realizations would run inside lightstore's writes).
    assert store.catalogue.conn.execute("SELECT * FROM sqlite_temp_master").fetchall() == []
    assert not store.catalogue.conn.in_transaction
    assert store.catalogue.conn.execute("PRAGMA foreign_keys").fetchone() == (1,)


def test_history_where_on_a_writable_store_is_under_the_same_rules(root):
    store = Store.open(root)
    with pytest.raises(QueryError, match="fts3_tokenizer"):
        history(store, where="hex(fts3_tokenizer('simple')) != ''")
    with pytest.raises(QueryError, match="load_extension"):
        history(store, where="load_extension('/tmp/nothing.so') IS NULL")
    assert len(history(store, where="name = 'train'")) == 3


@pytest.mark.parametrize(
    "where",
    [
        "1) UNION ALL SELECT 1,2,3,4,5,6,7,8,9,10,11,12,13,14,15 /*",
        "1) UNION ALL SELECT 1,2,3,4,5,6,7,8,9,10,11,12,13,14,15 --",
        "name = 'a' /* not closed",
        "name = 'a",
        'name = "a',
        "name = [a",
        "(1",
        "1; DELETE FROM pins",
    ],
)
def test_a_where_condition_must_be_one_expression(root, where):
    result = fails(EXIT_BAD_INPUT, root, "history", "-w", where)
    assert "invalid SQL condition" in result.stderr, result.stderr
    with pytest.raises(QueryError, match="one expression"):
        history(Store.open(root), where=where)


def test_where_conditions_that_are_one_expression_still_work(root):
    for where in (
        "name = 'train' -- a comment at the end",
        "name IN (SELECT name FROM derivations WHERE name = 'train') /* (a comment) */",
        "name = 'tr''ain' OR \"name\" = 'train' OR [name] = ')'",
    ):
        assert len(history(open_view(root), where=where)) == 3, where


def test_json_patch_still_works_and_is_exactly_sqlites(root):
    [row] = json.loads(
        ok(
            root,
            "sql",
            """SELECT json_patch('{"a":1,"b":{"c":2}}', '{"b":{"c":null,"d":3},"e":4}') AS p, """
            "json(json_patch('[1]', '{\"x\":1}')) AS q",
            "--json",
        )
    )
    assert row == {"p": '{"a":1,"b":{"d":3},"e":4}', "q": '{"x":1}'}
    assert (
        "malformed JSON"
        in fails(EXIT_BAD_INPUT, root, "sql", "SELECT json_patch('{', '{}')").stderr
    )


_JSON = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.text(max_size=3)),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=2), inner, max_size=4)
    ),
    max_leaves=12,
)


@given(_JSON, _JSON)
def test_guarded_json_patch_gives_sqlites_result(target, patch):
    plain = sqlite3.connect(":memory:")
    guarded = sqlite3.connect(":memory:")
    sqlguard.prepare_connection(guarded)
    args = (json.dumps(target), json.dumps(patch))
    expected = plain.execute("SELECT json_patch(?, ?)", args).fetchone()[0]
    assert guarded.execute("SELECT json_patch(?, ?)", args).fetchone()[0] == expected


# -- what a statement may return -------------------------------------------------------------------

#: 300 rows of 8 MB each: gigabytes, were they gathered.
MANY_BIG_ROWS = (
    "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 300) "
    "SELECT zeroblob(8000000) AS z FROM c"
)
#: One row of 8 MB values.
WIDE_ROW = "SELECT " + ", ".join(f"printf('%.*c', 8000000, 'x') AS c{i}" for i in range(31))
TOO_MANY_COLUMNS = "SELECT " + ", ".join(f"zeroblob(8000000) AS c{i}" for i in range(150))


def test_a_table_of_a_huge_result_is_refused_with_bounded_memory(root):
    done = run_process(root, "sql", MANY_BIG_ROWS, memory=1536 << 20)
    assert done.returncode == EXIT_BAD_INPUT, done.stderr
    assert "larger than 64 MiB" in done.stderr and "--csv" in done.stderr


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["--nl", "--csv"])
def test_streamed_rows_come_in_batches_of_bounded_memory(root, fmt):
    # 640 MB of rows: more than the process may hold at once, were they fetched together.
    rows = MANY_BIG_ROWS.replace("x < 300", "x < 80")
    done = run_process(root, "sql", rows, fmt, memory=512 << 20)
    assert done.returncode == 0, done.stderr
    assert done.printed > 80 * 8_000_000 * 4 // 3  # every row, in base64


@pytest.mark.parametrize(
    ("query", "message"),
    [(WIDE_ROW, "a row is larger than 64 MiB"), (TOO_MANY_COLUMNS, "at most 32 columns")],
)
def test_one_huge_row_is_refused_with_bounded_memory(root, query, message):
    done = run_process(root, "sql", query, "--nl", memory=1536 << 20)
    assert done.returncode == EXIT_BAD_INPUT, done.stderr
    assert message in done.stderr


def test_run_sql_gathers_at_most_max_bytes(root):
    view = open_view(root)
    headers, rows = run_sql(view.catalogue, "SELECT rref, config FROM history", max_bytes=None)
    assert len(rows) == 5
    with pytest.raises(QueryError, match="larger than"):
        run_sql(view.catalogue, "SELECT printf('%.*c', 2000000, 'x')", max_bytes=1 << 20)
    headers, rows = run_sql(view.catalogue, "SELECT 1 AS a, 2 AS a")
    assert headers == ["a", "a"] and rows == [(1, 2)]


def test_sql_streams_rows(S):
    p = build_pipeline(S)
    many = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c LIMIT 200000) SELECT x FROM c"
    headers, rows = iter_sql(open_view(p.root).catalogue, many, timeout=30)
    assert headers == ["x"] and next(rows) == (1,) and next(rows) == (2,)
    rows.close()
    out = ok(p.root, "sql", many, "--csv")
    assert out.count("\n") == 200001
    assert json.loads(ok(p.root, "sql", "SELECT 1 AS a UNION ALL SELECT 2", "--json")) == [
        {"a": 1},
        {"a": 2},
    ]
    assert json.loads(ok(p.root, "sql", "SELECT 1 AS a WHERE 0", "--json")) == []
