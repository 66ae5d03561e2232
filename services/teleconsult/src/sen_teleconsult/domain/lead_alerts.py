"""The on-duty lead's message about a breached consult, through the reminders' notification port.

A breach (``workflow.Consults._breach``) queues one alert per breached Task: a document inserted in
``lead_alerts`` under the Task's id (the key of the breach itself: a Task breaches once), by every
sweeper that records the breach; the first insert wins, the others' are refused by the unique
``_id``, so two sweepers at once, or a sweeper re-running a breach a crashed worker left half-way,
queue it once. The worker's :func:`send_due` sends what is queued exactly as the visit reminders
are sent (:mod:`.reminders`): each attempt a claim by insert (``lead_alert_attempts``,
``<task>#<n>``), one in flight at a time, a failure retried with a doubling back-off, every
attempt a note and a version of the alert's Communication (``about`` the Task, ``recipient`` the
lead): ``in-progress`` while failing, ``completed`` once sent, ``stopped`` after the last attempt.

The alert document is otherwise immutable; its ``open`` flag is set false once, by the claimant
of the attempt that sent it or gave up (one attempt at a time: a single writer), or, after a crash
between that attempt's outcome and the flag, by a later sweep writing the same value.

The message carries no patient data: the consult's priority, due time (Asia/Ho_Chi_Minh), the
requesting facility and the portal's link to the Task, Vietnamese first with English beside it.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from pymongo.database import Database
from pymongo.errors import DuplicateKeyError

from .availability import TZ
from .reminders import (
    GIVEN_UP,
    SENT,
    Message,
    NotificationError,
    Notifier,
    ReminderConfig,
    address_of,
    attempt_failed,
    claim_attempt,
    record_attempt,
)

ALERTS = "lead_alerts"
ALERT_ATTEMPTS = "lead_alert_attempts"

PRIORITY_VI = {"routine": "Thường quy", "urgent": "Khẩn", "asap": "Càng sớm càng tốt", "stat": "Cấp cứu"}
PRIORITY_EN = {"routine": "routine", "urgent": "urgent", "asap": "as soon as possible", "stat": "emergency (stat)"}


def queue_alert(db: Database, *, task: str, lead: str, email: str | None, priority: str, due: str,
                requester: str, hub: str, now: datetime) -> bool:
    """Queue the lead's message about the breach of ``task`` (``Task/<id>``); False when it is queued
    already (the breach was recorded before, by this sweep or another)."""
    task_id = task.split("/", 1)[-1]
    try:
        db[ALERTS].insert_one({"_id": task_id, "task": task, "lead": lead, "email": email or "",
                               "priority": priority, "due": due, "requester": requester, "hub": hub,
                               "at": now, "open": True})
    except DuplicateKeyError:
        return False
    return True


def portal_link(portal_url: str, task_id: str) -> str:
    """The doctor's page of the Task on the portal (``/tasks/<id>``)."""
    return f"{portal_url.rstrip('/')}/tasks/{task_id}"


def message(alert: Mapping[str, Any], cfg: ReminderConfig, portal_url: str) -> Message:
    due = datetime.fromisoformat(str(alert["due"])).astimezone(TZ)
    when = due.strftime("%H:%M ngày %d/%m/%Y")
    priority = str(alert.get("priority") or "")
    facility = str(alert.get("requester") or "").split("/", 1)[-1] or "?"
    link = portal_link(portal_url, alert["_id"])
    body = (f"Yêu cầu hội chẩn từ xa đã quá hạn xử lý, chuyển trực lãnh đạo.\n"
            f"A teleconsultation request is past its due time and escalated to you, the on-duty lead.\n\n"
            f"Mức ưu tiên / priority: {PRIORITY_VI.get(priority, priority)} ({PRIORITY_EN.get(priority, priority)})\n"
            f"Hạn xử lý / due: {when} (giờ Việt Nam / Vietnam time, {due.isoformat(timespec='minutes')})\n"
            f"Cơ sở yêu cầu / requesting facility: {facility}\n"
            f"Xem yêu cầu / open the request: {link}\n")
    to = str(alert.get("email") or "") or address_of(cfg, str(alert["lead"]))
    return Message((to,), f"[Sen] Hội chẩn quá hạn / consult past due: {PRIORITY_VI.get(priority, priority)}, "
                          f"hạn {when}", body)


def _record(db: Database, alert: Mapping[str, Any], status: str, note: str, when: datetime) -> None:
    new = {"resourceType": "Communication",
           "about": [{"reference": str(alert["task"])}],
           "recipient": [{"reference": str(alert["lead"])}],
           "category": [{"text": "Báo trực lãnh đạo: hội chẩn quá hạn (on-duty lead alert: consult past due)"}],
           "medium": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationMode",
                                   "code": "EMAILWRIT"}]}],
           "payload": [{"contentString": "Hội chẩn quá hạn, chuyển trực lãnh đạo (consult past due, escalated)"}]}
    record_attempt(db, f"lead-{alert['_id']}"[:64], new, status, note, when)


def _close(db: Database, alert_id: str) -> None:
    # the claimant of the last attempt (one at a time), or a later sweep writing the same value
    db[ALERTS].update_one({"_id": alert_id}, {"$set": {"open": False}})


def send_due(db: Database, notifier: Notifier, cfg: ReminderConfig, portal_url: str,
             now: datetime | None = None) -> int:
    """Send the queued alerts whose next attempt is due; how many were sent now."""
    now = now or datetime.now(UTC)
    sent = 0
    for alert in list(db[ALERTS].find({"open": True})):
        n = claim_attempt(db[ALERT_ATTEMPTS], "alert", alert["_id"], cfg, now)
        if n is None:
            continue
        if n in (SENT, GIVEN_UP):  # its last attempt's claimant stopped before closing it
            _close(db, alert["_id"])
            continue
        try:
            notifier.send(message(alert, cfg, portal_url))
        except NotificationError as err:
            final, _, note = attempt_failed(db[ALERT_ATTEMPTS], alert["_id"], n, err, cfg, now)
            _record(db, alert, "stopped" if final else "in-progress", note, now)
            if final:
                _close(db, alert["_id"])
            continue
        db[ALERT_ATTEMPTS].update_one({"_id": f"{alert['_id']}#{n}"}, {"$set": {"ok": True}})  # its claimant
        _record(db, alert, "completed", f"đã gửi (sent), lần {n}", now)
        _close(db, alert["_id"])
        sent += 1
    return sent


def indexes() -> list[Any]:
    from sen_shared.mongo import Index

    return [Index(ALERTS, (("open", 1),)), Index(ALERT_ATTEMPTS, (("alert", 1),))]


__all__ = ["ALERTS", "ALERT_ATTEMPTS", "message", "portal_link", "queue_alert", "send_due"]
