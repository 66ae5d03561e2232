"""Consults by status on the real FerretDB (review 8, finding 4): the officer saw 11 consults requested
and nowhere that 10 were completed and 1 still open. The dashboard now says where the consults requested
in the period stand, per requesting facility: waiting (for the hub), accepted, booked, completed,
cancelled, rejected, from teleconsult's own events (validated against their schemas) through the read
model's handler, some counted in a sealed month, some in the live slot. A booking names no facility:
its consult's request says whose it is. A request stored before facts kept their consult is
``unknown`` until ``python -m sen_portal.rebuild facts`` re-derives it."""

from __future__ import annotations

import csv
import io
import json
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sen_portal.domain import reporting
from sen_portal.domain.dashboard import csv_rows, dashboard
from sen_portal.domain.report_facts import VN
from sen_portal.domain.reporting import FACTS, record_event
from sen_portal.rebuild import rebuild_facts
from sen_shared.auth import issue_dev_token
from sen_shared.bus.events import make_event

from tests.support import app_client

pytestmark = pytest.mark.integration

NOW = datetime(2026, 12, 4, 9, 5, tzinfo=VN)  # November is a sealed month; today's last minutes are live
START, END = date(2026, 11, 1), date(2026, 12, 4)
CL, TM = "Huyện Cao Lãnh", "Huyện Tháp Mười"
MY_HIEP, DOC_BINH_KIEU = "Organization/tyt-my-hiep", "Organization/tyt-doc-binh-kieu"


# the minutes as the event catalog's example has them (teleconsult's completed event carries them whole)
MINUTES = json.loads((Path(__file__).parents[2] / "specs/events/examples/teleconsult.consult.completed.json")
                     .read_text(encoding="utf-8"))["data"]["minutes"]


class Consult:
    """One consult's events as teleconsult publishes them (workflow._event_base and its fields)."""

    def __init__(self, requester: str, district: str, at: datetime) -> None:
        self.sr, self.at = f"ServiceRequest/{uuid.uuid4().hex[:10]}", at
        self.base = {"serviceRequest": self.sr, "task": f"Task/{uuid.uuid4().hex[:10]}", "requester": requester,
                     "district": district, "priority": "urgent"}
        self.events: list[tuple[dict[str, Any], datetime]] = []

    def _add(self, key: str, data: dict[str, Any], at: datetime) -> Consult:
        self.events.append((make_event(key, data, subject=self.sr, time=at.astimezone(UTC).isoformat(
            timespec="milliseconds").replace("+00:00", "Z")), at))
        return self

    def requested(self) -> Consult:
        return self._add("teleconsult.consult.requested", {
            **self.base, "patient": "Patient/p1", "requestedAt": self.at.isoformat(),
            "dueAt": (self.at + timedelta(hours=4)).isoformat()}, self.at)

    def accepted(self, minutes: int = 5) -> Consult:
        at = self.at + timedelta(minutes=minutes)
        return self._add("teleconsult.consult.accepted", {
            **self.base, "performer": "Practitioner/bs-hub", "patient": "Patient/p1",
            "requestedAt": self.at.isoformat(), "acceptedAt": at.isoformat()}, at)

    def booked(self, minutes: int = 8) -> Consult:
        at = self.at + timedelta(minutes=minutes)
        appointment = uuid.uuid4().hex[:10]
        return self._add("teleconsult.appointment.booked", {  # no requester, no district: its request says
            "appointment": f"Appointment/{appointment}", "serviceRequest": self.sr, "slot": "Slot/s1",
            "performer": "Practitioner/bs-hub", "start": (at + timedelta(hours=1)).isoformat(),
            "end": (at + timedelta(hours=1, minutes=30)).isoformat(), "bookedAt": at.isoformat()}, at)

    def completed(self, minutes: int = 40) -> Consult:
        at = self.at + timedelta(minutes=minutes)
        return self._add("teleconsult.consult.completed", {
            **self.base, "patient": "Patient/p1", "performer": "Practitioner/bs-hub",
            "period": {"start": self.at.isoformat(), "end": at.isoformat()}, "minutes": MINUTES,
            "requestedAt": self.at.isoformat(), "completedAt": at.isoformat()}, at)

    def cancelled(self, minutes: int = 20) -> Consult:
        at = self.at + timedelta(minutes=minutes)
        return self._add("teleconsult.consult.cancelled", {**self.base, "cancelledAt": at.isoformat()}, at)

    def rejected(self, minutes: int = 10) -> Consult:
        at = self.at + timedelta(minutes=minutes)
        return self._add("teleconsult.consult.rejected", {**self.base, "reason": "Ngoài chuyên khoa",
                                                           "rejectedAt": at.isoformat()}, at)


def _feed(db: Any, consults: list[Consult], now: datetime) -> None:
    events = sorted((e for c in consults for e in c.events), key=lambda e: e[1])
    for event, at in events:
        assert record_event(db, event, now=min(at + timedelta(seconds=20), now - timedelta(seconds=5)))


def _mine(data: dict[str, Any]) -> dict[tuple[str | None, str], int]:
    return {(r["facility"], r["status"]): r["count"] for r in data["consults_by_status"]}


def test_where_the_consults_requested_in_the_period_stand_per_facility(fresh_db: Any) -> None:
    reporting.sealed_cache.clear()
    nov = datetime(2026, 11, 30, 8, 0, tzinfo=VN)
    live = NOW - timedelta(minutes=3)
    consults = [
        # the review's facility: eleven requested, ten completed (three in the live slot), one still open
        *(Consult(MY_HIEP, CL, nov + timedelta(minutes=50 * i)).requested().accepted().booked().completed()
          for i in range(7)),
        *(Consult(MY_HIEP, CL, live).requested().accepted(0).completed(1) for _ in range(3)),
        Consult(MY_HIEP, CL, nov).requested().accepted(),
        # another district's: one of each other status; its cancellation came after a booking
        Consult(DOC_BINH_KIEU, TM, nov).requested(),
        Consult(DOC_BINH_KIEU, TM, nov).requested().accepted(),
        Consult(DOC_BINH_KIEU, TM, nov).requested().accepted().booked(),
        Consult(DOC_BINH_KIEU, TM, nov).requested().accepted().booked().cancelled(),
        Consult(DOC_BINH_KIEU, TM, nov).requested().rejected(),
    ]
    # requested before the period and completed in it: not one of the period's consults
    early = Consult(MY_HIEP, CL, datetime(2026, 10, 30, 9, tzinfo=VN)).requested()
    early._add("teleconsult.consult.completed", {**early.base, "patient": "Patient/p1",
                                                 "performer": "Practitioner/bs-hub", "minutes": MINUTES,
                                                 "period": {"start": early.at.isoformat(), "end": nov.isoformat()},
                                                 "requestedAt": early.at.isoformat(),
                                                 "completedAt": nov.isoformat()}, nov)
    _feed(fresh_db, [*consults, early], NOW)
    reporting.seal(fresh_db, NOW)  # November sealed; today's last minutes live

    data = dashboard(fresh_db, START, END, None, now=NOW)
    assert _mine(data) == {(DOC_BINH_KIEU, "waiting"): 1, (DOC_BINH_KIEU, "accepted"): 1,
                           (DOC_BINH_KIEU, "booked"): 1, (DOC_BINH_KIEU, "cancelled"): 1,
                           (DOC_BINH_KIEU, "rejected"): 1,
                           (MY_HIEP, "accepted"): 1, (MY_HIEP, "completed"): 10}
    # in the statuses' order per facility, and as many as the consults requested
    assert [r["status"] for r in data["consults_by_status"] if r["facility"] == DOC_BINH_KIEU] == [
        "waiting", "accepted", "booked", "cancelled", "rejected"]
    assert sum(r["count"] for r in data["consults_by_status"]) == sum(
        r["count"] for r in data["consults_per_facility_week"]) == 16
    # the page's filters: one facility (its id or reference), one district
    assert _mine(dashboard(fresh_db, START, END, None, facility="tyt-my-hiep", now=NOW)) == {
        (MY_HIEP, "accepted"): 1, (MY_HIEP, "completed"): 10}
    assert _mine(dashboard(fresh_db, START, END, TM, now=NOW)) == {
        k: v for k, v in _mine(data).items() if k[0] == DOC_BINH_KIEU}
    # a period with only today: the live consults, completed
    assert _mine(dashboard(fresh_db, NOW.date(), NOW.date(), None, now=NOW)) == {(MY_HIEP, "completed"): 3}
    # the CSV: one row per facility and status, the facility by its id
    header, rows = csv_rows("consults_by_status", fresh_db, START, END, CL, now=NOW)
    assert header == ["facility", "district", "status", "count"]
    assert rows == [["tyt-my-hiep", CL, "accepted", 1], ["tyt-my-hiep", CL, "completed", 10]]

    # the open consult is completed now: the same period says so
    later = NOW + timedelta(minutes=10)
    open_one = consults[10]
    open_one.events.clear()
    open_one.booked(minutes=60 * 24 * 4 + 130).completed(minutes=60 * 24 * 4 + 190)
    for event, _at in open_one.events:
        assert record_event(fresh_db, event, now=later - timedelta(minutes=1))
    assert _mine(dashboard(fresh_db, START, END, CL, now=later)) == {(MY_HIEP, "completed"): 11}


def test_requests_stored_before_facts_kept_their_consult_are_unknown_until_rebuilt(fresh_db: Any) -> None:
    reporting.sealed_cache.clear()
    nov = datetime(2026, 11, 20, 8, 0, tzinfo=VN)
    consults = [Consult(MY_HIEP, CL, nov).requested().accepted().completed(),
                Consult(MY_HIEP, CL, nov).requested()]
    _feed(fresh_db, consults, NOW)
    # an older portal's facts: no consult kept (the event itself is kept whole)
    fresh_db[FACTS].update_many({}, {"$unset": {"consult": ""}})
    reporting.seal(fresh_db, NOW)
    assert _mine(dashboard(fresh_db, START, END, None, now=NOW)) == {(MY_HIEP, "unknown"): 2}  # never guessed
    rebuild_facts(fresh_db)
    reporting.sealed_cache.clear()
    assert _mine(dashboard(fresh_db, START, END, None, now=NOW)) == {(MY_HIEP, "waiting"): 1,
                                                                     (MY_HIEP, "completed"): 1}


def test_the_json_api_and_its_csv_say_it(base_env, run_id, mongo_client, dev_key) -> None:
    db = f"sen_t{run_id}_portal_status"
    with app_client("portal", base_env, db, mongo_client) as (client, _app):
        reporting.sealed_cache.clear()
        at = datetime.now(VN) - timedelta(hours=1)
        consults = [Consult(MY_HIEP, CL, at).requested().accepted(1).booked(2),
                    Consult(MY_HIEP, CL, at).requested().rejected(1)]
        _feed(mongo_client[db], consults, datetime.now(VN))
        auth = {"Authorization": f"Bearer {issue_dev_token(dev_key, 'health-dept')}"}
        r = client.get("/api/reports/dashboard", headers=auth)
        assert r.status_code == 200, r.text
        assert r.json()["consults_by_status"] == [
            {"facility": MY_HIEP, "district": CL, "status": "booked", "count": 1},
            {"facility": MY_HIEP, "district": CL, "status": "rejected", "count": 1}]
        r = client.get("/api/reports/consults_by_status.csv", headers=auth)
        assert r.status_code == 200, r.text
        rows = list(csv.reader(io.StringIO(r.text.lstrip("\ufeff"))))
        assert rows == [["facility", "district", "status", "count"], ["tyt-my-hiep", CL, "booked", "1"],
                        ["tyt-my-hiep", CL, "rejected", "1"]]
