"""The cashier's last forms posted by the browser, now sent in place, on a flaky link (the answer lost on the way
back): the shift's open ("Mở ca"), the new invoice's issue ("Tạo và phát hành hóa đơn"), and on an invoice's page the
cash, the refund, the cancel and the BHYT card. A lost answer was Chromium's own English error page; now the page
stays, what was typed is kept, and the form's own box says in Vietnamese that the connection failed and to try
again; sent again, billing does it once (the form's key is its
Idempotency-Key). The answers are lost by the test (Playwright's routes: the portal did what was asked, its answer
reset), not timed. On an invoice's page the status box's polls are answered 204 (nothing to swap) meanwhile, so the
page is the one the cashier saw when the answer was lost."""

from __future__ import annotations

import re
from datetime import datetime

import httpx
import pytest
from playwright.sync_api import expect

from tests.browser.test_roles import _cashier_api, _issued_invoice, _open_shift, issued_at_the_desk
from tests.browser.test_slow_link import losing_the_first_answer, said_not_sent
from tests.support import VN_TZ

pytestmark = pytest.mark.integration


def _summary(stack, iid: str) -> dict:
    return httpx.get(f"{stack['billing']}/payments/invoices/{iid}", headers=_cashier_api(stack), timeout=30).json()


def _on_the_invoice(v, iid: str):
    """The cashier on invoice ``iid``'s page, its status polls held (answered 204): the page as she saw it."""
    v.page.route(re.compile(r".*/invoices/[^/]+/status\?.*"), lambda route: route.fulfill(status=204))
    v.go(f"/invoices/{iid}")
    return v.page


def _lose_the_answer(page, path: str) -> list[int]:
    sent: list[int] = []
    page.route(re.compile(rf".*{re.escape(path)}(\?.*)?$"), losing_the_first_answer(sent))
    return sent


def test_a_shift_open_whose_answer_is_lost_keeps_the_count_and_opens_one_shift(visitor_factory, stack):
    v = visitor_factory("vi-360-in-place-shift-open", width=360, height=740)
    v.sign_in("cashier")
    v.go("/shift")
    page = v.page
    if page.locator("input[name=which][value=close]").count():  # the shared stack's shift: closed first
        page.fill("#close-counted_cash", "0")
        page.fill("#close-counted_transfers", "0")
        page.fill("#close-note", "Đóng để mở lại (kiểm thử).")
        page.click("form:has(input[value=close]) button.primary")
        page.check("[data-testid=confirm-tick]")
        page.click("[data-testid=confirm-button]")
        expect(page.locator("[data-testid=shift-summary]")).to_be_visible()
        v.go("/shift")
    page.fill("#open-opening_cash", "350.000")
    sent = _lose_the_answer(page, "/shift")
    page.click("form:has(input[value=open]) button.primary")
    said_not_sent(page, "#shift-open-live-error")
    assert sent == [204] and page.url.endswith("/shift")  # the portal opened it; the page stayed
    assert page.input_value("#open-opening_cash") == "350.000"
    v.check("shift-open-connection-lost")
    page.click("form:has(input[value=open]) button.primary")  # sent again: billing answers the shift it opened
    expect(page.locator("input[name=which][value=close]")).to_have_count(1)
    expect(page.locator("main .alert.error:visible")).to_have_count(0)  # not "a shift is open already"
    expect(page.locator("[data-testid=shift-expected] dd").first).to_have_text("350.000\u00a0₫")


def test_a_new_invoice_whose_answer_is_lost_is_issued_once_when_sent_again(visitor_factory, stack):
    def invoices() -> int:
        r = httpx.get(f"{stack['billing']}/fhir/Invoice", params={"subject": "Patient/bn-0004", "_count": "200"},
                      headers=_cashier_api(stack), timeout=30)
        return sum(1 for e in r.json().get("entry", []) if e.get("search", {}).get("mode", "match") == "match")

    before = invoices()
    v = visitor_factory("vi-360-in-place-invoice-new", width=360, height=740)
    v.sign_in("cashier")
    v.go("/invoices/new?p=bn-0004&line_service=kham-benh&line_qty=2")
    page = v.page
    sent = _lose_the_answer(page, "/invoices/new")
    page.click("[data-testid=issue]")
    said_not_sent(page, "#issue-live-error")
    assert sent == [204] and "/invoices/new" in page.url
    expect(page.locator("input[name=line_qty]")).to_have_value("2")  # the draft kept
    v.check("invoice-new-connection-lost")
    page.click("[data-testid=issue]")  # sent again: the same charges, invoice and issue (billing replays them)
    expect(page.locator("[data-testid=issued]")).to_be_visible()
    assert invoices() == before + 1


def test_cash_whose_answer_is_lost_is_one_payment_when_sent_again(visitor_factory, stack):
    iid, owed = _issued_invoice(stack)
    v = visitor_factory("vi-360-in-place-cash", width=360, height=740)
    v.sign_in("cashier")
    _open_shift(v)
    page = _on_the_invoice(v, iid)
    page.click("#cash-box summary")
    sent = _lose_the_answer(page, f"/invoices/{iid}/cash")
    page.click("#cash-box button.primary")
    said_not_sent(page, "#cash-live-error")
    assert sent == [204] and _summary(stack, iid)["paid"] == owed  # recorded; the page stayed
    v.check("cash-connection-lost")
    page.click("#cash-box button.primary")  # sent again: this form's cash is recorded already, nothing new
    expect(page.locator("[data-testid=paid]")).to_be_visible()
    s = _summary(stack, iid)
    assert len(s["payments"]) == 1 and s["paid"] == owed


def test_a_refund_whose_answer_is_lost_gives_back_once_when_sent_again(visitor_factory, stack):
    iid, owed = _issued_invoice(stack)
    h = {**_cashier_api(stack), "Content-Type": "application/json"}  # paid in cash at another desk, its own shift
    assert httpx.post(f"{stack['billing']}/payments/shifts", headers=h, json={"openingCash": 0}).status_code == 201
    r = httpx.post(f"{stack['billing']}/payments/cash", headers=h, timeout=30,
                   json={"invoice": iid, "amount": owed + 7_000, "transactionId": f"in-place-{iid}"})
    assert r.status_code == 201, r.text[:300]
    v = visitor_factory("vi-1280-in-place-refund")
    v.sign_in("cashier")
    page = _on_the_invoice(v, iid)
    box = page.locator("#refund-box")
    if not box.evaluate("d => d.open"):
        box.locator("summary").click()
    box.locator("select[name=method]").select_option("transfer")  # by transfer: no shift of hers needed
    box.locator("textarea[name=reason]").fill("Trả lại tiền thừa.")
    box.locator("button.danger").click()  # the step, in place: nothing given back yet
    expect(page.locator("#refund-box [data-testid=confirm-step]")).to_be_visible()
    sent = _lose_the_answer(page, f"/invoices/{iid}/refund")
    page.locator("#refund-box [data-testid=confirm-tick]").check()
    page.locator("#refund-box [data-testid=confirm-button]").click()
    said_not_sent(page, "#refund-live-error")
    assert sent == [204] and page.locator("#refund-box textarea[name=reason]").input_value() == "Trả lại tiền thừa."
    page.locator("#refund-box [data-testid=confirm-button]").click()  # sent again: billing replays the refund
    expect(page.locator("[data-testid=refunded]")).to_have_text("Đã ghi nhận hoàn tiền.")
    s = _summary(stack, iid)
    assert len(s["refunds"]) == 1 and s["refunded"] == 7_000


def test_a_cancel_whose_answer_is_lost_keeps_the_reason_and_cancels_once(visitor_factory, stack):
    iid, _owed = _issued_invoice(stack)
    v = visitor_factory("vi-1280-in-place-cancel")
    v.sign_in("cashier")
    page = _on_the_invoice(v, iid)
    page.click("#cancel-box summary")
    page.fill("#cancel-reason", "Lập nhầm dịch vụ.")
    page.click("#cancel-box button.danger")  # the step, in place: nothing cancelled yet
    expect(page.locator("#cancel-box [data-testid=confirm-step]")).to_be_visible()
    sent = _lose_the_answer(page, f"/invoices/{iid}/cancel")
    page.check("#cancel-box [data-testid=confirm-tick]")
    page.click("#cancel-box [data-testid=confirm-button]")
    said_not_sent(page, "#cancel-live-error")
    assert sent == [204] and page.input_value("#cancel-reason") == "Lập nhầm dịch vụ."
    v.check("cancel-connection-lost")
    page.click("#cancel-box [data-testid=confirm-button]")  # sent again: billing replays the cancel
    expect(page.locator("[data-testid=cancelled]")).to_be_visible()
    expect(page.locator("main .alert.error:visible")).to_have_count(0)
    history = httpx.get(f"{stack['billing']}/fhir/Invoice/{iid}/_history", headers=_cashier_api(stack), timeout=30)
    assert [e["resource"]["status"] for e in history.json()["entry"]].count("cancelled") == 1


def test_a_bhyt_card_whose_answer_is_lost_makes_the_invoice_again_once(visitor_factory, stack):
    # a demo patient no other browser test invoices: billing keeps the card, and BHYT then pays all of her invoices
    iid, _charges = issued_at_the_desk(stack, "Patient/bn-0008")
    v = visitor_factory("vi-360-in-place-card", width=360, height=740)
    v.sign_in("cashier")
    page = _on_the_invoice(v, iid)
    page.click("#card-box summary")
    year = datetime.now(VN_TZ).year
    page.fill("#card-card_number", "HT2878709876543")
    page.select_option("#card-card_level", "100")
    page.fill("#card-card_start", f"01/01/{year - 1}")
    page.fill("#card-card_end", f"31/12/{year + 1}")
    sent = _lose_the_answer(page, f"/invoices/{iid}/card")
    page.click("#card-box button.primary")
    said_not_sent(page, "#card-live-error")
    assert sent == [204] and page.input_value("#card-card_number") == "HT2878709876543"
    v.check("card-connection-lost")
    page.click("#card-box button.primary")  # sent again: the invoice made again already, its page
    expect(page.locator("[data-testid=carded]")).to_be_visible()
    expect(page.locator("[data-testid=replaces-link]")).to_have_count(1)
    inv = httpx.get(f"{stack['billing']}/fhir/Invoice/{iid}", headers=_cashier_api(stack), timeout=30).json()
    assert len([e for e in inv.get("extension") or [] if "invoice-replaced-by" in e["url"]]) == 1
