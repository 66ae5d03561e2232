"""The health department's goal (165 facilities with remote diagnosis) is a line across the "facilities using
teleconsultation" chart, not a third bar: a bar reads as a count of facilities like the two beside it. The line is
Chart.js's own (a line dataset of a mixed chart, on a hidden axis from 0 to 1, so it spans the chart), named in
the legend with its figure in the page's language ("Mục tiêu: 165 cơ sở" / "Goal: 165 facilities"), drawn on
screen and in print; the chart's text alternative and its data table state the goal.

The page is the portal's own (its template, charts.js and Chart.js), served to Chromium by the Flask test client
through Playwright's routing (test_dashboard_chart_units._dashboard): no stack, no network."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.browser.test_dashboard_chart_units import _dashboard

pytestmark = pytest.mark.integration

CHART = "Chart.getChart(document.querySelector('canvas[data-chart=facilities]'))"
# the share of the chart's width, at the goal's height, drawn dark (the dashed line: its dashes, not its gaps)
DRAWN = f"""() => {{
  const ch = {CHART}, a = ch.chartArea, y = Math.round(ch.scales.y.getPixelForValue(165) * ch.currentDevicePixelRatio);
  const ctx = ch.canvas.getContext('2d'), r = ch.currentDevicePixelRatio;
  const row = ctx.getImageData(Math.round(a.left * r), y - 1, Math.round((a.right - a.left) * r), 3).data;
  const w = row.length / 12; let dark = 0;
  for (let x = 0; x < w; x++) {{
    const cols = [0, 1, 2].map(k => (k * w + x) * 4);
    if (cols.some(i => row[i + 3] > 128 && row[i] < 90 && row[i + 1] < 90 && row[i + 2] < 90)) dark++;
  }}
  return dark / w;
}}"""


@pytest.mark.parametrize("lang,goal,bars", [("vi", "Mục tiêu: 165 cơ sở", ["Trước Sen", "Đang sử dụng"]),
                                            ("en", "Goal: 165 facilities", ["Before Sen", "Using now"])])
def test_the_goal_is_a_line_across_the_bars_named_in_the_legend_and_printed(
        browser, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, lang: str, goal: str, bars: list[str]) -> None:
    with _dashboard(browser, tmp_path, monkeypatch, lang, {"width": 1280, "height": 900}, "vi-VN",
                    "facilities") as page:
        drawn: dict[str, Any] = page.evaluate(
            f"() => {{ const ch = {CHART}; return {{labels: ch.data.labels,"
            " sets: ch.data.datasets.map(d => ({type: d.type || ch.config.type, label: d.label, data: d.data})),"
            " legend: ch.legend.legendItems.map(i => i.text),"
            " span: [ch.scales.goal.min, ch.scales.goal.max], top: ch.scales.y.max}; }")
        assert drawn["labels"] == bars, drawn  # two bars: no "Goal" bar
        assert [s["type"] for s in drawn["sets"]] == ["bar", "line"], drawn
        assert drawn["sets"][0]["data"] == [22, 23] and drawn["sets"][1]["label"] == goal, drawn
        assert drawn["sets"][1]["data"] == [{"x": 0, "y": 165}, {"x": 1, "y": 165}], drawn
        assert drawn["span"] == [0, 1] and drawn["top"] > 165, drawn  # across the whole width, below the top
        assert drawn["legend"] == [goal], drawn  # the line named; the bars are named by their axis
        assert page.evaluate(DRAWN) > 0.5  # drawn across the chart, not only hovering
        ends = page.evaluate(f"() => {{ const ch = {CHART}, pts = ch.getDatasetMeta(1).data;"
                             " return [pts[0].x - ch.chartArea.left, ch.chartArea.right - pts[1].x]; }")
        assert max(map(abs, ends)) < 1, ends  # from the chart's left edge to its right one
        # the text alternative and the data table say the goal
        label = page.get_attribute("canvas[data-chart=facilities]", "aria-label")
        assert "165" in label and ("mục tiêu" in label if lang == "vi" else "goal" in label), label
        cells = page.eval_on_selector_all("[data-testid=facilities-table] td", "cs => cs.map(c => c.textContent)")
        assert cells == ["22", "23", "165"], cells
        # printed: the chart drawn again for the paper, the line with it, the table open
        page.emulate_media(media="print")
        page.evaluate(f"() => {{ window.dispatchEvent(new Event('beforeprint')); {CHART}.resize(); }}")
        assert page.evaluate(DRAWN) > 0.5
        assert page.locator("[data-testid=facilities-table]").is_visible()
        page.screenshot(path=str(tmp_path / f"goal-{lang}.png"), full_page=False)
