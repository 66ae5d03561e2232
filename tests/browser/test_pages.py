"""The pages beside the main journey, each checked by axe-core: a chart with
observations drawn over time, the doctor's availability and leave, the cashier's shift and the
unmatched-transfers queue, and the pages that say no (wrong role, unknown record, wrong password)."""

from __future__ import annotations

import datetime as dt
import re
import time
import uuid
from urllib.parse import urlencode

import httpx
import pytest
from playwright.sync_api import expect

pytestmark = pytest.mark.integration


def _admin(stack: dict[str, str]) -> dict[str, str]:
    from sen_shared.auth import issue_dev_token

    return {"Authorization": f"Bearer {issue_dev_token(stack['key'], 'admin')}",
            "Content-Type": "application/fhir+json"}


def _record(stack: dict[str, str], patient: str) -> None:
    """A few weeks of blood pressure and weight, a problem, a medication and an allergy."""
    today = dt.date.today()
    entries = []
    for i, (sys_bp, dia_bp, kg) in enumerate([(168, 98, 62.0), (160, 95, 61.5), (152, 92, 61.2), (145, 88, 60.8)]):
        day = (today - dt.timedelta(days=21 - 7 * i)).isoformat() + "T08:00:00+07:00"
        subject = {"reference": f"Patient/{patient}"}
        entries.append({"resourceType": "Observation", "status": "final", "subject": subject,
                        "code": {"coding": [{"system": "http://loinc.org", "code": "85354-9"}], "text": "Huyết áp"},
                        "effectiveDateTime": day, "component": [
                            {"code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}],
                                      "text": "Huyết áp tâm thu"},
                             "valueQuantity": {"value": sys_bp, "unit": "mmHg"}},
                            {"code": {"coding": [{"system": "http://loinc.org", "code": "8462-4"}],
                                      "text": "Huyết áp tâm trương"},
                             "valueQuantity": {"value": dia_bp, "unit": "mmHg"}}]})
        entries.append({"resourceType": "Observation", "status": "final", "subject": subject,
                        "code": {"coding": [{"system": "http://loinc.org", "code": "29463-7"}], "text": "Cân nặng"},
                        "effectiveDateTime": day, "valueQuantity": {"value": kg, "unit": "kg"}})
    entries.append({"resourceType": "Condition", "subject": {"reference": f"Patient/{patient}"},
                    "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10", "code": "I10"}],
                             "text": "Tăng huyết áp vô căn"}, "onsetDateTime": "2021-03-01"})
    entries.append({"resourceType": "MedicationStatement", "status": "active",
                    "subject": {"reference": f"Patient/{patient}"},
                    "medicationCodeableConcept": {"text": "Amlodipin 5 mg"},
                    "dosage": [{"text": "1 viên mỗi sáng"}]})
    entries.append({"resourceType": "AllergyIntolerance", "patient": {"reference": f"Patient/{patient}"},
                    "code": {"text": "Penicilin"}})
    bundle = {"resourceType": "Bundle", "type": "transaction",
              "entry": [{"resource": r, "request": {"method": "POST", "url": r["resourceType"]}} for r in entries]}
    r = httpx.post(f"{stack['ehr']}/fhir", json=bundle, headers=_admin(stack), timeout=30)
    assert r.status_code == 200, r.text[:500]


def test_patient_chart_draws_observations_over_time(visitor_factory, stack):
    _record(stack, "bn-0007")
    for width in (1280, 360):
        v = visitor_factory(f"vi-{width}", width=width)
        v.sign_in("clinic", to="/patients/bn-0007")
        assert "Trương Quốc Đạt" in v.page.inner_text("h1")
        assert "Trương" not in v.page.title() and "bn-0007" not in v.page.title()  # no patient data in titles
        assert v.page.locator("canvas[data-series]").count() >= 3  # systolic, diastolic, weight
        v.page.wait_for_function("() => !!window.Chart && Chart.instances && Object.keys(Chart.instances).length >= 3")
        body = v.page.inner_text("main")
        assert "Amlodipin 5 mg" in body and "Penicilin" in body and "Tăng huyết áp vô căn" in body
        assert "61,2 kg" in body and "61.2 kg" not in body  # the decimal comma, as the charts' axes write it
        v.check("clinic-chart-observations")


def test_doctor_sees_hours_and_leave_the_admin_sets(visitor_factory):
    admin = visitor_factory("vi-1280")
    admin.sign_in("admin", to="/availability")
    value = admin.page.evaluate(
        "() => [...document.querySelectorAll('#schedule option')].find(o => /nguyen-van-an|Nguyễn Văn An/"
        ".test(o.textContent + o.value)).value")
    admin.page.select_option("#schedule", value)
    admin.page.click("form.card.row button")  # a GET: that doctor's schedule's page
    admin.page.wait_for_url(re.compile(re.escape(f"/availability?{urlencode({'schedule': value})}") + "$"))
    admin.check("admin-availability")
    start = dt.date.today() + dt.timedelta(days=60)
    admin.page.fill("#leave-start", start.isoformat())
    admin.page.fill("#leave-end", (start - dt.timedelta(days=1)).isoformat())  # before the start: explained
    admin.page.click("form:has(input[value=leave]) button.primary")
    expect(admin.page.locator("#leave-end-error")).to_have_count(1)
    admin.check("admin-availability-error")
    admin.page.fill("#leave-end", (start + dt.timedelta(days=2)).isoformat())
    admin.page.fill("#leave-reason", "Hội nghị tim mạch")
    leave = admin.page.locator("[data-testid=leave]", has_text="Hội nghị tim mạch")
    listed = leave.count()  # none on a new stack
    admin.page.click("form:has(input[value=leave]) button.primary")
    expect(leave).to_have_count(listed + 1)
    doctor = visitor_factory("vi-1280")
    doctor.sign_in("doctor", to="/availability")
    assert "Hội nghị tim mạch" in doctor.page.inner_text("main")
    doctor.check("doctor-availability")


def cards_fit(v, table: str, width: int = 360) -> None:
    """``table`` (a `table.list`) at ``width`` px: the page does not scroll sideways, and each row is a card,
    its cells one a line, each inside the window after its column's label (its data-label)."""
    v.page.set_viewport_size({"width": width, "height": 900})
    m = v.page.locator(table).evaluate("""t => ({w: window.innerWidth, page: document.documentElement.scrollWidth,
        wide: [...document.querySelectorAll('main *')].filter(e => e.getBoundingClientRect().right > window.innerWidth)
          .slice(0, 5).map(e => e.tagName + '.' + e.className + '#' + e.id + ': ' + e.textContent.trim().slice(0, 40)),
        heads: [...t.tHead.rows[0].cells].map(c => c.textContent.trim()),
        rows: [...t.tBodies[0].rows].map(tr => [...tr.cells].filter(c => c.tagName === 'TD').map(c => {
            const r = c.getBoundingClientRect();
            return {label: c.dataset.label, left: r.left, right: r.right, top: r.top, bottom: r.bottom}; }))})""")
    assert m["page"] <= m["w"], m  # no sideways scrolling
    assert m["rows"], m
    for cells in m["rows"]:
        assert [c["label"] for c in cells] == m["heads"][-len(cells):], m  # a row header's column has none
        for c in cells:
            assert 0 <= c["left"] and c["right"] <= m["w"], m
        for above, below in zip(cells, cells[1:]):
            assert below["top"] >= above["bottom"] - 1 and below["left"] == above["left"], m


def test_cashier_shift_and_unmatched_transfers(visitor_factory, stack):
    v = visitor_factory("vi-1280")
    v.sign_in("cashier", to="/shift")
    v.check("cashier-shift")
    if v.page.locator("input[name=which][value=open]").count():
        v.page.fill("#open-opening_cash", "500000")
        v.page.click("form:has(input[value=open]) button.primary")
    expect(v.page.locator("input[name=which][value=close]")).to_have_count(1)
    expected = v.page.inner_text("[data-testid=shift-expected]")  # named for the cashier, not billing's keys
    assert "Tiền mặt đầu ca" in expected and "Tiền mặt phải có trong két" in expected, expected
    assert not {"cashTaken", "cashRefunded", "transfers"} & set(expected.split()), expected
    v.check("cashier-shift-open")
    v.page.fill("#close-counted_cash", "500000")
    v.page.fill("#close-counted_transfers", "0")
    v.page.fill("#close-note", "Đếm lại hai lần")  # the shared stack's shift may hold others' cash: a gap needs it
    v.page.click("form:has(input[value=close]) button.primary")  # the step: the counts kept, nothing closed
    v.page.wait_for_selector("[data-testid=confirm-step]")
    # (the summary's testid: the last closed shifts below, some closed by earlier tests, are tables too)
    assert v.page.input_value("#close-counted_cash") == "500000"
    assert v.page.locator("[data-testid=shift-summary]").count() == 0
    v.check("cashier-shift-close-confirm")
    v.page.check("[data-testid=confirm-tick]")
    v.page.click("[data-testid=confirm-button]")
    expect(v.page.locator("[data-testid=shift-summary]")).to_have_count(1)  # the closed shift's summary
    v.check("cashier-shift-closed")
    cards_fit(v, "[data-testid=shift-summary]")  # the summary at 360 px: a card for cash, one for transfers
    v.tag = "vi-360"
    v.check("cashier-shift-closed")
    v.page.set_viewport_size({"width": 1280, "height": 900})
    v.tag = "vi-1280"
    from tests.browser.test_cashier_charges import _amounts_whole
    from tests.browser.test_roles import _page_with, _unmatched_transfer

    note = "chuyen tien kham benh " + uuid.uuid4().hex[:6]
    _unmatched_transfer(stack, note, 15000)
    v.go("/unmatched")
    _page_with(v, note)  # oldest first, 50 a page: other tests' transfers (test_roles' 53) may fill the first
    # the walk: '15.000' above '₫' in the queue's Amount column at 1280 px, its cell no money cell (left-aligned)
    assert v.page.locator("tr", has_text=note).locator("td.money", has_text="15.000\u00a0₫").count() == 1
    _amounts_whole(v)
    v.check("cashier-unmatched")
    v.go("/invoices")  # the queue's amounts the same
    _amounts_whole(v)


def test_pages_that_say_no(visitor_factory):
    v = visitor_factory("vi-1280")
    v.go("/login")
    v.check("login")
    v.page.fill("#username", "clinic")  # refused in place (the sign-in is sent in place): no page to wait for
    v.page.fill("#password", "wrong password")
    v.page.click("#sign-in button.primary")
    expect(v.page.locator("[data-testid=sign-in-problem]")).to_contain_text("không đúng")
    assert v.page.input_value("#username") == "clinic" and v.page.input_value("#password") == ""
    v.check("login-wrong-password")
    v.sign_in("clinic", to="/dashboard")
    assert "Không được phép" in v.page.inner_text("h1")
    v.check("not-allowed")
    v.go("/patients/no-such-patient")
    assert v.page.locator("h1").count() == 1 and "Traceback" not in v.page.content()
    v.check("unknown-patient")
    v.sign_out()
    assert "/login" in v.page.url
    v.go("/patients")
    assert "/login" in v.page.url  # signed out: the pages ask for a sign-in again


def _submit(stack: dict[str, str], question: str, priority: str = "routine", patient: str = "bn-0002") -> str:
    from sen_shared.auth import issue_dev_token

    token = issue_dev_token(stack["key"], "clinic", facility="tyt-my-hiep")
    sr = {"resourceType": "ServiceRequest", "status": "active", "intent": "order", "priority": priority,
          "subject": {"reference": f"Patient/{patient}"}, "requester": {"reference": "Organization/tyt-my-hiep"},
          "reasonCode": [{"coding": [{"system": "http://hl7.org/fhir/sid/icd-10", "code": "E11.9"}]}],
          "note": [{"text": question}], "performer": [{"reference": "Organization/bvdk-dong-thap"}]}
    r = httpx.post(f"{stack['teleconsult']}/fhir/ServiceRequest/$submit", json=sr, timeout=30,
                   headers={"Authorization": f"Bearer {token}", "Content-Type": "application/fhir+json"})
    assert r.status_code == 201, r.text[:300]
    return next(e["resource"]["id"] for e in r.json()["entry"] if e["resource"]["resourceType"] == "Task")


def test_hub_asks_the_clinic_answers_and_a_rejection_gives_its_reason(visitor_factory, stack):
    asked = _submit(stack, "Đường huyết 14 mmol/L, xin hướng dẫn chỉnh insulin.", "asap")
    doctor = visitor_factory("vi-1280")
    doctor.sign_in("doctor", to=f"/tasks/{asked}")
    doctor.page.click("details:has(form[action$='/request-info']) summary")
    doctor.page.click("form[action$='/request-info'] button")  # empty: explained, nothing sent (in place)
    doctor.page.wait_for_selector("#question-error")
    assert doctor.page.locator("#question-error").count() == 1
    doctor.check("doctor-question-error")
    doctor.page.fill("#question", "Xin gửi thêm HbA1c gần nhất.")
    doctor.page.click("form[action$='/request-info'] button")
    doctor.page.wait_for_selector("[data-testid=asked]")  # the page again (HX-Redirect), saying it was asked
    assert "Xin gửi thêm HbA1c gần nhất." in doctor.page.inner_text("main")

    clinic = visitor_factory("vi-1280")
    clinic.sign_in("clinic", to=f"/consults/{asked}")
    assert "Câu hỏi cho cơ sở" in clinic.page.inner_text("[data-testid=task-status]")
    clinic.check("clinic-question-from-hub")
    clinic.page.fill("#answer", "HbA1c 9,2% (tháng 11).")
    clinic.page.click("form[action$='/answer'] button")
    clinic.page.wait_for_selector("[data-testid=answered]")  # sent in place, then the page again (HX-Redirect)
    expect(clinic.page.locator("[data-testid=task-status]")).to_contain_text("Chờ tuyến trên")  # back with the hub
    # the answer's Communication can show a moment after the Task resumes (teleconsult writes it after), and the
    # portal keeps a user's answers a few seconds: reloaded until it shows, for as long as a tab waits (a loaded
    # machine), not a count of reloads
    deadline = time.monotonic() + 45
    while True:
        doctor.go(f"/tasks/{asked}")
        if "HbA1c 9,2% (tháng 11)." in doctor.page.inner_text("main") or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert "HbA1c 9,2% (tháng 11)." in doctor.page.inner_text("main")
    doctor.check("doctor-answer-from-clinic")

    rejected = _submit(stack, "Xin hội chẩn không đúng chuyên khoa.")
    doctor.go(f"/tasks/{rejected}")
    doctor.page.click("details:has(form[action$='/reject']) summary")
    doctor.page.fill("#reason", "Không thuộc chuyên khoa của tuyến; chuyển nội tiết.")
    doctor.page.click("form[action$='/reject'] button")  # the step, then confirmed
    doctor.page.check("form[action$='/reject'] [data-testid=confirm-tick]")
    doctor.page.click("form[action$='/reject'] [data-testid=confirm-button]")
    doctor.page.wait_for_url(re.compile(r".*/worklist$"))  # rejected (sent in place): the worklist
    clinic.go(f"/consults/{rejected}")
    assert "Đã từ chối" in clinic.page.inner_text("[data-testid=task-status]")
    assert "chuyển nội tiết" in clinic.page.inner_text("main")
    clinic.check("clinic-consult-rejected")
