"""Building a service's web application: one function every service calls.

``build_app`` wires a connexion ``FlaskApp`` from the service's OpenAPI spec
(merged with the shared operational endpoints in ``specs/common/ops.yaml``),
installs the runtime, the token verifier and the error handlers, and adds the
request middleware: correlation id, body size limit, metrics, request log.
"""

from __future__ import annotations

import contextlib
import contextvars
import copy
import functools
import json
import logging
import os
import re
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import connexion
import yaml
from a2wsgi.wsgi import Body, WSGIMiddleware, WSGIResponder, build_environ
from connexion.exceptions import ProblemException
from connexion.lifecycle import ConnexionRequest, ConnexionResponse
from connexion.middleware import MiddlewarePosition
from connexion.resolver import RelativeResolver
from connexion.security import BearerSecurityHandler
from connexion.utils import inspect_function_arguments, is_null, is_nullable
from connexion.validators import ParameterValidator
from flask.sessions import NullSession, SessionInterface
from jsonschema import Draft4Validator, ValidationError
from pymongo.errors import ConnectionFailure, ExecutionTimeout
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from . import auth, balance, logs
from .config import Settings
from .errors import SenError
from .fhir.outcome import FHIR_JSON, FhirError, issue_code
from .health import LATENCY, REQUESTS
from .lane import DirectLane, has_body
from .mongo import Index
from .runtime import EXTENSION, Runtime, install

log = logging.getLogger("sen.http")

CORRELATION_HEADER = b"x-correlation-id"
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")  # no route or id holds one
DATABASE_RETRY_AFTER = 5  # seconds a client is told to wait when the database is out of reach


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


ON_LOOP = "sen_on_event_loop"
DIRECT = "sen_direct"

Answer = tuple[int, list[tuple[bytes, bytes]], bytes]
Direct = Callable[..., Answer | Awaitable[Answer]]


def on_event_loop(handler: Any = None, *, direct: Direct | None = None) -> Any:
    """Mark ``handler`` as quick: a GET without a body runs it on the event loop's thread.

    For handlers that make at most one indexed lookup (a read by id). Everything else runs in
    the handler thread pool, as connexion does; see :class:`InlineGate` for why and the limits.

    ``direct``: the same answer without Flask, ``direct(scope, **path_params) -> (status,
    headers, body)``, which such a GET then gets instead of the Flask handler, from the
    :class:`~sen_shared.lane.DirectLane` before connexion's routing (the lane has checked the path,
    the token and the parameters as connexion would). The handler stays for HEAD, for the pool
    when the gate is paused and for what the lane leaves to connexion; a test compares the answers.
    A coroutine function may be given: what it awaits (its database read, through
    ``sen_shared.mongo.async_database``) lets the loop serve other connections meanwhile.
    """
    def mark(fn: Any) -> Any:
        setattr(fn, ON_LOOP, True)
        if direct is not None:
            setattr(fn, DIRECT, direct)
        return fn

    return mark if handler is None else mark(handler)


class ServiceResolver(RelativeResolver):
    """operationIds relative to the service's ``api`` package; ``sen_shared.*`` ones absolute.

    Records the operations whose handler is marked :func:`on_event_loop` in ``on_loop``, and
    their Flask-free variants in ``direct`` with their (method, path) in ``direct_routes``.
    """

    def __init__(self, root_path: Any) -> None:
        super().__init__(root_path)
        self.on_loop: set[str] = set()
        self.direct: dict[str, Direct] = {}
        self.direct_routes: dict[str, tuple[str, str]] = {}

    def resolve_operation_id(self, operation: Any) -> str:
        operation_id = operation.operation_id
        if operation_id and operation_id.startswith("sen_shared."):
            return operation_id
        return super().resolve_operation_id(operation)

    def resolve(self, operation: Any) -> Any:
        resolution = super().resolve(operation)
        if getattr(resolution.function, ON_LOOP, False):
            self.on_loop.add(resolution.operation_id)
        direct = getattr(resolution.function, DIRECT, None)
        if direct is not None:
            self.direct[resolution.operation_id] = direct
            self.direct_routes[resolution.operation_id] = (operation.method, operation.path)
        return resolution


# --------------------------------------------------------------------------- middleware

def _problem_bytes(status: int, title: str, detail: str, fhir: bool) -> tuple[bytes, bytes]:
    if fhir:
        body = {"resourceType": "OperationOutcome",
                "issue": [{"severity": "error", "code": issue_code(status), "diagnostics": detail}]}
        return json.dumps(body).encode(), FHIR_JSON.encode()
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail}
    return json.dumps(body).encode(), b"application/problem+json"


class RequestMiddleware:
    """Correlation id in and out, body size limit, metrics and one log line per request."""

    def __init__(self, app: ASGIApp, service: str, max_body: int, fhir_base: str | None) -> None:
        self.app = app
        self.service = service
        self.max_body = max_body
        self.fhir_base = fhir_base

    def _is_fhir(self, scope: Scope) -> bool:
        return bool(self.fhir_base) and scope.get("path", "").startswith(self.fhir_base)

    async def _reject(self, scope: Scope, send: Send, status: int, title: str, detail: str,
                      cid: bytes) -> None:
        body, ctype = _problem_bytes(status, title, detail, self._is_fhir(scope))
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", ctype), (b"content-length", str(len(body)).encode()),
                                (CORRELATION_HEADER, cid)]})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        cid = headers.get(CORRELATION_HEADER, b"")[:64]
        if not cid or not all(48 <= c <= 57 or 65 <= c <= 90 or 97 <= c <= 122 or c in b"-_." for c in cid):
            cid = logs.new_correlation_id().encode()
        scope["headers"] = [(k, v) for k, v in scope.get("headers") or [] if k != CORRELATION_HEADER]
        scope["headers"].append((CORRELATION_HEADER, cid))
        logs.correlation_id.set(cid.decode())
        started = time.perf_counter()
        method = scope.get("method", "GET")
        status_holder = {"status": 500}

        if _CONTROL.search(scope.get("path", "")):
            # no id or route holds one; the ASGI and Flask routers would disagree on such a path
            await self._reject(scope, send, 400, "Bad Request", "the path contains control characters", cid)
            self._observe(method, 400, started, scope)
            return

        length = headers.get(b"content-length")
        if length is not None:
            try:
                too_big = int(length) > self.max_body
            except ValueError:
                await self._reject(scope, send, 400, "Bad Request", "Content-Length is not a number", cid)
                return
            if too_big:
                await self._reject(scope, send, 413, "Content Too Large",
                                   f"the body is larger than {self.max_body} bytes; send less", cid)
                self._observe(method, 413, started, scope)
                return
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
                if size > self.max_body:
                    await self._reject(scope, send, 413, "Content Too Large",
                                       f"the body is larger than {self.max_body} bytes; send less", cid)
                    self._observe(method, 413, started, scope)
                    return
                chunks.append(chunk)
                if not message.get("more_body"):
                    break
            body = b"".join(chunks)
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
                message.setdefault("headers", [])
                message["headers"] = list(message["headers"]) + [(CORRELATION_HEADER, cid)]
                if balance.should_close():  # this worker holds more connections than its share
                    message["headers"].append((b"connection", b"close"))
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            self._observe(method, status_holder["status"], started, scope)

    def _observe(self, method: str, status: int, started: float, scope: Scope) -> None:
        elapsed = time.perf_counter() - started
        REQUESTS.labels(self.service, method, str(status)).inc()
        LATENCY.labels(self.service, method).observe(elapsed)
        # path only: query strings may carry names; ids are not patient data
        log.info("request", extra={"method": method, "path": scope.get("path", ""), "status": status,
                                   "ms": round(elapsed * 1000, 1)})


# --------------------------------------------------------------------------- errors

def _render(request: ConnexionRequest, status: int, title: str, detail: str,
            fhir_base: str | None, extra: dict[str, Any] | None = None,
            headers: dict[str, str] | None = None) -> ConnexionResponse:
    if fhir_base and request.url.path.startswith(fhir_base):
        body: dict[str, Any] = {"resourceType": "OperationOutcome",
                                "issue": [{"severity": "error", "code": issue_code(status),
                                           "diagnostics": detail}]}
        mimetype = FHIR_JSON
    else:
        body = {"type": "about:blank", "title": title, "status": status, "detail": detail,
                "instance": request.url.path}
        body.update(extra or {})
        mimetype = "application/problem+json"
    return ConnexionResponse(status_code=status, body=json.dumps(body, ensure_ascii=False).encode(),
                             mimetype=mimetype, content_type=mimetype, headers=headers or {})


def _error_handlers(fhir_base: str | None) -> dict[Any, Any]:
    def sen_error(request: ConnexionRequest, exc: Exception) -> ConnexionResponse:
        assert isinstance(exc, SenError)
        if isinstance(exc, FhirError) and fhir_base and request.url.path.startswith(fhir_base):
            return ConnexionResponse(status_code=exc.status, body=json.dumps(exc.to_outcome(), ensure_ascii=False),
                                     mimetype=FHIR_JSON, content_type=FHIR_JSON, headers=exc.headers)
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return _render(request, exc.status, exc.title, exc.detail, fhir_base, exc.extra, headers)

    def problem(request: ConnexionRequest, exc: Exception) -> ConnexionResponse:
        assert isinstance(exc, ProblemException)
        headers = dict(exc.headers or {})
        if exc.status == 401:
            headers.setdefault("WWW-Authenticate", "Bearer")
        detail = str(exc.detail or exc.title)
        if exc.status == 401 and "No authorization token" in detail:
            detail = "a bearer token is required: send 'Authorization: Bearer <token>'"
        elif exc.status == 401:
            detail = "the bearer token is missing, expired or not valid"
        return _render(request, exc.status, exc.title or "Error", detail, fhir_base, headers=headers)

    def http(request: ConnexionRequest, exc: Exception) -> ConnexionResponse:
        assert isinstance(exc, HTTPException)
        detail = exc.detail if isinstance(exc.detail, str) else "request failed"
        if exc.status_code == 404:
            detail = f"no such endpoint: {request.url.path}"
        elif exc.status_code == 405:
            detail = f"{request.method} is not allowed on {request.url.path}"
        return _render(request, exc.status_code, "Error", detail, fhir_base, headers=dict(exc.headers or {}))

    def undecodable(request: ConnexionRequest, exc: Exception) -> ConnexionResponse:
        # connexion decodes JSON bodies outside its own error handling
        return _render(request, 400, "Bad Request", "the body is not valid UTF-8 text", fhir_base)

    def database_down(request: ConnexionRequest, exc: Exception) -> ConnexionResponse:
        # not the client's fault and not a bug: the database (or its primary) is out of reach
        log.warning("database unavailable: %s", type(exc).__name__)
        return _render(request, 503, "Service Unavailable",
                       "the database cannot be reached right now; retry in a few seconds",
                       fhir_base, headers={"Retry-After": str(DATABASE_RETRY_AFTER)})

    def unexpected(request: ConnexionRequest, exc: Exception) -> ConnexionResponse:
        log.error("unhandled error: %s", type(exc).__name__, exc_info=exc)
        return _render(request, 500, "Internal Server Error",
                       "the server failed; the error is logged with this request's correlation id", fhir_base)

    return {SenError: sen_error, ProblemException: problem, HTTPException: http,
            UnicodeDecodeError: undecodable, ConnectionFailure: database_down, ExecutionTimeout: database_down,
            Exception: unexpected}


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
            try:
                hit[1].validate(value)
            except ValidationError as exception:
                return str(exception)
            return None
        if param.get("required"):
            return f"Missing {parameter_type} parameter '{param['name']}'"
        return None


class BearerHandler(BearerSecurityHandler):
    """connexion's bearer check without its per-request ``inspect.signature`` of our info function."""

    @staticmethod
    @functools.cache
    def _accepts_kwarg(func: Any, keyword: str) -> bool:
        arguments, has_kwargs = inspect_function_arguments(func)
        return has_kwargs or keyword in arguments


# --------------------------------------------------------------------------- factory

BUFFER_BYTES = 4 * 1024 * 1024  # a response up to this size crosses from the handler's thread once
INLINE_SLOW_SECONDS = 0.25  # a quick handler slower than this (or failing with 5xx) pauses the gate
INLINE_PAUSE_SECONDS = 30.0


class InlineGate:
    """Decides which requests run on the event loop's thread rather than in the handler pool.

    connexion runs every Flask handler in a thread pool. Under load the event loop's thread
    (parsing requests, connexion's middleware) and the handler threads take the GIL from each
    other: a read whose answer came back from the database waits until the loop lets go, and
    requests overtake each other. Reads at 16 clients had a p99 2.6 times their median. A
    handler marked :func:`on_event_loop` (one indexed lookup) therefore runs on the loop's
    thread when the request is a GET or HEAD without a body: requests of a connection are then
    served in the order they came, with no thread switch (p99 1.7 times the median).

    The price: while it runs, the other connections of this process wait. A database that
    stalls would stall them all (pymongo waits up to its 5 s server selection timeout), so a
    quick handler that took longer than ``INLINE_SLOW_SECONDS`` or answered 5xx sends quick
    handlers back to the pool for ``INLINE_PAUSE_SECONDS``. A Flask-free handler that awaits its
    document (ehr's read) leaves the loop to the others while it waits.
    """

    def __init__(self, operations: set[str] | frozenset[str], direct: dict[str, Direct] | None = None) -> None:
        self.operations = operations  # filled by ServiceResolver while the API is added
        self.direct = direct if direct is not None else {}
        self.paused_until = 0.0

    def admits(self, scope: Scope) -> bool:
        if scope.get("method") not in ("GET", "HEAD") or not self.operations:
            return False
        route = (scope.get("extensions") or {}).get("connexion_routing") or {}
        if route.get("operation_id") not in self.operations or self.paused():
            return False
        return not has_body(scope)  # a body would be read through the loop this thread is blocking

    def paused(self) -> bool:
        return time.monotonic() < self.paused_until

    def observe(self, seconds: float, status: int) -> None:
        if seconds > INLINE_SLOW_SECONDS or status >= 500:
            self.paused_until = time.monotonic() + INLINE_PAUSE_SECONDS
            log.warning("quick handlers back in the thread pool", extra={
                "ms": round(seconds * 1000, 1), "status": status, "pause_s": INLINE_PAUSE_SECONDS})

    @contextlib.contextmanager
    def running(self) -> Iterator[dict[str, int]]:
        """Time a handler run on the loop and :meth:`observe` it; the caller sets ``["status"]``
        (an exception counts with the status the error handlers will give it)."""
        outcome, started = {"status": 500}, time.monotonic()
        try:
            yield outcome
        except Exception as err:  # connexion's error handlers answer it: only its status matters here
            outcome["status"] = _error_status(err)
            raise
        finally:
            self.observe(time.monotonic() - started, outcome["status"])


def _error_status(err: Exception) -> int:
    """The status the error handlers will answer ``err`` with, as far as the gate cares (4xx or not)."""
    for attr in ("status", "status_code"):  # SenError and ProblemException; starlette's HTTPException
        value = getattr(err, attr, None)
        if isinstance(value, int):
            return value
    return 500


class _NoBody(Body):
    """The body of a request that has none: reading it never waits on the event loop."""

    def __init__(self) -> None:
        super().__init__(None, None)  # type: ignore[arg-type]
        self._has_more = False


class BufferedResponder(WSGIResponder):
    """a2wsgi's responder, with the response gathered in the handler's thread and sent once.

    a2wsgi hands every piece of a response (the status line, each body chunk, the end) from the
    thread that runs Flask to the event loop and blocks that thread until the loop has taken it:
    three thread switches a request, each waiting for the other thread to get the GIL. Here the
    thread appends the pieces to a list; when Flask returns, the loop sends them. A response
    larger than ``BUFFER_BYTES`` (none of ours today) is handed over piece by piece as before,
    from the piece that crossed the limit on. A request the ``gate`` admits runs on the loop's
    thread itself (see :class:`InlineGate`).
    """

    def __init__(self, *args: Any, gate: InlineGate | None = None) -> None:
        """``gate``: the gate that admitted this request to the loop's thread (None: the pool)."""
        super().__init__(*args)
        self.gate = gate
        self.buffer: list[Message] = []
        self.buffered = 0
        self.streaming = False
        self.inline = gate is not None
        self.status = 500

    def send(self, message: Any) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
        self.buffer.append(message)
        self.buffered += len(message.get("body", b""))
        if not self.inline and (self.streaming or self.buffered > BUFFER_BYTES):  # from here on, piece by piece
            self.streaming = True
            pending, self.buffer = self.buffer, []
            for item in pending:
                super().send(item)

    async def __call__(self, scope: Any, receive: Receive, send: Send) -> None:
        func = functools.partial(contextvars.copy_context().run, self.wsgi)
        environ = build_environ(scope, _NoBody() if self.inline else Body(self.loop, receive))
        sender = self.loop.create_task(self.sender(send))
        try:
            if self.gate is not None:
                with self.gate.running() as outcome:
                    func(environ, self.start_response)
                    outcome["status"] = self.status
            else:
                await self.loop.run_in_executor(self.executor, func, environ, self.start_response)
            # the sender task sends: the response goes out on the loop's next round, which
            # measured a shorter tail for inline handlers than sending from this task now
            for message in self.buffer:
                await self.send_queue.put(message)
            await self.send_queue.put(None)
            await sender  # it may raise
            if self.exc_info is not None:
                raise self.exc_info[0].with_traceback(self.exc_info[1], self.exc_info[2])
        finally:
            if not sender.done():
                sender.cancel()


class BufferedWSGIMiddleware(WSGIMiddleware):
    """connexion's WSGI bridge to Flask (a2wsgi) with :class:`BufferedResponder` for HTTP.

    (GETs with a Flask-free ``direct`` variant never get here: :class:`~sen_shared.lane.DirectLane`
    answers them, unless it leaves them to connexion, and then the Flask handler answers.)
    """

    gate: InlineGate | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        gate = self.gate if self.gate is not None and self.gate.admits(scope) else None
        await BufferedResponder(self.app, self.executor, self.send_queue_size, gate=gate)(scope, receive, send)


def _buffer_responses(app: connexion.FlaskApp, gate: InlineGate | None = None) -> None:
    """Swap connexion's bridge to Flask (``FlaskASGIApp.asgi_app``, an a2wsgi ``WSGIMiddleware``)."""
    bridge = app._middleware_app  # noqa: SLF001 - connexion keeps its Flask bridge here
    current = bridge.asgi_app
    buffered = BufferedWSGIMiddleware(current.app, send_queue_size=current.send_queue_size)
    buffered.executor.shutdown(wait=False)  # never used: the handlers keep connexion's thread pool
    buffered.executor = current.executor
    buffered.gate = gate
    bridge.asgi_app = buffered


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
              validate_responses: bool | None = None, strict_validation: bool = True) -> connexion.FlaskApp:
    """The web application of one service. Connects to nothing: clients are lazy."""
    logs.setup_logging(settings.service, settings.log_level)
    runtime = install(Runtime(settings=settings, indexes=indexes, extras=extras or {}))
    auth.configure(auth.TokenVerifier(issuer=settings.jwt_issuer, audience=settings.jwt_audience,
                                      jwks_url=settings.jwks_url, dev_key_path=settings.dev_key_path))
    app = connexion.FlaskApp(f"sen_{settings.service}", specification_dir=str(specs_dir()),
                             validator_map={"parameter": CompiledParameterValidator},
                             security_map={"bearer": BearerHandler})
    if validate_responses is None:
        validate_responses = settings.env == "test"
    resolver = ServiceResolver(api_package)
    fhir = (extras or {}).get("fhir")
    api_spec = load_spec(spec, fhir_types=sorted(fhir.types) if fhir is not None else None)
    app.add_api(api_spec, resolver=resolver, strict_validation=strict_validation,
                validate_responses=validate_responses, pythonic_params=False)
    gate = InlineGate(resolver.on_loop, resolver.direct)
    _buffer_responses(app, gate)
    app.add_middleware(RequestMiddleware, position=MiddlewarePosition.BEFORE_EXCEPTION,
                       service=settings.service, max_body=settings.max_body_bytes, fhir_base=fhir_base)
    # inside the exception handling: what a direct variant raises gets the error handlers' answer
    app.add_middleware(DirectLane, position=MiddlewarePosition.BEFORE_SWAGGER,
                       spec=api_spec, operations=resolver.direct_routes, gate=gate, flask_app=app.app,
                       strict_query=strict_validation)
    for exc, handler in _error_handlers(fhir_base).items():
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
