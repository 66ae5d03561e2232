"""Billing's payment API answers a NUL character (U+0000) from a client with a 400 problem (RFC 9457),
never a 500: the database (FerretDB on PostgreSQL) can neither store a string holding one nor compare
against one once a collection holds documents. The spec refuses it (an id pattern for the invoice and
facility ids, no NUL in the free texts). Found by the API fuzz (tools/fuzz/api_fuzz.py)."""

from __future__ import annotations

import uuid

import pytest
from sen_shared.auth import issue_dev_token

from tests.billing_support import cash_on_a_new_invoice
from tests.support import app_client, vn_day_with_room

pytestmark = pytest.mark.integration


def _problem(r) -> dict:
    assert r.status_code == 400, r.text
    assert r.headers["content-type"].startswith("application/problem+json"), r.headers
    return r.json()


def test_nul_in_a_payment_request_is_a_400_and_nothing_is_stored(base_env, mongo_client, dev_key) -> None:
    vn_day_with_room()  # what this test pays and reads is of one day in Vietnam (the daily report's)
    name = f"sen_billing_nul{uuid.uuid4().hex[:8]}"
    with app_client("billing", base_env, name, mongo_client) as (client, _app):
        me = {"Authorization": f"Bearer {issue_dev_token(dev_key, 'cashier', facility='org-a')}",
              "Accept": "application/json"}
        admin = {"Authorization": f"Bearer {issue_dev_token(dev_key, 'admin')}", "Accept": "text/csv"}
        assert client.post("/payments/shifts", json={"openingCash": 0}, headers=me).status_code == 201
        iid, cash = cash_on_a_new_invoice(client, mongo_client[name], me, 130_000)  # a payments document
        pid = cash.json()["id"]

        _problem(client.get("/payments/reports/daily.csv?facility=org-a%00", headers=admin))
        _problem(client.post("/payments/cash", json={"invoice": f"{iid}\u0000", "amount": 1}, headers=me))
        _problem(client.post("/payments/cash", json={"invoice": iid, "amount": 1, "transactionId": "t\u0000"},
                             headers=me))
        _problem(client.post(f"/payments/{pid}/refund", json={"reason": "thừa\u0000", "method": "cash"},
                             headers=me))
        _problem(client.post(f"/payments/unmatched/{pid}/assign", json={"invoice": "x\u0000"}, headers=me))
        _problem(client.post("/payments/shifts/current/close",
                             json={"countedCash": 1, "countedTransfers": 0, "note": "thừa\u0000"}, headers=me))

        assert client.get("/payments/shifts/current", headers=me).status_code == 200  # still open
        summary = client.get(f"/payments/invoices/{iid}", headers=me).json()
        assert summary["refunds"] == [] and len(summary["payments"]) == 1
        r = client.get("/payments/reports/daily.csv?facility=org-a", headers=admin)
        assert r.status_code == 200 and pid in r.text, r.text
