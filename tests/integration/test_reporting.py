"""The portal's reporting read model on the real FerretDB (and RabbitMQ for the consumer path).

Events are fed to the handler with the arrival time given (``record_event(now=...)``), so
sealed slots, days and months and the live slot are all exercised in one test.
"""

from __future__ import annotations

import random
import threading
import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from sen_portal.domain import reporting
from sen_portal.domain.dashboard import RangeError, Targets, csv_rows, dashboard
from sen_portal.domain.report_facts import VN, median_and_p90
from sen_portal.domain.reporting import FACTS, TOTALS, gather, record_event, seal

from tests.integration.reporting_support import through_reporting

pytestmark = pytest.mark.integration

NOW = datetime(2026, 12, 4, 9, 5, tzinfo=VN)  # the queries' clock: November is a sealed month
A, B, C, D = (f"Organization/tyt-{x}" for x in "abcd")
CL, TM = "Cao Lãnh", "Tháp Mười"
SHARE = ("transfer_amount", "cash_amount", "share", "transfer_count", "cash_count")  # the takings' figures


def ev(key: str, data: dict[str, Any], *, at: str | None = None, event_id: str | None = None) -> dict[str, Any]:
    return {"specversion": "1.0", "id": event_id or str(uuid.uuid4()), "source": "/sen/test",
            "type": f"vn.sen.{key}.v1", "time": at or "2026-11-01T00:00:00Z", "data": data}


def t(day: int, hh: int = 9, mm: int = 0, month: int = 11) -> str:
    return datetime(2026, month, day, hh, mm, tzinfo=VN).isoformat()


def requested(fac: str, district: str, day: int, month: int = 11) -> dict[str, Any]:
    return ev("teleconsult.consult.requested", {"serviceRequest": f"ServiceRequest/{uuid.uuid4().hex[:6]}",
              "requester": fac, "district": district, "priority": "routine", "requestedAt": t(day, month=month)})


def accepted(fac: str, district: str, day: int, priority: str, minutes: int) -> dict[str, Any]:
    return ev("teleconsult.consult.accepted", {"requester": fac, "district": district, "priority": priority,
              "requestedAt": t(day), "acceptedAt": t(day, 9, minutes)})


def completed(fac: str, district: str, day: int, priority: str, minutes: int) -> dict[str, Any]:
    return ev("teleconsult.consult.completed", {"requester": fac, "district": district, "priority": priority,
              "requestedAt": t(day), "completedAt": t(day, 9 + minutes // 60, minutes % 60)})


def breached(district: str, day: int, priority: str) -> dict[str, Any]:
    return ev("teleconsult.consult.sla_breached", {"requester": A, "district": district, "priority": priority,
              "breachedAt": t(day, 11)})


def paid(fac: str, district: str, day: int, amount: int, channel: str) -> dict[str, Any]:
    return ev("billing.payment.received", {"payment": uuid.uuid4().hex, "facility": fac, "district": district,
              "invoice": f"Invoice/inv-{uuid.uuid4().hex[:8]}", "amount": amount, "currency": "VND",
              "channel": channel, "receivedAt": t(day, 15), "matched": True})


def patient(verb: str, day: int) -> dict[str, Any]:
    return ev(f"ehr.patient.{verb}", {"resourceType": "Patient", "id": uuid.uuid4().hex[:8], "versionId": "1"},
              at=datetime(2026, 11, day, 3, tzinfo=UTC).isoformat())


def arrive(db: Any, event: dict[str, Any], after_minutes: int = 1, at: datetime | None = None) -> bool:
    """Feed one event as if it arrived ``after_minutes`` after its own time (or at ``at``)."""
    data = event["data"]
    own = next((v for k, v in data.items() if k.endswith("At") and k != "requestedAt"), None) \
        or data.get("requestedAt") or event["time"]
    when = at or datetime.fromisoformat(own.replace("Z", "+00:00")) + timedelta(minutes=after_minutes)
    return record_event(db, event, now=when)


@pytest.fixture()
def province(fresh_db: Any) -> Any:
    """A hand-made fortnight in November 2026 (weeks 45 and 46), plus events outside it."""
    events = [
        requested(A, CL, 2), requested(A, CL, 3), requested(A, CL, 4), requested(A, CL, 10),
        requested(B, TM, 2), requested(B, TM, 5),
        requested(C, CL, 1, month=11),  # the day before the range
        accepted(A, CL, 3, "routine", 10), accepted(A, CL, 4, "routine", 20), accepted(A, CL, 10, "routine", 30),
        accepted(A, CL, 11, "routine", 40), accepted(B, TM, 5, "urgent", 5),
        # the consult requested 09:00 and accepted at once (0 minutes) is concluded 6 minutes on
        accepted(B, TM, 6, "urgent", 0), completed(B, TM, 6, "urgent", 6),
        completed(A, CL, 3, "routine", 70), completed(A, CL, 4, "routine", 90),
        breached(TM, 5, "urgent"), breached(CL, 11, "routine"), breached(CL, 12, "routine"),
        paid(A, CL, 3, 150_000, "transfer"), paid(B, TM, 4, 50_000, "transfer"), paid(A, CL, 6, 100_000, "cash"),
        paid(A, CL, 20, 999_000, "transfer"),  # after the range
        patient("created", 1), patient("created", 2), patient("created", 3), patient("created", 4),
        patient("created", 5), patient("deleted", 6), patient("created", 20),
    ]
    for e in events:
        assert arrive(fresh_db, e) is True
    assert arrive(fresh_db, events[0], after_minutes=90) is False  # redelivered much later: counted once
    # a late event: requested on 12 November, arriving in today's live slot
    late = requested(D, CL, 12)
    assert arrive(fresh_db, late, at=NOW - timedelta(minutes=2)) is True
    return fresh_db


def test_dashboard_figures_from_a_hand_made_fortnight(province: Any) -> None:
    d = dashboard(province, date(2026, 11, 2), date(2026, 11, 15), None, now=NOW)
    assert d["range"]["weeks"] == ["2026-W45", "2026-W46"]
    # in use: a consult requested in the 30 days up to the range's end (C's, the day before the range, too)
    assert d["facilities_using"] == {"count": 26, "new": 4, "baseline": 22, "goal": 165, "share": 0.1576,
                                     "baseline_named": False, "baseline_using": None,
                                     "since": "2026-10-17", "until": "2026-11-15"}
    assert d["consults_per_facility_week"] == [
        {"facility": A, "district": CL, "week": "2026-W45", "count": 3},
        {"facility": B, "district": TM, "week": "2026-W45", "count": 2},
        {"facility": A, "district": CL, "week": "2026-W46", "count": 1},
        {"facility": D, "district": CL, "week": "2026-W46", "count": 1}]
    tta = d["time_to_answer"]
    assert tta["routine"] == {"count": 4, "median_minutes": 25.0, "p90_minutes": 40}
    assert tta["urgent"] == {"count": 2, "median_minutes": 2.5, "p90_minutes": 5}
    assert tta["stat"] == {"count": 0, "median_minutes": None, "p90_minutes": None}
    # time to conclusion: requested -> the minutes signed, beside the time to acceptance
    ttc = d["time_to_conclusion"]
    assert ttc["urgent"] == {"count": 1, "median_minutes": 6.0, "p90_minutes": 6}
    assert ttc["routine"] == {"count": 2, "median_minutes": 80.0, "p90_minutes": 90}
    assert ttc["stat"]["count"] == 0
    assert d["sla_breaches"] == [{"week": "2026-W45", "priority": "urgent", "count": 1},
                                 {"week": "2026-W46", "priority": "routine", "count": 2}]
    assert {k: d["cashless_share"][k] for k in SHARE} == {"transfer_amount": 200_000, "cash_amount": 100_000,
                                                         "share": 0.6667, "transfer_count": 2, "cash_count": 1}
    assert d["ehr_coverage"] == {"patients": 4, "population": 10, "share": 0.4, "as_of": "2026-11-15",
                                 "population_outdated": False, "without_district": 4}


def test_dashboard_filters_by_district_and_uses_the_targets(province: Any) -> None:
    targets = Targets(facility_goal=165, facility_baseline=100, population=8, district_populations={CL: 5})
    d = dashboard(province, date(2026, 11, 2), date(2026, 11, 15), CL, now=NOW, targets=targets)
    # a district's facilities: those of the district that used Sen; the baseline and the goal are the
    # province's settings, so no district is given the province's 100 facilities before Sen
    assert d["facilities_using"] == {"count": 3, "new": 3, "baseline": None, "goal": None, "share": None,
                                     "baseline_named": None, "baseline_using": None,
                                     "since": "2026-10-17", "until": "2026-11-15"}  # A, C and D
    assert {r["facility"] for r in d["consults_per_facility_week"]} == {A, D}
    assert d["time_to_answer"]["urgent"]["count"] == 0 and d["time_to_answer"]["routine"]["count"] == 4
    assert d["time_to_conclusion"]["urgent"]["count"] == 0 and d["time_to_conclusion"]["routine"]["count"] == 2
    assert d["sla_breaches"] == [{"week": "2026-W46", "priority": "routine", "count": 2}]
    assert d["cashless_share"]["share"] == 0.6 and d["cashless_share"]["cash_count"] == 1
    # these patient events name no district (as before the EHR's named one): the province's only,
    # and the district's figure says how many records it cannot place
    assert d["ehr_coverage"] == {"patients": 0, "population": 5, "share": 0.0, "as_of": "2026-11-15",
                                 "population_outdated": False, "without_district": 4}
    tm = dashboard(province, date(2026, 11, 2), date(2026, 11, 15), TM, now=NOW, targets=targets)["ehr_coverage"]
    assert (tm["patients"], tm["population"], tm["share"]) == (0, None, None)  # no population set for it
    whole = dashboard(province, date(2026, 11, 2), date(2026, 11, 15), None, now=NOW, targets=targets)
    assert whole["facilities_using"]["count"] == 104 and whole["ehr_coverage"]["share"] == 0.5
    one_day = dashboard(province, date(2026, 11, 1), date(2026, 11, 1), None, now=NOW)
    assert one_day["facilities_using"]["new"] == 1 and one_day["ehr_coverage"]["patients"] == 1


def test_a_baseline_facility_that_requests_consults_is_not_counted_twice(province: Any) -> None:
    """Review 12: "using now" was the baseline's number plus every facility that requested a consult, so
    a facility already using teleconsultation before Sen that requested one through it counted twice.
    Named in the settings, it stays in the baseline; its use of Sen is said apart."""
    start, end = date(2026, 11, 2), date(2026, 11, 15)  # A, B, D (and C on 1 November) requested consults
    named = Targets(facility_baseline=3, baseline_facilities=frozenset({"tyt-a", "tyt-x", "tyt-y"}))
    d = dashboard(province, start, end, None, targets=named, now=NOW)
    assert d["facilities_using"] == {"count": 6, "new": 3, "baseline": 3, "goal": 165, "share": 0.0364,
                                     "baseline_named": True, "baseline_using": 1,
                                     "since": "2026-10-17", "until": "2026-11-15"}
    # by Organization reference as well, and the CSV says the same
    ref = Targets(facility_baseline=1, baseline_facilities=frozenset({A}))
    assert dashboard(province, start, end, None, targets=ref, now=NOW)["facilities_using"]["count"] == 4
    assert csv_rows("facilities_using", province, start, end, targets=named, now=NOW)[1][0][3:5] == [6, 3]
    # a district's figure has no baseline: every facility of it that requested a consult
    assert dashboard(province, start, end, CL, targets=named, now=NOW)["facilities_using"]["count"] == 3


def test_the_baseline_facilities_setting() -> None:
    from sen_portal.config import PortalSettings as Portal

    def PortalSettings(**env: Any) -> Any:  # noqa: N802 - the settings, with the development issuer's key named
        return Portal(SEN_DEV_JWT_KEY="dev-jwt.pem", **env)

    s = PortalSettings(SEN_REPORT_BASELINE_FACILITIES=["tyt-a", "Organization/tyt-b", "tyt-a"])
    assert s.report_facility_baseline == 2  # how many it names
    assert s.report_targets().baseline_facilities == frozenset({"tyt-a", "tyt-b"})
    assert PortalSettings(SEN_REPORT_FACILITY_BASELINE=2, SEN_REPORT_BASELINE_FACILITIES=["a", "b"]).report_targets() \
        .facility_baseline == 2
    with pytest.raises(ValueError, match="SEN_REPORT_FACILITY_BASELINE is 22 but"):
        PortalSettings(SEN_REPORT_FACILITY_BASELINE=22, SEN_REPORT_BASELINE_FACILITIES=["a", "b"])
    assert PortalSettings().report_targets().baseline_facilities == frozenset()


def test_a_population_smaller_than_the_records_gives_no_share_over_100_percent(province: Any) -> None:
    """The officer saw "120 % – 12 records for 10 residents": the records were distinct Patient records
    (each event once), the population the demo's default setting. Records over the population say the
    setting is out of date; no share above 1 is computed."""
    few = Targets(population=3)
    d = dashboard(province, date(2026, 11, 2), date(2026, 11, 15), None, now=NOW, targets=few)
    assert d["ehr_coverage"] == {"patients": 4, "population": 3, "share": None, "as_of": "2026-11-15",
                                 "population_outdated": True, "without_district": 4}
    exact = dashboard(province, date(2026, 11, 2), date(2026, 11, 15), None, now=NOW, targets=Targets(population=4))
    assert exact["ehr_coverage"]["share"] == 1.0 and exact["ehr_coverage"]["population_outdated"] is False
    assert csv_rows("ehr_coverage", province, date(2026, 11, 2), date(2026, 11, 15), now=NOW, targets=few) == (
        ["start", "end", "district", "patients", "population", "share", "as_of"],
        [["2026-11-02", "2026-11-15", None, 4, 3, None, "2026-11-15"]])
    with pytest.raises(RangeError):
        dashboard(province, date(2026, 11, 15), date(2026, 11, 2), None, now=NOW)


def test_totals_are_sealed_once_and_give_the_same_figures_as_live_facts(province: Any) -> None:
    before = dashboard(province, date(2026, 11, 2), date(2026, 11, 15), None, now=NOW)
    assert province[TOTALS].find_one({"_id": "m/2026-11"}) is not None  # the query sealed November
    sealed = province[TOTALS].count_documents({})
    assert seal(province, NOW) == 0 or province[TOTALS].count_documents({}) >= sealed
    again = dashboard(province, date(2026, 11, 2), date(2026, 11, 15), None, now=NOW)
    assert {k: v for k, v in again.items() if k != "generated_at"} == \
        {k: v for k, v in before.items() if k != "generated_at"}
    # an hour later, today's slot is sealed too; the figures do not move
    later = dashboard(province, date(2026, 11, 2), date(2026, 11, 15), None, now=NOW + timedelta(hours=1))
    assert later["consults_per_facility_week"] == before["consults_per_facility_week"]
    assert province[TOTALS].find_one({"_id": f"h/{NOW.strftime('%Y-%m-%d')}T09"}) is not None
    assert province[TOTALS].find_one({"_id": f"s/{NOW.strftime('%Y-%m-%d')}T09:03"}) is not None
    # rebuilding totals: dropped and summed again from the facts
    province.drop_collection(TOTALS)
    reporting.sealed_cache.clear()
    rebuilt = dashboard(province, date(2026, 11, 2), date(2026, 11, 15), None, now=NOW)
    assert rebuilt["cashless_share"] == before["cashless_share"]


def test_totals_sealed_before_the_conclusions_section_are_completed_from_the_facts(province: Any) -> None:
    """Buckets sealed by a portal that had no "conclusion_minutes" section (their marker is there, that
    total is not): a query sums the missing total from the facts, once, and the other totals stay as they
    were. (The same way, buckets sealed before the sections by facility get them from their facts.)"""
    start, end = date(2026, 11, 2), date(2026, 11, 15)
    before = dashboard(province, start, end, None, now=NOW)
    assert province[TOTALS].find_one({"_id": "m/2026-11/conclusion_minutes"}) is not None
    answers = province[TOTALS].find_one({"_id": "m/2026-11/acceptance_minutes"})
    province[TOTALS].delete_many({"section": "conclusion_minutes"})  # as an older portal sealed them
    reporting.sealed_cache.clear()
    again = dashboard(province, start, end, None, now=NOW)
    assert again["time_to_conclusion"] == before["time_to_conclusion"]
    assert again["time_to_conclusion"]["urgent"] == {"count": 1, "median_minutes": 6.0, "p90_minutes": 6}
    assert province[TOTALS].find_one({"_id": "m/2026-11/conclusion_minutes"}) is not None
    assert province[TOTALS].find_one({"_id": "m/2026-11/acceptance_minutes"}) == answers


def test_csv_rows_of_each_section(province: Any) -> None:
    start, end = date(2026, 11, 2), date(2026, 11, 15)
    header, rows = csv_rows("consults_per_facility_week", province, start, end, now=NOW)
    # the facility by its id (review 6: the file is named by it, the filter takes it)
    assert header == ["week", "facility", "district", "count"] and rows[0] == ["2026-W45", "tyt-a", CL, 3]
    header, rows = csv_rows("time_to_answer", province, start, end, now=NOW)
    assert ["routine", 4, 25.0, 40] in rows
    header, rows = csv_rows("time_to_conclusion", province, start, end, now=NOW)
    assert header == ["priority", "count", "median_minutes", "p90_minutes"] and ["urgent", 1, 6.0, 6] in rows
    header, rows = csv_rows("cashless_share", province, start, end, CL, now=NOW)
    assert header[:3] == ["start", "end", "district"] and [r[:8] for r in rows] == [
        ["2026-11-02", "2026-11-15", CL, 150_000, 100_000, 0.6, 1, 1]]
    assert csv_rows("sla_breaches", province, start, end, now=NOW)[1][0] == ["2026-W45", "urgent", 1]
    assert csv_rows("ehr_coverage", province, start, end, now=NOW)[1][0][3] == 4
    assert csv_rows("ehr_coverage", province, start, end, CL, now=NOW)[1] == [
        ["2026-11-02", "2026-11-15", CL, 0, None, None, "2026-11-15"]]  # no district in these events
    assert csv_rows("facilities_using", province, start, end, now=NOW)[1][0][3] == 26
    assert csv_rows("facilities_using", province, start, end, TM, now=NOW) == (
        ["start", "end", "district", "count", "new", "baseline", "goal", "share", "since", "until"],
        [["2026-11-02", "2026-11-15", TM, 1, 1, None, None, None, "2026-10-17", "2026-11-15"]])
    with pytest.raises(KeyError):
        csv_rows("nope", province, start, end, now=NOW)


def test_median_and_p90() -> None:
    assert median_and_p90({}) == (None, None)
    assert median_and_p90({7: 1}) == (7.0, 7)
    assert median_and_p90({1: 1, 2: 1, 3: 1}) == (2.0, 3)
    assert median_and_p90({1: 5, 100: 5}) == (50.5, 100)
    assert median_and_p90({m: 1 for m in range(1, 11)}) == (5.5, 9)


def test_20000_events_counted_exactly_once_with_duplicates_and_four_consumers(fresh_db: Any) -> None:
    """20,000 distinct events over three days of arrivals, 2,000 of them delivered twice,
    shared out to four threads in random order; sealed and live buckets both counted."""
    total, dupes, consumers = 20_000, 2_000, 4
    start = NOW - timedelta(days=2, hours=9)  # arrivals from 2 December 00:05 to 4 December 09:04
    span = (NOW - start).total_seconds() - 60
    # arrivals at 97 moments over the span (one-minute slots: 97 slots, hours and days to seal)
    events = [(ev("ehr.observation.created", {"resourceType": "Observation", "id": str(i), "versionId": "1"},
                  at=(start + timedelta(seconds=span * (i % 97) / 97)).astimezone(UTC).isoformat()),
               start + timedelta(seconds=span * (i % 97) / 97 + 1)) for i in range(total)]
    # and some in this hour: a sealed slot (09:02) and the live one (09:04)
    events = [(e, NOW - timedelta(seconds=30) if i % 97 == 0 else NOW - timedelta(minutes=3) if i % 97 == 1 else a)
              for i, (e, a) in enumerate(events)]
    deliveries = events + random.Random(7).sample(events, dupes)
    random.Random(8).shuffle(deliveries)
    applied = [0] * consumers

    def consume(k: int) -> None:
        for event, arrival in deliveries[k::consumers]:
            applied[k] += record_event(fresh_db, event, now=arrival)

    threads = [threading.Thread(target=consume, args=(k,)) for k in range(consumers)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(600)
    assert sum(applied) == total
    assert fresh_db[FACTS].count_documents({}) == total

    def counted(now: datetime) -> int:
        rows = gather(fresh_db, ["events"], now=now)["events"]
        return sum(r["n"] for r in rows if r["k"] == "ehr.observation.created")

    assert counted(NOW) == total  # sealed days and hours, this hour's sealed slot and the live one
    assert fresh_db[TOTALS].find_one({"_id": "s/2026-12-04T09:04"}) is None  # still live
    assert seal(fresh_db, NOW) >= 0 and counted(NOW) == total
    assert counted(NOW + timedelta(days=40)) == total  # December sealed as a month
    assert fresh_db[TOTALS].find_one({"_id": "m/2026-12"})["facts"] == 0  # a month's marker


def _patients(n: int) -> list[dict[str, Any]]:
    from sen_shared.bus import make_event

    return [make_event("ehr.patient.created", {"resourceType": "Patient", "id": f"p{i}", "versionId": "1"},
                       subject=f"Patient/p{i}") for i in range(n)]


def test_consumer_path_on_the_real_bus(amqp_url: str, base_env: dict[str, str], fresh_db: Any) -> None:
    """The worker's handler behind a real ``portal.reporting`` queue (its batch form takes the
    prefetched bursts): each event counted once, 50 of them delivered twice."""
    events = _patients(300)
    through_reporting(amqp_url, base_env, fresh_db, events + events[:50])
    assert fresh_db[FACTS].count_documents({}) == 300
    today = datetime.now(VN).date()
    rows = gather(fresh_db, ["patients"], since=today - timedelta(days=1))["patients"]
    assert sum(r["n"] for r in rows) == 300


def test_a_failing_batch_is_handled_one_by_one(amqp_url: str, base_env: dict[str, str], fresh_db: Any) -> None:
    """A batch form that fails (here: its first two calls, after storing half of the batch) leaves
    each message to the one-by-one way: every event still counted once, none lost."""
    calls = {"n": 0}

    def handler(event: dict[str, Any], db: Any) -> None:
        reporting.count_event(event, db)

    def batch(events: list[dict[str, Any]], db: Any) -> None:
        calls["n"] += 1
        if calls["n"] <= 2:
            reporting.count_events(events[: len(events) // 2], db)
            raise RuntimeError("the database went away half-way")
        reporting.count_events(events, db)

    handler.batch = batch  # type: ignore[attr-defined]
    events = _patients(200)
    through_reporting(amqp_url, base_env, fresh_db, events, handler=handler)
    assert calls["n"] >= 1  # the batch form was used
    assert fresh_db[FACTS].count_documents({}) == 200


def test_rebuild_replays_events_and_rederives_facts(fresh_db: Any, tmp_path: Any) -> None:
    import json

    from sen_portal.rebuild import rebuild_facts, rebuild_totals, replay

    events = [requested(A, CL, 2), requested(B, TM, 3), paid(A, CL, 3, 150_000, "transfer")]
    assert arrive(fresh_db, events[0]) is True
    dump = tmp_path / "dlq.jsonl"
    dump.write_text("\n".join(json.dumps(e) for e in events) + "\n", encoding="utf-8")
    assert replay(fresh_db, [dump]) == (2, 1)  # the first was counted already
    assert fresh_db[FACTS].count_documents({}) == 3
    fresh_db[FACTS].update_one({"_id": events[1]["id"]}, {"$set": {"district": "wrong"}})  # a stale derivation
    assert rebuild_facts(fresh_db) == 1
    assert fresh_db[FACTS].find_one({"_id": events[1]["id"]})["district"] == TM
    assert rebuild_totals(fresh_db) >= 0
    d = dashboard(fresh_db, date(2026, 11, 2), date(2026, 11, 3), None, now=datetime.now(VN) + timedelta(days=1))
    assert d["facilities_using"]["new"] == 2 and d["cashless_share"]["transfer_amount"] == 150_000


def test_one_event_delivered_to_twenty_consumers_at_once_is_counted_once(fresh_db: Any) -> None:
    from tests.integration.test_idempotency import race

    for r in range(3):
        event = requested(A, CL, 2 + r)
        results = race(lambda i: record_event(fresh_db, event, now=NOW))
        assert results.count(True) == 1
    others = [requested(B, TM, 3) for _ in range(20)]
    assert race(lambda i: record_event(fresh_db, others[i], now=NOW)) == [True] * 20  # grouped, each applied
    assert fresh_db[FACTS].count_documents({}) == 23


def test_an_assigned_unmatched_transfer_is_one_transfer_on_the_dashboard(
        amqp_url: str, base_env: dict[str, str], fresh_db: Any, mongo_client: Any) -> None:
    """Billing's own events through the real ``portal.reporting`` queue: an unmatched 45.000 ₫
    transfer (its ``billing.payment.received``) and its assignment to an invoice (a second one,
    ``assignedFrom`` the first) are one transfer of 45.000 ₫ in "cashless share", not two; both
    events are still counted among the events. A cash payment beside it counts as before."""
    from types import SimpleNamespace

    from sen_billing.domain import payments
    from sen_billing.domain.webhooks import Transfer
    from sen_shared.bus import load_catalog
    from sen_shared.bus.outbox import OUTBOX, entry_event

    from tests.billing_support import make_invoice, scratch_db
    from tests.support import vn_day_with_room

    cashier = SimpleNamespace(roles={"cashier"}, facility="org-a", sub="thu-ngan-1")
    today = vn_day_with_room()  # the payments' day in Vietnam, and the dashboard's read of it
    with scratch_db(mongo_client, "d") as bdb:
        iid, _ = make_invoice(bdb, 100_000)
        accounts = {"0011000000001": "org-a"}  # the facility's receiving account: its queue
        waiting = payments.record_transfer(bdb, Transfer(provider="standard", transaction_id=uuid.uuid4().hex[:12],
                                                         amount=45_000, description="chuyen tien",
                                                         account="0011000000001"),
                                           uuid.uuid4().hex, account_facilities=accounts).payment["_id"]
        payments.assign_unmatched(bdb, waiting, iid, cashier, accounts)
        payments.record_cash(bdb, iid, 5_000, cashier, "shift-1")
        events = [entry_event(e) for doc in bdb["payments"].find({OUTBOX: {"$exists": True}}) for e in doc[OUTBOX]]
    assert len(events) == 3
    for e in events:
        load_catalog().validate(e)  # the schema (v1) takes the assignment's assignedFrom
    assigned = next(e for e in events if e["data"]["payment"] == f"assign:{waiting}")
    assert assigned["data"]["assignedFrom"] == waiting and assigned["data"]["invoice"] == f"Invoice/{iid}"
    through_reporting(amqp_url, base_env, fresh_db, events)
    assert fresh_db[FACTS].count_documents({"k": "billing.payment.received"}) == 3
    d = dashboard(fresh_db, today, today, None)
    assert {k: d["cashless_share"][k] for k in SHARE} == {"transfer_amount": 45_000, "cash_amount": 5_000,
                                                         "share": 0.9, "transfer_count": 1, "cash_count": 1}


def test_an_older_assignment_event_without_assigned_from_is_not_counted_twice(fresh_db: Any) -> None:
    """Events published before ``assignedFrom`` name the assignment only by its id (``assign:``)."""
    first = paid(A, CL, 3, 45_000, "transfer")
    first["data"].update({"payment": "standard:tx1", "matched": False})
    again = paid(A, CL, 3, 45_000, "transfer")
    again["data"]["payment"] = "assign:standard:tx1"
    for e in (first, again):
        assert arrive(fresh_db, e) is True
    d = dashboard(fresh_db, date(2026, 11, 2), date(2026, 11, 15), None, now=NOW)
    assert (d["cashless_share"]["transfer_count"], d["cashless_share"]["transfer_amount"]) == (1, 45_000)
