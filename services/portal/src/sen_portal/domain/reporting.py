"""The reporting read model: every event counted once, per type and local day.

One document per day (Asia/Ho_Chi_Minh) holds the counts; an event's id is
recorded in the same atomic update as its count, so a redelivered event is
not counted twice.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from pymongo.database import Database
from sen_shared.bus.idempotency import apply_once

COLLECTION = "daily_event_counts"
VN = ZoneInfo("Asia/Ho_Chi_Minh")


def local_day(event_time: str) -> str:
    return datetime.fromisoformat(event_time.replace("Z", "+00:00")).astimezone(VN).date().isoformat()


def count_event(event: dict[str, Any], db: Database) -> None:
    """Handler of ``portal.reporting``: count the event once."""
    day = local_day(event["time"])
    kind = event["type"].removeprefix("vn.sen.").replace(".", "_")
    apply_once(db[COLLECTION], {"_id": day}, {"$inc": {f"counts.{kind}": 1}}, event["id"], upsert=True)
