"""The `log` command: print what a build printed (its realizer's stdout and stderr)."""

from __future__ import annotations

import shutil
import sys
from typing import BinaryIO

import click

from lightstore.cli.context import Env, collected_option, pass_env, root_option
from lightstore.cli.output import (
    echo,
    echo_text,
    emit_json,
    human_duration,
    human_time,
    stdout_is_terminal,
    terminal_safe,
)
from lightstore.cli.show import finds_collected
from lightstore.foundation.refs import isrref
from lightstore.query.buildlog import build_log
from lightstore.query.resolve import collected_record, removal_text, resolve
from lightstore.store.view import StoreView


def _present(view: StoreView, ref: str) -> bool:
    if isrref(ref):
        return bool(view.catalogue.known_rrefs([ref]))
    return bool(view.catalogue.known_drefs([ref]))


@click.command("log")
@click.argument("ref", required=False)
@click.option("--build", "-b", "build", type=int, metavar="ID", help="This build attempt (#ID).")
@click.option("--json", "as_json", is_flag=True, help="Print the record and the log as JSON.")
@collected_option
@root_option
@pass_env
def log_command(
    env: Env, ref: str | None, build: int | None, as_json: bool, include_collected: bool
) -> None:
    """Print what a build printed (its realizer's stdout and stderr), failed builds too.

    For a realization, the build that made it; for a derivation, its newest
    attempt (--build ID picks another: `lightstore show DREF` lists them). A
    failed build's error follows its output. Logs are kept in
    <root>/logs/<build id>.log as long as their build record (gc keeps it;
    `lightstore forget` deletes both), so a run gc removed keeps its log. A
    realization that came with `pull` or `unpack` shows the log of its build
    where it was built, when its source carried one; on a terminal, what in
    such a log a terminal would act on is shown escaped (``\\x1b``).

    \b
    Examples:
      lightstore log train@latest
      lightstore log 'train[lr=0.01]'
      lightstore log --build 42
      lightstore log --all 'train[lr=0.01]@latest'
    """
    if ref is None and build is None:
        raise click.UsageError("give a REF, or --build ID")
    view = env.view()
    collected = finds_collected(ref, include_collected) if ref is not None else False
    info = build_log(view, ref, build, read=as_json, include_collected=collected)
    if as_json:
        emit_json(info)
        return
    b = info["build"]
    if ref is not None and collected:
        target = resolve(view, ref, include_collected=True)
        gone = collected_record(view, target) if not _present(view, target) else None
        if gone is not None:
            echo(f"# {target} was {removal_text(gone)}; its log is kept", err=True)
    status = b["status"] + (" (holder gone)" if b.get("holder_gone") else "")
    if b["id"] is None:  # the log that came with an imported realization
        echo(
            f"# imported {human_time(b['imported'])}; built elsewhere, started "
            f"{human_time(b['started'])}, {human_duration(b['duration'])}"
            + (f" on {b['host']}" if b["host"] else ""),
            err=True,
        )
    else:
        echo(
            f"# build #{b['id']} of {b['dref']}: {status}, started {human_time(b['started'])}, "
            f"{human_duration(b['duration'])} on {b['host']} (pid {b['pid']})",
            err=True,
        )
    try:
        with open(info["path"], "rb") as f:
            sys.stdout.flush()
            if b["id"] is None and stdout_is_terminal():
                _print_foreign(f)
            else:
                shutil.copyfileobj(f, sys.stdout.buffer)  # streamed: logs may be large
            sys.stdout.buffer.flush()
    except FileNotFoundError:
        echo("# (no output was captured for this build)", err=True)
    if b["status"] != "succeeded" and b.get("error"):
        echo(f"# build #{b['id']} {b['status']}:", err=True)
        echo_text(b["error"].rstrip("\n"), err=True)


def _print_foreign(f: BinaryIO) -> None:
    """Print a log that was written elsewhere line by line, each made `terminal_safe`: its
    escape sequences could set the title, write the clipboard or hide text."""
    out = sys.stdout.buffer
    for line in iter(lambda: f.readline(1 << 16), b""):  # bounded: a line may be huge
        text = line.decode("utf-8", "surrogateescape")
        body = text.rstrip("\n")
        out.write(terminal_safe(body).encode("utf-8") + b"\n"[: len(text) - len(body)])


COMMANDS = [log_command]
