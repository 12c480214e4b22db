"""Query results: a list of dict rows that also converts to a pandas DataFrame and shows
itself as a table (in a terminal, and as HTML in a notebook)."""

from __future__ import annotations

import html
import json
import math
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from lightstore.foundation.errors import LightstoreError

#: Columns of Unix seconds in the listings of `lightstore.query.history`.
TIME_COLUMNS = (
    "started",
    "stopped",
    "created",
    "collected",
    "imported",
    "last_built",
    "recorded",
)
#: Most rows `repr` and the notebook table show (the rest are counted).
MAX_SHOWN = 50
#: Significant digits of floats in `repr` and the notebook table.
DIGITS = 6


class Rows(list[dict[str, Any]]):
    """Rows of a query (a plain list of dicts) with `columns`, `to_pandas()`, and a table
    for `repr` and notebooks (`_repr_html_`).

    `times` names the columns that hold Unix seconds: `to_pandas` makes them datetimes
    and the tables show them as local dates.
    """

    def __init__(
        self, rows: Any = (), columns: list[str] | None = None, times: Sequence[str] = ()
    ) -> None:
        super().__init__(rows)
        self.columns: list[str] = list(columns) if columns is not None else []
        self.times: tuple[str, ...] = tuple(times)

    def _columns(self) -> list[str]:
        return self.columns or (list(self[0]) if self else [])

    def to_pandas(self) -> Any:
        """The rows as a pandas DataFrame, columns in query order.

        Time columns (`times`: started, stopped, collected, ...) are timezone-aware
        datetimes in UTC (``df.started.dt.tz_convert("Europe/Paris")`` for local
        time); durations stay numbers of seconds. Raises LightstoreError naming the
        package if pandas is not installed.
        """
        try:
            import pandas
        except ImportError as e:
            raise LightstoreError(
                "to_pandas() needs pandas; install it with `pip install pandas`"
            ) from e
        columns = self._columns()
        frame = pandas.DataFrame.from_records(list(self), columns=columns)
        for column in self.times:
            if column in frame.columns:
                seconds = pandas.to_numeric(frame[column], errors="coerce")
                frame[column] = pandas.to_datetime(seconds, unit="s", utc=True, errors="coerce")
        return frame

    def _cells(self) -> tuple[list[str], list[list[str]], int]:
        columns = self._columns()
        shown = list.__getitem__(self, slice(0, MAX_SHOWN))
        cells = [[self._cell(c, row.get(c)) for c in columns] for row in shown]
        return columns, cells, len(self) - len(shown)

    def _cell(self, column: str, value: Any) -> str:
        if column in self.times and isinstance(value, int | float):
            try:
                return datetime.fromtimestamp(value).strftime("%Y-%m-%d %H:%M:%S")
            except (OverflowError, ValueError, OSError):
                return repr(value)
        return cell_text(value)

    def __repr__(self) -> str:
        columns, cells, more = self._cells()
        if not columns:
            return "Rows([])"
        widths = [max([len(c), *(len(r[i]) for r in cells)]) for i, c in enumerate(columns)]
        lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip()]
        lines.append("  ".join("-" * w for w in widths))
        lines += [
            "  ".join(x.ljust(w) for x, w in zip(r, widths, strict=True)).rstrip() for r in cells
        ]
        lines.append(_count(len(self), more))
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        columns, cells, more = self._cells()
        head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
        body = "".join(
            "<tr>" + "".join(f"<td>{html.escape(x)}</td>" for x in r) + "</tr>" for r in cells
        )
        return (
            f'<table class="lightstore-rows"><thead><tr>{head}</tr></thead>'
            f"<tbody>{body}</tbody></table><p>{html.escape(_count(len(self), more))}</p>"
        )


def _count(total: int, more: int) -> str:
    text = f"({total} row{'s' if total != 1 else ''}"
    return text + (f"; the first {total - more} shown)" if more else ")")


class Several(list[Any]):
    """The values of one field in the several upstream runs of a stage that a run was built
    on, where they disagree: a sorted list (numbers first). Tables show ``0.01 | 0.1``."""

    def __repr__(self) -> str:
        return f"Several({list.__repr__(self)})"


def number_text(value: float, digits: int | None = DIGITS) -> str:
    """A float with `digits` significant digits (every digit with None: its shortest exact
    text); NaN and infinities as ``nan``, ``inf``, ``-inf``."""
    if not math.isfinite(value):
        return "nan" if value != value else ("inf" if value > 0 else "-inf")
    return repr(value) if digits is None else f"{value:.{digits}g}"


def cell_text(value: Any, digits: int | None = DIGITS) -> str:
    """A value in a table for people: floats to `digits` significant digits, several
    upstream values joined by ``|``, lists and dicts as JSON, None as nothing."""
    if value is None:
        return ""
    if isinstance(value, Several):
        return " | ".join(cell_text(v, digits) for v in value)
    if isinstance(value, float):
        return number_text(value, digits)
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)
    return str(value)
