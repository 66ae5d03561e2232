"""``Idempotency-Key`` for state-changing HTTP requests: a retried request is answered, not re-run.

Clinics on slow links retry; a payment page double-submits. A client sends
``Idempotency-Key: <unique string>`` with a POST/PUT/PATCH/DELETE and the server
promises (after the IETF ``Idempotency-Key`` header draft, and Stripe's practice):

- the same key with the same request again: the FIRST answer is replayed (status,
  body, the headers that matter) and nothing changes;
- the same key with a different request (method, path or body): 422;
- the same key while the first request is still running: the second waits for the
  first answer up to ``wait_seconds`` (default 10 s: a clinic's retry usually comes while
  the first is still running, and a replay is what it wants), then 409 "in progress"
  with ``Retry-After``;
- keys are scoped by the caller (the token's subject and facility): two clinics using
  the same key never meet;
- an answer of 5xx (or an exception) is not kept: the key is released and a retry runs
  again (the first attempt changed nothing it can stand by). 2xx-4xx answers are kept.

Storage, by the claim rule (:mod:`sen_shared.claims`, insert-only, no updates): the
attempts at a key form a chain ``<scope>|<key>/1``, ``/2``, ...; the request that claims
the next link runs, everyone else waits for its answer, which is the insert of
``<scope>|<key>/answer``. A released attempt (5xx) is a further link saying so, and an
attempt whose process died is taken over once its lease (``lease_seconds``) has passed;
either way the next link is claimed by an insert, so two retries never both run.
Records expire after ``ttl`` (kept in the document; a sweeper may delete older ones).

Usage in a connexion Flask handler (billing and teleconsult use it the same way)::

    @idempotent()
    def submit(...): ...

or ``IdempotencyKeys(db["idempotency_keys"]).run(...)`` outside Flask.
"""

from __future__ import annotations

import functools
import hashlib
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo.collection import Collection

from .claims import ClaimTaken, advance, chain_indexes, claim, latest
from .errors import SenError
from .mongo import Index

HEADER = "Idempotency-Key"
COLLECTION = "idempotency_keys"
MAX_KEY_LENGTH = 255
# the response headers a replay repeats (the rest describe the connection or are recomputed)
REPLAYED_HEADERS = ("content-type", "location", "content-location", "etag", "last-modified", "retry-after")
INDEXES: list[Index] = chain_indexes(COLLECTION)


class IdempotencyError(SenError):
    """A key misused: rendered as a problem (or an OperationOutcome on FHIR paths)."""


@dataclass(frozen=True)
class Answer:
    """An HTTP answer as stored and replayed."""

    status: int
    headers: dict[str, str]
    body: bytes

    def to_record(self) -> dict[str, Any]:
        return {"status": self.status, "headers": self.headers, "body": self.body}

    @classmethod
    def from_record(cls, rec: Mapping[str, Any]) -> Answer:
        return cls(int(rec["status"]), dict(rec.get("headers") or {}), bytes(rec.get("body") or b""))


def fingerprint(method: str, path: str, body: bytes, query: str = "") -> str:
    """What makes two requests "the same": method, path, query and the body (JSON compared
    canonically, so whitespace and key order do not matter; other bodies byte for byte)."""
    try:
        canonical = json.dumps(json.loads(body), sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    except (ValueError, RecursionError):
        canonical = body
    digest = hashlib.sha256()
    for part in (method.upper().encode(), path.encode(), query.encode(), canonical):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()


def check_key(key: str) -> str:
    if not key or len(key) > MAX_KEY_LENGTH or not key.isprintable() or not key.isascii():
        raise IdempotencyError(f"{HEADER} must be 1 to {MAX_KEY_LENGTH} printable ASCII characters", status=400)
    return key


class IdempotencyKeys:
    """The keys of one service (one collection)."""

    def __init__(self, coll: Collection, *, wait_seconds: float = 10.0, lease_seconds: float = 120.0,
                 ttl: timedelta = timedelta(hours=24), poll_seconds: float = 0.05) -> None:
        self.coll = coll
        self.wait_seconds = wait_seconds
        self.lease_seconds = lease_seconds
        self.ttl = ttl
        self.poll_seconds = poll_seconds

    def run(self, scope: str, key: str, request_fingerprint: str, execute: Callable[[], Answer]) -> Answer:
        """The answer to the request ``(scope, key)``: the stored one, or ``execute()``'s (stored).

        Raises :class:`IdempotencyError` 422 for a key reused with another request and 409 when
        the first request is still running after ``wait_seconds``.
        """
        chain = f"{scope}|{check_key(key)}"
        try:  # a new key, the common case: one insert claims it
            mine = advance(self.coll, chain, None, {"fp": request_fingerprint, "expires": self._expiry()})
        except ClaimTaken:
            pass  # a retry: find out how the first attempt went
        else:
            return self._execute(chain, mine, request_fingerprint, execute)
        deadline = time.monotonic() + self.wait_seconds
        while True:
            answer = self._answer(chain, request_fingerprint)
            if answer is not None:
                return answer
            link = latest(self.coll, chain)
            if link is not None and link.get("fp") != request_fingerprint:
                raise _reused()
            if link is None or link.get("released") or self._lease_over(link):
                try:
                    mine = advance(self.coll, chain, link, {"fp": request_fingerprint, "expires": self._expiry()})
                except ClaimTaken:
                    continue  # another retry claimed it first: wait for its answer
                return self._execute(chain, mine, request_fingerprint, execute)
            if time.monotonic() >= deadline:
                raise IdempotencyError(
                    f"a request with this {HEADER} is still being processed; retry in a few seconds",
                    status=409, title="Conflict", retry_after=2)
            time.sleep(self.poll_seconds)

    def _answer(self, chain: str, request_fingerprint: str) -> Answer | None:
        doc = self.coll.find_one({"_id": f"{chain}/answer"})
        if doc is None:
            return None
        if doc.get("fp") != request_fingerprint:
            raise _reused()
        return Answer.from_record(doc)

    def _execute(self, chain: str, mine: dict[str, Any], request_fingerprint: str,
                 execute: Callable[[], Answer]) -> Answer:
        try:
            answer = execute()
        except BaseException:
            self._release(chain, mine, request_fingerprint)
            raise
        if answer.status >= 500:
            self._release(chain, mine, request_fingerprint)
            return answer
        try:
            claim(self.coll, f"{chain}/answer", {"fp": request_fingerprint, **answer.to_record(),
                                                "expires": self._expiry()})
        except ClaimTaken as taken:  # our lease ran out and a takeover answered first: its answer stands
            if taken.holder is not None:
                return Answer.from_record(taken.holder)
        return answer

    def _release(self, chain: str, mine: dict[str, Any], request_fingerprint: str) -> None:
        try:
            advance(self.coll, chain, mine, {"fp": request_fingerprint, "released": True, "expires": self._expiry()})
        except ClaimTaken:
            pass  # taken over already

    def _lease_over(self, link: Mapping[str, Any]) -> bool:
        at = link.get("at")
        if not isinstance(at, datetime):
            return True
        if at.tzinfo is None:
            at = at.replace(tzinfo=UTC)
        return datetime.now(UTC) - at > timedelta(seconds=self.lease_seconds)

    def _expiry(self) -> datetime:
        return datetime.now(UTC) + self.ttl


def _reused() -> IdempotencyError:
    return IdempotencyError(f"this {HEADER} was used with a different request; use a new key for a new request",
                            status=422, title="Unprocessable Content")


# --------------------------------------------------------------------------- Flask / connexion

def caller_scope(principal: Any) -> str:
    """Whose keys these are: the token's subject and facility."""
    return f"{getattr(principal, 'sub', '') or '-'}@{getattr(principal, 'facility', None) or '-'}"


def _render_error(err: SenError, fhir: bool) -> Answer:
    """The answer the error handlers give ``err`` (``sen_shared.web``), so a replay is the same."""
    from .fhir.outcome import FHIR_JSON, FhirError, outcome

    if fhir:
        body = err.to_outcome() if isinstance(err, FhirError) else outcome(err.detail, status=err.status)
        headers = {"content-type": FHIR_JSON, **{k.lower(): v for k, v in getattr(err, "headers", {}).items()}}
    else:
        body = err.problem()
        headers = {"content-type": "application/problem+json"}
    if "retry_after" in err.extra:
        headers["retry-after"] = str(err.extra["retry_after"])
    return Answer(err.status, headers, json.dumps(body, ensure_ascii=False).encode())


def idempotent(collection: str = COLLECTION, *, fhir_base: str | None = "/fhir",
               keys: Callable[[], IdempotencyKeys] | None = None) -> Callable[[Any], Any]:
    """Decorator of a connexion Flask handler: honour ``Idempotency-Key`` when the request has one.

    The handler's errors below 500 (``SenError``) are answers like any other: kept and replayed.
    """
    def wrap(fn: Any) -> Any:
        @functools.wraps(fn)
        def inner(*args: Any, **kwargs: Any) -> Any:
            from flask import Response, make_response, request

            from .auth import current_principal
            from .runtime import current
            from .web import request_body

            key = request.headers.get(HEADER)
            if key is None:
                return fn(*args, **kwargs)
            fhir = bool(fhir_base) and request.path.startswith(fhir_base or "")
            store = keys() if keys is not None else IdempotencyKeys(current().db[collection])

            def execute() -> Answer:
                try:
                    rv = make_response(fn(*args, **kwargs))
                except SenError as err:
                    if err.status >= 500:
                        raise
                    return _render_error(err, fhir)
                headers = {k.lower(): v for k, v in rv.headers.items() if k.lower() in REPLAYED_HEADERS}
                return Answer(rv.status_code, headers, rv.get_data())

            try:
                answer = store.run(caller_scope(current_principal()), key,
                                   fingerprint(request.method, request.path, request_body(),
                                               request.query_string.decode("latin-1")), execute)
            except IdempotencyError as err:
                answer = _render_error(err, fhir)
            response = Response(answer.body, answer.status)
            for k, v in answer.headers.items():
                response.headers[k] = v
            response.headers[HEADER] = key
            return response

        return inner

    return wrap


__all__ = ["COLLECTION", "HEADER", "INDEXES", "Answer", "IdempotencyError", "IdempotencyKeys", "caller_scope",
           "check_key", "fingerprint", "idempotent"]
