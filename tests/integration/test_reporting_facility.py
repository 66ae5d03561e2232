"""The dashboard of one facility on the real FerretDB: its figures are the sum of its own events only.

Three facilities, two of them in one district, each with random consults (requested, accepted,
completed, breached) and payments, some counted in sealed months, days and slots, some still in the
live slot. Each facility's figures are recomputed here from its own events alone; the district's are
its two facilities' together. A bucket sealed before totals were kept per facility (an older portal's:
its marker there, the sections by facility missing) is completed from its facts, so a facility's
history is not lost to the change.
"""

from __future__ import annotations

import random
import uuid
from collections import Counter, defaultdict
from datetime import date, datetime, timedelta
from typing import Any

import pytest
from sen_portal.domain import reporting
from sen_portal.domain.dashboard import PRIORITIES, csv_rows, dashboard
from sen_portal.domain.report_facts import VN, iso_week, median_and_p90
from sen_portal.domain.reporting import TOTALS, record_event

pytestmark = pytest.mark.integration

NOW = datetime(2026, 12, 4, 9, 5, tzinfo=VN)  # November is a sealed month; today's last minutes are live
START, END = date(2026, 11, 1), date(2026, 12, 4)
CL, TM = "Huyện Cao Lãnh", "Huyện Tháp Mười"
FACILITIES = {"Organization/tyt-my-hiep": CL, "Organization/tyt-my-long": CL, "Organization/tyt-doc-binh-kieu": TM}


def _event(key: str, data: dict[str, Any]) -> dict[str, Any]:
    return {"specversion": "1.0", "id": str(uuid.uuid4()), "source": "/sen/test", "type": f"vn.sen.{key}.v1",
            "time": NOW.isoformat(), "data": data}


def _feed(db: Any, rng: random.Random) -> list[tuple[str, dict[str, Any], datetime]]:
    """Random events of the three facilities (and one before the range); each with its local time."""
    fed: list[tuple[str, dict[str, Any], datetime]] = []
    for fac, district in FACILITIES.items():
        for _ in range(rng.randint(4, 9)):
            live = rng.random() < 0.25
            when = NOW - timedelta(minutes=rng.randint(2, 4)) if live else \
                datetime(2026, 11, rng.randint(1, 30), rng.randint(7, 20), rng.randint(0, 59), tzinfo=VN)
            base = {"requester": fac, "district": district, "priority": rng.choice(PRIORITIES),
                    "serviceRequest": f"ServiceRequest/{uuid.uuid4().hex[:8]}", "requestedAt": when.isoformat()}
            kinds = [("requested", "requestedAt", 0)]
            if rng.random() < 0.8:
                kinds.append(("accepted", "acceptedAt", rng.randint(0, 90)))
                if rng.random() < 0.7:
                    kinds.append(("completed", "completedAt", rng.randint(91, 400) if not live else 1))
            if rng.random() < 0.3:
                kinds.append(("sla_breached", "breachedAt", 1))
            for kind, field, minutes in kinds:
                at = when + timedelta(minutes=minutes) if not live else when + timedelta(seconds=minutes)
                fed.append((f"teleconsult.consult.{kind}", {**base, field: at.isoformat()}, at))
            if rng.random() < 0.7:
                at = when + timedelta(seconds=30)
                fed.append(("billing.payment.received", {
                    "payment": uuid.uuid4().hex, "facility": fac, "district": district,
                    "invoice": f"Invoice/inv-{uuid.uuid4().hex[:8]}", "amount": rng.choice((50_000, 150_000, 230_000)),
                    "currency": "VND", "channel": rng.choice(("transfer", "cash")), "matched": True,
                    "receivedAt": at.isoformat()}, at))
    old = datetime(2026, 10, 20, 9, tzinfo=VN)  # before the range: in no figure
    fed.append(("teleconsult.consult.requested", {"requester": "Organization/tyt-my-hiep", "district": CL,
                                                  "priority": "urgent", "requestedAt": old.isoformat()}, old))
    for key, data, at in fed:
        arrival = min(at + timedelta(seconds=20), NOW - timedelta(seconds=5))
        assert record_event(db, _event(key, data), now=arrival)
    return fed


def _expected(fed: list[tuple[str, dict[str, Any], datetime]], facilities: set[str]) -> dict[str, Any]:
    """The figures of ``facilities``, from their own events only (the domain's definitions, done by hand)."""
    first, last = START.isoformat(), END.isoformat()
    mine = [(k, d, at) for k, d, at in fed if (d.get("requester") or d.get("facility")) in facilities
            and first <= at.astimezone(VN).date().isoformat() <= last]
    consults: Counter[tuple[str, str]] = Counter()
    hist: dict[str, dict[str, Counter[int]]] = {"accepted": defaultdict(Counter), "completed": defaultdict(Counter)}
    breaches: Counter[tuple[str, str]] = Counter()
    money = {"transfer": [0, 0], "cash": [0, 0]}
    for key, d, at in mine:
        kind = key.rsplit(".", 1)[1]
        week = iso_week(at.astimezone(VN).date())
        if kind == "requested":
            consults[(week, d["requester"])] += 1
        elif kind in hist:
            took = datetime.fromisoformat(d[f"{kind}At"]) - datetime.fromisoformat(d["requestedAt"])
            hist[kind][d["priority"]][max(0, round(took.total_seconds() / 60))] += 1
        elif kind == "sla_breached":
            breaches[(week, d["priority"])] += 1
        elif key == "billing.payment.received":
            money[d["channel"]][0] += d["amount"]
            money[d["channel"]][1] += 1

    def durations(kind: str) -> dict[str, dict[str, Any]]:
        out = {}
        for p in PRIORITIES:
            median, p90 = median_and_p90(hist[kind][p])
            out[p] = {"count": sum(hist[kind][p].values()), "median_minutes": median, "p90_minutes": p90}
        return out

    return {"consults": {(w, f): n for (w, f), n in consults.items()},
            "time_to_answer": durations("accepted"), "time_to_conclusion": durations("completed"),
            "sla_breaches": dict(breaches),
            "money": {"transfer_amount": money["transfer"][0], "transfer_count": money["transfer"][1],
                      "cash_amount": money["cash"][0], "cash_count": money["cash"][1]},
            "using": len({f for _w, f in consults})}


def _got(data: dict[str, Any]) -> dict[str, Any]:
    money = data["cashless_share"]
    return {"consults": {(r["week"], r["facility"]): r["count"] for r in data["consults_per_facility_week"]},
            "time_to_answer": data["time_to_answer"], "time_to_conclusion": data["time_to_conclusion"],
            "sla_breaches": {(r["week"], r["priority"]): r["count"] for r in data["sla_breaches"]},
            "money": {k: money[k] for k in ("transfer_amount", "transfer_count", "cash_amount", "cash_count")},
            "using": data["facilities_using"]["new"]}


@pytest.fixture()
def fed(fresh_db: Any) -> tuple[Any, list[tuple[str, dict[str, Any], datetime]]]:
    reporting.sealed_cache.clear()
    events = _feed(fresh_db, random.Random(20))
    reporting.seal(fresh_db, NOW)  # November's month, days, hours and slots sealed; today's last minutes live
    return fresh_db, events


def test_a_facilitys_figures_are_its_own_events_and_the_districts_are_its_facilities_together(fed) -> None:
    db, events = fed
    got = {}
    for fac, district in FACILITIES.items():
        for asked in (fac, fac.removeprefix("Organization/")):  # its reference or its id
            data = dashboard(db, START, END, None, facility=asked, now=NOW)
            assert _got(data) == _expected(events, {fac}), fac
            assert data["range"]["facility"] == fac
            assert data["facilities_using"]["goal"] is None and data["facilities_using"]["baseline"] is None
            assert data["ehr_coverage"]["patients"] is None and data["ehr_coverage"]["share"] is None
        # with its own district: the same figures
        got[fac] = dashboard(db, START, END, district, facility=fac, now=NOW)
        assert _got(got[fac]) == _expected(events, {fac})
    both = {f for f, d in FACILITIES.items() if d == CL}
    district = dashboard(db, START, END, CL, now=NOW)
    assert _got(district) == _expected(events, both)
    assert district["facilities_using"]["new"] == 2 and district["range"]["facility"] is None
    # the district's figures are its facilities' added up, each figure
    assert sum(r["count"] for r in district["consults_per_facility_week"]) == sum(
        r["count"] for f in both for r in got[f]["consults_per_facility_week"])
    for p in PRIORITIES:
        assert district["time_to_answer"][p]["count"] == sum(got[f]["time_to_answer"][p]["count"] for f in both)
    for k in ("transfer_amount", "cash_amount", "transfer_count", "cash_count", "net"):
        assert district["cashless_share"][k] == sum(got[f]["cashless_share"][k] for f in both), k
    assert _got(dashboard(db, START, END, None, now=NOW)) == _expected(events, set(FACILITIES))
    # a facility of another district asked with this one: none of its events are this district's
    assert _got(dashboard(db, START, END, CL, facility="tyt-doc-binh-kieu", now=NOW))["consults"] == {}


def test_a_facilitys_csv_names_it(fed) -> None:
    db, events = fed
    header, rows = csv_rows("cashless_share", db, START, END, None, facility="tyt-my-hiep", now=NOW)
    assert header[:5] == ["start", "end", "district", "facility", "transfer_amount"]
    want = _expected(events, {"Organization/tyt-my-hiep"})["money"]
    # the facility by its id (as the file's name and the filter have it), not its reference (review 6)
    assert rows == [[START.isoformat(), END.isoformat(), None, "tyt-my-hiep", want["transfer_amount"],
                     *rows[0][5:]]]
    header, rows = csv_rows("consults_per_facility_week", db, START, END, None, facility="tyt-my-long", now=NOW)
    assert {r[1] for r in rows} == {"tyt-my-long"}
    assert csv_rows("cashless_share", db, START, END, None, now=NOW)[0][3] == "transfer_amount"  # no facility


def test_buckets_sealed_before_the_sections_by_facility_are_completed_from_their_facts(fed) -> None:
    """An older portal sealed "answers" and "breaches" without the facility: the buckets' markers are there,
    the sections by facility are not. A facility's figures still count its sealed history."""
    db, events = fed
    before = dashboard(db, START, END, None, facility="tyt-my-hiep", now=NOW)
    db[TOTALS].delete_many({"section": {"$in": ["acceptance_minutes", "conclusion_minutes", "sla_breaches"]}})
    assert db[TOTALS].find_one({"_id": "m/2026-11"}) is not None  # the month's marker: sealed
    reporting.sealed_cache.clear()
    again = dashboard(db, START, END, None, facility="tyt-my-hiep", now=NOW)
    assert _got(again) == _got(before) == _expected(events, {"Organization/tyt-my-hiep"})
    assert db[TOTALS].find_one({"_id": "m/2026-11/acceptance_minutes"}) is not None
