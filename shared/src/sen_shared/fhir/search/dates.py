"""FHIR date/dateTime/instant values as closed millisecond ranges with their implicit precision.

``2020`` covers the whole year, ``2020-01`` the month, ``2020-01-15`` the day,
``2020-01-15T10:00+07:00`` the minute. Values without a timezone (dates, and
times a client sends without one) are read in Vietnam's time, UTC+07:00 (no
daylight saving since 1975), so "2020-01-15" means the Vietnamese calendar day.
Ranges are ``(lo, hi)`` with both ends inclusive, in UTC, truncated to the
millisecond (BSON dates hold milliseconds).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone

LOCAL_TZ = timezone(timedelta(hours=7), "ICT")
MIN = datetime(1, 1, 1, tzinfo=UTC)
MAX = datetime(9999, 12, 31, 23, 59, 59, 999000, tzinfo=UTC)
_MS = timedelta(milliseconds=1)

_DATE = re.compile(
    r"^(?P<y>\d{4})(?:-(?P<m>\d{2})(?:-(?P<d>\d{2})"
    r"(?:T(?P<H>\d{2}):(?P<M>\d{2})(?::(?P<S>\d{2})(?:\.(?P<f>\d+))?)?"
    r"(?P<tz>Z|[+-]\d{2}:\d{2})?)?)?)?$"
)


class DateFormatError(ValueError):
    """Not a FHIR date, dateTime or instant."""


def _tz(text: str | None) -> timezone:
    if text is None:
        return LOCAL_TZ
    if text == "Z":
        return UTC
    sign = 1 if text[0] == "+" else -1
    return timezone(sign * timedelta(hours=int(text[1:3]), minutes=int(text[4:6])))


def _add_months(dt: datetime, months: int) -> datetime | None:
    """None past year 9999 (the range is open to MAX)."""
    total = dt.year * 12 + dt.month - 1 + months
    year, month = divmod(total, 12)
    return None if year > 9999 else dt.replace(year=year, month=month + 1)


def parse_range(text: str) -> tuple[datetime, datetime]:
    """``(lo, hi)`` in UTC covering everything the value means at its precision."""
    m = _DATE.match(text.strip())
    if not m:
        raise DateFormatError(f"not a FHIR date/dateTime: {text!r}")
    g = m.groupdict()
    try:
        tz = _tz(g["tz"])
        year = int(g["y"])
        if g["m"] is None:
            lo = datetime(year, 1, 1, tzinfo=tz)
            end: datetime | None = lo.replace(year=year + 1) if year < 9999 else None
        elif g["d"] is None:
            lo = datetime(year, int(g["m"]), 1, tzinfo=tz)
            end = _add_months(lo, 1)
        elif g["H"] is None:
            lo = datetime(year, int(g["m"]), int(g["d"]), tzinfo=tz)
            end = lo + timedelta(days=1) if lo.date() < MAX.date() else None
        elif g["S"] is None:
            lo = datetime(year, int(g["m"]), int(g["d"]), int(g["H"]), int(g["M"]), tzinfo=tz)
            end = lo + timedelta(minutes=1)
        else:
            frac = (g["f"] or "")[:6].ljust(6, "0")
            lo = datetime(year, int(g["m"]), int(g["d"]), int(g["H"]), int(g["M"]), int(g["S"]),
                          int(frac), tzinfo=tz)
            lo = lo.replace(microsecond=lo.microsecond // 1000 * 1000)
            end = lo + (_MS if g["f"] else timedelta(seconds=1))
    except (ValueError, OverflowError) as exc:
        raise DateFormatError(f"not a valid date: {text!r}") from exc
    lo_utc = _utc(lo)
    if lo_utc <= MIN + timedelta(days=1):
        lo_utc = MIN
    end_utc = MAX if end is None else _utc(end)
    hi_utc = MAX if end_utc >= MAX else MIN if end_utc <= MIN else end_utc - _MS
    return lo_utc, hi_utc


def _utc(value: datetime) -> datetime:
    """``value`` in UTC; MIN for the first hours of year 1 east of UTC, MAX for the last hours of year
    9999 west of it (neither is a datetime in UTC)."""
    try:
        return value.astimezone(UTC)
    except OverflowError:
        return MIN if value.year == 1 else MAX


def as_utc(value: datetime) -> datetime:
    """Datetimes read back from pymongo are naive UTC; make them aware."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def local_day(value: datetime) -> str:
    return as_utc(value).astimezone(LOCAL_TZ).strftime("%Y-%m-%d")


def containing_buckets(lo: datetime, hi: datetime) -> list[str]:
    """The local year, month and day (``YYYY``, ``YYYY-MM``, ``YYYY-MM-DD``) that wholly contain [lo, hi].

    An ``eq`` search at year, month or day precision is then one equality on these tokens.
    """
    if lo == MIN or hi == MAX:
        return []
    a = as_utc(lo).astimezone(LOCAL_TZ).strftime("%Y-%m-%d")
    b = as_utc(hi).astimezone(LOCAL_TZ).strftime("%Y-%m-%d")
    return [x for x, y in ((a[:4], b[:4]), (a[:7], b[:7]), (a, b)) if x == y]
