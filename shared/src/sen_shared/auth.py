"""Bearer JWT authentication and role checks.

Production verifies RS256 tokens from the OIDC issuer through its JWKS URL.
Local runs and tests use a development issuer: an RSA key in a file
(``SEN_DEV_JWT_KEY``), made on first use, whose public half verifies tokens.
``python -m sen_shared.devtoken ROLE`` (``make token ROLE=...``) prints one.

Roles: ``clinic``, ``doctor``, ``cashier``, ``health-dept``, ``admin`` and
``service``. The token carries them in ``roles`` (or Keycloak's
``realm_access.roles``), the user's facility in ``facility``, their
Practitioner id in ``practitioner`` and SMART v2 scopes in ``scope``.
Missing or bad token: 401. Wrong role: 403.
"""

from __future__ import annotations

import functools
import inspect
import os
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from .errors import Forbidden, Unauthorized

ROLES = frozenset({"clinic", "doctor", "cashier", "health-dept", "admin", "service"})
LEEWAY_SECONDS = 30
VERIFIED_CACHE_SIZE = 4096  # tokens kept verified per process
JWKS_LIFESPAN_SECONDS = 300  # how long a fetched signing key is trusted before the JWKS is read again


@dataclass(frozen=True)
class Principal:
    """Who is calling, as the token says."""

    sub: str
    roles: frozenset[str]
    facility: str | None = None
    practitioner: str | None = None
    scopes: frozenset[str] = field(default_factory=frozenset)
    name: str | None = None

    def has_any(self, roles: Iterable[str]) -> bool:
        return bool(self.roles & set(roles))

    @classmethod
    def from_claims(cls, claims: dict[str, Any]) -> Principal:
        roles = claims.get("roles")
        if roles is None:
            roles = (claims.get("realm_access") or {}).get("roles", [])
        if isinstance(roles, str):
            roles = roles.split()
        scope = claims.get("scope") or ""
        return cls(
            sub=str(claims.get("sub", "")),
            roles=frozenset(r for r in roles if r in ROLES),
            facility=claims.get("facility"),
            practitioner=claims.get("practitioner"),
            scopes=frozenset(scope.split() if isinstance(scope, str) else scope),
            name=claims.get("name"),
        )

    def as_token_info(self) -> dict[str, Any]:
        return {"sub": self.sub, "roles": sorted(self.roles), "facility": self.facility,
                "practitioner": self.practitioner, "scope": " ".join(sorted(self.scopes)),
                "principal": self}


# --------------------------------------------------------------------------- keys

def ensure_dev_key(path: str | Path) -> rsa.RSAPrivateKey:
    """Load the development issuer's key, creating it (mode 0600) when missing."""
    p = Path(path)
    if p.exists():
        key = serialization.load_pem_private_key(p.read_bytes(), password=None)
        assert isinstance(key, rsa.RSAPrivateKey)
        return key
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_suffix(f".{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    try:
        os.link(tmp, p)  # first writer wins when several processes start at once
    except FileExistsError:
        pass
    os.unlink(tmp)
    return ensure_dev_key(p)


def issue_dev_token(key_path: str | Path, role: str, *, issuer: str = "sen-dev", audience: str = "sen",
                    ttl_seconds: int = 8 * 3600, **claims: Any) -> str:
    """A signed development token for ``role`` (plus any extra claims)."""
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; one of {', '.join(sorted(ROLES))}")
    now = int(time.time())
    payload = {"iss": issuer, "aud": audience, "sub": claims.pop("sub", f"dev-{role}"),
               "iat": now, "nbf": now, "exp": now + ttl_seconds, "jti": uuid.uuid4().hex,
               "roles": [role], **claims}
    return jwt.encode(payload, _signing_key(key_path), algorithm="RS256", headers={"kid": "sen-dev"})


_signing_keys: dict[str, tuple[tuple[int, int], rsa.RSAPrivateKey]] = {}


def _signing_key(key_path: str | Path) -> rsa.RSAPrivateKey:
    """The development key, loaded once per process while its file is unchanged (same mtime and
    size): loading and checking the PEM took about 48 ms of CPU, signing a token 0.4 ms (the
    portal mints a token per user it serves). A key file replaced on disk is loaded again."""
    path = str(key_path)
    try:
        st = os.stat(path)
        stamp = (st.st_mtime_ns, st.st_size)
    except FileNotFoundError:
        stamp = None
    hit = _signing_keys.get(path)
    if stamp is not None and hit is not None and hit[0] == stamp:
        return hit[1]
    key = ensure_dev_key(path)
    st = os.stat(path)
    _signing_keys[path] = ((st.st_mtime_ns, st.st_size), key)
    return key


# --------------------------------------------------------------------------- verification

class TokenVerifier:
    """Verifies bearer tokens against a JWKS URL or the development key."""

    def __init__(self, *, issuer: str, audience: str, jwks_url: str = "",
                 dev_key_path: str | Path | None = None) -> None:
        self.issuer = issuer
        self.audience = audience
        self._jwks = (jwt.PyJWKClient(jwks_url, cache_keys=True, lifespan=JWKS_LIFESPAN_SECONDS, timeout=5)
                      if jwks_url else None)
        self._dev_public = ensure_dev_key(dev_key_path).public_key() if (dev_key_path and not jwks_url) else None
        # Verified tokens, keyed by the exact token string: a client sends the same token on every
        # request, and an RSA verification is the costliest step of a small request. An entry
        # answers until the token expires (with the leeway jwt.decode grants) and never longer than
        # a fetched signing key is trusted: a key the issuer withdraws from its JWKS stops
        # admitting its tokens as soon as it would without this cache. Tokens are not revocable
        # here otherwise (no introspection), so the cache answers exactly what a full check would.
        # Only successes are kept; a bad token is checked in full every time.
        self._verified: dict[str, tuple[Principal, float]] = {}

    def verify(self, token: str) -> Principal:
        now = time.time()
        hit = self._verified.get(token)
        if hit is not None and now < hit[1]:
            return hit[0]
        principal, exp = self._verify(token)
        if len(self._verified) >= VERIFIED_CACHE_SIZE:
            self._verified.clear()
        self._verified[token] = (principal, min(exp, now + JWKS_LIFESPAN_SECONDS))
        return principal

    def _verify(self, token: str) -> tuple[Principal, float]:
        try:
            key: Any = self._jwks.get_signing_key_from_jwt(token).key if self._jwks else self._dev_public
            claims = jwt.decode(token, key, algorithms=["RS256"], audience=self.audience, issuer=self.issuer,
                                leeway=LEEWAY_SECONDS, options={"require": ["exp", "iat", "sub"]})
        except jwt.PyJWKClientError as err:
            raise Unauthorized(f"the token's signing key could not be found: {err}") from None
        except jwt.ExpiredSignatureError:
            raise Unauthorized("the token has expired; sign in again") from None
        except jwt.InvalidTokenError as err:
            raise Unauthorized(f"the token is not valid: {err}") from None
        principal = Principal.from_claims(claims)
        if not principal.roles:
            raise Forbidden("the token carries no Sen role")
        return principal, float(claims["exp"]) + LEEWAY_SECONDS


_verifier: TokenVerifier | None = None


def configure(verifier: TokenVerifier) -> None:
    """Set the process's verifier (the app factory calls this)."""
    global _verifier
    _verifier = verifier


def bearer_info(token: str) -> dict[str, Any] | None:
    """connexion's ``x-bearerInfoFunc``: token info, or None for 401."""
    if _verifier is None:
        raise RuntimeError("sen_shared.auth.configure() was not called")
    try:
        return _verifier.verify(token).as_token_info()
    except Unauthorized:
        return None
    except Forbidden:
        return {"sub": "", "roles": [], "principal": Principal(sub="", roles=frozenset())}


# connexion's bearer check asks for this function's signature twice a request (does it take
# ``required_scopes``, ``request``?), through ``inspect.signature``, which reads ``__signature__``
# when a function has one (PEP 362) instead of rebuilding it from the code object: 2 µs, not 20.
bearer_info.__signature__ = inspect.signature(bearer_info)  # type: ignore[attr-defined]


def current_principal() -> Principal:
    from connexion.context import context

    info = context.get("token_info") or {}
    principal = info.get("principal")
    if principal is None:
        raise Unauthorized("a bearer token is required")
    return principal


F = TypeVar("F", bound=Callable[..., Any])


def require_roles(*roles: str) -> Callable[[F], F]:
    """Decorator: the caller must hold one of ``roles`` (admin always may)."""
    unknown = set(roles) - ROLES
    if unknown:
        raise ValueError(f"unknown roles {unknown}")
    allowed = frozenset(roles) | {"admin"}

    def wrap(fn: F) -> F:
        @functools.wraps(fn)
        def inner(*args: Any, **kwargs: Any) -> Any:
            principal = current_principal()
            if not principal.has_any(allowed):
                raise Forbidden(f"this needs one of the roles {', '.join(sorted(allowed))}; "
                                f"the token has {', '.join(sorted(principal.roles)) or 'none'}")
            return fn(*args, **kwargs)

        return inner  # type: ignore[return-value]

    return wrap
