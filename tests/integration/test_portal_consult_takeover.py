# ruff: noqa: F811 - the fixtures imported from test_portal_consult_patients are parameters by name
"""Taking a consult over from the portal, who holds it and since when, the clinic's list past 50 consults
and long minutes participants, against a real EHR and teleconsult (gunicorn processes on loopback), the
real FerretDB and RabbitMQ. The portal runs in this process (Flask's test client) with its demo users.

Covered: the portal's doctor taking over a consult given to BS. Bình while other hub doctors take it over
at the same moment (teleconsult's ``$accept`` under ``If-Match``, several rounds): exactly one of them holds
it, and when it is not the portal's doctor, the page says who took it meanwhile; a take-over that lost
between the portal's read and its request (another doctor's take-over in that window) is 412 from
teleconsult and said the same way; the clinic's page names the holder and since when (the version's time);
the clinic's list walked page by page over 57 consults, each once, open first, newest first; minutes whose
participants run past 200 characters are stored whole. A stale reassign confirmation racing another
doctor's acceptance (both on version 1, If-Match) never gives an accepted consult away; one pressed after it
is refused and said; a stale acceptance after a reassign says the consult was given, not taken.
"""

from __future__ import annotations

import base64
import json
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from tests.integration.consult_stack import CLINIC, HUB, _names_from_this_ehr, _patient  # noqa: F401 - a fixture
from tests.integration.test_portal_consult_patients import ICD10, _headers
from tests.integration.test_portal_visit_changes import portal  # noqa: F401 - the portal, answers never kept
from tests.support import csrf_token, emptied, portal_signed_in, put_resources, wait_for

pytestmark = pytest.mark.integration

PATIENT = "p-lan"
OTHERS = ["bs-tk-0", "bs-tk-1", "bs-tk-2", "bs-tk-3"]  # hub doctors taking over beside the portal's
NAMES = {"bs-tran-thi-binh": ("Trần", "Thị Bình"), "bs-tk-0": ("Lê", "Văn Cường"), "bs-tk-1": ("Phạm", "Thị Dung"),
         "bs-tk-2": ("Hoàng", "Văn Em"), "bs-tk-3": ("Võ", "Thị Giang")}


def _shown(pid: str) -> str:
    family, given = NAMES[pid]
    return f"{family} {given}"


@pytest.fixture(scope="module")
def ehr(takeover_services, mongo_client, dev_key):
    """The session's take-over EHR (its URL; takeover_services, tests/integration/conftest.py, shared by this
    module, test_portal_worklist_pages and test_portal_minutes_meanwhile) with nothing from an earlier module
    in it or in teleconsult's database: the hub's doctors, the clinic and Nguyễn Thị Lan alone."""
    emptied(mongo_client, takeover_services["ehr_db"], takeover_services["tc_db"])
    seed: list[dict[str, Any]] = [
        {"resourceType": "Organization", "id": HUB, "name": "Bệnh viện Đa khoa Đồng Tháp"},
        {"resourceType": "Organization", "id": CLINIC, "name": "Trạm Y tế xã Mỹ Hiệp"},
        {"resourceType": "Practitioner", "id": "bs-nguyen-van-an", "name": [{"family": "Nguyễn",
                                                                             "given": ["Văn", "An"]}]},
        {**_patient(PATIENT, "Nguyễn", "Thị Lan", "female")},
    ]
    for pid, (family, given) in NAMES.items():
        seed.append({"resourceType": "Practitioner", "id": pid, "name": [{"family": family,
                                                                          "given": given.split()}]})
        seed.append({"resourceType": "PractitionerRole", "id": f"role-{pid}",
                     "practitioner": {"reference": f"Practitioner/{pid}"},
                     "organization": {"reference": f"Organization/{HUB}"}})
    put_resources(takeover_services["ehr"], dev_key, seed)
    return takeover_services["ehr"]


@pytest.fixture(scope="module")
def tc(takeover_services, ehr):
    return takeover_services["tc"]


@pytest.fixture(scope="module")
def clinic_h(dev_key) -> dict[str, str]:
    return _headers(dev_key, "clinic", facility=CLINIC, practitioner="ys-vo-minh-tam", sub="portal-clinic")


@pytest.fixture(scope="module")
def doctors(dev_key) -> dict[str, dict[str, str]]:
    return {pid: _headers(dev_key, "doctor", facility=HUB, practitioner=pid, sub=pid) for pid in NAMES}


def _submit(tc: str, clinic_h: dict[str, str], note: str = "Xin ý kiến tuyến trên.") -> str:
    sr = {"resourceType": "ServiceRequest", "status": "active", "intent": "order", "priority": "urgent",
          "subject": {"reference": f"Patient/{PATIENT}"}, "requester": {"reference": f"Organization/{CLINIC}"},
          "reasonCode": [{"coding": [{"system": ICD10, "code": "I10", "display": "Tăng huyết áp"}]}],
          "note": [{"text": note}], "performer": [{"reference": f"Organization/{HUB}"}]}
    r = httpx.post(f"{tc}/fhir/ServiceRequest/$submit", content=json.dumps(sr), headers=clinic_h, timeout=30)
    assert r.status_code == 201, r.text
    return next(e["resource"]["id"] for e in r.json()["entry"] if e["resource"]["resourceType"] == "Task")


def _given_to_binh(tc: str, clinic_h, doctors) -> str:
    tid = _submit(tc, clinic_h)
    body = {"resourceType": "Parameters", "parameter": [
        {"name": "practitioner", "valueReference": {"reference": "Practitioner/bs-tran-thi-binh"}}]}
    r = httpx.post(f"{tc}/fhir/Task/{tid}/$reassign", content=json.dumps(body), headers=doctors["bs-tk-0"],
                   timeout=30)
    assert r.status_code == 200 and r.headers["ETag"] == 'W/"2"', r.text
    return tid


def _task(tc: str, tid: str, h: dict[str, str]) -> dict[str, Any]:
    return httpx.get(f"{tc}/fhir/Task/{tid}", headers=h, timeout=30).json()


def _fact(page: str, testid: str) -> tuple[str, str] | None:
    m = re.search(rf'<dt>([^<]*)</dt><dd[^>]*data-testid="{testid}">([^<]*)</dd>', page)
    return (m.group(1), m.group(2)) if m else None


def _text(page: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", page))


@pytest.mark.parametrize("round_", range(4))
def test_the_portals_take_over_racing_other_doctors_one_holds_it_and_a_loser_is_told_who(
        portal, tc, clinic_h, doctors, round_):
    tid = _given_to_binh(tc, clinic_h, doctors)
    me = portal_signed_in(portal, "doctor")
    page = me.get(f"/tasks/{tid}").get_data(as_text=True)
    assert 'data-testid="takeover"' in page and 'name="version" value="2"' in page
    token = csrf_token(page)
    barrier = threading.Barrier(1 + len(OTHERS))

    def portal_take() -> int:
        barrier.wait()
        r = me.post(f"/tasks/{tid}/accept", data={"csrf_token": token, "version": "2",
                                                  "takeover": "Practitioner/bs-tran-thi-binh"})
        portal_take.page = r.get_data(as_text=True)  # type: ignore[attr-defined]
        return r.status_code

    def other_take(pid: str) -> int:
        barrier.wait()
        return httpx.post(f"{tc}/fhir/Task/{tid}/$accept", content=json.dumps({"resourceType": "Parameters"}),
                          headers={**doctors[pid], "If-Match": 'W/"2"'}, timeout=30).status_code

    with ThreadPoolExecutor(1 + len(OTHERS)) as pool:
        mine = pool.submit(portal_take)
        theirs = [pool.submit(other_take, pid) for pid in OTHERS]
        codes = {"portal": mine.result(), **{pid: f.result() for pid, f in zip(OTHERS, theirs, strict=True)}}
    won = [who for who, code in codes.items() if code in (200, 302)]
    assert len(won) == 1, codes
    assert all(code in (409, 412) for who, code in codes.items() if who not in won), codes
    task = _task(tc, tid, doctors["bs-tk-0"])
    history = httpx.get(f"{tc}/fhir/Task/{tid}/_history", headers=doctors["bs-tk-0"], timeout=30).json()
    assert task["status"] == "accepted" and task["meta"]["versionId"] == "3" and len(history["entry"]) == 3
    holder = "bs-nguyen-van-an" if won == ["portal"] else won[0]
    assert task["owner"]["reference"] == f"Practitioner/{holder}"
    if won != ["portal"]:  # the portal's doctor lost: the page says who took it meanwhile
        said = _text(portal_take.page)  # type: ignore[attr-defined]
        assert f"Trong lúc đó một bác sĩ khác đã nhận ca này: {_shown(holder)}" in said, said[:1500]


def test_a_take_over_lost_between_the_portals_read_and_its_request_is_said(portal, tc, clinic_h, doctors,
                                                                           monkeypatch):
    """Another doctor takes the consult over just after the portal read the Task for the click: the portal's
    $accept carries the page's version, teleconsult answers 412, and the page names the other doctor."""
    from sen_portal.web import doctor

    tid = _given_to_binh(tc, clinic_h, doctors)
    me = portal_signed_in(portal, "doctor")
    page = me.get(f"/tasks/{tid}").get_data(as_text=True)
    real = doctor.fhir_get
    sent: list[int] = []

    def read_then_taken(service, path, params=None, **kw):
        answer = real(service, path, params, **kw)
        if path == "/fhir/Task" and (params or {}).get("_id") == tid and not sent:
            r = httpx.post(f"{tc}/fhir/Task/{tid}/$accept", content=json.dumps({"resourceType": "Parameters"}),
                           headers={**doctors["bs-tk-1"], "If-Match": 'W/"2"'}, timeout=30)
            sent.append(r.status_code)
        return answer

    monkeypatch.setattr(doctor, "fhir_get", read_then_taken)
    r = me.post(f"/tasks/{tid}/accept", data={"csrf_token": csrf_token(page), "version": "2",
                                              "takeover": "Practitioner/bs-tran-thi-binh"})
    assert sent == [200]
    assert r.status_code == 409
    said = _text(r.get_data(as_text=True))
    assert f"Trong lúc đó một bác sĩ khác đã nhận ca này: {_shown('bs-tk-1')} (từ " in said, said[:1500]
    assert _task(tc, tid, doctors["bs-tk-0"])["owner"]["reference"] == "Practitioner/bs-tk-1"


def _reassign_confirmation(me, tid: str, to: str) -> dict[str, str]:
    """The portal doctor's first press of 'Chuyển cho bác sĩ khác' on the page: the confirmation's form."""
    page = me.get(f"/tasks/{tid}").get_data(as_text=True)
    assert 'name="version" value="1"' in page
    r = me.post(f"/tasks/{tid}/reassign", data={"csrf_token": csrf_token(page), "practitioner": to,
                                                "version": "1"})
    body = r.get_data(as_text=True)
    assert r.status_code == 200 and 'data-testid="reassign-confirm"' in body, _text(body)[:1500]
    form = body[body.index('data-testid="reassign-confirm"'):]
    form = form[:form.index("</form>")]
    assert 'name="version" value="1"' in form and 'name="confirm" value="reassign"' in form  # the shared step
    return {"csrf_token": csrf_token(body), "practitioner": to, "confirming": "reassign", "confirm": "reassign",
            "version": "1"}


@pytest.mark.parametrize("round_", range(3))
def test_a_stale_reassign_confirmation_racing_an_acceptance_never_gives_an_accepted_consult(
        portal, tc, clinic_h, doctors, round_):
    """The portal's doctor chose BS. Cường and got the confirmation; BS. Dung presses 'Nhận' at the moment the
    confirmation is pressed. Both are sent on version 1 (If-Match): one goes through. The consult is never
    'accepted' by a doctor who did not accept it: accepted, it is BS. Dung's and the portal's page says she
    took it; given, it is BS. Cường's, still new, and her acceptance was refused."""
    tid = _submit(tc, clinic_h)
    me = portal_signed_in(portal, "doctor")
    confirm = _reassign_confirmation(me, tid, "Practitioner/bs-tk-0")
    barrier = threading.Barrier(2)

    def portal_confirms() -> tuple[int, str]:
        barrier.wait()
        r = me.post(f"/tasks/{tid}/reassign", data=confirm)
        return r.status_code, r.get_data(as_text=True)

    def dung_accepts() -> int:
        barrier.wait()
        return httpx.post(f"{tc}/fhir/Task/{tid}/$accept", content=json.dumps({"resourceType": "Parameters"}),
                          headers={**doctors["bs-tk-1"], "If-Match": 'W/"1"'}, timeout=30).status_code

    with ThreadPoolExecutor(2) as pool:
        mine, hers = pool.submit(portal_confirms), pool.submit(dung_accepts)
        (code, page), accepted = mine.result(), hers.result()
    task = _task(tc, tid, doctors["bs-tk-0"])
    assert task["meta"]["versionId"] == "2", task
    if accepted == 200:
        assert code == 409 and task["status"] == "accepted"
        assert task["owner"]["reference"] == "Practitioner/bs-tk-1"
        said = _text(page)
        assert f"Trong lúc đó một bác sĩ khác đã nhận ca này: {_shown('bs-tk-1')} (từ " in said, said[:1500]
    else:
        assert accepted in (409, 412) and code == 302
        assert task["status"] == "requested" and task["owner"]["reference"] == "Practitioner/bs-tk-0"


def test_a_reassign_confirmed_after_an_acceptance_is_refused_and_said(portal, tc, clinic_h, doctors):
    """The confirmation pressed after BS. Dung accepted: teleconsult answers 412, nothing given; then a stale
    'Nhận' on a page from before a reassign says the consult was given, not taken."""
    tid = _submit(tc, clinic_h)
    me = portal_signed_in(portal, "doctor")
    confirm = _reassign_confirmation(me, tid, "Practitioner/bs-tk-0")
    r = httpx.post(f"{tc}/fhir/Task/{tid}/$accept", content=json.dumps({"resourceType": "Parameters"}),
                   headers={**doctors["bs-tk-1"], "If-Match": 'W/"1"'}, timeout=30)
    assert r.status_code == 200, r.text
    r = me.post(f"/tasks/{tid}/reassign", data=confirm)
    assert r.status_code == 409
    assert f"Trong lúc đó một bác sĩ khác đã nhận ca này: {_shown('bs-tk-1')} (từ " in _text(r.get_data(as_text=True))
    task = _task(tc, tid, doctors["bs-tk-0"])
    assert task["status"] == "accepted" and task["owner"]["reference"] == "Practitioner/bs-tk-1"

    tid = _submit(tc, clinic_h)
    page = me.get(f"/tasks/{tid}").get_data(as_text=True)
    body = {"resourceType": "Parameters", "parameter": [
        {"name": "practitioner", "valueReference": {"reference": "Practitioner/bs-tk-2"}}]}
    r = httpx.post(f"{tc}/fhir/Task/{tid}/$reassign", content=json.dumps(body),
                   headers={**doctors["bs-tk-1"], "If-Match": 'W/"1"'}, timeout=30)
    assert r.status_code == 200, r.text
    r = me.post(f"/tasks/{tid}/accept", data={"csrf_token": csrf_token(page), "version": "1"})
    said = _text(r.get_data(as_text=True))
    assert r.status_code == 409, said[:1500]
    assert f"Ca hội chẩn này vừa được chuyển cho {_shown('bs-tk-2')} (lúc " in said, said[:1500]
    task = _task(tc, tid, doctors["bs-tk-0"])
    assert task["status"] == "requested" and task["owner"]["reference"] == "Practitioner/bs-tk-2"


def test_the_clinics_page_names_the_holder_and_since_when(portal, tc, clinic_h, doctors):
    tid = _given_to_binh(tc, clinic_h, doctors)
    r = httpx.post(f"{tc}/fhir/Task/{tid}/$accept", content=json.dumps({"resourceType": "Parameters"}),
                   headers={**doctors["bs-tk-2"], "If-Match": 'W/"2"'}, timeout=30)
    assert r.status_code == 200, r.text
    history = httpx.get(f"{tc}/fhir/Task/{tid}/_history/3", headers=doctors["bs-tk-2"], timeout=30).json()
    from sen_portal.web.formatting import when

    clinic = portal_signed_in(portal, "clinic")
    with portal.test_request_context():
        expected = when(history["meta"]["lastUpdated"])
    page = clinic.get(f"/consults/{tid}").get_data(as_text=True)
    assert _fact(page, "task-owner") == ("Bác sĩ chuyên khoa", _shown("bs-tk-2"))
    assert _fact(page, "task-held-since") == ("Giữ ca từ", expected)
    english = portal_signed_in(portal, "clinic", lang="en").get(f"/consults/{tid}").get_data(as_text=True)
    assert _fact(english, "task-held-since") == ("Held since", expected)
    # given to BS. Bình first (version 2), taken over since: "since" is the take-over's version, not hers
    doctor_page = portal_signed_in(portal, "doctor").get(f"/tasks/{tid}").get_data(as_text=True)
    assert _fact(doctor_page, "task-held-since") == ("Giữ ca từ", expected)


def test_the_clinics_list_holds_every_consult_page_by_page_past_fifty(portal, tc, clinic_h, doctors):
    """The list was the 50 newest of teleconsult's worklist, sorted by the portal: a clinic with more saw a
    wrong order and missed some. Teleconsult now sorts and pages; the page links the next one."""
    made = [_submit(tc, clinic_h, note=f"Ca số {i}") for i in range(57)]
    for tid in made[:5]:  # five end: listed after the open ones
        r = httpx.post(f"{tc}/fhir/Task/{tid}/$cancel", content=json.dumps({"resourceType": "Parameters"}),
                       headers=clinic_h, timeout=30)
        assert r.status_code == 200, r.text
    everything = []
    url: str | None = "/consults"
    clinic = portal_signed_in(portal, "clinic")
    pages = 0
    while url:
        page = clinic.get(url).get_data(as_text=True)
        everything += list(dict.fromkeys(re.findall(r'href="/consults/([A-Za-z0-9\-.]+)"', page)))
        m = re.search(r'<a rel="next" data-testid="consults-next" href="([^"]+)"', page)
        url = m.group(1).replace("&amp;", "&") if m else None
        pages += 1
        assert pages < 10
    assert pages >= 2
    assert len(everything) == len(set(everything)) and set(made) <= set(everything)
    tasks = {t["id"]: t for t in (_task(tc, tid, clinic_h) for tid in everything)}
    final = [tid for tid in everything if tasks[tid]["status"] in ("completed", "rejected", "cancelled")]
    opened = [tid for tid in everything if tid not in final]
    assert everything == opened + final  # open first
    for part in (opened, final):
        times = [tasks[tid]["authoredOn"] for tid in part]
        assert times == sorted(times, reverse=True)  # each newest first
    assert set(made[:5]) <= set(final)


def test_minutes_with_a_long_participants_list_are_stored_whole(portal, tc, clinic_h):
    tid = _submit(tc, clinic_h)
    me = portal_signed_in(portal, "doctor")
    page = me.get(f"/tasks/{tid}").get_data(as_text=True)
    assert me.post(f"/tasks/{tid}/accept", data={"csrf_token": csrf_token(page)}).status_code == 302
    page = me.get(f"/tasks/{tid}").get_data(as_text=True)
    others = "; ".join(f"BS. Người tham dự số {i} — bác sĩ điều trị tuyến xã" for i in range(12))
    participants = f"BS. Nguyễn Văn An — chủ trì; {others}"
    assert len(participants) > 500
    r = me.post(f"/tasks/{tid}/complete", data={
        "csrf_token": csrf_token(page), "participants": participants, "history": "Tăng huyết áp 5 năm.",
        "findings": "HA 170/100 mmHg.", "conclusion": "Tăng huyết áp độ 2.", "diagnosis": "I10",
        "recommendations": "Amlodipin 10 mg.", "chair": "BS. Nguyễn Văn An"})
    assert r.status_code == 302, _text(r.get_data(as_text=True))[:1500]

    def done() -> bool:
        return _task(tc, tid, clinic_h).get("status") == "completed"

    wait_for(done)
    task = _task(tc, tid, clinic_h)
    kept = next(o for o in task["output"] if o["type"]["coding"][0]["code"] == "minutes")
    written = json.loads(base64.b64decode(kept["valueAttachment"]["data"]))
    assert written["participants"][0]["role"] == f"chủ trì; {others}"  # whole, not cut at 200
