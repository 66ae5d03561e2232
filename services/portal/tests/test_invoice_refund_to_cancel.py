"""A wrong invoice with something paid on it (``/invoices/<id>``): the refund box offers only the
payments billing can give something back of, each with that amount; once the payment is given back
(the invoice owes it again, nothing is left paid) the cancel box is there again; a transfer that
arrives while the page is open takes the cancel box away (the status poll's out-of-band swap) and
says how to cancel now; billing's new refusals read as Vietnamese sentences. Billing is a stub
answering what the real one answers (``tests/integration/test_billing_reversals.py``)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from sen_portal.web.backend import BackendError

from tests.support import csrf_token, portal_app, portal_signed_in

LINE = {"chargeItemReference": {"reference": "ChargeItem/ci-1", "display": "Khám bệnh"},
        "priceComponent": [{"type": "base", "amount": {"value": 114000, "currency": "VND"}}]}
TRANSFER = {"id": "standard:tx-1", "provider": "standard", "channel": "transfer", "amount": 10000, "matched": True,
            "outcome": "applied", "receivedAt": "2026-12-05T09:05:00+07:00", "invoice": "inv-a"}


class Response:
    def __init__(self, body: dict[str, Any]) -> None:
        self._body, self.content = body, b"{}"

    def json(self) -> dict[str, Any]:
        return self._body


class Billing:
    """The invoice's summary as billing gives it: ``paid`` net of what was given back, each payment
    with its ``refundable``; a refund of the transfer (whole) makes the invoice owe it again."""

    def __init__(self) -> None:
        self.payments: list[dict[str, Any]] = []
        self.status = "issued"
        self.refunds: list[tuple[str, Any]] = []
        self.refuse: BackendError | None = None

    def summary(self) -> dict[str, Any]:
        paid = sum(p["amount"] for p in self.payments if not p.get("refunded"))
        return {"invoice": "inv-a", "status": self.status, "owed": 114000, "paid": paid,
                "balanceDue": max(0, 114000 - paid), "credit": 0, "reference": "HD7K2M9QX4C",
                "refunded": sum(p.get("refunded", 0) for p in self.payments),
                "payments": [dict(p) for p in self.payments], "refundTasks": []}

    def get(self, service: str, path: str, params: Any = None, **_kw: Any) -> dict[str, Any]:
        if path == "/payments/invoices/inv-a/desk":
            return {**self.summary(), "qr": None,
                    "resource": {"resourceType": "Invoice", "id": "inv-a", "status": self.status,
                                 "date": "2026-12-05T09:00:00+07:00", "subject": {"reference": "Patient/bn-0001"},
                                 "lineItem": [LINE]}}
        assert path == "/payments/invoices/inv-a"
        return self.summary()

    def call(self, service: str, method: str, path: str, *, json: Any = None, **_kw: Any) -> Any:
        if path.endswith("$vietqr"):
            raise BackendError("refused", "billing", 503, "no bank account")
        assert (service, method, path) == ("billing", "POST", "/payments/standard:tx-1/refund")
        self.refunds.append((path, json))
        if self.refuse is not None:
            raise self.refuse
        self.payments[0].update(refunded=10000, refundable=0)
        return Response({"payment": "standard:tx-1", "amount": 10000})


@pytest.fixture()
def client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    return portal_signed_in(portal_app(tmp_path, monkeypatch, SEN_PORTAL_CACHE_SECONDS="0"), "cashier")


@pytest.fixture()
def billing(monkeypatch) -> Billing:
    from sen_portal.web import cashier
    from sen_portal.web import patients as patient_module

    b = Billing()
    monkeypatch.setattr(cashier, "shared_get", b.get)
    monkeypatch.setattr(cashier, "call", b.call)
    bundle = {"resourceType": "Bundle", "type": "searchset", "entry": []}
    monkeypatch.setattr(patient_module, "fhir_get", lambda *a, **k: bundle)
    return b


def text(page: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", page))


def test_a_partial_transfer_is_refunded_then_the_invoice_can_be_cancelled(client, billing) -> None:
    billing.payments = [{**TRANSFER, "refundable": 10000}]
    page = client.get("/invoices/inv-a").get_data(as_text=True)
    assert '<details class="card" id="cancel-box"' not in page  # something is paid: no cancel
    # the payment's own limit (given back whole while the invoice is owed), not the invoice's total
    assert 'data-testid="refund-box"' in page and "Chỉ hoàn toàn bộ: 10.000 ₫" in text(page)
    r = client.post("/invoices/inv-a/refund", data={"payment": "standard:tx-1", "method": "transfer",
                                                    "reason": "Hóa đơn lập sai", "csrf_token": csrf_token(page),
                                                    "confirm": "refund"})
    assert r.status_code == 302 and billing.refunds[0][1] == {"reason": "Hóa đơn lập sai", "method": "transfer"}
    page = client.get(r.headers["Location"]).get_data(as_text=True)
    assert 'id="cancel-box"' in page  # nothing left paid: the cancel is offered again
    assert 'data-testid="refund-box"' not in page  # nothing left to give back on it


def test_a_refund_is_confirmed_first_and_nothing_is_given_back_before(client, billing) -> None:
    billing.payments = [{**TRANSFER, "refundable": 10000}]
    page = client.get("/invoices/inv-a").get_data(as_text=True)
    key = re.search(r'name="txn" type="hidden" value="([0-9a-f]{32})"', page).group(1)
    sent = {"payment": "standard:tx-1", "method": "transfer", "amount": "10.000", "reason": "Hóa đơn lập sai",
            "txn": key, "csrf_token": csrf_token(page)}
    r = client.post("/invoices/inv-a/refund", data=sent)  # the first press: the step, nothing refunded
    step = r.get_data(as_text=True)
    assert r.status_code == 200 and billing.refunds == []
    box = re.search(r'<details[^>]*data-testid="refund-box"[^>]*>.*?</details>', step, re.S).group(0)
    assert " open" in box.split(">", 1)[0]  # the box stays open on its confirmation step
    assert "Hóa đơn lập sai</textarea>" in box and f'value="{key}"' in box and 'value="10.000"' in box
    assert "Sẽ hoàn 10.000 ₫ cho người bệnh bằng chuyển khoản." in text(box)
    assert 'name="confirm" value="refund"' in box
    # the step is about the payment chosen: carried as it was, not a list that could now put another first
    assert '<input type="hidden" name="payment" value="standard:tx-1">' in box and 'type="radio"' not in box
    r = client.post("/invoices/inv-a/refund", data={**sent, "confirming": "refund"})  # unticked: said so
    assert r.status_code == 400 and billing.refunds == [] and "Hãy đánh dấu vào ô để xác nhận" in text(
        r.get_data(as_text=True))
    r = client.post("/invoices/inv-a/refund", data={**sent, "confirm": "refund"})
    assert r.status_code == 302 and len(billing.refunds) == 1


def test_only_payments_with_something_to_give_back_are_offered(client, billing) -> None:
    billing.status = "balanced"
    billing.payments = [{**TRANSFER, "amount": 114000, "refundable": 0}]
    page = client.get("/invoices/inv-a").get_data(as_text=True)
    assert 'data-testid="refund-box"' not in page and '<details class="card" id="cancel-box"' not in page
    billing.payments = [{**TRANSFER, "amount": 114000, "refundable": 0},
                        {**TRANSFER, "id": "standard:tx-2", "amount": 20000, "refundable": 20000}]
    page = client.get("/invoices/inv-a").get_data(as_text=True)
    assert 'value="standard:tx-2"' in page and 'value="standard:tx-1"' not in page
    assert "Có thể hoàn tối đa 20.000 ₫" in text(page)  # the one payment's limit


def test_a_transfer_arriving_while_the_page_is_open_takes_the_cancel_box_away(client, billing) -> None:
    page = client.get("/invoices/inv-a").get_data(as_text=True)
    assert 'id="cancel-box"' in page
    poll = re.search(r'hx-get="([^"]*/status[^"]*)"', page).group(1).replace("&amp;", "&")
    assert "cx=1" in poll  # the page offers the cancel: its status box says so
    quiet = client.get(poll).get_data(as_text=True)
    assert "cancel-box" not in quiet  # nothing paid: the box stays
    billing.payments = [{**TRANSFER, "refundable": 10000}]
    box = client.get(poll).get_data(as_text=True)
    assert re.search(r'<div id="cancel-box" hx-swap-oob="true"[^>]*>', box)
    assert "muốn hủy, hãy hoàn tiền khoản đã trả trước" in box and 'href="#refund-box"' in box
    # a page opened after the transfer offers no cancel, and its status box says nothing of one
    assert "cancel-box" not in client.get("/invoices/inv-a/status").get_data(as_text=True)


def test_billings_refusals_of_a_refund_are_sentences(client, billing) -> None:
    billing.payments = [{**TRANSFER, "refundable": 10000}]
    cases = [
        (409, "this invoice is paid in full (balanced): only its credit, money paid over what was owed, "
              "can be refunded, and there is none", "Hóa đơn này đã thanh toán đủ: chỉ hoàn được phần trả thừa"),
        (409, "this invoice is being settled: only its credit, money paid over what was owed, can be refunded, "
              "and there is none", "đang được tất toán"),
        (422, "a payment toward an invoice still owed is given back whole: 10000 đồng",
         "được hoàn lại toàn bộ (10.000 ₫)"),
    ]
    for status, detail, said in cases:
        billing.refuse = BackendError("refused", "billing", status, detail, "Conflict")
        page = client.get("/invoices/inv-a").get_data(as_text=True)
        r = client.post("/invoices/inv-a/refund", data={"payment": "standard:tx-1", "method": "transfer",
                                                        "reason": "sai", "csrf_token": csrf_token(page),
                                                        "confirm": "refund"})
        body = r.get_data(as_text=True)
        assert said in text(body) and detail not in body, text(body)[-1500:]
