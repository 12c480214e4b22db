"""Points in time users give (`--since`, `--until`, gc's keep-since, forget's
`--older-than`): one parser for all of them, which refuses anything that is not a
finite time instead of letting SQL read it as "nothing" or "everything"."""

from __future__ import annotations

import math
from functools import partial

import pytest
from helpers import assert_unchanged, fails, snapshot
from hypothesis import given
from hypothesis import strategies as st

from lightstore.facade import Store
from lightstore.foundation.errors import QueryError
from lightstore.foundation.times import parse_time, parse_timeout
from lightstore.maintenance.verify import verify
from lightstore.query import derivations, history, realizations

NOW = 1_700_000_000.0
NOT_FINITE_TEXTS = [
    "nan",
    " NaN ",
    "inf",
    "-inf",
    "+Infinity",
    "1e400",
    "-1e400",
    "9" * 400,
    "9" * 400 + "d",
    "9" * 320 + "w",
]
NOT_FINITE_NUMBERS = [math.nan, math.inf, -math.inf, 10**400, -(10**400)]


@given(st.text())
def test_any_text_is_a_finite_time_or_refused(text):
    try:
        seconds = parse_time(text, NOW)
    except QueryError:
        return
    assert isinstance(seconds, float) and math.isfinite(seconds)


@given(st.floats() | st.integers(min_value=-(10**400), max_value=10**400))
def test_numbers_are_taken_as_unix_seconds_when_finite(value):
    try:
        expected = float(value)
    except OverflowError:
        expected = math.inf
    if math.isfinite(expected):
        assert parse_time(value) == expected
        assert parse_time(repr(float(value)), NOW) == expected
    else:
        with pytest.raises(QueryError, match="finite"):
            parse_time(value)


@pytest.mark.parametrize(
    "bad", NOT_FINITE_TEXTS + NOT_FINITE_NUMBERS + [True, None, [1]], ids=lambda v: repr(v)[:24]
)
def test_not_finite_or_not_a_time_is_refused(bad):
    with pytest.raises(QueryError):
        parse_time(bad, NOW)


def test_every_time_input_of_the_library_refuses_non_finite_values(pipeline):
    store = Store.open(pipeline.root)
    present = sorted(r["rref"] for r in realizations(store))
    assert present
    for bad in NOT_FINITE_TEXTS[:6] + NOT_FINITE_NUMBERS:
        with pytest.raises(QueryError):
            store.gc(keep_since=bad)  # once read as "keep nothing": it collected everything
        with pytest.raises(QueryError):
            store.gc(dry_run=True, keep_since=bad)
        with pytest.raises(QueryError):
            store.forget(before=bad)
        for query in (history, derivations, realizations):
            with pytest.raises(QueryError):
                query(store, since=bad)
            with pytest.raises(QueryError):
                query(store, until=bad)
    assert sorted(r["rref"] for r in realizations(store)) == present


@pytest.mark.parametrize(
    "args",
    [
        ["ls", "--since", "nan"],
        ["ls", "-r", "--since", "inf"],
        ["history", "--until", "-inf"],
        ["history", "--since", "1e400"],
        ["gc", "--keep-since", "nan", "--yes"],
        ["gc", "--keep-since", "inf", "--dry-run"],
        ["forget", "--older-than", "nan"],
    ],
)
def test_the_command_line_refuses_non_finite_times_as_bad_input(pipeline, args):
    before = snapshot(pipeline.root)
    result = fails(2, pipeline.root, *args)
    assert "finite" in result.output
    assert_unchanged(pipeline.root, before)


MAX_FLOAT = 1.7976931348623157e308


@given(st.floats() | st.integers(min_value=-(10**400), max_value=10**400) | st.none())
def test_timeouts_are_a_number_of_seconds_or_no_limit(value):
    try:
        seconds = parse_timeout(value)
    except QueryError:
        assert value != value or value < 0
        return
    if value is None or value == float("inf") or (isinstance(value, int) and value > MAX_FLOAT):
        assert seconds is None
    else:
        assert seconds == float(value) and seconds >= 0


def test_a_nan_timeout_is_refused_not_read_as_no_limit(pipeline):
    store = Store.open(pipeline.root)
    for call in (store.gc, partial(verify, store)):
        for bad in (math.nan, -1, -(10**400), "10"):
            with pytest.raises(QueryError, match="timeout"):
                call(timeout=bad)
    for args in (["gc", "--yes"], ["verify"]):
        assert "timeout" in fails(2, pipeline.root, *args, "--timeout", "nan").output
