"""The cashier's reads of an invoice (domain/status.py) on the real FerretDB: the status box's
summary in as few reads as the records allow, and the invoice page's one answer (``/desk``).

- the summary equals the full read of every record (the late payments, the lifecycle chain,
  refunds and refund tasks, as it was read before), in every state an invoice goes through:
  unpaid, partly paid, overpaid and refunded, settled with a late payment after, cancelled with a
  late payment, a cancel's mark without its link, the chain ahead of the resource;
- an issued invoice nobody has paid is two database reads (the Invoice and its payments);
- ``/payments/invoices/{id}/desk``: summary, Invoice and the same VietQR ``$vietqr`` serves; no
  QR once nothing is due; ``qrProblem`` without a bank account; another facility's cashier 404 (as a missing one) and
  an unknown invoice 404, both problem details; ``$vietqr`` reads the Invoice once.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest
from pymongo import MongoClient, monitoring
from sen_billing.domain import invoice_port, invoices, payments, status, vietqr
from sen_billing.domain.webhooks import Transfer
from sen_shared.auth import issue_dev_token
from sen_shared.claims import advance
from sen_shared.fhir.store import Store

from tests.billing_support import make_invoice, scratch_db
from tests.support import app_client

pytestmark = pytest.mark.integration

BANK = {"SEN_BANK_BIN": "970436", "SEN_BANK_ACCOUNT": "0011001234567", "SEN_BANK_ACCOUNT_NAME": "BENH VIEN DEMO"}
CASHIER = SimpleNamespace(roles={"cashier"}, facility="org-a", sub="thu-ngan-1")


@pytest.fixture()
def db(mongo_client):
    with scratch_db(mongo_client, "s") as database:
        yield database



def pay(db, code: str, amount: int) -> payments.Recorded:
    transfer = Transfer(provider="standard", transaction_id=uuid.uuid4().hex[:12], amount=amount,
                        description=f"TT {code}")
    return payments.record_transfer(db, transfer, inbox_id=uuid.uuid4().hex)


def full_read(db, iid: str) -> dict:
    """Every record read, as the summary was computed before the fast path (the oracle); the
    payments given back while the invoice was owed (its give-backs chain) count toward nothing."""
    invoice = invoice_port.get(db, iid)
    counted = invoice_port.counted_payments(db, iid)
    kept = {p["_id"] for p in invoice_port.kept_payments(db, iid)}
    late = list(db["payments"].find({"late_invoice": iid}, {"outbox": 0}))
    paid = sum(int(p["amount"]) for p in counted if p["_id"] in kept)
    ids = [p["_id"] for p in counted + late]
    refunds: dict[str, int] = {}  # every refund of each payment (several links a payment: refund_links)
    for r in _all_refunds(db, ids):
        refunds[r.get("payment") or r["_id"]] = refunds.get(r.get("payment") or r["_id"], 0) + int(r["amount"])
    refunded_credit = sum(a for i, a in refunds.items() if i in kept)
    state = invoice_port.lifecycle_state(db, iid) or invoice.status
    owed = 0 if state == "cancelled" else invoice.owed
    credit = max(0, paid - owed - refunded_credit)

    def shown(p: dict) -> dict:
        out = payments.public_payment(p)
        amount = int(p["amount"])
        left = amount - refunds.get(p["_id"], 0)
        out["refundable"] = (left if p.get("late_invoice") else 0 if p["_id"] not in kept
                             else (0 if p["_id"] in refunds else amount) if state == "issued" and paid < owed
                             else min(left, credit))
        if state == "balanced" and credit <= 0 and p["_id"] in kept and left > 0:
            out["refundableAfterSettlement"] = left  # refunds after settlement may give the rest back
        if p["_id"] in refunds:
            out["refunded"] = refunds[p["_id"]]
        return out

    return {"invoice": iid, "status": state, "owed": invoice.owed, "paid": paid,
            "balanceDue": 0 if state == "cancelled" else max(0, owed - paid),
            "credit": credit, "refunded": sum(refunds.values()),
            "facility": invoice.facility, "reference": invoice.reference,
            "payments": [shown(p) for p in sorted(counted + late, key=lambda p: p["received_at"])],
            "refundTasks": [payments.public_task(t) for t in db["refund_tasks"].find({"invoice": iid})],
            "refunds": _refunds_given(db, ids)}


def _all_refunds(db, ids: list[str]) -> list[dict]:
    """Every refund record of the payments ``ids``: each link names its payment (link 1 from before:
    its ``_id``)."""
    if not ids:
        return []
    return [r for r in db["refunds"].find({}) if (r.get("payment") or r["_id"]) in ids]


def _refunds_given(db, ids: list[str]) -> list[dict]:
    """The refunds of the invoice's payments, oldest first, each with the cashier's name their shift
    was opened under (a refund with no shift: the cashier's newest shift link's)."""
    from sen_billing.domain import shifts
    from sen_billing.domain.invoices import iso_vn

    out = []
    for r in sorted(_all_refunds(db, ids), key=lambda r: (r["at"], r["_id"])):
        link = db["shifts"].find_one({"shift": r["shift"], "state": "open"}) if r.get("shift") else None
        name = (link or {}).get("cashier_name") or (
            "" if r.get("shift") else shifts.cashier_names(db, {r["cashier"]}).get(r["cashier"], ""))
        out.append({"payment": r.get("payment") or r["_id"], "id": r["_id"], "n": int(r.get("n") or 1),
                    "amount": int(r["amount"]), "at": iso_vn(r["at"]),
                    "channel": r.get("channel"), "reason": r.get("reason", ""), "cashier": r.get("cashier"),
                    "cashierName": name})
    return out


def summary(db, iid: str) -> dict:
    return status.summary(db, status.read_invoice(db, iid, CASHIER))


def same(db, iid: str) -> dict:
    got = summary(db, iid)
    want = full_read(db, iid)
    assert {**got, "refundTasks": sorted(got["refundTasks"], key=str)} == \
        {**want, "refundTasks": sorted(want["refundTasks"], key=str)}
    return got


def test_the_summary_equals_the_full_read_in_every_state(db) -> None:
    unpaid, _ = make_invoice(db, 120_000)
    assert same(db, unpaid)["balanceDue"] == 120_000

    partial, code = make_invoice(db, 100_000)
    pay(db, code, 40_000)
    assert (same(db, partial)["paid"], same(db, partial)["balanceDue"]) == (40_000, 60_000)

    given_back, code = make_invoice(db, 100_000)
    wrong = pay(db, code, 30_000)
    pay(db, code, 20_000)
    assert [p["refundable"] for p in same(db, given_back)["payments"]] == [30_000, 20_000]
    payments.refund(db, wrong.payment["_id"], None, "chuyển nhầm hóa đơn", CASHIER, None)  # owed again
    got = same(db, given_back)
    assert (got["paid"], got["balanceDue"], got["refunded"]) == (20_000, 80_000, 30_000)
    assert [(p["refundable"], p.get("refunded")) for p in got["payments"]] == [(0, 30_000), (20_000, None)]

    over, code = make_invoice(db, 50_000)
    first = pay(db, code, 30_000)
    pay(db, code, 40_000)  # settles with 20,000 credit
    assert (same(db, over)["status"], same(db, over)["credit"]) == ("balanced", 20_000)
    assert [p["refundable"] for p in same(db, over)["payments"]] == [20_000, 20_000]  # the credit only
    payments.refund(db, first.payment["_id"], 20_000, "trả lại tiền thừa", CASHIER, None)
    assert (same(db, over)["credit"], same(db, over)["refunded"]) == (0, 20_000)
    late = pay(db, code, 10_000)  # after the settlement: counts toward nothing, a refund task
    got = same(db, over)
    assert late.payment.get("late_invoice") == over and len(got["refundTasks"]) == 1

    cancelled, code = make_invoice(db, 80_000)
    invoices.cancel(db, cancelled, "nhập nhầm")
    pay(db, code, 80_000)
    got = same(db, cancelled)
    assert (got["status"], got["balanceDue"], len(got["payments"]), len(got["refundTasks"])) == ("cancelled", 0, 1, 1)


def test_a_mark_or_a_link_ahead_of_the_resource_takes_the_full_read(db) -> None:
    marked, _ = make_invoice(db, 60_000)
    invoice_port.mark_cancel(db, marked)  # a cancel under way (its link not claimed yet)
    assert same(db, marked)["status"] == "issued"
    ahead, _ = make_invoice(db, 60_000)
    invoice_port.mark_cancel(db, ahead)
    advance(db[invoice_port.STATES], ahead, invoice_port.lifecycle(db, ahead), {"state": "cancelled", "reason": "x"})
    # the resource still says issued (its roll-forward not written yet): the chain leads
    assert Store(db, service="billing").read_doc("Invoice", ahead)["res"]["status"] == "issued"
    got = same(db, ahead)
    assert (got["status"], got["balanceDue"]) == ("cancelled", 0)
    draft, _ = make_invoice(db, 60_000, status="draft")
    assert same(db, draft)["status"] == "draft"


class _Finds(monitoring.CommandListener):
    def __init__(self) -> None:
        self.reads: list[str] = []

    def started(self, event) -> None:
        if event.command_name in ("find", "aggregate", "count", "getMore"):
            self.reads.append(f"{event.command_name} {event.command.get(event.command_name)}")

    def succeeded(self, event) -> None:
        pass

    def failed(self, event) -> None:
        pass


def test_an_unpaid_issued_invoice_is_two_reads(db, mongo_url: str) -> None:
    iid, code = make_invoice(db, 70_000)
    listener = _Finds()
    client = MongoClient(mongo_url, tz_aware=True, event_listeners=[listener])
    try:
        watched = client[db.name]
        summary(watched, iid)
        assert listener.reads == ["find Invoice", "find payments"]
        pay(db, code, 10_000)  # a payment: the full read (late payments, chain, refunds, tasks)
        listener.reads.clear()
        assert summary(watched, iid)["paid"] == 10_000
        assert len(listener.reads) == 6
    finally:
        client.close()


# ----------------------------------------------------------------------------- over HTTP

def _headers(dev_key, facility: str = "org-a") -> dict[str, str]:
    token = issue_dev_token(dev_key, "cashier", sub=f"cashier-{uuid.uuid4().hex[:6]}", facility=facility)
    return {"Authorization": f"Bearer {token}", "Accept": "application/json"}


def test_the_desk_answers_summary_invoice_and_the_same_qr(base_env, mongo_client, dev_key) -> None:
    name = f"sen_billing_s{uuid.uuid4().hex[:8]}"
    with app_client("billing", {**base_env, **BANK}, name, mongo_client) as (client, _app):
        db = mongo_client[name]
        iid, _code = make_invoice(db, 90_000)
        h = _headers(dev_key)
        r = client.get(f"/payments/invoices/{iid}/desk", headers=h)
        assert r.status_code == 200, r.text
        desk = r.json()
        assert (desk["status"], desk["balanceDue"], desk["resource"]["id"]) == ("issued", 90_000, iid)
        assert desk["resource"]["resourceType"] == "Invoice" and "qrProblem" not in desk
        qr = client.get(f"/fhir/Invoice/{iid}/$vietqr", headers={**h, "Accept": "application/fhir+json"}).json()
        assert desk["qr"] == qr and vietqr.parse(qr["payload"]).amount == 90_000
        assert client.get(f"/payments/invoices/{iid}", headers=h).json() == \
            {k: v for k, v in desk.items() if k not in ("resource", "qr")}
        other = client.get(f"/payments/invoices/{iid}/desk", headers=_headers(dev_key, "org-b"))
        assert other.status_code == 404 and other.headers["content-type"].startswith("application/problem+json")
        assert client.get(f"/fhir/Invoice/{iid}/$vietqr", headers=_headers(dev_key, "org-b")).status_code == 404
        missing = client.get("/payments/invoices/no-such-invoice/desk", headers=h)
        assert missing.status_code == 404 and missing.headers["content-type"].startswith("application/problem+json")
        assert other.text.replace(iid, "no-such-invoice") == missing.text  # another's: as a missing one
        db["payments"].insert_one({"_id": f"test:{iid}", "invoice": iid, "amount": 90_000, "channel": "cash",
                                   "provider": "cashier", "received_at": datetime.now(UTC)})
        paid = client.get(f"/payments/invoices/{iid}/desk", headers=h).json()
        assert (paid["balanceDue"], paid["qr"]) == (0, None)  # nothing due: no QR to scan


def test_several_summaries_in_one_request_as_each_answers_alone(base_env, mongo_client, dev_key) -> None:
    """The queue's rows: ``/payments/invoices?id=…`` gives each invoice's summary as
    ``/payments/invoices/{id}`` does, in the order asked; another facility's and unknown ones are
    left out; more than 100 ids, or none, is 400."""
    name = f"sen_billing_s{uuid.uuid4().hex[:8]}"
    with app_client("billing", base_env, name, mongo_client) as (client, _app):
        db = mongo_client[name]
        a, _ = make_invoice(db, 90_000)
        b, _ = make_invoice(db, 39_000)
        other, _ = make_invoice(db, 10_000, facility="org-b")
        db["payments"].insert_one({"_id": f"test:{a}", "invoice": a, "amount": 20_000, "channel": "cash",
                                   "provider": "cashier", "received_at": datetime.now(UTC)})
        h = _headers(dev_key)
        r = client.get("/payments/invoices", params=[("id", b), ("id", other), ("id", "no-such"), ("id", a),
                                                     ("id", b)], headers=h)
        assert r.status_code == 200, r.text
        got = r.json()["summaries"]
        assert [s["invoice"] for s in got] == [b, a]
        assert got == [client.get(f"/payments/invoices/{i}", headers=h).json() for i in (b, a)]
        assert (got[1]["paid"], got[1]["balanceDue"]) == (20_000, 70_000)
        too_many = client.get("/payments/invoices", params=[("id", f"i{n}") for n in range(101)], headers=h)
        assert too_many.status_code == 400
        assert client.get("/payments/invoices", headers=h).status_code == 400


def test_the_desk_says_why_there_is_no_qr_without_a_bank_account(base_env, mongo_client, dev_key) -> None:
    name = f"sen_billing_s{uuid.uuid4().hex[:8]}"
    with app_client("billing", base_env, name, mongo_client) as (client, _app):
        db = mongo_client[name]
        iid, _code = make_invoice(db, 90_000)
        desk = client.get(f"/payments/invoices/{iid}/desk", headers=_headers(dev_key)).json()
        assert desk["qr"] is None and "SEN_BANK_ACCOUNT" in desk["qrProblem"]
        assert desk["status"] == "issued" and desk["balanceDue"] == 90_000


def test_vietqr_reads_the_invoice_once(base_env, mongo_client, mongo_url: str, dev_key) -> None:
    name = f"sen_billing_s{uuid.uuid4().hex[:8]}"
    with app_client("billing", {**base_env, **BANK}, name, mongo_client) as (client, _app):
        db = mongo_client[name]
        iid, _code = make_invoice(db, 90_000)
        listener = _Finds()
        watched = MongoClient(mongo_url, tz_aware=True, event_listeners=[listener])
        try:
            bank = invoices.Bank("970436", "0011001234567")
            res = Store(watched[name], service="billing").read_doc("Invoice", iid)["res"]
            listener.reads.clear()
            invoices.current_qr(watched[name], iid, bank, timedelta(minutes=15), invoice=res)
            assert listener.reads == ["find payments", "find vietqr_codes"]  # the Invoice is not read again
        finally:
            watched.close()
        assert client.get(f"/fhir/Invoice/{iid}/$vietqr", headers=_headers(dev_key)).status_code == 200
