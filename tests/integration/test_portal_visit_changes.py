"""The doctor's consult page books, moves and cancels a video visit against the real teleconsult service
(a gunicorn process on loopback, with a real EHR beside it), the real FerretDB and RabbitMQ.

The portal runs in this process (Flask's test client) with its demo users: BS. Nguyễn Văn An of the hub
Bệnh viện Đa khoa Đồng Tháp, whose weekly hours are a Schedule of that hub, and the clinic of Trạm Y tế
xã Mỹ Hiệp. The clinic submits a consult through teleconsult; the doctor accepts it, finds free times
and books one on the page, then moves it (the old slot is free, the new one busy, and the consult has
exactly one active appointment, shown on both consult pages); a time another user books just before
the doctor's click is refused with the page's own words and the visit stays; a no-show before the
visit's start is refused readably; the doctor cancels with a reason (the slot is free, the clinic sees
the visit cancelled with the reason) and can book another time from the same page.
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from sen_shared.auth import issue_dev_token

from tests.support import app_client, csrf_token, emptied, flashed_steps, portal_signed_in, put_resources

pytestmark = pytest.mark.integration

FJ = "application/fhir+json"
TZ = ZoneInfo("Asia/Ho_Chi_Minh")
HUB, CLINIC, DOCTOR, PATIENT = "bvdk-dong-thap", "tyt-my-hiep", "bs-nguyen-van-an", "p-hoa"
ALL_DAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


def _headers(dev_key: Path, role: str, **claims: Any) -> dict[str, str]:
    return {"Authorization": f"Bearer {issue_dev_token(dev_key, role, **claims)}", "Content-Type": FJ, "Accept": FJ}


def ehr_seed() -> list[dict[str, Any]]:
    """What the EHR holds at the start of each module on these services: the hub, the clinic, the demo doctor
    and Phạm Thị Hoa."""
    return [{"resourceType": "Organization", "id": HUB, "name": "Bệnh viện Đa khoa Đồng Tháp"},
            {"resourceType": "Organization", "id": CLINIC, "name": "Trạm Y tế xã Mỹ Hiệp"},
            {"resourceType": "Practitioner", "id": DOCTOR, "name": [{"family": "Nguyễn", "given": ["Văn", "An"]}]},
            {"resourceType": "Patient", "id": PATIENT, "gender": "female", "birthDate": "1975-04-02",
             "name": [{"family": "Phạm", "given": ["Thị", "Hoa"]}],
             "managingOrganization": {"reference": f"Organization/{CLINIC}"}}]


def teleconsult_env(base_env: dict[str, str], tc_db: str, ehr: str) -> dict[str, str]:
    """Teleconsult's settings in these modules: no public holidays (every day has the doctor's hours), a
    10 s EHR timeout, the video visits' Jitsi."""
    return {**base_env, "SEN_DB": tc_db, "SEN_EHR_URL": ehr, "SEN_HTTP_TIMEOUT": "10", "SEN_TELECONSULT_HOLIDAYS": "",
            "SEN_JITSI_APP_SECRET": "s3cret-for-tests-0123456789abcdef",
            "SEN_JITSI_BASE_URL": "https://meet.benhvien.example"}


@pytest.fixture(scope="module")
def ehr(visit_services, mongo_client, dev_key):
    """The session's EHR (its URL; visit_services, tests/integration/conftest.py, shared by this module and
    test_portal_consult_minutes) with nothing from an earlier module in it or in teleconsult's database:
    :func:`ehr_seed` alone, as a process of the module's own held."""
    emptied(mongo_client, visit_services["ehr_db"], visit_services["tc_db"])
    put_resources(visit_services["ehr"], dev_key, ehr_seed())
    return visit_services["ehr"]


@pytest.fixture(scope="module")
def tc(visit_services, ehr, dev_key):
    """The session's teleconsult (its URL, :func:`teleconsult_env`) holding BS. An's weekly hours at the hub
    alone: every day 07:00-11:30 and 13:30-17:00."""
    from sen_teleconsult.domain import availability as av

    url = visit_services["tc"]
    sched = av.schedule_resource("sched-an", practitioner=f"Practitioner/{DOCTOR}",
                                 organization=f"Organization/{HUB}", specialty_code="394579002",
                                 specialty_text="Tim mạch", windows=[(ALL_DAYS, "07:00:00", "11:30:00"),
                                                                     (ALL_DAYS, "13:30:00", "17:00:00")])
    r = httpx.put(f"{url}/fhir/Schedule/sched-an", content=json.dumps(sched), headers=_headers(dev_key, "admin"))
    assert r.status_code in (200, 201), r.text
    return url


@pytest.fixture(scope="module")
def portal(base_env, run_id, ehr, tc, mongo_client):
    env = {**base_env, "SEN_EHR_URL": ehr, "SEN_TELECONSULT_URL": tc, "SEN_BILLING_URL": tc,
           "SEN_HTTP_TIMEOUT": "10", "SEN_PORTAL_CACHE_SECONDS": "0"}
    with app_client("portal", env, f"sen_t{run_id}_pvc_portal", mongo_client) as (_client, app):
        app.app.config["TESTING"] = True
        yield app.app


@pytest.fixture(scope="module")
def consult(tc, dev_key) -> tuple[str, str]:
    """(ServiceRequest id, Task id) of the clinic's consult for Phạm Thị Hoa."""
    return submit_consult(tc, dev_key, "I10", "Tăng huyết áp vô căn (nguyên phát)", "Huyết áp khó kiểm soát.")


def submit_consult(tc: str, dev_key: Path, code: str, display: str, question: str) -> tuple[str, str]:
    """(ServiceRequest id, Task id) of an urgent consult the clinic submits for Phạm Thị Hoa, its reason
    the ICD-10 ``code``."""
    clinic = _headers(dev_key, "clinic", facility=CLINIC, practitioner="ys-vo-minh-tam", sub="portal-clinic")
    sr = {"resourceType": "ServiceRequest", "status": "active", "intent": "order", "priority": "urgent",
          "subject": {"reference": f"Patient/{PATIENT}"}, "requester": {"reference": f"Organization/{CLINIC}"},
          "reasonCode": [{"coding": [{"system": "http://hl7.org/fhir/sid/icd-10", "code": code, "display": display}]}],
          "note": [{"text": question}], "performer": [{"reference": f"Organization/{HUB}"}]}
    r = httpx.post(f"{tc}/fhir/ServiceRequest/$submit", content=json.dumps(sr), headers=clinic, timeout=30)
    assert r.status_code == 201, r.text
    ids = {e["resource"]["resourceType"]: e["resource"]["id"] for e in r.json()["entry"]}
    return ids["ServiceRequest"], ids["Task"]


def _text(page: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", page))


def _times(client: Any, tid: str, action: str) -> list[dict[str, str]]:
    """The free times the page offers (from the day after tomorrow, three days), each button's fields."""
    page = client.get(f"/tasks/{tid}").get_data(as_text=True)
    day = (datetime.now(TZ) + timedelta(days=2)).strftime("%d/%m/%Y")
    assert f'<form method="get" action="/tasks/{tid}/slots"' in page
    r = client.get(f"/tasks/{tid}/slots", query_string={"start": day, "days": "3"})
    assert r.status_code == 200, _text(r.get_data(as_text=True))[:800]
    forms = re.findall(rf'<form method="post" action="/tasks/{tid}/{action}".*?</form>', r.get_data(as_text=True),
                       re.S)
    assert forms, f"no free time offered to {action}"
    return [dict(re.findall(r'name="(\w+)" value="([^"]*)"', f)) for f in forms]


def _slot(tc: str, H: dict[str, str], sid: str) -> str:
    r = httpx.get(f"{tc}/fhir/Slot/{sid}", headers=H, timeout=30)
    assert r.status_code == 200, r.text
    return str(r.json()["status"])


def _appointments(tc: str, H: dict[str, str], sr: str) -> list[dict[str, Any]]:
    r = httpx.get(f"{tc}/fhir/Appointment", params={"based-on": f"ServiceRequest/{sr}", "_count": "50"},
                  headers=H, timeout=30)
    assert r.status_code == 200, r.text
    return [e["resource"] for e in r.json().get("entry", []) if e["resource"]["resourceType"] == "Appointment"]


def _active(tc: str, H: dict[str, str], sr: str) -> list[dict[str, Any]]:
    return [a for a in _appointments(tc, H, sr) if a["status"] in ("booked", "pending")]


def _shown(start: str) -> str:
    return f"{datetime.fromisoformat(start).astimezone(TZ):%d/%m/%Y %H:%M}"


def _visit_time(page: str) -> str:
    assert 'data-testid="visit-time"' in page, _text(page)[:1500]
    return _text(page.split('data-testid="visit-time"', 1)[1].split("</p>", 1)[0])


def test_book_move_taken_time_no_show_too_early_and_cancel(portal, consult, tc, dev_key):
    sr, tid = consult
    H = _headers(dev_key, "admin")
    doctor = portal_signed_in(portal, "doctor")
    page = doctor.get(f"/tasks/{tid}").get_data(as_text=True)
    r = doctor.post(f"/tasks/{tid}/accept", data={"csrf_token": csrf_token(page)})
    assert r.status_code == 302, _text(r.get_data(as_text=True))[:800]

    # book the first free time
    first = _times(doctor, tid, "book")[0]
    r = doctor.post(f"/tasks/{tid}/book", data=first)
    assert r.status_code == 302 and flashed_steps(doctor)[-1] == (f"/tasks/{tid}", "booked=1"), \
        _text(r.get_data(as_text=True))[:800]
    [booked] = _active(tc, H, sr)
    assert _slot(tc, H, first["slot"]) == "busy"

    # move it to the third time offered: the old slot is free, the new one busy, one active appointment
    moves = _times(doctor, tid, "visit/move")
    assert all(m["appointment"] == booked["id"] for m in moves)
    assert first["slot"] not in [m["slot"] for m in moves]  # its own time is not offered
    target = moves[2]
    r = doctor.post(f"/tasks/{tid}/visit/move", data=target)
    assert r.status_code == 302 and r.headers["Location"].endswith(f"/tasks/{tid}"), \
        _text(r.get_data(as_text=True))[:800]
    assert _slot(tc, H, first["slot"]) == "free"
    assert _slot(tc, H, target["slot"]) == "busy"
    [moved] = _active(tc, H, sr)
    assert moved["id"] != booked["id"] and moved["slot"] == [{"reference": f"Slot/{target['slot']}"}]
    page = doctor.get(r.headers["Location"]).get_data(as_text=True)
    assert _shown(target["start"]) in _visit_time(page)
    assert "Đã dời lịch hội chẩn video sang" in _text(page)
    assert "Đã dời lịch hội chẩn video sang" not in _text(doctor.get(r.headers["Location"]).get_data(as_text=True))
    clinic = portal_signed_in(portal, "clinic")
    cpage = clinic.get(f"/consults/{tid}").get_data(as_text=True)
    assert _shown(target["start"]) in _visit_time(cpage) and _shown(first["start"]) not in _visit_time(cpage)

    # a time another user books just before the doctor's click: refused in the page's words, the visit stays
    offered = _times(doctor, tid, "visit/move")
    wanted = offered[0]
    other = {"resourceType": "Appointment", "status": "proposed", "start": wanted["start"], "end": wanted["end"],
             "slot": [{"reference": f"Slot/{wanted['slot']}"}],
             "participant": [{"actor": {"reference": "Patient/p-other"}, "status": "needs-action"},
                             {"actor": {"reference": f"Practitioner/{DOCTOR}"}, "status": "needs-action"}]}
    r = httpx.post(f"{tc}/fhir/Appointment/$book", headers=H, timeout=30, content=json.dumps(
        {"resourceType": "Parameters", "parameter": [{"name": "appointment-resource", "resource": other}]}))
    assert r.status_code == 200, r.text
    r = doctor.post(f"/tasks/{tid}/visit/move", data=wanted)
    assert r.status_code == 409
    page = r.get_data(as_text=True)
    assert "Giờ này vừa có người khác đặt" in _text(page), _text(page)[:1500]
    assert _shown(target["start"]) in _visit_time(page)
    assert [a["id"] for a in _active(tc, H, sr)] == [moved["id"]]
    assert _slot(tc, H, target["slot"]) == "busy"

    # no-show before the visit's start: not offered; a stale post is refused by teleconsult, said readably
    assert 'data-testid="visit-noshow"' not in page
    r = doctor.post(f"/tasks/{tid}/visit/noshow", data={"csrf_token": csrf_token(page), "appointment": moved["id"]})
    assert r.status_code == 409
    assert "Buổi khám chưa bắt đầu" in _text(r.get_data(as_text=True))
    assert [a["status"] for a in _active(tc, H, sr)] == ["booked"]

    # cancel with a reason, confirmed (the first press sends nothing): the slot is free; the clinic sees it
    # cancelled with the reason
    page = doctor.get(f"/tasks/{tid}").get_data(as_text=True)
    sent = {"csrf_token": csrf_token(page), "appointment": moved["id"], "visit-reason": "Bệnh nhân chuyển viện khác"}
    r = doctor.post(f"/tasks/{tid}/visit/cancel", data=sent)
    assert r.status_code == 200 and 'name="confirm" value="visit-cancel"' in r.get_data(as_text=True)
    assert [a["status"] for a in _active(tc, H, sr)] == ["booked"]
    r = doctor.post(f"/tasks/{tid}/visit/cancel",
                    data={**sent, "confirming": "visit-cancel", "confirm": "visit-cancel"})
    assert r.status_code == 302 and r.headers["Location"].endswith(f"/tasks/{tid}")
    assert _slot(tc, H, target["slot"]) == "free"
    assert _active(tc, H, sr) == []
    page = doctor.get(r.headers["Location"]).get_data(as_text=True)
    assert "Đã hủy lịch hội chẩn video" in _text(page) and "Bệnh nhân chuyển viện khác" in _text(page)
    cpage = _text(clinic.get(f"/consults/{tid}").get_data(as_text=True))
    assert "đã bị hủy" in cpage and "Bệnh nhân chuyển viện khác" in cpage and "hẹn giờ mới" in cpage

    # the same page books another time
    again = _times(doctor, tid, "book")
    assert target["slot"] in [t["slot"] for t in again]  # the cancelled time is free again
    r = doctor.post(f"/tasks/{tid}/book", data=again[0])
    assert r.status_code == 302 and flashed_steps(doctor)[-1] == (f"/tasks/{tid}", "booked=1")
    assert len(_active(tc, H, sr)) == 1


def _accepted(doctor, tid: str) -> None:
    """The consult accepted by the signed-in doctor (a test run alone finds it not accepted yet)."""
    page = doctor.get(f"/tasks/{tid}").get_data(as_text=True)
    if 'action="/tasks/' + tid + '/accept"' in page:
        assert doctor.post(f"/tasks/{tid}/accept", data={"csrf_token": csrf_token(page)}).status_code == 302


def test_a_second_time_booked_from_another_tab_is_refused_naming_the_visit(portal, consult, tc, dev_key):
    """Two tabs of the consult page (or two quick clicks on two times): the first time is booked, the
    second is refused in the page's words, naming the visit's time; the consult keeps its one visit
    and the second time stays free (teleconsult keeps one active visit a consult)."""
    sr, tid = consult
    H = _headers(dev_key, "admin")
    doctor = portal_signed_in(portal, "doctor")
    _accepted(doctor, tid)
    for visit in _active(tc, H, sr):  # start without a visit (the test above ends with one booked)
        r = httpx.post(f"{tc}/fhir/Appointment/{visit['id']}/$cancel", headers=H, timeout=30,
                       content=json.dumps({"resourceType": "Parameters", "parameter": []}))
        assert r.status_code == 200, r.text
    first, second = _times(doctor, tid, "book")[:2]  # both tabs show the same free times
    r = doctor.post(f"/tasks/{tid}/book", data=first)
    assert r.status_code == 302 and flashed_steps(doctor)[-1] == (f"/tasks/{tid}", "booked=1"), \
        _text(r.get_data(as_text=True))[:800]
    r = doctor.post(f"/tasks/{tid}/book", data=second)
    assert r.status_code == 409
    text = _text(r.get_data(as_text=True))
    assert f"Hội chẩn này đã có lịch hội chẩn video lúc {_shown(first['start'])}" in text, text[:1500]
    assert "dời hoặc hủy" in text
    assert _shown(first["start"]) in _visit_time(r.get_data(as_text=True))
    [visit] = _active(tc, H, sr)
    assert visit["slot"] == [{"reference": f"Slot/{first['slot']}"}]
    assert _slot(tc, H, second["slot"]) == "free"


def test_leave_over_a_booked_visit_lists_it_first_and_after_from_teleconsults_search(portal, consult, tc, dev_key):
    """The availability page finds the doctor's booked visits inside a leave through teleconsult's own
    Appointment search (practitioner, date ge/le, status): it lists the visit (time, patient, its consult
    page) before saving anything; once the doctor confirms, the leave is stored and the page says the visit
    stays booked inside it. A day without visits is saved at once."""
    sr, tid = consult
    H = _headers(dev_key, "admin")
    doctor = portal_signed_in(portal, "doctor")
    _accepted(doctor, tid)
    if not _active(tc, H, sr):
        assert doctor.post(f"/tasks/{tid}/book", data=_times(doctor, tid, "book")[0]).status_code == 302
    [visit] = _active(tc, H, sr)
    day = f"{datetime.fromisoformat(visit['start']).astimezone(TZ):%d/%m/%Y}"

    def leave(first: str, **more: str) -> Any:
        page = doctor.get("/availability").get_data(as_text=True)
        return doctor.post("/availability", data={"csrf_token": csrf_token(page), "which": "leave",
                                                  "schedule": "sched-an", "leave-start": first, "leave-end": first,
                                                  "leave-reason": "Hội nghị tim mạch", **more})

    def leaves() -> list[dict[str, Any]]:
        r = httpx.get(f"{tc}/fhir/Schedule/sched-an", headers=H, timeout=30)
        return [e for e in r.json().get("extension", []) if e["url"].endswith("schedule-not-available")]

    before = len(leaves())
    r = leave("01/01/2020")  # ended before today (in Vietnam): refused on its field, nothing sent
    assert r.status_code == 422 and 'id="leave-end-error"' in r.get_data(as_text=True)
    assert len(leaves()) == before
    r = leave(day)
    page = r.get_data(as_text=True)
    assert r.status_code == 200 and 'data-testid="leave-confirm"' in page, _text(page)[:1500]
    listed = _text(page.split('data-testid="leave-confirm"')[1].split("</section>")[0])
    assert _shown(visit["start"]) in listed  # its patient as the lists show them (here: the EHR has no grant yet)
    assert 'data-testid="patient-name"' in page.split('data-testid="leave-confirm"')[1].split("</section>")[0]
    assert f'href="/tasks/{tid}#visit"' in page
    assert len(leaves()) == before  # nothing saved yet

    r = leave(day, confirm="1")
    page = r.get_data(as_text=True)
    assert r.status_code == 200 and 'data-testid="leave-kept-visits"' in page, _text(page)[:1500]
    assert _shown(visit["start"]) in _text(page) and f'href="/tasks/{tid}#visit"' in page
    assert len(leaves()) == before + 1
    assert [a["id"] for a in _active(tc, H, sr)] == [visit["id"]]  # still booked: moved or cancelled by the doctor

    other = f"{datetime.fromisoformat(visit['start']).astimezone(TZ) + timedelta(days=20):%d/%m/%Y}"
    r = leave(other)
    page = r.get_data(as_text=True)
    assert r.status_code == 200 and 'data-testid="leave-confirm"' not in page and len(leaves()) == before + 2


# ------------------------------------------------------------------ forms sent in place, sent twice

HX = {"HX-Request": "true", "HX-Current-URL": "http://localhost/availability"}


def _page_fields(page: str) -> dict[str, str]:
    """The page's key and the schedule's version its forms carry (availability.html's kept_by_page)."""
    key = re.search(r'name="key" value="([0-9a-f]{32})"', page).group(1)
    version = re.search(r'name="version" value="(\d+)"', page).group(1)
    return {"key": key, "version": version, "csrf_token": csrf_token(page)}


def test_a_leave_and_the_hours_sent_twice_after_the_answer_was_lost_are_saved_once(portal, tc, dev_key):
    """The availability page's forms are sent in place with the page's key and the version it shows: the same
    leave sent again (its first answer lost on the way back) is teleconsult's first answer replayed, one leave
    and one new version, not a second leave; the same weekly hours again, one version."""
    H = _headers(dev_key, "admin")
    doctor = portal_signed_in(portal, "doctor")

    def schedule() -> dict[str, Any]:
        r = httpx.get(f"{tc}/fhir/Schedule/sched-an", headers=H, timeout=30)
        assert r.status_code == 200, r.text
        return r.json()

    def leaves() -> list[dict[str, Any]]:
        return [e for e in schedule().get("extension", []) if e["url"].endswith("schedule-not-available")]

    page = doctor.get("/availability").get_data(as_text=True)
    sent = {**_page_fields(page), "which": "leave", "schedule": "sched-an", "leave-reason": "Tập huấn",
            "leave-start": (day := f"{datetime.now(TZ) + timedelta(days=300):%d/%m/%Y}"), "leave-end": day}
    before, version = len(leaves()), schedule()["meta"]["versionId"]
    for _ in range(2):
        r = doctor.post("/availability", data=sent, headers=HX)
        assert r.status_code == 200 and "Đã lưu" in _text(r.get_data(as_text=True)), _text(r.get_data(as_text=True))
    assert len(leaves()) == before + 1
    assert int(schedule()["meta"]["versionId"]) == int(version) + 1

    page = doctor.get("/availability").get_data(as_text=True)
    week = {**_page_fields(page), "which": "week", "schedule": "sched-an", "week-slot_minutes": "30",
            "week-windows-0-days": ALL_DAYS, "week-windows-0-start_time": "07:00", "week-windows-0-end_time": "11:30",
            "week-windows-1-days": ALL_DAYS, "week-windows-1-start_time": "13:30", "week-windows-1-end_time": "17:30"}
    version = schedule()["meta"]["versionId"]
    for _ in range(2):
        r = doctor.post("/availability", data=week, headers=HX)
        assert r.status_code == 200 and "Đã lưu" in _text(r.get_data(as_text=True)), _text(r.get_data(as_text=True))
    assert int(schedule()["meta"]["versionId"]) == int(version) + 1 and len(leaves()) == before + 1
    # another's change meanwhile (the page's version is old, the key new): refused, not overwritten unseen
    r = doctor.post("/availability", data={**sent, "key": "0" * 32, "leave-reason": "Khác"}, headers=HX)
    assert r.status_code == 200 and "vừa được thay đổi" in _text(r.get_data(as_text=True))
    assert len(leaves()) == before + 1


def test_start_sent_twice_after_its_answer_was_lost_starts_once(portal, tc, dev_key):
    """'Bắt đầu' is sent in place with the version the page showed: sent again after its answer was lost, the
    version is 412 and the consult read again is this doctor's in progress: done (HX-Redirect), one start."""
    _sr, tid = submit_consult(tc, dev_key, "J18.9", "Viêm phổi, không xác định", "Ho, sốt ba ngày.")
    H = _headers(dev_key, "admin")
    doctor = portal_signed_in(portal, "doctor")
    _accepted(doctor, tid)
    page = doctor.get(f"/tasks/{tid}").get_data(as_text=True)
    assert f'hx-post="/tasks/{tid}/start"' in page
    version = re.search(rf'action="/tasks/{tid}/start".*?name="version" value="(\d+)"', page, re.S).group(1)
    hx = {"HX-Request": "true", "HX-Current-URL": f"http://localhost/tasks/{tid}"}
    for _ in range(2):
        r = doctor.post(f"/tasks/{tid}/start", data={"csrf_token": csrf_token(page), "version": version}, headers=hx)
        assert r.status_code == 204 and r.headers["HX-Redirect"] == f"/tasks/{tid}", r.get_data(as_text=True)[:500]
    history = httpx.get(f"{tc}/fhir/Task/{tid}/_history", headers=H, timeout=30).json()
    started = [e["resource"] for e in history.get("entry", []) if e["resource"]["status"] == "in-progress"]
    assert len(started) == 1
