"""Sign-in through a real OpenID Connect provider (Authlib's server side, on loopback: see
``oidc_provider.py``): the portal's /login sends the browser to it with a PKCE S256 challenge,
the provider answers with a code, and the portal's /auth/callback trades code + verifier for the
tokens at the provider's token endpoint, checks the ID token (Authlib) and verifies the access
token against the provider's JWKS (PyJWT) before it signs the user in with the token's role.
A replayed code and an access token signed by a key the JWKS does not hold are refused."""

from __future__ import annotations

import time
from urllib.parse import parse_qs, urlsplit

import pytest
from joserfc.jwk import RSAKey

from services.portal.tests.oidc_provider import Provider, User, through_provider

DOCTOR = User("kc-7f3a", "BS. Trần Thị Bích", {"roles": ["doctor"], "facility": "bvdk-dong-thap",
                                               "practitioner": "bs-tran-thi-bich"})


def _portal(monkeypatch, tmp_path, provider: Provider):
    env = {"MONGO_URL": "mongodb://127.0.0.1:1/", "AMQP_URL": "amqp://127.0.0.1:1//", "SEN_ENV": "test",
           "SEN_DEV_JWT_KEY": str(tmp_path / "dev.pem"), "LOG_LEVEL": "WARNING",
           "SEN_OIDC_ISSUER": provider.issuer, "SEN_OIDC_CLIENT_ID": "sen-portal",
           "SEN_JWT_ISSUER": provider.issuer, "SEN_JWKS_URL": f"{provider.issuer}/jwks", "SEN_JWT_AUDIENCE": "sen",
           # the worklist's back-end: nothing listens there (the page says so; the sign-in is what is tested)
           "SEN_TELECONSULT_URL": "http://127.0.0.1:1", "SEN_HTTP_TIMEOUT": "1"}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    from sen_portal.app import create_app

    return create_app().app.test_client()


@pytest.fixture()
def provider():
    p = Provider(client_id="sen-portal", redirect_prefix="http://localhost/auth/callback", user=DOCTOR,
                 audience="sen").start()
    yield p
    p.stop()


def test_sign_in_starts_an_authorization_code_flow_with_pkce(monkeypatch, tmp_path, provider):
    """With an issuer configured, /login sends the browser to its authorization endpoint (read from its
    discovery document): code flow, S256 challenge, state, the callback, the openid scope."""
    with _portal(monkeypatch, tmp_path, provider) as c:
        r = c.get("/login?next=/worklist")
        assert r.status_code == 302
        target = urlsplit(r.headers["Location"])
        q = parse_qs(target.query)
        assert f"{target.scheme}://{target.netloc}{target.path}" == f"{provider.issuer}/authorize"
        assert q["response_type"] == ["code"] and q["client_id"] == ["sen-portal"]
        assert q["code_challenge_method"] == ["S256"] and len(q["code_challenge"][0]) >= 43
        assert q["state"][0] and q["redirect_uri"][0].endswith("/auth/callback")
        assert "openid" in q["scope"][0].split()


def test_a_sign_in_whose_tokens_cannot_be_kept_signs_nobody_in(monkeypatch, tmp_path, provider):
    """The tokens are kept on the server (web/tokens.py; the whole sign-in, against the real database:
    tests/integration/test_portal_oidc_tokens.py): the portal's database out of reach at the callback, the
    sign-in is refused in the user's language (503), no half-signed session, nothing in the cookie. The tokens'
    insert waits 0.3 s for the database, not 5 s (``tokens.DB_SECONDS``): the same failure, sooner."""
    from sen_portal.web import tokens

    monkeypatch.setattr(tokens, "DB_SECONDS", 0.3)
    with _portal(monkeypatch, tmp_path, provider) as c:
        callback, _ = through_provider(c)
        r = c.get(callback)
        assert r.status_code == 503 and "Đăng nhập không thành công" in r.get_data(as_text=True)
        with c.session_transaction() as s:
            assert "user" not in s and "oidc" not in s and "access_token" not in s
        assert len(provider.issued) == 1  # the provider did answer: the database did not
        assert c.get("/worklist").status_code == 302  # still signed out


def test_a_cookie_from_before_holding_a_token_is_a_session_that_ended(monkeypatch, tmp_path, provider):
    """A session cookie made before the tokens left it (``access_token`` inside, signed with the portal's key):
    the user signs in again, the cookie is sent back without the token at once (the language kept), never a 500
    nor a page called with that token. Failed before: the worklist opened, the back-end asked with it."""
    from flask.sessions import SecureCookieSessionInterface

    with _portal(monkeypatch, tmp_path, provider) as c:
        app = c.application
        signer = SecureCookieSessionInterface().get_signing_serializer(app)
        old = signer.dumps({"user": {"username": "kc-7f3a", "role": "doctor", "name": "BS. Trần Thị Bích",
                                     "facility": "bvdk-dong-thap", "practitioner": "bs-tran-thi-bich"},
                            "signed_in_at": time.time(), "sid": "x" * 22, "lang": "en",
                            "access_token": "eyJ.old.token", "_permanent": True})
        c.set_cookie("sen_portal", old)
        r = c.get("/worklist")
        assert r.status_code == 302 and "/login" in r.headers["Location"]
        sent = signer.loads(c.get_cookie("sen_portal").value)
        assert sent == {"lang": "en"}  # signed out, in English still


def test_an_access_token_the_jwks_cannot_verify_signs_nobody_in(monkeypatch, tmp_path):
    stranger = RSAKey.generate_key(2048, parameters={"kid": "provider-1", "use": "sig", "alg": "RS256"})
    provider = Provider(client_id="sen-portal", redirect_prefix="http://localhost/auth/callback", user=DOCTOR,
                        audience="sen", access_key=stranger).start()
    try:
        with _portal(monkeypatch, tmp_path, provider) as c:
            callback, _ = through_provider(c)
            r = c.get(callback)
            assert r.status_code == 401
            assert "Đăng nhập không thành công" in r.get_data(as_text=True)
            with c.session_transaction() as s:
                assert "user" not in s and "access_token" not in s
            assert c.get("/worklist").status_code == 302  # still signed out
    finally:
        provider.stop()


def test_a_token_without_a_sen_role_signs_nobody_in(monkeypatch, tmp_path):
    visitor = User("kc-0001", "Khách", {"roles": ["offline_access"]})
    provider = Provider(client_id="sen-portal", redirect_prefix="http://localhost/auth/callback", user=visitor,
                        audience="sen").start()
    try:
        with _portal(monkeypatch, tmp_path, provider) as c:
            callback, _ = through_provider(c)
            assert c.get(callback).status_code in (401, 403)
            with c.session_transaction() as s:
                assert "user" not in s
    finally:
        provider.stop()
