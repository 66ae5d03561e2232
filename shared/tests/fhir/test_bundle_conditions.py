"""A transaction's read entries take their own conditions, and a refused transaction gives back the
conditional criteria it claimed. The bare engine (``FhirServer``) on the live FerretDB/MongoDB.

A GET entry's ``request.ifNoneMatch`` / ``ifModifiedSince`` make it the conditional read a GET with those
headers is (FHIR R4 http.html#transaction, Bundle.entry.request): ``304 Not Modified``, no resource; the
Bundle's own POST headers are not the entries'. A conditional create (``ifNoneExist``) or a conditional
update (``PUT Type?query``) matching nothing claims its criteria (store.condition_key); a transaction
refused afterwards (a later entry invalid) gives them back, so the corrected transaction sent at once
creates, once.
"""

from __future__ import annotations

import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sen_shared.fhir.http import FhirRequest
from sen_shared.fhir.outcome import FhirError
from sen_shared.fhir.rest import FhirConfig, FhirServer

from .conftest import MONGO_URL

SYSTEM = "urn:sen:test:ma-bn"


@pytest.fixture(scope="module")
def server(db):
    from pymongo import MongoClient

    with MongoClient(MONGO_URL, serverSelectionTimeoutMS=3000, tz_aware=True) as client:  # as the services' (mongo.py)
        aware = client[db.name]
        yield FhirServer(FhirConfig(resource_types=["Patient", "Observation"], service="test"), lambda: aware)


def post(server: FhirServer, entries: list[dict[str, Any]], kind: str = "transaction",
         **headers: str) -> dict[str, Any]:
    req = FhirRequest("POST", body={"resourceType": "Bundle", "type": kind, "entry": entries},
                      base="http://test/fhir", headers={k.replace("_", "-").lower(): v for k, v in headers.items()})
    resp = server.bundle(req)
    assert resp.status == 200 and resp.body is not None
    return resp.body


def refused(server: FhirServer, entries: list[dict[str, Any]]) -> FhirError:
    with pytest.raises(FhirError) as err:
        post(server, entries)
    return err.value


def patient(ident: str, family: str = "Nguyễn") -> dict[str, Any]:
    return {"resourceType": "Patient", "identifier": [{"system": SYSTEM, "value": ident}], "name": [{"family": family}]}


def conditional_create(ident: str, full: str) -> dict[str, Any]:
    return {"fullUrl": full, "resource": patient(ident),
            "request": {"method": "POST", "url": "Patient", "ifNoneExist": f"identifier={SYSTEM}|{ident}"}}


def observation(subject: str, status: Any = "final") -> dict[str, Any]:
    return {"resource": {"resourceType": "Observation", "status": status, "code": {"text": "Mạch"},
                         "subject": {"reference": subject}, "valueQuantity": {"value": 80}},
            "request": {"method": "POST", "url": "Observation"}}


def holders(db, ident: str) -> int:
    return sum(1 for d in db.Patient.find({"del": {"$ne": True}}, {"res": 1}) if ident in str(d.get("res")))


def stored(server: FhirServer) -> tuple[str, str]:
    """A new Patient's id and lastUpdated."""
    out = post(server, [{"resource": patient(uuid.uuid4().hex[:12]), "request": {"method": "POST", "url": "Patient"}}])
    entry = out["entry"][0]
    return entry["resource"]["id"], entry["resource"]["meta"]["lastUpdated"]


def _instant(last_updated: str, seconds: int) -> str:
    when = datetime.fromisoformat(last_updated.replace("Z", "+00:00")) + timedelta(seconds=seconds)
    return when.astimezone(UTC).isoformat().replace("+00:00", "Z")


# ------------------------------------------------------------------------------ read entries' conditions

@pytest.mark.parametrize("kind", ["transaction", "batch"])
def test_a_read_entry_naming_the_current_etag_is_304_another_is_the_resource(server, kind) -> None:
    pid, _ = stored(server)
    out = post(server, [{"request": {"method": "GET", "url": f"Patient/{pid}", "ifNoneMatch": 'W/"1"'}},
                        {"request": {"method": "GET", "url": f"Patient/{pid}", "ifNoneMatch": 'W/"7"'}},
                        {"request": {"method": "GET", "url": f"Patient/{pid}"}}], kind)
    same, other, plain = out["entry"]
    assert same["response"]["status"] == "304 Not Modified" and "resource" not in same, same
    assert same["response"]["etag"] == 'W/"1"'
    assert other["response"]["status"] == "200 OK" and other["resource"]["id"] == pid
    assert plain["response"]["status"] == "200 OK" and plain["resource"]["id"] == pid


@pytest.mark.parametrize("kind", ["transaction", "batch"])
def test_a_read_entry_modified_since_is_304_only_when_not_changed_since(server, kind) -> None:
    pid, last = stored(server)
    url = f"Patient/{pid}"
    out = post(server, [{"request": {"method": "GET", "url": url, "ifModifiedSince": _instant(last, 60)}},
                        {"request": {"method": "GET", "url": url, "ifModifiedSince": _instant(last, -60)}}], kind)
    later, earlier = out["entry"]
    assert later["response"]["status"] == "304 Not Modified" and "resource" not in later, later
    assert earlier["response"]["status"] == "200 OK" and earlier["resource"]["id"] == pid


def test_the_bundles_own_conditional_headers_are_not_the_entries(server) -> None:
    """If-None-Match on the POST of a transaction is about the Bundle: its reads answer in full."""
    pid, last = stored(server)
    out = post(server, [{"request": {"method": "GET", "url": f"Patient/{pid}"}}], if_none_match="*",
               if_modified_since="Sun, 06 Nov 2095 08:49:37 GMT")
    assert out["entry"][0]["response"]["status"] == "200 OK" and out["entry"][0]["resource"]["id"] == pid


def test_a_read_entry_after_a_write_of_the_same_transaction_sees_the_new_version(server) -> None:
    pid, _ = stored(server)
    body = {**patient("x"), "id": pid}
    out = post(server, [{"request": {"method": "GET", "url": f"Patient/{pid}", "ifNoneMatch": 'W/"1"'}},
                        {"resource": body, "request": {"method": "PUT", "url": f"Patient/{pid}"}}])
    read = out["entry"][0]
    assert read["response"]["status"] == "200 OK" and read["resource"]["meta"]["versionId"] == "2"


# ------------------------------------------------------------------------------ claims given back

def test_a_refused_transaction_gives_its_conditional_create_back(server, db) -> None:
    ident, full = uuid.uuid4().hex[:12], f"urn:uuid:{uuid.uuid4()}"
    bad = [conditional_create(ident, full), observation(full), observation(full, status=42)]
    err = refused(server, bad)
    assert err.status == 400 and "entry[2]" in str(err.to_outcome()), err.to_outcome()
    assert holders(db, ident) == 0
    out = post(server, [conditional_create(ident, full), observation(full), observation(full)])
    assert [e["response"]["status"] for e in out["entry"]] == ["201 Created"] * 3
    assert holders(db, ident) == 1
    again = post(server, [conditional_create(ident, full), observation(full)])
    assert again["entry"][0]["response"]["status"] == "200 OK"
    assert holders(db, ident) == 1


def test_a_transaction_refused_while_planning_gives_back_what_it_claimed_before(server, db) -> None:
    """Entry 1's criteria claimed, entry 2's method unknown: refused in the plan, the claim is given back."""
    ident, full = uuid.uuid4().hex[:12], f"urn:uuid:{uuid.uuid4()}"
    err = refused(server, [conditional_create(ident, full), {"request": {"method": "BREW", "url": "Patient"}}])
    assert err.status == 400
    out = post(server, [conditional_create(ident, full)])
    assert out["entry"][0]["response"]["status"] == "201 Created"
    assert holders(db, ident) == 1


def test_a_refused_transaction_gives_its_conditional_update_back(server, db) -> None:
    ident, full = uuid.uuid4().hex[:12], f"urn:uuid:{uuid.uuid4()}"
    upsert = {"fullUrl": full, "resource": patient(ident),
              "request": {"method": "PUT", "url": f"Patient?identifier={SYSTEM}|{ident}"}}
    err = refused(server, [upsert, observation(full), observation(full, status=42)])
    assert err.status == 400
    out = post(server, [upsert, observation(full)])
    assert out["entry"][0]["response"]["status"] == "201 Created", out
    assert holders(db, ident) == 1


def test_twenty_identical_conditional_create_transactions_at_once_create_one(server, db) -> None:
    ident = uuid.uuid4().hex[:12]
    start = threading.Barrier(20)

    def send(_: int) -> int | str:
        full = f"urn:uuid:{uuid.uuid4()}"
        start.wait()
        try:
            return post(server, [conditional_create(ident, full), observation(full)])["entry"][0]["response"]["status"]
        except FhirError as err:
            return err.status

    with ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(send, range(20)))
    assert holders(db, ident) == 1
    assert answers.count("201 Created") == 1, answers
    assert set(answers) <= {"201 Created", "200 OK", 409}, answers


def test_the_statement_says_what_bundle_entries_take() -> None:
    from sen_shared.fhir.capability import capability_statement

    statement = capability_statement(FhirConfig(resource_types=["Patient"]), "http://test/fhir")
    docs = {i["code"]: i.get("documentation", "") for i in statement["rest"][0]["interaction"]}
    for code in ("transaction", "batch"):
        assert "ifNoneMatch" in docs[code] and "ifModifiedSince" in docs[code] and "304 Not Modified" in docs[code]
    assert "criteria it claimed are free again" in docs["transaction"]
