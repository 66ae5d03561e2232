"""The invoice page while a transfer arrives, in headless Chromium against the whole stack: an invoice
part paid already (so its page shows no cancel box) is open at the desk; the rest arrives by a signed
webhook; the page turns to Paid by itself AND its payments table lists both payments, without a
reload, and htmx finds every out-of-band target (it logged ``htmx:oobErrorNoTarget, #cancel-box`` on
every update before). Screenshot: vi-1280 ``cashier-invoice-live-paid``.

The page's clock is Playwright's (installed before the page loads; it runs with the real one): when a test waits
for the status box's next poll, it moves the clock on by the poll's interval (:func:`_next_poll`), so the box asks
now, as it would once that time has passed, where the test waited out up to 10 s (a paid invoice's box polls every
10 s) for each such poll."""

from __future__ import annotations

import re
import uuid
from typing import Any

import httpx
import pytest

from tests.browser.test_journey import transfer_arrives
from tests.browser.test_pages import _admin
from tests.browser.test_roles import FACILITY, _cashier_api, issued_at_the_desk

pytestmark = pytest.mark.integration


def _invoice(stack: dict[str, str]) -> tuple[str, str]:
    """The test's own patient and an examination invoiced and issued for her: (invoice id, patient id)."""
    r = httpx.post(f"{stack['ehr']}/fhir/Patient", headers=_admin(stack), timeout=30, json={
        "resourceType": "Patient", "name": [{"family": "Đỗ", "given": ["Thị", "Lan"]}], "gender": "female",
        "birthDate": "1979-05-06", "managingOrganization": {"reference": f"Organization/{FACILITY}"}})
    assert r.status_code == 201, r.text[:300]
    pid = r.json()["id"]
    iid, _charges = issued_at_the_desk(stack, f"Patient/{pid}", display="Đỗ Thị Lan")
    return iid, pid


def _cashier_on_a_new_invoice(visitor_factory: Any, stack: dict[str, str]) -> tuple[Any, str, str, int, str]:
    """The cashier (Vietnamese, 1280 wide) on the page of a new issued invoice (``_invoice``): (visitor, invoice
    id, patient id, the amount its QR asks, the transfer reference)."""
    iid, pid = _invoice(stack)
    v = visitor_factory("vi-1280")
    v.page.clock.install()  # before the page's timers: _next_poll moves it on
    v.sign_in("cashier", to=f"/invoices/{iid}?p={pid}")
    amount = int(re.sub(r"\D", "", v.page.inner_text("[data-testid=qr-amount]")))
    reference = v.page.inner_text("[data-testid=qr-reference]").strip()
    return v, iid, pid, amount, reference


def _next_poll(v: Any, paid: bool) -> None:
    """The status box's poll now, not once its interval has passed (every 10 s on a paid invoice, every 2 s on one
    awaiting payment: _invoice_status.html): the page's clock moved on by that interval, firing the poll's timer.
    What it asks for and what its answer swaps are the same; a later poll still comes in real time."""
    v.page.clock.run_for(10_000 if paid else 2_000)


def _paid_in_two_with_the_refund_box_open(visitor_factory: Any, stack: dict[str, str]) -> tuple[Any, str]:
    """The cashier on a new invoice paid by two transfers (10.000 ₫, then the rest), the page opened again
    paid (two payments, either may be refunded after payment) and its refund box opened: (visitor, the
    transfer reference)."""
    v, iid, pid, amount, reference = _cashier_on_a_new_invoice(visitor_factory, stack)
    transfer_arrives(stack, reference, 10000, "tra truoc")
    transfer_arrives(stack, reference, amount - 10000, "tra not")
    _next_poll(v, paid=False)
    v.page.wait_for_selector("[data-testid=paid]")
    v.go(f"/invoices/{iid}?p={pid}")
    v.page.click("details#refund-box > summary")
    return v, reference


def test_a_transfer_arriving_updates_the_payments_with_the_status_and_no_htmx_error(visitor_factory, stack):
    v, iid, pid, amount, reference = _cashier_on_a_new_invoice(visitor_factory, stack)
    transfer_arrives(stack, reference, 10000, "tra truoc")  # part of it: the cancel box goes
    _next_poll(v, paid=False)
    v.page.wait_for_function("() => document.querySelectorAll('[data-testid=payments] tbody tr').length === 1")
    v.go(f"/invoices/{iid}?p={pid}")  # the page as a cashier opens it now: something paid, no cancel box
    assert v.page.locator("details#cancel-box").count() == 0
    errors: list[str] = []
    v.page.on("console", lambda m: errors.append(m.text) if m.type in ("error", "warning") else None)
    v.page.evaluate("""() => { window.__oobMissing = [];
        document.body.addEventListener('htmx:oobErrorNoTarget',
                                       e => window.__oobMissing.push(e.detail.content.id)); }""")
    transfer_arrives(stack, reference, amount - 10000, "tra not")
    _next_poll(v, paid=False)
    v.page.wait_for_selector("[data-testid=paid]")  # no reload: the status box swapped
    rows = v.page.locator("[data-testid=payments] tbody tr")
    assert rows.count() == 2, v.page.inner_text("[data-testid=invoice-payments]")
    assert v.page.evaluate("window.__oobMissing") == []
    assert not [e for e in errors if "oobErrorNoTarget" in e], errors
    v.check("cashier-invoice-live-paid")


def test_a_late_transfer_keeps_the_refund_the_cashier_is_typing(visitor_factory, stack):
    """Review 9: on a paid invoice's page the cashier opens the refund box, chooses a payment, types an amount
    and a reason; a transfer arrives late: the new payment row appears (the payments box is swapped in, refund
    form and all) and the box came back closed and empty, nothing said. Now it stays open, the payment chosen,
    the amount, "Refund by" and the reason as typed (the reason box still the one typed in), and says the
    payments changed."""
    v, reference = _paid_in_two_with_the_refund_box_open(visitor_factory, stack)
    radios = v.page.locator("form[data-refund-form] input[name=payment]")
    assert radios.count() == 2
    chosen = radios.nth(1).get_attribute("value")  # not the one the form chooses by itself
    radios.nth(1).check()
    v.page.fill("form[data-refund-form] [name=amount]", "5.000")
    v.page.select_option("form[data-refund-form] [name=method]", "cash")
    v.page.fill("form[data-refund-form] [name=reason]", "thu nhầm phí sao y")
    v.page.focus("form[data-refund-form] [name=reason]")
    transfer_arrives(stack, reference, 20000, "chuyen them")  # late: the invoice is paid already
    _next_poll(v, paid=True)
    v.page.wait_for_function("() => document.querySelectorAll('[data-testid=payments] tbody tr').length === 3")
    assert v.page.evaluate("document.querySelector('details#refund-box').open")
    form = "form[data-refund-form]"
    assert v.page.locator(f"{form} input[name=payment]").count() == 3  # the late transfer offered too
    assert v.page.locator(f"{form} input[name=payment]:checked").get_attribute("value") == chosen
    assert v.page.input_value(f"{form} [name=amount]") == "5.000"
    assert v.page.input_value(f"{form} [name=method]") == "cash"
    assert v.page.input_value(f"{form} [name=reason]") == "thu nhầm phí sao y"
    assert v.page.evaluate("document.activeElement.name") == "reason"
    assert v.page.is_visible("[data-testid=refund-kept]") and not v.page.is_visible("[data-testid=refund-kept-gone]")
    assert "Danh sách thanh toán vừa thay đổi" in v.page.inner_text("[data-testid=refund-kept]")
    v.check("cashier-invoice-refund-kept")


def test_a_refund_being_typed_says_nothing_changed_when_nothing_did(visitor_factory, stack):
    """Review 12: the refund box said "Danh sách thanh toán vừa thay đổi…" while nothing had changed: the note is
    a ``.hint`` (``display: block``), which outranked its ``hidden`` attribute, so it showed from the start. Now
    the cashier types a refund, the status box polls and redraws itself with no new payment: no note."""
    v, _ = _paid_in_two_with_the_refund_box_open(visitor_factory, stack)
    v.page.fill("form[data-refund-form] [name=amount]", "5.000")
    v.page.fill("form[data-refund-form] [name=reason]", "thu nhầm phí sao y")
    v.page.evaluate("window.__box = document.getElementById('invoice-status')")
    # the status box polled and redrew itself: nothing new
    _next_poll(v, paid=True)
    v.page.wait_for_function("() => document.getElementById('invoice-status') !== window.__box")
    assert v.page.locator("[data-testid=payments] tbody tr").count() == 2
    assert v.page.input_value("form[data-refund-form] [name=amount]") == "5.000"
    for note in ("refund-kept", "refund-kept-gone", "refund-kept-none"):
        assert not v.page.is_visible(f"[data-testid={note}]"), v.page.inner_text("[data-testid=refund-box]")


def test_a_refund_box_whose_payment_was_given_back_meanwhile_says_so_and_keeps_what_was_typed(
        visitor_factory, stack):
    """Review 9: the payment the cashier chose is given back whole at another desk while they type: the swapped
    box no longer offers it; it stays open with the amount and reason typed, no payment chosen in its place,
    and says the payment chosen can no longer be refunded. The other given back too, nothing is left to refund:
    the box goes, and the page says the refund typed was not made, and what was typed."""
    v, _reference = _paid_in_two_with_the_refund_box_open(visitor_factory, stack)
    form = "form[data-refund-form]"
    radios = v.page.locator(f"{form} input[name=payment]")
    chosen = radios.nth(1).get_attribute("value")
    radios.nth(1).check()
    v.page.fill(f"{form} [name=amount]", "5.000")
    v.page.fill(f"{form} [name=reason]", "thu nhầm")
    r = httpx.post(f"{stack['billing']}/payments/{chosen}/refund", timeout=30,  # another desk gives it back whole
                   headers={**_cashier_api(stack), "Content-Type": "application/json",
                            "Idempotency-Key": uuid.uuid4().hex},
                   json={"reason": "hoàn ở quầy khác", "method": "transfer", "afterSettlement": True})
    assert r.status_code in (200, 201), r.text[:300]
    _next_poll(v, paid=True)
    v.page.wait_for_selector("[data-testid=refunds] tbody tr")
    assert v.page.evaluate("document.querySelector('details#refund-box').open")
    assert v.page.locator(f"{form} input[name=payment][value='{chosen}']").count() == 0
    assert v.page.locator(f"{form} input[name=payment]:checked").count() == 0  # not another one in its place
    assert v.page.input_value(f"{form} [name=amount]") == "5.000"
    assert v.page.input_value(f"{form} [name=reason]") == "thu nhầm"
    assert v.page.is_visible("[data-testid=refund-kept-gone]")
    assert "Khoản thanh toán đã chọn không còn hoàn được" in v.page.inner_text("[data-testid=refund-kept-gone]")
    # the other payment given back too: nothing is left to refund, the box goes, what was typed is said
    other = v.page.locator(f"{form} input[name=payment]").first.get_attribute("value")
    r = httpx.post(f"{stack['billing']}/payments/{other}/refund", timeout=30,
                   headers={**_cashier_api(stack), "Content-Type": "application/json",
                            "Idempotency-Key": uuid.uuid4().hex},
                   json={"reason": "hoàn ở quầy khác", "method": "transfer", "afterSettlement": True})
    assert r.status_code in (200, 201), r.text[:300]
    _next_poll(v, paid=True)
    v.page.wait_for_function("() => document.querySelectorAll('[data-testid=refunds] tbody tr').length === 2")
    assert v.page.locator("details#refund-box").count() == 0
    assert v.page.is_visible("[data-testid=refund-kept-none]")
    said = v.page.inner_text("[data-testid=refund-kept-none]")
    assert "khoản hoàn đang nhập chưa được thực hiện" in said and "5.000 · thu nhầm" in said, said


def test_the_refund_boxs_payments_read_at_360_px_each_limit_under_its_payment(visitor_factory, stack):
    """The walk at 360 px: each payment of the refund box is its radio, then its time, method and amount, and
    under them what it can give back. The label laid its parts out as flex items, so "Có thể hoàn tối đa
    50.000 ₫" was a column two words wide beside the payment, its amount broken over two lines."""
    v, _reference = _paid_in_two_with_the_refund_box_open(visitor_factory, stack)
    v.page.set_viewport_size({"width": 360, "height": 900})
    options = v.page.locator("form[data-refund-form] label.radio")
    assert options.count() == 2
    for i in range(2):
        said = options.nth(i).locator("[data-testid=refund-option]").bounding_box()
        limit = options.nth(i).locator("[data-testid=refund-limit]").bounding_box()
        assert limit["y"] >= said["y"] + said["height"] - 1, (said, limit)  # under the payment, not beside it
        assert limit["x"] <= said["x"] + 1, (said, limit)  # where the payment's words start
    broken = v.page.evaluate("""() => [...document.querySelectorAll('[data-testid=refund-limit]')]
        .filter(e => { const r = document.createRange(); r.selectNodeContents(e);
            const tops = [...r.getClientRects()].filter(b => b.width > 0).map(b => b.top);
            return Math.max(...tops) - Math.min(...tops) > 4; }).map(e => e.textContent)""")
    assert not broken, broken  # each "Có thể hoàn tối đa … ₫" on one line
    v.tag = "vi-360"
    v.check("cashier-refund-box")
