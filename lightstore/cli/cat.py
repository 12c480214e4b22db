"""The `cat` command: print a file of a realization, bytes as they are."""

from __future__ import annotations

import os
import shutil
import sys

import click

from lightstore.cli.context import EXIT_BAD_INPUT, CliError, Env, pass_env, root_option
from lightstore.query.compare import artifact_path


@click.command("cat")
@click.argument("ref")
@click.argument("path")
@root_option
@pass_env
def cat_command(env: Env, ref: str, path: str) -> None:
    """Print the file PATH of the realization REF (bytes as they are).

    REF must designate one realization (an RRef, NAME@latest, or a
    derivation with a single realization). PATH is relative to the
    realization's folder; '..', absolute paths and symlinks leading outside
    the realization are refused.

    \b
    Examples:
      lightstore cat train@latest logs/loss.txt
      lightstore cat 'train[lr=0.01]@latest' model.txt > model.txt
    """
    target = artifact_path(env.view(), ref, path)
    if os.path.isdir(target):
        names = sorted(os.listdir(target))
        raise CliError(
            f"{path!r} is a folder; its entries: {', '.join(names[:20]) or '(empty)'}"
            + (" ..." if len(names) > 20 else ""),
            EXIT_BAD_INPUT,
        )
    sys.stdout.flush()
    out = sys.stdout.buffer
    with open(target, "rb") as f:
        shutil.copyfileobj(f, out)
    out.flush()


COMMANDS = [cat_command]
