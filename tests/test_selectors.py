"""Selectors (`train@latest`, `train@all`, `train[lr=0.01]`): parsing and resolving."""

from __future__ import annotations

import json
import pathlib

import pytest
from helpers import LRS, fails, ok
from hypothesis import given
from hypothesis import strategies as st

from lightstore.cli.context import EXIT_BAD_INPUT, EXIT_NOT_FOUND
from lightstore.foundation.errors import (
    AmbiguousReferenceError,
    InvalidReferenceError,
    InvalidSelectorError,
    UnknownReferenceError,
)
from lightstore.query import resolve, resolve_all
from lightstore.query.filters import ConfigCondition
from lightstore.query.selectors import Selector, is_selector, parse_selector


def test_parse_forms():
    assert parse_selector("train@latest") == Selector("train", (), "latest")
    assert parse_selector("train@all") == Selector("train", (), "all")
    assert parse_selector("train[lr=0.01]") == Selector(
        "train", (ConfigCondition("lr", "=", 0.01),)
    )
    both = parse_selector("train@lr=0.01@seed=1@latest")
    assert both == parse_selector("train[lr=0.01, seed=1]@latest")
    assert both.conditions[1] == ConfigCondition("seed", "=", 1)
    # Nested keys, strings, quoted separators, lists, null.
    sel = parse_selector('eval[model.depth>=4,opt=adam,tag="a,b@c]",layers=[1,2],x=null]')
    assert [c.value for c in sel.conditions] == [4, "adam", "a,b@c]", [1, 2], None]
    assert parse_selector('t[s="1"]').conditions[0].value == "1"  # text, not a number
    assert not is_selector("train") and is_selector("train@all")


@pytest.mark.parametrize(
    "text, why",
    [
        ("@all", "no name"),
        ("train@", "nothing after"),
        ("train[]", "empty"),
        ("train[lr=1", "not closed"),
        ("train]", "without"),
        ("train[lr=1]x", "unexpected"),
        ("train@latest@all", "must come last"),
        ("train@newest", "unknown selector @newest"),
        ("train[lr<]", "invalid config condition"),
        ('train[tag="open]', "not closed"),
        ("train[lr=1]@latest[x=2]", "must come last"),
    ],
)
def test_bad_selectors_say_why(text, why):
    with pytest.raises(InvalidSelectorError, match="invalid selector") as e:
        parse_selector(text)
    assert why in str(e.value) and e.value.text == text
    assert isinstance(e.value, InvalidReferenceError)


values = st.one_of(
    st.integers(-(10**9), 10**9),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
    st.none(),
    st.text(max_size=12),
    st.lists(st.integers(-5, 5), max_size=3),
)
conditions = st.builds(
    ConfigCondition,
    st.from_regex(r"[A-Za-z_][A-Za-z0-9_-]{0,6}(\.[A-Za-z0-9_-]{1,6}){0,2}", fullmatch=True),
    st.sampled_from(["=", "!=", "<", "<=", ">", ">="]),
    values,
).filter(lambda c: c.value is not None or c.op in ("=", "!="))
selectors = st.builds(
    Selector,
    st.from_regex(r"[A-Za-z0-9_-]{1,10}\*?", fullmatch=True),
    st.lists(conditions, max_size=3).map(tuple),
    st.sampled_from([None, "latest", "all"]),
)


@given(selectors)
def test_selectors_round_trip_property(sel):
    assert parse_selector(str(sel)) == sel


@given(st.text(alphabet='train@[]=,."<>!lr01 \\', max_size=24))
def test_parser_raises_only_selector_errors_property(text):
    try:
        sel = parse_selector(text)
    except InvalidSelectorError:
        return
    assert sel.base and parse_selector(str(sel)) == sel


def test_resolve_selectors(store, pipeline):
    train = pipeline.train
    newest = max(train.values(), key=lambda r: store.catalogue.build_times([r])[r])
    assert resolve(store, "train@latest") == newest
    assert resolve_all(store, ["train@all"]) == [train[lr] for lr in LRS]
    assert resolve(store, "train[lr=0.01]") == pipeline.dref(train[0.01])
    assert resolve(store, "train@lr=1e-2@latest") == train[0.01]  # 1e-2 is the number 0.01
    assert resolve_all(store, ["train[lr<0.05]"]) == [
        pipeline.dref(train[0.01]),
        pipeline.dref(train[0.001]),
    ]
    assert resolve(store, "tr*[lr=0.1]@all") == train[0.1]  # globs in the name
    # The base may be a pin or a hash prefix of a derivation.
    store.pin("best", pipeline.dref(train[0.1]))
    assert resolve(store, "best@latest") == train[0.1]
    assert resolve(store, pipeline.dref(train[0.001])[5:13] + "@all") == train[0.001]
    with pytest.raises(AmbiguousReferenceError, match=r"train\[lr<0.05\]@latest"):
        resolve(store, "train[lr<0.05]")
    with pytest.raises(AmbiguousReferenceError, match="train@latest"):
        resolve(store, "train")
    with pytest.raises(UnknownReferenceError, match=r"values of lr there: 0.001, 0.01, 0.1"):
        resolve(store, "train[lr=0.5]")
    with pytest.raises(UnknownReferenceError, match="values of lr there"):
        resolve(store, 'train[lr="0.1"]')  # the text "0.1" is not the number 0.1
    with pytest.raises(UnknownReferenceError, match="the field is missing"):
        resolve(store, "train[nope=1]")
    with pytest.raises(UnknownReferenceError, match="no derivation matches 'trian'"):
        resolve(store, "trian@latest")
    with pytest.raises(InvalidSelectorError, match="is a realization"):
        resolve(store, pipeline.eval + "@latest")


def test_selectors_on_the_command_line(pipeline):
    root = pipeline.root
    assert ok(root, "show", "train@lr=0.01@latest").startswith(pipeline.train[0.01])
    out = ok(root, "pack", f"{root}/../runs.zip", "train@all")
    assert "packed 3 realization(s)" in out
    assert json.loads(ok(root, "show", "--json", "train[lr=0.1]"))["config"]["lr"] == 0.1
    assert "train@latest" in fails(EXIT_BAD_INPUT, root, "show", "train").output
    assert "@latest, @all" in fails(EXIT_BAD_INPUT, root, "show", "train@last").output
    fails(EXIT_NOT_FOUND, root, "deps", "train[lr=7]")
    assert "train@latest" in ok(None, "--help")


def test_huge_selectors_are_refused_cleanly(store, pipeline):
    with pytest.raises(InvalidSelectorError, match="more than 64 conditions"):
        resolve(store, "train" + "@lr=1" * 65)
    with pytest.raises(InvalidSelectorError, match="longer than"):
        resolve(store, "train[" + "x" * 5000 + "=1]")
    assert resolve(store, "train" + "@lr=0.1" * 60) == pipeline.dref(pipeline.train[0.1])
    assert resolve(store, pathlib.Path(store.rref_path(pipeline.eval))) == pipeline.eval
