"""The direct lane takes only what it can answer exactly as connexion would; the rest goes down the stack."""

from __future__ import annotations

import asyncio
import copy
import time

import flask
import pytest
from sen_shared import auth
from sen_shared.auth import TokenVerifier, issue_dev_token
from sen_shared.lane import DirectLane, lane_routes
from sen_shared.web import InlineGate, load_spec

READ = ("get", "/fhir/{type}/{id}")
VREAD = ("get", "/fhir/{type}/{id}/_history/{vid}")


@pytest.fixture()
def token(tmp_path):
    key = tmp_path / "k.pem"
    auth.configure(TokenVerifier(issuer="sen-dev", audience="sen", dev_key_path=key))
    yield issue_dev_token(key, "doctor", facility="bvdk")
    auth._verifier = None


def _spec() -> dict:
    return copy.deepcopy(load_spec("ehr.yaml"))


def _scope(path: str, token: str | None, method: str = "GET", query: bytes = b"", headers=()) -> dict:
    h = [(b"host", b"test"), *headers]
    if token is not None:
        h.append((b"authorization", f"Bearer {token}".encode()))
    return {"type": "http", "method": method, "path": path, "query_string": query, "headers": h}


class Downstream:
    """connexion's stack, as far as the lane can tell: records what it was given."""

    def __init__(self) -> None:
        self.paths: list[str] = []

    async def __call__(self, scope, receive, send) -> None:
        self.paths.append(scope["path"])
        await send({"type": "http.response.start", "status": 599, "headers": []})
        await send({"type": "http.response.body", "body": b""})


def _lane(direct, strict_query: bool = False):
    down = Downstream()
    gate = InlineGate({"read"}, {"read": direct})
    lane = DirectLane(down, _spec(), {"read": READ}, gate, flask.Flask("lane-test"), strict_query)
    return lane, down, gate


def _call(lane, scope) -> int:
    sent: list[dict] = []

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    asyncio.run(lane(scope, receive, send))
    return sent[0]["status"]


def test_routes_are_the_direct_operations_connexion_would_route_there():
    routes = lane_routes(_spec(), {"read": READ, "vread": VREAD})
    assert [(r.operation_id, r.template) for r in routes] == [("read", READ[1]), ("vread", VREAD[1])]
    read = routes[0]
    assert read.match("/fhir/Patient/abc-1.2") == {"type": "Patient", "id": "abc-1.2"}
    for path in ["/fhir/Patient/_history", "/fhir/Patient/$validate", "/fhir/Patient/a b", "/fhir/Pa1/x",
                 "/fhir/Patient/" + "a" * 65, "/fhir/Patient/x/", "/fhir/Patient", "/other/Patient/x"]:
        assert read.match(path) is None, path


@pytest.mark.parametrize("change, why", [
    (lambda s: s["paths"].update({"/fhir/{type}/latest": {"get": {"operationId": "x", "responses": {}}}}),
     "could match"),
    (lambda s: s["paths"]["/fhir/{type}/{id}"]["get"].setdefault("parameters", []).append(
        {"name": "_count", "in": "query", "schema": {"type": "integer"}}), "query"),
    (lambda s: s["components"]["parameters"]["IfNoneMatch"].update(schema={"type": "string", "maxLength": 9}),
     "header"),
    (lambda s: s["components"]["parameters"]["Id"]["schema"].update(maxLength=9), "pattern"),
    (lambda s: s["components"]["parameters"]["Id"]["schema"].pop("pattern"), "pattern"),
    (lambda s: s["components"]["parameters"].pop("Id"), "referenced"),
    (lambda s: s["paths"]["/fhir/{type}/{id}"]["get"].update(security=[]), "security"),
])
def test_an_operation_the_lane_cannot_check_exactly_stays_with_connexion(change, why, caplog):
    spec = _spec()
    change(spec)
    assert lane_routes(spec, {"read": READ}) == []
    assert why in caplog.text


def test_a_valid_read_is_answered_without_the_stack_and_the_rest_goes_down(token):
    seen = []

    async def direct(scope, type, id):  # noqa: A002
        seen.append((type, id, scope["extensions"]["connexion_context"]["token_info"]["sub"]))
        return 200, [], b"{}"

    lane, down, _ = _lane(direct)
    assert _call(lane, _scope("/fhir/Patient/p-1", token)) == 200
    assert _call(lane, _scope("/fhir/Patient/p-1", token, query=b"_elements=gender")) == 200
    assert len(seen) == 2 and seen[0][:2] == ("Patient", "p-1") and down.paths == []

    for scope in [
        _scope("/fhir/Patient/p-1", None),  # connexion answers 401
        _scope("/fhir/Patient/p-1", "not-a-token"),
        _scope("/fhir/Patient/p-1", token, headers=[(b"authorization", b"Basic eDp5")]),  # the first one counts
        _scope("/fhir/Patient/bad$id", token),  # 400
        _scope("/fhir/Patient/p-1", token, method="HEAD"),  # the Flask handler
        _scope("/fhir/Patient/p-1", token, method="DELETE"),
        _scope("/fhir/Patient/p-1", token, headers=[(b"content-length", b"3")]),  # a body
        _scope("/fhir/Patient/p-1", token, headers=[(b"transfer-encoding", b"chunked")]),
        _scope("/fhir/Patient/_history", token),  # another route
    ]:
        before = len(down.paths)
        assert _call(lane, scope) == 599
        assert len(down.paths) == before + 1, scope
    assert len(seen) == 2


def test_strict_validation_leaves_query_strings_to_connexion(token):
    async def direct(scope, type, id):  # noqa: A002
        return 200, [], b"{}"

    lane, down, _ = _lane(direct, strict_query=True)
    assert _call(lane, _scope("/fhir/Patient/p-1", token)) == 200
    assert _call(lane, _scope("/fhir/Patient/p-1", token, query=b"x=1")) == 599


def test_the_gate_times_and_pauses_only_variants_that_block_the_loop(token):
    def blocking(scope, type, id):  # noqa: A002
        return 200, [], b"{}"

    async def awaiting(scope, type, id):  # noqa: A002
        await asyncio.sleep(0.3)  # longer than the gate allows a quick handler
        return 200, [], b"{}"

    lane, down, gate = _lane(awaiting)
    assert _call(lane, _scope("/fhir/Patient/p-1", token)) == 200
    assert gate.paused_until == 0.0  # it waited, but the loop was free
    gate.paused_until = time.monotonic() + 30
    assert _call(lane, _scope("/fhir/Patient/p-1", token)) == 200  # not held back by a pause

    lane, down, gate = _lane(blocking)
    gate.paused_until = time.monotonic() + 30
    assert _call(lane, _scope("/fhir/Patient/p-1", token)) == 599  # paused: the pool's way
    gate.paused_until = 0.0
    assert _call(lane, _scope("/fhir/Patient/p-1", token)) == 200


def test_the_routes_are_made_once_the_operations_are_resolved(token):
    async def direct(scope, type, id):  # noqa: A002
        return 200, [], b"{}"

    operations: dict[str, tuple[str, str]] = {}  # what connexion's resolver fills, after the lane is made
    lane = DirectLane(Downstream(), _spec(), operations, InlineGate({"read"}, {"read": direct}),
                      flask.Flask("lane-test"), False)
    assert _call(lane, _scope("/fhir/Patient/p-1", token)) == 599  # nothing resolved yet: connexion's way
    operations["read"] = READ
    assert _call(lane, _scope("/fhir/Patient/p-1", token)) == 200
