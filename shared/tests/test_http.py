"""sen_shared.http against loopback sockets only: an answer is read whole whatever its status, a
server that accepts but never answers is TimedOut, a port where nothing listens is Unreachable,
a connection closed without an answer is Unreachable, and a forked child gets a pool of its own."""

from __future__ import annotations

import contextlib
import json
import socket
import struct
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest
from sen_shared import http

SEEN: list[dict] = []


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _route(self) -> None:
        url = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        SEEN.append({"method": self.command, "query": parse_qs(url.query),
                     "body": self.rfile.read(length) if length else b"", "headers": dict(self.headers)})
        data = json.dumps({"chào": "Nguyễn Thị Bích"}, ensure_ascii=False).encode()
        self.send_response(404 if url.path == "/gone" else 200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = _route

    def log_message(self, *args) -> None:
        pass


@pytest.fixture()
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    SEEN.clear()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture()
def silent() -> Iterator[str]:
    """A server that completes the TCP handshake (the kernel's backlog) and never answers."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(8)
    yield f"http://127.0.0.1:{s.getsockname()[1]}"
    s.close()


@pytest.fixture()
def nobody() -> Iterator[str]:
    """A port bound but not listening: a connection there is refused (and no one else can take it)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    yield f"http://127.0.0.1:{s.getsockname()[1]}"
    s.close()


def test_an_answer_is_read_whole_whatever_its_status(server: str) -> None:
    r = http.request("POST", f"{server}/ok?a=1", timeout=5, params=[("s", "nguyễn"), ("s", "đặng")],
                     json={"ghi chú": "Hội chẩn"}, headers={"Content-Type": "application/json"})
    assert r.status_code == 200 and r.json() == {"chào": "Nguyễn Thị Bích"}
    assert SEEN[-1]["query"] == {"a": ["1"], "s": ["nguyễn", "đặng"]}
    assert json.loads(SEEN[-1]["body"]) == {"ghi chú": "Hội chẩn"}
    gone = http.request("GET", f"{server}/gone", timeout=5)
    assert gone.status_code == 404 and gone.headers["Content-Type"] == "application/json"


def test_no_answer_within_the_timeout_is_timed_out(silent: str) -> None:
    with pytest.raises(http.TimedOut) as err:
        http.request("GET", f"{silent}/fhir/Patient/p1", timeout=0.3)
    assert err.value.kind == "timeout" and "0.3 s" in err.value.reason
    assert not isinstance(err.value, http.Unreachable)


def test_a_refused_connection_is_unreachable(nobody: str) -> None:
    with pytest.raises(http.Unreachable) as err:
        http.request("GET", f"{nobody}/fhir/Patient/p1?name=x", timeout=5)
    assert err.value.kind == "unreachable" and err.value.reason == "connection refused"
    assert "name=x" not in str(err.value)  # the URL (its query may carry patient data) is not in the error


def test_a_connection_closed_without_an_answer_is_unreachable() -> None:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(1)

    def close_at_once() -> None:
        conn, _ = s.accept()
        conn.recv(1024)
        conn.close()

    t = threading.Thread(target=close_at_once, daemon=True)
    t.start()
    try:
        with pytest.raises(http.Unreachable):
            http.request("GET", f"http://127.0.0.1:{s.getsockname()[1]}/x", timeout=5)
    finally:
        t.join(5)
        s.close()


def test_the_pool_is_made_on_first_use_and_again_in_a_forked_child(monkeypatch: pytest.MonkeyPatch) -> None:
    first = http.pool()
    assert http.pool() is first
    monkeypatch.setattr(http.os, "getpid", lambda: -1)  # what a child of a fork sees: another pid
    assert http.pool() is not first


class _KeepAliveServer:
    """A raw HTTP/1.1 server on loopback whose answers follow a script, one step per request, whatever
    connection it comes on: ``"answer"`` (200, kept alive), ``"close"`` (the request read, then the connection
    closed with no answer: what a keep-alive timer firing as the request arrives does) or ``"reset"`` (the same,
    closed with a TCP reset). ``seen`` holds each request's (connection number, method, Idempotency-Key)."""

    def __init__(self, script: list[str]) -> None:
        self.script, self.seen = list(script), []
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        number = 0
        while self.script:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            number += 1
            with conn, conn.makefile("rb") as reader:  # both closed: the socket is, only with its file
                while self.script:
                    head = []
                    while (line := reader.readline()) not in (b"\r\n", b""):
                        head.append(line.decode("latin-1").strip())
                    if not head:
                        break  # the client closed this connection
                    fields = dict(h.split(": ", 1) for h in head[1:])
                    reader.read(int(fields.get("Content-Length", 0)))
                    self.seen.append((number, head[0].split(" ")[0], fields.get("Idempotency-Key")))
                    step = self.script.pop(0)
                    if step == "answer":
                        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok")
                        continue
                    if step == "reset":
                        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    break

    def close(self) -> None:
        self.script.clear()
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes the accept() a close alone would leave waiting
        self.sock.close()
        self.thread.join(5)


@pytest.fixture()
def fresh_pool(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http, "_pool", None)  # no connection kept from another test


@pytest.mark.parametrize("closing", ["close", "reset"])
@pytest.mark.parametrize(("method", "headers", "replayable"), [
    ("GET", {}, None),
    ("POST", {"Idempotency-Key": "kham-1"}, None),
    ("POST", {}, True),  # a batch of reads, as the caller says
])
def test_a_repeatable_request_lost_with_a_kept_alive_connection_is_sent_once_more(
        fresh_pool: None, closing: str, method: str, headers: dict[str, str], replayable: bool | None) -> None:
    server = _KeepAliveServer(["answer", closing, "answer"])
    try:
        assert http.request(method, f"{server.url}/a", timeout=5, headers=headers).status_code == 200
        second = http.request(method, f"{server.url}/b", timeout=5, headers=headers, replayable=replayable)
        assert second.status_code == 200 and second.content == b"ok"
        # the first two on one kept-alive connection, the one sent again on a new one, the same request
        assert [s[0] for s in server.seen] == [1, 1, 2]
        assert server.seen[1][1:] == server.seen[2][1:] == (method, headers.get("Idempotency-Key"))
    finally:
        server.close()


@pytest.mark.parametrize("closing", ["close", "reset"])
def test_a_post_that_may_not_be_repeated_is_sent_once(fresh_pool: None, closing: str) -> None:
    server = _KeepAliveServer(["answer", closing, "answer"])
    try:
        http.request("POST", f"{server.url}/a", timeout=5, body=b"{}")
        with pytest.raises(http.Unreachable):
            http.request("POST", f"{server.url}/Task/t1/$accept", timeout=5, body=b"{}")
        assert [s[0] for s in server.seen] == [1, 1]
    finally:
        server.close()


def test_a_request_lost_on_a_new_connection_is_not_sent_again(fresh_pool: None) -> None:
    """A new connection closed with no answer is the other side failing, not a kept-alive race: no retry."""
    server = _KeepAliveServer(["close", "answer"])
    try:
        with pytest.raises(http.Unreachable):
            http.request("GET", f"{server.url}/fhir/Patient/p1", timeout=5)
        assert [s[0] for s in server.seen] == [1]
    finally:
        server.close()


def test_a_repeatable_request_is_sent_again_only_once(fresh_pool: None) -> None:
    server = _KeepAliveServer(["answer", "close", "close", "answer"])
    try:
        http.request("GET", f"{server.url}/a", timeout=5)
        with pytest.raises(http.Unreachable):
            http.request("GET", f"{server.url}/b", timeout=5)
        assert [s[0] for s in server.seen] == [1, 1, 2]
    finally:
        server.close()
