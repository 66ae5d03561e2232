"""Every answer of every service carries X-Content-Type-Options, a Content-Security-Policy and a Cache-Control
(sen_shared.web.SECURITY_HEADERS, added by RequestMiddleware), unless its route set one of them itself; no
server banner (SenUvicornWorker)."""

from __future__ import annotations

import asyncio
from typing import Any

from sen_shared.web import SECURITY_HEADERS, RequestMiddleware

DEFAULTS = {"x-content-type-options": "nosniff",
            "content-security-policy": "default-src 'none'; frame-ancestors 'none'",
            "cache-control": "private, no-cache"}


def _call(headers: list[tuple[bytes, bytes]], *, method: str = "GET", path: str = "/fhir/Patient/1",
          request_headers: list[tuple[bytes, bytes]] | None = None, max_body: int = 1000,
          pages: Any = None) -> tuple[int, list[tuple[str, str]]]:
    """The status and headers (names and values as text, in order) the client gets for an app answering
    ``headers``, through the middleware."""
    async def app(scope, receive, send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": list(headers)})
        await send({"type": "http.response.body", "body": b"{}"})

    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": method, "path": path, "headers": request_headers or []}
    mw = RequestMiddleware(app, service="test", max_body=max_body, fhir_base="/fhir", pages=pages)
    asyncio.run(mw(scope, receive, send))
    start = sent[0]
    return start["status"], [(k.decode(), v.decode()) for k, v in start["headers"]]


def test_an_answer_setting_none_gets_all_of_them_once() -> None:
    status, headers = _call([(b"content-type", b"application/fhir+json"), (b"etag", b'W/"1"')])
    assert status == 200
    for name, value in DEFAULTS.items():
        assert [v for k, v in headers if k == name] == [value], name
    assert ("etag", 'W/"1"') in headers and any(k == "x-correlation-id" for k, _ in headers)


def test_a_route_s_own_header_is_kept_and_not_doubled() -> None:
    """The QR code's ``no-store``, the portal's pages' CSP: theirs, the others added."""
    status, headers = _call([(b"content-type", b"image/png"), (b"cache-control", b"no-store")])
    assert [v for k, v in headers if k == "cache-control"] == ["no-store"]
    assert [v for k, v in headers if k == "content-security-policy"] == [DEFAULTS["content-security-policy"]]
    assert [v for k, v in headers if k == "x-content-type-options"] == ["nosniff"]
    page_csp = "default-src 'self'; frame-ancestors 'none'"
    status, headers = _call([(b"content-type", b"text/html"), (b"content-security-policy", page_csp.encode()),
                             (b"x-content-type-options", b"nosniff"), (b"cache-control", b"no-store")])
    assert [v for k, v in headers if k == "content-security-policy"] == [page_csp]
    assert [v for k, v in headers if k == "x-content-type-options"] == ["nosniff"]
    assert [v for k, v in headers if k == "cache-control"] == ["no-store"]


def test_what_the_middleware_refuses_itself_carries_them_too() -> None:
    status, headers = _call([], method="POST", request_headers=[(b"content-length", b"5000")])
    assert status == 413
    for name, value in DEFAULTS.items():
        assert [v for k, v in headers if k == name] == [value], name
    status, headers = _call([], path="/fhir/Patient/a\x01b")
    assert status == 400 and dict(headers)["x-content-type-options"] == "nosniff"


def test_a_page_answering_what_the_middleware_refused_gets_them_unless_it_set_its_own() -> None:
    page_csp = "default-src 'self'"
    status, headers = _call([(b"content-type", b"text/html"), (b"content-security-policy", page_csp.encode())],
                            path="/patients/a\x01b", pages=lambda scope: True)
    assert status == 200
    assert [v for k, v in headers if k == "content-security-policy"] == [page_csp]
    assert dict(headers)["cache-control"] == "private, no-cache"


def test_the_constant_is_what_the_tests_expect() -> None:
    assert {k.decode(): v.decode() for k, v in SECURITY_HEADERS} == DEFAULTS


def test_the_worker_sends_no_server_banner() -> None:
    """uvicorn's default ``server: uvicorn`` named the server's make to every client."""
    from sen_shared.serving import SenUvicornWorker
    from uvicorn.config import Config

    async def app(scope, receive, send) -> None:
        pass

    kwargs = {k: v for k, v in SenUvicornWorker.CONFIG_KWARGS.items() if k != "loop"}
    ours, uvicorns = Config(app=app, **kwargs), Config(app=app, **{**kwargs, "server_header": True})
    ours.load()
    uvicorns.load()
    assert b"server" in dict(uvicorns.encoded_headers)  # where the banner would be
    assert b"server" not in dict(ours.encoded_headers)

