"""Pylightnix's module ``pylightnix.tz``: this machine's local time zone (`tzlocal`) and
`enfold`, for the times `lightstore.compat.utils.timestring` writes.
"""

from __future__ import annotations

import datetime as _dt
import time as _time

ZERO = _dt.timedelta(0)
EPOCH = _dt.datetime(1970, 1, 1)
EPOCHORDINAL = EPOCH.toordinal()


def enfold(dt: _dt.datetime, fold: int = 1) -> _dt.datetime:
    """`dt` with its PEP 495 `fold` set (which of two repeated wall-clock times it is)."""
    return dt.replace(fold=fold)


class tzlocal(_dt.tzinfo):
    """The local time zone of this machine, as the C library knows it (DST included)."""

    def _local(self, dt: _dt.datetime) -> _time.struct_time:
        # mktime with isdst=-1 lets the C library decide whether DST applies.
        return _time.localtime(_time.mktime((*dt.replace(tzinfo=None).timetuple()[:8], -1)))

    def fromutc(self, dt: _dt.datetime) -> _dt.datetime:
        """Local time of the UTC instant `dt` (exact, also around DST changes)."""
        seconds = (dt.replace(tzinfo=None) - EPOCH).total_seconds()
        offset = _time.localtime(seconds).tm_gmtoff
        return dt + _dt.timedelta(seconds=offset)

    def utcoffset(self, dt: _dt.datetime | None) -> _dt.timedelta:
        """Offset from UTC at `dt` (now when None)."""
        if dt is None:
            return _dt.timedelta(seconds=_time.localtime().tm_gmtoff)
        return _dt.timedelta(seconds=self._local(dt).tm_gmtoff)

    def dst(self, dt: _dt.datetime | None) -> _dt.timedelta:
        """Daylight saving offset at `dt`."""
        if dt is None:
            return ZERO
        is_dst = self._local(dt).tm_isdst > 0
        return _dt.timedelta(seconds=_time.timezone - _time.altzone) if is_dst else ZERO

    def tzname(self, dt: _dt.datetime | None) -> str:
        """The zone's abbreviation at `dt`."""
        if dt is None:
            return _time.tzname[0]
        return _time.tzname[1 if self._local(dt).tm_isdst > 0 else 0]

    def __repr__(self) -> str:
        return "tzlocal()"
