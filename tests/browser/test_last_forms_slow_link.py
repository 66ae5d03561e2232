"""The portal's last forms the browser posted, their answer lost on the way back (a clinic's 3G): the sign-in, the
language switch, the sign-out, the hub doctor's acceptance ("Nhận ca") and the clinic's end of a take-on. Each
was Chromium's own English "This site can't be reached". Sent in place now (as the other forms, _form.html's
sent_in_place): the page stays and says in its own box what happened and what to do, what was typed kept (the
user name; the password only in its box, never in the browser's storage); sent again, each is done once. The
answers are lost by the test (Playwright's routes: the portal did what was asked, its answer reset), not timed."""

from __future__ import annotations

import random
import re

import httpx
import pytest
from playwright.sync_api import expect

from tests.browser.test_confirm_steps import patient_of_another_facility
from tests.browser.test_pages import _admin, _submit
from tests.browser.test_slow_link import losing_the_first_answer, said_not_sent

pytestmark = pytest.mark.integration


def _stored(page) -> str:
    """Everything the page's origin keeps in the browser's storage (htmx's history cache is localStorage's)."""
    return page.evaluate("() => JSON.stringify([Object.assign({}, localStorage), Object.assign({}, sessionStorage)])")


def test_a_sign_in_whose_answer_is_lost_keeps_the_user_name_and_signs_in_when_sent_again(visitor_factory):
    v = visitor_factory("vi-360-slow-sign-in", width=360, height=740)
    page = v.page
    v.go("/login?next=/consults")
    page.fill("#username", "clinic")
    page.fill("#password", "sen-clinic")
    sent: list[int] = []
    page.route(re.compile(r".*/login(\?.*)?$"), losing_the_first_answer(sent))
    page.click("#sign-in button.primary")
    said_not_sent(page, "#sign-in-live-error")
    assert sent == [204] and page.url.endswith("/login?next=/consults")  # the portal signed in; the page stayed
    assert page.input_value("#username") == "clinic"
    assert "sen-clinic" not in _stored(page)
    v.check("sign-in-connection-lost")
    page.click("#sign-in button.primary")  # sent again: signed in, the page asked for
    page.wait_for_url(re.compile(r"^[^?]*/consults$"))
    assert "sen-clinic" not in _stored(page) and sent == [204]


def _header_answer_lost(visitor_factory, tag: str, action: str, button: str, words: str):
    """The nurse on the patients' page presses a header's ``button`` (its form posts to ``action``), its answer lost
    on the way back: the page stays and the form's own box under the header says ``words``. The tab, signed in."""
    v = visitor_factory(tag, width=360, height=740)
    v.sign_in("clinic", to="/patients")
    page = v.page
    sent: list[int] = []
    page.route(re.compile(rf".*/{action}$"), losing_the_first_answer(sent))
    page.click(button)
    box = page.locator(f"#{action}-live-error")
    expect(box).to_be_visible()  # (its words are there while it is hidden)
    expect(box).to_have_text(words)
    assert sent == [204] and page.url.endswith("/patients")  # the portal did it; the page stayed
    return v


def test_a_language_switch_whose_answer_is_lost_says_so_and_switches_when_sent_again(visitor_factory):
    v = _header_answer_lost(visitor_factory, "vi-360-slow-language", "language", "header button[value='en']",
                            "Chưa đổi được ngôn ngữ do lỗi kết nối. Hãy thử lại.")
    page = v.page
    expect(page.locator("html")).to_have_attribute("lang", "vi")  # the page as it was
    v.check("language-connection-lost")
    page.click("header button[value='en']")  # sent again: the same language chosen
    expect(page.locator("html")).to_have_attribute("lang", "en")
    assert page.url.endswith("/patients") and page.locator("#language-live-error").is_hidden()


def test_a_sign_out_whose_answer_is_lost_says_it_may_not_be_done_and_signs_out_when_sent_again(visitor_factory):
    v = _header_answer_lost(visitor_factory, "vi-360-slow-sign-out", "logout", "header form[action='/logout'] button",
                            "Chưa xác nhận được việc đăng xuất do lỗi kết nối. Hãy bấm “Đăng xuất” lại trước khi "
                            "rời máy tính này.")
    page = v.page
    v.check("sign-out-connection-lost")
    page.click("header form[action='/logout'] button")  # sent again: signed out, the sign-in page
    page.wait_for_url(re.compile(r".*/login$"))
    v.go("/patients")
    assert "/login" in page.url  # signed out: the pages ask for a sign-in again


def test_an_acceptance_whose_answer_is_lost_says_so_and_accepts_once_when_sent_again(visitor_factory, stack):
    tid = _submit(stack, "Đau thượng vị, nôn ra máu một lần; xin ý kiến.", "urgent")
    v = visitor_factory("vi-360-slow-accept", width=360, height=740)
    v.sign_in("doctor", to=f"/tasks/{tid}")
    page = v.page
    sent: list[int] = []
    page.route(re.compile(r".*/tasks/[^/]+/accept$"), losing_the_first_answer(sent))
    page.click("form[action$='/accept'] button")
    said_not_sent(page, "#accept-live-error")
    assert sent == [204] and page.url.endswith(f"/tasks/{tid}")  # teleconsult accepted it; the page stayed
    page.click("form[action$='/accept'] button")  # sent again: the page's version is gone, the consult hers
    page.wait_for_selector("[data-testid=accepted]")
    assert page.url.endswith(f"/tasks/{tid}") and sent == [204]
    history = httpx.get(f"{stack['teleconsult']}/fhir/Task/{tid}/_history", headers=_admin(stack), timeout=30).json()
    states = [e["resource"]["status"] for e in history.get("entry") or []]
    assert states.count("accepted") == 1, states


def found_elsewhere(visitor_factory, stack, tag: str):
    """A patient another facility registered, found by her CCCD by the clinic's nurse on a 360 px phone (``tag``
    names the screenshots): (the visitor, the patient's id); the take-on form is on the page."""
    cccd = f"0870{random.randrange(10**8):08d}"
    pid = patient_of_another_facility(stack, cccd)
    v = visitor_factory(tag, width=360, height=740)
    v.sign_in("clinic", to="/patients")
    v.page.fill("#q", cccd)
    v.page.click("form[action$='/patients/search'] button.primary")
    return v, pid


def test_an_end_of_a_take_on_whose_answer_is_lost_keeps_the_reason_and_ends_it_once(visitor_factory, stack):
    v, pid = found_elsewhere(visitor_factory, stack, "vi-360-slow-end-take-on")
    page = v.page
    form = "form[data-testid=take-on]"
    page.click(f"{form} button.primary")  # the step, then confirmed: taken on, the chart
    page.check(f"{form} [data-testid=confirm-tick]")
    page.click(f"{form} [data-testid=confirm-button]")
    page.wait_for_url(re.compile(rf"/patients/{pid}$"))
    reason = "Người bệnh đã chuyển về trạm y tế quản lý."
    page.fill("#end-take-on textarea[name=reason]", reason)
    page.check("[data-testid=end-take-on-confirm]")
    sent: list[int] = []
    page.route(re.compile(r".*/patients/[^/]+/end-take-on$"), losing_the_first_answer(sent))
    page.click("#end-take-on button.danger")
    said_not_sent(page, "#end-take-on-live-error")
    assert sent == [204] and page.url.endswith(f"/patients/{pid}")  # the EHR ended it; the page stayed
    assert page.input_value("#end-take-on textarea[name=reason]") == reason
    v.check("end-take-on-connection-lost")
    page.click("#end-take-on button.danger")  # sent again: the EHR answers the end it made
    expect(page.locator("h1")).to_contain_text("Đã kết thúc tiếp nhận")
    assert sent == [204] and page.url.endswith(f"/patients/{pid}")
