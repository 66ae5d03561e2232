"""The ehr worker process: event consumers and the outbox relay.

Consumes:
- ``teleconsult.consult.completed`` (queue ``ehr.consult-record``): the consult record, an Encounter
  (class VR) and a Composition, stored exactly once (``domain.consult_record``);
- ``teleconsult.referral.granted`` (queue ``ehr.referral-grants``): the referral grant that lets the
  consulting doctor read the patient's record (``domain.grants``).

The relay publishes the ``ehr.*`` events that FHIR writes leave in each resource collection's outbox
(AuditEvents carry none: the server records them, and none is written through the API).

At start, once for good across every start and replica (``sen_shared.runs.run_once``,
:data:`PATIENT_DISTRICTS_BACKFILL`): the districts of the records registered before Patient events
named one are announced (``patient_events.backfill``, ``ehr.patient.district_noted``).
Run as ``python -m sen_ehr.worker``.
"""

from __future__ import annotations

import logging
import threading
from datetime import timedelta

from sen_shared import runs
from sen_shared.bus.consumer import Handler

from .config import EhrSettings, settings_from_env
from .domain import RESOURCE_TYPES, consult_record, grants, patient_events

log = logging.getLogger("sen.ehr.worker")


def _consult(event: dict, db) -> None:  # type: ignore[no-untyped-def]
    consult_record.handle_consult_completed(event, db)


def _grant(event: dict, db) -> None:  # type: ignore[no-untyped-def]
    grants.handle_referral_granted(event, db)


HANDLERS: dict[str, Handler] = {consult_record.PURPOSE: _consult, grants.PURPOSE: _grant}
# the FHIR types' history collections, and the backfilled districts' events (patient_events.NOTED)
OUTBOX_COLLECTIONS: list[str] = [*RESOURCE_TYPES, patient_events.NOTED]

PATIENT_DISTRICTS_BACKFILL = "patient-districts-1"  # its run chain in backfill_runs


def backfill_patient_districts_once(settings: EhrSettings, stale: timedelta = runs.STALE) -> dict[str, int] | None:
    """``patient_events.backfill`` (the districts of records counted without one), once for good: the
    worker whose insert of the run's ``running`` link wins runs it; its counts, or None when not run here."""
    from sen_shared.mongo import database

    db = database(settings.mongo_url, settings.db_name)
    return runs.run_once(db, PATIENT_DISTRICTS_BACKFILL, lambda: patient_events.backfill(db), stale=stale)


def _backfill(settings: EhrSettings) -> None:
    try:
        counts = backfill_patient_districts_once(settings)
    except Exception:  # noqa: BLE001 - the database may be starting; its run is failed, the next start does it
        log.exception("patient districts not backfilled")
        return
    if counts is not None:
        log.info("patient districts backfilled", extra=counts)


def beside(settings: EhrSettings, stop: threading.Event) -> list[threading.Thread]:
    """The backfill, beside the relay and the consumers, so a long register delays neither."""
    from sen_shared.entrypoints import start_thread

    return [start_thread("backfill", _backfill, settings)]


def main() -> int:
    from sen_shared.entrypoints import run_worker_process

    return run_worker_process(settings_from_env, HANDLERS, OUTBOX_COLLECTIONS, beside=beside)


if __name__ == "__main__":
    raise SystemExit(main())
