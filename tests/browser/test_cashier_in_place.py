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

NOT_SENT_EN = "The request could not be sent: the connection failed. What you typed is kept; try again."


def _said_not_sent(page, box: str, lang: str) -> None:
    """The form's own box says in the page's language that the connection failed and what was typed is kept."""
    if lang == "vi":
        said_not_sent(page, box)
    else:  # shown (the hidden box holds the words already)
        expect(page.locator(box)).to_be_visible()
        assert page.locator(box).inner_text() == NOT_SENT_EN


def _cashier(visitor_factory, tag: str, lang: str, **size):
    """A cashier's tab in ``lang`` (English: chosen on the home page, as a cashier does)."""
    v = visitor_factory(f"{lang}-{tag}", **size)
    v.sign_in("cashier")
    if lang == "en":
        v.english()
    return v


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


@pytest.mark.parametrize("lang", ["vi", "en"])
def test_a_shift_open_whose_answer_is_lost_keeps_the_count_and_opens_one_shift(visitor_factory, stack, lang):
    v = _cashier(visitor_factory, "360-in-place-shift-open", lang, width=360, height=740)
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
    _said_not_sent(page, "#shift-open-live-error", lang)
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
    v.sign_in("cashier", to="/invoices/new?p=bn-0004&line_service=kham-benh&line_qty=2")
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


@pytest.mark.parametrize("lang", ["vi", "en"])
def test_cash_whose_answer_is_lost_is_one_payment_when_sent_again(visitor_factory, stack, lang):
    iid, owed = _issued_invoice(stack)
    v = _cashier(visitor_factory, "360-in-place-cash", lang, width=360, height=740)
    _open_shift(v)
    page = _on_the_invoice(v, iid)
    page.click("#cash-box summary")
    sent = _lose_the_answer(page, f"/invoices/{iid}/cash")
    page.click("#cash-box button.primary")
    _said_not_sent(page, "#cash-live-error", lang)
    assert sent == [204] and _summary(stack, iid)["paid"] == owed  # recorded; the page stayed
    v.check("cash-connection-lost")
    page.click("#cash-box button.primary")  # sent again: this form's cash is recorded already, nothing new
    expect(page.locator("[data-testid=paid]")).to_have_text("✓ " + {"vi": "Đã thanh toán", "en": "Paid"}[lang])
    s = _summary(stack, iid)
    assert len(s["payments"]) == 1 and s["paid"] == owed


@pytest.mark.parametrize("lang", ["vi", "en"])
def test_a_refund_whose_answer_is_lost_gives_back_once_when_sent_again(visitor_factory, stack, lang):
    iid, owed = _issued_invoice(stack)
    h = {**_cashier_api(stack), "Content-Type": "application/json"}  # paid in cash at another desk, its own shift
    assert httpx.post(f"{stack['billing']}/payments/shifts", headers=h, json={"openingCash": 0}).status_code == 201
    r = httpx.post(f"{stack['billing']}/payments/cash", headers=h, timeout=30,
                   json={"invoice": iid, "amount": owed + 7_000, "transactionId": f"in-place-{iid}"})
    assert r.status_code == 201, r.text[:300]
    v = _cashier(visitor_factory, "1280-in-place-refund", lang)
    page = _on_the_invoice(v, iid)
    box = page.locator("#refund-box")
    if not box.evaluate("d => d.open"):
        box.locator("summary").click()
    box.locator("select[name=method]").select_option("transfer")  # by transfer: no shift of hers needed
    box.locator("textarea[name=reason]").fill(reason := {"vi": "Trả lại tiền thừa.", "en": "Change given back."}[lang])
    box.locator("button.danger").click()  # the step, in place: nothing given back yet
    expect(page.locator("#refund-box [data-testid=confirm-step]")).to_be_visible()
    sent = _lose_the_answer(page, f"/invoices/{iid}/refund")
    page.locator("#refund-box [data-testid=confirm-tick]").check()
    page.locator("#refund-box [data-testid=confirm-button]").click()
    _said_not_sent(page, "#refund-live-error", lang)
    assert sent == [204] and page.locator("#refund-box textarea[name=reason]").input_value() == reason
    page.locator("#refund-box [data-testid=confirm-button]").click()  # sent again: billing replays the refund
    expect(page.locator("[data-testid=refunded]")).to_have_text({"vi": "Đã ghi nhận hoàn tiền.",
                                                                "en": "The refund is recorded."}[lang])
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


def _coverages(stack, pid: str) -> int:
    r = httpx.get(f"{stack['billing']}/fhir/Coverage", params={"beneficiary": f"Patient/{pid}", "_count": "50"},
                  headers=_cashier_api(stack), timeout=30)
    return sum(1 for e in r.json().get("entry", []) if e.get("search", {}).get("mode", "match") == "match")


def test_the_new_invoices_patient_search_whose_answer_is_lost_keeps_the_name_and_finds_when_sent_again(
        visitor_factory, stack):
    v = visitor_factory("vi-360-in-place-invoice-new-search", width=360, height=740)
    v.sign_in("cashier", to="/invoices/new")
    page = v.page
    page.fill("#who", "le ngoc anh")
    sent = _lose_the_answer(page, "/invoices/new")
    page.click("#charge-form button[value=find-patient]")
    said_not_sent(page, "#patient-live-error")  # under the patient's part of the form, where it was pressed
    assert sent == [200] and page.url.endswith("/invoices/new") and page.input_value("#who") == "le ngoc anh"
    expect(page.locator("#charge-live-error, #services-live-error, #issue-live-error")).to_have_count(3)
    expect(page.locator("#charge-live-error:visible, #services-live-error:visible")).to_have_count(0)
    v.check("invoice-new-search-connection-lost")
    page.click("#charge-form button[value=find-patient]")  # sent again: the patients found
    expect(page.locator("button[name=choose][value=bn-0006]")).to_be_visible()
    expect(page.locator("#patient-live-error")).to_be_hidden()


def test_a_line_added_whose_answer_is_lost_is_one_line_when_added_again(visitor_factory, stack):
    v = visitor_factory("vi-1280-in-place-invoice-new-add")
    v.sign_in("cashier", to="/invoices/new")
    page = v.page
    page.fill("#service_q", "kham benh")
    page.press("#service_q", "Enter")  # the services found, in place
    add = page.locator("button[name=add][value=kham-benh]")
    expect(add).to_be_enabled()
    sent = _lose_the_answer(page, "/invoices/new")
    add.click()
    said_not_sent(page, "#services-live-error")
    assert sent == [200] and page.locator("[data-testid=line]").count() == 0  # the page as it was: no line yet
    assert page.input_value("#service_q") == "kham benh"
    page.locator("button[name=add][value=kham-benh]").click()  # sent again: the line, once
    expect(page.locator("[data-testid=line]")).to_have_count(1)
    expect(page.locator("#line-0-qty")).to_have_value("1")
    assert "line_service=kham-benh" in page.url  # the draft's address (a reload shows it)


@pytest.mark.parametrize("lang", ["vi", "en"])
def test_a_bhyt_card_recorded_on_the_new_invoice_whose_answer_is_lost_is_one_card(visitor_factory, stack, lang):
    # demo patients no other browser test charges, one a language (a card recorded in billing stays theirs)
    pid, number = {"vi": ("bn-0006", "TE1878701234572"), "en": ("bn-0005", "HT2878701234571")}[lang]
    before = _coverages(stack, pid)
    v = _cashier(visitor_factory, "360-in-place-invoice-new-card", lang, width=360, height=740)
    v.go(f"/invoices/new?p={pid}")
    page = v.page
    year = datetime.now(VN_TZ).year
    page.fill("#card_number", number)
    page.select_option("#card_level", "100")
    page.fill("#card_start", f"01/01/{year - 1}")
    page.fill("#card_end", f"31/12/{year + 1}")
    sent = _lose_the_answer(page, "/invoices/new")
    page.click("button[name=action][value=record-card]")
    _said_not_sent(page, "#charge-card-live-error", lang)
    assert sent == [200] and _coverages(stack, pid) == before + 1  # recorded; the page stayed
    assert page.input_value("#card_end") == f"31/12/{year + 1}"
    v.check("invoice-new-card-connection-lost")
    page.click("button[name=action][value=record-card]")  # sent again: billing answers the card it recorded
    expect(page.locator("[data-testid=bhyt-level]")).to_have_text("100 %")
    assert _coverages(stack, pid) == before + 1


def test_cash_whose_answer_is_lost_keeps_its_box_when_the_status_box_sees_it_paid_and_says_the_change_sent_again(
        visitor_factory, stack):
    """The status box's polls go on (not held): billing has the cash, so the next poll finds the invoice paid and
    would hide the cash box, its "not sent" box with it (the cashier saw "Đã thanh toán" and no change to give back).
    The box stays, says the invoice changed meanwhile, and sent again the page says the change."""
    iid, owed = _issued_invoice(stack)
    v = visitor_factory("vi-360-in-place-cash-seen-paid", width=360, height=740)
    v.sign_in("cashier")
    _open_shift(v)
    v.go(f"/invoices/{iid}")
    page = v.page
    page.click("#cash-box summary")
    page.fill("#cash-amount", str(owed + 8_000))  # 8.000 ₫ over: the change to give back
    sent = _lose_the_answer(page, f"/invoices/{iid}/cash")
    page.click("#cash-box button.primary")
    expect(page.locator("#cash-live-error")).to_be_visible()
    expect(page.locator("#invoice-status [data-testid=paid]")).to_be_visible()  # a poll since: billing has it paid
    expect(page.locator("#cash-live-error")).to_contain_text("Hóa đơn vừa thay đổi trong lúc chờ: yêu cầu bạn đã gửi "
                                                             "có thể đã tới dịch vụ thanh toán.")
    assert sent == [204] and page.locator("#cash-box").is_visible()  # the box, what was typed and its button
    assert page.input_value("#cash-amount") == str(owed + 8_000)
    v.check("cash-connection-lost-seen-paid")
    page.click("#cash-box button.primary")  # sent again: nothing new recorded, the first send's change said
    # (the lost answer's cookie reached the tab here, Playwright's fetch keeping it, with the first send's own notice:
    # the page says it twice while web/notices.py keeps the same sentence for a page twice)
    expect(page.locator("[data-testid=cash-change]").first).to_contain_text("Tiền thối lại: 8.000\u00a0₫")
    s = _summary(stack, iid)
    assert len(s["payments"]) == 1 and s["paid"] == owed
