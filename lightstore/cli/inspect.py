"""Commands that read the store: ls, history, du, roots (show is `lightstore.cli.show`; deps,
referrers and graph are in `lightstore.cli.graph`).

They use a read-only view of the catalogue: no locks, no writes, so they run
beside realizations in progress and for users who may only read the store.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import click

from lightstore.cli.context import Env, pass_env, root_option
from lightstore.cli.output import (
    MACHINE_FORMATS,
    echo,
    emit_rows,
    human_duration,
    human_size,
    human_time,
    output_options,
    plain,
    short_ref,
)
from lightstore.query import (
    HISTORY_COLUMNS,
    derivations,
    disk_usage,
    history,
    realizations,
)
from lightstore.query.describe import holder_gone
from lightstore.query.history import empty_column_hints
from lightstore.query.rows import DIGITS, cell_text
from lightstore.query.shortrefs import short_refs
from lightstore.store.view import StoreView


def tags_text(tags: Any) -> str:
    """A run's tags in a table cell: ``baseline, status=diverged``."""
    if not isinstance(tags, dict):
        return plain(tags)
    return ", ".join(k if v == "" else f"{k}={v}" for k, v in sorted(tags.items()))


TIME_DISPLAY = {
    "tags": tags_text,
    "created": human_time,
    "started": human_time,
    "stopped": human_time,
    "last_built": human_time,
    "collected": lambda t: "present" if t is None else f"collected {human_time(t)}",
    "duration": human_duration,
    "size": human_size,
}


def _display(full: bool, view: StoreView, rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """How a table shows each column: references by their shortest unique form (unless
    `full`), times, durations and sizes for people."""
    if full:
        return TIME_DISPLAY
    shorts = short_refs(view, (r.get(c) for r in rows for c in ("rref", "dref")))

    def short(ref: Any) -> str:
        return shorts.get(ref) or short_ref(ref)

    return {**TIME_DISPLAY, "rref": short, "dref": short}


def filter_options(fn: Any) -> Any:
    """--name, --config, --since, --until, --limit, --tag, --full."""
    for decorator in reversed(
        [
            click.option(
                "--name", "-n", metavar="NAME", help="Derivation name, or a glob: 'train*'."
            ),
            click.option(
                "--config",
                "-c",
                "config",
                metavar="COND",
                multiple=True,
                help="Config condition FIELD OP VALUE, e.g. 'lr<1e-3', 'model.depth=4' (repeatable, ANDed).",
            ),
            click.option(
                "--since", metavar="TIME", help="Only after TIME: 7d, 12h, 2024-05-01, today."
            ),
            click.option(
                "--until", metavar="TIME", help="Only before TIME (same forms as --since)."
            ),
            click.option(
                "--limit",
                type=click.IntRange(min=0, max=2**63 - 1),
                metavar="N",
                help="Only the newest N rows.",
            ),
            click.option(
                "--tag",
                "-t",
                "tags",
                metavar="NAME[=VALUE]",
                multiple=True,
                help="Only runs with this tag (with this value, if given); repeatable, ANDed.",
            ),
            click.option("--full", is_flag=True, help="Show full references in tables."),
        ]
    ):
        fn = decorator(fn)
    return fn


@click.command("ls")
@click.option(
    "--realizations",
    "-r",
    "list_realizations",
    is_flag=True,
    help="List realizations instead of derivations.",
)
@filter_options
@click.option(
    "--all",
    "-a",
    "include_collected",
    is_flag=True,
    help="Also list what gc removed (its record is kept), with a 'collected' column.",
)
@click.option("--quiet", "-q", is_flag=True, help="Print only full references, one per line.")
@output_options
@root_option
@pass_env
def ls_command(
    env: Env,
    list_realizations: bool,
    include_collected: bool,
    name: str | None,
    config: tuple[str, ...],
    since: str | None,
    until: str | None,
    limit: int | None,
    tags: tuple[str, ...],
    full: bool,
    quiet: bool,
    fmt: str,
) -> None:
    """List derivations (or realizations with -r), oldest first.

    Filters combine with AND; times filter on when a derivation was recorded,
    or when a realization's build finished; --tag keeps the realizations with
    the tag (derivations: those with such a realization). Only what is in the
    store is listed, unless --all. Derivations with failed (or interrupted) builds
    get a 'failed' column: how many, and '(only)' where no build succeeded
    (`lightstore log DREF` prints the newest attempt).

    \b
    Examples:
      lightstore ls
      lightstore ls --name train --config 'lr<1e-3'
      lightstore ls -r --since 7d --json
      lightstore ls -r --all -n train
      lightstore ls -r --tag baseline
      lightstore ls -r -n 'eval*' -q | xargs -n1 lightstore show
    """
    view = env.view()
    kw: dict[str, Any] = {
        "config": config,
        "since": since,
        "until": until,
        "limit": limit,
        "include_collected": include_collected,
        "tags": tags,
    }
    if list_realizations:
        rows = realizations(view, name, **kw)
        key = "rref"
        columns = ["rref", "name", "started", "duration", "size", "dref"]
        if fmt in MACHINE_FORMATS or tags or any(r["tags"] for r in rows):
            columns.append("tags")
    else:
        rows = derivations(view, name, totals=not quiet, **kw)
        key = "dref"
        columns = ["dref", "name", "realizations", "size", "created", "last_built"]
        if fmt in MACHINE_FORMATS:
            columns.append("failures")
        elif any(r.get("failures") for r in rows):
            columns.append("failed")
            for r in rows:
                r["failed"] = failed_text(r)
    if include_collected:
        columns.append("collected")
    if quiet:
        if rows:
            echo(*(row[key] for row in rows))
        return
    emit_rows(rows, columns, fmt, _display(full or fmt in MACHINE_FORMATS, view, rows))


@click.command("history")
@filter_options
@click.option(
    "--where",
    "-w",
    metavar="SQL",
    help="Extra SQL condition over the history view's columns (rref, dref, name, config, "
    "context, started, stopped, duration, size, file_count, host, pid, build_id, created, "
    "imported, import_host, collected, collected_reason; tags, a JSON object).",
)
@click.option(
    "--all",
    "-a",
    "include_collected",
    is_flag=True,
    help="Also show realizations gc removed (their record is kept), with a 'collected' column.",
)
@click.option(
    "--field",
    "-f",
    "fields",
    metavar="FIELD",
    multiple=True,
    help="Add a config field as a column (repeatable): -f lr -f model.depth; across stages: "
    "-f model.lr (through a reference in the config), -f train.lr (the train run this run "
    "was built on); -f '*' for every field that varies.",
)
@click.option(
    "--varying",
    is_flag=True,
    help="Add every field whose value varies among the rows: own config fields, then those "
    "of the stages they were built on.",
)
@click.option(
    "--metric",
    "-m",
    "metrics",
    metavar="NAME",
    multiple=True,
    help="Add a metric as a column (repeatable): -m loss -m accuracy; a series gives its "
    "last value, or NAME:min, NAME:max, NAME:first, NAME:steps.",
)
@click.option(
    "--sort",
    metavar="COLUMN",
    help="Order by a column (a field, a metric or e.g. duration; -COLUMN for descending), "
    "missing values last; with --limit N, the first N.",
)
@click.option(
    "--precision",
    type=click.IntRange(min=1, max=17),
    default=DIGITS,
    show_default=True,
    metavar="N",
    help="Significant digits of numbers in the table (--full: every digit; JSON and CSV are "
    "always exact).",
)
@output_options
@root_option
@pass_env
def history_command(
    env: Env,
    name: str | None,
    config: tuple[str, ...],
    since: str | None,
    until: str | None,
    limit: int | None,
    tags: tuple[str, ...],
    full: bool,
    where: str | None,
    include_collected: bool,
    fields: tuple[str, ...],
    varying: bool,
    metrics: tuple[str, ...],
    sort: str | None,
    precision: int,
    fmt: str,
) -> None:
    """One row per realization: name, references, start, duration, size, config fields, metrics,
    tags.

    In the order they finished (with --limit N, the newest N); --since and
    --until filter on the finish time, --tag on tags. A metric that is a
    series (a curve) shows its value at its last step, or a summary of it
    (-m loss:min); `lightstore metrics REF` shows every step. NaN and
    infinite values are shown as they are (JSON: "NaN", "Infinity").
    Only what is in the store is shown,
    unless --all: then also the records of what gc, rmref or a repair
    removed. The catalogue is opened read-only, so --where cannot change
    anything.

    A field FIELD.SUB reads across stages: through a reference the config
    holds (model.lr: the config of the derivation in `model`), or, where the
    config has no FIELD, from the run of stage FIELD this run was built on
    (train.lr). A run built on several runs of that stage that disagree
    shows each value, joined by ' | ' (JSON: a list). Conditions (-c) and
    --sort take such fields too; a condition holds if one of the values does.

    \b
    Examples:
      lightstore history --name train --field lr --since 7d
      lightstore history -n evaluate -f train.lr -f train.hidden -m r2
      lightstore history -n evaluate --varying -m r2 -c 'train.lr<0.01' --sort -r2
      lightstore history -n train -f lr -w "json_extract(config, '$.lr') < 1e-3 AND duration > 60"
      lightstore history --limit 20 --csv > recent.csv
      lightstore history --all --name train --since 90d
      lightstore history -n train -f lr -m loss --sort loss --limit 5
      lightstore history -n train -f lr -m loss:min --sort loss:min --tag baseline
    """
    view = env.view()
    rows = history(
        view,
        name,
        where,
        fields,
        config=config,
        since=since,
        until=until,
        limit=limit,
        include_collected=include_collected,
        metrics=metrics,
        sort=sort,
        tags=tags,
        varying=varying,
    )
    # The fields and metrics asked for (and found varying), as history named them.
    keys = [c for c in rows.columns if c not in HISTORY_COLUMNS]
    if fmt in MACHINE_FORMATS:
        columns = [*HISTORY_COLUMNS, *keys]
    else:
        columns = ["name", "rref", "dref", "started", "duration", "size", *keys]
        if tags or any(r["tags"] for r in rows):
            columns.append("tags")
        if include_collected:
            columns.append("collected")
        for line in empty_column_hints(view, rows, fields, metrics):
            echo(line, err=True)
    display = _display(full or fmt in MACHINE_FORMATS, view, rows)
    digits = None if full else precision
    display.update({k: functools.partial(cell_text, digits=digits) for k in keys})
    emit_rows(rows, columns, fmt, display)


def failed_text(row: dict[str, Any]) -> str:
    """The `failed` cell of `ls`: how many builds of a derivation failed, and ``only`` where
    none succeeded (it has no realization)."""
    n = row.get("failures") or 0
    if not n:
        return ""
    return f"{n} (only)" if not row.get("realizations") else str(n)


@click.command("du")
@click.option("--name", "-n", metavar="NAME", help="Only derivations of this name (or glob).")
@click.option(
    "--limit", type=click.IntRange(min=0, max=2**63 - 1), metavar="N", help="Only the N largest."
)
@click.option("--full", is_flag=True, help="Show full references.")
@output_options
@root_option
@pass_env
def du_command(env: Env, name: str | None, limit: int | None, full: bool, fmt: str) -> None:
    """Disk usage per derivation, largest first (from the catalogue).

    \b
    Examples:
      lightstore du
      lightstore du --limit 10
      lightstore du --name 'train*' --json
    """
    view = env.view()
    rows = disk_usage(view, name)
    total, count = sum(r["size"] or 0 for r in rows), len(rows)
    if limit is not None:
        rows = rows[:limit]
    display = _display(full or fmt in MACHINE_FORMATS, view, rows)
    emit_rows(rows, ["size", "realizations", "files", "name", "dref"], fmt, display)
    if fmt == "table" and rows:
        echo(f"total {human_size(total)} in {count} derivation(s)")


@click.command("roots")
@output_options
@root_option
@pass_env
def roots_command(env: Env, fmt: str) -> None:
    """List what gc keeps: pins, registered symlinks, inputs of running builds.

    Garbage collection keeps these and everything they depend on.

    \b
    Examples:
      lightstore roots
      lightstore roots --json
    """
    from lightstore.maintenance.pins import gc_keeps

    view = env.view()
    found = gc_keeps(view)
    rows: list[dict[str, Any]] = [
        {"kind": "pin", "name": n, "ref": r, "status": ""} for n, r in view.catalogue.pins().items()
    ]
    for path, ref in view.catalogue.links():
        stale = path in found.stale_links
        rows.append({"kind": "link", "name": path, "ref": ref, "status": "stale" if stale else ""})
    for build_id, ref, host, pid in view.catalogue.build_inputs():
        gone = holder_gone({"status": "running", "host": host, "pid": pid})
        status = "holder gone (kept until a writer opens the store)" if gone else "running"
        rows.append({"kind": "build", "name": f"#{build_id}", "ref": ref, "status": status})
    emit_rows(rows, ["kind", "name", "ref", "status"], fmt, {"ref": plain})


COMMANDS = [
    ls_command,
    history_command,
    du_command,
    roots_command,
]
