"""`lightstore ui`: the read-only experiment browser (Datasette; the optional extra `ui`)."""

from __future__ import annotations

import click

from lightstore.cli.context import EXIT_REFUSED, CliError, Env, pass_env, root_option


@click.command("ui")
@click.option(
    "--port", type=click.IntRange(0, 65535), default=8001, show_default=True,
    help="Port to listen on (0: any free port; the URL is printed).",
)  # fmt: skip
@click.option(
    "--host", default="127.0.0.1", show_default=True,
    help="Address to listen on. Anything but loopback exposes the store: a warning says what.",
)  # fmt: skip
@click.option("--open", "open_browser", is_flag=True, help="Open the browser at the URL.")
@root_option
@pass_env
def ui_command(env: Env, port: int, host: str, open_browser: bool) -> None:
    """Browse the store's experiments in a web browser, read-only (Ctrl-C stops it).

    Pages: stages (runs, last run, failures, size), a stage's runs with every
    config field, metric and upstream stage's field as sortable, faceted
    columns (what varies first), a chart with log axes and colour by a field,
    parallel coordinates, runs compared side by side with their curves, a run
    (config, context, files, images, build log, lineage graph), failed builds
    with their configs, pins, disk use, and Datasette's read-only SQL editor
    on the catalogue. Listens on 127.0.0.1 unless --host says otherwise.
    Needs Datasette, Plotly and grandalf: `pip install 'lightstore[ui]'`.

    \b
    Examples:
      lightstore ui
      lightstore ui --port 8080 --open
    """
    try:
        import datasette  # noqa: F401 - only to say which extra is missing
    except ImportError:
        raise CliError(
            "`lightstore ui` needs Datasette, which is not installed; install it with "
            "`pip install 'lightstore[ui]'`",
            EXIT_REFUSED,
        ) from None
    from lightstore.ui import serve

    env.view()  # a missing store is reported like every other command's
    serve(env.root, host=host, port=port, open_browser=open_browser, say=click.echo)


COMMANDS = [ui_command]
