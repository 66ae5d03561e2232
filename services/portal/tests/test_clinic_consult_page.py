"""The clinic nurse's consult page and list: the page's 20 s refresh brings the hub's question and the
answer box (never replacing a box she may be typing in), the list marks consults waiting for her
answer, the page lists the files sent (the request's and the answers'), the answer takes files, and a
consult that ended without a result (rejected, cancelled) offers a new request for the same patient.
Flask's test client; teleconsult and the EHR are stubbed at the portal's ``fhir_get``/``fhir_post``."""

from __future__ import annotations

import base64
import io
import re
from pathlib import Path
from typing import Any

import pytest
from sen_portal.web import icd10

from tests.support import csrf_token, portal_app

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
        self.posted: list[tuple[str, dict[str, Any]]] = []

        def bundle(resources: list[dict[str, Any]]) -> dict[str, Any]:
            return {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": r} for r in resources]}

        def fhir_get(service: str, path: str, params: dict[str, str] | None = None, **_kw: Any) -> dict[str, Any]:
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
            if (service, path) == ("ehr", "/fhir/Patient"):
                return bundle([{"resourceType": "Patient", "id": "p1", "gender": "male", "birthDate": "1970-05-20",
                                "name": [{"family": "Lê", "given": ["Văn", "Cường"]}]}])
            return bundle([])

        def fhir_post(service: str, path: str, body: dict[str, Any], **_kw: Any) -> dict[str, Any]:
            self.posted.append((path, body))
            if path == "/fhir/DocumentReference":
                return {**body, "id": f"d{len(self.posted)}"}
            return {"resourceType": "Task", **self.task}

        for module in (doctor, clinic, patient_module):
            monkeypatch.setattr(module, "fhir_get", fhir_get)
        monkeypatch.setattr(clinic, "fhir_post", fhir_post)
        monkeypatch.setattr(clinic, "_reasons_kept", {})
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


def test_the_clinics_page_lists_the_files_sent(client, monkeypatch):
    """The request's files (the ServiceRequest's supportingInfo) on the clinic's page as on the doctor's,
    each opened from /documents; an answer's files in the thread beside it."""
    backends = Backends(monkeypatch)
    sign_in(client)
    page = client.get("/consults/t1").get_data(as_text=True)
    assert re.search(r'<dt>Tệp đính kèm</dt><dd data-testid="attachments">—</dd>', page)

    backends.sr["supportingInfo"] = [{"reference": "DocumentReference/d-ecg", "display": "dien-tim.pdf"},
                                     {"reference": "DocumentReference/d-xray"}]
    backends.comms[:] = [QUESTION, {"resourceType": "Communication", "id": "a1", "status": "completed",
                                    "sent": "2026-12-04T10:30:00+07:00",
                                    "inResponseTo": [{"reference": "Communication/q1"}],
                                    "payload": [{"contentString": "Đã gửi điện tim."},
                                                {"contentReference": {"reference": "DocumentReference/d-ecg2"}}]}]
    for user in ("clinic", "doctor"):
        sign_in(client, user)
        page = client.get("/consults/t1" if user == "clinic" else "/tasks/t1").get_data(as_text=True)
        files = re.search(r'<dd data-testid="attachments">(.*?)</dd>', page, re.S).group(1)
        assert '<a href="/documents/d-ecg" target="_blank" rel="noopener"' in files and "dien-tim.pdf" in files
        assert '<a href="/documents/d-xray"' in files and "Tệp 2" in files
        thread = re.search(r'<li data-testid="thread-answer">(.*?)</li>', page, re.S).group(1)
        assert "Đã gửi điện tim." in thread and '<a href="/documents/d-ecg2"' in thread and "Tệp 1" in thread


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
    assert "dien-tim.exe: chỉ đính kèm được tệp PDF, JPEG và PNG." in bad.get_data(as_text=True)
    assert not backends.posted

    r = client.post("/consults/t1/answer", content_type="multipart/form-data", data={
        "answer": "Điện tim kèm theo.", "csrf_token": token,
        "files": [(io.BytesIO(PDF), "dien-tim.pdf", "application/pdf")]})
    assert r.status_code == 302 and r.headers["Location"].endswith("/consults/t1")
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
