"""``python -m sen_portal.rebuild facts`` over facts an older portal stored (on the real FerretDB).

The first read model (until dd91517, 2026-12-04) stored each fact in a 10-minute arrival slot and
claimed a slot marker naming no hour, and no hour markers; its facts had only the first dimensions
(no ``consult``, ``outcome``, ``from_day``, ``from_facility``) and its sealed totals the first
sections (``payments``, ``answers``...). Today's sums find facts through day -> hour -> slot
markers, so a rebuild dropped those totals and summed the old days from no hour: every figure of
them was nothing. The rebuild now claims each fact's markers as the handler does today; the
figures equal those of the same events counted by today's portal, and a second run changes nothing.
"""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from sen_portal.domain import reporting
from sen_portal.domain.dashboard import dashboard
from sen_portal.domain.report_facts import VN, extract
from sen_portal.domain.reporting import FACTS, META, TOTALS, record_event
from sen_portal.rebuild import rebuild_facts

pytestmark = pytest.mark.integration

NOW = datetime(2026, 12, 4, 9, 5, tzinfo=VN)
A, B, C = (f"Organization/tyt-{x}" for x in "abc")
CL, TM = "Cao Lãnh", "Tháp Mười"
# the dimensions the first read model derived (49b8792): the others came later
FIRST_DIMENSIONS = {"k", "day", "week", "facility", "district", "priority", "channel", "amount", "minutes", "ev"}


def t(day: int, hh: int = 9, mm: int = 0, month: int = 11) -> datetime:
    return datetime(2026, month, day, hh, mm, tzinfo=VN)


def ev(key: str, data: dict[str, Any], at: str = "2026-11-01T00:00:00Z") -> dict[str, Any]:
    return {"specversion": "1.0", "id": str(uuid.uuid4()), "source": "/sen/test", "type": f"vn.sen.{key}.v1",
            "time": at, "data": data}


def events() -> list[tuple[dict[str, Any], datetime]]:
    """Every kind of event the dashboard reads, each with its arrival time: consults through each of their
    ends, a breach, money applied, unmatched then assigned to another facility's invoice and part given
    back, late money, patient records created, moved, noted and deleted, and a consult of this month."""
    out: list[tuple[dict[str, Any], datetime]] = []
    for i, (fac, dist, day, prio) in enumerate([(A, CL, 2, "routine"), (A, CL, 3, "urgent"), (B, TM, 4, "routine"),
                                                 (B, TM, 9, "stat"), (C, CL, 10, "routine"), (A, CL, 20, "asap")]):
        sr = f"ServiceRequest/sr{i}"
        base = {"serviceRequest": sr, "requester": fac, "district": dist, "priority": prio,
                "requestedAt": t(day).isoformat()}
        out.append((ev("teleconsult.consult.requested", base), t(day, 9, 1)))
        if i in (0, 1, 2, 5):
            out.append((ev("teleconsult.consult.accepted", {**base, "acceptedAt": t(day, 9, 20).isoformat()}),
                        t(day, 9, 21)))
        if i in (0, 5):
            booked = {"serviceRequest": sr, "bookedAt": t(day, 10).isoformat()}
            out.append((ev("teleconsult.appointment.booked", booked), t(day, 10, 1)))
        end = {0: ("completed", "completedAt"), 3: ("cancelled", "cancelledAt"), 4: ("rejected", "rejectedAt")}
        if i in end:
            verb, field = end[i]
            out.append((ev(f"teleconsult.consult.{verb}", {**base, field: t(day, 11, 30).isoformat()}), t(day, 11, 31)))
        if i == 2:
            out.append((ev("teleconsult.consult.sla_breached", {**base, "breachedAt": t(day, 13).isoformat()}),
                        t(day, 13, 1)))

    def pay(day: int, amount: int, channel: str, **data: Any) -> dict[str, Any]:
        return ev("billing.payment.received", {"payment": uuid.uuid4().hex, "amount": amount, "currency": "VND",
                                               "channel": channel, "receivedAt": t(day, 15).isoformat(), **data})

    out += [
        (pay(3, 150_000, "transfer", facility=A, district=CL, invoice="Invoice/i1", matched=True, outcome="applied"),
         t(3, 15, 1)),
        (pay(4, 100_000, "cash", facility=A, district=CL, invoice="Invoice/i2", matched=True, outcome="applied"),
         t(4, 15, 1)),
        (pay(5, 70_000, "transfer", payment="p-un", matched=False, outcome="unmatched", queueFacility=A), t(5, 15, 1)),
        (pay(7, 70_000, "transfer", payment="assign:p-un", facility=B, district=TM, invoice="Invoice/i3", matched=True,
             outcome="applied", assignedFrom="p-un", assignedFromReceivedAt=t(5, 15).isoformat(),
             assignedFromQueue=A), t(7, 15, 1)),
        (ev("billing.payment.refunded", {"refund": "r1", "payment": "assign:p-un", "facility": B, "district": TM,
                                         "amount": 20_000, "channel": "transfer", "refundedAt": t(8).isoformat(),
                                         "outcome": "applied", "assignedFromReceivedAt": t(5, 15).isoformat()}),
         t(8, 9, 1)),
        (pay(9, 30_000, "transfer", facility=B, district=TM, invoice="Invoice/i4", matched=True,
             outcome="late-balanced"), t(9, 15, 1)),
    ]
    for n, (verb, data, day) in enumerate([("created", {"district": CL}, 2), ("created", {"district": TM}, 3),
                                           ("created", {}, 4), ("updated", {"district": TM, "previousDistrict": CL}, 6),
                                           ("district_noted", {"district": CL}, 7), ("deleted", {"district": TM}, 8)]):
        out.append((ev(f"ehr.patient.{verb}", {"resourceType": "Patient", "id": f"p{n}", "versionId": "1", **data},
                       at=datetime(2026, 11, day, 3, tzinfo=UTC).isoformat()), t(day, 10, 5)))
    out.append((ev("teleconsult.consult.requested", {"serviceRequest": "ServiceRequest/dec", "requester": B,
                                                     "district": TM, "priority": "routine",
                                                     "requestedAt": t(2, month=12).isoformat()}), t(2, 9, 1, month=12)))
    return out


def store_as_the_first_read_model(db: Any, stream: list[tuple[dict[str, Any], datetime]]) -> None:
    """The facts, markers and sealed totals the portal of 49b8792 stored for ``stream``: 10-minute slots,
    slot markers without an hour, the first dimensions, totals under the first sections' names."""
    for event, arrival in stream:
        start = arrival.replace(minute=arrival.minute - arrival.minute % 10, second=0, microsecond=0)
        slot, day = start.strftime("%Y-%m-%dT%H:%M"), start.date().isoformat()
        db[META].update_one({"_id": f"day/{day}"}, {"$setOnInsert": {"kind": "day", "day": day, "month": day[:7]}},
                            upsert=True)
        db[META].update_one({"_id": f"slot/{slot}"}, {"$setOnInsert": {"kind": "slot", "slot": slot, "day": day}},
                            upsert=True)
        fact = {k: v for k, v in extract(event).items() if k in FIRST_DIMENSIONS}
        db[FACTS].insert_one({"_id": event["id"], **fact, "slot": slot, "sday": day, "at": arrival.astimezone(UTC)})
    for section in ("events", "consults", "answers", "breaches", "payments", "patients"):  # its sections, sealed
        db[TOTALS].insert_one({"_id": f"m/2026-11/{section}", "level": "m", "bucket": "2026-11", "section": section,
                               "month": "2026-11", "rows": []})
    db[TOTALS].insert_one({"_id": "m/2026-11", "mark": "m", "bucket": "2026-11", "month": "2026-11", "facts": 0})


def figures(db: Any) -> dict[str, Any]:
    reporting.sealed_cache.clear()
    out = {}
    for district, facility in ((None, None), (CL, None), (TM, None), (None, A), (None, B)):
        d = dashboard(db, date(2026, 11, 1), date(2026, 12, 4), district, now=NOW, facility=facility)
        d.pop("generated_at")
        out[f"{district}/{facility}"] = d
    return out


@pytest.fixture()
def today_db(mongo_client: Any, fresh_db: Any) -> Any:
    db = mongo_client[f"{fresh_db.name}_now"]
    yield db
    mongo_client.drop_database(db.name)


def test_facts_of_the_first_read_model_are_rebuilt_to_todays_figures_and_twice_the_same(
        fresh_db: Any, today_db: Any) -> None:
    stream = events()
    for event, arrival in stream:
        assert record_event(today_db, event, now=arrival) is True
    expected = figures(today_db)
    province = expected["None/None"]
    assert province["facilities_using"]["new"] == 2 and province["cashless_share"]["assigned_earlier_amount"] == 0
    assert {r["status"] for r in province["consults_by_status"]} >= {"completed", "cancelled", "rejected", "booked"}

    store_as_the_first_read_model(fresh_db, stream)
    assert figures(fresh_db) != expected  # as stored: no consult statuses, money read the first way...
    assert rebuild_facts(fresh_db) > 0  # the facts given the dimensions added since
    assert figures(fresh_db) == expected
    # every marker as today's handler claims it: the old slot markers name their hour
    assert fresh_db[META].count_documents({"kind": "slot", "hour": {"$exists": False}}) == 0
    assert fresh_db[META].find_one({"_id": "hour/2026-11-02T09"}) is not None

    assert rebuild_facts(fresh_db) == 0  # idempotent: nothing to change, the same figures again
    assert figures(fresh_db) == expected


def test_rebuilding_todays_facts_changes_no_figure(today_db: Any) -> None:
    for event, arrival in events():
        record_event(today_db, event, now=arrival + timedelta(seconds=5))
    reporting.seal(today_db, now=NOW)
    expected = figures(today_db)
    markers = sorted(d["_id"] for d in today_db[META].find({}, {"_id": 1}))
    assert rebuild_facts(today_db) == 0
    assert figures(today_db) == expected
    assert sorted(d["_id"] for d in today_db[META].find({}, {"_id": 1})) == markers
