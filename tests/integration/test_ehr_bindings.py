"""Required value-set bindings on every write of the ehr service, through HTTP, against the real FerretDB.

A code outside the R4 value set of a ``required`` binding is a 400 OperationOutcome (``code-invalid``)
naming the element and the allowed codes, and nothing is stored: create, update (also conditional),
the result of a JSON Patch, each entry of a transaction (the whole transaction refused) or of a batch
(that entry refused, the others done), and ``$validate``.
"""

from __future__ import annotations

import json
import uuid

import pytest

from tests.integration.test_ehr_api import post, put
from tests.support import admin_headers, app_client

pytestmark = pytest.mark.integration

GENDERS = "female, male, other, unknown"


@pytest.fixture(scope="module")
def env(base_env, run_id, mongo_client):
    db = f"sen_t{run_id}_ehr_bindings"
    with app_client("ehr", base_env, db, mongo_client) as (client, _app):
        yield client, mongo_client[db]


@pytest.fixture(scope="module")
def H(dev_key):
    return admin_headers(dev_key)


def patch(c, H, path, ops):
    return c.patch(path, content=json.dumps(ops), headers={**H, "Content-Type": "application/json-patch+json"})


def patient(family="Phạm", **extra):
    return {"resourceType": "Patient", "name": [{"family": family, "given": ["Minh"]}], "gender": "female", **extra}


def observation(**extra):
    return {"resourceType": "Observation", "status": "final", "code": {"text": "Huyết áp"}, **extra}


def refused(r, expression, *allowed):
    assert r.status_code == 400, r.text
    body = r.json()
    assert body["resourceType"] == "OperationOutcome", body
    issue = body["issue"][0]
    assert issue["severity"] == "error" and issue["code"] == "code-invalid", issue
    assert issue["expression"] == [expression], issue
    for text in allowed:
        assert text in issue["diagnostics"], issue
    return issue


def stored(db, rtype):
    return {name: db[name].count_documents({}) for name in (rtype, f"{rtype}_history")}


def urn():
    return f"urn:uuid:{uuid.uuid4()}"


# ------------------------------------------------------------------ create

def test_create_with_a_bad_code_is_refused_and_nothing_stored(env, H):
    client, db = env
    before = stored(db, "Patient"), stored(db, "Observation")
    refused(post(client, H, "/fhir/Patient", patient(gender="banana")), "Patient.gender", "'banana'", GENDERS,
            "http://hl7.org/fhir/ValueSet/administrative-gender")
    refused(post(client, H, "/fhir/Observation", observation(status="bogus")), "Observation.status",
            "'bogus'", "amended, cancelled, corrected, entered-in-error, final, preliminary, registered, unknown")
    refused(post(client, H, "/fhir/Patient", patient(contact=[{"gender": "nữ"}])), "Patient.contact[0].gender",
            GENDERS)
    enc = {"resourceType": "Encounter", "status": "started",
           "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"}}
    refused(post(client, H, "/fhir/Encounter", enc), "Encounter.status", "in-progress")
    cond = {"resourceType": "Condition", "subject": {"reference": "Patient/x"}, "clinicalStatus": {"coding": [
        {"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "cured"}]}}
    refused(post(client, H, "/fhir/Condition", cond), "Condition.clinicalStatus.coding[0].code", "resolved")
    assert (stored(db, "Patient"), stored(db, "Observation")) == before
    assert db["Encounter"].count_documents({}) == 0 and db["Condition"].count_documents({}) == 0


def test_good_codes_and_extensions_are_stored(env, H):
    client, _ = env
    r = post(client, H, "/fhir/Patient", patient(
        gender="other", extension=[{"url": "http://sen.vn/fhir/x", "valueCode": "banana"}]))
    assert r.status_code == 201, r.text
    r = post(client, H, "/fhir/Observation", observation(valueQuantity={"value": 120, "comparator": ">="}))
    assert r.status_code == 201, r.text
    refused(post(client, H, "/fhir/Observation", observation(valueQuantity={"value": 120, "comparator": "≥"})),
            "Observation.valueQuantity.comparator", "<, <=, >, >=")


# ------------------------------------------------------------------ update and patch

def test_update_with_a_bad_code_leaves_the_current_version(env, H):
    client, db = env
    created = post(client, H, "/fhir/Patient", patient("Đặng")).json()
    pid = created["id"]
    r = put(client, H, f"/fhir/Patient/{pid}", {**created, "gender": "banana"})
    refused(r, "Patient.gender", GENDERS)
    r = client.get(f"/fhir/Patient/{pid}", headers=H)
    assert r.json()["meta"]["versionId"] == "1" and r.json()["gender"] == "female"
    # update-as-create with a client id
    refused(put(client, H, "/fhir/Patient/bn-new-1", patient(id="bn-new-1", gender="nam")), "Patient.gender")
    assert client.get("/fhir/Patient/bn-new-1", headers=H).status_code == 404
    # conditional update
    ident = {"system": "http://sen.vn/cccd", "value": "079200000123"}
    assert post(client, H, "/fhir/Patient", patient(identifier=[ident])).status_code == 201
    before = stored(db, "Patient")
    r = put(client, H, "/fhir/Patient?identifier=http://sen.vn/cccd|079200000123",
            patient(identifier=[ident], gender="bogus"))
    refused(r, "Patient.gender")
    assert stored(db, "Patient") == before


def test_patch_whose_result_has_a_bad_code_is_refused(env, H):
    client, _ = env
    pid = post(client, H, "/fhir/Patient", patient("Bùi")).json()["id"]
    refused(patch(client, H, f"/fhir/Patient/{pid}", [{"op": "replace", "path": "/gender", "value": "banana"}]),
            "Patient.gender", GENDERS)
    refused(patch(client, H, f"/fhir/Patient/{pid}",
                  [{"op": "add", "path": "/telecom", "value": [{"system": "zalo", "value": "0901234567"}]}]),
            "Patient.telecom[0].system", "phone")
    r = client.get(f"/fhir/Patient/{pid}", headers=H)
    assert r.json()["meta"]["versionId"] == "1" and r.json()["gender"] == "female" and "telecom" not in r.json()
    r = patch(client, H, f"/fhir/Patient/{pid}", [{"op": "replace", "path": "/gender", "value": "male"}])
    assert r.status_code == 200 and r.json()["gender"] == "male"


# ------------------------------------------------------------------ bundles

def test_transaction_with_one_bad_entry_is_refused_whole(env, H):
    client, db = env
    before = stored(db, "Patient"), stored(db, "Observation"), db["_journal"].count_documents({})
    p = urn()
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": p, "resource": patient("Vũ"), "request": {"method": "POST", "url": "Patient"}},
        {"fullUrl": urn(), "resource": observation(subject={"reference": p}),
         "request": {"method": "POST", "url": "Observation"}},
        {"fullUrl": urn(), "resource": observation(status="done", subject={"reference": p}),
         "request": {"method": "POST", "url": "Observation"}}]}
    r = post(client, H, "/fhir", bundle)
    issue = refused(r, "Bundle.entry[2].resource.status", "final")  # FHIRPath from the Bundle sent (review 11)
    assert "Bundle.entry[2]" in issue["diagnostics"]
    assert (stored(db, "Patient"), stored(db, "Observation"), db["_journal"].count_documents({})) == before
    assert client.get("/fhir/Patient?family=Vũ", headers=H).json().get("entry", []) == []


def test_batch_refuses_only_the_bad_entry(env, H):
    client, _ = env
    bundle = {"resourceType": "Bundle", "type": "batch", "entry": [
        {"resource": patient("Hoàng"), "request": {"method": "POST", "url": "Patient"}},
        {"resource": patient("Hoàng", gender="banana"), "request": {"method": "POST", "url": "Patient"}}]}
    r = post(client, H, "/fhir", bundle)
    assert r.status_code == 200, r.text
    out = r.json()["entry"]
    assert [e["response"]["status"][:3] for e in out] == ["201", "400"]
    issue = out[1]["response"]["outcome"]["issue"][0]
    assert issue["code"] == "code-invalid" and issue["expression"] == ["Patient.gender"]
    assert len(client.get("/fhir/Patient?family=Hoàng", headers=H).json()["entry"]) == 1


def test_validate_operation_reports_the_binding(env, H):
    client, _ = env
    refused(post(client, H, "/fhir/Patient/$validate", patient(gender="banana")), "Patient.gender", GENDERS)
