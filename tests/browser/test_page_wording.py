"""What the screenshots showed wrong, checked in the browser: the dashboard's time-to-answer table fits its
card in English at 1280 px ('90th percentile' was cut at the card's edge), and an accepted consult says when
it was accepted, not 'started'. Each page is checked by axe-core (conftest.Visitor.check)."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from tests.browser.test_visit_changes import accepted_consult

pytestmark = pytest.mark.integration


def test_the_dashboards_time_to_answer_table_fits_its_card_in_english(visitor_factory):
    v = visitor_factory("en-1280", width=1280)
    v.sign_in("health-dept")
    v.english()
    v.page.wait_for_selector("[data-testid=time-to-answer]")
    v.check("dept-dashboard-time-to-answer")
    box = v.page.evaluate(
        "() => { const t = document.querySelector('[data-testid=time-to-answer]'); const w = t.parentElement;"
        " return {table: t.scrollWidth, wrap: w.clientWidth,"
        " headers: [...t.querySelectorAll('th')].map(th => th.scrollWidth <= th.clientWidth)}; }")
    assert box["table"] <= box["wrap"], box  # nothing to scroll to: every column in sight
    assert all(box["headers"]), box
    assert "2026-W" not in v.page.inner_text("main")  # the weeks by their first day


@pytest.mark.parametrize("lang", ["vi", "en"])
def test_an_accepted_consult_says_when_it_was_accepted(visitor_factory, stack, lang):
    v = visitor_factory(f"{lang}-1280", width=1280)
    accepted_consult(v, stack, lang, "Xin ý kiến về liều thuốc.")
    label = v.page.locator("dt:has(+ [data-testid=task-accepted])").inner_text()
    assert label == {"vi": "Nhận ca lúc", "en": "Accepted at"}[lang], label
    assert v.page.locator("[data-testid=task-started]").count() == 0  # not started yet
    flash = v.page.locator(".alert.ok").inner_text()
    assert flash == {"vi": "Đã nhận ca hội chẩn.", "en": "You have accepted the consult."}[lang], flash
    v.check("doctor-accepted")
    v.page.click("form[action$='/start'] button")
    expect(v.page.locator("dt:has(+ [data-testid=task-started])")).to_have_text(
        {"vi": "Bắt đầu lúc", "en": "Started"}[lang])
