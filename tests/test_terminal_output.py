"""Output for people is safe to print on a terminal: file names, config values, host names
and errors of realizations (possibly pulled from someone else) cannot send escape sequences
to it (set the title, write the clipboard with OSC 52, clear or move the screen), while JSON,
CSV and TSV stay exact."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import sqlite3
import unicodedata

import pytest
from click.testing import CliRunner
from helpers import assert_unchanged, run, snapshot
from hypothesis import given
from hypothesis import strategies as st

from lightstore import (
    build_outpath,
    build_wrapper,
    instantiate,
    match_only,
    mkdrv,
    realize1,
)
from lightstore.cli.output import emit_rows, terminal_safe
from lightstore.store import CATALOGUE_FILE

#: What a terminal would act on (as in lightstore.cli.output, written out again here).
UNSAFE = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")

TITLE = "\x1b]0;pwned\x07"
CLIPBOARD = "\x1b]52;c;ZWNobyBwd25lZA==\x07"
CLEAR = "\x1b[2J\x1b[H"
C1_CSI = "\x9b31m"
BIDI = "\u202etxt.exe"
HOSTILE = [TITLE, CLIPBOARD, CLEAR, C1_CSI, BIDI]


#: Characters that hide or reorder text: zero-width space, soft hyphen, byte order mark,
#: line separator, tag characters (invisible letters), word joiner.
INVISIBLE = ["\u200b", "\u00ad", "\ufeff", "\u2028", "\u2029", "\U000e0041", "\U000e007f", "\u2060"]
#: The Unicode categories of what is shown escaped: controls, formats, line and paragraph
#: separators, surrogates.
HIDDEN = {"Cc", "Cf", "Zl", "Zp", "Cs"}


@given(st.text() | st.lists(st.sampled_from([*INVISIBLE, "a", " ", "\u00e9"])).map("".join))
def test_terminal_safe_leaves_nothing_a_terminal_acts_on_or_hides(text):
    shown = terminal_safe(text)
    assert not UNSAFE.search(shown) and "\n" not in shown
    assert not [c for c in shown if unicodedata.category(c) in HIDDEN], ascii(shown)
    if text.isprintable():
        assert shown == text


@pytest.mark.parametrize("hidden", INVISIBLE)
def test_invisible_characters_are_shown_escaped(hidden):
    shown = terminal_safe(f"pay{hidden}pal")
    assert shown.startswith("pay\\") and shown.endswith("pal") and hidden not in shown


@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\\")))
def test_terminal_safe_keeps_every_character_visible(text):
    # Each unsafe character becomes its escape; everything else is kept, in order.
    shown = terminal_safe(text)
    escapes = r"\\x([0-9a-f]{2})|\\u([0-9a-f]{4})|\\U([0-9a-f]{8})|\\([nrt])"
    assert re.sub(escapes, _unescape, shown) == text


def _unescape(m: re.Match[str]) -> str:
    if m.group(4):
        return {"n": "\n", "r": "\r", "t": "\t"}[m.group(4)]
    return chr(int(m.group(1) or m.group(2) or m.group(3), 16))


@given(st.lists(st.text(), min_size=1, max_size=5), st.sampled_from(["table", "github", "grid"]))
def test_tables_are_safe_and_machine_formats_exact(cells, fmt):
    rows = [{"a": c, "b": i} for i, c in enumerate(cells)]
    out = _emit(rows, fmt)
    assert not UNSAFE.search(out.replace("\n", ""))
    assert [r["a"] for r in json.loads(_emit(rows, "json"))] == cells
    assert [json.loads(line)["a"] for line in _emit(rows, "nl").splitlines()] == cells
    for kind in ("csv", "tsv"):
        dialect = "excel-tab" if kind == "tsv" else "excel"
        parsed = list(csv.reader(io.StringIO(_emit(rows, kind), newline=""), dialect=dialect))
        assert [r[0] for r in parsed[1:]] == cells


def _emit(rows, fmt: str) -> str:
    import click

    @click.command()
    def cmd() -> None:
        emit_rows(rows, ["a", "b"], fmt)

    result = CliRunner().invoke(cmd, [])
    assert result.exit_code == 0, result.output
    return result.stdout


# -- every command that prints for people --------------------------------------------------------


def _hostile_stage(tag, r):
    def real(b):
        out = os.fsencode(build_outpath(b))
        for name in [TITLE, CLIPBOARD, CLEAR, C1_CSI, BIDI]:
            with open(os.path.join(out, os.fsencode(name + ".txt")), "w") as f:
                f.write("x")
        with open(os.path.join(out, b"caf\xff"), "w") as f:  # not UTF-8
            f.write("x")
        os.symlink(CLEAR + "target", os.path.join(out, os.fsencode("link" + TITLE)))
        if tag == "broken":
            raise RuntimeError("failed " + CLIPBOARD + "\nsecond line " + CLEAR)

    return mkdrv(
        {"name": "evil", "tag": tag, "note": TITLE + C1_CSI, CLEAR + "key": BIDI + tag},
        match_only(),
        build_wrapper(real),
        r,
    )


@pytest.fixture
def hostile(S):
    a = realize1(instantiate(_hostile_stage, "a", S=S))
    b = realize1(instantiate(_hostile_stage, "b", S=S))
    with pytest.raises(Exception, match="failed"):
        realize1(instantiate(_hostile_stage, "broken", S=S))
    # What a pulled realization could bring: its host name, in the real catalogue.
    conn = sqlite3.connect(os.path.join(S.root, CATALOGUE_FILE))
    with conn:
        conn.execute("UPDATE realizations SET host = ?", (CLIPBOARD + "host",))
        conn.execute("UPDATE builds SET host = ?", (TITLE + "host",))
    conn.close()
    return S.root, a, b


@pytest.mark.parametrize(
    "args",
    [
        ["show", "{a}"],
        ["show", "evil[tag=broken]"],
        ["history", "-n", "evil", "-f", "note", "-f", "tag"],
        ["history", "--fmt", "grid", "-f", "note"],
        ["ls", "-r"],
        ["ls"],
        ["diff", "{a}", "{b}"],
        ["diff", "evil[tag=a]", "evil[tag=broken]"],
        ["log", "{a}"],
        ["log", "evil[tag=broken]"],
        ["deps", "--tree", "{a}"],
        ["roots"],
        [
            "sql",
            "SELECT b.host, d.config, b.error FROM build_log AS b JOIN derivations AS d "
            "ON d.dref = b.dref",
        ],
        ["sql", "SELECT 'x' AS \"" + TITLE + '"'],
        ["show", "evil[note=" + json.dumps(CLEAR) + "]"],  # an error that quotes the values
        ["show", "evil[tag=" + json.dumps(CLEAR) + "]@latest"],
    ],
)
def test_commands_print_nothing_a_terminal_acts_on(hostile, args):
    root, a, b = hostile
    result = run(root, *[x.format(a=a, b=b) for x in args])
    assert result.exit_code in (0, 3), result.output
    for text in (result.stdout, result.stderr):
        assert not UNSAFE.search(text.replace("\n", "")), (args, text)
    assert "\udcff" not in result.stdout


def test_what_was_escaped_is_shown_and_json_stays_exact(hostile):
    root, a, _ = hostile
    before = snapshot(root)
    out = run(root, "show", a).stdout
    assert "\\x1b]0;pwned\\x07.txt" in out and "caf\\xff" in out
    info = json.loads(run(root, "show", a, "--json").stdout)
    names = {f["path"] for f in info["files"]}
    assert {n + ".txt" for n in HOSTILE} <= names
    assert info["config"]["note"] == TITLE + C1_CSI and info["host"] == CLIPBOARD + "host"
    rows = json.loads(run(root, "history", "-n", "evil", "-f", "note", "--json").stdout)
    assert {r["note"] for r in rows} == {TITLE + C1_CSI}
    assert TITLE + C1_CSI in run(root, "history", "-n", "evil", "-f", "note", "--csv").stdout
    assert_unchanged(root, before)


def test_a_newline_in_a_value_cannot_forge_a_line_of_its_own(tmp_path):
    result = run(str(tmp_path / "nowhere\nError: forged"), "ls")
    assert result.exit_code == 3
    first, *rest = result.stderr.splitlines()
    assert first.startswith("Error: no lightstore store") and rest
    assert all(line[:1] == " " for line in rest), result.stderr


@given(st.text(), st.text())
def test_only_the_first_line_of_an_error_starts_at_the_margin(first, more):
    from lightstore.cli.context import CliError

    lines = CliError(f"{first}\n{more}", 2).format_message().split("\n")
    assert all(line[:1] in ("", " ") for line in lines[1:]), lines
