"""``slot_of`` looks a slot up in its day's index: the same answers as walking the day's slots in order."""

from __future__ import annotations

from datetime import UTC, date, timedelta

import pytest
from sen_teleconsult.domain import availability as av

ALL = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


def walked(a: av.Availability, sid: str, holidays: frozenset[date]) -> av.SlotTime | None:
    """The lookup as it was: the day's slots in order, the first of that start, stopping at a later one."""
    parsed = av.parse_slot_id(sid)
    if parsed is None or parsed[0] != a.schedule:
        return None
    for s in av.day_slots(a, parsed[1].date(), holidays):
        if s.start == parsed[1]:
            return s
        if s.start > parsed[1]:
            break
    return None


def schedule(sid: str, windows, minutes: int, **kw) -> av.Availability:
    return av.from_schedule(av.schedule_resource(sid, practitioner="Practitioner/bs-an", organization="Organization/bv",
                                                 specialty_code="394579002", specialty_text="Tim mạch",
                                                 windows=windows, slot_minutes=minutes, **kw))


@pytest.mark.parametrize("a", [
    schedule("round", [(ALL, "00:00:00", "23:55:00")], 5),
    schedule("week", [(ALL[:6], "07:30:00", "11:30:00"), (ALL[:6], "13:30:00", "16:30:00")], 30,
             breaks=[("09:00:00", "09:30:00")]),
    # overlapping windows: the day's list repeats starts and goes back in time; the walk's answers hold
    schedule("overlap", [(ALL, "07:00:00", "09:00:00"), (ALL, "08:00:00", "10:00:00"),
                         (["mon"], "08:10:00", "08:40:00")], 30),
], ids=lambda a: a.schedule)
def test_slot_of_answers_as_the_walk_did(a):
    first = date(2026, 12, 5)
    for n in range(9):
        day = first + timedelta(days=n)
        for holidays in (frozenset(), frozenset({day})):
            for minute in range(0, 24 * 60, 5):
                sid = f"{a.schedule}-{day:%Y%m%d}{minute // 60:02d}{minute % 60:02d}"
                assert av.slot_of(a, sid, holidays) == walked(a, sid, holidays), sid
    assert av.slot_of(a, f"other-{first:%Y%m%d}0800") is None
    assert av.slot_of(a, "not-a-slot") is None


def test_month_key_is_the_local_month():
    assert av.month_key(av.parse_slot_id("s-202612311730")[1]) == "2026-12"
    new_year = av.parse_slot_id("s-202701010030")[1].astimezone(UTC)  # 2026-12-31 17:30 UTC
    assert (new_year.month, av.month_key(new_year)) == (12, "2027-01")
