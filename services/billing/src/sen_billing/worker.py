"""The billing worker process: event consumers, the outbox relay and the periodic jobs.

Publishes its own events through the outbox relay: ``billing.payment.received`` (in each
payment), ``billing.invoice.paid`` (in each receipt), ``billing.invoice.issued`` (in each
invoice's issued link) and ``billing.payment.refunded`` (in each refund).
Consumes ``billing.consult-charge``. Loads the price list at start,
and puts the unmatched transfers recorded before the queue existed in it (``payments.backfill_unmatched``),
once for good across every start and replica (``sen_shared.runs.run_once``, :data:`UNMATCHED_BACKFILL`);
then, the same way, notes the credits of invoices overpaid before credits were noted
(``credits.backfill``, :data:`CREDITS_BACKFILL`), for the cashier's list of money to give back;
and announces the refunds made before ``billing.payment.refunded`` existed
(``refund_events.backfill``, :data:`REFUND_EVENTS_BACKFILL`); then gives the shifts recorded before
``shift_days`` their records (:data:`SHIFT_DAYS_BACKFILL`) and the transfers recorded before payments
carried their day key theirs (``shifts.backfill_transfer_days``, :data:`TRANSFER_DAYS_BACKFILL`).

Periodic jobs (each in its own thread, every ``interval`` seconds, until SIGTERM):
- ``settlements``: a settlement whose winner stopped between its claim and the receipt is
  finished (``receipts.repair_settlements``), and one whose receipt is there is marked done (the
  settling request leaves that to this job: one round trip less). Every step of it is an
  idempotent claim, so any number of worker replicas run it at once (tested with two workers and
  a slow winner).
- ``shift-missed``: every 5 minutes, the payments and refunds of today and yesterday are checked
  against the closed shifts that count them, as each record checks after its insert
  (``shifts.repair_missed``): one whose request stopped between its insert and its check, timed in a
  shift already closed, is recorded after that close instead of in no shift (claims, any replicas).

Run as `python -m sen_billing.worker`.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from sen_shared import periodic, runs

from .config import BillingSettings, settings_from_env

log = logging.getLogger("sen.billing.worker")

CONSULT_CHARGE = "billing.consult-charge"


def consult_charge(event: dict[str, Any], db: Any) -> None:
    """Queue billing.consult-charge: ``teleconsult.consult.requested`` remembers the consult's
    specialty; ``teleconsult.consult.completed`` makes its ChargeItem and issued Invoice, exactly
    once however often it arrives (domain/invoices.py)."""
    from sen_shared.bus.catalog import event_type

    from .domain import invoices

    kind = str(event.get("type", ""))
    if kind == event_type(invoices.REQUESTED_EVENT):
        invoices.remember_request(db, event)
    elif kind == event_type(invoices.CONSULT_EVENT):
        settings = _settings()
        invoices.charge_consult(db, event, level_of=settings.level_of, base_salary=settings.base_salary)


@functools.cache
def _settings() -> BillingSettings:
    return settings_from_env()


def load_price_list(settings: BillingSettings) -> int:
    """The price list file's missing entries, created at start (idempotent: an admin's edits are kept)."""
    from sen_shared.mongo import database

    from .domain import pricing

    return pricing.load(database(settings.mongo_url, settings.db_name), settings.price_list_file or None)


HANDLERS: dict[str, Any] = {CONSULT_CHARGE: consult_charge}
# billing.payment.received (in each payment), billing.invoice.paid (in each receipt),
# billing.invoice.issued (in each invoice's "issued" link), billing.payment.refunded (in each refund,
# and in refund_events for the refunds made before the event: refund_events.backfill)
OUTBOX_COLLECTIONS: list[str] = ["payments", "receipts", "invoice_states", "refunds", "refund_events"]


UNMATCHED_BACKFILL = "unmatched-queue-1"  # its run chain in backfill_runs; a new backfill gets a new name


def backfill_unmatched(settings: BillingSettings) -> dict[str, int]:
    """The unmatched transfers recorded before the queue, put in their facility's queue: the job
    itself (idempotent, and safe to run twice at once: each entry is a claim, made once)."""
    from sen_shared.mongo import database

    from .domain.payments import backfill_unmatched as backfill

    return backfill(database(settings.mongo_url, settings.db_name), settings.account_facilities)


def backfill_unmatched_once(settings: BillingSettings, stale: timedelta = runs.STALE) -> dict[str, int] | None:
    """:func:`backfill_unmatched` unless it ran to its end before or another worker is at it: the
    worker whose insert of the run's ``running`` link wins runs it (a claim; ``sen_shared.runs``),
    one older than ``stale`` (its worker died) is taken over. Its counts, or None when not run here."""
    from sen_shared.mongo import database

    return runs.run_once(database(settings.mongo_url, settings.db_name), UNMATCHED_BACKFILL,
                         lambda: backfill_unmatched(settings), stale=stale)


CREDITS_BACKFILL = "credits-1"  # the overpaid invoices settled before their credits were noted


def backfill_credits_once(settings: BillingSettings, stale: timedelta = runs.STALE) -> dict[str, int] | None:
    """``credits.backfill`` (the credits of invoices settled before they were noted, for the list of
    money to give back), once for good as :func:`backfill_unmatched_once` runs its job."""
    from sen_shared.mongo import database

    from .domain import credits

    db = database(settings.mongo_url, settings.db_name)
    return runs.run_once(db, CREDITS_BACKFILL, lambda: credits.backfill(db), stale=stale)


REFUND_EVENTS_BACKFILL = "refund-events-1"  # the refunds made before billing.payment.refunded existed


def backfill_refund_events_once(settings: BillingSettings, stale: timedelta = runs.STALE) -> dict[str, int] | None:
    """``refund_events.backfill`` (each refund made before its event existed, announced: the
    reporting's takings net of refunds), once for good as :func:`backfill_unmatched_once` runs its job."""
    from sen_shared.mongo import database

    from .domain import refund_events

    db = database(settings.mongo_url, settings.db_name)
    return runs.run_once(db, REFUND_EVENTS_BACKFILL, lambda: refund_events.backfill(db), stale=stale)


SHIFT_DAYS_BACKFILL = "shift-days-1"  # the shifts closed or open before shifts.open_during's records


def backfill_shift_days_once(settings: BillingSettings, stale: timedelta = runs.STALE) -> dict[str, int] | None:
    """``shifts.backfill_days`` (the day records of the shifts closed before they existed, and the
    open set's entries of those open), once for good as :func:`backfill_unmatched_once` runs its job."""
    from sen_shared.mongo import database

    from .domain import shifts

    db = database(settings.mongo_url, settings.db_name)
    return runs.run_once(db, SHIFT_DAYS_BACKFILL, lambda: shifts.backfill_days(db), stale=stale)


# the transfers recorded before payments carried their day key; "-2": and those to an unmatched queue recorded
# before they carried it (a shift counts them since review 12): a stack that ran "-1" runs it again, inserts only
TRANSFER_DAYS_BACKFILL = "transfer-days-2"


def backfill_transfer_days_once(settings: BillingSettings, stale: timedelta = runs.STALE) -> dict[str, int] | None:
    """``shifts.backfill_transfer_days`` (the day records of the transfers recorded before payments
    carried ``fd``, for a shift's expected transfers), once for good as :func:`backfill_unmatched_once`
    runs its job."""
    from sen_shared.mongo import database

    from .domain import shifts

    db = database(settings.mongo_url, settings.db_name)
    return runs.run_once(db, TRANSFER_DAYS_BACKFILL, lambda: {"transfers": shifts.backfill_transfer_days(db)},
                         stale=stale)


def _backfill(settings: BillingSettings) -> None:
    for what, job in (("unmatched queue", backfill_unmatched_once), ("credits", backfill_credits_once),
                      ("refund events", backfill_refund_events_once), ("shift days", backfill_shift_days_once),
                      ("transfer days", backfill_transfer_days_once)):
        try:
            counts = job(settings)
        except Exception:  # noqa: BLE001 - the database may be starting; its run is failed, the next start does it
            log.exception(f"{what} not backfilled")
            continue
        if counts is not None:
            log.info(f"{what} backfilled", extra=counts)


def settlements_job(settings: BillingSettings) -> Callable[[], int]:
    from sen_shared.mongo import database

    from .domain.receipts import repair_settlements

    return lambda: repair_settlements(database(settings.mongo_url, settings.db_name))


def shift_missed_job(settings: BillingSettings) -> Callable[[], int]:
    from sen_shared.mongo import database

    from .domain.shifts import repair_missed

    return lambda: repair_missed(database(settings.mongo_url, settings.db_name))


# name -> (interval in seconds, job factory)
PERIODIC: periodic.Table[BillingSettings] = {
    "settlements": (lambda s: 30.0, settlements_job),
    "shift-missed": (lambda s: 300.0, shift_missed_job),
}


def beside(settings: BillingSettings, stop: threading.Event) -> list[threading.Thread]:
    """The price list loaded, then the periodic jobs and the backfills started beside the worker."""
    from sen_shared.entrypoints import start_thread

    try:
        log.info("price list loaded", extra={"entries_created": load_price_list(settings)})
    except Exception:  # noqa: BLE001 - the database may be starting; the next start loads it
        log.exception("price list not loaded")
    threads = periodic.start_table(PERIODIC, settings, stop)
    # beside the relay and the consumers, so a long history of payments delays neither
    threads.append(start_thread("backfill", _backfill, settings))
    return threads


def worker_settings() -> BillingSettings:
    """The settings, installed as this process's runtime (``sen_shared.runtime``): outside a request, the
    repair job and an event's settlement number receipts with the prefixes they configure
    (``receipts.configured_prefixes``), as a web app's requests do with its own."""
    from sen_shared.runtime import Runtime, install

    settings = settings_from_env()
    install(Runtime(settings=settings))
    return settings


def main() -> int:
    from sen_shared.entrypoints import run_worker_process

    return run_worker_process(worker_settings, HANDLERS, OUTBOX_COLLECTIONS, beside=beside)


if __name__ == "__main__":
    raise SystemExit(main())
