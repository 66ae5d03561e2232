"""A specialist's weekly availability and the slots it yields (pure rules, no I/O).

Where availability lives: on the FHIR ``Schedule`` itself, as Sen extensions modelled on
``PractitionerRole.availableTime`` / ``notAvailable`` (R4 Schedule has no such elements), so a
schedule is one resource an admin can PUT and read back:

- ``schedule-available-time`` (repeats): ``daysOfWeek`` (valueCode mon..sun, repeats),
  ``availableStartTime`` / ``availableEndTime`` (valueTime, wall clock in Asia/Ho_Chi_Minh).
  Two windows on a day (08:00-11:30, 13:30-17:00) leave the lunch break between them.
- ``schedule-break`` (repeats): ``startTime`` / ``endTime`` (valueTime): no slot overlaps it, any day.
- ``schedule-slot-minutes`` (valueInteger, 5..240): the slot length.
- ``schedule-not-available`` (repeats): ``description`` (valueString), ``during`` (valuePeriod):
  leave, a conference; no slot overlaps it.
- ``schedule-organization`` (valueReference Organization/...): the hub the specialist answers for
  (R4 ``Schedule.actor`` cannot name an Organization); ``$find``'s ``organization`` matches it.

Public holidays are a configurable list of dates (``SEN_TELECONSULT_HOLIDAYS``), not per schedule.

Slots are **computed**, not stored: a slot's id is ``<schedule id>-<YYYYMMDDHHMM>`` (its local
start), so the rules above say which slots exist and the slot's claim chain (scheduling.py) says
whether it is free. Nothing has to be materialized for a rolling horizon, and a change of the
availability shows at once.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

TZ = ZoneInfo("Asia/Ho_Chi_Minh")
EXT = "https://fhir.sen.vn/StructureDefinition/"
EXT_AVAILABLE = EXT + "schedule-available-time"
EXT_BREAK = EXT + "schedule-break"
EXT_SLOT_MINUTES = EXT + "schedule-slot-minutes"
EXT_NOT_AVAILABLE = EXT + "schedule-not-available"
EXT_ORGANIZATION = EXT + "schedule-organization"
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
SLOT_ID = re.compile(r"^(?P<schedule>[A-Za-z0-9\-.]{1,51})-(?P<start>\d{12})$")


class AvailabilityError(ValueError):
    """A schedule whose availability cannot be read (says which part)."""


@dataclass(frozen=True)
class Window:
    days: frozenset[int]  # 0 = Monday
    start: time
    end: time


@dataclass(frozen=True)
class Availability:
    schedule: str  # the Schedule's id
    practitioners: tuple[str, ...]  # "Practitioner/..." references among the actors
    actors: tuple[dict[str, Any], ...] = field(compare=False)  # (not hashed: dicts)
    organization: str | None
    specialties: tuple[dict[str, Any], ...] = field(compare=False)  # CodeableConcepts
    specialty_codes: frozenset[str]
    windows: tuple[Window, ...]
    slot_minutes: int
    breaks: tuple[tuple[time, time], ...] = ()
    not_available: tuple[tuple[datetime, datetime, str], ...] = ()
    horizon_end: datetime | None = None
    active: bool = True
    extra: dict[str, Any] = field(default_factory=dict, compare=False)


def _time(value: Any, where: str) -> time:
    try:
        return time.fromisoformat(str(value))
    except ValueError:
        raise AvailabilityError(f"{where} is not a time (hh:mm:ss): {value!r}") from None


def _dt(value: Any, where: str) -> datetime:
    try:
        dt = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        raise AvailabilityError(f"{where} is not a dateTime: {value!r}") from None
    return dt if dt.tzinfo else dt.replace(tzinfo=TZ)


def _subs(ext: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [(s.get("url", ""), s) for s in ext.get("extension") or () if isinstance(s, dict)]


def from_schedule(resource: dict[str, Any]) -> Availability:
    """The availability a Schedule resource declares (:class:`AvailabilityError` if it cannot be read)."""
    sid = str(resource.get("id") or "")
    windows: list[Window] = []
    breaks: list[tuple[time, time]] = []
    away: list[tuple[datetime, datetime, str]] = []
    minutes: int | None = None
    organization: str | None = None
    for i, ext in enumerate(resource.get("extension") or ()):
        url = ext.get("url") if isinstance(ext, dict) else None
        where = f"Schedule.extension[{i}]"
        if url == EXT_AVAILABLE:
            days: set[int] = set()
            start = end = None
            for name, s in _subs(ext):
                if name == "daysOfWeek":
                    if s.get("valueCode") not in DAYS:
                        raise AvailabilityError(f"{where}: daysOfWeek takes mon..sun")
                    days.add(DAYS.index(s["valueCode"]))
                elif name == "availableStartTime":
                    start = _time(s.get("valueTime"), f"{where}.availableStartTime")
                elif name == "availableEndTime":
                    end = _time(s.get("valueTime"), f"{where}.availableEndTime")
            if not days or start is None or end is None or end <= start:
                raise AvailabilityError(f"{where}: an available time needs daysOfWeek and a start before its end")
            windows.append(Window(frozenset(days), start, end))
        elif url == EXT_BREAK:
            parts = dict(_subs(ext))
            b0 = _time((parts.get("startTime") or {}).get("valueTime"), f"{where}.startTime")
            b1 = _time((parts.get("endTime") or {}).get("valueTime"), f"{where}.endTime")
            if b1 <= b0:
                raise AvailabilityError(f"{where}: a break must start before it ends")
            breaks.append((b0, b1))
        elif url == EXT_SLOT_MINUTES:
            value = ext.get("valueInteger")
            if not isinstance(value, int) or not 5 <= value <= 240:
                raise AvailabilityError(f"{where}: the slot length is 5 to 240 minutes")
            minutes = value
        elif url == EXT_NOT_AVAILABLE:
            parts = dict(_subs(ext))
            period = (parts.get("during") or {}).get("valuePeriod") or {}
            a = _dt(period.get("start"), f"{where}.during.start")
            b = _dt(period.get("end"), f"{where}.during.end")
            away.append((a, b, str((parts.get("description") or {}).get("valueString") or "")))
        elif url == EXT_ORGANIZATION:
            organization = (ext.get("valueReference") or {}).get("reference")
    if minutes is None:
        raise AvailabilityError("the schedule has no slot length (schedule-slot-minutes)")
    actors = tuple(a for a in resource.get("actor") or () if isinstance(a, dict))
    practitioners = tuple(str(a["reference"]) for a in actors
                          if str(a.get("reference", "")).startswith("Practitioner/"))
    specialties = tuple(s for s in resource.get("specialty") or () if isinstance(s, dict))
    codes = frozenset(c["code"] for s in specialties for c in s.get("coding") or () if c.get("code"))
    horizon = (resource.get("planningHorizon") or {}).get("end")
    return Availability(
        schedule=sid, practitioners=practitioners, actors=actors, organization=organization,
        specialties=specialties, specialty_codes=codes, windows=tuple(windows), slot_minutes=minutes,
        breaks=tuple(breaks), not_available=tuple(away),
        horizon_end=_dt(horizon, "Schedule.planningHorizon.end") if horizon else None,
        active=resource.get("active", True) is not False)


def schedule_resource(sid: str, *, practitioner: str, organization: str | None, specialty_code: str,
                      specialty_text: str, windows: Iterable[tuple[Iterable[str], str, str]],
                      slot_minutes: int = 30, breaks: Iterable[tuple[str, str]] = (),
                      not_available: Iterable[tuple[str, str, str]] = (), comment: str = "",
                      specialty_display: str = "") -> dict[str, Any]:
    """A Schedule resource carrying an availability (for the seed, tests and admins). The specialty: its SNOMED
    CT code, with ``specialty_display`` (the code's official English display) when given, and its name
    ``specialty_text`` (Vietnamese)."""
    ext: list[dict[str, Any]] = []
    for days, start, end in windows:
        ext.append({"url": EXT_AVAILABLE, "extension": [
            *({"url": "daysOfWeek", "valueCode": d} for d in days),
            {"url": "availableStartTime", "valueTime": start}, {"url": "availableEndTime", "valueTime": end}]})
    for start, end in breaks:
        ext.append({"url": EXT_BREAK, "extension": [{"url": "startTime", "valueTime": start},
                                                    {"url": "endTime", "valueTime": end}]})
    ext.append({"url": EXT_SLOT_MINUTES, "valueInteger": slot_minutes})
    for start, end, why in not_available:
        ext.append({"url": EXT_NOT_AVAILABLE, "extension": [
            {"url": "description", "valueString": why},
            {"url": "during", "valuePeriod": {"start": start, "end": end}}]})
    if organization:
        ext.append({"url": EXT_ORGANIZATION, "valueReference": {"reference": organization}})
    res: dict[str, Any] = {
        "resourceType": "Schedule", "id": sid, "active": True, "extension": ext,
        "actor": [{"reference": practitioner}],
        "specialty": [{"coding": [{"system": "http://snomed.info/sct", "code": specialty_code,
                                   **({"display": specialty_display} if specialty_display else {})}],
                       "text": specialty_text}],
    }
    if comment:
        res["comment"] = comment
    return res


# ------------------------------------------------------------------------------------ slots

def slot_id(schedule: str, start: datetime) -> str:
    return f"{schedule}-{start.astimezone(TZ).strftime('%Y%m%d%H%M')}"


@functools.lru_cache(maxsize=4096)
def parse_slot_id(value: str) -> tuple[str, datetime] | None:
    """``(schedule id, local start)`` of a slot id, or None when it is not one (remembered: a
    ``$book`` parses its slot's id three or four times, ~5 µs each)."""
    m = SLOT_ID.match(value or "")
    if m is None:
        return None
    t = m["start"]  # 12 digits (the pattern): YYYYMMDDHHMM; sliced, not strptime (3 a $book, ~8 µs each)
    try:
        start = datetime(int(t[:4]), int(t[4:6]), int(t[6:8]), int(t[8:10]), int(t[10:]), tzinfo=TZ)
    except ValueError:
        return None
    return m["schedule"], start


@dataclass(frozen=True)
class SlotTime:
    id: str
    start: datetime  # aware, Asia/Ho_Chi_Minh
    end: datetime


def _overlaps(a0: datetime, a1: datetime, b0: datetime, b1: datetime) -> bool:
    return a0 < b1 and b0 < a1


@functools.lru_cache(maxsize=8192)
def day_slots(av: Availability, day: date, holidays: frozenset[date] = frozenset()) -> tuple[SlotTime, ...]:
    """The slots of one local day, in order (remembered: an availability is immutable)."""
    return tuple(_day_slots(av, day, holidays))


def _day_slots(av: Availability, day: date, holidays: frozenset[date]) -> list[SlotTime]:
    if not av.active or day in holidays:
        return []
    out: list[SlotTime] = []
    step = timedelta(minutes=av.slot_minutes)
    wd = day.weekday()
    for w in sorted((w for w in av.windows if wd in w.days), key=lambda w: w.start):
        t = datetime.combine(day, w.start, TZ)
        stop = datetime.combine(day, w.end, TZ)
        while t + step <= stop:
            end = t + step
            if not any(_overlaps(t, end, datetime.combine(day, b0, TZ), datetime.combine(day, b1, TZ))
                       for b0, b1 in av.breaks) \
                    and not any(_overlaps(t, end, a, b) for a, b, _ in av.not_available) \
                    and (av.horizon_end is None or end <= av.horizon_end):
                if not out or out[-1].start != t:
                    out.append(SlotTime(slot_id(av.schedule, t), t, end))
            t = end
    return out


def slots_between(av: Availability, start: datetime, end: datetime,
                  holidays: frozenset[date] = frozenset()) -> Iterator[SlotTime]:
    """The slots starting in ``[start, end)``, in order (``start``/``end`` aware)."""
    day = start.astimezone(TZ).date()
    last = end.astimezone(TZ).date()
    while day <= last:
        for s in day_slots(av, day, holidays):
            if start <= s.start < end:
                yield s
        day += timedelta(days=1)


@functools.lru_cache(maxsize=1024)  # days a slot was looked up by id in (day_slots: every day walked)
def _day_index(av: Availability, day: date, holidays: frozenset[date]) -> dict[datetime, SlotTime]:
    """The day's slots by start, as :func:`slot_of` finds them walking :func:`day_slots` in order:
    the first slot of each start, unless a slot before it starts later (the walk stops there)."""
    out: dict[datetime, SlotTime] = {}
    seen: set[datetime] = set()
    latest: datetime | None = None
    for s in day_slots(av, day, holidays):
        if s.start not in seen:
            seen.add(s.start)
            if latest is None or latest <= s.start:
                out[s.start] = s
        latest = s.start if latest is None else max(latest, s.start)
    return out


def slot_of(av: Availability, sid: str, holidays: frozenset[date] = frozenset()) -> SlotTime | None:
    """The slot ``sid`` if the availability offers it (None: no such slot, or no longer offered).
    Looked up by start in the day's index, not by walking the day (a 5-minute schedule's afternoon
    slot was ~200 comparisons, 13-18 µs, twice a ``$book``)."""
    parsed = parse_slot_id(sid)
    if parsed is None or parsed[0] != av.schedule:
        return None
    start = parsed[1]
    return _day_index(av, start.date(), holidays).get(start)


def parse_holidays(value: str) -> frozenset[date]:
    """``2026-01-01,2026-04-30`` → dates (:class:`AvailabilityError` on a bad one)."""
    out: set[date] = set()
    for part in (p.strip() for p in (value or "").replace(";", ",").split(",")):
        if part:
            try:
                out.add(date.fromisoformat(part))
            except ValueError:
                raise AvailabilityError(f"not a date: {part!r} (YYYY-MM-DD)") from None
    return frozenset(out)


def month_key(start: datetime) -> str:
    """The local month of a slot (``2026-12``): links are fetched a month at a time."""
    local = start.astimezone(TZ)
    return f"{local.year}-{local.month:02d}"  # as strftime("%Y-%m") writes it, in a third of its time


def months_between(start: datetime, end: datetime) -> list[str]:
    out: list[str] = []
    d = start.astimezone(TZ).date().replace(day=1)
    last = end.astimezone(TZ).date()
    while d <= last:
        out.append(d.strftime("%Y-%m"))
        d = (d + timedelta(days=32)).replace(day=1)
    return out
