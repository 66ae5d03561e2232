"""Tags for consults stored before they existed: run once by the worker at start.

Tasks and Appointments stored before the hub, open-consult and requesting-clinic tags existed
(``domain.consults.HUB_TAG``, ``OPEN_TAG``, ``REQUESTER_TAG``) are out of every doctor's and
clinic's scope: a Task got its tags at its next step only (until then no doctor of its hub saw it,
and the default worklist did not list it), an Appointment never (only admins could read it).
:func:`run_once` gives each its tags as a new version:

- a Task by a system step ``$retag`` (:meth:`Consults.retag`): the next link of its chain, so it
  races with a doctor's step as any two steps do (exactly one wins; the other decides again);
- an Appointment by :func:`domain.scheduling.retag_appointment`: its next version, claimed by its
  history insert as a slot link's writer claims its own;
- a ServiceRequest stored without its hub tag (no doctor of the hub could read it), and a
  Communication of the consult's thread (``$request-info``, ``$provide-info``: one with a sender
  and ``basedOn`` its ServiceRequest) stored without its hub tag or its requesting-clinic tag
  (``REQUESTER_TAG``: a clinic finds its thread by it, and reads by it an answer its Practitioner
  sent) by :func:`retag_by_claim`: its next version with the missing tags, claimed by its history
  insert. A ServiceRequest's status step (``Consults._write_sr_status``) claims its versions the
  same way and decides again when it loses, so of a step and this retag racing for one version
  exactly one wins and the other puts its change on the next (this one skips when the winner's
  version is tagged already). A Communication is never changed after it is made, so only another
  run could race this one. The hub and the requesting clinic are the consult's chain's (link 1's
  facts), else the ServiceRequest's first ``performer`` Organization and its ``requester``.
  Reminder Communications (no sender; ``domain.reminders``) are not consult thread messages and
  are left as they are.

**Single writer by construction**: run once by ``sen_shared.runs.run_once`` under :data:`NAME`
(a chain of run links in ``backfill_runs``: the worker whose insert of the ``running`` link wins
runs it, the others skip; a ``done`` link ends it for good, one that ``failed`` on some document
is run again at the next start; a run whose worker died is taken over after ``runs.STALE``).
Even two runs at once (one taken over while the first still went on) would only race claim
against claim: every write above is an insert under a unique key, and both kinds are idempotent
(a tagged one is left as it is).
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Iterable
from typing import Any

from pymongo.database import Database
from sen_shared import runs
from sen_shared.claims import latest
from sen_shared.fhir.body import unpack
from sen_shared.fhir.outcome import FhirError
from sen_shared.fhir.store import Store

from .domain import consults as rules
from .domain import scheduling
from .domain.consults import ref_id, ref_of
from .workflow import STEPS, system_actor

log = logging.getLogger("sen.teleconsult.backfill")

# a new backfill gets a new name: -2 also tags ServiceRequests and Communications with their hub, -3
# Communications with their requesting clinic too, so deployments that finished an earlier one run it
# again (what an earlier one tagged it leaves as it is)
NAME = "party-tags-3"
RETAG_ATTEMPTS = 12  # a retag decides again after a lost version claim
RETAG_PAUSE = 0.01  # seconds, times the attempt, while the winner's current write lands
INDEXES = runs.INDEXES


def _tags(doc: dict[str, Any]) -> set[str]:
    return {str(v) for v in doc.get("sp__tag") or () if "|" in str(v)}


def _values(doc: dict[str, Any], field: str) -> set[str]:
    v = doc.get(field)
    return {str(x) for x in v} if isinstance(v, list) else ({str(v)} if v is not None else set())


def untagged_tasks(db: Database) -> list[str]:
    """Tasks without their hub tag, or open without the open-consult tags (one read of the ids)."""
    out = []
    for doc in list(db["Task"].find({}, {"_id": 1, "sp__tag": 1, "sp_status": 1, "del": 1})):
        if doc.get("del"):
            continue
        tags = _tags(doc)
        hub = any(t.startswith(f"{rules.HUB_TAG}|") for t in tags)
        is_open = bool(_values(doc, "sp_status") & set(rules.OPEN_STATES))
        if not hub or (is_open and f"{rules.OPEN_TAG}|open" not in tags):
            out.append(doc["_id"])
    return out


def untagged_appointments(db: Database) -> list[str]:
    """Appointments without their hub tag."""
    return [doc["_id"] for doc in list(db["Appointment"].find({}, {"_id": 1, "sp__tag": 1, "del": 1}))
            if not doc.get("del") and not any(t.startswith(f"{rules.HUB_TAG}|") for t in _tags(doc))]


def _hub_tagged(doc: dict[str, Any]) -> bool:
    return any(t.startswith(f"{rules.HUB_TAG}|") for t in _tags(doc))


def untagged_service_requests(db: Database) -> list[str]:
    """ServiceRequests without their hub tag (one read of the ids)."""
    return [doc["_id"] for doc in list(db["ServiceRequest"].find({}, {"_id": 1, "sp__tag": 1, "del": 1}))
            if not doc.get("del") and not _hub_tagged(doc)]


def _requester_tagged(doc: dict[str, Any]) -> bool:
    return any(t.startswith(f"{rules.REQUESTER_TAG}|") for t in _tags(doc))


def untagged_communications(db: Database) -> list[tuple[str, str]]:
    """``(id, ServiceRequest/<id>)`` of the consult thread's Communications without their hub tag or
    their requesting-clinic tag."""
    out = []
    for doc in list(db["Communication"].find({}, {"_id": 1, "sp__tag": 1, "del": 1, "sp_sender": 1,
                                                   "sp_based-on": 1})):
        based_on = sorted(v for v in _values(doc, "sp_based-on") if v.startswith("ServiceRequest/"))
        if not doc.get("del") and _values(doc, "sp_sender") and based_on \
                and not (_hub_tagged(doc) and _requester_tagged(doc)):
            out.append((doc["_id"], based_on[0]))
    return out


def consult_parties(db: Database, service_requests: Iterable[str]) -> dict[str, dict[str, str]]:
    """``ServiceRequest/<id>`` -> its consult's ``hub`` and ``requester`` (the requesting clinic): link
    1's facts (what the steps authorize by), else the ServiceRequest's first ``performer``
    Organization and its ``requester`` (its submission's)."""
    wanted = set(service_requests)
    parties: dict[str, dict[str, str]] = {}
    if not wanted:
        return parties
    for link in list(db[STEPS].find({"n": 1}, {"facts": 1})):
        facts = link.get("facts") or {}
        if facts.get("serviceRequest") in wanted and facts.get("hub"):
            parties[facts["serviceRequest"]] = {k: facts[k] for k in ("hub", "requester") if facts.get(k)}
    for sr_ref in wanted - set(parties):
        doc = unpack(db["ServiceRequest"].find_one({"_id": ref_id(sr_ref)}, {"res": 1}))
        res = (doc or {}).get("res")
        if isinstance(res, dict):
            hub = next((r for r in (ref_of(p) for p in res.get("performer") or [])
                        if r and r.startswith("Organization/")), None)
            requester = ref_of(res.get("requester"))
            found = {"hub": hub, "requester": requester if requester and requester.startswith("Organization/")
                     else None}
            if any(found.values()):
                parties[sr_ref] = {k: v for k, v in found.items() if v}
    return parties


def retag_by_claim(consults: Any, rtype: str, rid: str, hub: str | None, requester: str | None = None,
                   attempts: int = RETAG_ATTEMPTS) -> bool:
    """Give a consult resource stored without its hub tag (or, given ``requester``, without its
    requesting-clinic tag) the missing tags, as its next version claimed by its history insert
    (``Store.apply``); a tag it has is kept as it is. True when it wrote one, False when it found
    nothing to add (or it is gone). A lost claim (a status step took that version) is decided again
    from the current document once the winner's write has landed: tagged already, skip; else tag
    the winner's version. Raises when the winner's write never lands in time (the run fails; the
    next start runs it again)."""
    store: Store = consults.store()
    coll = store.current(rtype)
    lost_at: int | None = None
    for attempt in range(attempts):
        head = unpack(coll.find_one({"_id": rid}, {"outbox": 0}))
        if head is None or head.get("del") or not isinstance(head.get("res"), dict):
            return False
        resource = copy.deepcopy(head["res"])
        if hub and rules.hub_of(resource) is None:
            rules.tag_hub(resource, hub)
        if requester and rules.requester_of(resource) is None:
            rules.tag_requester(resource, requester)
        if (resource.get("meta") or {}).get("tag") == (head["res"].get("meta") or {}).get("tag"):
            return False  # tagged (by a step's version, or an earlier run), or nothing known to tag it with
        if int(head["v"]) == lost_at:  # the winner's current write has not landed yet
            time.sleep(RETAG_PAUSE * (attempt + 1))
            continue
        actor = system_actor()
        rules.stamp_change(resource, actor.ref, actor.display)
        try:
            store.apply(store.prepare_update(resource, rid, head))
        except FhirError as err:
            if err.status != 409:
                raise
            lost_at = int(head["v"])
            continue
        subject = ref_of(resource.get("subject"))
        consults._audit(actor, "update", rtype, rid, patient=subject, status=200, operation="$retag",
                        vid=str(int(head["v"]) + 1))
        return True
    raise RuntimeError(f"{rtype}/{rid} kept changing: not retagged")


def backfill(consults: Any) -> dict[str, int]:
    """Tag every untagged Task, Appointment, ServiceRequest and Communication of a consult; how
    many got a new version."""
    db = consults.db
    counts = {"tasks": 0, "appointments": 0, "service_requests": 0, "communications": 0, "no_hub": 0,
              "no_requester": 0, "failed": 0}
    for task_id in untagged_tasks(db):
        try:
            counts["tasks"] += consults.retag(task_id)
        except Exception:  # noqa: BLE001 - one bad old Task must not stop the others; logged
            counts["failed"] += 1
            log.exception("task not retagged", extra={"task": task_id})
    for appt_id in untagged_appointments(db):
        try:
            counts["appointments"] += scheduling.retag_appointment(db, appt_id)
        except Exception:  # noqa: BLE001
            counts["failed"] += 1
            log.exception("appointment not retagged", extra={"appointment": appt_id})
    service_requests = untagged_service_requests(db)
    communications = untagged_communications(db)
    parties = consult_parties(db, [f"ServiceRequest/{i}" for i in service_requests]
                              + [sr for _, sr in communications])
    # a ServiceRequest needs its hub tag only (clinics reach it by its requester field)
    todo = [("ServiceRequest", i, f"ServiceRequest/{i}", "service_requests", False) for i in service_requests]
    todo += [("Communication", i, sr, "communications", True) for i, sr in communications]
    for rtype, rid, sr_ref, key, with_requester in todo:
        known = parties.get(sr_ref) or {}
        hub, requester = known.get("hub"), known.get("requester") if with_requester else None
        if hub is None:  # no chain and no performer: no hub to tag it with (admins still read it)
            counts["no_hub"] += 1
            log.warning("consult resource without a known hub", extra={"resource": f"{rtype}/{rid}"})
        if with_requester and requester is None:  # a clinic reads it by its sender/recipient only
            counts["no_requester"] += 1
            log.warning("consult resource without a known requester", extra={"resource": f"{rtype}/{rid}"})
        if hub is None and requester is None:
            continue
        try:
            counts[key] += retag_by_claim(consults, rtype, rid, hub, requester)
        except Exception:  # noqa: BLE001
            counts["failed"] += 1
            log.exception("consult resource not retagged", extra={"resource": f"{rtype}/{rid}"})
    consults.fhir.auditor.flush()
    return counts


def run_once(consults: Any) -> dict[str, int] | None:
    """Run the backfill unless it is done or another worker is at it (see the module's note);
    its counts, or None when this worker did not run it."""
    counts = runs.run_once(consults.db, NAME, lambda: backfill(consults))
    if counts is not None:
        log.info("backfill of party tags", extra=counts)
    return counts


# ------------------------------------------------------ visits of consults closed before their end

# consults cancelled, rejected or completed before a consult's closing ended its visit
# (``Consults.end_visits``) kept a booked visit for ever: its slot busy, its reminders due
CLOSE_NAME = "closed-consult-visits-1"


OLD_CLOSED = ("cancelled", "rejected")  # an old $complete marked its visit fulfilled: not to be undone now


def closed_tasks(db: Database) -> list[str]:
    """The ids of the cancelled and rejected Tasks (one equality query per state)."""
    return [d["_id"] for state in OLD_CLOSED for d in db["Task"].find({"sp_status": state}, {"_id": 1})]


def end_old_visits(consults: Any) -> dict[str, int]:
    """End the visits of consults cancelled or rejected before their closing ended them: for each
    such Task whose consult's visit chain has no closing link, :meth:`Consults.end_visits` of its
    closing step (idempotent; a visit already ended is left as it is). Completed consults are left
    out: the old ``$complete`` marked its visit fulfilled, and a visit booked after it (a follow-up
    the old rules let through) is not this run's to cancel. How many consults were closed and
    visits ended."""
    db = consults.db
    counts = {"consults": 0, "visits": 0, "failed": 0}
    for task_id in closed_tasks(db):
        try:
            link = next((x for x in db[STEPS].find({"k": task_id}).sort("n", -1)
                         if x.get("op") in ("$cancel", "$reject") and x.get("state") in OLD_CLOSED), None)
            if link is None:
                continue
            last = latest(db[scheduling.CONSULT_VISITS], ref_id(link["facts"]["serviceRequest"]))
            if last is not None and last.get("cl"):
                continue  # closed by its step (or by an earlier run)
            ended = consults.end_visits(link)
        except Exception:  # noqa: BLE001 - one bad old consult must not stop the others; logged
            counts["failed"] += 1
            log.exception("visit of a closed consult not ended", extra={"task": task_id})
            continue
        counts["consults"] += 1
        counts["visits"] += sum(1 for how in ended.values() if how in ("cancelled", "fulfilled"))
    return counts


def run_close_once(consults: Any) -> dict[str, int] | None:
    """:func:`end_old_visits` once (its own run chain, as :func:`run_once`); its counts, or None
    when this worker did not run it."""
    counts = runs.run_once(consults.db, CLOSE_NAME, lambda: end_old_visits(consults))
    if counts is not None:
        log.info("visits of closed consults ended", extra=counts)
    return counts
