"""`lightstore demo`: the quick-start walk-through."""

from __future__ import annotations

import click

from lightstore.cli.context import EXIT_REFUSED, CliError, Env, pass_env, root_option


@click.command(
    "demo",
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    add_help_option=True,
)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@root_option
@pass_env
def demo_command(env: Env, args: tuple[str, ...]) -> None:
    """Run the quick-start demo: a cached three-stage optimization pipeline.

    It runs on the store at the root, then in two more stores ("Alice" and
    "Bob") and moves results between them. Needs numpy, scipy and matplotlib
    (`pip install 'lightstore[demo]'`). Other options go to the demo:
    --maxiter N, --workdir DIR.

    \b
    Examples:
      lightstore demo
      lightstore demo --maxiter 50 --workdir /tmp/demo
    """
    try:
        from lightstore.demo.quickstart import main
    except ImportError as e:
        raise CliError(
            f"the demo cannot start ({e}); install its dependencies with "
            "`pip install 'lightstore[demo]'`",
            EXIT_REFUSED,
        ) from e
    code = main(["--root", env.root, *args])
    if code:
        raise click.exceptions.Exit(code)


COMMANDS = [demo_command]
