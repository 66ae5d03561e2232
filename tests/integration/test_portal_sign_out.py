"""Signing out ends the session on the server: a copy of the cookie opens no page afterwards.

Attempted in the security review of session 25, as an attacker with a copy of a clinic nurse's session
cookie (a shared clinic computer, a cookie read off a proxy's log): after the nurse pressed "Đăng xuất",
the copy still opened every page (200) until the session's idle expiry, since the portal's session is a
signed cookie the server keeps nothing of. Signing out now records the session's id in the portal's
database (``web.signouts``), and every worker refuses its cookie.
"""

from __future__ import annotations

import pytest

from tests.support import csrf_token, portal_app, portal_signed_in

pytestmark = pytest.mark.integration


@pytest.fixture()
def portal(tmp_path, monkeypatch, mongo_url, fresh_db):
    return portal_app(tmp_path, monkeypatch, MONGO_URL=mongo_url, SEN_DB=fresh_db.name)


def _cookie(client) -> str:
    return client.get_cookie("sen_portal").value


def test_a_copy_of_the_cookie_opens_nothing_after_sign_out(portal, fresh_db) -> None:
    from sen_portal.web import signouts

    nurse = portal_signed_in(portal, "clinic")
    assert nurse.get("/session/alive").status_code == 204
    thief = portal.test_client()
    thief.set_cookie("sen_portal", _cookie(nurse))
    assert thief.get("/session/alive").status_code == 204  # the copy works while the nurse is signed in
    colleague = portal_signed_in(portal, "clinic")  # the same account signed in elsewhere: its own session

    token = csrf_token(nurse.get("/login").get_data(as_text=True))
    out = nurse.post("/logout", data={"csrf_token": token})
    assert out.status_code == 302 and out.headers["Location"].endswith("/login")
    assert fresh_db[signouts.SIGNED_OUT].count_documents({}) == 1

    assert thief.get("/session/alive").status_code == 401  # failed before: 204, the copy still signed in
    page = thief.get("/patients")
    assert page.status_code == 302 and "/login" in page.headers["Location"]
    signouts._signed_out.clear()  # another worker, which only the database tells
    signouts._seen_live.clear()
    assert thief.get("/session/alive").status_code == 401
    assert colleague.get("/session/alive").status_code == 204  # no other session ended

    again = portal_signed_in(portal, "clinic")  # signing in again is a new session
    assert again.get("/session/alive").status_code == 204
