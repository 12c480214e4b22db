"""Commands that change the store: init, pin, unpin, gc, verify, reindex."""

from __future__ import annotations

import os
from dataclasses import asdict

import click

from lightstore.cli.context import (
    EXIT_NOT_FOUND,
    EXIT_PROBLEMS,
    CliError,
    Env,
    pass_env,
    root_option,
)
from lightstore.cli.output import (
    call_with_progress,
    emit_json,
    emit_rows,
    human_size,
    output_options,
)
from lightstore.errors import StoreNotFoundError
from lightstore.query import resolve, sizes_of
from lightstore.query.readonly import catalogue_path


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
        click.echo(f"a store is already at {store.root}")
    else:
        click.echo(f"created an empty store at {store.root}")


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
    click.echo(f"pinned {name} -> {target}")


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
    click.echo(f"unpinned {name}")


@click.command("gc")
@click.option("--dry-run", "-n", is_flag=True, help="Only show what would be removed.")
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
def gc_command(env: Env, dry_run: bool, quiet: bool, as_json: bool, timeout: float | None) -> None:
    """Delete everything the GC roots do not need, and show what went and the bytes freed.

    Roots are pins, live symlinks made by linkrref/linkdref, and the inputs of
    running builds; gc keeps their closures. It waits for running
    realizations to finish.

    \b
    Examples:
      lightstore gc --dry-run
      lightstore gc
      lightstore gc --json > gc-report.json
    """
    store = env.store()
    report = call_with_progress(store.gc, "collecting", dry_run=dry_run, timeout=timeout)
    if as_json:
        emit_json(asdict(report))
        return
    verb = "would remove" if dry_run else "removed"
    if not quiet:
        sizes = sizes_of(store, report.rrefs) if dry_run else {}
        for rref in report.rrefs:
            size = sizes.get(rref)
            click.echo(f"{verb} {rref}" + (f"  ({human_size(size)})" if size is not None else ""))
        for dref in report.drefs:
            click.echo(f"{verb} {dref}")
        for link in report.stale_links:
            click.echo(f"{'would forget' if dry_run else 'forgot'} stale link {link}")
    click.echo(
        f"{verb} {len(report.rrefs)} realization(s) and {len(report.drefs)} derivation(s); "
        f"{'would free' if dry_run else 'freed'} {human_size(report.bytes_freed)} "
        f"({report.bytes_freed} bytes)"
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

    store = env.store()
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
            click.echo(
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
    beside the new one. Build records and symlink roots cannot be recovered.

    \b
    Examples:
      lightstore reindex
      lightstore --root /data/store reindex

    A catalogue written by a newer lightstore is refused (exit 5) unless --force.
    """
    from lightstore.maintenance.verify import reindex

    if not os.path.isdir(os.path.join(env.root, "objects")):
        raise StoreNotFoundError(f"no lightstore store at {env.root} (no objects/ folder)")
    env.close()
    report = call_with_progress(reindex, "reindexing", env.root, force=force)
    if report.old_catalogue:
        click.echo(f"kept the old catalogue as {report.old_catalogue}")
    for p in report.skipped:
        click.echo(f"left out {p.ref}: {p.detail}", err=True)
    click.echo(
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
    verify_command,
    reindex_command,
]
