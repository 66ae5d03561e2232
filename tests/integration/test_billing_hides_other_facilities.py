"""A cashier of another facility is answered as if the record did not exist (FHIR security.html#AccessDenied).

Billing against the real FerretDB (the app in this process). A cashier of org-b asks for org-a's Invoice,
ChargeItem, Account and PaymentReconciliation (read, vread, history), the Invoice operations (``$issue``,
``$cancel``, ``$vietqr`` as JSON, PNG and SVG), the payment pages (summary, desk, receipt as JSON, HTML and
PDF), cash and a refund on them, and assigning a transfer of a queue not theirs: each answer is byte for byte
the one a made-up id gets (404, same body with the id in its place, same headers), where a 403 told before
that the id exists at another facility. Billing's own AuditEvent trail records each refusal as the 403 it is;
nothing changes. A deleted charge of org-a is the 404 too (its 410 said it had existed, and its history gave
every version); org-a's cashier still gets the 410. A role that may not use the type (a doctor) is still 403,
a made-up id alike; an admin reads every facility's.
"""

from __future__ import annotations

import json
import uuid

import pytest
from sen_billing.domain import payments, receipts
from sen_billing.domain.webhooks import Transfer
from sen_shared.auth import issue_dev_token
from sen_shared.fhir.body import unpack

from tests.billing_support import BANK, billing_app, fhir_admin, hand_invoice, make_invoice, pay
from tests.hiding_support import answered_as_missing

pytestmark = pytest.mark.integration


def _cashier(dev_key, facility: str) -> dict[str, str]:  # noqa: ANN001 - the dev signing key
    sub = f"thu-ngan-{facility}-{uuid.uuid4().hex[:6]}"
    tok = issue_dev_token(dev_key, "cashier", sub=sub, facility=facility)
    return {"Authorization": f"Bearer {tok}", "Content-Type": "application/json", "Accept": "application/json",
            "X-Sub": sub}


def test_another_facilitys_billing_records_are_answered_as_ones_that_do_not_exist(
        base_env, mongo_client, monkeypatch, dev_key) -> None:
    with billing_app(base_env, mongo_client, monkeypatch, "hide", BANK) as (client, db):
        a, b, admin = _cashier(dev_key, "org-a"), _cashier(dev_key, "org-b"), fhir_admin(dev_key)
        sub_b = b.pop("X-Sub")
        a.pop("X-Sub")
        patient = f"Patient/p-{uuid.uuid4().hex[:6]}"
        draft, items = hand_invoice(client, a, patient, ["kham-benh", "xn-cong-thuc-mau"])
        account = client.get(f"/fhir/ChargeItem/{items[0]}", headers=a).json()["account"][0]["reference"]
        issued, _ = make_invoice(db, 90_000)
        paid, code = make_invoice(db, 50_000)
        payment = pay(db, code, 50_000)
        receipt = db[receipts.RECEIPTS].find_one({"_id": paid})
        assert receipt is not None, "the transfer settled the invoice"
        reconciliation = receipt["reconciliation"]
        # a transfer naming no invoice, to no facility's account: the admins' queue
        waiting = payments.record_transfer(db, Transfer(provider="standard", transaction_id=uuid.uuid4().hex[:12],
                                                        amount=7_000, description="chuyen tien"),
                                           inbox_id=uuid.uuid4().hex).payment["_id"]
        assert client.post("/payments/shifts", json={}, headers=b).status_code == 201  # b's cash desk is open
        before = {c: db[c].count_documents({}) for c in ("payments", "refunds", "Invoice_history")}

        reads = [(f"/fhir/{rtype}/{rid}{tail}", rid)
                 for rtype, rid in (("Invoice", draft), ("Invoice", issued), ("ChargeItem", items[0]),
                                    ("Account", account.split("/")[1]), ("PaymentReconciliation", reconciliation))
                 for tail in ("", "/_history", "/_history/1")]
        for path, rid in reads:
            assert client.get(path, headers=a).status_code == 200, path
            answer = answered_as_missing(client, "GET", path, rid, headers=b)
            assert answer.json()["resourceType"] == "OperationOutcome"
            assert client.get(path, headers=admin).status_code == 200, path  # an admin reads every facility's
        cancel = json.dumps({"resourceType": "Parameters", "parameter": [{"name": "reason", "valueString": "nhầm"}]})
        for method, path, rid, content in (
                ("POST", f"/fhir/Invoice/{draft}/$issue", draft, None),
                ("POST", f"/fhir/Invoice/{issued}/$cancel", issued, cancel),
                ("GET", f"/fhir/Invoice/{issued}/$vietqr", issued, None),
                ("GET", f"/fhir/Invoice/{issued}/$vietqr?_format=png", issued, None),
                ("GET", f"/fhir/Invoice/{issued}/$vietqr?_format=svg", issued, None),
                ("GET", f"/payments/invoices/{issued}", issued, None),
                ("GET", f"/payments/invoices/{issued}/desk", issued, None),
                ("GET", f"/payments/receipts/{paid}", paid, None),
                ("GET", f"/payments/receipts/{paid}/html", paid, None),
                ("GET", f"/payments/receipts/{paid}/pdf", paid, None),
                ("POST", "/payments/cash", issued, json.dumps({"invoice": issued, "amount": 1_000})),
                ("POST", f"/payments/{payment['_id']}/refund", payment["_id"],
                 json.dumps({"amount": 1_000, "reason": "thu nhầm", "method": "transfer", "afterSettlement": True})),
                ("POST", f"/payments/unmatched/{waiting}/assign", waiting, json.dumps({"invoice": issued}))):
            answered_as_missing(client, method, path, rid, headers=b, content=content)
        # nothing changed
        assert {c: db[c].count_documents({}) for c in before} == before
        assert client.get(f"/fhir/Invoice/{draft}", headers=a).json()["status"] == "draft"
        assert client.get(f"/fhir/Invoice/{issued}", headers=a).json()["status"] == "issued"

        # the trail: every refusal as the 403 it is, and why
        trail = [unpack(d)["res"] for d in db["AuditEvent"].find({})]
        refused = [e for e in trail if e["agent"][0].get("altId") == sub_b]
        assert len(refused) == len(reads) + 13, [e.get("outcomeDesc") for e in refused]
        assert all(e["outcome"] == "4" and e["outcomeDesc"].startswith("403: ") for e in refused)
        assert all("another facility" in e["outcomeDesc"] for e in refused), [e["outcomeDesc"] for e in refused]
        said = {(s["code"]) for e in refused for s in e["subtype"]}
        assert {"read", "vread", "history-instance", "$issue", "$cancel", "$vietqr", "payments", "desk", "receipt",
                "receipt-html", "receipt-pdf", "cash", "refund", "assign"} <= said
        assert {f"Invoice/{draft}", f"Invoice/{issued}", f"Invoice/{paid}"} <= {
            x["what"]["reference"] for e in refused for x in e.get("entity", [])}

        # a deleted charge of org-a: b gets the 404 of a made-up id (a 410 said it had existed), a its 410
        loose, extra = hand_invoice(client, a, f"Patient/p-{uuid.uuid4().hex[:6]}", ["kham-benh"])
        assert client.post(f"/fhir/Invoice/{loose}/$cancel", content=cancel, headers=a).status_code == 200
        assert client.delete(f"/fhir/ChargeItem/{extra[0]}", headers=admin).status_code == 204
        for tail in ("", "/_history", "/_history/1"):
            answered_as_missing(client, "GET", f"/fhir/ChargeItem/{extra[0]}{tail}", extra[0], headers=b)
        assert client.get(f"/fhir/ChargeItem/{extra[0]}", headers=a).status_code == 410
        assert len(client.get(f"/fhir/ChargeItem/{extra[0]}/_history", headers=a).json()["entry"]) == 2

        # a role that may not use the type at all: 403 whatever the id (it tells nothing about one)
        doctor = {"Authorization": f"Bearer {issue_dev_token(dev_key, 'doctor', facility='org-a')}"}
        for rid in (issued, "khong-co"):
            assert client.get(f"/fhir/Invoice/{rid}", headers=doctor).status_code == 403
            assert client.get(f"/fhir/Invoice/{rid}/$vietqr", headers=doctor).status_code == 403
            assert client.get(f"/payments/invoices/{rid}", headers=doctor).status_code == 403


def test_an_invoice_naming_another_facilitys_charge_is_answered_as_one_naming_a_charge_not_held(
        base_env, mongo_client, monkeypatch, dev_key) -> None:
    """Invoice create resolves its lines' ChargeItems from the body: another facility's charge was a 403
    ('belongs to another facility') where a made-up one is 422 ('does not exist'), so a cashier could probe
    charge ids. Now the same 422, the refusal in the trail as the 403 it is; an admin is told as before."""
    with billing_app(base_env, mongo_client, monkeypatch, "hideline", BANK) as (client, db):
        a, b = _cashier(dev_key, "org-a"), _cashier(dev_key, "org-b")
        sub_b = b.pop("X-Sub")
        a.pop("X-Sub")
        patient = f"Patient/p-{uuid.uuid4().hex[:6]}"
        r = client.post("/fhir/ChargeItem", headers=a, json={
            "resourceType": "ChargeItem", "status": "billable", "code": {"text": "kham-benh"},
            "subject": {"reference": patient}, "definitionCanonical": ["ChargeItemDefinition/kham-benh"]})
        assert r.status_code == 201, r.text
        charge = r.json()["id"]
        body = json.dumps({"resourceType": "Invoice", "status": "draft", "subject": {"reference": patient},
                           "lineItem": [{"chargeItemReference": {"reference": f"ChargeItem/{charge}"}}]})
        answer = answered_as_missing(client, "POST", "/fhir/Invoice", charge, headers=b, content=body, status=422)
        assert "does not exist" in answer.json()["issue"][0]["diagnostics"], answer.text
        assert db["Invoice"].count_documents({}) == 0
        trail = [unpack(d)["res"] for d in db["AuditEvent"].find({})]
        refused = [e for e in trail if e["agent"][0].get("altId") == sub_b]
        assert [e["outcomeDesc"] for e in refused] == [f"403: ChargeItem/{charge} belongs to another facility"]
        admin = fhir_admin(dev_key)
        r = client.post("/fhir/Invoice", headers=admin, content=body.replace(
            '"status": "draft"', '"status": "draft", "issuer": {"reference": "Organization/org-b"}'))
        assert r.status_code == 403 and "another facility" in r.text, r.text
        assert client.post("/fhir/Invoice", headers=a, content=body).status_code == 201
