"""AuditEvents of FHIR interactions: who, what, when, which patient, outcome.

Each interaction on patient data becomes one FHIR R4 ``AuditEvent`` (type
``rest``, subtype the interaction, action C/R/U/D/E, outcome 0/4/8) stored
in the service's own ``AuditEvent`` collection in the engine's document shape
(``{_id, v: 1, lu, del, res, sp_*}``) so it is searchable as FHIR like any
other resource (``AuditEvent?patient=Patient/x``, ``?agent=``, ``?altid=``,
``?subtype=``, ``?outcome=``, ``?date=``).

Codes without displays (the standard code systems name them; every AuditEvent
is stored, so each byte counts). Cheap by design: no history version, no outbox event, and in the web
process (``Auditor(..., background=True)``) stored off the request path: an
:class:`AuditWriter` thread builds the documents (id, body text, index) and gathers
what arrives within ``FLUSH_SECONDS`` into one ``insert_many``. Nothing is dropped: a full queue makes the request store
its event itself, process exit flushes, and a read or search of AuditEvents
flushes this process's queue first (so a client reads its own trail). Without
``background`` each event is one ``insert_one`` (``insert_many`` for the
entries of a bundle, see :meth:`Auditor.batch`). AuditEvents are immutable; they are never re-audited. A search
records the parameter NAMES and the number of matches, never the values; the
patients of the matches are listed as entities (role 1, Patient).

A failure to store an AuditEvent is logged as an error and does not fail the
interaction it describes (availability of care over completeness of the
trail); the log line carries the event's id, interaction and status.
"""

from __future__ import annotations

import atexit
import contextlib
import contextvars
import hashlib
import json
import logging
import os
import queue
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pymongo.database import Database
from pymongo.errors import BulkWriteError, PyMongoError

from ..ids import new_uuid
from .body import pack
from .search.buckets import bucket_fields
from .search.extract import index_fields
from .store import note_type

log = logging.getLogger("sen.fhir.audit")

AUDIT_TYPE = "AuditEvent"
TYPE_SYSTEM = "http://terminology.hl7.org/CodeSystem/audit-event-type"
SUBTYPE_SYSTEM = "http://hl7.org/fhir/restful-interaction"
ROLE_SYSTEM = "http://terminology.hl7.org/CodeSystem/object-role"
ENTITY_TYPE_SYSTEM = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
AGENT_ROLE_SYSTEM = "https://sen.vn/fhir/CodeSystem/role"
MAX_PATIENT_ENTITIES = 100
FLUSH_SECONDS = 0.02  # how long the writer gathers events into one insert
MAX_BATCH = 500
QUEUE_CAPACITY = 20_000  # beyond this the request stores its own event (back-pressure, not loss)
RETRY_SECONDS = 30.0  # how long the writer retries a batch the database refuses
DUPLICATE_KEY = 11000

ACTIONS = {"create": "C", "read": "R", "vread": "R", "history": "R", "history-type": "R", "update": "U",
           "patch": "U", "delete": "D", "search": "E", "everything": "E", "transaction": "E", "batch": "E"}
# FHIR restful-interaction codes for the subtype
SUBTYPES = {"read": "read", "vread": "vread", "history": "history-instance", "history-type": "history-type",
            "update": "update", "patch": "patch", "delete": "delete", "create": "create",
            "search": "search-type", "everything": "operation", "transaction": "transaction", "batch": "batch"}


def outcome_code(status: int) -> str:
    """AuditEvent.outcome: 0 success, 4 minor failure (client errors), 8 serious failure (server errors)."""
    if status < 400:
        return "0"
    return "4" if status < 500 else "8"


@dataclass
class Record:
    """One audited interaction, filled as it runs."""

    interaction: str
    resource_type: str | None = None
    rid: str | None = None
    vid: str | None = None
    patients: list[str] = field(default_factory=list)  # Patient/<id>
    status: int = 500
    detail: str | None = None  # the error's text (no patient data: our own messages)
    query_params: list[str] | None = None  # search: the parameter names
    count: int | None = None  # search: how many matches on the page
    operation: str | None = None
    purpose: str | None = None  # why the caller says they act (an operation's reason): purposeOfEvent.text
    event_id: str | None = None  # a fixed AuditEvent id (:func:`version_event_id`): stored once, a claim
    # ``<type>/<id>`` of the resources the interaction was on when more than one (``resource_type``/``rid``
    # names one): each an entity as that one is (what, domain resource), in place of the type's query entity
    subjects: list[str] = field(default_factory=list)


def _principal_agent(principal: Any) -> dict[str, Any]:
    agent: dict[str, Any] = {"requestor": True}
    roles = sorted(getattr(principal, "roles", ()) or ())
    if roles:
        agent["role"] = [{"coding": [{"system": AGENT_ROLE_SYSTEM, "code": r}]} for r in roles]
    practitioner = getattr(principal, "practitioner", None)
    sub = getattr(principal, "sub", "") or ""
    if practitioner:
        agent["who"] = {"reference": f"Practitioner/{practitioner}", "display": sub}
    else:
        agent["who"] = {"display": sub or "anonymous"}
    if sub:
        agent["altId"] = sub
    facility = getattr(principal, "facility", None)
    if facility:
        agent["extension"] = [{"url": "https://sen.vn/fhir/StructureDefinition/agent-facility",
                               "valueReference": {"reference": f"Organization/{facility}"}}]
    return agent


def _subject(ref: str) -> dict[str, Any]:
    """The entity naming the resource ``ref`` an interaction was on (a domain resource, role 4)."""
    return {"what": {"reference": ref}, "type": {"system": ENTITY_TYPE_SYSTEM, "code": "2"},
            "role": {"system": ROLE_SYSTEM, "code": "4"}}


def build_event(principal: Any, rec: Record, *, service: str, when: datetime | None = None) -> dict[str, Any]:
    """The FHIR R4 AuditEvent of ``rec``."""
    when = when or datetime.now(UTC)
    when = when.replace(microsecond=when.microsecond // 1000 * 1000)
    event: dict[str, Any] = {
        "resourceType": AUDIT_TYPE,
        **({"id": rec.event_id} if rec.event_id else {}),
        "type": {"system": TYPE_SYSTEM, "code": "rest"},
        "subtype": [{"system": SUBTYPE_SYSTEM, "code": SUBTYPES.get(rec.interaction, "operation")}],
        "action": ACTIONS.get(rec.interaction, "E"),
        "recorded": when.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "outcome": outcome_code(rec.status),
        "agent": [_principal_agent(principal)],
        "source": {"site": service, "observer": {"display": f"sen-{service}"},
                   "type": [{"system": "http://terminology.hl7.org/CodeSystem/security-source-type",
                             "code": "4"}]},
    }
    if rec.status >= 400 and rec.detail:
        event["outcomeDesc"] = f"{rec.status}: {rec.detail[:500]}"
    elif rec.status >= 400:
        event["outcomeDesc"] = str(rec.status)
    entities: list[dict[str, Any]] = []
    if rec.resource_type and rec.rid:
        ref = f"{rec.resource_type}/{rec.rid}" + (f"/_history/{rec.vid}" if rec.vid else "")
        if rec.resource_type != "Patient":
            entities.append(_subject(ref))
    elif rec.subjects:
        entities += [_subject(ref) for ref in dict.fromkeys(rec.subjects) if not ref.startswith("Patient/")]
    elif rec.resource_type or rec.query_params is not None:
        q: dict[str, Any] = {"type": {"system": ENTITY_TYPE_SYSTEM, "code": "2"},
                             "role": {"system": ROLE_SYSTEM, "code": "24"},
                             "name": rec.resource_type or "*"}
        details = []
        if rec.query_params is not None:
            details.append({"type": "parameters", "valueString": ",".join(rec.query_params) or "-"})
        if rec.count is not None:
            details.append({"type": "count", "valueString": str(rec.count)})
        if details:
            q["detail"] = details
        entities.append(q)
    for pref in list(dict.fromkeys(rec.patients))[:MAX_PATIENT_ENTITIES]:
        entities.append({"what": {"reference": pref},
                         "type": {"system": ENTITY_TYPE_SYSTEM, "code": "1"},
                         "role": {"system": ROLE_SYSTEM, "code": "1"}})
    if entities:
        event["entity"] = entities
    if rec.operation:
        event["subtype"].append({"system": "https://sen.vn/fhir/CodeSystem/operation", "code": rec.operation})
    if rec.purpose:
        event["purposeOfEvent"] = [{"text": rec.purpose[:500]}]
    return event


def to_document(event: dict[str, Any], when: datetime | None = None) -> dict[str, Any]:
    """The engine's current-version document of a new AuditEvent (id, meta, index fields); its id
    the event's own when it has one (a :class:`Record`'s ``event_id``), else a new one."""
    when = when or datetime.now(UTC)
    when = when.replace(microsecond=when.microsecond // 1000 * 1000)
    rid = event.get("id") or new_uuid()
    event["id"] = rid
    event["meta"] = {"versionId": "1",
                     "lastUpdated": when.isoformat(timespec="milliseconds").replace("+00:00", "Z")}
    return {"_id": rid, "v": 1, "lu": when, "del": False, "res": pack(event), **bucket_fields(rid),
            **event_index(event)}


# What differs between two events of one caller, interaction and outcome; the rest (type, subtype,
# action, outcome, agent, source) repeats from one read to the next.
PER_EVENT = frozenset({"entity", "recorded", "outcomeDesc", "id", "meta", "purposeOfEvent"})
FIXED_CACHE_SIZE = 1024
_fixed_index: dict[str, dict[str, Any]] = {}


def event_index(event: dict[str, Any]) -> dict[str, Any]:
    """``index_fields(event)`` at half the cost: every read and search stores an AuditEvent.

    The index of the part that repeats is kept per distinct part (at most ``FIXED_CACHE_SIZE``);
    only the entities and the date are extracted for each event. A search parameter that would
    take values from both parts (the two indexes share a key) gets the whole event extracted.
    """
    fixed_part = {k: v for k, v in event.items() if k not in PER_EVENT}
    key = json.dumps(fixed_part, sort_keys=True, separators=(",", ":"), default=str)
    fixed = _fixed_index.get(key)
    if fixed is None:
        fixed = index_fields(fixed_part)
        if len(_fixed_index) >= FIXED_CACHE_SIZE:
            _fixed_index.clear()
        _fixed_index[key] = fixed
    varying = index_fields({"resourceType": AUDIT_TYPE, **{k: v for k, v in event.items() if k in PER_EVENT}})
    if not fixed.keys().isdisjoint(varying.keys()):
        return index_fields(event)
    return {**fixed, **varying}


_batch: contextvars.ContextVar[list[dict[str, Any]] | None] = contextvars.ContextVar("sen_audit_batch",
                                                                                     default=None)


class AuditWriter:
    """A background thread that stores AuditEvent documents in batches (one per process, started on use).

    ``prepare``: turns what is put into the document to store, in the writer's thread (an item it
    fails on is logged and left out; the others are stored).
    """

    def __init__(self, insert: Any, prepare: Any = None) -> None:
        self._insert = insert
        self._prepare = prepare
        self._pid = -1
        self._lock = threading.Lock()

    def _start(self) -> None:
        self._queue: queue.Queue[dict[str, Any]] = queue.Queue(QUEUE_CAPACITY)
        self._pending = 0
        self._done = threading.Condition()
        threading.Thread(target=self._loop, name="sen-audit-writer", daemon=True).start()
        self._pid = os.getpid()
        atexit.register(self.flush)

    def put(self, doc: dict[str, Any]) -> None:
        if self._pid != os.getpid():  # first use in this process (or a fork of one that used it)
            with self._lock:
                if self._pid != os.getpid():
                    self._start()
        with self._done:
            self._pending += 1
        try:
            self._queue.put_nowait(doc)
        except queue.Full:  # the database is behind: this request stores its own event
            self._stored([doc])

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every event put so far is stored (True), or ``timeout`` seconds."""
        if self._pid != os.getpid():
            return True
        with self._done:
            return self._done.wait_for(lambda: self._pending == 0, timeout)

    def _ready(self, items: list[Any]) -> list[dict[str, Any]]:
        if self._prepare is None:
            return items
        docs = []
        for item in items:
            try:
                docs.append(self._prepare(item))
            except Exception:  # noqa: BLE001 - an audit bug must not stop the writer; it is logged loudly
                log.exception("audit event not built")
        return docs

    def _stored(self, items: list[Any], *, retry: bool = False) -> None:
        """Store ``items``; the writer thread retries a failing database for ``RETRY_SECONDS`` (a
        restart of FerretDB or a MongoDB election) before it logs them as lost."""
        delay, deadline = 0.2, time.monotonic() + RETRY_SECONDS
        count = len(items)
        try:
            docs = self._ready(items)
            while docs:
                try:
                    self._insert(docs)
                    return
                except Exception as err:  # noqa: BLE001 - whatever failed, the events must not vanish silently
                    if not retry or time.monotonic() + delay > deadline:
                        log.error("audit events not stored", extra={
                            "count": len(docs), "error": type(err).__name__, "ids": [d["_id"] for d in docs][:20]})
                        return
                    time.sleep(delay)
                    delay = min(delay * 2, 5.0)
        finally:
            with self._done:
                self._pending -= count
                self._done.notify_all()

    def _loop(self) -> None:
        # The first event wakes the thread; then it sleeps through the gathering time instead of
        # waiting on the queue, which woke it (and took the GIL from a request) for every event.
        while True:
            docs = [self._queue.get()]
            if self._queue.qsize() < MAX_BATCH:
                time.sleep(FLUSH_SECONDS)
            with contextlib.suppress(queue.Empty):
                while len(docs) < MAX_BATCH:
                    docs.append(self._queue.get_nowait())
            self._stored(docs, retry=True)


def version_event_id(interaction: str, resource_type: str, rid: str, version: int | str) -> str:
    """The fixed id of the AuditEvent of ``interaction`` making version ``version`` of
    ``resource_type/rid`` (a FHIR id: 38 characters of [a-z0-9-])."""
    key = f"{interaction} {resource_type}/{rid}/_history/{version}"
    return "audit-" + hashlib.sha256(key.encode()).hexdigest()[:32]


def _as_document(item: tuple[dict[str, Any], datetime] | dict[str, Any]) -> dict[str, Any]:
    """What the writer stores: an ``(event, when)`` of a request made a document; a bundle's
    documents (built in the request, see :meth:`Auditor.batch`) as they are."""
    return to_document(*item) if isinstance(item, tuple) else item


class Auditor:
    """Writes AuditEvents of one service into its database."""

    def __init__(self, db: Database | Any, service: str, *, background: bool = False) -> None:
        self._db = db
        self.service = service
        # the writer thread builds the documents (ids, body text, index): off the request's path
        self.writer = AuditWriter(self._store, prepare=_as_document) if background else None

    def flush(self) -> None:
        """Store what the background writer still holds (before reading the trail)."""
        if self.writer is not None:
            self.writer.flush()

    @property
    def db(self) -> Database:
        return self._db() if callable(self._db) else self._db

    def record(self, principal: Any, rec: Record) -> dict[str, Any] | None:
        """Store the AuditEvent of ``rec`` (or keep it for the batch being collected); never raises."""
        pending = _batch.get()
        try:
            when = datetime.now(UTC)
            event = build_event(principal, rec, service=self.service, when=when)
            if pending is None and self.writer is not None:
                self.writer.put((event, when))  # the writer thread makes the document
                return event
            doc = to_document(event, when)
        except Exception:  # noqa: BLE001 - an audit bug must not break care; it is logged loudly
            log.exception("audit event not built", extra={"interaction": rec.interaction, "status": rec.status})
            return None
        if pending is not None:
            pending.append(doc)
        else:
            self._insert([doc])
        return event

    def _store(self, docs: list[dict[str, Any]]) -> None:
        """Insert ``docs``; raises when the database refuses. Events already stored (a retry after
        a lost answer) count as stored: their ids are unique."""
        if not docs:
            return
        note_type(self.db, AUDIT_TYPE)
        coll = self.db[AUDIT_TYPE]
        try:
            coll.insert_many(docs, ordered=False)
        except BulkWriteError as err:
            details = err.details or {}
            if details.get("writeConcernErrors") or any(
                    e.get("code") != DUPLICATE_KEY for e in details.get("writeErrors", ())):
                raise

    def _insert(self, docs: list[dict[str, Any]]) -> None:
        try:
            self._store(docs)
        except PyMongoError as err:
            log.error("audit events not stored", extra={"count": len(docs), "error": type(err).__name__,
                                                        "ids": [d["_id"] for d in docs][:20]})

    def record_once(self, principal: Any, rec: Record) -> None:
        """Store the AuditEvent of ``rec`` now under its fixed id ``rec.event_id``, RAISING when the
        database refuses. The insert is a claim: however often the change is recorded (an event's
        redelivery after a write cut off before its AuditEvent, or after the AuditEvent itself was
        cut off), one AuditEvent stands for it. For a consumer, which must not ack an event whose
        change is not yet attributed (:meth:`record` logs a refusal and goes on)."""
        assert rec.event_id, "record_once needs the event's fixed id"
        self._store([to_document(build_event(principal, rec, service=self.service))])

    @contextlib.contextmanager
    def batch(self) -> Iterator[list[dict[str, Any]]]:
        """Collect the AuditEvents recorded inside and store them with one ``insert_many`` at the end."""
        outer = _batch.get()
        if outer is not None:  # already batching (nested bundle dispatch): join it
            yield outer
            return
        pending: list[dict[str, Any]] = []
        token = _batch.set(pending)
        try:
            yield pending
        finally:
            _batch.reset(token)
            if self.writer is not None:
                for doc in pending:
                    self.writer.put(doc)
            else:
                self._insert(pending)


def patients_of_entries(entries: Iterable[dict[str, Any]]) -> list[str]:
    """The ``Patient/<id>`` references a list of AuditEvent resources names (tests, tools)."""
    out = []
    for ev in entries:
        for ent in ev.get("entity") or []:
            ref = (ent.get("what") or {}).get("reference", "")
            if ref.startswith("Patient/"):
                out.append(ref)
    return out


__all__ = ["ACTIONS", "AUDIT_TYPE", "Auditor", "Record", "build_event", "event_index", "outcome_code",
           "to_document", "version_event_id"]
