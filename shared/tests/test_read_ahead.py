"""A body of known size is read on the event loop before the application runs (sen_shared.web._read_ahead):
kept for request_body(), replayed to the application as it came, a client gone mid-body replayed as it went."""

from __future__ import annotations

import asyncio
from typing import Any

import flask
from a2wsgi import WSGIMiddleware
from sen_shared.web import BODY_KEY, RequestMiddleware, request_body

PARTS = [b'{"data": {"id": "tx1", ', b'"amount": 10000, "description": "thanh toan HD0P2B6ZNPM"}', b"}"]
BODY = b"".join(PARTS)


def _client(parts: list[bytes], *, gone_after: int | None = None) -> tuple[Any, list[str]]:
    """A receive giving ``parts`` (then, with ``gone_after``, ``http.disconnect`` after that many), logging
    each call in ``log``."""
    log: list[str] = []
    messages: list[dict[str, Any]] = [{"type": "http.request", "body": p, "more_body": i < len(parts) - 1}
                                      for i, p in enumerate(parts)]
    if gone_after is not None:
        messages = [*messages[:gone_after], {"type": "http.disconnect"}]

    async def receive() -> dict[str, Any]:
        log.append("receive")
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    return receive, log


def _post(app: Any, parts: list[bytes], *, gone_after: int | None = None,
          ) -> tuple[list[dict[str, Any]], list[str], dict[str, Any]]:
    receive, log = _client(parts, gone_after=gone_after)
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def entered(scope, receive, send) -> None:
        log.append("app")
        await app(scope, receive, send)

    scope = {"type": "http", "method": "POST", "path": "/webhooks/standard", "query_string": b"",
             "headers": [(b"content-length", str(sum(map(len, parts))).encode()),
                         (b"content-type", b"application/json")],
             "server": ("127.0.0.1", 80), "client": ("127.0.0.1", 5000), "scheme": "http", "http_version": "1.1",
             "root_path": ""}
    asyncio.run(RequestMiddleware(entered, service="test", max_body=10_000, fhir_base=None)(scope, receive, send))
    return sent, log, scope


def _flask(view) -> Any:
    app = flask.Flask("read-ahead-test")
    app.add_url_rule("/webhooks/<provider>", view_func=view, methods=["POST"])
    return WSGIMiddleware(app)


def test_a_handler_reading_request_body_takes_the_copy_read_before_it_ran() -> None:
    def view(provider: str) -> Any:
        return request_body()

    sent, log, scope = _post(_flask(view), PARTS)
    assert sent[0]["status"] == 200 and b"".join(m.get("body", b"") for m in sent[1:]) == BODY
    # every part read before the application was entered; nothing read after (no hand-off from the handler)
    assert log == ["receive"] * len(PARTS) + ["app"]
    assert scope[BODY_KEY].done and b"".join(scope[BODY_KEY].chunks) == BODY


def test_a_handler_reading_the_stream_gets_the_body_replayed_as_it_came() -> None:
    seen: list[bytes] = []

    def view(provider: str) -> Any:
        seen.append(flask.request.get_data())
        return "ok"

    sent, log, _scope = _post(_flask(view), PARTS)
    assert sent[0]["status"] == 200 and seen == [BODY]
    assert log[:len(PARTS) + 1] == ["receive"] * len(PARTS) + ["app"]


def test_the_application_gets_the_messages_in_order_then_the_client_s() -> None:
    got: list[dict[str, Any]] = []

    async def app(scope, receive, send) -> None:
        for _ in range(len(PARTS) + 1):
            got.append(await receive())
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    _post(app, PARTS)
    assert [m.get("body") for m in got[:-1]] == PARTS
    assert [m.get("more_body") for m in got[:-1]] == [True, True, False]
    assert got[-1] == {"type": "http.disconnect"}  # the client's own receive after the body


def test_a_client_gone_mid_body_is_replayed_as_it_went_and_its_body_is_not_kept_whole() -> None:
    got: list[dict[str, Any]] = []

    async def app(scope, receive, send) -> None:
        got.append(await receive())
        got.append(await receive())

    _sent, log, scope = _post(app, PARTS, gone_after=1)
    assert got == [{"type": "http.request", "body": PARTS[0], "more_body": True}, {"type": "http.disconnect"}]
    assert log == ["receive", "receive", "app"]
    assert not scope[BODY_KEY].done
