"""`lightstore show`: one derivation or realization, present or collected, as text or JSON."""

from __future__ import annotations

from typing import Any

import click

from lightstore.cli.context import Env, collected_option, pass_env, root_option
from lightstore.cli.output import (
    echo,
    emit_json,
    human_duration,
    human_size,
    human_time,
)
from lightstore.query import (
    describe,
)
from lightstore.query.curves import value_text
from lightstore.query.describe import config_text
from lightstore.query.resolve import removal_text
from lightstore.query.selectors import is_selector


@click.command("show")
@click.argument("ref")
@click.option("--json", "as_json", is_flag=True, help="Print everything as one JSON object.")
@click.option("--no-files", is_flag=True, help="Do not list a realization's files.")
@collected_option
@root_option
@pass_env
def show_command(
    env: Env, ref: str, as_json: bool, no_files: bool, include_collected: bool
) -> None:
    """Show one derivation or realization: config, context, files, build record; for a
    realization also its metrics (a series summarised: steps, last, min, max), tags and
    notes.

    REF is a full reference, a unique prefix of its hash (at least 4 hex
    digits, as with git), a pin name, or a derivation name that is unique.
    A run gc (or rmref) removed is shown from its record, which the
    catalogue keeps until `lightstore forget`: when and why it was
    collected, its config, context, metrics and build; its files are gone.

    \b
    Examples:
      lightstore show 3fa2c9d1
      lightstore show rref:3fa2 --json
      lightstore show train
      lightstore show --all 'train[lr=0.01]@latest'
    """
    view = env.view()
    info = describe(
        view,
        ref,
        files=not no_files,
        include_collected=finds_collected(ref, include_collected),
    )
    if as_json:
        emit_json(info)
        return
    for line in _show_lines(info):
        echo(line)


def finds_collected(ref: str, include_collected: bool) -> bool:
    """Whether `ref` may designate a collected record: a reference or hash prefix always
    may (it names one object); a selector (``train@latest``) only with --all."""
    return include_collected or not is_selector(ref)


def _collected_line(gone: dict[str, Any]) -> str:
    return (
        f"{removal_text(gone)}: its files are gone; this is its record, kept until "
        "`lightstore forget`"
    )


def _show_lines(info: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    is_rref = "rref" in info
    lines.append(info["rref"] if is_rref else info["dref"])

    def field(key: str, value: Any) -> None:
        if value not in (None, "", []):
            lines.append(f"  {key:<12}{value}")

    field("name", info["name"])
    gone = info.get("collected")
    if gone:
        field("collected", _collected_line(gone))
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
    if is_rref:
        lines += annotation_lines(info)
    lines.append("depends on:" if info["deps"] else "depends on: nothing")
    lines += [f"  {d}" for d in info["deps"]]
    lines.append("used by:" if info["referrers"] else "used by: nothing")
    lines += [f"  {d}" for d in info["referrers"]]
    if is_rref:
        if "files" not in info:  # --no-files
            return lines
        files = info["files"]
        if files is None and gone:
            lines.append("files: gone (collected)")
        elif files is None:
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
            was = f"  collected {human_time(r['collected'])}" if r.get("collected") else ""
            lines.append(f"  {r['rref']}  {human_time(r['stopped'])}  {human_size(r['size'])}{was}")
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


def annotation_lines(info: dict[str, Any]) -> list[str]:
    """The metrics (series summarised), tags and notes of a realization, for `show`."""
    lines: list[str] = []
    series = info.get("series") or {}
    metrics = info.get("metrics") or {}
    if metrics:
        lines.append("metrics:")
        width = max(len(n) for n in metrics)
    for name, value in sorted(metrics.items()):
        text = value_text(value)
        s = series.get(name)
        if s is not None:  # the value shown is the one at its last step
            text += f"  (series: {s['steps']} step(s) {s['first_step']}..{s['last_step']}"
            if s["min"] is not None:
                text += (
                    f"; min {value_text(s['min'])} at step {s['min_step']}"
                    f", max {value_text(s['max'])} at step {s['max_step']}"
                )
            text += ")"
        lines.append(f"  {name:<{width}}  {text}")
    tags = info.get("tags") or []
    if tags:
        lines.append("tags:")
    shown = [t["name"] if t["value"] == "" else f"{t['name']}={t['value']}" for t in tags]
    width = max((len(x) for x in shown), default=0)
    for t, text in zip(tags, shown, strict=True):
        lines.append(f"  {text:<{width}}  ({t['author'] or '?'}, {human_time(t['recorded'])})")
    notes = info.get("notes") or []
    if notes:
        lines.append("notes:")
    for n in notes:
        lines.append(f"  #{n['id']} {human_time(n['recorded'])} {n['author'] or '?'}:")
        lines += ["    " + ln for ln in n["text"].splitlines()]
    return lines


COMMANDS = [show_command]
