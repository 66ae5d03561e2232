"""The clinic nurse's consult page and list: the page's 20 s refresh brings the hub's question and the
answer box (never replacing a box she may be typing in), the list marks consults waiting for her
answer, the page lists the files sent (the request's and the answers'), the answer takes files, and a
consult that ended without a result (rejected, cancelled) offers a new request for the same patient.
Flask's test client; teleconsult and the EHR are stubbed at the portal's ``fhir_get``/``fhir_post``."""

from __future__ import annotations

import base64
import io
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sen_portal.web import icd10

from tests.support import csrf_token, flashed_steps, portal_app

QUESTION = {"resourceType": "Communication", "id": "q1", "status": "completed", "sent": "2026-12-04T10:00:00+07:00",
            "payload": [{"contentString": "Xin gửi thêm điện tim."}]}
PDF = b"%PDF-1.4\n% dien tim\n"


@pytest.fixture()
def client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    with portal_app(tmp_path, monkeypatch).test_client() as c:
        yield c


def sign_in(client, user: str = "clinic") -> None:
    page = client.get("/login").get_data(as_text=True)
    client.post("/login", data={"username": user, "password": f"sen-{user}", "csrf_token": csrf_token(page)})


class Backends:
    """One consult ``t1`` of patient ``p1`` (its Task, ServiceRequest, thread and visit as the test sets
    them) answered to the clinic's pages; what the portal posts is kept in ``posted``."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        from sen_portal.web import clinic, directory, doctor
        from sen_portal.web import patients as patient_module

        self.task: dict[str, Any] = {
            "resourceType": "Task", "id": "t1", "status": "accepted", "priority": "urgent",
            "authoredOn": "2026-12-04T09:00:00+07:00", "for": {"reference": "Patient/p1"},
            "basedOn": [{"reference": "ServiceRequest/sr1"}], "focus": {"reference": "ServiceRequest/sr1"},
            "requester": {"reference": "Organization/tyt-my-hiep"},
            "owner": {"reference": "Organization/bvdk-dong-thap"},
            "restriction": {"period": {"end": "2026-12-04T13:00:00+07:00"}}}
        self.sr: dict[str, Any] = {
            "resourceType": "ServiceRequest", "id": "sr1", "status": "active", "intent": "order",
            "priority": "urgent", "subject": {"reference": "Patient/p1"},
            "reasonCode": [{"coding": [{"system": icd10.SYSTEM, "code": "I10",
                                        "display": "Tăng huyết áp vô căn (nguyên phát)"}]}],
            "note": [{"text": "Xin ý kiến tuyến trên."}]}
        self.comms: list[dict[str, Any]] = []
        self.appointments: list[dict[str, Any]] = []
        self.documents: list[dict[str, Any]] = []  # the EHR's DocumentReferences (their files' names)
        self.document_searches: list[dict[str, str]] = []  # the query of each search of them
        self.posted: list[tuple[str, dict[str, Any]]] = []
        self.headers: list[dict[str, str]] = []  # the headers of each post (``posted``'s order)
        self.files: dict[str, str] = {}  # the DocumentReferences created: identifier -> id
        # what the patient's open consults search answers (the Tasks and their ServiceRequests): those the
        # test puts there, then each one $submit made
        self.patient_open: list[dict[str, Any]] = []
        self.patient_searches: list[dict[str, str]] = []

        def bundle(resources: list[dict[str, Any]]) -> dict[str, Any]:
            return {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": r} for r in resources]}

        def fhir_get(service: str, path: str, params: dict[str, str] | None = None, **_kw: Any) -> dict[str, Any]:
            if (service, path) == ("teleconsult", "/fhir/Task") and "patient" in (params or {}):
                self.patient_searches.append(dict(params or {}))
                return bundle(self.patient_open)
            if (service, path) == ("teleconsult", "/fhir/Task"):
                return bundle([self.task, self.sr])
            if (service, path) == ("teleconsult", "/fhir/Task/$worklist"):
                return bundle([self.task])
            if (service, path) == ("teleconsult", "/fhir/ServiceRequest"):
                return bundle([self.sr])
            if (service, path) == ("teleconsult", "/fhir/Communication"):
                return bundle(self.comms)
            if (service, path) == ("teleconsult", "/fhir/Appointment"):
                return bundle(self.appointments)
            if (service, path) == ("ehr", "/fhir/DocumentReference"):
                self.document_searches.append(dict(params or {}))
                return bundle([d for d in self.documents if d["id"] in (params or {}).get("_id", "").split(",")])
            if (service, path) == ("ehr", "/fhir/Patient"):
                return bundle([{"resourceType": "Patient", "id": "p1", "gender": "male", "birthDate": "1970-05-20",
                                "name": [{"family": "Lê", "given": ["Văn", "Cường"]}]}])
            return bundle([])

        def fhir_post(service: str, path: str, body: dict[str, Any], **kw: Any) -> dict[str, Any]:
            self.posted.append((path, body))
            self.headers.append(kw.get("headers") or {})
            if path == "/fhir/DocumentReference":  # If-None-Exist: the one with this identifier, if any
                ident = str((body.get("identifier") or [{}])[0].get("value") or len(self.posted))
                return {**body, "id": self.files.setdefault(ident, f"d{len(self.posted)}")}
            if path == "/fhir/ServiceRequest/$submit":
                made = [{**body, "id": "sr1"}, {**self.task, "status": "requested"}]
                self.patient_open.extend(r for r in made if r not in self.patient_open)
                return bundle([{**body, "id": "sr1"}, self.task])
            return {"resourceType": "Task", **self.task}

        for module in (doctor, clinic, patient_module):
            monkeypatch.setattr(module, "fhir_get", fhir_get)
        monkeypatch.setattr(clinic, "fhir_post", fhir_post)
        monkeypatch.setattr(directory, "names", lambda rtype: {
            "Organization": {"bvdk-dong-thap": "Bệnh viện Đa khoa Đồng Tháp", "tyt-my-hiep": "Trạm Y tế xã Mỹ Hiệp"},
            "Practitioner": {}}[rtype])

    def on_hold(self) -> None:
        """The hub asked the clinic a question."""
        self.task.update(status="on-hold", businessStatus={"text": "Chờ bổ sung thông tin"})
        self.comms[:] = [QUESTION]


def _by_id(page: str, eid: str) -> str:
    """The element with id ``eid`` (a div or section: its opening tag to its matching close)."""
    m = re.search(rf'<(div|section)[^>]*\bid="{eid}"', page)
    assert m, f"no #{eid} on the page"
    tag, depth, pos = m.group(1), 0, m.start()
    for t in re.finditer(rf"<(/?){tag}\b", page[m.start():]):
        depth += -1 if t.group(1) else 1
        if depth == 0:
            return page[pos: m.start() + t.end()]
    raise AssertionError(f"#{eid} is not closed")


def _poll_oob(page: str) -> str:
    m = re.search(r'id="consult-status"[^>]*hx-select-oob="([^"]*)"', page)
    assert m, "the status card brings nothing else"
    return m.group(1)


def test_the_refresh_brings_the_hubs_question_and_the_answer_box_once(client, monkeypatch):
    """The status card polls the page every 20 s; it swaps the thread and, while no answer box is
    shown, the answer box's place from the answer (hx-select-oob): a question asked while the page is
    open appears with the box. Once the box is there the card's next polls leave it alone, so what the
    nurse types is kept."""
    backends = Backends(monkeypatch)
    sign_in(client)
    page = client.get("/consults/t1").get_data(as_text=True)
    assert _poll_oob(page) == "#consult-thread,#consult-answer"
    assert 'hx-get="/consults/t1"' in page and 'hx-trigger="every 20s"' in page
    assert "Xin gửi thêm điện tim" not in _by_id(page, "consult-thread")
    assert "<form" not in _by_id(page, "consult-answer")

    backends.on_hold()  # the hub asks; the next poll's answer (the same page) holds both
    polled = client.get("/consults/t1", headers={"HX-Request": "true"}).get_data(as_text=True)
    assert "Xin gửi thêm điện tim." in _by_id(polled, "consult-thread")
    box = _by_id(polled, "consult-answer")
    assert "Trả lời câu hỏi của tuyến trên" in box and 'action="/consults/t1/answer"' in box
    assert 'enctype="multipart/form-data"' in box and 'type="file"' in box
    assert _poll_oob(polled) == "#consult-thread"  # the box stays as it is from now on

    # an answer refused by the form (empty) renders the page at the answer's URL: the poll still asks the page's
    token = csrf_token(polled)
    refused = client.post("/consults/t1/answer", data={"answer": "", "csrf_token": token})
    assert refused.status_code == 422
    assert 'hx-get="/consults/t1"' in refused.get_data(as_text=True)
    assert not backends.posted


def test_a_doctor_on_the_clinics_page_gets_no_answer_box(client, monkeypatch):
    Backends(monkeypatch).on_hold()
    sign_in(client, "doctor")
    page = client.get("/consults/t1").get_data(as_text=True)
    assert "Xin gửi thêm điện tim." in _by_id(page, "consult-thread")
    assert "<form" not in _by_id(page, "consult-answer")


def test_the_list_marks_the_consults_waiting_for_the_clinics_answer(client, monkeypatch):
    backends = Backends(monkeypatch)
    sign_in(client)
    page = client.get("/consults").get_data(as_text=True)
    assert "Cần trả lời" not in page and 'data-testid="needs-answer"' not in page
    backends.on_hold()
    page = client.get("/consults").get_data(as_text=True)
    assert re.search(r'<span class="badge [^"]*" data-testid="needs-answer">Cần trả lời</span>', page)
    token = csrf_token(page)
    client.post("/language", data={"lang": "en", "next": "/consults", "csrf_token": token})
    assert "Needs your answer" in client.get("/consults").get_data(as_text=True)


def test_the_list_says_overdue_for_a_consult_past_its_answer_deadline(client, monkeypatch):
    """A consult still open after its answer deadline is "Quá hạn" on the clinic's list as on its page and the
    hub's worklist (review 7: the list said nothing); one answered in time, or ended, is not."""
    backends = Backends(monkeypatch)  # accepted, due 2026-12-04 13:00: long past
    sign_in(client)
    page = client.get("/consults").get_data(as_text=True)
    assert re.search(r'<span class="badge breach" data-testid="consult-overdue">Quá hạn</span>', page), page
    backends.task["restriction"] = {"period": {"end": (datetime.now(UTC) + timedelta(hours=2)).isoformat()}}
    assert 'data-testid="consult-overdue"' not in client.get("/consults").get_data(as_text=True)
    backends.task.update(status="completed", restriction={"period": {"end": "2026-12-04T13:00:00+07:00"}})
    assert 'data-testid="consult-overdue"' not in client.get("/consults").get_data(as_text=True)
    backends.task.update(status="in-progress", businessStatus={"coding": [{"code": "sla-breached"}]})
    page = client.get("/consults").get_data(as_text=True)
    token = csrf_token(page)
    client.post("/language", data={"lang": "en", "next": "/consults", "csrf_token": token})
    assert 'data-testid="consult-overdue">Overdue</span>' in client.get("/consults").get_data(as_text=True)


def test_the_clinics_page_says_overdue_as_its_list_the_hubs_page_and_the_worklist_do(client, monkeypatch):
    """The clinic's consult page showed the answer's due time with no "Quá hạn", while its list (df3bce7), the
    hub's consult page and the worklist said it: now each says it by the one rule (doctor.overdue), in the same
    words, vi and en: open and past its due time, or marked sla-breached by teleconsult (ended late too); not
    before its due time, nor ended in time."""
    backends = Backends(monkeypatch)
    badge = re.compile(r'<span class="badge breach"[^>]*>(Quá hạn|Overdue)</span>')

    def said(user: str) -> dict[str, list[str]]:
        sign_in(client, user)
        urls = ("/consults", "/consults/t1") if user == "clinic" else ("/worklist", "/tasks/t1")
        return {u: badge.findall(client.get(u).get_data(as_text=True)) for u in urls}

    later = (datetime.now(UTC) + timedelta(hours=2)).isoformat()
    cases = [({}, ["Quá hạn"]),  # accepted, due 2026-12-04 13:00: long past
             ({"restriction": {"period": {"end": later}}}, []),
             ({"status": "completed", "restriction": {"period": {"end": "2026-12-04T13:00:00+07:00"}}}, []),
             ({"status": "completed", "businessStatus": {"coding": [{"code": "sla-breached"}]}}, ["Quá hạn"]),
             ({"status": "in-progress", "businessStatus": {"coding": [{"code": "sla-breached"}]},
               "restriction": {"period": {"end": later}}}, ["Quá hạn"])]
    for change, expected in cases:
        backends.task.update(change)
        for user in ("clinic", "doctor"):
            got = said(user)
            assert all(v == expected for v in got.values()), (change, user, got)
    token = csrf_token(client.get("/consults/t1").get_data(as_text=True))
    client.post("/language", data={"lang": "en", "next": "/consults", "csrf_token": token})
    assert badge.findall(client.get("/consults/t1").get_data(as_text=True)) == ["Overdue"]


def test_the_clinics_page_lists_the_files_sent(client, monkeypatch):
    """The request's files (the ServiceRequest's supportingInfo) on the clinic's page as on the doctor's,
    each opened from /documents; an answer's files in the thread beside it."""
    backends = Backends(monkeypatch)
    sign_in(client)
    page = client.get("/consults/t1").get_data(as_text=True)
    assert re.search(r'<dt>Tệp đính kèm</dt><dd data-testid="attachments">—</dd>', page)

    backends.sr["supportingInfo"] = [{"reference": "DocumentReference/d-ecg", "display": "dien-tim.pdf"},
                                     {"reference": "DocumentReference/d-xray"}]
    # an answer stored before teleconsult kept each file's name holds a bare reference: its name is the
    # EHR's (the upload's name)
    backends.documents[:] = [{"resourceType": "DocumentReference", "id": "d-ecg2", "content": [
        {"attachment": {"contentType": "application/pdf", "title": "dien-tim-lan-2.pdf", "data": "JVBERi0="}}]}]
    backends.comms[:] = [QUESTION, {"resourceType": "Communication", "id": "a1", "status": "completed",
                                    "sent": "2026-12-04T10:30:00+07:00",
                                    "inResponseTo": [{"reference": "Communication/q1"}],
                                    "payload": [{"contentString": "Đã gửi điện tim."},
                                                {"contentReference": {"reference": "DocumentReference/d-ecg2"}}]}]
    for user in ("clinic", "doctor"):
        sign_in(client, user)
        page = client.get("/consults/t1" if user == "clinic" else "/tasks/t1").get_data(as_text=True)
        files = re.search(r'<dd data-testid="attachments">(.*?)</dd>', page, re.S).group(1)
        # on the clinic's page each links back to the consult (a file that cannot be shown offers the way back)
        back = "?consult=t1" if user == "clinic" else ""
        assert f'<a href="/documents/d-ecg{back}" target="_blank" rel="noopener"' in files
        assert "dien-tim.pdf" in files
        assert f'<a href="/documents/d-xray{back}"' in files and "Tệp 2" in files
        thread = re.search(r'<li data-testid="thread-answer">(.*?)</li>', page, re.S).group(1)
        assert "Đã gửi điện tim." in thread and '<a href="/documents/d-ecg2?consult=t1"' in thread
        assert "dien-tim-lan-2.pdf" in thread and "Tệp 1" not in thread
    # one search for both pages (the names kept per process), asking for the names, not the files
    assert [q["_elements"] for q in backends.document_searches] == ["content.attachment.title,subject"]


def test_the_threads_files_are_named_by_their_communications_without_asking_the_ehr(client, monkeypatch):
    """Teleconsult keeps the name the portal sent beside each file (``contentReference.display``): the
    thread shows it, and the EHR is not searched for the names."""
    backends = Backends(monkeypatch)
    backends.comms[:] = [QUESTION, {"resourceType": "Communication", "id": "a1", "status": "completed",
                                    "sent": "2026-12-04T10:30:00+07:00",
                                    "inResponseTo": [{"reference": "Communication/q1"}],
                                    "payload": [{"contentString": "Đã gửi điện tim."}, *(
                                        {"contentReference": {"reference": f"DocumentReference/{did}",
                                                              "display": name}}
                                        for did, name in (("d-ecg2", "điện-tim-lần-2.pdf"), ("d-xq", "x-quang.png")))]}]
    for user in ("clinic", "doctor"):
        sign_in(client, user)
        page = client.get("/consults/t1" if user == "clinic" else "/tasks/t1").get_data(as_text=True)
        thread = re.search(r'<li data-testid="thread-answer">(.*?)</li>', page, re.S).group(1)
        assert "điện-tim-lần-2.pdf" in thread and "x-quang.png" in thread and "Tệp 1" not in thread
        assert "/documents/d-xq" in thread
    assert backends.document_searches == []


def test_the_answer_sends_its_files_as_attachments(client, monkeypatch):
    """Each file becomes a DocumentReference of the consult's patient, then teleconsult's $provide-info
    gets the answer with one ``attachment`` a file; a file of another type is refused on the field and
    nothing is sent."""
    backends = Backends(monkeypatch)
    backends.on_hold()
    sign_in(client)
    token = csrf_token(client.get("/consults/t1").get_data(as_text=True))

    bad = client.post("/consults/t1/answer", content_type="multipart/form-data", data={
        "answer": "Điện tim kèm theo.", "csrf_token": token,
        "files": [(io.BytesIO(b"MZ..."), "dien-tim.exe", "application/octet-stream")]})
    assert bad.status_code == 422
    assert "dien-tim.exe: chỉ đính kèm được tệp PDF, JPEG, PNG và WebP." in bad.get_data(as_text=True)
    assert not backends.posted

    r = client.post("/consults/t1/answer", content_type="multipart/form-data", data={
        "answer": "Điện tim kèm theo.", "csrf_token": token,
        "files": [(io.BytesIO(PDF), "dien-tim.pdf", "application/pdf")]})
    assert r.status_code == 302 and r.headers["Location"].endswith("/consults/t1")
    assert flashed_steps(client) == [("/consults/t1", "answered=1")]
    (doc_path, doc), (op_path, params) = backends.posted
    assert doc_path == "/fhir/DocumentReference" and doc["subject"] == {"reference": "Patient/p1"}
    assert base64.b64decode(doc["content"][0]["attachment"]["data"]) == PDF
    assert op_path == "/fhir/Task/t1/$provide-info"
    assert params["parameter"] == [
        {"name": "answer", "valueString": "Điện tim kèm theo."},
        {"name": "attachment", "valueReference": {"reference": "DocumentReference/d1", "display": "dien-tim.pdf"}}]

    backends.posted.clear()  # without a file: the answer alone, as before
    client.post("/consults/t1/answer", data={"answer": "Không có gì thêm.", "csrf_token": token})
    assert backends.posted == [("/fhir/Task/t1/$provide-info", {"resourceType": "Parameters", "parameter": [
        {"name": "answer", "valueString": "Không có gì thêm."}]})]


@pytest.mark.parametrize("status", ["rejected", "cancelled"])
def test_a_consult_ended_without_a_result_offers_a_new_request_for_the_patient(client, monkeypatch, status):
    backends = Backends(monkeypatch)
    sign_in(client)
    page = client.get("/consults/t1").get_data(as_text=True)
    assert "Hạn trả lời" in page and 'data-testid="consult-again"' not in page

    backends.task.update(status=status, statusReason={"text": "Ngoài chuyên môn"})
    page = client.get("/consults/t1").get_data(as_text=True)
    assert "Hạn trả lời" not in page
    again = re.search(r'<a class="button primary" href="([^"]+)" data-testid="consult-again">([^<]+)</a>', page)
    assert again and again.groups() == ("/patients/p1/consult", "Gửi yêu cầu hội chẩn mới")
    assert "Hủy yêu cầu" not in page  # nothing left to cancel
    sign_in(client, "doctor")
    assert 'data-testid="consult-again"' not in client.get("/consults/t1").get_data(as_text=True)


def test_a_cancelled_visit_tells_the_nurse_what_happens_next(client, monkeypatch):
    """Teleconsult lets the clinic write to the hub only by answering a question ($provide-info, the
    consult on hold): the page no longer tells her to "tell the hub". The doctor cancelled the visit (or
    marked the no-show) on the consult and books the next time from there; it shows on this page."""
    backends = Backends(monkeypatch)
    backends.appointments[:] = [{"resourceType": "Appointment", "id": "a1", "status": "cancelled",
                                 "start": "2026-12-05T09:00:00+07:00", "end": "2026-12-05T09:30:00+07:00",
                                 "cancelationReason": {"text": "Bác sĩ bận mổ cấp cứu"}}]
    sign_in(client)
    ended = re.search(r'<p class="alert warn" data-testid="visit-ended">(.*?)</p>',
                      client.get("/consults/t1").get_data(as_text=True), re.S).group(1)
    assert "Bác sĩ bận mổ cấp cứu" in ended and "hẹn giờ mới" in ended and "báo tuyến trên" not in ended
    assert "giờ mới sẽ hiện ở đây" in ended


PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 32
REASON = "I10 — Tăng huyết áp vô căn (nguyên phát)"


def _form_key(page: str) -> str:
    m = re.search(r'name="key" type="hidden" value="([0-9a-f]{32})"', page) or \
        re.search(r'type="hidden" name="key" value="([0-9a-f]{32})"', page) or \
        re.search(r'id="key" name="key" type="hidden" value="([0-9a-f]{32})"', page)
    assert m, "no key on the form"
    return m.group(1)


def _consult_data(page: str, **more: Any) -> dict[str, Any]:
    return {"csrf_token": csrf_token(page), "key": _form_key(page), "patient": "p1", "priority": "routine",
            "reason": REASON, "question": "Huyết áp 180/110 dù đã dùng hai thuốc, xin ý kiến.", **more}


def test_the_consult_form_sent_twice_submits_once_with_one_key(client, monkeypatch):
    """The form's key is made when it is first shown; the same form posted twice (a double click on
    "Gửi yêu cầu", a retry on a slow link) sends the same file (one identifier, created only if none has
    it) and the same ``$submit`` with the same Idempotency-Key and body, so teleconsult replays its first
    answer and both posts land on the same consult. The question changed is another request."""
    backends = Backends(monkeypatch)
    sign_in(client)
    page = client.get("/patients/p1/consult").get_data(as_text=True)
    assert 'hx-disabled-elt="find button[type=\'submit\']"' in page or "hx-disabled-elt=" in page
    key = _form_key(page)
    assert _form_key(client.get("/patients/p1/consult").get_data(as_text=True)) != key  # a new form, a new key

    def send(**more: Any) -> Any:
        return client.post("/patients/p1/consult", content_type="multipart/form-data", data=_consult_data(
            page, files=[(io.BytesIO(PNG), "dien-tim.png", "image/png")], **more))

    first, second = send(), send()
    assert first.status_code == second.status_code == 302
    assert first.headers["Location"] == second.headers["Location"] == "/consults/t1"
    (doc1, sub1, doc2, sub2) = backends.posted
    assert [doc1[0], sub1[0]] == ["/fhir/DocumentReference", "/fhir/ServiceRequest/$submit"]
    assert doc1[1]["identifier"] == doc2[1]["identifier"]
    assert doc1[1]["identifier"][0]["system"] == "https://sen.vn/sid/portal-upload"
    assert backends.headers[0]["If-None-Exist"] == backends.headers[2]["If-None-Exist"] == \
        f"identifier=https://sen.vn/sid/portal-upload|{doc1[1]['identifier'][0]['value']}"
    submit_key = backends.headers[1]["Idempotency-Key"]
    assert submit_key.startswith(f"portal-consult-{key}-") and backends.headers[3]["Idempotency-Key"] == submit_key
    assert "authoredOn" not in sub1[1]  # teleconsult's, when it takes it: the two bodies are the same
    assert sub1[1]["note"] == [{"text": "Huyết áp 180/110 dù đã dùng hai thuốc, xin ý kiến."}]
    assert sub1[1]["supportingInfo"][0]["display"] == "dien-tim.png"

    backends.posted.clear()
    backends.headers.clear()
    send(question="Huyết áp 190/120 sáng nay, xin ý kiến tuyến trên.")  # corrected after a refusal: new
    assert backends.headers[1]["Idempotency-Key"] != submit_key
    assert backends.headers[1]["Idempotency-Key"].startswith(f"portal-consult-{key}-")


def test_a_chosen_reason_is_not_flagged_when_only_the_question_is_wrong(client, monkeypatch):
    backends = Backends(monkeypatch)
    sign_in(client)
    page = client.get("/patients/p1/consult").get_data(as_text=True)
    r = client.post("/patients/p1/consult", data=_consult_data(page, question="ngắn"))
    out = r.get_data(as_text=True)
    assert r.status_code == 422 and not backends.posted
    assert 'id="question-error"' in out and 'id="reason-error"' not in out
    assert "Chọn lý do trong danh mục ICD-10." not in out
    assert f'value="{_form_key(page)}"' in out  # the same form: its key is kept

    typed = client.post("/patients/p1/consult", data=_consult_data(page, reason="I21.99 tự gõ"))  # typed, not chosen
    assert 'id="reason-error"' in typed.get_data(as_text=True)


def test_the_forms_say_their_file_limits_and_a_page_shown_again_asks_for_the_files_again(client, monkeypatch):
    """The per-file limit and the whole request's (the portal's SEN_MAX_BODY_BYTES, 2 MB: 1.9 MB of files)
    are said on both forms and given to app.js, which checks them before sending. A form shown again
    after an error cannot keep the files chosen: it says to choose them again."""
    backends = Backends(monkeypatch)
    backends.on_hold()
    sign_in(client)
    page = client.get("/patients/p1/consult").get_data(as_text=True)
    assert "Tối đa 1,5 MB mỗi tệp và 1,9 MB cho tất cả các tệp gộp lại." in page
    assert 'data-max-total="1936000"' in page
    # the per-file limit the server checks, and its words for a file refused ("{name}": app.js puts the file's)
    assert 'data-max-file="1500000"' in page and 'data-files-refused="files-refused"' in page
    refused = re.search(r'<p[^>]*id="files-refused"[^>]*>', page).group(0)
    assert " hidden" in refused
    assert 'data-too-large-file="{name} lớn hơn 1,5 MB."' in refused
    assert 'data-wrong-type="{name}: chỉ đính kèm được tệp PDF, JPEG, PNG và WebP."' in refused
    assert 'data-testid="files-again"' not in page
    again = client.post("/patients/p1/consult", content_type="multipart/form-data", data=_consult_data(
        page, question="ngắn", files=[(io.BytesIO(PNG), "x-quang.png", "image/png")])).get_data(as_text=True)
    assert "Các tệp bạn đã chọn chưa được gửi: hãy chọn lại tệp đính kèm." in again
    no_files = client.post("/patients/p1/consult", data=_consult_data(page, question="ngắn")).get_data(as_text=True)
    assert 'data-testid="files-again"' not in no_files

    detail = client.get("/consults/t1").get_data(as_text=True)
    box = _by_id(detail, "consult-answer")
    assert "Tối đa 1,5 MB mỗi tệp" in box and 'data-max-total="1936000"' in box and 'name="key"' in box
    # the answer's files are checked one by one before sending too, in the same words
    assert 'data-max-file="1500000"' in box and 'data-files-refused="answer-files-refused"' in box
    answer_refused = re.search(r'<p[^>]*id="answer-files-refused"[^>]*>', box).group(0)
    assert " hidden" in answer_refused and 'data-too-large-file="{name} lớn hơn 1,5 MB."' in answer_refused
    refused = client.post("/consults/t1/answer", content_type="multipart/form-data", data={
        "answer": "", "csrf_token": csrf_token(detail),
        "files": [(io.BytesIO(PDF), "dien-tim.pdf", "application/pdf")]})
    assert refused.status_code == 422
    assert "hãy chọn lại tệp đính kèm" in _by_id(refused.get_data(as_text=True), "consult-answer")


@pytest.mark.parametrize("lang", ["vi", "en"])
def test_a_file_box_has_one_label_and_one_name_saying_what_to_attach_and_how(client, monkeypatch, lang):
    """The file box had two labels (the field's name and the button, 'Chọn tệp'): axe-core could not tell which
    names it (form-field-multiple-labels, 'needs review'). One label now, the button; the box's name is the
    field's name and the button's words, read in that order (aria-labelledby), on both forms."""
    backends = Backends(monkeypatch)
    backends.on_hold()
    sign_in(client)
    if lang == "en":
        page = client.get("/login").get_data(as_text=True)
        client.post("/language", data={"lang": "en", "next": "/", "csrf_token": csrf_token(page)})
    what = {"vi": "Hình ảnh và tài liệu (PDF, JPEG, PNG, WebP; mỗi tệp tối đa 1,5 MB)",
            "en": "Images and documents (PDF, JPEG, PNG, WebP; at most 1.5 MB each)"}[lang]
    how = {"vi": "Chọn tệp", "en": "Choose files"}[lang]
    for page in (client.get("/patients/p1/consult").get_data(as_text=True),
                 _by_id(client.get("/consults/t1").get_data(as_text=True), "consult-answer")):
        box = re.search(r'<input[^>]*type="file"[^>]*>', page).group(0)
        box_id = re.search(r'\bid="([^"]+)"', box).group(1)
        labels = re.findall(rf'<label[^>]*\bfor="{box_id}"[^>]*>(.*?)</label>', page, re.S)
        assert labels == [how], labels  # one label: the button
        wrapping = rf"<label[^>]*>(?:(?!</label>).)*<input[^>]*\bid=\"{box_id}\""
        assert not re.search(wrapping, page, re.S)  # and none wraps it
        named_by = re.search(r'aria-labelledby="([^"]+)"', box).group(1).split()

        def text(eid: str) -> str:
            return re.sub(r"<[^>]+>", "", re.search(rf'<(\w+)[^>]*\bid="{eid}"[^>]*>(.*?)</\1>', page, re.S).group(2))

        assert " ".join(text(i).strip() for i in named_by) == f"{what} {how}"


def sent_with_files(client, form: str, files: list[tuple[Any, str, str]]) -> tuple[str, Any]:
    """``files`` sent with the consult form of ``p1`` (``form`` "consult") or with the answer to the hub's
    question on ``t1`` ("answer"): the form's page as shown, and the answer to its post."""
    if form == "consult":
        page = client.get("/patients/p1/consult").get_data(as_text=True)
        return page, client.post("/patients/p1/consult", content_type="multipart/form-data",
                                 data=_consult_data(page, files=files))
    page = client.get("/consults/t1").get_data(as_text=True)
    return page, client.post("/consults/t1/answer", content_type="multipart/form-data",
                             data={"answer": "Phim kèm theo.", "csrf_token": csrf_token(page), "files": files})


@pytest.mark.parametrize("form", ["consult", "answer"])
def test_a_file_whose_bytes_are_not_its_type_is_refused_by_name(client, monkeypatch, form):
    """A text file named .png (declared image/png by the browser) could never be opened: refused at upload,
    named, nothing sent."""
    backends = Backends(monkeypatch)
    backends.on_hold()
    sign_in(client)
    _page, r = sent_with_files(client, form, [(io.BytesIO(b"ghi chu: huyet ap cao\n"), "x-quang.png", "image/png")])
    assert r.status_code == 422 and not backends.posted
    assert "x-quang.png không thực sự là tệp PDF, JPEG, PNG hay WebP" in r.get_data(as_text=True)


def test_a_stored_file_that_cannot_be_shown_links_back_to_its_consult(client, monkeypatch):
    from sen_portal.web import clinic

    Backends(monkeypatch)
    monkeypatch.setattr(clinic, "fhir_get", lambda service, path, *a, **kw: {
        "resourceType": "DocumentReference", "id": "d9", "content": [
            {"attachment": {"contentType": "image/png", "data": base64.b64encode(b"not a png").decode()}}]})
    sign_in(client)
    r = client.get("/documents/d9?consult=t1")
    assert r.status_code == 415
    assert re.search(r'<a href="/consults/t1" data-testid="back">Quay lại ca hội chẩn</a>', r.get_data(as_text=True))
    assert 'data-testid="back"' not in client.get("/documents/d9?consult=../x").get_data(as_text=True)
    sign_in(client, "doctor")
    assert '<a href="/tasks/t1" data-testid="back">' in client.get("/documents/d9?consult=t1").get_data(as_text=True)


def test_the_answer_and_the_cancellation_are_confirmed(client, monkeypatch):
    backends = Backends(monkeypatch)
    backends.on_hold()
    sign_in(client)
    token = csrf_token(client.get("/consults/t1").get_data(as_text=True))
    r = client.post("/consults/t1/answer", data={"answer": "Đã đo lại: 170/100.", "csrf_token": token},
                    follow_redirects=True)
    assert '<div class="alert ok" role="status" data-testid="answered">Đã gửi câu trả lời của bạn lên tuyến trên.' \
        in r.get_data(as_text=True)
    assert backends.posted[-1][0] == "/fhir/Task/t1/$provide-info"
    page = client.get("/consults/t1").get_data(as_text=True)
    # behind its disclosure, apart from the message and answer boxes, closed until asked for
    box = re.search(r'<details class="card" id="cancel-box" data-testid="cancel-box">\s*'
                    r'<summary>Hủy hội chẩn…</summary>.*?</details>', page, re.S).group(0)
    cancel = re.search(r'action="/consults/t1/cancel".*?</form>', box, re.S).group(0)
    key = re.search(r'name="key" type="hidden" value="([0-9a-f]{32})"', cancel).group(1)
    posted = len(backends.posted)
    # the first press: nothing sent, the step shown with the reason and the form's key kept
    r = client.post("/consults/t1/cancel", data={"reason": "Người bệnh đã chuyển viện.", "key": key,
                                                 "csrf_token": token})
    step = r.get_data(as_text=True)
    assert r.status_code == 200 and len(backends.posted) == posted
    box = re.search(r'<details class="card" id="cancel-box" data-testid="cancel-box" open>.*?</details>', step,
                    re.S).group(0)
    assert "Người bệnh đã chuyển viện.</textarea>" in box and f'value="{key}"' in box
    assert "Yêu cầu hội chẩn sẽ bị hủy" in box and 'name="confirm" value="consult-cancel"' in box
    for _ in range(2):  # a double click: the same $cancel key, so teleconsult replays its first answer
        r = client.post("/consults/t1/cancel", data={"reason": "Người bệnh đã chuyển viện.", "key": key,
                                                      "confirm": "consult-cancel", "csrf_token": token},
                        follow_redirects=True)
        assert 'data-testid="cancelled">Đã hủy yêu cầu hội chẩn.' in r.get_data(as_text=True)
    assert [p for p, _ in backends.posted[-2:]] == ["/fhir/Task/t1/$cancel"] * 2
    keys = [h["Idempotency-Key"] for h in backends.headers[-2:]]
    assert keys[0] == keys[1] and keys[0].startswith(f"portal-cancel-{key}-")


def _searched_tasks(monkeypatch, tasks: list[dict[str, Any]]) -> list[dict[str, str]]:
    """teleconsult's Task search as the clinic's list uses it: ``status`` (a list), ``_sort=-authored-on``,
    ``_count`` and the ``next`` link's ``_cursor`` (here the offset, shaped as teleconsult's: body.mac);
    returns the queries asked."""
    from sen_portal.web import clinic

    asked: list[dict[str, str]] = []
    real_get = clinic.fhir_get

    def fhir_get(service, path, params=None, **kw):
        if (service, path) != ("teleconsult", "/fhir/Task") or "_id" in (params or {}):
            return real_get(service, path, params, **kw)
        asked.append(dict(params))
        assert params["_sort"] == "-authored-on" and params["requester"] == "Organization/tyt-my-hiep"
        states = params["status"].split(",")
        found = sorted((t for t in tasks if t["status"] in states), key=lambda t: (t["authoredOn"], t["id"]),
                       reverse=True)
        start, count = int(params.get("_cursor", "0.m").split(".")[0]), int(params["_count"])
        links = [{"relation": "next", "url": f"http://tc/fhir/Task?_count={count}&_cursor={start + count}.m"}] \
            if start + count < len(found) else []
        return {"resourceType": "Bundle", "link": links,
                "entry": [{"resource": t} for t in found[start:start + count]]}

    monkeypatch.setattr(clinic, "fhir_get", fhir_get)
    return asked


def _walk(client) -> tuple[list[str], int]:
    """Every page of the clinic's list by its "next" links: the consults in the order shown, and the pages."""
    shown, url, pages = [], "/consults", 0
    while url:
        r = client.get(url)
        assert r.status_code == 200
        page = r.get_data(as_text=True)
        shown += list(dict.fromkeys(re.findall(r'href="/consults/([a-z0-9-]+)"', page)))
        pages += 1
        m = re.search(r'<a rel="next" data-testid="consults-next" href="([^"]+)"', page)
        url = m.group(1).replace("&amp;", "&") if m else None
        assert pages < 10
    return shown, pages


def test_the_clinics_list_shows_open_consults_newest_first_then_those_that_ended(client, monkeypatch):
    """Teleconsult's worklist is ordered for the hub (by priority); the nurse's list puts the open consults
    first, the newest request on top, then the finished ones, newest first, and says so."""
    Backends(monkeypatch)
    tasks = [{"resourceType": "Task", "id": tid, "status": status, "priority": prio, "for": {"reference": "Patient/p1"},
              "authoredOn": at} for tid, status, prio, at in (
        ("stat-old", "requested", "stat", "2026-12-01T08:00:00+07:00"),
        ("done-new", "completed", "routine", "2026-12-04T11:00:00+07:00"),
        ("routine-new", "requested", "routine", "2026-12-04T10:00:00+07:00"),
        ("urgent-mid", "on-hold", "urgent", "2026-12-03T08:00:00+07:00"),
        ("cancelled-old", "cancelled", "urgent", "2026-11-30T08:00:00+07:00"))]
    _searched_tasks(monkeypatch, tasks)
    sign_in(client)
    page = client.get("/consults").get_data(as_text=True)
    order = re.findall(r'href="/consults/([a-z-]+)"', page)
    assert list(dict.fromkeys(order)) == ["routine-new", "urgent-mid", "stat-old", "done-new", "cancelled-old"]
    assert "Các ca đang mở ở trên, yêu cầu mới nhất đứng đầu" in page
    assert 'data-testid="consults-next"' not in page  # one page holds them all


def _many(open_: int, ended: int) -> list[dict[str, Any]]:
    out = []
    for i in range(open_ + ended):
        day, minute = divmod(i * 37 % (open_ + ended), 60)  # authored in an order other than the ids'
        out.append({"resourceType": "Task", "id": f"t-{i:03d}", "status": (
            ("requested", "accepted", "on-hold", "in-progress")[i % 4] if i < open_ else
            ("completed", "rejected", "cancelled")[i % 3]), "priority": "routine",
            "for": {"reference": "Patient/p1"}, "authoredOn": f"2026-11-{1 + day:02d}T08:{minute:02d}:00+07:00"})
    return out


@pytest.mark.parametrize("open_, ended, pages", [(95, 37, 3), (50, 7, 2), (50, 0, 1), (3, 120, 3)])
def test_the_clinics_list_holds_every_consult_in_order_page_by_page_past_fifty(client, monkeypatch, open_, ended,
                                                                                pages):
    """The list sorted only the 50 newest consults teleconsult's worklist gave it: a clinic with more saw a
    wrong order and missed some. Now teleconsult sorts and pages (``_sort``, ``_count``, its cursor) and the
    page links the next: every consult once, open ones first, each part newest first."""
    Backends(monkeypatch)
    tasks = _many(open_, ended)
    asked = _searched_tasks(monkeypatch, tasks)
    sign_in(client)
    shown, walked = _walk(client)
    def newest(ts):
        return [t["id"] for t in sorted(ts, key=lambda t: (t["authoredOn"], t["id"]), reverse=True)]

    expected = newest(t for t in tasks if t["status"] not in ("completed", "rejected", "cancelled")) + \
        newest(t for t in tasks if t["status"] in ("completed", "rejected", "cancelled"))
    assert shown == expected and len(shown) == open_ + ended
    assert walked == pages
    assert all(int(q["_count"]) <= 50 for q in asked)
    page = client.get("/consults").get_data(as_text=True)
    if pages > 1:
        assert 'data-testid="consults-page">Trang 1' in page


def test_a_bad_page_link_of_the_list_says_so_readably(client, monkeypatch):
    Backends(monkeypatch)
    _searched_tasks(monkeypatch, _many(3, 3))
    sign_in(client)
    r = client.get("/consults?after=x-<script>")
    assert r.status_code == 400
    assert "Trang này của danh sách không còn dùng được" in r.get_data(as_text=True)
    assert "<script>" not in r.get_data(as_text=True)


def test_files_over_the_portals_limit_get_a_readable_page_and_htmx_the_same_413(tmp_path, monkeypatch):
    """Two 1.2 MB JPEGs each meet the per-file limit but not the whole request's (SEN_MAX_BODY_BYTES, 2 MB),
    which the shared RequestMiddleware enforces before any view. Through the portal's whole ASGI app: on
    a page (the consult form, the answer form) the body is read and dropped, then the page answers 413
    in the user's language with the limits (not connexion's English JSON); the request never reaches
    the view (nothing is sent to a back-end). The JSON API keeps its problem answer."""
    from sen_portal.app import create_app

    portal_app(tmp_path, monkeypatch)  # the page tests' environment
    asgi = create_app()
    backends = Backends(monkeypatch)
    backends.on_hold()
    big = b"\xff\xd8\xff" + b"\x00" * 1_200_000
    with asgi.test_client() as c:
        token = csrf_token(c.get("/login").text)
        assert c.post("/login", data={"username": "clinic", "password": "sen-clinic", "csrf_token": token},
                      follow_redirects=False).status_code in (302, 303)
        page = c.get("/patients/p1/consult").text
        files = [("files", ("scan1.jpg", big, "image/jpeg")), ("files", ("scan2.jpg", big, "image/jpeg"))]
        for path, data in (("/patients/p1/consult", _consult_data(page)),
                           ("/consults/t1/answer", {"answer": "Phim kèm theo.", "csrf_token": token})):
            for htmx in ({}, {"HX-Request": "true"}):
                r = c.post(path, data=data, files=files, headers=htmx)
                assert r.status_code == 413, (path, r.status_code, r.text[:300])
                assert r.headers["content-type"].startswith("text/html")
                assert "Các tệp quá lớn để gửi" in r.text and "Tối đa 1,5 MB mỗi tệp và 1,9 MB" in r.text
                assert "Content Too Large" not in r.text and r.headers.get("X-Correlation-ID")
        assert not backends.posted
        for api_path in ("/api/reports/events", "/admin/indexes"):  # no page: connexion's problem answer
            api = c.post(api_path, content=b"x" * 2_100_000, headers={"Content-Type": "application/json"})
            assert api.status_code == 413 and api.headers["content-type"].startswith("application/problem+json")
        # a client cannot make a page answer 413 by naming the header itself
        assert c.get("/consults/t1", headers={"X-Sen-Body-Too-Large": "1"}).status_code == 200


def test_a_form_too_long_with_no_file_is_said_as_the_forms_text_not_files(tmp_path, monkeypatch):
    """A 300,000-character question and no file chosen (the file box sent empty) is over the portal's limit too:
    its page says the form's text is too large, never 'Các tệp quá lớn' (review 7); an htmx request's 413 goes to
    the page's problem box (no files box to say it in). Through the whole ASGI app and the shared middleware."""
    from sen_portal.app import create_app

    portal_app(tmp_path, monkeypatch)
    asgi = create_app()
    backends = Backends(monkeypatch)
    with asgi.test_client() as c:
        token = csrf_token(c.get("/login").text)
        assert c.post("/login", data={"username": "clinic", "password": "sen-clinic", "csrf_token": token},
                      follow_redirects=False).status_code in (302, 303)
        page = c.get("/patients/p1/consult").text
        data = {**_consult_data(page), "question": "Đau ngực " * 300_000}
        for htmx in ({}, {"HX-Request": "true"}):
            r = c.post("/patients/p1/consult", data=data, files=[("files", ("", b"", "application/octet-stream"))],
                       headers=htmx)
            assert r.status_code == 413 and r.headers["content-type"].startswith("text/html"), r.text[:300]
            assert "Biểu mẫu quá lớn để gửi" in r.text and "rút ngắn" in r.text, r.text
            assert "Các tệp quá lớn" not in r.text and "dung lượng các tệp" not in r.text
            assert bool(r.headers.get("HX-Retarget")) == bool(htmx)
        assert not backends.posted
        r = c.post("/patients/p1/consult", data=data, files=[("files", ("scan.jpg", b"\xff\xd8\xff", "image/jpeg"))])
        assert r.status_code == 413 and "Các tệp quá lớn để gửi" in r.text  # a file sent: the files' limits
