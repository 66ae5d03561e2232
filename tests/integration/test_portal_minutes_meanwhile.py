# ruff: noqa: F811 - the fixtures imported from the other portal modules are parameters by name
"""A doctor's minutes (and the other doctor steps) sent on the Task version the page showed, while the consult
moves on meanwhile, against a real EHR and teleconsult (gunicorn processes on loopback), the real FerretDB and
RabbitMQ; the portal in this process (Flask's test client) with its demo doctor, BS. Nguyễn Văn An.

What makes a Task version (teleconsult): every step of its chain ($accept, $start, $request-info,
$provide-info, $reassign, $reject, $cancel, $complete, the SLA sweep's $escalate, the backfill's $retag).
A message on the thread ($message) and the visit's reminders make none. Covered:

- the clinic's message through teleconsult's HTTP API while the doctor writes: the Task's version stays, the
  minutes go through on the page's version;
- another doctor's question and the clinic's answer, then the doctor's own start in another tab (versions
  3-5): the minutes written on version 2 go through, sent again by the portal on version 5, once;
- the clinic cancels while the doctor writes: the minutes are refused with a readable sentence (Vietnamese,
  English), nothing completed, everything typed shown again (the form is gone from a cancelled consult);
- the cancel landing between the portal's read of the consult and its second send: refused the same way;
- the minutes racing the clinic's cancel (three rounds): one of them wins, the other is told; never both.
"""

from __future__ import annotations

import json
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from tests.integration.consult_stack import HUB, _names_from_this_ehr  # noqa: F401 - a fixture used by name
from tests.integration.test_portal_consult_patients import _headers
from tests.integration.test_portal_consult_takeover import (  # noqa: F401 - fixtures used by name
    _submit,
    _task,
    _text,
    clinic_h,
    doctors,
    ehr,
    tc,
)
from tests.integration.test_portal_visit_changes import portal  # noqa: F401 - the portal, answers never kept
from tests.support import csrf_token, flashed_steps, portal_signed_in

pytestmark = pytest.mark.integration

TYPED = {"participants": "BS. Nguyễn Văn An — chủ trì; YS. Võ Minh Tâm — cơ sở gửi",
         "history": "Tăng huyết áp 5 năm, đau đầu 3 ngày.", "findings": "HA 170/100 mmHg, mạch 88 lần/phút.",
         "discussion": "Nghĩ tăng huyết áp độ 2, chưa có tổn thương cơ quan đích.",
         "conclusion": "Tăng huyết áp độ 2.", "diagnosis": "I10", "recommendations": "Amlodipin 10 mg mỗi sáng.",
         "chair": "BS. Nguyễn Văn An"}


@pytest.fixture(scope="module")
def me_h(dev_key) -> dict[str, str]:
    """The portal's demo doctor's own token, for what they do in another tab."""
    return _headers(dev_key, "doctor", facility=HUB, practitioner="bs-nguyen-van-an", sub="portal-doctor")


def _post(tc: str, tid: str, op: str, headers: dict[str, str], *params: dict[str, Any]) -> httpx.Response:
    body = {"resourceType": "Parameters", **({"parameter": list(params)} if params else {})}
    return httpx.post(f"{tc}/fhir/Task/{tid}/${op}", content=json.dumps(body), headers=headers, timeout=30)


def _accepted_page(portal: Any, tc: str, clinic_h: dict[str, str]) -> tuple[Any, str, str]:
    """A consult accepted by the portal's doctor, and their page of it (the minutes form on version 2)."""
    tid = _submit(tc, clinic_h)
    me = portal_signed_in(portal, "doctor")
    page = me.get(f"/tasks/{tid}").get_data(as_text=True)
    assert me.post(f"/tasks/{tid}/accept", data={"csrf_token": csrf_token(page), "version": "1"}).status_code == 302
    page = me.get(f"/tasks/{tid}").get_data(as_text=True)
    form = page[page.index('action="/tasks/' + tid + '/complete"'):]
    assert 'name="version" value="2"' in form[:form.index("</form>")]
    return me, tid, page


def _sign(me: Any, tid: str, page: str, version: str = "2") -> Any:
    return me.post(f"/tasks/{tid}/complete", data={"csrf_token": csrf_token(page), "version": version, **TYPED})


def _history(tc: str, tid: str, h: dict[str, str]) -> list[dict[str, Any]]:
    bundle = httpx.get(f"{tc}/fhir/Task/{tid}/_history", headers=h, timeout=30).json()
    return sorted((e["resource"] for e in bundle.get("entry") or []), key=lambda t: int(t["meta"]["versionId"]))


def test_a_clinic_message_while_the_minutes_are_written_does_not_refuse_them(portal, tc, clinic_h):
    me, tid, page = _accepted_page(portal, tc, clinic_h)
    r = _post(tc, tid, "message", clinic_h, {"name": "text", "valueString": "Người bệnh vừa đo lại HA 165/95."})
    assert r.status_code == 201, r.text
    assert _task(tc, tid, clinic_h)["meta"]["versionId"] == "2"  # a message is not a step: no Task version
    r = _sign(me, tid, page)
    assert r.status_code == 302 and flashed_steps(me)[-1] == (f"/tasks/{tid}", "done=1"), \
        _text(r.get_data(as_text=True))[:1500]
    task = _task(tc, tid, clinic_h)
    assert task["status"] == "completed" and task["meta"]["versionId"] == "3"


def test_an_answered_question_and_a_start_in_another_tab_do_not_refuse_the_minutes(portal, tc, clinic_h, doctors,
                                                                                   me_h):
    """Written on version 2; meanwhile another hub doctor asks the clinic (3, on hold), the clinic answers (4,
    accepted again), the doctor presses 'start' in another tab (5). Each is a Task version; none changes who
    holds the consult or that it can be signed: the minutes go through, on version 5, nothing said."""
    me, tid, page = _accepted_page(portal, tc, clinic_h)
    r = _post(tc, tid, "request-info", doctors["bs-tk-0"], {"name": "question", "valueString": "Xin điện tim."})
    assert r.status_code == 200, r.text
    r = _post(tc, tid, "provide-info", clinic_h, {"name": "answer", "valueString": "Điện tim nhịp xoang."})
    assert r.status_code == 200, r.text
    r = _post(tc, tid, "start", me_h)
    assert r.status_code == 200 and r.headers["ETag"] == 'W/"5"', r.text
    r = _sign(me, tid, page)
    assert r.status_code == 302 and flashed_steps(me)[-1] == (f"/tasks/{tid}", "done=1"), \
        _text(r.get_data(as_text=True))[:1500]
    versions = _history(tc, tid, clinic_h)
    assert [v["status"] for v in versions] == ["requested", "accepted", "on-hold", "accepted", "in-progress",
                                               "completed"]
    assert versions[-1]["owner"]["reference"] == "Practitioner/bs-nguyen-van-an"
    # the minutes' time from the start pressed in the other tab (the Task as the portal read it again)
    assert versions[-1]["executionPeriod"]["start"] == versions[4]["executionPeriod"]["start"]


@pytest.mark.parametrize(("lang", "said"), [
    ("vi", "Phòng khám đã hủy ca hội chẩn này lúc {at}. Chưa có gì được gửi. Nội dung bạn đã nhập vẫn được giữ "
           "ở bên dưới."),
    ("en", "The clinic cancelled this consult at {at}. Nothing was sent. What you typed is kept below.")])
def test_minutes_on_a_consult_the_clinic_cancelled_meanwhile_are_refused_readably_and_kept(
        portal, tc, clinic_h, lang, said):
    me, tid, _ = _accepted_page(portal, tc, clinic_h)
    if lang == "en":
        me = portal_signed_in(portal, "doctor", lang="en")
    page = me.get(f"/tasks/{tid}").get_data(as_text=True)
    r = _post(tc, tid, "cancel", clinic_h, {"name": "reason", "valueString": "Người bệnh đã chuyển viện."})
    assert r.status_code == 200, r.text
    r = _sign(me, tid, page)
    body = r.get_data(as_text=True)
    assert r.status_code == 409, _text(body)[:1500]
    from sen_portal.web.formatting import when

    with portal.test_request_context():
        at = when(_task(tc, tid, clinic_h)["meta"]["lastUpdated"])
    assert said.format(at=at) in _text(body), _text(body)[:1500]
    assert "Người bệnh đã chuyển viện." in _text(body)  # the clinic's reason, on the page
    unsent = body[body.index('data-testid="unsent"'):]
    for text in TYPED.values():
        assert text in unsent, text
    assert 'action="/tasks/' + tid + '/complete"' not in body  # nothing to sign on a cancelled consult
    task = _task(tc, tid, clinic_h)
    assert task["status"] == "cancelled" and task["meta"]["versionId"] == "3"


def test_a_cancel_between_the_portals_read_and_its_second_send_is_refused(portal, tc, clinic_h, doctors,
                                                                          monkeypatch):
    """The minutes on version 2 meet a question asked and answered (version 4): the portal reads the consult
    again, finds it as the page showed it, and sends them on version 4; the clinic cancels right after that
    read. teleconsult answers 412 again, the portal reads version 5 (cancelled) and refuses: nothing signed."""
    from sen_portal.web import doctor

    me, tid, page = _accepted_page(portal, tc, clinic_h)
    assert _post(tc, tid, "request-info", doctors["bs-tk-1"], {"name": "question", "valueString": "?"}) \
        .status_code == 200
    assert _post(tc, tid, "provide-info", clinic_h, {"name": "answer", "valueString": "Có."}).status_code == 200
    real, cancelled = doctor.fhir_get, []

    def read_then_cancelled(service, path, params=None, **kw):
        answer = real(service, path, params, **kw)
        if path == "/fhir/Task" and (params or {}).get("_id") == tid and not cancelled:
            cancelled.append(_post(tc, tid, "cancel", clinic_h).status_code)
        return answer

    monkeypatch.setattr(doctor, "fhir_get", read_then_cancelled)
    r = _sign(me, tid, page)
    assert cancelled == [200]
    assert r.status_code == 409, _text(r.get_data(as_text=True))[:1500]
    assert "Phòng khám đã hủy ca hội chẩn này lúc" in _text(r.get_data(as_text=True))
    assert [v["status"] for v in _history(tc, tid, clinic_h)][-1] == "cancelled"


@pytest.mark.parametrize("round_", range(3))
def test_minutes_racing_the_clinics_cancel_one_wins_the_other_is_told(portal, tc, clinic_h, doctors, round_):
    """The minutes (on a page made stale by an answered question, so the portal may send them twice) and the
    clinic's cancel at the same moment: the consult ends once, completed or cancelled; the loser is told."""
    me, tid, page = _accepted_page(portal, tc, clinic_h)
    assert _post(tc, tid, "request-info", doctors["bs-tk-2"], {"name": "question", "valueString": "?"}) \
        .status_code == 200
    assert _post(tc, tid, "provide-info", clinic_h, {"name": "answer", "valueString": "Có."}).status_code == 200
    barrier = threading.Barrier(2)

    def sign() -> tuple[int, str]:
        barrier.wait()
        r = _sign(me, tid, page)
        return r.status_code, _text(r.get_data(as_text=True))

    def cancel() -> int:
        barrier.wait()
        return _post(tc, tid, "cancel", clinic_h).status_code

    with ThreadPoolExecutor(2) as pool:
        signed, cancelled = pool.submit(sign), pool.submit(cancel)
        (code, said), cancel_code = signed.result(), cancelled.result()
    statuses = [v["status"] for v in _history(tc, tid, clinic_h)]
    assert len([s for s in statuses if s in ("completed", "cancelled")]) == 1, statuses
    if statuses[-1] == "completed":
        assert code == 302 and cancel_code == 409
    else:
        assert cancel_code == 200 and code == 409 and "Phòng khám đã hủy ca hội chẩn này lúc" in said, said[:1500]
        assert re.search(r"HA 170/100 mmHg", said)
