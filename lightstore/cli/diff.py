"""The `diff` command: what differs between two runs or two derivations."""

from __future__ import annotations

from typing import Any

import click

from lightstore.cli.context import Env, collected_option, pass_env, root_option
from lightstore.cli.output import echo, emit_json
from lightstore.cli.show import finds_collected
from lightstore.query.compare import compare, json_value
from lightstore.query.resolve import removal_text


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
@collected_option
@root_option
@pass_env
def diff_command(env: Env, a: str, b: str, as_json: bool, include_collected: bool) -> None:
    """Show what differs between two runs or two derivations.

    Config fields (nested keys dotted: model.depth), the fields of the
    stages they were built on that differ (upstream: train.lr, found through
    the runs they used), and for two realizations the dependency
    realizations they used and, when the catalogue records metrics, the
    metrics. Fields that are equal are not shown. A run gc removed is
    compared by its record (a reference or hash prefix finds it; a selector
    with --all).

    \b
    Examples:
      lightstore diff 'train[lr=0.1]@latest' 'train[lr=0.01]@latest'
      lightstore diff 3fa2c9d1 1b7e04aa --json
      lightstore diff --all 'evaluate[split=test]@latest' 1b7e04aa
    """
    result = compare(
        env.view(),
        a,
        b,
        include_collected=finds_collected(a, include_collected)
        and finds_collected(b, include_collected),
    )
    if as_json:
        emit_json(result)
        return
    gone = result["collected"]
    echo(
        f"--- {result['a']}" + (f"  ({removal_text(gone['a'])})" if gone["a"] else ""),
        f"+++ {result['b']}" + (f"  ({removal_text(gone['b'])})" if gone["b"] else ""),
    )
    sections = [
        ("config", result["config"]),
        ("upstream", result["upstream"]),
        ("inputs", result["context"]),
    ]
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
