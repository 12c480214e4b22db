"""The dependency graph around objects: neighbours, closures, trees and Graphviz DOT.

One recursive CTE collects every edge of a closure; trees and DOT are drawn
from those edges in Python, so a deep graph costs one statement.

Every function takes a `Store` and any reference the command line accepts
(hash prefix, pin, name, selector: see `lightstore.query.resolve`). A
`Catalogue` is still accepted for compatibility, with full references only.

Nodes that share a name (the runs of a sweep) are labelled with the config
fields whose values differ among them (``train 3fa2c9d1 lr=0.01 seed=1``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from lightstore.catalogue import Catalogue
from lightstore.foundation.errors import InvalidReferenceError
from lightstore.foundation.refs import isdref, isrref, rref2dref
from lightstore.store.view import StoreView

#: At most this many differing fields per label, each value cut to `_MAX_VALUE` characters.
MAX_LABEL_FIELDS = 4
_MAX_VALUE = 24

# (edge table, source column) per kind; fixed strings, never user input.
_TABLES = {"dref": ("derivation_deps", "dref"), "rref": ("realization_deps", "rref")}


def kind_of(ref: str) -> str:
    """'rref' or 'dref'."""
    return "rref" if isrref(ref) else "dref"


def _check_same_kind(refs: Sequence[str]) -> str:
    kinds = {kind_of(r) for r in refs}
    if len(kinds) != 1:
        raise InvalidReferenceError(
            "give either derivations or realizations, not both (a graph has one kind of node)"
        )
    return kinds.pop()


StoreLike = StoreView | Catalogue


def _catalogue(store: StoreLike) -> Catalogue:
    return store.catalogue if isinstance(store, StoreView) else store


def _targets(store: StoreLike, refs: str | Sequence[str]) -> list[str]:
    """Resolve what a user typed (with a StoreView), or take full references (with a Catalogue)."""
    texts = [refs] if isinstance(refs, str) else list(refs)
    if isinstance(store, StoreView):
        from lightstore.query.resolve import resolve_all

        return [str(r) for r in resolve_all(store, texts)]
    return texts


def _target(store: StoreLike, ref: str) -> str:
    if isinstance(store, StoreView):
        from lightstore.query.resolve import resolve

        return str(resolve(store, ref))
    return ref


def neighbours(store: StoreLike, ref: str, reverse: bool = False) -> list[str]:
    """Direct dependencies of `ref` (or, with `reverse`, the objects that depend on it directly).

    Raises UnknownReferenceError / AmbiguousReferenceError / InvalidReferenceError
    for a reference that designates no single object.
    """
    catalogue = _catalogue(store)
    ref = _target(store, ref)
    table, src = _TABLES[kind_of(ref)]
    a, b = (src, "dep") if not reverse else ("dep", src)
    return catalogue.column(f"SELECT {b} FROM {table} WHERE {a} = ? ORDER BY {b}", (ref,))


def closure_edges(
    store: StoreLike, refs: str | Sequence[str], reverse: bool = False
) -> list[tuple[str, str]]:
    """Every edge (user, dependency) reachable from `refs`, following dependencies
    (or, with `reverse`, following users). One recursive CTE; CROSS JOIN keeps the
    closure as the outer loop (SQLite otherwise scanned every edge of the store: 3.4 s
    instead of 0.07 s for the 11,000 users of a popular realization among a million).

    Raises ValueError if `refs` mixes derivations and realizations.
    """
    catalogue = _catalogue(store)
    refs = _targets(store, refs)
    if not refs:
        return []
    table, src = _TABLES[_check_same_kind(refs)]
    a, b = (src, "dep") if not reverse else ("dep", src)
    sql = f"""
    WITH RECURSIVE reach(node) AS (
      SELECT value FROM json_each(?)
      UNION SELECT e.{b} FROM {table} AS e JOIN reach ON e.{a} = reach.node
    )
    SELECT e.{src}, e.dep FROM reach CROSS JOIN {table} AS e ON e.{a} = reach.node
    ORDER BY e.{src}, e.dep"""
    return [(u, d) for u, d in catalogue.query(sql, (json.dumps(list(refs)),))]


def closure(store: StoreLike, refs: str | Sequence[str], reverse: bool = False) -> list[str]:
    """Everything `refs` depend on (or, with `reverse`, everything that depends on them), sorted."""
    refs = _targets(store, refs)
    edges = closure_edges(_catalogue(store), refs, reverse)
    found = {d for _, d in edges} if not reverse else {u for u, _ in edges}
    return sorted(found - set(refs))


def label(ref: str, short: str | None = None) -> str:
    """A short label: ``name 3fa2c9d1`` (the name and the first hex digits of its own hash,
    or `short`: its shortest unique form, `lightstore.query.resolve.short_refs`)."""
    body = ref.split(":", 1)[1]
    return f"{body.rsplit('-', 1)[1]} {short or body[:8]}"


def flatten(config: Any, prefix: str = "") -> dict[str, Any]:
    """A config as ``{"model.depth": 4, ...}``: nested dicts become dotted keys (a key with a
    dot of its own is quoted: ``"model.depth"``)."""
    if not isinstance(config, dict):
        return {prefix: config}
    out: dict[str, Any] = {}
    for key, value in config.items():
        # A key with a dot of its own is quoted, so {"a.b": 1} and {"a": {"b": 2}} differ.
        part = json.dumps(key) if "." in str(key) or str(key).startswith('"') else str(key)
        path = f"{prefix}.{part}" if prefix else part
        if isinstance(value, dict) and value:
            out.update(flatten(value, path))
        else:
            out[path] = value
    return out


def _short_value(value: Any) -> str:
    if isinstance(value, str) and (isdref(value) or isrref(value)):
        return label(value).replace(" ", ":")
    if isinstance(value, list) and value and isinstance(value[0], str) and isdref(value[0]):
        return label(value[0]).replace(" ", ":") + "/" + "/".join(map(str, value[1:]))
    text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
    return text if len(text) <= _MAX_VALUE else text[: _MAX_VALUE - 1] + "…"


def differing_fields(configs: Sequence[dict[str, Any]]) -> list[str]:
    """The (dotted) config fields whose values are not the same in all of `configs`, sorted."""
    flat = [flatten(c) for c in configs]
    keys = sorted({k for f in flat for k in f})
    missing = object()
    return [k for k in keys if len({json.dumps(f.get(k, missing), default=str) for f in flat}) > 1]


def labels(store: StoreLike, refs: Sequence[str]) -> dict[str, str]:
    """A label per reference: `label` with the reference's shortest unique form, plus
    ``field=value`` for the config fields that differ among the objects of the same name
    in `refs` (at most `MAX_LABEL_FIELDS`).
    """
    bases, extra = _labels(store, refs)
    return {r: bases[r] + (f"  {extra[r]}" if extra.get(r) else "") for r in refs}


def _labels(store: StoreLike, refs: Sequence[str]) -> tuple[dict[str, str], dict[str, str]]:
    """Each reference's `label` (with its shortest unique form), and the differing fields
    of its config (see `labels`)."""
    from lightstore.query.shortrefs import short_refs

    catalogue = _catalogue(store)
    shorts = short_refs(catalogue, refs)
    drefs = {r: (rref2dref(r) if isrref(r) else r) for r in refs}
    rows = catalogue.query(
        "SELECT dref, config FROM derivations WHERE dref IN (SELECT value FROM json_each(?))",
        (json.dumps(sorted(set(drefs.values()))),),
    )
    configs = {d: json.loads(c) for d, c in rows}
    by_name: dict[str, set[str]] = {}
    for d in configs:
        by_name.setdefault(d.rsplit("-", 1)[1], set()).add(d)
    extra: dict[str, str] = {}
    for group in by_name.values():
        if len(group) < 2:
            continue
        ordered = sorted(group)
        fields = differing_fields([configs[d] for d in ordered])
        for d in ordered:
            flat = flatten(configs[d])
            shown = [
                f"{k}={_short_value(flat[k])}" if k in flat else f"{k}=-"
                for k in fields[:MAX_LABEL_FIELDS]
            ]
            if len(fields) > MAX_LABEL_FIELDS:
                shown.append("…")
            extra[d] = " ".join(shown)
    bases = {r: label(r, shorts.get(r)) for r in refs}
    return bases, {r: extra[d] for r, d in drefs.items() if extra.get(d)}


def tree_lines(store: StoreLike, ref: str, reverse: bool = False, full: bool = False) -> list[str]:
    """The dependency (or referrer) tree of `ref`, drawn with box characters.

    Nodes sharing a name show the config fields that differ among them. A
    subtree already drawn is not repeated: its root is marked ``(see above)``.
    """
    ref = _target(store, ref)
    children: dict[str, list[str]] = {}
    edges = closure_edges(_catalogue(store), [ref], reverse)
    for user, dep in edges:
        parent, child = (user, dep) if not reverse else (dep, user)
        children.setdefault(parent, []).append(child)
    bases, extra = _labels(store, sorted({ref} | {u for u, _ in edges} | {d for _, d in edges}))

    def show(r: str) -> str:
        fields = f"  {extra[r]}" if r in extra else ""
        return (r if full else bases[r]) + fields

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


def _dot_text(text: str) -> str:
    """Text for inside a double-quoted DOT label (config values may hold quotes)."""
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ")


def dot(store: StoreLike, refs: str | Sequence[str], reverse: bool = False) -> str:
    """Graphviz DOT of the closure of `refs`: one node per object, an edge from each
    object to each of its dependencies. With `reverse`, the closure of users instead.
    Nodes sharing a name get a third label line with the config fields that differ.
    """
    refs = _targets(store, refs)
    edges = closure_edges(_catalogue(store), refs, reverse)
    nodes = sorted(set(refs) | {u for u, _ in edges} | {d for _, d in edges})
    bases, extra = _labels(store, nodes)
    lines = [
        "digraph lightstore {",
        "  rankdir=BT;",
        '  node [fontname="monospace", fontsize=10];',
    ]
    for n in nodes:
        shape = "box" if kind_of(n) == "rref" else "ellipse"
        style = ", penwidth=2" if n in refs else ""
        name, short = bases[n].split(" ")
        fields = extra.get(n, "")
        text = f"{name}\\n{short}" + (f"\\n{_dot_text(fields)}" if fields else "")
        lines.append(f'  {_dot_id(n)} [label="{text}", shape={shape}{style}];')
    for user, dep in edges:
        lines.append(f"  {_dot_id(user)} -> {_dot_id(dep)};")
    lines.append("}")
    return "\n".join(lines) + "\n"
