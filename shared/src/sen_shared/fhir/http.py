"""FHIR over HTTP: the request and response of an interaction, content negotiation and the headers.

Handlers turn the web request into a :class:`FhirRequest` (:func:`from_flask`),
hand it to the engine (``rest.FhirServer``) and return :func:`to_connexion` of
the :class:`FhirResponse`. Bundles build ``FhirRequest`` objects of their
entries the same way, so one code path serves both.

Negotiation: bodies and answers are ``application/fhir+json`` or
``application/json`` (``_format=json``); XML and other media types get 406
(the request's ``Content-Type`` is checked by connexion against the spec: 415).
``Prefer: return=minimal|representation|OperationOutcome`` shapes write
answers; ``_summary`` and ``_elements`` shape read answers.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import date
from typing import Any
from urllib.parse import parse_qsl

from .outcome import FHIR_JSON, FhirError, outcome
from .validate import summary_elements

JSON = "application/json"
_FORMATS = {"json": FHIR_JSON, "application/json": JSON, "application/fhir+json": FHIR_JSON,
            "application/json+fhir": FHIR_JSON}
_ACCEPTABLE = {"*/*", "application/*", FHIR_JSON, JSON, "application/json+fhir"}


@dataclass
class FhirRequest:
    method: str
    resource_type: str | None = None
    rid: str | None = None
    vid: str | None = None
    params: list[tuple[str, str]] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)  # lower-case names
    body: Any = None
    base: str = ""  # absolute base URL, e.g. http://host/fhir
    operation: str | None = None  # "$everything", "$validate", ...
    compartment: tuple[str, str] | None = None  # ("Patient", id)
    # conditional criteria resolved while serving this request (FhirServer.matches / .condition):
    # the access check and the write see the same resources, and the database is asked once
    resolved: dict[tuple[str, str], Any] = field(default_factory=dict, compare=False, repr=False)

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())

    def param(self, name: str) -> str | None:
        for k, v in self.params:
            if k == name:
                return v
        return None

    def prefer(self, key: str) -> str | None:
        raw = self.header("prefer")
        if not raw:
            return None
        for part in raw.replace(";", ",").split(","):
            k, _, v = part.strip().partition("=")
            if k.strip().lower() == key:
                return v.strip().strip('"')
        return None


@dataclass
class FhirResponse:
    status: int
    body: dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)


NUL = "\x00"  # no FHIR string holds it (string: [ \r\n\t\S]+), nor can the database store or compare one


def parse_query(raw: str | bytes) -> list[tuple[str, str]]:
    """The ``(name, value)`` pairs of a query string (a search, a condition, a form body); 400 for one
    that cannot be read or that holds a NUL character (``%00``)."""
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8", "replace")
    try:
        params = parse_qsl(raw, keep_blank_values=True, max_num_fields=1000)
    except ValueError as err:
        raise FhirError(f"the query string cannot be read: {err}", status=400) from None
    for name, value in params:
        if NUL in name or NUL in value:
            raise FhirError(f"the query parameter {name.replace(NUL, '')!r} holds a NUL character (%00)", status=400)
    return params


def condition_query(resource_type: str, cond: str | None) -> str:
    """The search query of an ``If-None-Exist`` (or a Bundle entry's ``ifNoneExist``): what follows the ``?``,
    as R4 says, also when given whole as ``Patient?identifier=...`` (as R4's own Bundle-xds example writes it)."""
    query = (cond or "").strip()
    if query.startswith(f"{resource_type}?"):
        query = query[len(resource_type) + 1:]
    return query.lstrip("?")


_bases: dict[tuple[Any, ...], str] = {}  # (scheme, Host, server name and port, base path) -> absolute base URL
_BASES_KEPT = 64  # the Host header is the client's: at most this many kept (others computed each time)


def _base_url(request: Any, base_path: str) -> str:
    """The absolute base URL of the request (Flask's ``host_url``, the trusted-host check
    included) and ``base_path``: computed once per scheme, Host and server, not per request."""
    env = request.environ
    key = (env.get("wsgi.url_scheme"), env.get("HTTP_HOST"), env.get("SERVER_NAME"), env.get("SERVER_PORT"),
           base_path)
    found = _bases.get(key)
    if found is None:
        found = request.host_url.rstrip("/") + base_path
        if len(_bases) < _BASES_KEPT:
            _bases[key] = found
    return found


def _headers(environ: dict[str, Any]) -> dict[str, str]:
    """The request's headers by lower-case name, as werkzeug's ``EnvironHeaders`` reads them from
    the WSGI environ (``HTTP_*``, and a non-empty ``CONTENT_TYPE``/``CONTENT_LENGTH``)."""
    out: dict[str, str] = {}
    for key, value in environ.items():
        if key.startswith("HTTP_"):
            if key != "HTTP_CONTENT_TYPE" and key != "HTTP_CONTENT_LENGTH":
                out[key[5:].replace("_", "-").lower()] = value
        elif (key == "CONTENT_TYPE" or key == "CONTENT_LENGTH") and value:
            out[key.replace("_", "-").lower()] = value
    return out


def from_flask(resource_type: str | None = None, rid: str | None = None, vid: str | None = None, *,
               base_path: str = "/fhir", form: bool = False, body: bool = True,
               operation: str | None = None, compartment: tuple[str, str] | None = None) -> FhirRequest:
    """The FHIR request of the current Flask request (call it inside a handler)."""
    from flask import request

    from ..web import check_storable, request_body

    params = parse_query(request.query_string)
    parsed: Any = None
    if form:
        params += parse_query(request_body())
    elif body and request.method in ("POST", "PUT", "PATCH"):
        data = request_body()
        if data:
            check_body_version(request.environ.get("CONTENT_TYPE"))
            try:
                parsed = json.loads(data)
            except (ValueError, RecursionError):
                raise FhirError("the body is not valid JSON", status=400) from None
            # a NUL or a lone surrogate in a string: 400 naming the element (as the body validator says
            # it of a declared body; this reader's bodies are not all declared)
            check_storable(data, parsed)
    req = FhirRequest(method=request.method, resource_type=resource_type, rid=rid, vid=vid, params=params,
                      headers=_headers(request.environ), body=parsed,
                      base=_base_url(request, base_path), operation=operation,
                      compartment=compartment)
    response_type(req)  # 406 before any work
    if operation is not None:
        check_operation(req)
    return req


def check_operation(req: FhirRequest) -> None:
    """The request's parameters, held to its operation's definition as the CapabilityStatement serves it
    (:func:`parameters.check_known`); nothing for an operation defined without them."""
    from ..runtime import current
    from .parameters import check_known

    try:
        config = current().extras["fhir"].config
    except (LookupError, RuntimeError, AttributeError):  # an engine outside a web app (tests, tools)
        return
    rid = f"{req.resource_type}-{(req.operation or '').lstrip('$')}"
    definition = next((op for op in config.operations if op.get("id") == rid), None)
    if definition is not None and "parameter" in definition:
        check_known(req.operation or "", definition, req.params, req.body)


def response_type(req: FhirRequest) -> str:
    """The media type of the answer (``_format`` wins over ``Accept``); 406 for anything not JSON."""
    fmt = req.param("_format")
    if fmt:
        mt = _FORMATS.get(fmt.split(";")[0].strip().lower())
        if mt is None:
            raise FhirError(f"_format={fmt} is not served; this server speaks JSON (_format=json)", status=406)
        return mt
    accept = req.header("accept")
    if not accept:
        return FHIR_JSON
    for item in accept.split(","):
        mt = item.split(";")[0].strip().lower()
        if mt in _ACCEPTABLE and (";" not in item or fhir_version(item) in _R4):
            return JSON if mt == JSON else FHIR_JSON
    raise FhirError(f"cannot answer in {accept}; this server speaks application/fhir+json of FHIR R4 "
                    "(fhirVersion=4.0)", status=406)


_R4 = (None, "4.0", "4.0.1")  # the fhirVersion values of a media type this server answers (none: its own)


def fhir_version(media_type: str) -> str | None:
    """The ``fhirVersion`` parameter of a media type (``application/fhir+json; fhirVersion=4.0``), or None."""
    for part in media_type.split(";")[1:]:
        name, _, value = part.partition("=")
        if name.strip().lower() == "fhirversion":
            return value.strip().strip('"')
    return None


def check_body_version(content_type: str | None) -> None:
    """415 for a body of another FHIR version than R4 (its Content-Type's ``fhirVersion``, if it has one)."""
    if content_type and ";" in content_type and fhir_version(content_type) not in _R4:
        raise FhirError(f"the body is {content_type}; this server takes FHIR R4 (fhirVersion=4.0)", status=415,
                        code="not-supported")


def _serialize(resp: FhirResponse, req: FhirRequest | None) -> tuple[bytes, str]:
    try:
        media = response_type(req) if req is not None else FHIR_JSON
    except FhirError:
        media = FHIR_JSON
    pretty = req is not None and req.param("_pretty") == "true"
    data = json.dumps(resp.body, ensure_ascii=False, separators=None if pretty else (",", ":"),
                      indent=2 if pretty else None, default=str)
    return data.encode("utf-8"), media


def to_connexion(resp: FhirResponse, req: FhirRequest | None = None) -> Any:
    """A handler's return value: a ready Flask response (serialized once, here)."""
    from flask import Response

    headers = dict(resp.headers)
    last = headers.get("Last-Modified")
    if last is not None:
        headers["Last-Modified"] = http_date(last)
    if resp.body is None:
        response = Response(b"", resp.status, headers)
        response.headers.pop("Content-Type", None)
        return response
    data, media = _serialize(resp, req)
    return Response(data, resp.status, headers, content_type=media)


_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def http_date(instant: str) -> str:
    """The HTTP-date (RFC 9110 IMF-fixdate, ``Sat, 05 Dec 2026 23:55:17 GMT``) of a UTC FHIR instant as the
    store writes them (``2026-12-05T23:55:17.352Z``), for the ``Last-Modified`` header, which HTTP clients and
    caches parse as an HTTP-date (a Bundle entry's ``response.lastModified`` stays the instant). Anything
    else is left as it is."""
    if len(instant) < 20 or instant[-1] != "Z" or instant[4] != "-" or instant[10] != "T":
        return instant
    try:
        year, month, day = int(instant[:4]), int(instant[5:7]), int(instant[8:10])
        weekday = date(year, month, day).weekday()
    except ValueError:
        return instant
    return f"{_DAYS[weekday]}, {instant[8:10]} {_MONTHS[month - 1]} {instant[:4]} {instant[11:19]} GMT"


# --------------------------------------------------------------------------- shaping answers

def _subset(value: Any, paths: list[list[str]]) -> Any:
    """``value`` cut to ``paths`` (each the rest of a dotted ``_elements`` name; an empty one keeps the
    whole value). A list keeps each item's subset, without the items left empty; None when nothing is left."""
    if any(not p for p in paths):
        return value
    if isinstance(value, list):
        kept = [s for s in (_subset(v, paths) for v in value) if s is not None]
        return kept or None
    if not isinstance(value, dict):
        return None  # a primitive has no elements to go into
    out: dict[str, Any] = {}
    for key in dict.fromkeys(p[0] for p in paths):
        if key in value and (sub := _subset(value[key], [p[1:] for p in paths if p[0] == key])) is not None:
            out[key] = sub
    return out or None


def shape_resource(resource: dict[str, Any], summary: str | None, elements: list[str] | None) -> dict[str, Any]:
    """Apply ``_summary=true|data|text`` or ``_elements`` to one resource (marked SUBSETTED).

    An ``_elements`` name may go into an element (``content.attachment.title``): that element then
    keeps only the named parts (a DocumentReference's file names without the files themselves)."""
    if summary in (None, "false") and not elements:
        return resource
    rtype = resource.get("resourceType", "")
    if summary == "true":
        keep = summary_elements(rtype)
    elif summary == "text":
        keep = {"resourceType", "id", "meta", "text"}
    elif summary == "data":
        keep = set(resource) - {"text"}
    else:
        paths = [e.split(".") for e in elements or () if e]
        out = {k: resource[k] for k in ("resourceType", "id", "meta") if k in resource}
        out.update(_subset({k: v for k, v in resource.items() if k not in out}, paths) or {})
        return _subsetted(out)
    out = {k: v for k, v in resource.items() if k in keep}
    return _subsetted(out)


def _subsetted(out: dict[str, Any]) -> dict[str, Any]:
    meta = dict(out.get("meta") or {})
    tags = list(meta.get("tag") or [])
    tags.append({"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "code": "SUBSETTED"})
    meta["tag"] = tags
    out["meta"] = meta
    return out


def write_answer(req: FhirRequest, status: int, resource: dict[str, Any] | None,
                 headers: dict[str, str], message: str) -> FhirResponse:
    """The answer to a create/update/patch, as ``Prefer: return=...`` asks (default: the resource)."""
    want = (req.prefer("return") or "representation").lower()
    if want == "minimal":
        return FhirResponse(status, None, headers)
    if want == "operationoutcome":
        return FhirResponse(status, outcome(message, status=200, code="informational", severity="information"),
                            headers)
    return FhirResponse(status, resource, headers)


def version_headers(base: str, resource_type: str, rid: str, version: int, last_updated: str,
                    *, location: bool = False) -> dict[str, str]:
    from .store import etag

    h = {"ETag": etag(version), "Last-Modified": last_updated}
    url = f"{base}/{resource_type}/{rid}/_history/{version}"
    h["Location" if location else "Content-Location"] = url
    return h
