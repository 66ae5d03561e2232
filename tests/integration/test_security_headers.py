"""The security headers of every service's answers (sen_shared.web.SECURITY_HEADERS), one app each on the real
FerretDB and RabbitMQ: X-Content-Type-Options, a Content-Security-Policy and Cache-Control ``private, no-cache``
unless the route set its own (billing's receipt, the portal's pages); a FHIR read's ETag and its conditional
read (304) keep working under them."""

from __future__ import annotations

import pytest
from sen_shared.auth import issue_dev_token

from tests.billing_support import billing_app
from tests.integration.test_billing_receipt_print import _paid_with_change_given_back
from tests.support import admin_headers, app_client

pytestmark = pytest.mark.integration

API_CSP = "default-src 'none'; frame-ancestors 'none'"


def _api_headers(r) -> None:
    assert r.headers.get_list("X-Content-Type-Options") == ["nosniff"], r.headers
    assert r.headers.get_list("Content-Security-Policy") == [API_CSP], r.headers
    assert r.headers.get_list("Cache-Control") == ["private, no-cache"], r.headers
    assert "Server" not in r.headers


def test_ehr_a_read_carries_them_and_its_conditional_read_still_answers_304(base_env, run_id, mongo_client,
                                                                           dev_key) -> None:
    with app_client("ehr", base_env, f"sen_t{run_id}_sechdr_ehr", mongo_client) as (client, _app):
        h = admin_headers(dev_key)
        r = client.post("/fhir/Patient", headers=h, json={"resourceType": "Patient",
                                                          "name": [{"family": "Lý", "given": ["Thị", "Mai"]}]})
        assert r.status_code == 201, r.text
        _api_headers(r)
        read = client.get(f"/fhir/Patient/{r.json()['id']}", headers=h)
        assert read.status_code == 200 and read.headers["ETag"] == 'W/"1"' and read.headers["Last-Modified"]
        _api_headers(read)
        again = client.get(f"/fhir/Patient/{r.json()['id']}", headers={**h, "If-None-Match": read.headers["ETag"]})
        assert again.status_code == 304 and again.headers["ETag"] == 'W/"1"' and not again.content
        _api_headers(again)
        _api_headers(client.get("/fhir/Patient/nobody", headers=h))  # an OperationOutcome too
        _api_headers(client.get("/fhir/Patient"))  # the 401


def test_teleconsult_a_search_and_a_refusal_carry_them(base_env, run_id, mongo_client, dev_key) -> None:
    with app_client("teleconsult", base_env, f"sen_t{run_id}_sechdr_tc", mongo_client) as (client, _app):
        r = client.get("/fhir/ServiceRequest", headers=admin_headers(dev_key))
        assert r.status_code == 200, r.text
        _api_headers(r)
        _api_headers(client.get("/fhir/ServiceRequest"))
        _api_headers(client.get("/healthz"))


def test_billing_the_receipt_keeps_its_own_policy(base_env, mongo_client, monkeypatch, dev_key) -> None:
    """A receipt is printed at the cash desk: ``no-store``; its HTML loads its inline style only, its PDF gets
    no ``default-src 'none'`` (which would block the browser's PDF viewer); the JSON receipt has the defaults."""
    with billing_app(base_env, mongo_client, monkeypatch, "sechdr") as (client, _db):
        iid, _reference, h = _paid_with_change_given_back(client, dev_key, "org-a")
        _api_headers(client.get(f"/payments/receipts/{iid}", headers=h))
        page = client.get(f"/payments/receipts/{iid}/html", headers=h)
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert page.headers.get_list("Content-Security-Policy") == [
            "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'"]
        assert page.headers.get_list("Cache-Control") == ["no-store"]
        assert page.headers.get_list("X-Content-Type-Options") == ["nosniff"]
        pdf = client.get(f"/payments/receipts/{iid}/pdf", headers=h)
        assert pdf.status_code == 200 and pdf.headers["content-type"] == "application/pdf"
        assert pdf.headers.get_list("Content-Security-Policy") == ["frame-ancestors 'none'"]
        assert pdf.headers.get_list("Cache-Control") == ["no-store"]


def test_portal_its_api_gets_them_and_its_pages_keep_their_own(base_env, run_id, mongo_client, dev_key) -> None:
    with app_client("portal", base_env, f"sen_t{run_id}_sechdr_portal", mongo_client) as (client, _app):
        _api_headers(client.get("/api/session"))  # the 401 problem
        token = issue_dev_token(dev_key, "health-dept")
        _api_headers(client.get("/api/reports/events", headers={"Authorization": f"Bearer {token}"}))
        page = client.get("/login")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        [csp] = page.headers.get_list("Content-Security-Policy")
        assert csp.startswith("default-src 'self'")  # the pages' own, not the API's
        assert page.headers.get_list("Cache-Control") == ["no-store"]
        assert page.headers.get_list("X-Content-Type-Options") == ["nosniff"]
