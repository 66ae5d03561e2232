"""The direct lane: GETs that have a Flask-free answer, taken before connexion's routing.

A read by id has a Flask-free variant (:func:`sen_shared.web.on_event_loop` with ``direct``), but
it still crossed connexion's whole middleware stack to get there: Swagger UI's path check, the
router trying the spec's routes one by one, the bearer check, path and header validation through
JSON Schema, response validation's wrapper, the operation context, the bridge to Flask. In one
process, reading one Patient after another, that stack was 0.43 of the 1.12 ms of Python a read
took (0.69 ms without it).

:class:`DirectLane` sits just inside connexion's exception handling (and inside Sen's request
middleware: correlation id, metrics and log line are unchanged). It takes a request only when it
can do exactly what the stack would have done with it:

- a GET without a body; for a variant that blocks the loop (not a coroutine function), only while
  the :class:`~sen_shared.web.InlineGate` is not paused, and timed by it. A coroutine variant
  awaits its database and leaves the loop to the others meanwhile: however long it waits, the
  loop is not stalled, so the gate neither times it nor holds it back. (Timed, the first read of
  a fresh worker, 0.35 s with its connection to the database, sent every quick handler of the
  worker back to the thread pool for 30 s.)
- a path that matches the template of an operation with a direct variant, every path parameter
  matching its pattern in the spec; :func:`lane_routes` accepts only operations whose parameters
  the lane can check completely (string path parameters with a pattern, unconstrained optional
  headers, no declared query parameters or body) and that no other GET route of the spec could
  also match;
- a bearer token that the operation's scheme (``sen_shared.auth.bearer_info``) accepts;
- no query string when the API validates strictly (connexion would refuse unknown parameters).

Anything else goes down the stack as before and gets connexion's answer (400, 401, 404, 405...).
What the direct variant raises goes up to connexion's error handlers, as it did.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

from connexion.context import _context, _receive, _scope
from starlette.types import ASGIApp, Receive, Scope, Send

from . import auth

log = logging.getLogger("sen.http")

BEARER_INFO = "sen_shared.auth.bearer_info"
_PARAM = re.compile(r"^\{([^{}/]+)\}$")


def has_body(scope: Scope) -> bool:
    """Whether the request announces a body (chunked, or a non-zero Content-Length)."""
    for name, value in scope.get("headers") or ():
        if name == b"transfer-encoding" or (name == b"content-length" and value.strip() != b"0"):
            return True
    return False


@dataclass(frozen=True)
class LaneRoute:
    operation_id: str
    template: str
    regex: re.Pattern[str]
    patterns: dict[str, re.Pattern[str]]  # path parameter -> its pattern (searched, as JSON Schema does)

    def match(self, path: str) -> dict[str, str] | None:
        found = self.regex.match(path)
        if found is None:
            return None
        params = found.groupdict()
        for name, pattern in self.patterns.items():
            if pattern.search(params[name]) is None:
                return None
        return params


def _segments(template: str) -> list[str]:
    return template.strip("/").split("/")


def _parameters(spec: dict[str, Any], path_item: dict[str, Any], op: dict[str, Any]) -> list[dict[str, Any]] | None:
    """The operation's parameters with the path's, references resolved; None for a reference elsewhere."""
    merged: dict[tuple[str, str], dict[str, Any]] = {}
    for param in [*path_item.get("parameters", []), *op.get("parameters", [])]:
        ref = param.get("$ref")
        if ref is not None:
            prefix = "#/components/parameters/"
            if not ref.startswith(prefix):
                return None
            param = spec.get("components", {}).get("parameters", {}).get(ref[len(prefix):])
            if param is None:
                return None
        merged[(param["name"], param["in"])] = param
    return list(merged.values())


def _why_not(spec: dict[str, Any], path: str, op: dict[str, Any], params: list[dict[str, Any]] | None) -> str | None:
    """Why the lane cannot check this operation's requests as connexion would (None: it can)."""
    if params is None:
        return "a parameter is referenced from outside components/parameters"
    if "requestBody" in op:
        return "it declares a body"
    names = {m.group(1) for seg in _segments(path) if (m := _PARAM.match(seg))}
    for param in params:
        schema = param.get("schema") or {}
        where = param["in"]
        if where == "path":
            if schema.get("type") != "string" or "pattern" not in schema or set(schema) - {"type", "pattern"}:
                return f"path parameter {param['name']} is not a string with only a pattern"
            names.discard(param["name"])
        elif where == "header":
            if param.get("required") or schema != {"type": "string"}:
                return f"header {param['name']} has constraints"
        else:
            return f"it declares the {where} parameter {param['name']}"
    if names:
        return f"path parameters {sorted(names)} have no schema"
    security = op.get("security", spec.get("security", []))
    schemes = spec.get("components", {}).get("securitySchemes", {})
    if security != [{"bearer": []}] or schemes.get("bearer", {}).get("x-bearerInfoFunc") != BEARER_INFO:
        return f"its security is not the bearer token checked by {BEARER_INFO}"
    return None


def _may_overlap(mine: list[str], patterns: dict[str, re.Pattern[str]], other: list[str]) -> bool:
    """Whether a path matching template ``mine`` could also match ``other`` (its parameters match anything)."""
    if len(mine) != len(other):
        return False
    for a, b in zip(mine, other, strict=True):
        pa, pb = _PARAM.match(a), _PARAM.match(b)
        if pa and pb:
            continue
        if pa:  # my parameter against their literal
            if patterns[pa.group(1)].search(b) is None:
                return False
        elif not pb and a != b:
            return False
    return True


def lane_routes(spec: dict[str, Any], operations: dict[str, tuple[str, str]]) -> list[LaneRoute]:
    """The routes of the lane: ``operations`` maps an operationId with a direct variant to its
    (method, path template); those the lane cannot take exactly as connexion would are left out (logged)."""
    base = urlparse((spec.get("servers") or [{}])[0].get("url", "")).path.rstrip("/")
    gets = [p for p, item in spec.get("paths", {}).items() if "get" in item]
    routes = []
    for operation_id, (method, path) in sorted(operations.items()):
        path_item = spec.get("paths", {}).get(path, {})
        op = path_item.get(method.lower())
        if method.lower() != "get" or op is None:
            log.info("direct lane: %s is not a GET of the spec", operation_id)
            continue
        params = _parameters(spec, path_item, op)
        reason = _why_not(spec, path, op, params)
        patterns: dict[str, re.Pattern[str]] = {}
        if reason is None:
            patterns = {p["name"]: re.compile(p["schema"]["pattern"]) for p in params or () if p["in"] == "path"}
            mine = _segments(path)
            clash = [other for other in gets if other != path and _may_overlap(mine, patterns, _segments(other))]
            reason = f"the routes {clash} could match the same paths" if clash else None
        if reason is not None:
            log.warning("direct lane: %s stays with connexion: %s", operation_id, reason)
            continue
        regex = "/".join(f"(?P<{m.group(1)}>[^/]+)" if (m := _PARAM.match(seg)) else re.escape(seg)
                         for seg in _segments(path))
        routes.append(LaneRoute(operation_id, path, re.compile(f"{re.escape(base)}/{regex}$"), patterns))
    return routes


def _bearer_token(scope: Scope) -> str | None:
    for name, value in scope.get("headers") or ():
        if name == b"authorization":  # the first one, as connexion reads it
            parts = value.decode("latin-1").split(maxsplit=1)
            return parts[1] if len(parts) == 2 and parts[0].lower() == "bearer" else None
    return None


class DirectLane:
    """Answers the GETs :func:`lane_routes` lists with their direct variant (see the module)."""

    def __init__(self, app: ASGIApp, spec: dict[str, Any], operations: dict[str, tuple[str, str]], gate: Any,
                 flask_app: Any, strict_query: bool) -> None:
        self.app = app
        self._spec = spec
        self._operations = operations  # filled as connexion resolves the operations, after this is made
        self._routes: list[LaneRoute] | None = None
        self.gate = gate  # InlineGate: the direct variants (``gate.direct``), its pause and its timing
        self.flask_app = flask_app
        self.strict_query = strict_query

    @property
    def routes(self) -> list[LaneRoute]:
        if self._routes is None and self._operations:  # made once connexion has resolved them
            self._routes = lane_routes(self._spec, self._operations)
        return self._routes or []

    def _take(self, scope: Scope) -> tuple[Any, dict[str, str], dict[str, Any]] | None:
        """(the direct variant, path parameters, token info) of a request the lane answers, else None."""
        routes = self.routes
        if scope["type"] != "http" or scope.get("method") != "GET" or not routes:
            return None
        if (self.strict_query and scope.get("query_string")) or has_body(scope):
            return None
        path = scope.get("path", "")
        for route in routes:
            params = route.match(path)
            if params is not None:
                break
        else:
            return None
        direct = self.gate.direct.get(route.operation_id)
        if direct is None or (not inspect.iscoroutinefunction(direct) and self.gate.paused()):
            return None
        token = _bearer_token(scope)
        info = auth.bearer_info(token) if token else None
        return None if info is None else (direct, params, info)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        taken = self._take(scope)
        if taken is None:
            await self.app(scope, receive, send)
            return
        direct, params, info = taken
        context = {"user": info.get("sub", info.get("uid")), "token_info": info}
        scope.setdefault("extensions", {})["connexion_context"] = context
        scope["path_params"] = params
        _context.set(context)
        _scope.set(scope)
        _receive.set(receive)
        # first let the loop take in what arrived meanwhile: served at once, the connections whose
        # requests came just after the loop looked settled into waiting a full round each time
        await asyncio.sleep(0)
        if inspect.iscoroutinefunction(direct):  # the loop serves the others while it waits: nothing to time
            with self.flask_app.app_context():
                status, headers, body = await direct(scope, **params)
        else:
            with self.gate.running() as outcome, self.flask_app.app_context():
                status, headers, body = direct(scope, **params)
                outcome["status"] = status
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

