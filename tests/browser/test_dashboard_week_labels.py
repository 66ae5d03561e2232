"""The weekly charts at 360 px keep their last week labelled (review 8): "Số ca hội chẩn theo cơ sở mỗi tuần"
and "Số ca quá hạn trả lời" had their x-axis labels stop at 23/11, the last week (30/11), the only one with
data, unlabelled: Chart.js's auto-skip drops labels from the end. charts.js now keeps every step-th label
counting back from the last, and the first, none of them touching.

The page is the portal's own (its template, charts.js and Chart.js), served to Chromium by the Flask test
client through Playwright's routing: no stack, no network."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

import pytest

from tests.browser.served import fulfil_from
from tests.support import portal_app, portal_signed_in

pytestmark = pytest.mark.integration

WEEKS = [f"2026-W{w}" for w in range(38, 50)]  # 14/09 .. 30/11: twelve weeks


def _figures(start: date, end: date, district: str | None, facility: str | None = None) -> dict[str, Any]:
    from sen_portal.domain.dashboard import cashless

    return {"range": {"start": "2026-09-14", "end": "2026-12-06", "district": None, "facility": None,
                      "weeks": WEEKS},
            "facilities_using": {"count": 23, "new": 1, "baseline": 22, "goal": 165, "share": 0.14},
            "consults_per_facility_week": [{"facility": "Organization/tyt-my-hiep", "district": "Huyện Cao Lãnh",
                                            "week": "2026-W49", "count": 11}],
            "consults_by_status": [], "time_to_answer": {}, "time_to_conclusion": {},
            "sla_breaches": [{"week": "2026-W49", "priority": "urgent", "count": 1}],
            "cashless_share": cashless([]),
            "ehr_coverage": {"patients": 9, "population": 10, "share": 0.9, "as_of": "2026-12-06",
                             "population_outdated": False, "without_district": 0},
            "generated_at": "2026-12-06T10:00:00+07:00"}


@pytest.mark.parametrize("width", [360, 1280])
def test_the_weekly_charts_label_their_first_and_last_week(browser, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch, width: int) -> None:
    from sen_portal.web import dashboard

    monkeypatch.setattr(dashboard, "figures", _figures)
    monkeypatch.setattr(dashboard, "org_names", lambda: {"tyt-my-hiep": "Trạm Y tế xã Mỹ Hiệp"})
    monkeypatch.setattr(dashboard, "org_districts", lambda: {"tyt-my-hiep": "Huyện Cao Lãnh"})
    monkeypatch.setattr(dashboard, "org_without_care", lambda: set())
    client = portal_signed_in(portal_app(tmp_path, monkeypatch), "health-dept")

    def serve(route: Any) -> None:
        fulfil_from(client, route)

    ctx = browser.new_context(viewport={"width": width, "height": 900}, locale="vi-VN",
                              timezone_id="Asia/Ho_Chi_Minh")
    try:
        page = ctx.new_page()
        page.route("http://portal.test/**", serve)
        page.goto("http://portal.test/dashboard?start=14/09/2026&end=06/12/2026")
        page.wait_for_function("() => window.Chart && Chart.getChart(document.querySelector("
                               "'canvas[data-chart=breaches]'))")
        for name in ("consults", "breaches"):
            ticks = page.evaluate(
                "name => { const s = Chart.getChart(document.querySelector(`canvas[data-chart=${name}]`)).scales.x;"
                " return {labels: s.ticks.map(t => [t.value, t.label]), width: s.width,"
                " sizes: s.ticks.filter(t => t.label).map(t => s.getPixelForTick(s.ticks.indexOf(t)))}; }", name)
            shown = {v: label for v, label in ticks["labels"] if label}
            assert shown.get(len(WEEKS) - 1) == "30/11", (name, width, ticks)  # the last week, its data's
            assert shown.get(0) == "14/09", (name, width, ticks)
            xs = ticks["sizes"]  # centres of the labels drawn: none touching (a label is under 40 px wide)
            assert all(b - a >= 32 for a, b in zip(xs, xs[1:], strict=False)), (name, width, ticks)
            assert len(shown) >= 4, (name, width, ticks)  # and some between them
    finally:
        ctx.close()
