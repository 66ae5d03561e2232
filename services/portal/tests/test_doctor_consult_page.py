"""The doctor's consult page: the written conclusion goes to teleconsult as the conclusion (not as
advice) and is shown under "Kết luận"; the booked visit's time and join link stay while a question
is open to the clinic; free times after the answer deadline are marked; the find form starts on
today's date in Vietnam; a doctor removes a leave; the minutes carry several ICD-10 diagnoses and
the actual time, and name the chair and each participant once; acceptance and start told apart; the
requesting clinic, the reason a consult ended and who holds it; taking over a consult given to
another doctor is confirmed; a reject says so. Flask's test client; teleconsult is the scripted
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
from tests.support import csrf_token, flash_step, portal_app, portal_signed_in

OUT = "https://sen.example.vn/fhir/CodeSystem/consult-output"


class Consult(FakeTeleconsult):
    """The consult ``t-1`` in the state a test sets (status, due time, outputs), its ``$find`` times
    (``free``) and what ``$complete`` was sent."""

    def __init__(self, start: datetime) -> None:
        super().__init__(start)
        self.status, self.due, self.output = "in-progress", None, None
        self.owner = "Practitioner/bs-nguyen-van-an"
        self.begun: str | None = None  # Task.executionPeriod.start
        self.reason: str | None = None  # Task.statusReason
        self.versions: list[tuple[str, str | None]] = []  # the Task's history: (status, executionPeriod.start)
        self.free: list[datetime] | None = None
        self.completed: list[dict[str, Any]] = []
        self.ops: list[str] = []  # the Task operations posted ($accept, $reject)
        self.comms: list[dict[str, Any]] = []  # the consult's thread (Communications)
        self.changed_by: str | None = None  # who made the Task's version (teleconsult's meta changed-by)
        self.business: dict[str, Any] | None = None  # Task.businessStatus (the SLA sweep's "sla-breached")
        self.breached: bool | None = None  # the worklist entry's breach extension (teleconsult's $worklist)

    def task(self, status: str | None = None, begun: str | None = None) -> dict[str, Any]:
        task = {"resourceType": "Task", "id": TID, "status": status or self.status, "intent": "order",
                "priority": "urgent", "for": {"reference": PATIENT}, "authoredOn": "2026-12-04T08:00:00+07:00",
                "basedOn": [{"reference": f"ServiceRequest/{SR}"}],
                "requester": {"reference": "Organization/tyt-my-hiep"}, "owner": {"reference": self.owner}}
        if begun or (status is None and self.begun):
            task["executionPeriod"] = {"start": begun or self.begun}
        if self.reason and status is None:
            task["statusReason"] = {"text": self.reason}
        if self.business and status is None:
            task["businessStatus"] = self.business
        if self.changed_by and status is None:
            task["meta"] = {"extension": [{"url": "https://sen.vn/fhir/StructureDefinition/changed-by",
                                           "valueReference": {"reference": self.changed_by,
                                                              "display": "portal-doctor"}}]}
        return task

    def __call__(self, method: str, url: str, **kw: Any) -> http.Response:
        path = urlsplit(url).path
        if path.endswith(f"/fhir/Task/{TID}/_history") and method == "GET":
            versions = [{**self.task(status, begun), "meta": {"versionId": str(n)}}
                        for n, (status, begun) in enumerate(self.versions, 1)]
            return self._bundle(versions[::-1])  # newest first, as a history is
        if path.endswith("/fhir/Communication") and method == "GET":
            return self._bundle(copy.deepcopy(self.comms))
        if path.endswith("/fhir/Task/$worklist") and method == "GET":
            if self.breached is None:
                return self._bundle([self.task()])
            task = {**self.task(), "restriction": {"period": {"end": _iso(self.due)}}} if self.due else self.task()
            return self._json({"resourceType": "Bundle", "type": "searchset", "entry": [
                {"resource": task, "search": {"mode": "match", "extension": [
                    {"url": "https://sen.vn/fhir/StructureDefinition/sla-breached", "valueBoolean": self.breached}]}}]})
        if "/fhir/Task" in path and method == "GET":
            task = self.task()
            if self.due:
                task["restriction"] = {"period": {"end": _iso(self.due)}}
            if self.output:
                task["output"] = self.output
            sr = {"resourceType": "ServiceRequest", "id": SR, "status": "active", "intent": "order",
                  "subject": {"reference": PATIENT}, "note": [{"text": "Xin ý kiến."}]}
            return self._bundle([task, sr])
        if (m := re.search(rf"/fhir/Task/{TID}/\$(accept|reject|request-info)$", path)) and method == "POST":
            self.ops.append(m.group(1))
            return self._json(self.task())
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
    return Consult.answering(monkeypatch)


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
    second = re.findall(r'<form method="post" class="inline"[^>]*>.*?</form>', page, re.S)[1]
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


# ------------------------------------------------------------------ 6. several diagnoses in the minutes

MINUTES = {"participants": "BS. Nguyễn Văn An — bác sĩ chuyên khoa, tuyến trên; YS. Võ Minh Tâm — cơ sở gửi",
           "history": "Đau ngực 2 tuần.", "findings": "ECG: ST chênh xuống.", "conclusion": "Đau thắt ngực.",
           "recommendations": "Chuyển tuyến.", "chair": "BS. Nguyễn Văn An"}


def _sign(c: Any, diagnosis: str) -> Any:
    token = csrf_token(_page(c))
    return c.post(f"/tasks/{TID}/complete", data={**MINUTES, "diagnosis": diagnosis, "csrf_token": token})


def test_a_diagnosis_box_of_no_codes_is_refused_without_its_text_said_back(app, fake):
    """100 kB typed in the diagnosis box: its length said, not also "Không có trong danh mục ICD-10: xxx…" with
    the 100 kB again; thirty unknown words: the first ten named, each cut at 20 characters, then "…" (session 21)."""
    c = portal_signed_in(app, "doctor")
    r = _sign(c, "x" * 100_000)
    page = r.get_data(as_text=True)
    assert r.status_code == 422 and "Ghi tối đa 2000 ký tự." in page  # the box keeps what was typed
    assert "Không có trong danh mục ICD-10" not in page and page.count("x" * 100_000) == 1
    r = _sign(c, " ".join(f"W{i:02d}" + "y" * 30 for i in range(30)))
    page = r.get_data(as_text=True)
    assert r.status_code == 422 and not fake.completed
    named = re.search(r"Không có trong danh mục ICD-10: ([^.]*)\.", page).group(1)
    assert named == ", ".join(f"W{i:02d}" + "y" * 17 + "…" for i in range(10)) + ", …", named


@pytest.mark.parametrize("typed", [
    "I20.0 I10 E11.9", "I20.0, I10, E11.9", "I20.0;I10\n\ne11.9",
    # the picker's lines (code — label), one a line, and a code typed after the last
    "I20.0 — Đau thắt ngực không ổn định\nI10 — Tăng huyết áp vô căn (nguyên phát)\nE11.9, I10\n"])
def test_the_minutes_send_every_diagnosis_in_the_order_written(app, fake, typed):
    """#4: 'I20.0 I10 E11.9' sent I20.0 alone, 'I20.0, I10, E11.9' was refused: each code is a
    ``conclusion`` of $complete, in order, once, with its Vietnamese label."""
    r = _sign(portal_signed_in(app, "doctor"), typed)
    assert r.status_code == 302, _text(r.get_data(as_text=True))[:800]
    [sent] = fake.completed
    codings = [p["valueCoding"] for p in sent["parameter"] if p["name"] == "conclusion"]
    assert [c["code"] for c in codings] == ["I20.0", "I10", "E11.9"]
    assert {c["system"] for c in codings} == {"http://hl7.org/fhir/sid/icd-10"}
    assert codings[0]["display"] == "Đau thắt ngực không ổn định"


@pytest.mark.parametrize("typed,chair,role", [
    (MINUTES["participants"], MINUTES["chair"], "bác sĩ chuyên khoa, tuyến trên; YS. Võ Minh Tâm — cơ sở gửi"),
    ("BS Nguyễn Văn An; YS Võ Minh Tâm", "BS Nguyễn Văn An", "chủ trì; YS Võ Minh Tâm"),  # the chair, no role
    ("Nguyễn Văn An — hội chẩn viên\nYS Tâm — cơ sở", "BS. Nguyễn Văn An", "hội chẩn viên; YS Tâm — cơ sở"),
    ("YS Võ Minh Tâm — cơ sở gửi", "BS. Nguyễn Văn An", "chủ trì; YS Võ Minh Tâm — cơ sở gửi"),
    # the chair's entry under another title than the chair's field (the review's minutes: the record named
    # the chair twice, "BS.CKII Nguyễn Văn An — chủ trì; BS. Nguyễn Văn An — chủ trì (BVĐK Đồng Tháp); ...")
    ("BS. Nguyễn Văn An — chủ trì (BVĐK Đồng Tháp)\nYS. Trần Thị Hoa — Trạm Y tế xã Mỹ Hiệp", "BS.CKII Nguyễn Văn An",
     "chủ trì (BVĐK Đồng Tháp); YS. Trần Thị Hoa — Trạm Y tế xã Mỹ Hiệp"),
    ("PGS.TS. nguyen van  an – hội chẩn viên; ĐD. Lê Thị Mai — điều dưỡng", "GS.TS. Nguyễn Văn An",
     "hội chẩn viên; ĐD. Lê Thị Mai — điều dưỡng")])
def test_the_minutes_participant_is_the_chair_with_its_role_and_the_others_as_typed(app, fake, typed, chair, role):
    """The record read "BS Nguyễn Văn An — BS Nguyễn Văn An; YS Võ Minh Tâm": the chair's name, then the
    whole participants text as its role. The one participant sent is the chair, its role its own (or
    "chủ trì"), then the others' entries as typed, the chair not named again."""
    c = portal_signed_in(app, "doctor")
    token = csrf_token(_page(c))
    r = c.post(f"/tasks/{TID}/complete", data={**MINUTES, "participants": typed, "chair": chair, "diagnosis": "I10",
                                               "csrf_token": token})
    assert r.status_code == 302, _text(r.get_data(as_text=True))[:800]
    [sent] = fake.completed
    [who] = [p["part"] for p in sent["parameter"] if p["name"] == "participant"]
    assert who == [{"name": "who", "valueReference": {"reference": "Practitioner/bs-nguyen-van-an", "display": chair}},
                   {"name": "role", "valueString": role}]


@pytest.mark.parametrize("lang,said", [("vi", "Không có trong danh mục ICD-10: X99.9, abc."),
                                        ("en", "Not in the ICD-10 list: X99.9, abc.")])
def test_an_unknown_diagnosis_is_named_and_the_typed_text_kept(app, fake, lang, said):
    c = portal_signed_in(app, "doctor", lang=lang)
    r = _sign(c, "I20.0, X99.9 abc, I10")
    body = r.get_data(as_text=True)
    assert r.status_code == 422 and not fake.completed
    assert said in _text(body)
    assert re.search(r'<textarea[^>]*name="diagnosis"[^>]*>\s*I20\.0, X99\.9 abc, I10</textarea>', body), body
    assert _sign(c, "").status_code == 422 and not fake.completed  # none at all: still refused


def test_the_picker_suggests_for_the_words_being_typed_and_adds_to_the_codes(app, fake):
    """The minutes' field asks /icd10/diagnoses with its whole text: the suggestions are for the words after
    the codes already there, and carry ``data-append`` (app.js adds the pick instead of replacing the
    field); the clinic's single reason field keeps replacing."""
    c = portal_signed_in(app, "doctor")
    page = _page(c)
    field = re.search(r'<textarea[^>]*name="diagnosis"[^>]*>', page).group(0)
    assert 'hx-get="/icd10/diagnoses"' in field
    hits = c.get("/icd10/diagnoses", query_string={"diagnosis": "I20.0, tăng huyết"}).get_data(as_text=True)
    assert 'data-pick="I10 — Tăng huyết áp vô căn (nguyên phát)"' in hits
    assert "data-append" in hits and 'data-query="tăng huyết"' in hits and "I20.0 —" not in hits
    picked = c.get("/icd10/diagnoses", query_string={"diagnosis": "I10 — Tăng huyết áp vô căn\n"})
    assert "<button" not in picked.get_data(as_text=True)  # nothing typed after the pick yet
    reason = c.get("/icd10", query_string={"for": "reason", "reason": "tăng huyết"}).get_data(as_text=True)
    assert "data-pick=" in reason and "data-append" not in reason


# ------------------------------------------------------------------ 7. the minutes' time is the actual one

def test_the_minutes_are_dated_from_the_start_to_the_signing_not_at_the_booked_visit(app, fake):
    """#5: the minutes took the booked visit's time (tomorrow here). Now: from when the consult was started
    (Task.executionPeriod.start: the start, or the acceptance) to the signing, on Vietnam's offset."""
    begun = datetime.now(TZ).replace(microsecond=0) - timedelta(minutes=50)
    fake.begun = _iso(begun)
    c = portal_signed_in(app, "doctor")
    assert f"từ {begun:%d/%m/%Y %H:%M}" in _text(_page(c).split('data-testid="minutes-time"')[1].split("</p>")[0])
    before = datetime.now(TZ).replace(microsecond=0)
    assert _sign(c, "I10").status_code == 302
    after = datetime.now(TZ)
    params = {p["name"]: p for p in fake.completed[0]["parameter"]}
    start, end = (datetime.fromisoformat(params[k]["valueDateTime"]) for k in ("start", "end"))
    assert start == begun and before <= end <= after
    assert params["end"]["valueDateTime"].endswith("+07:00")
    visit = datetime.fromisoformat(fake.appts["a-1"]["start"])
    assert end < visit  # the visit is tomorrow: the minutes are today's
    fake.begun = _iso(datetime.now(TZ) + timedelta(hours=2))  # a clock ahead elsewhere: never after the signing
    assert _sign(c, "I10").status_code == 302
    params = {p["name"]: p for p in fake.completed[1]["parameter"]}
    assert params["start"]["valueDateTime"] <= params["end"]["valueDateTime"]


# ------------------------------------------------------------------ 8. the full minutes: names, once

def _with_minutes(fake: Consult) -> None:
    import base64

    minutes = {"start": "2026-12-05T09:05:00+07:00", "end": "2026-12-05T09:40:00+07:00",
               "participants": [{"reference": "Practitioner/bs-nguyen-van-an", "display": "BS. Nguyễn Văn An",
                                 "role": MINUTES["participants"]},
                                {"reference": "Practitioner/ys-vo-minh-tam", "display": "YS. Võ Minh Tâm",
                                 "role": "cơ sở gửi"}],
               "history": "Đau ngực.", "conclusion": [{"system": "http://hl7.org/fhir/sid/icd-10", "code": "I10"}],
               "recommendations": "Chuyển tuyến.", "chair": "Practitioner/bs-nguyen-van-an"}
    fake.status = "completed"
    fake.output = [{"type": {"coding": [{"system": OUT, "code": "minutes"}]}, "valueAttachment": {
        "contentType": "application/json", "data": base64.b64encode(json.dumps(minutes).encode()).decode()}}]


def test_the_full_minutes_name_the_chair_and_each_participant_once(app, fake):
    """#6: 'Chủ trì ký biên bản: Practitioner/bs-nguyen-van-an' and 'BS. Nguyễn Văn An — BS. Nguyễn Văn An —
    bác sĩ chuyên khoa…'; on the doctor's and the clinic's pages."""
    _with_minutes(fake)
    for user, path in (("doctor", f"/tasks/{TID}"), ("clinic", f"/consults/{TID}")):
        page = portal_signed_in(app, user).get(path).get_data(as_text=True)
        minutes = page[page.index('data-testid="minutes"'):]
        minutes = minutes[:minutes.index("</dl>")]
        assert "Practitioner/" not in minutes, user
        assert re.search(r'data-testid="minutes-chair">BS\. Nguyễn Văn An</dd>', minutes), user
        people = _text(minutes.split('data-testid="minutes-participants"')[1].split("</dd>")[0])
        assert people.count("Nguyễn Văn An") == 1 and "YS. Võ Minh Tâm — cơ sở gửi" in people, (user, people)


# ------------------------------------------------------------------ 9. accepted at, started at

def _fact(page: str, testid: str) -> tuple[str, str] | None:
    m = re.search(rf'<dt>([^<]*)</dt><dd[^>]*data-testid="{testid}">([^<]*)</dd>', page)
    return (m.group(1), m.group(2)) if m else None


@pytest.mark.parametrize("status", ["on-hold", "cancelled"])
def test_a_consult_never_started_says_when_it_was_accepted_not_started(app, fake, status):
    """#13: accepted, then a question asked (or the clinic cancelled): 'Bắt đầu lúc' showed the acceptance.
    The Task's history says it was never in progress: 'Nhận ca lúc' alone; once it was, both."""
    accepted, started = "2026-12-05T08:28:00+07:00", "2026-12-05T09:05:00+07:00"
    fake.status, fake.begun = status, accepted
    fake.versions = [("requested", None), ("accepted", accepted), (status, accepted)]
    for user, path in (("doctor", f"/tasks/{TID}"), ("clinic", f"/consults/{TID}")):
        page = portal_signed_in(app, user).get(path).get_data(as_text=True)
        assert _fact(page, "task-accepted") == ("Nhận ca lúc", "05/12/2026 08:28"), (user, status)
        assert _fact(page, "task-started") is None and "Bắt đầu lúc" not in page, (user, status)
    fake.begun = started
    fake.versions = [("requested", None), ("accepted", accepted), ("in-progress", started), (status, started)]
    for user, path in (("doctor", f"/tasks/{TID}"), ("clinic", f"/consults/{TID}")):
        page = portal_signed_in(app, user, lang="en").get(path).get_data(as_text=True)
        assert _fact(page, "task-accepted") == ("Accepted at", "05/12/2026 08:28"), (user, status)
        assert _fact(page, "task-started") == ("Started", "05/12/2026 09:05"), (user, status)


def test_a_consult_in_progress_says_when_it_was_accepted_and_started(app, fake):
    """'Nhận ca lúc' disappeared while the consult was in progress ('Bắt đầu lúc' alone until completion):
    the acceptance is read from the Task's history; the start is the Task's own."""
    accepted, started = "2026-12-05T08:28:00+07:00", "2026-12-05T09:05:00+07:00"
    fake.status, fake.begun = "in-progress", started
    fake.versions = [("requested", None), ("accepted", accepted), ("in-progress", started)]
    for user, path in (("doctor", f"/tasks/{TID}"), ("clinic", f"/consults/{TID}")):
        page = portal_signed_in(app, user).get(path).get_data(as_text=True)
        assert _fact(page, "task-accepted") == ("Nhận ca lúc", "05/12/2026 08:28"), user
        assert _fact(page, "task-started") == ("Bắt đầu lúc", "05/12/2026 09:05"), user


@pytest.mark.parametrize("lang,said", [
    ("vi", "Đã gửi câu hỏi; cơ sở yêu cầu thấy câu hỏi và trả lời ngay trên ca hội chẩn này."),
    ("en", "Your question is sent; the requesting clinic sees it and answers on this consult.")])
def test_a_question_sent_is_confirmed(app, fake, lang, said):
    """"Gửi câu hỏi" came back to the page with no word that it was sent (reject says so)."""
    c = portal_signed_in(app, "doctor", lang=lang)
    r = c.post(f"/tasks/{TID}/request-info", data={"csrf_token": csrf_token(_page(c)),
                                                   "question": "Xin kết quả troponin."}, follow_redirects=True)
    assert r.status_code == 200 and fake.ops == ["request-info"]
    page = r.get_data(as_text=True)
    assert _text(re.search(r'data-testid="asked">(.*?)</div>', page, re.S).group(1)).strip() == said
    assert 'data-testid="asked"' not in _page(c)  # said once, after the sending


def test_the_other_sides_message_shows_on_the_next_page_even_with_answers_kept(tmp_path, monkeypatch, fake):
    """A page opened right after the clinic's message did not show it for a few seconds: the thread (and
    the Task, the visit) was an answer kept for the doctor, forgotten only by the doctor's own writes.
    The consult page reads them fresh, whatever the answers kept for other pages."""
    from sen_portal.web.clinic import THREAD_CATEGORY

    app = portal_app(tmp_path, monkeypatch, backend="http://127.0.0.1:9", SEN_PORTAL_CACHE_SECONDS="60")
    for user, path in (("doctor", f"/tasks/{TID}"), ("clinic", f"/consults/{TID}")):
        fake.comms, fake.status = [], "in-progress"
        c = portal_signed_in(app, user)
        assert "Troponin âm tính" not in c.get(path).get_data(as_text=True)
        # the other side writes (teleconsult's $message): not through this user's portal session
        fake.comms = [{"resourceType": "Communication", "id": "m-1", "status": "completed",
                       "basedOn": [{"reference": f"ServiceRequest/{SR}"}], "sent": "2026-12-05T09:00:00+07:00",
                       "sender": {"reference": "Organization/tyt-my-hiep"},
                       "category": [{"coding": [{"system": THREAD_CATEGORY, "code": "message"}]}],
                       "payload": [{"contentString": "Troponin âm tính."}]}]
        fake.status = "on-hold"
        page = c.get(path).get_data(as_text=True)
        assert "Troponin âm tính" in page, user
        assert "Câu hỏi cho cơ sở" in _text(page), user


# ------------------------------------------------------------------ 10. who sent it, why it ended, who holds it

@pytest.fixture()
def named(monkeypatch: pytest.MonkeyPatch) -> None:
    from sen_portal.web import directory

    monkeypatch.setattr(directory, "names", lambda rtype: {
        "Organization": {"bvdk-dong-thap": "Bệnh viện Đa khoa Đồng Tháp", "tyt-my-hiep": "Trạm Y tế xã Mỹ Hiệp"},
        "Practitioner": {"bs-nguyen-van-an": "BS. Nguyễn Văn An", "bs-tran-thi-binh": "BS. Trần Thị Bình"}}[rtype])


@pytest.mark.parametrize("status,label", [("cancelled", "Lý do cơ sở hủy"), ("rejected", "Lý do từ chối")])
def test_the_doctors_page_names_the_requesting_clinic_and_the_reason_it_ended(app, fake, named, status, label):
    """#14: the page said 'Tuyến trên: <the doctor's own hospital>' and never why the consult ended."""
    fake.status, fake.reason = status, "Người bệnh đã chuyển viện."
    page = _page(portal_signed_in(app, "doctor"))
    assert _fact(page, "consult-requester") == ("Cơ sở gửi", "Trạm Y tế xã Mỹ Hiệp")
    assert _fact(page, "status-reason") == (label, "Người bệnh đã chuyển viện.")
    assert "Tuyến trên" not in _text(page.split("</dl>")[0])


@pytest.mark.parametrize("changed_by,owner,said", [
    ("Practitioner/bs-tran-thi-binh", "Organization/bvdk-dong-thap", ("Từ chối bởi", "BS. Trần Thị Bình")),
    (None, "Practitioner/bs-nguyen-van-an", ("Từ chối bởi", "BS. Nguyễn Văn An (bạn)")),  # the owner then
    (None, "Organization/bvdk-dong-thap", None)])  # not known: no one named, not "no doctor yet"
def test_a_rejected_consult_names_who_rejected_it_not_no_doctor_yet(app, fake, named, changed_by, owner, said):
    """The doctor's page of a rejected consult said "Người giữ ca: Chưa bác sĩ nào nhận"."""
    fake.status, fake.reason, fake.owner, fake.changed_by = "rejected", "Ngoài chuyên khoa.", owner, changed_by
    page = _page(portal_signed_in(app, "doctor"))
    assert _fact(page, "task-rejected-by") == said
    assert _fact(page, "task-owner") is None and "Chưa bác sĩ nào nhận" not in page
    english = _page(portal_signed_in(app, "doctor", lang="en"))
    assert (_fact(english, "task-rejected-by") or ("Rejected by",))[0] == "Rejected by"


def _holders(page: str) -> list[str]:
    return [_text(h).strip() for h in re.findall(r'data-testid="consult-holder">(.*?)</td>', page, re.S)]


def test_a_consult_given_to_another_doctor_says_so_and_is_taken_over_only_when_confirmed(app, fake, named):
    """#12: after 'Chuyển cho bác sĩ khác' the consult looked unchanged and 'Nhận ca' silently made it
    mine again. The worklist and the page name the holder; taking it over needs the ticked box (the server
    checks it: no request to teleconsult without it)."""
    fake.status, fake.owner = "requested", "Practitioner/bs-tran-thi-binh"
    c = portal_signed_in(app, "doctor")
    assert _holders(c.get("/worklist").get_data(as_text=True)) == ["BS. Trần Thị Bình"]
    page = _page(c)
    assert _fact(page, "task-owner") == ("Người giữ ca", "BS. Trần Thị Bình")
    form = page[page.index('data-testid="takeover"'):]
    form = form[:form.index("</form>")]
    assert "Nhận ca thay BS. Trần Thị Bình" in _text(form)
    assert re.search(r'type="checkbox" name="takeover" value="Practitioner/bs-tran-thi-binh"', form)
    r = c.post(f"/tasks/{TID}/accept", data={"csrf_token": csrf_token(page)})  # the box not ticked
    assert r.status_code == 409 and fake.ops == []
    assert "Ca hội chẩn này đang do BS. Trần Thị Bình giữ" in _text(r.get_data(as_text=True))
    r = c.post(f"/tasks/{TID}/accept", data={"csrf_token": csrf_token(page), "takeover": "Practitioner/bs-other"})
    assert r.status_code == 409 and fake.ops == []  # ticked for someone else: not this holder
    r = c.post(f"/tasks/{TID}/accept", data={"csrf_token": csrf_token(page),
                                             "takeover": "Practitioner/bs-tran-thi-binh"})
    assert r.status_code == 302 and fake.ops == ["accept"]
    # mine, or no doctor's yet: one click, and the worklist says so
    for owner, holder in (("Practitioner/bs-nguyen-van-an", "Bạn"), ("Organization/bvdk-dong-thap",
                                                                     "Chưa bác sĩ nào nhận")):
        fake.owner, fake.ops = owner, []
        page = _page(c)
        assert 'data-testid="takeover"' not in page
        assert c.post(f"/tasks/{TID}/accept", data={"csrf_token": csrf_token(page)}).status_code == 302
        assert fake.ops == ["accept"] and _holders(c.get("/worklist").get_data(as_text=True)) == [holder]


def test_rejecting_a_consult_says_so_on_the_worklist(app, fake):
    """#18: accept and reassign said so; reject came back to the worklist without a word."""
    fake.status, fake.owner = "requested", "Organization/bvdk-dong-thap"
    c = portal_signed_in(app, "doctor")
    token = csrf_token(_page(c))
    # the first press: nothing sent, the step says what will happen, the reason kept (web/confirming.py)
    r = c.post(f"/tasks/{TID}/reject", data={"csrf_token": token, "reason": "Ngoài chuyên khoa."})
    body = r.get_data(as_text=True)
    assert r.status_code == 200 and fake.ops == []
    form = re.search(r'<form method="post" action="/tasks/[^"]+/reject".*?</form>', body, re.S).group(0)
    assert "Ngoài chuyên khoa.</textarea>" in form and 'name="confirm" value="reject"' in form
    assert "Ca hội chẩn sẽ bị từ chối" in _text(form)
    # the step pressed without its tick: said on the tick, nothing sent
    r = c.post(f"/tasks/{TID}/reject", data={"csrf_token": token, "reason": "Ngoài chuyên khoa.",
                                             "confirming": "reject"})
    assert r.status_code == 400 and fake.ops == [] and "Hãy đánh dấu vào ô để xác nhận" in r.get_data(as_text=True)
    r = c.post(f"/tasks/{TID}/reject", data={"csrf_token": token, "reason": "Ngoài chuyên khoa.",
                                             "confirm": "reject"}, follow_redirects=True)
    assert fake.ops == ["reject"] and r.request.path == "/worklist"
    assert "Đã từ chối ca hội chẩn; cơ sở gửi sẽ thấy lý do của bạn." in _text(r.get_data(as_text=True))


def test_the_minutes_name_the_booked_visit_but_not_a_cancelled_one(app, fake):
    """The ``appointment`` of $complete is the visit the minutes are of: the booked one; a visit the doctor
    cancelled is not named (teleconsult then judges the consult's visits itself)."""
    c = portal_signed_in(app, "doctor")
    assert _sign(c, "I10").status_code == 302
    fake.change("a-1", "cancelled", "Bệnh nhân chuyển viện")
    assert _sign(c, "I10").status_code == 302
    named = [[p["valueReference"]["reference"] for p in sent["parameter"] if p["name"] == "appointment"]
             for sent in fake.completed]
    assert named == [["Appointment/a-1"], []]


# ------------------------------------------------------------------ 10. the visit ends with the consult

CLOSING = {"cancelled": "Phòng khám đã hủy yêu cầu hội chẩn (the clinic cancelled the consult): Bệnh nhân đã khỏi",
           "rejected": "Bác sĩ tuyến trên đã từ chối hội chẩn (the hub declined the consult): Ngoài chuyên khoa",
           "completed": "Hội chẩn đã kết thúc trước giờ hẹn (the consult was completed before this visit)"}
# what each page says of it: the kind of closure in the page's language, the person's own reason as written,
# the sentence ended (teleconsult's bilingual sentence is not shown as such)
CLOSING_SAID = {"cancelled": {"vi": "Lịch hẹn đã hủy: phòng khám đã hủy yêu cầu hội chẩn: Bệnh nhân đã khỏi. ",
                              "en": "Visit cancelled: the clinic cancelled the consult: Bệnh nhân đã khỏi. "},
                "rejected": {"vi": "Lịch hẹn đã hủy: bác sĩ tuyến trên đã từ chối hội chẩn: Ngoài chuyên khoa. ",
                             "en": "Visit cancelled: the specialist declined the consult: Ngoài chuyên khoa. "},
                "completed": {"vi": "Lịch hẹn đã hủy: hội chẩn đã kết thúc trước giờ hẹn. ",
                              "en": "Visit cancelled: the consult was completed before this visit. "}}


@pytest.mark.parametrize("status", sorted(CLOSING))
def test_a_closed_consults_cancelled_visit_shows_cancelled_with_its_reason_on_both_pages(app, fake, status):
    """teleconsult now cancels the consult's visit when the consult is cancelled, rejected, or completed
    before the visit's time: both pages say "Lịch hẹn đã hủy: <why>." in their language, then when it was
    booked, with no join link and nothing to move or cancel."""
    from sen_portal.web import EXT_JOIN

    link = "https://video.example.vn/room/a-1?role=doctor"
    fake.appts["a-1"]["participant"][1]["extension"] = [{"url": EXT_JOIN, "valueUrl": link}]
    fake.status = status
    fake.change("a-1", "cancelled", CLOSING[status])
    start = datetime.fromisoformat(fake.appts["a-1"]["start"]).astimezone(TZ)
    for lang in ("vi", "en"):
        for user, path in (("doctor", f"/tasks/{TID}"), ("clinic", f"/consults/{TID}")):
            page = portal_signed_in(app, user, lang=lang).get(path).get_data(as_text=True)
            said = " ".join(_text(re.search(r'data-testid="visit-closed">(.*?)</p>', page, re.S).group(1)).split())
            assert said.startswith(CLOSING_SAID[status][lang]), (user, lang, said)
            assert "(the " not in said and "Phòng khám đã hủy" not in said, (user, lang, said)
            assert f"{start:%d/%m/%Y %H:%M}" in said, (user, said)
            if lang == "vi":
                assert "đã được trả lại" in said, (user, said)
                for gone in (link, "Vào phòng hội chẩn video", 'data-testid="visit-move"',
                             'data-testid="visit-cancel"', 'data-testid="visit-ended"', "/slots", "/complete",
                             "Đã đặt lịch"):
                    assert gone not in page, (user, gone)


def test_a_closed_consults_visit_that_took_place_shows_done(app, fake):
    fake.status = "completed"
    fake.change("a-1", "fulfilled")
    for user, path in (("doctor", f"/tasks/{TID}"), ("clinic", f"/consults/{TID}")):
        page = portal_signed_in(app, user).get(path).get_data(as_text=True)
        shown = _text(re.search(r'data-testid="visit-time">(.*?)</p>', page, re.S).group(1))
        assert shown.strip().endswith("· Đã xong"), (user, shown)
        assert 'data-testid="visit-closed"' not in page and "Lịch hẹn đã hủy" not in page


def test_the_start_button_says_it_starts_the_work_not_the_video_visit(app, fake):
    """``$start`` is the doctor beginning work on the consult (it may be answered in writing), days before
    the booked visit too; the video visit is joined by its link, which stays."""
    from sen_portal.web import EXT_JOIN

    link = "https://video.example.vn/room/a-1?role=doctor"
    fake.appts["a-1"]["participant"][1]["extension"] = [{"url": EXT_JOIN, "valueUrl": link}]
    fake.status = "accepted"
    page = _page(portal_signed_in(app, "doctor"))
    button = _text(re.search(r'data-testid="start-consult">(.*?)</button>', page, re.S).group(1)).strip()
    assert button == "Bắt đầu xử lý ca" and "Bắt đầu khám" not in page
    assert "không mở cuộc gọi video" in _text(page) and f'href="{link}"' in page
    page = _page(portal_signed_in(app, "doctor", lang="en"))
    assert "Start working on the consult" in _text(page)
    fake.status = "in-progress"
    status = re.search(r'data-testid="task-status">([^<]*)<', _page(portal_signed_in(app, "doctor"))).group(1)
    assert status == "Đang xử lý"


def test_the_minutes_say_at_the_sign_button_that_signing_before_the_booked_time_ends_the_visit(app, fake):
    """Said as a warning alert in the minutes, right after booking it read as if the booking had failed
    ("lịch hẹn video sẽ bị hủy"): it is a plain note on signing, at the sign button, described by it."""
    c = portal_signed_in(app, "doctor")
    start = datetime.fromisoformat(fake.appts["a-1"]["start"]).astimezone(TZ)  # tomorrow
    page = _page(c)
    note = re.search(r'<p class="hint" id="visit-ahead" data-testid="visit-ahead">(.*?)</p>\s*'
                     r'<button class="primary" aria-describedby="visit-ahead">Ký biên bản và hoàn thành</button>',
                     page, re.S)
    assert _text(note.group(1)).strip() == (
        f"Ký biên bản là kết thúc ca hội chẩn. Nếu ký trước buổi hội chẩn video lúc {start:%d/%m/%Y %H:%M}, "
        "buổi đó cũng kết thúc theo (giờ đó được trả lại): muốn họp video trước, hãy ký sau buổi đó.")
    assert "sẽ bị hủy" not in _text(page) and 'class="alert warn" data-testid="visit-ahead"' not in page
    english = _text(_page(portal_signed_in(app, "doctor", lang="en")))
    assert "Signing ends the consult. Signed before the video visit of" in english
    fake.appts["a-1"].update(start=_iso(datetime.now(TZ) - timedelta(minutes=5)))  # the visit has begun
    assert 'data-testid="visit-ahead"' not in _page(c)
    fake.change("a-1", "cancelled", "Bác sĩ bận")  # no booked visit: nothing to warn of
    fake.appts["a-1"].update(start=_iso(datetime.now(TZ) + timedelta(days=1)))
    assert 'data-testid="visit-ahead"' not in _page(c)


# ------------------------------------------------------------------ each step's banner says only what it did


def test_the_reject_step_does_not_say_a_question_was_sent(app, fake):
    """The reject's confirmation was passed to the page as ``asked``, the name of the "question sent" banner:
    its step showed "Đã gửi câu hỏi; cơ sở yêu cầu thấy câu hỏi..." though nothing was sent."""
    fake.status, fake.owner = "requested", "Organization/bvdk-dong-thap"
    c = portal_signed_in(app, "doctor")
    token = csrf_token(_page(c))
    for extra, code in (({}, 200), ({"confirming": "reject"}, 400)):  # the first press; the step unticked
        r = c.post(f"/tasks/{TID}/reject", data={"csrf_token": token, "reason": "Ngoài chuyên khoa.", **extra})
        body = r.get_data(as_text=True)
        assert r.status_code == code and fake.ops == []
        assert 'data-testid="asked"' not in body and "Đã gửi câu hỏi" not in _text(body)
        assert 'data-testid="confirm-step"' in body and 'class="alert ok"' not in body
        reject = re.search(r'<details( open)?><summary>Từ chối</summary>', body)
        assert reject and reject.group(1)  # the reject panel is open on its step
        assert '<details open><summary>Chuyển cho bác sĩ khác</summary>' not in body


def test_a_question_sent_opens_no_other_panel(app, fake):
    """"Question sent" (the step "asked") opened the Reject panel of a consult still to triage."""
    fake.status, fake.owner = "requested", "Organization/bvdk-dong-thap"
    c = portal_signed_in(app, "doctor")
    flash_step(c, f"/tasks/{TID}", "asked")
    page = c.get(f"/tasks/{TID}").get_data(as_text=True)
    assert 'data-testid="asked"' in page
    assert "<details><summary>Từ chối</summary>" in page and 'data-testid="confirm-step"' not in page


def test_after_booking_the_page_says_the_booking_first_and_signing_plainly(app, fake):
    """Right after booking, a warning alert said the visit "sẽ bị hủy" if the minutes were signed first: it
    read as if the booking had failed. The page's one alert is the booking, with its time; what signing
    before the visit does is a plain note at the sign button."""
    start = datetime.fromisoformat(fake.appts["a-1"]["start"]).astimezone(TZ)
    c = portal_signed_in(app, "doctor")
    flash_step(c, f"/tasks/{TID}", "booked")
    page = c.get(f"/tasks/{TID}").get_data(as_text=True)
    alerts = re.findall(r'<(?:div|p|section) class="alert ([a-z]+)"[^>]*>(.*?)</(?:div|p|section)>', page, re.S)
    assert [(kind, _text(said).strip()) for kind, said in alerts] == [
        ("ok", f"Đã đặt lịch hội chẩn video lúc {start:%d/%m/%Y %H:%M}.")]
    minutes = page[page.index('action="/tasks/t-1/complete"'):]
    assert 'data-testid="visit-ahead"' in minutes[:minutes.index("</form>")]
    english = portal_signed_in(app, "doctor", "en")
    flash_step(english, f"/tasks/{TID}", "booked")
    assert f"The video visit is booked for {start:%d/%m/%Y %H:%M}." in _text(english.get(f"/tasks/{TID}").get_data(
        as_text=True))


def test_a_confirmation_is_said_once_not_again_on_reload_nor_by_the_old_flag(app, fake):
    """After booking, a reload (Back, a link shared) said "booked" again: the confirmation was a flag in the
    address (``?booked=1``). It is flashed now: the page after the step says it, the same page again does
    not, the old address with the flag does not, and another consult's page does not take it."""
    c = portal_signed_in(app, "doctor")
    flash_step(c, "/tasks/another-consult", "booked")  # a step whose redirect was never followed
    assert 'data-testid="booked"' not in c.get(f"/tasks/{TID}").get_data(as_text=True)
    flash_step(c, f"/tasks/{TID}", "booked")
    partial = c.get(f"/tasks/{TID}", headers={"HX-Request": "true"}).get_data(as_text=True)  # a poll
    assert 'data-testid="booked"' not in partial
    first = c.get(f"/tasks/{TID}").get_data(as_text=True)
    assert re.search(r'<div class="alert ok" role="status" data-testid="booked">Đã đặt lịch', first)
    for again in (f"/tasks/{TID}", f"/tasks/{TID}?booked=1"):
        page = c.get(again).get_data(as_text=True)
        assert 'data-testid="booked"' not in page and "Đã đặt lịch hội chẩn video" not in page, again


def test_cancelling_the_visit_is_confirmed_first_with_the_shared_step(app, fake):
    """The visit's cancel was done at the first press, unlike the other permanent steps."""
    start = datetime.fromisoformat(fake.appts["a-1"]["start"]).astimezone(TZ)
    c = portal_signed_in(app, "doctor")
    sent = {"csrf_token": csrf_token(_page(c)), "appointment": "a-1", "visit-reason": "Bác sĩ bận họp"}
    r = c.post(f"/tasks/{TID}/visit/cancel", data=sent)  # the first press: the step, nothing sent
    body = r.get_data(as_text=True)
    assert r.status_code == 200 and fake.appts["a-1"]["status"] == "booked"
    assert not [p for _, p, _ in fake.calls if p.endswith("$cancel")]
    box = body[body.index('data-testid="visit-cancel" open'):]
    box = box[:box.index("</details>")]
    assert "Bác sĩ bận họp</textarea>" in box  # the reason kept
    assert 'name="confirm" value="visit-cancel"' in box and 'name="confirming" value="visit-cancel"' in box
    assert f"Lịch hội chẩn video lúc {start:%d/%m/%Y %H:%M} sẽ bị hủy" in _text(box)
    assert 'href="/tasks/t-1#visit" data-testid="confirm-back"' in box and 'class="alert ok"' not in body
    r = c.post(f"/tasks/{TID}/visit/cancel", data={**sent, "confirming": "visit-cancel"})  # unticked
    assert r.status_code == 400 and fake.appts["a-1"]["status"] == "booked"
    assert 'id="visit-cancel-confirm-error"' in r.get_data(as_text=True)
    r = c.post(f"/tasks/{TID}/visit/cancel", data={**sent, "confirming": "visit-cancel", "confirm": "visit-cancel"})
    assert r.status_code == 302 and r.headers["Location"].endswith(f"/tasks/{TID}")
    assert fake.appts["a-1"]["status"] == "cancelled"
    assert fake.appts["a-1"]["cancelationReason"] == {"text": "Bác sĩ bận họp"}


# ------------------------------------------------------------------ overdue, as the worklist says it

SWEPT = {"coding": [{"system": "https://sen.vn/fhir/CodeSystem/consult-business-status", "code": "sla-breached"}],
         "text": "Quá hạn xử lý"}


def _due(page: str) -> str:
    m = re.search(r"<dt>(?:Hạn trả lời|Answer due)</dt><dd[^>]*>(.*?)</dd>", page, re.S)
    assert m, page
    return _text(m.group(1)).strip()


def test_a_consult_past_its_deadline_says_overdue_beside_it_as_the_worklist_does(app, fake):
    """Review 6, finding 3: a stat consult the sweep had found late read "06/12/2026 01:39 Quá hạn" on the
    worklist and "Quá hạn xử lý" on the clinic's page, but only "Hạn trả lời 06/12/2026 01:39" on the
    doctor's page, before and after accepting. Both pages say it by one rule: teleconsult's breach flag
    on a worklist entry; the Task alone: swept ("sla-breached") or still open past its due time."""
    fake.due = datetime.now(TZ).replace(second=0, microsecond=0) - timedelta(minutes=20)
    fake.status, fake.owner, fake.business, fake.breached = "requested", "Organization/bvdk-dong-thap", SWEPT, True
    c = portal_signed_in(app, "doctor")
    assert "Quá hạn" in _text(c.get("/worklist").get_data(as_text=True))
    assert _due(_page(c)) == f"{fake.due:%d/%m/%Y %H:%M} Quá hạn"
    fake.status, fake.owner = "accepted", "Practitioner/bs-nguyen-van-an"  # accepted: still late
    assert _due(_page(c)) == f"{fake.due:%d/%m/%Y %H:%M} Quá hạn"
    english = portal_signed_in(app, "doctor", lang="en")
    assert _due(_page(english)) == f"{fake.due:%d/%m/%Y %H:%M} Overdue"
    fake.business = None  # past due, the sweep not run yet: late all the same (teleconsult's worklist rule)
    assert _due(_page(c)) == f"{fake.due:%d/%m/%Y %H:%M} Quá hạn"


@pytest.mark.parametrize("status,ahead", [("accepted", 30), ("completed", -20), ("cancelled", -20)])
def test_a_consult_not_late_or_closed_unswept_says_no_overdue(app, fake, status, ahead):
    """Not yet due, or closed before any sweep found it late: the due time alone (as on the worklist)."""
    fake.due = datetime.now(TZ).replace(second=0, microsecond=0) + timedelta(minutes=ahead)
    fake.status = status
    assert _due(_page(portal_signed_in(app, "doctor"))) == f"{fake.due:%d/%m/%Y %H:%M}"


@pytest.mark.parametrize("lang", ["vi", "en"])
def test_the_doctors_page_names_the_booked_visits_weekday(app, fake, lang):
    """The clinic's page says "Thứ Hai 07/12/2026 07:30" (ff13041); the doctor's said the date alone, so the two
    read the same visit differently. Now both name the weekday, in the page's language, Vietnam's time."""
    from babel.dates import format_date

    client = portal_signed_in(app, "doctor")
    if lang == "en":
        page = _page(client)
        client.post("/language", data={"lang": "en", "csrf_token": csrf_token(page)})
    page = _page(client)
    start = datetime.fromisoformat(fake.appts["a-1"]["start"]).astimezone(TZ)
    shown = _text(re.search(r'data-testid="visit-time">(.*?)</p>', page, re.S).group(1))
    weekday = format_date(start.date(), "EEEE", locale=lang)
    assert weekday in {"vi": ("Thứ Hai", "Thứ Ba", "Thứ Tư", "Thứ Năm", "Thứ Sáu", "Thứ Bảy", "Chủ Nhật"),
                       "en": ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")}[lang]
    assert shown.startswith(f"{weekday} {start:%d/%m/%Y %H:%M} – "), shown
