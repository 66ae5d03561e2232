"""A transfer a cashier put on an invoice from the unmatched queue, as the invoice's summary (its
page) and its receipt show it, on the real FerretDB through billing's JSON API: when the bank received
it, when and by whom it was assigned (review 5, ca13-inv.png: it read "received" at the assignment's
time, and the portal showed ``standard:…`` as its transaction)."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest
from sen_billing.domain import payments, receipts, shifts
from sen_billing.domain.webhooks import Transfer
from sen_shared.auth import issue_dev_token

from tests.billing_support import make_invoice
from tests.support import app_client

pytestmark = pytest.mark.integration

ACCOUNTS = {"0011000000001": "org-a"}


def unmatched(db, amount: int, at: datetime) -> str:
    """A transfer naming no invoice to org-a's account, the bank having received it ``at``."""
    t = Transfer(provider="standard", transaction_id=uuid.uuid4().hex[:12], amount=amount,
                 description="chuyen tien kham", account="0011000000001")
    key = payments.record_transfer(db, t, uuid.uuid4().hex, account_facilities=ACCOUNTS).payment["_id"]
    # received before it is assigned (the test's own record: nothing else writes it)
    db["payments"].update_one({"_id": key}, {"$set": {"received_at": at}})
    return key


def test_an_assigned_transfer_reads_with_the_banks_time_and_who_assigned_it_and_when(
        base_env: dict[str, str], mongo_client, dev_key: Path) -> None:
    """The invoice's summary gives an assigned transfer's ``receivedAt`` as the bank's time (and lists
    it by that time), the assignment's as ``assignedAt``, and its cashier (``assignedBy``,
    ``assignedByName``); an assignment recorded before it kept the bank's time reads it from the
    transfer it was assigned from, and its cashier's name from their shift; the receipt (JSON, HTML)
    prints the bank's times. The assignment's own ``received_at``, when it counts toward the invoice
    (its day, its shift), stays the assignment's."""
    name = f"sen_billing_as{uuid.uuid4().hex[:8]}"
    with app_client("billing", {**base_env, "SEN_BANK_ACCOUNT_FACILITIES": json.dumps(ACCOUNTS)}, name,
                    mongo_client) as (client, _app):
        db = mongo_client[name]
        iid, _ = make_invoice(db, 100_000, facility="org-a")
        ten_to = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=10)
        sent = [unmatched(db, amount, ten_to + timedelta(minutes=m))
                for m, amount in enumerate((40_000, 30_000, 30_000))]
        thu = {"Authorization": "Bearer " + issue_dev_token(dev_key, "cashier", sub="thu-ngan-thu",
                                                            facility="org-a", name="Lê Thị Thu")}
        r = client.post(f"/payments/unmatched/{sent[0]}/assign", json={"invoice": iid}, headers=thu)
        assert r.status_code == 201, r.text
        assert (r.json()["receivedAt"], r.json()["assignedByName"]) == (payments.iso(ten_to), "Lê Thị Thu")
        assert r.json()["assignedAt"] > r.json()["receivedAt"]
        # one assigned the old way: its record kept neither the bank's time nor the cashier's name
        binh = SimpleNamespace(sub="thu-ngan-binh", roles=["cashier"], facility="org-a", name="Trần Văn Bình")
        shifts.open_shift(db, binh)
        payments.assign_unmatched(db, sent[1], iid, binh, ACCOUNTS)
        db["payments"].update_one({"_id": f"assign:{sent[1]}"},
                                  {"$unset": {"assigned_from_received_at": "", "assigned_by_name": ""}})
        r = client.get(f"/payments/invoices/{iid}", headers=thu)
        assert r.status_code == 200, r.text
        got = [(p["id"], p["receivedAt"], p.get("assignedBy"), p.get("assignedByName"))
               for p in r.json()["payments"]]
        assert got == [(f"assign:{sent[0]}", payments.iso(ten_to), "thu-ngan-thu", "Lê Thị Thu"),
                       (f"assign:{sent[1]}", payments.iso(ten_to + timedelta(minutes=1)), "thu-ngan-binh",
                        "Trần Văn Bình")]
        for p in r.json()["payments"]:
            assigned = db["payments"].find_one({"_id": p["id"]})
            assert p["assignedAt"] == payments.iso(assigned["received_at"].replace(tzinfo=UTC))
            assert p["assignedFrom"] == p["id"].removeprefix("assign:")
        # the last one settles it: the receipt prints when the bank received each
        payments.assign_unmatched(db, sent[2], iid, binh, ACCOUNTS)
        r = client.get(f"/payments/receipts/{iid}", headers=thu)
        assert r.status_code == 200, r.text
        bank_times = [ten_to + timedelta(minutes=m) for m in range(3)]
        assert [p["at"] for p in r.json()["payments"]] == [payments.iso(at) for at in bank_times]
        html = receipts.receipt_html(receipts.receipt_view(db, db[receipts.RECEIPTS].find_one({"_id": iid})))
        for at in bank_times:
            assert f"<td>{at.astimezone(payments.VN):%d/%m/%Y %H:%M}</td>" in html
