""""Đang sử dụng" (in use) on the health department's dashboard, at its edges (real FerretDB).

The figure the province tracks ("remote diagnosis in 22 of 165 facilities, all 165 wanted") counted
every facility that had requested a consult anywhere in the page's period (twelve weeks by default),
withdrawn or refused alike. Now a facility is in use when it requested at least one consult in the 30
days up to the end of the period that is not cancelled or rejected (domain.dashboard.IN_USE_DAYS,
``facilities_in_use``); the page says so beside the figure.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime, timedelta
from typing import Any

import pytest
from sen_portal.domain import reporting
from sen_portal.domain.dashboard import Targets, csv_rows, dashboard
from sen_portal.domain.report_facts import VN
from sen_portal.domain.reporting import record_event

pytestmark = pytest.mark.integration

END = date(2026, 11, 30)  # the period's last day; the 30 days in use: 01/11 to 30/11
NOW = datetime(2026, 12, 4, 9, 5, tzinfo=VN)
CL, TM = "Cao Lãnh", "Tháp Mười"


def fac(name: str) -> str:
    return f"Organization/tyt-{name}"


def consult(db: Any, who: str, day: date, *, ends: str | None = None, district: str = CL) -> None:
    """A consult of ``who`` requested at 09:00 on ``day`` (Vietnam), and its end (``cancelled``, ``rejected``,
    ``completed``) or acceptance (``accepted``) an hour later, each arriving a minute after it happened."""
    sr = f"ServiceRequest/{uuid.uuid4().hex[:8]}"
    at = datetime.combine(day, datetime.min.time(), VN) + timedelta(hours=9)
    base = {"serviceRequest": sr, "requester": fac(who), "district": district, "priority": "routine",
            "requestedAt": at.isoformat()}
    events = [("requested", base, at)]
    if ends:
        later = at + timedelta(hours=1)
        events.append((ends, {**base, f"{ends}At": later.isoformat()}, later))
    for verb, data, when in events:
        event = {"specversion": "1.0", "id": str(uuid.uuid4()), "source": "/sen/test",
                 "type": f"vn.sen.teleconsult.consult.{verb}.v1", "time": when.isoformat(), "data": data}
        assert record_event(db, event, now=when + timedelta(minutes=1)) is True


def in_use(db: Any, start: date = date(2026, 9, 8), end: date = END, district: str | None = None,
           facility: str | None = None, targets: Targets | None = None) -> dict[str, Any]:
    reporting.sealed_cache.clear()
    return dashboard(db, start, end, district, now=NOW, facility=facility, targets=targets)["facilities_using"]


@pytest.fixture()
def province(fresh_db: Any) -> Any:
    consult(fresh_db, "old", END - timedelta(days=30))  # 31 days before the end, counting the end: out
    consult(fresh_db, "edge", END - timedelta(days=29))  # the first of the 30 days: in
    consult(fresh_db, "today", END)  # the last day, still waiting for the hub: in
    consult(fresh_db, "cancelled", END - timedelta(days=3), ends="cancelled")  # withdrawn: no remote diagnosis
    consult(fresh_db, "rejected", END - timedelta(days=3), ends="rejected", district=TM)  # refused by the hub
    consult(fresh_db, "again", END - timedelta(days=5), ends="cancelled")  # one withdrawn, one completed: in
    consult(fresh_db, "again", END - timedelta(days=4), ends="completed")
    consult(fresh_db, "accepted", END - timedelta(days=2), ends="accepted", district=TM)  # taken by a doctor: in
    return fresh_db


def test_a_facility_is_in_use_for_a_consult_not_withdrawn_nor_refused_in_the_last_30_days(province: Any) -> None:
    got = in_use(province)
    assert (got["since"], got["until"]) == ("2026-11-01", "2026-11-30")
    assert got["new"] == 4 and got["count"] == 22 + 4  # edge, today, again, accepted
    # the consults chart still counts every request of the period: in use is a narrower figure
    reporting.sealed_cache.clear()
    weekly = dashboard(province, date(2026, 9, 8), END, None, now=NOW)["consults_per_facility_week"]
    assert {r["facility"] for r in weekly} == {fac(n) for n in
                                               ("old", "edge", "today", "cancelled", "rejected", "again", "accepted")}


def test_each_edge_alone(province: Any) -> None:
    def one(name: str) -> int:
        return in_use(province, facility=fac(name))["count"]

    assert [one(n) for n in ("old", "edge", "today", "cancelled", "rejected", "again", "accepted")] == \
        [0, 1, 1, 0, 0, 1, 1]


def test_the_window_is_the_last_30_days_of_the_period_whatever_its_start(province: Any) -> None:
    # a week's period: the 30 days still end on its last day (a request before the week counts)
    week = in_use(province, start=END - timedelta(days=6))
    assert (week["since"], week["new"]) == ("2026-11-01", 4)
    # a period ending a day earlier: "today"'s consult is after it, "old"'s is now within the 30 days
    earlier = in_use(province, end=END - timedelta(days=1))
    assert (earlier["since"], earlier["until"], earlier["new"]) == ("2026-10-31", "2026-11-29", 4)
    assert in_use(province, end=END - timedelta(days=1), facility=fac("old"))["count"] == 1
    assert in_use(province, end=END - timedelta(days=1), facility=fac("today"))["count"] == 0


def test_a_district_and_the_named_baseline_count_the_same_way(province: Any) -> None:
    assert in_use(province, district=CL)["count"] == 3  # edge, today, again
    assert in_use(province, district=TM)["count"] == 1  # accepted (rejected is refused)
    named = Targets(facility_baseline=2, baseline_facilities=frozenset({"tyt-edge", "tyt-cancelled"}))
    got = in_use(province, targets=named)
    assert (got["count"], got["new"], got["baseline_using"]) == (2 + 3, 3, 1)  # the withdrawn one is not using


def test_the_csv_says_the_30_days(province: Any) -> None:
    reporting.sealed_cache.clear()
    header, rows = csv_rows("facilities_using", province, date(2026, 9, 8), END, now=NOW)
    assert header[-2:] == ["since", "until"] and rows[0][-2:] == ["2026-11-01", "2026-11-30"]
    assert rows[0][3:5] == [26, 4]
