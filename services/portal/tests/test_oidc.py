"""Sign-in through a real OpenID Connect provider (Authlib's server side, on loopback: see
``oidc_provider.py``): the portal's /login sends the browser to it with a PKCE S256 challenge,
the provider answers with a code, and the portal's /auth/callback trades code + verifier for the
tokens at the provider's token endpoint, checks the ID token (Authlib) and verifies the access
token against the provider's JWKS (PyJWT) before it signs the user in with the token's role.
A replayed code and an access token signed by a key the JWKS does not hold are refused."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from joserfc.jwk import RSAKey

from services.portal.tests.oidc_provider import Provider, User

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


def _to_provider_and_back(c) -> tuple[str, dict[str, list[str]]]:
    """/login → the provider's /authorize (over loopback, as the browser would) → the callback URL."""
    r = c.get("/login?next=/worklist")
    assert r.status_code == 302
    asked = parse_qs(urlsplit(r.headers["Location"]).query)
    assert asked["code_challenge_method"] == ["S256"] and asked["nonce"][0]
    answer = httpx.get(r.headers["Location"], follow_redirects=False, timeout=10)
    assert answer.status_code == 302, answer.text
    back = urlsplit(answer.headers["Location"])
    assert f"{back.scheme}://{back.netloc}{back.path}" == "http://localhost/auth/callback"
    return f"{back.path}?{back.query}", asked


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


def test_sign_in_completes_through_the_providers_code_pkce_and_jwks(monkeypatch, tmp_path, provider):
    with _portal(monkeypatch, tmp_path, provider) as c:
        callback, asked = _to_provider_and_back(c)
        code = parse_qs(urlsplit(callback).query)["code"][0]
        assert provider.codes[code].code_challenge == asked["code_challenge"][0]  # the challenge reached it
        r = c.get(callback)
        assert r.status_code == 302 and r.headers["Location"].endswith("/worklist"), r.get_data(as_text=True)
        assert code not in provider.codes  # the code was traded (once) at the token endpoint
        assert len(provider.issued) == 1 and provider.issued[0]["id_token"]
        with c.session_transaction() as s:
            assert s["user"]["role"] == "doctor" and s["user"]["practitioner"] == "bs-tran-thi-bich"
            assert s["user"]["name"] == "BS. Trần Thị Bích" and s["user"]["username"] == "kc-7f3a"
            assert s["access_token"] == provider.issued[0]["access_token"]  # what the APIs will be called with
        page = c.get("/worklist")  # signed in: the doctor's page, named (no teleconsult here: its list 503)
        assert page.status_code in (200, 503) and "BS. Trần Thị Bích" in page.get_data(as_text=True)

        # the same code again: the state is used up and the provider would refuse the code
        again = c.get(callback)
        assert again.status_code == 401 and "Traceback" not in again.get_data(as_text=True)


def test_an_access_token_the_jwks_cannot_verify_signs_nobody_in(monkeypatch, tmp_path):
    stranger = RSAKey.generate_key(2048, parameters={"kid": "provider-1", "use": "sig", "alg": "RS256"})
    provider = Provider(client_id="sen-portal", redirect_prefix="http://localhost/auth/callback", user=DOCTOR,
                        audience="sen", access_key=stranger).start()
    try:
        with _portal(monkeypatch, tmp_path, provider) as c:
            callback, _ = _to_provider_and_back(c)
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
            callback, _ = _to_provider_and_back(c)
            assert c.get(callback).status_code in (401, 403)
            with c.session_transaction() as s:
                assert "user" not in s
    finally:
        provider.stop()
