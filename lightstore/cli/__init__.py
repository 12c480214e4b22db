"""The `lightstore` command: a thin layer over the Python API.

Each command parses its options, calls one function of the library
(`lightstore.query` for questions, `Store` and `lightstore.maintenance` for
changes, `lightstore.exchange` for archives) and formats the result. Commands
live in small modules: `inspect` (ls, history, du, roots), `show`, `annotate`
(metrics, tags, notes), `graph` (deps, referrers, graph), `diff`, `cat`, `log`,
`builds` (builds, cancel), `maintain` (changing), `sql`, `exchange`, `remote`,
`demo`, `ui`; shared pieces in `context` (store, errors, exit statuses) and
`output` (tables, JSON, CSV, progress bars).
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version

import click

from lightstore.cli import (
    annotate,
    builds,
    cat,
    demo,
    diff,
    exchange,
    graph,
    inspect,
    log,
    maintain,
    remote,
    show,
    sql,
    ui,
)
from lightstore.cli.context import EXIT_STATUS_HELP, Env, LightstoreGroup

__all__ = ["cli", "main"]


def _version() -> str:
    try:
        return version("lightstore")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        from lightstore import __version__

        return __version__


@click.group(
    cls=LightstoreGroup,
    epilog=EXIT_STATUS_HELP,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.option(
    "--root",
    metavar="DIR",
    envvar="LIGHTSTORE_ROOT",
    show_envvar=True,
    help="The store's root folder (default: $LIGHTSTORE_ROOT, else ~/.local/share/lightstore).",
)
@click.version_option(_version(), "--version", "-V", prog_name="lightstore")
@click.pass_context
def cli(ctx: click.Context, root: str | None) -> None:
    """lightstore: a content-addressed store of experiment results, with a SQLite catalogue.

    Every command takes --root (before or after the command name). Run
    `lightstore COMMAND --help` for each command's options and examples.

    \b
    References (REF) are any of:
      dref:... / rref:...     a full reference
      3fa2c9d1                a unique prefix of its hash (4+ hex digits, as with git)
      3fa2c9d1-1b7e04aa       a realization's hash, '-', a prefix of its derivation's hash
      best-model              a pin name, or a derivation name only one derivation has
      train@latest            the newest run (realization) of the derivations named train
      train@all               every run of them (commands taking REF... use them all)
      train@lr=0.01           the derivations named train whose config has lr = 0.01
      'train[lr<1e-3,model.depth=4]@latest'   several conditions (quote [ ] < > for the shell)
    Conditions are FIELD OP VALUE with OP one of = != < <= > >=; FIELD may be
    dotted (model.depth); VALUE is JSON when it parses (0.01, 4, true, null,
    "1" for the text 1), else text. Names may be globs: 'eval*@all'.

    \b
    Examples:
      lightstore --root ./store init
      lightstore history --name train --field lr --since 7d
      lightstore sql "SELECT name, count(*), sum(size) FROM history GROUP BY name"
    """
    env = Env(root)
    ctx.obj = env
    ctx.call_on_close(env.close)


for _module in (
    maintain,
    inspect,
    show,
    annotate,
    graph,
    diff,
    cat,
    log,
    builds,
    sql,
    exchange,
    remote,
    demo,
    ui,
):
    for _command in _module.COMMANDS:
        cli.add_command(_command)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with `argv` (default: sys.argv); return the exit status."""
    try:
        cli.main(args=list(argv) if argv is not None else None, prog_name="lightstore")
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    return 0
