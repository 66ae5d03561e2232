"""The statuses an integrator's client acts on, where a review found wrong ones, on each Sen FHIR server:

- a transaction refused for one entry (a method its type does not take, a type not served) is a 422 (400 when
  the entry names no FHIR resource type) whose OperationOutcome names the entry, not a 405 with
  ``Allow: POST`` on [base], which takes POST; a batch answers that entry 405 and processes the others;
- a resource type a server does not serve is a 404 saying so and naming the types served, whatever the
  method (a method the spec routes on ``{type}`` but not served was a 405 with an empty ``Allow``).
"""

from __future__ import annotations

import json
import uuid

import pytest

from tests.support import admin_headers, app_client

pytestmark = pytest.mark.integration

SERVICES = ("ehr", "teleconsult", "billing")
# a type each serves
SERVED = {"ehr": "Organization", "teleconsult": "Schedule", "billing": "Account"}
_RESOURCE = {"Organization": {"resourceType": "Organization", "name": "Trạm Y tế xã Mỹ Hội"},
             "Schedule": {"resourceType": "Schedule", "actor": [{"reference": "Practitioner/bs-lan"}]},
             "Account": {"resourceType": "Account", "status": "active", "name": "Quầy thu ngân"}}


def _db(service: str) -> str:
    return f"sen_istat{uuid.uuid4().hex[:8]}_{service[:2]}"


def _not_served(r, name: str, served: str) -> None:
    assert r.status_code == 404, (r.request.method, r.request.url, r.status_code, r.text)
    assert "allow" not in r.headers, dict(r.headers)
    issue = r.json()["issue"][0]
    assert r.json()["resourceType"] == "OperationOutcome" and issue["code"] == "not-supported", r.text
    assert name in issue["diagnostics"] and served in issue["diagnostics"] and "metadata" in issue["diagnostics"]


@pytest.mark.parametrize("service", SERVICES)
def test_a_type_not_served_is_404_whatever_the_method(service, base_env, mongo_client, dev_key) -> None:
    with app_client(service, base_env, _db(service), mongo_client) as (client, _app):
        H = admin_headers(dev_key)
        served = SERVED[service]
        for method, path in (("GET", "/fhir/Basic"), ("GET", "/fhir/Nonsense/1"), ("POST", "/fhir/Foo"),
                             ("DELETE", "/fhir/Basic"), ("PATCH", "/fhir/Basic"), ("POST", "/fhir/Basic/1"),
                             ("DELETE", "/fhir/Nonsense/1"), ("GET", "/fhir/Basic/1/_history"),
                             ("PUT", "/fhir/Basic/1/_history"), ("HEAD", "/fhir/Basic")):
            body = json.dumps({"resourceType": path.split("/")[2]}).encode() if method in ("POST", "PUT") else None
            r = client.request(method, path, headers=H, content=body)
            if method == "HEAD":
                assert r.status_code == 404 and "allow" not in r.headers, (path, r.status_code)
                continue
            _not_served(r, path.split("/")[2], served)
        # a FHIR type served elsewhere is told apart from a name that is no FHIR type
        assert "is a FHIR resource type this server does not serve" in \
            client.get("/fhir/Basic", headers=H).json()["issue"][0]["diagnostics"]
        assert "'Nonsense' is not a FHIR resource type" in \
            client.get("/fhir/Nonsense/1", headers=H).json()["issue"][0]["diagnostics"]


def _tx(entries: list[dict]) -> dict:
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


def _org(n: int) -> dict:
    return {"fullUrl": f"urn:uuid:{uuid.uuid4()}", "resource": {"resourceType": "Organization", "name": f"Trạm {n}"},
            "request": {"method": "POST", "url": "Organization"}}


def _refused(r, status: int, index: int, says: str) -> dict:
    assert r.status_code == status, (r.status_code, r.text)
    assert "allow" not in r.headers, dict(r.headers)
    issue = r.json()["issue"][0]
    assert issue["expression"] == [f"Bundle.entry[{index}]"], issue
    assert says in issue["diagnostics"], issue
    return issue


def test_an_ehr_transaction_refused_for_an_entry_names_it_and_writes_nothing(base_env, mongo_client,
                                                                           dev_key) -> None:
    with app_client("ehr", base_env, _db("ehr"), mongo_client) as (client, _app):
        H = admin_headers(dev_key)
        before = client.get("/fhir/Organization?_summary=count&_total=accurate", headers=H).json()["total"]
        for refused, status, says in (
                ({"request": {"method": "DELETE", "url": "AuditEvent/a1"}}, 422, "written by the server"),
                ({"resource": {"resourceType": "AuditEvent", "id": "a1"}, "request": {"method": "PUT",
                                                                                     "url": "AuditEvent/a1"}},
                 422, "written by the server"),
                ({"resource": {"resourceType": "Basic", "code": {"text": "x"}},
                  "request": {"method": "POST", "url": "Basic"}}, 422, "Basic is a FHIR resource type"),
                ({"request": {"method": "GET", "url": "Nonsense/1"}}, 400, "'Nonsense' is not a FHIR resource type")):
            r = client.post("/fhir", content=json.dumps(_tx([_org(0), _org(1), _org(2), refused])), headers=H)
            issue = _refused(r, status, 3, says)
            assert issue["code"] == "not-supported", issue
        after = client.get("/fhir/Organization?_summary=count&_total=accurate", headers=H).json()["total"]
        assert after == before  # all or nothing


def test_teleconsult_refuses_a_transaction_writing_an_appointment_by_its_entry(base_env, mongo_client,
                                                                             dev_key) -> None:
    with app_client("teleconsult", base_env, _db("teleconsult"), mongo_client) as (client, _app):
        H = admin_headers(dev_key)
        schedule = {"resource": _RESOURCE["Schedule"], "request": {"method": "POST", "url": "Schedule"}}
        r = client.post("/fhir", content=json.dumps(_tx([schedule, {"request": {"method": "DELETE",
                                                                                "url": "Appointment/a1"}}])),
                        headers=H)
        _refused(r, 422, 1, "$cancel")
        assert client.get("/fhir/Schedule", headers=H).json().get("entry", []) == []


@pytest.mark.parametrize("service", ("ehr", "teleconsult"))
def test_a_batch_answers_the_refused_entry_405_and_processes_the_others(service, base_env, mongo_client,
                                                                        dev_key) -> None:
    with app_client(service, base_env, _db(service), mongo_client) as (client, _app):
        H = admin_headers(dev_key)
        rtype = SERVED[service]
        made = {"resource": _RESOURCE[rtype], "request": {"method": "POST", "url": rtype}}
        batch = {"resourceType": "Bundle", "type": "batch",
                 "entry": [made, {"request": {"method": "DELETE", "url": "AuditEvent/a1"}}, made,
                           {"request": {"method": "GET", "url": "Basic/1"}}]}
        r = client.post("/fhir", content=json.dumps(batch), headers=H)
        assert r.status_code == 200, r.text
        answers = [e["response"] for e in r.json()["entry"]]
        assert [a["status"][:3] for a in answers] == ["201", "405", "201", "404"], answers
        assert "written by the server" in answers[1]["outcome"]["issue"][0]["diagnostics"]
        assert "Basic" in answers[3]["outcome"]["issue"][0]["diagnostics"]
        assert len(client.get(f"/fhir/{rtype}", headers=H).json()["entry"]) == 2
