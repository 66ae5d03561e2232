"""The database commands a direct ``$book`` sends, counted in process (pymongo's command monitoring on the
app's own client, as ``test_webhook_round_trips_by_kind`` counts a webhook's).

Under contention most requests lose (90 of 100 in issue 14's form), so what a lost race sends is held
here, and cannot grow back unnoticed: nothing when its process learned the winning claim itself (its own
claim, or the one an insert of its lost to), and when another process won unseen, the claim's insert,
which decides, and one read of the slot's newest link, which the 409 needs (held or booked, and whether
an expired hold the view did not know of may be claimed after all). A winner sends its claim (with its
reminders in the same insert) and the Appointment's two versions; its AuditEvent leaves from the writer
thread in a batch, not counted here."""

from __future__ import annotations

import json
import threading
from datetime import datetime, timedelta

import pytest
from pymongo import MongoClient, monitoring
from sen_teleconsult.domain import availability as av
from sen_teleconsult.domain import scheduling as sch

from tests.support import admin_headers, app_client

pytestmark = pytest.mark.integration

ALL_DAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
AUDIT_WRITER = "sen-audit-writer"  # sen_shared.fhir.audit's thread: batches of AuditEvents, not the request's


class _Commands(monitoring.CommandListener):
    """``command collection`` of every command started while ``on``, but the AuditEvent writer's."""

    def __init__(self) -> None:
        self.on = False
        self.seen: list[str] = []

    def started(self, event) -> None:
        if self.on and threading.current_thread().name != AUDIT_WRITER:
            self.seen.append(f"{event.command_name} {event.command.get(event.command_name)}")

    def succeeded(self, event) -> None: ...

    def failed(self, event) -> None: ...


_commands = _Commands()


@pytest.fixture(scope="module")
def booking(base_env, run_id, mongo_client, dev_key):
    monitoring.register(_commands)
    # a URL of its own, so the app gets a client made after the listener was registered (a process
    # keeps one client per URL; an earlier test's would not report its commands)
    url = base_env["MONGO_URL"]
    url += ("&" if "?" in url else ("?" if url.endswith("/") else "/?")) + "connectTimeoutMS=20002"
    db = f"sen_t{run_id}_tc_bookcmds"
    with app_client("teleconsult", {**base_env, "MONGO_URL": url, "SEN_TELECONSULT_HOLIDAYS": ""}, db,
                    mongo_client) as (c, _app):
        sched = av.schedule_resource("cmds", practitioner="Practitioner/bs-cmds", organization="Organization/hub",
                                     specialty_code="394579002", specialty_text="Tim mạch",
                                     windows=[(ALL_DAYS, "00:00:00", "23:55:00")], slot_minutes=5)
        r = c.put("/fhir/Schedule/cmds", content=json.dumps(sched), headers=admin_headers(dev_key))
        assert r.status_code in (200, 201), r.text
        start = datetime.now(av.TZ) + timedelta(days=2)
        slots = [s.id for s in av.slots_between(av.from_schedule(sched), start, start + timedelta(hours=2))]
        yield c, mongo_client[db], slots


def _proposal(slot: str, patient: str) -> dict:
    return {"resourceType": "Appointment", "status": "proposed", "slot": [{"reference": f"Slot/{slot}"}],
            "participant": [{"actor": {"reference": patient}, "status": "needs-action"}]}


def _book(c, H, slot: str, patient: str) -> tuple[int, list[str]]:
    """A direct ``$book`` as the bench sends it: its status and the commands it sent."""
    body = {"resourceType": "Parameters",
            "parameter": [{"name": "appointment-resource", "resource": _proposal(slot, patient)}]}
    _commands.seen.clear()
    _commands.on = True
    try:
        answer = c.post("/fhir/Appointment/$book", content=json.dumps(body), headers=H)
    finally:
        _commands.on = False
    assert answer.status_code in (200, 409), answer.text
    if answer.status_code == 409:
        assert answer.json()["resourceType"] == "OperationOutcome"
        assert "already booked" in answer.json()["issue"][0]["diagnostics"]
    return answer.status_code, list(_commands.seen)


def test_a_lost_race_sends_nothing_when_its_process_saw_the_winner_and_two_commands_when_not(
        booking, dev_key, monkeypatch):
    # what a process knows "just now" is arranged, not raced: a link it learned within LinkView.REFRESH_SECONDS
    # answers without a read, and schedules read within SCHEDULES_FRESH_SECONDS are not read again. At their real
    # 0.25 s and 2 s, a loaded machine let them lapse between two requests, and the request rightly read again
    monkeypatch.setattr(sch.LinkView, "REFRESH_SECONDS", 3600.0)
    monkeypatch.setattr(sch, "SCHEDULES_FRESH_SECONDS", 3600.0)
    c, db, (warm, first, second, *_) = booking
    H = admin_headers(dev_key)
    assert _book(c, H, warm, "Patient/warm")[0] == 200  # the process's first-use look-ups are not a request's
    claim, history, current = f"insert {sch.SLOT_LINKS}", "insert Appointment_history", "insert Appointment"

    assert _book(c, H, first, "Patient/a") == (200, [claim, history, current])
    # the same process lost: its view holds the claim it made (as a turn's waiters find it)
    assert _book(c, H, first, "Patient/b") == (409, [])

    # another process wins the next slot; this one's view has not seen that claim
    other = MongoClient(f"mongodb://{db.client.address[0]}:{db.client.address[1]}/", tz_aware=True,
                        uuidRepresentation="standard")
    try:
        with monkeypatch.context() as m:  # what another process learns stays in its own view
            m.setattr(sch, "_claimed", lambda _db, link: link)
            sch.book(other[db.name], sch.Ctx(sch.SchedulingConfig()), request=_proposal(second, "Patient/o"))
    finally:
        other.close()
    # the insert decides (no read before it), then one read of the newest link for the 409's words
    assert _book(c, H, second, "Patient/c") == (409, [claim, f"find {sch.SLOT_LINKS}"])
    # what that read found is in the view now: the next loser of the slot sends nothing
    assert _book(c, H, second, "Patient/d") == (409, [])


def test_schedules_due_again_are_read_by_one_request_of_the_process_at_a_time(booking):
    """Under issue 14's 100 ``$book`` at once, the schedule versions fell due while many requests of a
    worker were in flight and each of them sent the same read (3 a round of 10 bookings): now one reads,
    and the others meanwhile use what was read last."""
    _c, db, _slots = booking
    client = MongoClient(f"mongodb://{db.client.address[0]}:{db.client.address[1]}/", tz_aware=True,
                         uuidRepresentation="standard")  # made after the listener: its commands are seen
    try:
        mine = client[db.name]
        known = sch.schedules(mine, fresh=True)
        assert "cmds" in known
        key, value, _read_at = sch._schedules[db.name]
        sch._schedules[db.name] = (key, value, 0.0)  # due again
        reading = sch._schedule_reads.setdefault(db.name, threading.Lock())
        _commands.seen.clear()
        _commands.on = True
        try:
            with reading:  # another request of the process is reading them now
                assert sch.schedules(mine) is value
            assert _commands.seen == []
            again = sch.schedules(mine)  # due, and nobody reading: this request reads
            fresh = sch.schedules(mine)  # read just now: not again
        finally:
            _commands.on = False
        assert again is value and fresh is value  # the versions are unchanged: the availabilities are kept
        assert _commands.seen == ["find Schedule"]
    finally:
        client.close()
