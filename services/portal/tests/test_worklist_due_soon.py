"""The worklist's "Due within the hour" badge: only on a consult still to answer whose due time is ahead and
under an hour away; never on a closed one (the "completed" filter lists them) or one past its time that the
sweep did not mark (that one is "Quá hạn" while open)."""

from __future__ import annotations

from datetime import datetime, timedelta

from sen_portal.web.doctor import worklist_rows
from sen_portal.web.formatting import TZ


def _row(status: str, due: datetime) -> dict:
    entry = {"resource": {"resourceType": "Task", "id": "t-1", "status": status,
                          "restriction": {"period": {"end": due.isoformat()}}}}
    return worklist_rows({"entry": [entry]})[0]


def test_due_within_the_hour_only_for_an_open_consult_whose_time_is_ahead() -> None:
    now = datetime.now(TZ)
    soon = _row("requested", now + timedelta(minutes=30))
    assert soon["soon"] and not soon["breached"]
    assert not _row("accepted", now + timedelta(hours=3))["soon"]
    completed = _row("completed", now - timedelta(hours=2))  # closed past its time, never marked late
    assert not completed["soon"] and not completed["breached"]
    assert not _row("cancelled", now + timedelta(minutes=20))["soon"]
    late = _row("accepted", now - timedelta(minutes=5))
    assert late["breached"] and not late["soon"]
