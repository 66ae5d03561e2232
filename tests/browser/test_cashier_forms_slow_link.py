"""The cashier's forms on a flaky link, their answer lost on the way back: the refund list's give-back ("Hoàn …"),
the unmatched transfers' assignment ("Gán") and the shift's close ("Đóng ca"). They were posted by the browser: a
lost answer was Chromium's own English error page, the page gone. Sent in place now (_form.html's sent_in_place):
the page stays and the form's own box says in Vietnamese that the connection failed, what was typed or chosen kept
(the form's key too); sent again, it is done once (billing's Idempotency-Key replays the first refund, assignment or
close). The answers are lost by the test (Playwright's routes: the portal did what was asked, its answer reset), not
timed."""

from __future__ import annotations

import re
import uuid

import httpx
import pytest
from playwright.sync_api import expect

from tests.browser.test_roles import _cashier_api, _issued_invoice, _open_shift, _page_with, _unmatched_transfer
from tests.browser.test_slow_link import losing_the_first_answer, said_not_sent

pytestmark = pytest.mark.integration


def _credit_of(stack: dict[str, str], extra: int) -> tuple[str, int]:
    """An issued invoice of the demo facility paid in cash at another desk with ``extra`` đồng over what it owed (the
    patient's credit, a row of the refund list): (its id, what it owed)."""
    iid, owed = _issued_invoice(stack)
    h = {**_cashier_api(stack), "Content-Type": "application/json"}  # a cashier of its own, a shift of its own
    r = httpx.post(f"{stack['billing']}/payments/shifts", headers=h, json={"openingCash": 0}, timeout=30)
    assert r.status_code == 201, r.text[:300]
    r = httpx.post(f"{stack['billing']}/payments/cash", headers=h, timeout=30,
                   json={"invoice": iid, "amount": owed + extra, "transactionId": uuid.uuid4().hex})
    assert r.status_code == 201, r.text[:300]
    return iid, owed


def _row_on_the_list(v, iid: str):
    """The refund list's row of invoice ``iid``, following the list's next pages (oldest first) until it shows."""
    v.go("/refunds")
    row = v.page.locator("tr", has=v.page.locator(f"a[href='/invoices/{iid}']"))
    for page in range(2, 22):
        if row.count() or not v.page.locator("[data-testid=refund-tasks-next]").count():
            break
        v.page.click("[data-testid=refund-tasks-next]")
        # the next page is there when its number is (the click's own wait for the navigation it starts is
        # not a promise Playwright keeps; "networkidle" on the page being left could return at once)
        expect(v.page.locator("[data-testid=refund-tasks-page]")).to_have_text(f"Trang {page}")
    assert row.count() == 1
    return row


def test_a_give_back_whose_answer_is_lost_keeps_the_list_and_gives_back_once_when_sent_again(visitor_factory, stack):
    iid, _owed = _credit_of(stack, 11_000)
    v = visitor_factory("vi-360-slow-give-back", width=360, height=740)
    v.sign_in("cashier")
    row = _row_on_the_list(v, iid)
    page = v.page
    row.locator("[data-testid=give-back-box] summary").click()
    row.locator("select[name=method]").select_option("transfer")  # by transfer: no shift of hers needed
    row.locator("textarea[name=reason]").fill("Trả lại tiền thừa qua chuyển khoản.")
    row.locator("[data-testid=give-back]").click()  # the step, in place: nothing given back yet
    expect(row.locator("[data-testid=confirm-step]")).to_be_visible()
    url = page.url
    sent: list[int] = []
    page.route(re.compile(r".*/refunds/give-back(\?.*)?$"), losing_the_first_answer(sent))
    row.locator("[data-testid=confirm-tick]").check()
    row.locator("[data-testid=confirm-button]").click()
    said_not_sent(page, "[id^=give-back-live-error-]:visible")
    assert sent == [204] and page.url == url  # the portal gave it back; the list stayed
    assert row.locator("textarea[name=reason]").input_value() == "Trả lại tiền thừa qua chuyển khoản."
    summary = httpx.get(f"{stack['billing']}/payments/invoices/{iid}", headers=_cashier_api(stack), timeout=30).json()
    assert summary["refunded"] == 11_000
    v.check("give-back-connection-lost")
    row.locator("[data-testid=confirm-button]").click()  # sent again: the same refund, answered
    expect(page.locator("[data-testid=given-back]")).to_have_text("Đã ghi nhận hoàn tiền.")
    expect(page.locator("tr", has=page.locator(f"a[href='/invoices/{iid}']"))).to_have_count(0)
    summary = httpx.get(f"{stack['billing']}/payments/invoices/{iid}", headers=_cashier_api(stack), timeout=30).json()
    assert summary["refunded"] == 11_000 and len(summary["refunds"]) == 1  # given back once


def test_an_assignment_whose_answer_is_lost_keeps_the_queue_and_is_done_once_when_sent_again(visitor_factory, stack):
    iid, owed = _issued_invoice(stack)
    note = f"CK mat ket noi {uuid.uuid4().hex[:6]}"  # no bill reference: waits in the queue
    _unmatched_transfer(stack, note, owed)
    v = visitor_factory("vi-360-slow-assign", width=360, height=740)
    v.sign_in("cashier", to="/unmatched")
    _page_with(v, note)
    page = v.page
    row = page.locator("tr", has_text=note)
    row.locator("select[name=invoice]").select_option(iid)
    url = page.url
    sent: list[int] = []
    page.route(re.compile(r".*/unmatched(\?.*)?$"), losing_the_first_answer(sent))
    row.locator("button").click()
    said_not_sent(page, "[id^=unmatched-live-error-]:visible")
    assert sent == [200] and page.url == url  # the portal put it on the invoice; the queue stayed
    assert row.locator("select[name=invoice]").input_value() == iid  # the choice kept
    summary = httpx.get(f"{stack['billing']}/payments/invoices/{iid}", headers=_cashier_api(stack), timeout=30).json()
    assert summary["status"] == "balanced"
    v.check("assign-connection-lost")
    row.locator("button").click()  # sent again: billing replays the assignment, said as done
    expect(page.locator("[data-testid=unmatched-done] a")).to_have_attribute("href", f"/invoices/{iid}")
    expect(page.locator("tr", has_text=note)).to_have_count(0)
    summary = httpx.get(f"{stack['billing']}/payments/invoices/{iid}", headers=_cashier_api(stack), timeout=30).json()
    assert summary["paid"] == owed and len(summary["payments"]) == 1  # counted once


def test_a_shift_close_whose_answer_is_lost_keeps_the_counts_and_closes_once_when_sent_again(visitor_factory, stack):
    v = visitor_factory("vi-360-slow-shift-close", width=360, height=740)
    v.sign_in("cashier")
    _open_shift(v)
    page = v.page
    page.fill("#close-counted_cash", "200.000")
    page.fill("#close-counted_transfers", "0")
    page.fill("#close-note", "Kiểm đếm cuối ca, mạng chập chờn.")  # a note: no gap asked about first
    page.click("form:has(input[value=close]) button.primary")  # the step, in place: nothing closed yet
    expect(page.locator("[data-testid=confirm-step]")).to_be_visible()
    sent: list[int] = []
    page.route(re.compile(r".*/shift$"), losing_the_first_answer(sent))
    page.check("[data-testid=confirm-tick]")
    page.click("[data-testid=confirm-button]")
    said_not_sent(page, "#shift-close-live-error")
    assert sent == [200] and page.url.endswith("/shift")  # the portal closed it; the page stayed
    assert page.input_value("#close-note") == "Kiểm đếm cuối ca, mạng chập chờn."
    v.check("shift-close-connection-lost")
    page.click("[data-testid=confirm-button]")  # sent again: billing replays the close it made
    expect(page.locator("[data-testid=shift-summary]")).to_be_visible()
    expect(page.locator("main .alert.error:visible")).to_have_count(0)  # not "no shift is open"
