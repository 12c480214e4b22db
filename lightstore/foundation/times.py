"""Points in time that users give: ``7d``, ``2024-05-01``, ``today``, Unix seconds.

The one parser behind every time-like input (`ls`/`history` ``--since`` and
``--until``, gc's ``keep_since``, forget's ``--older-than``), so that they
all accept the same forms and refuse the same nonsense: a time that is not a
finite number (``nan``, ``inf``, ``1e400``, an age too large to count) would
silently compare as "nothing" or "everything" in SQL.
"""

from __future__ import annotations

import math
import re
import time
from datetime import datetime, timedelta

from lightstore.foundation.errors import QueryError

_AGO_RE = re.compile(r"(\d+(?:\.\d+)?)\s*(s|sec|m|min|h|hr|d|day|days|w|week|weeks)")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_FORMS = (
    "an age like 30m, 12h, 7d, 2w, a date like 2024-05-01 or 2024-05-01T14:30, "
    "'today', 'yesterday', or Unix seconds"
)

TimeLike = float | int | str | None


def parse_time(value: float | int | str, now: float | None = None, *, what: str = "time") -> float:
    """A point in time as finite Unix seconds.

    Accepts a number (Unix seconds), or a text: an age (``30m``, ``12h``,
    ``7d``, ``2w``: that long before `now`), ``today``, ``yesterday``, an ISO
    date or date-time (local time unless it has an offset), or Unix seconds.
    `what` names the input in the error message. Raises QueryError (a
    ValueError) for anything else, and for values that are not finite
    (``nan``, ``inf``, ``1e400``, an age past the range of floats).
    """
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise QueryError(f"{what} takes {_FORMS}, not {value!r}")
    if isinstance(value, str):
        seconds = _parse_text(value, what, time.time() if now is None else now)
    else:
        try:
            seconds = float(value)
        except OverflowError:  # an int too large for a float
            seconds = math.inf
    if not math.isfinite(seconds):
        shown = value if isinstance(value, str) or abs(value) < 10**20 else "a huge number"
        raise QueryError(f"{what} must be a finite time, not {shown!r}: give {_FORMS}")
    return seconds


def parse_optional_time(value: TimeLike, what: str = "time") -> float | None:
    """`parse_time`, with None passed through (no limit)."""
    return None if value is None else parse_time(value, what=what)


def _parse_text(text: str, what: str, now: float) -> float:
    s = text.strip().lower()
    m = _AGO_RE.fullmatch(s)
    if m:
        return now - float(m.group(1)) * _UNITS[m.group(2)[0]]
    if s in ("today", "yesterday"):
        midnight = datetime.fromtimestamp(now).replace(hour=0, minute=0, second=0, microsecond=0)
        return (midnight - timedelta(days=1 if s == "yesterday" else 0)).timestamp()
    try:
        return float(s)
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(text.strip()).timestamp()
    except (ValueError, OverflowError, OSError):
        raise QueryError(f"invalid {what} {text!r}: give {_FORMS}") from None


def parse_timeout(value: float | int | None, what: str = "timeout") -> float | None:
    """A wait in seconds: None or infinity for no limit, else a finite number >= 0.

    Raises QueryError (a ValueError) for NaN, a negative number or a non-number:
    NaN would compare as "never reached" and wait forever without saying so.
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise QueryError(
            f"{what} takes seconds (a number >= 0, or None for no limit), not {value!r}"
        )
    if value != value or value < 0:  # compared before float(): a huge int would overflow
        shown = value if abs(value) < 10**20 else "a huge negative number"
        raise QueryError(
            f"{what} takes seconds (a number >= 0, or None for no limit), not {shown!r}"
        )
    try:
        seconds = float(value)
    except OverflowError:  # an int too large for a float: no limit in practice
        return None
    return None if math.isinf(seconds) else seconds
