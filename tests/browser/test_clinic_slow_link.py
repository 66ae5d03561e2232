"""The district nurse's registration and her consult's cancel on a 400 kbit/s, 400 ms link (session 27's walk):
both were forms the browser posted, and an answer lost on the way back was Chromium's own English "This site
can't be reached"; Back then brought the patient search, the registration's details gone, and the details typed
again asked whether the patient just registered was "registered already". Sent in place now: the page stays and
says so in the form's box, what was typed kept; sent again, one patient (the chart the first registered) and one
cancel. The answers are lost by the test (Playwright's routes), not by timing."""

from __future__ import annotations

import random
import re

import pytest
from playwright.sync_api import expect

from tests.browser.test_slow_link import losing_the_first_answer, said_not_sent

pytestmark = pytest.mark.integration


def _slow(page) -> None:
    """A district clinic's 3G: 400 kbit/s each way, 400 ms (Chromium's network emulation)."""
    cdp = page.context.new_cdp_session(page)
    cdp.send("Network.enable")
    cdp.send("Network.emulateNetworkConditions", {"offline": False, "latency": 400, "downloadThroughput": 50_000,
                                                  "uploadThroughput": 50_000})


def test_a_registration_whose_answer_is_lost_keeps_the_details_and_registers_one_patient(visitor_factory):
    v = visitor_factory("vi-360-slow-register", width=360, height=740)
    page = v.page
    _slow(page)
    v.sign_in("clinic", to="/patients/new")
    given = "Thị " + random.choice(["Hồng Nhung", "Thu Hà", "Ngọc Yến", "Bích Thảo"]) + " " + \
        random.choice(["Út", "Lệ", "Mỹ", "Kiều", "Diệu", "Tuyết"])
    typed = {"#family": "Đặng", "#given": given, "#birth_date": "03/11/1988", "#phone": "0912345678"}
    for box, text in typed.items():
        page.fill(box, text)
    page.check("#gender-0")
    sent: list[int] = []
    page.route(re.compile(r".*/patients/new$"), losing_the_first_answer(sent))
    page.click("form.card button.primary")
    said_not_sent(page, "#register-live-error")
    assert sent == [204] and page.url.endswith("/patients/new")  # the EHR has the patient; the page stayed
    for box, text in typed.items():
        assert page.input_value(box) == text, box
    v.shot("vi-360-register-connection-lost")
    page.click("form.card button.primary")  # sent again: the chart of the patient registered, said so
    page.wait_for_selector("[data-testid=created]")
    assert f"Đặng {given}" in page.inner_text("h1") and sent == [204]
    chart = page.url
    v.go("/patients")
    from sen_shared.fhir.search.text import normalize

    page.fill("#q", normalize(f"Đặng {given}"))
    page.click("form.card button.primary")
    page.wait_for_selector("#results table")
    rows = page.locator("#results tbody tr", has_text=f"Đặng {given}")
    assert rows.count() == 1, page.inner_text("#results")  # one patient
    assert rows.locator("a").first.get_attribute("href") == chart.replace(v.base, "")


def test_a_cancel_whose_answer_is_lost_keeps_the_reason_and_cancels_once(visitor_factory, stack):
    from tests.browser.test_pages import _submit

    tid = _submit(stack, "Ho kéo dài, sốt nhẹ; xin ý kiến.", patient="bn-0001")
    v = visitor_factory("vi-360-slow-cancel", width=360, height=740)
    page = v.page
    _slow(page)
    v.sign_in("clinic", to=f"/consults/{tid}")
    page.click("#cancel-box summary")
    reason = "Người bệnh đã tự chuyển lên bệnh viện tỉnh."
    page.fill("#cancel-box textarea[name=reason]", reason)
    page.click("#cancel-box button.danger")  # the first press: the confirmation step, in the box
    page.locator("#cancel-box [data-testid=confirm-tick]").check()
    sent: list[int] = []
    page.route(re.compile(r".*/consults/[^/]+/cancel$"), losing_the_first_answer(sent))
    page.click("#cancel-box [data-testid=confirm-button]")
    said_not_sent(page, "#cancel-live-error")
    assert sent == [204] and page.url.endswith(f"/consults/{tid}")  # teleconsult cancelled it; the page stayed
    assert page.input_value("#cancel-box textarea[name=reason]") == reason
    page.click("#cancel-box [data-testid=confirm-button]")  # sent again: the same key, cancelled once
    expect(page.locator("[data-testid=cancelled]")).to_be_visible()
    assert reason in page.inner_text("[data-testid=status-reason]") and sent == [204]
    v.check("clinic-cancelled-after-a-lost-answer")


def test_a_registration_refused_on_its_fields_in_place_takes_the_nurse_to_what_to_correct(visitor_factory):
    """Sent in place, the box swapped in took the pressed button with it: the focus fell to the page and a phone
    stayed at the button, below the fields to correct. The summary of what to correct takes the focus (in view,
    read out), as it does on a page the browser loads."""
    v = visitor_factory("vi-360-register-errors", width=360, height=740)
    page = v.page
    v.sign_in("clinic", to="/patients/new")
    page.fill("#family", "Lê")
    page.click("form.card button.primary")
    page.wait_for_selector("#form-errors")
    page.wait_for_function("() => document.activeElement && document.activeElement.id === 'form-errors'")
    assert page.evaluate("() => { const r = document.getElementById('form-errors').getBoundingClientRect();"
                         " return r.top >= 0 && r.bottom <= window.innerHeight; }")
    assert page.url.endswith("/patients/new") and page.input_value("#family") == "Lê"
    assert page.locator(".field.invalid").count() >= 3
    v.check("clinic-register-errors-in-place")
