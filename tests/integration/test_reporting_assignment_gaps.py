"""Session 20's two reporting gaps, on the real FerretDB: billing's own domain functions and events,
the portal's facts of those events, billing's daily reconciliation beside the dashboard.

1. A transfer that came to facility A's unmatched queue (A's bank account), assigned by an admin to
   facility B's invoice. One story in both places: the money arrived where the queue is (A's figures:
   came, of it assigned since; A's CSV row names B's invoice), and B's figures show an assigned payment
   received (B's takings; ``assigned_earlier`` when the transfer came on an earlier day), never an
   unmatched transfer "assigned" at B that never came to B. A transfer to an account no facility owns,
   assigned to B's invoice, stays in the province's figures only.
2. An assignment of an earlier day's transfer, overpaid and the rest given back: "of which from earlier
   transfers" (``assigned_earlier``) is net of what was given back, as ``assigned_amount`` is.
3. Facts of billing's older events (no ``assignedFromQueue``; a refund's without
   ``assignedFromReceivedAt``) and a refund whose fact was stored before its assignment's:
   ``python -m sen_portal.rebuild facts`` gives them the new meaning.
4. A refund of an assignment's money says when the assigned transfer came (``assignedFromReceivedAt``):
   its event delivered before the assignment's on the real ``portal.reporting`` queue, the figures
   are net at once, no rebuild needed.
"""

from __future__ import annotations

import csv
import io
import uuid
from datetime import date, timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from sen_portal.domain.dashboard import csv_rows, dashboard
from sen_portal.domain.reporting import record_event

from tests.integration.reporting_support import UNMATCHED, dashboard_unmatched, report_unmatched, unmatched_figures
from tests.support import vn_day_with_room

pytestmark = pytest.mark.integration

ACCOUNTS = {"0011000000001": "org-a", "0022000000002": "org-b"}  # receiving account -> whose queue
DISTRICTS = {"org-a": "Huyện Cao Lãnh", "org-b": "Huyện Tháp Mười"}
ADMIN = SimpleNamespace(roles={"admin"}, facility=None, sub="quan-tri")
CASHIER_A = SimpleNamespace(roles={"cashier"}, facility="org-a", sub="thu-ngan-a")
CASHIER_B = SimpleNamespace(roles={"cashier"}, facility="org-b", sub="thu-ngan-b")


def _transfer(bdb: Any, amount: int, note: str, account: str, *, day_before: bool = False) -> str:
    """A transfer to ``account``; ``day_before``: moved to the day before (as it would have come then)."""
    from datetime import timedelta as td

    from sen_billing.domain import payments
    from sen_billing.domain.webhooks import Transfer

    tx = Transfer(provider="standard", transaction_id=uuid.uuid4().hex[:12], amount=amount, description=note,
                  account=account)
    key = payments.record_transfer(bdb, tx, uuid.uuid4().hex, account_facilities=ACCOUNTS).payment["_id"]
    if day_before:
        came = bdb["payments"].find_one({"_id": key})["received_at"] - td(days=1)
        bdb["payments"].update_one({"_id": key}, {"$set": {"received_at": came,
                                                           "day": payments.local_day(came)}})
    return key


def _events(bdb: Any, moved: list[str]) -> list[dict[str, Any]]:
    """Billing's events from the outboxes; a transfer moved to the day before says so, as its payment does."""
    from sen_billing.domain import payments
    from sen_shared.bus import load_catalog
    from sen_shared.bus.outbox import OUTBOX, entry_event

    events = [entry_event(e) for coll in ("payments", "refunds")
              for doc in bdb[coll].find({OUTBOX: {"$exists": True}}) for e in doc[OUTBOX]]
    for e in events:
        if e["data"].get("payment") in moved and "assignedFrom" not in e["data"]:
            came = bdb["payments"].find_one({"_id": e["data"]["payment"]})["received_at"]
            e["data"]["receivedAt"] = payments.iso(came)
        load_catalog().validate(e)  # assignedFromQueue: an optional field of v1
    return events


def _recon(bdb: Any, day: date, facility: str | None) -> tuple[dict[str, int], list[dict[str, Any]], str]:
    from sen_billing.domain import reconciliation

    rows = reconciliation.rows(bdb, day, facility, account_facilities=ACCOUNTS)
    return reconciliation.totals(rows), rows, reconciliation.to_csv(day, rows)


def test_a_transfer_assigned_to_another_facilitys_invoice_is_one_story_in_the_dashboard_and_the_daily_report(
        fresh_db: Any, mongo_client: Any) -> None:
    """Yesterday 60.000 ₫ came to A's account naming no invoice; today 45.000 ₫ and 30.000 ₫ came there,
    and 20.000 ₫ to an account no facility owns. An admin assigns yesterday's 60.000 and today's 45.000
    to B's invoices, and the 20.000 to a third invoice of B's; the 30.000 waits. A: yesterday 60.000
    came, assigned since; today 75.000 came, 45.000 of it assigned, 30.000 waiting. B: nothing came
    to its queue; today it received 125.000 ₫ assigned (its takings), 60.000 of it from an earlier day.
    The dashboard of A and of B (and of their districts) give billing's daily figures of A and B, day
    by day and in their CSVs; the province's, billing's report of every facility."""
    from sen_billing.domain import payments

    from tests.billing_support import make_invoice, scratch_db

    today = vn_day_with_room()
    yesterday = today - timedelta(days=1)
    with scratch_db(mongo_client, "xf") as bdb:
        earlier = _transfer(bdb, 60_000, "chuyen tien hom qua", "0011000000001", day_before=True)
        same_day = _transfer(bdb, 45_000, "chuyen tien kham", "0011000000001")
        _transfer(bdb, 30_000, "chuyen tien", "0011000000001")  # waits in A's queue
        unowned = _transfer(bdb, 20_000, "ung ho", "9999000000009")  # the admins' queue
        b1, c1 = make_invoice(bdb, 60_000, facility="org-b")
        b2, c2 = make_invoice(bdb, 45_000, facility="org-b")
        b3, c3 = make_invoice(bdb, 20_000, facility="org-b")
        with pytest.raises(Exception, match="another facility"):  # a cashier of B cannot take A's transfer
            payments.assign_unmatched(bdb, same_day, b2, CASHIER_B, ACCOUNTS)
        payments.assign_unmatched(bdb, earlier, b1, ADMIN, ACCOUNTS)
        payments.assign_unmatched(bdb, same_day, b2, ADMIN, ACCOUNTS)
        payments.assign_unmatched(bdb, unowned, b3, ADMIN, ACCOUNTS)
        events = _events(bdb, [earlier])
        recon = {(d, f): _recon(bdb, d, f) for d in (yesterday, today) for f in ("org-a", "org-b", None)}
    for e in events:
        assert record_event(fresh_db, e) is True

    # billing's story, by the queue's facility and the invoice's
    totals = {k: v[0] for k, v in recon.items()}
    assert report_unmatched(totals[(yesterday, "org-a")]) == unmatched_figures(unmatched=60_000, assigned=60_000)
    assert report_unmatched(totals[(today, "org-a")]) == unmatched_figures(unmatched=75_000, assigned=45_000,
                                                                            waiting=30_000)
    assert report_unmatched(totals[(today, "org-b")]) == unmatched_figures(earlier=60_000)
    assert report_unmatched(totals[(yesterday, "org-b")]) == dict.fromkeys(UNMATCHED, 0)
    # A's CSV: today's transfer came there, assigned to B's invoice; B's: the assignments received
    a_rows = list(csv.DictReader(io.StringIO(recon[(today, "org-a")][2])))
    arrival = next(r for r in a_rows if r["id"] == same_day)
    assert (arrival["facility"], arrival["outcome"], arrival["assigned_to"]) == ("org-a", "unmatched", c2)
    assert not any(r["id"].startswith("assign:") for r in a_rows)
    b_rows = list(csv.DictReader(io.StringIO(recon[(today, "org-b")][2])))
    assert {r["id"]: (r["facility"], r["invoice"], r["amount"]) for r in b_rows if r["kind"] == "payment"} == {
        f"assign:{earlier}": ("org-b", b1, "60000"), f"assign:{same_day}": ("org-b", b2, "45000"),
        f"assign:{unowned}": ("org-b", b3, "20000")}
    assert {r["id"]: r["amount"] for r in b_rows if r["kind"] == "total"}["assigned_earlier"] == "60000"
    assert c1 and c3

    for day in (yesterday, today):
        for facility in ("org-a", "org-b"):
            mine = dashboard(fresh_db, day, day, None, facility=facility)["cashless_share"]
            want = totals[(day, facility)]
            assert dashboard_unmatched(mine) == report_unmatched(want), (day, facility)
            assert mine["unmatched_amount"] == (mine["unmatched_assigned_amount"]
                                                + mine["unmatched_refunded_amount"]
                                                + mine["unmatched_waiting_amount"]), (day, facility)
            assert (mine["received_transfer_amount"], mine["refunds"], mine["net"], mine["received_count"]) == (
                want["transfers"], want["refunds"], want["net"], want["payments"]), (day, facility)
            # the facility's district (the EHR's) tells the same story
            district = dashboard(fresh_db, day, day, DISTRICTS[facility], facility_districts=DISTRICTS)
            assert dashboard_unmatched(district["cashless_share"]) == report_unmatched(want), (day, facility)
            # and the dashboard's CSV of it
            header, rows = csv_rows("cashless_share", fresh_db, day, day, None, facility=facility)
            row = dict(zip(header, rows[0], strict=True))
            assert dashboard_unmatched(row) == report_unmatched(want), (day, facility)
        # the province: billing's report of every facility (the admins' queue's 20.000 there only)
        province = dashboard(fresh_db, day, day, None)["cashless_share"]
        assert dashboard_unmatched(province) == report_unmatched(totals[(day, None)])
    # B's takings today: the three assignments; A's: none
    b = dashboard(fresh_db, today, today, None, facility="org-b")["cashless_share"]
    assert (b["transfer_amount"], b["assigned_amount"], b["assigned_count"]) == (125_000, 125_000, 3)
    a = dashboard(fresh_db, today, today, None, facility="org-a")["cashless_share"]
    assert (a["transfer_amount"], a["assigned_amount"], a["unmatched_count"]) == (0, 0, 2)


def _overpaid_earlier(bdb: Any) -> str:
    """Yesterday 150.000 ₫ came to A's account naming no invoice; today A's cashier assigns it to an
    invoice of 100.000 ₫ and gives the 50.000 ₫ overpaid back."""
    from sen_billing.domain import payments

    from tests.billing_support import make_invoice

    key = _transfer(bdb, 150_000, "chuyen tien hom qua", "0011000000001", day_before=True)
    invoice, _ = make_invoice(bdb, 100_000)
    payments.assign_unmatched(bdb, key, invoice, CASHIER_A, ACCOUNTS)
    payments.refund(bdb, f"assign:{key}", 50_000, "trả tiền thừa", CASHIER_A, "shift-1")
    return key


def test_an_overpaid_assignment_of_an_earlier_transfer_is_net_in_of_which_from_earlier_transfers(
        fresh_db: Any, mongo_client: Any) -> None:
    """Today's assignment of yesterday's 150.000 ₫, 50.000 ₫ of it given back: today's assigned 100.000 ₫,
    and of it from earlier transfers 100.000 ₫ (not 150.000 ₫), in billing's daily report and on the
    dashboard alike; the assignment counted once however its events come (the refund's first too)."""
    from tests.billing_support import scratch_db

    today = vn_day_with_room()
    yesterday = today - timedelta(days=1)
    with scratch_db(mongo_client, "oe") as bdb:
        events = _events(bdb, [_overpaid_earlier(bdb)])
        recon = {d: _recon(bdb, d, "org-a")[0] for d in (yesterday, today)}
    assert report_unmatched(recon[today]) == unmatched_figures(earlier=100_000)
    assert (recon[today]["refunds"], recon[today]["net"]) == (50_000, -50_000)
    assert report_unmatched(recon[yesterday]) == unmatched_figures(unmatched=150_000, assigned=150_000)
    for e in events:
        assert record_event(fresh_db, e) is True
    for day in (yesterday, today):
        mine = dashboard(fresh_db, day, day, None, facility="org-a")["cashless_share"]
        assert dashboard_unmatched(mine) == report_unmatched(recon[day]), day
        assert (mine["refunds"], mine["net"]) == (recon[day]["refunds"], recon[day]["net"]), day
    mine = dashboard(fresh_db, today, today, None, facility="org-a")["cashless_share"]
    assert (mine["assigned_amount"], mine["assigned_earlier_amount"], mine["assigned_earlier_count"]) == \
        (100_000, 100_000, 1)
    assert mine["assigned_earlier_amount"] <= mine["assigned_amount"] <= mine["transfer_amount"]
    # both days: the transfer came within them, none from before
    both = dashboard(fresh_db, yesterday, today, None, facility="org-a")["cashless_share"]
    assert (both["assigned_amount"], both["assigned_earlier_amount"]) == (100_000, 0)


def test_facts_stored_before_the_fix_get_the_new_meaning_from_the_rebuild(
        fresh_db: Any, mongo_client: Any) -> None:
    """Billing's older events (an assignment's without ``assignedFromQueue``) and a refund of an
    assignment whose fact was stored before the assignment's (its event came first): the facts read as
    before (A's transfer assigned at B; the refund off no earlier day's assignment) until
    ``python -m sen_portal.rebuild facts``, which links them: then A and B tell billing's story."""
    from sen_billing.domain import payments
    from sen_portal.domain.reporting import INDEXES, sealed_cache
    from sen_portal.rebuild import rebuild_facts
    from sen_shared import mongo

    from tests.billing_support import make_invoice, scratch_db

    mongo.ensure_indexes(fresh_db, INDEXES)
    today = vn_day_with_room()
    yesterday = today - timedelta(days=1)
    with scratch_db(mongo_client, "rb") as bdb:
        moved = _transfer(bdb, 60_000, "chuyen tien hom qua", "0011000000001", day_before=True)
        invoice, _ = make_invoice(bdb, 60_000, facility="org-b")
        payments.assign_unmatched(bdb, moved, invoice, ADMIN, ACCOUNTS)
        events = _events(bdb, [moved, _overpaid_earlier(bdb)])
        recon = {(d, f): _recon(bdb, d, f)[0] for d in (yesterday, today) for f in ("org-a", "org-b")}
    for e in events:
        e["data"].pop("assignedFromQueue", None)  # billing's events from before it
        if e["type"].startswith("vn.sen.billing.payment.refunded"):
            e["data"].pop("assignedFromReceivedAt", None)  # a refund's event from before it said when
    refunds = [e for e in events if e["type"].startswith("vn.sen.billing.payment.refunded")]
    assert len(refunds) == 1
    for e in refunds + [e for e in events if e not in refunds]:  # the refund's event came first
        assert record_event(fresh_db, e) is True

    def told(day: date, facility: str) -> dict[str, int]:
        mine = dashboard(fresh_db, day, day, None, facility=facility)["cashless_share"]
        return dashboard_unmatched(mine)

    # as before the fix: A's transfer assigned at B, the refund off no earlier day's assignment
    assert (told(yesterday, "org-a")["unmatched_assigned"], told(yesterday, "org-b")["unmatched_assigned"]) == \
        (150_000, 60_000)
    assert told(today, "org-a")["assigned_earlier"] == 150_000
    assert rebuild_facts(fresh_db) == 2  # the assignment of A's transfer and the refund
    sealed_cache.clear()
    for day in (yesterday, today):
        for facility in ("org-a", "org-b"):
            assert told(day, facility) == report_unmatched(recon[(day, facility)]), (day, facility)
    assert (told(yesterday, "org-a")["unmatched_assigned"], told(yesterday, "org-b")["unmatched_assigned"]) == \
        (60_000 + 150_000, 0)
    assert told(today, "org-a")["assigned_earlier"] == 100_000
    assert rebuild_facts(fresh_db) == 0  # the new meaning is what the rebuild gives again


def test_a_refund_whose_event_comes_before_its_assignments_is_net_at_once_on_the_real_queue(
        amqp_url: str, base_env: dict[str, str], fresh_db: Any, mongo_client: Any) -> None:
    """Yesterday's 150.000 ₫ assigned today to an invoice of 100.000 ₫, the 50.000 ₫ overpaid given back.
    Billing's refund event says when the assigned transfer came (yesterday, as the assignment's event
    does). The transfer's arrival and the refund go through the real ``portal.reporting`` queue first,
    the assignment's event after: the refund's fact knows its transfer's day before the assignment is
    stored, and once the assignment is in, today's "of which from earlier transfers" is 100.000 ₫ (net,
    billing's figure), with no ``rebuild facts``. (Before, the refund stayed gross: 150.000 ₫.)"""
    from sen_portal.domain.report_facts import ASSIGNMENT, instant
    from sen_portal.domain.reporting import FACTS, INDEXES
    from sen_portal.rebuild import rebuild_facts
    from sen_shared import mongo

    from tests.billing_support import scratch_db
    from tests.integration.reporting_support import through_reporting

    mongo.ensure_indexes(fresh_db, INDEXES)
    today = vn_day_with_room()
    yesterday = today - timedelta(days=1)
    with scratch_db(mongo_client, "ro") as bdb:
        key = _overpaid_earlier(bdb)
        events = _events(bdb, [key])  # each validated against the catalog's schema
        recon = {d: _recon(bdb, d, "org-a")[0] for d in (yesterday, today)}
    assignment = [e for e in events if e["type"].startswith("vn.sen.billing.payment.received")
                  and e["data"]["payment"] == f"assign:{key}"]
    refund = [e for e in events if e["type"].startswith("vn.sen.billing.payment.refunded")]
    assert len(assignment) == 1 and len(refund) == 1 and len(events) == 3
    came = instant(assignment[0]["data"]["assignedFromReceivedAt"])  # to the second; the refund's to the ms
    assert refund[0]["data"]["payment"] == f"assign:{key}" and came is not None
    assert instant(refund[0]["data"]["assignedFromReceivedAt"]).replace(microsecond=0) == came
    assert instant(refund[0]["data"]["paymentReceivedAt"]) != came  # the assignment's time: today, not the transfer's

    first = [e for e in events if e not in assignment]  # the transfer's arrival and the refund
    through_reporting(amqp_url, base_env, fresh_db, first)
    stored = fresh_db[FACTS].find_one({"k": "billing.payment.refunded"})
    assert (stored["outcome"], stored["from_day"]) == ("assigned", yesterday.isoformat())
    assert fresh_db[FACTS].count_documents({ASSIGNMENT: f"assign:{key}"}) == 0  # not stored yet
    through_reporting(amqp_url, base_env, fresh_db, assignment)
    assert fresh_db[FACTS].count_documents({}) == 3

    for day in (yesterday, today):
        mine = dashboard(fresh_db, day, day, None, facility="org-a")["cashless_share"]
        assert dashboard_unmatched(mine) == report_unmatched(recon[day]), day
    mine = dashboard(fresh_db, today, today, None, facility="org-a")["cashless_share"]
    assert (mine["assigned_amount"], mine["assigned_earlier_amount"], mine["refunds"]) == (100_000, 100_000, 50_000)
    assert recon[today]["assigned_earlier"] == 100_000
    assert rebuild_facts(fresh_db) == 0  # nothing left for the rebuild to link
