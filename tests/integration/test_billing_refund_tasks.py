"""Money to give back and the record of closed shifts, on the real FerretDB:

- ``GET /payments/refund-tasks``: a late transfer to a paid invoice (and one to a cancelled invoice)
  is listed for its facility's cashier, oldest first, with its payment, invoice, reference and
  reason; once refunded it is gone from the open ones (``state=all`` keeps it, refunded); another
  facility's cashier does not see it (naming the facility: 403); an admin sees every facility's
  or one; pages by cursor skip the refunded ones and give every open task once;
- ``GET /payments/shifts?state=closed``: the cashier's own closed shifts, newest first, each with
  the summary its close answered.
"""

from __future__ import annotations

import uuid
from datetime import date
from types import SimpleNamespace

import pytest
from sen_billing.domain import payments, reconciliation
from sen_billing.domain.webhooks import Transfer
from sen_shared.auth import issue_dev_token

from tests.billing_support import make_invoice, scratch_db
from tests.support import app_client, vn_day_with_room

pytestmark = pytest.mark.integration

CASHIER_A = SimpleNamespace(sub="thu-ngan-a", roles={"cashier"}, facility="org-a")


def pay(db, code: str, amount: int, bank_reference: str = "") -> str:
    t = Transfer(provider="standard", transaction_id=uuid.uuid4().hex[:12], amount=amount, description=f"TT {code}",
                 bank_reference=bank_reference)
    return payments.record_transfer(db, t, uuid.uuid4().hex).payment["_id"]


def _headers(dev_key, role: str = "cashier", facility: str | None = "org-a", sub: str | None = None) -> dict:
    token = issue_dev_token(dev_key, role, sub=sub or f"{role}-{uuid.uuid4().hex[:6]}", facility=facility)
    return {"Authorization": f"Bearer {token}", "Accept": "application/json"}


def test_a_late_transfer_is_listed_for_its_facility_until_refunded(base_env, mongo_client, dev_key) -> None:
    vn_day_with_room()  # what this test pays and reads is of one day in Vietnam (the daily report's)
    name = f"sen_billing_rt{uuid.uuid4().hex[:8]}"
    with app_client("billing", base_env, name, mongo_client) as (client, _app):
        db = mongo_client[name]
        iid, code = make_invoice(db, 90_000)
        pay(db, code, 90_000)  # paid in full
        late = pay(db, code, 90_000)  # the same transfer sent twice: the second is money to give back
        cancelled, ccode = make_invoice(db, 50_000, status="cancelled")
        late_c = pay(db, ccode, 50_000, bank_reference="FT26339123456")
        other, ocode = make_invoice(db, 40_000, facility="org-b")
        pay(db, ocode, 40_000)
        late_b = pay(db, ocode, 40_000)

        a = _headers(dev_key)
        r = client.get("/payments/refund-tasks", headers=a)
        assert r.status_code == 200, r.text
        tasks = r.json()["tasks"]
        assert [t["payment"] for t in tasks] == [late, late_c] and "next" not in r.json()
        first = tasks[0]
        assert (first["invoice"], first["reference"], first["amount"], first["reason"], first["channel"]) == \
            (iid, code, 90_000, "invoice-balanced", "transfer")
        assert first["receivedAt"].endswith("+07:00") and first["refunded"] is False
        assert (tasks[1]["invoice"], tasks[1]["reason"]) == (cancelled, "invoice-cancelled")
        # each row names the patient its invoice names, as a credit's row does
        assert first["subject"].startswith("Patient/p-") and tasks[1]["subject"].startswith("Patient/p-")

        # another facility's cashier: only their own; naming org-a's: 403 (problem details)
        b = client.get("/payments/refund-tasks", headers=_headers(dev_key, facility="org-b")).json()["tasks"]
        assert [t["payment"] for t in b] == [late_b] and b[0]["invoice"] == other
        denied = client.get("/payments/refund-tasks", params={"facility": "org-a"},
                            headers=_headers(dev_key, facility="org-b"))
        assert denied.status_code == 403
        assert denied.headers["content-type"].startswith("application/problem+json")
        admin = _headers(dev_key, "admin", facility=None)
        assert {t["payment"] for t in client.get("/payments/refund-tasks", headers=admin).json()["tasks"]} == \
            {late, late_c, late_b}
        assert [t["payment"] for t in client.get("/payments/refund-tasks", params={"facility": "org-b"},
                                                 headers=admin).json()["tasks"]] == [late_b]

        # refunded: gone from the open ones, kept (refunded) in state=all
        payments.refund(db, late, None, "chuyển trùng", CASHIER_A, None)
        assert [t["payment"] for t in client.get("/payments/refund-tasks", headers=a).json()["tasks"]] == [late_c]
        every = client.get("/payments/refund-tasks", params={"state": "all"}, headers=a).json()["tasks"]
        assert [(t["payment"], t["refunded"]) for t in every] == [(late, True), (late_c, False)]
        assert every[0]["refund"]["amount"] == 90_000
        # the day's report says the late transfer was given back (how much, when), the other not yet
        day = date.fromisoformat(db[payments.PAYMENTS].find_one({"_id": late})["day"])
        rows = {r["id"]: r for r in reconciliation.rows(db, day, "org-a") if r["kind"] == "payment"}
        assert rows[late]["refunded_amount"] == 90_000 and rows[late]["refunded_at"].endswith("+07:00")
        assert (rows[late_c]["refunded_amount"], rows[late_c]["refunded_at"]) == ("", "")
        assert rows[late_c]["bank_reference"] == "FT26339123456"  # the bank's own reference, when it gives one
        assert "refunded_amount,refunded_at" in reconciliation.to_csv(day, list(rows.values())).splitlines()[0]
        # what the cashier matches against the statement: the transfer's transaction (no bank reference
        # given here), on its row and on its refund's; never the invoice's HD… code
        txn = db[payments.PAYMENTS].find_one({"_id": late})["transaction_id"]
        assert rows[late]["bank_reference"] == txn and rows[late]["reference"] == code
        [refund] = [r for r in reconciliation.rows(db, day, "org-a") if r["kind"] == "refund"]
        assert refund["bank_reference"] == txn

        for bad in ({"state": "done"}, {"limit": "0"}, {"after": "not-a-cursor"}):
            r = client.get("/payments/refund-tasks", params=bad, headers=a)
            assert r.status_code == 400, (bad, r.text)


def test_pages_give_every_open_task_once_oldest_first(mongo_client) -> None:
    with scratch_db(mongo_client, "rt") as db:
        late = []
        for _ in range(7):
            _iid, code = make_invoice(db, 10_000)
            pay(db, code, 10_000)
            late.append(pay(db, code, 10_000))
        for i in (0, 2, 3, 6):  # refunded ones, between and at both ends: skipped by the pages
            payments.refund(db, late[i], None, "trả lại", CASHIER_A, None)
        open_ = [late[i] for i in (1, 4, 5)]
        for limit in (1, 2, 3, 50):
            pages, cursor = [], None
            while True:
                rows, cursor = payments.refund_tasks(db, limit, cursor, "org-a")
                pages.append([r["task"]["_id"] for r in rows])
                if cursor is None:
                    break
            assert [i for p in pages for i in p] == open_, limit
            assert all(len(p) <= limit for p in pages)
        rows, cursor = payments.refund_tasks(db, 50, None, "org-a", "all")
        assert [r["task"]["_id"] for r in rows] == late and cursor is None
        assert payments.refund_tasks(db, 50, None, "org-b")[0] == []


def test_closed_shifts_newest_first_with_their_summary(base_env, mongo_client, dev_key) -> None:
    name = f"sen_billing_rs{uuid.uuid4().hex[:8]}"
    with app_client("billing", base_env, name, mongo_client) as (client, _app):
        me = _headers(dev_key, sub="thu-ngan-ca")
        assert client.get("/payments/shifts", params={"state": "closed"}, headers=me).json() == {"shifts": []}
        closes = []
        for n in range(3):
            opened = client.post("/payments/shifts", json={"openingCash": 100_000 * (n + 1)}, headers=me)
            assert opened.status_code == 201, opened.text
            r = client.post("/payments/shifts/current/close", headers=me,
                            json={"countedCash": 100_000 * (n + 1) + 5_000, "countedTransfers": 0, "note": f"ca {n}"})
            assert r.status_code == 200, r.text
            closes.append(r.json())
        client.post("/payments/shifts", json={"openingCash": 0}, headers=me)  # an open one: not listed
        r = client.get("/payments/shifts", params={"state": "closed", "limit": "2"}, headers=me)
        assert r.status_code == 200, r.text
        shown = r.json()["shifts"]
        assert shown == [closes[2], closes[1]]  # as each close answered, newest first
        assert (shown[0]["difference"]["cash"], shown[0]["note"], shown[0]["openingCash"]) == (5_000, "ca 2", 300_000)
        assert shown[0]["closedAt"].endswith("+07:00")
        assert client.get("/payments/shifts", headers=me).json()["shifts"] == closes[::-1]
        # another cashier's closed shifts are theirs alone
        assert client.get("/payments/shifts", headers=_headers(dev_key, sub="thu-ngan-khac")).json() == {"shifts": []}
        assert client.get("/payments/shifts", params={"state": "open"}, headers=me).status_code == 400
        assert client.get("/payments/shifts", params={"limit": "51"}, headers=me).status_code == 400
