"""Billing's audit trail is served over FHIR as the EHR's and teleconsult's are: ``GET /fhir/AuditEvent``.

Billing (the app in this process, on FerretDB) records the refusals it answers as missing ids in its own
``AuditEvent`` collection (session 25); it did not serve them (404: not a type of billing). Now the shared
engine serves them read-only, by the EHR's rule for its trail (``sen_shared.fhir.access``): an admin and
the health department search them by date, outcome, agent (``altid``), entity and subtype, and read each
one; a cashier is 403, as in the EHR; no one creates, updates, patches or deletes one (405). The
CapabilityStatement lists AuditEvent with exactly those interactions.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sen_shared.auth import issue_dev_token

from tests.billing_support import BANK, billing_app, fhir_admin, make_invoice

pytestmark = pytest.mark.integration

FJ = "application/fhir+json"


def _headers(dev_key, role: str, **claims: str) -> dict[str, str]:  # noqa: ANN001 - the dev signing key
    return {"Authorization": f"Bearer {issue_dev_token(dev_key, role, **claims)}", "Accept": FJ,
            "Content-Type": FJ}


def test_billing_serves_its_audit_trail_to_its_readers_only(base_env, mongo_client, monkeypatch, dev_key) -> None:
    with billing_app(base_env, mongo_client, monkeypatch, "trail", BANK) as (client, _db):
        admin, dept = fhir_admin(dev_key), _headers(dev_key, "health-dept")
        sub_b = f"thu-ngan-b-{uuid.uuid4().hex[:6]}"
        b = _headers(dev_key, "cashier", sub=sub_b, facility="org-b")
        a = _headers(dev_key, "cashier", facility="org-a")
        issued, _ = make_invoice(_db, 90_000)
        assert client.get(f"/fhir/Invoice/{issued}", headers=b).status_code == 404  # another facility's
        assert client.get(f"/fhir/Invoice/{issued}/$vietqr", headers=b).status_code == 404

        today = datetime.now(UTC).date()
        found = client.get(f"/fhir/AuditEvent?altid={sub_b}&outcome=4&date=ge{today.isoformat()}&_sort=date",
                           headers=admin)
        assert found.status_code == 200, found.text
        events = [e["resource"] for e in found.json()["entry"]]
        assert [e["outcomeDesc"] for e in events] == ["403: this Invoice belongs to another facility"] * 2
        assert [next(s["code"] for s in reversed(e["subtype"])) for e in events] == ["read", "$vietqr"]
        assert {x["what"]["reference"] for e in events for x in e["entity"]} == {f"Invoice/{issued}"}
        # the search narrows as asked: another outcome, another day, an entity, a subtype
        assert not client.get(f"/fhir/AuditEvent?altid={sub_b}&outcome=0", headers=admin).json()["entry"]
        yesterday = (today - timedelta(days=1)).isoformat()
        assert not client.get(f"/fhir/AuditEvent?altid={sub_b}&date=le{yesterday}", headers=admin).json()["entry"]
        by_entity = client.get(f"/fhir/AuditEvent?entity=Invoice/{issued}&subtype=$vietqr", headers=dept)
        assert by_entity.status_code == 200, by_entity.text
        assert [e["resource"]["id"] for e in by_entity.json()["entry"]] == [events[1]["id"]]
        one = client.get(f"/fhir/AuditEvent/{events[0]['id']}", headers=dept)
        assert one.status_code == 200 and one.json() == events[0]

        # a cashier (either facility) may not read the trail, as in the EHR; a doctor neither
        for who in (a, b, _headers(dev_key, "doctor", facility="org-a")):
            for path in ("/fhir/AuditEvent", f"/fhir/AuditEvent/{events[0]['id']}",
                         f"/fhir/AuditEvent/{events[0]['id']}/_history", "/fhir/AuditEvent/_history"):
                r = client.get(path, headers=who)
                assert r.status_code == 403, (path, r.status_code, r.text)
                assert r.json()["resourceType"] == "OperationOutcome"
                said = r.json()["issue"][0]["diagnostics"]
                assert "audit trail" in said or path.endswith("/AuditEvent/_history") and "history" in said, said

        # read-only: the server writes it
        event = {"resourceType": "AuditEvent", "recorded": "2026-12-01T10:00:00Z", "action": "E",
                 "type": {"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "110100"},
                 "agent": [{"requestor": True, "who": {"display": "x"}}], "source": {"observer": {"display": "x"}}}
        rid = events[0]["id"]
        for method, path, body in (("POST", "/fhir/AuditEvent", event),
                                   ("PUT", f"/fhir/AuditEvent/{rid}", {**event, "id": rid}),
                                   ("PATCH", f"/fhir/AuditEvent/{rid}", []),
                                   ("DELETE", f"/fhir/AuditEvent/{rid}", None)):
            h = {**admin, "Content-Type": "application/json-patch+json"} if method == "PATCH" else admin
            r = client.request(method, path, headers=h, content=None if body is None else json.dumps(body))
            assert r.status_code == 405, (method, r.status_code, r.text)
            assert r.json()["resourceType"] == "OperationOutcome"
            assert set(r.headers["Allow"].replace(" ", "").split(",")) <= {"GET", "HEAD"}, r.headers["Allow"]
        assert client.get(f"/fhir/AuditEvent/{rid}", headers=admin).json() == events[0]  # unchanged

        # the statement says so
        statement = client.get("/fhir/metadata").json()
        [audit] = [r for r in statement["rest"][0]["resource"] if r["type"] == "AuditEvent"]
        assert {i["code"] for i in audit["interaction"]} == {"read", "vread", "history-instance", "history-type",
                                                            "search-type"}
        assert {"date", "outcome", "altid", "agent", "entity", "subtype"} <= {p["name"] for p in audit["searchParam"]}
