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

**At least once, a copy recognisable.** Each attempt is recorded before anything is sent: its claim
(with the message's ``Message-ID``) and a version of the Communication saying it is being sent. A
worker that dies after the SMTP server accepted the message but before it recorded the outcome
leaves the attempt without one; after ``stale_after`` the next worker sends it again. Both copies
carry the same ``Message-ID``, ``<lead-alert.<task id>@<SEN_NOTIFY_DOMAIN>>``, derived from the
breach (one per Task), so a mail system or the lead's client recognises the second as a copy, and
the Communication shows both attempts.

**A hub without a lead** (no entry in ``SEN_ON_DUTY_LEADS`` and no ``"*"``): its breach is queued
all the same (``lead`` empty); the job records the Communication ``not-done`` saying no lead is
configured for the hub, and logs a warning naming the hub. The Task's breach flag is set as for
any breach.

**Breaches recorded before this message existed** (or whose queueing a crash lost) are found by the
SLA sweep (``Consults.queue_missed_alerts``): a breach of the last ``SEN_LEAD_ALERT_LOOKBACK_HOURS``
without a ``lead_alerts`` document is queued then, a consult closed since as already closed
(nothing sent).
"""

from __future__ import annotations

import logging
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
    Notifier,
    ReminderConfig,
    address_of,
    claim_attempt,
    record_attempt,
    send_attempt,
)
from .reminders import message_id as rfc5322_id

log = logging.getLogger("sen.teleconsult.lead_alerts")

ALERTS = "lead_alerts"
ALERT_ATTEMPTS = "lead_alert_attempts"

PRIORITY_VI = {"routine": "Thường quy", "urgent": "Khẩn", "asap": "Càng sớm càng tốt", "stat": "Cấp cứu"}
PRIORITY_EN = {"routine": "routine", "urgent": "urgent", "asap": "as soon as possible", "stat": "emergency (stat)"}


def queue_alert(db: Database, *, task: str, lead: str, email: str | None, priority: str, due: str,
                requester: str, hub: str, now: datetime, closed: bool = False) -> bool:
    """Queue the lead's message about the breach of ``task`` (``Task/<id>``); False when it is queued
    already (the breach was recorded before, by this sweep or another). ``lead`` empty: the hub has
    none configured (recorded so, :func:`send_due`). ``closed``: the consult was closed before its
    breach was queued (a breach found late): recorded, nothing to send."""
    task_id = task.split("/", 1)[-1]
    try:
        db[ALERTS].insert_one({"_id": task_id, "task": task, "lead": lead, "email": email or "",
                               "priority": priority, "due": due, "requester": requester, "hub": hub,
                               "at": now, "open": not closed, **({"closed": True} if closed else {})})
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
                          f"hạn {when}", body, message_id(alert, cfg))


def message_id(alert: Mapping[str, Any], cfg: ReminderConfig) -> str:
    """The message's RFC 5322 ``Message-ID``, derived from the breach (one per Task): every attempt at
    it, by any worker, sends the same one."""
    return rfc5322_id("lead-alert", str(alert["_id"]), cfg)


def _record(db: Database, alert: Mapping[str, Any], status: str, note: str, when: datetime,
            mid: str = "", reason: str = "") -> None:
    new: dict[str, Any] = {
        "resourceType": "Communication",
        "about": [{"reference": str(alert["task"])}],
        "category": [{"text": "Báo trực lãnh đạo: hội chẩn quá hạn (on-duty lead alert: consult past due)"}],
        "medium": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationMode",
                                "code": "EMAILWRIT"}]}],
        "payload": [{"contentString": "Hội chẩn quá hạn, chuyển trực lãnh đạo (consult past due, escalated)"}]}
    if alert.get("lead"):
        new["recipient"] = [{"reference": str(alert["lead"])}]
    if mid:  # the e-mail's Message-ID: a copy found in a mailbox is matched to this record
        new["identifier"] = [{"system": "urn:ietf:rfc:5322", "value": mid}]
    if reason:
        new["statusReason"] = {"text": reason}
    record_attempt(db, f"lead-{alert['_id']}"[:64], new, status, note, when)


def _no_lead(db: Database, alert: Mapping[str, Any], n: int, now: datetime) -> None:
    """A breach of a hub without an on-duty lead (none in ``SEN_ON_DUTY_LEADS``, no ``"*"``): said on
    its Communication (``not-done``) and in the log, by the claimant of its one attempt."""
    hub = str(alert.get("hub") or "?")
    log.warning("no on-duty lead configured for hub %s (SEN_ON_DUTY_LEADS): the breach of %s is told to nobody",
                hub, alert["task"], extra={"hub": hub, "task": alert["task"]})
    why = (f"Không gửi: cơ sở {hub.split('/', 1)[-1]} chưa cấu hình trực lãnh đạo (SEN_ON_DUTY_LEADS) / "
           f"not sent: no on-duty lead is configured for {hub}")
    db[ALERT_ATTEMPTS].update_one({"_id": f"{alert['_id']}#{n}"}, {"$set": {"ok": True, "skipped": "no-lead"}})
    _record(db, alert, "not-done", why, now, reason=why)
    _close(db, alert["_id"])


def _close(db: Database, alert_id: str) -> None:
    # the claimant of the last attempt (one at a time), or a later sweep writing the same value
    db[ALERTS].update_one({"_id": alert_id}, {"$set": {"open": False}})


def send_due(db: Database, notifier: Notifier, cfg: ReminderConfig, portal_url: str,
             now: datetime | None = None) -> int:
    """Send the queued alerts whose next attempt is due; how many were sent now."""
    now = now or datetime.now(UTC)
    sent = 0
    for alert in list(db[ALERTS].find({"open": True})):
        mail = message(alert, cfg, portal_url) if alert.get("lead") else None
        mid = mail.message_id if mail else ""
        n = claim_attempt(db[ALERT_ATTEMPTS], "alert", alert["_id"], cfg, now, message_id=mid)
        if n is None:
            continue
        if n in (SENT, GIVEN_UP):  # its last attempt's claimant stopped before closing it
            _close(db, alert["_id"])
            continue
        if mail is None:
            _no_lead(db, alert, n, now)
            continue
        # recorded before it goes (send_attempt, as the reminders): a worker dying after the server
        # took it leaves this trace (and the claim); the next worker's copy has the same Message-ID
        status = send_attempt(db[ALERT_ATTEMPTS], alert["_id"], n, notifier, mail, cfg, now,
                              lambda status, note, mid, a=alert: _record(db, a, status, note, now, mid))
        if status != "in-progress":  # sent, or given up
            _close(db, alert["_id"])
        sent += 1 if status == "completed" else 0
    return sent


def indexes() -> list[Any]:
    from sen_shared.mongo import Index

    return [Index(ALERTS, (("open", 1),)), Index(ALERT_ATTEMPTS, (("alert", 1),))]


__all__ = ["ALERTS", "ALERT_ATTEMPTS", "message", "message_id", "portal_link", "queue_alert", "send_due"]
