"""Every OpenAPI spec, fuzzed by schemathesis against its real app (real FerretDB and RabbitMQ
behind it): no input a client can send yields a 5xx, responses keep to the spec's media types, and every one
carries X-Content-Type-Options: nosniff and a Content-Security-Policy."""

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


def _check(case, client, headers):
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


ehr = schemathesis.openapi.from_dict(load_spec("ehr.yaml"))
portal = schemathesis.openapi.from_dict(load_spec("portal.yaml"))
teleconsult = schemathesis.openapi.from_dict(load_spec("teleconsult.yaml"))
billing = schemathesis.openapi.from_dict(load_spec("billing.yaml"))


@ehr.parametrize()
@SETTINGS
def test_ehr_never_fails_on_client_input(case, apps, admin):
    _check(case, apps["ehr"], admin)


@portal.parametrize()
@SETTINGS
def test_portal_never_fails_on_client_input(case, apps, admin):
    _check(case, apps["portal"], admin)


@teleconsult.parametrize()
@SETTINGS
def test_teleconsult_never_fails_on_client_input(case, apps, admin):
    _check(case, apps["teleconsult"], admin)


@billing.parametrize()
@SETTINGS
def test_billing_never_fails_on_client_input(case, apps, admin):
    _check(case, apps["billing"], admin)
