"""A consult has at most one active visit (``scheduling.claim_visit``), on the real FerretDB.

An Appointment ``basedOn`` a ServiceRequest is that consult's visit; each new hold or direct booking
for the consult claims the next link of the consult's chain in ``consult_visits`` before its slot,
refused (409) while the appointment the newest link names is still active. Racing bookings for one
consult race for one link: one visit, the others 409 without touching a slot. Bookings of a bare
slot (no ServiceRequest) take no part.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta

import httpx
import pytest
from pymongo import MongoClient, monitoring
from sen_shared.claims import advance, latest
from sen_shared.fhir.body import unpack
from sen_shared.fhir.outcome import FhirError
from sen_shared.ids import new_uuid
from sen_teleconsult.domain import availability as av
from sen_teleconsult.domain import scheduling as sch

from tests.integration.test_teleconsult_booking import (
    ALL_DAYS,
    DAY,
    _env,
    _local,
    _params,
    _schedule,
    _with_patient,
    until_holds_expire,
    web,  # noqa: F401 - the fixture: the gunicorn process (2 workers) the 50 concurrent claims race on
)
from tests.support import admin_headers, app_client, wait_for

pytestmark = pytest.mark.integration

RACERS = 20


@pytest.fixture(scope="module")
def H(dev_key):
    return admin_headers(dev_key)


@pytest.fixture(scope="module")
def tc(base_env, run_id, mongo_client, dev_key):
    """The service in this process (holds last 6 s: a test's few requests after a hold fit well inside
    it on a slow machine), with one schedule: 07:00-17:00 every day."""
    db = f"sen_t{run_id}_tc_one_visit"
    with app_client("teleconsult", _env(base_env, SEN_TELECONSULT_HOLD_MINUTES="0.1"), db, mongo_client) as (c, _):
        body = _schedule("sched-visit", "Practitioner/bs-visit", windows=[(ALL_DAYS, "07:00:00", "17:00:00")])
        r = c.put("/fhir/Schedule/sched-visit", content=json.dumps(body), headers=admin_headers(dev_key))
        assert r.status_code in (200, 201), r.text
        c.db = mongo_client[db]
        yield c


def _free(tc, H, day, n, start="07:00", end="17:00"):
    r = tc.post("/fhir/Appointment/$find", headers=H, content=_params(
        ("start", _local(day, start)), ("end", _local(day, end)), ("_count", 100),
        ("practitioner", {"reference": "Practitioner/bs-visit"})))
    assert r.status_code == 200, r.text
    found = [e["resource"] for e in r.json().get("entry", [])]
    assert len(found) >= n
    return found[:n]


def _post(tc, H, op, proposal, sr=None, patient="Patient/bn-visit"):
    body = _params(("appointment-resource", _with_patient(proposal, patient, sr)))
    return tc.post(f"/fhir/Appointment/{op}", content=body, headers=H)


def _appointment(r):
    assert r.status_code == 200, r.text
    return r.json()["entry"][0]["resource"] if r.json()["resourceType"] == "Bundle" else r.json()


def _active(db, sr):
    stored = [unpack(d)["res"] for d in db["Appointment"].find({"sp_based-on": f"ServiceRequest/{sr}"}, {"res": 1})]
    return [a for a in stored if sch.current_status(db, a["id"]) in ("booked", "pending")]


def _refused(r, visit_id):
    assert r.status_code == 409, r.text
    text = r.json()["issue"][0]["diagnostics"]
    assert r.json()["resourceType"] == "OperationOutcome"
    assert "already has a visit" in text and f"Appointment/{visit_id}" in text and "$reschedule" in text, text
    return text


# ------------------------------------------------------------------------------- racing bookings

@pytest.mark.parametrize("op,status,days", [("$book", "booked", 1), ("$hold", "pending", 2)])
def test_twenty_bookings_of_one_consult_on_twenty_free_slots_give_one_visit(web, H, op, status, days):  # noqa: F811
    url, db = web
    body = _schedule("sched-vr", "Practitioner/bs-vr", windows=[(ALL_DAYS, "07:00:00", "17:00:00")], slot_minutes=15)
    r = httpx.put(f"{url}/fhir/Schedule/sched-vr", content=json.dumps(body), headers=H)
    assert r.status_code in (200, 201), r.text
    sr = f"sr-race-{op[1:]}"
    day = DAY + timedelta(days=days)
    props: list = []

    def found() -> bool:  # a process trusts the schedules it read for 2 s (SCHEDULES_FRESH_SECONDS)
        r = httpx.post(f"{url}/fhir/Appointment/$find", headers=H, timeout=30, content=_params(
            ("start", _local(day, "07:00")), ("end", _local(day, "17:00")), ("_count", RACERS),
            ("practitioner", {"reference": "Practitioner/bs-vr"})))
        props[:] = [e["resource"] for e in r.json().get("entry", [])]
        return len(props) == RACERS

    wait_for(found, 10)
    barrier = threading.Barrier(RACERS)

    def one(i):
        body = _params(("appointment-resource", _with_patient(props[i], "Patient/bn-race", f"ServiceRequest/{sr}")))
        with httpx.Client(timeout=60) as c:
            barrier.wait()
            return c.post(f"{url}/fhir/Appointment/{op}", content=body, headers=H)

    with ThreadPoolExecutor(RACERS) as pool:
        answers = list(pool.map(one, range(RACERS)))
    codes = Counter(a.status_code for a in answers)
    assert codes == {200: 1, 409: RACERS - 1}, codes
    [won] = [a.json()["entry"][0]["resource"] for a in answers if a.status_code == 200]
    assert won["status"] == status
    for a in answers:
        if a.status_code == 409:
            _refused(a, won["id"])
    # one active appointment based on the consult; the chain names it; no other slot was claimed
    assert [a["id"] for a in _active(db, sr)] == [won["id"]]
    assert latest(db[sch.CONSULT_VISITS], sr)["ap"] == won["id"]
    mine = won["slot"][0]["reference"]
    others = [p for p in props if p["slot"][0]["reference"] != mine]
    assert len(others) == RACERS - 1
    assert db[sch.SLOT_LINKS].count_documents({"k": {"$in": [p["slot"][0]["reference"][5:] for p in others]}}) == 0
    assert httpx.get(f"{url}/fhir/{mine}", headers=H).json()["status"] in ("busy", "busy-tentative")
    for p in others[:3]:
        assert httpx.get(f"{url}/fhir/{p['slot'][0]['reference']}", headers=H).json()["status"] == "free"
    # their slots are free for others: another consult, and a bare booking, take two of them
    for i, extra in enumerate(((f"ServiceRequest/{sr}-other",), ())):
        body = _params(("appointment-resource", _with_patient(others[i], "Patient/bn-khac", *extra)))
        r = httpx.post(f"{url}/fhir/Appointment/$book", content=body, headers=H, timeout=30)
        assert r.status_code == 200, r.text


# ---------------------------------------------------------------------------- one at a time

def test_a_second_booking_is_refused_until_the_visit_is_cancelled(tc, H):
    day = DAY + timedelta(days=3)
    a, b, c = _free(tc, H, day, 3)
    first = _appointment(_post(tc, H, "$book", a, "ServiceRequest/sr-cancel"))
    text = _refused(_post(tc, H, "$book", b, "ServiceRequest/sr-cancel"), first["id"])
    assert sch.iso_local(datetime.fromisoformat(first["start"])) in text  # when the visit is
    _refused(_post(tc, H, "$hold", b, "ServiceRequest/sr-cancel"), first["id"])
    assert tc.get(f"/fhir/{b['slot'][0]['reference']}", headers=H).json()["status"] == "free"
    # another consult, and a bare slot booking, are not held back
    assert _post(tc, H, "$book", b, "ServiceRequest/sr-cancel-2").status_code == 200
    r = _post(tc, H, "$book", _free(tc, H, day, 1, "13:00")[0])
    assert r.status_code == 200, r.text
    assert tc.post(f"/fhir/Appointment/{first['id']}/$cancel", content=_params(), headers=H).status_code == 200
    again = _appointment(_post(tc, H, "$book", c, "ServiceRequest/sr-cancel"))
    assert [x["id"] for x in _active(tc.db, "sr-cancel")] == [again["id"]]
    assert sorted(x["n"] for x in tc.db[sch.CONSULT_VISITS].find({"k": "sr-cancel"})) == [1, 2]


def test_a_hold_blocks_until_it_expires_and_booking_it_takes_no_new_link(tc, H):
    day = DAY + timedelta(days=4)
    a, b, c = _free(tc, H, day, 3)
    held = _appointment(_post(tc, H, "$hold", a, "ServiceRequest/sr-hold"))
    assert held["status"] == "pending"
    _refused(_post(tc, H, "$book", b, "ServiceRequest/sr-hold"), held["id"])
    r = tc.post("/fhir/Appointment/$book", headers=H,
                content=_params(("appointment-reference", {"reference": f"Appointment/{held['id']}"})))
    assert _appointment(r)["status"] == "booked"  # the same appointment: the consult's visit already
    assert tc.db[sch.CONSULT_VISITS].count_documents({"k": "sr-hold"}) == 1
    _refused(_post(tc, H, "$hold", b, "ServiceRequest/sr-hold"), held["id"])
    # a hold that expires frees the consult for another time
    expiring = _appointment(_post(tc, H, "$hold", b, "ServiceRequest/sr-hold-2"))
    _refused(_post(tc, H, "$hold", c, "ServiceRequest/sr-hold-2"), expiring["id"])
    until_holds_expire(tc.db, b["slot"][0]["reference"][5:])  # holds last 0.1 min (6 s) here
    later = _appointment(_post(tc, H, "$book", c, "ServiceRequest/sr-hold-2"))
    assert [x["id"] for x in _active(tc.db, "sr-hold-2")] == [later["id"]]


def test_after_a_no_show_or_a_fulfilled_visit_the_consult_books_again(tc, H):
    day = DAY + timedelta(days=5)
    a, b, c = _free(tc, H, day, 3)
    missed = _appointment(_post(tc, H, "$book", a, "ServiceRequest/sr-after"))
    ctx = sch.Ctx(sch.SchedulingConfig(), now=datetime.fromisoformat(missed["end"]))
    assert sch.mark_noshow(tc.db, ctx, missed["id"])["status"] == "noshow"
    done = _appointment(_post(tc, H, "$book", b, "ServiceRequest/sr-after"))
    _refused(_post(tc, H, "$book", c, "ServiceRequest/sr-after"), done["id"])
    assert sch.mark_fulfilled(tc.db, done["id"])["status"] == "fulfilled"
    follow_up = _appointment(_post(tc, H, "$book", c, "ServiceRequest/sr-after"))
    assert [x["id"] for x in _active(tc.db, "sr-after")] == [follow_up["id"]]


def test_a_reschedule_moves_the_visit_and_the_consult_still_has_one(tc, H):
    day = DAY + timedelta(days=6)
    a, b, c, d = _free(tc, H, day, 4)
    visit = _appointment(_post(tc, H, "$book", a, "ServiceRequest/sr-move"))
    r = tc.post(f"/fhir/Appointment/{visit['id']}/$reschedule", content=_params(("appointment-resource", b)),
                headers=H)
    moved = _appointment(r)
    assert moved["basedOn"] == [{"reference": "ServiceRequest/sr-move"}]
    assert [x["id"] for x in _active(tc.db, "sr-move")] == [moved["id"]]
    link = latest(tc.db[sch.CONSULT_VISITS], "sr-move")
    assert (link["n"], link["ap"], link["rp"]["ap"]) == (2, moved["id"], visit["id"])
    _refused(_post(tc, H, "$book", c, "ServiceRequest/sr-move"), moved["id"])
    # the old one cannot be moved again; the new one can
    r = tc.post(f"/fhir/Appointment/{visit['id']}/$reschedule", content=_params(("appointment-resource", c)),
                headers=H)
    assert r.status_code == 409
    r = tc.post(f"/fhir/Appointment/{moved['id']}/$reschedule", content=_params(("appointment-resource", c)),
                headers=H)
    again = _appointment(r)
    assert [x["id"] for x in _active(tc.db, "sr-move")] == [again["id"]]
    # onto a slot taken elsewhere (this process's view does not know yet): 409, the visit stays
    taken = d["slot"][0]["reference"][5:]
    advance(tc.db[sch.SLOT_LINKS], taken, None, {"st": "booked", "ap": "elsewhere", "sc": "sched-visit"})
    r = tc.post(f"/fhir/Appointment/{again['id']}/$reschedule", content=_params(("appointment-resource", d)),
                headers=H)
    assert r.status_code == 409, r.text
    links = sorted(tc.db[sch.CONSULT_VISITS].find({"k": "sr-move"}), key=lambda x: x["n"])
    assert (links[-1]["ap"], links[-1].get("rv")) == (again["id"], True)  # the moved-to link reverted
    assert [x["id"] for x in _active(tc.db, "sr-move")] == [again["id"]]
    _refused(_post(tc, H, "$book", a, "ServiceRequest/sr-move"), again["id"])


def test_reschedules_and_fresh_bookings_of_one_consult_at_once_leave_one_visit(tc, H):
    """Three reschedules of the consult's visit and five fresh bookings for it, at once, each on its
    own free slot: one reschedule wins; the old visit is cancelled; one appointment is active."""
    day = DAY + timedelta(days=11)
    props = _free(tc, H, day, 9)
    visit = _appointment(_post(tc, H, "$book", props[0], "ServiceRequest/sr-mix"))
    barrier = threading.Barrier(8)
    cfg = sch.SchedulingConfig(reminder_offsets=())

    def act(i):
        target = _with_patient(props[1 + i], "Patient/bn-visit", "ServiceRequest/sr-mix")
        barrier.wait()
        try:
            if i < 3:
                return "moved", sch.reschedule(tc.db, sch.Ctx(cfg), visit["id"], props[1 + i])["id"]
            return "booked", sch.book(tc.db, sch.Ctx(cfg), request=target)["id"]
        except FhirError as err:
            return err.status, err.detail

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(act, range(8)))
    won = [r for r in results if r[0] in ("moved", "booked")]
    assert len(won) == 1 and won[0][0] == "moved", results
    assert all(r[0] == 409 for r in results if r not in won), results
    assert [x["id"] for x in _active(tc.db, "sr-mix")] == [won[0][1]]
    assert sch.current_status(tc.db, visit["id"]) == "cancelled"
    busy = [p for p in props if tc.get(f"/fhir/{p['slot'][0]['reference']}", headers=H).json()["status"] != "free"]
    assert len(busy) == 1
    assert tc.db[sch.OPEN_RESCHEDULES].count_documents({"old": visit["id"]}) == 0


def test_a_lost_slot_gives_the_consult_back_at_once(tc, H):
    """A booking that won the consult's link and lost its slot reverts the link: the next one books."""
    day = DAY + timedelta(days=7)
    a, b = _free(tc, H, day, 2)
    advance(tc.db[sch.SLOT_LINKS], a["slot"][0]["reference"][5:], None,
            {"st": "booked", "ap": "elsewhere", "sc": "sched-visit"})
    for op in ("$hold", "$book"):
        r = _post(tc, H, op, a, "ServiceRequest/sr-lost")
        assert r.status_code == 409 and "Slot/" in r.json()["issue"][0]["diagnostics"], r.text
    links = sorted(tc.db[sch.CONSULT_VISITS].find({"k": "sr-lost"}), key=lambda x: x["n"])
    # the hold claimed link 1 and, its slot lost, link 2 names no visit; the booking then learned the
    # slot was taken before it claimed anything (its process's view had the winner's link)
    assert [(x["n"], x["ap"] is None, bool(x.get("rv"))) for x in links] == [(1, False, False), (2, True, True)]
    assert _appointment(_post(tc, H, "$book", b, "ServiceRequest/sr-lost"))["status"] == "booked"


def test_a_booking_that_died_between_its_two_claims_holds_the_consult_for_the_grace_only(tc, H):
    day = DAY + timedelta(days=8)
    a, b, c = _free(tc, H, day, 3)
    av_ = sch.availability_of(tc.db, "sched-visit")
    now = sch.utcnow()
    # the visit link claimed, then the process died before the slot's claim
    dead = _with_patient(a, "Patient/bn-visit", "ServiceRequest/sr-dead")
    slotted = sch.Slotted(av_, av.slot_of(av_, a["slot"][0]["reference"][5:]))
    claim = sch.claim_visit(tc.db, sch.Ctx(sch.SchedulingConfig(), now=now), new_uuid(), dead, slotted)
    _refused(_post(tc, H, "$book", b, "ServiceRequest/sr-dead"), claim.link["ap"])  # under way, as far as anyone knows
    later = sch.Ctx(sch.SchedulingConfig(), now=now + timedelta(seconds=sch.VISIT_GRACE_SECONDS + 1))
    booked = sch.book(tc.db, later, request=_with_patient(b, "Patient/bn-visit", "ServiceRequest/sr-dead"))
    assert [x["id"] for x in _active(tc.db, "sr-dead")] == [booked["id"]]
    # a reschedule that died so: after the grace, the visit is the appointment it was moving
    visit = _appointment(_post(tc, H, "$book", c, "ServiceRequest/sr-dead-2"))
    moving = _with_patient(b, "Patient/bn-visit", "ServiceRequest/sr-dead-2")
    sch.claim_visit(tc.db, sch.Ctx(sch.SchedulingConfig(), now=now), new_uuid(), moving,
                    sch.Slotted(av_, av.slot_of(av_, b["slot"][0]["reference"][5:])),
                    replaces=sch.read_appointment(tc.db, visit["id"]))
    with pytest.raises(FhirError) as refused:
        sch.book(tc.db, later, request=_with_patient(a, "Patient/bn-visit", "ServiceRequest/sr-dead-2"))
    assert refused.value.status == 409 and f"Appointment/{visit['id']}" in refused.value.detail


def _paused_booking(tc, proposal, sr, monkeypatch, *, age: float):
    """A booking of ``proposal`` for ``sr`` in a thread whose request began ``age`` seconds ago and
    that stops between its visit link and its slot claim until released: ``(reached, release,
    future)``; the future gives the Appointment or the FhirError."""
    real = sch._claim
    reached, release = threading.Event(), threading.Event()
    mine: list[str] = []

    def paused(db, slotted, doc, *a, **kw):
        if doc.get("ap") in mine:
            reached.set()
            assert release.wait(30)
        return real(db, slotted, doc, *a, **kw)

    monkeypatch.setattr(sch, "_claim", paused)
    appt = new_uuid()
    mine.append(appt)
    ctx = sch.Ctx(sch.SchedulingConfig(reminder_offsets=()), by="slow", now=sch.utcnow() - timedelta(seconds=age))

    def run():
        try:
            return sch.book(tc.db, ctx, request=_with_patient(proposal, "Patient/bn-visit", sr), new_id=appt)
        except FhirError as err:
            return err

    pool = ThreadPoolExecutor(1)
    future = pool.submit(run)
    pool.shutdown(wait=False)
    assert reached.wait(30)
    return reached, release, future


def test_a_booking_gone_past_as_dead_backs_off_once_its_slot_is_claimed(tc, H, monkeypatch):
    """A booking stopped between its visit link and its slot claim for longer than the grace is gone
    past by the consult's next booking, which books; when the stopped one goes on and claims its
    slot, it sees the link after its own and cancels its appointment (409): one visit. (Before the
    fence the late claim left the consult with two.)"""
    day = DAY + timedelta(days=14)
    a, b = _free(tc, H, day, 2)
    _, release, slow = _paused_booking(tc, a, "ServiceRequest/sr-past-1", monkeypatch,
                                      age=sch.VISIT_GRACE_SECONDS + 1)
    booked = sch.book(tc.db, sch.Ctx(sch.SchedulingConfig(reminder_offsets=())),
                      request=_with_patient(b, "Patient/bn-visit", "ServiceRequest/sr-past-1"))
    release.set()
    late = slow.result(60)
    assert isinstance(late, FhirError) and late.status == 409, late
    assert f"Appointment/{booked['id']}" in late.detail
    assert [x["id"] for x in _active(tc.db, "sr-past-1")] == [booked["id"]]
    slot_a = latest(tc.db[sch.SLOT_LINKS], a["slot"][0]["reference"][5:])
    assert slot_a["st"] == "free" and slot_a["n"] == 2  # claimed, then given back by the late booking
    _refused(_post(tc, H, "$book", a, "ServiceRequest/sr-past-1"), booked["id"])


def test_a_booking_going_past_a_link_whose_booking_then_claims_its_slot_backs_off(tc, H, monkeypatch):
    """The other order: the next booking reads the stopped one's link as dead, then the stopped one
    claims its slot and finishes before the next booking's link is in. The next booking reads the
    slot again after its link, finds the visit, names it again and answers 409: one visit."""
    day = DAY + timedelta(days=15)
    a, b, c = _free(tc, H, day, 3)
    _, release, slow = _paused_booking(tc, a, "ServiceRequest/sr-past-2", monkeypatch,
                                      age=sch.VISIT_GRACE_SECONDS + 1)
    real_state = sch._visit_state
    me = threading.get_ident()

    def judged_then_slow_finishes(db, link, now):
        state = real_state(db, link, now)
        if threading.get_ident() == me and state[1]:
            release.set()
            slow.result(60)  # the stopped booking claims its slot and completes meanwhile
        return state

    monkeypatch.setattr(sch, "_visit_state", judged_then_slow_finishes)
    with pytest.raises(FhirError) as refused:
        sch.book(tc.db, sch.Ctx(sch.SchedulingConfig(reminder_offsets=())),
                 request=_with_patient(b, "Patient/bn-visit", "ServiceRequest/sr-past-2"))
    visit = slow.result(60)
    assert isinstance(visit, dict), visit
    assert refused.value.status == 409 and f"Appointment/{visit['id']}" in refused.value.detail
    assert [x["id"] for x in _active(tc.db, "sr-past-2")] == [visit["id"]]
    assert latest(tc.db[sch.SLOT_LINKS], b["slot"][0]["reference"][5:]) is None  # never claimed
    monkeypatch.setattr(sch, "_visit_state", real_state)
    _refused(_post(tc, H, "$book", c, "ServiceRequest/sr-past-2"), visit["id"])


def test_a_link_younger_than_the_grace_is_a_booking_under_way(tc, H, monkeypatch):
    """Within the grace the stopped booking counts as under way: the next one is refused, and the
    stopped one books when it goes on."""
    day = DAY + timedelta(days=16)
    a, b = _free(tc, H, day, 2)
    _, release, slow = _paused_booking(tc, a, "ServiceRequest/sr-past-3", monkeypatch, age=0)
    r = _post(tc, H, "$book", b, "ServiceRequest/sr-past-3")
    release.set()
    visit = slow.result(60)
    assert isinstance(visit, dict), visit
    _refused(r, visit["id"])
    assert [x["id"] for x in _active(tc.db, "sr-past-3")] == [visit["id"]]


def test_a_consult_booked_before_the_visit_links_is_seen_by_its_next_booking(tc, H):
    """An Appointment stored before this claim (no link) still counts once, until it ends."""
    day = DAY + timedelta(days=9)
    a, b = _free(tc, H, day, 2)
    old = _appointment(_post(tc, H, "$book", a, "ServiceRequest/sr-old"))
    tc.db[sch.CONSULT_VISITS].delete_many({"k": "sr-old"})  # as stored before the visit links
    _refused(_post(tc, H, "$book", b, "ServiceRequest/sr-old"), old["id"])
    assert tc.post(f"/fhir/Appointment/{old['id']}/$cancel", content=_params(), headers=H).status_code == 200
    assert _appointment(_post(tc, H, "$book", b, "ServiceRequest/sr-old"))["status"] == "booked"


class Commands(monitoring.CommandListener):
    """The collections each command went to."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, dict]] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        self.seen.append((event.command_name, str(event.command.get(event.command_name)),
                          dict(event.command.get("filter") or {})))

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


def test_a_bare_slot_booking_sends_no_command_more_and_a_consults_first_three(tc, H, mongo_url):
    day = DAY + timedelta(days=10)
    a, b = _free(tc, H, day, 2)
    listener = Commands()
    client = MongoClient(mongo_url, event_listeners=[listener])

    def sent() -> Counter:
        """The commands by (name, collection), the schedules' and the link view's reads left out (they
        depend on what this process read lately, not on the booking)."""
        out = Counter((n, coll) for n, coll, f in listener.seen
                      if coll != "Schedule" and not (coll == sch.SLOT_LINKS and {"mo", "tb"} & set(f)))
        listener.seen.clear()
        return out

    try:
        db = client[tc.db.name]
        ctx = sch.Ctx(sch.SchedulingConfig(reminder_offsets=()))
        sch.book(db, ctx, request=_with_patient(a))
        bare = sent()
        assert not [k for k in bare if k[1] in (sch.CONSULT_VISITS, "ServiceRequest")]
        assert ("find", "Appointment") not in bare
        sch.book(db, ctx, request=_with_patient(b, "Patient/bn-visit", "ServiceRequest/sr-count"))
        consult = sent()
        # the chain's newest link and the next one, and its newest again once the slot is claimed (a
        # consult closed meanwhile cancels the booking: scheduling._closed_meanwhile); the first booking
        # of a consult also looks for a visit stored before the links (none here); its ServiceRequest was
        # read before too (the clinic's tag)
        assert consult - bare == Counter({("find", sch.CONSULT_VISITS): 2, ("insert", sch.CONSULT_VISITS): 1,
                                          ("find", "Appointment"): 1, ("find", "ServiceRequest"): 1}), consult
        assert not bare - consult
    finally:
        client.close()
