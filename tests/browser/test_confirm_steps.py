"""Permanent actions are confirmed first (web/confirming.py), clicked and typed on a phone (360 px): the
nurse's "Hủy hội chẩn" sits behind its disclosure, apart from the message box; pressed, it cancels nothing
and shows what will happen with the reason kept and the keyboard on the tick; ticked (by the keyboard) and
confirmed, the consult is cancelled. Taking another facility's patient on: the reason is chosen ("Khác" with
the nurse's words), then confirmed, and the EHR keeps those words. Screenshots: vi-360
``consult-cancel-closed``, ``consult-cancel-confirm``, ``take-on-reason``, ``take-on-confirm``."""

from __future__ import annotations

import random
import re

import httpx
import pytest
from playwright.sync_api import expect

from tests.browser.test_pages import _admin, _submit

pytestmark = pytest.mark.integration

REASON = "Người bệnh đã chuyển viện tuyến trên."
ELSEWHERE = "tyt-doc-binh-kieu"  # a demo facility that is not the demo nurse's (tyt-my-hiep)


def patient_of_another_facility(stack: dict[str, str], cccd: str) -> str:
    r = httpx.post(f"{stack['ehr']}/fhir/Patient", headers=_admin(stack), timeout=30, json={
        "resourceType": "Patient", "name": [{"family": "Huỳnh", "given": ["Văn", "Tâm"]}], "gender": "male",
        "birthDate": "1948-01-01", "identifier": [{"system": "https://fhir.sen.vn/sid/cccd", "value": cccd}],
        "managingOrganization": {"reference": f"Organization/{ELSEWHERE}"}})
    assert r.status_code == 201, r.text[:300]
    return r.json()["id"]


def _status(stack: dict[str, str], tid: str) -> str:
    r = httpx.get(f"{stack['teleconsult']}/fhir/Task/{tid}", headers=_admin(stack), timeout=30)
    assert r.status_code == 200, r.text[:300]
    return r.json()["status"]


def test_the_nurse_cancels_a_consult_behind_its_disclosure_and_confirms(visitor_factory, stack):
    tid = _submit(stack, "Xin ý kiến về đau ngực không ổn định.")
    v = visitor_factory("vi-360", width=360, height=780)
    v.sign_in("clinic", to=f"/consults/{tid}")
    # closed until asked for: the message box is the one text box in sight, not a cancel box beside it
    assert not v.page.locator("#cancel-box textarea").is_visible()
    assert v.page.inner_text("#cancel-box summary").strip() == "Hủy hội chẩn…"
    v.check("consult-cancel-closed")
    v.page.click("#cancel-box summary")
    v.page.fill("#cancel-box textarea", REASON)
    v.page.click("#cancel-box button.danger")  # the first press: nothing cancelled, the step
    v.page.wait_for_selector("#cancel-box[open] [data-testid=confirm-step]")
    assert v.page.input_value("#cancel-box textarea") == REASON and _status(stack, tid) == "requested"
    assert "Yêu cầu hội chẩn sẽ bị hủy" in v.page.inner_text("#cancel-box [data-testid=confirm-step]")
    # the tick takes the focus as htmx settles the step it swapped in (autofocus, 20 ms after the swap)
    expect(v.page.locator("#cancel-box [data-testid=confirm-tick]")).to_be_focused()
    v.check("consult-cancel-confirm")
    v.page.keyboard.press("Space")  # the keyboard alone: tick, then the button
    v.page.keyboard.press("Tab")
    assert v.page.evaluate("document.activeElement.dataset.testid") == "confirm-button"
    v.page.keyboard.press("Enter")
    v.page.wait_for_selector("[data-testid=cancelled]")
    assert _status(stack, tid) == "cancelled"
    # English pressed right after: the confirmation said once more, in English (notices.say_again); a reload, none
    v.page.click("header button[name=lang]")
    v.page.wait_for_selector("html[lang=en] [data-testid=cancelled]")
    assert v.page.inner_text("[data-testid=cancelled]").strip() == "The consult request was cancelled."
    v.page.reload()
    assert v.page.locator("[data-testid=cancelled]").count() == 0


def test_the_nurse_gives_the_reason_of_a_take_on_and_confirms(visitor_factory, stack):
    cccd = f"0870{random.randrange(10**8):08d}"
    pid = patient_of_another_facility(stack, cccd)
    v = visitor_factory("vi-360", width=360, height=780)
    v.sign_in("clinic", to="/patients")
    v.page.fill("#q", cccd)
    v.page.click("form[action$='/patients/search'] button.primary")
    v.page.wait_for_selector("[data-testid=take-on]")
    form = "form[data-testid=take-on]"
    assert v.page.is_checked(f"{form} input[value='Người bệnh đến khám tại cơ sở']")  # the default chosen
    v.page.check(f"{form} input[value=other]")
    why = "Người nhà đưa đến, thẻ cũ bị mất"
    v.page.fill(f"{form} #other", why)
    v.check("take-on-reason")
    v.page.click(f"{form} button.primary")  # the first press: the step, nothing asked of the EHR
    v.page.wait_for_selector(f"{form} [data-testid=confirm-step]")
    assert v.page.input_value(f"{form} #other") == why and v.page.is_checked(f"{form} input[value=other]")
    v.check("take-on-confirm")
    v.page.check(f"{form} [data-testid=confirm-tick]")
    v.page.click(f"{form} [data-testid=confirm-button]")
    v.page.wait_for_url(re.compile(rf"/patients/{pid}$"))
    assert "Đã tiếp nhận người bệnh tại cơ sở này" in v.page.inner_text("main")
