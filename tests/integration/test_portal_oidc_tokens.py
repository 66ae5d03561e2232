"""An OIDC sign-in's tokens stay on the server: the portal's session cookie names the session, never holds a token.

Security review (session 26): the session cookie is signed, not encrypted, and held the OIDC access token, so a
copy of it (a shared clinic computer, a proxy's log) gave its holder the bearer token itself, to call
teleconsult, billing and the EHR directly until it expired, even after the user signed out of the portal.
The tokens are now the portal database's ``session_tokens``, one insert per generation (``web/tokens.py``).
Against the real database and a real OpenID Connect provider (Authlib's, on loopback, rotating refresh tokens).
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest
from flask.sessions import SecureCookieSessionInterface
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from services.portal.tests.database_attempts import failed_attempts
from services.portal.tests.oidc_provider import Provider, User, through_provider
from tests.support import csrf_token, portal_app

pytestmark = pytest.mark.integration

DOCTOR = User("kc-7f3a", "BS. Trần Thị Bích", {"roles": ["doctor"], "facility": "bvdk-dong-thap",
                                               "practitioner": "bs-tran-thi-bich"})


class Backends:
    """Teleconsult, the EHR and billing as one loopback server answering every request with an empty FHIR
    search, recording the bearer token of each."""

    def __init__(self) -> None:
        self.bearers: list[str] = []
        self._server = make_server("127.0.0.1", 0, self._answer, threaded=True)
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        threading.Thread(target=self._server.serve_forever, daemon=True, name="backends").start()

    @Request.application
    def _answer(self, request: Request) -> Response:
        self.bearers.append(request.headers.get("Authorization", "").removeprefix("Bearer "))
        return Response(json.dumps({"resourceType": "Bundle", "type": "searchset", "total": 0, "entry": []}),
                        content_type="application/fhir+json")

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture()
def provider():
    p = Provider(client_id="sen-portal", redirect_prefix="http://localhost/auth/callback", user=DOCTOR,
                 audience="sen", refresh=True).start()
    yield p
    p.stop()


@pytest.fixture()
def backends():
    b = Backends()
    yield b
    b.stop()


@pytest.fixture()
def portal(tmp_path, monkeypatch, mongo_url, fresh_db, provider, backends):
    from sen_portal.web import signouts, tokens

    app = portal_app(tmp_path, monkeypatch, backend=backends.url, MONGO_URL=mongo_url, SEN_DB=fresh_db.name,
                     SEN_OIDC_ISSUER=provider.issuer, SEN_OIDC_CLIENT_ID="sen-portal", SEN_JWT_ISSUER=provider.issuer,
                     SEN_JWKS_URL=f"{provider.issuer}/jwks", SEN_JWT_AUDIENCE="sen", SEN_PORTAL_CACHE_SECONDS="0")
    for kept in (tokens._kept, signouts._signed_out, signouts._seen_live):
        kept.clear()
    return app


def _sign_in(portal: Any) -> Any:
    return _signed_in(portal)[0]


def _signed_in(portal: Any) -> tuple[Any, str]:
    """A test client signed in through the provider (code + PKCE + JWKS), and the callback it opened."""
    client = portal.test_client()
    callback, _ = through_provider(client)
    r = client.get(callback)
    assert r.status_code == 302 and r.headers["Location"].endswith("/worklist"), r.get_data(as_text=True)[:500]
    return client, callback


def _cookie(portal: Any, client: Any) -> dict[str, Any]:
    """The session cookie as anyone holding a copy reads it: Flask's serializer with the portal's (development)
    secret; itsdangerous only checks the signature, nothing is encrypted."""
    return SecureCookieSessionInterface().get_signing_serializer(portal).loads(client.get_cookie("sen_portal").value)


def _another_worker() -> None:
    """What another worker process knows of the sessions: nothing but the database."""
    from sen_portal.web import signouts, tokens

    for kept in (tokens._kept, signouts._signed_out, signouts._seen_live):
        kept.clear()


def test_the_session_cookie_holds_no_token_and_the_back_ends_get_the_servers(portal, provider, backends,
                                                                               fresh_db) -> None:
    from sen_portal.web import tokens

    doctor, callback = _signed_in(portal)
    issued = provider.issued[0]
    assert issued["refresh_token"] and issued["access_token"] and issued["id_token"]
    cookie = _cookie(portal, doctor)
    shown = json.dumps(cookie)
    # failed before: the cookie held the access token
    assert issued["access_token"] not in shown and issued["refresh_token"] not in shown
    assert not {"access_token", "refresh_token"} & set(cookie)
    assert cookie["oidc"] is True and len(cookie["sid"]) >= 22  # 128 random bits, base64url
    assert cookie["user"] == {"username": "kc-7f3a", "role": "doctor", "name": "BS. Trần Thị Bích",
                              "facility": "bvdk-dong-thap", "practitioner": "bs-tran-thi-bich"}

    kept = list(fresh_db[tokens.TOKENS].find({"sid": cookie["sid"]}))
    assert [(r["_id"], r["n"]) for r in kept] == [(f"{cookie['sid']}/1", 1)]
    assert kept[0]["access_token"] == issued["access_token"] and kept[0]["refresh_token"] == issued["refresh_token"]

    _another_worker()
    page = doctor.get("/worklist")  # the doctor's page, named, its back-end asked with the server's token
    assert page.status_code == 200 and "BS. Trần Thị Bích" in page.get_data(as_text=True)
    assert backends.bearers and set(backends.bearers) == {issued["access_token"]}

    again = portal.test_client().get(callback)  # the same code again: no state for it, and used up at the provider
    assert again.status_code == 401 and "Traceback" not in again.get_data(as_text=True)
    assert len(provider.issued) == 1 and fresh_db[tokens.TOKENS].count_documents({}) == 1


def test_a_copied_cookie_after_sign_out_gets_the_sign_in_page_and_its_tokens_are_gone(portal, backends,
                                                                                       fresh_db) -> None:
    from sen_portal.web import tokens

    doctor = _sign_in(portal)
    sid = _cookie(portal, doctor)["sid"]
    thief = portal.test_client()
    thief.set_cookie("sen_portal", doctor.get_cookie("sen_portal").value)
    assert thief.get("/worklist").status_code == 200  # the copy works while the doctor is signed in
    colleague = _sign_in(portal)

    out = doctor.post("/logout", data={"csrf_token": csrf_token(doctor.get("/worklist").get_data(as_text=True))})
    assert out.status_code == 302 and out.headers["Location"].endswith("/login")
    assert fresh_db[tokens.TOKENS].count_documents({"sid": sid}) == 0  # failed before: no record to delete
    asked = len(backends.bearers)

    for worker in ("this", "another"):
        if worker == "another":
            _another_worker()
        page = thief.get("/worklist")
        assert page.status_code == 302 and "/login" in page.headers["Location"], worker
    assert len(backends.bearers) == asked  # nothing called with the session's tokens again
    with portal.test_request_context("/worklist"), pytest.raises(tokens.SessionEnded):
        tokens.access_token(sid)  # the tokens are gone, whoever asks

    assert colleague.get("/worklist").status_code == 200  # another session of the same user goes on
    assert fresh_db[tokens.TOKENS].count_documents({}) == 1


def test_two_refreshes_at_once_leave_a_working_session(portal, provider, backends, fresh_db) -> None:
    """Two workers find the access token about to expire at the same moment and both refresh it (both at the
    provider at once: a barrier there): each inserts generation 2, exactly one insert wins, and both use the
    winner's tokens; the session goes on working, refreshed again from the winner's refresh token. A worker that
    refreshes later with the used refresh token (the provider rotates and refuses it) takes the newest."""
    from sen_portal.web import backend, tokens
    from sen_shared.auth import TokenVerifier

    provider.access_seconds = 30  # within tokens.REFRESH_MARGIN: the next call refreshes first
    doctor = _sign_in(portal)
    cookie = doctor.get_cookie("sen_portal").value
    sid = _cookie(portal, doctor)["sid"]
    first = fresh_db[tokens.TOKENS].find_one({"_id": f"{sid}/1"})
    provider.access_seconds = 3600
    provider.refresh_gate = threading.Barrier(2)

    got: list[str] = []
    failed: list[BaseException] = []

    def worker() -> None:
        try:
            with portal.test_request_context("/worklist", headers={"Cookie": f"sen_portal={cookie}"}):
                got.append(backend.user_token())
        except BaseException as err:  # noqa: BLE001 - the test's thread reports it
            failed.append(err)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not failed, failed
    assert len(provider.issued) == 3  # the sign-in and both refreshes: both reached the provider
    records = sorted(fresh_db[tokens.TOKENS].find({"sid": sid}), key=lambda r: r["n"])
    assert [r["n"] for r in records] == [1, 2]  # one generation 2: one insert won
    winner = records[1]
    assert got == [winner["access_token"]] * 2  # both workers use the winner's
    assert winner["refresh_token"] in {t["refresh_token"] for t in provider.issued[1:]}

    verifier = TokenVerifier(issuer=provider.issuer, audience="sen", jwks_url=f"{provider.issuer}/jwks")
    assert verifier.verify(winner["access_token"]).sub == "kc-7f3a"
    _another_worker()
    provider.refresh_gate = None
    assert doctor.get("/worklist").status_code == 200 and backends.bearers[-1] == winner["access_token"]

    # a worker that kept generation 1 refreshes with its refresh token, which the provider rotated away
    tokens._kept[sid] = (first, time.monotonic())
    with portal.test_request_context("/worklist", headers={"Cookie": f"sen_portal={cookie}"}):
        assert backend.user_token() == winner["access_token"]
    assert fresh_db[tokens.TOKENS].count_documents({"sid": sid}) == 2

    # and the winner's refresh token refreshes the session again (generation 3)
    with portal.test_request_context("/worklist", headers={"Cookie": f"sen_portal={cookie}"}):
        third = tokens._refresh(sid, winner)
    assert third["n"] == 3 and third["access_token"] != winner["access_token"]
    _another_worker()
    assert doctor.get("/worklist").status_code == 200 and backends.bearers[-1] == third["access_token"]


def test_a_session_whose_tokens_ended_signs_in_again_and_ended_tokens_are_swept(portal, backends,
                                                                                fresh_db) -> None:
    """Tokens past their sign-in's end (``until``) are not read, and a sign-in sweeps them; a session whose tokens
    are gone asks to sign in again: a page, the sign-in back to it; htmx's part, the signed-out page (401)."""
    from datetime import UTC, datetime, timedelta

    from sen_portal.web import signouts, tokens

    ended = datetime.now(UTC) - timedelta(minutes=1)
    fresh_db[tokens.TOKENS].insert_one({"_id": "gone/1", "sid": "gone", "n": 1, "access_token": "old",
                                        "expires_at": None, "at": ended, "until": ended})
    with portal.test_request_context("/worklist"), pytest.raises(tokens.SessionEnded):
        tokens.access_token("gone")
    signouts._swept.clear()  # this process has not swept for a minute
    doctor = _sign_in(portal)
    assert fresh_db[tokens.TOKENS].count_documents({"sid": "gone"}) == 0

    for htmx in (True, False):
        doctor = _sign_in(portal)
        fresh_db[tokens.TOKENS].delete_many({"sid": _cookie(portal, doctor)["sid"]})  # as a sweep would
        _another_worker()
        asked = len(backends.bearers)
        if htmx:
            page = doctor.get("/worklist", headers={"HX-Request": "true"})
            assert page.status_code == 401 and "Đăng nhập lại" in page.get_data(as_text=True)
        else:
            page = doctor.get("/worklist?status=open")
            assert page.status_code == 302 and page.headers["Location"].endswith("/login?next=/worklist?status%3Dopen")
        assert len(backends.bearers) == asked  # no back-end asked without a token
        left = doctor.get_cookie("sen_portal")  # signed out in the browser too (deleted, or a CSRF token's seed only)
        assert left is None or "user" not in _cookie(portal, doctor)


@pytest.mark.parametrize("lang", ["vi", "en"])
def test_the_database_down_a_page_needing_the_sessions_tokens_says_so(portal, backends, monkeypatch, lang) -> None:
    """The portal's database out of reach and this worker holding no copy of the session's tokens: the page is
    "Service unavailable" (503, Retry-After) saying the sign-in cannot be checked, in the user's language; before,
    the general handler's words about the dashboard's figures ("Chưa đọc được số liệu của bảng điều hành"). No
    back-end is asked; htmx's answer goes into the page's problem box; the database back, the same session works.
    A page asks the database at most once (pymongo's failed server selections): on the first the sign-out check
    finds it out of reach (its 0.5 s) and the tokens are not read in that request (before: a second wait, the
    tokens' 5 s); once pymongo's monitor has found it out of reach the next page asks it not at all (before: the
    tokens' ping of 0.5 s), and the database back, the next page asks it (``sen_portal.portal_db``)."""
    import html
    import re
    from types import SimpleNamespace

    from pymongo import MongoClient
    from sen_portal import portal_db

    doctor = _sign_in(portal)
    if lang == "en":
        token = csrf_token(doctor.get("/worklist").get_data(as_text=True))
        doctor.post("/language", data={"lang": "en", "next": "/worklist", "csrf_token": token})
    _another_worker()
    asked = len(backends.bearers)
    # as the portal's own client (sen_shared.mongo.client): connected, and its monitor started, on its first use
    down = MongoClient("mongodb://127.0.0.1:1/", connect=False, serverSelectionTimeoutMS=300, connectTimeoutMS=300)
    real = portal_db.current  # every use of the portal's database: the sign-out check, the tokens, what it keeps
    monkeypatch.setattr(portal_db, "current",
                        lambda: SimpleNamespace(db=down["sen_portal"], settings=real().settings))
    said = {"vi": ("Dịch vụ tạm thời không dùng được", "Chưa kiểm tra được phiên đăng nhập của bạn lúc này: cơ sở dữ "
                   "liệu của cổng thông tin không trả lời, nên chưa hỏi dịch vụ nào và chưa gửi gì."),
            "en": ("Service unavailable", "Your sign-in cannot be checked right now: the portal's database does not "
                   "answer, so no service was asked and nothing was sent.")}[lang]
    with failed_attempts() as attempts:
        pages = [doctor.get("/worklist")]
        assert (attempts.take(), attempts.asked()) == (1, 1)  # the sign-out check's; the tokens not read then
        deadline = time.monotonic() + 30
        while not portal_db.known_out_of_reach(down["sen_portal"]):  # pymongo's monitor checked the closed port
            assert time.monotonic() < deadline, "pymongo's monitor did not find the closed port out of reach"
            time.sleep(0.02)
        pages.append(doctor.get("/worklist", headers={"HX-Request": "true"}))
        assert (attempts.take(), attempts.asked()) == (0, 0)  # not asked at all: failed before, the tokens' ping
    for r in pages:
        text = html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", r.get_data(as_text=True))))
        assert r.status_code == 503 and r.headers["Retry-After"].isdigit(), (r.status_code, text[-500:])
        assert said[0] in text and said[1] in text, text[-800:]
        assert "bảng điều hành" not in text and "dashboard" not in text
    assert r.headers["HX-Retarget"] == "#page-problem"  # htmx's: in the page's problem box, the page kept
    assert len(backends.bearers) == asked
    down.close()
    monkeypatch.setattr(portal_db, "current", real)
    assert doctor.get("/worklist").status_code == 200 and len(backends.bearers) > asked
