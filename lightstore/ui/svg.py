"""Inline SVG drawings for the experiment browser: a lineage graph and a scatter chart.

Plain SVG text built on the server (the browser may have no internet, so no
script libraries); every label is escaped.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from html import escape
from typing import Any

from lightstore.ui.data import ref_label

NODE_W, NODE_H, GAP_X, GAP_Y, PAD = 170, 34, 60, 14, 10


def lineage_svg(lineage: dict[str, Any], href: Callable[[str], str]) -> str:
    """Columns of realizations by level (upstream left, downstream right), edges dep -> user."""
    nodes = lineage["nodes"]
    if not nodes:
        return ""
    levels = sorted({n["level"] for n in nodes})
    column = {lvl: i for i, lvl in enumerate(levels)}
    rows: dict[int, int] = {}
    where: dict[str, tuple[int, int]] = {}
    for n in nodes:
        row = rows.get(n["level"], 0)
        rows[n["level"]] = row + 1
        x = PAD + column[n["level"]] * (NODE_W + GAP_X)
        y = PAD + row * (NODE_H + GAP_Y)
        where[n["rref"]] = (x, y)
    width = PAD * 2 + len(levels) * NODE_W + (len(levels) - 1) * GAP_X
    height = PAD * 2 + max(rows.values()) * (NODE_H + GAP_Y) - GAP_Y
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="lineage" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="lineage graph">',
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" '
        'markerHeight="7" orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" '
        'fill="#888"/></marker></defs>',
    ]
    for user, dep in lineage["edges"]:
        (x1, y1), (x2, y2) = where[dep], where[user]
        parts.append(
            f'<line class="edge" x1="{x1 + NODE_W}" y1="{y1 + NODE_H / 2}" x2="{x2}" '
            f'y2="{y2 + NODE_H / 2}" stroke="#888" marker-end="url(#arrow)"/>'
        )
    for n in nodes:
        x, y = where[n["rref"]]
        root = n["rref"] == lineage["root"]
        fill, stroke = ("#ffe9a8", "#b8860b") if root else ("#eef3fb", "#5b7db1")
        parts.append(
            f'<a href="{escape(href(n["rref"]))}"><g class="node{" root" if root else ""}">'
            f"<title>{escape(n['rref'])}</title>"
            f'<rect x="{x}" y="{y}" width="{NODE_W}" height="{NODE_H}" rx="5" fill="{fill}" '
            f'stroke="{stroke}"/>'
            f'<text x="{x + NODE_W / 2}" y="{y + NODE_H / 2 + 4}" text-anchor="middle" '
            f'font-size="12" font-family="monospace">{escape(ref_label(n["rref"]))}</text></g></a>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _ticks(lo: float, hi: float, log: bool) -> list[float]:
    if log:
        return [10.0**e for e in range(math.floor(lo), math.ceil(hi) + 1)]
    if hi == lo:
        return [lo]
    step = 10 ** math.floor(math.log10((hi - lo) / 4))
    for mult in (1, 2, 5, 10):
        if (hi - lo) / (step * mult) <= 6:
            step *= mult
            break
    first = math.ceil(lo / step) * step
    return [first + i * step for i in range(int((hi - first) / step) + 1)]


def _fmt(v: float) -> str:
    return f"{v:.4g}"


def scatter_svg(
    points: Sequence[tuple[float, float, str]],
    xlabel: str,
    ylabel: str,
    href: Callable[[str], str],
    width: int = 640,
    height: int = 360,
) -> str:
    """A scatter plot of (x, y, rref) points; x on a log scale when it spans >= 100x above 0."""
    if not points:
        return ""
    xs = [p[0] for p in points]
    ys = [p[1] for p in points]
    xlog = min(xs) > 0 and max(xs) / min(xs) >= 100
    fx = (lambda v: math.log10(v)) if xlog else (lambda v: v)
    x0, x1 = fx(min(xs)), fx(max(xs))
    y0, y1 = min(ys), max(ys)
    if x0 == x1:
        x0, x1 = x0 - 1, x1 + 1
    if y0 == y1:
        y0, y1 = y0 - 1, y1 + 1
    # A margin of 5% so that no point sits on the frame.
    dx, dy = (x1 - x0) * 0.05, (y1 - y0) * 0.05
    x0, x1, y0, y1 = x0 - dx, x1 + dx, y0 - dy, y1 + dy
    left, right, top, bottom = 70, 20, 20, 50
    pw, ph = width - left - right, height - top - bottom

    def sx(v: float) -> float:
        return left + (fx(v) - x0) / (x1 - x0) * pw

    def sy(v: float) -> float:
        return top + ph - (v - y0) / (y1 - y0) * ph

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(ylabel)} against {escape(xlabel)}">',
        f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="#fafafa" stroke="#999"/>',
    ]
    for value in _ticks(x0, x1, xlog):
        px = left + ((math.log10(value) if xlog else value) - x0) / (x1 - x0) * pw
        if left - 0.5 <= px <= left + pw + 0.5:
            parts.append(
                f'<line x1="{px:.1f}" y1="{top}" x2="{px:.1f}" y2="{top + ph}" stroke="#e4e4e4"/>'
            )
            parts.append(
                f'<text x="{px:.1f}" y="{top + ph + 16}" font-size="11" text-anchor="middle">{_fmt(value)}</text>'
            )
    for t in _ticks(y0, y1, False):
        py = sy(t)
        if top - 0.5 <= py <= top + ph + 0.5:
            parts.append(
                f'<line x1="{left}" y1="{py:.1f}" x2="{left + pw}" y2="{py:.1f}" stroke="#e4e4e4"/>'
            )
            parts.append(
                f'<text x="{left - 6}" y="{py + 4:.1f}" font-size="11" text-anchor="end">{_fmt(t)}</text>'
            )
    parts.append(
        f'<text x="{left + pw / 2}" y="{height - 10}" font-size="13" text-anchor="middle">{escape(xlabel)}{" (log scale)" if xlog else ""}</text>'
    )
    parts.append(
        f'<text x="16" y="{top + ph / 2}" font-size="13" text-anchor="middle" transform="rotate(-90 16 {top + ph / 2})">{escape(ylabel)}</text>'
    )
    for x, y, rref in points:
        parts.append(
            f'<a href="{escape(href(rref))}"><circle class="point" cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="5" '
            f'fill="#3b6fb6" fill-opacity="0.75"><title>{escape(xlabel)}={_fmt(x)}, '
            f"{escape(ylabel)}={_fmt(y)}\n{escape(rref)}</title></circle></a>"
        )
    parts.append("</svg>")
    return "".join(parts)
