"""Tags for consults stored before they existed: run once by the worker at start.

Tasks and Appointments stored before the hub, open-consult and requesting-clinic tags existed
(``domain.consults.HUB_TAG``, ``OPEN_TAG``, ``REQUESTER_TAG``) are out of every doctor's and
clinic's scope: a Task got its tags at its next step only (until then no doctor of its hub saw it,
and the default worklist did not list it), an Appointment never (only admins could read it).
:func:`run_once` gives each its tags as a new version:

- a Task by a system step ``$retag`` (:meth:`Consults.retag`): the next link of its chain, so it
  races with a doctor's step as any two steps do (exactly one wins; the other decides again);
- an Appointment by :func:`domain.scheduling.retag_appointment`: its next version, claimed by its
  history insert as a slot link's writer claims its own.

**Single writer by construction**: run once by ``sen_shared.runs.run_once`` under :data:`NAME`
(a chain of run links in ``backfill_runs``: the worker whose insert of the ``running`` link wins
runs it, the others skip; a ``done`` link ends it for good, one that ``failed`` on some document
is run again at the next start; a run whose worker died is taken over after ``runs.STALE``).
Even two runs at once (one taken over while the first still went on) would only race claim
against claim: every write above is an insert under a unique key, and both kinds are idempotent
(a tagged one is left as it is).
"""

from __future__ import annotations

import logging
from typing import Any

from pymongo.database import Database
from sen_shared import runs

from .domain import consults as rules
from .domain import scheduling

log = logging.getLogger("sen.teleconsult.backfill")

NAME = "party-tags-1"  # a new backfill gets a new name
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


def backfill(consults: Any) -> dict[str, int]:
    """Tag every untagged Task and Appointment; how many got a new version."""
    db = consults.db
    counts = {"tasks": 0, "appointments": 0, "failed": 0}
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
    consults.fhir.auditor.flush()
    return counts


def run_once(consults: Any) -> dict[str, int] | None:
    """Run the backfill unless it is done or another worker is at it (see the module's note);
    its counts, or None when this worker did not run it."""
    counts = runs.run_once(consults.db, NAME, lambda: backfill(consults))
    if counts is not None:
        log.info("backfill of party tags", extra=counts)
    return counts
