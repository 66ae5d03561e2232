"""One socket write per response: uvicorn's httptools protocol with its writes gathered.

uvicorn writes a response's status line and headers when the app sends ``http.response.start``
and the body when it sends ``http.response.body``: two ``send`` system calls, two TCP segments,
and a client that wakes up for the head, reads it, and sleeps again until the body comes. On
loopback (a sidecar, the ingress on the same node, the bench) each send also runs the receiving
side's TCP stack. :class:`CoalescingHttpToolsProtocol` hands uvicorn a transport that holds a
write until the next one, which then leaves with it, or until the end of the event loop's turn
(``loop.call_soon``): the head and a body sent together leave as one segment, at once. Flushing
only at the end of the turn measured worse: the answer then waited behind whatever else that turn
ran, such as another connection's read served on the loop (read p99 at 16 clients 38-39 ms in three
runs, against 33-38 ms without gathering).

On the one request path the body comes from a thread: a2wsgi's responder sends the head when Flask
calls ``start_response`` and the body only after the loop has taken the head, a round trip later,
so the end of the turn always came first and every answer left as two writes (strace of a worker:
a 237-byte head, then a 281-byte body, each read). A response head is therefore held until the
next write (its body) or until uvicorn reports the response complete
(:meth:`CoalescingHttpToolsProtocol.on_response_complete`: a HEAD, a 204, a 304 write nothing
after the head), never on a timer; other writes (``100 Continue``, chunks) keep the rule above.

The same protocol answers bytes that are no HTTP request (a NUL or DEL in a header, a raw byte over
127 in the request line, a Content-Length that is no number), which httptools refuses before any Sen
code runs, as every other Sen error: problem JSON (an OperationOutcome for a /fhir path), not uvicorn's
plain text (:meth:`CoalescingHttpToolsProtocol.send_400_response`).
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from .web import SECURITY_HEADERS, problem_bytes

NOT_HTTP = ("the request is not valid HTTP/1.1: a control character (NUL, DEL...) or a byte over 127 in its "
            "request line or a header, or a Content-Length that is no number; send headers as ASCII text")


class GatheringTransport:
    """A transport that writes what one loop turn gave it in one call (everything else passes through)."""

    __slots__ = ("_loop", "_pending", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] | None = None

    def write(self, data: bytes) -> None:
        if self._pending is None:
            self._pending = [data]
            if not (data.startswith(b"HTTP/1.1 ") and not data.startswith(b"HTTP/1.1 100 ")):
                self._loop.call_soon(self.flush)  # held until the next write or the end of this turn
            # a response head: held until its body or the response's end (the protocol flushes)
        else:  # the body after its head: both leave now, not after what else this turn runs
            self._pending.append(data)
            self.flush()

    def writelines(self, lines: Any) -> None:
        for data in lines:
            self.write(data)

    def flush(self) -> None:
        pending, self._pending = self._pending, None
        if pending and not self._transport.is_closing():
            self._transport.write(pending[0] if len(pending) == 1 else b"".join(pending))

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def abort(self) -> None:
        self._pending = None
        self._transport.abort()

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + sum(map(len, self._pending or ()))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class CoalescingHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol writing through a :class:`GatheringTransport`."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(GatheringTransport(transport, self.loop))  # type: ignore[arg-type]

    def on_response_complete(self) -> None:
        self.transport.flush()  # a head with no body after it (HEAD, 204, 304) leaves now
        super().on_response_complete()

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to what httptools cannot parse (``msg``: its own text, logged by uvicorn),
        as RequestMiddleware answers: problem JSON, an OperationOutcome when the path read so far is
        under /fhir; the connection then closes, as uvicorn's does."""
        body, ctype = problem_bytes(400, "Bad Request", NOT_HTTP, bytes(getattr(self, "url", b"")).startswith(b"/fhir"))
        head = [STATUS_LINE[400]]
        for name, value in (*self.server_state.default_headers, *SECURITY_HEADERS):
            head += [name, b": ", value, b"\r\n"]
        head += [b"content-type: ", ctype, b"\r\ncontent-length: ", str(len(body)).encode(), b"\r\n",
                 b"connection: close\r\n\r\n", body]
        self.transport.write(b"".join(head))
        self.transport.close()
