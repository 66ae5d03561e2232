"""A shift's expected totals (``shifts.expected_totals``: the cashier's shift page and its close) on
the real FerretDB read the transfers of the shift's own local days, never the facility's whole
history: with 30 days of transfers before (old ones, recorded before payments carried their day key,
and backfilled), the totals are those of the full scan the look-up was (a reference computed from
every payment of the facility), and what comes back is the shift's days' transfers and its cash
(pymongo's command monitoring). Payments written by the service's paths (a webhook's transfer, an
assignment, cash) carry the key; the backfill, twice at once, makes each record once. The shift
page's daily report reads the refund tasks of its day's payments by their ids, not every task."""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, datetime, time, timedelta
from types import SimpleNamespace

import pytest
from sen_billing.domain import payments, shifts
from sen_billing.domain.payments import PAYMENTS, VN, local_day
from sen_billing.domain.webhooks import Transfer

from tests.billing_support import counted_db, make_invoice
from tests.support import vn_day_with_room

pytestmark = pytest.mark.integration

FACILITY = "org-a"


@pytest.fixture()
def counted(mongo_url: str, mongo_client):
    with counted_db(mongo_url, mongo_client, "st") as (db, reads):
        yield db, reads


def _cashier(facility: str = FACILITY) -> SimpleNamespace:
    return SimpleNamespace(sub=f"tn-{uuid.uuid4().hex[:6]}", facility=facility, roles=["cashier"], name="Lê Thị Thu")


def _old_payment(db, at: datetime, amount: int, facility: str | None = FACILITY, **placed) -> str:
    """A payment as one was recorded before payments carried ``fd`` (its ``day``, no key)."""
    pid = f"payos:{uuid.uuid4().hex[:12]}"
    placed = placed or {"invoice": f"inv-{uuid.uuid4().hex[:8]}", "matched": True, "outcome": "applied"}
    db[PAYMENTS].insert_one({"_id": pid, "provider": "payos", "transaction_id": pid[6:], "channel": "transfer",
                             "amount": amount, "description": "", "received_at": at, "day": local_day(at),
                             "facility": facility, **placed})
    return pid


def _reference(db, shift: dict, until: datetime) -> int:
    """The expected transfers as the full scan gave them: every transfer of the facility."""
    return sum(int(p["amount"]) for p in db[PAYMENTS].find({"facility": shift["facility"], "channel": "transfer"})
               if shifts.shift_transfer(p) and shift["opened_at"] <= p["received_at"] <= until)


def _shift(opened_at: datetime, facility: str = FACILITY) -> dict:
    return {"shift": uuid.uuid4().hex[:16], "facility": facility, "opened_at": opened_at, "opening_cash": 0}


def _backfill_twice_at_once(db) -> int:
    made: list[int] = []
    gate = threading.Barrier(2)

    def run() -> None:
        gate.wait()
        made.append(shifts.backfill_transfer_days(db))

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(made)


def test_a_shifts_expected_transfers_read_its_days_not_the_facilitys_history(counted) -> None:
    db, reads = counted
    today = datetime.combine(vn_day_with_room(), time.min, VN)  # today's payments below are of this day
    # 30 days before today, 12 transfers a day to org-a (counted, late, an unmatched one naming a
    # draft), 3 to org-b, and one unmatched to nobody's invoice: all as recorded before the key
    old = 0
    for k in range(30, 0, -1):
        day = today - timedelta(days=k)
        for i in range(12):
            at = day + timedelta(hours=6, minutes=50 * i)
            if i % 4 == 1:
                _old_payment(db, at, 10_000 + i, late_invoice="inv-x", matched=True, outcome="late-balanced")
            elif i % 4 == 2:
                _old_payment(db, at, 20_000 + i, late_invoice="inv-d", matched=False, outcome="unmatched")
            else:
                _old_payment(db, at, 50_000 + k * 100 + i)
            old += 1
        for i in range(3):
            _old_payment(db, day + timedelta(hours=9, minutes=i), 70_000, facility="org-b")
        _old_payment(db, day + timedelta(hours=10), 5_000, facility=None, invoice=None, matched=False,
                     outcome="unmatched")
    # and cash of earlier shifts (channel cash: never a transfer of a shift)
    for k in range(1, 6):
        db[PAYMENTS].insert_one({"_id": f"cashier:{uuid.uuid4().hex}", "provider": "cashier", "channel": "cash",
                                 "amount": 30_000, "received_at": today - timedelta(days=k, hours=-9),
                                 "day": local_day(today - timedelta(days=k, hours=-9)), "facility": FACILITY,
                                 "shift": "earlier", "invoice": "inv-c", "matched": True, "outcome": "applied"})
    assert _backfill_twice_at_once(db) == old + 30 * 3  # org-a's 30 × 12 and org-b's once, the unowned none
    assert db[shifts.TRANSFER_DAYS].count_documents({}) == old + 30 * 3
    assert shifts.backfill_transfer_days(db) == 0  # again: nothing new

    # today, through the service's paths: a webhook's transfer to an issued invoice, and cash in a shift
    who = _cashier()
    opened = shifts.open_shift(db, who)
    iid, ref = make_invoice(db, 300_000)
    got = payments.record_transfer(db, Transfer("payos", uuid.uuid4().hex[:10], 120_000, f"thanh toan {ref}"),
                                   "inbox-1", seen=False)
    assert got.payment["fd"] == f"{FACILITY}|{today.date().isoformat()}"
    cash = payments.record_cash(db, iid, 40_000, who, opened["id"])
    assert cash.payment["fd"] == got.payment["fd"]
    current = shifts.current(db, who)

    day_3 = today - timedelta(days=3)
    cases = [
        (_shift(day_3 + timedelta(hours=7)), day_3 + timedelta(hours=12)),  # a morning three days ago
        (_shift(day_3 + timedelta(hours=12)), day_3 + timedelta(hours=23, minutes=59)),  # its afternoon
        # across a midnight: the evening before yesterday into yesterday's morning (two days)
        (_shift(today - timedelta(days=2, hours=-18)), today - timedelta(days=1, hours=-10)),
        (current, datetime.now(VN)),  # open now
    ]
    for shift, until in cases:
        reads.commands.clear()
        reads.returned = 0
        reads.on = True
        expected = shifts.expected_totals(db, shift, until)
        reads.on = False
        assert expected["transfers"] == _reference(db, shift, until), (shift, until)
        # payments by the shift (its cash) or by a day key, never by facility; at most the shift's
        # days' transfers come back (12 a day of org-a, old and new) and its cash; the refunds by
        # transfer by their day and facility (none here)
        days = len(shifts.local_days(shift["opened_at"], until))
        assert reads.returned <= days * 12 + 2, (reads.returned, reads.commands)
        assert all(set(flt) in ({"shift"}, {"fd", "channel"}, {"fd"}, {"day", "facility", "channel"})
                   for _cmd, _coll, flt in reads.commands), reads.commands
    assert shifts.expected_totals(db, cases[0][0], cases[0][1])["transfers"] > 0
    now = shifts.expected_totals(db, current, datetime.now(VN))
    assert now == {"cash": 40_000, "cashTaken": 40_000, "cashRefunded": 0, "transfers": 120_000,
                   "transfersReceived": 120_000, "transfersRefunded": 0}
    # the close expects the same, and keeps it
    closed = shifts.close_shift(db, who, 40_000, 120_000)
    assert closed["expected"]["transfers"] == 120_000 and closed["difference"] == {"cash": 0, "transfers": 0}


def test_the_backfill_leaves_the_payments_as_they_were_and_skips_those_with_the_key(counted) -> None:
    db, _reads = counted
    at = datetime.now(UTC) - timedelta(days=2)
    pid = _old_payment(db, at, 90_000)
    before = db[PAYMENTS].find_one({"_id": pid})
    iid, ref = make_invoice(db, 500_000)
    new = payments.record_transfer(db, Transfer("payos", uuid.uuid4().hex[:10], 100_000, f"TT {ref}"), "inbox-2",
                                   seen=False).payment
    assert _backfill_twice_at_once(db) == 1
    assert db[PAYMENTS].find_one({"_id": pid}) == before  # never written again
    assert [d["_id"] for d in db[shifts.TRANSFER_DAYS].find()] == [pid]
    record = db[shifts.TRANSFER_DAYS].find_one({"_id": pid})
    assert record["fd"] == f"{FACILITY}|{local_day(at)}" and record["amount"] == 90_000
    assert new["_id"] not in {d["_id"] for d in db[shifts.TRANSFER_DAYS].find()}


def test_the_days_report_reads_the_refund_tasks_of_its_payments_not_every_task(counted) -> None:
    """The shift page's daily report (``reconciliation.rows``) names a late payment's refund task: read
    by the day's payments' ids, not every task of every facility and day."""
    from sen_billing.domain import invoice_port, reconciliation

    db, reads = counted
    today = datetime.combine(datetime.now(VN).date(), time.min, VN)
    late = dict(late_invoice="inv-x", matched=True, outcome="late-balanced")
    for k in range(20, 0, -1):  # a late transfer with its task on each of 20 days before, two facilities
        for facility in (FACILITY, "org-b"):
            pid = _old_payment(db, today - timedelta(days=k, hours=-9), 10_000, facility=facility, **late)
            invoice_port.refund_task(db, db[PAYMENTS].find_one({"_id": pid}), "inv-x", "balanced")
    mine = _old_payment(db, today + timedelta(hours=8), 15_000, **late)
    invoice_port.refund_task(db, db[PAYMENTS].find_one({"_id": mine}), "inv-x", "balanced")
    counted_too = _old_payment(db, today + timedelta(hours=9), 25_000)  # no task
    reads.commands.clear()
    reads.on = True
    rows = {r["id"]: r for r in reconciliation.rows(db, today.date(), FACILITY)}
    reads.on = False
    assert rows[mine]["note"] == "refund task: invoice-balanced" and rows[counted_too]["note"] == ""
    task_reads = [flt for _cmd, coll, flt in reads.commands if coll == invoice_port.REFUND_TASKS]
    assert task_reads and all(set(flt) == {"_id"} for flt in task_reads), task_reads
    assert len(task_reads) <= 2  # the day's two payments' ids


def test_a_shift_expects_the_transfers_that_reached_its_account_not_the_assignments(counted) -> None:
    """Review 12: a transfer naming no invoice that came before the shift, assigned to an invoice in it, was
    expected on the shift's statement (139.000 ₫ expected, 100.000 ₫ on the statement: a false difference
    at the close), while one that came in the shift and waited was expected nowhere. A shift now expects
    what reached the facility's account while it was open: a transfer to its invoice (counted or late)
    and one to its unmatched queue when it came; never its assignment later. The daily report names the
    shifts on the same rows."""
    from sen_billing.domain import reconciliation

    db, _reads = counted
    accounts = {"0011001234567": FACILITY}

    def transfer(amount: int, note: str) -> dict:
        return payments.record_transfer(db, Transfer("payos", uuid.uuid4().hex[:10], amount, note,
                                                     account="0011001234567"), "inbox", seen=False,
                                        account_facilities=accounts).payment

    before = transfer(39_000, "chuyen tien kham benh")  # came before the shift, no invoice named
    assert before["outcome"] == "unmatched" and before["fd"].startswith(f"{FACILITY}|")
    who = _cashier()
    shifts.open_shift(db, who)
    iid, ref = make_invoice(db, 39_000)
    payments.assign_unmatched(db, before["_id"], iid, who, accounts)  # assigned in the shift: no new money
    waiting = transfer(25_000, "tien xet nghiem")  # came in the shift, waits in the queue
    _, ref2 = make_invoice(db, 100_000)
    paid = transfer(100_000, f"thanh toan {ref2}")  # came in the shift, to an invoice
    shift = shifts.current(db, who)
    expected = shifts.expected_totals(db, shift, datetime.now(VN))["transfers"]
    assert expected == 25_000 + 100_000, expected
    closed = shifts.close_shift(db, who, 0, 125_000)
    assert closed["difference"] == {"cash": 0, "transfers": 0}, closed
    # the daily report names the shift on the rows it counts, not on the assignment's
    rows = {r["id"]: r for r in reconciliation.rows(db, datetime.now(VN).date(), FACILITY,
                                                    account_facilities=accounts) if r["kind"] == "payment"}
    assert rows[waiting["_id"]]["shift"] == shift["shift"] and rows[paid["_id"]]["shift"] == shift["shift"]
    assert rows[f"assign:{before['_id']}"]["shift"] == "" and rows[before["_id"]]["shift"] == ""


def test_the_backfill_gives_a_day_record_to_an_older_transfer_waiting_in_a_facilitys_queue(counted) -> None:
    """An unmatched transfer recorded before payments to a queue carried ``fd`` (review 12: a shift counts it
    when it came) gets its day record from the backfill, under the facility of its queue."""
    db, _reads = counted
    at = datetime.now(UTC) - timedelta(days=1)
    pid = _old_payment(db, at, 39_000, facility=None, invoice=None, matched=False, outcome="unmatched",
                       queue_facility=FACILITY)
    nobody = _old_payment(db, at, 5_000, facility=None, invoice=None, matched=False, outcome="unmatched",
                          queue_facility="")  # an account no facility owns: no shift counts it
    assert shifts.backfill_transfer_days(db) == 1
    record = db[shifts.TRANSFER_DAYS].find_one({"_id": pid})
    assert record["fd"] == f"{FACILITY}|{local_day(at)}" and db[shifts.TRANSFER_DAYS].find_one({"_id": nobody}) is None
    shift = _shift(at - timedelta(minutes=5))
    assert shifts.expected_totals(db, shift, at + timedelta(minutes=5))["transfers"] == 39_000
