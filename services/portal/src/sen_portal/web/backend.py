"""Calls to the three APIs (EHR, teleconsult, billing) with the signed-in user's token.

One ``httpx.Client`` per process, made on first use (never at import: gunicorn forks).
Every failure becomes a :class:`BackendError` whose ``kind`` the pages turn into a clear
sentence in the user's language: ``down`` (no answer), ``slow`` (timed out), ``refused``
(4xx: the service said why, ``detail``), ``failed`` (5xx). Nothing here logs bodies: they
hold patient data.
"""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import httpx
from flask import has_request_context, request, session

from ..config import PortalSettings

FHIR_JSON = "application/fhir+json"
_client: httpx.Client | None = None
_lock = threading.Lock()
_tokens: dict[tuple[str, str], tuple[str, float]] = {}
DEV_TOKEN_SECONDS = 600


class BackendError(Exception):
    def __init__(self, kind: str, service: str, status: int = 0, detail: str = "") -> None:
        super().__init__(f"{service}: {kind} {status}")
        self.kind, self.service, self.status, self.detail = kind, service, status, detail


def client() -> httpx.Client:
    global _client
    with _lock:
        if _client is None:
            _client = httpx.Client(limits=httpx.Limits(max_connections=64, max_keepalive_connections=16))
        return _client


def settings() -> PortalSettings:
    from sen_shared.runtime import current

    return current().settings  # type: ignore[return-value]


def user_token() -> str:
    """The signed-in user's bearer token: the OIDC access token, or a development token for the
    demo user (minted here with ``sen_shared.auth``, kept until shortly before it expires)."""
    if session.get("access_token"):
        return str(session["access_token"])
    from sen_shared.auth import issue_dev_token

    cfg = settings()
    user = session.get("user") or {}
    key = (str(user.get("username")), str(user.get("role")))
    hit = _tokens.get(key)
    if hit is not None and hit[1] > time.time() + 60:
        return hit[0]
    claims = {k: user[k] for k in ("facility", "practitioner") if user.get(k)}
    token = issue_dev_token(cfg.dev_key_path or "", key[1], issuer=cfg.jwt_issuer, audience=cfg.jwt_audience,
                            ttl_seconds=DEV_TOKEN_SECONDS, sub=f"portal-{key[0]}", name=user.get("name", ""),
                            **claims)
    _tokens[key] = (token, time.time() + DEV_TOKEN_SECONDS)
    return token


def _base(service: str) -> str:
    cfg = settings()
    return {"ehr": cfg.ehr_url, "teleconsult": cfg.teleconsult_url, "billing": cfg.billing_url}[service]


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return ""
    if isinstance(body, dict) and body.get("resourceType") == "OperationOutcome":
        return "; ".join(str(i.get("diagnostics") or (i.get("details") or {}).get("text") or "")
                         for i in body.get("issue", []))[:500]
    if isinstance(body, dict):
        return str(body.get("detail") or body.get("title") or "")[:500]
    return ""


def call(service: str, method: str, path: str, *, params: Any = None, json: Any = None,
         idempotent: bool = False, accept: str = FHIR_JSON, timeout: float | None = None) -> httpx.Response:
    """One request to ``service``; a 2xx response or a BackendError."""
    headers = {"Authorization": f"Bearer {user_token()}", "Accept": accept}
    if json is not None:
        headers["Content-Type"] = FHIR_JSON if path.startswith("/fhir") else "application/json"
    if idempotent:  # a retry of the same click (slow links) changes nothing twice
        headers["Idempotency-Key"] = uuid.uuid4().hex
    cid = request.headers.get("X-Correlation-ID") if has_request_context() else None
    if cid:
        headers["X-Correlation-ID"] = cid
    try:
        r = client().request(method, _base(service) + path, params=params, json=json, headers=headers,
                             timeout=timeout or settings().http_timeout)
    except httpx.TimeoutException:
        raise BackendError("slow", service) from None
    except httpx.HTTPError:
        raise BackendError("down", service) from None
    if r.status_code >= 500:
        raise BackendError("slow" if r.status_code == 504 else "failed", service, r.status_code, _detail(r))
    if r.status_code >= 400:
        raise BackendError("refused", service, r.status_code, _detail(r))
    return r


def fhir_get(service: str, path: str, params: Any = None) -> dict[str, Any]:
    return call(service, "GET", path, params=params).json()


def fhir_post(service: str, path: str, body: Any, *, idempotent: bool = True) -> dict[str, Any]:
    r = call(service, "POST", path, json=body, idempotent=idempotent)
    return r.json() if r.content else {}


def entries(bundle: dict[str, Any], rtype: str | None = None) -> list[dict[str, Any]]:
    return [e["resource"] for e in bundle.get("entry", []) or []
            if "resource" in e and (rtype is None or e["resource"].get("resourceType") == rtype)]
