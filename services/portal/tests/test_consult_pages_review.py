"""The consult pages as a reviewer walked them (a clinic nurse at 360 px, a hub doctor at 1280 px): a second
open consult for the same patient and reason is said, with a link, and sent only when ticked; a form sent
after the session ended says so, links to signing in and shows what was typed; reassigning needs a doctor
chosen and confirmed by name; a closed consult's message box says a message is only kept; the cancel and
reject reasons are named as such; the full minutes' findings under the minutes form's own heading; the
portal's icon. Flask's test client; teleconsult and the EHR are the fakes of ``test_clinic_consult_page``
(at ``fhir_get``/``fhir_post``) and ``test_doctor_consult_page`` (at the HTTP transport)."""

from __future__ import annotations

import base64
import json
import re
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from sen_portal.web import icd10
from sen_shared import http

from services.portal.tests.test_clinic_consult_page import Backends, _consult_data, sign_in
from services.portal.tests.test_doctor_consult_page import OUT, Consult
from services.portal.tests.test_visit_changes import TID, TZ, _page, _text
from tests.support import csrf_token, flash_step, portal_app, portal_signed_in


@pytest.fixture()
def client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    with portal_app(tmp_path, monkeypatch).test_client() as c:
        yield c


def _open_consult(tid: str, sr: str, code: str, authored: str, status: str = "requested") -> list[dict[str, Any]]:
    """An open consult of patient p1 as teleconsult's Task search with ``_include`` answers it."""
    return [{"resourceType": "Task", "id": tid, "status": status, "authoredOn": authored,
             "for": {"reference": "Patient/p1"}, "basedOn": [{"reference": f"ServiceRequest/{sr}"}]},
            {"resourceType": "ServiceRequest", "id": sr, "status": "active", "subject": {"reference": "Patient/p1"},
             "reasonCode": [{"coding": [{"system": icd10.SYSTEM, "code": code}]}]}]


def _submits(backends: Backends) -> list[dict[str, Any]]:
    return [body for path, body in backends.posted if path == "/fhir/ServiceRequest/$submit"]


# ------------------------------------------------------------------ 1. a second open consult, same reason

def test_a_second_open_consult_for_the_same_reason_is_said_and_sent_only_when_ticked(client, monkeypatch):
    """Two open 'Tăng huyết áp vô căn' consults 2 minutes apart: the form now says the patient has one open
    for this reason, links to it, and sends another only with the tick (which names the consults shown)."""
    backends = Backends(monkeypatch)
    backends.patient_open[:] = [*_open_consult("t0", "sr0", "I10", "2026-12-05T08:58:00+07:00"),
                                *_open_consult("t9", "sr9", "E11", "2026-12-05T08:00:00+07:00")]
    sign_in(client)
    page = client.get("/patients/p1/consult").get_data(as_text=True)
    assert 'data-testid="same-reason-open"' not in page  # no reason chosen yet

    r = client.post("/patients/p1/consult", data=_consult_data(page))
    said = r.get_data(as_text=True)
    assert r.status_code == 200 and not _submits(backends) and not backends.posted  # nothing stored, nothing sent
    warn = said[said.index('data-testid="same-reason-open"'):]
    warn = warn[:warn.index("</div>")]
    assert "Người bệnh này đã có 1 ca hội chẩn đang mở với cùng lý do" in _text(warn)
    assert re.findall(r'href="([^"]+)"[^>]*data-testid="same-reason-link">([^<]+)<', warn) == \
        [("/consults/t0", "gửi lúc 05/12/2026 08:58")]  # not the open consult for another reason
    assert re.search(r'<input type="checkbox" name="again" value="t0" data-testid="same-reason-confirm">', warn)
    assert "Huyết áp 180/110 dù đã dùng hai thuốc" in said  # what was typed stays
    searched = backends.patient_searches[-1]
    assert searched["patient"] == "Patient/p1" and searched["_include"] == "Task:based-on"
    assert set(searched["status"].split(",")) == {"requested", "accepted", "on-hold", "in-progress"}
    assert searched["requester"] == "Organization/tyt-my-hiep"

    # another one for the same reason opened meanwhile: the tick was for t0 only, so it is asked again
    backends.patient_open.extend(_open_consult("t5", "sr5", "I10", "2026-12-05T09:00:00+07:00", "accepted"))
    r = client.post("/patients/p1/consult", data=_consult_data(page, again="t0"))
    assert r.status_code == 200 and not _submits(backends)
    assert re.search(r'name="again" value="t0,t5"', r.get_data(as_text=True))

    r = client.post("/patients/p1/consult", data=_consult_data(page, again="t0,t5"))
    assert r.status_code == 302 and r.headers["Location"] == "/consults/t1"
    (sent,) = _submits(backends)
    assert sent["identifier"] == [{"system": "https://sen.vn/fhir/sid/portal-consult-request",
                                   "value": re.search(r'name="key" type="hidden" value="([0-9a-f]+)"', page).group(1)}]
    # the same form sent again (a double click): the consult it made is not "another one", so it lands on it
    r = client.post("/patients/p1/consult", data=_consult_data(page, again="t0,t5"))
    assert r.status_code == 302 and r.headers["Location"] == "/consults/t1"
    assert len(_submits(backends)) == 2 and backends.headers[-1]["Idempotency-Key"] == backends.headers[0][
        "Idempotency-Key"]


def test_the_same_reason_warning_reads_in_english_and_htmx_gets_the_form_back(client, monkeypatch):
    backends = Backends(monkeypatch)
    backends.patient_open[:] = _open_consult("t0", "sr0", "I10", "2026-12-05T08:58:00+07:00")
    sign_in(client)
    page = client.get("/patients/p1/consult").get_data(as_text=True)
    client.post("/language", data={"lang": "en", "next": "/", "csrf_token": csrf_token(page)})
    r = client.post("/patients/p1/consult", data=_consult_data(page), headers={"HX-Request": "true"})
    text = _text(r.get_data(as_text=True))
    assert r.status_code == 200 and not _submits(backends)
    assert r.get_data(as_text=True).lstrip().startswith('<div id="consult-form">')
    assert "This patient already has an open consult for this reason:" in text
    assert "Send another consult for the same reason anyway" in text


def test_an_open_consult_for_another_reason_or_none_open_sends_at_once(client, monkeypatch):
    backends = Backends(monkeypatch)
    backends.patient_open[:] = _open_consult("t9", "sr9", "E11", "2026-12-05T08:00:00+07:00")
    sign_in(client)
    page = client.get("/patients/p1/consult").get_data(as_text=True)
    r = client.post("/patients/p1/consult", data=_consult_data(page))
    assert r.status_code == 302 and len(_submits(backends)) == 1


# ------------------------------------------------------------------ review 7: a consult just sent, the page reloaded

def test_the_form_says_a_consult_of_the_patient_was_just_sent_with_a_link_to_it(client, monkeypatch):
    """A reload while the request was being sent: the consult was made, the nurse saw an empty form and nothing
    more, and only a second try said the patient had an open consult (review 7). The form opened afresh now says
    a consult of the patient was sent minutes ago by this facility, when, with a link to it; one sent an hour ago
    is no such notice (the same-reason check still asks when sending)."""
    backends = Backends(monkeypatch)
    sign_in(client)
    page = client.get("/patients/p1/consult").get_data(as_text=True)
    assert 'data-testid="just-sent"' not in page  # none open

    hour_ago = (datetime.now(TZ) - timedelta(hours=1)).isoformat(timespec="seconds")
    backends.patient_open[:] = _open_consult("t7", "sr7", "I10", hour_ago)
    assert 'data-testid="just-sent"' not in client.get("/patients/p1/consult").get_data(as_text=True)

    sent = datetime.now(TZ) - timedelta(minutes=2)
    backends.patient_open[:] = [*_open_consult("t8", "sr8", "E11", sent.isoformat(timespec="seconds")),
                                *_open_consult("t7", "sr7", "I10", hour_ago)]
    page = client.get("/patients/p1/consult").get_data(as_text=True)
    notice = page[page.index('data-testid="just-sent"'):]
    notice = _text(notice[:notice.index("</div>")])
    assert f"Một ca hội chẩn cho người bệnh này vừa được gửi lúc {sent.strftime('%d/%m/%Y %H:%M')} — xem ca" in notice
    assert re.search(r'href="/consults/t8" data-testid="just-sent-link"', page)
    searched = backends.patient_searches[-1]  # this clinic's own consults of the patient
    assert searched["patient"] == "Patient/p1" and searched["requester"] == "Organization/tyt-my-hiep"
    token = csrf_token(page)
    client.post("/language", data={"lang": "en", "next": "/patients/p1/consult", "csrf_token": token})
    assert "A consult for this patient was just sent at" in client.get("/patients/p1/consult").get_data(as_text=True)


# ------------------------------------------------------------------ 3. a form sent after the session ended

def test_a_form_sent_signed_out_says_so_links_to_sign_in_and_shows_what_was_typed(client, monkeypatch):
    """Type a message, lose the session cookie, press 'Gửi tin nhắn': the page was 'Biểu mẫu đã hết hạn' with
    no way to sign in and the text lost."""
    Backends(monkeypatch)
    sign_in(client)
    page = client.get("/consults/t1").get_data(as_text=True)
    typed = 'Huyết áp <b>200/120</b> & "đau đầu"\nxin gọi lại'
    client.delete_cookie("sen_portal")  # the browser lost its session cookie
    signed_out = client
    for referrer, back in (("http://localhost/consults/t1", "/consults/t1"), (None, "/consults/t1")):
        r = signed_out.post("/consults/t1/message", data={"csrf_token": csrf_token(page), "text": typed,
                                                         "key": "a" * 32},
                            headers={"Referer": referrer} if referrer else {})
        body = r.get_data(as_text=True)
        assert r.status_code == 400
        assert "Bạn đã bị đăng xuất" in body and "Biểu mẫu đã hết hạn" not in body
        link = re.search(r'<a href="([^"]+)" data-testid="back">([^<]+)</a>', body)
        assert link and link.group(2) == "Đăng nhập lại"
        assert urlsplit(link.group(1).replace("&amp;", "&")).path == "/login"
        assert link.group(1) == f"/login?next={back}"
        shown = re.findall(r'<textarea readonly[^>]*data-testid="typed">(.*?)</textarea>', body, re.S)
        assert shown == ["Huyết áp &lt;b&gt;200/120&lt;/b&gt; &amp; &#34;đau đầu&#34;\nxin gọi lại"]
        assert "a" * 32 not in body  # the form's key is no text of the user's
    # signing in from there comes back to the consult
    login = signed_out.get("/login?next=/consults/t1").get_data(as_text=True)
    r = signed_out.post("/login?next=/consults/t1", data={"username": "clinic", "password": "sen-clinic",
                                                          "next": "/consults/t1", "csrf_token": csrf_token(login)})
    assert r.status_code == 302 and r.headers["Location"] == "/consults/t1", r.get_data(as_text=True)


def test_the_sign_in_form_itself_and_a_signed_in_form_say_it_expired_and_never_echo_a_password(client, monkeypatch):
    Backends(monkeypatch)
    r = client.post("/login", data={"username": "clinic", "password": "sen-clinic"})
    body = r.get_data(as_text=True)
    assert r.status_code == 400 and "Biểu mẫu đã hết hạn" in body and "Bạn đã bị đăng xuất" not in body
    assert "sen-clinic" not in body
    sign_in(client)
    r = client.post("/consults/t1/message", data={"csrf_token": "stale", "text": "Người bệnh đỡ hơn."})
    body = r.get_data(as_text=True)
    assert r.status_code == 400 and "Biểu mẫu đã hết hạn" in body
    assert re.search(r'data-testid="typed">Người bệnh đỡ hơn\.</textarea>', body)


# ------------------------------------------------------------------ 5, 6. a closed consult

@pytest.mark.parametrize("status,label", [("cancelled", "Lý do hủy"), ("rejected", "Lý do từ chối")])
def test_a_closed_consults_reason_is_named_for_what_it_is(client, monkeypatch, status, label):
    """'Lý do đã nêu' right under the consult's own 'Lý do' read as a second reason for the consult."""
    backends = Backends(monkeypatch)
    backends.task.update(status=status, statusReason={"text": "Người bệnh đã chuyển viện."})
    sign_in(client)
    page = client.get("/consults/t1").get_data(as_text=True)
    assert re.search(rf'<dt>{label}</dt><dd class="pre" data-testid="status-reason">Người bệnh đã chuyển viện\.</dd>',
                     page)
    assert "Lý do đã nêu" not in page


def test_a_completed_consults_message_box_says_the_message_is_only_kept(client, monkeypatch):
    backends = Backends(monkeypatch)
    sign_in(client)
    page = client.get("/consults/t1").get_data(as_text=True)
    assert "ca hội chẩn vẫn tiếp tục như hiện tại" in page and 'data-testid="message-closed"' not in page
    backends.task.update(status="completed")
    page = client.get("/consults/t1").get_data(as_text=True)
    assert "vẫn tiếp tục" not in page
    hint = re.search(r'data-testid="message-closed">([^<]+)<', page)
    assert hint and "đã đóng" in hint.group(1) and "chỉ được lưu vào hồ sơ" in hint.group(1)


# ------------------------------------------------------------------ 9. the icon

def test_every_page_names_the_portals_icon_and_it_is_served(client):
    page = client.get("/login").get_data(as_text=True)
    icon = re.search(r'<link rel="icon" href="([^"]+)" type="image/svg\+xml">', page)
    assert icon and re.fullmatch(r"/assets/favicon\.svg\?v=[0-9a-f]{12}", icon.group(1))  # versioned (test_assets)
    for path in (icon.group(1), "/favicon.ico"):
        r = client.get(path)
        assert r.status_code == 200 and r.mimetype == "image/svg+xml" and b"<svg" in r.get_data(), path


# ------------------------------------------------------------------ 7. the minutes' findings

FINDINGS = "HA 180/110; điện tim: dày thất trái; X-quang: bóng tim to."


def test_the_full_minutes_show_the_findings_under_the_minutes_forms_heading(client, monkeypatch):
    """The chart's consult record said 'Lâm sàng' over what the form called 'Kết quả đã xem xét (lâm sàng, cận lâm
    sàng, hình ảnh)'."""
    from sen_portal.web import clinic

    Backends(monkeypatch)
    comp = {"resourceType": "Composition", "id": "c1", "subject": {"reference": "Patient/p1"},
            "date": "2026-12-05T09:40:00+07:00",
            "identifier": {"system": clinic.CONSULT_RECORD_SYSTEM, "value": "sr1"},
            "section": [{"title": "Kết quả hội chẩn", "code": {"coding": [{"code": "findings"}]},
                         "text": {"div": f"<div><p>Lâm sàng: {FINDINGS}</p></div>"}}]}
    before = clinic.fhir_get
    monkeypatch.setattr(clinic, "fhir_get", lambda service, path, *a, **kw: comp if path == "/fhir/Composition/c1"
                        else before(service, path, *a, **kw))
    sign_in(client)
    page = client.get("/patients/p1/consult-records/c1").get_data(as_text=True)
    heading = re.escape("<h2>Kết quả đã xem xét (lâm sàng, cận lâm sàng, hình ảnh)</h2>")
    assert re.search(rf'{heading}\s*<p class="pre">{re.escape(FINDINGS)}</p>', page)
    assert "Lâm sàng" not in page


# ------------------------------------------------------------------ the doctor's page

class Reassigned(Consult):
    """The doctor's consult fake that also takes ``$reassign`` (what it was sent is kept)."""

    def __init__(self, start: datetime) -> None:
        super().__init__(start)
        self.reassigned: list[dict[str, Any]] = []

    def __call__(self, method: str, url: str, **kw: Any) -> http.Response:
        if urlsplit(url).path.endswith(f"/fhir/Task/{TID}/$reassign") and method == "POST":
            self.reassigned.append(kw.get("json") or {})
            return self._json(self.task())
        return super().__call__(method, url, **kw)


@pytest.fixture()
def fake(monkeypatch: pytest.MonkeyPatch) -> Reassigned:
    from sen_portal.web import doctor

    f = Reassigned.answering(monkeypatch)
    monkeypatch.setattr(doctor, "_hub_doctors", lambda facility, me: [
        ("Practitioner/bs-tran-thi-binh", "BS. Trần Thị Bình"), ("Practitioner/bs-le-van-cuong", "BS. Lê Văn Cường")])
    return f


@pytest.fixture()
def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake: Reassigned):
    return portal_app(tmp_path, monkeypatch, backend="http://127.0.0.1:9", SEN_PORTAL_CACHE_SECONDS="0")


@pytest.mark.parametrize("owner, said, lang", [
    ("Organization/bvdk-dong-thap", "Ca chưa có bác sĩ nào nhận: bác sĩ đó sẽ giữ ca.", "vi"),
    ("Organization/bvdk-dong-thap", "No doctor holds it yet: they will hold it.", "en"),
    ("Practitioner/bs-nguyen-van-an", "Bác sĩ đó sẽ giữ ca và ca không còn do bạn phụ trách.", "vi"),
    # the holder as the directory names them (this fake's directory: by reference)
    ("Practitioner/bs-tran-thi-binh", "Bác sĩ đó sẽ giữ ca thay cho Practitioner/bs-tran-thi-binh.", "vi"),
    ("Practitioner/bs-tran-thi-binh", "They will hold it instead of Practitioner/bs-tran-thi-binh.", "en"),
])
def test_the_reassign_confirmation_says_whose_hands_the_consult_leaves(app, fake, owner, said, lang):
    """"ca không còn do bạn phụ trách" was said of a consult the doctor never held (the hub's, another's)."""
    fake.status, fake.owner = "requested", owner
    c = portal_signed_in(app, "doctor", lang)
    r = c.post(f"/tasks/{TID}/reassign", data={"csrf_token": csrf_token(_page(c)),
                                               "practitioner": "Practitioner/bs-le-van-cuong"})
    body = r.get_data(as_text=True)
    assert r.status_code == 200 and not fake.reassigned
    confirm = body[body.index('data-testid="reassign-confirm"'):]
    confirm = _text(confirm[:confirm.index("</form>")])
    assert said in confirm
    assert ("không còn do bạn phụ trách" in confirm) == (owner == "Practitioner/bs-nguyen-van-an")


def test_reassigning_needs_a_doctor_chosen_and_confirmed_by_name(app, fake):
    """The select had no empty choice: 'Chuyển cho bác sĩ khác' pressed without choosing gave the consult to
    the first doctor."""
    fake.status, fake.owner = "requested", "Organization/bvdk-dong-thap"
    c = portal_signed_in(app, "doctor")
    page = _page(c)
    select = re.search(r'<select[^>]*name="practitioner"[^>]*>(.*?)</select>', page, re.S).group(1)
    assert re.findall(r'<option[^>]*value="([^"]*)"[^>]*>([^<]*)</option>', select) == [
        ("", "— Chọn bác sĩ —"), ("Practitioner/bs-tran-thi-binh", "BS. Trần Thị Bình"),
        ("Practitioner/bs-le-van-cuong", "BS. Lê Văn Cường")]
    token = csrf_token(page)
    r = c.post(f"/tasks/{TID}/reassign", data={"csrf_token": token, "practitioner": ""})
    assert r.status_code == 422 and not fake.reassigned
    assert re.search(r'<p class="error" id="practitioner-error">Chọn bác sĩ\.</p>', r.get_data(as_text=True))

    r = c.post(f"/tasks/{TID}/reassign", data={"csrf_token": token, "practitioner": "Practitioner/bs-le-van-cuong"})
    body = r.get_data(as_text=True)
    assert r.status_code == 200 and not fake.reassigned  # chosen, not yet confirmed
    confirm = body[body.index('data-testid="reassign-confirm"'):]
    confirm = confirm[:confirm.index("</form>")]
    assert "Chuyển ca hội chẩn này cho BS. Lê Văn Cường?" in _text(confirm)
    # the shared confirmation step (web/confirming.py), the chosen doctor named on its button
    assert 'name="confirm" value="reassign"' in confirm and 'name="confirming" value="reassign"' in confirm
    assert re.search(r'<button class="danger" data-testid="confirm-button">Chuyển cho BS\. Lê Văn Cường</button>',
                     confirm)
    assert '<input type="hidden" name="practitioner" value="Practitioner/bs-le-van-cuong">' in confirm
    assert "Chọn bác sĩ khác" in _text(confirm)  # the way back still says where it leads

    # a tick of another step, or the step pressed without its tick, confirms nothing
    r = c.post(f"/tasks/{TID}/reassign", data={"csrf_token": token, "practitioner": "Practitioner/bs-le-van-cuong",
                                               "confirm": "reject"})
    assert r.status_code == 200 and not fake.reassigned
    r = c.post(f"/tasks/{TID}/reassign", data={"csrf_token": token, "practitioner": "Practitioner/bs-le-van-cuong",
                                               "confirming": "reassign"})
    assert r.status_code == 400 and not fake.reassigned
    assert 'id="reassign-confirm-error"' in r.get_data(as_text=True)
    r = c.post(f"/tasks/{TID}/reassign", data={"csrf_token": token, "practitioner": "Practitioner/bs-le-van-cuong",
                                               "confirming": "reassign", "confirm": "reassign"})
    assert r.status_code == 302 and r.headers["Location"].startswith("/worklist")
    (sent,) = fake.reassigned
    assert sent["parameter"] == [{"name": "practitioner",
                                  "valueReference": {"reference": "Practitioner/bs-le-van-cuong"}}]


def test_the_doctors_completed_consult_says_a_message_is_only_kept_and_shows_the_findings_heading(app, fake):
    minutes = {"start": "2026-12-05T09:05:00+07:00", "end": "2026-12-05T09:40:00+07:00", "participants": [],
               "history": "Đau ngực.", "findings": {"clinical": FINDINGS},
               "conclusion": [{"system": "http://hl7.org/fhir/sid/icd-10", "code": "I10"}],
               "recommendations": "Chuyển tuyến.", "chair": "Practitioner/bs-nguyen-van-an"}
    fake.status = "completed"
    fake.output = [{"type": {"coding": [{"system": OUT, "code": "minutes"}]}, "valueAttachment": {
        "contentType": "application/json", "data": base64.b64encode(json.dumps(minutes).encode()).decode()}}]
    page = _page(portal_signed_in(app, "doctor"))
    assert 'data-testid="message-closed"' in page and "vẫn tiếp tục" not in page
    assert f"<dt>Kết quả đã xem xét (lâm sàng, cận lâm sàng, hình ảnh)</dt><dd class=\"pre\">{FINDINGS}</dd>" in page
    assert "<dt>Lâm sàng</dt>" not in page


# ------------------------------------------------------------------ 8. wording

def test_the_reviewed_sentences_read_plainly_in_vietnamese():
    from babel.messages.pofile import read_po

    po = Path(__file__).resolve().parents[1] / "src/sen_portal/translations/vi/LC_MESSAGES/messages.po"
    with po.open("rb") as f:
        catalog = read_po(f)
    assert catalog["Use HH:MM."].string == "Nhập giờ:phút, ví dụ 07:30."
    pdf = catalog["%(name)s is not a real PDF, JPEG, PNG or WebP file (its content is not what its name says); save "
                  "it again as one of those."].string
    assert pdf.startswith("%(name)s không thực sự là tệp PDF, JPEG, PNG hay WebP")


@pytest.mark.parametrize("lang,said", [("vi", "Đã chuyển ca hội chẩn cho BS. Lê Văn Cường."),
                                       ("en", "The consult is given to BS. Lê Văn Cường.")])
def test_the_worklist_names_the_doctor_a_consult_was_given_to(app, fake, lang, said):
    """After a confirmed reassign the worklist said only 'given to the other doctor'. The step flashes the
    Practitioner's id; the name is looked up among the hub's doctors. Said once: a reload says nothing, and
    nothing in a link says it."""
    fake.status, fake.owner = "requested", "Organization/bvdk-dong-thap"
    c = portal_signed_in(app, "doctor", lang)
    token = csrf_token(_page(c))
    r = c.post(f"/tasks/{TID}/reassign", data={"csrf_token": token, "practitioner": "Practitioner/bs-le-van-cuong",
                                               "confirm": "reassign"})
    assert r.status_code == 302 and r.headers["Location"] == "/worklist"

    def message(query: str) -> str:
        page = c.get(f"/worklist?{query}").get_data(as_text=True)
        found = re.search(r'<div class="alert ok" role="status" data-testid="reassigned">(.*?)</div>', page, re.S)
        return _text(found.group(1)) if found else ""

    assert message("") == said
    assert message("") == ""  # the reload: nothing was done again
    assert message("reassigned=bs-le-van-cuong") == ""  # the old link's flag says nothing
    other = "Đã chuyển ca hội chẩn cho bác sĩ khác." if lang == "vi" else "The consult is given to the other doctor."
    # an id that is none of the hub's doctors: no name
    for value in ("1", "bs-khong-co", "<b>Bác sĩ giả</b>"):
        flash_step(c, "/worklist", "reassigned", value)
        assert message("") == other, value
