"""A page served to Chromium by a Flask test client through Playwright's routing: no stack, no network.

``fulfil_from(client, route)`` answers one routed request with what the portal's test client answers the same
method, path, query and body (the content type, the CSRF token and htmx's own headers passed on), so the page runs
its real template, app.js and htmx against the app under test. ``routed_page(browser, serve, path, ready)`` opens
a page whose every request goes to ``serve`` (a route handler calling ``fulfil_from``, or aborting);
``doctor_on_her_consult(fake, ...)`` is the test client of the minutes' pages."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from tests.support import portal_app, portal_signed_in

ORIGIN = "http://portal.test"  # the routed pages' address: nothing listens there, Playwright's routing answers


def fulfil_from(client: Any, route: Any) -> None:
    req, url = route.request, urlsplit(route.request.url)
    r = client.open(url.path + (f"?{url.query}" if url.query else ""), method=req.method,
                    data=req.post_data_buffer, headers={k: v for k, v in req.headers.items()
                                                        if k.lower() in ("content-type", "x-csrftoken")
                                                        or k.lower().startswith("hx-")})
    route.fulfill(status=r.status_code, body=r.data,
                  headers={"Content-Type": r.headers.get("Content-Type", "text/plain")})


@contextmanager
def routed_page(browser: Any, serve: Callable[[Any], None], path: str, ready: str) -> Iterator[Any]:
    """A Chromium page (1280 x 900, Vietnamese, Vietnam's time) whose requests to :data:`ORIGIN` are answered by
    ``serve(route)``, opened at ``path`` and given once htmx and the element ``ready`` (a CSS selector) are on it;
    its browser context is closed afterwards."""
    ctx = browser.new_context(viewport={"width": 1280, "height": 900}, locale="vi-VN",
                              timezone_id="Asia/Ho_Chi_Minh")
    try:
        page = ctx.new_page()
        page.route(f"{ORIGIN}/**", serve)
        page.goto(f"{ORIGIN}{path}")
        page.wait_for_function(f"() => window.htmx && document.querySelector('{ready}')")
        yield page
    finally:
        ctx.close()


def doctor_on_her_consult(fake: Any, tmp_path: Path, monkeypatch: Any) -> Any:
    """The demo doctor's test client on a page-test portal whose teleconsult is ``fake`` (test_minutes_in_place's
    Signing, at the HTTP client), the consult it holds in progress and hers: its page shows the minutes' form."""
    fake.status, fake.owner = "in-progress", "Practitioner/bs-nguyen-van-an"
    app = portal_app(tmp_path, monkeypatch, backend="http://127.0.0.1:9", SEN_PORTAL_CACHE_SECONDS="0")
    return portal_signed_in(app, "doctor")
