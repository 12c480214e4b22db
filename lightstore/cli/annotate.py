"""Commands about what is said of a run besides its content: metric, metrics, tag, note.

`metrics` reads (curves as a table); `metric`, `tag` and `note` change the record of a
realization (never its content nor any hash). Each takes a REF that designates
realizations (``train@latest``, ``train@all``, a hash prefix, a pin), or the full RRef
of a run gc removed (its record is kept until `lightstore forget`).
"""

from __future__ import annotations

import re
from typing import Any

import click

from lightstore.cli.context import (
    EXIT_BAD_INPUT,
    EXIT_NOT_FOUND,
    CliError,
    Env,
    pass_env,
    root_option,
)
from lightstore.cli.output import (
    MACHINE_FORMATS,
    echo,
    emit_rows,
    human_time,
    output_options,
    plain,
    short_ref,
)
from lightstore.foundation.errors import UnknownReferenceError
from lightstore.foundation.metrics import Number
from lightstore.foundation.refs import RRef, isrref, parse_rref
from lightstore.foundation.tags import parse_tag
from lightstore.query import metric_points, metric_table, resolve_all
from lightstore.query.curves import value_text
from lightstore.query.shortrefs import short_refs
from lightstore.store.view import StoreView

_INTEGER = re.compile(r"[+-]?[0-9]+")


def runs_of(view: StoreView, texts: tuple[str, ...] | list[str]) -> list[RRef]:
    """The realizations `texts` designate (selectors expand; a full RRef may be that of a
    collected run). Raises CliError (bad input) for a derivation, UnknownReferenceError
    for what the store does not know."""
    out: list[RRef] = []
    for text in texts:
        try:
            refs = resolve_all(view, [text])
        except UnknownReferenceError:
            # A run gc removed keeps its record: its full RRef still designates it.
            rref = text.strip()
            if isrref(rref) and view.catalogue.query(
                "SELECT 1 FROM collected_realizations WHERE rref = ? LIMIT 1", (rref,)
            ):
                refs = [parse_rref(rref)]
            else:
                raise
        for ref in refs:
            if not isrref(ref):
                raise CliError(
                    f"{text!r} designates the derivation {ref}; metrics, tags and notes belong "
                    f"to its realizations (runs): give one, or '{text}@latest' / '{text}@all'",
                    EXIT_BAD_INPUT,
                )
            if ref not in out:
                out.append(RRef(ref))
    return out


def parse_value(text: str) -> Number:
    """A metric value typed on the command line: an integer, a float, nan, inf or -inf."""
    if _INTEGER.fullmatch(text.strip()):
        return int(text)
    try:
        return float(text)
    except ValueError:
        raise click.BadParameter(
            f"{text!r} is not a number (give an integer, a float, nan, inf or -inf)"
        ) from None


def _shown(view: StoreView, rrefs: list[RRef], full: bool) -> dict[str, str]:
    if full:
        return {r: r for r in rrefs}
    shorts = short_refs(view, rrefs)
    return {r: shorts.get(r) or short_ref(r) for r in rrefs}


# -- metrics ---------------------------------------------------------------------------------


@click.command("metrics")
@click.argument("refs", metavar="REF...", nargs=-1, required=True)
@click.option(
    "--metric",
    "-m",
    "names",
    metavar="NAME",
    multiple=True,
    help="Only this metric (repeatable); default: every one.",
)
@click.option(
    "--long",
    "long_rows",
    is_flag=True,
    help="One row per value (rref, metric, step, value) instead of a column per metric.",
)
@click.option("--full", is_flag=True, help="Show full references in tables.")
@output_options
@root_option
@pass_env
def metrics_command(
    env: Env, refs: tuple[str, ...], names: tuple[str, ...], long_rows: bool, full: bool, fmt: str
) -> None:
    """The metrics of runs, curves included: one row per run and step, a column per metric.

    A metric recorded with a step (``build_metric(b, "loss", v, step=epoch)``)
    is a series: it has a value at each step. Metrics that are one number are
    in a row of their own with no step. NaN and infinities are shown as they
    are (in JSON as "NaN", "Infinity", "-Infinity"). Several REFs (or a
    selector such as train@all) put their runs one after another, with an
    rref column.

    \b
    Examples:
      lightstore metrics train@latest
      lightstore metrics 'train[lr=0.01]@all' -m loss --csv > curves.csv
      lightstore metrics 3fa2c9d1 --long --json
    """
    view = env.view()
    rrefs = runs_of(view, refs)
    wanted = list(names) or None
    if long_rows:
        rows = metric_points(view, rrefs, wanted)
        columns = list(rows.columns)
    else:
        rows = metric_table(view, rrefs, wanted)
        columns = list(rows.columns)
        if fmt not in MACHINE_FORMATS and len(rrefs) == 1:
            columns.remove("rref")
    if not rows and fmt not in MACHINE_FORMATS:
        echo("no metrics recorded" + (f" named {', '.join(names)}" if names else ""))
        return
    shown = _shown(view, rrefs, full or fmt in MACHINE_FORMATS)
    display: dict[str, Any] = {c: value_text for c in columns if c not in ("rref", "metric")}
    display["rref"] = lambda r: shown.get(r, plain(r))
    display["step"] = plain
    emit_rows(rows, columns, fmt, display)


# -- metric ----------------------------------------------------------------------------------


@click.command("metric")
@click.argument("ref")
@click.argument("assignments", metavar="NAME=VALUE...", nargs=-1, required=True)
@click.option(
    "--step",
    type=click.IntRange(min=-(2**63), max=2**63 - 1),
    metavar="N",
    help="Record the values at step N of their series (curves).",
)
@click.option(
    "--remove",
    is_flag=True,
    help="Remove the metrics NAME... (and their series) instead.",
)
@root_option
@pass_env
def metric_command(
    env: Env, ref: str, assignments: tuple[str, ...], step: int | None, remove: bool
) -> None:
    """Set metrics of the runs REF designates (or remove them): part of their record, not
    of any hash.

    VALUE is an integer, a float, nan, inf or -inf. With --step the values
    are points of series (a metric is either one number or a series).

    \b
    Examples:
      lightstore metric train@latest loss=0.31 accuracy=0.9
      lightstore metric 3fa2c9d1 val.loss=0.4 --step 12
      lightstore metric 3fa2c9d1 --remove accuracy
    """
    view = env.view()
    rrefs = runs_of(view, [ref])
    store = env.store()
    if remove:
        if step is not None or any("=" in a for a in assignments):
            raise click.UsageError("--remove takes metric names only (no VALUE, no --step)")
        for rref in rrefs:
            for name in assignments:
                if store.remove_metric(rref, name):
                    echo(f"removed {name} of {rref}")
                else:
                    raise CliError(f"{rref} has no metric {name!r}", EXIT_NOT_FOUND)
        return
    values: dict[str, Number] = {}
    for item in assignments:
        name, eq, text = item.partition("=")
        if not eq:
            raise click.BadParameter(f"{item!r} is not NAME=VALUE", param_hint="NAME=VALUE")
        values[name.strip()] = parse_value(text)
    for rref in rrefs:
        store.set_metrics(rref, values, step=step)
        at = f" at step {step}" if step is not None else ""
        shown = ", ".join(f"{k}={value_text(v)}" for k, v in values.items())
        echo(f"{rref}: {shown}{at}")


# -- tag -------------------------------------------------------------------------------------


@click.command("tag")
@click.argument("ref")
@click.argument("tags", metavar="[NAME[=VALUE]]...", nargs=-1)
@click.option("--remove", is_flag=True, help="Remove the tags NAME... instead.")
@output_options
@root_option
@pass_env
def tag_command(env: Env, ref: str, tags: tuple[str, ...], remove: bool, fmt: str) -> None:
    """Tag the runs REF designates (NAME, or NAME=VALUE), remove tags, or list them.

    Tags are part of a run's record, not of any hash; who set them and when
    are recorded. A tag of the same name is replaced. Without NAME, lists
    the runs' tags. Filter runs by tag with `lightstore history --tag`.

    \b
    Examples:
      lightstore tag train@latest baseline
      lightstore tag 'train[lr=0.5]@all' status=diverged
      lightstore tag 3fa2c9d1 --remove baseline
      lightstore tag 3fa2c9d1
    """
    view = env.view()
    rrefs = runs_of(view, [ref])
    if not tags:
        if remove:
            raise click.UsageError("--remove needs the names of the tags to remove")
        found = view.catalogue.tags_of(rrefs)
        rows = [
            {
                "rref": r,
                "name": t.name,
                "value": t.value,
                "author": t.author,
                "recorded": t.recorded,
            }
            for r in rrefs
            for t in found.get(r, [])
        ]
        shown = _shown(view, rrefs, fmt in MACHINE_FORMATS)
        emit_rows(
            rows,
            ["rref", "name", "value", "author", "recorded"],
            fmt,
            {"rref": lambda r: shown.get(r, plain(r)), "recorded": human_time},
        )
        return
    parsed = [parse_tag(t) for t in tags]
    store = env.store()
    for rref in rrefs:
        if remove:
            if any(value is not None for _, value in parsed):
                raise click.UsageError("--remove takes tag names only (no =VALUE)")
            for name, _ in parsed:
                if not store.remove_tag(rref, name):
                    raise CliError(f"{rref} has no tag {name!r}", EXIT_NOT_FOUND)
                echo(f"removed the tag {name} of {rref}")
            continue
        store.set_tags(rref, {name: value or "" for name, value in parsed})
        echo(f"tagged {rref}: {', '.join(tags)}")


# -- note ------------------------------------------------------------------------------------


@click.command("note")
@click.argument("ref")
@click.argument("text", required=False)
@click.option("--remove", "remove_id", type=int, metavar="ID", help="Remove the note ID.")
@output_options
@root_option
@pass_env
def note_command(env: Env, ref: str, text: str | None, remove_id: int | None, fmt: str) -> None:
    """Add a note (free text) about the runs REF designates, remove one, or list them.

    Notes are part of a run's record, not of any hash; who wrote them and
    when are recorded. `lightstore show` lists them with their IDs.

    \b
    Examples:
      lightstore note train@latest "diverged after epoch 3: lr too high"
      lightstore note 3fa2c9d1
      lightstore note 3fa2c9d1 --remove 4
    """
    view = env.view()
    rrefs = runs_of(view, [ref])
    if text is not None and remove_id is not None:
        raise click.UsageError("give a TEXT to add or --remove ID, not both")
    if text is not None:
        store = env.store()
        for rref in rrefs:
            echo(f"note #{store.add_note(rref, text)} added to {rref}")
        return
    if remove_id is not None:
        store = env.store()
        if not any(store.remove_note(rref, remove_id) for rref in rrefs):
            raise CliError(f"{ref!r} has no note #{remove_id}", EXIT_NOT_FOUND)
        echo(f"removed note #{remove_id}")
        return
    found = view.catalogue.notes_of(rrefs)
    rows = [
        {"rref": r, "id": n.id, "author": n.author, "recorded": n.recorded, "text": n.text}
        for r in rrefs
        for n in found.get(r, [])
    ]
    shown = _shown(view, rrefs, fmt in MACHINE_FORMATS)
    emit_rows(
        rows,
        ["rref", "id", "recorded", "author", "text"],
        fmt,
        {"rref": lambda r: shown.get(r, plain(r)), "recorded": human_time},
    )


COMMANDS = [metrics_command, metric_command, tag_command, note_command]
