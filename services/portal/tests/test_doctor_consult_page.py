"""The doctor's consult page: the written conclusion goes to teleconsult as the conclusion (not as
advice) and is shown under "Kết luận"; the booked visit's time and join link stay while a question
is open to the clinic; free times after the answer deadline are marked; the find form starts on
today's date in Vietnam; a doctor removes a leave. Flask's test client; teleconsult is the scripted
fake of ``test_visit_changes`` (at the HTTP transport), told the consult's state."""

from __future__ import annotations

import copy
import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from sen_shared import http

from services.portal.tests.test_visit_changes import PATIENT, SR, TID, TZ, FakeTeleconsult, _find, _iso, _page, _text
from tests.support import csrf_token, portal_app, portal_signed_in

OUT = "https://sen.example.vn/fhir/CodeSystem/consult-output"


class Consult(FakeTeleconsult):
    """The consult ``t-1`` in the state a test sets (status, due time, outputs), its ``$find`` times
    (``free``) and what ``$complete`` was sent."""

    def __init__(self, start: datetime) -> None:
        super().__init__(start)
        self.status, self.due, self.output = "in-progress", None, None
        self.free: list[datetime] | None = None
        self.completed: list[dict[str, Any]] = []

    def __call__(self, method: str, url: str, **kw: Any) -> http.Response:
        path = urlsplit(url).path
        if "/fhir/Task" in path and method == "GET":
            task = {"resourceType": "Task", "id": TID, "status": self.status, "intent": "order",
                    "priority": "urgent", "for": {"reference": PATIENT}, "authoredOn": "2026-12-04T08:00:00+07:00",
                    "basedOn": [{"reference": f"ServiceRequest/{SR}"}],
                    "requester": {"reference": "Organization/tyt-my-hiep"},
                    "owner": {"reference": "Practitioner/bs-nguyen-van-an"}}
            if self.due:
                task["restriction"] = {"period": {"end": _iso(self.due)}}
            if self.output:
                task["output"] = self.output
            sr = {"resourceType": "ServiceRequest", "id": SR, "status": "active", "intent": "order",
                  "subject": {"reference": PATIENT}, "note": [{"text": "Xin ý kiến."}]}
            return self._bundle([task, sr])
        if path.endswith("/fhir/Appointment/$find") and self.free is not None:
            return self._bundle([{"resourceType": "Appointment", "status": "proposed", "start": _iso(s),
                                  "end": _iso(s + timedelta(minutes=30)),
                                  "slot": [{"reference": f"Slot/s-{s:%d%H%M}"}]} for s in self.free])
        if path.endswith(f"/fhir/Task/{TID}/$complete") and method == "POST":
            self.completed.append(kw.get("json") or {})
            return self._json({"resourceType": "Task", "id": TID, "status": "completed"})
        return super().__call__(method, url, **kw)


@pytest.fixture()
def fake(monkeypatch: pytest.MonkeyPatch) -> Consult:
    f = Consult(datetime.now(TZ).replace(second=0, microsecond=0) + timedelta(days=1))
    monkeypatch.setattr(http, "request", f)
    return f


@pytest.fixture()
def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake: Consult):
    return portal_app(tmp_path, monkeypatch, backend="http://127.0.0.1:9", SEN_PORTAL_CACHE_SECONDS="0")


# ------------------------------------------------------------------ 1. the conclusion is the conclusion

def test_the_written_conclusion_is_sent_as_the_conclusion_and_the_advice_alone_as_advice(app, fake):
    c = portal_signed_in(app, "doctor")
    page = _page(c)
    r = c.post(f"/tasks/{TID}/complete", data={
        "csrf_token": csrf_token(page), "participants": "BS An — chủ trì", "history": "Tăng huyết áp 5 năm.",
        "findings": "HA 170/100 mmHg.", "conclusion": "Tăng huyết áp độ 2 chưa kiểm soát.",
        "diagnosis": "I10 — Tăng huyết áp vô căn (nguyên phát)", "recommendations": "Tăng amlodipin 10 mg.",
        "chair": "BS An"})
    assert r.status_code == 302, _text(r.get_data(as_text=True))[:800]
    [sent] = fake.completed
    params = {p["name"]: p for p in sent["parameter"]}
    assert params["conclusion-text"]["valueString"] == "Tăng huyết áp độ 2 chưa kiểm soát."
    assert params["recommendations"]["valueString"] == "Tăng amlodipin 10 mg."  # the advice alone
    assert params["conclusion"]["valueCoding"]["code"] == "I10"


def _dd(page: str, label: str) -> str:
    result = page[page.index('data-testid="result"'):page.index("</dl>", page.index('data-testid="result"'))]
    m = re.search(rf"<dt>{re.escape(label)}</dt><dd[^>]*>(.*?)</dd>", result, re.S)
    assert m, (label, result)
    return _text(m.group(1))


def test_the_completed_consult_shows_the_written_conclusion_under_conclusion(app, fake):
    fake.status = "completed"
    fake.output = [
        {"type": {"coding": [{"system": OUT, "code": "conclusion"}], "text": "Kết luận"},
         "valueCodeableConcept": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10", "code": "I10",
                                              "display": "Tăng huyết áp vô căn (nguyên phát)"}],
                                  "text": "Tăng huyết áp độ 2 chưa kiểm soát."}},
        {"type": {"coding": [{"system": OUT, "code": "recommendations"}], "text": "Hướng xử trí"},
         "valueString": "Tăng amlodipin 10 mg."}]
    for user, path in (("doctor", f"/tasks/{TID}"), ("clinic", f"/consults/{TID}")):
        page = portal_signed_in(app, user).get(path).get_data(as_text=True)
        conclusion = _dd(page, "Kết luận")
        assert "Tăng huyết áp độ 2 chưa kiểm soát." in conclusion and "I10" in conclusion, (user, conclusion)
        advice = _dd(page, "Hướng điều trị đề xuất")
        assert advice.strip() == "Tăng amlodipin 10 mg.", (user, advice)


# ------------------------------------------------------------------ 2. the visit while a question is open

def test_the_booked_visit_and_its_join_link_stay_while_a_question_is_open(app, fake):
    from sen_portal.web import EXT_JOIN

    link = "https://video.example.vn/room/a-1?role=doctor"
    fake.appts["a-1"]["participant"][1]["extension"] = [{"url": EXT_JOIN, "valueUrl": link}]
    fake.status = "on-hold"  # the doctor asked the clinic a question
    page = _page(portal_signed_in(app, "doctor"))
    start = datetime.fromisoformat(fake.appts["a-1"]["start"]).astimezone(TZ)
    assert f"{start:%d/%m/%Y %H:%M}" in _text(page.split('data-testid="visit-time"')[1])
    assert f'href="{link}"' in page and 'data-testid="visit-on-hold"' in page
    # the changes wait until the clinic has answered: no move, cancel, book or minutes form
    for gone in ('data-testid="visit-move"', 'data-testid="visit-cancel"', "/book", "/complete", "/slots"):
        assert gone not in page, gone
    fake.status = "in-progress"
    page = _page(portal_signed_in(app, "doctor"))
    assert f'href="{link}"' in page and 'data-testid="visit-move"' in page and "/complete" in page
    assert 'data-testid="visit-on-hold"' not in page


# ------------------------------------------------------------------ 3. free times after the answer deadline

def test_free_times_after_the_answer_deadline_are_marked_and_warned(app, fake):
    del fake.appts["a-1"]  # no visit yet: the page offers times to book
    now = datetime.now(TZ).replace(second=0, microsecond=0)
    fake.due = now + timedelta(days=1, hours=3)
    fake.free = [now + timedelta(days=2, hours=h) for h in (1, 2)]  # both after the deadline
    c = portal_signed_in(app, "doctor")
    found = _find(c, _page(c))
    assert found.count('data-testid="after-due"') == 2 and "sau hạn trả lời" in _text(found)
    warning = _text(found.split('data-testid="all-after-due"')[1].split("</p>")[0])
    assert "Tất cả các giờ trống" in warning and f"{fake.due:%d/%m/%Y %H:%M}" in warning
    fake.free = [now + timedelta(hours=2), now + timedelta(days=2)]  # one before, one after
    found = _find(c, _page(c))
    assert found.count('data-testid="after-due"') == 1 and 'data-testid="all-after-due"' not in found
    buttons = re.findall(r"<li><form.*?</form></li>", found, re.S)
    assert 'data-testid="after-due"' not in buttons[0] and 'data-testid="after-due"' in buttons[1]
    fake.due = None  # no deadline known: nothing marked
    assert 'data-testid="after-due"' not in _find(c, _page(c))


def test_the_deadline_warning_reads_in_english_too(app, fake):
    del fake.appts["a-1"]
    now = datetime.now(TZ).replace(second=0, microsecond=0)
    fake.due, fake.free = now + timedelta(hours=1), [now + timedelta(days=2)]
    c = portal_signed_in(app, "doctor", lang="en")
    found = _text(_find(c, _page(c)))
    assert "after the answer deadline" in found and "All these free times are after the answer deadline" in found


# ------------------------------------------------------------------ 4. today in Vietnam

class _Clock(datetime):
    """18:30 UTC on 5 December: 01:30 on 6 December in Vietnam."""

    @classmethod
    def now(cls, tz: Any = None) -> datetime:  # type: ignore[override]
        fixed = datetime(2026, 12, 5, 18, 30, tzinfo=UTC)
        return fixed.astimezone(tz) if tz else fixed.replace(tzinfo=None)


def test_the_find_form_starts_on_todays_date_in_vietnam(app, fake, monkeypatch):
    from sen_portal.web import formatting

    monkeypatch.setattr(formatting, "datetime", _Clock)
    assert formatting.today().isoformat() == "2026-12-06"
    page = _page(portal_signed_in(app, "doctor"))
    start = re.search(r'<input[^>]*name="start"[^>]*>', page.split('action="/tasks/t-1/slots"')[1]).group(0)
    assert 'value="06/12/2026"' in start, start


# ------------------------------------------------------------------ 5. removing a leave

class Schedules:
    """The doctor's Schedule with two leaves, as teleconsult keeps it (GET, PUT)."""

    def __init__(self) -> None:
        self.puts: list[dict[str, Any]] = []
        leave = "https://fhir.sen.vn/StructureDefinition/schedule-not-available"
        self.schedule = {"resourceType": "Schedule", "id": "sch-an", "active": True,
                         "actor": [{"reference": "Practitioner/bs-nguyen-van-an"}], "extension": [
                             {"url": leave, "extension": [
                                 {"url": "description", "valueString": "Hội nghị"},
                                 {"url": "during", "valuePeriod": {"start": "2026-12-10T00:00:00+07:00",
                                                                   "end": "2026-12-11T23:59:59+07:00"}}]},
                             {"url": leave, "extension": [
                                 {"url": "description", "valueString": "Nghỉ phép năm"},
                                 {"url": "during", "valuePeriod": {"start": "2026-12-20T00:00:00+07:00",
                                                                   "end": "2026-12-24T23:59:59+07:00"}}]}]}

    def __call__(self, method: str, url: str, *, json: Any = None, **_: Any) -> http.Response:
        path = urlsplit(url).path
        if path.endswith("/fhir/Schedule") and method == "GET":
            body = {"resourceType": "Bundle", "type": "searchset",
                    "entry": [{"resource": copy.deepcopy(self.schedule)}]}
            return http.Response(200, {}, _dumps(body))
        if path.endswith("/fhir/Schedule/sch-an") and method == "PUT":
            self.puts.append(json)
            self.schedule = copy.deepcopy(json)
            return http.Response(200, {}, _dumps(json))
        return http.Response(200, {}, _dumps({"resourceType": "Bundle", "type": "searchset", "entry": []}))


def _dumps(body: Any) -> bytes:
    return json.dumps(body).encode()


def test_a_doctor_removes_a_leave_after_confirming(tmp_path, monkeypatch):
    fake = Schedules()
    monkeypatch.setattr(http, "request", fake)
    app = portal_app(tmp_path, monkeypatch, backend="http://127.0.0.1:9", SEN_PORTAL_CACHE_SECONDS="0")
    c = portal_signed_in(app, "doctor")
    page = c.get("/availability").get_data(as_text=True)
    assert page.count('data-testid="leave-remove"') == 2 and "<summary>Xóa</summary>" in page
    second = re.findall(r'<form method="post" class="inline">.*?</form>', page, re.S)[1]
    data = dict(re.findall(r'name="(\w+)" value="([^"]*)"', second))
    assert data["which"] == "leave-remove" and data["start"] == "2026-12-20T00:00:00+07:00"
    r = c.post("/availability", data=data)
    assert r.status_code == 200, _text(r.get_data(as_text=True))[:800]
    text = _text(r.get_data(as_text=True))
    assert "Đã xóa kỳ nghỉ" in text and "Nghỉ phép năm" not in text and "Hội nghị" in text
    [put] = fake.puts
    assert [p["valueString"] for e in put["extension"] for p in e["extension"] if p["url"] == "description"] == [
        "Hội nghị"]
    # the same click again (another tab): said, nothing sent
    r = c.post("/availability", data=data)
    assert r.status_code == 422 and "không còn trong lịch" in _text(r.get_data(as_text=True))
    assert len(fake.puts) == 1
