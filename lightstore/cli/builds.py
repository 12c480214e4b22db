"""The `builds` and `cancel` commands: the builds running now, and stopping one."""

from __future__ import annotations

import click

from lightstore.cli.context import Env, pass_env, root_option
from lightstore.cli.output import echo, emit_rows, human_duration, human_time, output_options
from lightstore.maintenance.cancel import DEFAULT_CANCEL_TIMEOUT_S, cancel_build
from lightstore.query.buildlog import builds

_COLUMNS = ["id", "name", "status", "host", "pid", "started", "elapsed", "dref"]
#: How many finished builds --all lists.
RECENT = 20


@click.command("builds")
@click.option(
    "--all",
    "-a",
    "show_all",
    is_flag=True,
    help=f"Also list the {RECENT} builds that finished last, with their status "
    "(succeeded, failed, interrupted).",
)
@click.option(
    "--limit",
    "-n",
    type=click.IntRange(min=0),
    default=RECENT,
    show_default=True,
    help="With --all, how many finished builds.",
)
@output_options
@root_option
@pass_env
def builds_command(env: Env, show_all: bool, limit: int, fmt: str) -> None:
    """List the builds running now: id, name, host, pid, start and time so far.

    The ids are those of `lightstore log --build ID` and `lightstore cancel ID`.
    A build whose process on this host is gone shows as interrupted (with
    --all). Read-only: needs no write access to the store.

    \b
    Examples:
      lightstore builds
      lightstore builds --all --json
    """
    rows = builds(env.view(), recent=limit if show_all else 0)
    if not rows and fmt == "table":
        echo("no build is running" if not show_all else "no builds recorded", err=True)
        return
    columns = _COLUMNS + (["stopped", "error"] if show_all else [])
    display = {
        "started": human_time,
        "stopped": human_time,
        "elapsed": human_duration,
        "error": lambda e: (e or "").split("\n", 1)[0][:80],
    }
    emit_rows(rows, columns, fmt, display)


@click.command("cancel")
@click.argument("build_id", type=int)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0),
    default=DEFAULT_CANCEL_TIMEOUT_S,
    show_default=True,
    metavar="SECONDS",
    help="How long to wait for the process to stop.",
)
@root_option
@pass_env
def cancel_command(env: Env, build_id: int, timeout: float) -> None:
    """Stop a running build of this host: SIGTERM to the process building it.

    The process recorded for the build (`lightstore builds` lists it) is
    stopped as a whole: a serial realize's own process, or the worker of
    `jobs=` (the realize then fails that build and its dependents). Once it
    has stopped, the build is recorded as interrupted and what it left in the
    store is removed. A build on another host is refused (exit status 5):
    cancel it there.

    \b
    Examples:
      lightstore cancel 42
    """
    report = cancel_build(env.store(), build_id, timeout)
    if report.stopped:
        echo(
            f"cancelled build #{report.build_id} of {report.dref}: process {report.pid} "
            "stopped; the build is recorded as interrupted"
        )
    else:
        echo(
            f"sent SIGTERM to process {report.pid} (build #{report.build_id} of "
            f"{report.dref}), still running after {timeout:g}s; the build is recorded as "
            "interrupted once it stops",
            err=True,
        )


COMMANDS = [builds_command, cancel_command]
