"""The portal's consult lists and consult pages say whose consult it is and from where, against a
real EHR and teleconsult (gunicorn processes on loopback), the real FerretDB and RabbitMQ.

The portal runs in this process (Flask's test client) with its demo users: the clinic of Trạm Y tế
xã Mỹ Hiệp and a doctor of the hub, Bệnh viện Đa khoa Đồng Tháp. The clinic submits three consults
through teleconsult; the EHR decides with each user's own token whose name a page may show. A hub
doctor reads a clinic's patient only through a referral grant (the EHR records it from
``teleconsult.referral.granted``; here the EHR's own handler records it, as its consumer would):
Lê Văn Cường's is granted from the start, Trần Văn Bình's only after the doctor accepts his consult,
Nguyễn Thị Lan's never. Covered: the clinic's list names every patient (ONE EHR Patient search for
the page) with the reason (in the page's language, from its ICD-10 code); the worklist shows the
requesting clinic, the reason and only the names the EHR lets the doctor read (a dash and why for
the others, the page never an error); the consult pages show name, sex and age beside the chart
link, or the link alone with the hint, and who holds the consult: the hub (Tuyến trên / Hub) until a
doctor accepts it, then that doctor (Specialist).
"""

from __future__ import annotations

import base64
import io
import json
import re
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from sen_shared.auth import issue_dev_token

from tests.integration.consult_stack import *  # noqa: F403 - its fixtures, used by name
from tests.integration.consult_stack import BINH, BORN, CLINIC, CUONG, HUB, LAN
from tests.support import csrf_token, portal_signed_in, wait_for

pytestmark = pytest.mark.integration

FJ = "application/fhir+json"
ICD10 = "http://hl7.org/fhir/sid/icd-10"
def _headers(dev_key: Path, role: str, **claims: Any) -> dict[str, str]:
    return {"Authorization": f"Bearer {issue_dev_token(dev_key, role, **claims)}", "Content-Type": FJ, "Accept": FJ}


def _grant(mongo_client: Any, ehr_db: str, patient: str, grantee: str, sr: str) -> None:
    """What the EHR's consumer of ``teleconsult.referral.granted`` records (its own handler)."""
    from sen_ehr.domain.grants import handle_referral_granted

    event = {"id": str(uuid.uuid4()), "data": {"serviceRequest": sr, "patient": f"Patient/{patient}",
                                               "grantee": grantee, "requester": f"Organization/{CLINIC}",
                                               "expires": "2099-12-31T00:00:00+07:00"}}
    assert handle_referral_granted(event, mongo_client[ehr_db])


REASONS = {LAN: ("I21.9", "Nhồi máu cơ tim cấp"), BINH: ("I10", "Tăng huyết áp vô căn (nguyên phát)"),
           CUONG: ("I20.0", "Đau thắt ngực không ổn định")}


def _submit(tc: str, dev_key: Path, pid: str) -> tuple[str, str]:
    """A consult of the demo clinic for ``pid`` (its reason in :data:`REASONS`): (ServiceRequest id, Task id)."""
    clinic = _headers(dev_key, "clinic", facility=CLINIC, practitioner="ys-vo-minh-tam", sub="portal-clinic")
    code, text = REASONS[pid]
    sr = {"resourceType": "ServiceRequest", "status": "active", "intent": "order", "priority": "urgent",
          "subject": {"reference": f"Patient/{pid}"}, "requester": {"reference": f"Organization/{CLINIC}"},
          "reasonCode": [{"coding": [{"system": ICD10, "code": code, "display": text}], "text": text}],
          "note": [{"text": "Xin ý kiến tuyến trên."}], "performer": [{"reference": f"Organization/{HUB}"}]}
    r = httpx.post(f"{tc}/fhir/ServiceRequest/$submit", content=json.dumps(sr), headers=clinic, timeout=30)
    assert r.status_code == 201, r.text
    ids = {e["resource"]["resourceType"]: e["resource"]["id"] for e in r.json()["entry"]}
    return ids["ServiceRequest"], ids["Task"]


@pytest.fixture(scope="module")
def consults(tc, dev_key, mongo_client, ehr_db) -> dict[str, tuple[str, str]]:
    """Three consults of the demo clinic: patient id -> (ServiceRequest id, Task id). The module's tests run in
    any order: a test cancelling or putting one on hold submits a consult of its own, and the lists are read
    for these three rows (other tests add consults of the same clinic)."""
    out = {pid: _submit(tc, dev_key, pid) for pid in REASONS}
    _grant(mongo_client, ehr_db, CUONG, f"Organization/{HUB}", f"ServiceRequest/{out[CUONG][0]}")
    return out


@pytest.fixture()
def http_calls(monkeypatch):
    """Every request the portal sends to a back-end in this test: (method, URL); none answered from the answers
    an earlier test's pages left kept (a user's are kept a few seconds: the clinic's list of the test before
    answered this one's without an EHR search)."""
    from sen_portal.web import backend
    from sen_shared import http

    monkeypatch.setattr(backend, "answers", backend.AnswerCache())
    calls: list[tuple[str, str]] = []
    real = http.request

    def request(method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        calls.append((method, url))
        return real(method, url, *args, **kwargs)

    monkeypatch.setattr(http, "request", request)
    return calls


@pytest.fixture()
def document_searches(monkeypatch):
    """Every DocumentReference search the portal sends in this test: (its query, its answer's body); the portal's
    file names kept per process are forgotten before each test (consult_stack._names_from_this_ehr)."""
    from sen_shared import http

    searches: list[tuple[dict[str, Any], bytes]] = []
    real = http.request

    def request(method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        answer = real(method, url, *args, **kwargs)
        if method == "GET" and url.split("?")[0].endswith("/fhir/DocumentReference"):
            searches.append((dict(kwargs.get("params") or {}), answer.content))
        return answer

    monkeypatch.setattr(http, "request", request)
    return searches


def _patient_searches(calls: list[tuple[str, str]], ehr: str) -> int:
    return sum(1 for m, u in calls if m == "GET" and u.split("?")[0] == f"{ehr}/fhir/Patient")


def _rows(page: str, consults: dict[str, tuple[str, str]] | None = None) -> list[str]:
    """The list's rows as text; with ``consults``, only those linking to one of their Tasks."""
    body = re.split(r"<tbody[^>]*>", page, maxsplit=1)[1].split("</tbody>", 1)[0]
    trs = body.split("</tr>")[:-1]
    if consults is not None:
        links = [re.compile(rf'href="/(consults|tasks)/{tid}"') for _, tid in consults.values()]
        trs = [tr for tr in trs if any(link.search(tr) for link in links)]
    return [re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", tr)).strip() for tr in trs]


def _header(page: str, text: str) -> bool:
    """Whether the list has a column header reading ``text``."""
    return re.search(rf'<th scope="col"[^>]*>{re.escape(text)}</th>', page) is not None


def _age(pid: str) -> int:
    today = datetime.now(ZoneInfo("Asia/Ho_Chi_Minh")).date()
    born = datetime.fromisoformat(BORN[pid]).date()
    return today.year - born.year - ((today.month, today.day) < (born.month, born.day))


def test_the_clinics_list_names_each_patient_with_the_reason_in_one_ehr_search(portal, consults, ehr, http_calls):
    clinic = portal_signed_in(portal, "clinic")
    http_calls.clear()
    r = clinic.get("/consults")
    page = r.get_data(as_text=True)
    assert r.status_code == 200
    assert _header(page, "Người bệnh") and _header(page, "Lý do")
    rows = _rows(page, consults)
    assert len(rows) == 3
    for name, reason in (("Nguyễn Thị Lan", "Nhồi máu cơ tim cấp"), ("Trần Văn Bình", "Tăng huyết áp vô căn"),
                         ("Lê Văn Cường", "Đau thắt ngực không ổn định")):
        assert sum(name in row and reason in row for row in rows) == 1, (name, rows)
    assert _patient_searches(http_calls, ehr) == 1  # one EHR search for the whole page
    for _sr, tid in consults.values():
        assert f'href="/consults/{tid}"' in page


def test_the_worklist_shows_clinic_and_reason_and_a_name_only_where_the_ehr_lets_the_doctor_read_it(
        portal, consults, ehr, tc, http_calls, mongo_client, ehr_db):
    doctor = portal_signed_in(portal, "doctor")
    http_calls.clear()
    r = doctor.get("/worklist")
    page = r.get_data(as_text=True)
    assert r.status_code == 200
    for head in ("Người bệnh", "Cơ sở gửi", "Lý do"):
        assert _header(page, head)
    rows = _rows(page, consults)
    assert len(rows) == 3 and all("Trạm Y tế xã Mỹ Hiệp" in row for row in rows), rows
    assert sum("Lê Văn Cường" in row and "Đau thắt ngực không ổn định" in row for row in rows) == 1
    # not granted: never named (nor their given name alone), the reason and the clinic still shown
    assert "Thị Lan" not in page and "Bình" not in page and "Nguyễn Thị" not in page and "Trần Văn" not in page
    assert sum("Nhồi máu cơ tim cấp" in row and "hồ sơ chưa được chia sẻ với bạn" in row for row in rows) == 1
    assert sum("Tăng huyết áp vô căn" in row and "hồ sơ chưa được chia sẻ với bạn" in row for row in rows) == 1
    assert _patient_searches(http_calls, ehr) == 1  # one EHR search a page

    # the refresh (htmx) is the table alone, named the same way
    part = doctor.get("/worklist", headers={"HX-Request": "true"}).get_data(as_text=True)
    assert part.lstrip().startswith('<div id="worklist">') and "Lê Văn Cường" in part and "Bình" not in part

    # the doctor accepts Bình's consult: teleconsult grants the doctor the record, and once the EHR
    # holds the grant the worklist names him (Lan's stays unnamed)
    sr_binh, tid_binh = consults[BINH]
    token = csrf_token(doctor.get(f"/tasks/{tid_binh}").get_data(as_text=True))
    r = doctor.post(f"/tasks/{tid_binh}/accept", data={"csrf_token": token})
    assert r.status_code in (302, 303), r.get_data(as_text=True)[:500]
    _grant(mongo_client, ehr_db, BINH, "Practitioner/bs-nguyen-van-an", f"ServiceRequest/{sr_binh}")

    def named() -> bool:
        return "Trần Văn Bình" in doctor.get("/worklist").get_data(as_text=True)

    wait_for(named)  # the portal keeps a user's answers a few seconds
    page = doctor.get("/worklist").get_data(as_text=True)
    assert "Thị Lan" not in page and "Nguyễn Thị" not in page


def test_a_list_of_tasks_carrying_their_reason_asks_teleconsult_its_worklist_only(
        portal, consults, tc, http_calls, monkeypatch):
    """Teleconsult puts each consult's reason on its Task at submission (Task.reasonCode), so the
    worklist and the clinic's consults read no ServiceRequest: the worklist's one teleconsult call is the
    ``$worklist``, the clinic's list's its Task searches (the open consults, then those that ended,
    each sorted and paged by teleconsult), even with no reason kept from an earlier page; the
    requesting clinic comes from the Task too."""
    from sen_portal.web import backend, clinic

    reasons = ("Nhồi máu cơ tim cấp", "Tăng huyết áp vô căn", "Đau thắt ngực không ổn định")
    for user, start, searches in (("doctor", "/worklist", ["/fhir/Task/$worklist"]),
                                  ("clinic", "/consults", ["/fhir/Task", "/fhir/Task"])):
        monkeypatch.setattr(clinic, "_reasons_kept", {})  # no reason kept from an earlier page
        monkeypatch.setattr(backend, "answers", backend.AnswerCache())  # nor a page's answers
        client = portal_signed_in(portal, user)
        http_calls.clear()
        r = client.get(start)
        assert r.status_code == 200
        asked = [(m, u.split("?")[0]) for m, u in http_calls if u.startswith(tc)]
        assert asked == [("GET", f"{tc}{path}") for path in searches], asked
        rows = _rows(r.get_data(as_text=True), consults)
        assert len(rows) == 3, rows
        for reason in reasons:
            assert sum(reason in row for row in rows) == 1, (reason, rows)
        if user == "doctor":
            assert all("Trạm Y tế xã Mỹ Hiệp" in row for row in rows), rows


def test_the_consult_pages_show_name_sex_and_age_when_the_ehr_lets_the_user_read_the_patient(
        portal, consults, ehr, http_calls):
    clinic, doctor = portal_signed_in(portal, "clinic"), portal_signed_in(portal, "doctor")
    _sr, tid_lan = consults[LAN]
    page = clinic.get(f"/consults/{tid_lan}").get_data(as_text=True)
    shown = re.search(r'data-testid="consult-patient">(.*?)</dd>', page, re.S).group(1)
    assert "Nguyễn Thị Lan" in shown and "Nữ" in shown and f"{_age(LAN)} tuổi" in shown
    # the chart of the right patient, which links back to this consult (its ?consult=, clinic.consult_back)
    assert f'href="/patients/{LAN}?consult={tid_lan}"' in shown

    _sr, tid_cuong = consults[CUONG]  # granted to the hub: the doctor reads him; a baby, in months
    http_calls.clear()
    page = doctor.get(f"/tasks/{tid_cuong}").get_data(as_text=True)
    shown = re.search(r'data-testid="consult-patient">(.*?)</dd>', page, re.S).group(1)
    assert "Lê Văn Cường" in shown and "Nam" in shown and re.search(r"\d+ tháng", shown)
    assert _patient_searches(http_calls, ehr) == 1

    r = doctor.get(f"/tasks/{tid_lan}")  # never granted to the doctor: the link alone, with the hint
    page = r.get_data(as_text=True)
    assert r.status_code == 200
    shown = re.search(r'data-testid="consult-patient">(.*?)</dd>', page, re.S).group(1)
    assert "hồ sơ chưa được chia sẻ với bạn" in shown and f'href="/patients/{LAN}?consult={tid_lan}"' in shown
    assert "Thị Lan" not in page and "Nguyễn Thị" not in page and "Nữ" not in shown

    # in English
    token = csrf_token(clinic.get("/consults").get_data(as_text=True))
    clinic.post("/language", data={"lang": "en", "next": "/consults", "csrf_token": token})
    page = clinic.get(f"/consults/{tid_lan}").get_data(as_text=True)
    shown = re.search(r'data-testid="consult-patient">(.*?)</dd>', page, re.S).group(1)
    assert "Nguyễn Thị Lan" in shown and "Female" in shown and f"{_age(LAN)} years" in shown
    assert "Open the chart" in shown


def _owner(page: str) -> tuple[str, str]:
    m = re.search(r'<dt>([^<]*)</dt><dd data-testid="task-owner">([^<]*)</dd>', page)
    assert m, "no owner row on the page"
    return m.group(1), m.group(2)


def test_the_consult_pages_name_the_hub_then_the_accepting_doctor_and_the_reason_in_the_pages_language(
        portal, consults, monkeypatch):
    """Teleconsult makes the hub (an Organization) the Task's owner at submission and the doctor (a
    Practitioner) once accepted: the clinic's page says "Tuyến trên / Hub" then, "Bác sĩ chuyên khoa /
    Specialist" after, each by its name from the EHR; the doctor's says who holds it ("Người giữ ca / Held
    by": no doctor yet, then them) and names the requesting clinic. The reason stored at submission is the
    Vietnamese label; the English pages show the ICD-10 subset's English label for its code."""
    clinic, doctor = portal_signed_in(portal, "clinic"), portal_signed_in(portal, "doctor")
    _sr, tid = consults[CUONG]
    hub = ("Tuyến trên", "Bệnh viện Đa khoa Đồng Tháp")
    assert _owner(clinic.get(f"/consults/{tid}").get_data(as_text=True)) == hub
    page = doctor.get(f"/tasks/{tid}").get_data(as_text=True)
    assert _owner(page) == ("Người giữ ca", "Chưa bác sĩ nào nhận")
    assert '<dt>Cơ sở gửi</dt><dd data-testid="consult-requester">Trạm Y tế xã Mỹ Hiệp</dd>' in page
    assert "Đau thắt ngực không ổn định" in page

    r = doctor.post(f"/tasks/{tid}/accept", data={"csrf_token": csrf_token(page)})
    assert r.status_code in (302, 303), r.get_data(as_text=True)[:500]
    assert _owner(doctor.get(f"/tasks/{tid}").get_data(as_text=True)) == ("Người giữ ca", "Nguyễn Văn An (bạn)")

    def taken() -> bool:  # the clinic's answers are kept a few seconds
        return _owner(clinic.get(f"/consults/{tid}").get_data(as_text=True))[0] == "Bác sĩ chuyên khoa"

    wait_for(taken)
    assert _owner(clinic.get(f"/consults/{tid}").get_data(as_text=True)) == ("Bác sĩ chuyên khoa", "Nguyễn Văn An")

    for client, start in ((clinic, "/consults"), (doctor, "/worklist")):
        token = csrf_token(client.get(start).get_data(as_text=True))
        client.post("/language", data={"lang": "en", "next": start, "csrf_token": token})
    page = clinic.get(f"/consults/{tid}").get_data(as_text=True)
    assert _owner(page) == ("Specialist", "Nguyễn Văn An")
    assert "Unstable angina" in page and "Đau thắt ngực" not in page
    rows = _rows(clinic.get("/consults").get_data(as_text=True), consults)
    for reason in ("Acute myocardial infarction", "Essential (primary) hypertension", "Unstable angina"):
        assert sum(reason in row for row in rows) == 1, (reason, rows)
    assert not any("Tăng huyết áp" in row or "Nhồi máu" in row for row in rows), rows
    page = doctor.get(f"/tasks/{tid}").get_data(as_text=True)
    assert _owner(page) == ("Held by", "Nguyễn Văn An (you)") and "Unstable angina" in page
    rows = _rows(doctor.get("/worklist").get_data(as_text=True), consults)
    assert any("Unstable angina" in row for row in rows) and not any("Đau thắt ngực" in row for row in rows), rows


def _element(page: str, eid: str) -> str:
    """The div with id ``eid``, from its opening tag to its matching close."""
    m = re.search(rf'<div[^>]*\bid="{eid}"', page)
    assert m, f"no #{eid} on the page"
    depth = 0
    for t in re.finditer(r"<(/?)div\b", page[m.start():]):
        depth += -1 if t.group(1) else 1
        if depth == 0:
            return page[m.start(): m.start() + t.end()]
    raise AssertionError(f"#{eid} is not closed")


def test_the_hubs_question_reaches_an_open_page_and_the_answer_carries_its_file(portal, tc, dev_key,
                                                                                 document_searches):
    """The doctor asks the clinic for an ECG on Lan's consult (on hold): the clinic's list marks it
    "Cần trả lời", the consult page's refresh (the same page, its thread and answer box taken by
    hx-select-oob) holds the question and the answer box; the nurse answers with a PDF: the EHR keeps
    it as a DocumentReference of the patient, teleconsult's $provide-info puts it in the answer (it
    checks the clinic may read it) and the page lists it in the thread, opened from /documents. Once
    the nurse cancels the consult, its page offers a new request for the same patient, no due time."""
    clinic, doctor = portal_signed_in(portal, "clinic"), portal_signed_in(portal, "doctor")
    _sr, tid = _submit(tc, dev_key, LAN)  # its own: put on hold and cancelled here
    before = clinic.get(f"/consults/{tid}").get_data(as_text=True)
    assert 'hx-select-oob="#consult-thread,#consult-answer"' in before
    assert "<form" not in _element(before, "consult-answer")

    page = doctor.get(f"/tasks/{tid}").get_data(as_text=True)
    r = doctor.post(f"/tasks/{tid}/request-info", data={"question": "Xin gửi thêm điện tim.",
                                                         "csrf_token": csrf_token(page)})
    assert r.status_code in (302, 303), r.get_data(as_text=True)[:500]

    def asked() -> bool:  # the refresh brings it
        return "Xin gửi thêm điện tim." in clinic.get(f"/consults/{tid}", headers={"HX-Request": "true"}).get_data(
            as_text=True)

    wait_for(asked)
    polled = clinic.get(f"/consults/{tid}", headers={"HX-Request": "true"}).get_data(as_text=True)
    assert "Xin gửi thêm điện tim." in _element(polled, "consult-thread")
    assert f'action="/consults/{tid}/answer"' in _element(polled, "consult-answer")
    assert 'hx-select-oob="#consult-thread"' in polled  # the box is not replaced again

    def marked() -> bool:  # the list's worklist is kept a few seconds (the consult page reads fresh)
        rows = _rows(clinic.get("/consults").get_data(as_text=True))
        return [("Cần trả lời" in row) for row in rows].count(True) == 1

    wait_for(marked)
    rows = _rows(clinic.get("/consults").get_data(as_text=True), {LAN: (_sr, tid)})
    assert len(rows) == 1 and "Nguyễn Thị Lan" in rows[0] and "Cần trả lời" in rows[0], rows

    pdf = b"%PDF-1.4\n% dien tim\n%%EOF\n"
    r = clinic.post(f"/consults/{tid}/answer", content_type="multipart/form-data", data={
        "answer": "Đã gửi điện tim.", "csrf_token": csrf_token(polled),
        "files": [(io.BytesIO(pdf), "dien-tim.pdf", "application/pdf")]})
    assert r.status_code in (302, 303), r.get_data(as_text=True)[:800]

    clinic_token = _headers(dev_key, "clinic", facility=CLINIC, practitioner="ys-vo-minh-tam", sub="portal-clinic")
    bundle = httpx.get(f"{tc}/fhir/Communication", params={"based-on": f"ServiceRequest/{_sr}"},
                       headers=clinic_token, timeout=30).json()
    answers = [e["resource"] for e in bundle.get("entry", []) if e["resource"].get("inResponseTo")]
    assert len(answers) == 1
    files = [p["contentReference"] for p in answers[0]["payload"] if "contentReference" in p]
    assert len(files) == 1 and files[0]["reference"].startswith("DocumentReference/")
    assert files[0]["display"] == "dien-tim.pdf"  # teleconsult keeps the name the portal sent
    did = files[0]["reference"].split("/")[1]

    def answered() -> bool:
        return f'href="/documents/{did}?consult={tid}"' in clinic.get(f"/consults/{tid}").get_data(as_text=True)

    wait_for(answered)
    page = clinic.get(f"/consults/{tid}").get_data(as_text=True)
    thread = _element(page, "consult-thread")
    assert "Đã gửi điện tim." in thread and f'href="/documents/{did}?consult={tid}"' in thread
    assert "dien-tim.pdf" in thread and "Tệp 1" not in thread  # named by the Communication itself:
    assert document_searches == []  # no EHR search for the names
    opened = clinic.get(f"/documents/{did}")
    assert opened.status_code == 200 and opened.mimetype == "application/pdf" and opened.data == pdf
    assert "Hạn trả lời" in page and 'data-testid="consult-again"' not in page

    key = re.search(r'id="key" name="key" type="hidden" value="([0-9a-f]{32})"',
                    page[page.index('id="cancel-box"'):]).group(1)
    sent = {"reason": "Người bệnh đã chuyển viện.", "key": key, "csrf_token": csrf_token(page)}
    r = clinic.post(f"/consults/{tid}/cancel", data=sent)  # the first press: the step, nothing cancelled
    assert r.status_code == 200 and 'name="confirm" value="consult-cancel"' in r.get_data(as_text=True)
    assert "Người bệnh đã chuyển viện.</textarea>" in r.get_data(as_text=True)
    assert 'data-testid="consult-again"' not in clinic.get(f"/consults/{tid}").get_data(as_text=True)
    r = clinic.post(f"/consults/{tid}/cancel", data={**sent, "confirm": "consult-cancel"})
    assert r.status_code in (302, 303), r.get_data(as_text=True)[:800]

    def cancelled() -> bool:
        return 'data-testid="consult-again"' in clinic.get(f"/consults/{tid}").get_data(as_text=True)

    wait_for(cancelled)
    page = clinic.get(f"/consults/{tid}").get_data(as_text=True)
    assert f'href="/patients/{LAN}/consult" data-testid="consult-again">Gửi yêu cầu hội chẩn mới</a>' in page
    assert "Hạn trả lời" not in page


def test_a_file_of_a_message_stored_without_its_name_is_named_by_the_ehr_without_its_content(
        portal, consults, ehr, tc, dev_key, document_searches):
    """A Communication stored before teleconsult kept each file's name (a bare reference): the consult
    page names its file by the DocumentReference's title, read from the EHR in one search that asks
    for the names only (``_elements``): the file's base64 content is not sent to the portal."""
    _sr, tid = consults[BINH]
    clinic_token = _headers(dev_key, "clinic", facility=CLINIC, practitioner="ys-vo-minh-tam", sub="portal-clinic")
    content = b"%PDF-1.4\n% sieu am tim\n%%EOF\n"
    doc = {"resourceType": "DocumentReference", "status": "current", "subject": {"reference": f"Patient/{BINH}"},
           "content": [{"attachment": {"contentType": "application/pdf", "title": "siêu-âm-tim.pdf",
                                       "data": base64.b64encode(content).decode()}}]}
    r = httpx.post(f"{ehr}/fhir/DocumentReference", content=json.dumps(doc), headers=clinic_token, timeout=30)
    assert r.status_code == 201, r.text
    did = r.json()["id"]
    r = httpx.post(f"{tc}/fhir/Task/{tid}/$message", headers=clinic_token, timeout=30, content=json.dumps({
        "resourceType": "Parameters", "parameter": [
            {"name": "text", "valueString": "Kết quả siêu âm tim."},
            {"name": "attachment", "valueReference": {"reference": f"DocumentReference/{did}"}}]}))
    assert r.status_code == 201, r.text
    assert r.json()["payload"][1] == {"contentReference": {"reference": f"DocumentReference/{did}"}}

    clinic = portal_signed_in(portal, "clinic")

    def shown() -> bool:  # the clinic's answers are kept a few seconds
        return f'href="/documents/{did}?consult={tid}"' in clinic.get(f"/consults/{tid}").get_data(as_text=True)

    wait_for(shown)
    thread = _element(clinic.get(f"/consults/{tid}").get_data(as_text=True), "consult-thread")
    assert "siêu-âm-tim.pdf" in thread and "Tệp 1" not in thread
    assert document_searches, "the name is the EHR's"
    for query, answer in document_searches:
        assert query["_elements"] == "content.attachment.title,subject"
        assert base64.b64encode(content) not in answer and b'"data"' not in answer
        assert "siêu-âm-tim.pdf" in answer.decode()


def test_the_consult_form_sent_twice_at_once_submits_one_consult(portal, ehr, tc, dev_key, consults):
    """A double click on "Gửi yêu cầu" (two posts of one form at once, then a third after, as a retry):
    the file is stored once (its DocumentReference's identifier from the form's key, created only if
    none has it: the EHR's conditional create), teleconsult gets one $submit key and replays its first
    answer, and every post lands on the same consult; the clinic's list holds it once. (The patient has an
    open consult for the same reason: the form asks first, storing nothing, and each post carries the tick.)"""
    clinic = portal_signed_in(portal, "clinic")
    page = clinic.get(f"/patients/{BINH}/consult").get_data(as_text=True)
    key = re.search(r'name="key" type="hidden" value="([0-9a-f]{32})"', page).group(1)
    question = f"Huyết áp 180/110 dù đã dùng hai thuốc ({key[:6]}), xin ý kiến."
    png = b"\x89PNG\r\n\x1a\n" + key.encode() * 4
    clinic_token = _headers(dev_key, "clinic", facility=CLINIC, practitioner="ys-vo-minh-tam", sub="portal-clinic")

    def asked() -> list[dict[str, Any]]:
        bundle = httpx.get(f"{tc}/fhir/ServiceRequest", params={"subject": f"Patient/{BINH}", "_count": "100"},
                           headers=clinic_token, timeout=30).json()
        return [e["resource"] for e in bundle.get("entry", [])
                if (e["resource"].get("note") or [{}])[0].get("text") == question]

    gate = threading.Barrier(2)
    again = ""  # the patient has an open consult for I10 (``consults``): sent once a tick confirms another

    def send(together: bool) -> Any:
        if together:
            gate.wait(timeout=30)
        return clinic.post(f"/patients/{BINH}/consult", content_type="multipart/form-data", data={
            "csrf_token": csrf_token(page), "key": key, "patient": BINH, "priority": "routine",
            "reason": "I10 — Tăng huyết áp vô căn (nguyên phát)", "question": question, "again": again,
            "files": [(io.BytesIO(png), "dien-tim.png", "image/png")]})

    asked_first = send(False)
    assert asked_first.status_code == 200 and not asked(), asked_first.get_data(as_text=True)[:300]
    again = re.search(r'name="again" value="([^"]+)"', asked_first.get_data(as_text=True)).group(1)

    with ThreadPoolExecutor(max_workers=2) as pool:
        answers = list(pool.map(send, [True, True]))
    answers.append(send(False))
    assert [r.status_code for r in answers] == [302] * 3, [
        re.findall(r'role="alert">([^<]*)<', r.get_data(as_text=True)) or r.get_data(as_text=True)[:300]
        for r in answers]
    locations = {r.headers["Location"] for r in answers}
    assert len(locations) == 1, locations
    tid = locations.pop().split("/consults/")[1].split("?")[0]

    srs = asked()
    assert len(srs) == 1, srs
    files = srs[0]["supportingInfo"]
    assert [f["display"] for f in files] == ["dien-tim.png"]
    did = files[0]["reference"].split("/")[1]
    admin = _headers(dev_key, "admin")
    docs = httpx.get(f"{ehr}/fhir/DocumentReference", params={"subject": f"Patient/{BINH}", "_count": "100"},
                     headers=admin, timeout=30).json()
    mine = [e["resource"] for e in docs.get("entry", []) if any(
        i.get("system") == "https://sen.vn/sid/portal-upload" and key in i.get("value", "")
        for i in e["resource"].get("identifier") or [])]
    assert [d["id"] for d in mine] == [did]
    assert clinic.get("/consults").get_data(as_text=True).count(f'href="/consults/{tid}"') == 1  # one row
    page = clinic.get(f"/consults/{tid}").get_data(as_text=True)
    assert "dien-tim.png" in page
