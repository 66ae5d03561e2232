"""A Parameters resource whose ``parameter`` is no list of objects (``5``, ``true``, ``"x"``, ``[5]``) is a 400
OperationOutcome naming ``Parameters.parameter``, never a 500: teleconsult's ``$submit``, ``$validate`` of every
service (the shared FHIR server) and billing's invoice ``$cancel`` iterated it (TypeError), as did a minutes'
participant whose ``part`` is no list in ``$complete``. Found by the session 21 fuzz round (hand probes: the
fuzz's bodies give ``parameter`` and ``part`` as lists). One check: ``sen_shared.fhir.parameters``."""

from __future__ import annotations

import json

import pytest
from sen_shared.auth import issue_dev_token

from tests.billing_support import make_invoice
from tests.support import admin_headers, app_client

pytestmark = pytest.mark.integration

FJ = "application/fhir+json"
NOT_A_LIST = [5, True, "x", {"name": "reason"}, [5], [{"name": "reason", "valueString": "nhập nhầm"}, "x"]]


def _params(parameter) -> str:
    return json.dumps({"resourceType": "Parameters", "parameter": parameter})


def _refused(r, status: int = 400) -> dict:
    assert r.status_code == status, r.text
    issue = r.json()["issue"][0]
    assert r.json()["resourceType"] == "OperationOutcome" and issue["severity"] == "error", r.text
    return issue


@pytest.fixture(scope="module")
def teleconsult(base_env, run_id, mongo_client, dev_key):
    with app_client("teleconsult", base_env, f"sen_t{run_id}_tc_params", mongo_client) as (client, _app):
        yield client


@pytest.fixture(scope="module")
def billing(base_env, run_id, mongo_client):
    with app_client("billing", base_env, f"sen_t{run_id}_bi_params", mongo_client) as (client, _app):
        yield client, mongo_client[f"sen_t{run_id}_bi_params"]


@pytest.mark.parametrize("parameter", NOT_A_LIST, ids=repr)
def test_a_submission_whose_parameter_is_no_list_is_a_400(teleconsult, dev_key, parameter):
    clinic = {"Authorization": f"Bearer {issue_dev_token(dev_key, 'clinic', facility='tyt-an-binh')}",
              "Content-Type": FJ}
    issue = _refused(teleconsult.post("/fhir/ServiceRequest/$submit", content=_params(parameter), headers=clinic))
    assert issue["expression"] == ["Parameters.parameter"], issue


@pytest.mark.parametrize("parameter", NOT_A_LIST, ids=repr)
def test_validate_of_a_parameters_whose_parameter_is_no_list_is_a_400(teleconsult, dev_key, parameter):
    answer = teleconsult.post("/fhir/Task/$validate", content=_params(parameter), headers=admin_headers(dev_key))
    issue = _refused(answer)
    assert issue["expression"] == ["Parameters.parameter"], issue


@pytest.mark.parametrize("part", [5, True, 1e300])
def test_a_minutes_participant_whose_part_is_no_list_is_a_422(teleconsult, dev_key, part):
    doctor = {"Authorization": f"Bearer {issue_dev_token(dev_key, 'doctor', facility='hub', practitioner='pr-1')}",
              "Content-Type": FJ}
    body = [{"name": "start", "valueDateTime": "2025-03-14T09:00:00+07:00"},
            {"name": "end", "valueDateTime": "2025-03-14T09:30:00+07:00"},
            {"name": "site", "valueReference": {"reference": "Organization/hub"}},
            {"name": "participant", "part": part}]
    issue = _refused(teleconsult.post("/fhir/Task/t-1/$complete", content=_params(body), headers=doctor), 422)
    assert "participant" in issue["expression"][0], issue


@pytest.mark.parametrize("parameter", NOT_A_LIST, ids=repr)
def test_an_invoice_cancel_whose_parameter_is_no_list_is_a_400(billing, dev_key, parameter):
    client, db = billing
    iid, _code = make_invoice(db, 50_000, facility="org-a")
    cashier = {"Authorization": f"Bearer {issue_dev_token(dev_key, 'cashier', facility='org-a')}",
               "Content-Type": FJ}
    issue = _refused(client.post(f"/fhir/Invoice/{iid}/$cancel", content=_params(parameter), headers=cashier))
    assert issue["expression"] == ["Parameters.parameter"], issue
    assert client.get(f"/fhir/Invoice/{iid}", headers=cashier).json()["status"] == "issued"  # nothing cancelled
