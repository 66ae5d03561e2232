"""The ehr worker process: event consumers and the outbox relay.

Consumes:
- ``teleconsult.consult.completed`` (queue ``ehr.consult-record``): the consult record, an Encounter
  (class VR) and a Composition, stored exactly once (``domain.consult_record``);
- ``teleconsult.referral.granted`` (queue ``ehr.referral-grants``): the referral grant that lets the
  consulting doctor read the patient's record (``domain.grants``).

The relay publishes the ``ehr.*`` events that FHIR writes leave in each resource collection's outbox
(the AuditEvents the server records carry none; one written through the API does, like any write).
Run as ``python -m sen_ehr.worker``.
"""

from __future__ import annotations

from sen_shared.bus.consumer import Handler
from sen_shared.entrypoints import run_worker_process

from .config import settings_from_env
from .domain import RESOURCE_TYPES, consult_record, grants


def _consult(event: dict, db) -> None:  # type: ignore[no-untyped-def]
    consult_record.handle_consult_completed(event, db)


def _grant(event: dict, db) -> None:  # type: ignore[no-untyped-def]
    grants.handle_referral_granted(event, db)


HANDLERS: dict[str, Handler] = {consult_record.PURPOSE: _consult, grants.PURPOSE: _grant}
OUTBOX_COLLECTIONS: list[str] = list(RESOURCE_TYPES)


def main() -> int:
    return run_worker_process(settings_from_env, HANDLERS, OUTBOX_COLLECTIONS)


if __name__ == "__main__":
    raise SystemExit(main())
