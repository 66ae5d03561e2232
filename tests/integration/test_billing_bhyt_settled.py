"""An invoice BHYT pays in full (the patient owes 0 ₫) is settled when it is issued: balanced, its
receipt (0 to pay, BHYT's share) and one ``billing.invoice.paid`` (channel ``bhyt``, amount 0),
by the payments' own settlement, exactly once however many issues race; the consult's invoice too.
Before, such an invoice stayed "Chờ thanh toán" for ever: nothing to pay, so no payment to settle it."""

from __future__ import annotations

import json
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
from sen_billing.domain import invoices
from sen_billing.worker import consult_charge
from sen_shared.bus.catalog import load_catalog

from tests.billing_support import billing_app, delivered, hand_invoice
from tests.integration.test_billing_invoices import BANK, completed, record_card, requested, token

pytestmark = pytest.mark.integration


@pytest.fixture()
def billing(base_env: dict[str, str], mongo_client, monkeypatch: pytest.MonkeyPatch):
    with billing_app(base_env, mongo_client, monkeypatch, "z", BANK) as (client, db):
        yield client, db


def _settled_once(client, db, iid: str, headers: dict[str, str]) -> dict:
    assert db["invoice_balanced"].count_documents({"_id": iid}) == 1
    assert db["receipts"].count_documents({"invoice": iid}) == 1
    assert db["receipt_numbers"].count_documents({"invoice": iid}) == 1
    assert [link["state"] for link in sorted(db[invoices.STATES].find({"k": iid}), key=lambda x: x["n"])] == \
        ["draft", "issued", "balanced"]
    receipt = db["receipts"].find_one({"_id": iid})
    assert receipt["owed"] == 0 and receipt["paid"] == 0 and receipt["payments"] == [] and receipt["channel"] == "bhyt"
    [paid_event] = [json.loads(e["event"]) for e in receipt["outbox"]]
    load_catalog().validate(paid_event)
    assert paid_event["data"]["amount"] == 0 and paid_event["data"]["channel"] == "bhyt"
    assert paid_event["data"]["invoice"] == f"Invoice/{iid}"
    r = client.get(f"/fhir/Invoice/{iid}", headers=headers)
    assert r.status_code == 200 and r.json()["status"] == "balanced"
    shown = client.get(f"/payments/receipts/{iid}", headers=headers)
    assert shown.status_code == 200, shown.text
    return shown.json()


def test_a_hand_invoice_bhyt_pays_in_full_is_settled_once_when_issued_twice_at_once(billing, dev_key) -> None:
    client, db = billing
    cashier = token(dev_key, "cashier", "org-a")
    patient = f"Patient/p-{uuid.uuid4().hex[:6]}"
    record_card(client, cashier, patient, "DN4010123456789")  # 80 %, but 98.000 ₫ is under 15 % of the base
    iid, _ = hand_invoice(client, cashier, patient, ["sieu-am-bung", "sieu-am-bung"])
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda _: invoices.issue(db, iid), range(4)))
    assert {a["status"] for a in answers} <= {"issued", "balanced"}
    again = client.post(f"/fhir/Invoice/{iid}/$issue", headers=cashier)
    assert again.status_code == 200 and again.json()["status"] == "balanced"
    body = _settled_once(client, db, iid, cashier)
    assert body["owed"] == 0 and body["paid"] == 0
    assert body["insurerShare"] == 98_000 and body["gross"] == 98_000
    # nothing to pay: no QR, no payment summary owing anything
    assert client.get(f"/fhir/Invoice/{iid}/$vietqr", headers=cashier).status_code == 409
    summary = client.get(f"/payments/invoices/{iid}", headers=cashier).json()
    assert summary["balanceDue"] == 0 and summary["status"] == "balanced"


def test_a_consult_bhyt_pays_in_full_is_settled_by_its_completed_event(billing, dev_key) -> None:
    client, db = billing
    cashier = token(dev_key, "cashier", "org-a")
    patient = f"Patient/p-{uuid.uuid4().hex[:6]}"
    record_card(client, cashier, patient, "DN4010123456789")
    sr = f"sr-{uuid.uuid4().hex[:8]}"
    consult_charge(requested(sr, "394579002"), db)  # 250.000 ₫ at a district clinic: under the threshold
    with ThreadPoolExecutor(3) as pool:
        list(pool.map(lambda _: delivered(completed(sr, patient), db), range(3)))  # each acked in the end
    iid = invoices.derived_id("consult", "invoice", f"ServiceRequest/{sr}")
    body = _settled_once(client, db, iid, cashier)
    assert body["insurerShare"] == 250_000 and body["owed"] == 0


def test_an_invoice_the_patient_owes_something_on_stays_issued(billing, dev_key) -> None:
    client, db = billing
    cashier = token(dev_key, "cashier", "org-a")
    iid, _ = hand_invoice(client, cashier, f"Patient/p-{uuid.uuid4().hex[:6]}", ["sieu-am-bung"])
    assert client.post(f"/fhir/Invoice/{iid}/$issue", headers=cashier).json()["status"] == "issued"
    assert db["invoice_balanced"].count_documents({"_id": iid}) == 0
