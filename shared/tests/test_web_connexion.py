"""connexion, compiled once: the parameter validator and the bearer check give connexion's answers."""

from __future__ import annotations

import pytest
from connexion.validators import ParameterValidator
from sen_shared.web import BearerHandler, CompiledParameterValidator

PARAMS = [
    {"name": "id", "in": "path", "required": True, "schema": {"type": "string", "pattern": "^[A-Za-z0-9.-]{1,64}$"}},
    {"name": "_count", "in": "query", "schema": {"type": "integer", "minimum": 0, "maximum": 1000}},
    {"name": "when", "in": "query", "schema": {"type": "string", "format": "date"}},
    {"name": "x", "in": "query", "required": True, "schema": {"type": "string", "nullable": True}},
]
VALUES = ["abc-1", "bad id!", "a" * 65, 5, -1, 5000, "2024-02-30", "2024-02-03", None, ""]


@pytest.mark.parametrize("param", PARAMS, ids=[p["name"] for p in PARAMS])
def test_same_answers_as_connexion(param) -> None:
    for value in VALUES:
        for _ in range(2):  # the second time from the compiled validator
            assert CompiledParameterValidator.validate_parameter(param["in"], value, param) == \
                ParameterValidator.validate_parameter(param["in"], value, param), value


def test_each_parameter_is_compiled_once() -> None:
    CompiledParameterValidator._compiled.clear()
    param = {"name": "id", "in": "path", "schema": {"type": "string", "maxLength": 3}}
    for value in ["a", "b", "abcd"]:
        CompiledParameterValidator.validate_parameter("path", value, param)
    assert len(CompiledParameterValidator._compiled) == 1
    other = {"name": "id", "in": "path", "schema": {"type": "string", "maxLength": 1}}
    assert CompiledParameterValidator.validate_parameter("path", "ab", other) is not None
    assert CompiledParameterValidator.validate_parameter("path", "ab", param) is None


def test_bearer_check_inspects_our_function_once() -> None:
    def info(token, required_scopes=None):
        return {"sub": token}

    BearerHandler._accepts_kwarg.cache_clear()
    assert BearerHandler._accepts_kwarg(info, "required_scopes") is True
    assert BearerHandler._accepts_kwarg(info, "request") is False
    assert BearerHandler._accepts_kwarg(info, "required_scopes") is True
    assert BearerHandler._accepts_kwarg.cache_info().hits == 1


# --------------------------------------------------------------------------- the bridge to Flask

def _bridge(flask_app):
    from a2wsgi import WSGIMiddleware
    from sen_shared.web import BufferedWSGIMiddleware

    plain = WSGIMiddleware(flask_app.wsgi_app)
    bridge = BufferedWSGIMiddleware(flask_app.wsgi_app)
    bridge.executor = plain.executor
    return bridge


def _flask():
    import flask

    app = flask.Flask("bridge-test")

    @app.get("/small")
    def small():
        return flask.jsonify(tên="Nguyễn Văn An", n=1), 201, {"X-Test": "1"}

    @app.get("/chunks")
    def chunks():
        return flask.Response((f"{i:04d}," for i in range(500)), mimetype="text/plain")

    @app.post("/echo")
    def echo():
        return flask.request.get_data()

    return app


def test_a_response_crosses_from_the_handler_thread_once(monkeypatch) -> None:
    from a2wsgi.wsgi import WSGIResponder
    from starlette.testclient import TestClient

    handed = []
    original = WSGIResponder.send
    monkeypatch.setattr(WSGIResponder, "send", lambda self, message: (handed.append(message), original(self, message)))
    with TestClient(_bridge(_flask())) as client:
        r = client.get("/small")
        assert r.status_code == 201 and r.headers["x-test"] == "1"
        assert r.json() == {"tên": "Nguyễn Văn An", "n": 1}
        r = client.post("/echo", content="Cao Lãnh".encode() * 1000)
        assert r.content == "Cao Lãnh".encode() * 1000
        r = client.get("/chunks")
        assert r.text == "".join(f"{i:04d}," for i in range(500))
    assert handed == []  # nothing handed over piece by piece: one crossing when Flask returned


def test_a_response_over_the_buffer_limit_streams_in_order(monkeypatch) -> None:
    from a2wsgi.wsgi import WSGIResponder
    from sen_shared import web
    from starlette.testclient import TestClient

    monkeypatch.setattr(web, "BUFFER_BYTES", 100)
    handed = []
    original = WSGIResponder.send
    monkeypatch.setattr(WSGIResponder, "send", lambda self, message: (handed.append(message), original(self, message)))
    with TestClient(_bridge(_flask())) as client:
        r = client.get("/chunks")
        assert r.status_code == 200 and r.text == "".join(f"{i:04d}," for i in range(500))
    assert handed[0]["type"] == "http.response.start" and len(handed) > 400  # from the limit on, as a2wsgi does


# --------------------------------------------------------------------------- quick handlers on the loop

def _routed(bridge, loop_threads: set[int]):
    """``bridge`` behind what connexion's routing middleware adds: the operation id (here the path)."""
    import threading

    async def app(scope, receive, send):
        if scope["type"] == "http":
            loop_threads.add(threading.get_ident())
            scope.setdefault("extensions", {})["connexion_routing"] = {"operation_id": scope["path"].strip("/")}
        await bridge(scope, receive, send)

    return app


def _thread_flask():
    import threading
    import time

    import flask

    app = flask.Flask("gate-test")

    @app.route("/quick", methods=["GET", "POST"])
    @app.route("/other", methods=["GET"])
    def where():
        time.sleep(float(flask.request.args.get("sleep", "0")))
        return {"thread": threading.get_ident()}, int(flask.request.args.get("status", "200"))

    return app


def _gated(loop_threads: set[int]):
    from sen_shared.web import InlineGate

    bridge = _bridge(_thread_flask())
    bridge.gate = InlineGate({"quick"})
    return _routed(bridge, loop_threads), bridge.gate


def test_a_quick_handler_runs_on_the_event_loop_and_the_others_in_the_pool() -> None:
    from starlette.testclient import TestClient

    loop_threads: set[int] = set()
    app, _ = _gated(loop_threads)
    with TestClient(app) as client:
        assert client.get("/quick").json()["thread"] in loop_threads
        assert client.get("/other").json()["thread"] not in loop_threads  # not marked
        assert client.post("/quick").json()["thread"] not in loop_threads  # not a GET
        # a GET with a body: reading it must not wait on the loop this thread would block
        r = client.request("GET", "/quick", content=b"{}")
        assert r.status_code == 200 and r.json()["thread"] not in loop_threads
        assert client.get("/quick").json()["thread"] in loop_threads  # none of that paused the gate


@pytest.mark.parametrize("query", ["sleep=0.05", "status=503"], ids=["slow", "failing"])
def test_a_slow_or_failing_quick_handler_sends_them_to_the_pool_for_a_while(monkeypatch, query) -> None:
    from sen_shared import web
    from starlette.testclient import TestClient

    monkeypatch.setattr(web, "INLINE_SLOW_SECONDS", 0.02)
    loop_threads: set[int] = set()
    app, gate = _gated(loop_threads)
    with TestClient(app) as client:
        assert client.get(f"/quick?{query}").json()["thread"] in loop_threads  # it ran there...
        assert client.get("/quick").json()["thread"] not in loop_threads  # ...and the next did not
        gate.paused_until = 0.0  # the pause is over
        assert client.get("/quick").json()["thread"] in loop_threads


@pytest.mark.parametrize("crowded", [True, False])
def test_a_worker_holding_too_many_connections_asks_the_client_to_reconnect(monkeypatch, crowded) -> None:
    """RequestMiddleware asks sen_shared.balance on each answer (the worker side is tested with gunicorn)."""
    from sen_shared import balance
    from sen_shared.web import RequestMiddleware
    from starlette.testclient import TestClient

    async def ok(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"0")]})
        await send({"type": "http.response.body", "body": b""})

    monkeypatch.setattr(balance, "should_close", lambda: crowded)
    app = RequestMiddleware(ok, service="t", max_body=1000, fhir_base=None)
    r = TestClient(app).get("/x")  # no lifespan: the stub app answers http only
    assert r.status_code == 200
    assert (r.headers.get("connection") == "close") is crowded


def test_the_balance_table_sees_only_live_workers() -> None:
    from sen_shared.balance import EMPTY, Table

    t = Table(4)
    assert t.others_min(0) is None  # alone
    t.set(0, 9)
    t.set(2, 3)
    assert t.others_min(0) == 3 and t.others_min(2) == 9
    t.set(2, EMPTY)  # that worker died
    assert t.others_min(0) is None


def test_requests_share_one_null_session_that_refuses_writes() -> None:
    import flask
    from sen_shared.web import NoSessions

    app = flask.Flask("sessions-test")
    app.session_interface = NoSessions()
    seen = []

    @app.get("/")
    def view():
        seen.append(flask.session._get_current_object())  # the object behind the proxy
        try:
            flask.session["x"] = 1
        except RuntimeError:
            return "refused"
        return "stored"

    with app.test_client() as c:
        assert c.get("/").text == "refused" and c.get("/").text == "refused"
        assert "set-cookie" not in {k.lower() for k in c.get("/").headers.keys()}
    assert seen[0] is seen[1]
