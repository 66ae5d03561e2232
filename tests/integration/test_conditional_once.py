"""Conditional criteria are resolved once per request: the access check's resolution is the write's.

A facility-scoped caller's conditional update, and a transaction's conditional update, conditional
delete and conditional reference (``Patient?identifier=...``), are checked against the resources
the criteria match; the write then uses that same resolution (``FhirRequest.resolved``) instead of
searching again, so a resource that starts matching in between cannot be written unchecked, and
each criterion costs one search. Real ehr app, real FerretDB.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import pytest
from sen_shared.auth import issue_dev_token
from sen_shared.fhir.rest import FhirServer

from tests.support import app_client

pytestmark = pytest.mark.integration

FJ = "application/fhir+json"
MINE, OTHER = "tyt-mot-lan", "tyt-khac"
CCCD = "http://sen.vn/fhir/sid/cccd"


@pytest.fixture(scope="module")
def ehr(base_env, run_id, mongo_client):
    with app_client("ehr", base_env, f"sen_t{run_id}_cond_once", mongo_client) as (client, _app):
        yield client


def headers(dev_key: Any, role: str, **claims: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {issue_dev_token(dev_key, role, **claims)}", "Content-Type": FJ, "Accept": FJ}


def patient(org: str, cccd: str) -> dict[str, Any]:
    return {"resourceType": "Patient", "identifier": [{"system": CCCD, "value": cccd}],
            "name": [{"family": "Phạm", "given": ["Thu", "Hà"]}],
            "managingOrganization": {"reference": f"Organization/{org}"}}


def observation(subject: str, ident: str) -> dict[str, Any]:
    return {"resourceType": "Observation", "status": "final", "identifier": [{"system": "urn:t", "value": ident}],
            "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
            "subject": {"reference": subject}, "valueQuantity": {"value": 72, "unit": "/min"}}


@pytest.fixture()
def searches(monkeypatch) -> Counter:
    """How often each criterion was searched (``FhirServer.match_ids``)."""
    seen: Counter = Counter()
    original = FhirServer.match_ids

    def counted(self, resource_type, query, limit=2, **kwargs):
        params = query if isinstance(query, str) else "&".join(f"{k}={v}" for k, v in query)
        seen[f"{resource_type}?{params}"] += 1
        return original(self, resource_type, query, limit, **kwargs)

    monkeypatch.setattr(FhirServer, "match_ids", counted)
    return seen


def test_a_clinics_conditional_update_searches_once(ehr, dev_key, searches):
    admin, clinic = headers(dev_key, "admin"), headers(dev_key, "clinic", facility=MINE)
    pid = ehr.post("/fhir/Patient", content=json.dumps(patient(MINE, "079200000101")), headers=admin).json()["id"]
    r = ehr.put(f"/fhir/Patient?identifier={CCCD}|079200000101",
                content=json.dumps({**patient(MINE, "079200000101"), "gender": "female"}), headers=clinic)
    assert r.status_code == 200, r.text
    assert r.json()["id"] == pid and r.json()["gender"] == "female"
    assert list(searches.values()) == [1]  # the check's search is the write's


def test_the_write_uses_what_the_check_resolved(ehr, dev_key, monkeypatch):
    """Were the criteria searched again for the write, this search would answer another patient
    (one of another facility that started matching in between) and the write would go to it."""
    admin, clinic = headers(dev_key, "admin"), headers(dev_key, "clinic", facility=MINE)
    mine = ehr.post("/fhir/Patient", content=json.dumps(patient(MINE, "079200000202")), headers=admin).json()["id"]
    other = ehr.post("/fhir/Patient", content=json.dumps(patient(OTHER, "079200000303")), headers=admin).json()["id"]
    answers = iter([[mine], [other], [other]])
    monkeypatch.setattr(FhirServer, "match_ids", lambda self, rtype, query, limit=2, **kw: next(answers))
    r = ehr.put(f"/fhir/Patient?identifier={CCCD}|079200000202",
                content=json.dumps({**patient(MINE, "079200000202"), "gender": "male"}), headers=clinic)
    monkeypatch.undo()
    assert r.status_code == 200, r.text
    assert r.json()["id"] == mine
    assert ehr.get(f"/fhir/Patient/{other}", headers=admin).json().get("gender") is None  # untouched


def test_a_transactions_conditional_entries_search_once_each(ehr, dev_key, searches):
    admin, clinic = headers(dev_key, "admin"), headers(dev_key, "clinic", facility=MINE)
    pid = ehr.post("/fhir/Patient", content=json.dumps(patient(MINE, "079200000404")), headers=admin).json()["id"]
    gone = ehr.post("/fhir/Observation", content=json.dumps(observation(f"Patient/{pid}", "obs-gone")),
                    headers=admin).json()["id"]
    searches.clear()
    by_cccd = f"Patient?identifier={CCCD}|079200000404"
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": observation(by_cccd, "obs-new"),  # a conditional reference
         "request": {"method": "PUT", "url": "Observation?identifier=urn:t|obs-new"}},  # a conditional update
        {"request": {"method": "DELETE", "url": "Observation?identifier=urn:t|obs-gone"}},  # a conditional delete
    ]}
    r = ehr.post("/fhir", content=json.dumps(bundle), headers=clinic)
    assert r.status_code == 200, r.text
    assert [e["response"]["status"].split()[0] for e in r.json()["entry"]] == ["201", "204"]
    assert ehr.get(f"/fhir/Observation/{gone}", headers=admin).status_code == 410
    made = ehr.get("/fhir/Observation?identifier=urn:t|obs-new", headers=admin).json()["entry"][0]["resource"]
    assert made["subject"]["reference"] == f"Patient/{pid}"
    assert searches == {f"{by_cccd}": 1, "Observation?identifier=urn:t|obs-new": 1,
                        "Observation?identifier=urn:t|obs-gone": 1}, searches
