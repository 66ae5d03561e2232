"""Calls to the three APIs (EHR, teleconsult, billing) with the signed-in user's token.

The requests go through :mod:`sen_shared.http` (one urllib3 pool per process, made on first
use, never at import: gunicorn forks; one total timeout; teleconsult's calls to the EHR use it
too).
Every failure becomes a :class:`BackendError` whose ``kind`` the pages turn into a clear
sentence in the user's language: ``down`` (no answer), ``slow`` (timed out), ``refused``
(4xx: the service said why, ``detail``), ``failed`` (5xx). Nothing here logs bodies: they
hold patient data.
"""

from __future__ import annotations

import re
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from flask import has_request_context, request, session
from sen_shared import http
from sen_shared.http import Response

from .. import caches
from ..config import PortalSettings

FHIR_JSON = "application/fhir+json"
# a back-end path as the pages build it: segments of ids and names, no query, fragment, control
# character, empty or dot segment. An id a client sent (a form's hidden payment, the address) that would
# leave its segment is no record: refused as 404, nothing sent (``../fhir/Invoice/x/$cancel?`` as a
# refund's payment sent the refund's body to another operation with the user's token)
_PATH = re.compile(r"(?:/(?!\.\.?(?:/|$))[^/?#\x00-\x1f\x7f]+)+/?")
_lock = threading.Lock()
_tokens: dict[tuple[str, str], tuple[str, float]] = caches.kept({})
DEV_TOKEN_SECONDS = 600
TOKENS_KEPT = 4096


class BackendError(Exception):
    """``code``: the answer's stable name for the refusal (a FHIR OperationOutcome's ``issue[0].code``,
    an RFC 9457 problem's ``type`` unless ``about:blank``, else its ``title``); ``extra``: the problem's
    other members (billing's ``refundable``, ...), which :func:`sen_portal.web.refusals.explain` reads."""

    def __init__(self, kind: str, service: str, status: int = 0, detail: str = "", code: str = "",
                 extra: dict[str, Any] | None = None) -> None:
        super().__init__(f"{service}: {kind} {status}")
        self.kind, self.service, self.status, self.detail = kind, service, status, detail
        self.code, self.extra = code, extra or {}


def settings() -> PortalSettings:
    from sen_shared.runtime import current

    return current().settings  # type: ignore[return-value]


def user_token() -> str:
    """The signed-in user's bearer token: the OIDC access token (kept on the server), or a development token for the
    demo user (``sen_shared.auth.issue_dev_token``, whose key is loaded once per process), kept per
    process until a minute before it expires."""
    if session.get("oidc"):  # the OIDC sign-in's, kept on the server under the session's id (tokens.py)
        from .tokens import access_token

        return access_token(str(session.get("sid")))
    caller = api_caller_token()
    if caller and not session.get("user"):
        return caller
    from sen_shared.auth import issue_dev_token

    cfg = settings()
    user = session.get("user") or {}
    role = str(user.get("role"))
    claims = {k: user[k] for k in ("facility", "practitioner") if user.get(k)}
    # the signing key and issuer are part of the key: tokens kept for one configuration (one app of a
    # test run) are never handed out under another
    key = (str(user.get("username")), role, tuple(sorted(claims.items())), str(user.get("name", "")),
           str(cfg.dev_key_path), cfg.jwt_issuer, cfg.jwt_audience)
    now = time.time()
    hit = _tokens.get(key)
    if hit is not None and hit[1] > now + 60:
        return hit[0]
    token = issue_dev_token(cfg.dev_key_path or "", role, issuer=cfg.jwt_issuer, audience=cfg.jwt_audience,
                            ttl_seconds=DEV_TOKEN_SECONDS, sub=f"portal-{key[0]}", name=user.get("name", ""),
                            **claims)
    with _lock:
        if len(_tokens) >= TOKENS_KEPT:  # bounded: the oldest half goes (they are re-minted when needed)
            for old in list(_tokens)[: TOKENS_KEPT // 2]:
                del _tokens[old]
        _tokens[key] = (token, now + DEV_TOKEN_SECONDS)
    return token


def user_subject() -> str | None:
    """The signed-in user as the back-ends know them, the subject of :func:`user_token` (billing's
    ``cashier`` of a refund): the OIDC access token's (the session's username), a demo user's
    ``portal-<username>``. None when no one is signed in."""
    user = session.get("user") or {}
    if not user.get("username"):
        return None
    return str(user["username"]) if session.get("oidc") else f"portal-{user['username']}"


def api_caller_token() -> str | None:
    """The bearer token of a JSON API request (``/api/...``) that connexion has verified: what the API
    asks a back-end for (the dashboard's districts, from the EHR's Organizations) it asks with the
    caller's own rights, never a token minted by the portal. None on a page's request."""
    from connexion.context import context

    try:
        verified = bool((context.get("token_info") or {}).get("principal"))
    except (LookupError, RuntimeError):  # outside connexion's request context
        return None
    auth = request.headers.get("Authorization", "") if verified and has_request_context() else ""
    if not auth.lower().startswith("bearer "):
        return None
    return auth[7:].strip() or None


def _base(service: str) -> str:
    cfg = settings()
    return {"ehr": cfg.ehr_url, "teleconsult": cfg.teleconsult_url, "billing": cfg.billing_url}[service]


_PROBLEM_FIELDS = {"type", "title", "status", "detail", "instance"}


def _detail(response: Response) -> tuple[str, str, dict[str, Any]]:
    """The refusal's detail (English, as the service wrote it), its code and the problem's other members."""
    try:
        body = response.json()
    except ValueError:
        return "", "", {}
    if isinstance(body, dict) and body.get("resourceType") == "OperationOutcome":
        issues = [i for i in body.get("issue", []) if isinstance(i, dict)]
        detail = "; ".join(str(i.get("diagnostics") or (i.get("details") or {}).get("text") or "")
                           for i in issues)[:500]
        return detail, str(issues[0].get("code") or "") if issues else "", {}
    if isinstance(body, dict):
        kind = str(body.get("type") or "")
        code = kind if kind and kind != "about:blank" else str(body.get("title") or "")
        extra = {k: v for k, v in body.items() if k not in _PROBLEM_FIELDS}
        return str(body.get("detail") or body.get("title") or "")[:500], code, extra
    return "", "", {}


def call(service: str, method: str, path: str, *, params: Any = None, json: Any = None,
         idempotent: bool = False, accept: str = FHIR_JSON, timeout: float | None = None,
         headers: dict[str, str] | None = None, reads: bool = False) -> Response:
    """One request to ``service``; a 2xx response or a BackendError. ``headers``: more request
    headers (``If-Match`` of a versioned update). ``reads``: a POST that only reads (a FHIR operation such as
    ``Appointment/$find``): like a GET, it neither forgets the user's kept answers nor marks the session written,
    so its answer sends no session cookie that could replace one a step's answer sent meanwhile (a lost update of
    the cookie session: sen_portal.web.notices)."""
    if not _PATH.fullmatch(path):
        raise BackendError("refused", service, 404, "no such record")
    if method != "GET" and not reads and has_request_context():
        answers.forget(_user_key())  # the user's own change shows on their next page at once,
        session["wrote_at"] = time.time()  # whichever worker process serves it
    headers = {**(headers or {}), "Authorization": f"Bearer {user_token()}", "Accept": accept}
    if json is not None:
        headers["Content-Type"] = FHIR_JSON if path.startswith("/fhir") else "application/json"
    if idempotent:  # a retry of the same click (slow links) changes nothing twice
        headers["Idempotency-Key"] = uuid.uuid4().hex
    cid = request.headers.get("X-Correlation-ID") if has_request_context() else None
    if cid:
        headers["X-Correlation-ID"] = cid
    try:
        r = http.request(method, _base(service) + path, params=params, json=json, headers=headers,
                         timeout=timeout or settings().http_timeout, replayable=True if reads else None)
    except http.TimedOut:
        raise BackendError("slow", service) from None
    except http.TransportError:  # refused, reset, unknown host
        raise BackendError("down", service) from None
    if r.status_code >= 500:
        raise BackendError("slow" if r.status_code == 504 else "failed", service, r.status_code, *_detail(r))
    if r.status_code >= 400:
        raise BackendError("refused", service, r.status_code, *_detail(r))
    return r


def outage_status(err: BackendError) -> int:
    """A page's status when a back-end it reads or writes did not answer (``down``, ``slow``: 503 Service
    Unavailable) or answered with an error (``failed``: 502 Bad Gateway), its readable message shown on the
    page all the same. htmx swaps no 4xx or 5xx by itself: a page an htmx request asks for again (a poll)
    names its target (``HX-Retarget``, which app.js swaps)."""
    return 502 if err.kind == "failed" else 503


def page_status(err: BackendError) -> int:
    """A page's status when a back-end refused what it was sent (its own 4xx: 403 another facility's or not
    the user's to change, 404 none such, 409 changed meanwhile, 422 unprocessable), 409 for any other refusal,
    503 when it did not answer, 502 when it failed (:func:`outage_status`)."""
    if err.kind != "refused":
        return outage_status(err)
    return err.status if 400 <= err.status < 500 else 409


class AnswerCache:
    """Back-end answers a page reuses for a few seconds, per signed-in user, and one request for
    the same answer at a time (single flight).

    A page asked for by the same user again within ``SEN_PORTAL_CACHE_SECONDS`` (the worklist
    refreshing, a reload, several tabs) is rendered from the answer already fetched; the same
    answer asked for by several requests at once is fetched once and shared by all of them (with
    ``seconds=0`` only that: nothing is kept, every answer is as fresh as the request). The key
    is the user's identity (their token's subject and role, the session's user), the service,
    path and query: one user never sees another's answer. Any write a user makes through
    :func:`call` forgets that user's answers here and stamps the time in their session (the
    signed cookie every worker process reads), so no process uses an answer fetched before it:
    the user's own change shows at once; another user's change shows within the seconds above.
    Errors are never kept. Per process (each gunicorn worker has its own), bounded (the oldest
    half is dropped when full).
    """

    def __init__(self, size: int = 2048, wait_seconds: float = 35.0) -> None:
        self.size, self.wait_seconds = size, wait_seconds  # a follower waits at most the leader's timeout
        self._lock = threading.Lock()
        self._kept: dict[tuple[Any, ...], tuple[float, Any, float]] = {}  # (until, answer, fetched at)
        self._flying: dict[tuple[Any, ...], _Flight] = {}

    def get(self, key: tuple[Any, ...], seconds: float, fetch: Any, not_before: float = 0.0,
            news: Callable[[], float] | None = None) -> Any:
        """``fetch()``'s answer for ``key``: kept, shared with a fetch in flight, or fetched now.
        ``not_before`` (a wall-clock time): an answer fetched earlier is not used (the user wrote
        since, perhaps through another worker process). ``news``: when the answer last changed by
        another user's write the portal knows of (``sent.newest``), a later ``not_before``; asked only
        when an answer kept or in flight could be used: not for one kept past its seconds, nor one fetched
        before ``not_before`` (either is fetched again whatever the news: the read was half the worklist's
        database commands under 20 users, each user's kept answer expired on every other page)."""
        if news is not None:
            now = time.time()
            with self._lock:
                kept = self._kept.get(key) if seconds > 0 else None
                usable = kept is not None and kept[0] > now and kept[2] >= not_before
                flight = self._flying.get(key)
                known = usable or (flight is not None and flight.started >= not_before)
            if known:
                not_before = max(not_before, news())
        now = time.time()
        with self._lock:
            hit = self._kept.get(key) if seconds > 0 else None  # seconds=0: never an answer kept before
            if hit is not None and hit[0] > now and hit[2] >= not_before:
                return hit[1]
            flight = self._flying.get(key)
            leader = flight is None or flight.started < not_before
            if leader:
                flight = self._flying[key] = _Flight(now)
        assert flight is not None
        if not leader:
            return flight.wait(self.wait_seconds)
        try:
            value = fetch()
        except BaseException as err:
            with self._lock:
                if self._flying.get(key) is flight:
                    del self._flying[key]
            flight.fail(err)
            raise
        with self._lock:
            if self._flying.get(key) is flight:
                del self._flying[key]
            if seconds > 0:
                if len(self._kept) >= self.size:
                    for old in list(self._kept)[: self.size // 2]:
                        del self._kept[old]
                self._kept[key] = (flight.started + seconds, value, flight.started)
        flight.done(value)
        return value

    def forget(self, user: tuple[Any, ...]) -> None:
        with self._lock:
            for key in [k for k in self._kept if k[0] == user]:
                del self._kept[key]

    def clear(self) -> None:
        """Forget every user's answers (a fetch in flight still answers the requests waiting for it)."""
        with self._lock:
            self._kept.clear()


class _Flight:
    def __init__(self, started: float) -> None:
        self.started = started
        self._event = threading.Event()
        self._value: Any = None
        self._error: BaseException | None = None

    def done(self, value: Any) -> None:
        self._value = value
        self._event.set()

    def fail(self, err: BaseException) -> None:
        self._error = err
        self._event.set()

    def wait(self, seconds: float) -> Any:
        if not self._event.wait(seconds):
            raise BackendError("slow", "portal")
        if self._error is not None:
            raise self._error
        return self._value


answers = caches.kept(AnswerCache())


def _user_key() -> tuple[Any, ...]:
    user = session.get("user") or {}
    return (str(user.get("username")), str(user.get("role")), str(user.get("facility")),
            str(user.get("practitioner")))


def fhir_get(service: str, path: str, params: Any = None, *, cached: bool = False,
             news: Callable[[], float] | None = None) -> dict[str, Any]:
    """A GET's JSON; ``cached``: from :data:`answers` (this user's, for ``SEN_PORTAL_CACHE_SECONDS``, unless
    older than ``news()``: :meth:`AnswerCache.get`)."""
    if not cached:
        return call(service, "GET", path, params=params).json()
    return shared_get(service, path, params, seconds=settings().portal_cache_seconds, news=news)


def shared_get(service: str, path: str, params: Any = None, *, seconds: float = 0.0,
               accept: str = FHIR_JSON, news: Callable[[], float] | None = None) -> Any:
    """A GET's JSON through :data:`answers`: kept ``seconds`` for this user (0: only shared by the
    requests asking for it at the same moment); ``news``: as :meth:`AnswerCache.get`'s."""
    items = tuple(sorted((params or {}).items())) if isinstance(params, dict) else tuple(params or ())
    key = (_user_key(), service, path, items, accept)
    return answers.get(key, seconds, lambda: call(service, "GET", path, params=params, accept=accept).json(),
                       not_before=float(session.get("wrote_at") or 0.0), news=news)


def fhir_post(service: str, path: str, body: Any, *, idempotent: bool = True,
              headers: dict[str, str] | None = None, reads: bool = False) -> dict[str, Any]:
    """``headers``: more request headers (an ``Idempotency-Key`` of the caller's own, an ``If-None-Exist``);
    a key given there is sent instead of a new one. ``reads``: as :func:`call`'s (a search sent as a POST)."""
    r = call(service, "POST", path, json=body, idempotent=idempotent and "Idempotency-Key" not in (headers or {}),
             headers=headers, reads=reads)
    return r.json() if r.content else {}


def entries(bundle: dict[str, Any], rtype: str | None = None) -> list[dict[str, Any]]:
    return [e["resource"] for e in bundle.get("entry", []) or []
            if "resource" in e and (rtype is None or e["resource"].get("resourceType") == rtype)]
