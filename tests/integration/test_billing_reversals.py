"""Giving back a payment toward an invoice still owed, so a wrong invoice can be cancelled (billing
on the real FerretDB).

- A hand invoice (kham-benh, 114.000 ₫ without a card) with a 10.000 ₫ transfer on it: the cancel
  is refused; the cashier refunds the 10.000 (a reason); the invoice owes 114.000 again; the cancel
  then succeeds and the charge goes on a new invoice. A second refund of the same payment is 409.
- A balanced invoice's payments: only the credit is refundable; none left: 409 ``why: balanced``.
- A reversal and the payment that would settle the invoice race for the invoice's give-backs
  chain: deterministic interleavings (the reversal before the settler's claim: no settlement; the
  settler first: the reversal is refused) and 12 invoices × a reversal racing the final payment in
  threads: never a settled invoice whose counted money was given back, never a refund lost.
- A reversal racing a cancel (12 invoices in threads): the cancel succeeds only once the payment
  is given back; a cancelled invoice's payments are each refunded or have a refund task.
"""

from __future__ import annotations

import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import pytest
from sen_billing.domain import invoice_port, invoices, payments
from sen_shared.auth import issue_dev_token
from sen_shared.errors import Conflict

from tests.billing_support import (
    billing_app,
    hand_invoice,
    make_invoice,
    partly_paid,
    pay,
    race_last_payments,
    scratch_db,
)

pytestmark = pytest.mark.integration

CASHIER = SimpleNamespace(roles={"cashier"}, facility="org-a", sub="thu-ngan-1")
FHIR = "application/fhir+json"


@pytest.fixture()
def db(mongo_client):
    with scratch_db(mongo_client, "g") as database:
        yield database



def state(db, iid: str) -> str | None:
    return invoice_port.lifecycle_state(db, iid)


def headers(dev_key: Path, role: str = "cashier") -> dict[str, str]:
    tok = issue_dev_token(dev_key, role, sub=f"{role}-{uuid.uuid4().hex[:6]}", facility="org-a")
    return {"Authorization": f"Bearer {tok}", "Content-Type": FHIR, "Accept": FHIR}


def test_a_wrong_invoice_with_a_partial_transfer_is_given_back_then_cancelled_and_invoiced_again(
        base_env, mongo_client, monkeypatch, dev_key) -> None:
    with billing_app(base_env, mongo_client, monkeypatch, "g") as (client, db):
        h = headers(dev_key)
        patient = f"Patient/p-{uuid.uuid4().hex[:6]}"
        iid, charges = hand_invoice(client, h, patient, ["kham-benh"])
        assert client.post(f"/fhir/Invoice/{iid}/$issue", headers=h).status_code == 200
        owed = invoice_port.get(db, iid).owed
        transfer = pay(db, invoice_port.get(db, iid).reference, 10_000)
        reason = {"resourceType": "Parameters", "parameter": [{"name": "reason", "valueString": "Sai dịch vụ"}]}
        refused = client.post(f"/fhir/Invoice/{iid}/$cancel", headers=h, json=reason)
        assert refused.status_code == 409 and "refund" in refused.text
        j = {**h, "Content-Type": "application/json", "Accept": "application/json"}
        url = f"/payments/{transfer['_id']}/refund"
        desk = client.get(f"/payments/invoices/{iid}", headers=j).json()
        assert [p["refundable"] for p in desk["payments"]] == [10_000]
        no_reason = client.post(url, headers=j, json={"reason": " ", "method": "transfer"})
        assert no_reason.status_code == 422
        part = client.post(url, headers=j, json={"reason": "x", "amount": 4_000, "method": "transfer"})
        assert part.status_code == 422  # a payment toward an invoice still owed goes back whole
        done = client.post(url, headers=j, json={"reason": "Hóa đơn lập sai", "method": "transfer"})
        assert done.status_code == 201, done.text
        assert done.json()["amount"] == 10_000
        again = client.post(url, headers=j, json={"reason": "lần nữa", "method": "transfer"})
        assert again.status_code == 409
        desk = client.get(f"/payments/invoices/{iid}", headers=j).json()
        assert (desk["paid"], desk["balanceDue"], desk["refunded"]) == (0, owed, 10_000)
        assert [(p["refundable"], p["refunded"]) for p in desk["payments"]] == [(0, 10_000)]
        assert invoice_port.paid_total(db, iid) == 0
        cancelled = client.post(f"/fhir/Invoice/{iid}/$cancel", headers=h, json=reason)
        assert cancelled.status_code == 200, cancelled.text
        assert cancelled.json()["status"] == "cancelled"
        # no refund task for money already given back
        assert db["refund_tasks"].count_documents({"invoice": iid}) == 0
        r = client.post("/fhir/Invoice", headers=h, json={
            "resourceType": "Invoice", "status": "draft", "subject": {"reference": patient},
            "lineItem": [{"chargeItemReference": {"reference": f"ChargeItem/{c}"}} for c in charges]})
        assert r.status_code == 201 and r.json()["id"] != iid


def test_a_balanced_invoices_payments_give_back_only_the_credit(db) -> None:
    exact, code = make_invoice(db, 50_000)
    paid = pay(db, code, 50_000)
    assert state(db, exact) == "balanced"
    with pytest.raises(Conflict) as refused:
        payments.refund(db, paid["_id"], None, "khách đổi ý", CASHIER, None)
    assert refused.value.extra.get("why") == "balanced" and "credit" in refused.value.detail
    over, code = make_invoice(db, 50_000)
    first = pay(db, code, 30_000)
    pay(db, code, 30_000)  # 10.000 over
    with pytest.raises(payments.PaymentError):
        payments.refund(db, first["_id"], 30_000, "trả hết", CASHIER, None)
    assert payments.refund(db, first["_id"], None, "tiền thừa", CASHIER, None)["amount"] == 10_000
    assert state(db, over) == "balanced"


def test_a_reversal_before_the_settlers_claim_keeps_the_invoice_owed(db, monkeypatch) -> None:
    iid, code = make_invoice(db, 60_000)
    first = pay(db, code, 20_000)
    real = payments.settling_payments

    def reversal_first(db_, invoice_id, counted, owed):  # the settler read its payments; a refund now
        payments.refund(db, first["_id"], None, "chuyển nhầm", CASHIER, None)
        return real(db_, invoice_id, counted, owed)

    monkeypatch.setattr(payments, "settling_payments", reversal_first)
    pay(db, code, 40_000)  # 60.000 counted, 20.000 of it given back meanwhile
    assert state(db, iid) == "issued" and db["invoice_balanced"].count_documents({"_id": iid}) == 0
    assert invoice_port.balance_due(db, iid) == 20_000
    monkeypatch.setattr(payments, "settling_payments", real)
    pay(db, code, 20_000)  # the rest: settled on what is kept
    assert state(db, iid) == "balanced"
    assert db["invoice_balanced"].find_one({"_id": iid})["paid"] == 60_000


def test_a_reversal_after_the_settlers_claim_is_refused(db, monkeypatch) -> None:
    iid, code = make_invoice(db, 60_000)
    first = pay(db, code, 20_000)
    real = payments.settling_payments
    seen: list[BaseException] = []

    def reversal_after(db_, invoice_id, counted, owed):
        kept = real(db_, invoice_id, counted, owed)  # the settle link is claimed, the settlement not yet
        try:
            payments.refund(db, first["_id"], None, "chuyển nhầm", CASHIER, None)
        except Conflict as err:
            seen.append(err)
        return kept

    monkeypatch.setattr(payments, "settling_payments", reversal_after)
    pay(db, code, 40_000)
    assert len(seen) == 1 and seen[0].extra.get("why") == "settling"
    assert state(db, iid) == "balanced" and db["refunds"].count_documents({}) == 0


def test_reversals_racing_the_final_payment_in_threads_never_settle_on_money_given_back(db) -> None:
    owed = 60_000
    made = partly_paid(db, 12, owed, 20_000)
    answers: dict[str, str] = {}

    def reverse(iid: str, payment: dict, gate: threading.Barrier) -> None:
        gate.wait()
        try:
            payments.refund(db, payment["_id"], None, "chuyển nhầm", CASHIER, None)
            answers[iid] = "refunded"
        except Conflict:
            answers[iid] = "refused"

    race_last_payments(db, made, reverse, 40_000)
    for iid, _code, first in made:
        refunded = db["refunds"].find_one({"_id": first["_id"]})
        if answers[iid] == "refunded":
            assert refunded is not None and refunded["reverses"] is True
            assert state(db, iid) == "issued" and invoice_port.balance_due(db, iid) == 20_000
            assert db["invoice_balanced"].count_documents({"_id": iid}) == 0
        else:
            assert refunded is None and state(db, iid) == "balanced"
            assert db["invoice_balanced"].find_one({"_id": iid})["paid"] == owed


def test_reversals_racing_cancels_in_threads_lose_nothing(db) -> None:
    made = []
    for _ in range(12):
        iid, code = make_invoice(db, 60_000)
        made.append((iid, pay(db, code, 10_000)))
    cancels: dict[str, str] = {}

    def reverse(payment: dict, gate: threading.Barrier) -> None:
        gate.wait()
        payments.refund(db, payment["_id"], None, "hóa đơn sai", CASHIER, None)

    def cancel(iid: str, gate: threading.Barrier) -> None:
        gate.wait()
        try:
            invoices.cancel(db, iid, "lập sai")
            cancels[iid] = "cancelled"
        except invoices.InvoiceConflict:
            cancels[iid] = "refused"

    with ThreadPoolExecutor(8) as pool:
        futures = []
        for iid, first in made:
            gate = threading.Barrier(2)
            futures += [pool.submit(reverse, first, gate), pool.submit(cancel, iid, gate)]
        for f in futures:
            f.result()
    for iid, first in made:
        assert db["refunds"].count_documents({"_id": first["_id"]}) == 1  # the refund always went through
        if cancels[iid] == "refused":
            assert state(db, iid) == "issued"
            invoices.cancel(db, iid, "lập sai")  # once given back, the cancel goes through
        assert state(db, iid) == "cancelled"
        assert invoice_port.paid_total(db, iid) == 0
