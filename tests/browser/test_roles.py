"""The role pages beside the main journey, clicked as people would, each checked by
axe-core: a doctor gives a consult to another hub doctor; the cashier takes cash at the desk and
refunds what was paid too much; the cashier puts an unmatched bank transfer on an invoice; a doctor
changes their own weekly hours (and cannot change another doctor's); the clinic's attachment upload
shows its progress on a slow link (upload throttled with Chromium's network conditions).

After a click, each test waits for what the click brings (``expect``, which retries until the page shows it),
never for the network to go quiet: ``networkidle`` is the state of the page before a form's answer too, so a
read right after it could read the old page (under load it did, a different test each run)."""

from __future__ import annotations

import json
import os
import random
import re
import uuid

import httpx
import pytest
from playwright.sync_api import expect

from tests.browser.test_pages import _admin, _submit, cards_fit

pytestmark = pytest.mark.integration

FACILITY = "tyt-my-hiep"  # the demo cashier's and clinic's facility (web/users.py)


def _cashier_api(stack: dict[str, str]) -> dict[str, str]:
    from sen_shared.auth import issue_dev_token

    token = issue_dev_token(stack["key"], "cashier", facility=FACILITY, sub=f"api-{uuid.uuid4().hex[:6]}")
    return {"Authorization": f"Bearer {token}", "Content-Type": "application/fhir+json"}


def issued_at_the_desk(stack: dict[str, str], patient: str, services: tuple[str, ...] = ("kham-benh",),
                       display: str | None = None) -> tuple[str, list[str]]:
    """An invoice of the demo facility for ``patient`` (``Patient/<id>``; named ``display`` when given), made by
    hand through billing's API as a cashier of it (a charge from the price list for each of ``services``, the
    draft), then issued; (its id, its charges' ids)."""
    h, billing = _cashier_api(stack), stack["billing"]
    charges = []
    for service in services:
        r = httpx.post(f"{billing}/fhir/ChargeItem", headers=h, timeout=30, json={
            "resourceType": "ChargeItem", "status": "billable", "code": {"text": service},
            "subject": {"reference": patient}, "definitionCanonical": [f"ChargeItemDefinition/{service}"]})
        assert r.status_code == 201, r.text[:300]
        charges.append(r.json()["id"])
    r = httpx.post(f"{billing}/fhir/Invoice", headers=h, timeout=30, json={
        "resourceType": "Invoice", "status": "draft",
        "subject": {"reference": patient, **({"display": display} if display else {})},
        "lineItem": [{"chargeItemReference": {"reference": f"ChargeItem/{c}"}} for c in charges]})
    assert r.status_code == 201, r.text[:300]
    iid = r.json()["id"]
    r = httpx.post(f"{billing}/fhir/Invoice/{iid}/$issue", headers={**h, "Idempotency-Key": uuid.uuid4().hex},
                   timeout=30)
    assert r.status_code == 200, r.text[:300]
    return iid, charges


def _issued_invoice(stack: dict[str, str]) -> tuple[str, int]:
    """An invoice of the demo facility, made by hand at the desk (a charge from the price list), issued;
    (its id, the amount owed)."""
    iid, _charges = issued_at_the_desk(stack, "Patient/bn-0003")
    summary = httpx.get(f"{stack['billing']}/payments/invoices/{iid}", headers=_cashier_api(stack), timeout=30).json()
    assert summary["status"] == "issued" and summary["balanceDue"] > 0
    return iid, summary["balanceDue"]


def status_box_answered(page) -> None:
    """The invoice page's status box has had its first answer: the box the page draws asks at load and then every
    few seconds, the one an answer swaps in only every few seconds (_invoice_status.html). No other element says
    that answer came, and the network going quiet can come before it under load."""
    expect(page.locator("#invoice-status")).not_to_have_attribute("hx-trigger", re.compile(r"^load"))


def _open_shift(v) -> None:
    v.go("/shift")
    if v.page.locator("input[name=which][value=open]").count():
        v.page.fill("#open-opening_cash", "200000")
        v.page.click("form:has(input[value=open]) button.primary")
    expect(v.page.locator("input[name=which][value=close]")).to_have_count(1)


def _digits(text: str) -> int:
    return int(re.sub(r"\D", "", text))


def test_doctor_gives_a_consult_to_another_hub_doctor(visitor_factory, stack):
    tid = _submit(stack, "Rung nhĩ mới phát hiện, xin ý kiến chống đông.", "urgent")
    v = visitor_factory("vi-1280")
    v.sign_in("doctor", to=f"/tasks/{tid}")
    v.page.click("details:has(form[action$='/reassign']) summary")
    options = v.page.locator("form[action$='/reassign'] select option")
    assert "Practitioner/bs-nguyen-van-an" not in [options.nth(i).get_attribute("value")
                                                   for i in range(options.count())]  # not to oneself
    v.page.select_option("form[action$='/reassign'] select", "Practitioner/bs-tran-thi-bich")
    assert "Trần Thị Bích" in v.page.locator("form[action$='/reassign'] select option:checked").inner_text()
    v.check("doctor-reassign-form")
    v.page.click("form[action$='/reassign'] button")
    confirm = v.page.locator("[data-testid=reassign-confirm]")  # the doctor chosen is named: the shared step
    confirm.wait_for()
    assert "Trần Thị Bích" in confirm.inner_text()
    v.check("doctor-reassign-confirm")
    confirm.locator("[data-testid=confirm-tick]").check()
    confirm.locator("[data-testid=confirm-button]").click()
    v.page.wait_for_url(re.compile(r"/worklist$"))  # nothing in the address: the page says the name once
    assert v.page.locator("[data-testid=reassigned]").count() == 1
    assert "Trần Thị Bích" in v.page.locator("[data-testid=reassigned]").inner_text()
    v.check("doctor-reassigned")
    task = httpx.get(f"{stack['teleconsult']}/fhir/Task/{tid}", headers=_admin(stack), timeout=30).json()
    assert task["owner"]["reference"] == "Practitioner/bs-tran-thi-bich"
    # the worklist and the page say who holds it now; taking it back asks for the box to be ticked first
    row = v.page.locator("main table tbody tr", has=v.page.locator(f"a[href='/tasks/{tid}']"))
    assert "Trần Thị Bích" in row.locator("[data-testid=consult-holder]").inner_text()
    v.go(f"/tasks/{tid}")
    assert "Trần Thị Bích" in v.page.inner_text("[data-testid=task-owner]")
    takeover = v.page.locator("[data-testid=takeover] button")
    assert "Nhận ca thay" in takeover.inner_text() and "Trần Thị Bích" in takeover.inner_text()
    takeover.click()  # not ticked: said, nothing changed
    expect(v.page.locator(".alert.error", has_text="đánh dấu ô")).to_have_count(1)
    task = httpx.get(f"{stack['teleconsult']}/fhir/Task/{tid}", headers=_admin(stack), timeout=30).json()
    assert task["owner"]["reference"] == "Practitioner/bs-tran-thi-bich" and task["status"] == "requested"
    v.check("doctor-takeover-unconfirmed")
    v.page.check("[data-testid=takeover-confirm]")
    v.page.click("[data-testid=takeover] button")
    v.page.wait_for_selector("[data-testid=accepted]")
    task = httpx.get(f"{stack['teleconsult']}/fhir/Task/{tid}", headers=_admin(stack), timeout=30).json()
    assert task["owner"]["reference"] == "Practitioner/bs-nguyen-van-an" and task["status"] == "accepted"


def test_cashier_takes_cash_at_the_desk_and_refunds_the_change(visitor_factory, stack):
    iid, owed = _issued_invoice(stack)
    v = visitor_factory("vi-1280")
    v.sign_in("cashier")
    _open_shift(v)
    v.go(f"/invoices/{iid}")
    assert v.page.locator("[data-testid=paid]").count() == 0
    v.page.click("#cash-box summary")
    v.page.fill("#cash-amount", "0")  # explained, nothing recorded
    v.page.click("#cash-box button.primary")
    expect(v.page.locator("#cash-box .field.invalid")).to_have_count(1)
    expect(v.page.locator("#cash-box")).to_contain_text("0 đồng")
    v.check("cashier-cash-error")
    v.page.fill("#cash-amount", str(owed + 11_000))  # the patient hands over more than owed
    v.page.check("[data-testid=cash-keep-credit]")  # and keeps the excess as credit (no change given)
    # recorded: the invoice's page again (HX-Redirect). Not "paid" alone: the status box's poll (every 2 s) can show
    # it on this page before the answer comes, whose redirect then lands in the middle of the checks below
    with v.page.expect_navigation():
        v.page.click("#cash-box button.primary")
    v.page.wait_for_url(re.compile(rf"/invoices/{iid}(\?p=[\w-]+)?$"))  # p: the patient's opaque id (cashier.py)
    v.page.wait_for_selector("[data-testid=paid]")
    facts = v.page.inner_text("#invoice-facts")
    assert "11.000\u00a0₫" in facts  # the change is the patient's credit
    assert "Tiền mặt" in v.page.inner_text("main")  # the payment, by cash
    assert "Đã tính vào hóa đơn" in v.page.inner_text("main")  # its outcome in words, not billing's code
    v.check("cashier-cash-paid")
    cards_fit(v, "[data-testid=payments]")  # the payments at 360 px: a card each
    v.tag = "vi-360"
    v.check("cashier-cash-paid")
    v.page.set_viewport_size({"width": 1280, "height": 900})
    v.tag = "vi-1280"
    # the paid invoice offers the refund of its credit only: the cash payment, 11.000 ₫ of it refundable
    # (text_content: the box is still closed, so inner_text reads nothing)
    # (said beside the payment: what can be refunded of it; the invoice's line only when less than theirs added up)
    assert "11.000\u00a0₫" in v.page.text_content("[data-testid=refund-box] [data-testid=refund-limit]")
    stale = v.page.context.new_page()  # a second tab of the page, still offering that refund after it is made
    stale.goto(v.page.url)
    status_box_answered(stale)
    # as it is between two of its status polls: a poll (every 10 s once paid) after the refund below brings the
    # refund box as it then is (a refund after payment offered), and whether it came before the second click was
    # the machine's speed. Without its status box the tab polls no more: it is the page as opened
    stale.evaluate("document.getElementById('invoice-status').remove()")

    v.page.click("details:has(form[action*='/refund']) summary")
    v.page.click("form[action*='/refund'] button")  # no reason: explained, nothing refunded
    expect(v.page.locator("form[action*='/refund'] .field.invalid")).to_have_count(1)
    v.check("cashier-refund-error")
    v.page.fill("form[action*='/refund'] textarea", "Trả lại tiền thừa cho bệnh nhân.")
    v.page.click("form[action*='/refund'] button")  # the step: what will be given back, nothing refunded yet
    v.page.wait_for_selector("form[action*='/refund'] [data-testid=confirm-step]")
    v.check("cashier-refund-confirm")
    v.page.check("form[action*='/refund'] [data-testid=confirm-tick]")
    v.page.click("form[action*='/refund'] [data-testid=confirm-button]")
    v.page.wait_for_selector("[data-testid=refunded]")
    assert re.search(rf"/invoices/{iid}(\?p=[\w-]+)?$", v.page.url), v.page.url
    assert "Đã hoàn" in v.page.inner_text("#invoice-facts")
    assert "Đã ghi nhận hoàn tiền" in v.page.inner_text("main")
    v.check("cashier-refunded")
    summary = httpx.get(f"{stack['billing']}/payments/invoices/{iid}", headers=_cashier_api(stack), timeout=30).json()
    assert summary["refunded"] == 11_000 and summary["status"] == "balanced"
    # the credit given back, the rest of the payment (what the invoice owed) can still be given back after
    # payment, all or part, with a reason (f77733b): the box offers that alone now, what is left said beside it
    assert v.page.text_content("[data-testid=refund-box] summary").strip() == "Hoàn tiền sau thanh toán"
    assert _digits(v.page.text_content("[data-testid=refund-box] [data-testid=refund-left]")) == owed

    v.page.close()
    v.page = stale  # the same payment again from the tab opened before: refused, said why
    v.page.click("details:has(form[action*='/refund']) summary")
    v.page.fill("form[action*='/refund'] textarea", "Bấm lại lần nữa.")
    v.page.click("form[action*='/refund'] button")
    v.page.check("form[action*='/refund'] [data-testid=confirm-tick]")  # the step, about that same payment
    v.page.click("form[action*='/refund'] [data-testid=confirm-button]")
    # shown: the page holds the refund form's hidden "not sent" box (an .alert.error) before the answer too
    expect(v.page.locator("main .alert.error:visible")).to_have_count(1)
    assert "Traceback" not in v.page.content()
    v.check("cashier-refund-twice")
    again = httpx.get(f"{stack['billing']}/payments/invoices/{iid}", headers=_cashier_api(stack), timeout=30).json()
    assert again["refunded"] == 11_000  # given back once


def test_a_transfer_while_the_page_is_open_moves_the_cash_prefill_and_a_double_click_pays_once(
        visitor_factory, stack):
    """A partial transfer arrives while the invoice page is open: the QR and the cash box's prefill
    both move to the new balance without a reload; an amount the cashier typed stays as typed when the
    next transfer arrives; a double click on "Record the cash" records one payment."""
    from tests.browser.test_journey import transfer_arrives

    iid, owed = _issued_invoice(stack)
    assert owed > 20_000
    v = visitor_factory("vi-1280")
    v.sign_in("cashier")
    _open_shift(v)
    v.page.clock.install()  # before the invoice's page: each transfer's status poll (every 2 s) is asked for now
    v.go(f"/invoices/{iid}")
    v.page.wait_for_selector("#qr-box img")
    reference = v.page.inner_text("[data-testid=qr-reference]").strip()
    assert _digits(v.page.input_value("#cash-amount")) == owed
    v.page.evaluate("window.__sameDocument = true")
    transfer_arrives(stack, reference, 10_000, "tra truoc mot phan")
    v.page.clock.run_for(2_000)  # the poll now, not up to 2 s later: the same ask and swap
    v.page.wait_for_function(f"() => (document.querySelector('[data-testid=qr-amount]') || {{}}).textContent"
                             f"?.replace(/\\D/g, '') === '{owed - 10_000}'")
    assert _digits(v.page.input_value("#cash-amount")) == owed - 10_000  # the prefill followed
    v.page.click("#cash-box summary")
    v.page.fill("#cash-amount", "5.000")  # the patient pays only part in cash
    v.page.locator("#cash-box summary").focus()  # out of the field: still the cashier's own amount
    transfer_arrives(stack, reference, 2_000, "them mot it")
    v.page.clock.run_for(2_000)
    v.page.wait_for_function(f"() => (document.querySelector('[data-testid=qr-amount]') || {{}}).textContent"
                             f"?.replace(/\\D/g, '') === '{owed - 12_000}'")
    assert v.page.input_value("#cash-amount") == "5.000"  # kept as typed
    assert v.page.evaluate("window.__sameDocument === true")
    v.page.fill("#cash-amount", str(owed - 12_000))
    with v.page.expect_navigation():  # the answer's page (HX-Redirect), not a status poll's "paid" before it
        v.page.dblclick("#cash-box button.primary")  # two submits of one form
    v.page.wait_for_selector("[data-testid=paid]")
    summary = httpx.get(f"{stack['billing']}/payments/invoices/{iid}", headers=_cashier_api(stack), timeout=30).json()
    assert summary["status"] == "balanced" and summary["paid"] == owed
    assert [p["channel"] for p in summary["payments"]].count("cash") == 1
    # the second click is answered, not refused as paid (the forms sent in place carry hidden "not sent" boxes)
    assert v.page.locator("main .alert.error:visible").count() == 0


def _unmatched_transfer(stack: dict[str, str], note: str, amount: int) -> None:
    """A SePay transfer of ``amount`` to the demo account whose note (``note``) names no invoice."""
    body = {"id": random.randint(10**8, 10**9), "gateway": "Vietcombank", "transactionDate": "2026-12-04 09:00:00",
            "accountNumber": "0011001932418", "code": None, "content": note, "transferType": "in",
            "transferAmount": amount, "accumulated": amount, "referenceCode": "FT26340", "description": note}
    r = httpx.post(f"{stack['billing']}/webhooks/sepay", json=body, timeout=30,
                   headers={"Authorization": f"Apikey {stack['sepay']}"})
    assert r.status_code in (200, 201), r.text


def _page_with(v, text: str) -> None:
    """Follow the queue's "next page" links until ``text`` shows (or the last page)."""
    for _ in range(50):
        if v.page.locator("tr", has_text=text).count() or not v.page.locator("[data-testid=unmatched-next]").count():
            return
        _next_page(v)


def _next_page(v) -> None:
    """Follow the queue's "next page" link and wait for that page: its number is one more."""
    number = v.page.locator("[data-testid=unmatched-page]")
    following = _digits(number.inner_text()) + 1
    v.page.click("[data-testid=unmatched-next]")
    expect(number).to_have_text(f"Trang {following}")


def test_unmatched_queue_pages_through_billing_cursor(visitor_factory, stack):
    """More transfers than one page of billing's queue (50): the page follows billing's ``next`` cursor,
    every transfer is reached once, and the last page offers no next."""
    tag = f"CK-TRANG-{random.randint(10000, 99999)}"
    for i in range(53):
        _unmatched_transfer(stack, f"{tag} so {i:02d}", 10_000 + i)
    v = visitor_factory("vi-1280")
    v.sign_in("cashier", to="/unmatched")
    seen: list[str] = []
    pages = 0
    for _ in range(50):
        pages += 1
        assert v.page.locator("main table tbody tr").count() <= 50
        assert f"Trang {pages}" in v.page.inner_text("[data-testid=unmatched-page]") or pages == 1
        seen += [t for t in v.page.locator("main table tbody tr").all_inner_texts() if tag in t]
        if pages == 2:
            v.check("cashier-unmatched-page-2")
        if not v.page.locator("[data-testid=unmatched-next]").count():
            break
        _next_page(v)
    assert pages >= 2
    assert sorted(re.search(r"so (\d\d)", t).group(1) for t in seen) == [f"{i:02d}" for i in range(53)]
    v.page.click("text=Trang đầu")
    expect(v.page.locator("[data-testid=unmatched-page]")).to_have_text("Trang 1")
    expect(v.page.locator("[data-testid=unmatched-next]")).to_have_count(1)
    # an admin's page mixes every facility's queue: each row names its facility (the demo account's)
    a = visitor_factory("vi-1280")
    a.sign_in("admin", to="/unmatched")
    _page_with(a, f"{tag} so 00")  # other tests' transfers may come first
    row = a.page.locator("tr", has_text=f"{tag} so 00")
    assert row.count() == 1
    assert row.locator("[data-testid=unmatched-facility]").inner_text() == "Trạm Y tế xã Mỹ Hiệp"  # by name
    # or one queue: the demo account's facility's holds it, and its next pages keep to it
    a.page.select_option("[data-testid=unmatched-facility-filter]", "tyt-my-hiep")
    a.page.click("main form[method=get] button")
    a.page.wait_for_url(re.compile(r"[?&]facility=tyt-my-hiep(&|$)"))
    _page_with(a, f"{tag} so 00")
    assert a.page.locator("tr", has_text=f"{tag} so 00").count() == 1 and "facility=tyt-my-hiep" in a.page.url
    assert set(a.page.locator("[data-testid=unmatched-facility]").all_inner_texts()) == {"Trạm Y tế xã Mỹ Hiệp"}
    a.page.select_option("[data-testid=unmatched-facility-filter]", "_unowned")  # the accounts no facility owns
    a.page.click("main form[method=get] button")
    a.page.wait_for_url(re.compile(r"[?&]facility=_unowned(&|$)"))
    expect(a.page.locator("tr", has_text=tag)).to_have_count(0)


def test_cashier_puts_an_unmatched_transfer_on_an_invoice(visitor_factory, stack):
    iid, owed = _issued_invoice(stack)
    note = f"CK kham benh con trai {random.randint(1000, 9999)}"  # no bill reference: matches nothing
    _unmatched_transfer(stack, note, owed)
    v = visitor_factory("vi-1280")
    v.sign_in("cashier", to="/unmatched")
    _page_with(v, note)  # the queue may run over several pages (oldest first): this transfer is on the last
    row = v.page.locator("tr", has_text=note)
    assert row.count() == 1
    select = row.locator("select[name=invoice]")
    reference = next(o for o in select.locator("option").all_inner_texts() if o and "·" in o)
    assert re.search(r"\d{1,3}(\.\d{3})*\s₫", reference)  # each choice shows its amount in đồng
    row.locator("button").click()  # nothing chosen: explained
    expect(v.page.locator("main .alert.error:visible")).to_have_count(1)  # (each row has its hidden "not sent" box)
    row = v.page.locator("tr", has_text=note)  # the row the alert speaks of is marked, its message under it
    assert row.locator("[data-testid=unmatched-row-error]").count() == 1
    assert row.locator("select[name=invoice]").evaluate("s => getComputedStyle(s).borderTopWidth") == "2px"
    v.check("cashier-unmatched-error")
    row = v.page.locator("tr", has_text=note)
    row.locator("select[name=invoice]").select_option(iid)
    v.check("cashier-unmatched-choose")
    row.locator("button").click()
    expect(v.page.locator("main .alert.ok")).to_have_count(1)
    assert v.page.locator("[data-testid=unmatched-done] a").get_attribute("href") == f"/invoices/{iid}"  # named
    assert v.page.locator("tr", has_text=note).count() == 0  # out of the queue
    v.check("cashier-unmatched-assigned")
    v.go(f"/invoices/{iid}")
    v.page.wait_for_selector("[data-testid=paid]")
    assert "Chuyển khoản" in v.page.inner_text("main")


def test_doctor_changes_their_own_hours_but_not_another_doctors(visitor_factory, stack):
    tc, admin = stack["teleconsult"], _admin(stack)
    mine_id, theirs_id = "sched-bs-nguyen-van-an", "sched-bs-tran-thi-bich"
    original = httpx.get(f"{tc}/fhir/Schedule/{mine_id}", headers=admin, timeout=30).json()
    theirs_before = httpx.get(f"{tc}/fhir/Schedule/{theirs_id}", headers=admin, timeout=30).json()
    v = visitor_factory("vi-1280")
    v.sign_in("doctor", to="/availability")
    assert v.page.locator("#schedule").count() == 0  # no choice of whose schedule: their own
    v.page.fill("#week-windows-0-end_time", "25:00")  # explained
    v.page.click("form:has(input[value=week]) button.primary")
    expect(v.page.locator("#week-windows-0-end_time-error")).to_have_count(1)
    v.check("doctor-hours-error")
    rows = "[data-testid=window]"
    try:
        v.go("/availability")
        # Saturday morning and afternoon, nothing else: every stored window's days unticked and its times
        # emptied (left out; a window with times and no day is refused, not dropped)
        v.page.evaluate("document.querySelectorAll(\"input[type=checkbox][name^='week-windows-']\")"
                        ".forEach(c => c.checked = false)")
        v.page.evaluate("document.querySelectorAll(\"input[name^='week-windows-'][name$='_time']\")"
                        ".forEach(i => i.value = '')")
        v.page.check("input[name='week-windows-0-days'][value=sat]")
        v.page.fill("#week-windows-0-start_time", "07:30")
        v.page.fill("#week-windows-0-end_time", "11:00")
        n = v.page.locator(rows).count()
        v.page.click("form:has(input[value=week]) button[name=add]")  # one more row; what was typed stays
        expect(v.page.locator(rows)).to_have_count(n + 1)
        assert v.page.is_checked("input[name='week-windows-0-days'][value=sat]")
        assert v.page.input_value("#week-windows-0-start_time") == "07:30"
        v.page.check(f"input[name='week-windows-{n}-days'][value=sat]")
        v.page.fill(f"#week-windows-{n}-start_time", "13:30")
        v.page.fill(f"#week-windows-{n}-end_time", "16:00")
        v.check("doctor-hours-two-windows")
        v.page.click("form:has(input[value=week]) button.primary")
        expect(v.page.locator("main .alert.ok")).to_have_count(1)
        text = v.page.inner_text("main")
        assert "07:30–11:00" in text and "13:30–16:00" in text and "Thứ Bảy" in text
        assert v.page.locator(rows).count() == 3  # the two saved, one empty row to add another
        v.check("doctor-hours-saved")
        stored = httpx.get(f"{tc}/fhir/Schedule/{mine_id}", headers=admin, timeout=30).json()
        windows = [sorted((p["url"], p.get("valueCode") or p.get("valueTime")) for p in e["extension"])
                   for e in stored["extension"] if e["url"].endswith("schedule-available-time")]
        assert windows == [
            sorted([("daysOfWeek", "sat"), ("availableStartTime", "07:30:00"), ("availableEndTime", "11:00:00")]),
            sorted([("daysOfWeek", "sat"), ("availableStartTime", "13:30:00"), ("availableEndTime", "16:00:00")])]
        assert int(stored["meta"]["versionId"]) > int(original["meta"]["versionId"])

        # a third window overlapping the morning: explained on its row, nothing stored
        v.page.check("input[name='week-windows-2-days'][value=sat]")
        v.page.fill("#week-windows-2-start_time", "10:00")
        v.page.fill("#week-windows-2-end_time", "12:00")
        v.page.click("form:has(input[value=week]) button.primary")
        expect(v.page.locator("#week-windows-2-end_time-error")).to_have_count(1)
        assert v.page.locator("#week-windows-error").count() == 1
        v.check("doctor-hours-overlap")
        again = httpx.get(f"{tc}/fhir/Schedule/{mine_id}", headers=admin, timeout=30).json()
        assert again["meta"]["versionId"] == stored["meta"]["versionId"]

        # another doctor's schedule: the portal refuses before asking the back-end (the back-end would too)
        v.page.evaluate(f"document.querySelectorAll('input[name=schedule]').forEach(i => i.value = '{theirs_id}')")
        v.page.fill("#leave-start", "2027-01-04")
        v.page.fill("#leave-end", "2027-01-05")
        v.page.click("form:has(input[value=leave]) button.primary")
        expect(v.page.locator("h1")).to_contain_text("Không được phép")
        v.check("doctor-hours-not-theirs")
        after = httpx.get(f"{tc}/fhir/Schedule/{theirs_id}", headers=admin, timeout=30).json()
        assert after["meta"]["versionId"] == theirs_before["meta"]["versionId"]
    finally:  # the other tests book from the demo hours
        body = {k: val for k, val in original.items() if k != "meta"}
        r = httpx.put(f"{tc}/fhir/Schedule/{mine_id}", headers=admin, content=json.dumps(body), timeout=30)
        assert r.status_code == 200, r.text[:300]


def test_attachment_upload_shows_progress_on_a_slow_link(visitor_factory, stack, browser):
    v = visitor_factory("vi-1280")
    v.sign_in("clinic", to="/patients/bn-0002/consult")
    v.page.select_option("#priority", "routine")
    v.page.fill("#reason", "J18.9")  # not test_pages' E11.9 for bn-0002: an open consult for the same reason asks first
    v.page.fill("#question", "Xin ý kiến về phim X-quang ngực kèm theo.")
    picture = b"\x89PNG\r\n\x1a\n" + os.urandom(700_000)  # ~0.7 MB: a phone photo of an X-ray
    v.page.set_input_files("#files", files=[{"name": "xquang.png", "mimeType": "image/png", "buffer": picture}])
    v.page.evaluate("""() => {
        window.__progress = [];
        const bar = document.getElementById('upload-progress');
        const seen = () => window.__progress.push([bar.hidden, bar.value]);
        document.addEventListener('htmx:xhr:progress', () => setTimeout(seen, 0));
    }""")
    cdp = v.page.context.new_cdp_session(v.page)
    cdp.send("Network.enable")
    cdp.send("Network.emulateNetworkConditions", {  # a slow rural 3G link: ~250 kbit/s up
        "offline": False, "latency": 200, "downloadThroughput": 100_000, "uploadThroughput": 32_000})
    v.page.click("#consult-form button.primary")
    # while the bytes go up, the bar is shown and moves forward (read before the page moves on)
    v.page.wait_for_function("() => new Set(window.__progress.filter(([hidden, value]) => !hidden && value > 0"
                             " && value < 100).map(([, value]) => value)).size >= 2", timeout=90_000)
    shown = [value for hidden, value in v.page.evaluate("window.__progress") if not hidden]
    assert shown == sorted(shown) and len(set(shown)) >= 2
    assert v.page.locator("#upload-progress").get_attribute("aria-label")  # named for screen readers
    v.shot("vi-1280-clinic-upload-progress")
    v.page.wait_for_url(re.compile(r"/consults/[^/?]+$"), timeout=120_000)
    cdp.send("Network.emulateNetworkConditions", {"offline": False, "latency": 0, "downloadThroughput": -1,
                                                  "uploadThroughput": -1})
    v.check("clinic-consult-after-upload")
