"""The dashboard's figures part, kept as rendered (web/dashboard.py ``figures_part``): rendered again when the
figures are computed again (a new object, :func:`dashboard.figures`'s keep ending), when the facility names are
read again from the EHR (the directory's keep ending: a renamed facility shows), for another link (its downloads
carry the link's query), another language, or another role (the admin is told where to set a population, the
others to ask her); otherwise the same HTML, rendered once. (The real read model: tests/integration/
test_portal_dashboard_figures_part.py.)"""

from __future__ import annotations

import re
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from flask import template_rendered

from services.portal.tests.read_model import read_model_answers
from tests.support import portal_app, portal_signed_in

PART = "_dashboard_figures.html"


def _data(consults: int, population_outdated: bool = False) -> dict[str, Any]:
    from sen_portal.domain.dashboard import cashless

    return {"range": {"start": "2026-09-07", "end": "2026-09-20", "district": None, "facility": None,
                      "weeks": ["2026-W37", "2026-W38"]},
            "facilities_using": {"count": 23, "new": 1, "baseline": 22, "goal": 165, "share": 0.14},
            "consults_per_facility_week": [{"facility": "Organization/tyt-my-hiep", "district": "Huyện Cao Lãnh",
                                            "week": "2026-W38", "count": consults}],
            "time_to_answer": {p: {"count": 0, "median_minutes": None, "p90_minutes": None}
                               for p in ("routine", "urgent", "asap", "stat")},
            "time_to_conclusion": {}, "sla_breaches": [], "consults_by_status": [],
            "cashless_share": cashless([]),
            "ehr_coverage": {"patients": 12 if population_outdated else 9, "population": 10,
                             "share": None if population_outdated else 0.9, "as_of": "2026-09-20",
                             "population_outdated": population_outdated, "without_district": 0},
            "generated_at": "2026-09-20T10:00:00+07:00"}


class Kept:
    """What :func:`dashboard.figures` and the directory's names hand out: the same objects until replaced."""

    def __init__(self) -> None:
        self.data = _data(2)
        self.names = {"tyt-my-hiep": "Trạm Y tế xã Mỹ Hiệp"}

    def figures(self, start: date, end: date, district: str | None, facility: str | None = None) -> dict[str, Any]:
        return self.data


@pytest.fixture()
def setup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Any, Kept, list[str]]:
    from sen_portal.web import dashboard

    kept = Kept()
    monkeypatch.setattr(dashboard, "figures", kept.figures)
    monkeypatch.setattr(dashboard, "org_names", lambda: kept.names)
    monkeypatch.setattr(dashboard, "org_districts", lambda: {"tyt-my-hiep": "Huyện Cao Lãnh"})
    monkeypatch.setattr(dashboard, "org_without_care", lambda: set())
    read_model_answers(monkeypatch)
    app = portal_app(tmp_path, monkeypatch)
    rendered: list[str] = []
    template_rendered.connect(lambda sender, template, context, **extra: rendered.append(template.name), app,
                              weak=False)
    return app, kept, rendered


def _untokened(page: str) -> str:
    """The page without its CSRF tokens (signed with the time: two pages a second apart differ there)."""
    return re.sub(r'(csrf_token" value=|X-CSRFToken": )"[^"]*"', r"\1", page)


def _filter(page: str) -> str:
    return page.split('<form method="get"', 1)[1].split("</form>", 1)[0]


def _card(page: str, card: str) -> str:
    return page.split(f'id="{card}"', 1)[1].split("</section>", 1)[0]


def test_the_part_is_rendered_again_only_for_new_figures_or_names(setup) -> None:
    app, kept, rendered = setup
    officer = portal_signed_in(app, "health-dept")
    first = officer.get("/dashboard").get_data(as_text=True)
    assert _untokened(officer.get("/dashboard").get_data(as_text=True)) == _untokened(first)
    assert rendered.count(PART) == 1 and rendered.count("dashboard.html") == 2
    assert 'data-testid="consults-total">2<' in first and "Trạm Y tế xã Mỹ Hiệp" in _card(first, "h-cons")

    kept.data = _data(5)  # the figures computed again
    page = officer.get("/dashboard").get_data(as_text=True)
    assert 'data-testid="consults-total">5<' in page and rendered.count(PART) == 2

    kept.names = {"tyt-my-hiep": "Trạm Y tế Mỹ Hiệp (mới)"}  # the EHR's names read again: the facility renamed
    page = officer.get("/dashboard").get_data(as_text=True)
    assert "Trạm Y tế Mỹ Hiệp (mới)" in _card(page, "h-cons") and rendered.count(PART) == 3


def test_the_link_the_language_and_the_role_each_have_their_own_part(setup) -> None:
    app, kept, rendered = setup
    kept.data = _data(2, population_outdated=True)
    officer = portal_signed_in(app, "health-dept")
    page = officer.get("/dashboard").get_data(as_text=True)
    assert "/dashboard/sla_breaches.csv\"" in page
    linked = officer.get("/dashboard?start=2026-09-07").get_data(as_text=True)
    assert "/dashboard/sla_breaches.csv?start=2026-09-07\"" in linked
    english = portal_signed_in(app, "health-dept", lang="en").get("/dashboard").get_data(as_text=True)
    assert "Consults per facility per week" in english and "Số ca hội chẩn theo cơ sở mỗi tuần" not in english
    assert "SEN_REPORT_POPULATION" in _card(page, "h-ehr") and "docs/operations.md" not in _card(page, "h-ehr")
    admin = portal_signed_in(app, "admin").get("/dashboard").get_data(as_text=True)
    assert "docs/operations.md" in _card(admin, "h-ehr")  # where she sets it
    assert rendered.count(PART) == 4


def test_the_filter_is_kept_for_what_it_shows_and_a_refused_box_shows_what_was_typed(setup) -> None:
    """The filter's part (``filter_part``): rendered once for the same values, again for other values or another
    language; a refused date is never served from a kept part: its box shows what was typed, with the error."""
    app, kept, rendered = setup
    officer = portal_signed_in(app, "health-dept")
    first = officer.get("/dashboard?start=07%2F09%2F2026&end=20%2F09%2F2026").get_data(as_text=True)
    same_dates = officer.get("/dashboard?start=2026-09-07&end=2026-09-20").get_data(as_text=True)
    assert _filter(same_dates) == _filter(first)
    assert rendered.count("_dashboard_filter.html") == 1
    assert 'value="07/09/2026"' in first and 'value="20/09/2026"' in first
    assert '<option value="Huyện Cao Lãnh">' in first and '<option value="tyt-my-hiep">' in first

    chosen = officer.get("/dashboard?district=Huy%E1%BB%87n+Cao+L%C3%A3nh&facility=tyt-my-hiep").get_data(as_text=True)
    assert '<option value="Huyện Cao Lãnh" selected>' in chosen and '<option value="tyt-my-hiep" selected>' in chosen
    assert rendered.count("_dashboard_filter.html") == 2

    for _ in range(2):
        r = officer.get("/dashboard?start=31%2F02%2F2026")
        refused = r.get_data(as_text=True)
        assert r.status_code == 400 and 'value="31/02/2026"' in refused and 'aria-invalid="true"' in refused
    assert rendered.count("_dashboard_filter.html") == 4  # rendered each time

    english = portal_signed_in(app, "health-dept", lang="en").get(
        "/dashboard?start=07%2F09%2F2026&end=20%2F09%2F2026").get_data(as_text=True)
    assert 'lang="en"' in english.split('id="start"', 1)[1].split(">", 1)[0] and "All districts" in english
    assert rendered.count("_dashboard_filter.html") == 5
