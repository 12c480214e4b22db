"""The run page's lineage graph: a layered layout by grandalf (Sugiyama, as Graphviz's
``dot``), drawn as SVG on the server with every label escaped.

Upstream runs stand left, downstream right. An edge that spans several
layers passes through grandalf's placeholder slots, which the layout keeps
clear of boxes, so no edge crosses a box: between layers a line runs in the
gap, inside a layer only along its own slot.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from html import escape
from typing import Any

from lightstore.foundation.errors import LightstoreError

FONT_SIZE = 12
CHAR_W = 7.3  # the width of one character of a 12 px monospace font
LINE_H = 15
PAD_X, PAD_Y = 8, 6
GAP_LAYERS = 56  # between columns (layers)
GAP_NODES = 14  # between boxes of one column
MARGIN = 10
MAX_LINE = 40  # characters of a label line


def require_grandalf() -> Any:
    """The grandalf layouts module; LightstoreError naming the extra without it."""
    try:
        import grandalf.graphs
        import grandalf.layouts
    except ImportError as e:
        raise LightstoreError(
            f"the experiment browser needs grandalf to lay out graphs ({e}); install it with "
            "`pip install 'lightstore[ui]'`"
        ) from e
    return grandalf


@dataclass
class Box:
    """A node's box: top-left corner, size, and its label lines."""

    x: float
    y: float
    w: float
    h: float
    lines: list[str] = field(default_factory=list)


@dataclass
class Layout:
    """Boxes by node, each edge (user, dependency) as a polyline from the dependency's
    right side to the user's left side, and the size of the drawing."""

    boxes: dict[str, Box]
    edges: list[tuple[str, str, list[tuple[float, float]]]]
    width: float
    height: float


class _View:
    """What grandalf reads of a vertex: its size (w along a layer, h across) and position."""

    def __init__(self, w: float, h: float) -> None:
        self.w, self.h = w, h
        self.xy: tuple[float, float] = (0.0, 0.0)


def _cut(line: str) -> str:
    return line if len(line) <= MAX_LINE else line[: MAX_LINE - 1] + "…"


def layout(
    nodes: Sequence[str], edges: Sequence[tuple[str, str]], labels: Mapping[str, list[str]]
) -> Layout:
    """Lay out `nodes` with `edges` (user, dependency) left to right, dependencies first.

    `labels` gives each node's lines of text (the box is sized to them).
    """
    lib = require_grandalf()
    lines = {n: [_cut(t) for t in labels.get(n, [n])] or [n] for n in nodes}
    size = {
        n: (
            max(len(t) for t in lines[n]) * CHAR_W + 2 * PAD_X,
            len(lines[n]) * LINE_H + 2 * PAD_Y,
        )
        for n in nodes
    }
    vertices = {n: lib.graphs.Vertex(n) for n in nodes}
    for n, v in vertices.items():
        # grandalf stacks layers top to bottom; drawn left to right, its axes swap.
        v.view = _View(w=size[n][1], h=size[n][0])
    kept = [(u, d) for u, d in edges if u in vertices and d in vertices and u != d]
    graph_edges = {(u, d): lib.graphs.Edge(vertices[d], vertices[u]) for u, d in kept}
    graph = lib.graphs.Graph(list(vertices.values()), list(graph_edges.values()))
    boxes: dict[str, Box] = {}
    routes: list[tuple[str, str, list[tuple[float, float]]]] = []
    top = float(MARGIN)
    width = 0.0
    for component in graph.C:
        placed, paths, right, bottom = _component(lib, component, graph_edges, lines, top)
        boxes.update(placed)
        routes.extend(paths)
        width, top = max(width, right), bottom + GAP_NODES * 2
    return Layout(boxes, sorted(routes), width + MARGIN, top - GAP_NODES * 2 + MARGIN)


def _component(
    lib: Any,
    component: Any,
    graph_edges: Mapping[tuple[str, str], Any],
    lines: Mapping[str, list[str]],
    top: float,
) -> tuple[dict[str, Box], list[tuple[str, str, list[tuple[float, float]]]], float, float]:
    sug = lib.layouts.SugiyamaLayout(component)
    sug.xspace, sug.yspace = GAP_NODES, GAP_LAYERS
    sug.init_all(roots=[v for v in component.sV if not v.e_in()])
    # Every box of a column gets the column's width: edges leave and enter at its sides.
    for layer in sug.layers:
        thickness = max(v.view.h for v in layer)
        for v in layer:
            v.view.h = thickness
            if sug.grx[v] is v:  # a placeholder of a long edge: a thin slot
                v.view.w = 4.0
    sug.draw()
    _separate(sug)
    # Swap grandalf's axes: its layers (y) become columns (x).
    column = {}
    for rank, layer in enumerate(sug.layers):
        v = layer[0]
        column[rank] = (v.view.xy[1] - v.view.h / 2, v.view.xy[1] + v.view.h / 2)
    real = [v for v in component.sV]
    slots = [v for layer in sug.layers for v in layer]
    low = min(v.view.xy[0] - v.view.w / 2 for v in slots)
    shift_y = top - low
    shift_x = MARGIN - min(c[0] for c in column.values())
    boxes: dict[str, Box] = {}
    for v in real:
        cx, cy = v.view.xy
        boxes[v.data] = Box(
            x=cy - v.view.h / 2 + shift_x,
            y=cx - v.view.w / 2 + shift_y,
            w=v.view.h,
            h=v.view.w,
            lines=list(lines[v.data]),
        )
    paths = []
    for (user, dep), e in graph_edges.items():
        if e not in component.sE:
            continue
        d_rank, u_rank = sug.grx[e.v[0]].rank, sug.grx[e.v[1]].rank
        a, b = boxes[dep], boxes[user]
        points = [(a.x + a.w, a.y + a.h / 2)]
        for rank in range(d_rank + 1, u_rank):
            slot = sug.ctrls[e][rank]
            left, right = column[rank]
            y = slot.view.xy[0] + shift_y
            points += [(left + shift_x, y), (right + shift_x, y)]
        points.append((b.x, b.y + b.h / 2))
        paths.append((user, dep, points))
    right = max(c[1] for c in column.values()) + shift_x
    bottom = max(v.view.xy[0] + v.view.w / 2 for v in slots) + shift_y
    return boxes, paths, right, bottom


def _separate(sug: Any) -> None:
    """Push apart any two slots of a layer closer than their half sizes and the gap
    (grandalf averages four placements, which may bring two closer than either did)."""
    for layer in sug.layers:
        ordered = sorted(layer, key=lambda v: v.view.xy[0])
        for prev, v in itertools.pairwise(ordered):
            least = prev.view.xy[0] + (prev.view.w + v.view.w) / 2 + GAP_NODES
            if v.view.xy[0] < least:
                v.view.xy = (least, v.view.xy[1])


def svg(drawn: Layout, root: str, href: Callable[[str], str], titles: Mapping[str, str]) -> str:
    """The layout as inline SVG: a link per box (to `href(node)`, titled `titles[node]`),
    the root highlighted, edges as polylines with arrows. Every text is escaped."""
    if not drawn.boxes:
        return ""
    w, h = math.ceil(drawn.width), math.ceil(drawn.height)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="lineage" width="{w}" height="{h}" '
        f'viewBox="0 0 {w} {h}" role="img" aria-label="lineage graph">',
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" '
        'markerHeight="7" orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" '
        'fill="#888"/></marker></defs>',
    ]
    for user, dep, points in drawn.edges:
        text = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
        parts.append(
            f'<polyline class="edge" data-user="{escape(user)}" data-dep="{escape(dep)}" '
            f'points="{text}" fill="none" stroke="#888" marker-end="url(#arrow)"/>'
        )
    for node, box in sorted(drawn.boxes.items()):
        is_root = node == root
        fill, stroke = ("#ffe9a8", "#b8860b") if is_root else ("#eef3fb", "#5b7db1")
        parts.append(
            f'<a href="{escape(href(node))}"><g class="node{" root" if is_root else ""}" '
            f'data-ref="{escape(node)}">'
            f"<title>{escape(titles.get(node, node))}</title>"
            f'<rect x="{box.x:.1f}" y="{box.y:.1f}" width="{box.w:.1f}" height="{box.h:.1f}" '
            f'rx="5" fill="{fill}" stroke="{stroke}"/>'
        )
        for i, line in enumerate(box.lines):
            y = box.y + PAD_Y + (i + 1) * LINE_H - 4
            weight = ' font-weight="bold"' if i == 0 else ""
            parts.append(
                f'<text x="{box.x + PAD_X:.1f}" y="{y:.1f}" font-size="{FONT_SIZE}"{weight} '
                f'font-family="monospace">{escape(line)}</text>'
            )
        parts.append("</g></a>")
    parts.append("</svg>")
    return "".join(parts)
