"""A closed-loop HTTP/1.1 load generator: one thread, one keep-alive connection per client.

The benchmark's clients share the two CPUs with the server they measure, so the less they
take, the more the figures are the server's. A thread per client (``http.client``) paid
~0.15 ms of CPU a request on this machine, parsed headers with the ``email`` package, and
added its own wake-ups to each latency: a thread whose answer had arrived waited for the
interpreter lock while the other fifteen parsed theirs. Here one thread waits on all the
sockets at once (``selectors``), sends each request as prepared bytes and reads only what
the answer needs (status, ``Content-Length`` or chunks, ``Connection: close``). The clock
starts when a request is written and stops when its last byte is read.
"""

from __future__ import annotations

import selectors
import socket
import time
from collections import Counter
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from typing import Any

MAX_HEAD = 64 * 1024


class ProtocolError(Exception):
    """The server sent something this client does not read (the bench reports it)."""


@dataclass
class _Conn:
    sock: socket.socket
    buf: bytearray = field(default_factory=bytearray)
    started: float = 0.0
    status: int = 0
    length: int | None = None  # body bytes still expected; None while the head is incomplete
    chunked: bool = False
    close: bool = False
    keep_body: bool = False  # run_sessions(with_body=True): the last answer's body is kept in ``body``
    body: bytes = b""


def percentile(values: list[float], q: float) -> float:
    """The nearest-rank ``q``-th percentile of ``values`` (nan when empty)."""
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q / 100 * len(s) + 0.5) - 1))]


def request_bytes(host: str, port: int, path: str, headers: dict[str, str]) -> bytes:
    lines = [f"GET {path} HTTP/1.1", f"Host: {host}:{port}", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def post_bytes(host: str, port: int, path: str, headers: dict[str, str], body: bytes) -> bytes:
    """A POST with ``body``, prepared once: :func:`run` sends items that are bytes as they are."""
    lines = [f"POST {path} HTTP/1.1", f"Host: {host}:{port}", *(f"{k}: {v}" for k, v in headers.items()),
             f"Content-Length: {len(body)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def _chunked_end(buf: bytearray, start: int) -> int | None:
    """Index just past a complete chunked body beginning at ``start``, or None if incomplete."""
    pos = start
    while True:
        eol = buf.find(b"\r\n", pos)
        if eol < 0:
            return None
        size = int(bytes(buf[pos:eol]).split(b";", 1)[0], 16)
        if size == 0:
            end = buf.find(b"\r\n\r\n", eol)  # no trailers from our servers: the last chunk's CRLF
            return None if end < 0 else end + 4
        pos = eol + 2 + size + 2
        if pos > len(buf):
            return None


def _dechunk(raw: bytes) -> bytes:
    out, pos = bytearray(), 0
    while True:
        eol = raw.find(b"\r\n", pos)
        size = int(raw[pos:eol].split(b";", 1)[0], 16)
        if size == 0:
            return bytes(out)
        out += raw[eol + 2:eol + 2 + size]
        pos = eol + 2 + size + 2


def _parse(conn: _Conn) -> bool:
    """Consume one complete response from ``conn.buf``; False while it is incomplete."""
    if conn.length is None and not conn.chunked:
        end = conn.buf.find(b"\r\n\r\n")
        if end < 0:
            if len(conn.buf) > MAX_HEAD:
                raise ProtocolError("response head over 64 KiB")
            return False
        head = bytes(conn.buf[:end]).decode("latin-1").split("\r\n")
        parts = head[0].split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1."):
            raise ProtocolError(f"not an HTTP/1.x status line: {head[0][:80]!r}")
        conn.status = int(parts[1])
        conn.length, conn.chunked, conn.close = None, False, False
        for line in head[1:]:
            name, _, value = line.partition(":")
            name, value = name.strip().lower(), value.strip().lower()
            if name == "content-length":
                conn.length = int(value)
            elif name == "transfer-encoding" and "chunked" in value:
                conn.chunked = True
            elif name == "connection" and value == "close":
                conn.close = True
        if conn.length is None and not conn.chunked:
            if conn.status not in (204, 304):
                raise ProtocolError(f"a {conn.status} answer without Content-Length or chunks")
            conn.length = 0
        del conn.buf[:end + 4]
    if conn.chunked:
        end = _chunked_end(conn.buf, 0)
        if end is None:
            return False
        if conn.keep_body:
            conn.body = _dechunk(bytes(conn.buf[:end]))
        del conn.buf[:end]
    else:
        if len(conn.buf) < conn.length:
            return False
        if conn.keep_body:
            conn.body = bytes(conn.buf[:conn.length])
        del conn.buf[:conn.length]
    conn.length, conn.chunked = None, False
    return True


def run(host: str, port: int, headers: dict[str, str], paths: Iterator[str | bytes], clients: int,
        deadline: float) -> tuple[list[float], Counter]:
    """GET each of ``paths`` over ``clients`` connections until they run out or ``deadline``
    (``time.monotonic()``) passes; the latencies in ms and the statuses. An item that is bytes
    is a whole prepared request (:func:`post_bytes`), sent as it is."""
    sel = selectors.DefaultSelector()
    lat: list[float] = []
    statuses: Counter = Counter()
    open_conns = 0

    def connect() -> _Conn:
        sock = socket.create_connection((host, port), timeout=60)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(None)  # blocking: reads happen only once the selector says data is there
        return _Conn(sock)

    def send_next(conn: _Conn) -> bool:
        path = next(paths, None) if time.monotonic() < deadline else None
        if path is None:
            return False
        data = path if isinstance(path, bytes) else request_bytes(host, port, path, headers)
        conn.started = time.perf_counter()
        conn.sock.sendall(data)  # far below the socket buffer: never waits on the server
        return True

    try:
        for _ in range(clients):
            conn = connect()
            if send_next(conn):
                sel.register(conn.sock, selectors.EVENT_READ, conn)
                open_conns += 1
            else:
                conn.sock.close()
        while open_conns:
            for key, _ in sel.select(timeout=60):
                conn = key.data
                data = conn.sock.recv(65536)
                if not data:
                    raise ProtocolError("the server closed a connection before answering")
                conn.buf += data
                while _parse(conn):
                    lat.append((time.perf_counter() - conn.started) * 1000)
                    statuses[conn.status] += 1
                    if conn.close:  # the server asked for a new connection (gunicorn's balancing)
                        sel.unregister(conn.sock)
                        conn.sock.close()
                        conn = connect()
                        sel.register(conn.sock, selectors.EVENT_READ, conn)
                    if not send_next(conn):
                        sel.unregister(conn.sock)
                        conn.sock.close()
                        open_conns -= 1
                        break
    finally:
        for key in list(sel.get_map().values()):
            key.fileobj.close()
        sel.close()
    return lat, statuses


def run_sessions(host: str, port: int, sessions: list[Generator[bytes, Any, None]], deadline: float,
                 by_status: dict[int, list[float]] | None = None,
                 with_body: bool = False) -> tuple[list[float], Counter]:
    """Clients whose next request depends on their last answer: each session is a generator that
    yields a prepared request (:func:`post_bytes`), is sent the answer's status and yields the next
    one, or returns when it is done. Every session connects first, then all first requests go out
    together (a burst, as clients racing for the same thing); the latencies in ms and the statuses.
    Stops sending when ``deadline`` (``time.monotonic()``) passes; ``by_status`` (optional) gets
    each answer's latency under its status too. ``with_body``: a session is sent ``(status, body
    bytes)`` instead of the status (a client that reads what it was answered, e.g. proposals)."""
    sel = selectors.DefaultSelector()
    lat: list[float] = []
    statuses: Counter = Counter()
    conns: list[tuple[_Conn, Generator[bytes, int, None]]] = []

    def connect() -> _Conn:
        sock = socket.create_connection((host, port), timeout=60)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(None)
        return _Conn(sock, keep_body=with_body)

    def send(conn: _Conn, data: bytes) -> None:
        conn.started = time.perf_counter()
        conn.sock.sendall(data)

    try:
        firsts = []
        for gen in sessions:
            data = next(gen, None)
            if data is not None:
                firsts.append((connect(), gen, data))
        for conn, gen, data in firsts:  # connected all: now the burst
            sel.register(conn.sock, selectors.EVENT_READ, (conn, gen))
            conns.append((conn, gen))
            send(conn, data)
        open_conns = len(conns)
        while open_conns:
            for key, _ in sel.select(timeout=60):
                conn, gen = key.data
                data = conn.sock.recv(65536)
                if not data:
                    raise ProtocolError("the server closed a connection before answering")
                conn.buf += data
                while _parse(conn):
                    lat.append((time.perf_counter() - conn.started) * 1000)
                    statuses[conn.status] += 1
                    if by_status is not None:
                        by_status.setdefault(conn.status, []).append(lat[-1])
                    if conn.close:
                        sel.unregister(conn.sock)
                        conn.sock.close()
                        conn = connect()
                        sel.register(conn.sock, selectors.EVENT_READ, (conn, gen))
                    try:
                        answer = (conn.status, conn.body) if with_body else conn.status
                        nxt = gen.send(answer) if time.monotonic() < deadline else None
                    except StopIteration:
                        nxt = None
                    if nxt is None:
                        sel.unregister(conn.sock)
                        conn.sock.close()
                        open_conns -= 1
                        break
                    send(conn, nxt)
    finally:
        for key in list(sel.get_map().values()):
            key.fileobj.close()
        sel.close()
    return lat, statuses


def run_rate(host: str, port: int, requests: list[bytes], rate: float, max_conns: int,
             deadline: float) -> tuple[list[float], Counter, float]:
    """An open-loop load: request ``i`` (a prepared request, :func:`post_bytes`) is due at
    ``start + i / rate``, whatever became of the earlier ones, as calls arriving from outside do
    (a bank's webhooks do not wait for each other). A due request goes out on an idle keep-alive
    connection, a new one while fewer than ``max_conns`` are open, else it waits for one. Its
    latency counts from when it was DUE, not when it was sent: a slow answer delays the clock of
    every request queued behind it (no coordinated omission). Returns the latencies in ms, the
    statuses and the seconds from the first due time to the last answer."""
    sel = selectors.DefaultSelector()
    lat: list[float] = []
    statuses: Counter = Counter()
    idle: list[_Conn] = []
    busy = 0
    nxt = 0
    start = time.perf_counter()

    def due(i: int) -> float:
        return start + i / rate

    def connect() -> _Conn:
        sock = socket.create_connection((host, port), timeout=60)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(None)
        return _Conn(sock)

    def send(conn: _Conn, i: int, reused: bool) -> None:
        conn.started = due(i)
        conn.sock.sendall(requests[i])
        sel.register(conn.sock, selectors.EVENT_READ, (conn, i, reused))

    try:
        while nxt < len(requests) or busy:
            now = time.perf_counter()
            while nxt < len(requests) and due(nxt) <= now and time.monotonic() < deadline:
                if idle:
                    conn, reused = idle.pop(), True
                elif busy < max_conns:
                    conn, reused = connect(), False
                else:
                    break  # every connection is waiting for an answer: this request waits too
                send(conn, nxt, reused)
                busy += 1
                nxt += 1
            if time.monotonic() >= deadline:
                nxt = len(requests)  # send nothing more; collect what is out
            if not busy and nxt >= len(requests):
                break
            wait = max(0.0, due(nxt) - time.perf_counter()) if nxt < len(requests) and (idle or busy < max_conns) \
                else 60.0
            for key, _ in sel.select(timeout=min(wait, 60.0) if busy else wait):
                conn, i, reused = key.data
                data = conn.sock.recv(65536)
                if not data and reused and not conn.buf:
                    # the server closed this keep-alive connection while it sat idle (its keep-alive
                    # timeout) before reading the request: sent again on a new one, still due when it was
                    sel.unregister(conn.sock)
                    conn.sock.close()
                    send(connect(), i, False)
                    continue
                if not data:
                    raise ProtocolError("the server closed a connection before answering")
                conn.buf += data
                if _parse(conn):  # one request at a time on a connection: at most one answer
                    lat.append((time.perf_counter() - conn.started) * 1000)
                    statuses[conn.status] += 1
                    sel.unregister(conn.sock)
                    busy -= 1
                    if conn.close:
                        conn.sock.close()
                    else:
                        idle.append(conn)
        return lat, statuses, time.perf_counter() - start
    finally:
        for key in list(sel.get_map().values()):
            key.fileobj.close()
        for conn in idle:
            conn.sock.close()
        sel.close()
