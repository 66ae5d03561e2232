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
from tests.browser.served import fulfil_from
from tests.support import portal_app, portal_signed_in

pytestmark = pytest.mark.integration

SUGGESTIONS = re.compile(r".*/(icd10/diagnoses\?.*|minutes/secretary-names)$")
NOTE = "Không tải được gợi ý."


def test_a_failed_suggestion_request_is_said_beside_its_box_not_as_the_minutes_not_sent(
        browser, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake: Signing) -> None:  # noqa: F811
    fake.status, fake.owner = "in-progress", "Practitioner/bs-nguyen-van-an"
    app = portal_app(tmp_path, monkeypatch, backend="http://127.0.0.1:9", SEN_PORTAL_CACHE_SECONDS="0")
    client = portal_signed_in(app, "doctor")
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

    ctx = browser.new_context(viewport={"width": 1280, "height": 900}, locale="vi-VN",
                              timezone_id="Asia/Ho_Chi_Minh")
    try:
        page = ctx.new_page()
        page.route("http://portal.test/**", serve)
        page.goto(f"http://portal.test/tasks/{TID}")
        page.wait_for_function("() => window.htmx && document.querySelector('#diagnosis-suggest')")

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
    finally:
        ctx.close()
