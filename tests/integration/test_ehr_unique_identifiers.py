"""A CCCD number or a BHYT card number names one Patient (sen_shared/fhir/unique.py).

A create, update or transaction that would give a second Patient an identifier another one holds
is a 409 OperationOutcome (``duplicate``) naming the holder; an identifier given up (changed,
removed, its Patient deleted) can be taken again. The invariant is a claim made by an insert, so
racing creates leave exactly one Patient. Real ehr app, real FerretDB.
"""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
from typing import Any

import httpx
import pytest
from sen_shared.fhir.store import Store

from tests.support import admin_headers, app_client

pytestmark = pytest.mark.integration

CCCD = "https://fhir.sen.vn/sid/cccd"
BHYT = "https://fhir.sen.vn/sid/bhyt"
UNIQUE = {"Patient": frozenset({CCCD, BHYT})}


@pytest.fixture(scope="module")
def ehr(base_env, run_id, mongo_client):
    with app_client("ehr", base_env, f"sen_t{run_id}_ehr_unique", mongo_client) as (client, _app):
        yield client


@pytest.fixture(scope="module")
def H(dev_key):
    return admin_headers(dev_key)


def cccd() -> str:
    return str(uuid.uuid4().int)[:12].rjust(12, "0")


def patient(family: str, *idents: tuple[str, str]) -> dict[str, Any]:
    return {"resourceType": "Patient", "name": [{"family": family, "given": ["Văn", "Bình"]}],
            "identifier": [{"system": s, "value": v} for s, v in idents]}


def post(c, H, body):
    return c.post("/fhir/Patient", content=json.dumps(body), headers=H)


def put(c, H, rid, body):
    return c.put(f"/fhir/Patient/{rid}", content=json.dumps({**body, "id": rid}), headers=H)


def found(c, H, token: str) -> list[str]:
    r = c.get("/fhir/Patient", params={"identifier": token}, headers=H)
    return [e["resource"]["id"] for e in r.json().get("entry", [])]


def assert_duplicate(r, holder: str) -> None:
    assert r.status_code == 409, r.text
    issue = r.json()["issue"][0]
    assert r.json()["resourceType"] == "OperationOutcome"
    assert issue["code"] == "duplicate"
    assert issue["details"]["text"] == f"Patient/{holder}"
    assert f"Patient/{holder}" in issue["diagnostics"]


def test_a_second_patient_with_the_same_cccd_is_refused_naming_the_first(ehr, H):
    number = cccd()
    first = post(ehr, H, patient("Nguyễn Thị Mai", (CCCD, number)))
    assert first.status_code == 201
    mai = first.json()["id"]
    second = post(ehr, H, patient("Nguyễn Văn Bình", (CCCD, number)))
    assert_duplicate(second, mai)
    assert found(ehr, H, f"{CCCD}|{number}") == [mai]
    # the same number under another system is another identifier
    assert post(ehr, H, patient("Khác", ("urn:other", number))).status_code == 201


def test_a_bhyt_card_is_unique_too_and_a_refused_create_keeps_nothing(ehr, H):
    number, other, card = cccd(), cccd(), f"DN48{cccd()[:11]}"
    holder = post(ehr, H, patient("Lê", (BHYT, card))).json()["id"]
    # both a free CCCD and a taken card: refused, and the free CCCD is not held by the refused create
    assert_duplicate(post(ehr, H, patient("Trần", (CCCD, number), (BHYT, card))), holder)
    assert post(ehr, H, patient("Trần", (CCCD, number))).status_code == 201
    assert post(ehr, H, patient("Phạm", (CCCD, other))).status_code == 201


def test_an_update_may_not_take_a_held_identifier_and_a_given_up_one_is_free(ehr, H):
    x, y = cccd(), cccd()
    a_body = patient("A", (CCCD, x))
    a = post(ehr, H, a_body).json()["id"]
    b_body = patient("B")
    b = post(ehr, H, b_body).json()["id"]
    assert_duplicate(put(ehr, H, b, patient("B", (CCCD, x))), a)
    # the holder may be rewritten keeping its number
    assert put(ehr, H, a, patient("A đổi tên", (CCCD, x))).status_code == 200
    # A's number corrected to y: x is free for B
    assert put(ehr, H, a, patient("A", (CCCD, y))).status_code == 200
    assert put(ehr, H, b, patient("B", (CCCD, x))).status_code == 200
    assert found(ehr, H, f"{CCCD}|{x}") == [b]
    # A deleted: y is free for a new patient
    assert_duplicate(post(ehr, H, patient("C", (CCCD, y))), a)
    assert ehr.delete(f"/fhir/Patient/{a}", headers=H).status_code == 204
    c = post(ehr, H, patient("C", (CCCD, y)))
    assert c.status_code == 201
    assert found(ehr, H, f"{CCCD}|{y}") == [c.json()["id"]]


def test_a_transaction_is_refused_whole_and_a_seed_rerun_is_not(ehr, H):
    x, y = cccd(), cccd()
    held = post(ehr, H, patient("Giữ", (CCCD, x))).json()["id"]
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": patient("Một", (CCCD, y)), "request": {"method": "POST", "url": "Patient"}},
        {"resource": patient("Hai", (CCCD, x)), "request": {"method": "POST", "url": "Patient"}}]}
    r = ehr.post("/fhir", content=json.dumps(bundle), headers=H)
    assert_duplicate(r, held)
    assert found(ehr, H, f"{CCCD}|{y}") == []
    # two entries of one transaction with one number: refused
    twice = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": patient(n, (CCCD, y)), "request": {"method": "POST", "url": "Patient"}} for n in ("Một", "Hai")]}
    r = ehr.post("/fhir", content=json.dumps(twice), headers=H)
    assert r.status_code == 409 and r.json()["issue"][0]["code"] == "duplicate"
    assert found(ehr, H, f"{CCCD}|{y}") == []
    # the demo seed's shape (PUT with fixed ids) runs twice without a refusal
    pid = f"bn-{uuid.uuid4().hex[:8]}"
    seed = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": {**patient("Seed", (CCCD, y)), "id": pid}, "request": {"method": "PUT", "url": f"Patient/{pid}"}}]}
    for _ in range(2):
        r = ehr.post("/fhir", content=json.dumps(seed), headers=H)
        assert r.status_code == 200, r.text
    assert found(ehr, H, f"{CCCD}|{y}") == [pid]


def test_a_conditional_create_answers_the_holder(ehr, H):
    x = cccd()
    held = post(ehr, H, patient("Giữ", (CCCD, x))).json()["id"]
    r = ehr.post("/fhir/Patient", content=json.dumps(patient("Lại", (CCCD, x))),
                 headers={**H, "If-None-Exist": f"identifier={CCCD}|{x}"})
    assert r.status_code == 200 and r.json()["id"] == held


def test_ten_racing_creates_through_the_api_leave_one_patient(ehr, H):
    x = cccd()

    async def main() -> list[int]:
        transport = httpx.ASGITransport(app=ehr.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
            return [r.status_code for r in await asyncio.gather(*(
                c.post("/fhir/Patient", content=json.dumps(patient(f"Đua {i}", (CCCD, x))), headers=H)
                for i in range(10)))]

    codes = asyncio.run(main())
    assert sorted(codes) == [201] + [409] * 9
    assert len(found(ehr, H, f"{CCCD}|{x}")) == 1


def test_ten_threads_creating_one_cccd_on_ferretdb_make_exactly_one(fresh_db):
    """The store itself, ten threads released together, several rounds."""
    for _round in range(3):
        x = cccd()
        gate = threading.Barrier(10)
        outcomes: list[str] = []

        def create(i: int, x: str = x, gate: threading.Barrier = gate) -> None:
            store = Store(fresh_db, unique_identifiers=UNIQUE)
            gate.wait()
            try:
                store.create(patient(f"Đua {i}", (CCCD, x)))
                outcomes.append("created")
            except Exception as err:  # noqa: BLE001 - the refusal is what is counted
                outcomes.append(f"{getattr(err, 'status', '?')} {getattr(err, 'code', type(err).__name__)}")

        threads = [threading.Thread(target=create, args=(i,)) for i in range(10)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(outcomes) == ["409 duplicate"] * 9 + ["created"], outcomes
        assert fresh_db["Patient"].count_documents({"sp_identifier": f"{CCCD}|{x}"}) == 1


def test_a_claim_left_by_a_dead_writer_is_passed_over_once_stale(fresh_db, monkeypatch):
    """A writer that claimed the number and died before its version: young, its link holds; stale
    and its resource without the number, it is free."""
    from sen_shared.fhir import store as st

    x = cccd()
    store = Store(fresh_db, unique_identifiers=UNIQUE)
    w = store.prepare_create(patient("Chết", (CCCD, x)))
    store.claim_identifiers(w)  # ... and the process dies here
    with pytest.raises(Exception) as refused:
        store.create(patient("Sống", (CCCD, x)))
    assert getattr(refused.value, "status", None) == 409
    monkeypatch.setenv(st.GRACE_ENV, "0")
    created = store.create(patient("Sống", (CCCD, x)))
    assert fresh_db["Patient"].count_documents({"sp_identifier": f"{CCCD}|{x}"}) == 1
    assert created.rid != w.rid


def test_patients_stored_before_the_rule_still_hold_their_numbers(fresh_db):
    x = cccd()
    Store(fresh_db).create(patient("Cũ", (CCCD, x)))  # a store without the rule: no claim made
    with pytest.raises(Exception) as refused:
        Store(fresh_db, unique_identifiers=UNIQUE).create(patient("Mới", (CCCD, x)))
    assert getattr(refused.value, "status", None) == 409
