"""Batch and transaction Bundles of the ehr service against the real FerretDB.

A transaction is all-or-nothing without multi-document transactions: a bad
entry leaves nothing behind; a crash while claiming is rolled back by the journal, one after
every version is claimed is rolled forward.
"""

from __future__ import annotations

import json
import uuid
from datetime import timedelta

import pytest
from sen_shared.auth import issue_dev_token

from tests.support import app_client

pytestmark = pytest.mark.integration

FJ = "application/fhir+json"


@pytest.fixture(scope="module")
def env(base_env, run_id, mongo_client):
    from sen_shared.runtime import EXTENSION

    db = f"sen_t{run_id}_ehr_bundle"
    with app_client("ehr", base_env, db, mongo_client) as (client, app):
        yield client, app.app.extensions[EXTENSION].extras["fhir"], mongo_client[db]


@pytest.fixture(scope="module")
def H(dev_key):
    return {"Authorization": f"Bearer {issue_dev_token(dev_key, 'admin')}", "Content-Type": FJ}


def send(client, H, bundle, **headers):
    return client.post("/fhir", content=json.dumps(bundle), headers={**H, **headers})


def urn() -> str:
    return f"urn:uuid:{uuid.uuid4()}"


def patient_entry(full, family="Lê", ident=None):
    res = {"resourceType": "Patient", "name": [{"family": family}]}
    if ident:
        res["identifier"] = [{"system": "http://sen.vn/cccd", "value": ident}]
    return {"fullUrl": full, "resource": res, "request": {"method": "POST", "url": "Patient"}}


def obs_entry(subject_ref, value=80):
    return {"fullUrl": urn(), "resource": {
        "resourceType": "Observation", "status": "final", "code": {"text": "Mạch"},
        "subject": {"reference": subject_ref}, "valueQuantity": {"value": value}},
        "request": {"method": "POST", "url": "Observation"}}


def counts(db):
    return {name: db[name].count_documents({}) for name in ("Patient", "Observation", "Patient_history",
                                                          "Observation_history", "_journal")}


def test_transaction_rewrites_urn_uuid_refs(env, H):
    client, _, _ = env
    p = urn()
    bundle = {"resourceType": "Bundle", "type": "transaction",
              "entry": [obs_entry(p), patient_entry(p, "Võ"), obs_entry(p, 90)]}
    r = send(client, H, bundle)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["type"] == "transaction-response"
    statuses = [e["response"]["status"] for e in out["entry"]]
    assert statuses == ["201 Created"] * 3
    pid = out["entry"][1]["resource"]["id"]
    assert out["entry"][0]["resource"]["subject"]["reference"] == f"Patient/{pid}"
    stored = client.get(f"/fhir/{out['entry'][2]['response']['location'].rsplit('/_history', 1)[0]}", headers=H)
    assert stored.json()["subject"]["reference"] == f"Patient/{pid}"
    r = client.get(f"/fhir/Observation?subject=Patient/{pid}", headers=H)
    assert len(r.json()["entry"]) == 2


def test_transaction_with_bad_entry_leaves_nothing(env, H):
    client, _, db = env
    before = counts(db)
    p = urn()
    bad = obs_entry(p)
    bad["resource"]["status"] = 42
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [patient_entry(p), obs_entry(p), bad]}
    r = send(client, H, bundle)
    assert r.status_code == 400, r.text
    issue = r.json()["issue"][0]
    assert issue["expression"][0].startswith("Observation.status") or "entry[2]" in json.dumps(r.json())
    assert counts(db) == before


def test_transaction_unknown_urn_is_400(env, H):
    client, _, db = env
    before = counts(db)
    r = send(client, H, {"resourceType": "Bundle", "type": "transaction", "entry": [obs_entry(urn())]})
    assert r.status_code == 400
    assert counts(db) == before


def test_transaction_conditional_create_and_update(env, H):
    client, _, _ = env
    p = urn()
    ident = "012345678901"
    first = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {**patient_entry(p, "Hồ", ident), "request": {"method": "POST", "url": "Patient",
                                                      "ifNoneExist": f"identifier=http://sen.vn/cccd|{ident}"}},
        obs_entry(p)]}
    r1 = send(client, H, first)
    assert r1.status_code == 200, r1.text
    pid = r1.json()["entry"][0]["resource"]["id"]
    r2 = send(client, H, first)
    assert r2.status_code == 200, r2.text
    assert r2.json()["entry"][0]["response"]["status"] == "200 OK"
    assert r2.json()["entry"][1]["resource"]["subject"]["reference"] == f"Patient/{pid}"
    upd = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": {"resourceType": "Patient", "name": [{"family": "Hồ", "given": ["Chí"]}],
                      "identifier": [{"system": "http://sen.vn/cccd", "value": ident}]},
         "request": {"method": "PUT", "url": f"Patient?identifier=http://sen.vn/cccd|{ident}"}}]}
    r3 = send(client, H, upd)
    assert r3.status_code == 200, r3.text
    assert r3.json()["entry"][0]["resource"]["id"] == pid
    assert r3.json()["entry"][0]["resource"]["meta"]["versionId"] == "2"


def test_transaction_stale_if_match_is_412_and_changes_nothing(env, H):
    client, _, db = env
    pid = client.post("/fhir/Patient", content=json.dumps({"resourceType": "Patient"}), headers=H).json()["id"]
    before = counts(db)
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        patient_entry(urn()),
        {"resource": {"resourceType": "Patient", "id": pid, "gender": "male"},
         "request": {"method": "PUT", "url": f"Patient/{pid}", "ifMatch": 'W/"7"'}}]}
    r = send(client, H, bundle)
    assert r.status_code == 412, r.text
    assert counts(db) == before


def test_transaction_update_and_delete(env, H):
    client, _, _ = env
    a = client.post("/fhir/Patient", content=json.dumps({"resourceType": "Patient"}), headers=H).json()["id"]
    b = client.post("/fhir/Patient", content=json.dumps({"resourceType": "Patient"}), headers=H).json()["id"]
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": {"resourceType": "Patient", "id": a, "gender": "female"},
         "request": {"method": "PUT", "url": f"Patient/{a}"}},
        {"request": {"method": "DELETE", "url": f"Patient/{b}"}},
        {"request": {"method": "GET", "url": f"Patient/{a}"}}]}
    r = send(client, H, bundle)
    assert r.status_code == 200, r.text
    e = r.json()["entry"]
    assert e[0]["response"]["status"] == "200 OK"
    assert e[1]["response"]["status"] == "204 No Content"
    assert e[2]["resource"]["gender"] == "female"
    assert client.get(f"/fhir/Patient/{b}", headers=H).status_code == 410


def test_crash_after_the_claims_is_rolled_forward_by_recovery(env, H):
    """All versions claimed (the commit point), then the process dies mid-way through the current
    documents: recovery rolls the transaction forward, events released once."""
    client, server, db = env
    from sen_shared.fhir.bundle import recover

    keep = client.post("/fhir/Patient", content=json.dumps({"resourceType": "Patient", "gender": "male"}),
                       headers=H).json()
    before = counts(db)
    writes = []

    class Crash(BaseException):  # like a killed process: nothing in the request path catches it
        pass

    def hook(w):
        writes.append(w)
        if len(writes) == 3:
            raise Crash()

    import sen_shared.fhir.bundle as bundle_mod

    real_complete = bundle_mod.complete
    bundle_mod.complete = lambda store, journal: 0  # the process "dies" before it can finish
    from sen_shared.fhir.rest import FhirServer

    server = FhirServer(server.config, db=lambda: db)  # the bare engine: no request, so no access guard
    server.after_write = hook
    p = urn()
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        patient_entry(p), obs_entry(p), obs_entry(p),
        {"resource": {**keep, "gender": "female"}, "request": {"method": "PUT", "url": f"Patient/{keep['id']}"}}]}
    from sen_shared.fhir.http import FhirRequest

    try:
        with pytest.raises(Crash):  # straight into the engine: a crash must not unwind the web stack
            server.bundle(FhirRequest("POST", body=bundle, base="http://test/fhir"))
    finally:
        server.after_write = None
        bundle_mod.complete = real_complete
    assert len(writes) == 3
    assert db["_journal"].count_documents({}) == 1
    # every version claimed, marked with the open transaction (the relay holds them back meanwhile)
    journal = db["_journal"].find_one({})
    assert db["Patient_history"].count_documents({"txn": journal["_id"]}) == 2
    from sen_shared.fhir.store import HistoryGate

    held = list(db["Patient_history"].find({"txn": journal["_id"]}, {"res": 0}))
    assert HistoryGate(db, "Patient")(held) == []
    assert client.get(f"/fhir/Patient/{keep['id']}", headers=H).json()["gender"] == "male"  # not yet written
    assert recover(server.store(), older_than=timedelta(0)) == 1
    after = counts(db)
    assert after["_journal"] == 0
    assert (after["Patient"], after["Observation"]) == (before["Patient"] + 1, before["Observation"] + 2)
    assert (after["Patient_history"], after["Observation_history"]) == \
        (before["Patient_history"] + 2, before["Observation_history"] + 2)
    now = client.get(f"/fhir/Patient/{keep['id']}", headers=H).json()
    assert now["gender"] == "female" and now["meta"]["versionId"] == "2"
    assert db["Patient_history"].find_one({"_id": f"{keep['id']}/2"})["outbox_pending"] is True
    assert len(HistoryGate(db, "Patient")(held)) == 2  # the journal gone, the relay may publish them


def test_crash_while_claiming_is_rolled_back_by_recovery(env, H):
    """The process dies after claiming some versions: recovery deletes its claims, nothing shows."""
    client, server, db = env
    from sen_shared.fhir.bundle import recover

    keep = client.post("/fhir/Patient", content=json.dumps({"resourceType": "Patient", "gender": "male"}),
                       headers=H).json()
    before = counts(db)
    import sen_shared.fhir.bundle as bundle_mod

    class Crash(BaseException):
        pass

    real_claim, real_rollback = bundle_mod._claim_all, bundle_mod.rollback

    def claim_some(store, writes, journal_id):  # the Patients' claims go in, then the process dies
        real_claim(store, [w for w in writes if w.resource_type == "Patient"], journal_id)
        raise Crash()

    bundle_mod._claim_all = claim_some
    bundle_mod.rollback = lambda store, journal: 0
    from sen_shared.fhir.http import FhirRequest
    from sen_shared.fhir.rest import FhirServer

    server = FhirServer(server.config, db=lambda: db)
    p = urn()
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        patient_entry(p), obs_entry(p),
        {"resource": {**keep, "gender": "female"}, "request": {"method": "PUT", "url": f"Patient/{keep['id']}"}}]}
    try:
        with pytest.raises(Crash):
            server.bundle(FhirRequest("POST", body=bundle, base="http://test/fhir"))
    finally:
        bundle_mod._claim_all, bundle_mod.rollback = real_claim, real_rollback
    assert counts(db)["Patient_history"] == before["Patient_history"] + 2
    assert recover(server.store(), older_than=timedelta(0)) == 1
    assert counts(db) == before
    assert client.get(f"/fhir/Patient/{keep['id']}", headers=H).json() == keep
    # the version is free again: a plain update takes it
    r = client.put(f"/fhir/Patient/{keep['id']}", content=json.dumps({**keep, "gender": "other"}),
                   headers={**H, "If-Match": 'W/"1"'})
    assert r.status_code == 200, r.text


def test_lost_claim_rolls_back_at_once_and_a_failure_after_the_claims_is_finished(env, H):
    client, server, db = env
    keep = client.post("/fhir/Patient", content=json.dumps({"resourceType": "Patient", "gender": "unknown"}),
                       headers=H).json()
    before = counts(db)
    # a racing writer holds version 2 already (a fresh claim: its writer is about to write it)
    from datetime import UTC, datetime

    db["Patient_history"].insert_one({"_id": f"{keep['id']}/2", "id": keep["id"], "v": 2, "lu": datetime.now(UTC),
                                      "at": datetime.now(UTC), "del": False, "m": "PUT",
                                      "res": json.dumps({**keep, "gender": "other"})})
    r = send(client, H, {"resourceType": "Bundle", "type": "transaction", "entry": [
        patient_entry(urn()),
        {"resource": {**keep, "gender": "female"}, "request": {"method": "PUT", "url": f"Patient/{keep['id']}"}}]})
    assert r.status_code == 409, r.text
    assert r.json()["resourceType"] == "OperationOutcome"
    assert counts(db) == {**before, "Patient_history": before["Patient_history"] + 1}  # only the racer's claim
    db["Patient_history"].delete_one({"_id": f"{keep['id']}/2"})

    seen = []

    def hook(w):
        seen.append(w)
        if w.verb == "updated":
            raise RuntimeError("disk on fire")

    server.after_write = hook
    try:
        r = send(client, H, {"resourceType": "Bundle", "type": "transaction", "entry": [
            patient_entry(urn()),
            {"resource": {**keep, "gender": "other"}, "request": {"method": "PUT", "url": f"Patient/{keep['id']}"}}]})
        assert r.status_code == 200, r.text  # committed (every version claimed): finished from the history
    finally:
        server.after_write = None
    assert db["_journal"].count_documents({}) == 0
    assert client.get(f"/fhir/Patient/{keep['id']}", headers=H).json()["gender"] == "other"
    # written with its id buckets: a search in the default order (a bucket walk) finds it
    found = client.get("/fhir/Patient?gender=other&_count=1000", headers=H).json()
    assert keep["id"] in {e["resource"]["id"] for e in found.get("entry", [])}


def test_batch_with_mixed_outcomes(env, H):
    client, _, _ = env
    pid = client.post("/fhir/Patient", content=json.dumps({"resourceType": "Patient"}), headers=H).json()["id"]
    bundle = {"resourceType": "Bundle", "type": "batch", "entry": [
        patient_entry(urn(), "Bùi"),
        {"resource": {"resourceType": "Patient", "name": [{"family": 7}]},
         "request": {"method": "POST", "url": "Patient"}},
        {"request": {"method": "GET", "url": f"Patient/{pid}"}},
        {"request": {"method": "GET", "url": "Patient/nope-404"}},
        {"request": {"method": "GET", "url": "Spaceship/1"}},
        {"request": {"method": "DELETE", "url": f"Patient/{pid}"}}]}
    r = send(client, H, bundle)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["type"] == "batch-response"
    assert [e["response"]["status"][:3] for e in out["entry"]] == ["201", "400", "200", "404", "404", "204"]
    assert out["entry"][1]["response"]["outcome"]["resourceType"] == "OperationOutcome"


def test_a_batch_entry_referring_to_another_entry_is_refused_not_stored_dangling(env, H):
    """Review 11: a batch's Observation naming its Patient entry by urn:uuid was stored with that reference
    as written (a reference to nothing once out of the Bundle); now that entry alone is a 400 saying to send
    a transaction, and the others of the batch stand."""
    client, _, db = env
    p = urn()
    before = db["Observation"].count_documents({})
    r = send(client, H, {"resourceType": "Bundle", "type": "batch", "entry": [patient_entry(p, "Đinh"), obs_entry(p)]})
    assert r.status_code == 200, r.text
    first, second = r.json()["entry"]
    assert first["response"]["status"].startswith("201")
    assert second["response"]["status"] == "400"
    issue = second["response"]["outcome"]["issue"][0]
    assert p in issue["diagnostics"] and "transaction" in issue["diagnostics"]
    assert issue["expression"] == ["Bundle.entry[1].resource"]
    assert db["Observation"].count_documents({}) == before


def test_a_bad_transaction_entry_is_named_by_its_index(env, H):
    """Review 11: a transaction refused for one entry's content said 'Extra inputs are not permitted' at
    'Patient.foo', not which of its entries; now every issue names the entry, in its text and expression."""
    client, _, _ = env
    good = patient_entry(urn(), "Hồ")
    for bad, expression in (({"resourceType": "Patient", "foo": 1}, "Bundle.entry[1].resource.foo"),
                            ({"resourceType": "Patient", "birthDate": "2020-13-01"},
                             "Bundle.entry[1].resource.birthDate"),
                            ({"resourceType": "Patient", "gender": "banana"}, "Bundle.entry[1].resource.gender")):
        r = send(client, H, {"resourceType": "Bundle", "type": "transaction",
                             "entry": [good, {"resource": bad, "request": {"method": "POST", "url": "Patient"}}]})
        assert r.status_code == 400, r.text
        issue = r.json()["issue"][0]
        assert issue["expression"] == [expression], issue
        assert issue["diagnostics"].startswith("Bundle.entry[1].resource: "), issue


def test_bundle_shape_errors(env, H):
    client, _, _ = env
    assert send(client, H, {"resourceType": "Patient"}).status_code == 400
    assert send(client, H, {"resourceType": "Bundle", "type": "collection"}).status_code == 400
    assert send(client, H, {"resourceType": "Bundle", "type": "transaction", "entry": [1]}).status_code == 400
    r = send(client, H, {"resourceType": "Bundle", "type": "transaction",
                         "entry": [{"request": {"method": "POST", "url": "Patient"}}]})
    assert r.status_code == 400
    r = send(client, H, {"resourceType": "Bundle", "type": "transaction",
                         "entry": [{"request": {"method": "GET", "url": "Patient/../../etc"}}]})
    assert r.status_code == 400


def test_transaction_minimal_return(env, H):
    client, _, _ = env
    p = urn()
    r = send(client, H, {"resourceType": "Bundle", "type": "transaction",
                         "entry": [patient_entry(p), obs_entry(p)]}, Prefer="return=minimal")
    assert r.status_code == 200
    assert all("resource" not in e and e["response"]["location"] for e in r.json()["entry"])
