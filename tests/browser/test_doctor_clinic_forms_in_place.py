"""The clinic's take-on, the hub doctor's 'Bắt đầu', her weekly hours and leave, and the admin's price entry, their
answer lost on the way back (a clinic's 3G). Each was posted by the browser: Chromium's own English "This site
can't be reached", what was typed gone. Sent in place now (_form.html's sent_in_place): the page stays, the form's
own box says in the page's language that nothing came back and what to do, what was typed kept; sent again, each
is done once (the EHR's one grant, the consult's version, teleconsult's and billing's replay of the form's key).
The answers are lost by the test (Playwright's routes: the portal did what was asked, its answer reset), not timed.
One browser and the shared stack (tests/browser/conftest.py)."""

from __future__ import annotations

import random
import re
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import httpx
import pytest
from playwright.sync_api import expect

from tests.browser.test_last_forms_slow_link import found_elsewhere
from tests.browser.test_pages import _admin, _submit
from tests.browser.test_prices import ENTRY, _dong, _entry, _price
from tests.browser.test_slow_link import losing_the_first_answer, said_not_sent

pytestmark = pytest.mark.integration

TZ = ZoneInfo("Asia/Ho_Chi_Minh")


def test_a_take_on_whose_answer_is_lost_keeps_the_reason_and_takes_on_once(visitor_factory, stack):
    v, pid = found_elsewhere(visitor_factory, stack, "vi-360-in-place-take-on")
    page = v.page
    form = "form[data-testid=take-on]"
    page.check(f"{form} input[name=reason][value=other]")
    page.fill(f"{form} input[name=other]", "Người bệnh chuyển về sống tại xã")
    page.click(f"{form} button.primary")  # the step, in place
    page.check(f"{form} [data-testid=confirm-tick]")
    sent: list[int] = []
    page.route(re.compile(r".*/patients/(.+/)?take-on$"), losing_the_first_answer(sent))
    page.click(f"{form} [data-testid=confirm-button]")
    said_not_sent(page, "#take-on-live-error")
    assert sent == [204] and f"/patients/{pid}" not in page.url  # the EHR granted it; the page stayed
    assert page.input_value(f"{form} input[name=other]") == "Người bệnh chuyển về sống tại xã"
    v.check("take-on-connection-lost")
    page.click(f"{form} [data-testid=confirm-button]")  # sent again: the EHR answers the grant it made
    page.wait_for_url(re.compile(rf"/patients/{pid}$"))
    assert sent == [204]
    trail = httpx.get(f"{stack['ehr']}/fhir/AuditEvent", headers=_admin(stack), timeout=30,
                      params={"patient": f"Patient/{pid}", "subtype": "take-on", "_count": "20"}).json()
    reasons = [e["resource"]["purposeOfEvent"][0]["text"] for e in trail.get("entry") or []]
    assert set(reasons) == {"Người bệnh chuyển về sống tại xã"}


def test_a_start_whose_answer_is_lost_says_so_and_starts_once_when_sent_again(visitor_factory, stack):
    tid = _submit(stack, "Khó thở khi gắng sức, phù hai chân; xin ý kiến.", "urgent")
    v = visitor_factory("vi-360-in-place-start", width=360, height=740)
    v.sign_in("doctor", to=f"/tasks/{tid}")
    page = v.page
    page.click("form[action$='/accept'] button")
    page.wait_for_selector("[data-testid=accepted]")
    sent: list[int] = []
    page.route(re.compile(r".*/tasks/[^/]+/start$"), losing_the_first_answer(sent))
    page.click("[data-testid=start-consult]")
    said_not_sent(page, "#start-live-error")
    assert sent == [204] and page.url.endswith(f"/tasks/{tid}")  # teleconsult started it; the page stayed
    v.check("start-connection-lost")
    page.click("[data-testid=start-consult]")  # sent again: the version is gone, the consult hers in progress
    page.wait_for_selector("[data-testid=started]")
    history = httpx.get(f"{stack['teleconsult']}/fhir/Task/{tid}/_history", headers=_admin(stack), timeout=30).json()
    states = [e["resource"]["status"] for e in history.get("entry") or []]
    assert states.count("in-progress") == 1, states


def test_the_hours_and_a_leave_whose_answers_are_lost_keep_what_was_typed_and_are_saved_once(visitor_factory):
    v = visitor_factory("vi-1280-in-place-availability")
    v.sign_in("doctor", to="/availability")
    page = v.page
    sent: list[int] = []
    page.route(re.compile(r".*/availability$"), losing_the_first_answer(sent))
    week = "form:has(input[name=which][value=week])"
    hours = page.input_value("#week-windows-0-start_time")
    page.click(f"{week} button.primary")  # the hours as they are, saved again
    said_not_sent(page, "#week-live-error")
    assert sent == [200] and page.input_value("#week-windows-0-start_time") == hours
    page.click(f"{week} button.primary")
    expect(page.locator("main div.alert.ok[role=status]")).to_contain_text("Đã lưu")

    sent.clear()
    reason = f"Tập huấn {random.randrange(10**6):06d}"
    day = f"{datetime.now(TZ) + timedelta(days=random.randrange(300, 600)):%d/%m/%Y}"
    page.fill("#leave-start", day)
    page.fill("#leave-end", day)
    page.fill("#leave-reason", reason)
    page.click("form:has(input[name=which][value=leave]) button.primary")
    said_not_sent(page, "#leave-live-error")
    assert sent == [200] and page.input_value("#leave-reason") == reason and page.input_value("#leave-start") == day
    v.check("leave-connection-lost")
    page.click("form:has(input[name=which][value=leave]) button.primary")  # sent again: teleconsult replays it
    # the answer's page lists the leave: not the "Đã lưu" above, the hours' answer's, shown since (the same words)
    expect(page.locator("[data-testid=leave]", has_text=reason)).to_have_count(1)
    expect(page.locator("main div.alert.ok[role=status]")).to_contain_text("Đã lưu")
    v.go("/availability")
    leave = page.locator("[data-testid=leave]", has_text=reason)
    expect(leave).to_have_count(1)
    leave.locator("summary").click()  # taken away again (the shared stack's doctor)
    leave.locator("[data-testid=leave-remove]").click()
    expect(page.locator("[data-testid=leave]", has_text=reason)).to_have_count(0)


def test_a_price_whose_answer_is_lost_keeps_it_says_so_in_english_and_is_saved_once(visitor_factory, stack):
    start = _entry(stack)
    version, new = int(start["meta"]["versionId"]), _price(start) + 3000
    v = visitor_factory("en-1280-in-place-price")
    v.sign_in("admin")
    v.english()
    v.go("/prices")
    page = v.page
    row = page.locator(f"#price-{ENTRY}")
    row.locator("input[name$='-price']").fill(_dong(new))
    sent: list[int] = []
    page.route(re.compile(rf".*/prices/{ENTRY}(\?.*)?$"), losing_the_first_answer(sent))
    row.locator("button.primary").click()
    box = page.locator(f"#price-live-error-{ENTRY}")
    expect(box).to_be_visible()  # (its words are there while it is hidden)
    expect(box).to_have_text("The request could not be sent: the connection failed. What you typed is kept; "
                             "try again.")
    assert sent == [204] and page.url.endswith("/prices")
    assert row.locator("input[name$='-price']").input_value() == _dong(new)
    v.check("price-connection-lost")
    row.locator("button.primary").click()  # sent again: billing replays the save, no "changed meanwhile"
    expect(page.locator(f"#price-{ENTRY} [data-testid=price-saved]")).to_contain_text(f"version {version + 1}")
    assert page.locator("[data-testid=price-conflict]").count() == 0
    after = _entry(stack)
    assert int(after["meta"]["versionId"]) == version + 1 and _price(after) == new
