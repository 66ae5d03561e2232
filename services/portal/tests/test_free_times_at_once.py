"""The booking form of a consult shows the doctor's free times of its first week without a click (walked, session
27: between two patients she opened the consult to book its video visit and found only the search, "Tìm giờ trống",
to press first). The page is not kept waiting for teleconsult's ``$find``: it asks for them itself once shown (htmx,
``hx-trigger="load"`` into ``#free-times``), and that request's answer is the times in the box or, teleconsult slow
or down, why there are none, said in the box (200: htmx swaps only a 2xx), the search kept for another range.
Flask's test client; teleconsult is the scripted fake of ``test_visit_changes`` (at the HTTP transport). The page in
Chromium: tests/browser/test_free_times_at_once.py."""

from __future__ import annotations

import html
import re
from datetime import datetime
from typing import Any

from sen_shared import http

from services.portal.tests.test_visit_changes import TID, TZ, FakeTeleconsult, _text
from services.portal.tests.test_visit_changes import app as app  # noqa: F401 - a fixture, used by name
from services.portal.tests.test_visit_changes import fake as fake  # noqa: F401 - a fixture, used by name
from tests.support import portal_signed_in

IN_BOX = {"HX-Request": "true", "HX-Target": "free-times"}  # what htmx sends for the box's own request


def _finds(fake: FakeTeleconsult) -> int:
    return sum(1 for _, path, _ in fake.calls if path.endswith("/fhir/Appointment/$find"))


def _box(page: str) -> str:
    """The ``#free-times`` box of a page (what htmx's ``hx-select`` takes from the answer)."""
    start = page.index('<div id="free-times">')
    return page[start:page.index("</div>\n", start)]


def _slow_find(monkeypatch: Any, fake: FakeTeleconsult) -> None:
    def request(method: str, url: str, **kw: Any) -> http.Response:
        if url.endswith("/fhir/Appointment/$find"):
            raise http.TimedOut("teleconsult took too long")
        return fake(method, url, **kw)

    monkeypatch.setattr(http, "request", request)


def test_the_booking_form_asks_for_its_first_weeks_free_times_once_the_page_is_shown(app, fake):  # noqa: F811
    fake.change("a-1", "cancelled", "Bác sĩ bận")  # no visit booked: the booking form
    c = portal_signed_in(app, "doctor")
    page = c.get(f"/tasks/{TID}").get_data(as_text=True)
    assert _finds(fake) == 0  # the page itself waits for no $find
    loading = re.search(r'<p class="hint" role="status" data-testid="free-times-loading" hx-get="([^"]+)" '
                        r'hx-trigger="load" hx-target="#free-times" hx-select="#free-times" hx-swap="outerHTML">'
                        r'([^<]+)</p>', page)
    assert loading, page[page.find('id="visit"'):][:3000]
    today = datetime.now(TZ).strftime("%d/%m/%Y")
    url = html.unescape(loading.group(1))
    assert url == f"/tasks/{TID}/slots?start={today}&days=7", url
    assert loading.group(2) == "Đang tìm giờ trống của bạn trong 7 ngày tới…"
    assert '<form method="get" action="/tasks/t-1/slots"' in page  # the search stays, for another range

    r = c.get(url, headers=IN_BOX)  # the box's own request: the page, its box holding the week's times
    assert r.status_code == 200 and _finds(fake) == 1
    box = _box(r.get_data(as_text=True))
    assert len(re.findall(r'<form method="post" action="/tasks/t-1/book"', box)) == 3, box
    assert "free-times-loading" not in box  # asked once

    with c.session_transaction() as kept:
        kept["lang"] = "en"
    assert "Finding your free times of the next 7 days…" in c.get(f"/tasks/{TID}").get_data(as_text=True)


def test_teleconsult_slow_is_said_in_the_box_and_the_page_is_as_it_was(app, fake, monkeypatch):  # noqa: F811
    fake.change("a-1", "cancelled", "Bác sĩ bận")
    c = portal_signed_in(app, "doctor")
    _slow_find(monkeypatch, fake)
    today = datetime.now(TZ).strftime("%d/%m/%Y")
    r = c.get(f"/tasks/{TID}/slots", query_string={"start": today, "days": "7"}, headers=IN_BOX)
    assert r.status_code == 200  # htmx swaps it
    box = _text(_box(r.get_data(as_text=True)))
    assert "Chưa tìm được giờ trống lúc này: Dịch vụ hội chẩn từ xa trả lời quá chậm." in box, box
    assert "Bấm “Tìm giờ trống” để thử lại." in box
    # the search pressed by hand (no htmx box): as before, the page saying it above, with an outage's status
    r = c.get(f"/tasks/{TID}/slots", query_string={"start": today, "days": "7"})
    assert r.status_code == 503 and "free-times-problem" not in r.get_data(as_text=True)
    # teleconsult not answering at all now (the consult not read): the box alone says it, still a 2xx
    fake.down = True
    r = c.get(f"/tasks/{TID}/slots", query_string={"start": today, "days": "7"}, headers=IN_BOX)
    assert r.status_code == 200 and r.get_data(as_text=True).startswith('<div id="free-times">')
    assert "Chưa tìm được giờ trống lúc này:" in r.get_data(as_text=True)


def test_a_booked_visit_asks_for_no_free_times_until_she_moves_it(app, fake):  # noqa: F811
    c = portal_signed_in(app, "doctor")
    page = c.get(f"/tasks/{TID}").get_data(as_text=True)  # a visit booked: its move form is behind a disclosure
    assert 'data-testid="visit-move"' in page and "free-times-loading" not in page
