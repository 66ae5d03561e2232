"""One long unbroken string on a phone (360 px): a 4,000-letter message without a space made the consult's
page and the doctor's 45,635 px wide, a 60-letter family name the chart 1,031 px. The text now wraps
(app.css: ``overflow-wrap: anywhere`` on what users typed): every page stays the window's width, and none
asks the portal for anything it does not serve (the icon: ``/favicon.ico`` was a 404 on every page).
Screenshots: vi-360 ``narrow-consult``, ``narrow-chart``, ``narrow-task``."""

from __future__ import annotations

import httpx
import pytest
from playwright.sync_api import expect

from tests.browser.test_pages import _admin, _submit
from tests.browser.test_roles import FACILITY

pytestmark = pytest.mark.integration

FAMILY = "Nguyễn" * 10  # 60 letters, no space
MESSAGE = "Huyếtáp" * 571  # 3,997 letters, no space


def _patient(stack: dict[str, str]) -> str:
    r = httpx.post(f"{stack['ehr']}/fhir/Patient", headers=_admin(stack), timeout=30, json={
        "resourceType": "Patient", "name": [{"family": FAMILY, "given": ["Thị", "Mai"]}], "gender": "female",
        "birthDate": "1961-07-02", "managingOrganization": {"reference": f"Organization/{FACILITY}"}})
    assert r.status_code == 201, r.text[:300]
    return r.json()["id"]


def _fits(v, name: str) -> None:
    """The page is no wider than the window (nothing scrolls sideways), checked by axe."""
    m = v.page.evaluate("() => ({w: window.innerWidth, page: document.documentElement.scrollWidth})")
    assert m["page"] <= m["w"], (name, m)
    v.check(name)


def _cancelled(stack: dict[str, str], tid: str) -> None:
    """The consult cancelled by its clinic (teleconsult's $cancel): it leaves the hub's open worklist, where its
    patient's 60-letter word would widen the table past a 1280 px window (a word is kept whole above a phone's
    width, the table then scrolling in its box), which test_journey's row check at 1280 px reads."""
    from sen_shared.auth import issue_dev_token

    token = issue_dev_token(stack["key"], "clinic", facility=FACILITY)
    r = httpx.post(f"{stack['teleconsult']}/fhir/Task/{tid}/$cancel", timeout=30,
                   json={"resourceType": "Parameters", "parameter": [{"name": "reason", "valueString": "Thử nghiệm"}]},
                   headers={"Authorization": f"Bearer {token}", "Content-Type": "application/fhir+json"})
    assert r.status_code == 200, r.text[:300]


def test_a_long_unbroken_message_or_name_keeps_a_phones_pages_at_its_width(visitor_factory, stack):
    pid = _patient(stack)
    tid = _submit(stack, "Xin ý kiến về huyết áp khó kiểm soát.", patient=pid)
    try:
        _narrow_pages(visitor_factory, pid, tid)
    finally:
        _cancelled(stack, tid)


def _narrow_pages(visitor_factory, pid: str, tid: str) -> None:
    missing: list[str] = []

    clinic = visitor_factory("vi-360", width=360)
    clinic.page.on("response", lambda r: missing.append(r.url) if r.status == 404 else None)
    clinic.sign_in("clinic", to=f"/consults/{tid}")
    clinic.page.fill("form[action$='/message'] [name=text]", MESSAGE)
    clinic.page.click("form[action$='/message'] button")
    clinic.page.wait_for_selector("[data-testid=message-sent]")  # the page again, its thread with the message
    expect(clinic.page.locator("[data-testid=thread-message]", has_text=MESSAGE)).to_have_count(1)
    _fits(clinic, "narrow-consult")
    clinic.go(f"/patients/{pid}")
    assert FAMILY in clinic.page.inner_text("main")
    _fits(clinic, "narrow-chart")

    doctor = visitor_factory("vi-360", width=360)
    doctor.page.on("response", lambda r: missing.append(r.url) if r.status == 404 else None)
    doctor.sign_in("doctor", to=f"/tasks/{tid}")
    assert MESSAGE in doctor.page.inner_text("[data-testid=thread]")
    _fits(doctor, "narrow-task")
    assert not missing, missing
