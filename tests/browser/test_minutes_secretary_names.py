"""The minutes' secretary box suggests the participants as they are typed on the page, not as the page was drawn:
the participants box (and the chair's) ask the portal for the suggestions again as they are edited (htmx), and
the datalist follows, the chair aside.

The page is the portal's own (its template, app.js and htmx), served to Chromium by the Flask test client through
Playwright's routing, teleconsult faked at the HTTP client (services/portal/tests/test_minutes_in_place): no
stack, no network."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from services.portal.tests.test_minutes_in_place import Signing
from services.portal.tests.test_minutes_in_place import fake as fake  # noqa: F401 - a fixture, used by name
from services.portal.tests.test_visit_changes import TID
from tests.browser.served import doctor_on_her_consult, fulfil_from, routed_page

pytestmark = pytest.mark.integration

PARTICIPANTS = ("BS. Nguyễn Văn An — chủ trì\nBS. Trần Thị Bích — thư ký, Bệnh viện Đa khoa Đồng Tháp\n"
                "YS. Võ Minh Tâm — cơ sở gửi; ĐD. Lê Thị Hoa")
NAMES = "() => [...document.querySelectorAll('#secretary-names option')].map(o => o.value)"


def test_the_secretary_suggestions_follow_the_participants_edited_on_the_page(
        browser, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake: Signing) -> None:  # noqa: F811
    client = doctor_on_her_consult(fake, tmp_path, monkeypatch)
    asked: list[str] = []

    def serve(route: Any) -> None:
        if route.request.method == "POST":
            asked.append(urlsplit(route.request.url).path)
        fulfil_from(client, route)

    with routed_page(browser, serve, f"/tasks/{TID}", "#secretary-names") as page:
        drawn = page.evaluate(NAMES)
        assert not any("Nguyễn Văn An" in n for n in drawn), drawn  # the chair aside, as drawn
        page.fill("#participants", PARTICIPANTS)
        page.wait_for_function(f"() => ({NAMES})().length === 3")
        assert page.evaluate(NAMES) == ["BS. Trần Thị Bích", "YS. Võ Minh Tâm", "ĐD. Lê Thị Hoa"]
        # the list edited: a participant taken off is no longer suggested
        page.fill("#participants", PARTICIPANTS.replace("; ĐD. Lê Thị Hoa", ""))
        page.wait_for_function(f"() => ({NAMES})().length === 2")
        assert page.evaluate(NAMES) == ["BS. Trần Thị Bích", "YS. Võ Minh Tâm"]
        # another chair named: the new chair aside, the one who was chair suggested
        page.fill("#chair", "BS. Trần Thị Bích")
        page.wait_for_function(f"() => ({NAMES})().includes('BS. Nguyễn Văn An')")
        assert page.evaluate(NAMES) == ["BS. Nguyễn Văn An", "YS. Võ Minh Tâm"]
        assert set(asked) == {"/minutes/secretary-names"}, asked  # POSTed: the names in no address
        assert page.get_attribute("#secretary", "list") == "secretary-names"  # the box still reads the list
        assert fake.completed == []  # nothing signed by it
