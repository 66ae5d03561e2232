"""The nurse tells the hub on the consult's page that the patient's fever rose, without any question
open; the doctor reads it on the doctor's page, named and timed, and answers: the consult stays new,
to triage. Vietnamese at 1280 px; each page checked by axe-core (conftest.Visitor.check)."""

from __future__ import annotations

import time

import pytest

from tests.browser.test_pages import _submit

pytestmark = pytest.mark.integration


def test_the_clinic_and_the_doctor_write_on_the_consult_thread(visitor_factory, stack):
    tid = _submit(stack, "Sốt cao, ho đờm, xin ý kiến kháng sinh.", "urgent")
    clinic = visitor_factory("vi-1280")
    clinic.sign_in("clinic", to=f"/consults/{tid}")
    clinic.page.click("form[action$='/message'] button")  # empty: explained, nothing sent
    clinic.page.wait_for_selector("#text-error")  # the box sent in place comes back with its error
    assert clinic.page.locator("#text-error").count() == 1
    clinic.page.fill("form[action$='/message'] [name=text]", "Sáng nay sốt tăng 39,5 °C.")
    clinic.page.click("form[action$='/message'] button")
    clinic.page.wait_for_selector("[data-testid=message-sent]")
    mine = clinic.page.inner_text("[data-testid=thread-message]")
    assert "Sáng nay sốt tăng 39,5 °C." in mine and "Tin nhắn" in mine and "Võ Minh Tâm" in mine
    clinic.check("clinic-message")

    doctor = visitor_factory("vi-1280")
    doctor.sign_in("doctor")
    deadline = time.monotonic() + 30  # the portal keeps a user's answers a few seconds; a loaded machine
    while True:
        doctor.go(f"/tasks/{tid}")
        if doctor.page.locator("[data-testid=thread-message]").count() or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert "Sáng nay sốt tăng 39,5 °C." in doctor.page.inner_text("[data-testid=thread-message]")
    doctor.page.fill("form[action$='/message'] [name=text]", "Đã nhận, tôi xem trong giờ tới.")
    doctor.page.click("form[action$='/message'] button")
    doctor.page.wait_for_selector("[data-testid=message-sent]")
    lines = doctor.page.locator("[data-testid=thread-message]").all_inner_texts()
    assert len(lines) == 2 and "Đã nhận, tôi xem trong giờ tới." in lines[1] and "Nguyễn Văn An" in lines[1]
    assert doctor.page.locator("form[action$='/accept'] button").count() == 1  # still to triage
    doctor.check("doctor-message")
