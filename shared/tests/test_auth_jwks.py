"""Production verification: RS256 tokens checked against the issuer's JWKS URL (served here on loopback)."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from sen_shared.auth import TokenVerifier
from sen_shared.errors import Unauthorized


@pytest.fixture(scope="module")
def issuer():
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    body = json.dumps({"keys": [{**jwk, "kid": "k1", "use": "sig", "alg": "RS256"}]}).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield key, f"http://127.0.0.1:{server.server_address[1]}/jwks.json"
    server.shutdown()


def token(key, kid="k1", **over):
    now = int(time.time())
    claims = {"iss": "https://id.example.vn/realms/sen", "aud": "sen", "sub": "u1", "iat": now, "exp": now + 300,
              "realm_access": {"roles": ["doctor"]}, **over}
    return jwt.encode(claims, key, algorithm="RS256", headers={"kid": kid})


def test_token_signed_by_the_issuer_is_accepted(issuer):
    key, url = issuer
    v = TokenVerifier(issuer="https://id.example.vn/realms/sen", audience="sen", jwks_url=url)
    assert v.verify(token(key)).roles == frozenset({"doctor"})


def test_unknown_kid_or_foreign_key_is_rejected(issuer):
    key, url = issuer
    v = TokenVerifier(issuer="https://id.example.vn/realms/sen", audience="sen", jwks_url=url)
    with pytest.raises(Unauthorized):
        v.verify(token(key, kid="nope"))
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with pytest.raises(Unauthorized):
        v.verify(token(other))
    with pytest.raises(Unauthorized):
        v.verify(token(key, aud="other"))
