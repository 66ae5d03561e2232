"""GatheringTransport: a head leaves with its body in one write, also when the body comes turns later;
a head without a body leaves when the response is complete; close and abort behave."""

from __future__ import annotations

import asyncio
import json

from sen_shared.coalesce import CoalescingHttpToolsProtocol, GatheringTransport


class Recorder:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = self.aborted = False

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def is_closing(self) -> bool:
        return self.closed or self.aborted

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = True

    def get_write_buffer_size(self) -> int:
        return 0

    def get_extra_info(self, name: str, default=None):
        return {"peername": ("127.0.0.1", 5000), "sockname": ("127.0.0.1", 8081)}.get(name, default)

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def test_head_and_body_of_one_turn_leave_in_one_write() -> None:
    async def main() -> Recorder:
        raw = Recorder()
        t = GatheringTransport(raw, asyncio.get_running_loop())
        t.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
        assert raw.writes == [] and t.get_write_buffer_size() == 38  # the head waits for its body
        t.write(b"{}")
        assert raw.writes == [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}"]  # together, at once
        t.write(b"a lone chunk")
        assert len(raw.writes) == 1  # held until the turn ends
        await asyncio.sleep(0)
        return raw

    raw = asyncio.run(main())
    assert raw.writes == [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}", b"a lone chunk"]


def test_close_sends_what_is_pending_first_and_abort_drops_it() -> None:
    async def main() -> tuple[Recorder, Recorder]:
        loop = asyncio.get_running_loop()
        closed, aborted = Recorder(), Recorder()
        a, b = GatheringTransport(closed, loop), GatheringTransport(aborted, loop)
        a.write(b"last answer")
        a.close()
        b.write(b"never")
        b.abort()
        await asyncio.sleep(0)
        return closed, aborted

    closed, aborted = asyncio.run(main())
    assert closed.writes == [b"last answer"] and closed.closed
    assert aborted.writes == [] and aborted.aborted


def test_uvicorns_protocol_gets_the_gathering_transport() -> None:
    from uvicorn.config import Config
    from uvicorn.server import ServerState

    async def main() -> None:
        config = Config(app=lambda *a: None, http=CoalescingHttpToolsProtocol)
        config.load()
        proto = CoalescingHttpToolsProtocol(config, ServerState(), app_state={})
        proto.connection_made(Recorder())
        assert isinstance(proto.transport, GatheringTransport)
        assert proto.client == ("127.0.0.1", 5000)  # attributes pass through

    asyncio.run(main())


def test_a_head_waits_for_a_body_that_comes_turns_later() -> None:
    # a2wsgi sends the body from a worker thread a loop round trip after the head
    async def main() -> Recorder:
        raw = Recorder()
        t = GatheringTransport(raw, asyncio.get_running_loop())
        t.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
        for _ in range(3):
            await asyncio.sleep(0)
        assert raw.writes == []
        t.write(b"{}")
        return raw

    assert asyncio.run(main()).writes == [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}"]


def test_100_continue_is_not_held() -> None:
    async def main() -> Recorder:
        raw = Recorder()
        t = GatheringTransport(raw, asyncio.get_running_loop())
        t.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        await asyncio.sleep(0)
        return raw

    assert asyncio.run(main()).writes == [b"HTTP/1.1 100 Continue\r\n\r\n"]


def _serve(request: bytes, app) -> list[bytes]:
    from uvicorn.config import Config
    from uvicorn.server import ServerState

    async def main() -> list[bytes]:
        config = Config(app=app, http=CoalescingHttpToolsProtocol, lifespan="off")
        config.load()
        raw = Recorder()
        proto = CoalescingHttpToolsProtocol(config, ServerState(), app_state={})
        proto.connection_made(raw)
        proto.data_received(request)
        for _ in range(20):
            await asyncio.sleep(0.01)
        proto.connection_lost(None)
        return raw.writes

    return asyncio.run(main())


def test_one_write_per_answer_through_uvicorn_even_when_the_body_comes_later() -> None:
    async def app(scope, receive, send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        await asyncio.sleep(0.02)  # the body comes several turns later, as from a2wsgi's thread
        await send({"type": "http.response.body", "body": b"{}", "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    writes = _serve(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", app)
    assert len([w for w in writes if w]) == 1 and writes[0].startswith(b"HTTP/1.1 200") and writes[0].endswith(b"{}")


def test_a_head_without_a_body_leaves_when_the_response_is_complete() -> None:
    async def app(scope, receive, send) -> None:
        await send({"type": "http.response.start", "status": 304, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    for request in (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n"):
        writes = [w for w in _serve(request, app) if w]
        assert len(writes) == 1 and writes[0].startswith(b"HTTP/1.1 304"), (request, writes)


def test_bytes_that_are_no_http_request_are_answered_as_problem_json() -> None:
    """httptools refuses a NUL in a header, a raw byte over 127 in the request line and a Content-Length
    that is no number before any Sen code runs; uvicorn answered those in plain text ("Invalid HTTP request
    received."): now problem JSON, an OperationOutcome under /fhir, and the connection closes (hand probes
    beside tools/fuzz)."""
    from uvicorn.config import Config
    from uvicorn.server import ServerState

    async def main(data: bytes) -> Recorder:
        config = Config(app=lambda *a: None, http=CoalescingHttpToolsProtocol)
        config.load()
        proto = CoalescingHttpToolsProtocol(config, ServerState(), app_state={})
        raw = Recorder()
        proto.connection_made(raw)
        proto.data_received(data)
        return raw

    cases = [(b"GET /payments/shifts HTTP/1.1\r\nHost: x\r\nX-Note: a\x00b\r\n\r\n", "application/problem+json"),
             (b"GET /fhir/Patient HTTP/1.1\r\nHost: x\r\nX-Note: a\x7fb\r\n\r\n", "application/fhir+json"),
             (b"POST /fhir/Patient HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n{}", "application/fhir+json"),
             # a request line httptools cannot read: no path is known, so problem JSON
             (b"GET /fhir/Patient?name=\xff HTTP/1.1\r\nHost: x\r\n\r\n", "application/problem+json")]
    for data, media in cases:
        raw = asyncio.run(main(data))
        head, _, body = b"".join(raw.writes).partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 400 ") and f"content-type: {media}".encode() in head, head
        assert b"x-content-type-options: nosniff" in head and b"content-security-policy: " in head, head
        assert raw.closed
        text = json.loads(body)
        if media == "application/fhir+json":
            assert text["resourceType"] == "OperationOutcome" and "not valid HTTP" in text["issue"][0]["diagnostics"]
        else:
            assert text["status"] == 400 and "not valid HTTP" in text["detail"]
