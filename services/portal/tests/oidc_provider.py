"""A real OpenID Connect provider for the tests, assembled from Authlib's server side
(``authlib.integrations.flask_oauth2.AuthorizationServer``, the authorization code grant with
PKCE ``CodeChallenge(required=True)``, the ``OpenIDCode`` extension for the ID token, and
RFC 9068 JWT access tokens), served by werkzeug on loopback in a thread.

It knows one public client and one user, and signs that user in without asking (the test plays
the person who typed a password): ``/authorize`` answers with the code at once. Discovery at
``/.well-known/openid-configuration``, keys at ``/jwks``. Codes are single use and live in memory.
With ``refresh=True`` it also issues refresh tokens and answers the refresh token grant, rotating them (a
refresh token used once is revoked, the strictest common setting); ``access_seconds`` is the access tokens'
lifetime (changeable between sign-ins and refreshes); ``refresh_gate``, when set, is waited on by each refresh
once its refresh token is checked, before it is answered (a ``threading.Barrier``: refreshes in flight at once).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
from authlib.common.security import generate_token
from authlib.integrations.flask_oauth2 import AuthorizationServer
from authlib.oauth2.rfc6749 import ClientMixin, grants
from authlib.oauth2.rfc7636 import CodeChallenge
from authlib.oauth2.rfc9068 import JWTBearerTokenGenerator
from authlib.oidc.core import UserInfo
from authlib.oidc.core.grants import OpenIDCode
from authlib.oidc.core.models import AuthorizationCodeMixin
from flask import Flask, jsonify
from joserfc.jwk import KeySet, RSAKey
from werkzeug.serving import make_server


@dataclass
class Client(ClientMixin):
    client_id: str
    redirect_prefix: str
    refresh: bool = False

    def get_client_id(self) -> str:
        return self.client_id

    def get_default_redirect_uri(self) -> str:
        return self.redirect_prefix

    def get_allowed_scope(self, scope: str) -> str:
        return " ".join(s for s in (scope or "").split() if s in ("openid", "profile"))

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return redirect_uri.startswith(self.redirect_prefix)

    def check_client_secret(self, client_secret: str) -> bool:
        return False  # a public client: PKCE instead of a secret

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return method == "none" if endpoint == "token" else True

    def check_response_type(self, response_type: str) -> bool:
        return response_type == "code"

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type == "authorization_code" or (self.refresh and grant_type == "refresh_token")


@dataclass
class User:
    sub: str
    name: str
    claims: dict[str, Any]

    def get_user_id(self) -> str:
        return self.sub


@dataclass
class Code(AuthorizationCodeMixin):
    code: str
    client_id: str
    redirect_uri: str
    scope: str
    user: User
    nonce: str | None
    code_challenge: str | None
    code_challenge_method: str | None
    auth_time: int = field(default_factory=lambda: int(time.time()))

    def get_redirect_uri(self) -> str:
        return self.redirect_uri

    def get_scope(self) -> str:
        return self.scope

    def get_nonce(self) -> str | None:
        return self.nonce

    def get_auth_time(self) -> int:
        return self.auth_time


@dataclass
class Refresh:
    """A refresh token the provider issued: whose, for which client and scope, and whether it was used."""
    token: str
    client_id: str
    scope: str
    user: User
    revoked: bool = False

    def check_client(self, client: Client) -> bool:
        return client.get_client_id() == self.client_id

    def get_scope(self) -> str:
        return self.scope

    def is_revoked(self) -> bool:
        return self.revoked

    def is_expired(self) -> bool:
        return False


class Provider:
    """Start with :meth:`start`; ``issuer`` is its base URL; :meth:`stop` shuts it down."""

    def __init__(self, *, client_id: str, redirect_prefix: str, user: User, audience: str,
                 access_key: RSAKey | None = None, refresh: bool = False, access_seconds: int = 3600) -> None:
        self.key = RSAKey.generate_key(2048, parameters={"kid": "provider-1", "use": "sig", "alg": "RS256"})
        # the key that signs access tokens: the published one, unless a test wants a stranger's
        self.access_key = access_key or self.key
        self.client = Client(client_id, redirect_prefix, refresh)
        self.access_seconds = access_seconds
        self.refresh_tokens: dict[str, Refresh] = {}
        self.refresh_gate: threading.Barrier | None = None
        self.user, self.audience = user, audience
        self.codes: dict[str, Code] = {}
        self.issued: list[dict[str, Any]] = []
        self.app = Flask("test-oidc-provider")
        self._server = make_server("127.0.0.1", 0, self.app, threaded=True)
        self.issuer = f"http://127.0.0.1:{self._server.server_port}"
        self._routes()

    # ------------------------------------------------------------------ the Authlib server

    def _routes(self) -> None:
        provider = self

        class CodeGrant(grants.AuthorizationCodeGrant):
            TOKEN_ENDPOINT_AUTH_METHODS = ["none"]

            def save_authorization_code(self, code: str, req: Any) -> Code:
                c = Code(code, req.client.get_client_id(), req.payload.redirect_uri, req.payload.scope,
                         req.user, req.payload.data.get("nonce"), req.payload.data.get("code_challenge"),
                         req.payload.data.get("code_challenge_method"))
                provider.codes[code] = c
                return c

            def query_authorization_code(self, code: str, client: Client) -> Code | None:
                c = provider.codes.get(code)
                return c if c is not None and c.client_id == client.get_client_id() else None

            def delete_authorization_code(self, authorization_code: Code) -> None:
                provider.codes.pop(authorization_code.code, None)  # single use

            def authenticate_user(self, authorization_code: Code) -> User:
                return authorization_code.user

        class IdToken(OpenIDCode):
            def exists_nonce(self, nonce: str, req: Any) -> bool:
                return any(c.nonce == nonce for c in provider.codes.values())

            def resolve_client_private_key(self, client: Client) -> KeySet:
                return KeySet([provider.key])

            def get_client_algorithm(self, client: Client) -> str:
                return "RS256"

            def get_client_claims(self, client: Client) -> dict[str, Any]:
                return {"iss": provider.issuer, "aud": [client.get_client_id()]}

            def get_encode_header(self, client: Client) -> dict[str, str]:
                return {"alg": "RS256", "kid": provider.key.kid or ""}

            def generate_user_info(self, user: User, scope: str) -> UserInfo:
                return UserInfo(sub=user.sub, name=user.name)

        class AccessTokens(JWTBearerTokenGenerator):
            def get_jwks(self) -> KeySet:
                return KeySet([provider.access_key])

            def get_audiences(self, client: Client, user: User, scope: str) -> list[str]:
                return [client.get_client_id(), provider.audience]

            def get_extra_claims(self, client: Client, grant_type: str, user: User, scope: str) -> dict[str, Any]:
                return {"name": user.name, **user.claims}

        class RefreshGrant(grants.RefreshTokenGrant):
            TOKEN_ENDPOINT_AUTH_METHODS = ["none"]
            INCLUDE_NEW_REFRESH_TOKEN = True  # rotated: the one used is revoked

            def authenticate_refresh_token(self, refresh_token: str) -> Refresh | None:
                found = provider.refresh_tokens.get(refresh_token)
                return found if found is not None and not found.revoked else None

            def authenticate_user(self, refresh_token: Refresh) -> User:
                if provider.refresh_gate is not None:  # checked, not yet answered: the others in flight too
                    provider.refresh_gate.wait(timeout=10)
                return refresh_token.user

            def revoke_old_credential(self, refresh_token: Refresh) -> None:
                refresh_token.revoked = True

        def save_token(token: dict[str, Any], req: Any) -> None:
            self.issued.append(token)
            if token.get("refresh_token"):
                self.refresh_tokens[token["refresh_token"]] = Refresh(
                    token["refresh_token"], req.client.get_client_id(), token.get("scope") or "", req.user)

        server = AuthorizationServer(self.app, query_client=lambda cid: (
            self.client if cid == self.client.client_id else None), save_token=save_token)
        server.register_token_generator("default", AccessTokens(
            issuer=self.issuer, refresh_token_generator=lambda **_: generate_token(48),
            expires_generator=lambda client, grant_type: self.access_seconds))
        server.register_grant(CodeGrant, [CodeChallenge(required=True), IdToken(require_nonce=True)])
        server.register_grant(RefreshGrant)

        @self.app.get("/.well-known/openid-configuration")
        def discovery() -> Any:
            return jsonify({
                "issuer": self.issuer, "authorization_endpoint": f"{self.issuer}/authorize",
                "token_endpoint": f"{self.issuer}/token", "jwks_uri": f"{self.issuer}/jwks",
                "response_types_supported": ["code"], "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["RS256"], "code_challenge_methods_supported": ["S256"],
                "token_endpoint_auth_methods_supported": ["none"], "scopes_supported": ["openid", "profile"]})

        @self.app.get("/jwks")
        def jwks() -> Any:
            return jsonify(KeySet([self.key]).as_dict(private=False))

        @self.app.get("/authorize")
        def authorize() -> Any:
            # the person signed in and agreed: answer with the code (or the error the request earned)
            return server.create_authorization_response(grant_user=self.user)

        @self.app.post("/token")
        def token() -> Any:
            return server.create_token_response()

        self.app.config["SECRET_KEY"] = generate_token(24)

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> Provider:
        threading.Thread(target=self._server.serve_forever, daemon=True, name="oidc-provider").start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def through_provider(client: Any, next_path: str = "/worklist") -> tuple[str, dict[str, list[str]]]:
    """A portal test ``client``'s /login → the provider's /authorize (over loopback, as the browser would) → the
    callback's path and query to open, and what the portal asked the provider (the authorization request's)."""
    r = client.get(f"/login?next={next_path}")
    assert r.status_code == 302
    asked = parse_qs(urlsplit(r.headers["Location"]).query)
    assert asked["code_challenge_method"] == ["S256"] and asked["nonce"][0]
    answer = httpx.get(r.headers["Location"], follow_redirects=False, timeout=10)
    assert answer.status_code == 302, answer.text
    back = urlsplit(answer.headers["Location"])
    assert f"{back.scheme}://{back.netloc}{back.path}" == "http://localhost/auth/callback"
    return f"{back.path}?{back.query}", asked
