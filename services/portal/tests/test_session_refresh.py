"""The portal's session cookie: a changed session is sent at once; an unchanged one is sent again
(its idle expiry moved on) at most once a minute, not on every request (the invoice status box
is asked for every 2 s). Flask test client, no back-end."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from sen_portal.web import SessionInterface

from tests.support import portal_app


@pytest.fixture()
def client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    with portal_app(tmp_path, monkeypatch).test_client() as c:
        yield c


def _set_cookie(response) -> str | None:
    return next((h for h in response.headers.getlist("Set-Cookie") if h.startswith("sen_portal=")), None)


def _sign_in(client) -> None:
    page = client.get("/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page).group(1)
    r = client.post("/login", data={"username": "cashier", "password": "sen-cashier", "csrf_token": token})
    assert r.status_code == 302 and _set_cookie(r) is not None  # signing in changes the session: sent


def test_an_unchanged_session_is_not_sent_again_within_the_minute(client) -> None:
    _sign_in(client)
    client.get("/login")  # the page's first form puts its CSRF secret in the session (done at sign-in)
    r = client.get("/")
    assert r.status_code == 302 and "/login" not in r.headers["Location"]  # signed in: to the role's page
    assert _set_cookie(r) is None  # signed a moment ago: the browser's cookie still runs an hour


def test_an_unchanged_session_is_sent_again_after_the_minute(client, monkeypatch: pytest.MonkeyPatch) -> None:
    _sign_in(client)
    monkeypatch.setattr(SessionInterface, "REFRESH_SECONDS", 0)
    r = client.get("/")
    cookie = _set_cookie(r)
    assert cookie is not None and "Expires=" in cookie  # its idle expiry moved on
    again = client.get("/")  # the refreshed cookie reads back: still signed in
    assert again.status_code == 302 and "/login" not in again.headers["Location"]


def test_a_changed_session_is_sent_at_once(client) -> None:
    _sign_in(client)
    page = client.get("/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page).group(1)
    r = client.post("/language", data={"lang": "en", "next": "/", "csrf_token": token})
    assert r.status_code == 302 and _set_cookie(r) is not None  # within the minute, changed: sent


def test_typing_keeps_the_session_alive_and_a_signed_out_one_is_said(client, monkeypatch: pytest.MonkeyPatch) -> None:
    """Review 10: app.js asks /session/alive while the user types (at most every 5 minutes), so minutes written for
    longer than the idle expiry after a video visit are not signed out at their send; the page names the address
    only when signed in. Signed out: 401, nothing kept alive."""
    _sign_in(client)
    assert 'data-alive="/session/alive"' in client.get("/prices").get_data(as_text=True)
    monkeypatch.setattr(SessionInterface, "REFRESH_SECONDS", 0)
    r = client.get("/session/alive")
    assert r.status_code == 204 and r.headers["Cache-Control"] == "no-store"
    cookie = _set_cookie(r)
    assert cookie is not None and "Expires=" in cookie  # its idle expiry moved on
    client.delete_cookie("sen_portal")
    assert client.get("/session/alive").status_code == 401
    assert "data-alive" not in client.get("/login").get_data(as_text=True)
