"""Issue 14: a breach escalates to the hub's on-duty lead, who is sent a message, on the real FerretDB.

The message goes through the reminders' notification port (``domain/reminders.py``: the console/file
sender and the SMTP sender, retried with a doubling back-off, each attempt a version of a Communication),
queued once per breach by an insert under the Task's id (``lead_alerts``) and sent by the worker's
``lead-alerts`` job: one breach is one message whatever the number of sweepers and senders at once,
and a worker restarted mid-send does not send it twice.
"""

from __future__ import annotations

import json
import os
import socket
import threading
from datetime import UTC, datetime, timedelta

import pytest
from pymongo import monitoring
from sen_teleconsult.domain import lead_alerts as la
from sen_teleconsult.domain.reminders import ReminderConfig, SmtpSender

from tests.integration.test_teleconsult_configured import CLINIC, HUB, OTHER_HUB, _consults, _submit

pytestmark = pytest.mark.integration

PORTAL = "http://127.0.0.1:8080/"
LEAD_EMAIL = "truc.lanhdao@bvdk-tinh.example"


def _settings(env: dict[str, str]):
    from sen_teleconsult.config import settings_from_env

    old = dict(os.environ)
    os.environ.update(env)
    try:
        return settings_from_env()
    finally:
        os.environ.clear()
        os.environ.update(old)


def _at_once(fns) -> list:
    """Run every callable at the same moment, each in its own thread; their answers."""
    barrier, out, errors = threading.Barrier(len(fns)), [None] * len(fns), []

    def run(i, fn):
        barrier.wait()
        try:
            out[i] = fn()
        except Exception as err:  # noqa: BLE001 - raised in the test below
            errors.append(err)

    threads = [threading.Thread(target=run, args=(i, fn)) for i, fn in enumerate(fns)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    return out


@pytest.fixture()
def env(base_env, fresh_db, tmp_path):
    return {**base_env, "SEN_DB": fresh_db.name, "SEN_PORTAL_URL": PORTAL,
            "SEN_CONSULT_SLA_HOURS": json.dumps({"stat": 0.5}),
            "SEN_ON_DUTY_LEADS": json.dumps({HUB: {"lead": "Practitioner/bs-truong-khoa", "email": LEAD_EMAIL},
                                             "*": "Practitioner/bs-truc"}),
            "SEN_NOTIFY_SENDER": "console", "SEN_NOTIFY_FILE": str(tmp_path / "out.jsonl"),
            "SEN_NOTIFY_ADDRESSES": json.dumps({"Practitioner/bs-truc": "bs.truc@benhvien.example"})}


def _lines(env) -> list[dict]:
    path = env["SEN_NOTIFY_FILE"]
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as f:
        return [json.loads(x) for x in f.read().splitlines()]


def test_one_breach_is_one_message_to_the_lead_even_with_two_sweepers_and_senders_at_once(env, fresh_db):
    from sen_teleconsult import worker

    db = fresh_db
    first, second = _consults(env), _consults(env)  # two worker processes' sweepers
    stat, stat_due = _submit(first, HUB, "stat")
    other, other_due = _submit(first, OTHER_HUB, "stat")
    late = max(stat_due, other_due).astimezone(UTC) + timedelta(minutes=1)
    for _ in range(3):  # the two sweepers at once, three rounds
        _at_once([lambda: first.sweep_breaches(late), lambda: second.sweep_breaches(late)])
    assert db.sla_breaches.count_documents({}) == 2
    assert sorted(a["_id"] for a in db[la.ALERTS].find({})) == sorted([stat, other])  # queued once each

    # the worker's job, as configured, in two workers at once, several rounds: one message per breach
    jobs = [dict(worker.PERIODIC)["lead-alerts"][1](_settings(env)) for _ in range(2)]
    sent = [sum(_at_once(jobs)) for _ in range(3)]
    assert sum(sent) == 2 and sent[1:] == [0, 0]
    lines = {line["body"].split("/tasks/")[1].strip(): line for line in _lines(env)}
    assert sorted(lines) == sorted([stat, other]) and len(_lines(env)) == 2

    # to the lead's own address (configured with the lead), else the address book's
    assert lines[stat]["to"] == [LEAD_EMAIL]
    assert lines[other]["to"] == ["bs.truc@benhvien.example"]
    # Vietnamese first, English beside it: priority, due time in Vietnam, facility, the portal link
    body = lines[stat]["body"]
    due_vn = stat_due.astimezone(la.TZ).strftime("%H:%M ngày %d/%m/%Y")
    assert body.index("quá hạn") < body.index("past its due time")
    assert "Mức ưu tiên / priority: Cấp cứu (emergency (stat))" in body
    assert f"Hạn xử lý / due: {due_vn} (giờ Việt Nam" in body and "+07:00" in body
    assert f"Cơ sở yêu cầu / requesting facility: {CLINIC}" in body
    assert f"Xem yêu cầu / open the request: {PORTAL}tasks/{stat}" in body
    # no patient in the message (the consult's subject is Patient/pa)
    assert "Patient" not in body + lines[stat]["subject"] and "/pa" not in body
    # the attempt is recorded on the alert's Communication: about the Task, to the lead, completed
    comm = first.store().read_doc("Communication", f"lead-{stat}")["res"]
    assert comm["status"] == "completed" and comm["about"] == [{"reference": f"Task/{stat}"}]
    assert comm["recipient"] == [{"reference": "Practitioner/bs-truong-khoa"}]
    assert [n["text"] for n in comm["note"]] == [
        f"lần gửi 1: đang gửi (attempt 1: sending), Message-ID <lead-alert.{stat}@sen.invalid>",
        "đã gửi (sent), lần 1"]  # recorded before it went, then its outcome
    assert comm["identifier"] == [{"system": "urn:ietf:rfc:5322", "value": f"<lead-alert.{stat}@sen.invalid>"}]
    assert lines[stat]["message_id"] == f"<lead-alert.{stat}@sen.invalid>"

    # a worker restarted: new sweepers and senders find nothing more to send
    again = _consults(env)
    again.sweep_breaches(late + timedelta(hours=1))
    assert dict(worker.PERIODIC)["lead-alerts"][1](_settings(env))() == 0
    assert len(_lines(env)) == 2 and db[la.ALERTS].count_documents({"open": True}) == 0
    for c in (first, second, again):
        c.fhir.auditor.flush()


def test_a_worker_stopped_mid_send_is_taken_over_once_after_the_stale_time(env, fresh_db):
    """An attempt claimed by a worker that died before its outcome: not sent again while it may be in
    flight, then once by the next worker after ``stale_after``."""
    consults = _consults(env)
    task, due = _submit(consults, HUB, "stat")
    now = due.astimezone(UTC) + timedelta(minutes=1)
    consults.sweep_breaches(now)
    fresh_db[la.ALERT_ATTEMPTS].insert_one({"_id": f"{task}#1", "alert": task, "n": 1, "at": now})  # died
    from sen_teleconsult.domain.reminders import ConsoleSender

    sender, cfg = ConsoleSender(env["SEN_NOTIFY_FILE"]), ReminderConfig(stale_after=300)
    assert la.send_due(fresh_db, sender, cfg, PORTAL, now + timedelta(seconds=299)) == 0
    assert _at_once([lambda: la.send_due(fresh_db, sender, cfg, PORTAL, now + timedelta(seconds=301))] * 2) \
        in ([1, 0], [0, 1])
    assert la.send_due(fresh_db, sender, cfg, PORTAL, now + timedelta(hours=1)) == 0
    assert len(_lines(env)) == 1
    comm = consults.store().read_doc("Communication", f"lead-{task}")["res"]
    assert comm["status"] == "completed" and comm["note"][-1]["text"] == "đã gửi (sent), lần 2"
    consults.fhir.auditor.flush()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_failing_sender_is_retried_with_back_off_then_recorded_as_failed(env, fresh_db):
    consults = _consults(env)
    task, due = _submit(consults, HUB, "stat")
    t0 = due.astimezone(UTC) + timedelta(minutes=1)
    consults.sweep_breaches(t0)
    smtp = SmtpSender("127.0.0.1", _closed_port(), timeout=2)  # nothing listens: every attempt fails
    cfg = ReminderConfig(max_attempts=3, backoff_seconds=60)
    # attempts made by then: the first at once, the second 60 s later, the third 120 s after it (doubled)
    for at, made in ((0, 1), (59, 1), (60, 2), (60 + 119, 2), (60 + 120, 3), (3600, 3)):
        assert la.send_due(fresh_db, smtp, cfg, PORTAL, t0 + timedelta(seconds=at)) == 0
        assert fresh_db[la.ALERT_ATTEMPTS].count_documents({"alert": task}) == made, at
    attempts = sorted(fresh_db[la.ALERT_ATTEMPTS].find({"alert": task}), key=lambda a: a["n"])
    assert [(a["n"], a["ok"]) for a in attempts] == [(1, False), (2, False), (3, False)]
    assert all("SMTP 127.0.0.1" in a["err"] for a in attempts)
    assert fresh_db[la.ALERTS].find_one({"_id": task})["open"] is False  # given up: not tried again
    comm = consults.store().read_doc("Communication", f"lead-{task}")["res"]
    assert comm["status"] == "stopped"
    notes = [n["text"] for n in comm["note"] if "đang gửi" not in n["text"]]  # each attempt's outcome
    assert [n["text"] for n in comm["note"] if "đang gửi" in n["text"]] == [
        f"lần gửi {i}: đang gửi (attempt {i}: sending), Message-ID <lead-alert.{task}@sen.invalid>" for i in (1, 2, 3)]
    assert len(notes) == 3 and all(n.startswith(f"lần gửi {i} thất bại (attempt {i} failed)")
                                   for i, n in enumerate(notes, 1))
    assert "thử lại" in notes[0] and "thử lại" in notes[1] and notes[2].endswith("đã dừng (given up)")
    versions = fresh_db["Communication_history"].count_documents({"_id": {"$regex": f"^lead-{task}/"}})
    assert versions == 6  # each attempt: its start, then its outcome
    consults.fhir.auditor.flush()


def test_a_lead_configured_with_an_address_is_checked_and_the_old_form_still_works(env):
    from sen_teleconsult.domain.sla import on_duty_lead, on_duty_lead_email

    s = _settings(env)
    assert on_duty_lead(f"Organization/{HUB}", s.on_duty_leads) == "Practitioner/bs-truong-khoa"
    assert on_duty_lead_email(f"Organization/{HUB}", s.on_duty_leads) == LEAD_EMAIL
    assert on_duty_lead(f"Organization/{OTHER_HUB}", s.on_duty_leads) == "Practitioner/bs-truc"
    assert on_duty_lead_email(f"Organization/{OTHER_HUB}", s.on_duty_leads) is None
    for bad in ({HUB: {"lead": "Practitioner/x", "email": "not an address"}},
                {HUB: {"lead": "bs-x", "email": LEAD_EMAIL}}, {HUB: {"lead": "Practitioner/x", "phone": "1"}}):
        with pytest.raises(SystemExit):  # the process stops at start, naming the setting
            _settings({**env, "SEN_ON_DUTY_LEADS": json.dumps(bad)})


def test_a_worker_dying_after_the_smtp_server_took_the_message_sends_a_copy_with_the_same_message_id(env, fresh_db):
    """At least once, the copy recognisable: the retry after ``stale_after`` carries the first
    message's Message-ID (derived from the breach), and the Communication shows both attempts."""
    from tests.integration.smtp_support import DiesAfterTheServerTookIt, LocalSmtp, WorkerDied

    consults = _consults(env)
    task, due = _submit(consults, HUB, "stat")
    now = due.astimezone(UTC) + timedelta(minutes=1)
    consults.sweep_breaches(now)
    server = LocalSmtp()
    smtp = SmtpSender("127.0.0.1", server.port, sender="sen@benhvien.example", timeout=5)
    cfg = ReminderConfig(stale_after=300, domain="benhvien.example")
    with server:
        with pytest.raises(WorkerDied):
            la.send_due(fresh_db, DiesAfterTheServerTookIt(smtp), cfg, PORTAL, now)
        assert len(server.received) == 1  # accepted, and nothing recorded its outcome
        assert la.send_due(fresh_db, smtp, cfg, PORTAL, now + timedelta(seconds=299)) == 0  # may be in flight
        assert la.send_due(fresh_db, smtp, cfg, PORTAL, now + timedelta(seconds=301)) == 1  # taken over
        assert la.send_due(fresh_db, smtp, cfg, PORTAL, now + timedelta(hours=1)) == 0
    received = server.received
    mid = f"<lead-alert.{task}@benhvien.example>"
    assert [m["Message-ID"] for m in received] == [mid, mid]  # the copy says it is one
    assert [m["To"] for m in received] == [LEAD_EMAIL, LEAD_EMAIL]
    # the first attempt was recorded before it went, with its Message-ID: on its claim and its Communication
    assert fresh_db[la.ALERT_ATTEMPTS].find_one({"_id": f"{task}#1"})["message_id"] == mid
    comm = consults.store().read_doc("Communication", f"lead-{task}")["res"]
    assert comm["status"] == "completed" and comm["identifier"][0]["value"] == mid
    assert [n["text"] for n in comm["note"]] == [
        f"lần gửi 1: đang gửi (attempt 1: sending), Message-ID {mid}",
        f"lần gửi 2: đang gửi (attempt 2: sending), Message-ID {mid}",
        "đã gửi (sent), lần 2"]
    consults.fhir.auditor.flush()


def test_breaches_recorded_before_the_message_existed_are_told_within_the_look_back(env, fresh_db):
    """A breach without a ``lead_alerts`` document (recorded before the lead's message existed) is
    queued by the worker's SLA job when it is younger than ``SEN_LEAD_ALERT_LOOKBACK_HOURS``; an older
    one is left alone, a consult closed since is recorded closed, nothing sent for it."""
    from sen_shared.auth import Principal
    from sen_teleconsult import worker
    from sen_teleconsult.workflow import Actor

    env = {**env, "SEN_LEAD_ALERT_LOOKBACK_HOURS": "24"}
    consults = _consults(env)
    recent, due = _submit(consults, HUB, "stat")
    old, _ = _submit(consults, HUB, "stat")
    closed, _ = _submit(consults, OTHER_HUB, "stat")
    late = due.astimezone(UTC) + timedelta(minutes=1)
    assert consults.sweep_breaches(late) == 3
    fresh_db[la.ALERTS].delete_many({})  # as the breaches of a version without the lead's message left them
    fresh_db.sla_breaches.update_one({"_id": old}, {"$set": {"breachedAt": datetime.now(UTC) - timedelta(hours=25)}})
    clinic = Actor.of(Principal(sub="nv-an-binh", roles=frozenset({"clinic"}), facility="tyt-an-binh"))
    consults.cancel(closed, clinic, "Bệnh nhân đã chuyển viện")

    sla = dict(worker.PERIODIC)["sla"][1](_settings(env))
    for _ in range(2):  # the worker's SLA job, twice: queued once
        sla()
    alerts = {a["_id"]: a for a in fresh_db[la.ALERTS].find({})}
    assert sorted(alerts) == sorted([recent, closed])  # the one older than the look-back is not
    assert alerts[recent]["open"] is True and alerts[recent]["lead"] == "Practitioner/bs-truong-khoa"
    assert alerts[recent]["email"] == LEAD_EMAIL
    assert alerts[closed]["open"] is False and alerts[closed]["closed"] is True

    send = dict(worker.PERIODIC)["lead-alerts"][1](_settings(env))
    assert send() == 1 and send() == 0
    [line] = _lines(env)
    assert line["to"] == [LEAD_EMAIL] and line["body"].rstrip().endswith(f"/tasks/{recent}")
    # switched off: nothing is looked for
    fresh_db[la.ALERTS].delete_many({})
    assert _consults({**env, "SEN_LEAD_ALERT_LOOKBACK_HOURS": "0"}).queue_missed_alerts() == 0
    assert fresh_db[la.ALERTS].count_documents({}) == 0
    consults.fhir.auditor.flush()


def test_a_hub_without_a_lead_is_recorded_so_logged_and_still_flagged(env, fresh_db, caplog):
    """No lead for the hub (no entry, no ``"*"``): no message, but the Communication says why, a
    warning names the hub, and the worklist still flags the breach."""
    import logging

    from sen_shared.auth import Principal

    env = {**env, "SEN_ON_DUTY_LEADS": json.dumps({HUB: {"lead": "Practitioner/bs-truong-khoa", "email": LEAD_EMAIL}})}
    consults = _consults(env)
    task, due = _submit(consults, OTHER_HUB, "stat")
    late = due.astimezone(UTC) + timedelta(minutes=1)
    assert consults.sweep_breaches(late) == 1
    with caplog.at_level(logging.WARNING, logger="sen.teleconsult.lead_alerts"):
        from sen_teleconsult import worker

        send = dict(worker.PERIODIC)["lead-alerts"][1](_settings(env))
        assert send() == 0 and send() == 0
    assert _lines(env) == []
    warnings = [r for r in caplog.records if r.name == "sen.teleconsult.lead_alerts" and r.levelno == logging.WARNING]
    assert len(warnings) == 1 and OTHER_HUB in warnings[0].getMessage()
    comm = consults.store().read_doc("Communication", f"lead-{task}")["res"]
    assert comm["status"] == "not-done" and "recipient" not in comm
    assert OTHER_HUB in comm["statusReason"]["text"] and "no on-duty lead is configured" in comm["statusReason"]["text"]
    assert comm["statusReason"]["text"].startswith("Không gửi: cơ sở")
    assert fresh_db[la.ALERTS].find_one({"_id": task})["open"] is False
    doctor = Principal(sub="bs-x", roles=frozenset({"doctor"}), facility=OTHER_HUB)
    rows, _ = consults.worklist(doctor, statuses=["requested"], specialty=None, facility=None, priority=None, now=late)
    assert [(t["id"], breached) for t, breached in rows] == [(task, True)]
    consults.fhir.auditor.flush()


class _Finds(monitoring.CommandListener):
    """pymongo command monitoring: each ``find`` on ``collection`` (its filter) and how many documents
    its reply carried (the first batch and any ``getMore``'s)."""

    def __init__(self, collection: str) -> None:
        self.collection, self.finds, self._cursors = collection, [], {}

    def started(self, event) -> None:
        if event.command_name == "find" and event.command["find"] == self.collection:
            self.finds.append({"filter": event.command.get("filter", {}), "read": 0, "request": event.request_id})

    def succeeded(self, event) -> None:
        cursor = event.reply.get("cursor") or {}
        mine = next((f for f in self.finds if f["request"] == event.request_id), None)
        if mine is None and cursor.get("id") in self._cursors:
            mine = self._cursors[cursor["id"]]
        if mine is not None:
            mine["read"] += len(cursor.get("firstBatch", cursor.get("nextBatch", [])))
            if cursor.get("id"):
                self._cursors[cursor["id"]] = mine

    def failed(self, event) -> None: ...


def test_the_missed_alert_scan_reads_only_the_breaches_stored_since_its_last(env, fresh_db, mongo_url):
    """The SLA job's scan for breaches whose lead was never queued a message reads the look-back window
    once; each later scan reads only the breaches stored since (the minutes since its last read, one
    equality each), so the second reads nothing old, and a breach stored between the two still gets its
    message queued, once. Counted through pymongo command monitoring."""
    from pymongo import MongoClient
    from sen_shared.fhir.rest import FhirConfig
    from sen_teleconsult.domain import RESOURCE_TYPES
    from sen_teleconsult.fhir_server import TeleconsultFhirServer
    from sen_teleconsult.workflow import BREACH_MINUTE, BREACHES, Consults, _minute

    finds = _Finds(BREACHES)
    client = MongoClient(mongo_url, tz_aware=True, uuidRepresentation="standard", event_listeners=[finds])
    try:
        fhir = TeleconsultFhirServer(FhirConfig(RESOURCE_TYPES, service="teleconsult", emit_events=False),
                                     db=lambda: client[fresh_db.name])
        consults = Consults(fhir, _settings({**env, "SEN_LEAD_ALERT_LOOKBACK_HOURS": "24"}))
        told, untold = _submit(consults, HUB, "stat")[0], _submit(consults, HUB, "stat")
        late = untold[1].astimezone(UTC) + timedelta(minutes=1)
        assert consults.sweep_breaches(late) == 2
        hours_ago = datetime.now(UTC) - timedelta(hours=3)  # as stored three hours ago, one never told
        fresh_db[BREACHES].update_many({}, {"$set": {"breachedAt": hours_ago, BREACH_MINUTE: _minute(hours_ago)}})
        fresh_db[la.ALERTS].delete_one({"_id": untold[0]})

        first = _minute(datetime.now(UTC))
        assert consults.queue_missed_alerts() == 1  # the first scan: the window
        assert [f["read"] for f in finds.finds] == [2] and "breachedAt" in finds.finds[0]["filter"]
        assert fresh_db[la.ALERTS].count_documents({}) == 2

        # between two scans: a breach whose message a crash lost (stored, not queued)
        between, _ = _submit(consults, HUB, "stat")
        assert consults.sweep_breaches(late) == 1
        fresh_db[la.ALERTS].delete_one({"_id": between})
        finds.finds.clear()
        assert consults.queue_missed_alerts() == 1  # queued
        assert finds.finds and all(set(f["filter"]) == {BREACH_MINUTE} for f in finds.finds), finds.finds
        assert min(f["filter"][BREACH_MINUTE] for f in finds.finds) >= first - 1  # from the minute before the first's
        assert sum(f["read"] for f in finds.finds) == 1  # the breach stored between, nothing old
        assert fresh_db[la.ALERTS].find_one({"_id": between})["open"] is True
        assert consults.queue_missed_alerts() == 0  # once
        assert sorted(a["_id"] for a in fresh_db[la.ALERTS].find({})) == sorted([told, untold[0], between])
        consults.fhir.auditor.flush()
    finally:
        client.close()
