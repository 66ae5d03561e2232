"""The dashboard's cashless share is takings net of refunds, on the real FerretDB and RabbitMQ.

Billing announces each refund (``billing.payment.refunded``, in the refund claim's insert); the
portal's facts subtract its amount from the channel of the payment it refunds. A redelivered
refund event counts once (its id is derived from the payment), and a refund made before the event
existed is announced once by ``refund_events.backfill`` with that same id.
"""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime
from types import SimpleNamespace
from typing import Any

import pytest
from sen_portal.domain.dashboard import csv_rows, dashboard
from sen_portal.domain.reporting import FACTS, record_event

from tests.integration.reporting_support import through_reporting
from tests.integration.test_reporting import CL, NOW, SHARE, A, arrive, ev, paid, t

pytestmark = pytest.mark.integration


def refunded(payment: str, amount: int, channel: str, day: int) -> dict[str, Any]:
    from sen_billing.domain.refund_events import event_id

    return ev("billing.payment.refunded", {"payment": payment, "facility": A, "district": CL, "amount": amount,
                                           "currency": "VND", "channel": channel, "refundChannel": "cash",
                                           "refundedAt": t(day, 16)}, event_id=event_id(payment))


def test_a_transfer_given_back_whole_is_no_cashless_takings(fresh_db: Any) -> None:
    """100.000 ₫ in cash and a late 100.000 ₫ transfer given back in cash: 0 % cashless, the cash
    untouched (the refund comes off the transfer it refunds, not the channel it went back by)."""
    cash, late = paid(A, CL, 3, 100_000, "cash"), paid(A, CL, 3, 100_000, "transfer")
    back = refunded(late["data"]["payment"], 100_000, "transfer", 4)
    for e in (cash, late, back):
        assert arrive(fresh_db, e) is True
    assert arrive(fresh_db, back) is False and arrive(fresh_db, dict(back), at=NOW) is False  # redelivered: once
    d = dashboard(fresh_db, date(2026, 11, 2), date(2026, 11, 15), None, now=NOW)
    assert {k: d["cashless_share"][k] for k in SHARE} == {"transfer_amount": 0, "cash_amount": 100_000,
                                                         "share": 0.0, "transfer_count": 1, "cash_count": 1}
    _, rows = csv_rows("cashless_share", fresh_db, date(2026, 11, 2), date(2026, 11, 15), None, now=NOW)
    assert rows[0][3:8] == [0, 100_000, 0.0, 1, 1]


def test_part_of_a_transfer_given_back_and_a_range_holding_only_the_refund(fresh_db: Any) -> None:
    late = paid(A, CL, 3, 100_000, "transfer")
    for e in (paid(A, CL, 3, 100_000, "cash"), late, refunded(late["data"]["payment"], 40_000, "transfer", 10)):
        assert arrive(fresh_db, e) is True
    d = dashboard(fresh_db, date(2026, 11, 2), date(2026, 11, 15), None, now=NOW)["cashless_share"]
    assert (d["transfer_amount"], d["cash_amount"], d["share"]) == (60_000, 100_000, 0.375)
    only = dashboard(fresh_db, date(2026, 11, 9), date(2026, 11, 15), None, now=NOW)["cashless_share"]
    assert (only["transfer_amount"], only["share"], only["transfer_count"]) == (-40_000, None, 0)


def test_billings_refund_events_through_the_bus_and_the_backfill(
        amqp_url: str, base_env: dict[str, str], fresh_db: Any, mongo_client: Any) -> None:
    """A real refund (payments.refund) carries its event in its outbox; a refund stored without one
    (made before the event) is announced by the backfill, once however often it runs. Each event,
    published twice through the real ``portal.reporting`` queue, counts once."""
    from sen_billing.domain import payments, refund_events
    from sen_billing.domain.invoice_port import REFUNDS
    from sen_billing.domain.webhooks import Transfer
    from sen_shared.bus import load_catalog
    from sen_shared.bus.outbox import OUTBOX, entry_event

    from tests.billing_support import make_invoice, scratch_db
    from tests.support import vn_day_with_room

    cashier = SimpleNamespace(roles={"cashier"}, facility="org-a", sub="thu-ngan-1")

    def transfer(code: str, amount: int) -> str:
        tx = Transfer(provider="standard", transaction_id=uuid.uuid4().hex[:12], amount=amount,
                      description=f"TT {code}")
        return payments.record_transfer(bdb, tx, uuid.uuid4().hex).payment["_id"]

    today = vn_day_with_room()  # the day in Vietnam of every payment and refund below, and of the read
    with scratch_db(mongo_client, "r") as bdb:
        iid, code = make_invoice(bdb, 100_000)
        payments.record_cash(bdb, iid, 100_000, cashier, "shift-1")  # settled in cash
        late = transfer(code, 100_000)  # then a late transfer: money to give back
        payments.refund(bdb, late, None, "chuyển khoản thừa", cashier, "shift-1")  # back in cash
        old_iid, old_code = make_invoice(bdb, 30_000)
        payments.record_cash(bdb, old_iid, 30_000, cashier, "shift-1")
        older = transfer(old_code, 30_000)
        # a refund made before refunds had events: the claim without an outbox
        bdb[REFUNDS].insert_one({"_id": older, "payment": older, "invoice": old_iid, "amount": 30_000,
                                 "reason": "trả lại", "facility": "org-a", "channel": "cash", "reverses": False,
                                 "day": today.isoformat(), "at": datetime.now(UTC)})
        assert refund_events.backfill(bdb) == {"refund_events": 1}
        assert refund_events.backfill(bdb) == {"refund_events": 0}  # the claim is made once
        events = [entry_event(e) for coll in ("payments", "refunds", refund_events.BACKFILLED)
                  for doc in bdb[coll].find({OUTBOX: {"$exists": True}}) for e in doc[OUTBOX]]
    gone = [e for e in events if e["type"] == "vn.sen.billing.payment.refunded.v1"]
    assert {e["data"]["payment"] for e in gone} == {late, older} and len(gone) == 2
    for e in events:
        load_catalog().validate(e)
    mine = next(e for e in gone if e["data"]["payment"] == late)
    assert (mine["id"], mine["data"]["channel"], mine["data"]["refundChannel"], mine["data"]["amount"]) == \
        (refund_events.event_id(late), "transfer", "cash", 100_000)
    through_reporting(amqp_url, base_env, fresh_db, events + gone)
    assert fresh_db[FACTS].count_documents({"k": "billing.payment.refunded"}) == 2
    d = dashboard(fresh_db, today, today, None)["cashless_share"]
    # both transfers came after their invoices were settled in cash: owed back, never takings (nor their refunds)
    assert (d["transfer_amount"], d["cash_amount"], d["transfer_count"], d["cash_count"]) == (0, 130_000, 0, 2)
    assert (d["late_amount"], d["refunds_owed"], d["refunds_of_takings"]) == (130_000, 130_000, 0)
    assert record_event(fresh_db, mine) is False  # counted already


def test_a_payment_given_back_in_parts_counts_each_refund_once(
        amqp_url: str, base_env: dict[str, str], fresh_db: Any, mongo_client: Any) -> None:
    """A paid invoice's transfer given back in two refunds after settlement (billing's ``refund_links``: a
    link each, each with its own event id). Every event published twice through the real
    ``portal.reporting`` queue: two refund facts, and the takings net of both."""
    from sen_billing.domain import payments, refund_events
    from sen_billing.domain.webhooks import Transfer
    from sen_shared.bus.outbox import OUTBOX, entry_event

    from tests.billing_support import make_invoice, scratch_db
    from tests.support import vn_day_with_room

    cashier = SimpleNamespace(roles={"cashier"}, facility="org-a", sub="thu-ngan-1")
    today = vn_day_with_room()
    with scratch_db(mongo_client, "rp") as bdb:
        _iid, code = make_invoice(bdb, 90_000)
        tx = Transfer(provider="standard", transaction_id=uuid.uuid4().hex[:12], amount=90_000,
                      description=f"TT {code}")
        paid_by = payments.record_transfer(bdb, tx, uuid.uuid4().hex).payment["_id"]
        payments.refund(bdb, paid_by, 30_000, "dịch vụ không làm", cashier, None, after_settlement=True)
        payments.refund(bdb, paid_by, 20_000, "thêm một dịch vụ", cashier, None, after_settlement=True)
        events = [entry_event(e) for coll in ("payments", "refunds")
                  for doc in bdb[coll].find({OUTBOX: {"$exists": True}}) for e in doc[OUTBOX]]
    gone = [e for e in events if e["type"] == "vn.sen.billing.payment.refunded.v1"]
    assert sorted(e["data"]["amount"] for e in gone) == [20_000, 30_000]
    assert {e["id"] for e in gone} == {refund_events.event_id(paid_by), refund_events.event_id(f"refund2:{paid_by}")}
    through_reporting(amqp_url, base_env, fresh_db, events + gone)  # each refund twice
    assert fresh_db[FACTS].count_documents({"k": "billing.payment.refunded"}) == 2
    d = dashboard(fresh_db, today, today, None)["cashless_share"]
    assert (d["transfer_amount"], d["transfer_count"], d["refunds_of_takings"]) == (40_000, 1, 50_000)
    assert all(record_event(fresh_db, e) is False for e in gone)  # counted already
