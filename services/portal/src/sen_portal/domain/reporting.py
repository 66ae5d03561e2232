"""The reporting read model: every event counted exactly once, by inserts only.

Design (issue 13, ARCHITECTURE.md §2: no document updated by two writers, no document that
grows with the number of events):

- **Facts.** Each event becomes one insert-only fact in ``report_facts``, ``_id`` = the event
  id (:func:`sen_shared.bus.apply_once`'s rule: the claim IS the effect). A redelivered event
  hits the unique ``_id``; several consumers at once are safe, and the facts of concurrent
  deliveries are inserted together (:class:`FactWriter`, :func:`sen_shared.bus.apply_many`). A fact holds its dimensions
  (:mod:`.report_facts`: type, local day and ISO week in Asia/Ho_Chi_Minh, facility,
  district, priority, channel, amount, minutes) and the event itself (envelope and the
  top-level scalars of ``data``). Nothing else is written per event, so the handler costs one
  insert whatever the day's count (plus, once a minute per process, a small marker).
- **Arrival buckets.** A fact also records the minute (local time) in which it was stored,
  its *slot*. Slots, hours, days and months of arrival are *sealed* once they are over (plus
  :data:`MARGIN`): after that no fact can arrive in them, so their totals never change.
  A sealed bucket's totals are summed once and inserted under ``<level>/<bucket>/<section>``
  (``s/2026-12-04T09:10/consults``, ``h/2026-12-04T09/...``, ``d/2026-12-04/...``,
  ``m/2026-12/...``; an hour adds its slots, a day its hours, a month its days): a claim, the
  first computer wins and everyone else reads it (the content is the same whoever computes
  it). Each row of a total is keyed by the facts' *event* day, so late events (an outbox that
  was down for a day) are still counted on their own day. Totals are immutable; the worker's
  sealer computes them in the background (:func:`seal`) and a query computes any it lacks.
- **Queries** add the month totals of past months, the day totals of the current month, the
  hour totals of today, the slot totals of this hour and the live facts of the unsealed
  slot(s) (one or two: the last one to two minutes of events), then filter rows by event day
  and district. Sealed totals are read once per process (:data:`sealed_cache`). The
  dashboard's functions are in :mod:`.dashboard`.
- **Markers.** ``report_meta`` holds one insert-only marker per arrival day, hour and slot
  that has facts (claimed before the first fact of it is stored), so queries and the sealer
  visit only buckets with facts.

Caveats, stated: clocks of the portal workers must agree within :data:`MARGIN`; a fact whose
insert is stalled past its slot's end plus the margin may be left out of that slot's total
(the handler logs it as an error; ``python -m sen_portal.rebuild totals`` recomputes).

Rebuilding (``python -m sen_portal.rebuild``): totals are dropped and recomputed from the
facts; facts are re-derived from the events they keep; events from elsewhere (a DLQ dump, a
JSON-lines file) are replayed through the same handler, which skips those already counted.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict, defaultdict
from collections.abc import Iterable, Mapping
from datetime import UTC, date, datetime, timedelta
from typing import Any

from pymongo.database import Database
from sen_shared import mongo
from sen_shared.bus.idempotency import apply_many
from sen_shared.claims import claim_once

from .. import caches
from .report_facts import ASSIGNMENT, SECTIONS, VN, extract, link_refund, merge_rows, refund_link, rows_of_facts

log = logging.getLogger("sen.portal.reporting")

FACTS = "report_facts"
TOTALS = "report_totals"
META = "report_meta"
COLLECTION = FACTS
SLOT = timedelta(minutes=1)
HOUR = timedelta(hours=1)
MARGIN = timedelta(seconds=60)

INDEXES: list[mongo.Index] = [
    mongo.Index(FACTS, (("slot", 1),), name="slot_1"),
    # an assignment's fact by its payment id, for a refund of it (:func:`linked`): one point read
    mongo.Index(FACTS, ((ASSIGNMENT, 1),), name="assignment_1"),
    mongo.Index(TOTALS, (("level", 1), ("section", 1), ("month", 1), ("day", 1), ("hour", 1)),
                name="level_section_hour"),
    mongo.Index(TOTALS, (("mark", 1),), name="mark_1"),
    mongo.Index(META, (("kind", 1), ("day", 1), ("hour", 1)), name="kind_day_hour"),
]

# (database, marker id) this process knows are claimed; bounded (a forgotten marker is only claimed again)
_marked: OrderedDict[tuple[str, str], None] = caches.kept(OrderedDict())
_marked_lock = threading.Lock()
MARKED_KEPT = 1024


# ------------------------------------------------------------------------------ time

def local(now: datetime | None = None) -> datetime:
    return (now or datetime.now(UTC)).astimezone(VN)


def slot_start(moment: datetime) -> datetime:
    t = moment.astimezone(VN)
    return t.replace(second=0, microsecond=0)


def slot_name(start: datetime) -> str:
    return start.strftime("%Y-%m-%dT%H:%M")


def _slot_from_name(name: str) -> datetime:
    return datetime.strptime(name, "%Y-%m-%dT%H:%M").replace(tzinfo=VN)


def _day_start(day: str) -> datetime:
    return datetime.combine(date.fromisoformat(day), datetime.min.time(), VN)


def slot_sealed(name: str, now: datetime) -> bool:
    return now >= _slot_from_name(name) + SLOT + MARGIN


def hour_sealed(hour: str, now: datetime) -> bool:
    return now >= datetime.strptime(hour, "%Y-%m-%dT%H").replace(tzinfo=VN) + HOUR + MARGIN


def day_sealed(day: str, now: datetime) -> bool:
    return now >= _day_start(day) + timedelta(days=1) + MARGIN


def month_sealed(month: str, now: datetime) -> bool:
    y, m = (int(p) for p in month.split("-"))
    first_next = date(y + (m == 12), m % 12 + 1, 1)
    return now >= datetime.combine(first_next, datetime.min.time(), VN) + MARGIN


# ------------------------------------------------------------------------------ the handler

def _mark(db: Database, key: str, doc: dict[str, Any]) -> None:
    token = (db.name, key)
    if token in _marked:
        return
    claim_once(db[META], key, doc)
    with _marked_lock:
        _marked[token] = None
        while len(_marked) > MARKED_KEPT:
            _marked.popitem(last=False)


class FactWriter:
    """Stores the facts of concurrent handler calls together: one unordered insert for all of them.

    Group commit without a thread of its own: the first caller to find no insert running leads,
    inserting every fact waiting at that moment (its own among them, at most :attr:`batch`) with
    :func:`sen_shared.bus.idempotency.apply_many`, then hands the lead to the next waiting caller
    (or drops it) and returns. Every caller returns only once its own fact is stored (or known
    to be there already), so the consumer still acks after the effect. Alone, a caller inserts
    at once; with several consumers one insert carries several facts (FerretDB: one insert of 8
    documents costs about what 1.4 inserts of one do).
    """

    def __init__(self, batch: int = 64) -> None:
        self.batch = batch
        self._lock = threading.Lock()
        self._waiting: list[dict[str, Any]] = []  # {"db", "id", "fact", "done": Event, "result", "error", "lead"}
        self._leading = False

    def write(self, db: Database, event_id: str, fact: dict[str, Any]) -> bool:
        me: dict[str, Any] = {"db": db, "id": event_id, "fact": fact, "done": threading.Event(), "lead": False}
        with self._lock:
            self._waiting.append(me)
            if not self._leading:
                self._leading = me["lead"] = True
        if not me["lead"]:
            me["done"].wait()
            if not me["lead"]:  # stored by a leader
                return self._outcome(me)
        self._insert_waiting(me)
        return self._outcome(me)

    @staticmethod
    def _outcome(me: dict[str, Any]) -> bool:
        if me.get("error") is not None:
            raise me["error"]
        return bool(me["result"])

    def _insert_waiting(self, me: dict[str, Any]) -> None:
        with self._lock:
            group = [w for w in self._waiting if w["db"] is me["db"]][: self.batch]
            if me not in group:
                group = [me, *group[: self.batch - 1]]
            taken = {id(w) for w in group}
            self._waiting = [w for w in self._waiting if id(w) not in taken]
        try:
            results = apply_many(me["db"][FACTS], [(w["id"], w["fact"]) for w in group])
            for w, r in zip(group, results, strict=True):
                w["result"] = r
        except Exception as err:  # noqa: BLE001 - every caller of the group raises it (and is redelivered)
            for w in group:
                w["error"] = err
        with self._lock:
            nxt = self._waiting[0] if self._waiting else None
            if nxt is None:
                self._leading = False
            else:
                nxt["lead"] = True
        for w in group:
            if w is not me:
                w["done"].set()
        if nxt is not None:
            nxt["done"].set()


writer = FactWriter()


def _arrive(db: Database, now: datetime | None) -> tuple[datetime, datetime, str, str]:
    """The arrival time, its slot's start, the slot's name and its day, with the day's, hour's and
    slot's markers stored first: a fact never exists without the markers that lead a query to it."""
    arrival = local(now)
    start = slot_start(arrival)
    slot, day = slot_name(start), start.date().isoformat()
    hour = slot[:13]
    _mark(db, f"day/{day}", {"kind": "day", "day": day, "month": day[:7]})
    _mark(db, f"hour/{hour}", {"kind": "hour", "hour": hour, "day": day})
    _mark(db, f"slot/{slot}", {"kind": "slot", "slot": slot, "hour": hour, "day": day})
    return arrival, start, slot, day


def linked(db: Database, facts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``facts`` with each refund of an assignment's money told when its transfer came. Billing's refund
    event says it (``assignedFromReceivedAt``: :func:`.report_facts.extract` sets ``from_day``, whatever
    order the refund's and the assignment's events come in); one from before it does not, and is linked
    here (:func:`.report_facts.link_refund`) from the assignment's fact among ``facts`` or stored (a point
    read by :data:`.report_facts.ASSIGNMENT`; rare: only such refunds read). An assignment not stored
    yet (its event still on its way) leaves such an older refund as billing said it (not of an earlier
    transfer); ``python -m sen_portal.rebuild facts`` links it later."""
    for fact in facts:
        link = refund_link(fact)
        if link is None:
            continue
        assignment = next((f for f in facts if f.get(ASSIGNMENT) == link), None) or \
            db[FACTS].find_one({ASSIGNMENT: link}, {"from_day": 1})
        link_refund(fact, assignment)
    return facts


def record_event(db: Database, event: Mapping[str, Any], now: datetime | None = None) -> bool:
    """Store the event's fact once; True when counted now, False when it had been counted.

    ``now`` (the arrival time) is for tests, benchmarks and replays; the consumer uses the clock.
    """
    arrival, start, slot, day = _arrive(db, now)
    fact = linked(db, [{**extract(event), "slot": slot, "sday": day, "at": arrival.astimezone(UTC)}])[0]
    applied = writer.write(db, str(event["id"]), fact)  # apply_once's claim, grouped with concurrent calls
    if applied and now is None and datetime.now(UTC) >= start + SLOT + MARGIN:
        log.error("a fact was stored after its slot was sealed; its slot total may miss it: "
                  "run `python -m sen_portal.rebuild totals`", extra={"slot": slot, "event": event.get("id")})
    return applied


def record_events(db: Database, events: Iterable[Mapping[str, Any]], now: datetime | None = None) -> list[bool]:
    """:func:`record_event` for a consumer's prefetched burst: one arrival slot, its markers once,
    and every fact in one unordered insert (``apply_many``: a duplicate id was counted before)."""
    arrival, start, slot, day = _arrive(db, now)
    at = arrival.astimezone(UTC)
    events = list(events)
    facts = linked(db, [{**extract(e), "slot": slot, "sday": day, "at": at} for e in events])
    applied = apply_many(db[FACTS], [(str(e["id"]), f) for e, f in zip(events, facts, strict=True)])
    if any(applied) and now is None and datetime.now(UTC) >= start + SLOT + MARGIN:
        log.error("facts were stored after their slot was sealed; its slot total may miss them: "
                  "run `python -m sen_portal.rebuild totals`", extra={"slot": slot})
    return applied


def count_event(event: dict[str, Any], db: Database) -> None:
    """Handler of ``portal.reporting``: count the event once."""
    record_event(db, event)


def count_events(events: list[dict[str, Any]], db: Database) -> None:
    """The batch form of :func:`count_event` (``EventConsumer`` hands a prefetched burst to it)."""
    record_events(db, events)


count_event.batch = count_events  # type: ignore[attr-defined]


# ------------------------------------------------------------------------------ totals

def _insert_totals(db: Database, level: str, bucket: str, rows: Mapping[str, list[dict[str, Any]]],
                   facts: int, where: Mapping[str, str]) -> None:
    for section in SECTIONS:
        claim_once(db[TOTALS], f"{level}/{bucket}/{section}",
                   {"level": level, "bucket": bucket, "section": section, **where, "rows": rows[section]})
    # the bucket's marker last: it says every section above is there
    claim_once(db[TOTALS], f"{level}/{bucket}", {"mark": level, "bucket": bucket, **where, "facts": facts})


def _live_rows(db: Database, slot: str, sections: Iterable[str]) -> tuple[dict[str, list[dict[str, Any]]], int]:
    facts = list(db[FACTS].find({"slot": slot}, {"ev": 0}))  # an equality FerretDB pushes down
    return {s: rows_of_facts(facts, s) for s in sections}, len(facts)


def _section_totals(db: Database, level: str, **where: str) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """``{bucket: {section: rows}}`` of the stored totals of one level (filtered by equalities)."""
    out: dict[str, dict[str, list[dict[str, Any]]]] = defaultdict(dict)
    for doc in db[TOTALS].find({"level": level, **where}):
        out[doc["bucket"]][doc["section"]] = doc["rows"]
    return out


def _complete(have: Mapping[str, list[dict[str, Any]]] | None) -> bool:
    return have is not None and all(s in have for s in SECTIONS)


def seal_slot(db: Database, slot: str) -> dict[str, list[dict[str, Any]]]:
    """Sum a sealed slot's facts into its totals (all sections); the rows."""
    rows, n = _live_rows(db, slot, SECTIONS)
    _insert_totals(db, "s", slot, rows, n, {"hour": slot[:13], "day": slot[:10], "month": slot[:7]})
    return rows


# a level -> (the level below it, the marker kind naming its parts, the parts' field naming it)
_BELOW = {"h": ("s", "slot", "hour"), "d": ("h", "hour", "day"), "m": ("d", "day", "month")}


def _seal_from_parts(db: Database, level: str, bucket: str, where: dict[str, str]) -> dict[str, list[dict[str, Any]]]:
    """Add a sealed bucket's part totals (sealing the parts that lack one) into its own totals."""
    below, part_kind, parent = _BELOW[level]
    have = _section_totals(db, below, **{parent: bucket})
    parts = []
    for m in db[META].find({"kind": part_kind, parent: bucket}):
        part = m[part_kind]
        parts.append(have[part] if _complete(have.get(part)) else _SEALERS[below](db, part))
    rows = {s: merge_rows((p[s] for p in parts), s) for s in SECTIONS}
    _insert_totals(db, level, bucket, rows, 0, where)
    return rows


def seal_hour(db: Database, hour: str) -> dict[str, list[dict[str, Any]]]:
    """Add a sealed hour's slot totals (sealing the slots that lack one) into the hour's totals."""
    return _seal_from_parts(db, "h", hour, {"day": hour[:10], "month": hour[:7]})


def seal_day(db: Database, day: str) -> dict[str, list[dict[str, Any]]]:
    """Add a sealed day's hour totals (sealing the hours that lack one) into the day's totals."""
    return _seal_from_parts(db, "d", day, {"day": day, "month": day[:7]})


def seal_month(db: Database, month: str) -> dict[str, list[dict[str, Any]]]:
    """Add a sealed month's day totals (sealing the days that lack one) into the month's totals."""
    return _seal_from_parts(db, "m", month, {"month": month})


_SEALERS = {"s": seal_slot, "h": seal_hour, "d": seal_day}


def seal(db: Database, now: datetime | None = None) -> int:
    """Compute the totals of every sealed bucket that has none yet; how many were computed.

    Run by the worker every minute; cheap when there is nothing to do (reads the bucket markers).
    """
    now = local(now)
    done = 0
    # two equalities (FerretDB pushes them down; an $in would scan every total)
    marks = {d["_id"] for level in ("m", "d") for d in db[TOTALS].find({"mark": level}, {"_id": 1})}
    days_by_month: dict[str, list[str]] = defaultdict(list)
    for m in db[META].find({"kind": "day"}):
        days_by_month[m["month"]].append(m["day"])
    for month, days in sorted(days_by_month.items()):
        if f"m/{month}" in marks:
            continue
        if month_sealed(month, now):
            seal_month(db, month)
            done += 1
            continue
        for day in sorted(days):
            if f"d/{day}" in marks:
                continue
            if day_sealed(day, now):
                seal_day(db, day)
                done += 1
                continue
            hour_marks = {d["bucket"] for d in db[TOTALS].find({"mark": "h", "day": day}, {"bucket": 1})}
            for h in db[META].find({"kind": "hour", "day": day}):
                hour = h["hour"]
                if hour in hour_marks:
                    continue
                if hour_sealed(hour, now):
                    seal_hour(db, hour)
                    done += 1
                    continue
                slot_marks = {d["bucket"] for d in db[TOTALS].find({"mark": "s", "hour": hour}, {"bucket": 1})}
                for m in db[META].find({"kind": "slot", "hour": hour}):
                    if m["slot"] not in slot_marks and slot_sealed(m["slot"], now):
                        seal_slot(db, m["slot"])
                        done += 1
    return done


# ------------------------------------------------------------------------------ reading

class _SealedCache:
    """Rows of sealed totals, kept in memory: a sealed total never changes, so it is read once.

    Holds the rows of single totals (by ``_id``) and, for each set of sections, the rows of the
    last set of sealed buckets added up (a dashboard asks for the same buckets until a slot
    closes). ``python -m sen_portal.rebuild facts`` changes totals: restart the web processes
    after it.
    """

    def __init__(self, size: int = 4096) -> None:
        self.size = size
        self.rows: OrderedDict[tuple[str, str], list[dict[str, Any]]] = OrderedDict()
        self.merged: dict[tuple[str, tuple[str, ...]], tuple[tuple[str, ...], dict[str, list[dict[str, Any]]]]] = {}
        self.lock = threading.Lock()

    def get(self, db: Database, total_id: str) -> list[dict[str, Any]] | None:
        key = (db.name, total_id)
        with self.lock:
            hit = self.rows.get(key)
            if hit is not None:
                self.rows.move_to_end(key)
                return hit
        doc = db[TOTALS].find_one({"_id": total_id})
        if doc is None:
            return None
        self.put(db, total_id, doc["rows"])
        return doc["rows"]

    def put(self, db: Database, total_id: str, rows: list[dict[str, Any]]) -> None:
        with self.lock:
            self.rows[(db.name, total_id)] = rows
            while len(self.rows) > self.size:
                self.rows.popitem(last=False)

    def clear(self) -> None:
        with self.lock:
            self.rows.clear()
            self.merged.clear()


sealed_cache = caches.kept(_SealedCache())


def _sealed_rows(db: Database, level: str, bucket: str, sections: list[str]) -> dict[str, list[dict[str, Any]]]:
    """Rows of a sealed bucket that has its marker (every section stored); sealed again if one vanished."""
    out: dict[str, list[dict[str, Any]]] = {}
    for s in sections:
        rows = sealed_cache.get(db, f"{level}/{bucket}/{s}")
        if rows is None:  # dropped by a rebuild meanwhile: sum it again
            return _seal_level(db, level, bucket)
        out[s] = rows
    return out


def _seal_level(db: Database, level: str, bucket: str) -> dict[str, list[dict[str, Any]]]:
    rows = {"s": seal_slot, "h": seal_hour, "d": seal_day, "m": seal_month}[level](db, bucket)
    for s, r in rows.items():
        sealed_cache.put(db, f"{level}/{bucket}/{s}", r)
    return rows


def gather(db: Database, sections: Iterable[str], *, since: date | None = None,
           now: datetime | None = None) -> dict[str, list[dict[str, Any]]]:
    """The rows of ``sections`` over every fact that arrived on or after ``since`` (all when None).

    Buckets that end before ``since`` are skipped; a bucket that straddles it is counted whole,
    so callers filter rows by their event ``day``. Which buckets are sealed and summed is read
    from the small bucket markers; the totals themselves come from :data:`sealed_cache`.
    """
    sections = list(sections)
    now = local(now)
    first = since.isoformat() if since else ""
    days_by_month: dict[str, list[str]] = defaultdict(list)
    for m in db[META].find({"kind": "day"}):
        if m["day"] >= first:
            days_by_month[m["month"]].append(m["day"])
    sealed: list[tuple[str, str]] = []  # (level, bucket) with totals to add
    live: list[str] = []  # slots still open
    done: dict[str, set[str]] = {"m": set(), "d": set(), "h": set(), "s": set()}  # buckets with stored totals
    if days_by_month:
        done["m"] = {d["bucket"] for d in db[TOTALS].find({"mark": "m"}, {"bucket": 1})}
    for month, days in sorted(days_by_month.items()):
        if month_sealed(month, now):
            sealed.append(("m", month))
            continue
        done["d"] |= {d["bucket"] for d in db[TOTALS].find({"mark": "d", "month": month}, {"bucket": 1})}
        for day in sorted(days):
            if day_sealed(day, now):
                sealed.append(("d", day))
                continue
            done["h"] |= {d["bucket"] for d in db[TOTALS].find({"mark": "h", "day": day}, {"bucket": 1})}
            for h in db[META].find({"kind": "hour", "day": day}):
                hour = h["hour"]
                if hour in done["h"] or hour_sealed(hour, now):
                    sealed.append(("h", hour))
                    continue
                done["s"] |= {d["bucket"] for d in db[TOTALS].find({"mark": "s", "hour": hour}, {"bucket": 1})}
                for m in db[META].find({"kind": "slot", "hour": hour}):
                    slot = m["slot"]
                    if slot in done["s"] or slot_sealed(slot, now):
                        sealed.append(("s", slot))
                    else:
                        live.append(slot)
    key = (db.name, tuple(sections))
    ids = tuple(f"{lv}/{b}" for lv, b in sealed)
    with sealed_cache.lock:
        hit = sealed_cache.merged.get(key)
    if hit is not None and hit[0] == ids:
        base = hit[1]
    else:
        parts: dict[str, list[list[dict[str, Any]]]] = {s: [] for s in sections}
        for level, bucket in sealed:
            if bucket in done[level] or db[TOTALS].find_one({"_id": f"{level}/{bucket}"}, {"_id": 1}) is not None:
                rows = _sealed_rows(db, level, bucket, sections)
            else:
                rows = _seal_level(db, level, bucket)
            for s in sections:
                parts[s].append(rows[s])
        base = {s: merge_rows(parts[s], s) for s in sections}
        with sealed_cache.lock:
            sealed_cache.merged[key] = (ids, base)
    if not live:
        return base
    extra = [_live_rows(db, slot, sections)[0] for slot in live]
    return {s: merge_rows([base[s], *(x[s] for x in extra)], s) for s in sections}


__all__ = ["COLLECTION", "FACTS", "INDEXES", "MARGIN", "META", "SLOT", "TOTALS", "count_event", "gather",
           "record_event", "seal", "seal_day", "seal_hour", "seal_month", "seal_slot"]
