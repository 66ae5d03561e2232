"""The cashier's invoice page against a real billing (a gunicorn process on loopback) on the real
FerretDB, the portal in this process as its demo cashier Lê Thị Thu of Trạm Y tế xã Mỹ Hiệp; review 5's
findings on it (ca3-cash.png, ca11-confirm.png, ca13-inv.png):

- 10.000 ₫ of cash taken on an invoice while its page is open: that page's status box replaces the
  cancel box with "refund first", pointing at the refund box it brings open; a page opened after the
  payment offers no cancel and says nothing of one (it said "Tải lại trang để hoàn tiền" on every load);
- a refund with no amount typed names the amount billing gives back: "Sẽ hoàn 10.000 ₫ …";
- a transfer assigned from the unmatched queue reads as the bank sent it: its transaction id, the time
  the bank received it, and the assignment beside it (when, by whom);
- a payment given back reads so in its outcome ("Đã hoàn 10.000 ₫ (…)", a part: ", còn tính 40.000 ₫ vào
  hóa đơn"), not "Đã tính vào hóa đơn"; the receipt (page and print) counts only what was kept.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sen_billing.domain import payments, receipts
from sen_billing.domain.webhooks import Transfer

from tests.billing_support import cashier_billing, cashier_portal, make_invoice
from tests.support import csrf_token, portal_signed_in, vn_day_with_room

pytestmark = pytest.mark.integration

CLINIC = "tyt-my-hiep"
ACCOUNT = "0011001932418"  # billing's, the clinic's (billing_support.CASHIER_BANK: the session's billing)


@pytest.fixture(scope="module")
def billing(cashier_services, mongo_client):
    return cashier_billing(cashier_services, mongo_client)


@pytest.fixture(scope="module")
def portal(base_env, run_id, billing, mongo_client):
    # no EHR (a closed port): the page names no patient ("—"), everything else is billing's
    with cashier_portal(base_env, run_id, mongo_client, "pip", "http://127.0.0.1:9", billing[0]) as app:
        yield app


def _poll(page: str) -> str:
    return re.search(r'hx-get="([^"]*/status[^"]*)"', page).group(1).replace("&amp;", "&")


def _field(form: str, name: str) -> str:
    m = re.search(rf'name="{name}"[^>]*value="([^"]*)"', form) or re.search(rf'value="([^"]*)"[^>]*name="{name}"',
                                                                          form)
    return m.group(1) if m else ""


def _text(html: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html)).replace("\u00a0", " ")


def _open_shift(cashier) -> None:
    page = cashier.get("/shift").get_data(as_text=True)
    if 'name="open-opening_cash"' in page:
        r = cashier.post("/shift", data={"which": "open", "open-opening_cash": "0", "csrf_token": csrf_token(page)})
        assert r.status_code == 302, r.get_data(as_text=True)[-1500:]


def test_a_part_payment_while_the_page_is_open_then_a_refund_with_no_amount_typed(portal, billing):
    _url, db = billing
    iid, _code = make_invoice(db, 40_000, facility=CLINIC)
    cashier = portal_signed_in(portal, "cashier")
    _open_shift(cashier)
    open_page = cashier.get(f"/invoices/{iid}").get_data(as_text=True)  # the page left open at the desk
    assert '<details class="card" id="cancel-box"' in open_page
    poll = _poll(open_page)
    assert "cancel-box" not in cashier.get(poll).get_data(as_text=True)  # nothing paid: nothing said
    # 10.000 ₫ taken in cash (the form of a second tab of the same invoice)
    other = cashier.get(f"/invoices/{iid}").get_data(as_text=True)
    r = cashier.post(f"/invoices/{iid}/cash", data={"cash-amount": "10.000", "cash-txn": _field(other, "cash-txn"),
                                                    "csrf_token": csrf_token(other)})
    assert r.status_code == 302, r.get_data(as_text=True)[-1500:]
    answer = cashier.get(poll).get_data(as_text=True)  # the open page's next status answer
    note = re.search(r'<div id="cancel-box" hx-swap-oob="true"[^>]*data-testid="cancel-after-refund">(.*?)</div>',
                     answer, re.S)
    assert note and 'href="#refund-box"' in note.group(1), answer
    assert re.search(r'<details id="refund-box" open', answer)
    assert "cancel-box" not in cashier.get(_poll(answer)).get_data(as_text=True)  # said once
    # the page opened after the payment: no cancel, and its status answers never say "reload"
    page = cashier.get(f"/invoices/{iid}").get_data(as_text=True)
    assert '<details class="card" id="cancel-box"' not in page and 'data-testid="refund-box"' in page
    for _ in range(2):
        assert "cancel-box" not in cashier.get(_poll(page)).get_data(as_text=True)
    # the refund, no amount typed: the step names what billing gives back, the part paid
    payment = _field(page, "payment")
    assert payment.startswith("cashier:"), payment
    r = cashier.post(f"/invoices/{iid}/refund", data={
        "payment": payment, "after": "", "amount": "", "method": "cash", "reason": "Khách đổi ý",
        "txn": _field(page, "txn"), "csrf_token": csrf_token(page)})
    step = _text(r.get_data(as_text=True))
    assert r.status_code == 200 and "Sẽ hoàn 10.000 ₫ cho người bệnh bằng tiền mặt." in step, step[-2000:]
    r = cashier.post(f"/invoices/{iid}/refund", data={
        "payment": payment, "after": "", "amount": "", "method": "cash", "reason": "Khách đổi ý",
        "txn": _field(page, "txn"), "csrf_token": csrf_token(page), "confirm": "refund"})
    assert r.status_code == 302, r.get_data(as_text=True)[-1500:]
    done = _text(cashier.get(r.headers["Location"]).get_data(as_text=True))
    assert re.search(r"Hoàn tiền Thời gian Số tiền .* 10\.000 ₫ Tiền mặt Khách đổi ý Lê Thị Thu", done), done


def test_a_transfer_assigned_from_the_queue_reads_as_the_bank_sent_it(portal, billing):
    today = vn_day_with_room()  # the assignment's day in Vietnam, as its row says
    _url, db = billing
    iid, code = make_invoice(db, 75_000, facility=CLINIC)
    txn = uuid.uuid4().hex[:12]
    t = Transfer(provider="standard", transaction_id=txn, amount=75_000, description="chuyen tien kham benh",
                 account=ACCOUNT)
    key = payments.record_transfer(db, t, uuid.uuid4().hex, account_facilities={ACCOUNT: CLINIC}).payment["_id"]
    came = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=10)
    db["payments"].update_one({"_id": key}, {"$set": {"received_at": came}})  # the bank got it 10 minutes ago
    cashier = portal_signed_in(portal, "cashier")
    page = cashier.get("/unmatched").get_data(as_text=True)
    r = cashier.post("/unmatched", data={"payment": key, "invoice": code, "csrf_token": csrf_token(page)})
    assert r.status_code == 200, r.get_data(as_text=True)[-1500:]
    page = cashier.get(f"/invoices/{iid}").get_data(as_text=True)
    table = re.search(r'data-testid="payments">.*?<tbody[^>]*>(.*?)</tbody>', page, re.S).group(1)
    [row] = [_text(r) for r in re.findall(r'<tr role="row">(.*?)</tr>', table, re.S)]
    assert f"{came.astimezone(payments.VN):%d/%m/%Y %H:%M} Chuyển khoản ngân hàng Mã giao dịch {txn} " \
           "Gán từ “Chuyển khoản chưa khớp” lúc " in row, row
    assert row.split(" lúc ")[1].startswith(today.strftime("%d/%m/%Y"))
    assert " bởi Lê Thị Thu " in row and "standard:" not in row and "assign:" not in row


def _refund(cashier, iid: str, page: str) -> None:
    """The refund box's first payment given back (as much as billing gives), cash, confirmed."""
    data = {"payment": _field(page, "payment"), "after": "", "amount": "", "method": "cash", "reason": "Khách đổi ý",
            "txn": _field(page, "txn"), "csrf_token": csrf_token(page), "confirm": "refund"}
    r = cashier.post(f"/invoices/{iid}/refund", data=data)
    assert r.status_code == 302, r.get_data(as_text=True)[-1500:]


def _outcomes(page: str) -> list[str]:
    return [_text(c).strip() for c in re.findall(r'data-testid="payment-outcome">(.*?)</td>', page, re.S)]


def test_a_payment_given_back_reads_given_back_on_the_page_and_off_the_receipt(portal, billing):
    """Review 5 (ca13-inv.png): 10.000 ₫ cash taken and given back while the invoice was owed, then a
    75.000 ₫ transfer paid its 40.000 ₫. The cash row's outcome read "Đã tính vào hóa đơn": it says it
    went back, with billing's time of the refund; the receipt counts the transfer only (75.000 ₫ paid,
    35.000 ₫ credit). The credit given back: the transfer's row says what still counts, the receipt
    shows the refund and no credit left."""
    _url, db = billing
    iid, code = make_invoice(db, 40_000, facility=CLINIC)
    cashier = portal_signed_in(portal, "cashier")
    _open_shift(cashier)
    page = cashier.get(f"/invoices/{iid}").get_data(as_text=True)
    r = cashier.post(f"/invoices/{iid}/cash", data={"cash-amount": "10.000", "cash-txn": _field(page, "cash-txn"),
                                                    "csrf_token": csrf_token(page)})
    assert r.status_code == 302, r.get_data(as_text=True)[-1500:]
    _refund(cashier, iid, cashier.get(f"/invoices/{iid}").get_data(as_text=True))
    back = db["refunds"].find_one({"invoice": iid})
    at = back["at"].replace(tzinfo=back["at"].tzinfo or UTC).astimezone(payments.VN)
    payments.record_transfer(db, Transfer("payos", uuid.uuid4().hex[:10], 75_000, f"thanh toan {code}"),
                             uuid.uuid4().hex, seen=False)
    page = cashier.get(f"/invoices/{iid}").get_data(as_text=True)
    assert 'data-testid="paid"' in page
    assert _outcomes(page) == [f"Đã hoàn 10.000 ₫ ({at:%d/%m/%Y %H:%M})", "Đã tính vào hóa đơn"], _outcomes(page)
    receipt = _text(cashier.get(f"/invoices/{iid}/receipt").get_data(as_text=True))
    assert "Đã thanh toán 75.000 ₫" in receipt and "Tiền thừa còn lại 35.000 ₫" in receipt, receipt[-2500:]
    assert "10.000 ₫" not in receipt  # the cash given back is not on it, nor its refund
    # the credit given back: 35.000 ₫ of the transfer; 40.000 ₫ of it still pays the invoice
    _refund(cashier, iid, page)
    page = cashier.get(f"/invoices/{iid}").get_data(as_text=True)
    outcomes = _outcomes(page)
    # what still counts of the transfer can be given back after payment since session 21 (several refunds of
    # one payment): its row offers "Hoàn tiền…" beside the outcome
    assert outcomes[0].startswith("Đã hoàn 10.000 ₫") and re.fullmatch(
        r"Đã hoàn 35\.000 ₫ \(\d\d/\d\d/\d{4} \d\d:\d\d\), còn tính 40\.000 ₫ vào hóa đơn Hoàn tiền…",
        outcomes[1]), outcomes
    receipt = _text(cashier.get(f"/invoices/{iid}/receipt").get_data(as_text=True))
    assert "Đã hoàn 35.000 ₫" in receipt and "Tiền thừa còn lại" not in receipt, receipt[-2500:]
    printed = _text(receipts.receipt_html(receipts.receipt_view(db, db["receipts"].find_one({"_id": iid}))))
    assert "Người bệnh đã trả 75.000 ₫" in printed and "Đã hoàn trả 35.000 ₫" in printed, printed  # the PDF's page
    assert "10.000 ₫" not in printed and "Tiền thừa còn lại" not in printed
    cashier.post("/language", data={"lang": "en", "next": f"/invoices/{iid}", "csrf_token": csrf_token(page)})
    outcomes = _outcomes(cashier.get(f"/invoices/{iid}").get_data(as_text=True))
    assert outcomes[1].endswith("; 40.000 ₫ still counted toward the invoice Refund…") and outcomes[0].startswith(
        "Refunded 10.000 ₫ ("), outcomes
    cashier.post("/language", data={"lang": "vi", "next": f"/invoices/{iid}", "csrf_token": csrf_token(page)})
