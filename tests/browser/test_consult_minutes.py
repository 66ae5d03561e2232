"""The doctor signs the minutes with several ICD-10 diagnoses in the browser: codes typed, then one
picked from the suggestions with the keyboard (added after them, not replacing them), then another typed; an unknown
code is named and the text kept; the signed minutes list every diagnosis in order and name the chair
once. Screenshotted and checked by axe-core (conftest.Visitor.check)."""

from __future__ import annotations

import pytest

from tests.browser.test_visit_changes import accepted_consult

pytestmark = pytest.mark.integration


def test_the_minutes_take_several_diagnoses_typed_and_picked(visitor_factory, stack):
    v = visitor_factory("vi-1280")
    accepted_consult(v, stack, "vi", "Đau ngực khi gắng sức, kèm tăng huyết áp và đái tháo đường.")
    page = v.page
    for name, text in (("history", "Đau ngực 2 tuần."), ("findings", "ECG: ST chênh xuống."),
                       ("conclusion", "Đau thắt ngực không ổn định trên nền tăng huyết áp."),
                       ("recommendations", "Chuyển tuyến trên.")):
        page.fill(f"#{name}", text)
    page.fill("#diagnosis", "I20.0, X99.9")
    page.click("form[action$='/complete'] button.primary")
    page.wait_for_selector("#diagnosis-error")  # the minutes' box again (sent in place), the code named
    assert "X99.9" in page.inner_text("#diagnosis-error") and page.input_value("#diagnosis") == "I20.0, X99.9"

    page.fill("#diagnosis", "I20.0, ")
    page.locator("#diagnosis").press_sequentially("tăng huyết")
    pick = page.locator("#diagnosis-suggest [role=option][data-query='tăng huyết'][data-pick^='I10 ']")
    pick.wait_for()
    # picked with the keyboard (the focus stays in the box; Enter picks the suggestion moved to, no new line)
    box = page.locator("#diagnosis")
    for _ in range(page.locator("#diagnosis-suggest [role=option]").count()):
        box.press("ArrowDown")
        if box.get_attribute("aria-activedescendant") == pick.get_attribute("id"):
            break
    assert pick.get_attribute("aria-selected") == "true" and page.evaluate("document.activeElement.id") == "diagnosis"
    box.press("Enter")
    assert page.input_value("#diagnosis") == "I20.0\nI10 — Tăng huyết áp vô căn (nguyên phát)\n"
    assert page.locator("#diagnosis-suggest").is_hidden()
    page.locator("#diagnosis").press_sequentially("E11.9")
    v.check("doctor-minutes-several-diagnoses")
    page.click("form[action$='/complete'] button.primary")
    page.wait_for_selector("[data-testid=done]")  # signed: said once, on the consult's own address
    codes = [t.split()[0] for t in page.locator("[data-testid=result] [data-testid=diagnosis]").all_inner_texts()]
    assert codes == ["I20.0", "I10", "E11.9"], codes
    page.click("summary:has-text('Toàn văn biên bản')")
    assert page.inner_text("[data-testid=minutes-chair]").strip() == "BS. Nguyễn Văn An"
    people = page.inner_text("[data-testid=minutes-participants]")
    assert people.count("Nguyễn Văn An") == 1, people
    v.check("doctor-minutes-signed")
