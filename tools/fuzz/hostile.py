"""Hostile requests schemathesis does not generate: each operation of a served spec called with what a
careless or hostile client sends, checked as api_fuzz checks its answers (no 5xx; an error answer is an
OperationOutcome under /fhir, RFC 9457 problem JSON elsewhere).

Per operation: a JSON body nested past Python's recursion limit, one holding a lone UTF-16 surrogate
(``"\\ud800"``) or a NUL in a string or a key, one with an integer past 64 bits or a float past double
(``1e309``), an empty body declared JSON, a body in the wrong media type, a Parameters whose ``parameter`` or a
parameter's ``part`` is no list of objects or whose values are of the wrong type; per query parameter and the
FHIR search parameters: NUL, lone surrogate bytes, 2**64, dates the calendar lacks (2024-02-30,
0000-01-01, 9999-12-31, a ``+25:00`` offset), ``_count`` 0, -1, 2**64, ``_sort`` and ``_include`` of
nothing; headers: ``If-Match`` and ``Idempotency-Key`` garbage; the path with a leading ``//``.
Path parameters take the spec's first enum value (the deepened spec's served types and seeded ids) or
``missing-1``. Returns the failures as ``METHOD path [body] -> status media-type body``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

DEEP = b"[" * 5000 + b"]" * 5000
_BODIES: list[tuple[str, bytes]] = [
    ("deep", DEEP),
    ("deep in a resource", b'{"resourceType": "Parameters", "parameter": ' + b"[" * 3000 + b"]" * 3000 + b"}"),
    ("lone surrogate", json.dumps({"resourceType": "Parameters", "parameter": [
        {"name": "reason", "valueString": "thừa \ud800"}], "note": "\udc00", "reason": "\ud800",
        "invoice": "x\ud800", "text": "\ud800"}).encode()),
    ("lone surrogate key", json.dumps({"resourceType": "Parameters", "\ud800": 1}).encode()),
    ("NUL", json.dumps({"resourceType": "Parameters", "parameter": [{"name": "reason", "valueString": "a\x00"}],
                        "reason": "a\x00", "note": "a\x00"}).encode()),
    ("huge numbers", b'{"resourceType": "Parameters", "amount": 18446744073709551616, "openingCash": 1e309, '
                     b'"parameter": [{"name": "x", "valueInteger": 18446744073709551616, "valueDecimal": 1e309}]}'),
    # a Parameters' parameter, or a parameter's part, of another type than a list of objects (session 21)
    ("parameter not a list", b'{"resourceType": "Parameters", "parameter": 5}'),
    ("parameter of non-objects", b'{"resourceType": "Parameters", "parameter": [5, "x", true]}'),
    ("part not a list", json.dumps({"resourceType": "Parameters", "parameter": [
        {"name": n, "part": 5} for n in ("participant", "reason", "resource", "slot", "coverage")]}).encode()),
    ("values of every type", json.dumps({"resourceType": "Parameters", "parameter": [
        {"name": n, "valueString": 5, "valueReference": "x", "valueCoding": [], "valueDateTime": True,
         "resource": 5} for n in ("reason", "resource", "chair", "site", "start", "end", "conclusion", "text")]})
     .encode()),
    ("not an object", b'"\\ud800"'),
    ("empty", b""),
]
_QUERY_VALUES = ["%00", "%ED%A0%80", "18446744073709551616", "1e309", "-1", "2024-02-30", "0000-01-01",
                 "9999-12-31", "ge9999-12-31T23:59:59-14:00", "2025-03-14T09:00:00%2B25:00", "%FF"]
_QUERY_EXTRA = ["_count=0", "_count=-1", "_count=18446744073709551616", "_sort=nothing", "_sort=-", "_include=*:x",
                "_include=Patient:nothing", "_revinclude=x:y:z", "subject.nothing.name=x", "_has:X:y:z=1",
                "_cursor=%ED%A0%80", "_offset=18446744073709551616"]
_HEADERS = [{"If-Match": "garbage"}, {"If-Match": 'W/"99999999999999999999999"'}, {"If-None-Match": "W/\"-1\""},
            {"Idempotency-Key": "k" * 300}, {"Prefer": "return=nothing"}, {"Accept": "application/x-nothing"}]
_JSON = "application/json"


def _path(template: str, op: dict[str, Any], item: dict[str, Any]) -> str:
    params = {p["name"]: p for p in [*item.get("parameters", []), *op.get("parameters", [])] if isinstance(p, dict)}

    def value(m: re.Match[str]) -> str:
        schema = params.get(m.group(1), {}).get("schema", {})
        enum = schema.get("enum") or []
        return str(enum[-1] if m.group(1) == "id" and len(enum) > 1 else enum[0]) if enum else "missing-1"

    return re.sub(r"\{([^}]+)\}", value, template)


def _resolve(spec: dict[str, Any], obj: dict[str, Any]) -> dict[str, Any]:
    while isinstance(obj, dict) and "$ref" in obj:
        node: Any = spec
        for part in obj["$ref"].lstrip("#/").split("/"):
            node = node[part]
        obj = node
    return obj


QUICK = ("%00", "%ED%A0%80", "18446744073709551616", "2024-02-30")  # the query values of a quick run (the guard)


def requests(spec: dict[str, Any], values: tuple[str, ...] | None = None) -> Iterator[tuple[str, str, dict[str, str],
                                                                                           bytes]]:
    """``(method, path with query, headers, body)`` for each hostile request of the served ``spec``;
    ``values``: the query values tried on each query parameter (default: all of them)."""
    for template, item in spec.get("paths", {}).items():
        if template.startswith("/webhooks/"):
            continue  # signed calls: tools/fuzz does not hold the providers' keys (their own tests probe them)
        for method in ("get", "post", "put", "patch", "delete"):
            op = item.get(method)
            if not isinstance(op, dict):
                continue
            path = _path(template, op, item)
            fhir = path.startswith("/fhir")
            ctype = "application/fhir+json" if fhir else _JSON
            yield method.upper(), "/" + path, {}, b""  # the leading //
            names = [p.get("name") for p in [*item.get("parameters", []), *op.get("parameters", [])]
                     if isinstance(p, dict) and p.get("in") == "query"]
            if fhir and method == "get":
                names += ["_id", "date", "start", "end", "status", "subject", "_lastUpdated"]
            for name in dict.fromkeys(n for n in names if n):
                for v in values or _QUERY_VALUES:
                    yield method.upper(), f"{path}?{name}={v}", {}, b""
            if fhir and method == "get":
                for q in _QUERY_EXTRA:
                    yield method.upper(), f"{path}?{q}", {}, b""
            body = _resolve(spec, op.get("requestBody") or {})
            if method in ("post", "put", "patch"):
                for headers in _HEADERS:
                    yield method.upper(), path, {**headers, "Content-Type": ctype}, b"{}"
                if any("json" in t for t in body.get("content", {})):
                    for _label, data in _BODIES:
                        yield method.upper(), path, {"Content-Type": ctype}, data
                    yield method.upper(), path, {"Content-Type": "text/plain"}, b'{"a": 1}'


def bad_answer(path: str, status: int, ctype: str, text: str) -> bool:
    """A 5xx, or an error answer neither an OperationOutcome (/fhir) nor problem JSON (elsewhere)."""
    if status >= 500:
        return True
    if status < 400:
        return False
    media = ctype.split(";")[0].strip()
    if path.lstrip("/").startswith("fhir"):
        return media not in ("application/fhir+json", _JSON) or '"OperationOutcome"' not in text
    return media != "application/problem+json"


def probe(url: str, spec: dict[str, Any], token: str | None = None, timeout: float = 20,
          values: tuple[str, ...] | None = None) -> tuple[int, list[str]]:
    """Send every hostile request of ``spec`` (:func:`requests`) to ``url`` (``token``: a bearer token);
    how many were sent, and the bad answers (:func:`bad_answer`), each ``METHOD path [body] -> status
    type body``."""
    import httpx

    auth = {"Authorization": f"Bearer {token}"} if token else {}
    bad: list[str] = []
    sent = 0
    with httpx.Client(base_url=url, timeout=timeout) as client:
        for method, path, headers, body in requests(spec, values):
            sent += 1
            # the URL whole: httpx keeps a path's leading // only in an absolute URL
            r = client.request(method, url + path, headers={**auth, **headers}, content=body or None)
            if bad_answer(path, r.status_code, r.headers.get("content-type", ""), r.text):
                shown = f" body {body[:80]!r}" if body else ""
                bad.append(f"{method} {path[:200]}{shown} -> {r.status_code} {r.headers.get('content-type', '')} "
                           f"{r.text[:200]!r}")
    return sent, bad
