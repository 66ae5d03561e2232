"""A query parameter the spec does not declare is the client's business, never an ERROR in the log.

The services run connexion with ``strict_validation=False`` (a FHIR search's parameters are the FHIR
layer's to judge), so an undeclared parameter reaches connexion's parameter decorator, which logged
one ERROR (logger ``connexion.decorators.parameter``) for it whenever the handler takes ``**kwargs``
or has an argument of that name (a path parameter's: ``?id=``, ``?type=``). The answer is the same as
before: the FHIR layer's 400 naming the parameter (or its lenient search), the handler's answer on
the JSON API; only the ERROR is gone (``sen_shared.logs.setup_logging``).
"""

from __future__ import annotations

import json
import logging

import pytest

from tests.support import admin_headers, app_client

pytestmark = pytest.mark.integration

FJ = "application/fhir+json"


@pytest.fixture(scope="module")
def ehr(base_env, run_id, mongo_client):
    with app_client("ehr", base_env, f"sen_t{run_id}_unknown_params_ehr", mongo_client) as (client, _app):
        yield client


@pytest.fixture(scope="module")
def billing(base_env, run_id, mongo_client):
    with app_client("billing", base_env, f"sen_t{run_id}_unknown_params_billing", mongo_client) as (client, _app):
        yield client


def errors(caplog) -> list[str]:
    return [f"{r.name}: {r.getMessage()}" for r in caplog.records if r.levelno >= logging.ERROR]


def test_an_unknown_parameter_on_a_fhir_search_is_its_400_or_ignored_when_lenient_and_no_error_logged(
        ehr, dev_key, caplog):
    H = admin_headers(dev_key)
    r = ehr.get("/fhir/Patient?type=person", headers=H)
    assert r.status_code == 400
    issue = r.json()["issue"][0]
    assert issue["diagnostics"] == "unknown search parameter 'type' for Patient"
    assert issue["expression"] == ["type"]

    r = ehr.get("/fhir/Patient?type=person&_count=1", headers={**H, "Prefer": "handling=lenient"})
    assert r.status_code == 200
    assert r.json()["resourceType"] == "Bundle"

    r = ehr.get("/fhir/Patient?nosuch=1", headers=H)
    assert r.status_code == 400
    assert r.json()["issue"][0]["diagnostics"] == "unknown search parameter 'nosuch' for Patient"
    assert errors(caplog) == []


def test_an_unknown_parameter_on_a_fhir_read_and_operation_is_ignored_and_no_error_logged(ehr, dev_key, caplog):
    H = admin_headers(dev_key)
    body = {"resourceType": "Patient", "name": [{"family": "Trần", "given": ["Thị", "Bình"]}], "gender": "female"}
    pid = ehr.post("/fhir/Patient", content=json.dumps(body), headers=H).json()["id"]

    r = ehr.get(f"/fhir/Patient/{pid}?id=other&typo=1", headers=H)
    assert r.status_code == 200
    assert r.json()["id"] == pid  # the path's id, never the query's

    # an operation whose handler takes **kwargs: the parameter is dropped, the call judged as before
    r = ehr.post("/fhir/Patient/$take-on?identifier=x", content=json.dumps({"resourceType": "Parameters"}),
                 headers=H)
    assert r.status_code == 403, r.text
    assert "$take-on is for clinic staff" in r.json()["issue"][0]["diagnostics"]
    assert errors(caplog) == []


def test_an_unknown_parameter_on_the_json_api_is_ignored_and_no_error_logged(billing, dev_key, caplog):
    H = admin_headers(dev_key, "application/json")
    r = billing.get("/payments/invoices/no-such-invoice?invoice_id=other&typo=1", headers=H)
    assert r.status_code == 404, r.text
    assert r.headers["content-type"].startswith("application/problem+json")

    r = billing.get("/payments/unmatched?typo=1", headers=H)
    assert r.status_code == 200
    assert "payments" in r.json()
    assert errors(caplog) == []
