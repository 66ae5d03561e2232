"""A suggestion box's request that fails (the minutes' diagnosis box asking for codes, the participants box asking
for the secretary box's names, as they are typed: htmx) is said quietly beside the suggestions' own box, "Không
tải được gợi ý."; the minutes form's own "not sent" box stays hidden, since nothing of the form was sent (it said
"Không gửi được yêu cầu…", as if the minutes had failed to go). The form's own submission failing still says so in
that box, and the next suggestions that come take the note away.

The page is the portal's own (its template, app.js and htmx), served to Chromium by the Flask test client through
Playwright's routing, teleconsult faked at the HTTP client (services/portal/tests/test_minutes_in_place); the
suggestion addresses are aborted by the route while ``offline`` holds: no stack, no network, no timing."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from services.portal.tests.test_minutes_in_place import Signing
from services.portal.tests.test_minutes_in_place import fake as fake  # noqa: F401 - a fixture, used by name
from services.portal.tests.test_visit_changes import TID
from tests.browser.served import doctor_on_her_consult, fulfil_from, routed_page

pytestmark = pytest.mark.integration

SUGGESTIONS = re.compile(r".*/(icd10/diagnoses\?.*|minutes/secretary-names)$")
NOTE = "Không tải được gợi ý."


def test_a_failed_suggestion_request_is_said_beside_its_box_not_as_the_minutes_not_sent(
        browser, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake: Signing) -> None:  # noqa: F811
    client = doctor_on_her_consult(fake, tmp_path, monkeypatch)
    offline = {"suggestions": True, "minutes": False}  # which addresses the route leaves unreachable
    aborted: list[str] = []

    def serve(route: Any) -> None:
        req, url = route.request, urlsplit(route.request.url)
        if (offline["suggestions"] and SUGGESTIONS.match(req.url)) or (
                offline["minutes"] and url.path == f"/tasks/{TID}/complete"):
            aborted.append(url.path)
            route.abort("internetdisconnected")
            return
        fulfil_from(client, route)

    with routed_page(browser, serve, f"/tasks/{TID}", "#diagnosis-suggest") as page:
        # the diagnosis box's codes: said under its list, quietly (a status, not an alert)
        page.locator("#diagnosis").press_sequentially("tăng huyết")
        note = page.locator("#diagnosis-suggest-failed")
        note.wait_for()
        assert note.inner_text() == NOTE and note.get_attribute("role") == "status"
        assert page.locator("#minutes-live-error").is_hidden() and page.locator("#connection-error").is_hidden()
        assert page.locator("[role=alert]:visible").count() == 0
        # the secretary box's names, asked as the participants are typed: said beside the secretary's list
        page.fill("#participants", "BS. Nguyễn Văn An — chủ trì\nBS. Trần Thị Bích — thư ký")
        names = page.locator("#secretary-names-failed")
        names.wait_for()
        assert names.inner_text() == NOTE
        assert page.locator("#minutes-live-error").is_hidden() and page.locator("#connection-error").is_hidden()
        assert set(aborted) == {"/icd10/diagnoses", "/minutes/secretary-names"}, aborted
        assert page.input_value("#diagnosis") == "tăng huyết"  # what was typed stays

        # the form's own submission failing is still said in its own box
        offline["minutes"] = True
        page.click("form[action$='/complete'] button.primary")
        page.locator("#minutes-live-error").wait_for()
        assert "Không gửi được yêu cầu" in page.inner_text("#minutes-live-error")
        assert fake.completed == []

        # back online: the next suggestions take the note away
        offline.update(suggestions=False, minutes=False)
        page.fill("#diagnosis", "")
        page.locator("#diagnosis").press_sequentially("I10")
        page.locator("#diagnosis-suggest [role=option]").first.wait_for()
        assert page.locator("#diagnosis-suggest-failed").is_hidden()
