"""References: formats, round trips, refusal of malformed strings, and the names of
derivations and pins."""

from __future__ import annotations

import os

import pytest
from helpers import fails
from hypothesis import given
from hypothesis import strategies as st

from lightstore import build_wrapper, instantiate, match_only, mkdrv, mknode, realize1
from lightstore.cli.context import EXIT_BAD_INPUT
from lightstore.foundation.errors import InvalidConfigError, InvalidReferenceError, LightstoreError
from lightstore.foundation.refs import (
    HASH_LEN,
    MAX_NAME_LENGTH,
    DRef,
    RRef,
    isdref,
    isrefpath,
    isrref,
    isselfpath,
    mkdref,
    mkname,
    mkrref,
    parse_dref,
    parse_rref,
    rref2dref,
    selfref,
    undref,
    unrref,
)
from lightstore.maintenance import reindex

H1 = "0123456789abcdef" * 2
H2 = "fedcba9876543210" * 2
DREF = f"dref:{H1}-stage"
RREF = f"rref:{H2}-{H1}-stage"

hexes = st.text(alphabet="0123456789abcdef", min_size=HASH_LEN, max_size=HASH_LEN)
names = st.from_regex(r"[A-Za-z0-9_-]+", fullmatch=True)
# Characters that never occur in a well-formed reference after its 'xref:' prefix.
foreign = st.sampled_from([*"/.: \n\t\x00\\é*?", "..", "\u2028"])


# -- formats -----------------------------------------------------------------


def test_mkdref_format():
    d = mkdref(H1, "stage")
    assert d == DREF
    assert isdref(d) and type(d) is str  # DRef is a NewType: a plain str at run time


def test_mkrref_format():
    r = mkrref(H2, H1, "stage")
    assert r == RREF
    assert isrref(r)


def test_undref_unrref_split():
    assert undref(DREF) == (H1, "stage")
    assert unrref(RREF) == (H2, H1, "stage")


def test_rref2dref():
    d = rref2dref(RREF)
    assert d == DREF
    assert isdref(d)


def test_names_may_contain_dashes_and_underscores():
    d = mkdref(H1, "my-stage_2")
    assert undref(d) == (H1, "my-stage_2")
    r = mkrref(H2, H1, "a-b-c")
    assert unrref(r) == (H2, H1, "a-b-c")
    assert rref2dref(r) == mkdref(H1, "a-b-c")


def test_isdref_isrref_are_exclusive():
    assert isdref(DREF) and not isrref(DREF)
    assert isrref(RREF) and not isdref(RREF)


@pytest.mark.parametrize("value", [None, 1, b"dref:x", [DREF], (DREF,), {DREF: 1}])
def test_predicates_on_non_strings(value):
    assert not isdref(value)
    assert not isrref(value)


def test_parse_returns_the_checked_string():
    # DRef and RRef are NewTypes of str (as in Pylightnix): plain strings at run time.
    assert type(parse_dref(DREF)) is str and type(parse_rref(RREF)) is str
    assert parse_dref(DRef(DREF)) == DREF and parse_rref(RRef(RREF)) == RREF
    assert parse_dref(DREF) == DREF
    assert parse_rref(RREF) == RREF


# -- hypothesis round trips -----------------------------------------------------


@given(hexes, names)
def test_dref_round_trip(h, name):
    d = mkdref(h, name)
    assert isdref(d) and not isrref(d)
    assert undref(d) == (h, name)
    assert mkdref(*undref(d)) == d
    assert parse_dref(str(d)) == d


@given(hexes, hexes, names)
def test_rref_round_trip(r, h, name):
    ref = mkrref(r, h, name)
    assert isrref(ref) and not isdref(ref)
    assert unrref(ref) == (r, h, name)
    assert mkrref(*unrref(ref)) == ref
    assert parse_rref(str(ref)) == ref
    assert rref2dref(ref) == mkdref(h, name)


@given(hexes, hexes, names)
def test_refs_are_safe_path_components(r, h, name):
    # Store paths are built from the parts of references: no separators, no dot-dot.
    for part in (*undref(mkdref(h, name)), *unrref(mkrref(r, h, name))):
        assert os.sep not in part
        assert part not in (".", "..")


@given(hexes, names, st.data())
def test_dref_with_foreign_character_is_rejected(h, name, data):
    d = str(mkdref(h, name))
    pos = data.draw(st.integers(min_value=5, max_value=len(d)))
    bad = d[:pos] + data.draw(foreign) + d[pos:]
    assert not isdref(bad)
    with pytest.raises(InvalidReferenceError):
        parse_dref(bad)
    with pytest.raises(InvalidReferenceError):
        undref(bad)


@given(hexes, hexes, names, st.data())
def test_rref_with_foreign_character_is_rejected(r, h, name, data):
    ref = str(mkrref(r, h, name))
    pos = data.draw(st.integers(min_value=5, max_value=len(ref)))
    bad = ref[:pos] + data.draw(foreign) + ref[pos:]
    assert not isrref(bad)
    with pytest.raises(InvalidReferenceError):
        parse_rref(bad)
    with pytest.raises(InvalidReferenceError):
        unrref(bad)
    with pytest.raises(InvalidReferenceError):
        rref2dref(bad)


@given(hexes, names, st.integers(min_value=0, max_value=HASH_LEN - 1), st.sampled_from("0aF"))
def test_hash_part_of_wrong_length_is_rejected(h, name, pos, extra):
    longer = f"dref:{h[:pos]}{extra}{h[pos:]}-{name}"
    shorter = f"dref:{h[:pos]}{h[pos + 1 :]}-{name}"
    for bad in (longer, shorter):
        assert not isdref(bad)
        with pytest.raises(InvalidReferenceError):
            parse_dref(bad)


@given(st.text(max_size=80))
def test_parse_agrees_with_predicate(s):
    if isdref(s):
        assert parse_dref(s) == s
    else:
        with pytest.raises(InvalidReferenceError):
            parse_dref(s)
    if isrref(s):
        assert parse_rref(s) == s
    else:
        with pytest.raises(InvalidReferenceError):
            parse_rref(s)


# -- malformed references --------------------------------------------------------

MALFORMED_DREFS = [
    "",
    "dref:",
    f"dref:{H1}",
    f"dref:{H1}-",
    f"dref:{H1.upper()}-stage",
    f"dref:{H1[:-1]}-stage",
    f"dref:{H1}0-stage",
    f"dref:{H1}_stage",
    f"DREF:{H1}-stage",
    f"dref:{H1}-sta ge",
    f"dref:{H1}-sta/ge",
    f"dref:{H1}-../x",
    f"dref:{H1}-stage\n",
    f" dref:{H1}-stage",
    f"dref:{H1}-stage ",
    f"dref:{H1}-stäge",
    f"dref:{'g' * 32}-stage",
    f"xdref:{H1}-stage",
    RREF,
]

MALFORMED_RREFS = [
    "",
    "rref:",
    f"rref:{H2}-stage",
    f"rref:{H2}-{H1}",
    f"rref:{H2}-{H1}-",
    f"rref:{H2.upper()}-{H1}-stage",
    f"rref:{H2}{H1}-stage",
    f"rref:{H2}-{H1[:-1]}-stage",
    f"rref:{H2}-{H1}-stage\n",
    f"rref:{H2}-{H1}-a/b",
    f"RREF:{H2}-{H1}-stage",
    DREF,
]


@pytest.mark.parametrize("bad", MALFORMED_DREFS)
def test_malformed_drefs_are_rejected(bad):
    assert not isdref(bad)
    with pytest.raises(InvalidReferenceError):
        parse_dref(bad)
    with pytest.raises(InvalidReferenceError):
        undref(bad)


@pytest.mark.parametrize("bad", MALFORMED_RREFS)
def test_malformed_rrefs_are_rejected(bad):
    assert not isrref(bad)
    with pytest.raises(InvalidReferenceError):
        parse_rref(bad)
    with pytest.raises(InvalidReferenceError):
        unrref(bad)
    with pytest.raises(InvalidReferenceError):
        rref2dref(bad)


@pytest.mark.parametrize("value", [None, 42, b"dref:x", ["dref:x"]])
def test_non_strings_are_rejected(value):
    with pytest.raises(InvalidReferenceError):
        parse_dref(value)
    with pytest.raises(InvalidReferenceError):
        parse_rref(value)
    with pytest.raises(InvalidReferenceError):
        undref(value)
    with pytest.raises(InvalidReferenceError):
        unrref(value)


def test_parse_dref_of_rref_hints_rref2dref():
    with pytest.raises(InvalidReferenceError, match="rref2dref"):
        parse_dref(RREF)


def test_parse_rref_of_dref_hints_realize():
    with pytest.raises(InvalidReferenceError, match="realize"):
        parse_rref(DREF)


def test_error_message_names_the_value_and_format():
    with pytest.raises(InvalidReferenceError) as info:
        parse_dref("dref:nope")
    assert "dref:nope" in str(info.value)
    assert "dref:<32 hex>-<name>" in str(info.value)


def test_parse_checks_values_already_typed_as_refs():
    # DRef/RRef are plain str subclasses anyone can construct; parsing must not
    # trust the type alone, or a malformed string passes as well-formed.
    with pytest.raises(InvalidReferenceError):
        parse_dref(DRef("not-a-dref"))
    with pytest.raises(InvalidReferenceError):
        parse_rref(RRef("not-an-rref"))


@pytest.mark.parametrize(
    ("dhash", "name"),
    [
        (H1.upper(), "x"),
        (H1[:-1], "x"),
        (H1 + "0", "x"),
        ("z" * 32, "x"),
        (None, "x"),
    ],
)
def test_mkdref_rejects_bad_hash(dhash, name):
    with pytest.raises(InvalidReferenceError):
        mkdref(dhash, name)
    with pytest.raises(InvalidReferenceError):
        mkrref(H2, dhash, name)
    with pytest.raises(InvalidReferenceError):
        mkrref(dhash, H1, name)


@pytest.mark.parametrize(
    "name",
    ["", "a b", "a/b", "..", ".", "a.b", "é", "\n", "a\n\n", "\na", "a\r\n", "a:b", 1.5, [1]],
)
def test_mkname_rejects(name):
    with pytest.raises(InvalidConfigError, match="name"):
        mkname(name)
    with pytest.raises(InvalidConfigError):
        mkdref(H1, name)
    with pytest.raises(InvalidConfigError):
        mkrref(H2, H1, name)


@pytest.mark.parametrize("name", ["a", "A", "0", "_", "-", "train-model_v2", "x" * 200])
def test_mkname_accepts(name):
    assert mkname(name) == name


def test_errors_are_value_errors():
    assert issubclass(InvalidReferenceError, ValueError)
    assert issubclass(InvalidConfigError, ValueError)
    assert issubclass(InvalidReferenceError, LightstoreError)
    assert issubclass(InvalidConfigError, LightstoreError)


# -- ref paths ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ([DREF, "a", "b.txt"], True),
        ([DREF], True),
        ([DREF, 1], False),
        ([DREF, ["a"]], False),
        ([RREF, "a"], False),
        (["dref:bad", "a"], False),
        ([selfref, "a"], False),
        ((DREF, "a"), False),
        ([], False),
        (DREF, False),
        (None, False),
    ],
)
def test_isrefpath(value, expected):
    assert isrefpath(value) is expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ([selfref, "out.txt"], True),
        ([selfref, "dir", "file"], True),
        ([selfref], True),
        ([selfref, 1], False),
        ([DREF, "a"], False),
        ((selfref, "a"), False),
        ([], False),
        (selfref, False),
        (["x", selfref], False),
    ],
)
def test_isselfpath(value, expected):
    assert isselfpath(value) is expected


# -- names of derivations and pins --------------------------------------------------


def test_names_longer_than_the_limit_are_refused_up_front(store):
    def stage(name):
        return lambda r: mkdrv({"name": name}, match_only(), build_wrapper(lambda b: None), r)

    with pytest.raises(InvalidConfigError, match="at most"):
        instantiate(stage("n" * 250), S=store.settings)
    rref = realize1(instantiate(stage("n" * MAX_NAME_LENGTH), S=store.settings))
    assert store.verify(check_contents=True).problems == []
    with pytest.raises(InvalidReferenceError, match="at most"):
        store.pin("p" * 300, rref)
    store.pin("p" * MAX_NAME_LENGTH, rref)
    assert fails(EXIT_BAD_INPUT, store.root, "pin", "p" * 300, rref)
    assert reindex(store.root).pins == 1


@pytest.mark.parametrize("name", [".best", "..", ".", ".x.1234abcd"])
def test_pin_names_never_look_like_temporary_files(store, name):
    rref = realize1(instantiate(lambda r: mknode(r, {"name": "target"}, {"f": "x"}), S=store))
    with pytest.raises(InvalidReferenceError):
        store.pin(name, rref)
    assert fails(EXIT_BAD_INPUT, store.root, "pin", name, rref)
