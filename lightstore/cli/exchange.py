"""`lightstore pack` and `lightstore unpack`: moving realizations between stores."""

from __future__ import annotations

import json
import os
import time

import click

from lightstore.cli.context import EXIT_NOT_FOUND, CliError, Env, pass_env, root_option
from lightstore.cli.output import call_with_progress, echo, human_size
from lightstore.exchange import pack, unpack
from lightstore.foundation.refs import RRef, isrref
from lightstore.query import resolve_all


@click.command("pack")
@click.argument("out", metavar="OUT")
@click.argument("refs", metavar="REF...", nargs=-1, required=True)
@root_option
@pass_env
def pack_command(env: Env, out: str, refs: tuple[str, ...]) -> None:
    """Pack REF... and everything they depend on into the archive OUT.

    The format follows OUT's name: .zip, .tar, .tar.gz or .tgz. A derivation
    stands for all its realizations. Unpack it into another store with
    `lightstore unpack`.

    \b
    Examples:
      lightstore pack results.tar.gz 3fa2c9d1
      lightstore pack train-runs.zip train@all
    """
    view = env.view()
    rrefs: list[RRef] = []
    for ref in resolve_all(view, refs):
        found = [RRef(ref)] if isrref(ref) else view.catalogue.realizations_any_context(ref)
        if not found:
            raise CliError(f"{ref} has no realizations to pack", EXIT_NOT_FOUND)
        rrefs += [r for r in found if r not in rrefs]
    # Packed under the store's shared lock, so that a gc waits rather than deleting midway.
    call_with_progress(pack, "packing", env.store(), rrefs, out)
    closure = len(set(rrefs) | view.catalogue.rrefdeps(rrefs))
    echo(
        f"packed {len(rrefs)} realization(s) ({closure} with dependencies) into {out} "
        f"({human_size(os.path.getsize(out))})"
    )


@click.command("unpack")
@click.argument("archive")
@root_option
@pass_env
def unpack_command(env: Env, archive: str) -> None:
    """Add the realizations in ARCHIVE (made by `lightstore pack`) to the store.

    Every hash is checked; an archive that is damaged, unsafe or lying leaves
    the store unchanged (exit 2). Prints the packed realizations' RRefs
    (marking those the store already had), then on stderr how many
    realizations were added and how many were already present.

    \b
    Examples:
      lightstore unpack results.tar.gz
      lightstore --root ./bob unpack alice.zip
    """
    if not os.path.isfile(archive):
        raise CliError(f"no such archive: {archive}", EXIT_NOT_FOUND)
    store = env.store()
    # What was there before: objects recorded before this command started.
    started = time.time()
    rrefs = call_with_progress(unpack, "unpacking", store, archive)
    everything = sorted(set(rrefs) | store.catalogue.rrefdeps(rrefs))
    created: dict[str, float] = dict(
        store.catalogue.query(
            "SELECT rref, created FROM realizations WHERE rref IN (SELECT value FROM json_each(?))",
            (json.dumps(everything),),
        )
    )
    old = {r for r in everything if created.get(r, started) < started}
    for r in rrefs:
        echo(r + ("  (already present)" if r in old else ""))
    new = len(everything) - len(old)
    echo(
        f"added {new} realization(s); {len(old)} of the {len(everything)} in the archive's "
        "closure were already present"
        if old
        else f"added {new} realization(s)",
        err=True,
    )


COMMANDS = [pack_command, unpack_command]
