"""The times chart's minutes axis (review 12): with every median 0 (consults answered within the minute, or
none), Chart.js drew the axis from 0 to 1 in tenths (0,1 … 0,9 minutes); it counts whole minutes."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support import portal_app


@pytest.fixture()
def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    return portal_app(tmp_path, monkeypatch)


def test_the_minutes_axis_counts_whole_minutes(app) -> None:
    from sen_portal.domain.dashboard import PRIORITIES
    from sen_portal.web.dashboard import charts

    zero = {p: {"count": 1, "median_minutes": 0.0, "p90_minutes": 0} for p in PRIORITIES}
    data = {"range": {"weeks": ["2026-W49"], "facility": None},
            "facilities_using": {"count": 1, "new": 1, "baseline": 22, "goal": 165},
            "sla_breaches": [], "consults_per_facility_week": [], "time_to_answer": zero, "time_to_conclusion": zero,
            "cashless_share": {"transfer_amount": 0, "cash_amount": 0}, "ehr_coverage": {"share": None}}
    with app.test_request_context():
        answer = charts(data, {})["answer"]
    assert [d["data"] for d in answer["data"]["datasets"]] == [[0.0] * len(PRIORITIES)] * 2
    y = answer["options"]["scales"]["y"]
    assert y["ticks"]["precision"] == 0 and y["beginAtZero"] is True
    assert y["title"]["text"] == "Phút"
