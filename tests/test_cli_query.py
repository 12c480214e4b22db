"""`lightstore.query`, the Python API under the command line: listings, filters,
reference resolution, the read-only view, and the query plans that keep them fast."""

from __future__ import annotations

import fnmatch
import json
import operator
import os
import re
import sqlite3
import time
from datetime import datetime
from decimal import Decimal

import pytest
from helpers import LRS, Pipeline, build_pipeline, fails, ok
from hypothesis import given
from hypothesis import strategies as st

from lightstore import (
    DRef,
    RRef,
    StoreNotFoundError,
    UnknownReferenceError,
    build_outpath,
    build_wrapper,
    instantiate,
    match_only,
    mkconfig,
    mkdrv,
    realize1,
    rref2dref,
    selfref,
)
from lightstore.catalogue import NewDerivation, NewRealization, register_functions
from lightstore.cli.context import EXIT_BAD_INPUT, EXIT_NOT_FOUND
from lightstore.facade import Store
from lightstore.foundation.errors import InvalidReferenceError
from lightstore.foundation.refs import mkdref, mkrref
from lightstore.maintenance import reindex
from lightstore.query import (
    AmbiguousReferenceError,
    QueryError,
    closure,
    derivations,
    describe,
    disk_usage,
    dot,
    field_keys,
    history,
    json_path,
    label,
    neighbours,
    open_view,
    parse_condition,
    parse_time,
    realizations,
    resolve,
    run_sql,
    tree_lines,
)
from lightstore.query.readonly import ReadOnlyCatalogue


def test_history_rows_and_fields(store, pipeline):
    rows = history(store, name="train", fields=["lr", "model.depth", "name"])
    assert [r["lr"] for r in rows] == list(LRS)
    assert all(r["model.depth"] == 4 and r["config.name"] == "train" for r in rows)
    assert {r["rref"] for r in rows} == set(pipeline.train.values())
    assert set(rows[0]) == {
        "rref", "dref", "name", "started", "stopped", "duration", "size", "file_count",
        "host", "pid", "build_id", "imported", "import_host", "collected",
        "collected_reason", "tags", "lr", "model.depth", "config.name",
    }  # fmt: skip
    assert field_keys(["lr", "size"]) == ["lr", "config.size"]


def test_history_filters(store, pipeline):
    assert [r["rref"] for r in history(store, config=["lr<0.05"])] == [
        pipeline.train[0.01],
        pipeline.train[0.001],
    ]
    assert len(history(store, name="t*")) == 3
    assert history(store, where="duration < 0") == []
    assert history(store, since=time.time() + 60) == []
    assert len(history(store, since="1h", until=time.time() + 60)) == 5
    assert [r["rref"] for r in history(store, limit=2)] == [pipeline.train[0.001], pipeline.eval]
    with pytest.raises(QueryError, match="no such column"):
        history(store, where="nope = 1")


def test_derivations_and_disk_usage(store, pipeline):
    rows = derivations(store)
    assert [r["name"] for r in rows].count("train") == 3
    assert all(r["realizations"] == 1 for r in rows)
    assert derivations(store, config=["lr=0.1"])[0]["dref"] == pipeline.dref(pipeline.train[0.1])
    du = disk_usage(store)
    assert [r["size"] for r in du] == sorted((r["size"] for r in du), reverse=True)
    assert sum(r["size"] for r in du) == sum(r["size"] for r in history(store))


def test_json_path_and_conditions():
    assert json_path("lr") == '$."lr"'
    assert json_path("model.depth") == '$."model"."depth"'
    for bad in ["", "a..b", "a b", "$.x", "a'b"]:
        with pytest.raises(QueryError):
            json_path(bad)
    c = parse_condition(" lr <= 1e-3 ")
    assert (c.field, c.op, c.value) == ("lr", "<=", Decimal("0.001"))
    assert parse_condition("opt=adam").value == "adam"
    assert parse_condition('opt="adam"').value == "adam"
    assert parse_condition("flag==true").op == "="
    assert parse_condition("layers=[1,2]").value == [1, 2]
    for bad in ["lr", "lr<", "=1", "lr<<1", "lr=>1", "lr<null"]:
        with pytest.raises(QueryError):
            parse_condition(bad)


_EDGES = [2**63 - 1, 2**63, 2**63 + 1, -(2**63), -(2**63) - 1, 2**64, 2**64 + 1, -(2**64)]
_NUMBERS = st.one_of(
    st.sampled_from(_EDGES),
    st.integers(),
    st.integers(-(10**200), 10**200),
    st.floats(allow_nan=False, allow_infinity=False),  # configs hold finite numbers only
    st.sampled_from([float(2**63), float(2**64), -float(2**63), 1e19, 0.5]),
)
_OPS = {
    "=": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}


def _as_written(x):
    """A number as its JSON text says: a float is the decimal of its shortest text."""
    return Decimal(repr(x)) if isinstance(x, float) else x


def _expected(op: str, x, v) -> bool:
    """What a numeric condition means: numbers by value as written, exactly (ints of any
    size, decimals digit by digit); true and false as 1 and 0; text above every number
    (SQLite's order); a missing field never."""
    if x is None:
        return False
    if isinstance(x, str):
        return op in (">", ">=", "!=")
    return _OPS[op](int(x) if isinstance(x, bool) else _as_written(x), _as_written(v))


@given(
    st.lists(st.one_of(_NUMBERS, st.booleans(), st.just("text"), st.none()), max_size=8),
    st.sampled_from(sorted(_OPS)),
    _NUMBERS,
)
def test_numeric_conditions_compare_exactly_whatever_the_size(values, op, value):
    conn = sqlite3.connect(":memory:")
    register_functions(conn)
    conn.execute("CREATE TABLE d (i INTEGER, config TEXT)")
    conn.executemany(
        "INSERT INTO d VALUES (?, ?)",
        [(i, json.dumps({} if x is None else {"n": x})) for i, x in enumerate(values)],
    )
    condition = parse_condition(f"n{op}{json.dumps(value)}")
    assert condition.value == _as_written(value)
    term, params = condition.sql()
    found = {i for (i,) in conn.execute(f"SELECT i FROM d WHERE {term}", params)}
    assert found == {i for i, x in enumerate(values) if _expected(op, x, value)}


_DECIMALS = st.one_of(
    st.decimals(allow_nan=False, allow_infinity=False),
    st.sampled_from(
        [
            Decimal("18446744073709551617.0"),  # REAL: 2**64
            Decimal("1e-400"),  # REAL: 0.0
            Decimal("1e400"),  # REAL: infinity
            Decimal("0.1000000000000000001"),  # REAL: 0.1
            Decimal("1152921504606846977"),  # between 2**60 and the text of float(2**60)
        ]
    ),
)


@given(
    st.lists(st.one_of(_NUMBERS, st.booleans(), st.just("text"), st.none()), max_size=8),
    st.sampled_from(sorted(_OPS)),
    _DECIMALS,
)
def test_conditions_compare_the_digits_written(values, op, value):
    """A condition's number is the one its digits say, never the nearest float: so
    n=18446744073709551617.0 is not 2**64, and seed=1e-400 is not 0."""
    conn = sqlite3.connect(":memory:")
    register_functions(conn)
    conn.execute("CREATE TABLE d (i INTEGER, config TEXT)")
    conn.executemany(
        "INSERT INTO d VALUES (?, ?)",
        [(i, json.dumps({} if x is None else {"n": x})) for i, x in enumerate(values)],
    )
    term, params = parse_condition(f"n{op}{value}").sql()
    found = {i for (i,) in conn.execute(f"SELECT i FROM d WHERE {term}", params)}
    assert found == {i for i, x in enumerate(values) if _expected(op, x, value)}


@pytest.mark.parametrize("text", ["n=Infinity", "n<-Infinity", "n>=NaN", "n=[1e400]"])
def test_conditions_on_numbers_that_are_not_finite_are_refused(text):
    with pytest.raises(QueryError, match=r"finite|float range"):
        parse_condition(text)


def test_integers_beyond_64_bits_in_listings_selectors_and_logs(S):
    def stage(n, r):
        def real(b):
            with open(os.path.join(build_outpath(b), "out.txt"), "w") as f:
                f.write(str(n))

        return mkdrv(
            {"name": "big", "n": n, "out": [selfref, "out.txt"]},
            match_only(),
            build_wrapper(real),
            r,
        )

    ns = [5, 2**63 - 1, 2**63, 2**64, 2**64 + 1, -(2**70)]
    runs = {n: realize1(instantiate(stage, n, S=S)) for n in ns}
    root = S.root
    assert ok(root, "ls", "-q", "-c", f"n={2**64}").split() == [rref2dref(runs[2**64])]
    for cmd in (["ls", "-r"], ["history"]):
        rows = json.loads(ok(root, *cmd, "-c", f"n>{2**63 - 1}", "--json"))
        assert sorted(r["rref"] for r in rows) == sorted(runs[n] for n in ns if n > 2**63 - 1)
    rows = json.loads(ok(root, "history", "-n", "big", "-f", "n", "--json"))
    assert sorted(r["n"] for r in rows) == sorted(ns)  # the digits, not a rounded float
    out = ok(root, "show", f"big[n={2**64 + 1}]@latest")
    assert out.splitlines()[0] == runs[2**64 + 1]
    result = fails(EXIT_NOT_FOUND, root, "show", f"big[n={2**64 + 2}]")
    assert str(2**64 + 1) in result.stderr  # the values there, exactly
    for build in (str(2**64), str(-(2**70))):
        assert "no build" in fails(EXIT_NOT_FOUND, root, "log", "--build", build).stderr
    assert history(open_view(root), since=10**30) == []


def _strict_json(text: str):
    """JSON as every parser reads it: no Infinity or NaN."""

    def refuse(constant: str):
        raise AssertionError(f"{constant} is not JSON")

    return json.loads(text, parse_constant=refuse)


def test_numbers_beyond_the_float_range_and_written_exactly(S):
    def stage(config, r):
        def real(b):
            with open(os.path.join(build_outpath(b), "out.txt"), "w") as f:
                f.write(json.dumps(config))

        return mkdrv(
            {"name": "exact", **config, "out": [selfref, "out.txt"]},
            match_only(),
            build_wrapper(real),
            r,
        )

    configs = {
        "2**64": {"n": 2**64, "seed": 0.0},
        "2**64+1": {"n": 2**64 + 1, "seed": 1e-300},
        "10**400": {"n": 10**400, "seed": 0.5},
        "10**3999": {"n": 10**3999, "seed": -0.5},
        "-10**3999": {"n": -(10**3999), "seed": 2.0},
    }
    runs = {k: realize1(instantiate(stage, c, S=S)) for k, c in configs.items()}
    root = S.root

    def ls(*args: str) -> set[str]:
        return set(ok(root, "ls", "-q", *args).split())

    def dref(k: str) -> str:
        return rref2dref(runs[k])

    # Integers beyond the float range in conditions (were OverflowError).
    assert ls("-c", f"n={10**400}") == {dref("10**400")}
    assert ls("-c", f"n>{10**400}") == {dref("10**3999")}
    rows = json.loads(ok(root, "history", "-c", f"n<{10**400}", "--json"))
    assert {r["rref"] for r in rows} == {runs[k] for k in ("2**64", "2**64+1", "-10**3999")}
    assert ok(root, "show", f"exact@n={10**400}@latest").splitlines()[0] == runs["10**400"]
    # Decimals as written, never the nearest float.
    assert ls("-c", "n=18446744073709551617.0") == {dref("2**64+1")}
    assert ls("-c", "n=18446744073709551616.0") == {dref("2**64")}
    assert ls("-c", "n=1e400") == {dref("10**400")}
    assert ls("-c", "seed=0") == {dref("2**64")}
    assert ls("-c", "seed>0", "-c", "seed<1e-299") == {dref("2**64+1")}
    fails(EXIT_NOT_FOUND, root, "show", "exact@seed=1e-400")
    fails(EXIT_BAD_INPUT, root, "ls", "-c", "n=Infinity")
    # Listings give the digits, sort exactly, and print valid JSON.
    text = ok(root, "history", "-n", "exact", "-f", "n", "--sort", "n", "--json")
    assert [r["n"] for r in _strict_json(text)] == sorted(c["n"] for c in configs.values())
    text = ok(root, "history", "-n", "exact", "-f", "n", "--sort", "-n", "--limit", "3", "--nl")
    assert [_strict_json(line)["n"] for line in text.splitlines()] == [
        10**3999,
        10**400,
        2**64 + 1,
    ]
    table = ok(root, "history", "-n", "exact", "-f", "n")
    assert str(10**3999) in table and "inf" not in table


@pytest.mark.parametrize("started,stopped", [(1e300, -1e300), (-1e300, 1e300), (None, 1e308)])
def test_listings_tolerate_absurd_times_in_the_catalogue(S, started, stopped):
    p = build_pipeline(S)
    with Store.open(p.root).catalogue.write() as conn:
        conn.execute(
            "UPDATE realizations SET build_started = ?, build_stopped = ?", (started, stopped)
        )
        conn.execute("UPDATE builds SET started = ?, stopped = ?", (started or 0, stopped))
    for args in (["ls"], ["ls", "-r"], ["history"], ["show", p.eval]):
        ok(p.root, *args)
        ok(p.root, *args, "--json")
    json.loads(ok(p.root, "history", "--json"))


def test_limit_beyond_64_bits(S):
    p = build_pipeline(S)
    for cmd in ("history", "ls", "du"):
        ok(p.root, cmd, "--limit", str(2**63 - 1))
        fails(EXIT_BAD_INPUT, p.root, cmd, "--limit", "99999999999999999999")
    assert len(history(Store.open(p.root), limit=10**20)) == 5
    with pytest.raises(QueryError):
        history(Store.open(p.root), limit=-1)


def test_sql_json_is_valid_json_for_any_float(pipeline):
    query = "SELECT 9e999 AS big, -9e999 AS small, 0.5 AS half"
    expected = {"big": "Infinity", "small": "-Infinity", "half": 0.5}
    assert _strict_json(ok(pipeline.root, "sql", query, "--json")) == [expected]
    assert _strict_json(ok(pipeline.root, "sql", query, "--nl")) == expected
    assert float(expected["big"]) == float("inf")  # read back as it is written


def test_sql_keeps_every_column_of_the_same_name(pipeline):
    query = "SELECT 1 AS a, 2 AS a, 3 AS [a:1], 4 AS b"
    assert json.loads(ok(pipeline.root, "sql", query, "--json")) == [
        {"a": 1, "a:2": 2, "a:1": 3, "b": 4}
    ]
    assert ok(pipeline.root, "sql", query, "--csv").splitlines() == ["a,a:2,a:1,b", "1,2,3,4"]
    table = ok(pipeline.root, "sql", query).splitlines()
    assert table[0].split() == ["a", "a:2", "a:1", "b"] and table[2].split() == ["1", "2", "3", "4"]


#: Arguments whose bytes are not UTF-8, as Python gets them from the command line.
NOT_UTF8 = "\udcff"


@pytest.mark.parametrize(
    "args",
    [
        ["ls", "-n", NOT_UTF8],
        ["ls", "-c", f"n={NOT_UTF8}"],
        ["du", "-n", NOT_UTF8],
        ["forget", "-n", NOT_UTF8],
        ["show", f"train@v={NOT_UTF8}"],
        ["show", f'train[n="{NOT_UTF8}"]'],
        ["history", "-w", f"name = '{NOT_UTF8}'"],
        ["sql", f"SELECT '{NOT_UTF8}'"],
        ["sql", "SELECT :x", "-p", "x", NOT_UTF8],
    ],
)
def test_arguments_that_are_not_utf8_are_bad_input(pipeline, args):
    result = fails(EXIT_BAD_INPUT, pipeline.root, *args)
    assert "not UTF-8" in result.stderr, result.stderr


def test_parse_time():
    now = 1_700_000_000.0
    assert parse_time("30m", now) == now - 1800
    assert parse_time("2h", now) == now - 7200
    assert parse_time("7d", now) == now - 7 * 86400
    assert parse_time("1w", now) == now - 7 * 86400
    assert parse_time("1700000000", now) == now
    assert parse_time("2024-05-01") == datetime(2024, 5, 1).timestamp()
    assert parse_time("2024-05-01T12:00:00+00:00") == 1714564800.0
    today = parse_time("today", now)
    assert today <= now < today + 86400 + 3600
    assert parse_time("yesterday", now) < today
    for bad in ["soon", "7 parsecs", "2024-13-01", ""]:
        with pytest.raises(QueryError):
            parse_time(bad)


@given(
    st.floats(min_value=0, max_value=1e6, allow_nan=False),
    st.sampled_from(["s", "m", "h", "d", "w"]),
)
def test_parse_time_ages_property(amount, unit):
    seconds = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}[unit]
    text = f"{amount:.3f}{unit}"
    assert parse_time(text, 1e9) == pytest.approx(1e9 - float(f"{amount:.3f}") * seconds)


@given(
    st.from_regex(r"[a-z][a-z0-9_]{0,8}(\.[a-z][a-z0-9_]{0,8}){0,2}", fullmatch=True),
    st.sampled_from(["=", "!=", "<", "<=", ">", ">="]),
    st.one_of(st.integers(-(10**6), 10**6), st.floats(-1e6, 1e6, allow_nan=False), st.booleans()),
)
def test_conditions_round_trip_property(field, op, value):
    c = parse_condition(f"{field}{op}{json.dumps(value)}")
    assert (c.field, c.op, c.value) == (field, op, _as_written(value))
    sql, params = c.sql()
    conn = sqlite3.connect(":memory:")
    register_functions(conn)
    row = conn.execute(f"SELECT {sql} FROM (SELECT ? AS config)", [*params, json.dumps({})])
    assert row.fetchone() is not None


def test_resolve_every_form(store, pipeline):
    rref = pipeline.eval
    assert resolve(store, rref) == rref
    assert resolve(store, rref.split(":")[1][:12]) == rref
    assert resolve(store, "rref:" + rref.split(":")[1][:12]) == rref
    assert resolve(store, store.rref_path(rref)) == rref
    assert resolve(store, store.dref_path(pipeline.dref(rref))) == pipeline.dref(rref)
    assert resolve(store, "eval") == pipeline.dref(rref)
    store.pin("eval", pipeline.data)  # a pin wins over a derivation name
    assert resolve(store, "eval") == pipeline.data
    with pytest.raises(AmbiguousReferenceError) as e:
        resolve(store, "train")
    assert len(e.value.candidates) == 3
    with pytest.raises(UnknownReferenceError):
        resolve(store, mkrref("0" * 32, "1" * 32, "x"))
    with pytest.raises(UnknownReferenceError):
        resolve(store, "dref:" + "f" * 10)
    with pytest.raises(InvalidReferenceError):
        resolve(store, "!!")


def _same_output(seed, r):
    """A derivation whose output does not depend on its config: runs of two seeds share <R>."""

    def real(b):
        with open(os.path.join(build_outpath(b), "out.txt"), "w") as f:
            f.write("diverged\n")

    return mkdrv(
        {"name": "twin", "seed": seed, "out": [selfref, "out.txt"]},
        match_only(),
        build_wrapper(real),
        r,
    )


def test_runs_with_identical_outputs_are_told_apart_by_their_derivation(store):
    a, b = (realize1(instantiate(_same_output, seed, S=store.settings)) for seed in (1, 2))
    rhash = a.split(":")[1].split("-")[0]
    assert b.split(":")[1].startswith(rhash + "-") and a != b
    for text in (rhash[:8], rhash, "rref:" + rhash):
        with pytest.raises(AmbiguousReferenceError) as e:
            resolve(store, text)
        assert sorted(e.value.candidates) == sorted([a, b])
        # The message lists each candidate in a short form that resolve accepts.
        listed = [line.split()[0] for line in str(e.value).splitlines()[1:3]]
        assert sorted(resolve(store, short) for short in listed) == sorted([a, b])
        assert "a prefix of its derivation's hash" in str(e.value)
    for rref in (a, b):
        dhash = rref.split("-")[1]
        for text in (
            f"{rhash[:4]}-{dhash[:1]}" if a.split("-")[1][0] != b.split("-")[1][0] else None,
            f"{rhash[:8]}-{dhash[:8]}",
            f"{rhash}-{dhash}",
            f"rref:{rhash}-{dhash[:6]}",
        ):
            if text is not None:
                assert resolve(store, text) == rref
    assert ok(store.root, "show", f"{rhash[:8]}-{b.split('-')[1][:8]}").startswith(b + "\n")
    with pytest.raises(UnknownReferenceError):
        resolve(store, f"rref:{rhash}-00000000")
    with pytest.raises(InvalidReferenceError, match="one hash"):
        resolve(store, f"dref:{rhash[:8]}-{a.split('-')[1][:4]}")
    # A derivation named like the short form is not silently shadowed.
    short = f"{rhash[:8]}-{a.split('-')[1][:8]}"
    store.catalogue.add_derivations(
        [NewDerivation(mkdref("c" * 32, short), short, json.dumps({"name": short}), [])]
    )
    with pytest.raises(AmbiguousReferenceError, match="the name of"):
        resolve(store, short)


def test_resolve_lists_at_most_ten_candidates(store):
    store.catalogue.add_derivations(
        [
            NewDerivation(mkdref(f"beef{i:028x}", "many"), "many", '{"name":"many"}', [])
            for i in range(15)
        ]
    )
    with pytest.raises(AmbiguousReferenceError, match=r"and more") as e:
        resolve(store, "beef")
    assert len(e.value.candidates) == 10
    assert resolve(store, f"beef{3:028x}") == mkdref(f"beef{3:028x}", "many")


def test_graph_functions(store, pipeline):
    cat = store.catalogue
    assert neighbours(cat, pipeline.eval) == [pipeline.train[0.01]]
    assert closure(cat, [pipeline.eval]) == sorted([pipeline.train[0.01], pipeline.data])
    assert sorted(closure(cat, [pipeline.data], reverse=True)) == sorted(
        [*pipeline.train.values(), pipeline.eval]
    )
    assert label(pipeline.data) == f"data {pipeline.data[5:13]}"
    assert tree_lines(cat, pipeline.data)[1:] == []
    text = dot(cat, [pipeline.eval])
    assert text.count("->") == 2
    with pytest.raises(ValueError):
        dot(cat, [pipeline.eval, pipeline.dref(pipeline.eval)])


def _chain(S, n: int):
    """A pipeline of `n` stages, each depending on the one before."""

    def stages(r):
        prev = None
        for i in range(n):
            config = {"name": f"s{i}"} if prev is None else {"name": f"s{i}", "prev": prev}
            prev = mkdrv(config, match_only(), build_wrapper(lambda b: None), r)
        return prev

    return instantiate(stages, S=S)


@pytest.mark.slow
def test_deep_chains_are_walked_without_recursion(S):
    top = realize1(_chain(S, 1100))
    first = Store.open(S.root).catalogue.column("SELECT rref FROM history WHERE name = 's0'")[0]
    tree = ok(S.root, "deps", top, "--tree")
    assert tree.count("\n") == 1100
    tree = ok(S.root, "referrers", first, "--tree")
    assert tree.count("\n") == 1100
    ok(S.root, "deps", rref2dref(top), "--tree")
    report = reindex(S.root)
    assert (report.derivations, report.realizations, report.skipped) == (1100, 1100, [])


def test_tree_marks_repeated_subtrees(S, store):
    """A diamond: top uses left and right, both use base; base's subtree is drawn once."""
    deps = {
        "base": [],
        "mid": ["base"],
        "left": ["mid"],
        "right": ["mid"],
        "top": ["left", "right"],
    }
    drefs: dict[str, DRef] = {}
    for name, parents in deps.items():
        d = mkdref(f"{len(drefs):032x}", name)
        drefs[name] = d
        store.catalogue.add_derivations(
            [NewDerivation(d, name, json.dumps({"name": name}), [drefs[p] for p in parents])]
        )
    lines = tree_lines(store.catalogue, drefs["top"])
    assert sum("mid" in ln for ln in lines) == 2
    assert sum("base" in ln for ln in lines) == 1
    assert any(ln.endswith("(see above)") for ln in lines)


def test_describe(store, pipeline):
    info = describe(store, pipeline.train[0.1])
    assert info["config"]["lr"] == 0.1
    assert [f["path"] for f in info["files"]] == ["logs/", "logs/loss.txt", "model.txt"]
    d = describe(store, pipeline.dref(pipeline.data))
    assert [r["rref"] for r in d["realizations"]] == [pipeline.data]
    assert len(d["referrers"]) == 3 and d["builds"][0]["status"] == "succeeded"


def test_open_view_is_read_only(store, pipeline, tmp_path):
    view = open_view(store.root)
    assert isinstance(view.catalogue, ReadOnlyCatalogue)
    assert history(view) == history(store)
    with pytest.raises(QueryError, match="read-only"):
        run_sql(view.catalogue, "DELETE FROM realizations")
    with pytest.raises(QueryError, match="not allowed"):
        run_sql(view.catalogue, f"ATTACH '{tmp_path}/x.db' AS x")
    assert not os.path.exists(tmp_path / "x.db")
    with pytest.raises(sqlite3.DatabaseError):
        view.catalogue.conn.execute(
            "INSERT INTO pins (name, dref, created) VALUES ('x', ?, 0)",
            (pipeline.dref(pipeline.data),),
        )
    view.catalogue.close()
    with pytest.raises(StoreNotFoundError):
        open_view(str(tmp_path / "nothing"))


# -- staying fast on big stores ----------------------------------------------------------------


def _plan(catalogue, sql: str, params) -> str:
    return " | ".join(row[-1] for row in catalogue.query(f"EXPLAIN QUERY PLAN {sql}", params))


def test_filtered_history_uses_the_indexes(store):
    """The name filter is an index lookup, then one index lookup per derivation: no scan of
    realizations whatever the store's size."""
    sql = "SELECT rref FROM history WHERE name = ? AND json_extract(config, '$.lr') < ?"
    plan = _plan(store.catalogue, sql, ("train", 1e-3))
    assert "derivations_by_name" in plan, plan
    assert "SCAN r" not in plan and "SCAN realizations" not in plan, plan


@pytest.fixture
def big(store):
    """5,000 realizations inserted directly (3/4 train, 1/4 eval), one finishing per hour."""
    now = time.time()
    drefs = [mkdref(f"{i:032x}", "train" if i % 4 else "eval") for i in range(5000)]
    store.catalogue.add_derivations(
        [
            NewDerivation(
                d,
                d.rsplit("-", 1)[1],
                json.dumps({"lr": 10 ** -(i % 6), "name": d.rsplit("-", 1)[1]}),
                [],
            )
            for i, d in enumerate(drefs)
        ]
    )
    store.catalogue.add_realizations(
        [
            NewRealization(
                RRef(mkrref(f"{i:032x}", d.split(":")[1][:32], d.rsplit("-", 1)[1])),
                d,
                "{}",
                "h",
                [],
                100 + i,
                1,
                now - 3600 * i - 1.5,
                now - 3600 * i,
            )
            for i, d in enumerate(drefs)
        ],
        None,
    )
    return store, now


def test_history_on_a_store_of_thousands(big):
    """The filtered history stays well under a second (the 50,000-realization figure is
    measured by tools/bench_history.py)."""
    store, _ = big
    t0 = time.perf_counter()
    rows = history(store, name="train", config=["lr<1e-3"], since="30d", fields=["lr"])
    elapsed = time.perf_counter() - t0
    assert len(rows) == sum(1 for i in range(24 * 30) if i % 4 and i % 6 > 3)
    assert elapsed < 1.0, elapsed


@pytest.mark.parametrize(
    ("name", "days", "time_first"),
    [("train", 2, True), ("eval", 365, False), ("t*", 1, True), ("nothing", 1, False)],
)
def test_history_starts_from_the_smaller_index(big, name, days, time_first):
    """A common name with a short window starts from the time index, a rare name from
    the name index; either way the answer is the same."""
    from lightstore.query.history import _time_window_is_smaller

    store, now = big
    since = now - days * 86400
    assert _time_window_is_smaller(store.catalogue, name, since, None) is time_first
    rows = history(store, name=name, since=since)
    expected = sorted(
        (
            r
            for r in history(store)
            if r["stopped"] >= since and fnmatch.fnmatchcase(r["name"], name)
        ),
        key=lambda r: (r["stopped"], r["rref"]),
    )
    assert rows == expected
    newest = history(store, name=name, since=since, limit=3)
    assert newest == expected[-3:]


def test_pipeline_helper_rebuilds_nothing(S):
    first = build_pipeline(S)
    assert build_pipeline(S) == first
    assert isinstance(first, Pipeline)


def test_progress_is_silent_off_a_terminal_and_draws_on_one(monkeypatch, capsys):
    from lightstore.cli import output

    with output.progress("work") as update:
        assert update is None
    monkeypatch.setattr(output, "stdout_is_terminal", lambda: True)
    seen = []
    with output.progress("work") as update:
        assert update is not None
        for i in range(3):
            update(i + 1, 3, "item")  # extra arguments (the item) are accepted
            seen.append(i)
    assert seen == [0, 1, 2]

    def takes_progress(x, progress=None):
        return (x, progress is not None)

    assert output.call_with_progress(takes_progress, "work", 1) == (1, True)
    assert output.call_with_progress(lambda x: x, "work", 2) == 2


def test_derivations_without_totals(store, pipeline):
    full = derivations(store, "train")
    bare = derivations(store, "train", totals=False)
    assert [r["dref"] for r in bare] == [r["dref"] for r in full]
    assert set(bare[0]) == {"dref", "name", "created"}


# -- short references ----------------------------------------------------------------------------


def _same_output(k, r):
    """Runs of different derivations with identical outputs: they share the hash <R>."""

    def real(b):
        with open(os.path.join(build_outpath(b), "out.txt"), "w") as f:
            f.write("the same\n")

    return mkdrv({"name": "same", "k": k}, match_only(), build_wrapper(real), r)


def _uses_them(r):
    deps = [_same_output(k, r) for k in range(4)]

    def real(b):
        with open(os.path.join(build_outpath(b), "out.txt"), "w") as f:
            f.write("top\n")

    return mkdrv({"name": "top", "deps": deps}, match_only(), build_wrapper(real), r)


def test_short_references_in_tables_and_trees_designate_one_object(S):
    top = realize1(instantiate(_uses_them, S=S))
    root = S.root
    view = open_view(root)
    runs = list(realizations(view, "same"))
    assert len({r["rref"].split(":")[1][:8] for r in runs}) == 1  # one <R8> for four runs
    table = ok(root, "ls", "-r", "-n", "same").splitlines()[2:]
    shown = [line.split()[0] for line in table]
    assert len(set(shown)) == 4
    for short, row in zip(shown, runs, strict=True):
        assert resolve(view, short) == row["rref"], short
    tree = ok(root, "deps", "--tree", top)
    for row in runs:
        (short,) = [t for t in tree.split() if "-" in t and resolve(view, t) == row["rref"]]
    dot_text = ok(root, "graph", top)
    assert all(resolve(view, s) for s in re.findall(r"same\\n([0-9a-f-]+)", dot_text))


def test_short_references_tell_prefixes_shared_across_kinds_apart(store):
    """A derivation's 8 digits shared with another derivation, and with a realization."""
    from lightstore.query.shortrefs import short_refs

    drefs = [DRef(mkdref("aaaaaaaa" + tail * 24, "x")) for tail in "01"]
    store.catalogue.add_derivations([NewDerivation(d, "x", "{}", []) for d in drefs])
    rref = RRef(mkrref("aaaaaaaa" + "2" * 24, drefs[0].split(":")[1][:32], "x"))
    store.catalogue.add_realizations(
        [NewRealization(rref, drefs[0], "{}", "h", [], 1, 1, 1.0, 2.0)], None
    )
    shorts = short_refs(store, [*drefs, rref])
    assert shorts == {drefs[0]: "aaaaaaaa0", drefs[1]: "aaaaaaaa1", rref: "aaaaaaaa-aaaa"}
    assert all(resolve(store, s) == r for r, s in shorts.items())


def _parent_and_child(r):
    def build(b):
        with open(os.path.join(build_outpath(b), "ok"), "w") as f:
            f.write("ok")

    p = mkdrv(mkconfig({"name": "p"}), match_only(), build_wrapper(build), r)
    return mkdrv(mkconfig({"name": "c", "p": p}), match_only(), build_wrapper(build), r)


def test_a_pin_named_like_a_hash_prefix_is_never_silently_shadowed(tmp_path):
    # `pin 1a2b REF` must not let `cat 1a2b ...` / `resolve("1a2b")` answer with whatever
    # object's hash starts with 1a2b instead of the pin, nor the other way round.
    store = Store.open(str(tmp_path / "s"), create=True)
    child = realize1(instantiate(_parent_and_child, S=store.settings))
    parent = next(iter(store.catalogue.rrefdeps([child])))
    prefix = child[len("rref:") :][:6]
    store.pin(prefix, parent)
    with pytest.raises(AmbiguousReferenceError, match="pin"):
        resolve(store, prefix)
    assert resolve(store, child) == child
