"""A shift closed with a gap between what was counted and what was expected needs a note, on the
real FerretDB through billing's API (``POST /payments/shifts/current/close``): without one it is a
422 problem (RFC 9457) naming the difference, and the shift stays open; with one it closes and keeps
the note; counted as expected, no note is needed."""

from __future__ import annotations

import uuid

import pytest
from sen_shared.auth import issue_dev_token

from tests.support import app_client

pytestmark = pytest.mark.integration


def _me(dev_key) -> dict[str, str]:
    token = issue_dev_token(dev_key, "cashier", sub=f"thu-ngan-{uuid.uuid4().hex[:6]}", facility="org-a")
    return {"Authorization": f"Bearer {token}", "Accept": "application/json"}


def test_a_gap_needs_a_note_and_an_even_count_does_not(base_env, mongo_client, dev_key) -> None:
    name = f"sen_billing_sn{uuid.uuid4().hex[:8]}"
    with app_client("billing", base_env, name, mongo_client) as (client, _app):
        me = _me(dev_key)
        assert client.post("/payments/shifts", json={"openingCash": 500_000}, headers=me).status_code == 201
        for note in (None, "", "   "):
            body = {"countedCash": 520_000, "countedTransfers": 0, **({"note": note} if note is not None else {})}
            r = client.post("/payments/shifts/current/close", json=body, headers=me)
            assert r.status_code == 422, r.text
            assert r.headers["content-type"].startswith("application/problem+json")
            problem = r.json()
            assert problem["difference"] == {"cash": 20_000, "transfers": 0}
            assert problem["detail"].startswith("the counted totals differ from the expected ones (cash +20000")
        assert client.get("/payments/shifts/current", headers=me).status_code == 200  # still open
        r = client.post("/payments/shifts/current/close", headers=me,
                        json={"countedCash": 520_000, "countedTransfers": 0, "note": " thừa 20.000 của ca trước "})
        assert r.status_code == 200, r.text
        closed = r.json()
        assert closed["difference"] == {"cash": 20_000, "transfers": 0} and closed["note"] == "thừa 20.000 của ca trước"
        # counted as expected: no note needed
        assert client.post("/payments/shifts", json={"openingCash": 300_000}, headers=me).status_code == 201
        r = client.post("/payments/shifts/current/close", json={"countedCash": 300_000, "countedTransfers": 0},
                        headers=me)
        assert r.status_code == 200 and r.json()["note"] == "", r.text


def test_the_daily_csv_names_the_cashier_and_when_their_shift_opened(base_env, mongo_client, dev_key) -> None:
    """The report's ``cashier_name`` (the name the cashier's token gave when the shift opened) and
    ``shift_opened_at`` beside the token's subject and the shift's id, on each cash row and refund."""
    import csv
    import io

    from tests.billing_support import make_invoice

    name = f"sen_billing_sn{uuid.uuid4().hex[:8]}"
    with app_client("billing", base_env, name, mongo_client) as (client, app):
        sub = f"portal-cashier-{uuid.uuid4().hex[:4]}"
        token = issue_dev_token(dev_key, "cashier", sub=sub, facility="org-a", name="Lê Thị Thu")
        me = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
        opened = client.post("/payments/shifts", json={"openingCash": 0}, headers=me)
        assert opened.status_code == 201 and opened.json()["cashierName"] == "Lê Thị Thu", opened.text
        db = mongo_client[name]
        iid, _code = make_invoice(db, 100_000, facility="org-a")
        cash = client.post("/payments/cash", json={"invoice": iid, "amount": 130_000, "transactionId": "t-1"},
                           headers=me)
        assert cash.status_code == 201, cash.text
        refund = client.post(f"/payments/{cash.json()['id']}/refund", json={"reason": "tiền thừa", "method": "cash"},
                             headers=me)
        assert refund.status_code == 201, refund.text
        r = client.get("/payments/reports/daily.csv", headers={**me, "Accept": "text/csv"})
        assert r.status_code == 200, r.text
        rows = [row for row in csv.DictReader(io.StringIO(r.text)) if row["kind"] in ("payment", "refund")]
        assert [row["kind"] for row in rows] == ["payment", "refund"]
        for row in rows:
            assert row["cashier"] == sub and row["cashier_name"] == "Lê Thị Thu"
            assert row["shift"] == opened.json()["id"] and row["shift_opened_at"] == opened.json()["openedAt"]


def test_the_invoice_summary_lists_its_refunds_with_how_why_and_who(base_env, mongo_client, dev_key) -> None:
    """``GET /payments/invoices/{id}``'s ``refunds``: each refund given on the invoice's payments, with
    when, how much, how, why and the cashier's name (the invoice page lists them)."""
    from tests.billing_support import make_invoice

    name = f"sen_billing_sn{uuid.uuid4().hex[:8]}"
    with app_client("billing", base_env, name, mongo_client) as (client, _app):
        token = issue_dev_token(dev_key, "cashier", sub="portal-cashier", facility="org-a", name="Lê Thị Thu")
        me = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
        assert client.post("/payments/shifts", json={"openingCash": 0}, headers=me).status_code == 201
        iid, _code = make_invoice(mongo_client[name], 100_000, facility="org-a")
        assert client.get(f"/payments/invoices/{iid}", headers=me).json()["refunds"] == []
        cash = client.post("/payments/cash", json={"invoice": iid, "amount": 130_000, "transactionId": "t-2"},
                           headers=me)
        assert cash.status_code == 201, cash.text
        r = client.post(f"/payments/{cash.json()['id']}/refund", json={"reason": "Trả lại tiền thừa", "method": "cash"},
                        headers=me)
        assert r.status_code == 201, r.text
        [refund] = client.get(f"/payments/invoices/{iid}", headers=me).json()["refunds"]
        assert (refund["payment"], refund["amount"], refund["channel"], refund["reason"], refund["cashierName"]) == (
            cash.json()["id"], 30_000, "cash", "Trả lại tiền thừa", "Lê Thị Thu")
        assert refund["at"].endswith("+07:00")
