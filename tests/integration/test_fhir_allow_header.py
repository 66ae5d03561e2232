"""Every 405 of a Sen FHIR server names, in ``Allow``, the methods its target serves (RFC 9110 §15.5.6), with
the OperationOutcome as before (review: an integrator's PUT on an AuditEvent got a 405 without it). Each kind
on each server that has it: the engine's refusal of a write a type does not allow (the audit trail the
server writes), a service's own (teleconsult's workflow resources and computed Slots, billing's Invoice,
PaymentReconciliation, Bundles and a cashier's ChargeItem), and the router's 405 for a method no route has (it
named the methods of one route only: ``DELETE /fhir/Patient`` said ``HEAD, GET`` though POST and PUT are served
there). A transaction refused for an entry is no 405 (a 422 naming the entry), nor is a type not served (404),
nor [base] where no Bundles are taken (billing: 404).
"""

from __future__ import annotations

import json
import uuid

import pytest
from sen_shared.auth import issue_dev_token

from tests.support import admin_headers, app_client

pytestmark = pytest.mark.integration

READ_ONLY = "GET, HEAD"


def _405(client, method: str, path: str, headers: dict[str, str], body: object = None,
         content_type: str | None = None) -> str:
    """The ``Allow`` of the 405 ``method path`` answers, whose body is a not-supported OperationOutcome."""
    h = dict(headers)
    if content_type:
        h["Content-Type"] = content_type
    content = body if isinstance(body, bytes) else json.dumps(body).encode() if body is not None else None
    r = client.request(method, path, headers=h, content=content)
    assert r.status_code == 405, (method, path, r.status_code, r.text)
    outcome = r.json()
    assert outcome["resourceType"] == "OperationOutcome" and outcome["issue"][0]["code"] == "not-supported", outcome
    assert "allow" in r.headers, (method, path, dict(r.headers))
    assert method not in r.headers["allow"].split(", "), (method, path, r.headers["allow"])
    return r.headers["allow"]


def _entry_refused(client, headers: dict[str, str], tx: dict, index: int) -> str:
    """A transaction refused for its entry ``index``: no 405 (its target, [base], takes POST) but a 422 naming
    the entry, without ``Allow``; the diagnostics."""
    r = client.post("/fhir", content=json.dumps(tx), headers=headers)
    assert r.status_code == 422 and "allow" not in r.headers, (r.status_code, dict(r.headers), r.text)
    issue = r.json()["issue"][0]
    assert issue["code"] == "not-supported" and issue["expression"] == [f"Bundle.entry[{index}]"], issue
    return issue["diagnostics"]


def _audit_trail_and_routes(client, H, rtype: str) -> None:
    """What the EHR and teleconsult share: the audit trail the server writes (read-only: no POST either), and
    the router's 405s (``rtype``: a type served with every interaction)."""
    aid = "audit-probe"
    assert _405(client, "POST", "/fhir/AuditEvent", H, {"resourceType": "AuditEvent"}) == READ_ONLY
    assert _405(client, "PUT", f"/fhir/AuditEvent/{aid}", H, {"resourceType": "AuditEvent", "id": aid}) == READ_ONLY
    assert _405(client, "PATCH", f"/fhir/AuditEvent/{aid}", H, b"[]", "application/json-patch+json") == READ_ONLY
    assert _405(client, "DELETE", f"/fhir/AuditEvent/{aid}", H) == READ_ONLY
    # the router's: a method no route of the path has
    assert _405(client, "DELETE", f"/fhir/{rtype}", H) == "GET, HEAD, POST, PUT"
    assert _405(client, "DELETE", "/fhir/AuditEvent", H) == READ_ONLY  # written by the server only
    assert _405(client, "DELETE", "/fhir/metadata", H) == READ_ONLY
    assert _405(client, "GET", "/fhir", H) == "POST"
    # a transaction refused whole for an entry: no 405, its target is [base], whose method is POST
    tx = {"resourceType": "Bundle", "type": "transaction",
          "entry": [{"request": {"method": "DELETE", "url": f"AuditEvent/{aid}"}}]}
    assert "written by the server" in _entry_refused(client, H, tx, 0)


def test_the_ehr_says_what_is_allowed(base_env, mongo_client, dev_key) -> None:
    with app_client("ehr", base_env, f"sen_allow{uuid.uuid4().hex[:8]}_ehr", mongo_client) as (client, _app):
        H = admin_headers(dev_key)
        _audit_trail_and_routes(client, H, "Patient")
        assert _405(client, "DELETE", "/fhir/Patient/p1/$everything", H) == READ_ONLY
        assert _405(client, "DELETE", "/fhir/Patient/p1/$take-on", H) == "POST"  # not the compartment's GET


def test_teleconsult_says_what_is_allowed(base_env, mongo_client, dev_key) -> None:
    with app_client("teleconsult", base_env, f"sen_allow{uuid.uuid4().hex[:8]}_tc", mongo_client) as (client, _app):
        H = admin_headers(dev_key)
        _audit_trail_and_routes(client, H, "Schedule")
        # the workflow's resources change through their operations only
        assert _405(client, "PUT", "/fhir/Task/t1", H, {"resourceType": "Task", "id": "t1"}) == READ_ONLY
        assert _405(client, "DELETE", "/fhir/Appointment/a1", H) == READ_ONLY
        assert _405(client, "POST", "/fhir/ServiceRequest", H, {"resourceType": "ServiceRequest"}) == READ_ONLY
        assert _405(client, "GET", "/fhir/Task/t1/$accept", H) == "POST"
        # Slots are computed: read and searched, never written
        assert _405(client, "PUT", "/fhir/Slot/s1", H, {"resourceType": "Slot", "id": "s1"}) == READ_ONLY
        assert _405(client, "DELETE", "/fhir/Slot/s1", H) == READ_ONLY
        assert _405(client, "PATCH", "/fhir/Slot/s1", H, b"[]", "application/json-patch+json") == READ_ONLY
        assert _405(client, "POST", "/fhir/Slot", H, {"resourceType": "Slot"}) == READ_ONLY
        tx = {"resourceType": "Bundle", "type": "transaction",
              "entry": [{"request": {"method": "DELETE", "url": "Appointment/a1"}}]}
        assert "$cancel" in _entry_refused(client, H, tx, 0)
        # a type not served here: its 404 (not a 405 with nothing in Allow)
        r = client.delete("/fhir/Patient", headers=H)
        assert r.status_code == 404 and "allow" not in r.headers and "ServiceRequest" in r.text, (r.status_code, r.text)


def test_billing_says_what_is_allowed(base_env, mongo_client, dev_key) -> None:
    with app_client("billing", base_env, f"sen_allow{uuid.uuid4().hex[:8]}_bi", mongo_client) as (client, _app):
        H = admin_headers(dev_key)
        assert _405(client, "PUT", "/fhir/Invoice/i1", H, {"resourceType": "Invoice", "id": "i1"}) == READ_ONLY
        assert _405(client, "DELETE", "/fhir/Invoice/i1", H) == READ_ONLY
        assert _405(client, "DELETE", "/fhir/Invoice", H) == "GET, HEAD, POST"  # created, then its operations
        assert _405(client, "POST", "/fhir/PaymentReconciliation", H,
                    {"resourceType": "PaymentReconciliation"}) == READ_ONLY
        assert _405(client, "DELETE", "/fhir/Invoice/i1/$issue", H) == "POST"
        # no Bundles at all: nothing is served on [base], a 404 saying so (a 405 with an empty Allow told the
        # client nothing it could use)
        for method, body in (("POST", {"resourceType": "Bundle", "type": "batch", "entry": []}), ("GET", None)):
            r = client.request(method, "/fhir", headers=H, content=json.dumps(body) if body else None)
            assert r.status_code == 404 and "allow" not in r.headers, (method, r.status_code, dict(r.headers))
            issue = r.json()["issue"][0]
            assert issue["code"] == "not-supported" and "no batch or transaction Bundles" in issue["diagnostics"]
        # a cashier changes no ChargeItem once entered (an admin may): what is left to the cashier
        cashier = {"Authorization": f"Bearer {issue_dev_token(dev_key, 'cashier', facility='org-a')}",
                   "Content-Type": "application/fhir+json"}
        assert _405(client, "DELETE", "/fhir/ChargeItem/c1", cashier) == READ_ONLY
        assert _405(client, "DELETE", "/fhir/ChargeItem", H) == "GET, HEAD, POST, PUT"
