"""Wrong numbers at ``$take-on``, limited per user: guessing a patient's CCCD is not a way in.

After ``max_failures`` wrong numbers (``SEN_TAKE_ON_MAX_FAILURES``, 5) within ``window``
(``SEN_TAKE_ON_FAILURE_WINDOW_SECONDS``, 900) a user's next attempts are refused with 429, a
``Retry-After`` and an OperationOutcome saying when to try again, before any number is compared
(nor a patient looked up by it). A right number does not clear the count (else one known card
would reset it).

Counted by inserts, never by a counter document (ARCHITECTURE §2): each attempt inserts its own
record ``{user, at}`` of the ``take_on_failures`` collection BEFORE its number is compared, then
counts the user's records within the window (an equality on ``user``, indexed with ``at``). More
than ``max_failures`` (its own included): refused, and its record deleted. Otherwise the number
is compared; a wrong one keeps the record (that is the failure), anything else deletes it. Each
record is deleted by the request that inserted it only (a single writer). So attempts racing
each other count each other: at most ``max_failures`` wrong numbers are ever compared in a window,
however many arrive at once (tests/integration/test_ehr_end_take_on.py); the price is that a
user's own attempts arriving together near the limit may be refused where one after the other
would not. Records older than the window are swept when the user fails again.

A Patient write carrying a number held by a patient the user may not see counts here too, as one
wrong number (:mod:`.registered_elsewhere`): one budget for both ways of testing numbers. And while the
budget is spent, every Patient write adding a number (a free one too) is refused with the same 429
(:func:`check`): else a 201 on a free number against the 429 on a held one still told them apart.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo.database import Database
from sen_shared import mongo
from sen_shared.fhir.outcome import FhirError
from sen_shared.ids import new_uuid

FAILURES = "take_on_failures"
INDEXES: list[mongo.Index] = [mongo.Index(FAILURES, (("user", 1), ("at", 1)), name="user_1_at_1")]


@dataclass(frozen=True)
class Limit:
    max_failures: int
    window: timedelta

    @classmethod
    def from_settings(cls, settings: Any) -> Limit:
        return cls(int(settings.take_on_max_failures), timedelta(seconds=float(settings.take_on_failure_window)))


def _utc(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def retry_at(ats: list[datetime], limit: Limit) -> datetime:
    """When a new attempt would be allowed, given the times of the user's other records in the window:
    once all but ``max_failures - 1`` of them have left it."""
    ats = sorted(_utc(a) for a in ats)
    leaving = len(ats) - limit.max_failures + 1  # how many must leave the window
    return ats[max(leaving, 1) - 1] + limit.window


def throttled(until: datetime, now: datetime, limit: Limit) -> FhirError:
    seconds = max(1, math.ceil((until - now).total_seconds()))
    minutes = max(1, round(limit.window.total_seconds() / 60))
    when = until.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    return FhirError(f"too many wrong numbers: {limit.max_failures} or more in {minutes} minutes; no number is "
                     f"compared before {when} (retry after {seconds} seconds)", status=429, code="throttled",
                     headers={"Retry-After": str(seconds)})


def user_of(principal: Any) -> str:
    """Whose budget an attempt spends: the token's ``sub``, else its facility."""
    return str(getattr(principal, "sub", None) or "") or f"Organization/{getattr(principal, 'facility', None)}"


def begin(db: Database, user: str, limit: Limit) -> str:
    """Count the attempt about to compare a number as ``user``'s wrong number (the id of its record),
    or FhirError 429 (nothing kept) when the user has had ``max_failures`` already in the window."""
    coll = db[FAILURES]
    now = datetime.now(UTC)
    rid = new_uuid()
    coll.insert_one({"_id": rid, "user": user, "at": now})
    others = [_utc(d["at"]) for d in coll.find({"user": user, "at": {"$gt": now - limit.window}}, {"at": 1})
              if d["_id"] != rid]
    if len(others) + 1 <= limit.max_failures:
        return rid
    coll.delete_one({"_id": rid})  # this attempt's own record: its single writer
    raise throttled(retry_at(others, limit), now, limit)


def check(db: Database, user: str, limit: Limit) -> None:
    """FhirError 429, as :func:`begin` refuses, while ``user``'s budget is spent; else nothing (nothing is
    written: one read, an equality on ``user`` and a range on ``at``, served by the index)."""
    now = datetime.now(UTC)
    ats = [_utc(d["at"]) for d in db[FAILURES].find({"user": user, "at": {"$gt": now - limit.window}}, {"at": 1})]
    if len(ats) >= limit.max_failures:
        raise throttled(retry_at(ats, limit), now, limit)


def keep(db: Database, user: str, limit: Limit) -> None:
    """The number was wrong: the attempt's record stays; the user's records gone out of the window go
    (deletes of records no one counts any more: harmless however many run at once)."""
    db[FAILURES].delete_many({"user": user, "at": {"$lt": datetime.now(UTC) - limit.window}})


def forget(db: Database, rid: str | None) -> None:
    """The attempt was no wrong number (right, or failed for another reason): its record goes."""
    if rid is not None:
        db[FAILURES].delete_one({"_id": rid})
