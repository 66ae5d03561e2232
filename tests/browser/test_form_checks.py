"""What the forms check in the browser before anything is sent (headless Chromium against the whole stack,
axe-core on each page): the consult form refuses a file over the per-file limit or of a type not accepted,
by name, in the server's words, with no request sent; its reason box is a combobox whose suggestions the
keyboard picks (ArrowDown then Enter: picked, the form not sent); the new invoice says a quantity that is
not a whole number from 1 to 1000 beside its box as it is typed, and again after Enter.
Screenshots: vi-360 ``clinic-consult-file-refused``, vi-1280 ``clinic-consult-reason-list``,
vi-1280 ``cashier-new-invoice-quantity``."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from tests.browser.test_cashier_charges import _add, answered_in_place

pytestmark = pytest.mark.integration

PNG = b"\x89PNG\r\n\x1a\n" + bytes(90_000)


def _posts(page, path: str) -> list[str]:
    """The POSTs the page sends to ``path`` from now on (a list that grows)."""
    sent: list[str] = []
    page.on("request", lambda r: sent.append(r.url) if r.method == "POST" and r.url.endswith(path) else None)
    return sent


def test_a_file_over_the_limit_is_refused_before_any_byte_is_sent(visitor_factory):
    v = visitor_factory("vi-360", width=360, height=780)
    v.sign_in("clinic", to="/patients/bn-0002/consult")
    page = v.page
    sent = _posts(page, "/patients/bn-0002/consult")
    page.select_option("#priority", "routine")
    page.fill("#reason", "J18.9")
    page.fill("#question", "Xin ý kiến về phim X-quang ngực kèm theo.")
    big = b"\xff\xd8\xff" + bytes(1_700_000)  # 1.7 MB: over the 1.5 MB a file, the two under 1.9 MB together
    page.set_input_files("#files", files=[{"name": "big.jpg", "mimeType": "image/jpeg", "buffer": big},
                                          {"name": "xray.png", "mimeType": "image/png", "buffer": PNG}])
    box = page.locator("#files-refused")
    box.wait_for(state="visible")  # said as soon as the files are chosen
    assert box.inner_text().strip() == "big.jpg lớn hơn 1,5 MB."
    assert "files-refused" in page.get_attribute("#files", "aria-describedby")
    page.click("#consult-form button.primary")
    assert page.evaluate("document.activeElement.id") == "files-refused"
    assert page.locator("#upload-progress").is_hidden() and page.url.endswith("/consult")
    assert page.input_value("#question").startswith("Xin ý kiến") and page.locator("#live-error-too-large").is_hidden()
    v.check("clinic-consult-file-refused")

    # a type the server refuses, by name, in its words
    page.set_input_files("#files", files=[{"name": "ghi-chu.txt", "mimeType": "text/plain", "buffer": b"huyet ap"}])
    # the files' check runs when they are chosen, asynchronously (a photo may be shrunk): waited for, not raced
    expect(box).to_have_text("ghi-chu.txt: chỉ đính kèm được tệp PDF, JPEG, PNG và WebP.")
    page.click("#consult-form button.primary")
    assert box.is_visible()
    assert sent == []  # not one request: nothing was sent

    # the files chosen again: the message goes (not sent here: test_roles sends J18.9 for bn-0002)
    page.set_input_files("#files", files=[{"name": "xray.png", "mimeType": "image/png", "buffer": PNG}])
    expect(box).to_be_hidden()
    assert page.get_attribute("#files", "aria-invalid") is None
    assert "files-refused" not in (page.get_attribute("#files", "aria-describedby") or "")


def test_the_reason_box_is_a_combobox_the_keyboard_picks_from(visitor_factory):
    v = visitor_factory("vi-1280")
    v.sign_in("clinic", to="/patients/bn-0001/consult")
    page = v.page
    sent = _posts(page, "/patients/bn-0001/consult")
    reason = page.locator("#reason")
    assert reason.get_attribute("role") == "combobox" and reason.get_attribute("aria-expanded") == "false"
    assert reason.get_attribute("aria-controls") == "reason-suggest"
    page.fill("#question", "Huyết áp 170/100 dù đã dùng amlodipin 5 mg; xin ý kiến.")
    reason.fill("tang huyet ap")  # one search (keystrokes on a busy machine could be several)
    first = page.locator("#reason-suggest [role=option]").first
    first.wait_for()
    assert reason.get_attribute("aria-expanded") == "true"
    assert page.get_attribute("#reason-suggest", "role") == "listbox"
    reason.press("ArrowDown")
    assert page.evaluate("document.activeElement.id") == "reason"  # the focus stays in the box
    assert reason.get_attribute("aria-activedescendant") == first.get_attribute("id")
    assert first.get_attribute("aria-selected") == "true"
    v.check("clinic-consult-reason-list")  # the list open, an option moved to
    reason.press("ArrowDown")
    reason.press("ArrowUp")
    chosen = first.get_attribute("data-pick")
    reason.press("Enter")
    assert page.input_value("#reason") == chosen
    assert reason.get_attribute("aria-expanded") == "false" and reason.get_attribute("aria-activedescendant") is None
    assert page.locator("#form-errors").count() == 0 and sent == []  # picked, not sent

    # typed again: Escape closes the list; Enter while it is open never sends the form
    reason.fill("dai thao duong")
    page.locator("#reason-suggest [role=option]").first.wait_for()
    reason.press("Enter")
    assert sent == [] and reason.get_attribute("aria-expanded") == "true"
    reason.press("Escape")
    assert page.locator("#reason-suggest").is_hidden() and reason.get_attribute("aria-expanded") == "false"
    assert sent == []


def test_a_quantity_that_is_no_whole_number_is_said_beside_its_box(visitor_factory):
    v = visitor_factory("vi-1280")
    v.sign_in("cashier", to="/invoices/new")
    page = v.page
    _add(v, "kham benh", "kham-benh")
    qty = page.locator("#line-0-qty")
    assert qty.get_attribute("inputmode") == "numeric"
    assert (qty.get_attribute("data-min"), qty.get_attribute("data-max")) == ("1", "1000")
    message = page.locator("#line-0-qty-error")
    assert message.inner_text() == ""
    sent = _posts(page, "/invoices/new")
    qty.fill("")
    qty.press_sequentially("2,5")
    assert message.inner_text() == "Số lượng là số nguyên từ 1 đến 1000."  # as typed, nothing sent
    assert qty.get_attribute("aria-invalid") == "true" and "line-0-qty-error" in qty.get_attribute("aria-describedby")
    assert sent == []
    # the amounts again (sent in place): the message stays beside the box, what was typed too
    answered_in_place(page, lambda: qty.press("Enter"))
    assert len(sent) == 1
    assert page.input_value("#line-0-qty") == "2,5"
    assert page.inner_text("#line-0-qty-error") == "Số lượng là số nguyên từ 1 đến 1000."
    assert page.get_attribute("#line-0-qty", "aria-invalid") == "true"
    v.check("cashier-new-invoice-quantity")
    page.fill("#line-0-qty", "3")
    assert page.inner_text("#line-0-qty-error") == "" and page.get_attribute("#line-0-qty", "aria-invalid") is None
