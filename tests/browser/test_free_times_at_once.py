"""The booking form shows the doctor's free times of the consult's first week with no click, and a slow teleconsult
keeps nothing waiting: the page is usable while they are looked for, then says why there are none in their box, the
search there for another range (services/portal/tests/test_free_times_at_once.py has the portal's side).

The page is the portal's own (its template, app.js and htmx), served to Chromium by the Flask test client through
Playwright's routing, teleconsult faked at the HTTP client (services/portal/tests/test_visit_changes); the box's own
request is held by the route while the test uses the page, then answered as the portal answers it with teleconsult's
``$find`` timing out: no stack, no network, no timing."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import expect
from sen_shared import http

from services.portal.tests.test_visit_changes import TID, FakeTeleconsult
from tests.browser.served import fulfil_from
from tests.support import portal_app, portal_signed_in

pytestmark = pytest.mark.integration

BOX = "#free-times"


def test_the_weeks_free_times_come_without_a_click_and_a_slow_search_blocks_nothing(
        browser, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeTeleconsult.answering(monkeypatch)
    fake.change("a-1", "cancelled", "Bác sĩ bận")  # no visit booked: the booking form
    slow = {"find": False}

    def request(method: str, url: str, **kw: Any) -> http.Response:
        if slow["find"] and url.endswith("/fhir/Appointment/$find"):
            raise http.TimedOut("teleconsult took too long")
        return fake(method, url, **kw)

    monkeypatch.setattr(http, "request", request)
    client = portal_signed_in(portal_app(tmp_path, monkeypatch, backend="http://127.0.0.1:9",
                                         SEN_PORTAL_CACHE_SECONDS="0"), "doctor")
    hold, held = {"box": False}, []

    def serve(route: Any) -> None:
        if hold["box"] and urlsplit(route.request.url).path == f"/tasks/{TID}/slots" \
                and route.request.headers.get("hx-target") == "free-times":
            held.append(route)  # answered when the test says
            return
        fulfil_from(client, route)

    ctx = browser.new_context(viewport={"width": 1280, "height": 900}, locale="vi-VN",
                              timezone_id="Asia/Ho_Chi_Minh")
    try:
        page = ctx.new_page()
        page.route("http://portal.test/**", serve)

        # the consult's page: the week's free times fill the booking box by themselves, the page still the consult's
        page.goto(f"http://portal.test/tasks/{TID}")
        expect(page.locator(f"{BOX} form[action$='/book'] button")).to_have_count(3)
        assert urlsplit(page.url).path == f"/tasks/{TID}"
        assert page.locator(f"{BOX} .slot-day").count() == 1
        assert page.locator("[data-testid=free-times-loading]").count() == 0  # asked once

        # teleconsult slow: while the times are looked for, the page is there to use
        hold["box"], slow["find"] = True, True
        with page.expect_request(lambda r: urlsplit(r.url).path == f"/tasks/{TID}/slots"):
            page.reload()
        expect(page.locator("[data-testid=free-times-loading]")).to_have_text(
            "Đang tìm giờ trống của bạn trong 7 ngày tới…")
        typed = "Chị xem giúp kết quả men tim lúc 14 giờ."
        page.locator("[data-testid=message-form] textarea").fill(typed)
        expect(page.locator("form[action$='/slots'] button")).to_be_enabled()
        while not held:  # the route's handler runs as Playwright dispatches: let it
            page.wait_for_timeout(20)
        fulfil_from(client, held.pop())  # the portal's answer: $find timed out
        note = page.locator(f"{BOX} [data-testid=free-times-problem]")
        expect(note).to_contain_text("Chưa tìm được giờ trống lúc này: Dịch vụ hội chẩn từ xa trả lời quá chậm.")
        expect(note).to_contain_text("Bấm “Tìm giờ trống” để thử lại.")
        assert page.locator("#connection-error").is_hidden()  # said in the box, not as a connection lost
        assert page.locator("[data-testid=message-form] textarea").input_value() == typed  # nothing lost

        # another range is one click away, as before
        hold["box"], slow["find"] = False, False
        page.click("form[action$='/slots'] button")
        expect(page.locator(f"{BOX} form[action$='/book'] button")).to_have_count(3)
        assert urlsplit(page.url).path == f"/tasks/{TID}/slots"
    finally:
        ctx.close()
