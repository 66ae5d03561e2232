"""The portal's own database (MongoDB: the reporting read model the dashboard reads) out of reach: the dashboard,
its CSV and workbook downloads and an htmx request for it are "Dịch vụ tạm thời không dùng được" / "Service
unavailable" (503, Retry-After) saying the figures cannot be read right now, as a back-end's outage is, not 500
"Đã có lỗi"; htmx's goes into the page's problem box (``HX-Retarget``); the JSON API's is an RFC 9457 problem 503.
One handler for pymongo's errors (``web._database_error``), none in the pages. The sign-out check keeps serving
the pages that read no database (``web/signouts.py``). A page asks the database once: the first use that finds it
out of reach (the sign-out check before the page, here) marks the request, and the rest of it does not ask again
(``sen_portal.portal_db``); the next request does.

``portal_app``'s ``MONGO_URL`` is a closed loopback port: each read waits out the client's server selection
(``sen_shared.mongo.CLIENT_OPTIONS``, 0.3 s here: ``tests.support.quick_server_selection``), or its own
``pymongo.timeout`` (the sign-out check's, 0.3 s here too), then fails. The attempts counted are pymongo's failed
server selections (``database_attempts``)."""

from __future__ import annotations

import html
import re
from pathlib import Path

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
    from sen_portal import portal_db
    from sen_portal.web import dashboard

    monkeypatch.setattr(dashboard, "org_names", lambda: {})  # the directory (the EHR) answers; only MongoDB is down
    monkeypatch.setattr(dashboard, "org_districts", lambda: {})
    monkeypatch.setattr(dashboard, "org_without_care", lambda: set())
    app = portal_app(tmp_path, monkeypatch)
    # after portal_app, which starts a page test's app as after a failed read (no database, so out of reach for
    # good): these pages ask the database, whose address answers nothing
    monkeypatch.setattr(portal_db, "_unreachable_until", 0.0)
    return app


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
    from sen_portal import portal_db
    from sen_portal.web import dashboard

    # the database answers here (the error is its answer): the sign-out check does not ask the closed port
    monkeypatch.setattr(portal_db, "_unreachable_until", float("inf"))

    def broken(*args, **kwargs):
        raise OperationFailure("unknown operator: $nope", code=2)

    monkeypatch.setattr(dashboard, "compute", broken)
    client = portal_signed_in(app, "health-dept")
    r = client.get("/dashboard", query_string=RANGE)
    assert r.status_code == 500 and "Đã có lỗi" in r.get_data(as_text=True)


def test_a_page_asks_the_database_once(app, monkeypatch):
    """The sign-out check asks first (its 0.5 s; 0.3 s here) and finds the database out of reach: the dashboard's
    figures then do not ask it again in that request (before: a second wait, the client's server selection), the
    page is the same 503. The next page asks again (the sign-out check waits its minute: the figures ask)."""
    from sen_portal import portal_db

    client = portal_signed_in(app, "health-dept")
    monkeypatch.setattr(portal_db, "_unreachable_until", 0.0)  # the sign-out check asks on the next page
    with failed_attempts() as attempts:
        _outage(client.get("/dashboard", query_string=RANGE))
        assert attempts.take() == 1  # the sign-out check's; none for the figures
        _outage(client.get("/dashboard", query_string=RANGE))
        assert attempts.take() == 1  # the figures': the next request asks again


def test_pages_that_read_no_database_are_served_and_signing_out_still_ends_the_session(app, monkeypatch):
    """signouts.py: whether the session signed out cannot be read (the database asked, not answering), the page is
    served (and the database not asked again a while); signed out, this process refuses a copy of the cookie all
    the same."""
    from sen_portal import portal_db

    from tests.support import csrf_token

    client = portal_signed_in(app, "clinic")
    monkeypatch.setattr(portal_db, "_unreachable_until", 0.0)  # nothing asked it since the app started
    with failed_attempts() as attempts:
        assert client.get("/session/alive").status_code == 204
        assert attempts.take() == 1  # the sign-out check read the database, which did not answer
        with client.session_transaction() as kept:
            copied = dict(kept)
        token = csrf_token(client.get("/consults").get_data(as_text=True))  # its sign-out form (teleconsult down)
        r = client.post("/logout", data={"csrf_token": token})
        assert r.status_code in (302, 303), r.get_data(as_text=True)[-500:]
        assert attempts.take() == 0  # not asked again a while: neither the check nor the sign-out's record
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
