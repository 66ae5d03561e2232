"""The free-times box's ``Appointment/$find`` is a search sent as a POST: it neither marks the session written nor
forgets the doctor's kept answers (``backend.call(reads=True)``). Before, its answer sent the session cookie again,
computed from the cookie its request left with: an answer arriving after a step's replaced that step's cookie (the
"asked" notice lost in session 29; notices now ride in a cookie of their own, but the session's ``wrote_at`` and
``lang`` still could be lost the same way)."""

from __future__ import annotations

import html
import re

import pytest
from sen_portal.web import backend

from services.portal.tests.test_visit_changes import TID
from services.portal.tests.test_visit_changes import app as app  # noqa: F401 - a fixture, used by name
from services.portal.tests.test_visit_changes import fake as fake  # noqa: F401 - a fixture, used by name
from tests.support import portal_signed_in

HTMX = {"HX-Request": "true", "HX-Target": "free-times"}


def _session_cookies(answer, app) -> list[str]:  # noqa: F811
    name = app.config["SESSION_COOKIE_NAME"]
    return [h for h in answer.headers.getlist("Set-Cookie") if h.startswith(f"{name}=")]


def test_the_free_times_box_sends_no_session_cookie_and_keeps_the_doctors_answers(app, fake):  # noqa: F811
    fake.change("a-1", "cancelled", "Bác sĩ bận")  # no visit booked: the booking form asks for its times at load
    doctor = portal_signed_in(app, "doctor")
    page = doctor.get(f"/tasks/{TID}").get_data(as_text=True)
    box = html.unescape(re.search(r'data-testid="free-times-loading" hx-get="([^"]+)"', page).group(1))
    with doctor.session_transaction() as sess:
        user = sess["user"]
    mine = ((str(user.get("username")), str(user.get("role")), str(user.get("facility")),
             str(user.get("practitioner"))), "teleconsult", "/fhir/x", (), "y")  # as backend._user_key makes it
    backend.answers._kept[mine] = (9e99, {}, 9e99)  # an answer kept for the doctor
    times = doctor.get(box, headers=HTMX)
    assert times.status_code == 200 and "/book" in times.get_data(as_text=True)  # the times, as the box shows them
    assert any(url.endswith("/Appointment/$find") for _, url, _ in fake.calls)  # it did ask teleconsult
    assert _session_cookies(times, app) == []  # the session untouched: no cookie to replace a step's
    assert mine in backend.answers._kept  # nothing of the doctor's forgotten


def test_a_post_that_writes_still_marks_the_session_written(app, fake):  # noqa: F811
    """The other side, at ``backend.call`` itself: a POST that writes forgets the user's answers and stamps
    ``wrote_at`` (the session sent again); one that reads does neither."""
    with app.test_request_context("/tasks/t-1"):
        from flask import session

        session["user"] = {"username": "bs.an", "role": "doctor", "facility": "bvdk-dong-thap"}
        session.modified = False
        backend.answers._kept[(backend._user_key(), "teleconsult", "/x", (), "y")] = (9e99, {}, 9e99)
        backend.call("teleconsult", "POST", "/fhir/Appointment/$find", json={"resourceType": "Parameters"},
                     reads=True)
        assert not session.modified and "wrote_at" not in session
        assert (backend._user_key(), "teleconsult", "/x", (), "y") in backend.answers._kept
        with pytest.raises(backend.BackendError):  # the fake knows no such step; the stamp comes first
            backend.call("teleconsult", "POST", f"/fhir/Task/{TID}/$request-info", json={"resourceType": "Parameters"})
        assert session.modified and session["wrote_at"] > 0
        assert (backend._user_key(), "teleconsult", "/x", (), "y") not in backend.answers._kept
