"""The dependency graph around objects: neighbours, closures, trees and Graphviz DOT.

One recursive CTE collects every edge of a closure; trees and DOT are drawn
from those edges in Python, so a deep graph costs one statement.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from lightstore.catalogue import Catalogue
from lightstore.refs import isrref

# (edge table, source column) per kind; fixed strings, never user input.
_TABLES = {"dref": ("derivation_deps", "dref"), "rref": ("realization_deps", "rref")}


def kind_of(ref: str) -> str:
    """'rref' or 'dref'."""
    return "rref" if isrref(ref) else "dref"


def _check_same_kind(refs: Sequence[str]) -> str:
    kinds = {kind_of(r) for r in refs}
    if len(kinds) != 1:
        raise ValueError("give either DRefs or RRefs, not both")
    return kinds.pop()


def neighbours(catalogue: Catalogue, ref: str, reverse: bool = False) -> list[str]:
    """Direct dependencies of `ref` (or, with `reverse`, the objects that depend on it directly)."""
    table, src = _TABLES[kind_of(ref)]
    a, b = (src, "dep") if not reverse else ("dep", src)
    return catalogue.column(f"SELECT {b} FROM {table} WHERE {a} = ? ORDER BY {b}", (ref,))


def closure_edges(
    catalogue: Catalogue, refs: Sequence[str], reverse: bool = False
) -> list[tuple[str, str]]:
    """Every edge (user, dependency) reachable from `refs`, following dependencies
    (or, with `reverse`, following users). One recursive CTE.
    """
    if not refs:
        return []
    table, src = _TABLES[_check_same_kind(refs)]
    a, b = (src, "dep") if not reverse else ("dep", src)
    sql = f"""
    WITH RECURSIVE reach(node) AS (
      SELECT value FROM json_each(?)
      UNION SELECT e.{b} FROM {table} AS e JOIN reach ON e.{a} = reach.node
    )
    SELECT e.{src}, e.dep FROM {table} AS e JOIN reach ON e.{a} = reach.node
    ORDER BY e.{src}, e.dep"""
    return [(u, d) for u, d in catalogue.query(sql, (json.dumps(list(refs)),))]


def closure(catalogue: Catalogue, refs: Sequence[str], reverse: bool = False) -> list[str]:
    """Everything `refs` depend on (or, with `reverse`, everything that depends on them), sorted."""
    edges = closure_edges(catalogue, refs, reverse)
    found = {d for _, d in edges} if not reverse else {u for u, _ in edges}
    return sorted(found - set(refs))


def label(ref: str) -> str:
    """A short label: ``name 3fa2c9d1`` (the name and the first hex digits of its own hash)."""
    body = ref.split(":", 1)[1]
    return f"{body.rsplit('-', 1)[1]} {body[:8]}"


def tree_lines(
    catalogue: Catalogue, ref: str, reverse: bool = False, full: bool = False
) -> list[str]:
    """The dependency (or referrer) tree of `ref`, drawn with box characters.

    A subtree already drawn is not repeated: its root is marked ``(see above)``.
    """
    children: dict[str, list[str]] = {}
    for user, dep in closure_edges(catalogue, [ref], reverse):
        parent, child = (user, dep) if not reverse else (dep, user)
        children.setdefault(parent, []).append(child)
    show = (lambda r: r) if full else label
    lines = [show(ref)]
    seen = {ref}

    # An explicit stack, not recursion: a chain of thousands of stages is legitimate.
    stack: list[tuple[str, str, int]] = [(ref, "", 0)]
    while stack:
        node, prefix, i = stack.pop()
        kids = children.get(node, [])
        if i >= len(kids):
            continue
        stack.append((node, prefix, i + 1))
        kid = kids[i]
        last = i == len(kids) - 1
        branch, extend = ("└── ", "    ") if last else ("├── ", "│   ")
        repeated = kid in seen and kid in children
        lines.append(prefix + branch + show(kid) + ("  (see above)" if repeated else ""))
        if not repeated:
            seen.add(kid)
            stack.append((kid, prefix + extend, 0))
    return lines


def _dot_id(ref: str) -> str:
    return json.dumps(ref)  # a double-quoted DOT id; refs hold no quotes or backslashes


def dot(catalogue: Catalogue, refs: Sequence[str], reverse: bool = False) -> str:
    """Graphviz DOT of the closure of `refs`: one node per object, an edge from each
    object to each of its dependencies. With `reverse`, the closure of users instead.
    """
    edges = closure_edges(catalogue, refs, reverse)
    nodes = sorted(set(refs) | {u for u, _ in edges} | {d for _, d in edges})
    lines = [
        "digraph lightstore {",
        "  rankdir=BT;",
        '  node [fontname="monospace", fontsize=10];',
    ]
    for n in nodes:
        shape = "box" if kind_of(n) == "rref" else "ellipse"
        style = ", penwidth=2" if n in refs else ""
        name, short = label(n).split(" ")
        lines.append(f'  {_dot_id(n)} [label="{name}\\n{short}", shape={shape}{style}];')
    for user, dep in edges:
        lines.append(f"  {_dot_id(user)} -> {_dot_id(dep)};")
    lines.append("}")
    return "\n".join(lines) + "\n"
