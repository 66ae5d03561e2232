"""The doctor's consult page after review 7: a user who cannot sign (an admin: no Practitioner) is not offered
the minutes, the start nor the question to the clinic, and is told plainly why, never teleconsult's vague
refusal; one signing a consult completed meanwhile is told by whom and when. The minutes' participants are
one a line, by name: the doctor and the nurse who wrote the consult. Free times asked for on a consult not
accepted say why. Flask's test client; teleconsult the scripted fake of ``test_doctor_consult_page``."""

from __future__ import annotations

import html
import re
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from sen_shared import http

from services.portal.tests.test_doctor_consult_page import Consult
from services.portal.tests.test_visit_changes import SR, TID, TZ, _page, _text
from tests.support import csrf_token, portal_app, portal_signed_in

NURSE = "Practitioner/ys-vo-minh-tam"
MINUTES = {"participants": "BS An — chủ trì", "history": "Tăng huyết áp 5 năm.", "findings": "HA 170/100 mmHg.",
           "conclusion": "Tăng huyết áp độ 2.", "diagnosis": "I10", "recommendations": "Tăng amlodipin 10 mg.",
           "chair": "Quản trị viên"}


class Directory(Consult):
    """The consult fake, with the EHR's names (the doctor, the nurse, the clinic) and the ServiceRequest as
    teleconsult keeps it: requested by the clinic, its version made by the nurse who submitted it."""

    def __call__(self, method: str, url: str, **kw: Any) -> http.Response:
        path = urlsplit(url).path
        if path.endswith("/fhir/Practitioner") and method == "GET":
            return self._bundle([
                {"resourceType": "Practitioner", "id": "bs-nguyen-van-an",
                 "name": [{"prefix": ["BS."], "family": "Nguyễn", "given": ["Văn", "An"]}]},
                {"resourceType": "Practitioner", "id": "ys-vo-minh-tam", "name": [{"family": "Võ",
                                                                                  "given": ["Minh", "Tâm"]}]}])
        if path.endswith("/fhir/Organization") and method == "GET":
            return self._bundle([{"resourceType": "Organization", "id": "tyt-my-hiep", "name": "Trạm Y tế xã Mỹ Hiệp"}])
        answer = super().__call__(method, url, **kw)
        if "/fhir/Task" in path and method == "GET" and "_history" not in path and "$" not in path:
            import json

            body = answer.json()
            for e in body.get("entry") or []:
                if e["resource"]["resourceType"] == "ServiceRequest":
                    e["resource"]["requester"] = {"reference": "Organization/tyt-my-hiep"}
                    e["resource"]["meta"] = {"extension": [
                        {"url": "https://sen.vn/fhir/StructureDefinition/changed-by",
                         "valueReference": {"reference": NURSE, "display": "clinic"}}]}
                if e["resource"]["resourceType"] == "Task":
                    e["resource"].setdefault("meta", {})["lastUpdated"] = "2026-12-05T03:10:00Z"
            return http.Response(200, {}, json.dumps(body).encode())
        return answer


@pytest.fixture()
def fake(monkeypatch: pytest.MonkeyPatch) -> Directory:
    return Directory.answering(monkeypatch)


@pytest.fixture()
def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake: Directory):
    return portal_app(tmp_path, monkeypatch, backend="http://127.0.0.1:9", SEN_PORTAL_CACHE_SECONDS="0")


def _posted(fake: Directory) -> list[str]:
    return [p for m, p, _ in fake.calls if m == "POST" and "/fhir/Task/" in p]


# ------------------------------------------------------------------ 1. who cannot sign is told, not offered


@pytest.mark.parametrize("status", ["accepted", "in-progress"])
def test_an_admin_is_not_offered_the_minutes_start_or_question_and_is_told_why(app, fake, status):
    """Review 7: an admin on a doctor's accepted consult was offered the minutes, prefilled "Quản trị viên — bác
    sĩ chuyên khoa, tuyến trên", and signing failed with "Dịch vụ hội chẩn từ xa từ chối yêu cầu…" (teleconsult's
    422: the minutes' chair must be a Practitioner, an admin has none)."""
    fake.status = status
    page = _page(portal_signed_in(app, "admin"))
    for gone in ("/complete", "/start", "/request-info", "Quản trị viên — bác sĩ chuyên khoa"):
        assert gone not in page, gone
    note = _text(page.split('data-testid="no-signer"')[1].split("</p>")[0])
    assert "Tài khoản của bạn không gắn với bác sĩ nào" in note and "Nguyễn Văn An" in note
    page = _page(portal_signed_in(app, "doctor"))  # the doctor still signs
    assert "/complete" in page and 'data-testid="no-signer"' not in page


def test_an_admins_minutes_are_refused_plainly_kept_and_never_sent(app, fake):
    fake.status = "accepted"
    c = portal_signed_in(app, "admin", "en")
    page = _page(c)
    r = c.post(f"/tasks/{TID}/complete", data={"csrf_token": csrf_token(page), **MINUTES})
    text = _text(r.get_data(as_text=True))
    assert r.status_code == 403 and "Your account names no doctor" in text and "Nothing was sent" in text
    alert = _text(r.get_data(as_text=True).split('role="alert">')[1].split("</div>")[0])
    assert alert.startswith("Your account names no doctor") and "Nguyễn Văn An holds it" in alert
    assert "Tăng amlodipin 10 mg." in html.unescape(r.get_data(as_text=True))  # what was typed, kept
    for op, data in (("start", {}), ("request-info", {"question": "Xin kết quả xét nghiệm."})):
        r = c.post(f"/tasks/{TID}/{op}", data={"csrf_token": csrf_token(page), **data})
        assert r.status_code == 403 and "Your account names no doctor" in _text(r.get_data(as_text=True)), op
    assert not fake.completed and not _posted(fake)


def test_an_admin_signing_a_consult_completed_meanwhile_is_told_by_whom_and_when(app, fake):
    fake.status = "accepted"
    c = portal_signed_in(app, "admin")
    page = _page(c)
    fake.status = "completed"  # the doctor signed in the meantime
    r = c.post(f"/tasks/{TID}/complete", data={"csrf_token": csrf_token(page), **MINUTES})
    text = _text(r.get_data(as_text=True))
    assert r.status_code == 409 and "Nguyễn Văn An đã hoàn thành ca hội chẩn này lúc 05/12/2026 10:10" in text
    assert "từ chối yêu cầu" not in text and not fake.completed and not _posted(fake)


# ------------------------------------------------------------------ 3. the participants: one a line, by name


def test_the_participants_are_one_a_line_the_doctor_and_the_nurse_who_wrote_the_consult(app, fake):
    fake.status = "accepted"
    page = _page(portal_signed_in(app, "doctor"))
    box = re.search(r'<textarea[^>]*name="participants"[^>]*>(.*?)</textarea>', page, re.S)
    assert box, page[:2000]
    lines = html.unescape(box.group(1)).strip().splitlines()
    assert lines == ["BS. Nguyễn Văn An — bác sĩ chuyên khoa, tuyến trên",
                     "Võ Minh Tâm — người đề nghị hội chẩn, Trạm Y tế xã Mỹ Hiệp"], lines
    assert "nhân viên y tế" not in box.group(1) and "; " not in box.group(1)
    en = _page(portal_signed_in(app, "doctor", "en"))
    box = html.unescape(re.search(r'name="participants"[^>]*>(.*?)</textarea>', en, re.S).group(1)).strip()
    assert box.splitlines()[1] == "Võ Minh Tâm — requested the consult, Trạm Y tế xã Mỹ Hiệp"


# ------------------------------------------------------------------ 4. free times before the consult is accepted


@pytest.mark.parametrize("status, said", [
    ("requested", "Hãy nhận ca trước"), ("on-hold", "Đang chờ phòng khám trả lời"),
    ("completed", "Ca hội chẩn này đã kết thúc (Đã hoàn thành)")])
def test_free_times_asked_for_a_consult_not_accepted_say_why(app, fake, status, said):
    del fake.appts["a-1"]
    fake.status = status
    c = portal_signed_in(app, "doctor")
    r = c.get(f"/tasks/{TID}/slots?start={datetime.now(TZ):%d/%m/%Y}&days=1")
    text = _text(r.get_data(as_text=True))
    assert r.status_code == 409 and said in text, text[:1500]
    assert not [p for m, p, _ in fake.calls if p.endswith("$find")]
    assert SR  # the consult's request is the fake's
