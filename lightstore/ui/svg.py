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
    """Round values between `lo` and `hi` (exponents of ten, for a log axis) for grid lines."""
    if log:
        first, last = math.floor(lo), math.ceil(hi)
        every = max(1, math.ceil((last - first) / 8))  # at most ~8 decades labelled
        return [float(e) for e in range(first, last + 1, every)]
    if not (hi - lo) / 4 > 0:  # a single value, or a span that underflows
        return [lo]
    step = 10.0 ** math.floor(math.log10((hi - lo) / 4))
    for mult in (1, 2, 5, 10):
        if (hi - lo) / (step * mult) <= 6:
            step *= mult
            break
    start = math.ceil(lo / step) * step
    return [start + i * step for i in range(int((hi - start) / step) + 1)]


def _fmt(v: float) -> str:
    return f"{v:.4g}"


def _decade(e: float) -> str:
    return _fmt(10.0**e) if -300 < e < 300 else f"1e{int(e):+d}"


def _scale(values: Sequence[float]) -> float:
    """A power of ten that brings `values` well inside the float range (1 for usual values).

    Spans near the limit (-1e308 to 1e308) overflow to infinity; drawing the
    values divided by this, and labelling with the true values, keeps every
    coordinate finite.
    """
    top = max(abs(v) for v in values)
    return 10.0 ** math.ceil(math.log10(top / 1e300)) if top > 1e300 else 1.0


def scatter_svg(
    points: Sequence[tuple[float, float, str]],
    xlabel: str,
    ylabel: str,
    href: Callable[[str], str],
    width: int = 640,
    height: int = 360,
) -> str:
    """A scatter plot of (x, y, rref) points; x on a log scale when it spans >= 100x above 0.

    Points with a coordinate that is not a finite number are left out.
    """
    points = [p for p in points if math.isfinite(p[0]) and math.isfinite(p[1])]
    if not points:
        return ""
    xs = [p[0] for p in points]
    ys = [p[1] for p in points]
    xlog = min(xs) > 0 and max(xs) / min(xs) >= 100
    xscale, yscale = 1.0 if xlog else _scale(xs), _scale(ys)

    def fx(v: float) -> float:
        return math.log10(v) if xlog else v / xscale

    def fy(v: float) -> float:
        return v / yscale

    x0, x1 = fx(min(xs)), fx(max(xs))
    y0, y1 = fy(min(ys)), fy(max(ys))
    # One value: a band around it (wide enough to change a value beyond 2**53).
    if x0 == x1:
        pad = max(1.0, abs(x0) / 10)
        x0, x1 = x0 - pad, x1 + pad
    if y0 == y1:
        pad = max(1.0, abs(y0) / 10)
        y0, y1 = y0 - pad, y1 + pad
    # A margin of 5% so that no point sits on the frame.
    dx, dy = (x1 - x0) * 0.05, (y1 - y0) * 0.05
    x0, x1, y0, y1 = x0 - dx, x1 + dx, y0 - dy, y1 + dy
    left, right, top, bottom = 70, 20, 20, 50
    pw, ph = width - left - right, height - top - bottom

    def px_of(t: float) -> float:  # t: a value on the drawn (log or scaled) axis
        return left + (t - x0) / (x1 - x0) * pw

    def py_of(t: float) -> float:
        return top + ph - (t - y0) / (y1 - y0) * ph

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(ylabel)} against {escape(xlabel)}">',
        f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="#fafafa" stroke="#999"/>',
    ]
    for t in _ticks(x0, x1, xlog):
        px = px_of(t)
        label = _decade(t) if xlog else _fmt(t * xscale)
        if left - 0.5 <= px <= left + pw + 0.5 and "inf" not in label:
            parts.append(
                f'<line x1="{px:.1f}" y1="{top}" x2="{px:.1f}" y2="{top + ph}" stroke="#e4e4e4"/>'
            )
            parts.append(
                f'<text x="{px:.1f}" y="{top + ph + 16}" font-size="11" text-anchor="middle">{label}</text>'
            )
    for t in _ticks(y0, y1, False):
        py = py_of(t)
        label = _fmt(t * yscale)
        if top - 0.5 <= py <= top + ph + 0.5 and "inf" not in label:
            parts.append(
                f'<line x1="{left}" y1="{py:.1f}" x2="{left + pw}" y2="{py:.1f}" stroke="#e4e4e4"/>'
            )
            parts.append(
                f'<text x="{left - 6}" y="{py + 4:.1f}" font-size="11" text-anchor="end">{label}</text>'
            )
    parts.append(
        f'<text x="{left + pw / 2}" y="{height - 10}" font-size="13" text-anchor="middle">{escape(xlabel)}{" (log scale)" if xlog else ""}</text>'
    )
    parts.append(
        f'<text x="16" y="{top + ph / 2}" font-size="13" text-anchor="middle" transform="rotate(-90 16 {top + ph / 2})">{escape(ylabel)}</text>'
    )
    for x, y, rref in points:
        parts.append(
            f'<a href="{escape(href(rref))}"><circle class="point" cx="{px_of(fx(x)):.1f}" cy="{py_of(fy(y)):.1f}" r="5" '
            f'fill="#3b6fb6" fill-opacity="0.75"><title>{escape(xlabel)}={_fmt(x)}, '
            f"{escape(ylabel)}={_fmt(y)}\n{escape(rref)}</title></circle></a>"
        )
    parts.append("</svg>")
    return "".join(parts)
