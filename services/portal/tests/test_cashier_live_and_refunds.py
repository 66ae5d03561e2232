"""The invoice page's live update and its payments box (web/cashier.py, _invoice_payments.html), with
the Flask test client and billing's answers faked as billing gives them (``/payments/invoices/{id}``
and its ``/desk``):

- a transfer arriving while the page is open: the status box's answer swaps in the payments (and
  refunds) with the Paid status, and every out-of-band target it sends is on the page (htmx logged
  ``oobErrorNoTarget, #cancel-box`` on an invoice whose page had no cancel box);
- the refund form tells payments apart (time, method with the gateway, transaction), says once what
  can be given back on the invoice, starts "Refund by" at the chosen payment's method; the page
  lists the refunds given (time, amount, method, reason, cashier); a refund one cashier started and
  another finished names both ("Bắt đầu: … · Hoàn tất: …", in English "Started: … · Finished: …")."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from tests.support import csrf_token, portal_app, portal_signed_in

INV = {"resourceType": "Invoice", "id": "inv-a", "status": "issued", "date": "2026-12-05T09:00:00+07:00",
       "subject": {"reference": "Patient/pa"}, "totalGross": {"value": 100000, "currency": "VND"}}
CASH = {"id": "cashier:c-1", "provider": "cashier", "channel": "cash", "amount": 50000, "outcome": "applied",
        "receivedAt": "2026-12-05T16:03:00+07:00", "invoice": "inv-a"}
TRANSFER = {"id": "payos:FT2633901234", "provider": "payos", "channel": "transfer", "amount": 80000,
            "outcome": "applied", "receivedAt": "2026-12-05T16:05:00+07:00", "invoice": "inv-a"}


class Billing:
    def __init__(self) -> None:
        self.s: dict[str, Any] = {"invoice": "inv-a", "status": "issued", "owed": 100000, "paid": 50000,
                                  "balanceDue": 50000, "credit": 0, "refunded": 0, "reference": "HD7K2M9QX4C",
                                  "payments": [{**CASH, "refundable": 50000}], "refunds": [], "refundTasks": []}

    def shared_get(self, service, path, params=None, **_kw):
        assert service == "billing"
        if path.endswith("/desk"):
            return {**self.s, "resource": INV, "qr": None}
        return dict(self.s)

    def json(self, method, path, body=None, params=None, key=None):
        return dict(self.answer) if method == "POST" and path.endswith("/refund") else {}

    answer: dict[str, Any] = {}


@pytest.fixture()
def billing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from sen_portal.web import cashier

    fake = Billing()
    monkeypatch.setattr(cashier, "shared_get", fake.shared_get)
    monkeypatch.setattr(cashier, "_json", fake.json)
    monkeypatch.setattr(cashier, "patient_names", lambda ids: {"pa": "Lê Thị Hoa"})
    return fake


@pytest.fixture()
def client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    return portal_signed_in(portal_app(tmp_path, monkeypatch, SEN_PORTAL_CACHE_SECONDS="0"), "cashier")


def _poll(page: str) -> str:
    return re.search(r'hx-get="([^"]*/status[^"]*)"', page).group(1).replace("&amp;", "&")


def _oob_targets(answer: str) -> list[str]:
    return re.findall(r'<\w+[^>]*\bid="([^"]+)"[^>]*hx-swap-oob="true"', answer)


def _cells(html: str, testid: str, end: str = "td|span|p") -> list[str]:
    return [re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", m)).strip()
            for m in re.findall(rf'data-testid="{testid}"[^>]*>(.*?)</(?:{end})>', html, re.S)]


def test_a_transfer_arriving_swaps_in_the_payments_with_paid_and_only_targets_on_the_page(client, billing):
    page = client.get("/invoices/inv-a?p=pa").get_data(as_text=True)
    assert '<details class="card" id="cancel-box"' not in page  # something is paid: no cancel box shown
    poll = _poll(page)
    quiet = client.get(poll).get_data(as_text=True)  # nothing new: the payments box is not sent again
    assert 'id="invoice-payments"' not in quiet
    # the webhook: 80.000 by payOS settles it (130.000 on 100.000 owed: 30.000 credit)
    billing.s.update(status="balanced", paid=130000, balanceDue=0, credit=30000,
                     payments=[{**CASH, "refundable": 30000}, {**TRANSFER, "refundable": 30000}])
    answer = client.get(poll).get_data(as_text=True)
    assert 'data-testid="paid"' in answer
    box = re.search(r'<section class="card" id="invoice-payments"[^>]*hx-swap-oob="true".*?</section>', answer, re.S)
    assert box, answer
    assert _cells(box.group(0), "payment-method") == ["Tiền mặt", "Chuyển khoản (payOS) Mã giao dịch FT2633901234"]
    assert "80.000\u00a0₫" in box.group(0) and 'data-testid="refund-box"' in box.group(0)
    targets = _oob_targets(answer)
    assert {"invoice-payments", "invoice-facts", "qr-box", "cash-box", "cancel-box", "card-box"} <= set(targets)
    for target in targets:  # htmx finds each one (else: htmx:oobErrorNoTarget)
        assert re.search(rf'id="{target}"', page), target


@pytest.mark.parametrize("paid", [0, 50000])
def test_every_box_the_status_answer_may_swap_is_on_the_page(client, billing, paid):
    """Cancellable or not, with or without payments, a QR or none: each target is on the page."""
    if not paid:
        billing.s.update(paid=0, balanceDue=100000, payments=[])
    page = client.get("/invoices/inv-a?p=pa").get_data(as_text=True)
    for state in ({"status": "balanced", "paid": 100000, "balanceDue": 0},
                  {"status": "cancelled", "balanceDue": 0},
                  {"status": "issued", "paid": paid + 10000, "balanceDue": 90000 - paid,
                   "payments": [{**TRANSFER, "amount": 10000, "refundable": 10000}]}):
        billing.s.update(state)
        answer = client.get(_poll(page).replace("due=", "due=1")).get_data(as_text=True)
        for target in _oob_targets(answer):
            assert re.search(rf'id="{target}"', page), (state, target)


def test_the_refund_form_tells_payments_apart_and_says_once_what_can_be_given_back(client, billing):
    billing.s.update(status="balanced", paid=130000, balanceDue=0, credit=30000,
                     payments=[{**TRANSFER, "amount": 50000, "refundable": 30000},
                               {**CASH, "amount": 80000, "refundable": 30000}])
    page = client.get("/invoices/inv-a?p=pa").get_data(as_text=True)
    assert _cells(page, "refund-option") == [
        "05/12/2026 16:05 · Chuyển khoản (payOS) · 50.000 ₫ · Mã giao dịch FT2633901234",
        "05/12/2026 16:03 · Tiền mặt · 80.000 ₫"]
    assert _cells(page, "refundable-total") == ["Hóa đơn này có thể hoàn tối đa 30.000 ₫."]  # once, not 60.000
    assert "có thể hoàn: " not in page
    # "Refund by" starts at the first payment's way: a transfer; each choice carries its own for app.js
    assert re.search(r'<option selected value="transfer">', page), page
    assert re.findall(r'name="payment" value="([^"]+)" data-method="(\w+)"', page) == [
        ("payos:FT2633901234", "transfer"), ("cashier:c-1", "cash")]
    billing.s["payments"] = list(reversed(billing.s["payments"]))
    page = client.get("/invoices/inv-a?p=pa").get_data(as_text=True)
    assert re.search(r'<option selected value="cash">', page)


def test_the_page_lists_the_refunds_given(client, billing):
    billing.s.update(status="balanced", paid=130000, balanceDue=0, credit=0, refunded=30000,
                     payments=[{**CASH, "amount": 130000, "refundable": 0, "refunded": 30000}],
                     refunds=[{"payment": "cashier:c-1", "amount": 30000, "at": "2026-12-05T16:10:00+07:00",
                               "channel": "cash", "reason": "Trả lại tiền thừa", "cashier": "portal-cashier",
                               "cashierName": "Lê Thị Thu"}])
    page = client.get("/invoices/inv-a?p=pa").get_data(as_text=True)
    rows = _cells(page, "refund-row", "tr")
    assert rows == ["05/12/2026 16:10 30.000 ₫ Tiền mặt Trả lại tiền thừa Lê Thị Thu"], rows
    assert 'data-testid="refund-box"' not in page  # nothing left to give back


def test_a_refund_another_cashier_started_names_who_started_and_who_finished_it(client, billing):
    """Billing's summary row of a give-back An decided (her request died) and Bình finished, handing
    the money over: the cashier cell names both, in the page's language; a refund one cashier did
    alone names that cashier only."""
    billing.s.update(status="issued", paid=0, balanceDue=100000, refunded=50000,
                     payments=[{**CASH, "refundable": 0, "refunded": 50000}],
                     refunds=[{"payment": "cashier:c-1", "amount": 50000, "at": "2026-12-05T16:10:00+07:00",
                               "channel": "cash", "reason": "Chuyển nhầm hóa đơn", "cashier": "thu-ngan-binh",
                               "cashierName": "Trần Văn Bình",
                               "startedBy": {"cashier": "thu-ngan-an", "cashierName": "Nguyễn Thị An",
                                             "at": "2026-12-05T16:09:00+07:00"}},
                              {"payment": "payos:FT2633901234", "amount": 80000, "at": "2026-12-05T16:12:00+07:00",
                               "channel": "transfer", "reason": "Trả lại", "cashier": "thu-ngan-an",
                               "cashierName": "Nguyễn Thị An"}])
    page = client.get("/invoices/inv-a?p=pa").get_data(as_text=True)
    assert _cells(page, "refund-cashier") == ["Bắt đầu: Nguyễn Thị An · Hoàn tất: Trần Văn Bình", "Nguyễn Thị An"]
    client.post("/language", data={"lang": "en", "next": "/invoices/inv-a?p=pa", "csrf_token": csrf_token(page)})
    page = client.get("/invoices/inv-a?p=pa").get_data(as_text=True)
    assert _cells(page, "refund-cashier") == ["Started: Nguyễn Thị An · Finished: Trần Văn Bình", "Nguyễn Thị An"]
    # a name billing does not know: the token's subject
    billing.s["refunds"][0]["startedBy"]["cashierName"] = ""
    page = client.get("/invoices/inv-a?p=pa").get_data(as_text=True)
    assert _cells(page, "refund-cashier")[0] == "Started: thu-ngan-an · Finished: Trần Văn Bình"


def test_the_cashier_who_finishes_a_refund_another_started_is_told_what_to_hand_over(client, billing):
    billing.answer = {"payment": "cashier:c-1", "amount": 50000, "cashier": "portal-cashier",
                      "startedBy": {"cashier": "thu-ngan-an", "cashierName": "Nguyễn Thị An", "at": None}}
    page = client.get("/invoices/inv-a?p=pa").get_data(as_text=True)
    txn = re.search(r'name="txn" type="hidden" value="([0-9a-f]{32})"', page).group(1)
    r = client.post("/invoices/inv-a/refund?p=pa", data={
        "csrf_token": csrf_token(page), "payment": "cashier:c-1", "txn": txn, "amount": "", "method": "cash",
        "reason": "Hoàn tiền", "confirming": "refund", "confirm": "refund"})
    assert r.status_code == 302, r.get_data(as_text=True)
    after = client.get(r.headers["Location"]).get_data(as_text=True)
    assert _cells(after, "refund-finished", "div") == [
        "Nguyễn Thị An đã bắt đầu khoản hoàn tiền này; khoản hoàn được ghi cho bạn: hãy trả người bệnh 50.000 ₫ "
        "(số tiền đã quyết định khi bắt đầu)."]


def test_the_cancel_box_gives_way_to_the_refund_box_only_when_a_payment_arrives_while_the_page_is_open(
        client, billing):
    """Review 5 (ca3-cash.png): an invoice part paid before its page was opened said "…muốn hủy, hãy hoàn
    tiền khoản đã trả trước. Tải lại trang để hoàn tiền" on every load (the status box's first answer swapped
    it in), its refund box on the same page, and reloading changed nothing. The note is news only on a page
    that offered the cancel: a payment arriving while it is open replaces the cancel box with it, pointing
    at the refund box the same answer brings, open."""
    page = client.get("/invoices/inv-a?p=pa").get_data(as_text=True)  # 50.000 paid before: no cancel
    assert 'data-testid="refund-box"' in page and '<details class="card" id="cancel-box"' not in page
    poll = _poll(page)
    for _ in range(2):
        answer = client.get(poll).get_data(as_text=True)
        assert "cancel-after-refund" not in answer and 'id="cancel-box"' not in answer
    billing.s.update(paid=0, balanceDue=100000, payments=[])  # nothing paid: the cancel is offered
    page = client.get("/invoices/inv-a?p=pa").get_data(as_text=True)
    assert '<details class="card" id="cancel-box"' in page and 'data-testid="refund-box"' not in page
    poll = _poll(page)
    assert 'id="cancel-box"' not in client.get(poll).get_data(as_text=True)  # nothing new: nothing said
    # 10.000 in cash at another desk: the cancel box says why it went and where the refund is
    billing.s.update(paid=10000, balanceDue=90000, payments=[{**CASH, "amount": 10000, "refundable": 10000}])
    answer = client.get(poll).get_data(as_text=True)
    note = re.search(r'<div id="cancel-box" hx-swap-oob="true"[^>]*data-testid="cancel-after-refund">(.*?)</div>',
                     answer, re.S)
    assert note, answer
    assert 'href="#refund-box"' in note.group(1) and "Tải lại trang" not in note.group(1)
    assert "Hoàn tiền một khoản thanh toán" in note.group(1)
    assert re.search(r'<details id="refund-box" open', answer)  # brought open, the payment chosen
    assert re.search(r'value="cashier:c-1" data-method="cash" checked', answer)
    later = client.get(_poll(answer)).get_data(as_text=True)  # said once: the box holds the note now
    assert 'id="cancel-box"' not in later and 'id="invoice-payments"' not in later


ASSIGNED = {"id": "assign:standard:56fbe3c0b43c", "provider": "standard", "channel": "transfer", "amount": 50000,
            "outcome": "applied", "receivedAt": "2026-12-06T00:20:00+07:00", "invoice": "inv-a",
            "assignedFrom": "standard:56fbe3c0b43c", "assignedAt": "2026-12-06T00:30:00+07:00",
            "assignedBy": "portal-cashier", "assignedByName": "Lê Thị Thu"}


def test_an_assigned_transfer_shows_the_banks_transaction_and_time_and_who_assigned_it_when(client, billing):
    """Review 5 (ca13-inv.png): a transfer a cashier put on the invoice from the unmatched queue read
    "Mã giao dịch standard:56fbe3c0b43c" (everything after the first ':' of ``assign:standard:…``) and
    "received" at the assignment's time. It reads as a direct one: the bank's transaction, the bank's
    time, and the assignment said beside it (when, by whom); an older billing's summary (no ``assignedAt``)
    still names the transaction."""
    billing.s.update(paid=100000, balanceDue=0, status="balanced",
                     payments=[{**CASH, "refundable": 0}, {**ASSIGNED, "refundable": 0}])
    page = client.get("/invoices/inv-a?p=pa").get_data(as_text=True)
    assert _cells(page, "payment-method") == [
        "Tiền mặt", "Chuyển khoản ngân hàng Mã giao dịch 56fbe3c0b43c "
        "Gán từ “Chuyển khoản chưa khớp” lúc 06/12/2026 00:30 bởi Lê Thị Thu"]
    rows = re.findall(r'<tr role="row"><td role="cell"[^>]*>([^<]*)</td>', page)
    assert "06/12/2026 00:20" in rows  # the bank's time, not the assignment's
    client.post("/language", data={"lang": "en", "next": "/invoices/inv-a?p=pa", "csrf_token": csrf_token(page)})
    page = client.get("/invoices/inv-a?p=pa").get_data(as_text=True)
    assert _cells(page, "payment-assigned", "small") == [
        "Assigned from “Unmatched transfers” at 06/12/2026 00:30 by Lê Thị Thu"]
    older = {k: v for k, v in ASSIGNED.items() if k not in ("assignedAt", "assignedBy", "assignedByName")}
    billing.s.update(status="issued", paid=50000, balanceDue=50000, payments=[{**older, "refundable": 50000}])
    page = client.get("/invoices/inv-a?p=pa").get_data(as_text=True)
    assert "standard:56fbe3c0b43c" not in re.sub(r'value="[^"]*"', "", page)
    assert _cells(page, "refund-option") == ["06/12/2026 00:20 · Direct bank transfer · 50.000 ₫ · "
                                             "Transaction 56fbe3c0b43c"]
    assert 'data-testid="payment-assigned"' not in page


def _refund(payment: str, amount: int, at: str, **more: Any) -> dict[str, Any]:
    return {"payment": payment, "amount": amount, "at": at, "channel": "cash", "reason": "Khách đổi ý",
            "cashier": "thu-ngan-thu", "cashierName": "Lê Thị Thu", **more}


def test_a_payment_given_back_says_so_in_its_outcome_not_counted_toward_the_invoice(client, billing):
    """Review 5 (ca13-inv.png): 10.000 ₫ cash taken, given back ("Khách đổi ý") while the invoice was still
    owed, then a 75.000 ₫ transfer paid it. The cash row's outcome read "Đã tính vào hóa đơn" beside its
    refund: it says the money went back (how much, when). A part given back (a credit refund) says what
    still counts; a refund after settlement says so; the English page alike (VND written as in Vietnam); an
    older billing's summary (no ``refunded`` on the payment) reads it from the refund given of it."""
    cash = {**CASH, "amount": 10000, "receivedAt": "2026-12-06T00:28:00+07:00"}
    transfer = {**TRANSFER, "amount": 75000, "receivedAt": "2026-12-06T00:30:00+07:00"}
    billing.s.update(status="balanced", owed=40000, paid=75000, balanceDue=0, credit=35000, refunded=10000,
                     payments=[{**cash, "refundable": 0, "refunded": 10000}, {**transfer, "refundable": 35000}],
                     refunds=[_refund("cashier:c-1", 10000, "2026-12-06T00:29:00+07:00")])
    page = client.get("/invoices/inv-a?p=pa").get_data(as_text=True)
    assert _cells(page, "payment-outcome") == ["Đã hoàn 10.000 ₫ (06/12/2026 00:29)", "Đã tính vào hóa đơn"]
    # the credit given back: 35.000 ₫ of the transfer, 40.000 ₫ of it still pays the invoice
    billing.s.update(credit=0, refunded=45000,
                     payments=[{**cash, "refundable": 0, "refunded": 10000},
                               {**transfer, "refundable": 0, "refunded": 35000}],
                     refunds=[_refund("cashier:c-1", 10000, "2026-12-06T00:29:00+07:00"),
                              _refund("payos:FT2633901234", 35000, "2026-12-06T00:40:00+07:00")])
    page = client.get("/invoices/inv-a?p=pa").get_data(as_text=True)
    assert _cells(page, "payment-outcome") == [
        "Đã hoàn 10.000 ₫ (06/12/2026 00:29)", "Đã hoàn 35.000 ₫ (06/12/2026 00:40), còn tính 40.000 ₫ vào hóa đơn"]
    client.post("/language", data={"lang": "en", "next": "/invoices/inv-a?p=pa", "csrf_token": csrf_token(page)})
    page = client.get("/invoices/inv-a?p=pa").get_data(as_text=True)
    assert _cells(page, "payment-outcome") == [
        "Refunded 10.000 ₫ (06/12/2026 00:29)",
        "Refunded 35.000 ₫ (06/12/2026 00:40); 40.000 ₫ still counted toward the invoice"]
    # a paid invoice's payment given back after settlement (a service not given): it stays paid
    billing.s.update(owed=85000, paid=85000, credit=0, refunded=10000,
                     payments=[{**cash, "refundable": 0, "refunded": 10000}, {**transfer, "refundable": 0}],
                     refunds=[_refund("cashier:c-1", 10000, "2026-12-06T00:50:00+07:00", afterSettlement=True)])
    page = client.get("/invoices/inv-a?p=pa").get_data(as_text=True)
    assert _cells(page, "payment-outcome") == ["Refunded after payment 10.000 ₫ (06/12/2026 00:50)",
                                               "Counted toward the invoice"]
    client.post("/language", data={"lang": "vi", "next": "/invoices/inv-a?p=pa", "csrf_token": csrf_token(page)})
    page = client.get("/invoices/inv-a?p=pa").get_data(as_text=True)
    assert _cells(page, "payment-outcome")[0] == "Đã hoàn sau thanh toán 10.000 ₫ (06/12/2026 00:50)"
    # an older billing: the payment does not say what was given back of it, its refund does
    billing.s.update(status="issued", owed=40000, paid=0, balanceDue=40000, refunded=10000,
                     payments=[{**cash, "refundable": 0}],
                     refunds=[_refund("cashier:c-1", 10000, "2026-12-06T00:29:00+07:00")])
    page = client.get("/invoices/inv-a?p=pa").get_data(as_text=True)
    assert _cells(page, "payment-outcome") == ["Đã hoàn 10.000 ₫ (06/12/2026 00:29)"]


def _text(html: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


def test_a_part_of_a_payment_toward_an_invoice_still_owed_is_refused_before_the_confirmation_step(client, billing):
    """Review 8: 5.000 ₫ of a 50.000 ₫ payment toward an invoice still owed passed to the confirmation step
    and only the confirmed press said billing gives it back whole; the box said the invoice's total as the
    limit and "Of a paid invoice only the credit is given back" on an invoice still owed."""
    page = client.get("/invoices/inv-a?p=pa").get_data(as_text=True)
    box = _text(re.search(r'<details[^>]*data-testid="refund-box".*?</details>', page, re.S).group(0))
    assert "Khoản thanh toán của hóa đơn chưa trả đủ chỉ được hoàn lại toàn bộ" in box
    assert "Với hóa đơn đã thanh toán" not in box and "Hóa đơn này có thể hoàn tối đa" not in box
    assert _cells(page, "refund-limit", "small") == ["Chỉ hoàn toàn bộ: 50.000 ₫"]  # the chosen payment's own
    sent = {"payment": "cashier:c-1", "method": "cash", "amount": "5.000", "reason": "Thu nhầm",
            "csrf_token": csrf_token(page)}
    r = client.post("/invoices/inv-a/refund?p=pa", data=sent)
    said = _text(r.get_data(as_text=True))
    assert r.status_code == 422 and 'data-testid="confirm-step"' not in r.get_data(as_text=True)
    assert ("Khoản thanh toán của hóa đơn chưa trả đủ được hoàn lại toàn bộ (50.000 ₫): để trống số tiền hoặc "
            "nhập đủ số đó.") in said
    # all of it: the step, as before
    r = client.post("/invoices/inv-a/refund?p=pa", data={**sent, "amount": "50.000"})
    assert r.status_code == 200 and 'data-testid="confirm-step"' in r.get_data(as_text=True)


def test_the_refund_box_of_a_paid_invoice_says_its_rules_and_each_payments_limit(client, billing):
    """A paid invoice's credit shared by two payments: each says its limit, the invoice's (less than theirs
    added up) once; the hint is the paid invoice's (the credit first), not the owed one's. A late payment
    says it is given back all or in part."""
    billing.s.update(status="balanced", paid=130000, balanceDue=0, credit=30000,
                     payments=[{**TRANSFER, "amount": 50000, "refundable": 30000},
                               {**CASH, "amount": 80000, "refundable": 30000},
                               {**TRANSFER, "id": "payos:FT9", "amount": 20000, "refundable": 20000,
                                "outcome": "late-balanced", "lateInvoice": True}])
    page = client.get("/invoices/inv-a?p=pa").get_data(as_text=True)
    hint = _cells(page, "refund-hint", "p")[0]
    assert hint.startswith("Với hóa đơn đã thanh toán, tiền thừa") and "đến sau khi hóa đơn" in hint
    assert "chỉ được hoàn lại toàn bộ" not in hint
    limits = _cells(page, "refund-limit", "small")
    assert limits == ["Có thể hoàn tối đa 30.000 ₫", "Có thể hoàn tối đa 30.000 ₫", "Có thể hoàn tối đa 20.000 ₫"]
    assert _cells(page, "refundable-total") == ["Hóa đơn này có thể hoàn tối đa 50.000 ₫."]


@pytest.mark.parametrize("state", ["balanced", "cancelled"])
def test_a_transfer_arriving_on_a_paid_or_cancelled_invoices_open_page_shows_with_its_note(client, billing, state):
    """Review 8: the status box of a paid or cancelled invoice stopped asking, so a transfer arriving then
    showed nowhere (no row, no "to refund" note) until a reload. It keeps asking, slower, and swaps the
    payments box in when it changed (not at each answer: a refund being typed is kept)."""
    paid = state == "balanced"
    billing.s.update(status=state, paid=100000 if paid else 0, balanceDue=0,
                     payments=[{**CASH, "amount": 100000, "refundable": 0}] if paid else [])
    page = client.get("/invoices/inv-a?p=pa").get_data(as_text=True)
    status_box = re.search(r'<div id="invoice-status"[^>]*>', page).group(0)
    assert 'hx-trigger="load, every 10s"' in status_box
    poll = _poll(page)
    quiet = client.get(poll).get_data(as_text=True)
    assert 'id="invoice-payments"' not in quiet and 'hx-trigger="every 10s"' in quiet  # asks on, swaps nothing
    late = {**TRANSFER, "amount": 20000, "refundable": 20000, "lateInvoice": True,
            "outcome": "late-balanced" if paid else "late-cancelled"}
    billing.s["payments"] = [*billing.s["payments"], late]
    billing.s["refundTasks"] = [{"payment": late["id"], "amount": 20000}]
    answer = client.get(poll).get_data(as_text=True)
    box = re.search(r'<section class="card" id="invoice-payments"[^>]*hx-swap-oob="true".*?</section>', answer, re.S)
    assert box, answer
    note = "Đến sau khi hóa đơn đã thanh toán: cần hoàn lại" if paid else "Đến sau khi hóa đơn đã hủy: cần hoàn lại"
    assert note in _text(box.group(0)) and 'data-testid="refund-box"' in box.group(0)
    for target in _oob_targets(answer):
        assert re.search(rf'id="{target}"', page), target
    again = client.get(_poll(answer)).get_data(as_text=True)  # the next poll carries the new digest
    assert 'id="invoice-payments"' not in again
