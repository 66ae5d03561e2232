"""The portal's one request to a back-end (web/backend.py ``call``) against a real local HTTP server:
the query and JSON body arrive as sent (Vietnamese intact), 2xx answers read whole, 4xx/5xx become
BackendError with the service's own detail, a refused connection is ``down`` and a slow answer
``slow``."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import parse_qs, urlsplit

import pytest
from flask import Flask, session
from sen_portal import caches
from sen_portal.web import backend
from sen_portal.web.backend import BackendError, call

SEEN: list[dict] = []
RELEASE = threading.Event()  # set when the test's server stops: /slow answers then


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _answer(self, status: int, body: dict, ctype: str = "application/json") -> None:
        data = json.dumps(body, ensure_ascii=False).encode()
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _route(self) -> None:
        url = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        SEEN.append({"method": self.command, "path": url.path, "query": parse_qs(url.query),
                     "body": self.rfile.read(length) if length else b"", "headers": dict(self.headers)})
        if url.path == "/ok":
            self._answer(200, {"xin chào": "Nguyễn Thị Bích"})
        elif url.path == "/gone":
            self._answer(404, {"resourceType": "OperationOutcome", "issue": [{"diagnostics": "không có"}]},
                         "application/fhir+json")
        elif url.path == "/conflict":
            self._answer(409, {"title": "Conflict", "detail": "hóa đơn đã thanh toán"}, "application/problem+json")
        elif url.path == "/broken":
            self._answer(503, {"detail": "down for a moment"})
        elif url.path == "/gateway":
            self._answer(504, {"detail": "upstream slow"})
        elif url.path == "/slow":
            RELEASE.wait(60)  # no answer while the test runs
            self._answer(200, {})

    do_GET = do_POST = do_PUT = _route

    def log_message(self, *args) -> None:
        pass


@pytest.fixture()
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    RELEASE.clear()
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    RELEASE.set()
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture()
def app(server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from tests.support import free_port, seed_dev_key

    seed_dev_key(tmp_path / "dev.pem")  # the process's test key, not a new RSA key each test
    cfg = SimpleNamespace(ehr_url=server, teleconsult_url=server, billing_url=f"http://127.0.0.1:{free_port()}",
                          http_timeout=5.0, dev_key_path=str(tmp_path / "dev.pem"), jwt_issuer="sen-dev",
                          jwt_audience="sen")
    monkeypatch.setattr(backend, "settings", lambda: cfg)
    caches.forget_all()  # tokens of this test's key
    SEEN.clear()
    flask_app = Flask("t")
    flask_app.secret_key = "k"
    with flask_app.test_request_context("/"):
        session["user"] = {"username": "thu-ngan", "role": "cashier", "name": "Thu Ngân", "facility": "tyt-my-hiep"}
        yield


def test_a_get_with_its_query_and_a_post_with_its_json_arrive_as_sent(app) -> None:
    r = call("ehr", "GET", "/ok", params={"name": "nguyễn", "_count": "5"})
    assert r.status_code == 200 and r.json() == {"xin chào": "Nguyễn Thị Bích"}
    assert SEEN[-1]["query"] == {"name": ["nguyễn"], "_count": ["5"]}
    assert SEEN[-1]["headers"]["Authorization"].startswith("Bearer ")
    call("ehr", "GET", "/ok", params=[("status", "requested"), ("status", "accepted")])
    assert SEEN[-1]["query"] == {"status": ["requested", "accepted"]}
    call("teleconsult", "POST", "/ok", json={"note": "Hội chẩn tim mạch"}, idempotent=True)
    sent = SEEN[-1]
    assert json.loads(sent["body"]) == {"note": "Hội chẩn tim mạch"}
    assert sent["headers"]["Content-Type"] == "application/json" and sent["headers"]["Idempotency-Key"]


def test_errors_carry_the_services_detail(app) -> None:
    with pytest.raises(BackendError) as gone:
        call("ehr", "GET", "/gone")
    assert (gone.value.kind, gone.value.status, gone.value.detail) == ("refused", 404, "không có")
    with pytest.raises(BackendError) as conflict:
        call("ehr", "GET", "/conflict")
    assert (conflict.value.kind, conflict.value.status, conflict.value.detail) == ("refused", 409,
                                                                                 "hóa đơn đã thanh toán")
    with pytest.raises(BackendError) as broken:
        call("ehr", "GET", "/broken")
    assert (broken.value.kind, broken.value.status) == ("failed", 503)
    with pytest.raises(BackendError) as gateway:
        call("ehr", "GET", "/gateway")
    assert gateway.value.kind == "slow"


@pytest.mark.parametrize("smuggled", ["pay-1?x=1", "pay-1#x", "..", "../fhir/Invoice/inv-1/$cancel?", "a/./b",
                                      "pay\n1", "pay\x001", ""])
def test_an_id_from_a_form_or_the_address_that_would_change_the_path_asks_nothing(app, smuggled) -> None:
    """A refund form's payment (a hidden field the client sends) went into billing's path as it was:
    ``../fhir/Invoice/inv-1/$cancel?`` sent the refund's body to another operation with the cashier's token,
    ``?``/``#`` cut the path. Such a path is no record (refused 404) and nothing is sent."""
    with pytest.raises(BackendError) as err:
        call("ehr", "POST", f"/payments/{smuggled}/refund", json={"reason": "x"})
    assert (err.value.kind, err.value.status) == ("refused", 404)
    assert SEEN == []
    assert call("ehr", "GET", "/ok").status_code == 200  # an ordinary path goes
    assert backend._PATH.fullmatch("/payments/casso:FT 24.1/refund")  # a provider's id: a colon, a blank, dots


def test_a_refused_connection_is_down_and_a_slow_answer_slow(app) -> None:
    with pytest.raises(BackendError) as down:
        call("billing", "GET", "/payments/invoices/x")  # nothing listens there
    assert (down.value.kind, down.value.service) == ("down", "billing")
    backend.settings().http_timeout = 0.5  # this test's calls only (the others keep 5 s: a loaded machine is not slow)
    with pytest.raises(BackendError) as slow:
        call("ehr", "GET", "/slow")  # no answer until the test is over
    assert (slow.value.kind, slow.value.service) == ("slow", "ehr")


def test_a_demo_users_kept_token_is_signed_by_the_key_of_the_app_asking(app, tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Two configurations in one process (two apps of a test run): each gets a token its own key
    signed, never the other's kept one (the answer was a 401 from every service)."""
    from sen_shared.auth import TokenVerifier

    first = backend.user_token()
    assert backend.user_token() == first  # kept
    other = SimpleNamespace(**{**vars(backend.settings()), "dev_key_path": str(tmp_path / "other.pem")})
    monkeypatch.setattr(backend, "settings", lambda: other)
    second = backend.user_token()
    assert second != first
    assert TokenVerifier(issuer="sen-dev", audience="sen", dev_key_path=tmp_path / "other.pem").verify(second)
    with pytest.raises(Exception):  # noqa: B017 - whichever error the verifier raises for a foreign signature
        TokenVerifier(issuer="sen-dev", audience="sen", dev_key_path=tmp_path / "other.pem").verify(first)
