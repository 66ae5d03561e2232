"""The consult form's file box speaks the page's language (headless Chromium against the whole stack, axe-core
on the page): the browser's own button ("Choose Files / No file chosen" whatever the page's language) is
hidden but stays in the page and focusable; its label after it is the button, "Chọn tệp" ("Choose files"),
the text beside it names what is chosen (app.js); Tab reaches it with its focus drawn on the label; a file
over the limit is still refused by name before anything is sent. Without JavaScript the native control shows.
The box has one label (the button) and one accessible name saying what to attach and how (the field's name and
the button's words, aria-labelledby): two labels (the field's name was one) left axe-core unsure
(form-field-multiple-labels, "needs review"); axe now has no violation and nothing to review on it.
The answer form to the doctor's question draws its file box with the same macro (_form.html's field()).
Screenshots: vi-1280 / vi-360 ``clinic-consult-files-chosen``."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

pytestmark = pytest.mark.integration

PNG = b"\x89PNG\r\n\x1a\n" + bytes(90_000)
NAME = "Hình ảnh và tài liệu (PDF, JPEG, PNG, WebP; mỗi tệp tối đa 1,5 MB) Chọn tệp"


def axe_on(v, selector: str) -> dict[str, list[str]]:
    """axe-core's violations (any impact) and the checks it could not decide ("incomplete": needs review) on the
    page's element ``selector``, by rule id."""
    v.page.add_script_tag(url=v.base + "/assets/vendor/axe.min.js")
    return v.page.evaluate(
        "async (sel) => { const el = document.querySelector(sel);"
        " const r = await axe.run(document, {resultTypes: ['violations', 'incomplete']});"
        " const on = (list) => list.filter(x => x.nodes.some(n => document.querySelector(n.target.join(' ')) === el))"
        ".map(x => x.id);"
        " return {violations: on(r.violations), incomplete: on(r.incomplete)}; }", selector)


@pytest.mark.parametrize("width", [1280, 360])
def test_the_file_box_says_choose_and_what_is_chosen_in_the_pages_words(visitor_factory, width):
    v = visitor_factory(f"vi-{width}", width=width, height=900 if width > 360 else 780)
    v.sign_in("clinic", to="/patients/bn-0002/consult")
    page = v.page
    sent: list[str] = []
    page.on("request", lambda r: sent.append(r.url) if r.method == "POST" else None)
    button, chosen = page.locator("label.file-button[for=files]"), page.locator("#files-chosen")
    assert button.is_visible() and button.inner_text().strip() == "Chọn tệp"
    assert chosen.inner_text().strip() == "Chưa chọn tệp" and chosen.get_attribute("aria-live") == "polite"
    box = page.locator("#files").bounding_box()  # in the page, visually hidden (not display: none)
    assert box is not None and box["width"] <= 1 and box["height"] <= 1
    assert "files-chosen" in page.get_attribute("#files", "aria-describedby")
    # one label, one name: what to attach and how
    assert axe_on(v, "#files") == {"violations": [], "incomplete": []}
    assert page.evaluate("document.getElementById('files').labels.length") == 1
    expect(page.locator("#files")).to_have_accessible_name(NAME)

    # Tab from the question reaches the file box; its focus is drawn on the label
    page.focus("#question")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "files"
    outline = page.evaluate("() => { const s = getComputedStyle("
                            "document.querySelector('label.file-button[for=files]'));"
                            " return [s.outlineStyle, s.outlineWidth]; }")
    assert outline == ["solid", "3px"]
    page.focus("#question")
    assert page.evaluate("getComputedStyle(document.querySelector('label.file-button[for=files]')).outlineStyle") \
        == "none"

    page.set_input_files("#files", files=[{"name": "a.pdf", "mimeType": "application/pdf", "buffer": b"%PDF-1.4\n"},
                                          {"name": "b.png", "mimeType": "image/png", "buffer": PNG}])
    assert chosen.inner_text().strip() == "2 tệp: a.pdf, b.png"
    v.check("clinic-consult-files-chosen")

    # over the limit: refused by name before anything is sent, as before; the names still said
    page.select_option("#priority", "routine")
    page.fill("#reason", "J18.9")
    page.fill("#question", "Xin ý kiến về phim X-quang ngực kèm theo.")
    big = b"\xff\xd8\xff" + bytes(1_700_000)
    page.set_input_files("#files", files=[{"name": "big.jpg", "mimeType": "image/jpeg", "buffer": big}])
    assert chosen.inner_text().strip() == "1 tệp: big.jpg"
    refused = page.locator("#files-refused")
    refused.wait_for(state="visible")
    assert refused.inner_text().strip() == "big.jpg lớn hơn 1,5 MB."
    page.click("#consult-form button.primary")
    assert page.evaluate("document.activeElement.id") == "files-refused"
    assert sent == []

    page.set_input_files("#files", files=[])
    assert chosen.inner_text().strip() == "Chưa chọn tệp"


def test_the_file_box_is_english_on_an_english_page(visitor_factory):
    v = visitor_factory("en-1280")
    v.sign_in("clinic")
    v.english()
    v.go("/patients/bn-0002/consult")
    page = v.page
    assert page.locator("label.file-button[for=files]").inner_text().strip() == "Choose files"
    chosen = page.locator("#files-chosen")
    assert chosen.inner_text().strip() == "No file chosen"
    page.set_input_files("#files", files=[{"name": "b.png", "mimeType": "image/png", "buffer": PNG}])
    assert chosen.inner_text().strip() == "1 file: b.png"


def test_without_javascript_the_browsers_own_file_box_shows(browser, stack):
    ctx = browser.new_context(java_script_enabled=False, locale="vi-VN", viewport={"width": 360, "height": 780})
    try:
        page = ctx.new_page()
        page.goto(stack["portal"] + "/login")
        page.fill("#username", "clinic")
        page.fill("#password", "sen-clinic")
        page.click("form button.primary")
        page.goto(stack["portal"] + "/patients/bn-0002/consult")
        box = page.locator("#files").bounding_box()
        assert box is not None and box["width"] > 100
        assert page.locator("label.file-button[for=files]").is_hidden() and page.locator("#files-chosen").is_hidden()
    finally:
        ctx.close()
