"""The doctor's minutes and the consult pages' times against the real teleconsult service (a gunicorn
process on loopback, with a real EHR beside it), the real FerretDB and RabbitMQ; the portal in this
process (Flask's test client), the fixtures of ``test_portal_visit_changes``.

A consult accepted, then asked about (on hold), reads "Nhận ca lúc" on the doctor's and the clinic's
pages, from the Task's history as teleconsult serves it to each of them, and no "Bắt đầu lúc"; once
started, both. Minutes signed today with a visit booked for a later day carry every ICD-10 code typed,
in order, and are dated from the start to the signing, not at the visit; the full minutes name the
chair.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Any

import httpx
import pytest

from tests.integration import test_portal_visit_changes as visits
from tests.integration.test_portal_visit_changes import CLINIC, TZ, _active, _headers, _text, _times, submit_consult
from tests.support import csrf_token, portal_signed_in

pytestmark = pytest.mark.integration
ehr, tc, portal = visits.ehr, visits.tc, visits.portal  # the same services and portal, this module's own


def _fact(page: str, testid: str) -> tuple[str, str] | None:
    m = re.search(rf'<dt>([^<]*)</dt><dd[^>]*data-testid="{testid}">([^<]*)</dd>', page)
    return (m.group(1), m.group(2)) if m else None


def _shown(instant: str) -> str:
    return f"{datetime.fromisoformat(instant).astimezone(TZ):%d/%m/%Y %H:%M}"


def _task(tc: str, H: dict[str, str], tid: str) -> dict[str, Any]:
    r = httpx.get(f"{tc}/fhir/Task/{tid}", headers=H, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


def test_accepted_then_asked_started_then_minutes_with_several_codes_dated_today(portal, tc, dev_key):
    H = _headers(dev_key, "admin")
    sr, tid = submit_consult(tc, dev_key, "I20.0", "Đau thắt ngực không ổn định", "Đau ngực khi gắng sức.")
    doctor, clinic = portal_signed_in(portal, "doctor"), portal_signed_in(portal, "clinic")
    page = doctor.get(f"/tasks/{tid}").get_data(as_text=True)
    assert doctor.post(f"/tasks/{tid}/accept", data={"csrf_token": csrf_token(page)}).status_code == 302
    accepted = _task(tc, H, tid)["executionPeriod"]["start"]
    r = doctor.post(f"/tasks/{tid}/request-info", data={"csrf_token": csrf_token(page),
                                                         "question": "Xin kết quả men tim."})
    assert r.status_code == 302, _text(r.get_data(as_text=True))[:800]

    # on hold, never started: the acceptance's time under its own name, on both pages
    for client, path in ((doctor, f"/tasks/{tid}"), (clinic, f"/consults/{tid}")):
        page = client.get(path).get_data(as_text=True)
        assert _fact(page, "task-accepted") == ("Nhận ca lúc", _shown(accepted)), path
        assert _fact(page, "task-started") is None, path

    clinic_h = _headers(dev_key, "clinic", facility=CLINIC, practitioner="ys-vo-minh-tam", sub="portal-clinic")
    r = httpx.post(f"{tc}/fhir/Task/{tid}/$provide-info", headers=clinic_h, timeout=30, content=json.dumps(
        {"resourceType": "Parameters", "parameter": [{"name": "answer", "valueString": "Troponin âm tính."}]}))
    assert r.status_code == 200, r.text
    page = doctor.get(f"/tasks/{tid}").get_data(as_text=True)
    assert doctor.post(f"/tasks/{tid}/start", data={"csrf_token": csrf_token(page)}).status_code == 302
    started = _task(tc, H, tid)["executionPeriod"]["start"]

    # a visit booked for a later day (the free times start the day after tomorrow)
    first = _times(doctor, tid, "book")[0]
    assert doctor.post(f"/tasks/{tid}/book", data=first).status_code == 302
    [visit] = _active(tc, H, sr)

    page = doctor.get(f"/tasks/{tid}").get_data(as_text=True)
    assert _fact(page, "task-started") == ("Bắt đầu lúc", _shown(started))
    before = datetime.now(TZ).replace(microsecond=0)
    r = doctor.post(f"/tasks/{tid}/complete", data={
        "csrf_token": csrf_token(page), "participants": "BS. Nguyễn Văn An — chủ trì; YS. Võ Minh Tâm — cơ sở gửi",
        "history": "Đau ngực 2 tuần.", "findings": "ECG: ST chênh xuống V4-V6.", "conclusion": "Đau thắt ngực.",
        "diagnosis": "I20.0, I10\nE11.9", "recommendations": "Chuyển tuyến trên.", "chair": "BS. Nguyễn Văn An"})
    assert r.status_code == 302, _text(r.get_data(as_text=True))[:1500]
    after = datetime.now(TZ)

    task = _task(tc, H, tid)
    conclusion = next(o for o in task["output"] if o["type"]["coding"][0]["code"] == "conclusion")
    assert [c["code"] for c in conclusion["valueCodeableConcept"]["coding"]] == ["I20.0", "I10", "E11.9"]
    start, end = (datetime.fromisoformat(task["executionPeriod"][k]) for k in ("start", "end"))
    assert start == datetime.fromisoformat(started) and before <= end <= after
    assert end < datetime.fromisoformat(visit["start"])  # today's minutes, not the visit's day

    for client, path in ((doctor, f"/tasks/{tid}"), (clinic, f"/consults/{tid}")):
        page = client.get(path).get_data(as_text=True)
        minutes = page[page.index('data-testid="minutes"'):]
        assert "Practitioner/" not in minutes[:minutes.index("</dl>")], path
        assert _fact(page, "minutes-chair") == ("Chủ trì ký biên bản", "BS. Nguyễn Văn An"), path
        assert [d for d in ("I20.0", "I10", "E11.9") if d in _text(minutes)] == ["I20.0", "I10", "E11.9"], path
        assert _fact(page, "task-accepted") == ("Nhận ca lúc", _shown(accepted)), path
        assert _fact(page, "task-started") == ("Bắt đầu lúc", _shown(started)), path
