"""The command line and the catalogue schema are documented, and the documentation runs.

In the habit of sqlite-utils' tests/test_docs.py: every command has a section
in docs/cli.md that mentions each of its options, every --help has examples,
every example parses, every table and view (and column) of a real catalogue is
in docs/schema.md, and the SQL examples there run against a real store.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import click
import pytest
from helpers import Pipeline, ok

from lightstore.cli import cli
from lightstore.cli import context as cli_context

DOCS = Path(__file__).resolve().parent.parent / "docs"
CLI_MD = (DOCS / "cli.md").read_text(encoding="utf-8")
SCHEMA_MD = (DOCS / "schema.md").read_text(encoding="utf-8")


def section(text: str, heading: str) -> str:
    """The text under a '#### `heading`' up to the next heading of that level or above."""
    m = re.search(rf"^#+ `{re.escape(heading)}`\n(.*?)(?=^#{{1,4}} |\Z)", text, re.M | re.S)
    assert m, f"no section for {heading!r}"
    return m.group(1)


def long_options(command: click.Command) -> list[str]:
    names = []
    for p in command.params:
        if isinstance(p, click.Option):
            names += [o for o in p.opts if o.startswith("--") and o not in ("--help", "--root")]
    return names


@pytest.mark.parametrize("name", sorted(cli.commands))
def test_every_command_is_documented_with_its_options(name):
    text = section(CLI_MD, f"lightstore {name}")
    for option in long_options(cli.commands[name]):
        assert option in text, f"docs/cli.md does not mention {option} of {name}"
    assert "```console" in text, f"no example for {name} in docs/cli.md"


@pytest.mark.parametrize("name", sorted(cli.commands))
def test_every_command_help_has_an_example(name):
    out = ok(None, name, "--help")
    assert re.search(r"^  Examples?:$", out, re.M), out
    assert f"lightstore {name}" in out.split("Example", 1)[1] or name == "init"


def test_no_undocumented_sections():
    documented = set(re.findall(r"^#### `lightstore ([a-z-]+)`", CLI_MD, re.M))
    assert documented == set(cli.commands)


def test_exit_statuses_match_the_code():
    rows = dict(re.findall(r"^\| (\d) \| (.+) \|$", CLI_MD, re.M))
    codes = {
        name: value
        for name, value in vars(cli_context).items()
        if name.startswith("EXIT_") and isinstance(value, int)
    }
    assert sorted(int(k) for k in rows) == sorted(codes.values())
    assert "not found" in rows[str(cli_context.EXIT_NOT_FOUND)]
    assert "bad input" in rows[str(cli_context.EXIT_BAD_INPUT)]
    assert "internal error" in rows[str(cli_context.EXIT_INTERNAL)]
    help_text = ok(None, "--help")
    for code in codes.values():
        assert re.search(rf"^    {code}  ", help_text, re.M)


def _examples() -> list[str]:
    lines = [ln[2:] for ln in CLI_MD.splitlines() if ln.startswith("$ lightstore")]
    for name, command in cli.commands.items():
        helptext = command.help or ""
        lines += [
            ln.strip()
            for ln in helptext.split("Example", 1)[-1].splitlines()
            if ln.strip().startswith("lightstore ")
        ]
        assert any(ln.strip().startswith(f"lightstore {name}") for ln in helptext.splitlines()) or (
            name == "init"
        )
    return lines


@pytest.mark.parametrize("line", _examples())
def test_every_example_parses(line):
    lexer = shlex.shlex(line, posix=True, punctuation_chars="|>")
    lexer.whitespace_split = True
    words = []
    for word in lexer:
        if word in ("|", ">"):
            break  # the rest is the shell's
        words.append(word)
    assert words[0] == "lightstore"
    args = words[1:]
    if args[:1] == ["--root"]:
        args = args[2:]
    command = cli.commands[args[0]]
    with click.Context(cli, obj=None) as parent:
        command.make_context(args[0], args[1:], parent=parent)


# -- schema ------------------------------------------------------------------------------------


def test_every_table_view_and_column_is_documented(pipeline):
    objects = json.loads(
        ok(
            pipeline.root,
            "sql",
            "SELECT type, name FROM sqlite_master WHERE type IN ('table', 'view') "
            "AND name NOT LIKE 'sqlite_%' AND name != '_sqlite_migrations'",
            "--json",
        )
    )
    assert {o["name"] for o in objects} >= {"derivations", "realizations", "history", "build_log"}
    for o in objects:
        text = section(SCHEMA_MD, o["name"])
        columns = json.loads(ok(pipeline.root, "sql", f"PRAGMA table_info({o['name']})", "--json"))
        for c in columns:
            assert f"`{c['name']}`" in text, f"docs/schema.md: {o['name']}.{c['name']}"
    assert "_sqlite_migrations" in SCHEMA_MD and "user_version" in SCHEMA_MD


SQL_BLOCKS = re.findall(r"```sql\n(.*?)```", SCHEMA_MD, re.S)


def test_schema_doc_has_three_history_examples():
    examples = SCHEMA_MD.split("### Example history queries", 1)[1]
    assert len(re.findall(r"```sql\n", examples)) >= 3
    assert sum("FROM history" in b for b in SQL_BLOCKS) >= 3


@pytest.mark.parametrize("sql", SQL_BLOCKS)
def test_schema_sql_examples_run(pipeline: Pipeline, sql):
    query = "\n".join(ln for ln in sql.splitlines() if not ln.startswith("--")).strip()
    query = query.rstrip(";")
    rows = json.loads(ok(pipeline.root, "sql", query, "--json"))
    if "WITH RECURSIVE users" in query:
        assert {r["name"] for r in rows} == {"train", "eval"} and len(rows) == 4
    if "count(*) AS runs" in query:
        assert {r["name"]: r["runs"] for r in rows} == {"data": 1, "train": 3, "eval": 1}
    if "AS eval" in query:
        assert rows == [{"eval": pipeline.eval, "train": pipeline.train[0.01]}]
