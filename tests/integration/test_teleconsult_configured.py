"""Issue 14's configurable points, on the real FerretDB, as the service is configured from its environment:

- the due time per priority (``SEN_CONSULT_SLA_HOURS``) decides when a consult is breached, and the breach
  escalates to the on-duty lead of the consult's own hub (``SEN_ON_DUTY_LEADS``), once;
- the public holidays (``SEN_TELECONSULT_HOLIDAYS``) take every slot of their day out of ``$find`` and a
  proposal on one is answered ``cancelled``;
- a reminder whose sender keeps failing is retried with a back-off that doubles, each attempt recorded on
  the Appointment's Communication, and stopped after the configured number of attempts.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta

import pytest
from sen_shared.auth import Principal
from sen_shared.bus.outbox import entry_event
from sen_teleconsult.domain import reminders as rem
from sen_teleconsult.domain import scheduling as sch

from tests.integration.test_teleconsult_booking import (
    _env,
    _find,
    _local,
    _others_reminders_gone,
    _params,
    _schedule,
    _with_patient,
)
from tests.support import admin_headers, app_client

pytestmark = pytest.mark.integration

HUB, OTHER_HUB, CLINIC = "bvdk-tinh", "bv-khac", "tyt-an-binh"
ICD10 = "http://hl7.org/fhir/sid/icd-10"


# ----------------------------------------------------------------------------------- the SLA


def _consults(env: dict[str, str]):
    from sen_teleconsult import worker
    from sen_teleconsult.config import settings_from_env

    old = dict(os.environ)
    os.environ.update(env)
    try:
        return worker._consults(settings_from_env())
    finally:
        os.environ.clear()
        os.environ.update(old)


def _submit(consults, hub: str, priority: str) -> tuple[str, datetime]:
    """A consult submitted to ``hub`` (the workflow's own submission, without the EHR's check); its Task
    id and due time as stored."""
    from sen_teleconsult.domain import consults as rules
    from sen_teleconsult.workflow import Actor

    body = {"resourceType": "ServiceRequest", "priority": priority, "subject": {"reference": "Patient/pa"},
            "reasonCode": [{"coding": [{"system": ICD10, "code": "I21.9"}]}], "note": [{"text": "Xin hội chẩn?"}],
            "performer": [{"reference": f"Organization/{hub}"}]}
    sub = rules.check_submission(body, clinic=f"Organization/{CLINIC}", default_hub=None)
    actor = Actor.of(Principal(sub="nv-an-binh", roles=frozenset({"clinic"}), facility=CLINIC))
    answer = consults.create(sub, actor, "http://teleconsult.test/fhir", None)
    task = next(e["resource"] for e in answer.body["entry"] if e["resource"]["resourceType"] == "Task")
    return task["id"], datetime.fromisoformat(task["restriction"]["period"]["end"])


@pytest.fixture()
def configured(base_env, fresh_db):
    env = {**base_env, "SEN_DB": fresh_db.name,
           "SEN_CONSULT_SLA_HOURS": json.dumps({"stat": 0.5, "routine": 48}),
           "SEN_ON_DUTY_LEADS": json.dumps({HUB: "Practitioner/bs-truong-khoa", "*": "Practitioner/bs-truc"})}
    consults = _consults(env)
    yield consults, fresh_db
    consults.fhir.auditor.flush()


def _breach_events(db, task_id: str) -> list[dict]:
    return [entry_event(e) for b in db.sla_breaches.find({"_id": task_id}) for e in b["outbox"]]


def test_the_configured_hours_set_the_due_time_and_the_breach_goes_to_the_hubs_lead(configured):
    consults, db = configured
    stat, stat_due = _submit(consults, HUB, "stat")
    routine, routine_due = _submit(consults, OTHER_HUB, "routine")
    asap, asap_due = _submit(consults, HUB, "asap")
    submitted = {t: db.consult_steps.find_one({"_id": f"{t}/1"}) for t in (stat, routine, asap)}
    for task, due, hours in ((stat, stat_due, 0.5), (routine, routine_due, 48), (asap, asap_due, 4)):
        requested = datetime.fromisoformat(entry_event(submitted[task]["outbox"][0])["data"]["requestedAt"])
        assert due - requested == timedelta(hours=hours), task  # the setting's, the default for asap
    # just before the configured due time nothing is breached; just after, the stat consult only
    consults.sweep_breaches(stat_due.astimezone(UTC) - timedelta(seconds=1))
    assert db.sla_breaches.count_documents({}) == 0
    consults.sweep_breaches(stat_due.astimezone(UTC) + timedelta(seconds=1))
    [event] = _breach_events(db, stat)
    assert event["data"]["escalatedTo"] == "Practitioner/bs-truong-khoa"  # its hub's own lead
    assert db.sla_breaches.count_documents({}) == 1
    # the asap consult 4 hours on (the default), the routine one only after its 48 hours, to the default lead
    consults.sweep_breaches(asap_due.astimezone(UTC) + timedelta(seconds=1))
    assert {b["_id"] for b in db.sla_breaches.find({})} == {stat, asap}
    consults.sweep_breaches(routine_due.astimezone(UTC) - timedelta(minutes=1))
    assert db.sla_breaches.find_one({"_id": routine}) is None
    consults.sweep_breaches(routine_due.astimezone(UTC) + timedelta(seconds=1))
    [event] = _breach_events(db, routine)
    assert event["data"]["escalatedTo"] == "Practitioner/bs-truc"
    # each breached Task names its lead; sweeping again changes nothing
    consults.sweep_breaches(routine_due.astimezone(UTC) + timedelta(hours=1))
    assert db.sla_breaches.count_documents({}) == 3
    for task, lead in ((stat, "bs-truong-khoa"), (routine, "bs-truc")):
        res = consults.store().read_doc("Task", task)["res"]
        assert {"url": "https://sen.vn/fhir/StructureDefinition/escalated-to",
                "valueReference": {"reference": f"Practitioner/{lead}"}} in res["extension"]
        assert [link["op"] for link in db.consult_steps.find({"k": task})].count("$escalate") == 1


# ----------------------------------------------------------------------------------- holidays and reminders

DAY = (datetime.now(UTC) + timedelta(days=4)).date()


@pytest.fixture(scope="module")
def tc(base_env, run_id, mongo_client, dev_key):
    """Teleconsult whose holidays are the configured list: ``DAY`` only (every day has slots otherwise)."""
    db = f"sen_t{run_id}_tc_configured"
    env = _env(base_env, SEN_TELECONSULT_HOLIDAYS=f"{DAY.isoformat()},2027-01-01")
    with app_client("teleconsult", env, db, mongo_client) as (c, _app):
        r = c.put("/fhir/Schedule/sched-cfg", content=json.dumps(_schedule("sched-cfg", "Practitioner/bs-cfg")),
                  headers=admin_headers(dev_key))
        assert r.status_code in (200, 201), r.text
        c.db = mongo_client[db]
        yield c


@pytest.fixture(scope="module")
def H(dev_key):
    return admin_headers(dev_key)


def test_a_configured_holiday_has_no_slot_and_a_proposal_on_it_is_cancelled(tc, H):
    before, after = DAY - timedelta(days=1), DAY + timedelta(days=1)
    assert _find(tc, H, _local(before, "07:00"), _local(before, "12:00"))  # the day before has slots
    assert _find(tc, H, _local(DAY, "00:00"), _local(after, "00:00")) == []  # the holiday none
    # over the three days: the holiday's slots are skipped, the days around it offered
    days = {datetime.fromisoformat(p["start"]).date()
            for p in _find(tc, H, _local(before, "00:00"), _local(after, "23:00"), ("_count", 200))}
    assert DAY not in days and {before, after} <= days
    # a proposal made up for the holiday's 08:00 slot is answered cancelled, the slot not held
    prop = _find(tc, H, _local(after, "08:00"), _local(after, "09:00"))[0]
    on_holiday = {**prop, "slot": [{"reference": f"Slot/sched-cfg-{DAY:%Y%m%d}0800"}],
                  "start": _local(DAY, "08:00")}
    r = tc.post("/fhir/Appointment/$hold", content=_params(("appointment-resource", on_holiday)), headers=H)
    assert r.status_code == 200, r.text
    assert r.json()["entry"][0]["resource"]["status"] == "cancelled"


class FailingSender:
    """A notification port whose server never takes the message (an SMTP server down)."""

    def __init__(self) -> None:
        self.tried = 0

    def send(self, message: rem.Message) -> None:
        self.tried += 1
        raise rem.NotificationError("SMTP 127.0.0.1:25: ConnectionRefusedError: [Errno 111] Connection refused")


def test_a_failing_reminder_backs_off_doubling_and_stops_after_the_last_attempt_recorded(tc, H):
    prop = _find(tc, H, _local(DAY + timedelta(days=2), "08:00"), _local(DAY + timedelta(days=2), "09:00"))[0]
    r = tc.post("/fhir/Appointment/$book", content=_params(("appointment-resource", _with_patient(prop))), headers=H)
    assert r.status_code == 200, r.text
    appt = r.json()["entry"][0]["resource"]
    start = datetime.fromisoformat(appt["start"])
    _others_reminders_gone(tc.db, appt["id"])
    tc.db[sch.SLOT_LINKS].delete_many({"_id": f"{appt['id']}/60"})  # the day-before reminder alone
    sender, cfg = FailingSender(), rem.ReminderConfig(max_attempts=3, backoff_seconds=60)
    cid = f"rem-{appt['id']}-1440"
    t0 = start - timedelta(hours=23)

    def attempts() -> int:
        return tc.db[rem.ATTEMPTS].count_documents({"rem": f"{appt['id']}/1440"})

    assert rem.send_due(tc.db, sender, cfg, now=t0) == 0 and attempts() == 1
    assert rem.send_due(tc.db, sender, cfg, now=t0 + timedelta(seconds=59)) == 0 and attempts() == 1  # 60 s
    rem.send_due(tc.db, sender, cfg, now=t0 + timedelta(seconds=61))
    assert attempts() == 2
    t1 = t0 + timedelta(seconds=61)
    rem.send_due(tc.db, sender, cfg, now=t1 + timedelta(seconds=119))  # the back-off doubled: 120 s
    assert attempts() == 2
    rem.send_due(tc.db, sender, cfg, now=t1 + timedelta(seconds=121))
    assert attempts() == 3
    for later in (timedelta(minutes=10), timedelta(hours=5)):  # the last attempt: never tried again
        rem.send_due(tc.db, sender, cfg, now=t1 + later)
    assert attempts() == 3 and sender.tried == 3
    comm = tc.get(f"/fhir/Communication/{cid}", headers=H).json()
    assert comm["status"] == "stopped"
    assert comm["about"] == [{"reference": f"Appointment/{appt['id']}"}]
    notes = [n["text"] for n in comm["note"] if "đang gửi" not in n["text"]]  # each attempt's outcome
    assert [n["text"] for n in comm["note"] if "đang gửi" in n["text"]] == [  # each recorded before it went
        f"lần gửi {i}: đang gửi (attempt {i}: sending), Message-ID <reminder.{appt['id']}.1440@sen.invalid>"
        for i in (1, 2, 3)]
    assert [f"attempt {n} failed" in t for n, t in zip((1, 2, 3), notes, strict=True)] == [True, True, True]
    assert "Connection refused" in notes[0] and "given up" in notes[-1] and "retry" in notes[0]
    versions = tc.get(f"/fhir/Communication/{cid}/_history", headers=H).json()["entry"]
    assert sorted(e["resource"]["status"] for e in versions) == ["in-progress"] * 5 + ["stopped"]


def test_the_workers_reminder_job_sends_through_the_configured_sender_and_addresses(tc, H, base_env, tmp_path):
    """The worker's periodic job (worker.PERIODIC 'reminders') takes its sender and address book from the settings:
    SEN_NOTIFY_SENDER=console with SEN_NOTIFY_FILE writes the due reminder to that file, to the address
    SEN_NOTIFY_ADDRESSES gives the practitioner."""
    from sen_teleconsult import worker

    day = DAY + timedelta(days=3)
    prop = _find(tc, H, _local(day, "09:30"), _local(day, "10:30"))[0]
    r = tc.post("/fhir/Appointment/$book", content=_params(("appointment-resource", _with_patient(prop))), headers=H)
    assert r.status_code == 200, r.text
    appt = r.json()["entry"][0]["resource"]
    _others_reminders_gone(tc.db, appt["id"])
    tc.db[sch.SLOT_LINKS].update_one({"_id": f"{appt['id']}/1440"},  # its day-before reminder due now
                                     {"$set": {"due": datetime.now(UTC) - timedelta(minutes=1)}})
    out = tmp_path / "reminders.jsonl"
    env = {**base_env, "SEN_DB": tc.db.name, "SEN_NOTIFY_SENDER": "console", "SEN_NOTIFY_FILE": str(out),
           "SEN_NOTIFY_ADDRESSES": json.dumps({"Practitioner/bs-cfg": "bs.cfg@benhvien.example"})}
    old = dict(os.environ)
    os.environ.update(env)
    try:
        from sen_teleconsult.config import settings_from_env

        job = dict(worker.PERIODIC)["reminders"][1](settings_from_env())
    finally:
        os.environ.clear()
        os.environ.update(old)
    assert job() == 1 and job() == 0  # sent once
    [line] = [json.loads(x) for x in out.read_text(encoding="utf-8").splitlines()]
    assert "bs.cfg@benhvien.example" in line["to"] and appt["id"] in line["body"]
    comm = tc.get(f"/fhir/Communication/rem-{appt['id']}-1440", headers=H).json()
    assert comm["status"] == "completed"
