"""The dashboard says what "Đang sử dụng" (in use) counts, beside the figure, in the page's language: a
facility that requested a consult in the 30 days up to the period's end that is not cancelled or rejected
(domain.dashboard.facilities_in_use; its edges: tests/integration/test_reporting_in_use.py)."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

import pytest

from tests.support import portal_app, portal_signed_in

RULE = {"vi": "Đang sử dụng: cơ sở đã gửi ít nhất một yêu cầu hội chẩn từ xa từ 01/11/2026 đến 30/11/2026 "
              "(30 ngày tính đến hết ngày cuối của kỳ) mà không bị hủy hay bị từ chối.",
        "en": "In use: a facility that requested at least one teleconsultation from 01/11/2026 to 30/11/2026 "
              "(the 30 days up to the end of the period) that is not cancelled or rejected."}


def _with(using: dict[str, Any], weekly: list[dict[str, Any]] | None = None) -> Any:
    def figures(start: date, end: date, district: str | None, facility: str | None = None) -> dict[str, Any]:
        return {"range": {"start": "2026-09-08", "end": "2026-11-30", "district": district,
                          "facility": f"Organization/{facility}" if facility else None, "weeks": ["2026-W48"]},
                "facilities_using": {**using, "since": "2026-11-01", "until": "2026-11-30"},
                "consults_per_facility_week": weekly or [], "time_to_answer": {}, "time_to_conclusion": {},
                "sla_breaches": [], "consults_by_status": [],
                "cashless_share": {"transfer_amount": 0, "cash_amount": 0, "share": None, "transfer_count": 0,
                                   "cash_count": 0},
                "ehr_coverage": {"patients": 9, "population": 10, "share": 0.9, "as_of": "2026-11-30",
                                 "population_outdated": False},
                "generated_at": "2026-12-01T10:00:00+07:00"}
    return figures


def _card(page: str) -> str:
    return page.split('id="h-fac"', 1)[1].split("</section>", 1)[0]


@pytest.mark.parametrize("lang", ["vi", "en"])
def test_the_rule_is_said_beside_the_province_figure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, lang) -> None:
    from sen_portal.web import dashboard, directory

    monkeypatch.setattr(directory, "names", lambda rtype: {})
    client = portal_signed_in(portal_app(tmp_path, monkeypatch), "health-dept", lang)
    monkeypatch.setattr(dashboard, "figures", _with({"count": 25, "new": 3, "baseline": 22, "goal": 165,
                                                      "share": 0.1515, "baseline_named": False,
                                                      "baseline_using": None}))
    card = _card(client.get("/dashboard").get_data(as_text=True))
    assert 'data-testid="facilities-using">25 / 165<' in card
    assert RULE[lang] in card
    assert {"vi": "22 cơ sở trước Sen, thêm 3 cơ sở đang sử dụng; mục tiêu 165 cơ sở.",
            "en": "22 before Sen, 3 more in use now; goal 165 facilities."}[lang] in card
    assert "trong kỳ" not in card.split('data-testid="facilities-baseline"')[1].split("</p>")[0]


def test_a_facility_not_in_use_says_so_though_it_requested_consults_in_the_period(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from sen_portal.web import dashboard, directory

    monkeypatch.setattr(directory, "names", lambda rtype: {})
    monkeypatch.setattr(dashboard, "facilities", lambda *a: {"tyt-my-hiep": ("Trạm Y tế xã Mỹ Hiệp", "Cao Lãnh")})
    client = portal_signed_in(portal_app(tmp_path, monkeypatch), "health-dept")
    weekly = [{"week": "2026-W40", "facility": "Organization/tyt-my-hiep", "district": "Cao Lãnh", "count": 2}]
    monkeypatch.setattr(dashboard, "figures", _with({"count": 0, "new": 0, "baseline": None, "goal": None,
                                                      "share": None, "baseline_named": None,
                                                      "baseline_using": None}, weekly))
    card = _card(client.get("/dashboard?facility=tyt-my-hiep").get_data(as_text=True))
    assert 'data-testid="facilities-using">Hiện không sử dụng<' in card
    assert "Trạm Y tế xã Mỹ Hiệp đã gửi 2 yêu cầu hội chẩn trong kỳ." in card and RULE["vi"] in card
