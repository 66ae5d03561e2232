"""The dashboard's From and To boxes say the period its figures are of. Opened without dates (the officer's
first look, the default 12 weeks up to today in Vietnam), the boxes were empty, showing only their
"ngày/tháng/năm" hint, while every figure was of a period she could read only in the line under the form
(found walking the dashboard at 1280 and 360 px); a box left empty beside a date typed said nothing either.
The download links still carry only what the address asked (the files work the default out themselves)."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from services.portal.tests.test_dashboard_in_use_rule import _with
from tests.support import portal_app, portal_signed_in

USING = {"count": 25, "new": 3, "baseline": 22, "goal": 165, "share": 0.1515, "baseline_named": False,
         "baseline_using": None}


def _box(page: str, name: str) -> str:
    tag = re.search(rf'<input[^>]* id="{name}"[^>]*>', page).group(0)
    return (re.search(r'value="([^"]*)"', tag) or [None, ""])[1]


@pytest.fixture()
def client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from sen_portal.web import dashboard, directory

    monkeypatch.setattr(directory, "names", lambda rtype: {})
    monkeypatch.setattr(dashboard, "districts", lambda *a: [])
    monkeypatch.setattr(dashboard, "facilities", lambda *a: {})
    monkeypatch.setattr(dashboard, "figures", _with(USING))
    return portal_signed_in(portal_app(tmp_path, monkeypatch), "health-dept")


def test_opened_without_dates_the_boxes_say_the_default_period(client) -> None:
    from sen_portal.web.dashboard import DEFAULT_DAYS

    end = datetime.now(ZoneInfo("Asia/Ho_Chi_Minh")).date()
    start = end - timedelta(days=DEFAULT_DAYS - 1)
    page = client.get("/dashboard").get_data(as_text=True)
    assert (_box(page, "start"), _box(page, "end")) == (start.strftime("%d/%m/%Y"), end.strftime("%d/%m/%Y"))
    assert 'href="/dashboard/facilities_using.csv"' in page  # the files: as the address asked, nothing more


def test_a_box_left_empty_beside_a_date_says_the_date_used(client) -> None:
    from sen_portal.web.dashboard import DEFAULT_DAYS

    page = client.get("/dashboard?start=&end=30/11/2026").get_data(as_text=True)
    start = (datetime(2026, 11, 30) - timedelta(days=DEFAULT_DAYS - 1)).strftime("%d/%m/%Y")
    assert (_box(page, "start"), _box(page, "end")) == (start, "30/11/2026")
