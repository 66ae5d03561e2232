"""The portal's own database (MongoDB: the reporting read model the dashboard reads) out of reach: the dashboard,
its CSV and workbook downloads and an htmx request for it are "Dịch vụ tạm thời không dùng được" / "Service
unavailable" (503, Retry-After) saying the figures cannot be read right now, as a back-end's outage is, not 500
"Đã có lỗi"; htmx's goes into the page's problem box (``HX-Retarget``); the JSON API's is an RFC 9457 problem 503.
One handler for pymongo's errors (``web._database_error``), none in the pages. The sign-out check keeps serving
the pages that read no database (``web/signouts.py``). A page asks the database at most once: the first use that
finds it out of reach (the sign-out check before the page, here) marks the request, and the rest of it does not ask
again; once pymongo's monitor has found it out of reach, no page asks it at all until the monitor finds it back
(``sen_portal.portal_db``; the recovery against a real FerretDB: tests/integration/test_portal_database_outage.py).

``portal_app``'s ``MONGO_URL`` is a closed loopback port: a read waits out the client's server selection
(``sen_shared.mongo.CLIENT_OPTIONS``, 0.3 s here: ``tests.support.quick_server_selection``, which also gives each
test a client of its own, that has checked nothing yet), or its own ``pymongo.timeout`` (the sign-out check's,
0.3 s here too), then fails. The attempts counted are pymongo's server selections (``database_attempts``)."""

from __future__ import annotations

import html
import re
import time
from pathlib import Path
from typing import Any

import pytest

from services.portal.tests.database_attempts import failed_attempts
from tests.support import portal_app, portal_signed_in, quick_server_selection

RANGE = {"start": "07/09/2026", "end": "20/09/2026"}


def _text(page: str) -> str:
    return html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", page)))


@pytest.fixture(autouse=True)
def _quick_server_selection(monkeypatch: pytest.MonkeyPatch):
    """The database's clients of this module's tests wait 0.3 s for a server, not production's 5 s: the same
    ServerSelectionTimeoutError at the end, sooner (the module took 44 s, nearly all of it waiting). The sign-out
    check's own bound (``pymongo.timeout``, which replaces the client's wait for a server) is 0.3 s too."""
    from sen_portal.web import signouts

    monkeypatch.setattr(signouts, "READ_SECONDS", 0.3)
    with quick_server_selection(monkeypatch):
        yield


@pytest.fixture()
def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from sen_portal.web import dashboard

    monkeypatch.setattr(dashboard, "org_names", lambda: {})  # the directory (the EHR) answers; only MongoDB is down
    monkeypatch.setattr(dashboard, "org_districts", lambda: {})
    monkeypatch.setattr(dashboard, "org_without_care", lambda: set())
    return portal_app(tmp_path, monkeypatch)  # its client (quick_server_selection's) has asked nothing yet


def _known_out_of_reach(app: Any) -> None:
    """Until pymongo's monitor of the app's database client has found it out of reach (its first check, begun with
    the first use: a refused connection, at once); the test fails if it never does."""
    from sen_portal import portal_db

    with app.app_context():
        db = portal_db.database()
    deadline = time.monotonic() + 30
    while not portal_db.known_out_of_reach(db):
        assert time.monotonic() < deadline, "pymongo's monitor did not find the closed port out of reach"
        time.sleep(0.02)


def _outage(r, lang: str = "vi") -> str:
    page = r.get_data(as_text=True)
    assert r.status_code == 503 and r.mimetype == "text/html", (r.status_code, page[-800:])
    assert r.headers["Retry-After"].isdigit()
    text = _text(page)
    if lang == "vi":
        assert "Dịch vụ tạm thời không dùng được" in text and "Đã có lỗi" not in text, text[-600:]
        assert "Chưa đọc được số liệu của bảng điều hành lúc này" in text, text[-600:]
    else:
        assert "Service unavailable" in text and "Something went wrong" not in text, text[-600:]
        assert "The dashboard's figures cannot be read right now" in text, text[-600:]
    return text


@pytest.mark.parametrize("lang", ["vi", "en"])
def test_the_dashboard_is_service_unavailable_in_the_users_language(app, lang):
    client = portal_signed_in(app, "health-dept", lang)
    _outage(client.get("/dashboard", query_string=RANGE), lang)


@pytest.mark.parametrize("ext", ["csv", "xlsx"])
def test_its_downloads_are_service_unavailable(app, ext):
    client = portal_signed_in(app, "health-dept")
    _outage(client.get(f"/dashboard/time_to_answer.{ext}", query_string=RANGE))


def test_under_htmx_the_message_goes_into_the_pages_problem_box(app):
    client = portal_signed_in(app, "health-dept")
    r = client.get("/dashboard", query_string=RANGE, headers={"HX-Request": "true",
                                                                "HX-Current-URL": "http://localhost/dashboard"})
    _outage(r)
    assert r.headers["HX-Retarget"] == "#page-problem" and r.headers["HX-Reselect"] == "#problem"


def test_a_database_error_that_is_no_outage_stays_a_failure(app, monkeypatch):
    from pymongo.errors import OperationFailure
    from sen_portal.web import dashboard, signouts

    # the database answers here (the error is its answer): the sign-out check does not ask the closed port
    monkeypatch.setattr(signouts, "was_signed_out", lambda sid: False)

    def broken(*args, **kwargs):
        raise OperationFailure("unknown operator: $nope", code=2)

    monkeypatch.setattr(dashboard, "compute", broken)
    client = portal_signed_in(app, "health-dept")
    r = client.get("/dashboard", query_string=RANGE)
    assert r.status_code == 500 and "Đã có lỗi" in r.get_data(as_text=True)


def test_a_page_asks_the_database_once_and_none_asks_while_it_is_known_out_of_reach(app):
    """The sign-out check asks first (its 0.5 s; 0.3 s here) and finds the database out of reach: the dashboard's
    figures then do not ask it again in that request (before: a second wait, the client's server selection), the
    page is the same 503. pymongo's monitor has found it out of reach meanwhile: the next pages (the dashboard, its
    download, htmx's) ask it not at all, the same 503 at once. Failed before: each of them waited the figures'
    server selection (5 s in production), the sign-out check alone skipping the database a minute."""
    client = portal_signed_in(app, "health-dept")
    with failed_attempts() as attempts:
        _outage(client.get("/dashboard", query_string=RANGE))
        assert attempts.take() == 1  # the sign-out check's; none for the figures
        _known_out_of_reach(app)
        attempts.asked()
        _outage(client.get("/dashboard", query_string=RANGE))
        _outage(client.get("/dashboard/time_to_answer.csv", query_string=RANGE))
        _outage(client.get("/dashboard", query_string=RANGE, headers={"HX-Request": "true"}))
        assert (attempts.take(), attempts.asked()) == (0, 0)  # failed before: (3, 3), the figures' each time


def test_what_a_session_keeps_is_not_asked_for_while_the_database_is_known_out_of_reach(app, monkeypatch):
    """A search kept in the address (``/patients?s=``: web/searches.py, what the session keeps: web/kept.py) read
    in an outage: the first page's sign-out check finds the database out of reach, and no later page asks it for
    what the session kept; each is the empty search, as before. Failed before: every later page's read of it asked
    (its 0.5 s; the sign-out check skipped a minute, that read did not)."""
    from sen_portal import portal_db
    from sen_portal.web import kept

    monkeypatch.setattr(kept, "_db", portal_db.database)  # the portal's database, not portal_app's stand-in
    client = portal_signed_in(app, "clinic")
    with failed_attempts() as attempts:
        assert client.get("/patients?s=abcdefgh").status_code == 200
        assert attempts.take() == 1  # the sign-out check's; the kept search not asked in that request
        _known_out_of_reach(app)
        attempts.asked()
        for _ in range(3):
            page = client.get("/patients?s=abcdefgh")
            assert page.status_code == 200 and 'name="q"' in page.get_data(as_text=True)
        assert (attempts.take(), attempts.asked()) == (0, 0)  # failed before: (3, 3)


def test_pages_that_read_no_database_are_served_and_signing_out_still_ends_the_session(app):
    """signouts.py: whether the session signed out cannot be read (the database asked, not answering), the page is
    served (and the database not asked again while pymongo knows it out of reach); signed out, this process refuses
    a copy of the cookie all the same."""
    from tests.support import csrf_token

    client = portal_signed_in(app, "clinic")
    with failed_attempts() as attempts:
        assert client.get("/session/alive").status_code == 204
        assert attempts.take() == 1  # the sign-out check read the database, which did not answer
        _known_out_of_reach(app)
        with client.session_transaction() as kept:
            copied = dict(kept)
        token = csrf_token(client.get("/consults").get_data(as_text=True))  # its sign-out form (teleconsult down)
        r = client.post("/logout", data={"csrf_token": token})
        assert r.status_code in (302, 303), r.get_data(as_text=True)[-500:]
        assert attempts.take() == 0  # not asked while known out of reach: neither the check nor the sign-out's record
    with client.session_transaction() as kept:
        kept.update(copied)  # a copy of the cookie taken before
    assert client.get("/session/alive").status_code == 401


def test_the_json_api_is_a_problem_503(tmp_path, monkeypatch):
    from sen_portal.app import create_app
    from sen_shared.auth import issue_dev_token

    portal_app(tmp_path, monkeypatch)
    token = issue_dev_token(tmp_path / "dev.pem", "health-dept")
    with create_app().test_client() as client:
        for path in ("/api/reports/dashboard", "/api/reports/time_to_answer.csv", "/api/reports/events"):
            r = client.get(path, params={"start": "2026-09-07", "end": "2026-09-20"} if "dashboard" in path else {},
                           headers={"Authorization": f"Bearer {token}"})
            assert r.status_code == 503, (path, r.status_code, r.text[:300])
            assert r.headers["content-type"].startswith("application/problem+json")
            assert r.json()["status"] == 503 and r.headers["Retry-After"].isdigit()
