"""The cashier's money boxes and shift close (web/forms.VndField, web/cashier.py) with the Flask test
client, billing faked as it answers: an amount over billing's cap (10 tỷ đồng) is said to be too
large with the limit, on the field, and never sent; a shift closed with a gap and no note is refused
by billing (422) and the page says so on the note; "no shift is open" links to /shift, which brings the
cashier back to the invoice once the shift is open, the cash box kept open with what was typed."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from sen_portal.web.backend import BackendError
from sen_portal.web.formatting import MAX_VND, AmountTooLarge, parse_vnd

from services.portal.tests.cashier_support import ShiftBilling
from tests.support import csrf_token, portal_app, portal_signed_in

TOO_LARGE_VI = "Số tiền quá lớn (tối đa 10.000.000.000\u00a0₫)."
TOO_LARGE_EN = "The amount is too large (at most 10.000.000.000\u00a0₫)."


@pytest.fixture()
def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    return portal_app(tmp_path, monkeypatch, SEN_PORTAL_CACHE_SECONDS="0")


class Billing(ShiftBilling):
    """billing's JSON answers (``cashier._json``) for the shift (opened with 500.000 ₫, nothing taken since)
    and the invoice page (a cash payment's refusal)."""

    opening_cash = 500000

    def __init__(self) -> None:
        super().__init__({"cashTaken": 0, "cashRefunded": 0, "cash": 500000, "transfers": 0})
        self.cash_refusal: BackendError | None = None

    def other(self, method: str, path: str, body: Any) -> Any:
        if path == "/payments/cash" and self.cash_refusal is not None:
            raise self.cash_refusal
        return {}


@pytest.fixture()
def billing(monkeypatch) -> Billing:
    from sen_portal.web import cashier

    fake = Billing()
    monkeypatch.setattr(cashier, "_json", fake)
    return fake


def test_the_one_money_parser_knows_billings_limit():
    assert parse_vnd("10.000.000.000") == MAX_VND == 10_000_000_000
    assert parse_vnd("0010000") == 10000
    for typed in ("10.000.000.001", "99999999999999999999", "999999999999", "9" * 5000):
        with pytest.raises(AmountTooLarge):
            parse_vnd(typed)
    with pytest.raises(AmountTooLarge):
        parse_vnd("1.000.000.001", maximum=1_000_000_000)
    with pytest.raises(ValueError) as caught:
        parse_vnd("12,5")
    assert not isinstance(caught.value, AmountTooLarge)


@pytest.mark.parametrize(("lang", "message"), [("vi", TOO_LARGE_VI), ("en", TOO_LARGE_EN)])
def test_too_large_an_opening_cash_is_said_with_the_limit_and_not_sent(app, billing, lang, message):
    billing.shift_open = False
    client = portal_signed_in(app, "cashier", lang)
    token = csrf_token(client.get("/shift").get_data(as_text=True))
    r = client.post("/shift", data={"which": "open", "open-opening_cash": "99999999999999999999",
                                    "csrf_token": token})
    page = r.get_data(as_text=True)
    assert r.status_code == 422
    assert re.findall(r'<p class="error" id="open-opening_cash-error">([^<]*)</p>', page) == [message]
    assert "ví dụ 50.000" not in page and "e.g. 50.000" not in page
    assert billing.posted() == []


def _an_invoice_awaiting_payment(monkeypatch) -> None:
    """billing's desk answer for inv-a: 130.000 ₫ due, nothing paid, no code."""
    from sen_portal.web import cashier

    inv = {"resourceType": "Invoice", "id": "inv-a", "status": "issued", "subject": {"reference": "Patient/pa"},
           "totalGross": {"value": 130000, "currency": "VND"}}
    monkeypatch.setattr(cashier, "shared_get", lambda *a, **k: {
        "status": "issued", "owed": 130000, "paid": 0, "balanceDue": 130000, "resource": inv, "qr": None})
    monkeypatch.setattr(cashier, "patient_names", lambda ids: {"pa": "Lê Thị Hoa"})


def test_too_large_cash_is_refused_on_the_field_before_billing(app, billing, monkeypatch):
    _an_invoice_awaiting_payment(monkeypatch)
    client = portal_signed_in(app, "cashier")
    token = csrf_token(client.get("/invoices/inv-a").get_data(as_text=True))
    for typed in ("999999999999", "10.000.000.001"):
        r = client.post("/invoices/inv-a/cash", data={"cash-amount": typed, "csrf_token": token})
        page = r.get_data(as_text=True)
        assert r.status_code == 422, typed
        assert re.findall(r'<p class="error" id="cash-amount-error">([^<]*)</p>', page) == [TOO_LARGE_VI]
        assert "Dịch vụ thanh toán từ chối" not in page
    assert billing.posted() == []
    # at the limit it goes to billing
    client.post("/invoices/inv-a/cash", data={"cash-amount": "10.000.000.000", "cash-keep_credit": "y",
                                              "csrf_token": token})
    assert billing.posted()[-1][2]["amount"] == MAX_VND


def test_no_shift_open_links_to_the_shift_page(app, billing, monkeypatch):
    _an_invoice_awaiting_payment(monkeypatch)
    billing.cash_refusal = BackendError("refused", "billing", 409, "open a shift first (POST /payments/shifts)",
                                        "Conflict")
    client = portal_signed_in(app, "cashier")
    token = csrf_token(client.get("/invoices/inv-a").get_data(as_text=True))
    r = client.post("/invoices/inv-a/cash", data={"cash-amount": "130.000", "csrf_token": token})
    page = r.get_data(as_text=True)
    assert r.status_code == 409
    assert re.search(r'Chưa có ca làm việc nào mở: hãy mở ca trước\. <a href="/shift\?back=/invoices/inv-a" '
                     r'data-testid="open-shift-link">Mở ca</a>', page), page
    # the cash box stays open with the amount typed (it closed, hiding it, before)
    assert re.search(r'<details class="card" id="cash-box" open>', page), page
    assert re.search(r'name="cash-amount"[^>]*value="130.000"', page) or \
        re.search(r'value="130.000"[^>]*name="cash-amount"', page), page


def test_the_shift_opened_from_a_refused_invoice_goes_back_to_it(app, billing):
    """The link of "no shift is open" on an invoice (?back=): the shift opened, the cashier is on that invoice
    again, not left on the shift page to find it in the queue; a ``back`` that is not an invoice page of the
    portal is ignored (the shift page, as before)."""
    billing.shift_open = False
    client = portal_signed_in(app, "cashier")
    token = csrf_token(client.get("/shift?back=/invoices/inv-a%3Fp%3Dbn-0001").get_data(as_text=True))
    r = client.post("/shift?back=/invoices/inv-a%3Fp%3Dbn-0001",
                    data={"which": "open", "open-opening_cash": "500.000", "csrf_token": token})
    assert r.status_code == 302 and r.headers["Location"] == "/invoices/inv-a?p=bn-0001"
    assert billing.posted()[-1][1] == "/payments/shifts"
    for elsewhere in ("https://example.org/invoices/x", "//example.org/invoices/x", "/prices"):
        r = client.post("/shift", query_string={"back": elsewhere},
                        data={"which": "open", "open-opening_cash": "500.000", "csrf_token": token})
        assert r.status_code == 302 and r.headers["Location"] == "/shift", elsewhere


def test_closing_the_shift_is_confirmed_first_with_the_counts_kept(app, billing):
    client = portal_signed_in(app, "cashier")
    token = csrf_token(client.get("/shift").get_data(as_text=True))
    sent = {"which": "close", "close-counted_cash": "520.000", "close-counted_transfers": "0",
            "close-note": "thừa tiền lẻ", "csrf_token": token}
    r = client.post("/shift", data=sent)  # the first press: the step, nothing closed
    page = r.get_data(as_text=True)
    assert r.status_code == 200 and billing.posted() == []
    assert re.search(r'name="close-counted_cash"[^>]*value="520.000"', page) and "thừa tiền lẻ</textarea>" in page
    assert "Ca của bạn sẽ được kết với 520.000\u00a0₫ tiền mặt và 0\u00a0₫ chuyển khoản đã đếm." in page
    assert 'name="confirm" value="shift-close"' in page and 'data-testid="shift-summary"' not in page
    r = client.post("/shift", data={**sent, "confirming": "shift-close"})  # the step unticked
    assert r.status_code == 400 and billing.posted() == []
    r = client.post("/shift", data={**sent, "confirm": "shift-close"})
    assert r.status_code == 200 and [p[2].get("note") for p in billing.posted()] == ["thừa tiền lẻ"]


def test_a_gap_without_a_note_is_refused_on_the_note_and_kept(app, billing):
    billing.close_refusal = BackendError(
        "refused", "billing", 422, "the counted totals differ from the expected ones (cash +20000, transfers +0 đồng): "
        "a note must say why", "Unprocessable Content", {"difference": {"cash": 20000, "transfers": 0}})
    client = portal_signed_in(app, "cashier")
    page = client.get("/shift").get_data(as_text=True)
    assert "Bắt buộc khi số đếm được khác với số phải có" in page  # the note's hint
    token = csrf_token(page)
    r = client.post("/shift", data={"which": "close", "confirm": "shift-close", "close-counted_cash": "520.000",
                                    "close-counted_transfers": "0", "close-note": "", "csrf_token": token})
    page = r.get_data(as_text=True)
    said = ("Số đếm được khác với số phải có (tiền mặt +20.000\u00a0₫, chuyển khoản 0\u00a0₫): "
            "hãy ghi chú lý do rồi đóng ca.")
    assert r.status_code == 422
    assert re.findall(r'<p class="error" id="close-note-error">([^<]*)</p>', page) == [said]
    assert re.search(r'name="close-counted_cash"[^>]*value="520.000"', page)  # what was counted is kept
    billing.close_refusal = None
    r = client.post("/shift", data={"which": "close", "confirm": "shift-close", "close-counted_cash": "520.000",
                                    "close-counted_transfers": "0", "close-note": "thừa tiền lẻ", "csrf_token": token})
    assert r.status_code == 200 and billing.posted()[-1][2]["note"] == "thừa tiền lẻ"


def test_the_daily_csv_names_the_cashier_the_shift_and_how_the_money_came(app):
    """Billing's ``cashier_name`` and ``shift_opened_at`` fold into "Thu ngân" and "Ca làm việc" (not the
    token's subject ``portal-cashier`` nor the shift's id); "Nhận qua" names the gateway, not its code."""
    from sen_portal.web import daily_report

    head = ("kind,time,id,provider,channel,invoice,facility,amount,matched,outcome,reference,cashier,shift,note,"
            "facility_name,cashier_name,shift_opened_at\r\n")
    body = (head +
            "payment,2026-12-05T09:00:00+07:00,cashier:c1,cashier,cash,inv-1,tyt-my-hiep,120000,yes,applied,HD1,"
            "portal-cashier,6a9973cce7f043af,,,Lê Thị Thu,2026-12-05T07:02:00+07:00\r\n"
            "payment,2026-12-05T09:10:00+07:00,standard:t1,standard,transfer,inv-2,tyt-my-hiep,50000,yes,applied,HD2,"
            ",,,,,\r\n"
            "payment,2026-12-05T09:20:00+07:00,payos:t2,payos,transfer,inv-3,tyt-my-hiep,50000,yes,applied,HD3,,,,,,\r\n"
            "payment,2026-12-05T09:30:00+07:00,casso:t3,casso,transfer,inv-3,tyt-my-hiep,50000,yes,applied,HD3,,,,,,\r\n"
            "refund,2026-12-05T10:00:00+07:00,r1,cashier,transfer,inv-1,tyt-my-hiep,-20000,,refunded,,portal-cashier,"
            ",thừa,,Lê Thị Thu,\r\n"
            "total,2026-12-05,net,,,,,200000,,,,,,,,,\r\n").encode()
    with app.test_request_context():  # the page's language: Vietnamese
        header, rows = daily_report.readable(body)
    assert header[-4:-1] == ["Thu ngân", "Ca làm việc", "Ghi chú"] and "cashier_name" not in header
    assert len(header) == len(rows[0]) == 14  # and last whether the day's totals count the row (review 12)
    cash, standard, payos, casso, refund, total = rows
    assert (cash[3], cash[10], cash[11]) == ("Tiền mặt", "Lê Thị Thu", "05/12/2026 07:02 · Lê Thị Thu")
    assert (standard[3], standard[10], standard[11]) == ("Chuyển khoản ngân hàng", "", "")
    assert (payos[3], casso[3]) == ("payOS", "Casso")
    # a refund is money going out, by its own channel (review 9: it read "Chuyển khoản", as money received)
    assert (refund[3], refund[10], refund[11]) == ("Hoàn qua: Chuyển khoản", "Lê Thị Thu", "")
    assert total[10:12] == ["", ""]
    text = "\n".join(",".join(r) for r in rows)
    assert "portal-cashier" not in text and "6a9973cce7f043af" not in text and ",standard," not in text


def test_the_shift_says_which_transfers_it_counts(app, billing):
    """Webhook transfers have no cashier: the page says every open shift of the facility counts them."""
    page = portal_signed_in(app, "cashier").get("/shift").get_data(as_text=True)
    assert re.search(r'data-testid="shift-transfers">0\xa0₫<', page)
    assert "Mọi ca của cơ sở đang mở lúc đó đều tính khoản này" in page
    # review 12: what reached the account when it came, a transfer to the unmatched queue too, never an assignment
    assert "trong hàng chờ chưa khớp của cơ sở, tính lúc tiền đến; khoản được gán vào hóa đơn sau đó không tính lại" \
        in page


def test_the_daily_csv_says_which_amounts_the_days_totals_count(app):
    """Review 12: an unmatched transfer assigned to an invoice is two rows of the same money (the transfer when it
    came, the assignment), so a spreadsheet's sum of the amounts gave the assigned money twice and never the day's
    net. A last column says whether the day's totals count each row: the sum of those counted is the net."""
    from sen_portal.web import daily_report

    head = "kind,time,id,provider,channel,invoice,facility,amount,matched,outcome,reference,cashier,shift,note\r\n"
    body = (head +
            "payment,2026-12-06T06:45:32+07:00,standard:t1,standard,transfer,consult-1,tyt-my-hiep,100000,yes,applied,"
            "HD1,,,\r\n"
            "payment,2026-12-06T06:45:35+07:00,standard:u1,standard,transfer,,tyt-my-hiep,39000,no,unmatched,,,,\r\n"
            "payment,2026-12-06T06:46:12+07:00,cashier:c1,cashier,cash,inv-2,tyt-my-hiep,39000,yes,applied,HD2,tn,s1,\r\n"
            "payment,2026-12-06T06:47:15+07:00,assign:standard:u1,standard,transfer,inv-3,tyt-my-hiep,39000,yes,"
            "applied,HD3,,,assigned from standard:u1\r\n"
            "refund,2026-12-06T06:46:27+07:00,cashier:c1,cashier,cash,inv-2,tyt-my-hiep,-10000,,refunded,,tn,s1,thừa\r\n"
            "total,2026-12-06,net,,,,,168000,,,,,,\r\n").encode()
    with app.test_request_context():  # the page's language: Vietnamese
        header, rows = daily_report.readable(body)
    assert header[-1] == "Tính vào tổng của ngày"
    amount = header.index("Số tiền (đồng)")
    assert [r[-1] for r in rows] == ["Có", "Có", "Có", "Không: đã tính ở dòng của khoản chuyển khoản lúc tiền đến",
                                     "Có", ""]
    assert sum(int(r[amount]) for r in rows if r[-1] == "Có") == int(rows[-1][amount]) == 168_000
