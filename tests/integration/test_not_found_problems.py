"""A path no endpoint serves is a 404 problem titled "Not Found" (RFC 9457: an ``about:blank`` problem's title
is the status's phrase) whose detail says where to go; it was titled "Error". ``/`` of an API service, opened by
someone following a port number, names its FHIR CapabilityStatement, its OpenAPI document and the portal, and
each of them answers. Paths under the FHIR base keep answering OperationOutcome."""

from __future__ import annotations

import logging
import uuid

import pytest

from tests.support import admin_headers, app_client

pytestmark = pytest.mark.integration

API_SERVICES = ("ehr", "teleconsult", "billing")
PORTAL = "http://127.0.0.1:18080/"


def _db(service: str) -> str:
    return f"sen_404{uuid.uuid4().hex[:8]}_{service[:2]}"


@pytest.mark.parametrize("service", API_SERVICES)
def test_the_root_of_an_api_service_points_to_its_metadata_its_openapi_and_the_portal(service, base_env, mongo_client,
                                                                                    dev_key) -> None:
    with app_client(service, {**base_env, "SEN_PORTAL_URL": PORTAL}, _db(service), mongo_client) as (client, _):
        for headers in ({}, {"Accept": "application/json"}, {"Accept": "text/html"}):
            r = client.get("/", headers=headers)
            assert r.status_code == 404 and r.headers["content-type"] == "application/problem+json", r.text
            problem = r.json()
            assert problem["title"] == "Not Found" and problem["status"] == 404 and problem["instance"] == "/"
            assert problem["type"] == "about:blank"
        detail = problem["detail"]
        assert f"Sen's {service} service" in detail
        for named in ("/fhir/metadata", "/openapi.json", PORTAL):
            assert named in detail, detail
        # what it names answers (the CapabilityStatement with a token, as every FHIR read)
        assert client.get("/fhir/metadata", headers=admin_headers(dev_key)).json()["resourceType"] == \
            "CapabilityStatement"
        assert client.get("/openapi.json").json()["info"]["title"] == f"Sen {service} API"
    # without a portal address configured, the portal is still named
    with app_client(service, base_env, _db(service), mongo_client) as (client, _):
        assert "people use Sen in the portal (Sen's web pages)" in client.get("/").json()["detail"]


@pytest.mark.parametrize("service", (*API_SERVICES, "portal"))
def test_an_unknown_path_is_a_not_found_problem_naming_the_openapi_document(service, base_env, mongo_client,
                                                                           dev_key) -> None:
    with app_client(service, base_env, _db(service), mongo_client) as (client, _):
        for path in ("/nope", "/api/nope", "/payments/nope/deeper"):
            r = client.get(path, headers={"Accept": "application/json"})
            assert r.status_code == 404 and r.headers["content-type"] == "application/problem+json", r.text
            problem = r.json()
            assert problem["title"] == "Not Found", problem
            assert problem["detail"] == (f"no such endpoint: {path} (the {service} service's endpoints are "
                                         f"described at /openapi.json)")
        assert client.get("/openapi.json").status_code == 200
        # a method a path does not take: the status's phrase too
        r = client.post("/healthz", headers={"Accept": "application/json"})
        assert r.status_code == 405 and r.json()["title"] == "Method Not Allowed", r.text


@pytest.mark.parametrize("service", API_SERVICES)
def test_fhir_paths_still_answer_operation_outcomes(service, base_env, mongo_client, dev_key) -> None:
    with app_client(service, base_env, _db(service), mongo_client) as (client, _):
        r = client.get("/fhir/Nope", headers=admin_headers(dev_key))
        assert r.status_code == 404 and r.json()["resourceType"] == "OperationOutcome", r.text
        r = client.get("/fhir/", headers=admin_headers(dev_key))
        assert r.json()["resourceType"] == "OperationOutcome", r.text



@pytest.mark.parametrize("service", API_SERVICES)
def test_a_service_starts_without_asking_for_a_swagger_ui_nobody_serves(service, base_env, mongo_client) -> None:
    """No Swagger UI is installed and none is served: ``/ui`` is the not-found problem, and the start logs no
    warning telling the operator to install one (connexion's, at every start of every worker, before). The
    records are caught on connexion's own logger: a Sen app's logging set-up replaces the root's handlers."""
    caught: list[logging.LogRecord] = []
    catcher = logging.Handler(logging.WARNING)
    catcher.emit = caught.append
    logging.getLogger("connexion").addHandler(catcher)
    try:
        with app_client(service, base_env, _db(service), mongo_client) as (client, _):
            r = client.get("/ui/")
            assert r.status_code == 404 and r.headers["content-type"] == "application/problem+json", r.text
            assert client.get("/openapi.json").status_code == 200
    finally:
        logging.getLogger("connexion").removeHandler(catcher)
    assert not [rec for rec in caught if "swagger" in rec.getMessage().lower()], [r.getMessage() for r in caught]
