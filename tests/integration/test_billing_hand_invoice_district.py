"""A cashier's own invoice carries its facility's district (``SEN_FACILITY_DISTRICTS``), as a
consult's invoice carries its event's: its payments and its ``billing.invoice.paid`` then carry it,
and the dashboard's district filter counts walk-in invoices (it left every one of them out)."""

from __future__ import annotations

import json
import uuid

import pytest
from sen_billing.domain import payments, vietqr
from sen_billing.domain.webhooks import Transfer

from tests.billing_support import billing_app, hand_invoice
from tests.integration.test_billing_invoices import BANK, token

pytestmark = pytest.mark.integration

DISTRICTS = {"SEN_FACILITY_DISTRICTS": json.dumps({"org-a": "Huyện Cao Lãnh"}, ensure_ascii=False)}


def test_a_hand_invoices_payment_and_paid_event_carry_the_facilitys_district(base_env, mongo_client, monkeypatch,
                                                                              dev_key) -> None:
    with billing_app(base_env, mongo_client, monkeypatch, "d", {**BANK, **DISTRICTS}) as (client, db):
        cashier = token(dev_key, "cashier", "org-a")
        iid, _ = hand_invoice(client, cashier, f"Patient/p-{uuid.uuid4().hex[:6]}", ["sieu-am-bung"])
        r = client.post(f"/fhir/Invoice/{iid}/$issue", headers=cashier)
        assert r.status_code == 200 and r.json()["status"] == "issued"
        ext = {e["url"].rsplit("/", 1)[-1]: e for e in r.json()["extension"]}
        assert ext["district"]["valueString"] == "Huyện Cao Lãnh"
        transfer = Transfer(provider="standard", transaction_id=uuid.uuid4().hex[:12], amount=49000,
                            description=f"TT {vietqr.reference_code(iid)}")
        paid = payments.record_transfer(db, transfer, inbox_id=uuid.uuid4().hex).payment
        assert paid["invoice"] == iid and paid["district"] == "Huyện Cao Lãnh"
        [event] = [json.loads(e["event"]) for e in paid["outbox"]]
        assert event["data"]["district"] == "Huyện Cao Lãnh"
        receipt = db["receipts"].find_one({"_id": iid})
        [settled] = [json.loads(e["event"]) for e in receipt["outbox"]]
        assert settled["data"]["district"] == "Huyện Cao Lãnh"
        # another facility's invoice (no district listed): none, as before
        other = token(dev_key, "cashier", "org-b")
        iid2, _ = hand_invoice(client, other, f"Patient/p-{uuid.uuid4().hex[:6]}", ["sieu-am-bung"])
        r = client.post(f"/fhir/Invoice/{iid2}/$issue", headers=other)
        assert not any(e["url"].endswith("/district") for e in r.json()["extension"])
