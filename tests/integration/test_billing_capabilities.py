"""Billing's CapabilityStatement says what billing serves: its own ChargeItem search parameter
``invoiced`` (the portal's new-invoice page uses it), and no batch or transaction Bundles (404: nothing is
served at [base], tests/conformance/test_capability_statement.py)."""

from __future__ import annotations

import uuid

import pytest
from sen_shared.auth import issue_dev_token

from tests.support import app_client

pytestmark = pytest.mark.integration
FHIR = "application/fhir+json"


def test_the_statement_lists_invoiced_and_no_bundles(base_env, mongo_client, dev_key) -> None:
    with app_client("billing", base_env, f"sen_billing_c{uuid.uuid4().hex[:8]}", mongo_client) as (client, _app):
        headers = {"Authorization": f"Bearer {issue_dev_token(dev_key, 'cashier', facility='org-a')}",
                   "Accept": FHIR, "Content-Type": FHIR}
        r = client.get("/fhir/metadata", headers=headers)
        assert r.status_code == 200, r.text
        rest = r.json()["rest"][0]
        charge = next(e for e in rest["resource"] if e["type"] == "ChargeItem")
        assert "invoiced" in {p["name"] for p in charge["searchParam"]}
        assert not {"batch", "transaction"} & {i["code"] for i in rest["interaction"]}
        bundle = {"resourceType": "Bundle", "type": "batch", "entry": []}
        r = client.post("/fhir", json=bundle, headers=headers)
        assert r.status_code == 404 and "allow" not in r.headers, r.text  # as the statement says
        assert "no batch or transaction Bundles" in r.json()["issue"][0]["diagnostics"], r.text
