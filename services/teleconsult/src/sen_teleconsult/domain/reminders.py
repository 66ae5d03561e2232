"""Reminders of booked consults, through a notification port.

Booking inserts one document per reminder (``<appointment>/<minutes before>``, due at the start
minus the offset; a reminder already due when the booking is made is skipped, the booking answer
itself being the news) beside the slot's links, in ``slot_links`` marked ``rem``: a direct booking
writes them in the same ordered insert as its slot claim, so a lost claim writes none and a won
one costs one command, not two (a second command was ~0.6 ms of FerretDB and PostgreSQL CPU and
~0.3 ms of the client's). Reminders stored before in ``reminders`` are still read and sent.
The worker's :func:`send_due` sends what is due:

- **each reminder is sent once**: an attempt is a claim by insert (``reminder_attempts``,
  ``<reminder>#<n>``); attempt n+1 may be claimed only after attempt n recorded its failure and
  its back-off has passed (or it vanished mid-way for ``stale_after``: a crashed worker), so
  one attempt is in flight at a time whatever the number of workers;
- an attempt's result is written by its claimant only (the single writer of that document);
- every attempt is recorded on the reminder's Communication (``about`` the Appointment,
  ``basedOn`` its ServiceRequest) before anything is sent ("lần gửi n: đang gửi (attempt n:
  sending)"), then its outcome: ``in-progress`` while sending or failing and retried with
  exponential back-off, ``completed`` once sent, ``stopped`` after the last attempt or when the
  appointment is no longer booked. Written by the attempt's claimant (one at a time, above);
- messages carry the time and the join link, never patient data.

**At least once, a copy recognisable** (:func:`send_attempt`, the on-duty lead's message the same):
a worker that dies after the SMTP server accepted a message but before it recorded the outcome
leaves its attempt without one, and after ``stale_after`` the next worker sends it again. Every
attempt carries the same RFC 5322 ``Message-ID``, derived from the reminder (appointment and
offset: ``<reminder.<appointment id>.<minutes>@<SEN_NOTIFY_DOMAIN>>``, :func:`message_id`), in
the SMTP header, the console sender's line, the attempt's claim and the Communication's
``identifier`` (system ``urn:ietf:rfc:5322``), so a mail system or the reader's client recognises
the second as a copy, and the Communication shows both attempts. A rescheduled visit is a new
Appointment: its reminders have Message-IDs of their own.

Senders (:class:`Notifier`): :class:`ConsoleSender` (a JSON line to a file or the log) and
:class:`SmtpSender` (``smtplib``, optional STARTTLS and login). Addresses come from an address
book (reference → e-mail) with a fallback ``<type>-<id>@<domain>``.
"""

from __future__ import annotations

import json
import logging
import smtplib
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any, Protocol

from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import BulkWriteError
from sen_shared.claims import ClaimTaken, claim, latest, release
from sen_shared.fhir.body import unpack
from sen_shared.fhir.outcome import FhirError
from sen_shared.fhir.store import Store

from .availability import TZ

log = logging.getLogger("sen.teleconsult.reminders")

REMINDERS = "reminders"  # where reminders were kept before they moved beside the slot links: read until empty
REMINDER_MARK = "rem"  # the field that marks a reminder among the slot links (an index serves the worker's read)
ATTEMPTS = "reminder_attempts"


class NotificationError(Exception):
    """A message could not be handed over (retried later)."""


@dataclass(frozen=True)
class Message:
    to: tuple[str, ...]
    subject: str
    body: str
    # RFC 5322 Message-ID, ``<left@right>``; the same on every attempt at the same message, so a mail
    # system or the reader's client recognises a second copy (empty: the SMTP library leaves it out)
    message_id: str = ""


class Notifier(Protocol):
    def send(self, message: Message) -> None: ...


class ConsoleSender:
    """Writes each message as one JSON line to ``path`` (or the log when no path is set)."""

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path else None
        self._lock = threading.Lock()

    def send(self, message: Message) -> None:
        fields = {"to": list(message.to), "subject": message.subject, "body": message.body}
        if message.message_id:
            fields["message_id"] = message.message_id
        line = json.dumps(fields, ensure_ascii=False)
        if self.path is None:
            log.info("reminder", extra={"to": list(message.to), "subject": message.subject})
            return
        try:
            with self._lock, self.path.open("a", encoding="utf-8") as f:
                f.write(line + "\n")
        except OSError as err:
            raise NotificationError(f"cannot write {self.path}: {err.strerror}") from None


class SmtpSender:
    """Sends through an SMTP server (``smtplib``)."""

    def __init__(self, host: str, port: int = 25, *, sender: str = "sen@localhost", username: str = "",
                 password: str = "", starttls: bool = False, timeout: float = 10.0) -> None:
        self.host, self.port, self.sender = host, port, sender
        self.username, self.password, self.starttls, self.timeout = username, password, starttls, timeout

    def send(self, message: Message) -> None:
        mail = EmailMessage()
        mail["From"] = self.sender
        mail["To"] = ", ".join(message.to)
        mail["Subject"] = message.subject
        if message.message_id:
            mail["Message-ID"] = message.message_id
        mail.set_content(message.body)
        try:
            with smtplib.SMTP(self.host, self.port, timeout=self.timeout) as smtp:
                if self.starttls:
                    smtp.starttls()
                if self.username:
                    smtp.login(self.username, self.password)
                smtp.send_message(mail)
        except (OSError, smtplib.SMTPException) as err:
            raise NotificationError(f"SMTP {self.host}:{self.port}: {type(err).__name__}: {err}") from None


@dataclass(frozen=True)
class ReminderConfig:
    max_attempts: int = 5
    backoff_seconds: float = 30.0  # doubled after each failure
    stale_after: float = 300.0  # an attempt without an outcome after this long is taken as lost
    addresses: Mapping[str, str] = field(default_factory=dict)  # "Practitioner/x" -> e-mail
    domain: str = "sen.invalid"


def address_of(cfg: ReminderConfig, ref: str) -> str:
    return cfg.addresses.get(ref) or f"{ref.replace('/', '-').lower()}@{cfg.domain}"


def message_id(kind: str, key: str, cfg: ReminderConfig) -> str:
    """The RFC 5322 ``Message-ID`` of the message ``key`` of ``kind`` (``<kind.key@domain>``):
    derived from what the message is about, so every attempt at it, by any worker, sends the same."""
    return f"<{kind}.{key}@{cfg.domain}>"


def reminder_message_id(appointment: str, minutes: int, cfg: ReminderConfig) -> str:
    """A reminder's ``Message-ID``: one per appointment and offset."""
    return message_id("reminder", f"{appointment}.{minutes}", cfg)


# ---------------------------------------------------------------------------------- booking

def reminder_docs(appointment: str, slot: str, start: datetime, offsets: Sequence[int], now: datetime,
                  also_to: Sequence[str] = ()) -> list[dict[str, Any]]:
    """The reminder documents of a booked appointment, stored in the slot links' collection
    (``REMINDER_MARK`` tells them from the links): a direct booking writes them in the insert of
    its slot claim (``claims.advance``'s ``beside``), one command instead of two. ``also_to``:
    references besides the appointment's practitioners (the requesting clinic)."""
    docs = []
    for minutes in offsets:
        due = start.astimezone(UTC) - timedelta(minutes=minutes)
        if due <= now:
            continue
        docs.append({"_id": f"{appointment}/{minutes}", REMINDER_MARK: 1, "ap": appointment, "sl": slot,
                     "due": due, "min": minutes, "start": start.astimezone(UTC), "to": list(also_to)})
    return docs


def reminders_of(db: Database, appointment: str) -> list[dict[str, Any]]:
    """The reminders of ``appointment`` not sent yet (tests, the worker's view)."""
    from .scheduling import SLOT_LINKS

    return [*db[SLOT_LINKS].find({REMINDER_MARK: 1, "ap": appointment}), *db[REMINDERS].find({"ap": appointment})]


def schedule_reminders(db: Database, appointment: str, slot: str, start: datetime, offsets: Sequence[int],
                       now: datetime, also_to: Sequence[str] = ()) -> int:
    """Insert the reminders of a booked appointment (idempotent by id); how many are new (a hold
    confirmed: its reminders come after its claim; a direct booking's come with it)."""
    from .scheduling import SLOT_LINKS

    docs = reminder_docs(appointment, slot, start, offsets, now, also_to)
    if not docs:
        return 0
    try:
        return len(db[SLOT_LINKS].insert_many(docs, ordered=False).inserted_ids)
    except BulkWriteError as err:
        return err.details.get("nInserted", 0)


# ---------------------------------------------------------------------------------- sending

def _aware(dt: datetime) -> datetime:
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def _message(cfg: ReminderConfig, appointment: dict[str, Any], minutes: int, also_to: Sequence[str] = ()) -> Message:
    start = datetime.fromisoformat(appointment["start"]).astimezone(TZ)
    to = tuple(address_of(cfg, str((p.get("actor") or {}).get("reference")))
               for p in appointment.get("participant") or ()
               if str((p.get("actor") or {}).get("reference", "")).startswith(("Practitioner/", "Organization/")))
    to = (*to, *(address_of(cfg, ref) for ref in also_to))
    room = next((e.get("valueUrl") for e in appointment.get("extension") or ()
                 if e.get("url", "").endswith("appointment-video-room")), "")
    when = start.strftime("%H:%M ngày %d/%m/%Y")
    ahead = f"{minutes // 60} giờ" if minutes % 60 == 0 else f"{minutes} phút"
    body = (f"Nhắc lịch hội chẩn từ xa: bắt đầu lúc {when} (giờ Việt Nam), còn {ahead}.\n"
            f"Teleconsultation reminder: starts {start.isoformat(timespec='minutes')}.\n"
            f"Phòng họp / video room: {room}\n"
            f"Lịch hẹn / appointment: Appointment/{appointment['id']}\n")
    return Message(to or (address_of(cfg, f"Appointment/{appointment['id']}"),),
                   f"[Sen] Nhắc lịch hội chẩn {when}", body, reminder_message_id(appointment["id"], minutes, cfg))


def _still_booked(db: Database, rem: dict[str, Any]) -> bool:
    from .scheduling import SLOT_LINKS

    last = latest(db[SLOT_LINKS], rem.get("sl") or rem["k"])  # (k: a reminder stored before the move)
    return last is not None and last.get("ap") == rem["ap"] and last.get("st") == "booked"


def record_attempt(db: Database, cid: str, new: dict[str, Any], status: str, note: str, when: datetime) -> None:
    """A message's Communication ``cid``, created from ``new`` (its fields also fill those the stored
    one lacks) or brought to its next version, with ``status`` and the attempt's ``note``. Written by
    the attempt's claimant (one attempt at a time: a single writer)."""
    store = Store(db, service="teleconsult", emit_events=False)
    head = store.head("Communication", cid)
    prior = unpack(store.current("Communication").find_one({"_id": cid}, {"res": 1})) if head else None
    res: dict[str, Any] = {**new, **((prior or {}).get("res") or {})}
    res["status"] = status
    stamp = when.astimezone(TZ).isoformat(timespec="seconds")
    if status == "completed":
        res["sent"] = stamp
    res.setdefault("note", []).append({"time": stamp, "text": note})
    try:
        if head is None:
            store.create(res, cid)
        else:
            store.apply(store.prepare_update(res, cid, head))
    except FhirError as err:
        log.warning("attempt not recorded on its Communication", extra={"communication": cid, "error": err.detail})


def _record(db: Database, rem: dict[str, Any], appointment: dict[str, Any] | None, status: str, note: str,
            when: datetime, mid: str = "") -> None:
    """The reminder's Communication (:func:`record_attempt`); ``mid``: its e-mail's Message-ID."""
    new: dict[str, Any] = {
        "resourceType": "Communication",
        "about": [{"reference": f"Appointment/{rem['ap']}"}],
        "category": [{"text": "Nhắc lịch hội chẩn (consult reminder)"}],
        "medium": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationMode",
                                "code": "EMAILWRIT"}]}],
        "payload": [{"contentString": f"Nhắc lịch trước {rem['min']} phút (reminder {rem['min']} minutes before)"}],
    }
    if appointment is not None and appointment.get("basedOn"):
        new["basedOn"] = appointment["basedOn"]
    if mid:  # a copy found in a mailbox is matched to this record
        new["identifier"] = [{"system": "urn:ietf:rfc:5322", "value": mid}]
    record_attempt(db, f"rem-{rem['ap']}-{rem['min']}"[:64], new, status, note, when)


# an attempt's claim answers (besides the number of the attempt claimed)
SENT = 0  # an attempt succeeded already
GIVEN_UP = -1  # the last attempt allowed failed


def claim_attempt(coll: Collection, field: str, key: str, cfg: ReminderConfig, now: datetime,
                  **recorded: Any) -> int | None:
    """Claim the next attempt at sending the message ``key`` (its attempts: ``coll``'s documents whose
    ``field`` is ``key``, ``<key>#<n>``): the number of the attempt now ours; :data:`SENT` or
    :data:`GIVEN_UP` when no attempt is left to make; None when none may be made now (one is in
    flight elsewhere, the last failure's back-off has not passed, or another worker won the claim).
    Attempt n+1 is claimed only after attempt n recorded its failure, or vanished mid-way for
    ``cfg.stale_after`` (a crashed worker): one attempt in flight at a time, whatever the workers.
    ``recorded``: more fields of the claim, written with it before anything is sent."""
    attempts = sorted(coll.find({field: key}), key=lambda a: a["n"])
    if any(a.get("ok") for a in attempts):
        return SENT
    last = attempts[-1] if attempts else None
    if last is not None:
        if "ok" not in last and _aware(last["at"]) > now - timedelta(seconds=cfg.stale_after):
            return None  # in flight elsewhere
        if last.get("ok") is False and last["n"] >= cfg.max_attempts:
            return GIVEN_UP
        if last.get("ok") is False and _aware(last["next"]) > now:
            return None  # backing off
    n = (last["n"] if last else 0) + 1
    try:
        claim(coll, f"{key}#{n}", {**recorded, field: key, "n": n, "at": now})
    except ClaimTaken:
        return None
    return n


def attempt_failed(coll: Collection, key: str, n: int, err: Exception, cfg: ReminderConfig,
                   now: datetime) -> tuple[bool, datetime, str]:
    """Record attempt ``n``'s failure on its claim (its claimant, the single writer of it): whether it
    was the last allowed, when the next may go (the back-off doubles), and the note to record."""
    final = n >= cfg.max_attempts
    retry = now + timedelta(seconds=cfg.backoff_seconds * (2 ** (n - 1)))
    coll.update_one({"_id": f"{key}#{n}"}, {"$set": {"ok": False, "err": str(err)[:300], "next": retry}})
    note = f"lần gửi {n} thất bại (attempt {n} failed): {str(err)[:200]}"
    note += "; đã dừng (given up)" if final else \
        f"; thử lại lúc {retry.astimezone(TZ).strftime('%H:%M:%S')} (retry)"
    return final, retry, note


Record = Callable[[str, str, str], None]  # (status, note, Message-ID or "") -> a version of the Communication


def send_attempt(attempts: Collection, key: str, n: int, notifier: Notifier, mail: Message, cfg: ReminderConfig,
                 now: datetime, record: Record) -> str:
    """Make attempt ``n`` at the message ``key`` (claimed: :func:`claim_attempt`, with ``mail``'s
    Message-ID), recorded before anything is sent: ``record`` writes "lần gửi n: đang gửi (attempt n:
    sending)" with the Message-ID, then the outcome. A worker dying after the server took ``mail``
    leaves that trace and the claim; the next worker's copy, after ``stale_after``, has the same
    Message-ID. The status recorded last: ``completed`` (sent), ``in-progress`` (failed, retried
    after its back-off), ``stopped`` (the last attempt allowed failed)."""
    mid = mail.message_id
    record("in-progress", f"lần gửi {n}: đang gửi (attempt {n}: sending), Message-ID {mid}", mid)
    try:
        notifier.send(mail)
    except NotificationError as err:
        final, _, note = attempt_failed(attempts, key, n, err, cfg, now)
        status = "stopped" if final else "in-progress"
        record(status, note, "")
        return status
    attempts.update_one({"_id": f"{key}#{n}"}, {"$set": {"ok": True}})  # its claimant: the single writer
    record("completed", f"đã gửi (sent), lần {n}", "")
    return "completed"


def send_due(db: Database, notifier: Notifier, cfg: ReminderConfig, now: datetime | None = None) -> int:
    """Send the reminders that are due; how many were sent now."""
    now = now or datetime.now(UTC)
    sent = 0
    from .scheduling import SLOT_LINKS

    stored = [(db[SLOT_LINKS], rem) for rem in db[SLOT_LINKS].find({REMINDER_MARK: 1})]
    stored += [(db[REMINDERS], rem) for rem in db[REMINDERS].find({})]
    for coll, rem in stored:
        if _aware(rem["due"]) > now:
            continue
        n = claim_attempt(db[ATTEMPTS], "rem", rem["_id"], cfg, now,
                          message_id=reminder_message_id(rem["ap"], int(rem["min"]), cfg))
        if n is None:
            continue
        if n in (SENT, GIVEN_UP):  # its last attempt's claimant stopped before releasing it
            release(coll, rem["_id"])
            continue
        sent += _attempt(db, notifier, cfg, coll, rem, n, now)
    return sent


def _attempt(db: Database, notifier: Notifier, cfg: ReminderConfig, stored: Collection, rem: dict[str, Any],
             n: int, now: datetime) -> int:
    from .scheduling import read_appointment

    key = f"{rem['_id']}#{n}"
    coll = db[ATTEMPTS]
    try:
        appointment = read_appointment(db, rem["ap"])
    except FhirError:
        appointment = None
    if appointment is None or not _still_booked(db, rem):
        # the claimant of this attempt is the only writer of its document
        coll.update_one({"_id": key}, {"$set": {"ok": True, "skipped": True}})
        _record(db, rem, appointment, "stopped", "không gửi: lịch hẹn không còn hiệu lực (not sent: the appointment "
                "is no longer booked)", now)
        release(stored, rem["_id"])
        return 0
    mail = _message(cfg, appointment, int(rem["min"]), rem.get("to") or ())
    status = send_attempt(coll, rem["_id"], n, notifier, mail, cfg, now,
                          lambda status, note, mid: _record(db, rem, appointment, status, note, now, mid))
    if status != "in-progress":  # sent, or given up: nothing more to try
        release(stored, rem["_id"])
    return 1 if status == "completed" else 0


def notifier_from(kind: str, *, path: str = "", host: str = "", port: int = 25, sender: str = "",
                  username: str = "", password: str = "", starttls: bool = False) -> Notifier:
    if kind == "smtp":
        return SmtpSender(host, port, sender=sender or "sen@localhost", username=username, password=password,
                          starttls=starttls)
    return ConsoleSender(path or None)


__all__ = ["GIVEN_UP", "SENT", "ConsoleSender", "Message", "NotificationError", "Notifier", "ReminderConfig",
           "SmtpSender", "attempt_failed", "claim_attempt", "message_id", "notifier_from", "record_attempt",
           "reminder_docs", "reminder_message_id", "reminders_of", "schedule_reminders", "send_attempt", "send_due"]
