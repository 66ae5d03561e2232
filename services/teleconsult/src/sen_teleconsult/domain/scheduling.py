"""Booking (IHE ITI Scheduling): find, hold, book, reschedule, cancel, no-show, fulfilled.

**The slot's claim chain is the truth.** Slots are computed from availability (availability.py);
each slot that was ever claimed has a chain in ``slot_links`` (``sen_shared.claims``:
``<slot id>/1``, ``/2``, ... inserted under their unique ``_id``, never updated or deleted). A
link says what happened to the slot: ``held`` (by an Appointment, until ``exp``), ``booked``,
``free`` (released: cancelled, expired, rescheduled), ``fulfilled``, ``noshow``. Whoever wants
the slot reads the newest link, decides, and inserts the next one: two claimers that read the
same link race for the same ``_id`` and exactly one wins (the other gets 409). An expired hold
counts as free: the next claimer simply appends its own link after it (the release "by the next
reader"); the worker's sweeper appends ``free`` links for expired holds nobody took.

The served FHIR ``Slot`` is computed too (api/scheduling.py), its ``status`` from the newest link:
``free``, ``busy-tentative`` (an unexpired hold) or ``busy``.

**Appointments** are FHIR resources in the store (searchable, with history), a projection of
the chain: version 1 is inserted by the winner of the link that created the appointment, and
each later link about it (the transitions of one appointment are consecutive links of its slot,
because it stays the newest until it is released) is written to the resource by that link's
winner only, after the previous link's change has landed (the document keeps ``sq``, the link
it reflects). So each version has a single writer by construction (ARCHITECTURE §2).

**One visit per consult**: an Appointment ``basedOn`` a ServiceRequest is that consult's visit,
and a consult has at most one active (``pending`` with an unexpired hold, or ``booked``). Its
visits are a chain in ``consult_visits`` (``<ServiceRequest id>/1``, ``/2``, ...), each link naming
the Appointment that is the consult's visit (``ap``, its slot ``sl`` and start ``s``). A new hold
or direct booking for the consult reads the newest link, refuses (409) while the appointment it
names is active (its slot's newest link is its own, booked or held unexpired; or its booking is
under way: no slot link of its yet and the link younger than ``VISIT_GRACE_SECONDS``, 10 s; an
older one is taken for dead and gone past, the booking going past checking its slot again and that
booking, should it live, backing off once it sees the link after its own), and
otherwise claims the next link for the new Appointment *before* the slot: two bookings for one
consult race for the same link and the loser never touches a slot. The winner that then loses
its slot appends a link naming the visit before it again (``rv``). A reschedule's new
appointment takes the next link even though the one it replaces (named in the link, ``rp``) is
still active. Confirming a hold, cancel, no-show and fulfilled write no link: the next booking
reads the appointment's state from its slot's chain. The consult's closing (its Task cancelled,
rejected or completed) appends a closing link (``cl``) after which no visit is taken, and ends the
visit it finds (:func:`close_visits`); a booking reads the chain again once its slot is claimed
(:func:`_closed_meanwhile`), so a booking racing the close never leaves a visit booked. A consult
without links (booked before them) is looked up among the Appointments based on it, once, by its first booking since.
Appointments without a ServiceRequest take no part (no read, no write).

Events: the ``booked`` link carries ``teleconsult.appointment.booked`` in its outbox (an
insert-only document: the outbox relay is its only later writer).
"""

from __future__ import annotations

import copy
import heapq
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from pymongo.database import Database
from sen_shared.bus import outbox
from sen_shared.bus.events import make_event
from sen_shared.claims import ClaimTaken, advance, claim_once, latest, link_id, release
from sen_shared.fhir.body import unpack
from sen_shared.fhir.outcome import FhirError
from sen_shared.fhir.store import Store, not_found
from sen_shared.ids import new_uuid

from . import availability as av_mod
from .availability import TZ, Availability, AvailabilityError, SlotTime
from .video import Room, VideoConfig, create_room

log = logging.getLogger("sen.teleconsult.scheduling")

SLOT_LINKS = "slot_links"
OPEN_HOLDS = "open_holds"  # {_id: the held link's id, k: slot, exp}: what the sweeper looks at
# a reschedule: {_id: the old appointment, new}: the one reschedule that replaces it (a claim)
RESCHEDULES = "reschedules"
# {_id: the new appointment, old, slot, at}: a reschedule under way, inserted before the new slot is
# claimed and removed once the old appointment is released (by the request, or by the repair)
OPEN_RESCHEDULES = "open_reschedules"
RESCHEDULE_GRACE_SECONDS = 60.0  # an open reschedule this old whose new slot was never claimed: dropped
# a consult's visits, a chain per ServiceRequest id: {k, n, ap, sl, s, at[, rp][, rv]} (see the docstring)
CONSULT_VISITS = "consult_visits"
# a visit link this old with no slot claim behind it is taken for dead: a later booking goes past it.
# Safety does not rest on it (a booking gone past finds out once its slot is claimed and backs off,
# _closed_meanwhile, and the one going past checks the slot again after its link, claim_visit); it only
# spares a booking under way (a few milliseconds between its two claims) from being gone past
VISIT_GRACE_SECONDS = 10.0
APPOINTMENT = "Appointment"
EXT_ROOM = "https://fhir.sen.vn/StructureDefinition/appointment-video-room"
EXT_JOIN = "https://fhir.sen.vn/StructureDefinition/appointment-join-url"
EXT_REPLACES = "https://fhir.sen.vn/StructureDefinition/appointment-replaces"
STATUS_OF = {"held": "pending", "booked": "booked", "free": "cancelled", "fulfilled": "fulfilled",
             "noshow": "noshow"}
BUSY = ("booked", "fulfilled", "noshow")
DEFAULT_COUNT = 20
MAX_COUNT = 500
BOOKED_EVENT = "teleconsult.appointment.booked"
SYSTEM_REF = "Device/sen-teleconsult"  # the sweeper's, the repair's changes
EXT_CHANGED_BY = "https://sen.vn/fhir/StructureDefinition/changed-by"  # as the consult resources' versions


def _stamp(resource: dict[str, Any], ref: str, display: str) -> dict[str, Any]:
    """Record who made this version of an Appointment in ``meta`` (its history says who and when)."""
    meta = dict(resource.get("meta") or {})
    meta.pop("versionId", None)
    meta.pop("lastUpdated", None)
    meta["extension"] = [{"url": EXT_CHANGED_BY, "valueReference": {"reference": ref, "display": display}}]
    resource["meta"] = meta
    return resource


def _by(change: Callable[[dict[str, Any]], None], ref: str, display: str) -> Callable[[dict[str, Any]], None]:
    def changed(resource: dict[str, Any]) -> None:
        change(resource)
        _stamp(resource, ref, display)
    return changed


@dataclass(frozen=True)
class SchedulingConfig:
    hold_minutes: float = 10.0
    holidays: frozenset[date] = frozenset()
    horizon_days: int = 56  # how far ahead slots are offered
    notice_minutes: int = 0  # a slot must start at least this long from now
    reminder_offsets: tuple[int, ...] = (1440, 60)  # minutes before the start
    video: VideoConfig = field(default_factory=VideoConfig)
    service: str = "teleconsult"


def iso_local(dt: datetime) -> str:
    return dt.astimezone(TZ).isoformat(timespec="seconds")


def utcnow() -> datetime:
    t = datetime.now(UTC)
    return t.replace(microsecond=t.microsecond // 1000 * 1000)


def _aware(dt: datetime) -> datetime:
    """MongoDB hands datetimes back naive (UTC) unless the client is tz-aware."""
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


# ------------------------------------------------------------------------------- schedules

_schedules: dict[str, tuple[tuple[Any, ...], dict[str, Availability], float]] = {}
SCHEDULES_FRESH_SECONDS = 2.0  # how long a process trusts the schedule versions it read
_schedule_reads: dict[str, threading.Lock] = {}  # database -> held while a request of this process re-reads them


def schedules(db: Database, *, fresh: bool = False) -> dict[str, Availability]:
    """Every readable, current Schedule's availability, by schedule id. The versions are read
    again after ``SCHEDULES_FRESH_SECONDS`` (so a changed availability shows within that, and the
    time that read takes, in ``$find``) or when ``fresh``, the bodies only when a version changed.
    Once they are due, one request of the process reads them; the others meanwhile use what was read
    last rather than send the same read (under issue 14's 100 ``$book`` at once, each of a
    worker's threads sent its own: 3 reads a round of 10 bookings)."""
    cached = _schedules.get(db.name)
    if not fresh and cached is not None and time.monotonic() - cached[2] < SCHEDULES_FRESH_SECONDS:
        return cached[1]
    if fresh or cached is None:
        return _read_schedules(db, cached)
    reading = _schedule_reads.setdefault(db.name, threading.Lock())
    if not reading.acquire(blocking=False):
        return cached[1]  # another request of this process is reading them now
    try:
        cached = _schedules.get(db.name, cached)
        if time.monotonic() - cached[2] < SCHEDULES_FRESH_SECONDS:
            return cached[1]  # read by another request between the look above and the lock
        return _read_schedules(db, cached)
    finally:
        reading.release()


def _read_schedules(db: Database, cached: tuple[tuple[Any, ...], dict[str, Availability], float] | None,
                    ) -> dict[str, Availability]:
    coll = db["Schedule"]
    heads = sorted((d["_id"], d.get("v")) for d in coll.find({"del": False}, {"_id": 1, "v": 1}))
    key = tuple(heads)
    if cached is not None and cached[0] == key:
        _schedules[db.name] = (key, cached[1], time.monotonic())
        return cached[1]
    out: dict[str, Availability] = {}
    for doc in coll.find({"del": False}, {"res": 1}):
        res = unpack(doc)["res"]
        try:
            out[doc["_id"]] = av_mod.from_schedule(res)
        except AvailabilityError as err:
            log.warning("schedule without a readable availability", extra={"schedule": doc["_id"], "error": str(err)})
    _schedules[db.name] = (key, out, time.monotonic())
    return out



def availability_of(db: Database, schedule: str, slot: str | None = None,
                    holidays: frozenset[date] = frozenset()) -> Availability | None:
    """The schedule's availability; read afresh when this process does not know the schedule
    (or, given ``slot``, does not offer that slot): it may have been created or changed since."""
    found = schedules(db).get(schedule)
    if found is None or (slot is not None and av_mod.slot_of(found, slot, holidays) is None):
        found = schedules(db, fresh=True).get(schedule)
    return found


# ----------------------------------------------------------------------------- link states

def _is_active(link: dict[str, Any] | None, now: datetime) -> bool:
    if link is None:
        return False
    if link.get("st") in BUSY:
        return True
    return link.get("st") == "held" and _aware(link["exp"]) > now


def slot_status(link: dict[str, Any] | None, now: datetime) -> str:
    """The FHIR Slot.status the newest link means."""
    if not _is_active(link, now):
        return "free"
    return "busy-tentative" if link["st"] == "held" else "busy"  # type: ignore[index]


BUCKET_SECONDS = 1  # links carry the second of their claim ("tb"): what a process re-reads
LINK_FIELDS = {"k": 1, "n": 1, "st": 1, "exp": 1, "ap": 1, "sc": 1, "mo": 1}


def time_bucket(t: datetime) -> int:
    return int(t.timestamp()) // BUCKET_SECONDS


class LinkView:
    """A process's view of the newest link of every claimed slot, for ``$find``, Slot searches and
    a direct ``$book``'s first look (:func:`peek`).

    FerretDB decodes every document a query returns (~0.25 ms each here): reading a month's
    links on every ``$find`` cost 430 ms once 1,700 slots were claimed. So a month is read once,
    and each use reads only the links claimed since: the buckets from the last read's (minus one,
    for claims stamped before and inserted after it, and for clock skew between processes) to now,
    one equality query each. Claims never trust this view for a free slot: their insert decides.

    A link this process learned itself (its own claim, or the claim an insert of its lost to) is
    known as of that moment (``learned``): a booked slot is answered from it for
    ``REFRESH_SECONDS`` without reading the others' links again (:func:`seen_busy`).
    """

    MAX_GAP = 300  # buckets (5 minutes) without a read: start over rather than read them all
    REFRESH_SECONDS = 0.25  # other processes' claims show within this (this process's at once)

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.months: set[str] = set()
        self.links: dict[str, dict[str, Any]] = {}
        self.learned: dict[str, float] = {}  # slot -> when this process learned its newest link itself
        self.last: int | None = None
        self.read_at = 0.0

    def merge(self, link: dict[str, Any], learned: float | None = None) -> None:
        """Take in a link (``learned``: when this process learned it itself, e.g. its own claim:
        it shows without a read)."""
        have = self.links.get(link["k"])
        if have is None or have["n"] < link["n"]:
            self.links[link["k"]] = {k: link[k] for k in LINK_FIELDS if k in link}
            self.learned.pop(link["k"], None)
        elif have["n"] > link["n"]:
            return
        if learned is not None:
            self.learned[link["k"]] = learned

    def known_recently(self, slot: str) -> bool:
        """Whether the view's link of ``slot`` is known as of at most ``REFRESH_SECONDS`` ago."""
        since = max(self.read_at, self.learned.get(slot, 0.0))
        return time.monotonic() - since < self.REFRESH_SECONDS

    def get(self, db: Database, months: Iterable[str], now: datetime,
            refresh: bool = True) -> dict[str, dict[str, Any]]:
        """The links, with ``months`` read in; the links claimed since the last read are read too
        when ``refresh`` and that read is ``REFRESH_SECONDS`` old."""
        wanted = [mo for mo in months if mo not in self.months]
        with self.lock:
            bucket = time_bucket(now)
            if self.last is not None and bucket - self.last > self.MAX_GAP:
                self.months, self.links, self.learned, self.last = set(), {}, {}, None
                wanted = list(months)
            stale = refresh and time.monotonic() - self.read_at >= self.REFRESH_SECONDS
            if self.last is not None and (wanted or stale):
                self.read_at = time.monotonic()
                for b in range(self.last - 1, bucket + 1):
                    for link in db[SLOT_LINKS].find({"tb": b}, LINK_FIELDS):
                        self.merge(link)
                self.last = bucket
            for mo in wanted:
                if mo not in self.months:
                    for link in db[SLOT_LINKS].find({"mo": mo}, LINK_FIELDS):
                        self.merge(link)
                    self.months.add(mo)
            if self.last is None:
                self.last, self.read_at = bucket, time.monotonic()
            return self.links


_views: dict[str, LinkView] = {}


def latest_links(db: Database, months: Iterable[str], now: datetime | None = None) -> dict[str, dict[str, Any]]:
    """The newest link of every claimed slot in ``months`` (and maybe others), by slot id, as of ``now``."""
    view = _views.setdefault(db.name, LinkView())
    return view.get(db, months, now or utcnow())


def seen_busy(db: Database, slot: str, month: str, now: datetime) -> dict[str, Any] | None:
    """The newest link of ``slot`` when this process's view shows the slot booked (or used) as of
    at most ``LinkView.REFRESH_SECONDS`` ago; None when it shows it free or held.

    The others' new links are read (at most every ``REFRESH_SECONDS``) only to confirm a booked
    slot the view has not heard of within that time: a slot it shows free needs no read, the
    claim's insert decides, and under contention the winner's link is one this process learned
    itself moments ago (its own claim, or the claim an insert of its lost to)."""
    view = _views.setdefault(db.name, LinkView())
    seen = view.get(db, [month], now, refresh=False).get(slot)
    if seen is None or seen.get("st") not in BUSY:
        return None
    with view.lock:
        if view.known_recently(slot):
            return seen
    seen = view.get(db, [month], now).get(slot)
    return seen if seen is not None and seen.get("st") in BUSY else None


def _claimed(db: Database, link: dict[str, Any]) -> dict[str, Any]:
    """A link this process just learned is the slot's newest (its own claim, or the claim an insert
    of its lost to): shown in its view at once; returns ``link``."""
    view = _views.get(db.name)
    if view is not None:
        with view.lock:
            view.merge(link, learned=time.monotonic())
    return link


# ------------------------------------------------------------------------------------- find

@dataclass
class FindQuery:
    start: datetime
    end: datetime
    specialty: set[str] = field(default_factory=set)
    practitioner: set[str] = field(default_factory=set)
    organization: set[str] = field(default_factory=set)
    count: int = DEFAULT_COUNT
    patient: str | None = None
    service_request: str | None = None


def _matches(av: Availability, q: FindQuery) -> bool:
    if not av.active:
        return False
    if q.specialty and not (q.specialty & av.specialty_codes):
        return False
    if q.practitioner and not (q.practitioner & set(av.practitioners)):
        return False
    return not (q.organization and av.organization not in q.organization)


def offered_window(cfg: SchedulingConfig, start: datetime, end: datetime, now: datetime) -> tuple[datetime, datetime]:
    return max(start, now + timedelta(minutes=cfg.notice_minutes)), min(end, now + timedelta(days=cfg.horizon_days))


def _stream(av: Availability, start: datetime, end: datetime,
            holidays: frozenset[date]) -> Iterator[tuple[datetime, str, int, SlotTime, Availability]]:
    """A schedule's slots as sortable tuples, for heapq.merge across schedules."""
    for i, s in enumerate(av_mod.slots_between(av, start, end, holidays)):
        yield s.start, av.schedule, i, s, av


def find(db: Database, cfg: SchedulingConfig, q: FindQuery, now: datetime | None = None) -> list[dict[str, Any]]:
    """Proposed Appointments on free slots between ``q.start`` and ``q.end``, earliest first."""
    now = now or utcnow()
    if q.end <= q.start:
        raise FhirError("end must be after start", status=400, expression=["end"])
    start, end = offered_window(cfg, q.start, q.end, now)
    chosen = [av for av in schedules(db).values() if _matches(av, q)]
    if not chosen or end <= start:
        return []
    links = latest_links(db, av_mod.months_between(start, end), now)
    streams = [_stream(av, start, end, cfg.holidays) for av in chosen]
    out: list[dict[str, Any]] = []
    for _, _, _, slot, av in heapq.merge(*streams):
        if _is_active(links.get(slot.id), now):
            continue
        out.append(proposal(av, slot, patient=q.patient, service_request=q.service_request))
        if len(out) >= q.count:
            break
    return out


def proposal(av: Availability, slot: SlotTime, *, patient: str | None = None,
             service_request: str | None = None) -> dict[str, Any]:
    """The proposed Appointment for ``slot`` (not stored: ``$hold``/``$book`` take it back)."""
    participants = [{"actor": dict(a), "required": "required", "status": "needs-action"} for a in av.actors]
    if patient:
        participants.insert(0, {"actor": {"reference": patient}, "required": "required", "status": "needs-action"})
    res: dict[str, Any] = {
        "resourceType": "Appointment", "status": "proposed",
        "specialty": list(av.specialties),  # shared, never changed: a proposal is serialized at once
        "start": iso_local(slot.start), "end": iso_local(slot.end), "minutesDuration": av.slot_minutes,
        "slot": [{"reference": f"Slot/{slot.id}"}],
        "participant": participants or [{"actor": {"reference": f"Schedule/{av.schedule}"}, "status": "needs-action"}],
    }
    if service_request:
        res["basedOn"] = [{"reference": service_request}]
    return res


# ------------------------------------------------------------------------------- claiming

class SlotGone(FhirError):
    """The slot is no longer offered (no such slot, past, leave, holiday): $hold answers cancelled."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail, status=409, code="not-found")


def taken(slot: str, holder: dict[str, Any] | None) -> FhirError:
    what = {"held": "held", "booked": "booked", "fulfilled": "used", "noshow": "used"}.get(
        (holder or {}).get("st", ""), "taken")
    return FhirError(f"Slot/{slot} is already {what} by another appointment; find another slot",
                     status=409, code="conflict")


@dataclass
class Slotted:
    """A slot resolved from an Appointment's ``slot`` reference."""

    av: Availability
    slot: SlotTime


def resolve_slot(db: Database, cfg: SchedulingConfig, appointment: dict[str, Any], now: datetime) -> Slotted:
    refs = [s.get("reference", "") for s in appointment.get("slot") or () if isinstance(s, dict)]
    if len(refs) != 1 or not refs[0].startswith("Slot/"):
        raise FhirError("the appointment must name exactly one Slot (slot[0].reference = Slot/<id>, as $find "
                        "proposes)", status=400, expression=["Appointment.slot"])
    sid = refs[0][5:]
    parsed = av_mod.parse_slot_id(sid)
    av = availability_of(db, parsed[0], sid, cfg.holidays) if parsed else None
    slot = av_mod.slot_of(av, sid, cfg.holidays) if av else None
    if av is None or slot is None:
        raise SlotGone(f"Slot/{sid} is not offered (no such slot, or its schedule no longer has it)")
    lo, hi = offered_window(cfg, slot.start, slot.end, now)
    if slot.start < lo or slot.start > hi:
        raise SlotGone(f"Slot/{sid} is no longer offered (it starts {iso_local(slot.start)}, outside the "
                       "bookable window)")
    return Slotted(av, slot)


def _link_doc(state: str, appt: str, slotted: Slotted, by: str, now: datetime, **extra: Any) -> dict[str, Any]:
    slot = slotted.slot
    return {"st": state, "ap": appt, "sc": slotted.av.schedule, "mo": av_mod.month_key(slot.start),
            "tb": time_bucket(utcnow()),  # when it is inserted, not when the request began
            "s": slot.start.astimezone(UTC), "e": slot.end.astimezone(UTC), "by": by, "at": now, **extra}


def _newest_if_free(db: Database, slotted: Slotted, now: datetime) -> dict[str, Any] | None:
    """The slot's newest link when the slot is free (None: never claimed); 409 when it is taken."""
    last = latest(db[SLOT_LINKS], slotted.slot.id)
    if _is_active(last, now):
        raise taken(slotted.slot.id, last)
    return last


_UNKNOWN: Any = object()


# ----------------------------------------------------------------- one claim at a time per slot

TURN_WAIT_SECONDS = 2.0  # the longest a request waits for another's claim of its slot in this process


class Turn:
    """A request's turn to claim a slot, the only one in its process (:func:`take_turn`).

    Under contention many requests of one process ask for the same free slot within a few
    milliseconds. Each used to guess "free" from the link view and send its own insert, all but
    one doomed to lose (a duplicate-key failure and the winner's read: FerretDB, PostgreSQL and
    pymongo work for a 409). With turns, the first request claims and the others of the process
    wait until its claim is decided; the outcome is in the link view then (the new link, or the
    link it lost to), so a booked slot answers them 409 without the database. Turns only spare
    doomed inserts: the insert under the link's unique ``_id`` still decides every claim, across
    processes and within one (a request that waited too long claims anyway, as before).
    """

    __slots__ = ("_ended", "_held", "_key")

    def __init__(self, key: tuple[str, str]) -> None:
        self._key = key
        self._ended = False
        self._held = threading.Lock()  # held while the turn lasts (a lock: cheaper than an Event)
        self._held.acquire()

    def end(self) -> None:
        """The claim is decided (won, lost, or not made at all): the next request may go. Idempotent."""
        with _turns_lock:
            if self._ended:
                return
            self._ended = True
            if _turns.get(self._key) is self:
                del _turns[self._key]  # an entry lives as long as its claim: nothing accumulates
        self._held.release()

    def wait(self, timeout: float) -> bool:
        """Wait until the turn ends (True), at most ``timeout`` seconds (False)."""
        if not self._held.acquire(timeout=max(timeout, 0.0)):
            return False
        self._held.release()  # for the next waiter
        return True


_turns: dict[tuple[str, str], Turn] = {}  # (database, slot id) -> the turn in flight
_turns_lock = threading.Lock()


def turns_in_flight() -> int:
    """How many slots have a claim under way in this process (tests: none are left behind)."""
    with _turns_lock:
        return len(_turns)


def take_turn(db: Database, slotted: Slotted, now: datetime, wait: float | None = None) -> Turn | None:
    """This request's turn to claim ``slotted``'s slot in this process, once no other request of
    the process is claiming it (different slots never wait for each other). Answers 409 when the
    link view shows the slot booked or used (:func:`seen_busy`: no database read when this process
    learned that link within ``LinkView.REFRESH_SECONDS``), before taking a turn and after each
    wait. None when a turn did not come within ``wait`` seconds
    (``TURN_WAIT_SECONDS``): the caller claims without one, as every request did before turns.
    The caller must :meth:`Turn.end` the turn it gets, whatever happens (``_claim`` does)."""
    key = (db.name, slotted.slot.id)
    month = av_mod.month_key(slotted.slot.start)
    deadline: float | None = None
    while True:
        seen = seen_busy(db, slotted.slot.id, month, now)
        if seen is not None:
            # booked (or used) as this process saw the chain at most LinkView.REFRESH_SECONDS ago.
            # Bookings end only by an explicit cancel or reschedule; a cancel by another process
            # within that time may not show yet, and this answers 409 as if the booking came first
            raise taken(slotted.slot.id, seen)
        with _turns_lock:
            other = _turns.get(key)
            if other is None:
                turn = _turns[key] = Turn(key)
                return turn
        if deadline is None:
            deadline = time.monotonic() + (TURN_WAIT_SECONDS if wait is None else wait)
        left = deadline - time.monotonic()
        if left <= 0 or not other.wait(left):
            return None


def _view_guess(db: Database, slotted: Slotted, now: datetime) -> Any:
    """The newest link of the slot as this process's link view has it, when the view says the slot
    is free (None: never claimed); ``_UNKNOWN`` when the view does not know or says it is taken."""
    view = _views.get(db.name)
    if view is None or av_mod.month_key(slotted.slot.start) not in view.months:
        return _UNKNOWN
    guess = view.links.get(slotted.slot.id)
    return _UNKNOWN if _is_active(guess, now) else guess


def _claim(db: Database, slotted: Slotted, doc: dict[str, Any], now: datetime,
           events: list[dict[str, Any]] | None = None, *, last: Any = _UNKNOWN, guessed: bool = False,
           turn: Turn | None = None, beside: list[dict[str, Any]] | None = None,
           ) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Claim a free slot: ``(the new link, the link it follows)``; 409 when the slot is taken.

    ``last``: the newest link as :func:`_newest_if_free` read it (read here when not given), or,
    ``guessed``, as the link view has it (:func:`_view_guess`). Advancing from a guess is as safe
    as from a read: links are immutable and numbered without gaps, so the insert of link n+1
    succeeds only if link n, which is free, was the newest. A wrong guess loses that insert; the
    chain is read then and decided on as usual. ``turn``: this request's turn on the slot
    (:func:`take_turn`), ended as soon as the claim is decided and its outcome is in the view.
    ``beside``: documents written in the claim's insert, only when it wins (the booking's reminders)."""
    try:
        return _claim_slot(db, slotted, doc, now, events, last=last, guessed=guessed, beside=beside or ())
    finally:
        if turn is not None:
            turn.end()


def _claim_slot(db: Database, slotted: Slotted, doc: dict[str, Any], now: datetime,
                events: list[dict[str, Any]] | None, *, last: Any, guessed: bool,
                beside: Sequence[dict[str, Any]] = ()) -> tuple[dict[str, Any], dict[str, Any] | None]:
    coll = db[SLOT_LINKS]
    sid = slotted.slot.id
    if last is _UNKNOWN:
        last, guessed = _newest_if_free(db, slotted, now), False
    body = outbox.new_document(doc, events) if events else doc
    try:
        return _claimed(db, advance(coll, sid, last, body, read_holder=not guessed, beside=beside)), last
    except ClaimTaken as lost:
        if not guessed:  # decided on a read: lost to the claim made after it, a lost race
            if lost.holder is not None:
                _claimed(db, lost.holder)  # what won shows in this process's view at once
            raise taken(sid, lost.holder) from None
    # a guess that lost: the view was behind, by one link (a lost race) or by many. The link after
    # the guessed one may be long superseded (a hold since booked and released: a 10-minute hold
    # still "active" by its own expiry), so the chain's newest link decides, for one read
    newest = latest(coll, sid)
    if newest is not None:
        _claimed(db, newest)  # what the chain is now shows in this process's view at once
    if _is_active(newest, now):
        raise taken(sid, newest)
    last = newest
    try:
        return _claimed(db, advance(coll, sid, last, body, beside=beside)), last
    except ClaimTaken as lost:
        raise taken(sid, lost.holder) from None


def _supersede(db: Database, link: dict[str, Any], before: dict[str, Any] | None) -> None:
    """A claim over an expired hold of another appointment: that appointment is now cancelled."""
    if before is not None and before.get("st") == "held" and before.get("ap") != link["ap"]:
        _project(db, before["ap"], link["n"], _by(_set_status("cancelled", "the hold expired"), SYSTEM_REF,
                                                  "hold expiry"))


@dataclass
class Ctx:
    """Who acts and with what settings."""

    cfg: SchedulingConfig
    by: str = "system"  # the acting user's subject (kept on the link: who claimed)
    ref: str = "Device/sen-teleconsult"  # who, as a reference (Practitioner/..., Organization/...): on each version
    now: datetime = field(default_factory=utcnow)
    correlation_id: str | None = None


def _new_appointment(request: dict[str, Any], slotted: Slotted, appt_id: str, status: str) -> dict[str, Any]:
    """The stored Appointment: the slot's facts from the server, the request's patient,
    basedOn, description and comment."""
    base = proposal(slotted.av, slotted.slot)
    patients = [p for p in request.get("participant") or ()
                if isinstance(p, dict) and str((p.get("actor") or {}).get("reference", "")).startswith("Patient/")]
    base["participant"] = [*copy.deepcopy(patients), *base["participant"]]
    for key in ("basedOn", "description", "comment", "reasonCode", "reasonReference", "extension"):
        if request.get(key):
            base[key] = copy.deepcopy(request[key])
    base["id"] = appt_id
    base["status"] = status
    base["created"] = datetime.now(TZ).date().isoformat()
    for p in base["participant"]:
        p["status"] = "tentative" if status == "pending" else "accepted"
    return base


def _tag_parties(db: Database, resource: dict[str, Any], slotted: Slotted) -> dict[str, Any]:
    """Tag the Appointment with its hub (the Schedule's organization) and the requesting clinic of
    the consult it is based on: who may see it (``fhir_server``) and whom reminders go to."""
    return _tag_parties_of(db, resource, slotted.av.organization)


def _tag_parties_of(db: Database, resource: dict[str, Any], organization: str | None) -> dict[str, Any]:
    from .consults import HUB_TAG, REQUESTER_TAG

    tags = [{"system": HUB_TAG, "code": organization}] if organization else []
    for ref in (str((b or {}).get("reference", "")) for b in resource.get("basedOn") or () if isinstance(b, dict)):
        if ref.startswith("ServiceRequest/"):
            doc = db["ServiceRequest"].find_one({"_id": ref.split("/", 1)[1]}, {"sp_requester": 1})
            tags += [{"system": REQUESTER_TAG, "code": str(r)} for r in (doc or {}).get("sp_requester") or ()
                     if str(r).startswith("Organization/")]
    if tags:
        meta = dict(resource.get("meta") or {})
        meta["tag"] = [*(t for t in meta.get("tag") or () if t.get("system") not in (HUB_TAG, REQUESTER_TAG)),
                       *tags]
        resource["meta"] = meta
    return resource


def _requesters(resource: dict[str, Any]) -> list[str]:
    from .consults import REQUESTER_TAG

    return [t["code"] for t in (resource.get("meta") or {}).get("tag") or () if t.get("system") == REQUESTER_TAG]


def _with_room(resource: dict[str, Any], room: dict[str, Any] | None) -> None:
    if not room:
        return
    resource["extension"] = [e for e in resource.get("extension") or () if e.get("url") != EXT_ROOM]
    resource["extension"].append({"url": EXT_ROOM, "valueUrl": room["url"]})
    for p in resource.get("participant") or ():
        ref = str((p.get("actor") or {}).get("reference", ""))
        link = room["doctor"] if ref.startswith(("Practitioner/", "PractitionerRole/")) else room["clinic"]
        p["extension"] = [e for e in p.get("extension") or () if e.get("url") != EXT_JOIN]
        p["extension"].append({"url": EXT_JOIN, "valueUrl": link})


def _room_doc(room: Room) -> dict[str, Any]:
    return {"name": room.name, "url": room.url, "clinic": room.clinic_url, "doctor": room.doctor_url,
            "exp": room.expires}


def _booked_event(appointment: dict[str, Any], slotted: Slotted, now: datetime,
                  correlation_id: str | None) -> dict[str, Any]:
    performer = next((str(a["reference"]) for a in slotted.av.actors if str(a.get("reference", ""))
                      .startswith(("Practitioner/", "PractitionerRole/"))), f"Schedule/{slotted.av.schedule}")
    data = {"appointment": f"Appointment/{appointment['id']}", "slot": f"Slot/{slotted.slot.id}",
            "performer": performer, "start": iso_local(slotted.slot.start), "end": iso_local(slotted.slot.end),
            "bookedAt": iso_local(now)}
    sr = next((b["reference"] for b in appointment.get("basedOn") or () if str(b.get("reference", ""))
               .startswith("ServiceRequest/")), None)
    if sr:
        data["serviceRequest"] = sr
    # checked against its schema by the relay's publisher before it leaves, and in the tests; not
    # here, on the request's path (jsonschema's error search cost 2.6 ms of CPU a booking)
    return make_event(BOOKED_EVENT, data, subject=f"Appointment/{appointment['id']}", correlation_id=correlation_id,
                      validate=False)


def _store(db: Database, service: str = "teleconsult") -> Store:
    # the resource events of the generic engine are not published for Appointments: the
    # scheduling events (appointment.booked) ride on the slot links instead
    return Store(db, service=service, emit_events=False)


def _create_appointment(db: Database, resource: dict[str, Any], seq: int) -> dict[str, Any]:
    store = _store(db)
    w = store.prepare_create(resource, resource["id"])
    w.doc["sq"] = seq  # type: ignore[index] - the link this version reflects
    store.apply(w)  # an insert under a fresh id: one writer
    return resource


# ------------------------------------------------------------------- one visit per consult

def consult_of(appointment: dict[str, Any]) -> str | None:
    """The id of the ServiceRequest (the consult) an Appointment is based on, if any."""
    for b in appointment.get("basedOn") or ():
        ref = str((b or {}).get("reference", "")) if isinstance(b, dict) else ""
        if ref.startswith("ServiceRequest/") and len(ref) > 15:
            return ref[15:]
    return None


@dataclass
class VisitClaim:
    """A consult's visit link claimed for a new Appointment (:func:`claim_visit`)."""

    key: str  # the ServiceRequest id
    link: dict[str, Any]


def _visit_holds(slot_link: dict[str, Any], now: datetime) -> bool:
    """Whether an appointment whose own slot link is ``slot_link`` (its slot's newest) is active."""
    return slot_link.get("st") == "booked" or (slot_link.get("st") == "held" and _aware(slot_link["exp"]) > now)


def active_visit(db: Database, link: dict[str, Any] | None, now: datetime) -> dict[str, Any] | None:
    """What of the visit link ``link`` (a consult's newest) is still active: the link (or, for a
    reschedule that never claimed its slot, the replaced appointment's part ``rp``), else None."""
    return _visit_state(db, link, now)[0]


def _visit_state(db: Database, link: dict[str, Any] | None,
                 now: datetime) -> tuple[dict[str, Any] | None, bool]:
    """:func:`active_visit`, and whether ``link``'s own booking was taken for dead (no claim of its
    slot, the link older than ``VISIT_GRACE_SECONDS``): a booking going past it checks again."""
    if link is None or not link.get("ap"):
        return None, False
    # the slot's whole chain (a few links) in one read: its newest link, and whether the appointment
    # ever had the slot, as of one moment (two reads would take a claim landing between them for a
    # release). An appointment's links are its slot's newest until it lets the slot go.
    chain = list(db[SLOT_LINKS].find({"k": link["sl"]}, {"ap": 1, "st": 1, "exp": 1, "n": 1}).sort("n", -1))
    if chain and chain[0].get("ap") == link["ap"]:
        return (link if _visit_holds(chain[0], now) else None), False
    if link.get("rv") or any(x.get("ap") == link["ap"] for x in chain):
        return None, False  # it had its slot and let it go (cancelled, expired, taken over), or named again: ended
    if (now - _aware(link["at"])).total_seconds() < VISIT_GRACE_SECONDS:
        return link, False  # its booking is under way (the slot claim follows the link's)
    # never claimed its slot (the request died between the two claims): what it replaced, if anything
    return (active_visit(db, {**link["rp"], "rv": True}, now) if link.get("rp") else None), True


def _visit_of(appointment: dict[str, Any]) -> dict[str, Any]:
    """A stored Appointment as a visit link names it: ``ap``, its slot ``sl``, its start ``s``."""
    sl = next((str(s.get("reference", ""))[5:] for s in appointment.get("slot") or () if isinstance(s, dict)), "")
    return {"ap": appointment["id"], "sl": sl, "s": datetime.fromisoformat(appointment["start"]).astimezone(UTC)}


def _legacy_visit(db: Database, key: str, now: datetime, replaces: str | None) -> dict[str, Any] | None:
    """For a consult without visit links: an active Appointment based on it stored before the links
    existed (other than ``replaces``), as a link would name it; None when there is none."""
    ref = f"ServiceRequest/{key}"
    for doc in db[APPOINTMENT].find({"sp_based-on": ref, "del": False}, {"_id": 1, "sp_status": 1}):
        if doc["_id"] == replaces or not {"booked", "pending"} & set(doc.get("sp_status") or ()):
            continue
        if current_status(db, doc["_id"], now) in ("pending", "booked"):
            return {**_visit_of(read_appointment(db, doc["_id"])), "at": now}
    return None


def _has_visit(key: str, visit: dict[str, Any] | None) -> FhirError:
    if not visit or not visit.get("ap"):
        return FhirError(f"ServiceRequest/{key}'s visit was changed by someone else meanwhile; read it again",
                         status=409, code="conflict")
    when = iso_local(_aware(visit["s"])) if visit.get("s") else "an unknown time"
    return FhirError(f"ServiceRequest/{key} already has a visit at {when} (Appointment/{visit['ap']}): move it "
                     f"(Appointment/{visit['ap']}/$reschedule) or cancel it ($cancel) instead of booking another",
                     status=409, code="business-rule")


def claim_visit(db: Database, ctx: Ctx, appt_id: str, request: dict[str, Any], slotted: Slotted, *,
                replaces: dict[str, Any] | None = None) -> VisitClaim | None:
    """Make ``appt_id`` the visit of the consult ``request`` is based on (None: it is based on none),
    before its slot is claimed: 409 while the consult has an active visit other than ``replaces``
    (the Appointment a reschedule moves), or when another booking for the consult claimed first."""
    key = consult_of(request)
    if key is None:
        return None
    coll = db[CONSULT_VISITS]
    last = latest(coll, key)
    if last is not None and last.get("cl"):
        raise _closed_consult(key, last)
    old = replaces.get("id") if replaces is not None else None
    dead = False
    if last is None:
        current = _legacy_visit(db, key, ctx.now, old)
    elif old is not None and last.get("ap") == old:
        current = None
    else:
        current, dead = _visit_state(db, last, ctx.now)
    if current is not None:
        raise _has_visit(key, current)
    doc: dict[str, Any] = {"ap": appt_id, "sl": slotted.slot.id, "s": slotted.slot.start.astimezone(UTC),
                           "by": ctx.by, "at": ctx.now}
    if replaces is not None:
        doc["rp"] = _visit_of(replaces)  # the visit until this one: again the visit if this one gets no slot
    try:
        claimed = VisitClaim(key, advance(coll, key, last, doc))
    except ClaimTaken as lost:
        if lost.holder is not None and lost.holder.get("cl"):
            raise _closed_consult(key, lost.holder) from None
        if old is not None:
            raise FhirError(f"Appointment/{old} was rescheduled by someone else meanwhile; read it again",
                            status=409, code="conflict") from None
        raise _has_visit(key, lost.holder) from None
    if dead:
        _check_gone_past(db, ctx, claimed, last)  # type: ignore[arg-type] - dead: a link was read
    return claimed


def _check_gone_past(db: Database, ctx: Ctx, claim: VisitClaim, past: dict[str, Any]) -> None:
    """This booking's visit link went past ``past``, a link whose booking never claimed its slot as
    far as :func:`active_visit` read (taken for dead): read that slot's chain again now that this
    link is in. Had that booking claimed its slot meanwhile, its visit stands: this link is undone
    (``past`` named again) and this booking answers 409 (the slot's newest link is what counts:
    a claim it made and gave up again on seeing this link is no visit). Of that booking (slot link, then the
    consult's chain: :func:`_closed_meanwhile`) and this one (visit link, then the slot's chain)
    at least one sees the other's insert, so the consult never ends up with two visits; both may
    back off (both 409, no visit), never both stay."""
    newest = latest(db[SLOT_LINKS], str(past.get("sl")))
    if newest is None or newest.get("ap") != past["ap"] or not _visit_holds(newest, ctx.now):
        # still no claim of its slot: dead (should it claim one now, it sees this link and backs off);
        # or it claimed and let go already (it saw this link): no visit but this one
        return
    doc = {k: past[k] for k in ("ap", "sl", "s") if k in past}
    try:
        advance(db[CONSULT_VISITS], claim.key, claim.link,
                {**doc, "rv": True, "why": "the visit gone past claimed its slot", "by": ctx.by, "at": utcnow()})
    except ClaimTaken:
        pass  # closed, or gone past in turn: what follows this link decides
    raise _has_visit(claim.key, past)


def _closed_consult(key: str, link: dict[str, Any]) -> FhirError:
    state = {"cancelled": "cancelled by the clinic", "rejected": "declined by the hub",
             "completed": "completed"}.get(str(link.get("cl")), str(link.get("cl")))
    return FhirError(f"ServiceRequest/{key} is closed ({state}): it takes no visit any more; a new consult "
                     "request is needed for another", status=409, code="business-rule")


def _superseded(claim: VisitClaim, last: dict[str, Any]) -> bool:
    """Whether ``last``, the consult's newest link, shows that a later booking went past this
    booking's visit link (taken for dead: :func:`claim_visit`): a link after it naming another
    appointment, neither this one again (``_check_gone_past``, a revert) nor a reschedule of it."""
    ap = claim.link.get("ap")
    if int(last.get("n", 0)) <= int(claim.link.get("n", 0)) or last.get("ap") == ap:
        return False
    return (last.get("rp") or {}).get("ap") != ap


def _closed_meanwhile(db: Database, ctx: Ctx, claim: VisitClaim | None, appt_id: str) -> None:
    """After a consult's booking or hold claimed its slot and stored its Appointment: 409 (its
    appointment cancelled) when the consult was closed meanwhile (:func:`close_visits` appended
    its closing link after this booking's visit link, and may have read the slot before this
    booking claimed it), or when a later booking went past this one's visit link, taking it for
    dead (:func:`claim_visit`: it read the slot before this booking claimed it). Of the closer
    (writes its link, then reads the slot's chain), or the booking going past (the same), and this
    booking (wrote its slot link and Appointment, then reads the consult's chain) at least one
    sees the other's insert, so no booked visit outlives the consult's closing, and no consult
    keeps two visits. The same one read either way."""
    if claim is None:
        return
    last = latest(db[CONSULT_VISITS], claim.key)
    if last is None:
        return
    if last.get("cl"):
        why, refused = str(last.get("why") or "the consult was closed"), _closed_consult(claim.key, last)
    elif _superseded(claim, last):
        why, refused = "another booking of the consult went past this one", _has_visit(claim.key, last)
    else:
        return
    try:
        cancel(db, ctx, appt_id, why)
    except FhirError as err:  # the closer cancelled it first: the same end
        log.info("visit of a closed consult ended by its closer", extra={"appointment": appt_id,
                                                                         "error": err.detail})
    raise refused


def revert_visit(db: Database, ctx: Ctx, claim: VisitClaim | None, why: str) -> None:
    """The slot of a claimed visit was not claimed (taken): the consult's visit is again the one
    it replaced (a reschedule's), or none. Only the link's claimer calls this, once."""
    if claim is None:
        return
    rp = claim.link.get("rp")
    doc = {**(rp or {"ap": None}), "rv": True, "why": why, "by": ctx.by, "at": utcnow()}
    try:
        advance(db[CONSULT_VISITS], claim.key, claim.link, doc)
    except ClaimTaken:
        pass  # another booking judged this link gone and went past it: nothing left to undo


def hold(db: Database, ctx: Ctx, request: dict[str, Any]) -> dict[str, Any]:
    """Hold the slot a proposed Appointment names: the Appointment, ``pending``, until the hold expires."""
    slotted = resolve_slot(db, ctx.cfg, request, ctx.now)
    appt_id = new_uuid()
    exp = ctx.now + timedelta(minutes=ctx.cfg.hold_minutes)
    guess = _view_guess(db, slotted, ctx.now)
    guessed = guess is not _UNKNOWN
    if not guessed:  # read here rather than in _claim: a taken slot is 409 before the consult's link
        guess = _newest_if_free(db, slotted, ctx.now)
    visit = claim_visit(db, ctx, appt_id, request, slotted)  # the consult's one visit: 409 before the slot
    try:
        link, before = _claim(db, slotted, _link_doc("held", appt_id, slotted, ctx.by, ctx.now, exp=exp), ctx.now,
                              last=guess, guessed=guessed)
    except FhirError:
        revert_visit(db, ctx, visit, "the slot was taken")
        raise
    # the sweeper's list; inserted by the link's winner only, removed by the sweeper only
    db[OPEN_HOLDS].insert_one({"_id": link["_id"], "k": link["k"], "exp": exp})
    resource = _tag_parties(db, _new_appointment(request, slotted, appt_id, "pending"), slotted)
    resource.setdefault("extension", []).append(
        {"url": "https://fhir.sen.vn/StructureDefinition/appointment-hold-expires", "valueDateTime": iso_local(exp)})
    _create_appointment(db, _stamp(resource, ctx.ref, ctx.by), link["n"])
    _supersede(db, link, before)
    _closed_meanwhile(db, ctx, visit, appt_id)
    return resource


@dataclass
class Peek:
    """A direct booking's slot, and whether it is free (as :func:`peek` found it)."""

    slotted: Slotted
    last: Any  # the newest link (None: never claimed), read or guessed
    guessed: bool  # from this process's link view, not read
    turn: Turn | None = None  # this request's turn to claim the slot in its process

    def end(self) -> None:
        """End the turn (the claim is decided, or will not be made): call it whatever happens."""
        if self.turn is not None:
            self.turn.end()


def peek(db: Database, cfg: SchedulingConfig, request: dict[str, Any], now: datetime) -> Peek:
    """The slot ``request`` names and its newest link, before any work on the request (its
    validation included): a taken slot answers 409 here, for the price of one read (none when
    this process's link view says the slot is free, or shows it booked: :func:`seen_busy`). A free slot is this
    request's to claim once no other request of the process is claiming it (:func:`take_turn`;
    the caller ends the turn: :meth:`Peek.end`, done by :func:`book`)."""
    slotted = resolve_slot(db, cfg, request, now)
    turn = take_turn(db, slotted, now)
    try:
        last = _view_guess(db, slotted, now)
        guessed = last is not _UNKNOWN  # free as far as this process knows: claim without reading first
        if not guessed:
            last = _newest_if_free(db, slotted, now)
    except BaseException:
        if turn is not None:
            turn.end()
        raise
    return Peek(slotted, last, guessed, turn)


def book(db: Database, ctx: Ctx, *, request: dict[str, Any] | None = None,
         appointment_id: str | None = None, new_id: str | None = None, peeked: Peek | None = None,
         replaces: dict[str, Any] | None = None) -> dict[str, Any]:
    """Book: confirm the hold of ``appointment_id``, or book the slot ``request`` names directly
    (as the new Appointment ``new_id``, or a fresh id; ``peeked``: :func:`peek` of ``request``;
    ``replaces``: the appointment a reschedule moves, the consult's visit until this one)."""
    if appointment_id is not None:
        return _confirm(db, ctx, appointment_id)  # the same appointment: the consult's visit already
    assert request is not None
    pk = peeked or peek(db, ctx.cfg, request, ctx.now)  # a taken slot answers 409 before any work
    try:
        slotted, last, guessed = pk.slotted, pk.last, pk.guessed
        appt_id = new_id or new_uuid()
        room = create_room(ctx.cfg.video, slotted.slot.start, slotted.slot.end)
        resource = _tag_parties(db, _new_appointment(request, slotted, appt_id, "booked"), slotted)
        _with_room(resource, _room_doc(room))
        event = _booked_event(resource, slotted, ctx.now, ctx.correlation_id)
        # the consult's one visit: 409 before the slot is claimed (none of this for a bare slot)
        visit = claim_visit(db, ctx, appt_id, resource, slotted, replaces=replaces)
        try:
            # the reminders go in the claim's insert: written only if it wins, one command for both
            link, before = _claim(db, slotted, _link_doc("booked", appt_id, slotted, ctx.by, ctx.now,
                                                         room=_room_doc(room)),
                                  ctx.now, [event], last=last, guessed=guessed, turn=pk.turn,
                                  beside=_reminders(ctx, resource, slotted))
        except FhirError:
            revert_visit(db, ctx, visit, "the slot was taken")
            raise
    finally:
        pk.end()  # the turn ends with the claim (in _claim), or here when no claim was made
    _create_appointment(db, _stamp(resource, ctx.ref, ctx.by), link["n"])
    _supersede(db, link, before)
    # a visit of a consult closed meanwhile is cancelled here; its reminders, stored with the claim,
    # are not sent (the worker sends one only while the slot's chain says booked: stopped)
    _closed_meanwhile(db, ctx, visit, appt_id)
    return resource


def _reminders(ctx: Ctx, resource: dict[str, Any], slotted: Slotted) -> list[dict[str, Any]]:
    """The reminder documents of a booking (none when no offsets are configured)."""
    from .reminders import reminder_docs

    if not ctx.cfg.reminder_offsets:
        return []
    clinics = _requesters(resource)  # the requesting clinic of the consult the appointment is for
    return reminder_docs(resource["id"], slotted.slot.id, slotted.slot.start, ctx.cfg.reminder_offsets, ctx.now,
                         also_to=list(dict.fromkeys(clinics)))


def _after_booking(db: Database, ctx: Ctx, resource: dict[str, Any], slotted: Slotted) -> None:
    """The reminders of a confirmed hold (a direct booking's come with its claim: :func:`book`)."""
    from .reminders import schedule_reminders

    if not ctx.cfg.reminder_offsets:
        return
    clinics = _requesters(resource)  # the requesting clinic of the consult the appointment is for
    schedule_reminders(db, resource["id"], slotted.slot.id, slotted.slot.start, ctx.cfg.reminder_offsets, ctx.now,
                       also_to=list(dict.fromkeys(clinics)))


def read_appointment(db: Database, appt_id: str) -> dict[str, Any]:
    doc = unpack(db[APPOINTMENT].find_one({"_id": appt_id}, {"res": 1, "del": 1}))
    if doc is None or doc.get("del") or not doc.get("res"):
        raise not_found(APPOINTMENT, appt_id)  # what another hub's (facility's) is answered as (api/scheduling.py)
    return doc["res"]


def _slot_of_appointment(db: Database, cfg: SchedulingConfig, resource: dict[str, Any]) -> Slotted:
    ref = next((s.get("reference", "") for s in resource.get("slot") or ()), "")
    parsed = av_mod.parse_slot_id(ref[5:]) if ref.startswith("Slot/") else None
    av = availability_of(db, parsed[0]) if parsed else None
    if parsed is None or av is None:
        raise FhirError(f"Appointment/{resource.get('id')} has no slot of a known schedule", status=409,
                        code="conflict")
    start = parsed[1]
    minutes = int(resource.get("minutesDuration") or av.slot_minutes)
    return Slotted(av, SlotTime(ref[5:], start, start + timedelta(minutes=minutes)))


def _own_link(db: Database, appt_id: str, resource: dict[str, Any], slotted: Slotted) -> dict[str, Any] | None:
    """The newest link of the appointment's slot if it is this appointment's (else None)."""
    last = latest(db[SLOT_LINKS], slotted.slot.id)
    return last if last is not None and last.get("ap") == appt_id else None


def _illegal(appt_id: str, status: str, want: str) -> FhirError:
    return FhirError(f"Appointment/{appt_id} is {status}: it cannot be {want}", status=409, code="business-rule")


def current_status(db: Database, appt_id: str, now: datetime | None = None) -> str:
    """The appointment's status from its slot's chain (the truth; the resource follows it)."""
    now = now or utcnow()
    resource = read_appointment(db, appt_id)
    ref = next((s.get("reference", "") for s in resource.get("slot") or ()), "")
    last = latest(db[SLOT_LINKS], ref[5:])
    if last is None or last.get("ap") != appt_id:
        return "cancelled"
    if last["st"] == "held" and _aware(last["exp"]) <= now:
        return "cancelled"
    return STATUS_OF[last["st"]]


def _transition(db: Database, ctx: Ctx, appt_id: str, want: str, allowed: tuple[str, ...],
                doc_extra: Callable[[dict[str, Any], Slotted], dict[str, Any]] | None = None,
                events: Callable[[dict[str, Any], Slotted], list[dict[str, Any]]] | None = None,
                change: Callable[[dict[str, Any]], None] | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Append the link ``want`` after the appointment's own link, if its state is in ``allowed``."""
    resource = read_appointment(db, appt_id)
    slotted = _slot_of_appointment(db, ctx.cfg, resource)
    last = _own_link(db, appt_id, resource, slotted)
    state = last["st"] if last is not None else "free"
    if last is not None and state == "held" and _aware(last["exp"]) <= ctx.now:
        state = "expired"
    if state == want:
        return resource, last  # type: ignore[return-value] - asked twice: the same answer
    if state not in allowed:
        shown = {"expired": "cancelled (its hold expired)"}.get(state, STATUS_OF.get(state, state))
        raise _illegal(appt_id, shown, {"free": "cancelled"}.get(want, STATUS_OF.get(want, want)))
    extra = doc_extra(resource, slotted) if doc_extra else {}
    doc = _link_doc(want, appt_id, slotted, ctx.by, ctx.now, **extra)
    evs = events(resource, slotted) if events else None
    body = outbox.new_document(doc, evs) if evs else doc
    try:
        link = _claimed(db, advance(db[SLOT_LINKS], slotted.slot.id, last, body))
    except ClaimTaken:
        raise FhirError(f"Appointment/{appt_id} was changed by someone else meanwhile; read it again",
                        status=409, code="conflict") from None
    updated = _project(db, appt_id, link["n"], _by(change or _set_status(STATUS_OF[want]), ctx.ref, ctx.by))
    return updated or resource, link


def _confirm(db: Database, ctx: Ctx, appt_id: str) -> dict[str, Any]:
    rooms: dict[str, Any] = {}

    def extra(resource: dict[str, Any], slotted: Slotted) -> dict[str, Any]:
        room = create_room(ctx.cfg.video, slotted.slot.start, slotted.slot.end)
        rooms["room"] = _room_doc(room)
        rooms["slotted"] = slotted
        return {"room": rooms["room"]}

    def events(resource: dict[str, Any], slotted: Slotted) -> list[dict[str, Any]]:
        return [_booked_event(resource, slotted, ctx.now, ctx.correlation_id)]

    def change(resource: dict[str, Any]) -> None:
        _set_status("booked")(resource)
        resource["extension"] = [e for e in resource.get("extension") or ()
                                 if not e.get("url", "").endswith("appointment-hold-expires")]
        _with_room(resource, rooms.get("room"))

    resource, link = _transition(db, ctx, appt_id, "booked", ("held",), extra, events, change)
    if "slotted" in rooms:
        _after_booking(db, ctx, resource, rooms["slotted"])
    return resource


def cancel(db: Database, ctx: Ctx, appt_id: str, reason: str = "cancelled") -> dict[str, Any]:
    """Cancel a pending or booked appointment: its slot is free again."""
    return _transition(db, ctx, appt_id, "free", ("held", "booked"), lambda r, s: {"why": reason},
                       change=_set_status("cancelled", reason))[0]


def mark_noshow(db: Database, ctx: Ctx, appt_id: str) -> dict[str, Any]:
    resource = read_appointment(db, appt_id)
    if datetime.fromisoformat(resource["start"]) > ctx.now:
        raise FhirError(f"Appointment/{appt_id} has not started yet: it cannot be a no-show", status=409,
                        code="business-rule")
    return _transition(db, ctx, appt_id, "noshow", ("booked",))[0]


def mark_fulfilled(db: Database, appointment_id: str, *, by: str = "system",
                   cfg: SchedulingConfig | None = None, now: datetime | None = None) -> dict[str, Any]:
    """Mark a booked Appointment ``fulfilled`` (the consult took place; ``Task/$complete`` calls it).

    Returns the Appointment resource as stored. Idempotent: an appointment already fulfilled is
    returned as it is. :class:`FhirError` 404 for an unknown appointment, 409 (issue code
    ``business-rule``, the current status in the text) for one that is not booked.
    """
    ctx = Ctx(cfg or SchedulingConfig(), by=by, now=now or utcnow(), ref=by if "/" in by else SYSTEM_REF)
    return _transition(db, ctx, appointment_id, "fulfilled", ("booked",))[0]


# ------------------------------------------------------------ the consult closed: its visit ends

CLOSE_ATTEMPTS = 8  # a closing link loses only to a booking's link (or a revert): it reads again
END_ATTEMPTS = 5  # ending one visit loses only to its own confirm or reschedule step: it reads again


def has_started(db: Database, appt_id: str, at: datetime) -> bool:
    """Whether the Appointment's visit had begun at ``at`` (its start at or before it); False for
    an unknown one."""
    try:
        start = read_appointment(db, appt_id).get("start")
    except FhirError:
        return False
    return isinstance(start, str) and datetime.fromisoformat(start) <= at


def close_visits(db: Database, cfg: SchedulingConfig, key: str, *, closed: str, why: str, by: str, ref: str,
                 at: datetime, fulfil_started: bool = False, also: Iterable[str] = ()) -> dict[str, str]:
    """The consult ``key`` (a ServiceRequest id) was closed (``closed``: its Task's final state): it
    takes no visit any more, and the visit it has ends. ``{appointment id: how it ended}``.

    (1) A closing link (``cl``) is appended to the consult's visit chain: every later hold, booking
    or reschedule for the consult reads it and answers 409 (:func:`claim_visit`), and one that
    claimed its visit link before it checks again once its slot is claimed
    (:func:`_closed_meanwhile`). (2) The appointments the link before it names (the visit, and the
    one a reschedule was moving) are ended if still active: ``fulfilled`` when ``fulfil_started``
    (the consult was completed) and the visit had begun at ``at`` (booked, its start at or before
    ``at``), else ``cancelled`` with ``why``: the slot is free again and its reminders stop (they
    send only while the slot's chain says booked). A consult without visit links (booked before
    them) has its active Appointments looked up. ``also``: Appointment ids named by the caller
    (the minutes' ``appointment``), ended the same way when based on this consult.

    Idempotent, and safe to run by several at once (the step's request, the relay's gate): the
    closing link is claimed by its insert (a second closer finds it and goes on to (2)); each
    appointment's end is a link of its slot's chain (``cancel``/``mark_fulfilled``), of which
    racing enders claim one, the others finding it ended."""
    coll = db[CONSULT_VISITS]
    for _ in range(CLOSE_ATTEMPTS):
        last = latest(coll, key)
        if last is not None and last.get("cl"):
            break
        try:
            last = advance(coll, key, last, {"ap": None, "cl": closed, "why": why, "by": by, "at": utcnow()})
            break
        except ClaimTaken:
            continue  # a booking (or a revert) took the link: read again
    else:
        raise FhirError(f"ServiceRequest/{key}'s visits are changing too fast; retry", status=503, code="transient")
    names: list[str] = []
    before = coll.find_one({"_id": link_id(key, int(last["n"]) - 1)}) if int(last["n"]) > 1 else None
    if before is not None:
        names += [str(x) for x in (before.get("ap"), (before.get("rp") or {}).get("ap")) if x]
    else:  # no visit links before the closing one: any Appointment stored before the links
        ref_sr = f"ServiceRequest/{key}"
        names += [d["_id"] for d in db[APPOINTMENT].find({"sp_based-on": ref_sr, "del": False},
                                                         {"_id": 1, "sp_status": 1})
                  if {"booked", "pending"} & set(d.get("sp_status") or ())]
    for extra in also:
        if extra and extra not in names:
            try:
                if consult_of(read_appointment(db, extra)) == key:
                    names.append(extra)
            except FhirError:
                continue
    ctx = Ctx(cfg, by=by, ref=ref, now=utcnow())
    return {ap: _end_visit(db, ctx, ap, why, fulfil_started=fulfil_started, at=at) for ap in dict.fromkeys(names)}


def _end_visit(db: Database, ctx: Ctx, appt_id: str, why: str, *, fulfil_started: bool, at: datetime) -> str:
    """End one visit of a closed consult (:func:`close_visits`); what it is now."""
    for _ in range(END_ATTEMPTS):
        try:
            resource = read_appointment(db, appt_id)
        except FhirError:
            # its booking claimed the slot but has not stored it yet: that booking reads the
            # closing link once it has (_closed_meanwhile) and cancels it itself
            return "unwritten"
        status = current_status(db, appt_id, utcnow())
        if status not in ("pending", "booked"):
            return status
        started = datetime.fromisoformat(resource["start"]) <= at
        try:
            if fulfil_started and status == "booked" and started:
                mark_fulfilled(db, appt_id, by=ctx.ref, cfg=ctx.cfg)
                return "fulfilled"
            cancel(db, Ctx(ctx.cfg, by=ctx.by, ref=ctx.ref, now=utcnow()), appt_id, why)
            return "cancelled"
        except FhirError as err:
            if err.status != 409:
                log.warning("visit of a closed consult not ended", extra={"appointment": appt_id,
                                                                          "error": err.detail})
                return status
            continue  # confirmed, rescheduled or ended by someone else meanwhile: read again
    return current_status(db, appt_id, utcnow())


def reschedule(db: Database, ctx: Ctx, appt_id: str, request: dict[str, Any]) -> dict[str, Any]:
    """Move a pending or booked appointment to the slot ``request`` names: a new Appointment is
    booked there (it names the old one in an extension) and the old one is cancelled. If the new
    slot is taken, nothing changes (409).

    Crash-safe by inserts only: (1) ``open_reschedules/<new id>`` records the reschedule under way;
    (2) the new slot is claimed (the booking; for a consult's appointment, after the consult's next
    visit link, which names the new one and, as ``rp``, the old: of two reschedules of a consult's
    visit the second is 409 there already); (3) ``reschedules/<old id>`` claims the old
    appointment for this reschedule (of two reschedules of one appointment, one wins; the other's
    new booking is cancelled and it answers 409); (4) the old appointment is cancelled (a link of
    its slot's chain); (5) the open entry is removed. A crash anywhere leaves the open entry, and
    :func:`repair_reschedules` (the worker, and the next reschedule of the old appointment) rolls
    steps 3-5 forward, idempotently: never two slots booked for one consult for longer than that."""
    old = read_appointment(db, appt_id)
    replaced = db[RESCHEDULES].find_one({"_id": appt_id})
    if replaced is not None:  # rescheduled before: finish that one if a crash stopped it, then say so
        _finish_reschedule(db, ctx, replaced["new"], appt_id)
        raise FhirError(f"Appointment/{appt_id} was rescheduled already (to Appointment/{replaced['new']})",
                        status=409, code="business-rule")
    status = current_status(db, appt_id, ctx.now)
    if status not in ("pending", "booked"):
        raise _illegal(appt_id, status, "rescheduled")
    moved = copy.deepcopy(request)
    for key in ("basedOn", "description", "comment", "reasonCode", "reasonReference"):
        if old.get(key) and not moved.get(key):
            moved[key] = copy.deepcopy(old[key])
    if not any(str((p.get("actor") or {}).get("reference", "")).startswith("Patient/")
               for p in moved.get("participant") or ()):
        moved["participant"] = [p for p in old.get("participant") or ()
                                if str((p.get("actor") or {}).get("reference", "")).startswith("Patient/")]
    moved["extension"] = [e for e in moved.get("extension") or () if e.get("url") != EXT_REPLACES]
    moved["extension"].append({"url": EXT_REPLACES, "valueReference": {"reference": f"Appointment/{appt_id}"}})
    slot_ref = next((str(s.get("reference", "")) for s in moved.get("slot") or () if isinstance(s, dict)), "")
    new_id = new_uuid()
    # (1) inserted under a fresh id: one writer; removed only once its reschedule is finished
    db[OPEN_RESCHEDULES].insert_one({"_id": new_id, "old": appt_id, "slot": slot_ref[5:], "at": ctx.now})
    try:
        new = book(db, ctx, request=moved, new_id=new_id, replaces=old)  # (2)
    except FhirError:
        # the new slot was not claimed (taken, gone, bad request): nothing to finish
        db[OPEN_RESCHEDULES].delete_one({"_id": new_id})
        raise
    _crash_point("booked")
    if not _finish_reschedule(db, ctx, new_id, appt_id):
        raise FhirError(f"Appointment/{appt_id} was rescheduled by someone else meanwhile; read it again",
                        status=409, code="conflict")
    return new


def _crash_point(step: str) -> None:
    """A test seam: tests replace it to stop a reschedule between its steps (a crash)."""


def _finish_reschedule(db: Database, ctx: Ctx, new_id: str, old_id: str) -> bool:
    """Steps 3-5 of :func:`reschedule` (idempotent; run by the request, the repair and the next
    reschedule of ``old_id``). False when another reschedule of ``old_id`` won: this one's new
    appointment is cancelled then."""
    won, holder = claim_once(db[RESCHEDULES], old_id, {"new": new_id, "at": ctx.now})  # (3)
    if not won and holder.get("new") != new_id:
        try:
            cancel(db, ctx, new_id, "superseded by another reschedule")
        except FhirError as err:  # not booked (any more): nothing holds its slot
            log.info("losing reschedule's appointment not active", extra={"error": err.detail})
        db[OPEN_RESCHEDULES].delete_one({"_id": new_id})
        return False
    _crash_point("claimed")
    try:
        cancel(db, ctx, old_id, "rescheduled")  # (4) a no-op answer when it is cancelled already
    except FhirError as err:
        # ended otherwise (expired, cancelled, fulfilled), or a racing finisher cancelled it just now
        if current_status(db, old_id, ctx.now) in ("pending", "booked"):
            raise
        log.info("rescheduled appointment was no longer active", extra={"error": err.detail})
    # (5) two finishers may both remove it: each found the work done, so it is the same removal
    db[OPEN_RESCHEDULES].delete_one({"_id": new_id})
    return True


def repair_reschedules(db: Database, cfg: SchedulingConfig | None = None, now: datetime | None = None,
                       grace: float = RESCHEDULE_GRACE_SECONDS) -> int:
    """Finish the reschedules a crash interrupted (the worker's periodic job): for each open one,
    if its new slot was claimed, steps 3-5; if not and it is older than ``grace`` seconds, it never
    booked anything and is dropped. Returns how many were finished."""
    now = now or utcnow()
    ctx = Ctx(cfg or SchedulingConfig(), by="repair", now=now)
    finished = 0
    for entry in list(db[OPEN_RESCHEDULES].find({})):
        new_id, old_id = entry["_id"], entry["old"]
        claimed = db[SLOT_LINKS].find_one({"k": entry.get("slot"), "ap": new_id}, {"_id": 1})
        if claimed is None:
            if (now - _aware(entry["at"])).total_seconds() > grace:
                db[OPEN_RESCHEDULES].delete_one({"_id": new_id})
            continue
        try:
            _finish_reschedule(db, ctx, new_id, old_id)
        except FhirError as err:  # e.g. its Appointment not written yet: next round
            log.info("reschedule not finished yet", extra={"appointment": new_id, "error": err.detail})
            continue
        finished += 1
    return finished


def _set_status(status: str, reason: str | None = None) -> Callable[[dict[str, Any]], None]:
    def change(resource: dict[str, Any]) -> None:
        resource["status"] = status
        if status == "cancelled" and reason:
            resource["cancelationReason"] = {"text": reason}
        for p in resource.get("participant") or ():
            if status == "booked":
                p["status"] = "accepted"
            elif status == "cancelled":
                p["status"] = "declined"
    return change


def _project(db: Database, appt_id: str, seq: int, change: Callable[[dict[str, Any]], None],
             wait: float = 2.0) -> dict[str, Any] | None:
    """Write the appointment's change of slot link ``seq`` as its next version.

    Single writer by construction: only the winner of link ``seq`` calls this for ``seq``, and it
    writes once the document reflects link ``seq - 1`` (its previous writer finished). If that
    writer does not finish within ``wait`` seconds (it crashed), this one writes over it: the
    status it sets is the whole truth of the chain at ``seq``.
    """
    store = _store(db)
    coll = store.current(APPOINTMENT)
    deadline = time.monotonic() + wait
    while True:
        head = unpack(coll.find_one({"_id": appt_id}, {"outbox": 0}))
        at = int(head.get("sq", 0)) if head is not None else -1
        if head is not None and at >= seq:
            return head.get("res")
        if (head is None or at < seq - 1) and time.monotonic() < deadline:
            time.sleep(0.01)
            continue
        if head is None or head.get("del"):
            log.warning("appointment missing for its slot link", extra={"appointment": appt_id, "seq": seq})
            return None
        resource = copy.deepcopy(head["res"])
        change(resource)
        w = store.prepare_update(resource, appt_id, head)
        w.update["$set"]["sq"] = seq  # type: ignore[index]
        try:
            store.apply(w)
        except FhirError:
            continue  # the previous link's writer landed meanwhile: read again
        return resource


def retag_appointment(db: Database, appt_id: str, attempts: int = 5) -> bool:
    """Give an Appointment stored before its party tags existed (only admins could read it) its hub
    and requesting-clinic tags, as its next version; True when it wrote one. For the backfill.

    Each version is claimed by its history insert (``Store.apply``), as :func:`_project`'s are: of
    this and a slot link's writer racing for the same version exactly one wins, and the loser
    reads again (the link's writer then writes its change over the tagged version; this finds the
    tags there, or adds them to the link's version). ``sq`` is kept: this version reflects no link.
    """
    from .consults import HUB_TAG

    store = _store(db)
    coll = store.current(APPOINTMENT)
    for _ in range(attempts):
        head = unpack(coll.find_one({"_id": appt_id}, {"outbox": 0}))
        if head is None or head.get("del") or not isinstance(head.get("res"), dict):
            return False
        resource = copy.deepcopy(head["res"])
        ref = next((str(s.get("reference", "")) for s in resource.get("slot") or () if isinstance(s, dict)), "")
        parsed = av_mod.parse_slot_id(ref[5:]) if ref.startswith("Slot/") else None
        av = availability_of(db, parsed[0]) if parsed else None
        before = [dict(t) for t in (resource.get("meta") or {}).get("tag") or ()]
        _tag_parties_of(db, resource, av.organization if av is not None else None)
        after = (resource.get("meta") or {}).get("tag") or []
        if not any(t.get("system") == HUB_TAG for t in after) or after == before:
            return False  # nothing to tag it with (its schedule is gone or names no hub), or tagged
        w = store.prepare_update(resource, appt_id, head)
        try:
            store.apply(w)
        except FhirError:
            continue  # a link's writer took this version: read again
        return True
    return False


# --------------------------------------------------------------------------------- sweeping

def sweep_expired(db: Database, now: datetime | None = None, cfg: SchedulingConfig | None = None) -> int:
    """Release the expired holds nobody took over: a ``free`` link after each. The one sweeper
    (the worker) is the only one that removes entries from ``open_holds``. Returns how many."""
    now = now or utcnow()
    coll = db[SLOT_LINKS]
    released = 0
    for h in list(db[OPEN_HOLDS].find({})):
        if _aware(h["exp"]) > now:
            continue
        last = latest(coll, h["k"])
        if last is None or last["_id"] != h["_id"]:  # booked, cancelled or claimed over since
            release(db[OPEN_HOLDS], h["_id"])
            continue
        doc = {k: last[k] for k in ("ap", "sc", "mo", "s", "e")}
        try:
            link = advance(coll, h["k"], last, {**doc, "st": "free", "why": "expired", "by": "sweeper", "at": now,
                                                "tb": time_bucket(now)})
        except ClaimTaken:
            continue  # someone claimed or confirmed it just now: seen next time
        _project(db, last["ap"], link["n"], _by(_set_status("cancelled", "the hold expired"), SYSTEM_REF, "sweeper"))
        release(db[OPEN_HOLDS], h["_id"])
        released += 1
    return released


# ------------------------------------------------------------------------------------ slots

def slot_resource(av: Availability, slot: SlotTime, link: dict[str, Any] | None, now: datetime) -> dict[str, Any]:
    """The FHIR Slot served for ``slot`` (computed; ``meta.versionId`` = its chain's length + 1)."""
    res: dict[str, Any] = {
        "resourceType": "Slot", "id": slot.id,
        "meta": {"versionId": str((link or {}).get("n", 0) + 1)},
        "schedule": {"reference": f"Schedule/{av.schedule}"},
        "specialty": list(av.specialties),  # shared, never changed: a proposal is serialized at once
        "status": slot_status(link, now),
        "start": iso_local(slot.start), "end": iso_local(slot.end),
    }
    if link is not None and link.get("at"):
        res["meta"]["lastUpdated"] = _aware(link["at"]).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return res


def read_slot(db: Database, cfg: SchedulingConfig, sid: str, now: datetime | None = None) -> dict[str, Any]:
    now = now or utcnow()
    parsed = av_mod.parse_slot_id(sid)
    av = availability_of(db, parsed[0], sid, cfg.holidays) if parsed else None
    slot = av_mod.slot_of(av, sid, cfg.holidays) if av else None
    if av is None or slot is None or slot.start > now + timedelta(days=cfg.horizon_days):
        raise FhirError(f"Slot/{sid} is not known (or beyond the {cfg.horizon_days}-day horizon)", status=404,
                        code="not-found")
    return slot_resource(av, slot, latest(db[SLOT_LINKS], sid), now)


def search_slots(db: Database, cfg: SchedulingConfig, *, schedule: set[str] | None, start: datetime,
                 end: datetime, status: set[str] | None, count: int, now: datetime | None = None
                 ) -> Iterator[dict[str, Any]]:
    """Slots of ``schedule`` (None: all) starting in ``[start, end)``, earliest first."""
    now = now or utcnow()
    chosen = [a for a in schedules(db).values() if schedule is None or a.schedule in schedule]
    links = latest_links(db, av_mod.months_between(start, end), now)
    streams = [_stream(a, start, end, cfg.holidays) for a in chosen]
    n = 0
    for _, _, _, slot, a in heapq.merge(*streams):
        res = slot_resource(a, slot, links.get(slot.id), now)
        if status and res["status"] not in status:
            continue
        yield res
        n += 1
        if n >= count:
            return


def appointments_for(db: Database, service_request: str) -> list[dict[str, Any]]:
    """The Appointments based on ``ServiceRequest/<id>`` (newest last), e.g. for ``Task/$complete``."""
    ref = service_request if service_request.startswith("ServiceRequest/") else f"ServiceRequest/{service_request}"
    docs = [unpack(d) for d in db[APPOINTMENT].find({"sp_based-on": ref, "del": False}, {"res": 1, "lu": 1})]
    return [d["res"] for d in sorted(docs, key=lambda d: d["lu"])]


def _indexes() -> list[Any]:
    from sen_shared.bus.outbox import outbox_indexes
    from sen_shared.claims import chain_indexes
    from sen_shared.mongo import Index

    from .reminders import ATTEMPTS, REMINDER_MARK

    return [*chain_indexes(SLOT_LINKS), *chain_indexes(CONSULT_VISITS),
            Index(SLOT_LINKS, (("mo", 1),)), Index(SLOT_LINKS, (("tb", 1),)),
            Index(SLOT_LINKS, ((REMINDER_MARK, 1),)),  # the worker's read of the reminders kept beside the links
            *outbox_indexes([SLOT_LINKS]),
            Index(ATTEMPTS, (("rem", 1),))]


INDEXES = _indexes()  # the indexes booking needs (indexes.py lists them)
OUTBOX_COLLECTIONS = [SLOT_LINKS]  # the booked links carry teleconsult.appointment.booked
