"""The dashboard's figures part kept as rendered (web/dashboard.py ``figures_part``), on the real FerretDB: a
page whose figures are the ones already shown is not rendered again, and a consult requested since shows
on the page as soon as the figures are computed again (the figures' own keep, ``dashboard.FIGURES_SECONDS``,
ending): the part kept is never older than the figures the page would show. The language and the filter
each give their own part."""

from __future__ import annotations

import re
import uuid
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import template_rendered
from sen_portal.domain.report_facts import VN
from sen_portal.domain.reporting import record_event

from tests.support import portal_app, portal_signed_in

pytestmark = pytest.mark.integration


def _request(db: Any, facility: str, district: str, at: datetime) -> None:
    record_event(db, {"id": str(uuid.uuid4()), "type": "vn.sen.teleconsult.consult.requested.v1",
                      "time": at.isoformat(), "source": "/sen/test",
                      "data": {"requester": facility, "district": district, "priority": "urgent",
                               "requestedAt": at.isoformat(), "serviceRequest": f"ServiceRequest/{uuid.uuid4().hex}"}})


def _total(page: str) -> int:
    found = re.search(r'data-testid="consults-total">(\d+)<', page)
    assert found, page[-3000:]
    return int(found.group(1))


def test_a_consult_requested_since_shows_once_the_figures_are_computed_again(base_env, run_id, mongo_client,
                                                                              tmp_path: Path, monkeypatch) -> None:
    from sen_portal.web import dashboard

    name = f"sen_t{run_id}_portal_part"
    db = mongo_client[name]
    at = datetime.now(VN) - timedelta(hours=1)
    try:
        _request(db, "Organization/tyt-my-hiep", "Huyện Cao Lãnh", at)
        app = portal_app(tmp_path, monkeypatch, MONGO_URL=base_env["MONGO_URL"], SEN_DB=name,
                         SEN_DEV_JWT_KEY=base_env["SEN_DEV_JWT_KEY"])
        rendered: list[str] = []

        def seen(sender: Any, template: Any, context: Any, **extra: Any) -> None:
            rendered.append(template.name)

        template_rendered.connect(seen, app)
        officer = portal_signed_in(app, "health-dept")
        first = officer.get("/dashboard").get_data(as_text=True)
        assert _total(first) == 1
        again = officer.get("/dashboard").get_data(as_text=True)
        assert _total(again) == 1
        # the same figures (kept FIGURES_SECONDS): the part is rendered once, both pages the dashboard's
        assert rendered.count("_dashboard_figures.html") == 1 and rendered.count("dashboard.html") == 2

        _request(db, "Organization/tyt-doc-binh-kieu", "Huyện Tháp Mười", at)
        dashboard._figures.clear()  # the figures' keep over (FIGURES_SECONDS later): computed again
        assert _total(officer.get("/dashboard").get_data(as_text=True)) == 2
        assert rendered.count("_dashboard_figures.html") == 2

        # a district's figures are its own part; the province's stays as it was
        district = officer.get("/dashboard?district=Huy%E1%BB%87n+Th%C3%A1p+M%C6%B0%E1%BB%9Di").get_data(as_text=True)
        assert _total(district) == 1 and "Huyện Tháp Mười" in district
        assert _total(officer.get("/dashboard").get_data(as_text=True)) == 2
        assert rendered.count("_dashboard_figures.html") == 3

        # another language: its own part, in its words
        english = portal_signed_in(app, "health-dept", lang="en").get("/dashboard").get_data(as_text=True)
        assert _total(english) == 2 and "Consults per facility per week" in english
        assert "Số ca hội chẩn theo cơ sở mỗi tuần" in officer.get("/dashboard").get_data(as_text=True)
    finally:
        mongo_client.drop_database(name)
