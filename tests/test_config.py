"""Configs: validation, canonical JSON, dependencies, promises, and hash properties."""

from __future__ import annotations

import enum
import json
import math
import random
from typing import Any

import pytest
from helpers import ESCAPING_TAILS
from hypothesis import assume, given
from hypothesis import strategies as st

from lightstore import build_wrapper, instantiate, match_only, mkdrv
from lightstore.foundation.config import (
    DEFAULT_NAME,
    MAX_CONFIG_DEPTH,
    Config,
    canonical_json,
    cfgdict,
    cfgname,
    config_deps,
    config_promises,
    mkconfig,
)
from lightstore.foundation.config import (
    replace_selfrefs as resolve_selfrefs,
)
from lightstore.foundation.errors import InvalidConfigError
from lightstore.foundation.hashing import config_hash
from lightstore.foundation.refs import Path, RRef, isdref, mkdref, mkrref, selfref

D1 = mkdref("1" * 32, "one")
D2 = mkdref("2" * 32, "two")
R1 = mkrref("a" * 32, "1" * 32, "one")


# -- strategies ----------------------------------------------------------------------

json_leaves = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
)
json_values = st.recursive(
    json_leaves,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=8,
)
# `name` must match a pattern; keep it out of generated configs.
config_keys = st.text(max_size=8).filter(lambda k: k != "name")
configs = st.dictionaries(config_keys, json_values, max_size=5)


def shuffled(value: Any, rnd: random.Random) -> Any:
    """The same JSON value with every dict rebuilt in a random insertion order."""
    if isinstance(value, dict):
        keys = list(value)
        rnd.shuffle(keys)
        return {k: shuffled(value[k], rnd) for k in keys}
    if isinstance(value, list):
        return [shuffled(v, rnd) for v in value]
    return value


# -- accepted configs ----------------------------------------------------------------


def test_simple_config():
    d = {"name": "train", "lr": 0.001, "layers": [64, 32], "opts": {"a": None, "b": True}}
    c = mkconfig(d)
    assert isinstance(c, Config)
    assert c.val == d
    assert c.name == "train"
    assert cfgname(c) == "train"


def test_default_name():
    c = mkconfig({"x": 1})
    assert c.name == DEFAULT_NAME == "unnamed"
    assert "name" not in c.val


def test_empty_config():
    assert mkconfig({}).val == {}


def test_mkconfig_copies_its_input():
    d = {"a": [1, {"b": 2}]}
    c = mkconfig(d)
    d["a"][1]["b"] = 3
    d["a"].append(4)
    assert c.val == {"a": [1, {"b": 2}]}


def test_mkconfig_of_config_is_identity():
    c = mkconfig({"a": 1})
    assert mkconfig(c) is c


def test_cfgdict_is_a_deep_copy():
    c = mkconfig({"a": [1, 2]})
    d = cfgdict(c)
    d["a"].append(3)
    assert c.val == {"a": [1, 2]}
    assert cfgdict({"x": [1]}) == {"x": [1]}


def test_subclasses_of_json_types_become_plain():
    class Color(enum.IntEnum):
        RED = 1

    class MyFloat(float):
        pass

    c = mkconfig({"dep": D1, "p": Path("/x"), "c": Color.RED, "f": MyFloat(1.5), "nested": [D2]})
    assert c.val == {"dep": str(D1), "p": "/x", "c": 1, "f": 1.5, "nested": [str(D2)]}
    assert type(c.val["dep"]) is str
    assert type(c.val["p"]) is str
    assert type(c.val["c"]) is int
    assert type(c.val["f"]) is float
    assert type(c.val["nested"][0]) is str
    assert canonical_json(c.val) == canonical_json(
        {"dep": str(D1), "p": "/x", "c": 1, "f": 1.5, "nested": [str(D2)]}
    )


def test_str_subclass_keys_are_accepted_as_strings():
    # A DRef (or any str subclass) used as a key is a str: it must be accepted
    # like a str subclass used as a value, not reported as "not a string".
    c = mkconfig({"deps": {D1: 1}})
    assert c.val == {"deps": {str(D1): 1}}
    assert all(type(k) is str for k in c.val["deps"])


def test_selfref_and_refpaths_are_accepted():
    c = mkconfig({"out": [selfref, "out.txt"], "inp": [D1, "data.csv"]})
    assert c.val["out"] == [selfref, "out.txt"]


# -- refused configs -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "field", "hint"),
    [
        ({"a": (1, 2)}, "config['a']", "tuple"),
        ({"a": b"xx"}, "config['a']", "bytes"),
        ({"a": bytearray(b"xx")}, "config['a']", "bytearray"),
        ({"a": {1, 2}}, "config['a']", "set"),
        ({"a": frozenset()}, "config['a']", "frozenset"),
        ({"a": float("nan")}, "config['a']", "nan"),
        ({"a": float("inf")}, "config['a']", "inf"),
        ({"a": -math.inf}, "config['a']", "inf"),
        ({"a": object()}, "config['a']", "object"),
        ({"a": 1 + 2j}, "config['a']", "complex"),
        ({"a": [1, [2, (3,)]]}, "config['a'][1][1]", "tuple"),
        ({"a": {"b": {"c": b""}}}, "config['a']['b']['c']", "bytes"),
        ({"a": [0, {"b": float("nan")}]}, "config['a'][1]['b']", "nan"),
        ({1: "x"}, "config", "1"),
        ({None: "x"}, "config", "None"),
        ({("a",): "x"}, "config", "('a',)"),
        ({"a": {2.5: "x"}}, "config['a']", "2.5"),
        ({"a": R1}, "config['a']", R1),
        ({"a": [1, [R1]]}, "config['a'][1][0]", R1),
        ({"a": {"b": RRef(R1)}}, "config['a']['b']", R1),
    ],
)
def test_refused_values_name_the_field(config, field, hint):
    with pytest.raises(InvalidConfigError) as info:
        mkconfig(config)
    message = str(info.value)
    assert field in message
    assert hint in message


def test_tuple_error_suggests_a_list():
    with pytest.raises(InvalidConfigError, match="use a list"):
        mkconfig({"shape": (3, 4)})


def test_rref_error_suggests_a_dref():
    with pytest.raises(InvalidConfigError, match="DRef"):
        mkconfig({"x": R1})


def test_rref_as_key_is_refused():
    with pytest.raises(InvalidConfigError, match="realization"):
        mkconfig({"m": {str(R1): 1}})


@pytest.mark.parametrize("value", ["\ud800", "a\udfffb"])
def test_lone_surrogates_are_refused(value):
    # Not encodable as UTF-8: the config could be neither hashed nor stored.
    with pytest.raises(InvalidConfigError):
        mkconfig({"a": value})
    with pytest.raises(InvalidConfigError):
        mkconfig({value: 1})


@pytest.mark.parametrize("name", ["", "a b", "a/b", "..", "x.y", "é", "a\n\n", 1.5, ["a"]])
def test_bad_name_is_refused(name):
    with pytest.raises(InvalidConfigError, match="name"):
        mkconfig({"name": name})


@pytest.mark.parametrize("value", [None, [1], "x", 5, ({"a": 1},)])
def test_non_dict_config_is_refused(value):
    with pytest.raises(InvalidConfigError, match="dict"):
        mkconfig(value)


def test_invalid_config_error_is_value_error():
    with pytest.raises(ValueError):
        mkconfig({"a": (1,)})


def test_deeply_nested_configs_are_refused():
    deep: list = []
    for _ in range(5000):
        deep = [deep]
    with pytest.raises(InvalidConfigError, match="nested"):
        mkconfig({"name": "deep", "x": deep})
    loop: list = []
    loop.append(loop)
    with pytest.raises(InvalidConfigError, match="nested"):
        mkconfig({"x": loop})
    fine: list = []
    for _ in range(MAX_CONFIG_DEPTH - 2):
        fine = [fine]
    mkconfig({"x": fine})


def test_huge_integers_in_configs_are_refused():
    with pytest.raises(InvalidConfigError, match="digits"):
        mkconfig({"x": 10**5000})
    with pytest.raises(InvalidConfigError, match="digits"):
        mkconfig({"x": [-(10**4300)]})
    mkconfig({"x": 10**3000})


# -- canonical JSON --------------------------------------------------------------------


def test_canonical_json_sorts_keys_with_fixed_separators():
    assert canonical_json({"b": 1, "a": [1, 2], "c": {"z": None, "y": "é"}}) == (
        '{"a":[1,2],"b":1,"c":{"y":"é","z":null}}'
    )


def test_canonical_json_refuses_nan():
    with pytest.raises(ValueError):
        canonical_json({"a": float("nan")})


@given(configs)
def test_canonical_json_round_trips(d):
    c = mkconfig(d)
    assert c.val == d
    assert json.loads(canonical_json(c.val)) == d


@given(configs, st.randoms(use_true_random=False))
def test_canonical_json_ignores_key_order(d, rnd):
    assert canonical_json(shuffled(d, rnd)) == canonical_json(d)


# -- config hash properties -------------------------------------------------------------


@given(configs, st.randoms(use_true_random=False))
def test_config_hash_ignores_key_order(d, rnd):
    assert config_hash(mkconfig(shuffled(d, rnd)).val) == config_hash(mkconfig(d).val)


@given(configs)
def test_equal_configs_have_equal_hashes(d):
    copy = json.loads(json.dumps(d))
    assert config_hash(mkconfig(copy).val) == config_hash(mkconfig(d).val)


@given(configs, config_keys, json_values)
def test_added_key_changes_hash(d, key, value):
    assume(key not in d)
    assert config_hash({**d, key: value}) != config_hash(d)


@given(configs, config_keys, json_values, json_values)
def test_changed_leaf_changes_hash(d, key, v1, v2):
    # Compare the canonical texts rather than with ==, so that 1 vs 1.0 vs True
    # count as different values (as they do in JSON).
    assume(canonical_json(v1) != canonical_json(v2))
    a = {**d, key: {"deep": [v1]}}
    b = {**d, key: {"deep": [v2]}}
    assert config_hash(a) != config_hash(b)


@given(configs)
def test_config_hash_is_32_lowercase_hex(d):
    h = config_hash(d)
    assert len(h) == 32
    assert set(h) <= set("0123456789abcdef")


def test_name_is_part_of_the_hash():
    assert config_hash({"name": "a", "x": 1}) != config_hash({"name": "b", "x": 1})


def test_int_float_bool_are_distinct():
    hashes = {config_hash({"a": v}) for v in (1, 1.0, True, "1", [1])}
    assert len(hashes) == 5


# -- dependencies and promises -----------------------------------------------------------


def test_config_deps_finds_drefs_anywhere_sorted_unique():
    c = mkconfig(
        {
            "b": D2,
            "nested": {"x": [D1, [D1, "data.csv"]]},
            "refpath": [D2, "a", "b"],
            "text": "not a dref",
            "near": "dref:nothex-x",
        }
    )
    deps = config_deps(c)
    assert deps == sorted({D1, D2})
    assert all(isdref(d) for d in deps)


def test_config_deps_empty():
    assert config_deps(mkconfig({"a": 1, "out": [selfref, "f"]})) == []


def test_config_promises():
    c = mkconfig(
        {
            "out": [selfref, "out.txt"],
            "more": {"model": [selfref, "models", "best.pt"]},
            "list": [[selfref, "a"], [selfref, "b", "c"]],
            "not_a_promise": [selfref, 1],
            "refpath": [D1, "x"],
        }
    )
    assert sorted(config_promises(c)) == sorted(
        [["out.txt"], ["models", "best.pt"], ["a"], ["b", "c"]]
    )


def test_config_promises_empty():
    assert config_promises(mkconfig({"a": [1, 2], "s": selfref})) == []


def test_resolve_selfrefs():
    value = {
        "out": [selfref, "out.txt"],
        "deep": [{"m": [selfref, "a", "b"]}],
        "other": [D2, "x"],
        "plain": selfref,
    }
    before = json.loads(json.dumps(value))
    resolved = resolve_selfrefs(value, D1)
    assert resolved == {
        "out": [D1, "out.txt"],
        "deep": [{"m": [D1, "a", "b"]}],
        "other": [D2, "x"],
        "plain": selfref,
    }
    assert value == before  # the input is not mutated


@given(configs)
def test_resolve_selfrefs_without_promises_is_identity(d):
    assert resolve_selfrefs(d, D1) == d


@pytest.mark.parametrize("tail", ESCAPING_TAILS)
def test_promises_and_refpaths_must_stay_inside(store, tail):
    with pytest.raises(InvalidConfigError):
        mkconfig({"name": "p", "out": [selfref, *tail]})

    def stage(r):
        dep = mkdrv({"name": "dep"}, match_only(), build_wrapper(lambda b: None), r)
        return mkdrv(
            {"name": "user", "in": [dep, *tail]}, match_only(), build_wrapper(lambda b: None), r
        )

    with pytest.raises(InvalidConfigError):
        instantiate(stage, S=store.settings)


def test_good_relative_paths_are_accepted():
    assert mkconfig({"out": [selfref, "sub/f.txt"], "o2": [selfref, ".", "f"]}).promises
