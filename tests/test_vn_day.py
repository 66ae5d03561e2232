"""``tests.support.vn_day_with_room``: the day a date-bound test records in and reads, never one that ends
under it. Midnight in Vietnam is 17:00 UTC, and a CI run may start at 16:55 UTC (a clock stands in for
the real one: the hazard forced, not waited for)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from tests.support import VN_TZ, vn_day_with_room


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now, self.slept = now, 0.0

    def __call__(self) -> datetime:
        return self.now.astimezone(VN_TZ)

    def sleep(self, seconds: float) -> None:
        self.slept += seconds
        self.now += timedelta(seconds=seconds)


def test_a_minute_before_midnight_in_vietnam_it_waits_for_the_new_day() -> None:
    clock = Clock(datetime(2026, 12, 5, 16, 59, 0, tzinfo=UTC))  # 23:59:00 in Vietnam
    assert vn_day_with_room(180, clock=clock, sleep=clock.sleep) == date(2026, 12, 6)
    assert 60 < clock.slept <= 62  # no more than the minute left


def test_the_last_minutes_of_the_year_are_next_years_day() -> None:
    clock = Clock(datetime(2026, 12, 31, 16, 58, 30, tzinfo=UTC))
    assert vn_day_with_room(180, clock=clock, sleep=clock.sleep) == date(2027, 1, 1)


def test_with_the_room_left_it_answers_at_once() -> None:
    for now in (datetime(2026, 12, 5, 3, 0, tzinfo=UTC), datetime(2026, 12, 5, 16, 56, 59, tzinfo=UTC),
                datetime(2026, 12, 5, 17, 0, 0, tzinfo=UTC)):  # 10:00, 23:56:59 and 00:00 in Vietnam
        clock = Clock(now)
        assert vn_day_with_room(180, clock=clock, sleep=clock.sleep) == now.astimezone(VN_TZ).date()
        assert clock.slept == 0
