"""GatheringTransport: a head leaves with its body in one write; close and abort behave."""

from __future__ import annotations

import asyncio

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
