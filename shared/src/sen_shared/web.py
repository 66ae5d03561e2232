"""Building a service's web application: one function every service calls.

``build_app`` wires a connexion ``FlaskApp`` from the service's OpenAPI spec
(merged with the shared operational endpoints in ``specs/common/ops.yaml``),
installs the runtime, the token verifier and the error handlers, and adds the
request middleware: correlation id, body size limit, metrics, request log, the security headers
(:data:`SECURITY_HEADERS`). A declared JSON body
nested past the recursion limit, or holding a NUL or a lone surrogate (which the database cannot
store), is a 400 before any handler runs (:class:`CheckedJSONBodyValidator`).

The path of every request, the one path: gunicorn's uvicorn worker (``uvicorn_worker``) hands it to
connexion's ASGI middleware stack (Sen's :class:`RequestMiddleware`, then connexion's exception
handling, Swagger UI, routing, security, validation), which runs the Flask handler in connexion's
thread pool (``FlaskApp``'s documented WSGI bridge), so no handler and no database call ever runs
on the event loop. Only connexion's and Flask's public hooks are used here: ``add_api`` with a
resolver and a ``validator_map``, ``add_middleware``, ``add_error_handler`` and Flask's
``session_interface``.
"""

from __future__ import annotations

import copy
import functools
import json
import logging
import os
import re
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import connexion
import flask.json
import yaml
from connexion.datastructures import MediaTypeDict
from connexion.exceptions import BadRequestProblem, ProblemException
from connexion.jsonifier import Jsonifier
from connexion.lifecycle import ConnexionRequest, ConnexionResponse
from connexion.middleware import MiddlewarePosition
from connexion.options import SwaggerUIOptions
from connexion.resolver import RelativeResolver
from connexion.utils import is_null, is_nullable
from connexion.validators import (
    VALIDATOR_MAP,
    JSONRequestBodyValidator,
    JSONResponseBodyValidator,
    ParameterValidator,
    TextResponseBodyValidator,
)
from flask.sessions import NullSession, SessionInterface
from jsonschema import Draft4Validator, ValidationError
from pymongo.errors import ConnectionFailure, ExecutionTimeout, OperationFailure
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from . import auth, logs, mongo
from .allow import AllowedMethods
from .config import Settings
from .errors import SenError, status_title
from .fhir.outcome import FHIR_JSON, FhirError, issue_code
from .health import LATENCY, REQUESTS
from .mongo import Index
from .runtime import EXTENSION, Runtime, install

log = logging.getLogger("sen.http")

CORRELATION_HEADER = b"x-correlation-id"
# a page's body over the limit, as the application sees it (RequestMiddleware ``pages``): the limit in
# bytes; never one a client sent
TOO_LARGE_HEADER = b"x-sen-body-too-large"
TOO_LARGE_DRAIN = 4  # a page's body over the limit is read and dropped up to this many times the limit
# a multipart body's part holding a file chosen (an empty file box sends ``filename=""``): the page's 413 says
# the files are too large only when some were sent (:data:`TOO_LARGE_HEADER` ``<limit> files``), else the form
_FILE_PART = re.compile(rb'; filename="[^"]')
# a page's request the middleware refuses, as the application sees it (RequestMiddleware ``pages``): why, one word
# (``path``: its path held control characters, which the application sees without them); never one a client sent
REFUSED_HEADER = b"x-sen-refused"
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")  # no route or id holds one
_CORRELATION_ID = re.compile(rb"[0-9A-Za-z._-]+")  # what a client's id may hold (else one is made)
_METRIC_CHILDREN = 512  # (method, status) pairs whose metric children are kept (clients choose methods)
DATABASE_RETRY_AFTER = 5  # seconds a client is told to wait when the database is out of reach
# What every answer carries unless its route set the same header itself (OWASP's REST Security cheat sheet):
# no MIME sniffing; a CSP under which a JSON answer opened in a browser loads nothing and is framed nowhere
# (the portal's pages, billing's receipt and a consult's attachments set their own); and a Cache-Control for
# answers carrying patient data. ``private, no-cache`` rather than ``no-store``: no shared cache (a proxy in a
# hospital's network) keeps a copy, and the private cache of the one client that asked (an HIS's, the national
# platform's) must ask again before each use, so it never shows a changed or revoked record; asking again with
# ``If-None-Match`` (the FHIR reads' ETag, :func:`sen_shared.fhir.rest.not_modified`) then costs a 304 without
# the body, after the token and the access checks. ``no-store`` forbids that cache its copy, and with it the
# 304. The pages people look at on a clinic's shared computer are ``no-store`` (the portal's own), as are the
# QR code and the PDFs. Header names are lowercase (as starlette and a2wsgi give them). No server banner:
# uvicorn's is off (:class:`sen_shared.serving.SenUvicornWorker`). HSTS is the TLS ingress's (deploy/README.md).
SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"x-content-type-options", b"nosniff"),
    (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'"),
    (b"cache-control", b"private, no-cache"),
)
_SECURITY_NAMES = frozenset(name for name, _ in SECURITY_HEADERS)


def with_security_headers(headers: Any, cid: bytes) -> list[tuple[bytes, bytes]]:
    """An answer's ``headers``, then :data:`SECURITY_HEADERS` but for those it set itself, then the
    correlation id ``cid``: a new list. The usual answer sets none of them: one look at each of its names."""
    if not isinstance(headers, (list, tuple)):
        headers = list(headers)
    for name, _ in headers:
        if name in _SECURITY_NAMES:  # a route's own (the portal's pages' CSP, the QR code's no-store)
            own = {n for n, _ in headers}
            return [*headers, *(h for h in SECURITY_HEADERS if h[0] not in own), (CORRELATION_HEADER, cid)]
    return [*headers, *SECURITY_HEADERS, (CORRELATION_HEADER, cid)]


def specs_dir() -> Path:
    """``SEN_SPECS_DIR``, or the repository's ``specs/`` found above this file, or /app/specs."""
    env = os.environ.get("SEN_SPECS_DIR")
    if env:
        return Path(env)
    for parent in Path(__file__).resolve().parents:
        if (parent / "specs" / "common" / "ops.yaml").exists():
            return parent / "specs"
    return Path("/app/specs")


@functools.lru_cache(maxsize=16)
def _load_yaml(path: Path) -> dict[str, Any]:
    with path.open(encoding="utf-8") as f:
        return yaml.safe_load(f)


FHIR_MARKER = "x-sen-fhir"  # a spec saying `x-sen-fhir: true` gets common/fhir.yaml merged in
FHIR_NEEDS = "x-sen-fhir-needs"  # a fragment path served only where this resource type is


def load_spec(name: str, fhir_types: Sequence[str] | None = None) -> dict[str, Any]:
    """The service's spec with the shared operational paths and components merged in, and the
    shared FHIR interactions (``common/fhir.yaml``) when it is a FHIR server (``x-sen-fhir``).

    ``fhir_types``: the resource types the service serves; a fragment path needing a type
    outside them is left out (None: keep every path). The service's own paths win.
    """
    root = specs_dir()
    spec = copy.deepcopy(_load_yaml(root / name))
    if spec.get("paths") is None:  # `paths:` holding only comments (a spec of shared paths only)
        spec["paths"] = {}
    fragments = [_load_yaml(root / "common" / "ops.yaml")]
    if spec.pop(FHIR_MARKER, False):
        fragments.append(_load_yaml(root / "common" / "fhir.yaml"))
    for fragment in fragments:
        for path, item in fragment["paths"].items():
            needs = item.get(FHIR_NEEDS)
            if needs is not None and fhir_types is not None and needs not in fhir_types:
                continue
            item = {k: copy.deepcopy(v) for k, v in item.items() if k != FHIR_NEEDS}
            spec.setdefault("paths", {}).setdefault(path, item)
        comps = spec.setdefault("components", {})
        for section, entries in fragment["components"].items():
            target = comps.setdefault(section, {})
            for key, value in entries.items():
                target.setdefault(key, copy.deepcopy(value))
    return spec


class ServiceResolver(RelativeResolver):
    """operationIds relative to the service's ``api`` package; ``sen_shared.*`` ones absolute."""

    def resolve_operation_id(self, operation: Any) -> str:
        operation_id = operation.operation_id
        if operation_id and operation_id.startswith("sen_shared."):
            return operation_id
        return super().resolve_operation_id(operation)


# --------------------------------------------------------------------------- middleware

def problem_bytes(status: int, title: str, detail: str, fhir: bool) -> tuple[bytes, bytes]:
    """An error answer's body and media type before any application code: an OperationOutcome
    (``fhir``), else RFC 9457 problem JSON."""
    if fhir:
        body = {"resourceType": "OperationOutcome",
                "issue": [{"severity": "error", "code": issue_code(status), "diagnostics": detail}]}
        return json.dumps(body).encode(), FHIR_JSON.encode()
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail}
    return json.dumps(body).encode(), b"application/problem+json"


BODY_KEY = "sen.body"  # the scope's entry holding the request body as it went by (:func:`request_body`)


class _KeptBody:
    """A request's body as its messages passed :class:`RequestMiddleware` on the event loop, for
    :func:`request_body`: ``done`` once the last part went by (connexion's body validator reads
    the whole body there before the handler runs)."""

    __slots__ = ("chunks", "done")

    def __init__(self, chunks: list[bytes] | None = None, done: bool = False) -> None:
        self.chunks = chunks if chunks is not None else []
        self.done = done


def _keeping_body(scope: Scope, receive: Receive) -> Receive:
    kept = scope[BODY_KEY] = _KeptBody()

    async def keeping() -> Message:
        message = await receive()
        if message["type"] == "http.request" and not kept.done:
            kept.chunks.append(message.get("body", b""))
            kept.done = not message.get("more_body", False)
        return message

    return keeping


def request_body() -> bytes:
    """The current Flask request's body (call it inside a handler). When it went by on the event
    loop whole (:class:`RequestMiddleware` kept it as connexion's body validator read it), that
    copy, without reading it again through a2wsgi (a thread hand-off to the loop and back); else
    Flask's ``get_data()``."""
    from flask import request

    kept = request.environ.get("asgi.scope", {}).get(BODY_KEY)
    if kept is not None and kept.done:
        return b"".join(kept.chunks)
    return request.get_data()


class RequestMiddleware:
    """Correlation id in and out, body size limit, metrics and one log line per request.

    ``pages``: which requests are for a service's HTML pages (the portal's), asked of a request refused
    here; a page answers it itself, in the user's language, where an API gets a problem (or a FHIR
    OperationOutcome). A body over the limit sent to a page is read and dropped (the browser gets its
    answer once it sent all: an answer while it is still sending reads as a broken connection), then
    the application gets the request with no body and :data:`TOO_LARGE_HEADER`, to answer its 413.
    The limit is the same; a body over :data:`TOO_LARGE_DRAIN` times it is refused as any other's. A
    page's path holding control characters reaches the application without them and with
    :data:`REFUSED_HEADER` ``path``, to answer its 400."""

    def __init__(self, app: ASGIApp, service: str, max_body: int, fhir_base: str | None,
                 pages: Callable[[Scope], bool] | None = None) -> None:
        self.app = app
        self.service = service
        self.max_body = max_body
        self.fhir_base = fhir_base
        self.pages = pages
        self._children: dict[tuple[str, int], tuple[Any, Any]] = {}  # labels() looks each up under a lock

    def _is_fhir(self, scope: Scope) -> bool:
        return bool(self.fhir_base) and scope.get("path", "").startswith(self.fhir_base)

    async def _reject(self, scope: Scope, send: Send, status: int, title: str, detail: str,
                      cid: bytes) -> None:
        body, ctype = problem_bytes(status, title, detail, self._is_fhir(scope))
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", ctype), (b"content-length", str(len(body)).encode()),
                                (CORRELATION_HEADER, cid), *SECURITY_HEADERS]})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        cid = headers.get(CORRELATION_HEADER, b"")[:64]
        if not cid or _CORRELATION_ID.fullmatch(cid) is None:
            cid = logs.new_correlation_id().encode()
        scope["headers"] = [(k, v) for k, v in scope.get("headers") or []
                            if k not in (CORRELATION_HEADER, TOO_LARGE_HEADER, REFUSED_HEADER)]
        scope["headers"].append((CORRELATION_HEADER, cid))
        logs.correlation_id.set(cid.decode())
        started = time.perf_counter()
        method = scope.get("method", "GET")
        status_holder = {"status": 500}

        path = scope.get("path", "")
        if _CONTROL.search(path):
            # no id or route holds one; the ASGI and Flask routers would disagree on such a path. A page's is
            # answered by the page without them (the address it shows and offers links from has none)
            page = {**scope, "path": _CONTROL.sub("", path) or "/"}
            if self.pages is not None and self.pages(page):
                await self._to_page(page, receive, send, (REFUSED_HEADER, b"path"), method, started)
                return
            await self._reject(scope, send, 400, "Bad Request", "the path contains control characters", cid)
            self._observe(method, 400, started, scope)
            return
        if path.startswith("//"):
            # one leading slash, as werkzeug's router reads the path (and nginx passes it on): connexion's
            # router matched no operation for ``//fhir/Patient`` while Flask's ran its handler, outside
            # any connexion operation (a 500)
            scope["path"] = "/" + path.lstrip("/")

        length = headers.get(b"content-length")
        if length is not None:
            try:
                too_big = int(length) > self.max_body
            except ValueError:  # HTTP servers (h11, httptools) refuse it first: no browser's page gets here
                await self._reject(scope, send, 400, "Bad Request", "Content-Length is not a number", cid)
                self._observe(method, 400, started, scope)
                return
            if too_big and await self._page_too_large(scope, receive, send, b"", False, method, started):
                return
            if too_big:
                await self._reject(scope, send, 413, "Content Too Large",
                                   f"the body is larger than {self.max_body} bytes; send less", cid)
                self._observe(method, 413, started, scope)
                return
            if method in ("POST", "PUT", "PATCH"):
                receive = _keeping_body(scope, receive)
        elif method in ("POST", "PUT", "PATCH"):
            # no Content-Length (chunked): read at most the limit, then replay it
            chunks: list[bytes] = []
            size = 0
            while True:
                message = await receive()
                if message["type"] != "http.request":
                    break
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > self.max_body and await self._page_too_large(
                        scope, receive, send, b"".join([*chunks, chunk]), not message.get("more_body"), method,
                        started):
                    return
                if size > self.max_body:
                    await self._reject(scope, send, 413, "Content Too Large",
                                       f"the body is larger than {self.max_body} bytes; send less", cid)
                    self._observe(method, 413, started, scope)
                    return
                chunks.append(chunk)
                if not message.get("more_body"):
                    break
            body = b"".join(chunks)
            scope[BODY_KEY] = _KeptBody([body], True)
            sent = False

            async def replay() -> Message:
                nonlocal sent
                if not sent:
                    sent = True
                    return {"type": "http.request", "body": body, "more_body": False}
                return await receive()

            receive = replay

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_holder["status"] = message["status"]
                message["headers"] = with_security_headers(message.get("headers", ()), cid)
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            self._observe(method, status_holder["status"], started, scope)

    async def _page_too_large(self, scope: Scope, receive: Receive, send: Send, read: bytes, ended: bool,
                              method: str, started: float) -> bool:
        """A page's body over the limit (``read``: what was read of it, ``ended``: all of it): the rest
        read and dropped, then the application's answer to it without its body (:data:`TOO_LARGE_HEADER`:
        the limit, then `` files`` when a part of it was a file chosen, :data:`_FILE_PART`: the page names the
        files only then, a long text alone being no file). False (nothing answered yet) when the path is no
        page or the body goes on past the drain limit."""
        if self.pages is None or method not in ("POST", "PUT", "PATCH") or not self.pages(scope):
            return False
        size, files, tail = len(read), _FILE_PART.search(read) is not None, read[-200:]
        while not ended:
            message = await receive()
            if message["type"] != "http.request":
                break  # the client went away: nothing to answer, the application says it anyway
            chunk = message.get("body", b"")
            size += len(chunk)
            files = files or _FILE_PART.search(tail + chunk) is not None  # a part's header split between two too
            tail = (tail + chunk)[-200:]
            ended = not message.get("more_body")
            if size > self.max_body * TOO_LARGE_DRAIN:
                return False
        marker = str(self.max_body).encode() + (b" files" if files else b"")
        await self._to_page(scope, receive, send, (TOO_LARGE_HEADER, marker), method, started)
        return True

    async def _to_page(self, scope: Scope, receive: Receive, send: Send, marker: tuple[bytes, bytes], method: str,
                       started: float) -> None:
        """A page's request refused here, handed to the application to answer as a page: without its body
        (none read, or read and dropped) and with ``marker``, a header only this middleware sets."""
        headers = [(k, v) for k, v in scope["headers"] if k not in (b"content-length", b"transfer-encoding")]
        page = {**scope, "headers": [*headers, (b"content-length", b"0"), marker]}
        sent = False

        async def nothing() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": b"", "more_body": False}
            return await receive()

        status = {"status": 500}
        cid = dict(scope["headers"]).get(CORRELATION_HEADER, b"")

        async def send_page(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["status"] = message["status"]
                message["headers"] = with_security_headers(message.get("headers", ()), cid)
            await send(message)

        try:
            await self.app(page, nothing, send_page)
        finally:
            self._observe(method, status["status"], started, scope)

    def _observe(self, method: str, status: int, started: float, scope: Scope) -> None:
        elapsed = time.perf_counter() - started
        children = self._children.get((method, status))
        if children is None:
            children = (REQUESTS.labels(self.service, method, str(status)), LATENCY.labels(self.service, method))
            if len(self._children) < _METRIC_CHILDREN:
                self._children[(method, status)] = children
        children[0].inc()
        children[1].observe(elapsed)
        # path only: query strings may carry names; ids are not patient data
        log.info("request", extra={"method": method, "path": scope.get("path", ""), "status": status,
                                   "ms": round(elapsed * 1000, 1)})


# --------------------------------------------------------------------------- errors

# json.dumps(..., ensure_ascii=False) builds a new encoder on every call; this one is built once
_to_json = json.JSONEncoder(ensure_ascii=False).encode


def _render(request: ConnexionRequest, status: int, title: str, detail: str,
            fhir_base: str | None, extra: dict[str, Any] | None = None,
            headers: dict[str, str] | None = None) -> ConnexionResponse:
    if fhir_base and request.scope["path"].startswith(fhir_base):
        body: dict[str, Any] = {"resourceType": "OperationOutcome",
                                "issue": [{"severity": "error", "code": issue_code(status),
                                           "diagnostics": detail}]}
        mimetype = FHIR_JSON
    else:
        body = {"type": "about:blank", "title": title, "status": status, "detail": detail,
                "instance": request.url.path}
        body.update(extra or {})
        mimetype = "application/problem+json"
    return ConnexionResponse(status_code=status, body=_to_json(body).encode(),
                             mimetype=mimetype, content_type=mimetype, headers=headers or {})


# connexion serves each service's spec there (its default ``serve_spec``); no Swagger UI is installed
OPENAPI_PATH = "/openapi.json"


def not_found_detail(path: str, service: str, fhir_base: str | None, portal_url: str = "") -> str:
    """The detail of the 404 problem of a path no endpoint serves (outside the FHIR base, whose 404s are
    OperationOutcomes): where to go instead. ``/`` of an API service (one with a FHIR base), opened in a
    browser by someone following a port number, names its FHIR server's CapabilityStatement, its OpenAPI
    document and the portal, where people use Sen."""
    if path == "/" and fhir_base:
        portal = f"the portal, {portal_url}" if portal_url else "the portal (Sen's web pages)"
        return (f"no page here: this is the API of Sen's {service} service, for programs. Its FHIR server "
                f"describes itself at {fhir_base}/metadata (a CapabilityStatement), its endpoints are described "
                f"at {OPENAPI_PATH} (OpenAPI); people use Sen in {portal}")
    return f"no such endpoint: {path} (the {service} service's endpoints are described at {OPENAPI_PATH})"


def _error_handlers(fhir_base: str | None, allow: AllowedMethods | None = None,
                    fhir: Any = None, *, service: str = "sen", portal_url: str = "") -> dict[Any, Any]:
    """The error handlers, coroutines: connexion runs a plain function handler in a thread pool
    (``run_in_threadpool``), one more thread hand-off for every 4xx answer; these only build a
    small JSON body (and log), so they run on the event loop. Every 405 carries ``Allow``: the one
    its error names (a narrower one for the caller), else the target's methods (``allow``). A 405 on
    a FHIR path where the FHIR server (``fhir``) serves no method (a resource type it does not serve,
    billing's ``[base]``) is a 404 instead (:meth:`FhirServer.unserved`): an empty ``Allow`` told the
    client nothing."""
    def unserved(request: ConnexionRequest) -> ConnexionResponse | None:
        path = request.scope["path"]
        if fhir is None or allow is None or not fhir_base or not path.startswith(fhir_base) \
                or allow.methods(path) != ():
            return None
        for template in allow.templates(path):
            if template.startswith(fhir_base):
                err = fhir.unserved(template[len(fhir_base):], path[len(fhir_base):])
                if err is not None:
                    return ConnexionResponse(status_code=err.status, body=_to_json(err.to_outcome()),
                                             mimetype=FHIR_JSON, content_type=FHIR_JSON)
        return None

    def shadowed(request: ConnexionRequest) -> ConnexionResponse | None:
        """The 404 of ``[type]/_history`` (or ``_search``) where a more specific route took the path and
        refused ``_history`` as an id (teleconsult's ``Slot/{id}``, ``OperationDefinition/{id}``; the
        router prefers a literal type to ``{type}``), when the interaction's own route serves nothing
        for the method there: the answer that route would give (:meth:`FhirServer.unserved`)."""
        path = request.scope["path"]
        if fhir is None or allow is None or not fhir_base or not path.startswith(fhir_base) \
                or path.rstrip("/").rsplit("/", 1)[-1] not in ("_history", "_search"):
            return None
        tail = "/" + path.rstrip("/").rsplit("/", 1)[-1]
        for template, methods in allow.served(path):
            if template.startswith(fhir_base) and template.endswith(tail) and request.method not in methods:
                err = fhir.unserved(template[len(fhir_base):], path[len(fhir_base):])
                if err is not None:
                    return ConnexionResponse(status_code=err.status, body=_to_json(err.to_outcome()),
                                             mimetype=FHIR_JSON, content_type=FHIR_JSON)
        return None

    def with_allow(request: ConnexionRequest, headers: dict[str, str], *, replace: bool = False) -> dict[str, str]:
        found = allow.allowed(request.scope["path"]) if allow is not None else None
        if found is not None and (replace or "Allow" not in headers):
            headers["Allow"] = found
        headers.setdefault("Allow", "")  # RFC 9110 §10.2.1: no method served here
        return headers

    async def sen_error(request: ConnexionRequest, exc: Exception) -> ConnexionResponse:
        assert isinstance(exc, SenError)
        # the scope's path, not ``request.url.path``: starlette builds a whole URL for that (the Host
        # header parsed, the URL joined and split again), a third of a lost ``$book`` race's 409 here
        if exc.status == 405 and (not_found := unserved(request)) is not None:
            return not_found
        if isinstance(exc, FhirError) and fhir_base and request.scope["path"].startswith(fhir_base):
            return ConnexionResponse(status_code=exc.status, body=_to_json(exc.to_outcome()),
                                     mimetype=FHIR_JSON, content_type=FHIR_JSON,
                                     headers=with_allow(request, dict(exc.headers)) if exc.status == 405
                                     else exc.headers)
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else \
            with_allow(request, {}) if exc.status == 405 else None
        return _render(request, exc.status, exc.title, exc.detail, fhir_base, exc.extra, headers)

    async def problem(request: ConnexionRequest, exc: Exception) -> ConnexionResponse:
        assert isinstance(exc, ProblemException)
        headers = dict(exc.headers or {})
        if exc.status == 401:
            headers.setdefault("WWW-Authenticate", "Bearer")
        detail = str(exc.detail or exc.title)
        if exc.status == 401 and "No authorization token" in detail:
            detail = "a bearer token is required: send 'Authorization: Bearer <token>'"
        elif exc.status == 401:
            detail = "the bearer token is missing, expired or not valid"
        if exc.status == 405:
            if (not_found := unserved(request)) is not None:
                return not_found
            with_allow(request, headers)
        elif exc.status == 400 and (not_found := shadowed(request)) is not None:
            return not_found
        return _render(request, exc.status, exc.title or status_title(exc.status), detail, fhir_base,
                       headers=headers)

    async def http(request: ConnexionRequest, exc: Exception) -> ConnexionResponse:
        assert isinstance(exc, HTTPException)
        detail = exc.detail if isinstance(exc.detail, str) else "request failed"
        if exc.status_code == 404:
            detail = not_found_detail(request.url.path, service, fhir_base, portal_url)
        headers = dict(exc.headers or {})
        if exc.status_code == 405:  # the router's Allow names its first route's methods only: all of them
            if (not_found := unserved(request)) is not None:
                return not_found
            detail = f"{request.method} is not allowed on {request.url.path}"
            with_allow(request, headers, replace=True)
        return _render(request, exc.status_code, status_title(exc.status_code), detail, fhir_base, headers=headers)

    async def undecodable(request: ConnexionRequest, exc: Exception) -> ConnexionResponse:
        # connexion decodes JSON bodies outside its own error handling
        return _render(request, 400, "Bad Request", "the body is not valid UTF-8 text", fhir_base)

    async def database_down(request: ConnexionRequest, exc: Exception) -> ConnexionResponse:
        # not the client's fault and not a bug: the database (or its primary) is out of reach
        log.warning("database unavailable: %s", type(exc).__name__)
        return _render(request, 503, "Service Unavailable",
                       "the database cannot be reached right now; retry in a few seconds",
                       fhir_base, headers={"Retry-After": str(DATABASE_RETRY_AFTER)})

    async def database_error(request: ConnexionRequest, exc: Exception) -> ConnexionResponse:
        # FerretDB's answer while the PostgreSQL under it restarts is a command error, not a lost
        # connection: out of reach all the same (``mongo.unavailable``); any other one is a bug
        if mongo.unavailable(exc):
            return await database_down(request, exc)
        return await unexpected(request, exc)

    async def unexpected(request: ConnexionRequest, exc: Exception) -> ConnexionResponse:
        log.error("unhandled error: %s", type(exc).__name__, exc_info=exc)
        return _render(request, 500, "Internal Server Error",
                       "the server failed; the error is logged with this request's correlation id", fhir_base)

    return {SenError: sen_error, ProblemException: problem, HTTPException: http,
            UnicodeDecodeError: undecodable, ConnectionFailure: database_down, ExecutionTimeout: database_down,
            OperationFailure: database_error, Exception: unexpected}


# --------------------------------------------------------------------------- connexion, compiled once

class CompiledParameterValidator(ParameterValidator):
    """connexion's parameter validation with one compiled JSON Schema validator per parameter.

    connexion deep-copies the parameter and compiles a ``Draft4Validator`` for each parameter of
    each request (about a sixth of a FHIR read's Python time); the spec does not change while the
    process runs, so this compiles each once. Same checks, same messages.
    """

    _compiled: dict[int, tuple[dict[str, Any], Draft4Validator]] = {}

    @staticmethod
    def validate_parameter(parameter_type: str, value: Any, param: dict[str, Any],
                           param_name: str | None = None) -> str | None:
        if is_nullable(param) and is_null(value):
            return None
        if value is not None:
            hit = CompiledParameterValidator._compiled.get(id(param))
            if hit is None or hit[0] is not param:  # `is`: an id reused by a new dict is not a hit
                schema = copy.deepcopy(param.get("schema", param))
                hit = (param, Draft4Validator(schema, format_checker=Draft4Validator.FORMAT_CHECKER))
                CompiledParameterValidator._compiled[id(param)] = hit
            if hit[1].is_valid(value):  # no error objects built for the usual, valid value
                return None
            try:
                hit[1].validate(value)
            except ValidationError as exception:
                return _parameter_problem(parameter_type, param, value, exception)
            return None
        if param.get("required"):
            return f"Missing {parameter_type} parameter '{param['name']}'"
        return None


def _parameter_problem(parameter_type: str, param: dict[str, Any], value: Any, error: ValidationError) -> str:
    """What is wrong with a parameter, for the caller to fix: its name, the value (cut short), what it must be
    (its description) and the rule broken (the pattern; jsonschema's message otherwise), not jsonschema's
    dump of the schema ("Failed validating 'pattern' in schema: ... On instance: ...")."""
    shown = str(value)
    shown = repr(shown if len(shown) <= 70 else f"{shown[:67]}...")
    rule = (f"it must match {error.validator_value}" if error.validator == "pattern" else
            error.message if len(error.message) <= 200 else f"{error.message[:197]}...")
    what = f" is not {param['description']}" if param.get("description") else " is not valid"
    return f"the {parameter_type} parameter '{param.get('name', '?')}' {shown}{what} ({rule})"


# --------------------------------------------------------------------------- JSON bodies

# a string the database cannot store: a NUL (PostgreSQL under FerretDB refuses one), or a lone UTF-16
# surrogate (``\ud800`` alone, which no UTF-8 text holds: BSON's encoder fails on it)
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
# each reaches a JSON string only escaped (a raw NUL is not JSON, a raw surrogate not UTF-8): a body
# without a backslash (one memchr), or without one of these escapes (one regex scan), is clean, no walk
_UNSTORABLE_ESCAPE = re.compile(rb"\\u(?:0000|[dD][89a-fA-F])")


def unstorable_text(value: Any, path: str = "") -> tuple[str, str] | None:
    """The path (``a.b[0]``, a FHIRPath when ``path`` starts with the resource type) of the first string
    or key of a parsed JSON value holding a NUL or a lone surrogate, and which it holds; else None."""
    if isinstance(value, str):
        found = _UNSTORABLE.search(value)
        return None if found is None else (path, found.group())
    if isinstance(value, list):
        for i, item in enumerate(value):
            hit = unstorable_text(item, f"{path}[{i}]")
            if hit:
                return hit
    elif isinstance(value, dict):
        for key, item in value.items():
            bad = _UNSTORABLE.search(key)
            clean = _UNSTORABLE.sub("", key)
            inner = f"{path}.{clean}" if path else clean
            if bad is not None:
                return inner, bad.group()
            hit = unstorable_text(item, inner)
            if hit:
                return hit
    return None


def check_storable(raw: bytes, parsed: Any) -> None:
    """400 (:class:`FhirError`: an OperationOutcome naming the element under /fhir, problem JSON
    elsewhere) when a string or key of the JSON body ``raw`` (parsed: ``parsed``) holds a NUL or a
    lone surrogate, which the database can neither store nor compare. A FHIR resource's paths start
    with its type (FHIRPath: ``Patient.name[0].family``)."""
    if b"\\" not in raw or _UNSTORABLE_ESCAPE.search(raw) is None:
        return  # the usual body: 0.1 us for 2 KB without escapes, 1 us with (json.loads: 9 us)
    _refuse_unstorable(parsed)


def _refuse_unstorable(parsed: Any) -> None:
    """:func:`check_storable`'s walk, for a body whose bytes hold such an escape."""
    rtype = parsed.get("resourceType") if isinstance(parsed, dict) else None
    try:
        hit = unstorable_text(parsed, rtype if isinstance(rtype, str) and not _UNSTORABLE.search(rtype) else "")
    except RecursionError:
        raise FhirError("the body is nested too deeply", status=400) from None
    if hit is None:
        return  # a surrogate pair (an emoji escaped), or an escaped backslash before u0000
    where, char = hit
    what = ("a NUL character (\\u0000), which no stored text may hold" if char == "\x00" else
            f"a lone UTF-16 surrogate (\\u{ord(char):04x}), which is no character: send the text as UTF-8, "
            "or a surrogate pair whole")
    raise FhirError(f"{where or 'the body'} holds {what}", status=400, expression=[where] if where else None)


class CheckedJSONBodyValidator(JSONRequestBodyValidator):
    """connexion's JSON body validator, which also answers 400 (never 500) for a body nested past
    Python's recursion limit and for one holding a string the database cannot store
    (:func:`check_storable`), through connexion's public ``wrap_receive``. The bytes checked are the
    ones :class:`RequestMiddleware` kept as connexion read them (no second read, no copy); they are
    parsed again only when they hold such an escape."""

    async def wrap_receive(self, receive: Receive, *, scope: Scope) -> tuple[Receive, Scope]:
        try:
            wrapped = await super().wrap_receive(receive, scope=scope)
        except RecursionError:
            raise BadRequestProblem(detail="the body is nested too deeply; send a flatter JSON body") from None
        except BadRequestProblem:
            self.check_body(scope)  # a lone surrogate said plainly, rather than the schema's words on it
            raise
        self.check_body(scope)
        return wrapped

    @staticmethod
    def check_body(scope: Scope) -> None:
        kept = scope.get(BODY_KEY)
        if kept is None or not kept.done:
            return
        if not any(b"\\" in chunk for chunk in kept.chunks):
            return  # the usual body: no escape at all (a memchr a part; nothing joined)
        raw = kept.chunks[0] if len(kept.chunks) == 1 else b"".join(kept.chunks)
        if _UNSTORABLE_ESCAPE.search(raw) is None:
            return
        try:
            parsed = json.loads(raw)
        except (ValueError, RecursionError):
            return  # connexion said what is wrong with it
        _refuse_unstorable(parsed)  # the bytes were searched above: not again


class _BodylessHead:
    """A response validator that leaves the answer to a ``HEAD`` alone: it is the ``GET``'s without the
    body (RFC 9110 §9.3.2), and an empty body is no JSON the ``GET``'s schema describes (connexion's
    validator answered 500 for ``HEAD /healthz`` where responses are validated, ``SEN_ENV=test``).
    The status and headers are those of the ``GET``, which is validated."""

    def __init__(self, scope: Scope, **kwargs: Any) -> None:
        super().__init__(scope, **kwargs)  # type: ignore[call-arg]
        self.head = scope.get("method") == "HEAD"

    def wrap_send(self, send: Send) -> Send:
        return send if self.head else super().wrap_send(send)  # type: ignore[misc]


class HeadJSONResponseBodyValidator(_BodylessHead, JSONResponseBodyValidator):
    """connexion's JSON response validator, not applied to a HEAD's empty body (:class:`_BodylessHead`)."""


class HeadTextResponseBodyValidator(_BodylessHead, TextResponseBodyValidator):
    """connexion's text response validator, not applied to a HEAD's empty body (:class:`_BodylessHead`)."""


_VALIDATORS = {**VALIDATOR_MAP, "parameter": CompiledParameterValidator,
               "body": MediaTypeDict({**VALIDATOR_MAP["body"], "*/*json": CheckedJSONBodyValidator}),
               "response": MediaTypeDict({**VALIDATOR_MAP["response"], "*/*json": HeadJSONResponseBodyValidator,
                                          "text/plain": HeadTextResponseBodyValidator})}


# --------------------------------------------------------------------------- factory

class NoSessions(SessionInterface):
    """No cookie sessions: every request carries its bearer token and Sen keeps no session state.

    Flask's default interface built a fresh (null) cookie session object for every request; this one
    hands out one shared :class:`flask.sessions.NullSession`, which refuses writes like Flask's does
    without a secret key, and never sets a cookie.
    """

    _null = NullSession()

    def open_session(self, app: Any, request: Any) -> NullSession:
        return self._null

    def save_session(self, app: Any, session: Any, response: Any) -> None:
        return None


def build_app(settings: Settings, *, spec: str, api_package: str, indexes: Sequence[Index] = (),
              fhir_base: str | None = None, extras: dict[str, Any] | None = None,
              validate_responses: bool | None = None, strict_validation: bool = True,
              pages: Callable[[Scope], bool] | None = None) -> connexion.FlaskApp:
    """The web application of one service. Connects to nothing: clients are lazy. ``pages``: which
    requests are for HTML pages, which answer what the middleware refuses themselves (a body over the
    limit, a path with control characters: :class:`RequestMiddleware`)."""
    logs.setup_logging(settings.service, settings.log_level)
    runtime = install(Runtime(settings=settings, indexes=indexes, extras=extras or {}))
    auth.configure(auth.TokenVerifier(issuer=settings.jwt_issuer, audience=settings.jwt_audience,
                                      jwks_url=settings.jwks_url, dev_key_path=settings.dev_key_path))
    # jsonifier: connexion's default is Jsonifier(flask.json, indent=2), and an indent sends every dict
    # a handler returns through json's pure-Python encoder; without it the C encoder writes the same
    # JSON (same keys, order, escaping), without the line breaks
    # swagger_ui=False: no Swagger UI is installed (OPENAPI_PATH serves the spec); without it connexion
    # logged a warning at every start telling operators to install one
    app = connexion.FlaskApp(f"sen_{settings.service}", specification_dir=str(specs_dir()),
                             validator_map=_VALIDATORS,
                             jsonifier=Jsonifier(flask.json),
                             swagger_ui_options=SwaggerUIOptions(swagger_ui=False))
    if validate_responses is None:
        validate_responses = settings.env == "test"
    resolver = ServiceResolver(api_package)
    fhir = (extras or {}).get("fhir")
    api_spec = load_spec(spec, fhir_types=sorted(fhir.types) if fhir is not None else None)
    if fhir is not None:  # its CapabilityStatement lists (and serves the definitions of) the spec's operations
        from dataclasses import replace

        from .fhir.capability import with_spec_operations

        fhir.config = replace(fhir.config, operations=with_spec_operations(fhir.config.operations, api_spec,
                                                                           fhir.config.base_path))
    app.add_api(api_spec, resolver=resolver, strict_validation=strict_validation,
                validate_responses=validate_responses, pythonic_params=False)
    app.add_middleware(RequestMiddleware, position=MiddlewarePosition.BEFORE_EXCEPTION,
                       service=settings.service, max_body=settings.max_body_bytes, fhir_base=fhir_base,
                       pages=pages)
    allow = AllowedMethods(api_spec["paths"], base=fhir_base if fhir is not None else None,
                           narrow=fhir.served_methods if fhir is not None else None)
    for exc, handler in _error_handlers(fhir_base, allow, fhir, service=settings.service,
                                        portal_url=settings.portal_url).items():
        app.add_error_handler(exc, handler)
    flask_app = app.app
    flask_app.extensions[EXTENSION] = runtime
    flask_app.json.ensure_ascii = False  # Vietnamese stays readable
    flask_app.session_interface = NoSessions()

    @flask_app.before_request
    def _correlation() -> None:  # handlers run in a thread pool: carry the id over
        from flask import request

        logs.correlation_id.set(request.headers.get("X-Correlation-ID", ""))

    flask_app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    return app
