"""The cashier cancels an invoice made by mistake and invoices its services again, clicked as a cashier
would (headless Chromium against the whole stack, axe-core on every page). The test's own patient (made
in the EHR, so no other test's invoices or charges are hers) has an invoice issued at the desk with two
services; on its page a cancel without a reason is refused in words and cancels nothing; with a reason
the page says the invoice is cancelled, with the reason, and its services given back (no Paid, no
receipt, no QR, no cash box, no second cancel), in Vietnamese and in English; the same invoice open at
another desk turns to Cancelled by itself, its QR taken away (no one pays a cancelled invoice). Its link
opens the new-invoice form with the patient chosen and both given-back charges ticked, whose submit
issues a new invoice of the same services with a QR; the cancelled invoice keeps its lines. The queue
of invoices awaiting payment, searched by her name, lists the new invoice and not the cancelled one.
A signed transfer pays the new invoice, and its receipt names her.
Screenshots: vi-1280 / en-1280 ``cashier-invoice-cancelled``, vi-1280 ``cashier-invoice-cancel-error``,
``cashier-reinvoice`` and ``cashier-reinvoice-issued``."""

from __future__ import annotations

import re
import time

import httpx
import pytest
from playwright.sync_api import expect

from tests.browser.test_journey import transfer_arrives
from tests.browser.test_pages import _admin
from tests.browser.test_roles import FACILITY, issued_at_the_desk, status_box_answered

pytestmark = pytest.mark.integration

FAMILY, GIVEN = "Phan", "Thị Hạnh"
NAME = f"{FAMILY} {GIVEN}"
SERVICES = ("kham-benh", "xn-cong-thuc-mau")  # Khám bệnh, Xét nghiệm tổng phân tích tế bào máu
REASON = "Nhập nhầm dịch vụ, lập lại hóa đơn."


def _patient(stack: dict[str, str]) -> str:
    """The test's own patient in the EHR: none of the demo province's, which other tests bill."""
    r = httpx.post(f"{stack['ehr']}/fhir/Patient", headers=_admin(stack), timeout=30, json={
        "resourceType": "Patient", "name": [{"family": FAMILY, "given": GIVEN.split()}], "gender": "female",
        "birthDate": "1983-03-08", "managingOrganization": {"reference": f"Organization/{FACILITY}"}})
    assert r.status_code == 201, r.text[:300]
    return r.json()["id"]


def _issued_invoice(stack: dict[str, str], pid: str) -> tuple[str, list[str]]:
    """An invoice of two services made at the desk by billing's API, issued: (its id, its charges)."""
    return issued_at_the_desk(stack, f"Patient/{pid}", SERVICES, display=NAME)


def _status(stack: dict[str, str], iid: str) -> str:
    r = httpx.get(f"{stack['billing']}/fhir/Invoice/{iid}", headers=_admin(stack), timeout=30)
    assert r.status_code == 200, r.text[:300]
    return r.json()["status"]


def _lines(v) -> list[str]:
    return [t.strip() for t in v.page.locator("[data-testid=line-title]").all_inner_texts()]


def _cancelled_page(v, lang: str) -> None:
    """What a cancelled invoice's page says and does not offer."""
    said = {"vi": ("Hóa đơn này đã hủy", "đã được trả lại", "Đã hủy", "Lập hóa đơn mới cho người bệnh này"),
            "en": ("This invoice is cancelled", "given back", "Cancelled", "New invoice for this patient")}[lang]
    box = v.page.inner_text("[data-testid=cancelled]")
    assert said[0] in box and said[1] in box, box
    status_box_answered(v.page)  # its first ask (htmx load) answered: not said twice
    assert v.page.inner_text("main").count(said[0]) == 1, v.page.inner_text("main")
    assert v.page.inner_text("[data-testid=invoice-state]").strip() == said[2]
    assert v.page.inner_text("[data-testid=invoice-again]").strip() == said[3]
    assert v.page.locator("[data-testid=paid]").count() == 0  # not paid: nothing was
    assert v.page.locator("a[href$='/receipt']").count() == 0  # no receipt
    assert v.page.locator("#qr-box img").count() == 0  # no code to pay
    # no cash or cancel box (their hidden places stay: the status box's swaps find them)
    assert v.page.locator("details#cash-box").count() == 0 and v.page.locator("details#cancel-box").count() == 0
    # the status box asks on, slower: a transfer arriving on the cancelled invoice shows, to give back (review 8)
    assert v.page.locator("#invoice-status[hx-trigger*='every 10s']").count() == 1
    assert v.page.inner_text("[data-testid=cancel-reason]").strip() == REASON
    assert len(_lines(v)) == len(SERVICES)  # the cancelled invoice keeps its lines


def test_cashier_cancels_a_wrong_invoice_and_invoices_again(visitor_factory, stack):
    pid = _patient(stack)
    old, charges = _issued_invoice(stack, pid)
    v = visitor_factory("vi-1280")
    v.sign_in("cashier", to=f"/invoices/{old}")
    v.page.wait_for_selector("#qr-box img")  # issued: the patient could pay
    assert v.page.inner_text("[data-testid=invoice-patient]").strip() == NAME
    lines = _lines(v)
    assert len(lines) == len(SERVICES) and all(lines), lines

    v.page.click("#cancel-box summary")  # no reason: said so, nothing cancelled
    v.page.click("#cancel-box button.danger")
    expect(v.page.locator("#cancel-box[open] .field.invalid")).to_have_count(1)
    assert "Nêu lý do." in v.page.inner_text("#cancel-box")
    assert v.page.locator("[data-testid=cancelled]").count() == 0 and _status(stack, old) == "issued"
    v.check("cashier-invoice-cancel-error")

    e = visitor_factory("en-1280")  # another desk has the invoice open, its code shown
    e.sign_in("cashier")
    e.english()
    e.go(f"/invoices/{old}?p={pid}")
    e.page.wait_for_selector("#qr-box img")
    e.page.evaluate("window.__sameDocument = true")

    v.page.fill("#cancel-reason", REASON)
    v.page.click("#cancel-box button.danger")  # the first press: the step saying what will happen, nothing done
    v.page.wait_for_selector("#cancel-box[open] [data-testid=confirm-step]")
    assert v.page.input_value("#cancel-reason") == REASON and _status(stack, old) == "issued"
    assert "sẽ bị hủy" in v.page.inner_text("#cancel-box [data-testid=confirm-step]")
    # the keyboard is there: the tick takes the focus as htmx settles the step (autofocus, 20 ms after the swap)
    expect(v.page.locator("#cancel-box [data-testid=confirm-tick]")).to_be_focused()
    v.check("cashier-invoice-cancel-confirm")
    v.page.check("#cancel-box [data-testid=confirm-tick]")
    v.page.click("#cancel-box [data-testid=confirm-button]")
    v.page.wait_for_url(re.compile(rf"/invoices/{old}\?p={pid}$"))
    v.page.wait_for_selector("[data-testid=cancelled]")
    assert _status(stack, old) == "cancelled"
    _cancelled_page(v, "vi")
    v.check("cashier-invoice-cancelled")

    # the other desk's page turns to Cancelled by itself (its status box), the code taken away: no one pays it
    e.page.wait_for_function("() => document.querySelector('[data-testid=invoice-state]').textContent === 'Cancelled'")
    assert e.page.evaluate("window.__sameDocument === true")
    e.page.wait_for_selector("#qr-box img", state="detached")
    assert not e.page.locator("#cash-box").is_visible() and not e.page.locator("#cancel-box").is_visible()
    assert "given back" in e.page.inner_text("#invoice-status")
    deadline = time.monotonic() + 30  # a reload: the page's shell may be this user's answer of a few s ago
    while True:  # (SEN_PORTAL_CACHE_SECONDS, kept per worker process), then the cancelled page
        e.go(f"/invoices/{old}?p={pid}")
        if e.page.locator("[data-testid=cancelled]").count() or time.monotonic() > deadline:
            break
        time.sleep(1)
    _cancelled_page(e, "en")
    e.check("cashier-invoice-cancelled")

    v.page.click("[data-testid=invoice-again]")  # the given-back services, for the same patient
    v.page.wait_for_url(re.compile(rf"/invoices/new\?p={pid}$"))
    assert v.page.inner_text("[data-testid=patient-name]").startswith(NAME)
    ticked = {c for c in charges if v.page.is_checked(f"input[name=pending][value=\"{c}\"]")}
    assert ticked == set(charges) and v.page.locator("input[name=pending]").count() == len(charges)
    assert v.page.locator("[data-testid=pending-total]").count() == 1
    v.check("cashier-reinvoice")

    v.page.click("[data-testid=issue]")  # no new line: the ticked charges alone make the invoice
    v.page.wait_for_url(re.compile(r"/invoices/inv-[0-9a-f]+\?"))
    new = v.page.url.split("/invoices/")[1].split("?")[0]
    assert new != old
    v.page.wait_for_selector("[data-testid=issued]")
    v.page.wait_for_selector("#qr-box img")
    assert sorted(_lines(v)) == sorted(lines)  # the same services
    assert v.page.locator("#cancel-box").count() == 1  # this one could be cancelled in its turn
    held = [li["chargeItemReference"]["reference"] for li in httpx.get(
        f"{stack['billing']}/fhir/Invoice/{new}", headers=_admin(stack), timeout=30).json()["lineItem"]]
    assert sorted(held) == sorted(f"ChargeItem/{c}" for c in charges)
    v.check("cashier-reinvoice-issued")
    amount = int(re.sub(r"\D", "", v.page.inner_text("[data-testid=qr-amount]")))
    reference = v.page.inner_text("[data-testid=qr-reference]").strip()

    v.go(f"/invoices/{old}")  # the cancelled one, as it was, now naming the invoice its services went on
    box = v.page.inner_text("[data-testid=cancelled]")
    assert "Hóa đơn này đã hủy" in box and "Đã thay bằng hóa đơn" in box and reference in box, box
    assert v.page.get_attribute("[data-testid=replaced-by]", "href").startswith(f"/invoices/{new}")
    assert v.page.locator("[data-testid=invoice-again]").count() == 0  # nothing left to invoice again
    assert v.page.inner_text("[data-testid=invoice-state]").strip() == "Đã hủy"
    assert v.page.locator("#qr-box img").count() == 0 and v.page.locator("details#cash-box").count() == 0
    assert v.page.inner_text("[data-testid=cancel-reason]").strip() == REASON
    assert sorted(_lines(v)) == sorted(lines)

    v.go("/invoices")  # the queue awaiting payment, searched by her name without accents
    v.page.fill("#q", "phan thi hanh")
    v.page.click("form.card button.primary")
    v.page.wait_for_selector("#invoice-results h2")  # the results swapped in, whole (one swap)
    found = {a.get_attribute("href").split("?")[0] for a in v.page.locator("#invoice-results table a").all()}
    assert {f"/invoices/{new}", f"/invoices/{old}"} <= found  # every invoice of hers, each with its status
    row = v.page.locator("#invoice-results tr", has=v.page.locator(f"a[href^='/invoices/{new}']"))
    assert NAME in row.inner_text() and "Chờ thanh toán" in row.inner_text()
    gone = v.page.locator("#invoice-results tr", has=v.page.locator(f"a[href^='/invoices/{old}']"))
    assert "Đã hủy" in gone.inner_text() and "Chờ thanh toán" not in gone.inner_text()

    v.page.clock.install()  # before the invoice's page: the transfer's status poll (every 2 s) is asked for now
    v.go(f"/invoices/{new}?p={pid}")  # a transfer pays the new invoice; its receipt names her
    transfer_arrives(stack, reference, amount, "thanh toan")
    v.page.clock.run_for(2_000)  # the poll now, not up to 2 s later: the same ask and swap
    v.page.wait_for_selector("[data-testid=paid]")
    v.page.click("#invoice-status a")
    expect(v.page.locator("[data-testid=receipt-patient]")).to_have_text(NAME)
