"""The dashboard's money and the cashier's daily reconciliation agree, on the real FerretDB.

One day of billing's own payments (its domain functions, its events from the outboxes): a transfer
matched to its invoice, an unmatched transfer never assigned, one assigned to an invoice, one
given back by an admin, late transfers to a settled invoice (refund tasks; one given back), a
transfer toward an invoice still owed and given back (a reversal), cash; another facility's
transfer and a transfer to an account no facility owns. The portal's facts of those events give,
for the facility, billing's ``reconciliation.totals`` (transfers, cash, refunds, net, payments; the
unmatched transfers that came, and of them those assigned, given back and still waiting), and the
takings apart from the unmatched and late money; the province's figure holds its parts as labelled.
Redelivered, in any order: nothing changes.
"""

from __future__ import annotations

import uuid
from datetime import date
from types import SimpleNamespace
from typing import Any

import pytest
from sen_portal.domain.dashboard import dashboard
from sen_portal.domain.reporting import record_event

from tests.integration.reporting_support import dashboard_unmatched, report_unmatched, unmatched_figures
from tests.support import vn_day_with_room

pytestmark = pytest.mark.integration

ACCOUNTS = {"0011000000001": "org-a", "0022000000002": "org-b"}  # receiving account -> whose queue
CASHIER = SimpleNamespace(roles={"cashier"}, facility="org-a", sub="thu-ngan-a")
ADMIN = SimpleNamespace(roles={"admin"}, facility=None, sub="quan-tri")


def _day(bdb: Any, mongo_client: Any, today: date) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Billing's day ``today`` (its events, and the reconciliation's totals of org-a)."""
    from sen_billing.domain import payments, reconciliation
    from sen_billing.domain.webhooks import Transfer
    from sen_shared.bus.outbox import OUTBOX, entry_event

    from tests.billing_support import make_invoice

    def transfer(amount: int, note: str, account: str = "0011000000001") -> str:
        tx = Transfer(provider="standard", transaction_id=uuid.uuid4().hex[:12], amount=amount, description=note,
                      account=account)
        return payments.record_transfer(bdb, tx, uuid.uuid4().hex, account_facilities=ACCOUNTS).payment["_id"]

    i1, c1 = make_invoice(bdb, 100_000)
    transfer(100_000, f"TT {c1}")  # matched: takings
    late = transfer(25_000, f"TT {c1}")  # after I1 was settled: owed back, a refund task
    late_back = transfer(20_000, f"TT {c1}")  # another, given back
    payments.refund(bdb, late_back, None, "chuyển thừa", CASHIER, "shift-1")
    transfer(30_000, "chuyen tien")  # unmatched, never assigned: waits in org-a's queue
    assigned = transfer(45_000, "chuyen tien kham")  # unmatched, then assigned: takings once
    i2, _ = make_invoice(bdb, 45_000)
    payments.assign_unmatched(bdb, assigned, i2, CASHIER, ACCOUNTS)
    back = transfer(15_000, "nham tai khoan")  # unmatched, given back by an admin
    payments.refund(bdb, back, None, "chuyển nhầm", ADMIN, None)
    i3, c3 = make_invoice(bdb, 80_000)
    owed = transfer(50_000, f"TT {c3}")  # part of I3, then given back (a reversal: takings less)
    payments.refund(bdb, owed, None, "hoàn lại", CASHIER, "shift-1")
    i4, _ = make_invoice(bdb, 40_000)
    payments.record_cash(bdb, i4, 40_000, CASHIER, "shift-1")
    _i5, c5 = make_invoice(bdb, 70_000, facility="org-b")
    transfer(70_000, f"TT {c5}", account="0022000000002")  # another facility's
    transfer(155_000, "ung ho", account="9999000000009")  # an account no facility owns: the admins' queue
    assert late and i1
    events = [entry_event(e) for coll in ("payments", "refunds")
              for doc in bdb[coll].find({OUTBOX: {"$exists": True}}) for e in doc[OUTBOX]]
    totals = reconciliation.totals(reconciliation.rows(bdb, today, "org-a", account_facilities=ACCOUNTS))
    return events, totals


def test_the_dashboard_gives_the_facilitys_reconciliation_and_labels_the_provinces_parts(
        fresh_db: Any, mongo_client: Any) -> None:
    from sen_shared.bus import load_catalog

    from tests.billing_support import scratch_db

    today = vn_day_with_room()  # every payment below is of this day in Vietnam, the reads too
    with scratch_db(mongo_client, "dr") as bdb:
        events, recon = _day(bdb, mongo_client, today)
    for e in events:
        load_catalog().validate(e)  # outcome and queueFacility: optional fields of v1
    for e in events:
        assert record_event(fresh_db, e) is True

    def figures(**kw: Any) -> dict[str, Any]:
        return dashboard(fresh_db, today, today, kw.pop("district", None), **kw)["cashless_share"]

    mine = figures(facility="org-a")
    # billing's day of org-a, figure for figure
    assert recon == {"transfers": 285_000, "cash": 40_000, "refunds": 85_000, "unmatched": 90_000,
                     "net": 240_000, "payments": 8, "unmatched_assigned": 45_000, "unmatched_refunded": 15_000,
                     "unmatched_waiting": 30_000, "assigned_earlier": 0}
    assert (mine["received_transfer_amount"], mine["received_cash_amount"], mine["refunds"], mine["net"],
            mine["received_count"]) == (recon["transfers"], recon["cash"], recon["refunds"], recon["net"],
                                        recon["payments"])
    # the unmatched transfers that came, and what became of them: one meaning in both
    assert (mine["unmatched_amount"], mine["unmatched_assigned_amount"], mine["unmatched_refunded_amount"],
            mine["unmatched_waiting_amount"], mine["assigned_earlier_amount"]) == (
        recon["unmatched"], recon["unmatched_assigned"], recon["unmatched_refunded"], recon["unmatched_waiting"],
        recon["assigned_earlier"])
    # the takings: applied to invoices (the assigned transfer once), less the reversal; apart from them
    # the unmatched transfers, the late ones owed back and the refunds of those
    assert (mine["transfer_amount"], mine["transfer_count"], mine["cash_amount"], mine["cash_count"]) == \
        (100_000 + 45_000 + 50_000 - 50_000, 3, 40_000, 1)
    assert (mine["assigned_amount"], mine["assigned_count"]) == (45_000, 1)
    assert (mine["unmatched_amount"], mine["unmatched_count"], mine["unmatched_without_facility"]) == (90_000, 3, 0)
    assert (mine["late_amount"], mine["late_count"]) == (45_000, 2)
    assert (mine["refunds_of_takings"], mine["refunds_owed"]) == (50_000, 20_000 + 15_000)
    assert mine["share"] == round(145_000 / 185_000, 4)
    # the facility's district (the EHR's: unmatched transfers name no district) gives the same
    district = figures(district="Cao Lãnh", facility_districts={"org-a": "Cao Lãnh", "org-b": "Tháp Mười"})
    assert district == mine

    # the whole province: org-b's transfer and the admins' queue are there, each part where its label says
    province = figures()
    assert province["transfer_amount"] == mine["transfer_amount"] + 70_000  # org-b's takings
    assert (province["unmatched_amount"], province["unmatched_without_facility"]) == (90_000 + 155_000, 155_000)
    assert (province["late_amount"], province["refunds"]) == (mine["late_amount"], mine["refunds"])
    assert province["received_transfer_amount"] == recon["transfers"] + 70_000 + 155_000

    # redelivered, and in the reverse order: counted once (facts keyed by event id)
    for e in reversed(events):
        assert record_event(fresh_db, dict(e)) is False
    assert figures(facility="org-a") == mine and figures() == province




def test_the_dashboard_and_the_daily_report_give_one_story_of_the_unmatched_transfers(
        fresh_db: Any, mongo_client: Any) -> None:
    """A transfer unmatched then assigned the same day, one still waiting, one given back by an admin,
    and one that came the day before and was assigned today: for each day, the dashboard's unmatched
    figures (came, of them assigned, given back, still waiting; assigned today of an earlier day's)
    are billing's daily reconciliation's, and came = assigned + given back + waiting. The cashless
    takings stay equal to the reconciliation's too (session 19's rule)."""
    from datetime import timedelta

    from sen_billing.domain import payments, reconciliation
    from sen_billing.domain.webhooks import Transfer
    from sen_shared.bus import load_catalog
    from sen_shared.bus.outbox import OUTBOX, entry_event

    from tests.billing_support import make_invoice, scratch_db

    today = vn_day_with_room()
    yesterday = today - timedelta(days=1)
    with scratch_db(mongo_client, "du") as bdb:
        def transfer(amount: int, note: str) -> str:
            tx = Transfer(provider="standard", transaction_id=uuid.uuid4().hex[:12], amount=amount,
                          description=note, account="0011000000001")
            return payments.record_transfer(bdb, tx, uuid.uuid4().hex, account_facilities=ACCOUNTS).payment["_id"]

        earlier = transfer(60_000, "chuyen tien hom qua")  # came yesterday (moved there below), assigned today
        came = bdb["payments"].find_one({"_id": earlier})["received_at"] - timedelta(days=1)
        bdb["payments"].update_one({"_id": earlier}, {"$set": {"received_at": came, "day": yesterday.isoformat()}})
        same_day = transfer(45_000, "chuyen tien kham")  # unmatched, assigned the same day
        transfer(30_000, "chuyen tien")  # still waiting
        back = transfer(15_000, "nham tai khoan")  # given back by an admin
        i1, c1 = make_invoice(bdb, 60_000)
        i2, _ = make_invoice(bdb, 45_000)
        payments.assign_unmatched(bdb, earlier, i1, CASHIER, ACCOUNTS)
        payments.assign_unmatched(bdb, same_day, i2, CASHIER, ACCOUNTS)
        payments.refund(bdb, back, None, "chuyển nhầm", ADMIN, None)
        events = [entry_event(e) for coll in ("payments", "refunds")
                  for doc in bdb[coll].find({OUTBOX: {"$exists": True}}) for e in doc[OUTBOX]]
        for e in events:  # the earlier transfer's own event says when it came, as its payment does now
            if e["data"]["payment"] == earlier and "assignedFrom" not in e["data"]:
                e["data"]["receivedAt"] = payments.iso(came)
        recon = {d: reconciliation.totals(reconciliation.rows(bdb, d, "org-a", account_facilities=ACCOUNTS))
                 for d in (yesterday, today)}
        report = reconciliation.rows(bdb, yesterday, "org-a", account_facilities=ACCOUNTS)
        original = next(r for r in report if r["id"] == earlier)
        assert (original["outcome"], original["assigned_to"]) == ("unmatched", c1)
        assert original["assigned_at"].startswith(today.isoformat())
        assert f"{c1},{original['assigned_at']}" in reconciliation.to_csv(yesterday, report)
    for e in events:
        load_catalog().validate(e)  # assignedFromReceivedAt and paymentReceivedAt: optional fields of v1
        assert record_event(fresh_db, e) is True

    # billing's story: yesterday 60.000 came, assigned since; today 90.000 came: 45.000 assigned,
    # 15.000 given back, 30.000 waiting; and today's assignment of yesterday's 60.000
    assert report_unmatched(recon[yesterday]) == unmatched_figures(unmatched=60_000, assigned=60_000)
    assert report_unmatched(recon[today]) == unmatched_figures(unmatched=90_000, assigned=45_000, refunded=15_000,
                                                         waiting=30_000, earlier=60_000)
    for day in (yesterday, today):
        mine = dashboard(fresh_db, day, day, None, facility="org-a")["cashless_share"]
        assert dashboard_unmatched(mine) == report_unmatched(recon[day]), day
        assert mine["unmatched_amount"] == (mine["unmatched_assigned_amount"] + mine["unmatched_refunded_amount"]
                                            + mine["unmatched_waiting_amount"])
        assert (mine["received_transfer_amount"], mine["refunds"], mine["net"], mine["received_count"]) == \
            (recon[day]["transfers"], recon[day]["refunds"], recon[day]["net"], recon[day]["payments"]), day
    both = dashboard(fresh_db, yesterday, today, None, facility="org-a")["cashless_share"]
    # over both days: 150.000 came, 105.000 assigned, 15.000 given back, 30.000 waiting; none from before
    assert (both["unmatched_amount"], both["unmatched_assigned_amount"], both["unmatched_refunded_amount"],
            both["unmatched_waiting_amount"], both["assigned_earlier_amount"]) == (150_000, 105_000, 15_000,
                                                                                  30_000, 0)
    assert (both["assigned_amount"], both["assigned_count"]) == (105_000, 2)


def test_an_assigned_transfers_overpayment_given_back_leaves_the_assigned_part_within_the_transfers(
        fresh_db: Any, mongo_client: Any) -> None:
    """Review 6 (w25-dash.png): a 150.000 ₫ transfer naming no invoice, assigned by the cashier to an
    invoice of 100.000 ₫, the 50.000 ₫ overpaid given back. The transfers' takings are 100.000 ₫, and
    the part of them assigned from the unmatched queue is net of what of it went back (100.000 ₫, the
    same rule), never 150.000 ₫ "of" 100.000 ₫; billing's daily reconciliation still holds figure for
    figure (transfers received 150.000, refunds 50.000, net 100.000)."""
    from sen_billing.domain import payments, reconciliation
    from sen_billing.domain.webhooks import Transfer
    from sen_shared.bus import load_catalog
    from sen_shared.bus.outbox import OUTBOX, entry_event

    from tests.billing_support import make_invoice, scratch_db

    today = vn_day_with_room()
    with scratch_db(mongo_client, "do") as bdb:
        tx = Transfer(provider="standard", transaction_id=uuid.uuid4().hex[:12], amount=150_000,
                      description="HDNOTEXIST1", account="0011000000001")
        key = payments.record_transfer(bdb, tx, uuid.uuid4().hex, account_facilities=ACCOUNTS).payment["_id"]
        invoice, _ = make_invoice(bdb, 100_000)
        payments.assign_unmatched(bdb, key, invoice, CASHIER, ACCOUNTS)
        payments.refund(bdb, f"assign:{key}", 50_000, "trả tiền thừa", CASHIER, "shift-1")
        events = [entry_event(e) for coll in ("payments", "refunds")
                  for doc in bdb[coll].find({OUTBOX: {"$exists": True}}) for e in doc[OUTBOX]]
        recon = reconciliation.totals(reconciliation.rows(bdb, today, "org-a", account_facilities=ACCOUNTS))
    for e in events:
        load_catalog().validate(e)
        assert record_event(fresh_db, e) is True
    assert (recon["transfers"], recon["refunds"], recon["net"]) == (150_000, 50_000, 100_000)
    mine = dashboard(fresh_db, today, today, None, facility="org-a")["cashless_share"]
    assert (mine["received_transfer_amount"], mine["received_cash_amount"], mine["refunds"], mine["net"],
            mine["received_count"]) == (recon["transfers"], recon["cash"], recon["refunds"], recon["net"],
                                        recon["payments"])
    assert dashboard_unmatched(mine) == report_unmatched(recon)
    assert (mine["transfer_amount"], mine["transfer_count"]) == (100_000, 1)
    # the part within the whole: assigned 150.000, 50.000 of it given back
    assert (mine["assigned_amount"], mine["assigned_count"]) == (100_000, 1)
    assert mine["assigned_amount"] <= mine["transfer_amount"]
    assert (mine["refunds_of_takings"], mine["refunds_owed"]) == (50_000, 0)
