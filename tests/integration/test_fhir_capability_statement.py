"""Each FHIR server's CapabilityStatement lists exactly the interactions that work (review 11, an integrator
reading ``GET /fhir/metadata``): a create, update, patch or delete the statement leaves out of a type is 405,
on teleconsult (the consult's resources change through their operations, Slots are computed), billing (an
Invoice changes through $issue and $cancel, a PaymentReconciliation by the settlement) and on the EHR and
teleconsult's audit trail, which the server writes (an admin cannot create, rewrite or delete an AuditEvent).
The Patient compartment is offered where Patient is served, and a Slot's statement names the parameters its
search takes.
"""

from __future__ import annotations

import json
import uuid

import pytest

from tests.support import admin_headers, app_client

pytestmark = pytest.mark.integration

WRITES = ("create", "update", "patch", "delete")
_AUDIT = {"resourceType": "AuditEvent", "recorded": "2026-12-01T10:00:00Z", "action": "E",
          "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-event-type", "code": "rest"},
          "agent": [{"who": {"display": "his-vendor"}, "requestor": True}], "source": {"observer": {"display": "his"}}}


def _statement(client, H) -> dict[str, tuple[str, ...]]:
    r = client.get("/fhir/metadata", headers=H)
    assert r.status_code == 200, r.text
    return {e["type"]: tuple(i["code"] for i in e.get("interaction", ())) for e in r.json()["rest"][0]["resource"]}


def _write(client, H, verb: str, rtype: str, rid: str):
    body = json.dumps({"resourceType": rtype, "id": rid})
    if verb == "create":
        return client.post(f"/fhir/{rtype}", content=json.dumps({"resourceType": rtype}), headers=H)
    if verb == "update":
        return client.put(f"/fhir/{rtype}/{rid}", content=body, headers=H)
    if verb == "patch":
        return client.patch(f"/fhir/{rtype}/{rid}", content=b"[]",
                            headers={**H, "Content-Type": "application/json-patch+json"})
    return client.delete(f"/fhir/{rtype}/{rid}", headers=H)


def _unlisted_writes_are_405(client, H, ids: dict[str, str] | None = None) -> dict[str, tuple[str, ...]]:
    listed = _statement(client, H)
    refused = []
    for rtype, codes in listed.items():
        if rtype == "OperationDefinition":
            continue
        for verb in WRITES:
            if verb not in codes:
                r = _write(client, H, verb, rtype, (ids or {}).get(rtype, "cap-probe"))
                refused.append((rtype, verb, r.status_code, r.json()["issue"][0]["code"], r.headers.get("allow")))
    assert refused and all(s == 405 and code == "not-supported" for _t, _v, s, code, _a in refused), refused
    # and says what is allowed instead (RFC 9110 §15.5.6): the listed interactions' methods only
    method = {"create": "POST", "update": "PUT", "patch": "PATCH", "delete": "DELETE"}
    assert all(allow is not None and method[v] not in allow.split(", ") and "GET" in allow
               for _t, v, _s, _c, allow in refused), refused
    return listed


def test_the_ehr_audit_trail_is_listed_read_only_and_is(base_env, mongo_client, dev_key) -> None:
    from sen_shared.fhir.audit import Auditor, Record

    db = f"sen_cap{uuid.uuid4().hex[:8]}_ehr"
    with app_client("ehr", base_env, db, mongo_client) as (client, _app):
        H = admin_headers(dev_key)
        who = type("Who", (), {"roles": ("cashier",), "sub": "cap-probe", "practitioner": None, "facility": None})
        aid = Auditor(mongo_client[db], "ehr").record(who, Record("read", "Observation", "o1", status=403))["id"]
        listed = _unlisted_writes_are_405(client, H, {"AuditEvent": aid})
        assert listed["AuditEvent"] == ("read", "vread", "history-instance", "history-type", "search-type")
        assert {"update", "patch", "delete"} <= set(listed["Patient"])
        r = client.post("/fhir/AuditEvent", content=json.dumps(_AUDIT), headers=H)  # not listed: create
        assert r.status_code == 405 and "written by the server" in r.json()["issue"][0]["diagnostics"], r.text
        # the event stands as recorded, one version
        r = client.get(f"/fhir/AuditEvent/{aid}", headers=H)
        assert r.status_code == 200 and r.json()["meta"]["versionId"] == "1"
        # nor through a transaction
        tx = {"resourceType": "Bundle", "type": "transaction",
              "entry": [{"request": {"method": "DELETE", "url": f"AuditEvent/{aid}"}}]}
        assert client.post("/fhir", content=json.dumps(tx), headers=H).status_code == 422  # the entry names it
        assert client.get(f"/fhir/AuditEvent/{aid}", headers=H).status_code == 200


def test_teleconsult_lists_its_operation_only_types_read_only_and_no_patient_compartment(
        base_env, mongo_client, dev_key) -> None:
    with app_client("teleconsult", base_env, f"sen_cap{uuid.uuid4().hex[:8]}_tc", mongo_client) as (client, _app):
        H = admin_headers(dev_key)
        listed = _unlisted_writes_are_405(client, H)
        for rtype in ("ServiceRequest", "Task", "Communication", "Appointment"):
            assert listed[rtype] == ("read", "vread", "history-instance", "history-type", "search-type"), rtype
        assert listed["Slot"] == ("read", "search-type")
        assert "update" in listed["Schedule"]
        assert listed["AuditEvent"] == ("read", "vread", "history-instance", "history-type", "search-type")
        meta = client.get("/fhir/metadata", headers=H).json()["rest"][0]["resource"]
        slot = next(e for e in meta if e["type"] == "Slot")
        assert {p["name"] for p in slot["searchParam"]} == {"_id", "schedule", "start", "status"}
        # no GET Patient/[id]/[type] here: no type says it is served
        assert not [e["type"] for e in meta if "Patient/[id]" in e.get("documentation", "")]
        assert client.get("/fhir/Patient/p1/Appointment", headers=H).status_code == 404


def test_billing_lists_invoice_and_payment_reconciliation_writes_as_they_are(base_env, mongo_client,
                                                                           dev_key) -> None:
    with app_client("billing", base_env, f"sen_cap{uuid.uuid4().hex[:8]}_bi", mongo_client) as (client, _app):
        H = admin_headers(dev_key)
        listed = _unlisted_writes_are_405(client, H)
        assert listed["Invoice"] == ("read", "vread", "history-instance", "history-type", "create", "search-type")
        assert listed["PaymentReconciliation"] == ("read", "vread", "history-instance", "history-type",
                                                   "search-type")
        assert "update" in listed["ChargeItemDefinition"]
        # its audit trail is read here, never written over the API (not even created, as the EHR's may be)
        assert listed["AuditEvent"] == ("read", "vread", "history-instance", "history-type", "search-type")


def _operations(client, H) -> dict[str, dict[str, str]]:
    meta = client.get("/fhir/metadata", headers=H).json()["rest"][0]["resource"]
    return {e["type"]: {o["name"]: o["definition"] for o in e.get("operation", ())} for e in meta}


def _definitions_served(client, H, ops: dict[str, dict[str, str]], base: str) -> None:
    for rtype, named in ops.items():
        for name, url in named.items():
            if url.startswith("http://hl7.org/"):
                continue
            assert url.startswith(f"{base}/OperationDefinition/"), url
            r = client.get(url[len(base) - len("/fhir"):], headers=H)
            assert r.status_code == 200, (url, r.text)
            d = r.json()
            assert (d["resourceType"], d["code"], d["resource"]) == ("OperationDefinition", name, [rtype])
            assert d["url"] == url
            assert d["type"] or d["instance"]


def test_each_servers_own_operations_are_listed_with_a_definition_served(base_env, mongo_client, dev_key) -> None:
    base = "http://testserver/fhir"
    expected = {
        "teleconsult": {"ServiceRequest": {"submit"}, "Task": {"worklist", "accept", "start", "reject", "reassign",
                                                               "request-info", "provide-info", "message", "cancel",
                                                               "complete"},
                        "Appointment": {"find", "hold", "book", "cancel", "reschedule", "noshow", "fulfill"}},
        "billing": {"Invoice": {"issue", "cancel", "vietqr"}},
        "ehr": {"Patient": {"everything", "take-on", "end-take-on"}},
    }
    for service, wanted in expected.items():
        db = f"sen_cap{uuid.uuid4().hex[:8]}_{service[:2]}"
        with app_client(service, base_env, db, mongo_client) as (client, _app):
            H = admin_headers(dev_key)
            ops = _operations(client, H)
            for rtype, codes in wanted.items():
                assert codes <= set(ops[rtype]), (service, rtype, ops[rtype])
            assert not {n for t, named in ops.items() for n in named if t not in wanted} - {"validate"}, ops
            _definitions_served(client, H, ops, base)
            task_accept = client.get("/fhir/OperationDefinition/Task-accept", headers=H)
            assert task_accept.status_code == (200 if service == "teleconsult" else 404)
            if service == "teleconsult":
                d = task_accept.json()
                assert (d["instance"], d["type"], d["affectsState"]) == (True, False, True)
                assert "POST [base]/Task/[id]/$accept" in d["description"]
                worklist = client.get("/fhir/OperationDefinition/Task-worklist", headers=H).json()
                assert (worklist["type"], worklist["instance"], worklist["affectsState"]) == (True, False, False)


def test_the_statement_says_how_to_get_a_token_and_claims_no_smart_launch(base_env, mongo_client, dev_key) -> None:
    """It was coded SMART-on-FHIR, which sends a SMART client to .well-known/smart-configuration (not served);
    now OAuth, naming the token's issuer and audience, the roles claim and the scopes."""
    with app_client("ehr", base_env, f"sen_cap{uuid.uuid4().hex[:8]}_sec", mongo_client) as (client, _app):
        sec = client.get("/fhir/metadata").json()["rest"][0]["security"]
        assert [c["code"] for s in sec["service"] for c in s["coding"]] == ["OAuth"]
        issuer, audience = base_env.get("SEN_JWT_ISSUER", "sen-dev"), base_env.get("SEN_JWT_AUDIENCE", "sen")
        assert f"issued by {issuer} for the audience {audience}" in sec["description"]
        assert "'roles'" in sec["description"] and "smart-configuration is not served" in sec["description"]
