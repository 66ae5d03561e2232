"""Every OpenAPI spec, fuzzed by schemathesis against its real app (real FerretDB and RabbitMQ
behind it): no input a client can send yields a 5xx, responses keep to the spec's media types, and every one
carries X-Content-Type-Options: nosniff and a Content-Security-Policy.

A read refused (4xx), sent byte for byte again in the same test (one operation) with nothing but reads sent
since, is not sent again (:class:`Sent`): schemathesis repeats requests (a fuzzed case equal to a coverage one,
two negative headers both replaced by the admin token on the wire), and the same refused read of the same data
gets the same answer."""

from __future__ import annotations

import os
from http.cookiejar import DefaultCookiePolicy

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.python import asgi
from sen_shared.auth import issue_dev_token
from sen_shared.web import load_spec

from tests.support import build_app

pytestmark = pytest.mark.integration
SETTINGS = settings(max_examples=int(os.environ.get("SEN_FUZZ_EXAMPLES", "30")), deadline=None,
                    suppress_health_check=list(HealthCheck), derandomize=True)


@pytest.fixture(scope="module")
def apps(base_env, run_id, mongo_client):
    """Each service's app behind one schemathesis ASGI client for the module, where ``case.call(app=...)`` made
    one per call (a requests session and its adapters, made and closed for each of some 6,500 calls). The
    client reads no proxy or netrc settings from the environment for each request (``trust_env``: an in-process
    app is reached through no network) and keeps no cookie, so every call is sent as by a new client."""
    made = {svc: build_app(svc, base_env, f"sen_t{run_id}_fuzz_{svc}") for svc in ("ehr", "portal", "teleconsult",
                                                                               "billing")}
    clients = {}
    for svc, app in made.items():
        clients[svc] = asgi.get_client(app).__enter__()  # starts the app's lifespan, as each call's client did
        clients[svc].trust_env = False
        clients[svc].cookies.set_policy(DefaultCookiePolicy(allowed_domains=[]))
    yield clients
    for svc in made:
        clients[svc].__exit__(None, None, None)
        mongo_client.drop_database(f"sen_t{run_id}_fuzz_{svc}")


@pytest.fixture(scope="module")
def admin(dev_key) -> dict[str, str]:
    return {"Authorization": f"Bearer {issue_dev_token(dev_key, 'admin')}"}


class Sent:
    """The reads one test (one operation, through all its Hypothesis examples) saw refused, as they go on the
    wire, so that a repeat is not sent again. Only a GET or HEAD is skipped, only when its first answer was a 4xx
    that passed the checks (a refusal does nothing: a 2xx read may, such as a receipt's read completing its
    invoice's settlement, or /metrics counting requests), and only when every request sent since was a GET or
    HEAD too: nothing can have changed what it reads. A read naming AuditEvent is always sent (a refusal of a
    FHIR read stores one), as is every other repeat: a write, even a refused one (a wrong $take-on number is
    counted), may change the next answer. A read that failed is not kept, so Hypothesis's replay of a failing
    example sends it again."""

    def __init__(self) -> None:
        self.refused: dict[str, int] = {}  # a refused read's wire form -> how many other requests were sent before it
        self.others = 0

    def read(self, case, headers) -> str | None:
        """``case``'s wire form (the test case id aside) when it is a read that may be skipped; ``None`` (and the
        request counted) otherwise."""
        if case.method.upper() not in ("GET", "HEAD"):
            self.others += 1
            return None
        wire = case.as_transport_kwargs(headers=headers)
        sent = {k: v for k, v in wire.pop("headers").items() if k.lower() != "x-schemathesis-testcaseid"}
        key = repr((wire, sent))
        return None if "AuditEvent" in key else key

    def repeated(self, key: str | None) -> bool:
        return key is not None and self.refused.get(key) == self.others

    def passed(self, key: str | None, status: int) -> None:
        if key is not None and 400 <= status < 500:
            self.refused[key] = self.others


@pytest.fixture
def sent() -> Sent:
    """A test's :class:`Sent`: one per test, kept through its Hypothesis examples (pytest makes a function-scoped
    fixture once per test; Hypothesis runs every example in it)."""
    return Sent()


def _check(case, client, headers, sent: Sent):
    key = sent.read(case, headers)
    if sent.repeated(key):
        return
    response = case.call(session=client, headers=headers)
    assert response.status_code < 500, (
        f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text[:300]}")
    nosniff = response.headers.get("x-content-type-options")  # every answer (sen_shared.web.SECURITY_HEADERS)
    assert (nosniff[0] if isinstance(nosniff, list) else nosniff) == "nosniff", (
        f"{case.method} {case.formatted_path} -> {response.status_code} without X-Content-Type-Options")
    assert response.headers.get("content-security-policy"), f"{case.method} {case.formatted_path}: no CSP"
    if response.status_code >= 400:
        ctype = response.headers.get("content-type", [""])
        ctype = ctype[0] if isinstance(ctype, list) else ctype
        assert ctype.startswith(("application/problem+json", "application/fhir+json")), (
            f"{case.method} {case.formatted_path} -> {response.status_code} as {ctype!r}")
    sent.passed(key, response.status_code)


ehr = schemathesis.openapi.from_dict(load_spec("ehr.yaml"))
portal = schemathesis.openapi.from_dict(load_spec("portal.yaml"))
teleconsult = schemathesis.openapi.from_dict(load_spec("teleconsult.yaml"))
billing = schemathesis.openapi.from_dict(load_spec("billing.yaml"))


@ehr.parametrize()
@SETTINGS
def test_ehr_never_fails_on_client_input(case, apps, admin, sent):
    _check(case, apps["ehr"], admin, sent)


@portal.parametrize()
@SETTINGS
def test_portal_never_fails_on_client_input(case, apps, admin, sent):
    _check(case, apps["portal"], admin, sent)


@teleconsult.parametrize()
@SETTINGS
def test_teleconsult_never_fails_on_client_input(case, apps, admin, sent):
    _check(case, apps["teleconsult"], admin, sent)


@billing.parametrize()
@SETTINGS
def test_billing_never_fails_on_client_input(case, apps, admin, sent):
    _check(case, apps["billing"], admin, sent)
