"""What every command shares: the store root, how stores are opened, and exit statuses.

Exit statuses (also in ``lightstore --help`` and docs/cli.md):

    0  success
    1  internal error (a bug in lightstore: the traceback is printed)
    2  bad input: usage, a malformed reference, an ambiguous prefix, bad SQL,
       a write attempted through `sql`, a bad archive, a malformed key
    3  not found: no store at the root, an unknown reference, pin or file
    4  `verify` found problems it did not repair
    5  refused: the store is locked, read-only, damaged, newer than this
       lightstore, or the operation would break its references
"""

from __future__ import annotations

import os
import sqlite3
import traceback
from collections.abc import Callable
from typing import Any

import click

from lightstore.catalogue import translate_error
from lightstore.cli.output import echo_text, terminal_safe
from lightstore.facade import Store
from lightstore.foundation.errors import (
    ArchiveError,
    ChecksumError,
    InvalidConfigError,
    InvalidKeyError,
    InvalidReferenceError,
    LightstoreError,
    StoreNotFoundError,
    UnknownReferenceError,
    disk_full,
)
from lightstore.query import QueryError, open_view
from lightstore.store.default_root import ROOT_VARIABLE, default_root
from lightstore.store.layout import CATALOGUE_FILE
from lightstore.store.view import StoreView

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_BAD_INPUT = 2
EXIT_NOT_FOUND = 3
EXIT_PROBLEMS = 4
EXIT_REFUSED = 5

EXIT_STATUS_HELP = """\b
Exit status:
  0  success
  1  internal error (a bug: please report it with the traceback)
  2  bad input (usage, malformed or ambiguous reference, bad SQL, bad archive or key)
  3  not found (no store at the root, unknown reference, pin or file)
  4  verify found problems it did not repair
  5  refused (store locked, read-only, damaged or newer; would break references)"""


class CliError(click.ClickException):
    """An error shown as ``Error: <message>`` with a chosen exit status.

    Messages quote file names, config values and references, so each line is shown
    `terminal_safe`, and indented after the first.
    """

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code  # type: ignore[misc]  # a class default in click

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.message, self.exit_code)

    def format_message(self) -> str:
        # A line after the first is indented, so that a newline inside a value (a path, a
        # name) cannot start a line that passes for another message ("Error: ...").
        first, *rest = (terminal_safe(line) for line in self.message.split("\n"))
        return "\n".join([first, *(ln if ln[:1] in ("", " ") else "  " + ln for ln in rest)])


def exit_code_for(error: LightstoreError) -> int:
    """The exit status for a library error."""
    if isinstance(error, (UnknownReferenceError, StoreNotFoundError)):
        return EXIT_NOT_FOUND
    if isinstance(
        error,
        (
            InvalidReferenceError,
            InvalidConfigError,
            InvalidKeyError,
            QueryError,
            ArchiveError,
            ChecksumError,
        ),
    ):
        return EXIT_BAD_INPUT
    return EXIT_REFUSED


class LightstoreGroup(click.Group):
    """A click group that turns library errors into messages and exit statuses."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort, BrokenPipeError):
            raise
        except LightstoreError as e:
            raise CliError(str(e), exit_code_for(e)) from e
        except sqlite3.Error as e:
            # A safety net for reads that went to SQLite directly.
            env = ctx.find_object(Env)
            path = os.path.join(env.root, CATALOGUE_FILE) if env else "the catalogue"
            error = translate_error(e, path, f"running `lightstore {ctx.invoked_subcommand}`")
            raise CliError(str(error), exit_code_for(error)) from e
        except Exception as e:
            full = disk_full(e, f"running `{ctx.invoked_subcommand}`")
            if full is not None:
                raise CliError(str(full), EXIT_REFUSED) from e
            echo_text(traceback.format_exc().rstrip("\n"), err=True)
            raise CliError(
                f"internal error: {type(e).__name__}: {e}\n"
                "This is a bug in lightstore; please report it with the traceback above.",
                EXIT_INTERNAL,
            ) from e


class Env:
    """The store a command works on; `view()` for reading, `store()` for changing it."""

    def __init__(self, root: str | None) -> None:
        self.root = os.path.abspath(os.path.expanduser(root)) if root else default_root()
        self._view: StoreView | None = None

    def view(self) -> StoreView:
        """A read-only view of the store (no locks, no writes); raises StoreNotFoundError."""
        if self._view is None:
            self._view = open_view(self.root)
        return self._view

    def store(self, create: bool = False, repair: bool = False) -> Store:
        """The store, opened for writing (migrated and recovered); see `LocalStore.open`."""
        return Store.open(self.root, create=create, repair=repair)

    def close(self) -> None:
        if self._view is not None:
            self._view.catalogue.close()
            self._view = None


def _set_root(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    if value is not None:
        env = ctx.find_object(Env)
        if env is not None:
            env.root = os.path.abspath(os.path.expanduser(value))
            env.close()


def root_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Also accept ``--root`` after the command name (``lightstore init --root DIR``)."""
    return click.option(
        "--root",
        metavar="DIR",
        expose_value=False,
        callback=_set_root,
        help=f"The store's root folder (as `lightstore --root`; default ${ROOT_VARIABLE}).",
    )(fn)


#: ``--all``/``-a`` of the commands that designate one run (show, log, diff).
collected_option = click.option(
    "--all",
    "-a",
    "include_collected",
    is_flag=True,
    help="Let a selector (train@latest) pick a collected run too (a reference or hash "
    "prefix finds one without it).",
)

pass_env = click.make_pass_decorator(Env)
