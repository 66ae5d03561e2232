# ruff: noqa: F811 - the fixtures imported from test_portal_consult_patients are parameters by name
"""The consult pages' thread and message box, against a real EHR and teleconsult (gunicorn processes on
loopback), the real FerretDB and RabbitMQ: the services and the portal of ``test_portal_consult_patients``,
started afresh for this module, with its demo users (the clinic's Võ Minh Tâm of Trạm Y tế xã Mỹ Hiệp,
the hub's BS. Nguyễn Văn An).

Covered: the nurse writes on the clinic's consult page and the doctor on the doctor's page (teleconsult's
``$message``: the consult's state stays); each page shows the whole thread (messages, the hub's question)
in time order, each entry named by its sender, timed in Asia/Ho_Chi_Minh, Vietnamese first and English on
request; a double-submitted form stores one message (the form's Idempotency-Key); an empty or too long
message is explained in the page's language with what was typed kept; a consult cancelled meanwhile
refuses a message from a page opened before, readably, the text kept, and its pages offer no box.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest

from tests.integration.consult_stack import *  # noqa: F403 - its fixtures, used by name
from tests.integration.test_portal_consult_patients import CLINIC, HUB, ICD10, LAN, _element, _headers
from tests.support import csrf_token, portal_signed_in, wait_for

pytestmark = pytest.mark.integration

TZ = ZoneInfo("Asia/Ho_Chi_Minh")
NURSE = "ys-vo-minh-tam"  # the portal's demo clinic user's Practitioner


@pytest.fixture(scope="module")
def nurse_named(ehr, dev_key) -> None:
    """The demo clinic user's Practitioner in the EHR, so the thread names the nurse too."""
    res = {"resourceType": "Practitioner", "id": NURSE, "name": [{"family": "Võ", "given": ["Minh", "Tâm"]}]}
    r = httpx.put(f"{ehr}/fhir/Practitioner/{NURSE}", json=res, headers=_headers(dev_key, "admin"), timeout=30)
    assert r.status_code in (200, 201), r.text


def _clinic_token(dev_key: Any) -> dict[str, str]:
    return _headers(dev_key, "clinic", facility=CLINIC, practitioner=NURSE, sub="portal-clinic")


def _consult(tc: str, dev_key: Any) -> tuple[str, str]:
    """A new consult of the demo clinic about Nguyễn Thị Lan: (ServiceRequest id, Task id)."""
    sr = {"resourceType": "ServiceRequest", "status": "active", "intent": "order", "priority": "urgent",
          "subject": {"reference": f"Patient/{LAN}"}, "requester": {"reference": f"Organization/{CLINIC}"},
          "reasonCode": [{"coding": [{"system": ICD10, "code": "I21.9", "display": "Nhồi máu cơ tim cấp"}]}],
          "note": [{"text": "Xin ý kiến tuyến trên."}], "performer": [{"reference": f"Organization/{HUB}"}]}
    r = httpx.post(f"{tc}/fhir/ServiceRequest/$submit", json=sr, headers=_clinic_token(dev_key), timeout=30)
    assert r.status_code == 201, r.text
    ids = {e["resource"]["resourceType"]: e["resource"]["id"] for e in r.json()["entry"]}
    return ids["ServiceRequest"], ids["Task"]


def _thread(tc: str, dev_key: Any, sr: str) -> list[dict[str, Any]]:
    r = httpx.get(f"{tc}/fhir/Communication", params={"based-on": f"ServiceRequest/{sr}", "_count": "50"},
                  headers=_clinic_token(dev_key), timeout=30)
    assert r.status_code == 200, r.text
    return sorted((e["resource"] for e in r.json().get("entry") or []), key=lambda c: c["sent"])


def _task_status(tc: str, dev_key: Any, tid: str) -> str:
    r = httpx.get(f"{tc}/fhir/Task/{tid}", headers=_clinic_token(dev_key), timeout=30)
    return str(r.json()["status"])


def _form(page: str) -> dict[str, str]:
    """The message box's hidden fields: its CSRF token and its key."""
    box = _section(page, "consult-message")
    key = re.search(r'name="key" type="hidden" value="([0-9a-f]{32})"', box)
    assert key, box
    return {"csrf_token": csrf_token(box), "key": key.group(1)}


def _section(page: str, sid: str) -> str:
    m = re.search(rf'<section class="card" id="{sid}">.*?</section>', page, re.S)
    assert m, f"no #{sid} on the page"
    return m.group(0)


def _entries(page: str) -> list[str]:
    """The thread's entries as text, oldest first."""
    thread = _element(page, "consult-thread")
    return [re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", li)).strip()
            for li in re.findall(r'<li data-testid="thread-\w+">(.*?)</li>', thread, re.S)]


def _shown(sent: str) -> str:
    return datetime.fromisoformat(sent).astimezone(TZ).strftime("%d/%m/%Y %H:%M")


def test_both_sides_write_on_their_pages_and_read_the_whole_thread_in_order(portal, tc, dev_key, nurse_named):
    sr, tid = _consult(tc, dev_key)
    clinic, doctor = portal_signed_in(portal, "clinic"), portal_signed_in(portal, "doctor")
    page = clinic.get(f"/consults/{tid}").get_data(as_text=True)
    assert f'action="/consults/{tid}/message"' in _section(page, "consult-message")
    assert "Nhắn tin" in _section(page, "consult-message")
    r = clinic.post(f"/consults/{tid}/message", data={**_form(page), "text": "Sốt tăng 39,5 °C sáng nay."})
    assert r.status_code == 302 and r.headers["Location"].endswith(f"/consults/{tid}#consult-thread"), \
        r.get_data(as_text=True)[:800]
    assert "Đã gửi tin nhắn của bạn." in clinic.get(r.headers["Location"]).get_data(as_text=True)
    assert "Đã gửi tin nhắn của bạn." not in clinic.get(r.headers["Location"]).get_data(as_text=True)  # a reload
    assert _task_status(tc, dev_key, tid) == "requested"  # a message is no step

    # the doctor asks a question, then writes a message: the Task is on hold for the question only
    page = doctor.get(f"/tasks/{tid}").get_data(as_text=True)
    r = doctor.post(f"/tasks/{tid}/request-info",
                    data={"question": "Xin gửi điện tim.", "csrf_token": csrf_token(page)})
    assert r.status_code == 302, r.get_data(as_text=True)[:800]
    page = doctor.get(f"/tasks/{tid}").get_data(as_text=True)
    assert f'action="/tasks/{tid}/message"' in _section(page, "consult-message")
    r = doctor.post(f"/tasks/{tid}/message", data={**_form(page), "text": "Gia đình muốn dời lịch? Báo tôi."})
    assert r.status_code == 302 and r.headers["Location"].endswith(f"/tasks/{tid}#consult-thread")
    assert _task_status(tc, dev_key, tid) == "on-hold"

    sent = [c["sent"] for c in _thread(tc, dev_key, sr)]
    assert len(sent) == 3
    want = [f"Tin nhắn · Võ Minh Tâm {_shown(sent[0])} Sốt tăng 39,5 °C sáng nay.",
            f"Tuyến trên hỏi · Nguyễn Văn An {_shown(sent[1])} Xin gửi điện tim.",
            f"Tin nhắn · Nguyễn Văn An {_shown(sent[2])} Gia đình muốn dời lịch? Báo tôi."]
    assert _entries(doctor.get(f"/tasks/{tid}").get_data(as_text=True)) == want

    def clinic_sees_all() -> bool:  # another user's writes show once the clinic's kept answers expire
        return _entries(clinic.get(f"/consults/{tid}").get_data(as_text=True)) == want

    wait_for(clinic_sees_all)
    # the page's refresh brings the thread; the message box is outside it (what is typed stays)
    polled = clinic.get(f"/consults/{tid}", headers={"HX-Request": "true"}).get_data(as_text=True)
    assert "consult-message" not in _element(polled, "consult-thread")
    # in English on request, the same thread
    english = portal_signed_in(portal, "clinic", lang="en").get(f"/consults/{tid}").get_data(as_text=True)
    assert _entries(english)[0].startswith("Message · Võ Minh Tâm")
    assert _entries(english)[1].startswith("The hub asked · Nguyễn Văn An")
    assert "Send a message" in _section(english, "consult-message")


def test_a_double_submitted_message_is_stored_once_and_a_refused_one_keeps_its_text(portal, tc, dev_key):
    sr, tid = _consult(tc, dev_key)
    clinic = portal_signed_in(portal, "clinic")
    page = clinic.get(f"/consults/{tid}").get_data(as_text=True)
    form = _form(page)
    for _ in range(2):  # a double click: the same form twice
        r = clinic.post(f"/consults/{tid}/message", data={**form, "text": "Bệnh nhân đã đỡ sốt."})
        assert r.status_code == 302, r.get_data(as_text=True)[:800]
    assert [c["payload"][0]["contentString"] for c in _thread(tc, dev_key, sr)] == ["Bệnh nhân đã đỡ sốt."]
    # a new page is a new form: the same words again are a new message
    form2 = _form(clinic.get(f"/consults/{tid}").get_data(as_text=True))
    assert form2["key"] != form["key"]

    r = clinic.post(f"/consults/{tid}/message", data={**form2, "text": "  "})
    assert r.status_code == 422 and "Hãy viết tin nhắn." in r.get_data(as_text=True)
    long = "Kết quả xét nghiệm: " + "x" * 4000
    r = clinic.post(f"/consults/{tid}/message", data={**form2, "text": long})
    page = r.get_data(as_text=True)
    assert r.status_code == 422 and "Viết tối đa 4000 ký tự." in page
    assert long in _section(page, "consult-message")  # what was typed is kept
    assert _form(page)["key"] == form2["key"]  # and so is the form's key
    assert len(_thread(tc, dev_key, sr)) == 1


def test_a_consult_cancelled_meanwhile_refuses_the_message_readably_and_keeps_the_text(portal, tc, dev_key):
    sr, tid = _consult(tc, dev_key)
    clinic, doctor = portal_signed_in(portal, "clinic"), portal_signed_in(portal, "doctor")
    opened_by_doctor = _form(doctor.get(f"/tasks/{tid}").get_data(as_text=True))
    opened_by_nurse = _form(clinic.get(f"/consults/{tid}").get_data(as_text=True))
    r = httpx.post(f"{tc}/fhir/Task/{tid}/$cancel", json={"resourceType": "Parameters"},
                   headers=_clinic_token(dev_key), timeout=30)
    assert r.status_code == 200, r.text
    r = doctor.post(f"/tasks/{tid}/message", data={**opened_by_doctor, "text": "Tôi sẽ gọi lại."})
    page = r.get_data(as_text=True)
    assert r.status_code == 409, page[:800]
    assert "Ca hội chẩn này hiện ở trạng thái “Đã hủy”: không nhận thêm tin nhắn." in page
    assert "Tôi sẽ gọi lại." in _section(page, "consult-message")  # the text is kept to copy
    r = clinic.post(f"/consults/{tid}/message", data={**opened_by_nurse, "text": "Xin lỗi, đã hủy nhầm."})
    page = r.get_data(as_text=True)
    assert r.status_code == 422 and "không nhận thêm tin nhắn" in page
    assert "Xin lỗi, đã hủy nhầm." in _section(page, "consult-message")
    assert _thread(tc, dev_key, sr) == []
    # a cancelled consult's pages offer no box
    assert 'id="consult-message"' not in clinic.get(f"/consults/{tid}").get_data(as_text=True)
    assert 'id="consult-message"' not in doctor.get(f"/tasks/{tid}").get_data(as_text=True)
