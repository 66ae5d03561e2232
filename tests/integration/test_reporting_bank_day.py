"""The dashboard places a transfer on the day its bank says it happened, as billing's daily CSV does
(billing's domain on the real FerretDB with the clock set by the test, its events through the real
RabbitMQ to the portal's ``portal.reporting`` consumers).

A transfer made at 23:59:58 and delivered at 00:00:03 is on the first day's CSV (4f5eefd: the payment's
``bank_at``, the event's ``bankTime``); the dashboard counted it on the day billing received it
(``receivedAt``), so the two disagreed on both days. Now both say the first day; a transfer whose provider
gave no time stays on the day billing received it, and a redelivered event counts once.
"""

from __future__ import annotations

import csv
import io
import uuid
from datetime import date, datetime, time, timedelta
from typing import Any

import pytest
from sen_billing.domain import payments, reconciliation
from sen_billing.domain.payments import VN
from sen_billing.domain.webhooks import Transfer
from sen_portal.domain.dashboard import csv_rows, dashboard
from sen_portal.domain.report_facts import extract
from sen_portal.domain.reporting import FACTS

from tests.billing_support import make_invoice, scratch_db
from tests.integration.reporting_support import (
    dashboard_unmatched,
    report_unmatched,
    through_reporting,
    unmatched_figures,
)

pytestmark = pytest.mark.integration

DAY = date(2026, 3, 14)
NEXT = DAY + timedelta(days=1)


def _transfer(db: Any, code: str, amount: int, paid_at: str, provider: str) -> str:
    t = Transfer(provider=provider, transaction_id=uuid.uuid4().hex[:10], amount=amount, description=f"TT {code}",
                 paid_at=paid_at)
    return payments.record_transfer(db, t, inbox_id=uuid.uuid4().hex).payment["_id"]


def test_a_transfer_across_midnight_is_on_the_banks_day_in_the_csv_and_on_the_dashboard(
        amqp_url: str, base_env: dict[str, str], mongo_client: Any, fresh_db: Any, monkeypatch: Any) -> None:
    from sen_shared.bus import load_catalog
    from sen_shared.bus.outbox import OUTBOX, entry_event

    clock = [datetime.combine(DAY, time(23, 0, 2), VN)]
    monkeypatch.setattr(payments, "now_utc", lambda: clock[0])
    with scratch_db(mongo_client, "rbd") as bdb:
        codes = [make_invoice(bdb, amount)[1] for amount in (20_000, 50_000, 30_000)]
        before = _transfer(bdb, codes[0], 20_000, "2026-03-14 23:00:00", "casso")  # made and delivered on the 14th
        clock[0] = datetime.combine(NEXT, time(0, 0, 3), VN)
        across = _transfer(bdb, codes[1], 50_000, "2026-03-14 23:59:58", "payos")  # made 23:59:58, came 00:00:03
        clock[0] = datetime.combine(NEXT, time(0, 0, 5), VN)
        untimed = _transfer(bdb, codes[2], 30_000, "", "standard")  # no bank time: the day billing received it
        events = [entry_event(e) for doc in bdb[payments.PAYMENTS].find({OUTBOX: {"$exists": True}})
                  for e in doc[OUTBOX]]
        # billing's daily CSV (what the cashier downloads) of each day: the payments on it
        csv_days = {}
        for day in (DAY, NEXT):
            text = reconciliation.to_csv(day, reconciliation.rows(bdb, day, "org-a"))
            lines = [r for r in csv.DictReader(io.StringIO(text)) if r["kind"] == "payment"]
            csv_days[day] = ({r["id"] for r in lines}, sum(int(r["amount"]) for r in lines))
    assert csv_days == {DAY: ({before, across}, 70_000), NEXT: ({untimed}, 30_000)}

    assert len(events) == 3
    for e in events:
        load_catalog().validate(e)
    [crossing] = [e for e in events if e["data"]["payment"] == across]
    assert crossing["data"]["receivedAt"].startswith(NEXT.isoformat()) and "bankTime" in crossing["data"]

    # through the real bus, each event delivered twice (a redelivery): counted once
    through_reporting(amqp_url, base_env, fresh_db, events + events)
    assert fresh_db[FACTS].count_documents({}) == 3

    for day, (_ids, amount) in csv_days.items():
        money = dashboard(fresh_db, day, day, facility="org-a")["cashless_share"]
        assert (money["received_transfer_amount"], money["transfer_amount"]) == (amount, amount), day
        header, [row] = csv_rows("cashless_share", fresh_db, day, day, facility="org-a")
        assert row[header.index("received_transfer_amount")] == amount, day
    both = dashboard(fresh_db, DAY, NEXT, facility="org-a")["cashless_share"]
    assert (both["received_transfer_amount"], both["received_count"]) == (100_000, 3)

    # billing's events from before bankTime keep their day: when billing received the transfer
    older = {**crossing, "id": str(uuid.uuid4()),
             "data": {k: v for k, v in crossing["data"].items() if k != "bankTime"}}
    assert extract(older)["day"] == NEXT.isoformat() and extract(crossing)["day"] == DAY.isoformat()


ACCOUNTS = {"0011000000001": "org-a"}  # receiving account -> whose unmatched queue


def test_an_unmatched_transfer_across_midnight_keeps_its_banks_day_when_assigned_or_given_back(
        amqp_url: str, base_env: dict[str, str], mongo_client: Any, fresh_db: Any, monkeypatch: Any) -> None:
    """Three transfers naming no invoice, made at 23:59:5x on the 14th and delivered after midnight: one
    assigned to an invoice on the 15th, one given back by an admin, one assigned and then given back (a
    reversal). Billing's CSV has them come on the 14th (their bank's day) and assigned or given back since;
    the dashboard said so only for their arrival: the assignment's and the refunds' events named when
    billing received the transfers (the 15th), so the 14th showed them waiting and the 15th's figures went
    negative. With ``assignedFromBankTime`` and ``paymentBankTime`` both agree, day by day."""
    from types import SimpleNamespace

    from sen_shared.bus import load_catalog
    from sen_shared.bus.outbox import OUTBOX, entry_event

    cashier = SimpleNamespace(roles={"cashier"}, facility="org-a", sub="thu-ngan-a")
    admin = SimpleNamespace(roles={"admin"}, facility=None, sub="quan-tri")
    clock = [datetime.combine(NEXT, time(0, 0, 3), VN)]
    monkeypatch.setattr(payments, "now_utc", lambda: clock[0])

    def unmatched(amount: int, paid_at: str, provider: str) -> str:
        t = Transfer(provider=provider, transaction_id=uuid.uuid4().hex[:10], amount=amount,
                     description="chuyen tien kham", paid_at=paid_at, account="0011000000001")
        recorded = payments.record_transfer(bdb, t, inbox_id=uuid.uuid4().hex, account_facilities=ACCOUNTS)
        assert recorded.payment["outcome"] == "unmatched"
        return recorded.payment["_id"]

    with scratch_db(mongo_client, "rbm") as bdb:
        assigned = unmatched(40_000, "2026-03-14 23:59:58", "payos")
        clock[0] += timedelta(seconds=1)
        given_back = unmatched(15_000, "2026-03-14 23:59:59", "casso")
        clock[0] += timedelta(seconds=1)
        reversed_ = unmatched(60_000, "2026-03-14 23:59:57", "payos")
        i1, _ = make_invoice(bdb, 40_000)
        i2, _ = make_invoice(bdb, 100_000)  # stays owed: its assigned payment can be given back (a reversal)
        clock[0] = datetime.combine(NEXT, time(9, 0), VN)
        payments.assign_unmatched(bdb, assigned, i1, cashier, ACCOUNTS)
        clock[0] += timedelta(minutes=5)
        payments.refund(bdb, given_back, None, "chuyển nhầm", admin, None)
        clock[0] += timedelta(minutes=5)
        payments.assign_unmatched(bdb, reversed_, i2, cashier, ACCOUNTS)
        clock[0] += timedelta(minutes=5)
        payments.refund(bdb, f"assign:{reversed_}", None, "hoàn lại", cashier, "shift-1")
        events = [entry_event(e) for coll in ("payments", "refunds")
                  for doc in bdb[coll].find({OUTBOX: {"$exists": True}}) for e in doc[OUTBOX]]
        # billing's daily CSV of each day (what the cashier downloads): its totals
        recon = {}
        for day in (DAY, NEXT):
            text = reconciliation.to_csv(day, reconciliation.rows(bdb, day, "org-a", account_facilities=ACCOUNTS))
            recon[day] = {r["id"]: int(r["amount"]) for r in csv.DictReader(io.StringIO(text)) if r["kind"] == "total"}
    assert report_unmatched(recon[DAY]) == unmatched_figures(unmatched=115_000, assigned=100_000, refunded=15_000)
    # the 15th: the two assignments of the 14th's transfers, less the one given back
    assert report_unmatched(recon[NEXT]) == unmatched_figures(earlier=40_000)

    assert len(events) == 7  # three arrivals, two assignments, two refunds
    for e in events:
        load_catalog().validate(e)  # assignedFromBankTime, paymentBankTime: optional fields of v1
    by_kind = {(e["type"], e["data"]["payment"]): e["data"] for e in events}
    made = by_kind[("vn.sen.billing.payment.received.v1", f"assign:{assigned}")]
    assert datetime.fromisoformat(made["assignedFromBankTime"]) == datetime.combine(DAY, time(23, 59, 58), VN)
    assert datetime.fromisoformat(made["assignedFromReceivedAt"]) == datetime.combine(NEXT, time(0, 0, 3), VN)
    assert "paymentBankTime" in by_kind[("vn.sen.billing.payment.refunded.v1", given_back)]
    assert "assignedFromBankTime" in by_kind[("vn.sen.billing.payment.refunded.v1", f"assign:{reversed_}")]

    # through the real bus, each event delivered twice (a redelivery): counted once
    through_reporting(amqp_url, base_env, fresh_db, events + events)
    assert fresh_db[FACTS].count_documents({}) == 7
    for day in (DAY, NEXT):
        mine = dashboard(fresh_db, day, day, facility="org-a")["cashless_share"]
        assert dashboard_unmatched(mine) == report_unmatched(recon[day]), day
        assert (mine["received_transfer_amount"], mine["refunds"], mine["net"]) == \
            (recon[day]["transfers"], recon[day]["refunds"], recon[day]["net"]), day
