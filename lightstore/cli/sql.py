"""`lightstore sql`: any SELECT over the catalogue, read-only."""

from __future__ import annotations

import click

from lightstore.cli.context import Env, pass_env, root_option
from lightstore.cli.output import emit_rows, output_options
from lightstore.query.readonly import SQL_TIMEOUT_S, iter_sql


@click.command("sql")
@click.argument("query")
@click.option(
    "--param",
    "-p",
    "params",
    type=(str, str),
    multiple=True,
    metavar="NAME VALUE",
    help="Bind :NAME in the query to VALUE (a string; repeatable).",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, max=1e9),
    default=SQL_TIMEOUT_S,
    show_default=True,
    metavar="SECONDS",
    help="Stop the query after this long (0: no limit).",
)
@output_options
@root_option
@pass_env
def sql_command(
    env: Env, query: str, params: tuple[tuple[str, str], ...], timeout: float, fmt: str
) -> None:
    """Run one SQL statement on the catalogue, read-only, and print the rows.

    The catalogue is opened read-only: INSERT, UPDATE, DELETE, CREATE, DROP,
    ATTACH and pragmas that change state are refused (exit 2). It can be
    queried while realizations run. Tables: derivations, derivation_deps,
    realizations, realization_deps, builds, build_inputs, pins, links; views:
    history, build_log (see docs/schema.md). Rows are streamed (except in
    tables, which need every row for their widths); a query that runs longer
    than --timeout is stopped (exit 2).

    \b
    Examples:
      lightstore sql "SELECT name, count(*) FROM history GROUP BY name"
      lightstore sql "SELECT rref, duration FROM history WHERE name = :n" -p n train --json
      lightstore sql "SELECT status, count(*) FROM build_log GROUP BY status" --csv
    """
    headers, rows = iter_sql(env.view().catalogue, query, dict(params), timeout or None)
    emit_rows((dict(zip(headers, r, strict=True)) for r in rows), headers, fmt)


COMMANDS = [sql_command]
