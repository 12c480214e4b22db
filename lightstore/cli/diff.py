"""The `diff` command: what differs between two runs or two derivations."""

from __future__ import annotations

from typing import Any

import click

from lightstore.cli.context import Env, pass_env, root_option
from lightstore.cli.output import echo, emit_json
from lightstore.query.compare import compare, json_value


def _change_lines(changes: list[dict[str, Any]]) -> list[str]:
    lines = []
    width = max((len(c["field"]) for c in changes), default=0)
    for c in changes:
        a = json_value(c["a"]) if c["in_a"] else "(missing)"
        b = json_value(c["b"]) if c["in_b"] else "(missing)"
        lines.append(f"  {c['field']:<{width}}  {a} -> {b}")
    return lines


@click.command("diff")
@click.argument("a", metavar="A")
@click.argument("b", metavar="B")
@click.option("--json", "as_json", is_flag=True, help="Print the differences as one JSON object.")
@root_option
@pass_env
def diff_command(env: Env, a: str, b: str, as_json: bool) -> None:
    """Show what differs between two runs or two derivations.

    Config fields (nested keys dotted: model.depth), and for two
    realizations the dependency realizations they used and, when the
    catalogue records metrics, the metrics. Fields that are equal are not
    shown.

    \b
    Examples:
      lightstore diff 'train[lr=0.1]@latest' 'train[lr=0.01]@latest'
      lightstore diff 3fa2c9d1 1b7e04aa --json
    """
    result = compare(env.view(), a, b)
    if as_json:
        emit_json(result)
        return
    echo(f"--- {result['a']}", f"+++ {result['b']}")
    sections = [("config", result["config"]), ("inputs", result["context"])]
    if result["metrics"] is not None:
        sections.append(("metrics", result["metrics"]))
    same = True
    for title, changes in sections:
        if changes:
            same = False
            echo(f"{title}:")
            for line in _change_lines(changes):
                echo(line)
    if same:
        echo("no differences")


COMMANDS = [diff_command]
