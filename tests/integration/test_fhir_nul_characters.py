"""A NUL character (U+0000) from a client is a 400 OperationOutcome on every FHIR server, never a 500.

The database (FerretDB on PostgreSQL) can neither store a string holding one nor compare against
one once the collection holds documents ("unsupported Unicode escape sequence"), and no FHIR
string may hold one. Found by the API fuzz (tools/fuzz/api_fuzz.py); the shared FHIR request
reader (sen_shared.fhir.http) refuses it in the query string, a condition and the body.
"""

from __future__ import annotations

import json

import pytest

from tests.support import admin_headers, app_client

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def ehr(base_env, run_id, mongo_client, dev_key):
    with app_client("ehr", base_env, f"sen_t{run_id}_ehr_nul", mongo_client) as (client, _app):
        headers = admin_headers(dev_key)
        stored = {"resourceType": "Patient", "name": [{"family": "Nguyễn", "given": ["Văn", "An"]}],
                  "gender": "male", "identifier": [{"system": "https://fhir.sen.vn/sid/cccd", "value": "001080000001"}]}
        r = client.post("/fhir/Patient", content=json.dumps(stored), headers=headers)
        assert r.status_code == 201, r.text  # a collection holding a document: the database compares
        yield client, headers


def _outcome(r, status=400):
    assert r.status_code == status, r.text
    body = r.json()
    assert body["resourceType"] == "OperationOutcome", body
    return body["issue"][0]


@pytest.mark.parametrize("query", ["identifier=a%00b", "_id=%00", "gender=%00", "family:exact=Ng%00",
                                   "name=%00", "x%00=1"])
def test_a_search_value_holding_nul_is_a_400(ehr, query):
    client, headers = ehr
    issue = _outcome(client.get(f"/fhir/Patient?{query}", headers=headers))
    assert "NUL" in issue["diagnostics"]


def test_a_post_search_holding_nul_is_a_400(ehr):
    client, headers = ehr
    r = client.post("/fhir/Patient/_search", content="identifier=a%00",
                    headers={**headers, "Content-Type": "application/x-www-form-urlencoded"})
    assert "NUL" in _outcome(r)["diagnostics"]


def test_a_condition_holding_nul_is_a_400(ehr):
    client, headers = ehr
    body = {"resourceType": "Patient", "name": [{"family": "Trần"}]}
    r = client.post("/fhir/Patient", content=json.dumps(body),
                    headers={**headers, "If-None-Exist": "identifier=a%00"})
    assert "NUL" in _outcome(r)["diagnostics"]


def test_a_resource_holding_nul_is_a_400_naming_the_element(ehr):
    client, headers = ehr
    body = {"resourceType": "Patient", "name": [{"family": "Ng\u0000", "given": ["An"]}]}
    issue = _outcome(client.post("/fhir/Patient", content=json.dumps(body), headers=headers))
    assert issue["expression"] == ["Patient.name[0].family"]
    # a transaction's entry: the same answer, nothing stored
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"request": {"method": "POST", "url": "Patient"}, "resource": body}]}
    _outcome(client.post("/fhir", content=json.dumps(bundle), headers=headers))
    found = client.get("/fhir/Patient?_summary=count", headers=headers).json()
    assert found["total"] == 1


def test_an_escaped_backslash_before_u0000_is_no_nul(ehr):
    client, headers = ehr
    body = {"resourceType": "Patient", "name": [{"family": "Lê", "given": ["\\u0000"]}]}
    r = client.post("/fhir/Patient", content=json.dumps(body), headers=headers)
    assert r.status_code == 201, r.text
    assert r.json()["name"][0]["given"] == ["\\u0000"]
