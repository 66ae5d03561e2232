"""One claim at a time per slot within a process (``scheduling.take_turn``), on the real FerretDB.

Requests of one process on one free slot used to send an insert each, all but one doomed; now
the first claims and the others wait for its outcome, then answer from the link view. The insert
under the link's unique ``_id`` still decides: these tests count the commands that reach the
database (pymongo's command monitoring) and check the answers and the chain.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta

import pytest
from pymongo import MongoClient, monitoring
from sen_shared.claims import advance
from sen_shared.fhir.outcome import FhirError
from sen_teleconsult.domain import availability as av
from sen_teleconsult.domain import scheduling as sch

from tests.support import admin_headers, app_client

pytestmark = pytest.mark.integration

ALL_DAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
SCHEDULE = "sched-flight"
DAY = (datetime.now(av.TZ) + timedelta(days=4)).date()
THREADS = 12


class SlotCommands(monitoring.CommandListener):
    """The commands sent to ``slot_links``, by command name."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.seen: list[tuple[str, dict]] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if event.command.get(event.command_name) == sch.SLOT_LINKS:
            with self.lock:
                self.seen.append((event.command_name, dict(event.command.get("filter") or {})))

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass

    def count(self, name: str) -> int:
        with self.lock:
            return sum(1 for n, _ in self.seen if n == name)

    def chain_reads(self) -> int:
        """Reads of a chain or a link (the link view's reads by month or second left out)."""
        with self.lock:
            return sum(1 for n, f in self.seen if n == "find" and not {"mo", "tb"} & set(f))

    def clear(self) -> None:
        with self.lock:
            self.seen.clear()


@pytest.fixture(scope="module")
def setup(base_env, run_id, mongo_client, mongo_url, dev_key):
    name = f"sen_t{run_id}_tc_flight"
    env = {**base_env, "SEN_TELECONSULT_HOLIDAYS": ""}
    with app_client("teleconsult", env, name, mongo_client) as (c, _app):
        body = av.schedule_resource(SCHEDULE, practitioner="Practitioner/bs-flight", organization="Organization/hub",
                                    specialty_code="394579002", specialty_text="Tim mạch",
                                    windows=[(ALL_DAYS, "07:00:00", "17:00:00")], slot_minutes=15)
        r = c.put(f"/fhir/Schedule/{SCHEDULE}", content=json.dumps(body), headers=admin_headers(dev_key))
        assert r.status_code in (200, 201), r.text
        listener = SlotCommands()
        client = MongoClient(mongo_url, tz_aware=True, uuidRepresentation="standard", event_listeners=[listener])
        try:
            yield client[name], listener
        finally:
            client.close()


@pytest.fixture()
def patient_wait(monkeypatch):
    # waiting is only ever an optimisation; here a slow machine must not turn it off mid-test
    monkeypatch.setattr(sch, "TURN_WAIT_SECONDS", 60.0)


def _slot(db, hhmm: str) -> sch.Slotted:
    sid = f"{SCHEDULE}-{DAY:%Y%m%d}{hhmm.replace(':', '')}"
    a = sch.availability_of(db, SCHEDULE, sid)
    assert a is not None
    slot = av.slot_of(a, sid)
    assert slot is not None
    return sch.Slotted(a, slot)


def _request(slotted: sch.Slotted, patient: str) -> dict:
    res = sch.proposal(slotted.av, slotted.slot, patient=patient)
    return json.loads(json.dumps(res))


def _book_all(db, slotted: sch.Slotted, n: int, before=None) -> list[int | str]:
    """``n`` threads book ``slotted`` at once (``before``: run by each thread after the barrier);
    the answers: 200, or the FhirError's status."""
    cfg = sch.SchedulingConfig()
    barrier = threading.Barrier(n)

    def one(i: int) -> int | str:
        barrier.wait()
        if before is not None:
            before(i)
        try:
            sch.book(db, sch.Ctx(cfg, by=f"u{i}"), request=_request(slotted, f"Patient/f{i}"))
        except FhirError as err:
            return err.status
        return 200

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(one, range(n)))


def test_requests_of_one_process_on_one_slot_send_one_claim(setup, patient_wait):
    db, listener = setup
    slotted = _slot(db, "07:00")
    sch.latest_links(db, [av.month_key(slotted.slot.start)])  # the month in the view, as after any $find
    listener.clear()
    answers = _book_all(db, slotted, THREADS)
    assert Counter(answers) == {200: 1, 409: THREADS - 1}, answers
    # one insert reached the database; the others answered from the view, without reading the chain
    assert listener.count("insert") == 1, listener.seen
    assert listener.chain_reads() == 0, listener.seen
    links = list(db[sch.SLOT_LINKS].find({"k": slotted.slot.id}))
    assert [(x["n"], x["st"]) for x in links] == [(1, "booked")]
    assert sch.turns_in_flight() == 0


def test_a_claim_lost_to_another_process_shows_the_waiters_the_winner(setup, patient_wait):
    """The process's first claimer loses (another process booked, unseen by this view): it alone
    sent an insert, and its waiters answer 409 from the winner it put in the view."""
    db, listener = setup
    slotted = _slot(db, "07:15")
    sch.latest_links(db, [av.month_key(slotted.slot.start)])
    # booked by another process, straight into the chain (no "tb": this view's refresh misses it)
    advance(db[sch.SLOT_LINKS], slotted.slot.id, None, {"st": "booked", "ap": "elsewhere", "sc": SCHEDULE})
    listener.clear()
    answers = _book_all(db, slotted, THREADS)
    assert answers == [409] * THREADS
    assert listener.count("insert") == 1, listener.seen
    assert listener.chain_reads() == 1, listener.seen  # the loser's read of what won
    assert [x["ap"] for x in db[sch.SLOT_LINKS].find({"k": slotted.slot.id})] == ["elsewhere"]
    assert sch.turns_in_flight() == 0


def test_a_stale_view_that_loses_to_a_hold_released_since_books_on_the_newest_link(setup, patient_wait):
    """The process's view is behind by several links: another process held the slot (a hold of 10
    minutes, still running by its clock), booked it and cancelled it, all unseen here. This
    process's insert after its guess loses to that old hold; the slot is free now (the chain's
    newest link is the release), so it books there, after one read: not "taken" because of a link
    long superseded (a doctor told "this time was just taken" of a free time; the browser journey's
    third walk booked the time the second had held, booked and released minutes before)."""
    db, listener = setup
    slotted = _slot(db, "09:00")
    sch.latest_links(db, [av.month_key(slotted.slot.start)])  # the view: never claimed
    coll, sid = db[sch.SLOT_LINKS], slotted.slot.id
    held = advance(coll, sid, None, {"st": "held", "ap": "elsewhere", "sc": SCHEDULE,  # no "tb": unseen here
                                     "exp": sch.utcnow() + timedelta(minutes=10)})
    booked = advance(coll, sid, held, {"st": "booked", "ap": "elsewhere", "sc": SCHEDULE})
    advance(coll, sid, booked, {"st": "free", "ap": "elsewhere", "sc": SCHEDULE})
    assert sch._view_guess(db, slotted, sch.utcnow()) is None  # free and never claimed, as this view has it
    listener.clear()
    answers = _book_all(db, slotted, 1)
    assert answers == [200], answers
    assert [(x["n"], x["st"]) for x in coll.find({"k": sid}, sort=[("n", 1)])] == \
        [(1, "held"), (2, "booked"), (3, "free"), (4, "booked")]
    # the guess's insert, lost; one read of the chain; the insert after its newest link
    assert [name for name, _ in listener.seen[:3]] == ["insert", "find", "insert"], listener.seen
    assert listener.count("insert") == 2, listener.seen
    assert sch.turns_in_flight() == 0


def test_a_first_request_that_fails_before_claiming_lets_the_next_one_book(setup, patient_wait):
    """The first request takes the turn and then fails (a bad body, a refused facility: no claim
    made). The waiters do not take its failure for a booking: one of them books, the rest 409."""
    db, listener = setup
    slotted = _slot(db, "07:30")
    cfg = sch.SchedulingConfig()
    first = sch.peek(db, cfg, _request(slotted, "Patient/first"), sch.utcnow())
    assert first.turn is not None and first.guessed and first.last is None
    started = threading.Event()
    waiting: list[int] = []

    def note(i: int) -> None:
        waiting.append(i)
        if len(waiting) == THREADS:
            started.set()

    listener.clear()
    with ThreadPoolExecutor(1) as pool:
        later = pool.submit(_book_all, db, slotted, THREADS, note)
        assert started.wait(30)
        # every thread is on its way to the turn the first request holds: nothing claimed yet
        assert listener.count("insert") == 0 and not later.done()
        first.end()  # the first request failed without claiming
        answers = later.result(60)
    assert Counter(answers) == {200: 1, 409: THREADS - 1}, answers
    assert listener.count("insert") == 1, listener.seen
    assert [(x["n"], x["st"]) for x in db[sch.SLOT_LINKS].find({"k": slotted.slot.id})] == [(1, "booked")]
    assert sch.turns_in_flight() == 0


def test_a_failed_claim_ends_its_turn_and_the_waiters_decide_as_before(setup, patient_wait, monkeypatch):
    """The first claim's insert fails (the database refused it): its turn ends all the same, and
    the waiters claim in their turn; exactly one books."""
    db, _ = setup
    slotted = _slot(db, "07:45")
    sch.latest_links(db, [av.month_key(slotted.slot.start)])
    real = sch.advance
    failed: list[int] = []
    lock = threading.Lock()

    def flaky(coll, key, after, doc, **kw):
        with lock:
            if not failed:
                failed.append(1)
                raise RuntimeError("the database went away")
        return real(coll, key, after, doc, **kw)

    monkeypatch.setattr(sch, "advance", flaky)
    answers = _book_all_tolerant(db, slotted, THREADS)
    assert Counter(answers) == {"error": 1, 200: 1, 409: THREADS - 2}, answers
    assert [(x["n"], x["st"]) for x in db[sch.SLOT_LINKS].find({"k": slotted.slot.id})] == [(1, "booked")]
    assert sch.turns_in_flight() == 0


def _book_all_tolerant(db, slotted: sch.Slotted, n: int) -> list[int | str]:
    cfg = sch.SchedulingConfig()
    barrier = threading.Barrier(n)

    def one(i: int) -> int | str:
        barrier.wait()
        try:
            sch.book(db, sch.Ctx(cfg, by=f"u{i}"), request=_request(slotted, f"Patient/g{i}"))
        except FhirError as err:
            return err.status
        except RuntimeError:
            return "error"
        return 200

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(one, range(n)))


def test_turns_are_per_slot_and_left_behind_by_none(setup):
    db, _ = setup
    a, b = _slot(db, "08:00"), _slot(db, "08:15")
    now = sch.utcnow()
    held = sch.take_turn(db, a, now)
    assert held is not None
    try:
        assert sch.take_turn(db, a, now, wait=0) is None  # the same slot: not while the first is claiming
        other = sch.take_turn(db, b, now, wait=0)  # another slot: at once
        assert other is not None
        other.end()
    finally:
        held.end()
    again = sch.take_turn(db, a, now, wait=0)
    assert again is not None
    again.end()
    again.end()  # ending twice is harmless
    assert sch.turns_in_flight() == 0


def test_a_booking_this_process_learned_just_now_answers_409_without_a_read(setup, monkeypatch):
    """A booked slot the process learned itself (its own claim) answers 409 with no read for
    LinkView.REFRESH_SECONDS; after that the others' new links are read before a 409, so a cancel
    made elsewhere shows.

    "Just now" and "long ago" are arranged, not raced: the window is an hour here, and "long ago"
    is set as two windows back. With the real 0.25 s, a loaded machine took longer than the window
    between the claim and the next check (the booking's own steps after its claim included), and
    the check read the links as it should for a link that old."""
    window = 3600.0
    monkeypatch.setattr(sch.LinkView, "REFRESH_SECONDS", window)

    def long_ago() -> float:
        return time.monotonic() - 2 * window

    db, listener = setup
    slotted = _slot(db, "08:30")
    cfg = sch.SchedulingConfig()
    claimed_after = time.monotonic()
    booked = sch.book(db, sch.Ctx(cfg, by="u"), request=_request(slotted, "Patient/a"))
    view = sch._views[db.name]
    assert view.learned[slotted.slot.id] >= claimed_after  # learned by its own claim, as it was made
    view.read_at = long_ago()  # the others' links were last read long ago
    listener.clear()
    with pytest.raises(FhirError) as lost:
        sch.peek(db, cfg, _request(slotted, "Patient/b"), sch.utcnow())
    assert lost.value.status == 409
    assert listener.seen == []  # its own claim, just now: no read at all
    # learned longer ago than REFRESH_SECONDS: the links claimed since are read first
    view.learned[slotted.slot.id] = long_ago()
    view.read_at = long_ago()
    listener.clear()
    with pytest.raises(FhirError):
        sch.peek(db, cfg, _request(slotted, "Patient/b"), sch.utcnow())
    finds = [f for n, f in listener.seen if n == "find"]
    assert finds and all("tb" in f for f in finds), listener.seen
    # cancelled by another process (straight into the chain): read before answering, so it books
    first = db[sch.SLOT_LINKS].find_one({"k": slotted.slot.id})
    assert first["ap"] == booked["id"]
    advance(db[sch.SLOT_LINKS], slotted.slot.id, first, {"st": "free", "ap": booked["id"], "sc": SCHEDULE,
                                                         "tb": sch.time_bucket(sch.utcnow())})
    view.learned[slotted.slot.id] = long_ago()
    view.read_at = long_ago()
    again = sch.book(db, sch.Ctx(cfg, by="u"), request=_request(slotted, "Patient/c"))
    assert [(x["n"], x["st"], x["ap"]) for x in db[sch.SLOT_LINKS].find({"k": slotted.slot.id}, sort=[("n", 1)])] \
        == [(1, "booked", booked["id"]), (2, "free", booked["id"]), (3, "booked", again["id"])]
    assert sch.turns_in_flight() == 0
