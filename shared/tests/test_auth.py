"""Bearer tokens: the development issuer, verification and role checks."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from sen_shared.auth import (
    JWKS_LIFESPAN_SECONDS,
    Principal,
    TokenVerifier,
    bearer_info,
    ensure_dev_key,
    issue_dev_token,
)
from sen_shared.errors import Forbidden, Unauthorized


@pytest.fixture()
def key(tmp_path):
    return tmp_path / "k.pem"


def verifier(key):
    return TokenVerifier(issuer="sen-dev", audience="sen", dev_key_path=key)


def test_dev_token_round_trip(key):
    tok = issue_dev_token(key, "doctor", facility="bvdk", practitioner="bs-1")
    p = verifier(key).verify(tok)
    assert p.roles == frozenset({"doctor"}) and p.facility == "bvdk" and p.practitioner == "bs-1"
    assert (key.stat().st_mode & 0o777) == 0o600


def test_key_is_made_once(key):
    a = ensure_dev_key(key)
    b = ensure_dev_key(key)
    assert a.private_numbers() == b.private_numbers()


@pytest.mark.parametrize("mutate", ["expired", "audience", "issuer", "other-key", "garbage", "hs256", "alg-none",
                                    "hs256-public-key", "not-yet-valid"])
def test_bad_tokens_are_unauthorized(key, tmp_path, mutate):
    claims = {"sub": "x", "roles": ["admin"], "iss": "sen-dev", "aud": "sen", "exp": int(time.time()) + 60,
              "iat": int(time.time())}
    if mutate == "alg-none":  # unsigned (RFC 7519 §6): never taken, whatever it claims
        tok = jwt.encode(claims, None, algorithm="none")
    elif mutate == "hs256-public-key":  # the verifying key's public PEM used as an HMAC secret (algorithm confusion)
        pem = ensure_dev_key(key).public_key().public_bytes(serialization.Encoding.PEM,
                                                            serialization.PublicFormat.SubjectPublicKeyInfo)

        def part(raw: bytes) -> str:
            return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

        signed = f"{part(json.dumps({'alg': 'HS256', 'typ': 'JWT'}).encode())}.{part(json.dumps(claims).encode())}"
        tok = f"{signed}.{part(hmac.new(pem, signed.encode(), hashlib.sha256).digest())}"
    elif mutate == "not-yet-valid":
        tok = issue_dev_token(key, "clinic", nbf=int(time.time()) + 3600)
    elif mutate == "expired":
        tok = issue_dev_token(key, "clinic", ttl_seconds=-3600)
    elif mutate == "audience":
        tok = issue_dev_token(key, "clinic", audience="other")
    elif mutate == "issuer":
        tok = issue_dev_token(key, "clinic", issuer="evil")
    elif mutate == "other-key":
        tok = issue_dev_token(tmp_path / "other.pem", "clinic")
    elif mutate == "hs256":
        tok = jwt.encode({"sub": "x", "roles": ["admin"], "iss": "sen-dev", "aud": "sen",
                          "exp": int(time.time()) + 60, "iat": int(time.time())}, "secret" * 6, algorithm="HS256")
    else:
        tok = "not.a.token"
    with pytest.raises(Unauthorized):
        verifier(key).verify(tok)


def test_unknown_role_is_rejected_at_issue_and_forbidden_at_verify(key):
    with pytest.raises(ValueError):
        issue_dev_token(key, "janitor")
    priv = ensure_dev_key(key)
    now = int(time.time())
    tok = jwt.encode({"sub": "x", "roles": ["janitor"], "iss": "sen-dev", "aud": "sen", "exp": now + 60,
                      "iat": now}, priv, algorithm="RS256")
    with pytest.raises(Forbidden):
        verifier(key).verify(tok)


def test_keycloak_style_roles_and_scopes():
    p = Principal.from_claims({"sub": "u", "realm_access": {"roles": ["doctor", "offline_access"]},
                               "scope": "openid user/*.cruds"})
    assert p.roles == frozenset({"doctor"})
    assert "user/*.cruds" in p.scopes


def test_a_verified_token_is_remembered_until_it_expires(key, monkeypatch):
    v = verifier(key)
    tok = issue_dev_token(key, "doctor", ttl_seconds=60)
    first = v.verify(tok)
    calls = []
    real = jwt.decode
    monkeypatch.setattr(jwt, "decode", lambda *a, **k: calls.append(1) or real(*a, **k))
    assert v.verify(tok) is first and calls == []  # no second RSA verification
    # past its expiry (and the leeway) the cache does not answer: the token is checked in full again
    later = time.time() + 60 + 31
    monkeypatch.setattr(time, "time", lambda: later)
    v.verify(tok)
    assert calls == [1]


def test_a_remembered_token_is_checked_again_once_its_signing_key_would_be_fetched_again(key, monkeypatch):
    # a key withdrawn from the issuer's JWKS must stop admitting its tokens as it would without the cache
    v = verifier(key)
    tok = issue_dev_token(key, "doctor", ttl_seconds=3600)
    v.verify(tok)
    calls = []
    real = jwt.decode
    monkeypatch.setattr(jwt, "decode", lambda *a, **k: calls.append(1) or real(*a, **k))
    now = time.time()
    monkeypatch.setattr(time, "time", lambda: now + JWKS_LIFESPAN_SECONDS - 5)
    v.verify(tok)
    assert calls == []
    monkeypatch.setattr(time, "time", lambda: now + JWKS_LIFESPAN_SECONDS + 1)
    v.verify(tok)
    assert calls == [1]


def test_connexion_sees_the_bearer_functions_real_arguments():
    from connexion.utils import inspect_function_arguments

    assert inspect_function_arguments(bearer_info) == (["token"], False)  # no required_scopes, no request
