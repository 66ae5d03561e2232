"""The EHR coverage per district, on the real FerretDB and RabbitMQ.

The EHR's Patient events name the district of the patient's home address (``district``; an update
also the replaced version's, ``previousDistrict``; a deletion the deleted version's), through the
FHIR engine's per-type event fields. The portal's facts add a registration to its district, take
a deletion away and move a record on an update, so a district's figure is right whatever order the
events come in and however often one is delivered. Records registered before the events named a
district count in the province only until the EHR's backfill notes their district, once.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from sen_portal.domain import reporting
from sen_portal.domain.dashboard import Targets, dashboard
from sen_portal.domain.report_facts import VN
from sen_portal.domain.reporting import record_event

from tests.integration.test_reporting import NOW, ev
from tests.support import admin_headers, app_client

pytestmark = pytest.mark.integration

CL, TM, LV = "Huyện Cao Lãnh", "Huyện Tháp Mười", "Huyện Lấp Vò"
FJ = "application/fhir+json"
TARGETS = Targets(population=10, district_populations={CL: 4, TM: 3})


def _patient(*addresses: dict[str, Any], family: str = "Nguyễn") -> dict[str, Any]:
    return {"resourceType": "Patient", "name": [{"family": family, "given": ["Thị", "Mai"]}], "gender": "female",
            "birthDate": "1968-04-12", **({"address": list(addresses)} if addresses else {})}


def _events(db: Any) -> list[dict[str, Any]]:
    """The Patient events the EHR left in its outbox (the relay is not running), oldest version first."""
    from sen_shared.bus.outbox import OUTBOX, entry_event

    docs = sorted(db["Patient_history"].find({OUTBOX: {"$exists": True}}), key=lambda d: (d["id"], d["v"]))
    return [entry_event(e) for d in docs for e in d[OUTBOX]]


def _coverage(db: Any, district: str | None, day: date | None = None) -> dict[str, Any]:
    day = day or datetime.now(VN).date()
    return dashboard(db, day, day, district, targets=TARGETS)["ehr_coverage"]


def test_patient_events_name_the_district_and_a_move_counts_through_the_bus(
        base_env: dict[str, str], run_id: str, mongo_client: Any, dev_key: Any, amqp_url: str, fresh_db: Any) -> None:
    from sen_shared.bus import load_catalog

    from tests.integration.reporting_support import through_reporting

    H = {**admin_headers(dev_key), "Content-Type": FJ}
    name = f"sen_t{run_id}_ehr_pd{uuid.uuid4().hex[:6]}"
    with app_client("ehr", base_env, name, mongo_client) as (ehr, _app):
        # the home address's district, not an old one's; spaces as typed collapsed
        moved = _patient({"use": "old", "district": LV}, {"use": "home", "district": " Huyện  Tháp Mười "})
        r = ehr.post("/fhir/Patient", content=json.dumps(moved), headers=H)
        assert r.status_code == 201, r.text
        pid = r.json()["id"]
        moved = {**r.json(), "address": [{"use": "home", "district": CL}]}  # moves to Cao Lãnh
        assert ehr.put(f"/fhir/Patient/{pid}", content=json.dumps(moved), headers=H).status_code == 200
        moved["name"] = [{"family": "Nguyễn", "given": ["Thị", "Mai", "Anh"]}]  # same district
        assert ehr.put(f"/fhir/Patient/{pid}", content=json.dumps(moved), headers=H).status_code == 200
        nowhere = ehr.post("/fhir/Patient", content=json.dumps(_patient(family="Lê")), headers=H).json()["id"]
        gone = ehr.post("/fhir/Patient", content=json.dumps(_patient({"district": TM}, family="Võ")),
                        headers=H).json()["id"]
        assert ehr.delete(f"/fhir/Patient/{gone}", headers=H).status_code in (200, 204)
        events = _events(mongo_client[name])
    said = {(e["data"]["id"], e["data"]["versionId"]): (e["type"].split(".")[-2], e["data"]) for e in events}
    for e in events:
        load_catalog().validate(e)  # the schemas list the district fields
    assert said[(pid, "1")] == ("created", {"resourceType": "Patient", "id": pid, "versionId": "1", "district": TM})
    assert said[(pid, "2")][1]["district"] == CL and said[(pid, "2")][1]["previousDistrict"] == TM
    assert said[(pid, "3")][1]["district"] == CL and said[(pid, "3")][1]["previousDistrict"] == CL
    assert said[(nowhere, "1")][1]["district"] is None
    assert said[(gone, "2")] == ("deleted", {"resourceType": "Patient", "id": gone, "versionId": "2", "district": TM})
    assert not any(k for _, d in said.values() for k in d if "name" in k.lower() or k == "address")

    # through the real portal.reporting queue, the newest first, every event twice: each counted once
    through_reporting(amqp_url, base_env, fresh_db, events[::-1] + events)
    assert all(record_event(fresh_db, e) is False for e in events)
    cl, tm, province = _coverage(fresh_db, CL), _coverage(fresh_db, TM), _coverage(fresh_db, None)
    assert (cl["patients"], cl["population"], cl["share"], cl["without_district"]) == (1, 4, 0.25, 1)
    assert (tm["patients"], tm["population"], tm["share"]) == (0, 3, 0.0)  # moved away; the other deleted
    assert (province["patients"], province["population"], province["share"]) == (2, 10, 0.2)
    lv = _coverage(fresh_db, LV)
    assert (lv["patients"], lv["population"], lv["share"]) == (0, None, None)  # no population set for it


def _change(verb: str, rid: str, version: int, day: int, **fields: Any) -> dict[str, Any]:
    return ev(f"ehr.patient.{verb}", {"resourceType": "Patient", "id": rid, "versionId": str(version), **fields},
              at=datetime(2026, 11, day, 3, tzinfo=UTC).isoformat().replace("+00:00", "Z"))


def test_a_patient_moved_between_districts_counts_in_one_whatever_the_order(fresh_db: Any) -> None:
    """Registered in Tháp Mười on the 2nd, moved to Cao Lãnh on the 5th and back on the 8th: the
    events arrive newest first, then again; each day's figure has the record in one district."""
    events = [_change("created", "p1", 1, 2, district=TM),
              _change("updated", "p1", 2, 5, district=CL, previousDistrict=TM),
              _change("updated", "p1", 3, 8, district=TM, previousDistrict=CL),
              # another record, moved to Cao Lãnh from no district, then deleted there
              _change("created", "p2", 1, 2, district=None),
              _change("updated", "p2", 2, 3, district=CL, previousDistrict=None),
              _change("deleted", "p2", 3, 6, district=CL),
              # an update from before the events named districts: moves nothing
              _change("updated", "p1", 9, 4)]
    for e in events[::-1]:
        assert record_event(fresh_db, e, now=NOW - timedelta(days=3)) is True
    for e in events:
        assert record_event(fresh_db, e, now=NOW) is False  # redelivered: counted once

    def where(day: int) -> tuple[int, int, int, int]:
        d = date(2026, 11, day)
        cl = dashboard(fresh_db, d, d, CL, now=NOW, targets=TARGETS)["ehr_coverage"]
        tm = dashboard(fresh_db, d, d, TM, now=NOW, targets=TARGETS)["ehr_coverage"]
        whole = dashboard(fresh_db, d, d, None, now=NOW, targets=TARGETS)["ehr_coverage"]
        return cl["patients"], tm["patients"], cl["without_district"], whole["patients"]

    assert where(2) == (0, 1, 1, 2)
    assert where(3) == (1, 1, 0, 2)
    assert where(5) == (2, 0, 0, 2)
    assert where(6) == (1, 0, 0, 1)
    assert where(9) == (0, 1, 0, 1)
    cl = dashboard(fresh_db, date(2026, 11, 5), date(2026, 11, 5), CL, now=NOW, targets=TARGETS)["ehr_coverage"]
    assert (cl["share"], cl["population_outdated"]) == (0.5, False)
    crowded = Targets(population=10, district_populations={CL: 1})
    over = dashboard(fresh_db, date(2026, 11, 5), date(2026, 11, 5), CL, now=NOW, targets=crowded)["ehr_coverage"]
    assert (over["patients"], over["share"], over["population_outdated"]) == (2, None, True)  # never over 100 %


def test_the_backfill_notes_the_district_of_records_counted_without_one(
        mongo_client: Any, fresh_db: Any) -> None:
    """Records written before the events named districts (a store without the EHR's event fields):
    the backfill announces each live one's district once, from its last version without fields; an
    update written since names the old district as its previous one, so nothing counts twice."""
    from sen_ehr.domain import patient_events
    from sen_shared.bus import load_catalog
    from sen_shared.bus.outbox import OUTBOX, entry_event
    from sen_shared.fhir.store import Store

    name = f"sen_ehr_pd{uuid.uuid4().hex[:8]}"
    db = mongo_client[name]
    try:
        before = Store(db, service="ehr")  # the EHR as it was
        after = Store(db, service="ehr", event_fields=patient_events.EVENT_FIELDS)
        before.create(_patient({"district": TM}), "a")  # then moved to Cao Lãnh by the EHR of now
        after.update(_patient({"district": CL}), "a")
        before.create(_patient({"district": TM}), "b")  # untouched since
        before.create(_patient(), "c")  # no district: the province's only
        before.create(_patient({"district": CL}), "d")  # deleted before
        before.delete("Patient", "d")
        assert patient_events.backfill(db) == {"districts_noted": 2, "without_district": 1}
        assert patient_events.backfill(db) == {"districts_noted": 0, "without_district": 1}  # once
        moved = entry_event(db["Patient_history"].find_one({"_id": "a/2"})[OUTBOX][0])
        events = [*_events(db), *(entry_event(e) for d in db[patient_events.NOTED].find() for e in d[OUTBOX])]
    finally:
        mongo_client.drop_database(name)
    assert (moved["data"]["district"], moved["data"]["previousDistrict"]) == (CL, TM)
    noted = [e for e in events if e["type"] == "vn.sen.ehr.patient.district_noted.v1"]
    assert sorted((e["data"]["id"], e["data"]["versionId"], e["data"]["district"]) for e in noted) == [
        ("a", "1", TM), ("b", "1", TM)]
    assert noted[0]["id"] == patient_events.event_id(noted[0]["data"]["id"], 1)
    for e in events:
        load_catalog().validate(e)
    for e in events + noted:  # the backfill's events again: counted once
        record_event(fresh_db, e)
    assert _coverage(fresh_db, CL)["patients"] == 1  # a
    tm = _coverage(fresh_db, TM)
    assert (tm["patients"], tm["without_district"]) == (1, 1)  # b; c has none
    assert _coverage(fresh_db, None)["patients"] == 3


def test_the_ehr_worker_runs_the_backfill_once_and_relays_its_events(
        base_env: dict[str, str], mongo_client: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from sen_ehr import worker
    from sen_ehr.config import settings_from_env
    from sen_ehr.domain import patient_events
    from sen_shared.fhir.store import Store

    name = f"sen_ehr_pw{uuid.uuid4().hex[:8]}"
    for key, value in {**base_env, "SEN_DB": name}.items():
        monkeypatch.setenv(key, value)
    settings = settings_from_env()
    try:
        Store(mongo_client[name], service="ehr").create(_patient({"district": TM}), "a")  # before districts
        assert worker.backfill_patient_districts_once(settings) == {"districts_noted": 1, "without_district": 0}
        assert worker.backfill_patient_districts_once(settings) is None  # done for good: not run again
        assert mongo_client[name][patient_events.NOTED].count_documents({"outbox_pending": True}) == 1
    finally:
        mongo_client.drop_database(name)
    assert patient_events.NOTED in worker.OUTBOX_COLLECTIONS  # the relay publishes what it noted


def test_facts_stored_before_their_district_was_kept_are_rederived_by_the_rebuild(fresh_db: Any) -> None:
    """A portal worker of before (during a rolling deploy) stores a patient event's fact without its
    district: ``python -m sen_portal.rebuild facts`` re-derives it from the event the fact keeps."""
    from sen_portal.domain.reporting import FACTS
    from sen_portal.rebuild import rebuild_facts

    for e in (_change("created", "p1", 1, 2, district=TM), _change("updated", "p1", 2, 5, district=CL,
                                                                        previousDistrict=TM)):
        assert record_event(fresh_db, e, now=NOW - timedelta(days=3)) is True
    # what the older extraction stored (single writer here: the test, nothing else runs)
    fresh_db[FACTS].update_many({}, {"$unset": {"district": "", "from_district": ""}})
    day = date(2026, 11, 6)
    assert dashboard(fresh_db, day, day, CL, now=NOW, targets=TARGETS)["ehr_coverage"]["patients"] == 0
    assert rebuild_facts(fresh_db) == 2
    reporting.sealed_cache.clear()
    cl = dashboard(fresh_db, day, day, CL, now=NOW, targets=TARGETS)["ehr_coverage"]
    assert (cl["patients"], cl["without_district"]) == (1, 0)


def test_backfills_running_at_once_note_each_record_once(mongo_client: Any) -> None:
    """Two workers' runs overlapping (a run taken over while still going): four backfills at once on
    the real FerretDB note each record's district once, by the claim of its version."""
    import threading

    from sen_ehr.domain import patient_events
    from sen_shared.fhir.store import Store

    name = f"sen_ehr_pc{uuid.uuid4().hex[:8]}"
    db = mongo_client[name]
    try:
        before = Store(db, service="ehr")
        for i in range(12):
            before.create(_patient({"district": (CL, TM, LV)[i % 3]}), f"p{i}")
        results: list[dict[str, int]] = []
        start = threading.Barrier(4)

        def run() -> None:
            start.wait()
            results.append(patient_events.backfill(db))

        threads = [threading.Thread(target=run) for _ in range(4)]
        for th in threads:
            th.start()
        for th in threads:
            th.join(60)
        assert len(results) == 4 and sum(r["districts_noted"] for r in results) == 12
        assert db[patient_events.NOTED].count_documents({}) == 12
    finally:
        mongo_client.drop_database(name)


def test_a_move_in_a_transaction_bundle_names_both_districts(
        base_env: dict[str, str], run_id: str, mongo_client: Any, dev_key: Any) -> None:
    H = {**admin_headers(dev_key), "Content-Type": FJ}
    name = f"sen_t{run_id}_ehr_pb{uuid.uuid4().hex[:6]}"
    with app_client("ehr", base_env, name, mongo_client) as (ehr, _app):
        pid = ehr.post("/fhir/Patient", content=json.dumps(_patient({"district": TM})), headers=H).json()["id"]
        moved = {**_patient({"use": "home", "district": CL}), "id": pid}
        bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
            {"resource": moved, "request": {"method": "PUT", "url": f"Patient/{pid}"}},
            {"resource": _patient({"district": LV}, family="Lê"), "request": {"method": "POST", "url": "Patient"}}]}
        r = ehr.post("/fhir", content=json.dumps(bundle), headers=H)
        assert r.status_code == 200, r.text
        events = _events(mongo_client[name])
    data = [e["data"] for e in events]
    assert {"resourceType": "Patient", "id": pid, "versionId": "2", "district": CL, "previousDistrict": TM} in data
    assert sorted(d["district"] for d in data if d["versionId"] == "1") == [LV, TM]
