"""The worker's scheduling jobs (``worker.PERIODIC``): release expired holds, send due reminders and
the on-duty leads' messages, finish reschedules a crash interrupted."""

from __future__ import annotations

from collections.abc import Callable

from sen_shared.mongo import database

from .domain import lead_alerts, reminders, scheduling
from .scheduling_settings import SchedulingSettings, notifier, reminder_config, scheduling_config


def holds_job(settings: SchedulingSettings) -> Callable[[], int]:
    """Expired holds nobody took over get a ``free`` link (their Appointment: cancelled)."""
    cfg = scheduling_config(settings)

    def run() -> int:
        return scheduling.sweep_expired(database(settings.mongo_url, settings.db_name), cfg=cfg)

    return run


def reminders_job(settings: SchedulingSettings) -> Callable[[], int]:
    """Due reminders sent through the configured sender, failures retried with back-off."""
    sender, cfg = notifier(settings), reminder_config(settings)

    def run() -> int:
        return reminders.send_due(database(settings.mongo_url, settings.db_name), sender, cfg)

    return run


def lead_alerts_job(settings: SchedulingSettings) -> Callable[[], int]:
    """The on-duty leads' messages about breached consults, through the reminders' sender, address
    book and retries; the link to the Task on the portal (``SEN_PORTAL_URL``)."""
    sender, cfg = notifier(settings), reminder_config(settings)

    def run() -> int:
        return lead_alerts.send_due(database(settings.mongo_url, settings.db_name), sender, cfg, settings.portal_url)

    return run


def reschedules_job(settings: SchedulingSettings) -> Callable[[], int]:
    """Reschedules a crash stopped half-way are finished (the old appointment released)."""
    cfg = scheduling_config(settings)

    def run() -> int:
        return scheduling.repair_reschedules(database(settings.mongo_url, settings.db_name), cfg=cfg)

    return run
