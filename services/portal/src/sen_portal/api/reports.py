"""Reporting read model endpoints for the health department's dashboard."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from sen_shared.auth import require_roles
from sen_shared.errors import SenError
from sen_shared.responses import json_response
from sen_shared.runtime import current

from ..domain.reporting import COLLECTION

VN = ZoneInfo("Asia/Ho_Chi_Minh")


@require_roles("health-dept")
def event_counts(day: str | None = None) -> tuple[Any, int, dict[str, str]]:
    try:
        the_day = date.fromisoformat(day) if day else datetime.now(VN).date()
    except ValueError:
        raise SenError(f"day must be a date as YYYY-MM-DD, not {day!r}") from None
    doc = current().db[COLLECTION].find_one({"_id": the_day.isoformat()}) or {}
    return json_response({"day": the_day.isoformat(), "counts": doc.get("counts", {})})
