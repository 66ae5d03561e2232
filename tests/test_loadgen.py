"""The benchmark's load generator (tests/perf/loadgen.py) against a raw HTTP/1.1 server.

The server answers in the shapes a real one may use: a body by Content-Length or by chunks,
a 304 without a body, the head and body in separate (even one-byte) writes, and
``Connection: close`` now and then, as gunicorn's balancing does.
"""

from __future__ import annotations

import socket
import threading
import time

import pytest

from tests.perf import loadgen


def _answer(n: int, path: str) -> list[bytes]:
    """The pieces (separate writes) of the n-th answer of a connection to ``path``."""
    body = path.encode()
    shape = n % 5
    if shape == 0:
        return [b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)]
    if shape == 1:  # head, then the body a byte at a time
        return [b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % len(body), *[bytes([b]) for b in body]]
    if shape == 2:  # two chunks, split across writes
        half = len(body) // 2
        return [b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n" % (half, body[:half]),
                b"%x;x=1\r\n%s\r\n" % (len(body) - half, body[half:]), b"0\r\n", b"\r\n"]
    if shape == 3:
        return [b"HTTP/1.1 304 Not Modified\r\nETag: W/\"1\"\r\n\r\n"]
    return [b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body)]


class Server:
    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.paths: list[str] = []
        self.connections = 0
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with self.lock:
                self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        buf, n = b"", 0
        with conn:
            while True:
                while b"\r\n\r\n" not in buf:
                    data = conn.recv(4096)
                    if not data:
                        return
                    buf += data
                head, buf = buf.split(b"\r\n\r\n", 1)
                path = head.split(b"\r\n")[0].split(b" ")[1].decode()
                assert b"\r\nauthorization: Bearer t" in head
                with self.lock:
                    self.paths.append(path)
                pieces = _answer(n, path)
                for piece in pieces:
                    conn.sendall(piece)
                    if len(pieces) > 1:
                        time.sleep(0.0005)
                if b"Connection: close" in pieces[0]:
                    return
                n += 1

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def server():
    s = Server()
    yield s
    s.close()


def test_every_path_once_in_every_answer_shape(server):
    paths = [f"/fhir/Patient/{i}" for i in range(400)]
    lat, statuses = loadgen.run("127.0.0.1", server.port, {"authorization": "Bearer t"}, iter(paths), 8,
                                time.monotonic() + 60)
    assert sorted(server.paths) == sorted(paths)
    assert len(lat) == 400 and all(ms > 0 for ms in lat)
    assert sum(statuses.values()) == 400 and set(statuses) == {200, 201, 304}
    assert server.connections > 8  # answers with Connection: close were followed by new connections


def test_stops_at_the_deadline(server):
    lat, _ = loadgen.run("127.0.0.1", server.port, {"authorization": "Bearer t"},
                         iter(f"/p/{i}" for i in range(10**9)), 4, time.monotonic() + 0.3)
    assert 0 < len(lat) < 10**9


def test_a_response_it_cannot_frame_is_an_error():
    srv = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        conn, _ = srv.accept()
        with conn:
            conn.recv(4096)
            conn.sendall(b"HTTP/1.1 200 OK\r\n\r\nbody until close")

    threading.Thread(target=serve, daemon=True).start()
    with pytest.raises(loadgen.ProtocolError, match="without Content-Length"):
        loadgen.run("127.0.0.1", srv.getsockname()[1], {}, iter(["/x"]), 1, time.monotonic() + 10)
    srv.close()


def test_an_open_loop_sends_each_request_when_due_and_counts_from_then(server):
    """``run_rate``: every request answered once, in every answer shape; the load is paced (the last
    request is not due before (n - 1) / rate seconds), and a request that waited for a connection
    counts the wait (its latency runs from when it was due)."""
    reqs = [loadgen.request_bytes("127.0.0.1", server.port, f"/r/{i}", {"authorization": "Bearer t"})
            for i in range(120)]
    lat, statuses, elapsed = loadgen.run_rate("127.0.0.1", server.port, reqs, 400.0, 4, time.monotonic() + 60)
    assert sorted(server.paths) == sorted(f"/r/{i}" for i in range(120))
    assert len(lat) == 120 and sum(statuses.values()) == 120 and set(statuses) == {200, 201, 304}
    assert elapsed >= 119 / 400
    # one connection, requests due all at once: the n-th waits for the n - 1 before it
    server.paths.clear()
    lat, _, _ = loadgen.run_rate("127.0.0.1", server.port, reqs[:20], 1e9, 1, time.monotonic() + 60)
    assert len(lat) == 20 and lat == sorted(lat) and lat[-1] > lat[0]


def test_an_open_loop_stops_sending_at_the_deadline(server):
    reqs = [loadgen.request_bytes("127.0.0.1", server.port, f"/d/{i}", {"authorization": "Bearer t"})
            for i in range(10_000)]
    lat, _, _ = loadgen.run_rate("127.0.0.1", server.port, reqs, 1000.0, 4, time.monotonic() + 0.3)
    assert 0 < len(lat) < 10_000
