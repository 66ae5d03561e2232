"""Review 12: the facilities using teleconsultation were the baseline's number plus every facility that
requested a consult, so one already using teleconsultation before Sen counted twice. With the baseline's
facilities named in the settings the card says how many of them used Sen; with only their number it says
that such a facility is also counted as new."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

import pytest

from tests.support import portal_app, portal_signed_in


def _with(using: dict[str, Any]) -> Any:
    def figures(start: date, end: date, district: str | None, facility: str | None = None) -> dict[str, Any]:
        return {"range": {"start": "2026-12-05", "end": "2026-12-05", "district": district, "weeks": ["2026-W49"]},
                "facilities_using": using, "consults_per_facility_week": [], "time_to_answer": {},
                "time_to_conclusion": {}, "sla_breaches": [],
                "cashless_share": {"transfer_amount": 0, "cash_amount": 0, "share": None, "transfer_count": 0,
                                   "cash_count": 0},
                "ehr_coverage": {"patients": 9, "population": 10, "share": 0.9, "as_of": "2026-12-05",
                                 "population_outdated": False},
                "generated_at": "2026-12-05T10:00:00+07:00"}
    return figures


@pytest.mark.parametrize("lang,named,unnamed", [
    ("vi", "22 cơ sở trước Sen (trong đó 2 cơ sở đang sử dụng), thêm 1 cơ sở đang sử dụng",
     "một cơ sở trong số đó đã yêu cầu hội chẩn qua Sen cũng được tính là cơ sở mới"),
    ("en", "22 before Sen (2 of them in use now), 1 more in use now",
     "one of them that requested consults through Sen is also counted as new")])
def test_the_card_says_whether_the_baseline_facilities_are_told_apart(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, lang: str, named: str, unnamed: str) -> None:
    from sen_portal.web import dashboard, directory

    monkeypatch.setattr(directory, "names", lambda rtype: {})
    client = portal_signed_in(portal_app(tmp_path, monkeypatch), "health-dept", lang)
    monkeypatch.setattr(dashboard, "figures", _with({"count": 23, "new": 1, "baseline": 22, "goal": 165,
                                                      "share": 0.1394, "baseline_named": True, "baseline_using": 2}))
    page = client.get("/dashboard").get_data(as_text=True)
    assert named in page and unnamed not in page
    monkeypatch.setattr(dashboard, "figures", _with({"count": 25, "new": 3, "baseline": 22, "goal": 165,
                                                      "share": 0.1515, "baseline_named": False,
                                                      "baseline_using": None}))
    page = client.get("/dashboard").get_data(as_text=True)
    assert unnamed in page and named not in page
