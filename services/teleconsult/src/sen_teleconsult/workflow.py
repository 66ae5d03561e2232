"""The consult workflow: submission, the Task's steps, the worklist and the SLA sweep.

Storage, by the claim rule (ARCHITECTURE §2, :mod:`sen_shared.claims`):

- **Submission** creates the ServiceRequest and the Task with ONE transaction of the shared
  FHIR engine (all or nothing, journalled), then starts the Task's step chain.
- **Each step** (``$accept``, ``$reject``, ...) is a link of an append-only chain in
  ``consult_steps`` keyed by the Task id (``<task>/<n>``, :func:`sen_shared.claims.advance`).
  A step reads the newest link, checks the transition, and claims link n+1 by inserting it:
  of two doctors accepting from link n, exactly one insert wins; the other re-reads, finds
  the Task accepted and gets 409 with the current state. The link carries the whole next
  Task (version n+1 of the FHIR resource: Task version == link number), the ServiceRequest's
  status, the Communication to create, and the step's events in its outbox (the relay
  publishes them; ``outbox_pending``). Only after winning does the step write the FHIR
  resources (:meth:`Consults.roll_forward`): the Task update from version n to n+1 has a
  single writer by construction (the link's winner; a later step first rolls a link forward
  that a crash left unapplied, so a Task never lags behind its chain).
- **An SLA breach** is claimed once per Task by inserting ``sla_breaches/<task>``, whose
  outbox carries ``teleconsult.consult.sla_breached``; the escalation is then a step
  (``$escalate``) that records the on-duty lead on the Task.
- **Referral grants** (``grants``, the documents ``sen_shared.fhir.guarded`` reads): inserted
  once per (consult, grantee) at submission, for the clinic and the hub, so the generic FHIR
  reads and searches let them see the consult's resources; insert-only.
"""

from __future__ import annotations

import copy
import json
import logging
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from pymongo.database import Database
from pymongo.errors import BulkWriteError
from sen_shared import mongo
from sen_shared.bus import make_event, new_document
from sen_shared.claims import ClaimTaken, advance, chain_indexes, claim_once, latest, link_id
from sen_shared.fhir.access import GRANTS, grant_id
from sen_shared.fhir.audit import Record
from sen_shared.fhir.body import unpack
from sen_shared.fhir.guarded import Hidden, hidden_refusals
from sen_shared.fhir.http import FhirResponse
from sen_shared.fhir.names import one_line, person_name
from sen_shared.fhir.outcome import FhirError
from sen_shared.fhir.parameters import parameter_list
from sen_shared.fhir.rest import FhirServer
from sen_shared.fhir.search.buckets import bucket_fields
from sen_shared.fhir.search.mongo import decode_cursor, encode_cursor
from sen_shared.fhir.store import Store, etag, is_stale, not_found
from sen_shared.fhir.store import iso as iso_store
from sen_shared.fhir.validate import validate_resource
from sen_shared.ids import new_uuid
from sen_shared.mongo import FIND_IN_MAX_EQUALITIES, find_in

from .adapters.ehr import EhrClient
from .config import TeleconsultSettings
from .domain import consults as rules
from .domain import lead_alerts
from .domain.consults import ConsultError, Minutes, Submission, ref_id, ref_of
from .domain.sla import is_breached, on_duty_lead, on_duty_lead_email

log = logging.getLogger("sen.teleconsult.workflow")

SLA_BREACHED = {"coding": [{"system": rules.BUSINESS_STATUS, "code": "sla-breached"}], "text": "Quá hạn xử lý"}
STEPS = "consult_steps"
RETRY_IDS = uuid.UUID("5b3c1f0e-8d2a-4e6b-9c7d-1a2b3c4d5e6f")  # namespace of the ids a retry key derives
BREACHES = "sla_breaches"
# a breach carries the minute it is stored ("minute": Unix minutes, by the clock of the sweeper that inserts
# it): the missed-alert scan reads only the minutes since its last read, one equality each (queue_missed_alerts)
BREACH_MINUTE = "minute"
MISSED_SCAN_MAX_GAP = 60  # minutes without a scan (a stalled job): read the look-back window again instead
VN = ZoneInfo("Asia/Ho_Chi_Minh")
SYSTEM_ACTOR = "Device/sen-teleconsult"  # the worker's own steps ($escalate)
CARRIED = ("breached", "escalatedTo", "owner")  # facts of a link that hold for the links after it
MAX_STEP_ATTEMPTS = 8  # a step loses its race only to a different step; it re-reads and decides again
SR_STATUS_ATTEMPTS = 12  # a ServiceRequest status write decides again after a lost version claim
SR_STATUS_PAUSE = 0.01  # seconds, times the attempt, while the winner's current write lands
WORKLIST_MAX = 500  # a page of the worklist at most
WORKLIST_ONE_READ = 200  # open Tasks in scope up to which the worklist reads them all at once (workflow.worklist)
AUTHORED = "sp_authored-on_s"  # the worklist's order within a priority (then the id)
# a worklist row's place: its priority's rank, its stored authoredOn (UTC), its id (Consults.worklist_page)
WorklistKey = tuple[int, datetime | None, str]


def _minute(at: datetime) -> int:
    """``at`` in Unix minutes (a breach's ``BREACH_MINUTE``)."""
    return int(at.timestamp()) // 60


def _as_utc(at: Any) -> datetime | None:
    """A stored datetime (naive UTC as pymongo reads it) as an aware one; anything else None."""
    if not isinstance(at, datetime):
        return None
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


def _key_order(key: WorklistKey) -> tuple[int, int, datetime, str]:
    """A worklist key comparable as the database sorts: no authoredOn before any."""
    rank, at, tid = key
    return rank, 0 if at is None else 1, at or datetime.min.replace(tzinfo=UTC), tid


def _after_filter(key: WorklistKey) -> dict[str, Any]:
    """Within the key's priority, the Tasks after it (authoredOn, then id)."""
    _, at, tid = key
    if at is None:
        return {"$or": [{AUTHORED: {"$type": "date"}}, {AUTHORED: None, "_id": {"$gt": tid}}]}
    return {"$or": [{AUTHORED: {"$gt": at}}, {AUTHORED: at, "_id": {"$gt": tid}}]}


def worklist_cursor(key: WorklistKey) -> str:
    """A page link's ``_cursor`` after the row of ``key`` (tamper-evident, as the searches' cursors)."""
    return encode_cursor(list(key))


def worklist_key(cursor: str) -> WorklistKey:
    """The key a worklist ``_cursor`` names; a cursor not made by :func:`worklist_cursor` is 400."""
    bad = ConsultError("_cursor is not a page link of this worklist (start again from the first page)",
                       status=400, expression=["_cursor"])
    try:
        values = decode_cursor(cursor)
    except FhirError:
        raise bad from None
    if (len(values) != 3 or not isinstance(values[0], int) or isinstance(values[0], bool)
            or not 0 <= values[0] < len(rules.PRIORITIES) or not (values[1] is None or isinstance(values[1], datetime))
            or not isinstance(values[2], str)):
        raise bad
    return values[0], _as_utc(values[1]), values[2]

INDEXES: list[mongo.Index] = [
    *chain_indexes(STEPS),
    mongo.Index(STEPS, (("outbox_pending", 1),), name="outbox_pending_1"),
    mongo.Index(BREACHES, (("outbox_pending", 1),), name="outbox_pending_1"),
    mongo.Index(BREACHES, ((BREACH_MINUTE, 1),), name="minute_1"),  # the missed-alert scan's read
    mongo.Index(GRANTS, (("grantee", 1),), name="grantee_1"),
    mongo.Index(GRANTS, (("pair", 1),), name="pair_1"),
    # the worklist: a doctor's hub or a clinic (the open-consult tags, or the hub tag), one priority,
    # the states asked for, by authoredOn
    mongo.Index("Task", (("sp__tag", 1), ("sp_priority", 1), ("sp_status", 1), ("sp_authored-on_s", 1)),
                name="worklist_tag"),
    mongo.Index("Task", (("sp_requester", 1), ("sp_priority", 1), ("sp_status", 1), ("sp_authored-on_s", 1)),
                name="worklist_clinic"),
    mongo.Index("ServiceRequest", (("sp__tag", 1),), name="hub_tag"),
    mongo.Index("Communication", (("sp__tag", 1),), name="hub_tag"),  # its hub's and its requesting clinic's
    mongo.Index("Appointment", (("sp__tag", 1),), name="party_tag"),  # its hub and requesting clinic
]
OUTBOX_COLLECTIONS = (STEPS, BREACHES)


class SubmissionGate:
    """The outbox relay's check on ``consult_steps`` (the worker passes it to the relay): a
    submission's link 1 is its commit point, written before its ServiceRequest and Task; a link 1
    whose Task is not stored is held back while it is young (its request is writing it) and made
    whole once it is older than the grace period (its request died), before its
    ``consult.requested`` goes out. So every committed submission is finished by the worker
    even when nobody reads it. One Task lookup (equalities) per batch of links 1.

    A step that closes the consult (``$cancel``, ``$reject``, ``$complete``) has its visit ended
    (:meth:`Consults.end_visits`, idempotent: its request did it already unless it died after its
    claim) before its event goes out; held back for the next pass when the database refuses."""

    fields = ("k", "n", "op", "at", "state", "facts", "by", "visit_why", "visit_at", "appointment")

    def __init__(self, consults: Consults, grace: timedelta | None = None) -> None:
        self.consults = consults
        self.grace = grace

    def __call__(self, docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        docs = self._end_visits(docs)
        firsts = [d for d in docs if d.get("n") == 1 and d.get("op") == "$submit" and d.get("k")]
        if not firsts:
            return docs
        coll = self.consults.store().current("Task")
        ids = [str(d["k"]) for d in firsts]
        have: set[str] = set()
        for start in range(0, len(ids), FIND_IN_MAX_EQUALITIES):  # equalities, never a scanning $in
            have.update(h["_id"] for h in find_in(coll, "_id", ids[start:start + FIND_IN_MAX_EQUALITIES],
                                                   projection={"_id": 1}))
        held: set[Any] = set()
        for d in firsts:
            if d["k"] in have:
                continue
            if not is_stale(d, self.grace):
                held.add(d["_id"])  # its request is probably writing it: the next pass looks again
                continue
            try:
                self.consults.finish_submission(d)
            except Exception:  # noqa: BLE001 - the database refused: held back, the next pass tries again
                log.exception("a half-done submission could not be finished yet", extra={"task": d["k"]})
                held.add(d["_id"])
                continue
            log.warning("finished a submission its request left half-done", extra={"task": d["k"]})
        return [d for d in docs if d["_id"] not in held]

    def _end_visits(self, docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        held: set[Any] = set()
        for d in docs:
            if d.get("op") not in rules.CLOSING_OPS or not d.get("facts"):
                continue
            try:
                self.consults.end_visits(d)
            except Exception:  # noqa: BLE001 - the database refused: held back, the next pass tries again
                log.exception("the closed consult's visit could not be ended yet", extra={"task": d.get("k")})
                held.add(d["_id"])
        return [d for d in docs if d["_id"] not in held] if held else docs


def now_vn() -> datetime:
    return datetime.now(VN).replace(microsecond=0)


def iso(dt: datetime) -> str:
    return dt.astimezone(VN).isoformat(timespec="seconds")


def parse_instant(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


# --------------------------------------------------------------------------- who acts

@dataclass(frozen=True)
class Actor:
    """Who makes a change: recorded on the resource version and in the AuditEvent."""

    principal: Any
    ref: str  # Practitioner/<id>, Organization/<facility> or the system
    display: str

    @classmethod
    def of(cls, principal: Any) -> Actor:
        sub = getattr(principal, "sub", "") or "anonymous"
        if getattr(principal, "practitioner", None):
            return cls(principal, f"Practitioner/{principal.practitioner}", sub)
        if getattr(principal, "facility", None):
            return cls(principal, f"Organization/{principal.facility}", sub)
        return cls(principal, SYSTEM_ACTOR, sub)

    def as_doc(self) -> dict[str, Any]:
        return {"ref": self.ref, "sub": self.display, "roles": sorted(getattr(self.principal, "roles", ()))}


class _System:
    """The worker as a principal (AuditEvents of the sweeper's steps)."""

    sub = "sen-teleconsult-worker"
    roles = frozenset({"service"})
    facility = None
    practitioner = None
    scopes: frozenset[str] = frozenset()


def system_actor() -> Actor:
    return Actor(_System(), SYSTEM_ACTOR, _System.sub)


# --------------------------------------------------------------------------- a step

@dataclass
class Change:
    """What one step does, decided from the newest link (no I/O)."""

    state: str
    task: dict[str, Any]
    sr_status: str | None = None
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # (routing key, data)
    communication: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # kept on the link (resume, owner, ...)
    after: Callable[[dict[str, Any]], None] | None = None  # run once the step is applied


def _facts_of(link: Mapping[str, Any]) -> dict[str, Any]:
    return dict(link["facts"])


def _task_of(link: Mapping[str, Any]) -> dict[str, Any]:
    return json.loads(link["task_json"])


def _event_base(f: Mapping[str, Any]) -> dict[str, Any]:
    data = {"serviceRequest": f["serviceRequest"], "task": f["task"], "requester": f["requester"],
            "priority": f["priority"]}
    if f.get("district"):
        data["district"] = f["district"]
    return data


def _tag_thread(comm: dict[str, Any], f: Mapping[str, Any]) -> dict[str, Any]:
    """Tag a Communication of the consult's thread with its hub and requesting clinic (in place)."""
    rules.tag_hub(comm, f["hub"])
    return rules.tag_requester(comm, f["requester"]) if f.get("requester") else comm


class Consults:
    """The workflow over one database. ``fhir``: the service's (guarded) FHIR server, whose
    engine writes the resources and whose auditor records every change."""

    def __init__(self, fhir: Any, settings: TeleconsultSettings) -> None:
        self.fhir = fhir
        self.settings = settings
        # the unguarded engine: the workflow decided who may act; the resources are written as it says
        self.engine = FhirServer(fhir.config, lambda: fhir.db)
        self._missed_scan_minute: int | None = None  # the last minute queue_missed_alerts read (this object's)

    @property
    def db(self) -> Database:
        return self.fhir.db

    def store(self) -> Store:
        return self.engine.store()

    def _audit(self, actor: Actor, interaction: str, rtype: str, rid: str | None, *, patient: str | None,
               status: int, operation: str, vid: str | None = None) -> None:
        self.fhir.auditor.record(actor.principal, Record(interaction, resource_type=rtype, rid=rid, vid=vid,
                                                         patients=[patient] if patient else [], status=status,
                                                         operation=operation))

    # ------------------------------------------------------------------ submission

    def submit(self, body: Any, principal: Any, ehr: EhrClient, base: str,
               retry_key: str | None = None, task_reason: Any = None) -> FhirResponse:
        """Check a consult request, ask the EHR, create ServiceRequest + Task whole or not at all.

        ``retry_key`` (the caller's ``Idempotency-Key``, scoped): the ids derive from it, so a
        retry after an answer that was lost (a 5xx after the transaction) finds the consult the
        first try made instead of making a second one: its claims of version 1 are taken, and the
        transaction's 409 sends it to what the first try stored (a first try pays no read for it).

        ``task_reason``: the ``reasonCode`` of the client's own Task (a transaction Bundle's), kept
        on the Task instead of the ServiceRequest's first one; checked here (one CodeableConcept)."""
        roles = getattr(principal, "roles", frozenset())
        if not roles & {"clinic", "admin"}:
            raise ConsultError("submitting a consult needs the clinic role", status=403, code="forbidden")
        if isinstance(body, dict) and body.get("resourceType") == "Parameters":
            found = [p.get("resource") for p in parameter_list(body) if p.get("name") == "resource"]
            body = found[0] if found else None
        clinic = f"Organization/{principal.facility}" if "clinic" in roles and principal.facility else None
        if "clinic" in roles and clinic is None and "admin" not in roles:
            raise ConsultError("the token names no facility: clinic staff submit for their facility", status=403,
                               code="forbidden")
        sub = rules.check_submission(body, clinic=clinic, default_hub=self.settings.default_hub or None,
                                     admin="admin" in roles)
        if task_reason is not None:
            if not isinstance(task_reason, dict):
                raise ConsultError("Task.reasonCode is one CodeableConcept (FHIR R4), not a list", status=422,
                                   code="processing", expression=["Task.reasonCode"])
            # the client's part only: the rest of the Task is the server's own (rules.new_task)
            validate_resource({"resourceType": "Task", "status": "requested", "intent": "order",
                               "reasonCode": task_reason}, expected_type="Task")
            rules.check_reason(task_reason, "Task.reasonCode")
        # the EHR: the patient exists and this caller may see it (and each supporting record), in
        # one call (a batch of reads when there are records)
        read = ehr.check_all_readable([(sub.patient, "ServiceRequest.subject"),
                                       *((ref, f"ServiceRequest.supportingInfo[{i}]")
                                         for i, ref in enumerate(sub.supporting))])
        for i, (ref, res) in enumerate(zip(sub.supporting, read[1:], strict=True)):
            if ref_of(res.get("subject")) not in (None, sub.patient):
                raise ConsultError(f"{ref} is about another patient", status=422, code="processing",
                                   expression=[f"ServiceRequest.supportingInfo[{i}]"])
        # the patient's name as the EHR holds it now, kept on the consult (its ServiceRequest's subject,
        # its Task's ``for``) for the steps that name the patient later without asking the EHR again
        sub = rules.named(sub, person_name(read[0]))
        district = ehr.district_of(sub.requester)
        return self.create(sub, Actor.of(principal), base, district, retry_key=retry_key, task_reason=task_reason)

    def create(self, sub: Submission, actor: Actor, base: str, district: str | None,
               retry_key: str | None = None, task_reason: dict[str, Any] | None = None) -> FhirResponse:
        if retry_key:
            sr_id, task_id = (str(uuid.uuid5(RETRY_IDS, f"{retry_key}|{part}")) for part in ("sr", "task"))
        else:
            sr_id, task_id = new_uuid(), new_uuid()
        requested = now_vn()
        due = rules.due_time(requested, sub.priority, self.settings.sla_hours)
        sr_ref, task_ref = f"ServiceRequest/{sr_id}", f"Task/{task_id}"
        sr = {**sub.service_request, "id": sr_id, "authoredOn": iso(requested)}
        task = {**rules.new_task(sub, sr_ref, requested=iso(requested), due=iso(due), district=district,
                                 reason=task_reason),
                "id": task_id}
        rules.stamp_change(rules.tag_hub(sr, sub.hub), actor.ref, actor.display)
        rules.tag_open(rules.tag_hub(task, sub.hub), sub.hub, sub.requester, True)
        rules.stamp_change(task, actor.ref, actor.display)
        # the client's ServiceRequest as the server completed it: one FHIR validation. The Task is
        # the server's own (rules.new_task, checked against FHIR in the rules' tests)
        validate_resource(sr, expected_type="ServiceRequest")  # reads only (check_submission copied it)
        facts = {"serviceRequest": sr_ref, "task": task_ref, "patient": sub.patient, "requester": sub.requester,
                 "hub": sub.hub, "priority": sub.priority, "specialty": sub.specialty, "district": district,
                 "requestedAt": iso(requested), "dueAt": iso(due)}
        # The commit point is link 1 of the Task's chain, as for every step: it holds both resources
        # whole (and the consult.requested event). Once it is in, the consult exists and is made
        # whole by whoever gets there: this request right after, a step on the Task (roll_forward),
        # or the worker's relay before link 1's events go out (SubmissionGate). Before it, nothing
        # is stored. (Was: a journalled transaction of the two resources, then link 1: two
        # database commands more, the journal's insert and delete.)
        try:
            link = self.start_chain(task_id, facts, task, actor, sr=sr, strict=True)
        except ClaimTaken as taken:
            # ids derive from the retry key only, so an earlier try of this request holds link 1
            if not retry_key or taken.holder is None:
                self._audit(actor, "create", "Task", task_id, patient=sub.patient, status=409, operation="$submit")
                raise FhirError(f"Task/{task_id} exists already", status=409, code="conflict") from None
            written = self.finish_submission(taken.holder)
            return self._answer(sr_id, task_id, base, "200 OK", written)
        written = self.finish_submission(link)
        for rtype, rid in (("ServiceRequest", sr_id), ("Task", task_id)):
            self._audit(actor, "create", rtype, rid, patient=sub.patient, status=201, operation="$submit", vid="1")
        return self._answer(sr_id, task_id, base, "201 Created", written)

    def _answer(self, sr_id: str, task_id: str, base: str, status: str,
                written: Mapping[str, Any] | None = None) -> FhirResponse:
        """The transaction-response Bundle of a submission: both versions 1 as this request wrote
        them (``written``: the store's writes by type), else as stored (their history documents:
        claimed once :meth:`finish_submission` returned)."""
        store = self.store()
        entries = []
        for rtype, rid in (("ServiceRequest", sr_id), ("Task", task_id)):
            w = (written or {}).get(rtype)
            if w is not None:
                res, version, when = w.resource, w.version, w.when
            else:
                doc = store.vread_doc(rtype, rid, "1")
                res, version, when = doc["res"], doc["v"], doc["lu"]
            entries.append({"fullUrl": f"{base}/{rtype}/{rid}", "resource": res,
                            "response": {"status": status, "etag": etag(version), "lastModified": iso_store(when),
                                         "location": f"{rtype}/{rid}/_history/{version}"}})
        return FhirResponse(200, {"resourceType": "Bundle", "type": "transaction-response", "entry": entries})

    def finish_submission(self, link: Mapping[str, Any]) -> dict[str, Any]:
        """Make the consult link 1 commits whole: ServiceRequest and Task version 1 (from the link),
        then the grants; the writes this call made, by type. Idempotent, and safe to run by several
        at once: each version is claimed by its history insert (:meth:`Store.apply`); a version
        claimed already is someone else's (rolled forward by the store when its writer died, past
        the grace period). A link 1 made before this design (no ``sr_json``: the resources were
        written first) has nothing to finish but its grants."""
        if int(link.get("n", 0)) != 1 or link.get("op") != "$submit":
            return {}
        if "task_json" not in link:  # the relay's projection: read the whole link
            full = self.db[STEPS].find_one({"_id": link["_id"]})
            if full is None:
                return {}
            link = full
        store = self.store()
        facts = link["facts"]
        written: dict[str, Any] = {}
        if link.get("sr_json"):
            when = link.get("at")
            when = when.replace(tzinfo=UTC) if isinstance(when, datetime) and when.tzinfo is None else when
            for res in (json.loads(link["sr_json"]), _task_of(link)):
                rtype, rid = res["resourceType"], res["id"]
                w = store.prepare_create(res, rid, when=when)
                try:
                    store.apply(w)  # no read first: on the request's path the claim's insert decides
                except FhirError as err:
                    if err.status != 409:
                        raise
                    continue  # claimed by another finisher or a first try: theirs to write
                written[rtype] = w
        self.grant(facts, facts["requester"], facts["hub"])
        return written

    def start_chain(self, task_id: str, facts: Mapping[str, Any], task: Mapping[str, Any], actor: Actor,
                    *, sr: Mapping[str, Any] | None = None, strict: bool = False) -> dict[str, Any] | None:
        """Link 1 (``requested``, with the ``consult.requested`` event). With ``sr``: the commit
        point of a submission (it carries both resources; ``strict``: :class:`ClaimTaken` when the
        chain exists, and the caller finishes). Without: the chain of a Task stored before its
        link (:meth:`recover`), whose grants are inserted first (idempotent)."""
        if sr is None:
            self.grant(facts, facts["requester"], facts["hub"])
        data = {**_event_base(facts), "patient": facts["patient"], "requestedAt": facts["requestedAt"],
                "dueAt": facts["dueAt"]}
        if facts.get("specialty"):
            data["specialty"] = facts["specialty"]
        # the hub's doctors triage with the record: the EHR lets the hub read this patient
        # (the doctor who accepts gets a grant of their own)
        events = [("teleconsult.consult.requested", data), *self._grant_events(facts, facts["hub"])]
        extra = {"sr_json": json.dumps(sr, ensure_ascii=False)} if sr is not None else {}
        link = self._link_doc(task_id, op="$submit", state="requested", task=dict(task), facts=facts,
                              actor=actor, sr_status="active", extra=extra, events=events)
        try:
            return advance(self.db[STEPS], task_id, None, link)
        except ClaimTaken:
            if strict:
                raise
            return None  # started already (a recovery ran first)

    def grant(self, facts: Mapping[str, Any], *grantees: str) -> None:
        """Let each grantee see this consult's resources here (the guarded FHIR reads): one claim
        each (``<serviceRequest>|<grantee>``), inserted together; one there already stays as it is."""
        docs = [{"_id": f"{facts['serviceRequest']}|{g}", "pair": grant_id(facts["patient"], g),
                 "patient": facts["patient"], "grantee": g, "reason": facts["serviceRequest"], "expires": None,
                 "at": datetime.now(UTC)} for g in dict.fromkeys(grantees)]
        try:
            self.db[GRANTS].insert_many(docs, ordered=False)
        except BulkWriteError as err:  # granted before (a retry, a recovery): the same grant
            if any(e.get("code") != 11000 for e in err.details.get("writeErrors", [])):
                raise

    def _link_doc(self, task_id: str, *, op: str, state: str, task: dict[str, Any], facts: Mapping[str, Any],
                  actor: Actor, sr_status: str | None, extra: Mapping[str, Any],
                  events: Iterable[tuple[str, dict[str, Any]]], communication: dict[str, Any] | None = None,
                  ) -> dict[str, Any]:
        subject = facts["serviceRequest"]
        # checked against their schemas by the relay's publisher before they leave, and in the
        # tests; not here, on the request's path (jsonschema cost ~10% of a submission's CPU)
        envelopes = [make_event(key, data, subject=subject, validate=False) for key, data in events]
        doc: dict[str, Any] = {
            "op": op, "state": state, "facts": dict(facts), "task_json": json.dumps(task, ensure_ascii=False),
            "sr_status": sr_status, "by": actor.as_doc(), "at": datetime.now(UTC), **extra,
            **bucket_fields(task_id)}  # b2: the relay's spread field
        if communication is not None:
            doc["communication_json"] = json.dumps(communication, ensure_ascii=False)
        return new_document(doc, envelopes)

    # ------------------------------------------------------------------ reading a consult

    def current(self, task_id: str) -> dict[str, Any]:
        """The newest link of a Task (recovering a chain a crash left unstarted); 404 if no such Task."""
        link = latest(self.db[STEPS], task_id)
        if link is None:
            link = self.recover(task_id)
        if link is None:
            raise not_found("Task", task_id)  # what another facility's Task is answered as too (authorize)
        return link

    def recover(self, task_id: str) -> dict[str, Any] | None:
        """Start the chain of a Task created by a submission that stopped before it could."""
        doc = self.store().current("Task").find_one({"_id": task_id}, {"res": 1, "v": 1, "del": 1})
        doc = unpack(doc)
        if doc is None or doc.get("del") or int(doc.get("v", 0)) != 1:
            return None
        task = doc["res"]
        sr_ref = ref_of(task.get("focus"))
        if sr_ref is None:
            return None
        sr = unpack(self.store().current("ServiceRequest").find_one({"_id": ref_id(sr_ref)}, {"res": 1}))
        if sr is None:
            return None
        district = next((e.get("valueString") for e in task.get("extension") or []
                         if e.get("url") == rules.EXT_DISTRICT), None)
        specialty = next((c.get("code") for cc in task.get("performerType") or [] for c in cc.get("coding") or []),
                         None)
        facts = {"serviceRequest": sr_ref, "task": f"Task/{task_id}", "patient": ref_of(task.get("for")),
                 "requester": ref_of(task.get("requester")), "hub": ref_of(task.get("owner")),
                 "priority": task.get("priority"), "specialty": specialty, "district": district,
                 "requestedAt": task.get("authoredOn"), "dueAt": (task.get("restriction") or {}).get(
                     "period", {}).get("end")}
        task.pop("meta", None)
        self.start_chain(task_id, facts, task, system_actor())
        return latest(self.db[STEPS], task_id)

    # ------------------------------------------------------------------ steps

    def step(self, task_id: str, op: str, actor: Actor, decide: Callable[[dict[str, Any]], Change | None],
             *, authorize: bool = True, if_match: int | None = None) -> dict[str, Any]:
        """Claim the next link of ``task_id``'s chain with what ``decide(newest link)`` says; apply it.

        ``decide`` raises (409 illegal transition, 422 bad input) or returns the change; None
        means "nothing to do" (the newest link is returned as is). ``if_match`` (the caller's
        ``If-Match``): the step is taken only on that Task version, i.e. only as link ``if_match + 1``;
        the newest link being another is 412. Of several callers holding the same version, the one
        whose insert of that link wins goes on; the others read the new link and get 412 (the claim,
        not a read-then-write, decides: ARCHITECTURE §2).
        """
        if authorize:  # a made-up id's answer too; its AuditEvent the 403
            with hidden_refusals(self.fhir.auditor, actor.principal, Record("update", "Task", task_id, operation=op)):
                rules.check_role(op, actor.principal, actor.ref == SYSTEM_ACTOR)
        for _ in range(MAX_STEP_ATTEMPTS):
            link = self.current(task_id)
            facts = _facts_of(link)
            if authorize:
                with hidden_refusals(self.fhir.auditor, actor.principal,
                                     Record("update", "Task", task_id, patients=[facts["patient"]], operation=op)):
                    self.authorize(op, actor, facts)
            self.roll_forward(link)
            rules.check_version(op, task_id, if_match, int(link["n"]), link["state"], link.get("owner"))
            if op in rules.TRANSITIONS:
                rules.check_transition(op, link["state"])
            change = decide(link)
            if change is None:
                return link
            task = rules.tag_open(rules.tag_hub(change.task, facts["hub"]), facts["hub"], facts["requester"],
                                  change.state in rules.OPEN_STATES)
            task = rules.stamp_change(task, actor.ref, actor.display)
            task["lastModified"] = iso(now_vn())
            validate_resource(copy.deepcopy(task), expected_type="Task")
            if change.communication is not None:
                # the hub and the requesting clinic read it by its tags (fhir_server), whoever sent it:
                # a clinic's answer is sent by its Practitioner when the token names one
                _tag_thread(change.communication, facts)
                rules.stamp_change(change.communication, actor.ref, actor.display)
                validate_resource(copy.deepcopy(change.communication), expected_type="Communication")
            extra = {**{k: link[k] for k in CARRIED if k in link}, **change.extra}
            doc = self._link_doc(task_id, op=op, state=change.state, task=task, facts=facts, actor=actor,
                                 sr_status=change.sr_status, extra=extra, events=change.events,
                                 communication=change.communication)
            try:
                mine = advance(self.db[STEPS], task_id, link, doc)
            except ClaimTaken:
                continue  # another step won link n+1: decide again from it
            self.roll_forward(mine)
            self._audit(actor, "update", "Task", task_id, patient=facts["patient"], status=200, operation=op,
                        vid=str(mine["n"]))
            if change.after is not None:
                change.after(mine)
            return mine
        raise ConsultError(f"Task/{task_id} is changing too fast; retry", status=409, code="conflict")

    def authorize(self, op: str, actor: Actor, facts: Mapping[str, Any]) -> None:
        """May ``actor`` take ``op`` on this consult? Its role (:func:`rules.check_role`: 403), then whose the
        consult is: another hub's or another facility's is :class:`Hidden`, answered as a Task not stored
        (:meth:`current`'s 404), so that no one learns which consults exist elsewhere; its AuditEvent the 403."""
        p = actor.principal
        system = actor.ref == SYSTEM_ACTOR
        rules.check_role(op, p, system)
        roles = getattr(p, "roles", frozenset())
        if "admin" in roles or op in rules.SYSTEM_OPS and system:
            return
        facility = f"Organization/{p.facility}" if getattr(p, "facility", None) else None
        mine = facts["hub"] if op in rules.HUB_OPS else facts["requester"]
        if facility != mine:
            why = (f"this consult was sent to another hub ({facts['hub']})" if op in rules.HUB_OPS
                   else "this consult belongs to another facility")
            raise Hidden(why, not_found("Task", ref_id(facts["task"])))
        if op in rules.HUB_OPS and not getattr(p, "practitioner", None):
            raise ConsultError("the token names no practitioner", status=403, code="forbidden")

    def roll_forward(self, link: Mapping[str, Any]) -> None:
        """Make the FHIR resources say what ``link`` (and every link before it) says.

        Idempotent: run by the step's winner right after its claim, and by any later step first
        (a crash between a claim and its writes is finished by the next reader).
        """
        task_id, n = link["k"], int(link["n"])
        store = self.store()
        head = store.head("Task", task_id)
        version = int(head["v"]) if head is not None and not head.get("del") else 0
        if version == 0:  # a submission committed (link 1) but not yet made whole: finish it first
            first = link if n == 1 else self.db[STEPS].find_one({"_id": link_id(task_id, 1)})
            if first is None or not first.get("sr_json"):
                return
            self.finish_submission(first)
            head = store.head("Task", task_id)
            if head is None:
                return  # another finisher holds the claim of version 1: the next reader goes on
            version = int(head["v"])
        for seq in range(version + 1, n + 1):
            this = link if seq == n else self.db[STEPS].find_one({"_id": link_id(task_id, seq)})
            if this is None:
                return
            self._apply(store, this, seq)
        self._apply_side(store, link)

    def _apply(self, store: Store, link: Mapping[str, Any], seq: int) -> None:
        task = _task_of(link)
        try:
            store.update(task, link["k"], if_match=seq - 1)
        except FhirError as err:
            if err.status not in (409, 412):
                raise
            # another reader rolled this link forward at the same moment: it is applied
        self._apply_side(store, link)

    def _apply_side(self, store: Store, link: Mapping[str, Any]) -> None:
        facts = link["facts"]
        if link.get("communication_json"):
            # a link claimed before the requester tag existed gets it here: from the link's facts, so
            # two readers rolling the same link forward create the same Communication
            comm = _tag_thread(json.loads(link["communication_json"]), facts)
            if store.head("Communication", comm["id"]) is None:
                try:
                    store.create(comm, rid=comm["id"])
                    self._audit_link(link, "create", "Communication", comm["id"])
                except FhirError as err:
                    if err.status != 409:
                        raise
        if link.get("sr_status"):
            self._write_sr_status(store, link, ref_id(facts["serviceRequest"]), link["sr_status"])

    def _write_sr_status(self, store: Store, link: Mapping[str, Any], sr_id: str, want: str) -> None:
        """Make the ServiceRequest's status ``want`` (the link's), as its next version claimed by its
        history insert (``Store.apply``). The ServiceRequest's later versions have more than one
        writer: a reader rolling this link forward, another reader rolling the same link at the
        same moment, and the backfill's retag (``backfill.retag_by_claim``: tags only). So a lost
        claim is decided again, never presumed to be the same change: the version that won is read
        (its history document); if it says ``want``, this is done; else (the retag's version) the
        status goes on top of it as the following version once its current document has landed.
        Exactly one writer wins each version number, and no writer's change is lost."""
        coll, hist = store.current("ServiceRequest"), store.history("ServiceRequest")
        lost_at: int | None = None
        for attempt in range(SR_STATUS_ATTEMPTS):
            doc = unpack(coll.find_one({"_id": sr_id}, {"outbox": 0}))
            if doc is None or doc.get("del") or not isinstance(doc.get("res"), dict) \
                    or doc["res"].get("status") == want:
                return
            version = int(doc["v"])
            if version == lost_at:  # the winner's current write has not landed yet: what did it write?
                won = unpack(hist.find_one({"_id": f"{sr_id}/{version + 1}"}, {"res": 1}))
                if won is not None and isinstance(won.get("res"), dict) and won["res"].get("status") == want:
                    return  # the same change (another reader rolled this link forward)
                time.sleep(SR_STATUS_PAUSE * (attempt + 1))
                continue
            sr = copy.deepcopy(doc["res"])
            sr["status"] = want
            by = link.get("by") or {}
            rules.stamp_change(sr, by.get("ref", SYSTEM_ACTOR), by.get("sub", ""))
            try:
                store.apply(store.prepare_update(sr, sr_id, doc))
            except FhirError as err:
                if err.status != 409:
                    raise
                lost_at = version  # another writer claimed version + 1: decide again from it
                continue
            self._audit_link(link, "update", "ServiceRequest", sr_id)
            return
        # the winner of the next version did not write its current document in time (it died: the
        # store rolls its version forward after its grace period): the next reader of this link
        # (any step on the Task rolls its newest link forward first) writes the status then
        raise FhirError(f"ServiceRequest/{sr_id} is changing too fast; its status follows on the next step, retry",
                        status=503, code="transient")

    def _audit_link(self, link: Mapping[str, Any], interaction: str, rtype: str, rid: str) -> None:
        by = link.get("by") or {}

        class _P:
            sub = by.get("sub", "")
            roles = frozenset(by.get("roles") or ())
            practitioner = by["ref"].split("/", 1)[1] if str(by.get("ref", "")).startswith("Practitioner/") else None
            facility = by["ref"].split("/", 1)[1] if str(by.get("ref", "")).startswith("Organization/") else None
            scopes: frozenset[str] = frozenset()

        self.fhir.auditor.record(_P(), Record(interaction, resource_type=rtype, rid=rid,
                                              patients=[link["facts"]["patient"]], status=200 if interaction ==
                                              "update" else 201, operation=link.get("op")))

    # ------------------------------------------------------------------ the operations

    def accept(self, task_id: str, actor: Actor, *, if_match: int | None = None) -> dict[str, Any]:
        def decide(link: dict[str, Any]) -> Change:
            f, task = _facts_of(link), _task_of(link)
            at = iso(now_vn())
            performer = actor.ref if actor.ref.startswith("Practitioner/") else f["hub"]
            task["status"] = "accepted"
            task["owner"] = {"reference": performer}
            task.setdefault("executionPeriod", {})["start"] = at
            events = [("teleconsult.consult.accepted", {**_event_base(f), "performer": performer,
                                                         "patient": f["patient"], "requestedAt": f["requestedAt"],
                                                         "acceptedAt": at})]
            events += self._grant_events(f, performer)
            return Change("accepted", task, events=events, extra={"owner": performer})

        return self.step(task_id, "$accept", actor, decide, if_match=if_match)

    def _grant_events(self, f: Mapping[str, Any], grantee: str) -> list[tuple[str, dict[str, Any]]]:
        if not grantee.startswith(("Practitioner/", "Organization/")):
            return []
        expires = iso(now_vn() + timedelta(days=self.settings.referral_grant_days))
        return [("teleconsult.referral.granted", {"serviceRequest": f["serviceRequest"], "patient": f["patient"],
                                                  "grantee": grantee, "requester": f["requester"],
                                                  "expires": expires})]

    def start(self, task_id: str, actor: Actor, *, if_match: int | None = None) -> dict[str, Any]:
        """The specialist begins the accepted consult (opens the visit, starts reviewing): the
        Task is ``in-progress`` from now (``executionPeriod.start``); a hub-owned Task becomes
        the starting doctor's."""
        def decide(link: dict[str, Any]) -> Change:
            task = _task_of(link)
            task["status"] = "in-progress"
            task.setdefault("executionPeriod", {})["start"] = iso(now_vn())
            owner = link.get("owner")
            if not str(owner or "").startswith("Practitioner/") and actor.ref.startswith("Practitioner/"):
                owner = actor.ref
                task["owner"] = {"reference": owner}
            return Change("in-progress", task, extra={"owner": owner} if owner else {})

        return self.step(task_id, "$start", actor, decide, if_match=if_match)

    def reject(self, task_id: str, actor: Actor, reason: str, *, if_match: int | None = None) -> dict[str, Any]:
        def decide(link: dict[str, Any]) -> Change:
            f, task = _facts_of(link), _task_of(link)
            at = iso(now_vn())
            task["status"] = "rejected"
            task["statusReason"] = {"text": reason}
            task.pop("businessStatus", None)
            return Change("rejected", task, sr_status="revoked", events=[(
                "teleconsult.consult.rejected", {**_event_base(f), "reason": reason, "rejectedAt": at})],
                extra={"visit_why": rules.visit_end_reason("$reject", reason)}, after=self._end_visits_now)

        return self.step(task_id, "$reject", actor, decide, if_match=if_match)

    def cancel(self, task_id: str, actor: Actor, reason: str | None, *, if_match: int | None = None) -> dict[str, Any]:
        def decide(link: dict[str, Any]) -> Change:
            f, task = _facts_of(link), _task_of(link)
            at = iso(now_vn())
            task["status"] = "cancelled"
            if reason:
                task["statusReason"] = {"text": reason}
            task.pop("businessStatus", None)
            return Change("cancelled", task, sr_status="revoked", events=[(
                "teleconsult.consult.cancelled", {**_event_base(f), "cancelledAt": at})],
                extra={"visit_why": rules.visit_end_reason("$cancel", reason)}, after=self._end_visits_now)

        return self.step(task_id, "$cancel", actor, decide, if_match=if_match)

    def reassign(self, task_id: str, actor: Actor, practitioner: str, ehr: EhrClient | None, *,
                 if_match: int | None = None) -> dict[str, Any]:
        def decide(link: dict[str, Any]) -> Change:
            f, task = _facts_of(link), _task_of(link)
            if ref_of(task.get("owner")) == practitioner:
                return None  # type: ignore[return-value] - already theirs: nothing changes
            if ehr is not None and not ehr.is_practitioner_of(practitioner, f["hub"]):
                raise ConsultError(f"{practitioner} has no role at the hub {f['hub']} in the EHR", status=422,
                                   code="processing", expression=["Parameters.parameter.where(name='practitioner')"])
            task["owner"] = {"reference": practitioner}
            accepted = link["state"] != "requested" or link.get("owner")
            events = self._grant_events(f, practitioner) if accepted else []
            return Change(link["state"], task, events=events,
                          extra={"owner": practitioner, **({"resume": link["resume"]} if link.get("resume") else {})})

        return self.step(task_id, "$reassign", actor, decide, if_match=if_match)

    def request_info(self, task_id: str, actor: Actor, question: str, *, if_match: int | None = None) -> dict[str, Any]:
        def decide(link: dict[str, Any]) -> Change:
            f, task = _facts_of(link), _task_of(link)
            comm = self._communication(f, sender=actor.ref, recipient=f["requester"], text=question,
                                       in_response_to=None, kind="question")
            task["status"] = "on-hold"
            task["businessStatus"] = {"coding": [{"system": rules.BUSINESS_STATUS, "code": "info-requested"}],
                                      "text": "Chờ bổ sung thông tin"}
            return Change("on-hold", task, communication=comm,
                          extra={"resume": link["state"], "question": comm["id"], "owner": link.get("owner")})

        return self.step(task_id, "$request-info", actor, decide, if_match=if_match)

    def provide_info(self, task_id: str, actor: Actor, answer: str,
                     attachments: list[dict[str, str]], *, if_match: int | None = None) -> dict[str, Any]:
        def decide(link: dict[str, Any]) -> Change:
            f, task = _facts_of(link), _task_of(link)
            asked = link.get("question")
            owner = ref_of(task.get("owner")) or f["hub"]
            comm = self._communication(f, sender=actor.ref, recipient=owner, text=answer,
                                       in_response_to=asked, attachments=attachments, kind="answer")
            resume = link.get("resume") or "requested"
            task["status"] = resume
            task.pop("businessStatus", None)
            if link.get("breached"):
                task["businessStatus"] = dict(SLA_BREACHED)
            return Change(resume, task, communication=comm, extra={"owner": link.get("owner")})

        return self.step(task_id, "$provide-info", actor, decide, if_match=if_match)

    def post_message(self, task_id: str, actor: Actor, text: str,
                     attachments: Callable[[], list[dict[str, str]]] = list, retry_key: str | None = None,
                     ) -> tuple[bool, dict[str, Any]]:
        """A free message on the consult's thread (``$message``): a Communication from the caller's
        side to the other (a hub doctor to the requesting clinic; the clinic to the Task's owner,
        its doctor once one took it, else the hub). ``(created, the Communication)``.

        Not a step of the Task's chain: the Task keeps its state and version (a chat must not bump
        the ETag a doctor's next step is checked against, nor race the steps for their links). The
        message is its own insert: version 1 of a new Communication, claimed by its history insert.
        ``retry_key`` (the caller's ``Idempotency-Key``, scoped): the id derives from it, so a retry
        after an answer that was lost finds the message its first try stored instead of a second.

        The state is read from the newest link: a message racing a ``$cancel`` or ``$reject`` may be
        stored just after it (as one sent a moment earlier would be); refusing later ones is for the
        users (nothing to say to a withdrawn consult), not an invariant of the data.

        ``attachments()``: the References to attach (each with its file's name as ``display``
        when the caller gave one), checked (the EHR is asked) once the caller and
        the state are known to be allowed."""
        with hidden_refusals(self.fhir.auditor, actor.principal,
                             Record("operation", "Task", task_id, operation="$message")):
            rules.check_message_role(actor.principal)  # a made-up id's answer too; its AuditEvent the 403
        link = self.current(task_id)
        f = _facts_of(link)
        with hidden_refusals(self.fhir.auditor, actor.principal,
                             Record("operation", "Task", task_id, patients=[f["patient"]], operation="$message")):
            side = rules.message_side(actor.principal, f)  # another facility's consult: as a Task not stored
        self.roll_forward(link)  # the thread's earlier question or answer is in before this message
        rules.check_message(link["state"])
        task = _task_of(link)
        recipient = f["requester"] if side == "hub" else (ref_of(task.get("owner")) or f["hub"])
        comm = self._communication(f, sender=actor.ref, recipient=recipient, text=text, in_response_to=None,
                                   attachments=attachments(), kind="message")
        if retry_key:
            comm["id"] = str(uuid.uuid5(RETRY_IDS, f"{retry_key}|message|{task_id}"))
        rules.stamp_change(_tag_thread(comm, f), actor.ref, actor.display)
        validate_resource(copy.deepcopy(comm), expected_type="Communication")
        created, stored = self.store().create_once(comm, comm["id"])
        if created:
            self._audit(actor, "create", "Communication", comm["id"], patient=f["patient"], status=201,
                        operation="$message", vid="1")
        return created, stored

    def _communication(self, f: Mapping[str, Any], *, sender: str, recipient: str, text: str,
                       in_response_to: str | None, attachments: Iterable[Mapping[str, str]] = (),
                       kind: str) -> dict[str, Any]:
        """A Communication of the consult's thread: ``basedOn`` its ServiceRequest (how the whole thread
        is searched, the oldest included), ``partOf`` and ``about`` its Task, ``kind`` its category."""
        comm: dict[str, Any] = {
            "resourceType": "Communication", "id": new_uuid(), "status": "completed",
            "basedOn": [{"reference": f["serviceRequest"]}], "partOf": [{"reference": f["task"]}],
            "category": rules.thread_category(kind), "about": [{"reference": f["task"]}],
            # to the millisecond: a thread's messages a moment apart keep their order
            "subject": {"reference": f["patient"]}, "sent": datetime.now(VN).isoformat(timespec="milliseconds"),
            "sender": {"reference": sender}, "recipient": [{"reference": recipient}],
            "payload": [{"contentString": text}, *({"contentReference": dict(a)} for a in attachments)],
        }
        if in_response_to:
            comm["inResponseTo"] = [{"reference": f"Communication/{in_response_to}"}]
        return comm

    def complete(self, task_id: str, actor: Actor, minutes: Minutes, *, if_match: int | None = None) -> dict[str, Any]:
        def decide(link: dict[str, Any]) -> Change:
            f, task = _facts_of(link), _task_of(link)
            at = iso(now_vn())
            owner = ref_of(task.get("owner")) or ""
            performer = owner if owner.startswith("Practitioner/") else minutes.chair
            appointment = minutes.appointment or self._appointment_of(f["serviceRequest"])
            # the visit the minutes are of, if it took place: one still to come is cancelled once the
            # step is in (end_visits), so the record and the event name no visit that never was
            # (judged as of ``decided``, which end_visits judges by too: the event and the visit agree)
            decided = datetime.now(UTC)
            held = appointment if appointment and self._visit_began(appointment, decided) else None
            task["status"] = "completed"
            task["executionPeriod"] = {"start": minutes.start, "end": minutes.end}
            task["output"] = rules.minutes_outputs(minutes)
            task.pop("businessStatus", None)
            data: dict[str, Any] = {
                "serviceRequest": f["serviceRequest"], "task": f["task"], "patient": f["patient"],
                "requester": f["requester"], "performer": performer,
                "period": {"start": minutes.start, "end": minutes.end}, "minutes": rules.minutes_event(minutes),
                "completedAt": at, "priority": f["priority"], "requestedAt": f["requestedAt"]}
            if held:
                data["appointment"] = held
            if f.get("district"):
                data["district"] = f["district"]
            # the name the EHR held at submission (rules.named), for billing's receipt: no EHR call here
            if name := one_line((task.get("for") or {}).get("display")):
                data["patientDisplay"] = name
            return Change("completed", task, sr_status="completed",
                          events=[("teleconsult.consult.completed", data)],
                          extra={"appointment": appointment, "owner": link.get("owner"),
                                 "visit_why": rules.visit_end_reason("$complete", None), "visit_at": decided},
                          after=self._end_visits_now)

        return self.step(task_id, "$complete", actor, decide, if_match=if_match)

    def _appointment_of(self, sr_ref: str) -> str | None:
        """The consult's booked Appointment (``basedOn`` the ServiceRequest), if any."""
        for doc in self.store().current("Appointment").find({"sp_based-on": sr_ref}, {"_id": 1, "sp_status": 1}):
            if "cancelled" not in (doc.get("sp_status") or []):
                return f"Appointment/{doc['_id']}"
        return None

    def _visit_began(self, appointment: str, at: datetime) -> bool:
        from .domain import scheduling

        return scheduling.has_started(self.db, ref_id(appointment), at)

    def _end_visits_now(self, link: Mapping[str, Any]) -> None:
        """:meth:`end_visits` on the step's request: the step is in whatever happens here; a failure
        (the database) is left to the relay's gate, which runs it again before the step's event."""
        try:
            self.end_visits(link)
        except Exception:  # noqa: BLE001 - the gate finishes it
            log.exception("the consult's visit not ended yet; the relay's gate will", extra={"task": link["k"]})

    def end_visits(self, link: Mapping[str, Any]) -> dict[str, str]:
        """The consult's visit ends with it (a link of ``$cancel``, ``$reject`` or ``$complete``):
        ``scheduling.close_visits`` closes the consult's visit chain to new bookings and ends the
        active visit: ``fulfilled`` by ``$complete`` when it had begun at the step's time, else
        ``cancelled`` with the link's ``visit_why`` (its slot free again, its reminders stopped).
        Run by the step's request right after its claim, and by the relay's gate
        (:class:`SubmissionGate`) before the step's event goes out, so a request that died after
        its claim is finished by the worker; idempotent, and safe to run by both at once."""
        if link.get("op") not in rules.CLOSING_OPS or link.get("state") not in rules.FINAL_STATES:
            return {}
        from .domain import scheduling
        from .scheduling_settings import scheduling_config

        facts, by = link["facts"], link.get("by") or {}
        at = link.get("visit_at") or link.get("at") or datetime.now(UTC)  # $complete: as its decision judged
        at = at.replace(tzinfo=UTC) if at.tzinfo is None else at
        return scheduling.close_visits(
            self.db, scheduling_config(self.settings), ref_id(facts["serviceRequest"]), closed=link["state"],
            why=str(link.get("visit_why") or rules.visit_end_reason(str(link["op"]), None)),
            by=str(by.get("sub") or "system"), ref=str(by.get("ref") or SYSTEM_ACTOR), at=at,
            fulfil_started=link["op"] == "$complete",
            also=[ref_id(a) for a in (link.get("appointment"),) if isinstance(a, str) and "/" in a])

    # ------------------------------------------------------------------ SLA

    def sweep_breaches(self, now: datetime | None = None) -> int:
        """Publish ``sla_breached`` once for every open consult past its due time and escalate it."""
        now = now or datetime.now(UTC)
        found = 0
        coll = self.store().current("Task")
        for state in rules.OPEN_STATES:
            # read first, then write: FerretDB stalls a write under a cursor open on its collection
            for doc in list(coll.find({"sp_status": state}, {"_id": 1, "res": 1})):
                res = unpack(doc)["res"]
                due_text = ((res.get("restriction") or {}).get("period") or {}).get("end")
                if not due_text or not is_breached(res.get("status", ""), parse_instant(due_text), now):
                    continue
                if any(c.get("code") == "sla-breached" for c in (res.get("businessStatus") or {}).get("coding") or []):
                    continue  # escalated already (its Task says so): no query for it
                try:
                    found += self._breach(doc["_id"], now)
                except FhirError as err:  # e.g. completed meanwhile: its next sweep sees it closed
                    log.info("breach not recorded", extra={"task": doc["_id"], "status": err.status})
        return found

    def _breach(self, task_id: str, now: datetime) -> int:
        link = self.current(task_id)
        if link["state"] not in rules.OPEN_STATES or link.get("breached"):
            return 0
        f = _facts_of(link)
        lead = on_duty_lead(f["hub"], self.settings.on_duty_leads)
        data = {**_event_base(f), "dueAt": f["dueAt"], "breachedAt": iso(now)}
        if lead:
            data["escalatedTo"] = lead
        event = make_event("teleconsult.consult.sla_breached", data, subject=f["serviceRequest"])
        first, held = claim_once(self.db[BREACHES], task_id, new_document(
            {"task": f["task"], "serviceRequest": f["serviceRequest"], "escalatedTo": lead, "breachedAt": now,
             BREACH_MINUTE: _minute(datetime.now(UTC)),  # as it is stored, not as the sweep began
             **bucket_fields(task_id)}, [event]))
        self._queue_alert(f, held.get("escalatedTo"), now)  # the lead is told, once per breach (the Task's id)

        def decide(cur: dict[str, Any]) -> Change | None:
            if cur.get("breached"):
                return None
            task = _task_of(cur)
            task["businessStatus"] = dict(SLA_BREACHED)
            if lead:
                task["extension"] = [e for e in task.get("extension") or [] if e.get("url") != rules.EXT_ESCALATED_TO]
                task["extension"].append({"url": rules.EXT_ESCALATED_TO, "valueReference": {"reference": lead}})
                note = f"Quá hạn: chuyển {lead} (trực lãnh đạo)"
                task.setdefault("note", []).append({"authorReference": {"reference": SYSTEM_ACTOR},
                                                    "time": iso(now), "text": note})
            extra = {k: cur[k] for k in ("resume", "owner", "question") if cur.get(k)}
            return Change(cur["state"], task, extra={**extra, "breached": True, "escalatedTo": lead})

        self.step(task_id, "$escalate", system_actor(), decide)
        return 1 if first else 0

    def _queue_alert(self, f: Mapping[str, Any], lead: str | None, now: datetime, closed: bool = False) -> bool:
        """Queue the on-duty lead's message about a breach (``lead``: the one the breach recorded; none:
        the hub has none configured, which the message's job records). The address configured with
        the lead, when the hub's lead is still that one."""
        email = on_duty_lead_email(f["hub"], self.settings.on_duty_leads) \
            if lead and lead == on_duty_lead(f["hub"], self.settings.on_duty_leads) else None
        return lead_alerts.queue_alert(self.db, task=f["task"], lead=lead or "", email=email,
                                       priority=str(f.get("priority") or ""), due=f["dueAt"],
                                       requester=str(f.get("requester") or ""), hub=f["hub"], now=now,
                                       closed=closed)

    def queue_missed_alerts(self, now: datetime | None = None) -> int:
        """Queue the lead's message of every breach of the last ``SEN_LEAD_ALERT_LOOKBACK_HOURS`` that
        has none (recorded before the message existed, or a crash between the breach's claim and its
        queueing); a consult closed since is queued closed (nothing sent). How many were queued open.
        Each is an insert under the Task's id, so sweepers at once queue it once.

        It reads only what it has not seen: its first scan (and one after ``MISSED_SCAN_MAX_GAP``
        minutes without one) reads the window's breaches; each later scan reads the breaches stored
        in the minutes since its last (``BREACH_MINUTE``, one equality each, as the slots'
        ``LinkView``), from the minute before that one's: a breach stamped as the last scan read and
        stored just after it, or by a worker whose clock is a little behind, is still read."""
        hours = self.settings.lead_alert_lookback_hours
        if hours <= 0:
            return 0
        now = now or datetime.now(UTC)
        since = now - timedelta(hours=hours)
        reading, last = _minute(datetime.now(UTC)), self._missed_scan_minute
        fields = {"_id": 1, "escalatedTo": 1, "breachedAt": 1}
        if last is None or reading - last > MISSED_SCAN_MAX_GAP:
            breaches = list(self.db[BREACHES].find({"breachedAt": {"$gte": since}}, fields))
        else:
            breaches = [b for b in mongo.find_in(self.db[BREACHES], BREACH_MINUTE, range(last - 1, reading + 1),
                                                 projection=fields)
                        if (_as_utc(b.get("breachedAt")) or since) >= since]
        queued = {a["_id"] for a in mongo.find_in(self.db[lead_alerts.ALERTS], "_id", [b["_id"] for b in breaches],
                                                  projection={"_id": 1})}
        found = 0
        for breach in breaches:
            if breach["_id"] in queued:
                continue
            try:
                link = self.current(str(breach["_id"]))
            except FhirError:
                continue
            is_open = link["state"] in rules.OPEN_STATES
            if self._queue_alert(_facts_of(link), breach.get("escalatedTo"), now, closed=not is_open) and is_open:
                found += 1
        self._missed_scan_minute = reading  # once every breach read is queued: a scan that failed is read again
        return found

    def retag(self, task_id: str) -> bool:
        """Give a Task stored before the hub and open-consult tags existed its tags, as a step of the
        system (``$retag``: the next link of its chain, so it races with a doctor's step like any
        other step; the loser re-reads and decides again). True when it made a version; a Task
        whose newest link is tagged already is left as it is (the backfill is idempotent)."""
        made = False

        def decide(link: dict[str, Any]) -> Change | None:
            nonlocal made
            made = False  # decided again after a lost race: this decision counts
            f, task = _facts_of(link), _task_of(link)
            want = rules.tag_open(rules.tag_hub(copy.deepcopy(task), f["hub"]), f["hub"], f["requester"],
                                  link["state"] in rules.OPEN_STATES)
            tags = [(t.get("system"), t.get("code")) for t in (task.get("meta") or {}).get("tag") or []]
            if sorted(tags) == sorted((t.get("system"), t.get("code")) for t in want["meta"]["tag"]):
                return None
            made = True
            return Change(link["state"], task, extra={k: link[k] for k in ("resume", "question") if link.get(k)})

        self.step(task_id, "$retag", system_actor(), decide)
        return made

    # ------------------------------------------------------------------ worklist

    def worklist(self, principal: Any, *, statuses: list[str], specialty: str | None, facility: str | None,
                 priority: str | None, offset: int = 0, count: int = WORKLIST_MAX, now: datetime | None = None,
                 ) -> tuple[list[tuple[dict[str, Any], bool]], int]:
        """One page of the open Tasks the caller may see, most urgent first: ((Task, breached)
        pairs, the total) (:meth:`worklist_page` without the rows' keys)."""
        page, total = self.worklist_page(principal, statuses=statuses, specialty=specialty, facility=facility,
                                         priority=priority, offset=offset, count=count, now=now)
        return [(task, breached) for task, breached, _ in page], total

    def worklist_page(self, principal: Any, *, statuses: list[str], specialty: str | None, facility: str | None,
                      priority: str | None, offset: int = 0, count: int = WORKLIST_MAX,
                      after: WorklistKey | None = None, now: datetime | None = None,
                      ) -> tuple[list[tuple[dict[str, Any], bool, WorklistKey]], int]:
        """One page of the open Tasks the caller may see, most urgent first: ((Task, breached, key)
        triples, the total). ``after``: the key of the row before the page (a keyset: the page starts
        right after it wherever it is now, so Tasks that left the list or came into it since do not
        shift the rest); else ``offset`` rows are skipped. A row's key is its place: (its priority's
        rank, its stored ``authoredOn``, its id).

        Everything is in the database query: the caller's scope (a doctor's hub by its tag
        ``sp__tag``, a clinic's ``sp_requester``), the filters, and the order: one query per
        priority (most urgent first; priority's order is not alphabetical), each sorted by
        ``authoredOn`` (within a priority, due = authoredOn + that priority's SLA: the same
        order) then id. Counts first, so a page reads only the documents it shows. Asking for
        open states only (the default), the scope is an open-consult tag
        (``rules.OPEN_AT_HUB_TAG``, ...): its equality matches open Tasks only, not a hub's
        history of closed ones."""
        now = now or datetime.now(UTC)
        flt = self.scope_filter(principal, open_only=set(statuses) <= set(rules.OPEN_STATES))
        if facility:
            want = facility if "/" in facility else f"Organization/{facility}"
            if flt.get("sp_requester", want) != want:
                return [], 0
            flt["sp_requester"] = want
        if specialty:
            flt["sp_performer"] = specialty
        if not (set(rules.OPEN_STATES) <= set(statuses) and "sp__tag" in flt):  # all open ones: the tag says it
            flt["sp_status"] = statuses[0] if len(statuses) == 1 else {"$in": list(statuses)}
        coll = self.store().current("Task")
        order = [(AUTHORED, 1), ("_id", 1)]
        fields = {"_id": 1, "res": 1, AUTHORED: 1}

        def row(doc: dict[str, Any], rank: int) -> tuple[dict[str, Any], bool, WorklistKey]:
            res = unpack(doc)["res"]
            due_text = ((res.get("restriction") or {}).get("period") or {}).get("end")
            due = parse_instant(due_text) if due_text else None
            escalated = any(c.get("code") == "sla-breached"
                            for c in (res.get("businessStatus") or {}).get("coding") or [])
            return (res, escalated or bool(due and is_breached(res.get("status", ""), due, now)),
                    (rank, _as_utc(doc.get(AUTHORED)), str(doc["_id"])))

        # A small worklist (the usual one) in one read instead of a count and a read per priority
        # (8 round trips): at most WORKLIST_ONE_READ + 1 Tasks, so the read itself says whether it
        # is small (no count first: FerretDB counts by decoding every matching document, as much
        # as the read). The same order, split by priority here. Same answer: a Task's place is its
        # priority's rank, then authoredOn, then id; Tasks without one of the priorities are left
        # out as the per-priority queries leave them out. A larger one: the read is dropped, and
        # it is counted and read per priority below.
        small = list(coll.find(flt, {**fields, "sp_priority": 1}).sort(order).limit(WORKLIST_ONE_READ + 1)) \
            if not priority and WORKLIST_ONE_READ >= 0 else None
        if small is not None and len(small) <= WORKLIST_ONE_READ:
            by_priority: dict[str, list[dict[str, Any]]] = {p: [] for p in rules.PRIORITIES}
            for doc in small:
                have = doc.get("sp_priority")
                have = have if isinstance(have, list) else [have]
                p = next((p for p in rules.PRIORITIES if p in have), None)
                if p is not None:
                    by_priority[p].append(doc)
            ranked = [row(doc, rank) for rank, p in enumerate(rules.PRIORITIES) for doc in by_priority[p]]
            start = offset if after is None else next(
                (i for i, r in enumerate(ranked) if _key_order(r[2]) > _key_order(after)), len(ranked))
            return ranked[start:start + count], len(ranked)
        out: list[tuple[dict[str, Any], bool, WorklistKey]] = []
        total = 0
        for rank, p in enumerate(rules.PRIORITIES):
            if priority and p != priority:
                continue
            query = {**flt, "sp_priority": p}
            n = coll.count_documents(query)
            if after is not None:  # the keyset: this priority's rows after the key, none of one before it
                total += n
                if rank < after[0] or len(out) >= count:
                    continue
                found = query if rank > after[0] else {"$and": [query, _after_filter(after)]}
                out.extend(row(doc, rank) for doc in coll.find(found, fields).sort(order).limit(count - len(out)))
                continue
            lo, hi = max(offset - total, 0), min(offset + count - total, n)
            total += n
            if lo >= hi:
                continue
            out.extend(row(doc, rank) for doc in coll.find(query, fields).sort(order).skip(lo).limit(hi - lo))
        return out, total

    @staticmethod
    def scope_filter(principal: Any, open_only: bool = False) -> dict[str, Any]:
        """The stored Tasks' filter of what ``principal`` may see in the worklist: everything for
        admin and health-dept, the hub's tag for doctors, the requester for clinic staff (with
        ``open_only``, the open-consult tags of the same); 403 otherwise."""
        roles = getattr(principal, "roles", frozenset())
        mine = f"Organization/{principal.facility}" if getattr(principal, "facility", None) else None
        if roles & {"admin", "health-dept"}:
            return {"sp__tag": f"{rules.OPEN_TAG}|open"} if open_only else {}
        if "doctor" in roles and mine:
            return {"sp__tag": f"{rules.OPEN_AT_HUB_TAG if open_only else rules.HUB_TAG}|{mine}"}
        if "clinic" in roles and mine:
            return {"sp__tag": f"{rules.OPEN_FROM_TAG}|{mine}"} if open_only else {"sp_requester": mine}
        raise ConsultError("the worklist is for the hub's doctors and the clinics' staff", status=403,
                           code="forbidden")
