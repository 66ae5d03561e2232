"""The shared web layer on a real service app, against the real FerretDB and RabbitMQ:
health, readiness, metrics, authentication (401) and roles (403), problem details,
body limits and correlation ids."""

from __future__ import annotations

import json

import pytest
from sen_shared.auth import issue_dev_token

from tests.support import app_client

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def portal(base_env, run_id, mongo_client):
    with app_client("portal", base_env, f"sen_t{run_id}_portal_web", mongo_client) as (client, _app):
        yield client


@pytest.fixture(scope="module")
def token(dev_key):
    def make(role: str, **claims) -> dict[str, str]:
        return {"Authorization": f"Bearer {issue_dev_token(dev_key, role, **claims)}"}
    return make


def test_healthz_and_readyz(portal):
    assert portal.get("/healthz").json() == {"status": "ok", "service": "portal"}
    r = portal.get("/readyz")
    assert r.status_code == 200, r.text
    assert r.json()["checks"] == {"mongodb": "ok", "broker": "ok"}


def test_metrics_count_requests(portal):
    portal.get("/healthz")
    r = portal.get("/metrics")
    assert r.status_code == 200
    assert 'sen_http_requests_total{method="GET",service="portal",status="200"}' in r.text


def test_no_token_is_401_problem(portal):
    r = portal.get("/api/session")
    assert r.status_code == 401
    assert r.headers["content-type"].startswith("application/problem+json")
    body = r.json()
    assert body["status"] == 401 and "bearer token" in body["detail"]
    assert r.headers.get("www-authenticate", "").startswith("Bearer")


@pytest.mark.parametrize("header", ["Bearer nonsense", "Basic dXNlcjpwYXNz", "Bearer "])
def test_bad_token_is_401(portal, header):
    r = portal.get("/api/session", headers={"Authorization": header})
    assert r.status_code == 401, r.text


def test_expired_token_is_401(portal, dev_key):
    tok = issue_dev_token(dev_key, "admin", ttl_seconds=-120)
    assert portal.get("/api/session", headers={"Authorization": f"Bearer {tok}"}).status_code == 401


def test_wrong_role_is_403_and_right_role_passes(portal, token):
    r = portal.get("/api/reports/events", headers=token("cashier"))
    assert r.status_code == 403
    assert "health-dept" in r.json()["detail"]
    assert portal.get("/api/reports/events", headers=token("health-dept")).status_code == 200
    assert portal.get("/api/reports/events", headers=token("admin")).status_code == 200
    assert portal.post("/admin/indexes", headers=token("doctor")).status_code == 403
    r = portal.post("/admin/indexes", headers=token("admin"))
    assert r.status_code == 200 and r.json()["created"] >= 0


def test_session_reports_the_caller(portal, token):
    r = portal.get("/api/session", headers=token("clinic", facility="tyt-my-hiep"))
    assert r.status_code == 200
    assert r.json()["roles"] == ["clinic"] and r.json()["facility"] == "tyt-my-hiep"


def test_bad_query_value_is_400_problem(portal, token):
    r = portal.get("/api/reports/events?day=2026-02-30", headers=token("health-dept"))
    assert r.status_code == 400
    assert "YYYY-MM-DD" in r.json()["detail"]


def test_unknown_path_and_method(portal):
    assert portal.get("/no/such/thing").status_code == 404
    r = portal.delete("/healthz")
    assert r.status_code == 405
    assert r.headers["content-type"].startswith("application/problem+json")


def test_oversized_body_is_413_before_anything_else(portal, token):
    r = portal.post("/admin/indexes", content=b"{" + b" " * 2_100_000 + b"}", headers=token("admin"))
    assert r.status_code == 413
    assert "larger than" in r.json()["detail"]


def test_a_path_with_control_characters_is_400(portal):
    for bad in ("/healthz%01", "/healthz%7F", "/a%1Fb"):
        r = portal.get(bad)
        assert r.status_code == 400 and "control characters" in r.json()["detail"], bad
    assert portal.get("/healthz").status_code == 200


def test_a_path_with_leading_slashes_is_the_same_path(portal, token):
    """``//healthz`` is ``/healthz`` (as werkzeug's router and nginx read it), not a 500: connexion's router
    matched no operation for it while Flask's ran the handler (found by hand probes beside tools/fuzz)."""
    r = portal.get("http://testserver//healthz")  # an absolute URL: the client keeps the path's slashes
    assert r.status_code == 200 and r.json()["status"] == "ok", r.text
    r = portal.get("http://testserver///api/reports/events?day=2026-02-30", headers=token("health-dept"))
    assert r.status_code == 400 and "YYYY-MM-DD" in r.json()["detail"], r.text
    r = portal.get("http://testserver//no/such/thing")
    assert r.status_code == 404 and r.headers["content-type"].startswith("application/problem+json")


def test_correlation_id_is_echoed_or_made(portal):
    r = portal.get("/healthz", headers={"X-Correlation-ID": "abc-123"})
    assert r.headers["x-correlation-id"] == "abc-123"
    made = portal.get("/healthz").headers["x-correlation-id"]
    assert len(made) == 32
    bad = portal.get("/healthz", headers={"X-Correlation-ID": "<script>"}).headers["x-correlation-id"]
    assert bad != "<script>"


def test_home_page_is_vietnamese_first(portal):
    r = portal.get("/")
    assert r.status_code == 200
    # the portal's pages (sen_portal.web): signed out, the home page is the Vietnamese sign-in
    assert "Đăng nhập" in r.text and 'lang="vi"' in r.text and "English" in r.text


def test_problem_bodies_keep_vietnamese_readable(portal, token):
    r = portal.get("/api/reports/events?day=x", headers=token("health-dept"))
    assert "\\u" not in r.text
    json.loads(r.text)
