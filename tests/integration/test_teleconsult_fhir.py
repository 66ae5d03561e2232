"""The teleconsult service as a FHIR R4 server on the shared engine: the shared interactions
(``specs/common/fhir.yaml``) serve its resource types with history and AuditEvents."""

from __future__ import annotations

import json

import pytest

from tests.support import admin_headers, app_client

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def db_name(run_id):
    return f"sen_t{run_id}_tc_fhir"


@pytest.fixture(scope="module")
def tc(base_env, db_name, mongo_client):
    with app_client("teleconsult", base_env, db_name, mongo_client) as (client, app):
        client.sen_app = app
        yield client


@pytest.fixture(scope="module")
def H(dev_key):
    return admin_headers(dev_key)


def test_teleconsult_serves_its_types_with_read_search_history_and_audit(tc, H, mongo_client, db_name):
    meta = tc.get("/fhir/metadata", headers=H)
    assert meta.status_code == 200
    served = {r["type"] for r in meta.json()["rest"][0]["resource"]}
    assert {"ServiceRequest", "Task", "Schedule", "Slot", "Appointment", "AppointmentResponse",
            "Communication"} <= served
    assert "Patient" not in served
    task = {"resourceType": "Task", "status": "requested", "intent": "order",
            "for": {"reference": "Patient/p1"}, "owner": {"reference": "Organization/hub"}}
    # workflow resources change through the consult operations only (test_teleconsult_consults.py)
    r = tc.post("/fhir/Task", content=json.dumps(task), headers=H)
    assert r.status_code == 405 and "$accept" in r.json()["issue"][0]["diagnostics"]
    from sen_shared.fhir.store import Store

    store = Store(mongo_client[db_name], service="teleconsult", emit_events=False)
    tid = store.create(dict(task)).rid
    store.update({**task, "id": tid, "status": "accepted"}, tid, if_match=1)
    assert tc.get(f"/fhir/Task/{tid}", headers=H).json()["status"] == "accepted"
    assert tc.put(f"/fhir/Task/{tid}", content=json.dumps({**task, "id": tid}), headers=H).status_code == 405
    hist = tc.get(f"/fhir/Task/{tid}/_history", headers=H).json()
    assert [e["resource"]["status"] for e in hist["entry"]] == ["accepted", "requested"]
    found = tc.get("/fhir/Task?owner=Organization/hub", headers=H).json()
    assert [e["resource"]["id"] for e in found["entry"]] == [tid]
    # the EHR's Patient endpoints are not served here
    assert tc.get("/fhir/Patient/p1/$everything", headers=H).status_code == 404
    assert tc.get("/fhir/Patient/p1", headers=H).status_code == 404
    audit = tc.get(f"/fhir/AuditEvent?entity=Task/{tid}", headers=H).json()
    assert len(audit.get("entry", [])) >= 2  # the read and the history


def test_the_worklist_refuses_a_parameter_it_does_not_take(tc, H):
    """Review 11: $worklist ignored what it did not know (``?owner=...``, ``?bogus=``), answering the whole list
    as if filtered; now a 400 naming it and what it takes. Its own parameters still answer."""
    assert tc.get("/fhir/Task/$worklist?_count=5&status=requested", headers=H).status_code == 200
    r = tc.get("/fhir/Task/$worklist?owner=Organization/hub&bogus=1", headers=H)
    assert r.status_code == 400, r.text
    issue = r.json()["issue"][0]
    assert issue["code"] == "not-supported" and issue["expression"] == ["bogus", "owner"]
    assert "bogus, owner" in issue["diagnostics"] and "status, priority" in issue["diagnostics"]
