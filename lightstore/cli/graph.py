"""Commands that follow references: deps, referrers, graph.

Like the other reading commands they use a read-only view of the catalogue.
"""

from __future__ import annotations

from typing import Any

import click

from lightstore.cli.context import Env, pass_env, root_option
from lightstore.cli.output import echo
from lightstore.query import closure, dot, neighbours, resolve, resolve_all, tree_lines


def _graph_command(reverse: bool) -> Any:
    what = "what REF uses" if not reverse else "what uses REF"

    @click.option("--closure", "-a", "whole", is_flag=True, help="All of them, transitively.")
    @click.option("--tree", "-t", is_flag=True, help="Draw the whole closure as a tree.")
    @click.option("--full", is_flag=True, help="Full references in the tree.")
    @click.argument("ref")
    @root_option
    @pass_env
    def command(env: Env, ref: str, whole: bool, tree: bool, full: bool) -> None:
        view = env.view()
        target = resolve(view, ref)
        if tree:
            lines = tree_lines(view.catalogue, target, reverse=reverse, full=full)
        elif whole:
            lines = closure(view.catalogue, [target], reverse=reverse)
        else:
            lines = neighbours(view.catalogue, target, reverse=reverse)
        for line in lines:
            echo(line)

    command.__doc__ = f"""List {what}: direct by default, --closure for all, --tree to draw them.

    A derivation's edges come from its config; a realization's from its
    context (the dependency realizations it was built on).

    \b
    Examples:
      lightstore {"referrers" if reverse else "deps"} 3fa2c9d1
      lightstore {"referrers" if reverse else "deps"} --closure dref:3fa2
      lightstore {"referrers" if reverse else "deps"} --tree train
    """
    return click.command("referrers" if reverse else "deps")(command)


deps_command = _graph_command(reverse=False)


referrers_command = _graph_command(reverse=True)


@click.command("graph")
@click.argument("refs", metavar="REF...", nargs=-1, required=True)
@click.option("--referrers", is_flag=True, help="Draw what uses REF instead of what REF uses.")
@root_option
@pass_env
def graph_command(env: Env, refs: tuple[str, ...], referrers: bool) -> None:
    """Print the dependency graph of REF as Graphviz DOT.

    One node per derivation (ellipse) or realization (box), an edge from each
    object to each of its dependencies. Give DRefs or RRefs, not both.

    \b
    Examples:
      lightstore graph 3fa2c9d1 | dot -Tpng > graph.png
      lightstore graph --referrers dref:1b7e > users.dot
    """
    view = env.view()
    targets = resolve_all(view, refs)
    kinds = {t.split(":", 1)[0] for t in targets}
    if len(kinds) > 1:
        raise click.UsageError("give either derivations or realizations, not both")
    click.echo(dot(view.catalogue, targets, reverse=referrers), nl=False)  # DOT: for programs


COMMANDS = [deps_command, referrers_command, graph_command]
