"""A consult's visit ends with the consult, on the real FerretDB, over HTTP (a real EHR, teleconsult
under gunicorn with two workers).

``Task/$cancel`` (the clinic), ``$reject`` (the hub) and ``$complete`` close the consult's visit chain
(``scheduling.close_visits``: a closing link in ``consult_visits``) and end its active visit: a visit
still to come is ``cancelled`` with the reason (its slot offered again, its reminders stopped), a visit
that had begun is ``fulfilled`` by ``$complete``. A booking racing the close cannot leave a booked visit
on a closed consult (10 bookings at once with one ``$cancel``, several rounds), and a close whose
request died after its step is finished by the relay's gate before the step's event goes out.
"""

from __future__ import annotations

import json
import random
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sen_shared.bus.outbox import entry_event
from sen_shared.claims import latest
from sen_shared.fhir.body import unpack
from sen_teleconsult.domain import availability as av
from sen_teleconsult.domain import reminders
from sen_teleconsult.domain import scheduling as sch

from tests.integration.test_teleconsult_booking import ALL_DAYS, DAY, _env, _local, _schedule, _with_patient
from tests.integration.test_teleconsult_consults import (  # noqa: F401 - fixtures: the EHR, the tokens, ...
    HUB,
    consults,
    db,
    ehr,
    minutes,
    op,
    post,
    submit,
    submitted,
    tokens,
)
from tests.support import wait_for, web_process

pytestmark = pytest.mark.integration

SCHED, DOCTOR = "sched-close", "Practitioner/dr-0"
BOOKERS = 10


@pytest.fixture(scope="module")
def tc_db(run_id):
    return f"sen_t{run_id}_tc_close"


@pytest.fixture(scope="module")
def tc_env(base_env, tc_db, ehr):  # noqa: F811
    return _env(base_env, SEN_DB=tc_db, SEN_EHR_URL=ehr, SEN_HTTP_TIMEOUT="5", SEN_IDEMPOTENCY_WAIT_SECONDS="20")


@pytest.fixture(scope="module")
def tc(tc_env, tmp_path_factory, mongo_client, tc_db, tokens):  # noqa: F811
    log = tmp_path_factory.mktemp("tc-close") / "tc.log"
    with web_process("teleconsult", tc_env, log, WEB_CONCURRENCY="2") as url:
        # the hub's cardiologist, every day all day in 15-minute slots (a visit that has begun can be booked)
        body = _schedule(SCHED, DOCTOR, org=f"Organization/{HUB}", windows=[(ALL_DAYS, "00:00:00", "23:45:00")],
                         slot_minutes=15)
        r = httpx.put(f"{url}/fhir/Schedule/{SCHED}", content=json.dumps(body), headers=tokens["admin"])
        assert r.status_code in (200, 201), r.text
        yield url
    mongo_client.drop_database(tc_db)


def _consult(tc, tokens, accept: bool = True) -> tuple[str, str]:  # noqa: F811
    sr_id, task_id = submitted(submit(tc, tokens))
    if accept:
        assert op(tc, task_id, "$accept", "dr", tokens).status_code == 200
    return sr_id, task_id


def _find(tc, tokens, day, n: int, start: str = "07:00", end: str = "17:00") -> list[dict[str, Any]]:  # noqa: F811
    body = {"resourceType": "Parameters", "parameter": [
        {"name": "start", "valueString": _local(day, start)}, {"name": "end", "valueString": _local(day, end)},
        {"name": "practitioner", "valueReference": {"reference": DOCTOR}}, {"name": "_count", "valueInteger": 100}]}
    found: list[dict[str, Any]] = []
    for _ in range(20):  # a process trusts the schedules it read for 2 s (SCHEDULES_FRESH_SECONDS)
        r = post(f"{tc}/fhir/Appointment/$find", body, tokens["a"])
        assert r.status_code == 200, r.text
        found = [e["resource"] for e in r.json().get("entry", [])]
        if len(found) >= n:
            return found
        threading.Event().wait(0.2)
    raise AssertionError(f"only {len(found)} free slots")


def _book(tc, tokens, proposal, sr_id, who: str = "a") -> httpx.Response:  # noqa: F811
    body = {"resourceType": "Parameters", "parameter": [
        {"name": "appointment-resource", "resource": _with_patient(proposal, "Patient/pa", f"ServiceRequest/{sr_id}")}]}
    return post(f"{tc}/fhir/Appointment/$book", body, tokens[who])


def _booked_consult(tc, tokens, days: int) -> tuple[str, str, dict[str, Any], dict[str, Any]]:  # noqa: F811
    """An accepted consult with a visit booked ``days`` after DAY: its ids, the slot's proposal, the visit."""
    sr_id, task_id = _consult(tc, tokens)
    proposal = _find(tc, tokens, DAY + timedelta(days=days), 1)[0]
    r = _book(tc, tokens, proposal, sr_id)
    assert r.status_code == 200, r.text
    return sr_id, task_id, proposal, r.json()["entry"][0]["resource"]


class Principal:
    """Who acts, for a step called in this process (``Actor.of``)."""

    scopes: frozenset[str] = frozenset()

    def __init__(self, role: str, facility: str, practitioner: str | None, sub: str) -> None:
        self.roles, self.facility, self.practitioner, self.sub = frozenset({role}), facility, practitioner, sub


def _appointments(mdb, sr_id: str) -> list[dict[str, Any]]:
    return [unpack(d)["res"] for d in mdb["Appointment"].find({"sp_based-on": f"ServiceRequest/{sr_id}"}, {"res": 1})]


def _active(mdb, sr_id: str) -> list[str]:
    return [a["id"] for a in _appointments(mdb, sr_id) if sch.current_status(mdb, a["id"]) in ("pending", "booked")]


def _slot_status(tc, tokens, proposal) -> str:  # noqa: F811
    return httpx.get(f"{tc}/fhir/{proposal['slot'][0]['reference']}", headers=tokens["a"]).json()["status"]


def _event(mdb, task_id: str, op_name: str) -> dict[str, Any]:
    [link] = [x for x in mdb.consult_steps.find({"k": task_id}) if x["op"] == op_name]
    [event] = [entry_event(e) for e in link["outbox"]]
    return event


def _closed_409(r: httpx.Response) -> None:
    assert r.status_code == 409, r.text
    text = r.json()["issue"][0]["diagnostics"]
    assert "is closed" in text and "new consult" in text, text


# --------------------------------------------------------------------------------- $cancel

def test_cancelling_the_consult_cancels_its_booked_visit_and_frees_the_slot(tc, tokens, db):  # noqa: F811
    sr_id, task_id = _consult(tc, tokens)
    day = DAY + timedelta(days=1)
    proposal = _find(tc, tokens, day, 2)[0]
    r = _book(tc, tokens, proposal, sr_id)
    assert r.status_code == 200, r.text
    visit = r.json()["entry"][0]["resource"]
    assert visit["status"] == "booked" and _slot_status(tc, tokens, proposal) == "busy"

    r = op(tc, task_id, "$cancel", "a", tokens, [{"name": "reason", "valueString": "Bệnh nhân đã chuyển viện"}])
    assert r.status_code == 200 and r.json()["status"] == "cancelled", r.text
    # in the same request: the visit cancelled with the reason, its slot offered again
    appt = httpx.get(f"{tc}/fhir/Appointment/{visit['id']}", headers=tokens["dr"]).json()
    assert appt["status"] == "cancelled", appt
    reason = appt["cancelationReason"]["text"]
    assert "hủy yêu cầu hội chẩn" in reason and "Bệnh nhân đã chuyển viện" in reason, reason
    assert all(p["status"] == "declined" for p in appt["participant"])
    assert _slot_status(tc, tokens, proposal) == "free"
    # $find answers from each process's link view: the other process learns the release within
    # LinkView.REFRESH_SECONDS (the booking's process may have learned the booked link itself and
    # not read the others' links since), so the freed slot is awaited, not read once
    wait_for(lambda: proposal["slot"] in [p["slot"] for p in _find(tc, tokens, day, 1)], timeout=30)
    assert _active(db, sr_id) == []
    # the consult takes no visit any more (on another free slot: a worker process may have seen the
    # cancelled visit's slot booked within LinkView.REFRESH_SECONDS); the cancelled one cannot be moved
    other = _find(tc, tokens, day, 2)[1]
    _closed_409(_book(tc, tokens, other, sr_id))
    r = post(f"{tc}/fhir/Appointment/{visit['id']}/$reschedule", {"resourceType": "Parameters", "parameter": [
        {"name": "appointment-resource", "resource": other}]}, tokens["a"])
    assert r.status_code == 409, r.text
    # its reminders stop: none is sent for it, however late the sweep runs
    sent: list[reminders.Message] = []

    class Keep:
        def send(self, message: reminders.Message) -> None:
            sent.append(message)

    reminders.send_due(db, Keep(), reminders.ReminderConfig(), now=sch.utcnow() + timedelta(days=30))
    join = [e["valueUrl"] for p in visit["participant"] for e in p.get("extension") or []
            if e["url"].endswith("appointment-join-url")]
    assert join and not [m for m in sent if any(j in m.body for j in join)]
    # a consult cancelled without a visit closes its chain all the same
    sr2, task2 = _consult(tc, tokens, accept=False)
    assert op(tc, task2, "$cancel", "a", tokens).status_code == 200
    assert latest(db[sch.CONSULT_VISITS], sr2)["cl"] == "cancelled"
    _closed_409(_book(tc, tokens, other, sr2))


def test_ten_bookings_racing_a_cancel_leave_no_booked_visit_on_the_cancelled_consult(tc, tokens, db):  # noqa: F811
    """Each round: a fresh accepted consult, 10 clinic tabs booking it on 10 free slots and the clinic's
    ``$cancel`` all at once (the cancel a little late in some rounds). Afterwards the consult is
    cancelled, none of its Appointments is active, and all 10 slots are free."""
    rng = random.Random(7)
    for round_ in range(6):
        sr_id, task_id = _consult(tc, tokens)
        day = DAY + timedelta(days=2)
        props = _find(tc, tokens, day, BOOKERS, f"{7 + round_:02d}:00", f"{9 + round_:02d}:30")[:BOOKERS]
        # the bookings spread over the cancel's time (more of them after it in later rounds), so the
        # close lands before a booking's visit link, between its visit link and its slot, and after it
        step = [0.0, 0.003, 0.006, 0.012, 0.025, 0.05][round_]
        delays = [i * step * rng.random() for i in range(BOOKERS)]
        barrier = threading.Barrier(BOOKERS + 1)

        def one(i: int, sr_id=sr_id, task_id=task_id, props=props, delays=delays, barrier=barrier) -> httpx.Response:
            with httpx.Client(timeout=60) as c:
                if i == BOOKERS:
                    barrier.wait()
                    return c.post(f"{tc}/fhir/Task/{task_id}/$cancel", headers=tokens["a"], content=json.dumps(
                        {"resourceType": "Parameters", "parameter": [{"name": "reason", "valueString": "trùng"}]}))
                body = {"resourceType": "Parameters", "parameter": [{"name": "appointment-resource", "resource":
                        _with_patient(props[i], "Patient/pa", f"ServiceRequest/{sr_id}")}]}
                barrier.wait()
                threading.Event().wait(delays[i])
                return c.post(f"{tc}/fhir/Appointment/$book", headers=tokens["a"], content=json.dumps(body))

        with ThreadPoolExecutor(BOOKERS + 1) as pool:
            answers = list(pool.map(one, range(BOOKERS + 1)))
        cancelled = answers[-1]
        assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled", cancelled.text
        codes = sorted(a.status_code for a in answers[:-1])
        assert set(codes) <= {200, 409} and codes.count(200) <= 1, codes  # one visit a consult, as ever
        # no active visit on the cancelled consult, every slot free again, each stored visit cancelled
        assert _active(db, sr_id) == [], round_
        assert [_slot_status(tc, tokens, p) for p in props] == ["free"] * BOOKERS, round_
        assert {a["status"] for a in _appointments(db, sr_id)} <= {"cancelled"}, round_
        assert latest(db[sch.CONSULT_VISITS], sr_id)["cl"] == "cancelled"
        _closed_409(_book(tc, tokens, props[0], sr_id))


# --------------------------------------------------------------------------------- $reject

def test_rejecting_an_on_hold_consult_cancels_its_visit(tc, tokens, db):  # noqa: F811
    sr_id, task_id, proposal, visit = _booked_consult(tc, tokens, 3)
    assert op(tc, task_id, "$request-info", "dr", tokens, [{"name": "question", "valueString": "ECG?"}]
              ).status_code == 200
    r = op(tc, task_id, "$reject", "dr", tokens, [{"name": "reason", "valueString": "Không thuộc chuyên khoa"}])
    assert r.status_code == 200 and r.json()["status"] == "rejected", r.text
    appt = httpx.get(f"{tc}/fhir/Appointment/{visit['id']}", headers=tokens["a"]).json()
    assert appt["status"] == "cancelled" and "từ chối" in appt["cancelationReason"]["text"], appt
    assert _slot_status(tc, tokens, proposal) == "free"


# ------------------------------------------------------------------------------- $complete

def test_completing_before_the_visit_cancels_it_and_after_its_start_fulfils_it(tc, tokens, db):  # noqa: F811
    # answered in writing before the booked time (the minutes dated now): the visit to come is cancelled
    sr_id, task_id, proposal, visit = _booked_consult(tc, tokens, 4)
    assert op(tc, task_id, "$start", "dr", tokens).status_code == 200  # begun early: the consult, not the visit
    now = sch.utcnow().astimezone(av.TZ)
    r = op(tc, task_id, "$complete", "dr", tokens, [
        *minutes((now - timedelta(minutes=20)).isoformat(timespec="seconds"), now.isoformat(timespec="seconds")),
        {"name": "appointment", "valueReference": {"reference": f"Appointment/{visit['id']}"}}])
    assert r.status_code == 200 and r.json()["status"] == "completed", r.text
    assert r.json()["executionPeriod"]["end"] == now.isoformat(timespec="seconds")  # the minutes' own time
    appt = httpx.get(f"{tc}/fhir/Appointment/{visit['id']}", headers=tokens["dr"]).json()
    assert appt["status"] == "cancelled" and "trước giờ hẹn" in appt["cancelationReason"]["text"], appt
    assert _slot_status(tc, tokens, proposal) == "free"
    assert "appointment" not in _event(db, task_id, "$complete")["data"]  # no visit took place

    # a visit that has begun (booked a while ago for now) is fulfilled by the minutes
    sr2, task2 = _consult(tc, tokens)
    cfg = sch.SchedulingConfig(reminder_offsets=())
    schedule = sch.availability_of(db, SCHED)
    begun = [s for s in av.slots_between(schedule, sch.utcnow() - timedelta(hours=1), sch.utcnow())][-1]
    earlier = sch.Ctx(cfg, now=begun.start - timedelta(minutes=30))
    request = sch.proposal(schedule, begun, patient="Patient/pa", service_request=f"ServiceRequest/{sr2}")
    started = sch.book(db, earlier, request=request)
    assert sch.current_status(db, started["id"]) == "booked"
    r = op(tc, task2, "$complete", "dr", tokens, minutes(started["start"], sch.utcnow().astimezone(av.TZ).isoformat(
        timespec="seconds")))
    assert r.status_code == 200, r.text
    appt = httpx.get(f"{tc}/fhir/Appointment/{started['id']}", headers=tokens["dr"]).json()
    assert appt["status"] == "fulfilled", appt
    assert _event(db, task2, "$complete")["data"]["appointment"] == f"Appointment/{started['id']}"


# ------------------------------------------------------------------------------- the relay

def test_a_cancel_whose_request_died_after_its_step_is_finished_by_the_relay_gate(  # noqa: F811
        tc, tokens, db, consults, monkeypatch):  # noqa: F811
    from sen_teleconsult.workflow import STEPS, Actor, SubmissionGate

    sr_id, task_id, proposal, visit = _booked_consult(tc, tokens, 5)
    # the request stops right after its step's claim (and its Task write): the visit is still booked
    monkeypatch.setattr(type(consults), "_end_visits_now", lambda self, link: None)
    link = consults.cancel(task_id, Actor.of(Principal("clinic", "tyt-an-binh", None, "nv-an-binh")), "đổi ý")
    monkeypatch.undo()
    assert sch.current_status(db, visit["id"]) == "booked"
    # the relay's gate, before consult.cancelled goes out, ends the visit
    gate = SubmissionGate(consults)
    pending = [db[STEPS].find_one({"_id": link["_id"]}, {f: 1 for f in ("outbox", *gate.fields)})]
    assert gate(pending) == pending
    assert sch.current_status(db, visit["id"]) == "cancelled"
    assert _slot_status(tc, tokens, proposal) == "free"
    assert gate(pending) == pending  # again: nothing more to do
    _closed_409(_book(tc, tokens, _find(tc, tokens, DAY + timedelta(days=5), 2)[1], sr_id))


def test_visits_of_consults_cancelled_before_this_are_ended_once_by_the_worker(  # noqa: F811
        tc, tokens, db, consults, monkeypatch):  # noqa: F811
    from sen_teleconsult import backfill
    from sen_teleconsult.workflow import Actor

    sr_id, task_id, proposal, visit = _booked_consult(tc, tokens, 6)
    # rejected as before the visit ended with the consult: no closing link, the visit still booked
    monkeypatch.setattr(type(consults), "_end_visits_now", lambda self, link: None)
    assert op(tc, task_id, "$request-info", "dr", tokens, [{"name": "question", "valueString": "?"}]).status_code == 200
    consults.reject(task_id, Actor.of(Principal("doctor", HUB, "dr-0", "dr-0")), "không phù hợp")
    monkeypatch.undo()
    assert latest(db[sch.CONSULT_VISITS], sr_id).get("cl") is None
    assert sch.current_status(db, visit["id"]) == "booked"
    counts = backfill.run_close_once(consults)
    assert counts is not None and counts["failed"] == 0 and counts["visits"] >= 1, counts
    assert sch.current_status(db, visit["id"]) == "cancelled"
    assert latest(db[sch.CONSULT_VISITS], sr_id)["cl"] == "rejected"
    assert _slot_status(tc, tokens, proposal) == "free"
    assert backfill.run_close_once(consults) is None  # done: once
