"""The EHR's transactions (gunicorn, two workers, the real FerretDB): a read entry's own conditions, and
the conditional criteria a refused transaction claimed given back.

FHIR R4 http.html#transaction, Bundle.entry.request: a GET entry with ``ifNoneMatch`` naming the current
version, or ``ifModifiedSince`` at or after its lastUpdated, answers ``304 Not Modified`` without the
resource (before: the entry's conditions were ignored, 200 with the resource). A transaction with a
conditional create in entry 1, refused because of entry 3, sent again corrected at once: 200 and one
Patient (before: 409 "a conditional create with the same criteria ran meanwhile", the criteria held for the
grace period by the refused transaction's claim). Twenty identical conditional-create transactions at once
still create one.
"""

from __future__ import annotations

import json
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.support import admin_headers, web_process

pytestmark = pytest.mark.integration

CCCD = "https://fhir.sen.vn/sid/cccd"


@pytest.fixture(scope="module")
def ehr(base_env: dict[str, str], run_id: str, mongo_client: Any, tmp_path_factory: Any, dev_key: Any):
    from sen_ehr.indexes import INDEXES
    from sen_shared import mongo

    name = f"sen_t{run_id}_txn_cond"
    mongo.ensure_indexes(mongo_client[name], INDEXES)
    log = tmp_path_factory.mktemp("ehr") / "ehr.log"
    try:
        with web_process("ehr", {**base_env, "SEN_DB": name}, log, WEB_CONCURRENCY="2") as url, \
                httpx.Client(base_url=url, headers=admin_headers(dev_key), timeout=60) as client:
            yield client
    finally:
        mongo_client.drop_database(name)


def cccd() -> str:
    return f"0792{uuid.uuid4().int % 10**8:08d}"


def send(client: httpx.Client, entries: list[dict[str, Any]]) -> httpx.Response:
    return client.post("/fhir", content=json.dumps({"resourceType": "Bundle", "type": "transaction", "entry": entries}))


def patient(number: str) -> dict[str, Any]:
    return {"resourceType": "Patient", "identifier": [{"system": CCCD, "value": number}],
            "name": [{"family": "Đặng", "given": ["Thị", "Hoa"]}], "gender": "female", "birthDate": "1988-03-02"}


def conditional_create(number: str, full: str) -> dict[str, Any]:
    return {"fullUrl": full, "resource": patient(number),
            "request": {"method": "POST", "url": "Patient", "ifNoneExist": f"identifier={CCCD}|{number}"}}


def pulse(subject: str, value: Any = 84) -> dict[str, Any]:
    return {"fullUrl": f"urn:uuid:{uuid.uuid4()}", "resource": {
        "resourceType": "Observation", "status": "final", "code": {"text": "Mạch"},
        "subject": {"reference": subject}, "valueQuantity": {"value": value, "unit": "/min"}},
        "request": {"method": "POST", "url": "Observation"}}


def holders(client: httpx.Client, number: str) -> list[str]:
    r = client.get("/fhir/Patient", params={"identifier": f"{CCCD}|{number}"})
    assert r.status_code == 200, r.text
    return [e["resource"]["id"] for e in r.json().get("entry", []) if e["search"]["mode"] == "match"]


def instant(last_updated: str, seconds: int) -> str:
    when = datetime.fromisoformat(last_updated.replace("Z", "+00:00")) + timedelta(seconds=seconds)
    return when.astimezone(UTC).isoformat().replace("+00:00", "Z")


def test_a_read_entry_with_the_current_etag_or_a_later_date_is_304_else_the_resource(ehr) -> None:
    made = ehr.post("/fhir/Patient", content=json.dumps(patient(cccd())))
    assert made.status_code == 201, made.text
    pid, etag, last = made.json()["id"], made.headers["ETag"], made.json()["meta"]["lastUpdated"]
    url = f"Patient/{pid}"
    r = send(ehr, [{"request": {"method": "GET", "url": url, "ifNoneMatch": etag}},
                   {"request": {"method": "GET", "url": url, "ifNoneMatch": 'W/"9"'}},
                   {"request": {"method": "GET", "url": url, "ifModifiedSince": instant(last, 60)}},
                   {"request": {"method": "GET", "url": url, "ifModifiedSince": instant(last, -60)}}])
    assert r.status_code == 200, r.text
    same, other, later, earlier = r.json()["entry"]
    for e in (same, later):
        assert e["response"]["status"] == "304 Not Modified" and "resource" not in e, e
        assert e["response"]["etag"] == etag
    for e in (other, earlier):
        assert e["response"]["status"] == "200 OK" and e["resource"]["id"] == pid, e


def test_a_transaction_refused_by_entry_3_leaves_entry_1s_criteria_free_for_the_corrected_one(ehr) -> None:
    number, full = cccd(), f"urn:uuid:{uuid.uuid4()}"
    refused = send(ehr, [conditional_create(number, full), pulse(full), pulse(full, value="tám mươi")])
    assert refused.status_code == 400, refused.text
    assert "Bundle.entry[2]" in refused.text or "Observation.valueQuantity" in refused.text
    assert holders(ehr, number) == []
    corrected = send(ehr, [conditional_create(number, full), pulse(full), pulse(full, value=80)])
    assert corrected.status_code == 200, corrected.text
    assert [e["response"]["status"] for e in corrected.json()["entry"]] == ["201 Created"] * 3
    assert holders(ehr, number) == [corrected.json()["entry"][0]["resource"]["id"]]


def test_a_transaction_refused_while_writing_gives_its_criteria_back_too(ehr) -> None:
    """Entry 2 gives a second patient a CCCD number another patient holds: refused when its numbers are
    claimed (409 duplicate), after entry 1's criteria were; the corrected transaction at once creates."""
    held = cccd()
    assert ehr.post("/fhir/Patient", content=json.dumps(patient(held))).status_code == 201
    number, full = cccd(), f"urn:uuid:{uuid.uuid4()}"
    twin = {"fullUrl": f"urn:uuid:{uuid.uuid4()}", "resource": patient(held),
            "request": {"method": "POST", "url": "Patient"}}
    refused = send(ehr, [conditional_create(number, full), twin])
    assert refused.status_code == 409, refused.text
    assert holders(ehr, number) == []
    corrected = send(ehr, [conditional_create(number, full), {**twin, "resource": patient(cccd())}])
    assert corrected.status_code == 200, corrected.text
    assert corrected.json()["entry"][0]["response"]["status"] == "201 Created"
    assert len(holders(ehr, number)) == 1


def test_twenty_identical_conditional_create_transactions_at_once_make_one_patient(ehr) -> None:
    number = cccd()
    start = threading.Barrier(20)

    def one(_: int) -> tuple[int, str | None]:
        full = f"urn:uuid:{uuid.uuid4()}"
        start.wait()
        r = send(ehr, [conditional_create(number, full), pulse(full)])
        return r.status_code, r.json()["entry"][0]["response"]["status"] if r.status_code == 200 else None

    with ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(one, range(20)))
    assert {status for status, _ in answers} <= {200, 409}, answers
    assert [entry for _, entry in answers].count("201 Created") == 1, answers
    assert len(holders(ehr, number)) == 1
