"""The invariants that had no race of their own (docs/invariants.md), raced on the real FerretDB.

Each test releases 10-15 threads together (a Barrier) on one key and checks what is stored:
one winner, nothing counted twice. FerretDB 1.24 applies updates as unlocked read-modify-writes,
so each of these holds only because the claim is an insert under a unique key; replace that
insert by one that cannot collide and every test here fails (how they were checked: see
docs/invariants.md, "How the races were checked").

- ``sen_shared.runs.run_once``: a backfill every worker starts runs once (``backfill_runs``);
- ``Store.roll_forward``: a crashed FHIR version is rolled forward by one reader (``fhir_rollforward``);
- ``invoices.current_qr``: an invoice's VietQR code is handed out once per step (``vietqr_codes``);
- ``shifts.open_shift``: a cashier's shift opened from many tabs opens once (``shifts``, ``open_shifts``);
- ``reporting.seal``: a sealed bucket's totals are stored once whoever seals it (``report_totals``);
- ``sen_billing.report``: a day's reconciliation report keeps its first copy once
  (``reconciliation_reports``);
- ``receipts.complete_settlement``: an overpaid settlement's credit is noted once (``credits``);
- ``fhir.bundle.recover``: a dead transaction is finished by one recoverer (``fhir_rollforward``);
- ``scheduling.sweep_expired`` against ``book``: an expired hold's slot is booked once and the hold
  cancelled once (``slot_links``).
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sen_billing.domain import invoices, shifts
from sen_shared import mongo, runs
from sen_shared.auth import Principal
from sen_shared.fhir import store as st

from tests.billing_support import make_invoice, pay, scratch_db
from tests.support import vn_day_with_room

pytestmark = pytest.mark.integration


def at_once(n: int, job: Callable[[int], Any]) -> list[Any]:
    """``job(i)`` in ``n`` threads released together; each one's result or the exception it raised."""
    start = threading.Barrier(n)
    results: list[Any] = [None] * n

    def run(i: int) -> None:
        start.wait()
        try:
            results[i] = job(i)
        except Exception as err:  # noqa: BLE001 - the outcome is what the test counts
            results[i] = err

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads), "a thread did not finish"
    return results


@pytest.fixture()
def billing_db(mongo_client):
    with scratch_db(mongo_client, "inv") as database:
        yield database


# ----------------------------------------------------------------------------- run once

def test_twelve_workers_starting_one_backfill_at_once_run_it_once(fresh_db: Any) -> None:
    mongo.ensure_indexes(fresh_db, runs.INDEXES)
    ran: list[int] = []
    lock = threading.Lock()

    def job(i: int) -> Any:
        def backfill() -> dict[str, int]:
            with lock:
                ran.append(i)
            return {"fixed": 3}
        return runs.run_once(fresh_db, "invariants-backfill", backfill)

    results = at_once(12, job)
    assert not [r for r in results if isinstance(r, Exception)], results
    assert len(ran) == 1, ran  # one worker ran it; the others skipped it
    assert [r for r in results if r is not None] == [{"fixed": 3}]
    links = sorted(fresh_db[runs.RUNS].find({"k": "invariants-backfill"}), key=lambda link: link["n"])
    assert [link["state"] for link in links] == ["running", "done"]
    assert runs.run_once(fresh_db, "invariants-backfill", lambda: {"fixed": 9}) is None  # done for good


# ----------------------------------------------------------------------------- FHIR roll-forward

def test_twelve_readers_rolling_one_crashed_version_forward_make_one_roller(fresh_db: Any,
                                                                            caplog: pytest.LogCaptureFixture) -> None:
    """A writer died between its version's claim (the history document) and its current write:
    every reader that finds it may roll it forward; one of them does (one marker link), the
    current document is that version."""
    store = st.Store(fresh_db, service="ehr", emit_events=False)
    rid = f"bn-{uuid.uuid4().hex[:10]}"
    store.create({"resourceType": "Patient", "name": [{"family": "Nguyễn", "given": ["Văn"]}]}, rid)
    w = store.prepare_update({"resourceType": "Patient", "id": rid, "name": [{"family": "Nguyễn", "given": ["Thị"]}]},
                             rid, store.head("Patient", rid))
    store.claim_version(w)  # ... and the writer dies here: version 2 is claimed, the current document is at 1
    hist = store.history("Patient").find_one({"_id": f"{rid}/2"})
    assert store.head("Patient", rid)["v"] == 1

    caplog.set_level(logging.WARNING, logger="sen")
    results = at_once(12, lambda i: st.Store(fresh_db, service="ehr", emit_events=False).roll_forward("Patient", hist))
    assert not [r for r in results if isinstance(r, Exception)], results
    assert True in results
    markers = list(fresh_db[st.ROLLFORWARD_COLLECTION].find({"k": f"Patient/{rid}/2"}))
    assert len(markers) == 1, markers  # one roller claimed it ...
    rolls = [r for r in caplog.records if r.getMessage() == "rolled a version forward"]
    assert len(rolls) == 1, rolls  # ... and only it wrote the current document
    current = store.read_doc("Patient", rid)
    assert int(current["v"]) == 2 and current["res"]["name"][0]["given"] == ["Thị"]


# ----------------------------------------------------------------------------- VietQR codes

def test_fifteen_qr_requests_of_one_invoice_at_once_hand_out_one_code(billing_db: Any) -> None:
    iid, reference = make_invoice(billing_db, 150_000)
    bank = invoices.Bank("970436", "0011001234567")
    results = at_once(15, lambda i: invoices.current_qr(billing_db, iid, bank, timedelta(minutes=15)))
    assert not [r for r in results if isinstance(r, Exception)], results
    assert {r["_id"] for r in results} == {f"{iid}/1"}  # every request got the one code made
    # the same code with the same expiry (to the millisecond the database keeps: the winner answers its own record)
    assert len({(r["payload"], r["expires"].replace(microsecond=r["expires"].microsecond // 1000 * 1000))
                for r in results}) == 1
    links = list(billing_db[invoices.QR_CODES].find({"k": iid}))
    assert len(links) == 1 and links[0]["amount"] == 150_000 and links[0]["reference"] == reference


# ----------------------------------------------------------------------------- cashier shifts

def test_twelve_tabs_opening_a_cashiers_shift_at_once_open_one(billing_db: Any) -> None:
    cashier = Principal(sub=f"cashier-{uuid.uuid4().hex[:6]}", roles=frozenset({"cashier"}), facility="org-a",
                        name="Lê Thị Thu")
    results = at_once(12, lambda i: shifts.open_shift(billing_db, cashier, 200_000))
    opened = [r for r in results if isinstance(r, dict)]
    refused = [r for r in results if not isinstance(r, dict)]
    assert len(opened) == 1, results
    assert all(isinstance(r, shifts.ShiftError) and r.status == 409 for r in refused), refused
    chain = f"shift:{cashier.sub}"
    assert billing_db[shifts.SHIFTS].count_documents({"k": chain}) == 1
    # the open set holds the winner's shift only: every loser released the entry it claimed first
    entries = list(billing_db[shifts.OPEN_SHIFTS].find({"k": chain}))
    assert [e["_id"] for e in entries] == [opened[0]["id"]]
    assert shifts.current(billing_db, cashier)["shift"] == opened[0]["id"]


# ----------------------------------------------------------------------------- reporting totals

def test_twelve_sealers_at_once_store_each_buckets_totals_once(fresh_db: Any) -> None:
    from sen_portal.domain import reporting
    from sen_portal.domain.dashboard import dashboard

    from tests.integration.test_reporting import CL, TM, A, B, accepted, arrive, paid, requested

    now = datetime(2026, 12, 4, 9, 5, tzinfo=reporting.VN)  # November is sealed, its days and hours too
    for e in (requested(A, CL, 2), requested(A, CL, 3), requested(B, TM, 5), accepted(A, CL, 3, "routine", 10),
              paid(A, CL, 3, 150_000, "transfer"), paid(B, TM, 4, 50_000, "cash")):
        assert arrive(fresh_db, e) is True
    reporting.sealed_cache.clear()

    results = at_once(12, lambda i: reporting.seal(fresh_db, now))
    assert not [r for r in results if isinstance(r, Exception)], results
    assert sum(results) >= 1
    totals = list(fresh_db[reporting.TOTALS].find({}, {"rows": 0}))
    sections = [(d["level"], d["bucket"], d["section"]) for d in totals if "section" in d]
    marks = [(d["mark"], d["bucket"]) for d in totals if "mark" in d]
    assert sections and len(sections) == len(set(sections)), sections  # each bucket's section once
    assert ("m", "2026-11") in marks and len(marks) == len(set(marks)), marks
    raced = dashboard(fresh_db, date(2026, 11, 2), date(2026, 11, 15), None, now=now)
    # the same figures as totals summed again by one sealer alone
    fresh_db.drop_collection(reporting.TOTALS)
    reporting.sealed_cache.clear()
    alone = dashboard(fresh_db, date(2026, 11, 2), date(2026, 11, 15), None, now=now)
    assert {k: v for k, v in raced.items() if k != "generated_at"} == \
        {k: v for k, v in alone.items() if k != "generated_at"}
    reporting.sealed_cache.clear()


# ----------------------------------------------------------------------------- the daily report

def test_ten_report_runs_of_one_day_at_once_keep_one_copy(billing_db: Any, base_env: dict[str, str],
                                                          tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ten runs of the day's report at once store one copy; a later run prints the day as it is
    now and leaves that first copy as it was (the CronJob retried, an operator running it by hand)."""
    from sen_billing import report

    for key, value in {**base_env, "SEN_DB": billing_db.name}.items():
        monkeypatch.setenv(key, value)
    day = vn_day_with_room().isoformat()  # the day of the payment recorded below
    iid, code = make_invoice(billing_db, 45_000)
    pay(billing_db, code, 20_000)
    outs = [tmp_path / f"report-{i}.csv" for i in range(10)]
    results = at_once(10, lambda i: report.main(["--day", day, "--facility", "org-a", "--out", str(outs[i])]))
    assert results == [0] * 10, results
    stored = list(billing_db[report.REPORTS].find({"day": day}))
    assert [d["_id"] for d in stored] == [f"{day}/org-a"] and stored[0]["rows"] == 1
    first = stored[0]["csv"]
    assert {p.read_bytes().decode("utf-8") for p in outs} == {first}  # each run wrote the same day
    pay(billing_db, code, 25_000)  # the day goes on
    later = tmp_path / "later.csv"
    assert report.main(["--day", day, "--facility", "org-a", "--out", str(later)]) == 0
    assert later.read_bytes().decode("utf-8") != first  # printed fresh
    assert billing_db[report.REPORTS].find_one({"_id": f"{day}/org-a"})["csv"] == first  # the copy kept


# ----------------------------------------------------------------------------- a settlement's credit

def test_ten_repairs_of_an_overpaid_settlement_at_once_note_its_credit_once(billing_db: Any) -> None:
    """50.000 ₫ paid on 39.000 ₫ owed, and the settlement's winner died before its credit and its
    receipt: ten repair jobs finishing it at once write one credit entry of 11.000 ₫ and one receipt."""
    from sen_billing.domain import credits, receipts

    iid, code = make_invoice(billing_db, 39_000)
    pay(billing_db, code, 30_000)
    pay(billing_db, code, 20_000)
    number = billing_db[receipts.RECEIPTS].find_one({"_id": iid})["number"]
    billing_db[credits.CREDITS].delete_one({"_id": iid})  # as if the winner died before these two
    billing_db[receipts.RECEIPTS].delete_one({"_id": iid})
    results = at_once(10, lambda i: receipts.complete_settlement(billing_db, iid))
    assert not [r for r in results if isinstance(r, Exception)], results
    assert {r["number"] for r in results} == {number}  # the number taken before, not a new one
    assert billing_db[receipts.RECEIPTS].count_documents({"invoice": iid}) == 1
    noted = list(billing_db[credits.CREDITS].find({"invoice": iid}))
    assert [(c["_id"], c["amount"]) for c in noted] == [(iid, 11_000)]
    rows, _ = credits.money_back(billing_db, 50, None, "org-a")
    assert [(r["invoice"], r["amount"]) for r in rows] == [(iid, 11_000)]


# ----------------------------------------------------------------------------- FHIR transactions

def test_ten_recoverers_of_one_dead_transaction_at_once_finish_it_once(fresh_db: Any,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """A transaction bundle whose process died after claiming every version (before the current
    documents): ten recoverers (relays, workers) at once; one claims the journal and rolls it forward."""
    from sen_ehr.domain import RESOURCE_TYPES
    from sen_shared.fhir import bundle as bundle_mod
    from sen_shared.fhir.http import FhirRequest
    from sen_shared.fhir.rest import FhirConfig, FhirServer

    server = FhirServer(FhirConfig(RESOURCE_TYPES, service="ehr", base_path="/fhir"), db=lambda: fresh_db)

    class Crash(BaseException):  # like a killed process: nothing in the request path catches it
        pass

    def crash(*_args: Any) -> None:
        raise Crash()

    pid = f"urn:uuid:{uuid.uuid4()}"
    obs = {"resourceType": "Observation", "status": "final", "code": {"text": "Mạch"},
           "subject": {"reference": pid}, "valueQuantity": {"value": 80}}
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": pid, "resource": {"resourceType": "Patient", "name": [{"family": "Lê"}]},
         "request": {"method": "POST", "url": "Patient"}},
        {"fullUrl": f"urn:uuid:{uuid.uuid4()}", "resource": obs, "request": {"method": "POST", "url": "Observation"}}]}
    with monkeypatch.context() as m:  # the process dies at the commit point: every version claimed, none current
        m.setattr(bundle_mod, "_write_currents", crash)
        m.setattr(bundle_mod, "complete", lambda *_args: 0)
        with pytest.raises(Crash):
            server.bundle(FhirRequest("POST", body=bundle, base="http://test/fhir"))
    [journal] = list(fresh_db[bundle_mod.JOURNAL].find({}))
    # died an hour ago: every recoverer below takes it for dead; a recoverer's claim is fresh for ten minutes
    fresh_db[bundle_mod.JOURNAL].update_one({"_id": journal["_id"]},
                                            {"$set": {"at": datetime.now(UTC) - timedelta(hours=1)}})
    assert fresh_db["Patient"].count_documents({}) == 0

    results = at_once(10, lambda i: bundle_mod.recover(server.store(), older_than=timedelta(minutes=10)))
    assert not [r for r in results if isinstance(r, Exception)], results
    assert sorted(results) == [0] * 9 + [1]  # one recoverer finished it
    markers = list(fresh_db[st.ROLLFORWARD_COLLECTION].find({"k": f"txn/{journal['_id']}"}))
    assert len(markers) == 1, markers
    assert fresh_db[bundle_mod.JOURNAL].count_documents({}) == 0
    assert (fresh_db["Patient"].count_documents({}), fresh_db["Observation"].count_documents({})) == (1, 1)
    assert (fresh_db["Patient_history"].count_documents({}), fresh_db["Observation_history"].count_documents({})) \
        == (1, 1)



# ----------------------------------------------------------------------------- an expired hold

@pytest.fixture(scope="module")
def slots_db(base_env: dict[str, str], run_id: str, mongo_client: Any, dev_key: Any) -> Any:
    """A teleconsult database with one specialist's schedule (every day 07:00-17:00, 15-minute slots)."""
    import json

    from sen_teleconsult.domain import availability as av

    from tests.support import admin_headers, app_client

    name = f"sen_t{run_id}_tc_invariants"
    with app_client("teleconsult", {**base_env, "SEN_TELECONSULT_HOLIDAYS": ""}, name, mongo_client) as (c, _app):
        body = av.schedule_resource("sched-inv", practitioner="Practitioner/bs-inv", organization="Organization/hub",
                                    specialty_code="394579002", specialty_text="Tim mạch",
                                    windows=[(["mon", "tue", "wed", "thu", "fri", "sat", "sun"], "07:00:00",
                                              "17:00:00")], slot_minutes=15)
        r = c.put("/fhir/Schedule/sched-inv", content=json.dumps(body), headers=admin_headers(dev_key))
        assert r.status_code in (200, 201), r.text
        yield mongo_client[name]


def test_bookers_and_sweepers_racing_for_an_expired_hold_book_it_once_and_cancel_the_hold_once(slots_db: Any) -> None:
    """A hold has expired: ten bookers of its slot and two sweepers start at once. They all claim the
    link after the hold: at most one booking stands (the only 200), the held appointment is cancelled
    once (by the sweeper or by the booking that took its slot), and nothing is left for the sweeper."""
    import json

    from sen_shared.fhir.body import unpack
    from sen_shared.fhir.outcome import FhirError
    from sen_teleconsult.domain import availability as av
    from sen_teleconsult.domain import scheduling as sch

    db = slots_db
    day = (datetime.now(av.TZ) + timedelta(days=5)).date()
    sid = f"sched-inv-{day:%Y%m%d}1000"
    availability = sch.availability_of(db, "sched-inv", sid)
    slotted = sch.Slotted(availability, av.slot_of(availability, sid))
    cfg = sch.SchedulingConfig()

    def request(patient: str) -> dict[str, Any]:
        return json.loads(json.dumps(sch.proposal(slotted.av, slotted.slot, patient=patient)))

    t0 = datetime.now(UTC)
    held = sch.hold(db, sch.Ctx(cfg, by="u-hold", now=t0), request("Patient/giu-cho"))
    later = t0 + timedelta(minutes=cfg.hold_minutes + 1)  # the hold has expired by then

    def job(i: int) -> Any:
        if i >= 10:
            return ("swept", sch.sweep_expired(db, now=later))
        try:
            return ("booked", sch.book(db, sch.Ctx(cfg, by=f"u{i}", now=later), request=request(f"Patient/d{i}"))["id"])
        except FhirError as err:
            return ("refused", err.status)

    results = at_once(12, job)
    assert not [r for r in results if isinstance(r, Exception)], results
    booked = [r[1] for r in results if r[0] == "booked"]
    assert len(booked) <= 1 and all(r[1] == 409 for r in results if r[0] == "refused"), results
    links = sorted(db[sch.SLOT_LINKS].find({"k": sid}), key=lambda link: link["n"])
    assert [link["n"] for link in links] == list(range(1, len(links) + 1))
    states = [link["st"] for link in links]
    assert states in (["held", "booked"], ["held", "free", "booked"], ["held", "free"]), states
    assert [link["ap"] for link in links if link["st"] == "booked"] == booked  # the one 200 is the booking
    assert sum(r[1] for r in results if r[0] == "swept") == (1 if "free" in states else 0)
    # the held appointment: created pending, then cancelled once
    versions = sorted(unpack(d)["res"]["status"] for d in db["Appointment_history"].find({"id": held["id"]}))
    assert versions == ["cancelled", "pending"], versions
    sch.sweep_expired(db, now=later)
    assert db[sch.OPEN_HOLDS].count_documents({"k": sid}) == 0


# ----------------------------------------------------------------------------- the layout backfill

def test_a_version_written_while_the_layout_backfill_runs_keeps_its_body(fresh_db: Any,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """The indexes Job brings documents of an older layout up to date while the web processes serve:
    a request writes version 2 of a Practitioner between the backfill's read of version 1 and its
    update. Version 2 keeps its body (the backfill's update was computed from version 1)."""
    import json

    from sen_shared.fhir.search import index_fields

    old = {"resourceType": "Practitioner", "id": "old-1", "name": [{"family": "Lương"}]}
    fresh_db["Practitioner"].insert_one({"_id": "old-1", "v": 1, "lu": datetime(2024, 1, 1, tzinfo=UTC), "del": False,
                                         "res": old, "sp_missing": ["email"], **index_fields(old)})
    new = {**old, "name": [{"family": "Lương", "given": ["Thị Mai"]}]}
    real = st.find_in

    def read_then_a_request_writes(coll: Any, field: str, values: Any, **kw: Any) -> list[dict[str, Any]]:
        docs = list(real(coll, field, values, **kw))
        if coll.name == "Practitioner":  # a request's version 2, as write_current stores it
            fresh_db["Practitioner"].update_one({"_id": "old-1", "v": 1}, {
                "$set": {"v": 2, "lu": datetime.now(UTC), "res": json.dumps(new, ensure_ascii=False),
                         **index_fields(new)}, "$unset": {"sp_missing": ""}})
        return docs

    monkeypatch.setattr(st, "find_in", read_then_a_request_writes)
    st.backfill(fresh_db, ["Practitioner"])
    doc = fresh_db["Practitioner"].find_one({"_id": "old-1"})
    assert doc["v"] == 2 and json.loads(doc["res"]) == new  # not version 1's body under version 2's number
