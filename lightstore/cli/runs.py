"""Commands about individual runs: diff, cat, log."""

from __future__ import annotations

import os
import shutil
import sys
from typing import Any

import click

from lightstore.cli.context import EXIT_BAD_INPUT, CliError, Env, pass_env, root_option
from lightstore.cli.output import echo, echo_text, emit_json, human_duration, human_time
from lightstore.query.buildlog import build_log
from lightstore.query.compare import artifact_path, compare, json_value


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


@click.command("cat")
@click.argument("ref")
@click.argument("path")
@root_option
@pass_env
def cat_command(env: Env, ref: str, path: str) -> None:
    """Print the file PATH of the realization REF (bytes as they are).

    REF must designate one realization (an RRef, NAME@latest, or a
    derivation with a single realization). PATH is relative to the
    realization's folder; '..', absolute paths and symlinks leading outside
    the realization are refused.

    \b
    Examples:
      lightstore cat train@latest logs/loss.txt
      lightstore cat 'train[lr=0.01]@latest' model.txt > model.txt
    """
    target = artifact_path(env.view(), ref, path)
    if os.path.isdir(target):
        names = sorted(os.listdir(target))
        raise CliError(
            f"{path!r} is a folder; its entries: {', '.join(names[:20]) or '(empty)'}"
            + (" ..." if len(names) > 20 else ""),
            EXIT_BAD_INPUT,
        )
    sys.stdout.flush()
    out = sys.stdout.buffer
    with open(target, "rb") as f:
        shutil.copyfileobj(f, out)
    out.flush()


@click.command("log")
@click.argument("ref", required=False)
@click.option("--build", "-b", "build", type=int, metavar="ID", help="This build attempt (#ID).")
@click.option("--json", "as_json", is_flag=True, help="Print the record and the log as JSON.")
@root_option
@pass_env
def log_command(env: Env, ref: str | None, build: int | None, as_json: bool) -> None:
    """Print what a build printed (its realizer's stdout and stderr), failed builds too.

    For a realization, the build that made it; for a derivation, its newest
    attempt (--build ID picks another: `lightstore show DREF` lists them). A
    failed build's error follows its output. Logs are kept in
    <root>/logs/<build id>.log as long as their build record (gc keeps it;
    `lightstore forget` deletes both).

    \b
    Examples:
      lightstore log train@latest
      lightstore log 'train[lr=0.01]'
      lightstore log --build 42
    """
    if ref is None and build is None:
        raise click.UsageError("give a REF, or --build ID")
    info = build_log(env.view(), ref, build, read=as_json)
    if as_json:
        emit_json(info)
        return
    b = info["build"]
    status = b["status"] + (" (holder gone)" if b.get("holder_gone") else "")
    echo(
        f"# build #{b['id']} of {b['dref']}: {status}, started {human_time(b['started'])}, "
        f"{human_duration(b['duration'])} on {b['host']} (pid {b['pid']})",
        err=True,
    )
    try:
        with open(info["path"], "rb") as f:
            sys.stdout.flush()
            shutil.copyfileobj(f, sys.stdout.buffer)  # streamed: logs may be large
            sys.stdout.buffer.flush()
    except FileNotFoundError:
        echo("# (no output was captured for this build)", err=True)
    if b["status"] != "succeeded" and b.get("error"):
        echo(f"# build #{b['id']} {b['status']}:", err=True)
        echo_text(b["error"].rstrip("\n"), err=True)


COMMANDS = [diff_command, cat_command, log_command]
