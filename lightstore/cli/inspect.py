"""Commands that read the store: ls, history, show, du, roots (deps, referrers and graph are
in `lightstore.cli.graph`).

They use a read-only view of the catalogue: no locks, no writes, so they run
beside realizations in progress and for users who may only read the store.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import click

from lightstore.cli.context import Env, pass_env, root_option
from lightstore.cli.output import (
    MACHINE_FORMATS,
    echo,
    emit_json,
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
    describe,
    disk_usage,
    field_keys,
    history,
    metric_keys,
    realizations,
    resolve,
)
from lightstore.query.describe import config_text, holder_gone
from lightstore.query.resolve import short_refs
from lightstore.store.view import StoreView

TIME_DISPLAY = {
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
    """--name, --config, --since, --until, --limit, --full."""
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
    full: bool,
    quiet: bool,
    fmt: str,
) -> None:
    """List derivations (or realizations with -r), oldest first.

    Filters combine with AND; times filter on when a derivation was recorded,
    or when a realization's build finished. Only what is in the store is
    listed, unless --all.

    \b
    Examples:
      lightstore ls
      lightstore ls --name train --config 'lr<1e-3'
      lightstore ls -r --since 7d --json
      lightstore ls -r --all -n train
      lightstore ls -r -n 'eval*' -q | xargs -n1 lightstore show
    """
    view = env.view()
    kw: dict[str, Any] = {
        "config": config,
        "since": since,
        "until": until,
        "limit": limit,
        "include_collected": include_collected,
    }
    if list_realizations:
        rows = realizations(view, name, **kw)
        key = "rref"
        columns = ["rref", "name", "started", "duration", "size", "dref"]
    else:
        rows = derivations(view, name, totals=not quiet, **kw)
        key = "dref"
        columns = ["dref", "name", "realizations", "size", "created", "last_built"]
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
    "imported, import_host, collected, collected_reason).",
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
    help="Add a config field as a column (repeatable): -f lr -f model.depth.",
)
@click.option(
    "--metric",
    "-m",
    "metrics",
    metavar="NAME",
    multiple=True,
    help="Add a metric as a column (repeatable): -m loss -m accuracy.",
)
@click.option(
    "--sort",
    metavar="COLUMN",
    help="Order by a column (a field, a metric or e.g. duration; -COLUMN for descending), "
    "missing values last; with --limit N, the first N.",
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
    full: bool,
    where: str | None,
    include_collected: bool,
    fields: tuple[str, ...],
    metrics: tuple[str, ...],
    sort: str | None,
    fmt: str,
) -> None:
    """One row per realization: name, references, start, duration, size, config fields, metrics.

    In the order they finished (with --limit N, the newest N); --since and
    --until filter on the finish time. Only what is in the store is shown,
    unless --all: then also the records of what gc, rmref or a repair
    removed. The catalogue is opened read-only, so --where cannot change
    anything.

    \b
    Examples:
      lightstore history --name train --field lr --since 7d
      lightstore history -n train -f lr -w "json_extract(config, '$.lr') < 1e-3 AND duration > 60"
      lightstore history --limit 20 --csv > recent.csv
      lightstore history --all --name train --since 90d
      lightstore history -n train -f lr -m loss --sort loss --limit 5
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
    )
    keys = field_keys(fields)
    keys += metric_keys(metrics, [*HISTORY_COLUMNS, *keys])
    if fmt in MACHINE_FORMATS:
        columns = [*HISTORY_COLUMNS, *keys]
    else:
        columns = ["name", "rref", "dref", "started", "duration", "size", *keys]
        if include_collected:
            columns.append("collected")
    emit_rows(rows, columns, fmt, _display(full or fmt in MACHINE_FORMATS, view, rows))


@click.command("show")
@click.argument("ref")
@click.option("--json", "as_json", is_flag=True, help="Print everything as one JSON object.")
@click.option("--no-files", is_flag=True, help="Do not list a realization's files.")
@root_option
@pass_env
def show_command(env: Env, ref: str, as_json: bool, no_files: bool) -> None:
    """Show one derivation or realization: config, context, files, build record.

    REF is a full reference, a unique prefix of its hash (at least 4 hex
    digits, as with git), a pin name, or a derivation name that is unique.

    \b
    Examples:
      lightstore show 3fa2c9d1
      lightstore show rref:3fa2 --json
      lightstore show train
    """
    view = env.view()
    info = describe(view, resolve(view, ref), files=not no_files)
    if as_json:
        emit_json(info)
        return
    for line in _show_lines(info):
        echo(line)


def _show_lines(info: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    is_rref = "rref" in info
    lines.append(info["rref"] if is_rref else info["dref"])

    def field(key: str, value: Any) -> None:
        if value not in (None, "", []):
            lines.append(f"  {key:<12}{value}")

    field("name", info["name"])
    if is_rref:
        field("derivation", info["dref"])
        field("path", info["path"])
        field("started", human_time(info["started"]))
        field("finished", human_time(info["stopped"]))
        field("duration", human_duration(info["duration"]))
        field("size", f"{human_size(info['size'])} in {info['file_count']} file(s)")
        field("host", f"{info['host'] or '?'} (pid {info['pid']})" if info["host"] else None)
        build = info["build"]
        if build:
            field("build", f"#{build['id']} {build['status']}")
    else:
        field("path", info["path"])
        field("recorded", human_time(info["created"]))
    field("pins", ", ".join(info["pins"]))
    lines.append("config:")
    lines += ["  " + ln for ln in config_text(info["config"]).splitlines()]
    if is_rref:
        lines.append("context:")
        if not info["context"]:
            lines.append("  (no dependencies)")
        for dref, rrefs in sorted(info["context"].items()):
            for r in rrefs:
                lines.append(f"  {dref} -> {r}")
    lines.append("depends on:" if info["deps"] else "depends on: nothing")
    lines += [f"  {d}" for d in info["deps"]]
    lines.append("used by:" if info["referrers"] else "used by: nothing")
    lines += [f"  {d}" for d in info["referrers"]]
    if is_rref:
        if "files" not in info:  # --no-files
            return lines
        files = info["files"]
        if files is None:
            lines.append("files: the folder is missing (run `lightstore verify`)")
        else:
            lines.append(f"files: ({len(files)})")
            for f in files:
                extra = f" -> {f['target']}" if f["type"] == "link" else ""
                size = human_size(f["size"]) if f["type"] == "file" else ""
                lines.append(f"  {size:>10}  {f['path']}{extra}")
    else:
        rs = info["realizations"]
        lines.append(f"realizations: ({len(rs)})")
        for r in rs:
            lines.append(f"  {r['rref']}  {human_time(r['stopped'])}  {human_size(r['size'])}")
        if info["builds"]:
            lines.append("builds:")
        for b in info["builds"]:
            lines.append(
                f"  #{b['id']:<5} {b['status']:<11} {human_time(b['started'])}  "
                f"{human_duration(b['duration'])}  {b['host']} pid {b['pid']}"
            )
            if b["error"]:
                last = [ln for ln in b["error"].strip().splitlines() if ln.strip()]
                lines.append(f"         {last[-1] if last else ''}")
    return lines


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
    show_command,
    du_command,
    roots_command,
]
