"""`lightstore sql`: any SELECT over the catalogue, read-only."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import click

from lightstore.cli.context import Env, pass_env, root_option
from lightstore.cli.output import emit_rows, output_options
from lightstore.query import QueryError
from lightstore.query.readonly import SQL_TIMEOUT_S, iter_sql
from lightstore.query.sqlbudget import row_bytes, too_big


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
    keys = unique_names(headers)
    if fmt not in STREAMED_FORMATS:
        rows = iter(_gathered(rows))
    emit_rows((dict(zip(keys, r, strict=True)) for r in rows), keys, fmt)


#: Formats written row by row; a table needs every row first (for its widths).
STREAMED_FORMATS = ("json", "nl", "csv", "tsv")
#: The most bytes of values a table gathers.
TABLE_BYTES = 64 * 1024 * 1024


def _gathered(rows: Iterator[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """Every row, for a table; QueryError past `TABLE_BYTES` bytes of values."""
    out: list[tuple[Any, ...]] = []
    spent = 0
    for row in rows:
        spent += row_bytes(row)
        if spent > TABLE_BYTES:
            close = getattr(rows, "close", None)
            if close is not None:
                close()
            raise QueryError(
                f"{too_big(TABLE_BYTES)}; or write the rows with --csv, --tsv, --nl or --json, "
                "which stream them"
            )
        out.append(row)
    return out


def unique_names(headers: list[str]) -> list[str]:
    """Column names made unique as SQLite names a subquery's: a second ``a`` is ``a:1``
    (``a:2`` if a column is named ``a:1`` already)."""
    taken, used = set(headers), set()
    out = []
    for name in headers:
        unique, n = name, 0
        while unique in used or (unique != name and unique in taken):
            n += 1
            unique = f"{name}:{n}"
        used.add(unique)
        out.append(unique)
    return out


COMMANDS = [sql_command]
