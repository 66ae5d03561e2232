"""A shift belongs to a facility (its drawer, its bank account, its daily report): an account naming none (the
province's admin) opens none through billing's API (``POST /payments/shifts``), on the real FerretDB. Before, the
admin's open made a shift of no facility: no transfer to any account was ever expected on it, no daily report
named it, and the drawer it counted was no facility's."""

from __future__ import annotations

import uuid

import pytest
from sen_shared.auth import issue_dev_token

from tests.support import app_client

pytestmark = pytest.mark.integration


def _headers(dev_key, role: str, **claims: str) -> dict[str, str]:  # noqa: ANN001 - the test key's path
    token = issue_dev_token(dev_key, role, sub=f"{role}-{uuid.uuid4().hex[:6]}", **claims)
    return {"Authorization": f"Bearer {token}", "Accept": "application/json"}


def test_an_account_of_no_facility_opens_no_shift(base_env, mongo_client, dev_key) -> None:
    name = f"sen_billing_sf{uuid.uuid4().hex[:8]}"
    with app_client("billing", base_env, name, mongo_client) as (client, _app):
        for headers in (_headers(dev_key, "admin"), _headers(dev_key, "cashier")):
            r = client.post("/payments/shifts", json={"openingCash": 100_000}, headers=headers)
            assert r.status_code == 403, r.text
            assert r.headers["content-type"].startswith("application/problem+json")
            problem = r.json()
            assert problem["status"] == 403
            assert "shift belongs to a facility" in problem["detail"] and "names none" in problem["detail"], problem
            assert client.get("/payments/shifts/current", headers=headers).status_code == 404
        assert mongo_client[name]["shifts"].count_documents({}) == 0
        # an admin of a facility, and its cashier, open theirs
        for headers in (_headers(dev_key, "admin", facility="org-a"), _headers(dev_key, "cashier", facility="org-a")):
            r = client.post("/payments/shifts", json={"openingCash": 0}, headers=headers)
            assert r.status_code == 201, r.text
            assert r.json()["facility"] == "org-a"
