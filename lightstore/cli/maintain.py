"""Commands that change the store: init, pin, unpin, gc, verify, reindex."""

from __future__ import annotations

import os
import sys
from dataclasses import asdict

import click

from lightstore.cli.context import (
    EXIT_NOT_FOUND,
    EXIT_PROBLEMS,
    EXIT_REFUSED,
    CliError,
    Env,
    pass_env,
    root_option,
)
from lightstore.cli.output import (
    call_with_progress,
    echo,
    emit_json,
    emit_rows,
    human_size,
    output_options,
)
from lightstore.facade import Store
from lightstore.foundation.errors import StoreNotFoundError
from lightstore.maintenance.gc import collect
from lightstore.maintenance.marking import GCReport
from lightstore.query import parse_time, resolve, sizes_of
from lightstore.query.readonly import catalogue_path
from lightstore.store.layout import OBJECTS_DIR


@click.command("init")
@root_option
@pass_env
def init_command(env: Env) -> None:
    """Create an empty store at the root (nothing happens if one is there).

    \b
    Examples:
      lightstore --root ./store init
      LIGHTSTORE_ROOT=/data/experiments lightstore init
    """
    existed = os.path.isfile(catalogue_path(env.root))
    store = env.store(create=True)
    if existed:
        echo(f"a store is already at {store.root}")
    else:
        echo(f"created an empty store at {store.root}")


@click.command("pin")
@click.argument("name")
@click.argument("ref")
@root_option
@pass_env
def pin_command(env: Env, name: str, ref: str) -> None:
    """Pin REF under NAME: gc keeps it and everything it depends on.

    A pin of the same name is replaced. REF may be a hash prefix.

    \b
    Examples:
      lightstore pin best-model 3fa2c9d1
      lightstore pin dataset dref:1b7e
    """
    target = resolve(env.view(), ref)
    env.store().pin(name, target)
    echo(f"pinned {name} -> {target}")


@click.command("unpin")
@click.argument("name")
@root_option
@pass_env
def unpin_command(env: Env, name: str) -> None:
    """Remove the pin NAME (what it pinned stays until the next gc).

    \b
    Example:
      lightstore unpin best-model
    """
    if not env.store().unpin(name):
        raise CliError(f"there is no pin named {name!r}; see `lightstore roots`", EXIT_NOT_FOUND)
    echo(f"unpinned {name}")


def _interactive() -> bool:
    """Whether a person can answer a question (stdin is a terminal)."""
    try:
        return sys.stdin.isatty()
    except (AttributeError, ValueError):
        return False


#: How many of the largest realizations the gc question lists.
LARGEST_SHOWN = 5


def _ask_before_collecting(store: Store, report: GCReport) -> bool:
    """Show what gc would remove (count, bytes, the largest) and ask; True to go on."""
    sizes = sizes_of(store, report.rrefs)
    largest = sorted(report.rrefs, key=lambda r: (-sizes.get(r, 0), r))[:LARGEST_SHOWN]
    echo(
        f"gc would remove {len(report.rrefs)} realization(s) and {len(report.drefs)} "
        f"derivation(s), freeing {human_size(report.bytes_freed)} "
        f"({report.bytes_freed} bytes). Their records stay in `history --all`.",
        err=True,
    )
    if largest:
        echo("largest:", err=True)
        for rref in largest:
            echo(f"  {human_size(sizes.get(rref, 0)):>10}  {rref}", err=True)
    return click.confirm("Remove them?", default=False, err=True)


@click.command("gc")
@click.option("--dry-run", "-n", is_flag=True, help="Only show what would be removed.")
@click.option(
    "--yes", "-y", is_flag=True, help="Do not ask before removing (needed without a terminal)."
)
@click.option(
    "--keep-since",
    metavar="TIME",
    help="Also keep (as if pinned) what was built or imported since TIME: 7d, 12h, 2024-05-01.",
)
@click.option("--quiet", "-q", is_flag=True, help="Print only the summary line.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0),
    metavar="SECONDS",
    help="Give up (exit 5) if running realizations hold the store longer than this.",
)
@root_option
@pass_env
def gc_command(
    env: Env,
    dry_run: bool,
    yes: bool,
    keep_since: str | None,
    quiet: bool,
    as_json: bool,
    timeout: float | None,
) -> None:
    """Remove from the tree what pins, links and running builds do not need, and show what went and the
    bytes freed. The catalogue keeps their records (`history --all`; `forget` deletes them).

    gc keeps pins, live symlinks made by linkrref/linkdref, the inputs of
    running builds and, with --keep-since, what was built in that period, with
    their closures. It waits for running realizations to finish.

    On a terminal gc first shows what it would remove (count, bytes, the
    largest) and asks; it then removes nothing that was not shown. --yes
    skips the question. Without a terminal and without --yes it refuses
    (exit 5).

    \b
    Examples:
      lightstore gc --dry-run
      lightstore gc
      lightstore gc --keep-since 7d
      lightstore gc --yes --json > gc-report.json
    """
    since = parse_time(keep_since) if keep_since is not None else None
    store = env.store()
    only: GCReport | None = None
    if not dry_run and not yes:
        if not _interactive():
            raise CliError(
                "gc removes every result that is not pinned or linked, and there is no terminal "
                "to ask for confirmation; run `lightstore gc --dry-run` to see what would go, "
                "then `lightstore gc --yes`",
                EXIT_REFUSED,
            )
        only = store.gc(dry_run=True, keep_since=since)
        if (only.rrefs or only.drefs) and not _ask_before_collecting(store, only):
            raise CliError("gc cancelled; nothing was removed", EXIT_REFUSED)
    if dry_run:
        report = store.gc(dry_run=True, keep_since=since)
    else:
        report = call_with_progress(
            collect, "collecting", store, timeout=timeout, keep_since=since, only=only
        )
    if as_json:
        emit_json(asdict(report))
        return
    verb = "would remove" if dry_run else "removed"
    if not quiet:
        sizes = sizes_of(store, report.rrefs) if dry_run else {}
        for rref in report.rrefs:
            size = sizes.get(rref)
            echo(f"{verb} {rref}" + (f"  ({human_size(size)})" if size is not None else ""))
        for dref in report.drefs:
            echo(f"{verb} {dref}")
        for link in report.stale_links:
            echo(f"{'would forget' if dry_run else 'forgot'} stale link {link}")
    echo(
        f"{verb} {len(report.rrefs)} realization(s) and {len(report.drefs)} derivation(s); "
        f"{'would free' if dry_run else 'freed'} {human_size(report.bytes_freed)} "
        f"({report.bytes_freed} bytes)"
    )


@click.command("forget")
@click.option("--name", "-n", metavar="NAME", help="Derivation name, or a glob: 'train*'.")
@click.option(
    "--older-than",
    metavar="AGE",
    help="Records of objects collected before AGE ago (30d) or before a date (2024-05-01).",
)
@click.option(
    "--all-collected", "everything", is_flag=True, help="Every record of a collected object."
)
@click.option("--dry-run", is_flag=True, help="Only count what would be deleted.")
@root_option
@pass_env
def forget_command(
    env: Env, name: str | None, older_than: str | None, everything: bool, dry_run: bool
) -> None:
    """Delete the catalogue records of collected objects (what `history --all` shows as
    collected), with their build attempts. Present objects are never touched.

    Filters combine with AND; one of --name, --older-than, --all-collected is needed.

    \b
    Examples:
      lightstore forget --older-than 90d
      lightstore forget --name 'scratch*'
      lightstore forget --all-collected --dry-run
    """
    before = parse_time(older_than) if older_than is not None else None
    report = env.store().forget(before=before, name=name, everything=everything, dry_run=dry_run)
    verb = "would forget" if dry_run else "forgot"
    echo(
        f"{verb} {report.realizations} realization record(s), {report.derivations} derivation "
        f"record(s) and {report.builds} build record(s)"
    )


@click.command("verify")
@click.option(
    "--check-contents", is_flag=True, help="Also re-hash every realization (reads all files)."
)
@click.option("--repair", is_flag=True, help="Fix what can be fixed; say what cannot.")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0),
    metavar="SECONDS",
    help="Give up (exit 5) if running realizations hold the store longer than this.",
)
@output_options(json_help="Print the report as one JSON object.")
@root_option
@pass_env
def verify_command(
    env: Env, check_contents: bool, repair: bool, timeout: float | None, fmt: str
) -> None:
    """Check the catalogue against the tree; exit 4 if problems remain.

    Checks that every realization's folder exists, nothing in the tree is
    unregistered, contexts and configs match, SQLite's integrity and foreign
    keys; with --check-contents, that every artifact still hashes to its RRef.

    \b
    Examples:
      lightstore verify
      lightstore verify --check-contents
      lightstore verify --repair --json
    """
    from lightstore.maintenance.verify import verify

    store = env.store(repair=repair)
    report = call_with_progress(
        verify,
        "verifying",
        store,
        check_contents=check_contents,
        repair=repair,
        timeout=timeout,
    )
    rows = [asdict(p) for p in report.problems]
    if fmt in ("json",):
        emit_json(
            {
                "ok": report.ok,
                "derivations": report.derivations,
                "realizations": report.realizations,
                "problems": rows,
            }
        )
    else:
        if rows or fmt != "table":
            emit_rows(rows, ["kind", "ref", "detail", "repaired", "action"], fmt)
        if fmt == "table":
            fixed = sum(1 for p in report.problems if p.repaired)
            echo(
                f"checked {report.derivations} derivation(s) and {report.realizations} "
                f"realization(s): {len(rows)} problem(s)"
                + (f", {fixed} repaired" if repair else "")
                + ("" if report.ok else "; run `lightstore verify --repair`" if not repair else "")
            )
    if not report.ok:
        raise click.exceptions.Exit(EXIT_PROBLEMS)


@click.command("reindex")
@root_option
@click.option(
    "--force",
    is_flag=True,
    help="Rebuild even a catalogue written by a newer lightstore (what only it recorded is lost).",
)
@pass_env
def reindex_command(env: Env, force: bool) -> None:
    """Rebuild the catalogue from the tree (configs, contexts, pins); exit 4 if some objects
    had to be left out.

    Works when the catalogue is damaged or deleted. The old catalogue is kept
    beside the new one. Build records and the records of collected objects
    (`history --all`) are not in the tree, so the new catalogue does not have
    them; query the old one for them. Registered symlinks are carried over when the
    old catalogue can be read.

    \b
    Examples:
      lightstore reindex
      lightstore --root /data/store reindex

    A catalogue written by a newer lightstore is refused (exit 5) unless --force.
    """
    from lightstore.maintenance.reindex import reindex

    if not os.path.isdir(os.path.join(env.root, OBJECTS_DIR)):
        raise StoreNotFoundError(f"no lightstore store at {env.root} (no objects/ folder)")
    env.close()
    report = call_with_progress(reindex, "reindexing", env.root, force=force)
    if report.old_catalogue:
        echo(f"kept the old catalogue as {report.old_catalogue}")
    for p in report.skipped:
        echo(f"left out {p.ref}: {p.detail}", err=True)
    echo(
        f"recorded {report.derivations} derivation(s), {report.realizations} realization(s), "
        f"{report.pins} pin(s)" + (f"; left out {len(report.skipped)}" if report.skipped else "")
    )
    if report.skipped:
        raise click.exceptions.Exit(EXIT_PROBLEMS)


COMMANDS = [
    init_command,
    pin_command,
    unpin_command,
    gc_command,
    forget_command,
    verify_command,
    reindex_command,
]
