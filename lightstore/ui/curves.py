"""Metric series (curves) as the pages' charts draw them: steps and values, a value None
where it is not finite (a gap in the line), and the steps where it is not said apart
(``NaN`` from step 3 on), so that a diverged run shows as such instead of just ending.

The series come from the catalogue (`lightstore.query.curves`); a long one is thinned
to MAX_POINTS evenly picked points for drawing (its non-finite steps are counted
before, over every point).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lightstore.ui.fields import plot_number

#: Most points of a series drawn; most runs of non-finite steps listed per series.
MAX_POINTS = 5000
MAX_GAPS = 20


def curve_line(points: Mapping[int, Any]) -> dict[str, Any]:
    """A series ``{step: value}`` for drawing: ``steps``, ``values`` (None where not
    finite), ``nonfinite`` (runs of consecutive non-finite steps with the same reason:
    ``[first, last, why, count]``, why ``NaN``, ``inf`` or ``-inf``; at most MAX_GAPS) and
    ``gaps`` (how many values are not finite)."""
    steps = sorted(points)
    numbers = [plot_number(points[s]) for s in steps]
    runs: list[list[Any]] = []
    previous: str | None = None
    for step, (number, why) in zip(steps, numbers, strict=True):
        if number is None and why == previous and runs:
            runs[-1][1] = step
            runs[-1][3] += 1
        elif number is None:
            runs.append([step, step, why, 1])
        previous = why if number is None else None
    picked: range | list[int] = range(len(steps))
    if len(steps) > MAX_POINTS:
        stride = len(steps) / MAX_POINTS
        picked = [int(i * stride) for i in range(MAX_POINTS - 1)] + [len(steps) - 1]
    return {
        "steps": [steps[i] for i in picked],
        "values": [numbers[i][0] for i in picked],
        "nonfinite": runs[:MAX_GAPS],
        "gaps": sum(r[3] for r in runs),
    }


def gap_text(line: Mapping[str, Any]) -> str:
    """The non-finite steps of a `curve_line` in words (``NaN at steps 3-9``); empty if
    every value is finite."""
    parts = [
        f"{why} at step {first}" if count == 1 else f"{why} at steps {first}-{last}"
        for first, last, why, count in line["nonfinite"]
    ]
    listed = sum(r[3] for r in line["nonfinite"])
    return ", ".join(parts) + (
        f" and {line['gaps'] - listed} more" if line["gaps"] > listed else ""
    )
