"""The teleconsult worker process: the outbox relay and the periodic sweeps.

Publishes (through the outbox relay) the consult workflow's events, which ride in the
step chain's links (``consult_steps``) and in the breach claims (``sla_breaches``): see
``workflow.py``. Consumes nothing yet.

Periodic jobs (each in its own thread, every ``interval`` seconds, until SIGTERM):
- ``sla``: consults past their due time get one ``teleconsult.consult.sla_breached`` each and
  are escalated to the hub's on-duty lead (``Consults.sweep_breaches``), who is queued a message
  (and so is the lead of a recent breach that has none: ``Consults.queue_missed_alerts``);
- ``lead-alerts``: those messages, sent like the reminders (``domain/lead_alerts.py``).
More jobs (hold expiry, reminders) are added to :data:`PERIODIC`.

Run as ``python -m sen_teleconsult.worker``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from sen_shared import periodic
from sen_shared.bus.consumer import Handler

from . import scheduling_jobs
from .config import TeleconsultSettings, settings_from_env
from .domain import RESOURCE_TYPES
from .domain.scheduling import OUTBOX_COLLECTIONS as SCHEDULING_OUTBOX
from .workflow import OUTBOX_COLLECTIONS as WORKFLOW_OUTBOX

log = logging.getLogger("sen.teleconsult.worker")

HANDLERS: dict[str, Handler] = {}
OUTBOX_COLLECTIONS: list[str] = [*RESOURCE_TYPES, *WORKFLOW_OUTBOX, *SCHEDULING_OUTBOX]


def _consults(settings: TeleconsultSettings) -> Any:
    from sen_shared.fhir.rest import FhirConfig
    from sen_shared.mongo import database

    from .fhir_server import TeleconsultFhirServer
    from .workflow import Consults

    fhir = TeleconsultFhirServer(FhirConfig(RESOURCE_TYPES, service="teleconsult", emit_events=False),
                                 db=lambda: database(settings.mongo_url, settings.db_name))
    return Consults(fhir, settings)


def sla_job(settings: TeleconsultSettings) -> Callable[[], int]:
    consults = _consults(settings)

    def sweep() -> int:
        try:
            found = consults.sweep_breaches()
            consults.queue_missed_alerts()  # breaches whose lead was never queued a message
            return found
        finally:
            consults.fhir.auditor.flush()  # the escalations' AuditEvents are stored before the next round

    return sweep


def _backfill(settings: TeleconsultSettings) -> None:
    from . import backfill

    try:
        backfill.run_once(_consults(settings))
    except Exception:  # noqa: BLE001 - the next start tries again; the worker goes on
        log.exception("backfill failed")
    try:  # the visits of consults closed before a consult's closing ended its visit
        backfill.run_close_once(_consults(settings))
    except Exception:  # noqa: BLE001
        log.exception("ending the visits of closed consults failed")


# name -> (interval in seconds from the settings, job factory)
PERIODIC: periodic.Table[TeleconsultSettings] = {
    "sla": (lambda s: s.sla_sweep_seconds, sla_job),
    "holds": (lambda s: s.scheduling_sweep_seconds, scheduling_jobs.holds_job),
    "reminders": (lambda s: s.scheduling_sweep_seconds, scheduling_jobs.reminders_job),
    "lead-alerts": (lambda s: s.scheduling_sweep_seconds, scheduling_jobs.lead_alerts_job),
    "reschedules": (lambda s: s.scheduling_sweep_seconds, scheduling_jobs.reschedules_job),
}


def beside(settings: TeleconsultSettings, stop: threading.Event) -> list[threading.Thread]:
    """The periodic sweeps and the backfill, started beside the worker."""
    from sen_shared.entrypoints import start_thread

    threads = periodic.start_table(PERIODIC, settings, stop)
    # tags for consults stored before they existed: once, by the one worker that claims the run
    # (backfill.run_once: a chain of run links), beside the relay so a long one delays nothing
    threads.append(start_thread("backfill", _backfill, settings))
    return threads


def gates(settings: TeleconsultSettings) -> dict[str, Any]:
    """A submission's link 1 (its commit point) is made whole before its events go out."""
    from .workflow import STEPS, SubmissionGate

    return {STEPS: SubmissionGate(_consults(settings))}


def main() -> int:
    from sen_shared.entrypoints import run_worker_process

    return run_worker_process(settings_from_env, HANDLERS, OUTBOX_COLLECTIONS, beside=beside, gates=gates)


if __name__ == "__main__":
    raise SystemExit(main())
