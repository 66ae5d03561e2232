"""The "facilities using teleconsultation" chart draws the province's goal as a line across its two bars (before
Sen, using now), not as a third bar: a line dataset of a Chart.js mixed chart on a hidden axis from 0 to 1 (the
chart's whole width), named with its figure in the page's language; its text alternative and its data table state
the goal. A district's chart has no goal (the province's only), as before."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from services.portal.tests.test_dashboard_districts import _figures
from tests.support import portal_app, portal_signed_in


@pytest.fixture()
def officer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from sen_portal.web import dashboard, directory

    monkeypatch.setattr(dashboard, "figures", _figures)
    monkeypatch.setattr(directory, "names", lambda rtype: {})
    monkeypatch.setattr(dashboard, "org_districts", lambda: {"tyt-my-hiep": "Huyện Cao Lãnh"})
    return lambda lang="vi": portal_signed_in(portal_app(tmp_path, monkeypatch), "health-dept", lang)


def _card(page: str) -> str:
    return page.split('id="h-fac"', 1)[1].split("</section>", 1)[0]


def _config(card: str) -> dict:
    return json.loads(re.search(r'id="chart-facilities">(.*?)</script>', card, re.S).group(1))


@pytest.mark.parametrize("lang,bars,goal,axis", [
    ("vi", ["Trước Sen", "Đang sử dụng"], "Mục tiêu: 165 cơ sở", "Số cơ sở"),
    ("en", ["Before Sen", "Using now"], "Goal: 165 facilities", "Number of facilities")])
def test_the_goal_is_a_line_across_the_bars_not_a_bar(officer, lang, bars, goal, axis):
    card = _card(officer(lang).get("/dashboard").get_data(as_text=True))
    config = _config(card)
    assert config["type"] == "bar" and config["data"]["labels"] == bars, config  # no "Goal" bar
    counted, line = config["data"]["datasets"]
    assert counted["data"] == [22, 23] and "type" not in counted and counted["inLegend"] is False
    assert line["type"] == "line" and line["label"] == goal and line["xAxisID"] == "goal"
    assert line["data"] == [{"x": 0, "y": 165}, {"x": 1, "y": 165}] and line["pointRadius"] == 0
    assert line["pointHitRadius"] == 0  # no tooltip titled by the hidden axis (0, 1): the legend names the line
    scales = config["options"]["scales"]
    assert scales["goal"] == {"type": "linear", "display": False, "offset": False, "min": 0, "max": 1}
    assert scales["y"]["beginAtZero"] and scales["y"]["suggestedMax"] == 165 and "max" not in scales["y"]
    assert scales["y"]["title"] == {"display": True, "text": axis}
    assert "indexAxis" not in config["options"]  # bars standing up: the goal a horizontal line
    assert config["options"]["plugins"]["legend"]["display"] is True


def test_the_text_alternative_and_the_table_state_the_goal(officer):
    card = _card(officer().get("/dashboard").get_data(as_text=True))
    label = re.search(r'<canvas data-chart="facilities" role="img" aria-label="([^"]*)"', card).group(1)
    assert label.endswith(": 23 trên mục tiêu 165 cơ sở; 22 cơ sở trước Sen."), label
    table = re.search(r'<details class="print-open">.*?<table[^>]*data-testid="facilities-table">(.*?)</table>',
                      card, re.S).group(1)
    assert re.findall(r'<th scope="col">([^<]*)</th>', table) == ["Trước Sen", "Đang sử dụng", "Mục tiêu"]
    assert re.findall(r"<td>([^<]*)</td>", table) == ["22", "23", "165"]


def test_a_districts_chart_has_no_goal(officer):
    card = _card(officer().get("/dashboard?district=Huyện+Cao+Lãnh").get_data(as_text=True))
    config = _config(card)
    assert [d.get("type", "bar") for d in config["data"]["datasets"]] == ["bar"]
    assert "165" not in card and 'data-testid="facilities-table"' not in card
