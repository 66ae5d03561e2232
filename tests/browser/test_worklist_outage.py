"""The worklist's refresh (every 30 s) answered 503 by the portal (teleconsult stopped or too slow: the list could
not be read, web.doctor.worklist) names its table as the target (``HX-Retarget: #worklist``), and app.js swaps it in:
the doctor reads why the list is not there, in the page's language, not a stale list and no "could not be sent"
(htmx swaps no 5xx by itself). The answer is the portal's, held by the test (a Playwright route), not timed."""

from __future__ import annotations

import re
from typing import Any

import pytest

pytestmark = pytest.mark.integration

SAID = "Dịch vụ hội chẩn từ xa trả lời quá chậm. Vui lòng thử lại sau giây lát."


def test_the_worklist_refresh_answered_503_shows_why(visitor_factory):
    v = opened_as(visitor_factory, "vi-360-worklist-outage", "doctor", "/worklist", clock=True)
    answer_503(v.page, r".*/worklist.*", "div", "worklist", SAID)
    v.page.clock.run_for(31_000)
    shown_in_place(v.page, "worklist", SAID)
    v.shot("vi-360-worklist-refresh-503", full_page=False)


def opened_as(visitor_factory: Any, tag: str, user: str, path: str, clock: bool = False) -> Any:
    """A phone-sized tab (360 px) signed in as ``user`` at ``path``, the page's clock installed first if
    ``clock``: the visitor."""
    v = visitor_factory(tag, width=360, height=740)
    v.sign_in(user)
    if clock:
        v.page.clock.install()
    v.go(path)
    return v


def answer_503(page: Any, url: str, tag: str, target: str, said: str) -> None:
    """Answer the page's htmx requests to ``url`` (a pattern) as the portal does when a back-end is down: 503,
    the message in a ``tag`` with id ``target`` and ``HX-Retarget`` naming it; other requests go through."""
    body = f'<{tag} id="{target}"><div class="alert error" role="alert">{said}</div></{tag}>'
    page.route(re.compile(url), lambda route: route.fulfill(
        status=503, body=body, content_type="text/html; charset=utf-8", headers={"HX-Retarget": f"#{target}"})
        if route.request.headers.get("hx-request") else route.continue_())


def shown_in_place(page: Any, target: str, said: str) -> None:
    """The message swapped into ``target``, and no "could not be sent"."""
    alert = page.locator(f"#{target} [role=alert]")
    alert.wait_for(state="visible")
    assert alert.inner_text() == said
    assert page.locator("#connection-error").is_hidden()
