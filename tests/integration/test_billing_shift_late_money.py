"""Money racing a shift's close is counted once: by the close, or apart as recorded after it (billing on
the real FerretDB).

A webhook takes a transfer's time before its insert, and a cashier's page reads the shift open before
the cash is recorded: either may land after the close read the shift's money, timed within the shift.
Before, such a transfer counted in no shift (its time is before the next shift opened) and the closed
shift said nothing of it. Now the close keeps the ids of what it counted and reads again after its link;
the record reads the closed shifts that count it after its insert; whichever sees the miss claims it
under ``<shift>|<kind>:<payment>`` in the claims refunds racing a close use (``shifts.LATE``), and the
closed shift answers it in ``recordedAfterClose`` (``transfersReceived``, ``cashTaken``, ``payments``).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sen_billing.domain import payments, shifts
from sen_billing.domain.webhooks import Transfer

from tests.billing_support import make_invoice, pay, scratch_db
from tests.integration.shift_support import cashier, closed_link, race_with_close

pytestmark = pytest.mark.integration


@pytest.fixture()
def db(mongo_client):
    with scratch_db(mongo_client, "lm") as database:
        yield database


def test_a_transfer_timed_in_the_shift_but_stored_after_its_close_is_reported_apart(db) -> None:
    """A transfer whose time is the shift's close (inclusive) but whose record became visible only after
    the close read (a slow webhook): its record's check finds the close did not count it, and says so; the
    next shift does not count it either (it came before that one opened); checked again, the same record."""
    thu = cashier()
    shift = shifts.open_shift(db, thu)["id"]
    shifts.close_shift(db, thu, 0, 0)
    link = closed_link(db, shift)
    at = link["closed_at"]
    pid = f"sepay:{uuid.uuid4().hex[:10]}"
    doc = {"_id": pid, "provider": "sepay", "channel": "transfer", "amount": 45_000, "invoice": "inv-x",
           "facility": "org-a", "matched": True, "outcome": "applied", "received_at": at,
           "day": payments.local_day(at), "fd": payments.facility_day("org-a", payments.local_day(at))}
    db[payments.PAYMENTS].insert_one(doc)
    shifts.after_money_in(db, doc)
    shifts.after_money_in(db, doc)
    [listed] = shifts.closed_shifts(db, thu, 1)
    late = listed["recordedAfterClose"]
    assert (late["transfersReceived"], late["cashTaken"], late["cashRefunded"], late["transfersRefunded"]) == (
        45_000, 0, 0, 0)
    assert late["payments"] == [{"payment": pid, "amount": 45_000, "channel": "transfer", "at": payments.iso(at)}]
    assert listed["expected"]["transfersReceived"] == 0
    assert db[shifts.LATE].count_documents({"shift": shift}) == 1
    shifts.open_shift(db, thu)
    assert shifts.expected_totals(db, shifts.current(db, thu), datetime.now(UTC))["transfersReceived"] == 0


def test_a_transfer_after_the_close_is_the_next_shifts_not_recorded_after_the_close(db) -> None:
    """A transfer received after the close is no miss: nothing is claimed, the next shift counts it."""
    thu = cashier()
    shift = shifts.open_shift(db, thu)["id"]
    shifts.close_shift(db, thu, 0, 0)
    shifts.open_shift(db, thu)
    _iid, code = make_invoice(db, 60_000)
    pay(db, code, 60_000)
    assert db[shifts.LATE].count_documents({"shift": shift}) == 0
    assert shifts.expected_totals(db, shifts.current(db, thu), datetime.now(UTC))["transfersReceived"] == 60_000


def test_a_transfer_timed_in_the_closes_millisecond_after_its_instant_is_reported_after_the_close(
        db, monkeypatch) -> None:
    """The close at 12:00:00.500400 and a transfer timed 300 µs after it, in the same millisecond, stored
    after the close had read its money twice: as stored (milliseconds) the transfer is the close's instant,
    within the shift (the daily report names the shift, the periodic repair would report it), so its own
    check after its insert reports it after the close. Before, that check compared the time it held,
    .500700, with the close as stored, .500, and the transfer was in no shift's figures nor after any."""
    base = datetime.now(UTC).replace(microsecond=0)
    clock = [base]

    class Clock(datetime):
        @classmethod
        def now(cls, tz=None):  # noqa: ANN001, ANN206 - datetime.now's signature
            return clock[0]

    monkeypatch.setattr(payments, "datetime", Clock)  # payments.now_utc: the clock of payments and shifts
    thu = cashier()
    _iid, code = make_invoice(db, 45_000)
    shift = shifts.open_shift(db, thu)["id"]
    clock[0] = base + timedelta(microseconds=500_400)
    shifts.close_shift(db, thu, 0, 0)
    clock[0] = base + timedelta(microseconds=500_700)
    paid = pay(db, code, 45_000)
    link = closed_link(db, shift)
    stored = db[payments.PAYMENTS].find_one({"_id": paid["_id"]})
    assert paid["_id"] not in link["counted_transfers"]
    assert [r["payment"] for r in db[shifts.LATE].find({"shift": shift})] == [paid["_id"]]
    assert shifts.recorded_after_close(db, shift)["transfersReceived"] == 45_000
    assert paid["received_at"] == stored["received_at"] == link["closed_at"]  # the time held is the time stored


def test_cash_recorded_after_its_shift_closed_is_reported_apart(db) -> None:
    """Cash whose request read the shift open, recorded after the shift closed: the close's figures stay as
    counted, the closed shift says the cash was recorded after its close."""
    thu = cashier()
    shift = shifts.open_shift(db, thu, 100_000)["id"]
    iid, _code = make_invoice(db, 30_000)
    shifts.close_shift(db, thu, 100_000, 0)
    recorded = payments.record_cash(db, iid, 30_000, thu, shift)
    [listed] = shifts.closed_shifts(db, thu, 1)
    assert listed["expected"]["cashTaken"] == 0
    late = listed["recordedAfterClose"]
    assert (late["cashTaken"], late["transfersReceived"]) == (30_000, 0)
    assert [(p["payment"], p["channel"]) for p in late["payments"]] == [(recorded.payment["_id"], "cash")]


def test_transfers_racing_the_close_are_counted_by_it_or_reported_after_it_once(db) -> None:
    """Eight webhook transfers to the facility's invoices and the close started together, five rounds (the
    close let go after none to four of them): each transfer timed within the shift is in its close's figures
    or recorded after its close, never both, never neither; one timed after the close is in neither; the
    close's figures plus those recorded after it are the shift's figures counted again; and the next shift,
    opened after every transfer of the round, counts none of them (one timed after the close came between
    the two shifts: a shift counts what its facility received while it was open, so no shift counts it;
    before, this test expected the next shift to, and failed whenever a loaded machine let a transfer take
    its time after the close's)."""
    for before in range(5):
        thu = cashier()
        codes = [make_invoice(db, 100_000)[1] for _ in range(8)]
        shift = shifts.open_shift(db, thu)["id"]
        paid = race_with_close(db, thu, [lambda c=c: pay(db, c, 10_000) for c in codes], before)
        link = closed_link(db, shift)
        counted = set(link["counted_transfers"])
        late = {r["payment"] for r in db[shifts.LATE].find({"shift": shift})}
        assert not counted & late
        within = set()
        for p in paid:
            mine = shifts._aware(p["received_at"]) <= shifts._aware(link["closed_at"])
            assert (p["_id"] in counted or p["_id"] in late) == mine, (p["_id"], p["received_at"], link["closed_at"])
            if mine:
                within.add(p["_id"])
        again = shifts.expected_totals(db, link, link["closed_at"])
        after = shifts.recorded_after_close(db, shift) or {"transfersReceived": 0}
        assert again["transfersReceived"] == link["expected"]["transfersReceived"] + after["transfersReceived"]
        assert again["transfersReceived"] == 10_000 * len(within)
        nxt = shifts.open_shift(db, thu)
        in_next = shifts.expected_totals(db, shifts.current(db, thu), datetime.now(UTC))["transfersReceived"]
        assert in_next == 0, nxt
        shifts.close_shift(db, thu, 0, in_next)


OLD_COLUMNS = ["kind", "time", "id", "provider", "channel", "invoice", "facility", "amount", "matched", "outcome",
               "reference", "cashier", "shift", "note", "facility_name", "cashier_name", "shift_opened_at",
               "refunded_amount", "refunded_at", "shift_cashier_name", "bank_reference", "assigned_to",
               "assigned_at", "expected_cash", "counted_cash", "cash_difference", "expected_transfers",
               "counted_transfers", "transfers_difference"]


def test_the_daily_csv_marks_the_money_recorded_after_a_close(db) -> None:
    """The chief cashier's day: a transfer and a cash refund recorded after Thu's close (each racing it) say
    so on their rows (``recorded_after_close``: the shift whose close missed them); the shift's row says how
    much came and went so (``after_close_cash``, ``after_close_transfers``: nets), beside its figures as
    counted; a row counted by its close has no mark. The CSV's columns before these are as they were."""
    import csv
    import io

    from sen_billing.domain import reconciliation

    from tests.support import vn_day_with_room

    today = vn_day_with_room()
    thu = cashier()
    shift = shifts.open_shift(db, thu, 100_000)["id"]
    _iid, code = make_invoice(db, 100_000)
    counted = pay(db, code, 125_000)  # 25.000 ₫ over: given back in cash below, after the close
    shifts.close_shift(db, thu, 100_000, 125_000)
    payments.refund(db, counted["_id"], None, "Trả tiền mặt", thu, shift)  # the shift read before the close
    link = closed_link(db, shift)
    at = link["closed_at"]
    slow = {"_id": f"payos:{uuid.uuid4().hex[:10]}", "provider": "payos", "channel": "transfer", "amount": 45_000,
            "invoice": "inv-x", "facility": "org-a", "matched": True, "outcome": "applied", "received_at": at,
            "day": payments.local_day(at), "fd": payments.facility_day("org-a", payments.local_day(at))}
    db[payments.PAYMENTS].insert_one(slow)
    shifts.after_money_in(db, slow)

    rows = reconciliation.rows(db, today, "org-a")
    marks = {(r["kind"], r["id"]): r.get("recorded_after_close", "") for r in rows}
    assert marks[("payment", slow["_id"])] == shift and marks[("refund", counted["_id"])] == shift
    assert marks[("payment", counted["_id"])] == ""
    [row] = [r for r in rows if r["kind"] == "shift"]
    assert (row["after_close_cash"], row["after_close_transfers"]) == (-25_000, 45_000)
    assert (row["expected_cash"], row["expected_transfers"], row["transfers_difference"]) == (100_000, 125_000, 0)
    text = reconciliation.to_csv(today, rows)
    header = next(csv.reader(io.StringIO(text)))
    assert header[:len(OLD_COLUMNS)] == OLD_COLUMNS
    assert header[len(OLD_COLUMNS):len(OLD_COLUMNS) + 3] == ["recorded_after_close", "after_close_cash",
                                                             "after_close_transfers"]
    written = {(r["kind"], r["id"]): r for r in csv.DictReader(io.StringIO(text))}
    assert written[("payment", slow["_id"])]["recorded_after_close"] == shift
    assert written[("shift", shift)]["after_close_transfers"] == "45000"


def test_a_transfer_whose_check_a_crash_skipped_is_found_by_the_periodic_repair(db, monkeypatch) -> None:
    """A webhook transfer timed in Thu's shift (09:59) is stored after her close (10:00) had read the shift's
    money, and its request stops between the insert and its check (the check skipped once, as a crash would);
    the provider's retry finds the payment there and checks nothing. Before, it stayed in no shift's figures
    and no record after the close, for good; the worker's ``shift-missed`` job (``shifts.repair_missed``)
    records it after the close, once however often it runs, and the next shift does not count it."""
    clock = [datetime(2026, 3, 14, 8, tzinfo=payments.VN)]
    monkeypatch.setattr(payments, "now_utc", lambda: clock[0])
    monkeypatch.setattr(shifts, "now_utc", lambda: clock[0])
    thu = cashier()
    shift = shifts.open_shift(db, thu)["id"]
    _iid, code = make_invoice(db, 100_000)
    clock[0] = clock[0].replace(hour=10)
    shifts.close_shift(db, thu, 0, 0)
    clock[0] = clock[0].replace(hour=9, minute=59)  # the webhook's time, taken before the close

    def crash(db, payment) -> None:  # noqa: ANN001
        raise RuntimeError("the process stopped after the payment's insert")

    transfer = Transfer(provider="standard", transaction_id=uuid.uuid4().hex[:12], amount=40_000,
                        description=f"TT {code}")
    with monkeypatch.context() as m:
        m.setattr(payments, "_after_insert", crash)
        with pytest.raises(RuntimeError):
            payments.record_transfer(db, transfer, inbox_id=uuid.uuid4().hex)
    clock[0] = clock[0].replace(hour=10, minute=1)
    retry = payments.record_transfer(db, transfer, inbox_id=uuid.uuid4().hex)  # the provider's retry
    assert not retry.created
    assert shifts.recorded_after_close(db, shift) is None  # in no close's figures, and said nowhere

    assert shifts.repair_missed(db, clock[0]) == 1
    assert shifts.repair_missed(db, clock[0]) == 0  # claimed once
    [listed] = shifts.closed_shifts(db, thu, 1)
    assert listed["expected"]["transfersReceived"] == 0
    assert listed["recordedAfterClose"]["transfersReceived"] == 40_000
    assert [p["payment"] for p in listed["recordedAfterClose"]["payments"]] == [retry.payment["_id"]]
    shifts.open_shift(db, thu)
    assert shifts.expected_totals(db, shifts.current(db, thu), clock[0])["transfersReceived"] == 0


def test_the_periodic_repair_reports_nothing_a_close_or_a_check_already_did(db) -> None:
    """Counted by the close, or recorded after it by its own check: the repair claims nothing more."""
    thu = cashier()
    shift = shifts.open_shift(db, thu)["id"]
    _iid, code = make_invoice(db, 100_000)
    pay(db, code, 30_000)
    shifts.close_shift(db, thu, 0, 30_000)
    link = closed_link(db, shift)
    late = {"_id": f"sepay:{uuid.uuid4().hex[:10]}", "provider": "sepay", "channel": "transfer", "amount": 5_000,
            "invoice": "inv-x", "facility": "org-a", "matched": True, "outcome": "applied",
            "received_at": link["closed_at"], "day": payments.local_day(link["closed_at"]),
            "fd": payments.facility_day("org-a", payments.local_day(link["closed_at"]))}
    db[payments.PAYMENTS].insert_one(late)
    shifts.after_money_in(db, late)
    assert shifts.repair_missed(db) == 0
    assert db[shifts.LATE].count_documents({"shift": shift}) == 1
