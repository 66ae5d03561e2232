"""An invoice BHYT pays in full, issued by mistake, is cancelled with a reason (billing on the real
FerretDB). Such an invoice is settled when issued (nothing for the patient to pay), so ``$cancel``
refused it as a paid one (409 "a paid invoice is not cancelled"): its lifecycle chain was at
``balanced``. Now its ``cancelled`` link follows the ``balanced`` one, once nothing paid is kept:

- the cancel needs a reason (422); with one it is ``cancelled`` (chain draft, issued, balanced,
  cancelled), its charges go back (a new invoice takes them), cancelling again changes nothing, and
  four cancels at once make one ``cancelled`` link;
- its receipt (made when it was issued) keeps its number and says it no longer stands;
- nothing counts it afterwards: no row in the day's reconciliation (it has no payment; totals 0),
  the payment summary says cancelled with nothing owed or paid, and a transfer naming its reference
  is a late payment with a refund task (``invoice-cancelled``), never applied;
- an invoice the patient paid something on stays refused once balanced (409), as before.
"""

from __future__ import annotations

import csv
import io
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import pytest
from sen_billing.domain import invoice_port, invoices, payments
from sen_billing.domain.webhooks import Transfer

from tests.billing_support import billing_app, hand_invoice
from tests.integration.test_billing_invoices import BANK, record_card, token
from tests.support import vn_day_with_room

pytestmark = pytest.mark.integration

REASON = {"resourceType": "Parameters", "parameter": [{"name": "reason", "valueString": "Nhập nhầm thẻ BHYT"}]}


@pytest.fixture()
def billing(base_env: dict[str, str], mongo_client, monkeypatch: pytest.MonkeyPatch):
    with billing_app(base_env, mongo_client, monkeypatch, "cc", BANK) as (client, db):
        yield client, db


def _covered(client, cashier) -> tuple[str, list[str], str]:
    patient = f"Patient/p-{uuid.uuid4().hex[:6]}"
    record_card(client, cashier, patient, "DN4010123456789")  # 98.000 ₫ is under 15 % of the base: 100 %
    iid, charges = hand_invoice(client, cashier, patient, ["sieu-am-bung", "sieu-am-bung"])
    r = client.post(f"/fhir/Invoice/{iid}/$issue", headers=cashier)
    assert r.status_code == 200 and r.json()["status"] == "balanced", r.text
    return iid, charges, patient


def test_an_invoice_bhyt_pays_in_full_is_cancelled_with_a_reason_and_counted_nowhere(billing, dev_key) -> None:
    vn_day_with_room()  # what this test pays and reads is of one day in Vietnam (the daily report's)
    client, db = billing
    cashier = token(dev_key, "cashier", "org-a")
    json_headers = {**cashier, "Accept": "application/json", "Content-Type": "application/json"}
    iid, charges, patient = _covered(client, cashier)
    no_reason = client.post(f"/fhir/Invoice/{iid}/$cancel", headers=cashier,
                            json={"resourceType": "Parameters", "parameter": []})
    assert no_reason.status_code == 422 and no_reason.json()["resourceType"] == "OperationOutcome"

    r = client.post(f"/fhir/Invoice/{iid}/$cancel", headers=cashier, json=REASON)
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "cancelled"
    assert [link["state"] for link in sorted(db[invoices.STATES].find({"k": iid}), key=lambda x: x["n"])] == \
        ["draft", "issued", "balanced", "cancelled"]
    again = client.post(f"/fhir/Invoice/{iid}/$cancel", headers=cashier, json=REASON)
    assert again.status_code == 200 and again.json()["status"] == "cancelled"
    assert client.get(f"/fhir/Invoice/{iid}", headers=cashier).json()["status"] == "cancelled"
    summary = client.get(f"/payments/invoices/{iid}", headers=json_headers).json()
    assert summary["status"] == "cancelled" and summary["owed"] == 0 and summary["paid"] == 0
    # the receipt it got when issued keeps its number, and says it no longer stands
    receipt = client.get(f"/payments/receipts/{iid}", headers=json_headers)
    assert receipt.status_code == 200 and receipt.json()["cancelled"] is True
    printed = client.get(f"/payments/receipts/{iid}/html", headers=json_headers).text
    assert "BIÊN LAI THU TIỀN (HÓA ĐƠN ĐÃ HỦY)" in printed
    # its services are given back: a new invoice takes them
    free = client.get("/fhir/ChargeItem", params={"subject": patient, "invoiced": "false"}, headers=cashier).json()
    assert sorted(e["resource"]["id"] for e in free.get("entry", [])) == sorted(charges)
    new = client.post("/fhir/Invoice", headers=cashier, json={
        "resourceType": "Invoice", "status": "draft", "subject": {"reference": patient},
        "lineItem": [{"chargeItemReference": {"reference": f"ChargeItem/{c}"}} for c in charges]})
    assert new.status_code == 201, new.text

    # a transfer naming its reference counts toward nothing: a refund task
    code = invoice_port.get(db, iid).reference
    late = payments.record_transfer(db, Transfer(provider="standard", transaction_id=uuid.uuid4().hex[:12],
                                                 amount=98_000, description=f"TT {code}"), inbox_id="x").payment
    assert late["outcome"] == "late-cancelled" and not late.get("invoice")
    assert db["refund_tasks"].find_one({"_id": late["_id"]})["reason"] == "invoice-cancelled"
    # the day's reconciliation: only that transfer, no row of the cancelled invoice's own
    day = client.get("/payments/reports/daily.csv", headers=json_headers)
    rows = list(csv.DictReader(io.StringIO(day.text)))
    mine = [r for r in rows if r["kind"] != "total" and r["invoice"] == iid]
    assert [(r["id"], r["outcome"]) for r in mine] == [(late["_id"], "late-cancelled")]


def test_four_cancels_of_a_covered_invoice_at_once_make_one_cancelled_link(billing, dev_key) -> None:
    client, db = billing
    cashier = token(dev_key, "cashier", "org-a")
    iid, _, _ = _covered(client, cashier)
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda _: invoices.cancel(db, iid, "Nhập nhầm"), range(4)))
    assert {a["status"] for a in answers} == {"cancelled"}
    assert [link["state"] for link in db[invoices.STATES].find({"k": iid})].count("cancelled") == 1


def test_a_paid_invoice_is_still_not_cancelled(billing, dev_key) -> None:
    client, db = billing
    cashier = token(dev_key, "cashier", "org-a")
    patient = f"Patient/p-{uuid.uuid4().hex[:6]}"
    iid, _ = hand_invoice(client, cashier, patient, ["kham-benh"])
    assert client.post(f"/fhir/Invoice/{iid}/$issue", headers=cashier).status_code == 200
    view = invoice_port.get(db, iid)
    payments.record_transfer(db, Transfer(provider="standard", transaction_id=uuid.uuid4().hex[:12],
                                          amount=view.owed, description=f"TT {view.reference}"), inbox_id="y")
    r = client.post(f"/fhir/Invoice/{iid}/$cancel", headers=cashier, json=REASON)
    assert r.status_code == 409 and "paid invoice is not cancelled" in r.text


def test_a_cancel_between_the_settlements_claim_and_its_link_voids_the_settlement(
        billing, dev_key, monkeypatch: pytest.MonkeyPatch) -> None:
    """The settlement of a covered invoice claimed (``invoice_balanced``) but its ``balanced`` link not
    in yet: the cancel takes the link (``/3`` cancelled), and the settlement, finished by the repair
    job, is void: no receipt, no number taken, the record says voided."""
    from sen_billing.domain import receipts

    client, db = billing
    cashier = token(dev_key, "cashier", "org-a")
    patient = f"Patient/p-{uuid.uuid4().hex[:6]}"
    record_card(client, cashier, patient, "DN4010123456789")
    iid, _ = hand_invoice(client, cashier, patient, ["sieu-am-bung"])
    monkeypatch.setattr(invoices, "_settle_covered", lambda db, iid, res: res)  # the settler stops at once
    assert invoices.issue(db, iid)["status"] == "issued"
    view = invoice_port.get(db, iid)
    db["invoice_balanced"].insert_one({"_id": iid, "facility": view.facility, "paid": 0, "owed": 0, "channel": "bhyt",
                                       "payments": [], "done": False, "at": datetime.now(UTC)})
    assert invoices.cancel(db, iid, "Nhập nhầm")["status"] == "cancelled"
    assert [link["state"] for link in sorted(db[invoices.STATES].find({"k": iid}), key=lambda x: x["n"])] == \
        ["draft", "issued", "cancelled"]
    assert receipts.complete_settlement(db, iid) is None
    assert db["receipts"].count_documents({"_id": iid}) == 0 and db["receipt_numbers"].count_documents(
        {"invoice": iid}) == 0
    assert db["invoice_balanced"].find_one({"_id": iid})["voided"] == "cancelled"
    assert client.get(f"/fhir/Invoice/{iid}", headers=cashier).json()["status"] == "cancelled"
