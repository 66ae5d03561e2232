"""What the cashier's pages check before their confirmation step, and what they say after a colleague
(web/cashier.py), billing faked as it answers (specs/billing.yaml): the opening cash is asked, never
assumed; a shift's gap without a note is said once, before the step; a refund over what the payment
can give back is refused before the step, with billing's own sentence; a give-back a colleague made
meanwhile names who and when; cash over the balance due records the balance and says the change; a
paid invoice says why it offers no refund; the search's amount column says what is still owed."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from sen_portal.web.backend import BackendError

from services.portal.tests.cashier_support import ShiftBilling
from tests.support import csrf_token, portal_app, portal_signed_in

GAP_VI = ("Số đếm được khác với số phải có (tiền mặt +20.000\u00a0₫, chuyển khoản -25.000\u00a0₫): "
          "hãy ghi chú lý do rồi đóng ca.")


@pytest.fixture()
def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    return portal_app(tmp_path, monkeypatch, SEN_PORTAL_CACHE_SECONDS="0")


class Billing(ShiftBilling):
    """billing's JSON answers (``cashier._json``: the shift, the refund tasks, a refund's refusal) and its
    summaries (``cashier.shared_get``)."""

    def __init__(self) -> None:
        super().__init__({"cashTaken": 70000, "cashRefunded": 30000, "cash": 40000, "transfers": 25000})
        self.refund_refusal: BackendError | None = None
        self.summary: dict[str, Any] = {}
        self.tasks: list[dict[str, Any]] = []

    def other(self, method: str, path: str, body: Any) -> Any:
        if (method, path) == ("GET", "/payments/refund-tasks"):
            return {"tasks": self.tasks}
        if path.endswith("/refund") and self.refund_refusal is not None:
            raise self.refund_refusal
        return {}

    def shared_get(self, service, path, params=None, **_kw):
        inv = {"resourceType": "Invoice", "id": "inv-a", "status": self.summary.get("status", "issued"),
               "subject": {"reference": "Patient/pa"}, "totalGross": {"value": self.summary.get("owed"),
                                                                      "currency": "VND"}}
        return {**self.summary, "resource": inv, "qr": None}


@pytest.fixture()
def billing(monkeypatch) -> Billing:
    from sen_portal.web import cashier

    fake = Billing()
    monkeypatch.setattr(cashier, "_json", fake)
    monkeypatch.setattr(cashier, "shared_get", fake.shared_get)
    monkeypatch.setattr(cashier, "patient_names", lambda ids: {"pa": "Nguyễn Thị Mai"})
    return fake


def test_an_empty_opening_cash_is_asked_for_and_a_typed_0_opens(app, billing):
    billing.shift_open = False
    client = portal_signed_in(app, "cashier")
    token = csrf_token(client.get("/shift").get_data(as_text=True))
    r = client.post("/shift", data={"which": "open", "open-opening_cash": "", "csrf_token": token})
    page = r.get_data(as_text=True)
    assert r.status_code == 422 and billing.posted() == []
    assert re.findall(r'<p class="error" id="open-opening_cash-error">([^<]*)</p>', page) == [
        "Hãy đếm tiền mặt trong két và nhập số đếm được (nhập 0 nếu không có)."]
    r = client.post("/shift", data={"which": "open", "open-opening_cash": "0", "csrf_token": token})
    assert r.status_code == 302 and billing.posted()[-1][2] == {"openingCash": 0}


def test_a_gap_without_a_note_is_said_once_before_the_confirmation_step(app, billing):
    client = portal_signed_in(app, "cashier")
    token = csrf_token(client.get("/shift").get_data(as_text=True))
    counts = {"which": "close", "close-counted_cash": "60.000", "close-counted_transfers": "0", "csrf_token": token}
    r = client.post("/shift", data=counts)  # the first press: no step, the note asked for
    page = r.get_data(as_text=True)
    assert r.status_code == 422 and billing.posted() == []
    assert page.count(GAP_VI) == 1
    assert re.findall(r'<p class="error" id="close-note-error">([^<]*)</p>', page) == [GAP_VI]
    assert 'name="confirm" value="shift-close"' not in page
    # the totals moved after the form's check (billing's 422 at the end): still said once, on the note
    billing.expected = {**billing.expected, "cash": 60000, "transfers": 0}
    billing.close_refusal = BackendError(
        "refused", "billing", 422, "the counted totals differ from the expected ones (cash +20000, transfers -25000 "
        "đồng): a note must say why", "Unprocessable Content", {"difference": {"cash": 20000, "transfers": -25000}})
    r = client.post("/shift", data={**counts, "confirm": "shift-close"})
    page = r.get_data(as_text=True)
    assert r.status_code == 422 and page.count(GAP_VI) == 1
    assert re.findall(r'<p class="error" id="close-note-error">([^<]*)</p>', page) == [GAP_VI]
    # with the note: the step, then closed
    billing.close_refusal = None
    r = client.post("/shift", data={**counts, "close-note": "đếm sót"})
    assert r.status_code == 200 and 'name="confirm" value="shift-close"' in r.get_data(as_text=True)
    r = client.post("/shift", data={**counts, "close-note": "đếm sót", "confirm": "shift-close"})
    assert r.status_code == 200 and billing.posted()[-1][2]["note"] == "đếm sót"


PAID_LATE = {"status": "balanced", "owed": 20000, "paid": 20000, "balanceDue": 0, "credit": 0,
             "reference": "HDMFTWH75FS",
             "payments": [{"id": "cashier:c1", "channel": "cash", "amount": 20000, "outcome": "applied",
                           "refundable": 0, "receivedAt": "2026-12-05T21:41:00+07:00"},
                          {"id": "sepay:t2", "channel": "transfer", "provider": "sepay", "amount": 25000,
                           "outcome": "late-balanced", "lateInvoice": True, "refundable": 25000,
                           "receivedAt": "2026-12-05T21:42:00+07:00"}]}


def test_a_refund_over_the_payment_is_refused_before_the_confirmation_step(app, billing):
    billing.summary = PAID_LATE
    client = portal_signed_in(app, "cashier")
    token = csrf_token(client.get("/invoices/inv-a").get_data(as_text=True))
    form = {"payment": "sepay:t2", "amount": "100.000", "method": "transfer", "reason": "chuyển nhầm",
            "txn": "k1", "csrf_token": token}
    r = client.post("/invoices/inv-a/refund", data=form)
    page = r.get_data(as_text=True)
    said = "Chỉ có thể hoàn tối đa 25.000\u00a0₫ từ khoản thanh toán này."
    assert r.status_code == 422 and billing.posted() == []
    assert page.count(said) == 1 and "Sẽ hoàn 100.000" not in page
    assert 'name="confirm" value="refund"' not in page
    r = client.post("/invoices/inv-a/refund", data={**form, "amount": "25.000"})  # what fits: the step
    assert r.status_code == 200 and 'name="confirm" value="refund"' in r.get_data(as_text=True)


GIVEN_BACK = {"payment": "sepay:t2", "invoice": "inv-a", "amount": 25000, "reason": "chuyển nhầm",
              "cashier": "portal-cashier2", "cashierName": "Trần Văn Bình", "at": "2026-12-05T14:42:00+00:00"}
TASK = {"kind": "task", "payment": "sepay:t2", "invoice": "inv-a", "reference": "HDMFTWH75FS", "amount": 25000,
        "reason": "invoice-balanced", "facility": "tyt-my-hiep", "receivedAt": "2026-12-05T21:42:00+07:00",
        "channel": "transfer", "provider": "sepay", "subject": "Patient/pa", "refunded": False}


def test_a_give_back_a_colleague_made_meanwhile_names_who_and_when(app, billing):
    billing.tasks = [TASK]
    client = portal_signed_in(app, "cashier")
    page = client.get("/refunds").get_data(as_text=True)  # the second tab, before the colleague's give-back
    assert 'name="invoice" value="inv-a"' in page
    form = {"payment": "sepay:t2", "invoice": "inv-a", "method": "transfer", "reason": "trả lại", "txn": "k2",
            "csrf_token": csrf_token(page)}
    billing.tasks = []  # the colleague gave it back
    billing.summary = {**PAID_LATE, "refunds": [GIVEN_BACK]}
    said = ("Khoản tiền này đã được hoàn rồi, do Trần Văn Bình lúc 05/12/2026 21:42 (25.000\u00a0₫): "
            "không còn gì để hoàn.")
    r = client.post("/refunds/give-back", data=form)  # the first press: the row is gone
    assert r.status_code == 409 and said in r.get_data(as_text=True) and billing.posted() == []
    # the confirmed press: billing's 409 carries the refund
    billing.refund_refusal = BackendError("refused", "billing", 409, "this payment was refunded already",
                                          "Conflict", {"refund": GIVEN_BACK})
    billing.tasks = [{**TASK, "payment": "sepay:t9"}]  # the list is kept, its other rows shown
    r = client.post("/refunds/give-back", data={**form, "confirm": "give-back"})
    page = r.get_data(as_text=True)
    assert r.status_code == 409 and page.count(said) == 1 and 'value="sepay:t9"' in page
    # the invoice page's refund says the same
    r = client.post("/invoices/inv-a/refund", data={**form, "confirm": "refund"})
    assert r.status_code == 409 and said in r.get_data(as_text=True)


def test_a_cashiers_own_refund_another_request_recorded_is_said_as_theirs_with_who_and_when(app, billing):
    """A cashier's refund (its decision theirs) that another request recorded: a colleague finishing it (billing's
    ``startedBy`` is this cashier, ``cashier`` the colleague) or their own second click. Billing's 409 'refunded
    already' carries the record: the page said 'Khoản thanh toán này đã được hoàn rồi.' / 'money given back by
    Trần Văn Bình' as if someone else's; now it is theirs, recorded, by whom and when (Vietnam time)."""
    billing.tasks, billing.summary = [TASK], PAID_LATE
    client = portal_signed_in(app, "cashier")  # billing knows them as portal-cashier
    page = client.get("/refunds").get_data(as_text=True)
    form = {"payment": "sepay:t2", "invoice": "inv-a", "method": "transfer", "reason": "trả lại", "txn": "k3",
            "csrf_token": csrf_token(page), "confirm": "give-back"}
    finished = {**GIVEN_BACK, "startedBy": {"cashier": "portal-cashier", "cashierName": "Thu ngân", "at": None}}
    cases = {
        ("vi", "Khoản hoàn 25.000\u00a0₫ của bạn đã được ghi nhận (bởi Trần Văn Bình, lúc 05/12/2026 21:42): khoản này "
               "tính vào ca của người đó và người đó trả tiền; bạn không cần làm gì thêm."): finished,
        # their own record: a second click, another tab, or a new try once nothing is left (billing's 409 is the
        # same for all three): given back already, by their name
        ("vi", "Khoản tiền này đã được hoàn rồi, do Thu ngân lúc 05/12/2026 21:42 (25.000\u00a0₫)"):
            {**GIVEN_BACK, "cashier": "portal-cashier", "cashierName": "Thu ngân"},
        # a colleague's own refund: given back by them, as before
        ("vi", "Khoản tiền này đã được hoàn rồi, do Trần Văn Bình lúc 05/12/2026 21:42 (25.000\u00a0₫)"): GIVEN_BACK,
        ("en", "Your refund of 25.000\u00a0₫ was recorded (by Trần Văn Bình, at 05/12/2026 21:42): it counts in "
               "their shift and they hand the money over; nothing more to do."): finished,
    }
    for (lang, said), refund in cases.items():
        if lang == "en":
            client.post("/language", data={"lang": "en", "next": "/refunds", "csrf_token": form["csrf_token"]})
        billing.refund_refusal = BackendError("refused", "billing", 409, "this payment was refunded already",
                                              "Conflict", {"refund": refund})
        for url in ("/refunds/give-back", "/invoices/inv-a/refund"):
            r = client.post(url, data={**form, "confirm": "give-back" if "give-back" in url else "refund"})
            assert r.status_code == 409 and said in r.get_data(as_text=True).replace("&#39;", "'"), (url, said)


def test_a_refund_billing_says_is_being_given_back_meanwhile_is_said_in_vietnamese(app, billing):
    """Billing's 409 when the refund rounds are used up (two cashiers at once, a2e28f2) had no sentence: the page
    said the general 'changed meanwhile' one."""
    billing.tasks = [TASK]
    client = portal_signed_in(app, "cashier")
    page = client.get("/refunds").get_data(as_text=True)
    billing.refund_refusal = BackendError("refused", "billing", 409, "this payment is being given back meanwhile; "
                                          "try again", "Conflict")
    r = client.post("/refunds/give-back", data={"payment": "sepay:t2", "invoice": "inv-a", "method": "transfer",
                                                "reason": "trả lại", "txn": "k4", "csrf_token": csrf_token(page),
                                                "confirm": "give-back"})
    assert r.status_code == 409
    assert ("Có người đang hoàn khoản thanh toán này. Tải lại trang để xem còn lại bao nhiêu rồi thử lại."
            in r.get_data(as_text=True))


def test_cash_over_the_balance_records_the_balance_and_says_the_change(app, billing):
    billing.summary = {"status": "issued", "owed": 20000, "paid": 0, "balanceDue": 20000, "payments": []}
    client = portal_signed_in(app, "cashier")
    token = csrf_token(client.get("/invoices/inv-a").get_data(as_text=True))
    r = client.post("/invoices/inv-a/cash", data={"cash-amount": "50.000", "cash-txn": "c" * 32, "csrf_token": token})
    assert r.status_code == 302
    assert billing.posted()[-1][1:] == ("/payments/cash", {"invoice": "inv-a", "amount": 20000,
                                                           "transactionId": "c" * 32})
    page = client.get(r.headers["Location"]).get_data(as_text=True)
    assert "Tiền thối lại: 30.000\u00a0₫" in page
    # a second click of the same form: recorded already (its payment is on the invoice), nothing sent again; the page
    # says the change again (sent again after the first's answer was lost, the cashier never saw it: session 30)
    billing.summary = {"status": "balanced", "owed": 20000, "paid": 20000, "balanceDue": 0,
                       "payments": [{"id": "cashier:" + "c" * 32, "channel": "cash", "amount": 20000}]}
    sent = len(billing.posted())
    r = client.post("/invoices/inv-a/cash", data={"cash-amount": "50.000", "cash-txn": "c" * 32, "csrf_token": token})
    assert r.status_code == 302 and len(billing.posted()) == sent
    assert "Tiền thối lại: 30.000 ₫" in client.get(r.headers["Location"]).get_data(as_text=True)
    # the excess kept as the patient's credit, when the cashier says so
    billing.summary = {"status": "issued", "owed": 20000, "paid": 0, "balanceDue": 20000, "payments": []}
    r = client.post("/invoices/inv-a/cash", data={"cash-amount": "50.000", "cash-txn": "d" * 32,
                                                  "cash-keep_credit": "y", "csrf_token": token})
    assert r.status_code == 302 and billing.posted()[-1][2]["amount"] == 50000
    assert "Tiền thối lại" not in client.get(r.headers["Location"]).get_data(as_text=True)


def test_a_paid_invoice_with_everything_given_back_says_nothing_is_left(app, billing):
    billing.summary = {**PAID_LATE, "payments": [{**PAID_LATE["payments"][0], "refunded": 20000}]}
    page = portal_signed_in(app, "cashier").get("/invoices/inv-a").get_data(as_text=True)
    assert 'data-testid="refund-box"' not in page and 'data-testid="refund-after-link"' not in page
    assert re.search(r'data-testid="no-refund-paid">Đã thanh toán đủ và mọi khoản đã được hoàn', page)


PAID = {**PAID_LATE, "payments": [{**PAID_LATE["payments"][0], "refundableAfterSettlement": 20000},
                                  {"id": "sepay:t3", "channel": "transfer", "provider": "sepay", "amount": 5000,
                                   "outcome": "applied", "refundable": 0, "refundableAfterSettlement": 5000,
                                   "receivedAt": "2026-12-05T21:43:00+07:00"}]}


def test_a_paid_invoices_payment_is_refunded_after_payment_with_a_reason_and_a_confirmation(app, billing):
    billing.summary = PAID
    client = portal_signed_in(app, "cashier")
    page = client.get("/invoices/inv-a").get_data(as_text=True)
    # each payment's line offers "Hoàn tiền…", opening the box with that payment chosen
    assert page.count('data-testid="refund-after-link"') == 2 and "Hoàn tiền…" in page
    assert 'data-testid="no-refund-paid"' not in page
    page = client.get("/invoices/inv-a?refund=sepay:t3").get_data(as_text=True)
    assert re.search(r'<details id="refund-box" open', page) and "Hoàn tiền sau thanh toán" in page
    assert re.search(r'value="sepay:t3" data-method="transfer" checked', page)
    assert 'name="after" value="cashier:c1 sepay:t3"' in page
    token = csrf_token(page)
    form = {"payment": "sepay:t3", "after": "cashier:c1 sepay:t3", "amount": "3.000", "method": "transfer",
            "reason": "Dịch vụ không thực hiện", "txn": "r" * 32, "csrf_token": token}
    over = client.post("/invoices/inv-a/refund", data={**form, "amount": "6.000"})  # more than the payment
    assert over.status_code == 422 and billing.posted() == []
    assert "5.000 ₫" in over.get_data(as_text=True)
    r = client.post("/invoices/inv-a/refund", data=form)  # the first press: the confirmation step
    step = r.get_data(as_text=True)
    assert r.status_code == 200 and billing.posted() == [] and 'name="confirm" value="refund"' in step
    assert "Hóa đơn vẫn là đã thanh toán; biên lai ghi khoản hoàn này." in step
    assert 'name="after" value="cashier:c1 sepay:t3"' in step  # carried as shown, through the step
    r = client.post("/invoices/inv-a/refund", data={**form, "confirm": "refund"})
    assert r.status_code == 302
    assert billing.posted()[-1][1:] == ("/payments/sepay:t3/refund", {
        "reason": "Dịch vụ không thực hiện", "method": "transfer", "amount": 3000, "afterSettlement": True})


def test_a_credit_refund_never_asks_for_a_refund_after_settlement(app, billing):
    """A payment not offered as a refund after settlement when the page was shown (the credit's box):
    billing is asked for the credit only, whatever the summary says now."""
    billing.summary = PAID
    client = portal_signed_in(app, "cashier")
    token = csrf_token(client.get("/invoices/inv-a").get_data(as_text=True))
    r = client.post("/invoices/inv-a/refund", data={
        "payment": "sepay:t3", "after": "", "method": "transfer", "reason": "Tiền thừa", "txn": "s" * 32,
        "csrf_token": token, "confirm": "refund"})
    assert r.status_code == 302 and "afterSettlement" not in billing.posted()[-1][2]


def test_a_refund_after_payment_shows_on_the_invoice_and_the_receipt(app, billing, monkeypatch):
    refund = {"payment": "cashier:c1", "amount": 20000, "at": "2026-12-05T22:00:00+07:00", "channel": "cash",
              "reason": "Thu nhầm dịch vụ", "cashier": "thu-ngan-an", "cashierName": "Nguyễn Thị An",
              "afterSettlement": True}
    billing.summary = {**PAID_LATE, "refunded": 20000,
                       "payments": [{**PAID_LATE["payments"][0], "refunded": 20000}], "refunds": [refund]}
    client = portal_signed_in(app, "cashier")
    page = client.get("/invoices/inv-a").get_data(as_text=True)
    assert re.search(r'data-testid="refund-after-payment">Đã hoàn sau thanh toán</span> Thu nhầm dịch vụ', page)
    assert "Nguyễn Thị An" in page


PART_PAID = {"status": "issued", "owed": 40000, "paid": 10000, "balanceDue": 30000, "credit": 0,
             "reference": "HD2RXD3FDH5",
             "payments": [{"id": "cashier:c1", "channel": "cash", "provider": "cashier", "amount": 10000,
                           "outcome": "applied", "refundable": 10000, "receivedAt": "2026-12-06T00:28:00+07:00"}]}


def test_a_refund_with_no_amount_typed_says_the_amount_billing_will_give_back(app, billing):
    """Review 5 (ca11-confirm.png): the amount left blank ("all that can be"), the step said "Toàn bộ số
    tiền có thể hoàn của khoản thanh toán đã chọn…" and no amount, where one typed reads "Sẽ hoàn 20.000 ₫
    …". The step names what billing will give back, as billing computes it: a payment toward an invoice
    still owed whole, a paid invoice's payment its credit left, a refund after settlement the payment;
    only when billing does not answer, the sentence without an amount."""
    client = portal_signed_in(app, "cashier")
    cases = [(PART_PAID, "cashier:c1", "", "cash", "Sẽ hoàn 10.000\u00a0₫ cho người bệnh bằng tiền mặt."),
             ({**PAID_LATE, "status": "balanced", "paid": 45000, "credit": 25000,
               "payments": [{**PAID_LATE["payments"][0], "amount": 45000, "refundable": 25000}]},
              "cashier:c1", "", "cash", "Sẽ hoàn 25.000\u00a0₫ cho người bệnh bằng tiền mặt."),
             (PAID, "sepay:t3", "cashier:c1 sepay:t3", "transfer",
              "Sẽ hoàn 5.000\u00a0₫ cho người bệnh bằng chuyển khoản.")]
    for summary, payment, after, method, said in cases:
        billing.summary = summary
        token = csrf_token(client.get("/invoices/inv-a").get_data(as_text=True))
        r = client.post("/invoices/inv-a/refund", data={
            "payment": payment, "after": after, "amount": "", "method": method, "reason": "Khách đổi ý",
            "txn": "b" * 32, "csrf_token": token})
        step = r.get_data(as_text=True)
        assert r.status_code == 200 and 'name="confirm" value="refund"' in step, step
        assert said in step and "Toàn bộ số tiền" not in step, (payment, step)
        assert billing.posted() == []


def test_a_refund_with_no_amount_typed_when_billing_does_not_answer_says_all_that_can_be(app, billing, monkeypatch):
    from sen_portal.web import cashier

    billing.summary = PART_PAID
    client = portal_signed_in(app, "cashier")
    token = csrf_token(client.get("/invoices/inv-a").get_data(as_text=True))

    def down(iid, **_kw):
        raise BackendError("down", "billing", 0, "billing is down")

    monkeypatch.setattr(cashier, "summary", down)
    r = client.post("/invoices/inv-a/refund", data={
        "payment": "cashier:c1", "amount": "", "method": "cash", "reason": "Khách đổi ý", "txn": "b" * 32,
        "csrf_token": token})
    step = r.get_data(as_text=True)
    assert r.status_code == 200 and "Toàn bộ số tiền có thể hoàn của khoản thanh toán đã chọn" in step
