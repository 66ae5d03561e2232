"""Shifts and the day's report at the exact edges of a local day (Asia/Ho_Chi_Minh), on the real FerretDB:
a shift closed at 23:59:59.999 and the next opened at 00:00:00.000, with a transfer received and a refund
by transfer given back at each of those instants (the clock set by the test).

Before, a refund's day was read from another clock reading than its time (``payments.refund`` took
``day`` before the refund's link took ``at``): a refund at 00:00:00.00x could carry the day before, and a
shift opened at 00:00, reading the refunds of its own days, never found it (nor did the day's report).
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta

import pytest
from sen_billing.domain import payments, reconciliation, shifts
from sen_billing.domain.payments import VN

from tests.billing_support import make_invoice, pay, scratch_db
from tests.integration.shift_support import cashier

pytestmark = pytest.mark.integration

DAY = date(2026, 3, 14)
LAST = datetime.combine(DAY, time(23, 59, 59, 999_000), VN)  # 16:59:59.999 UTC
FIRST = datetime.combine(DAY + timedelta(days=1), time.min, VN)  # 17:00:00.000 UTC


@pytest.fixture()
def db(mongo_client):
    with scratch_db(mongo_client, "mn") as database:
        yield database


@pytest.fixture()
def clock(monkeypatch):
    """The time billing reads (``payments.now_utc``, which shifts use too), set by the test."""
    now = [datetime.combine(DAY, time(8), VN)]
    monkeypatch.setattr(payments, "now_utc", lambda: now[0])
    monkeypatch.setattr(shifts, "now_utc", lambda: now[0])
    return now


def _overpaid(db) -> dict:  # noqa: ANN001
    _iid, code = make_invoice(db, 100_000)
    return pay(db, code, 100_000 + 7_000)  # 7.000 ₫ of credit to give back


def test_the_last_and_first_millisecond_of_a_day_count_in_the_shift_open_then(db, clock) -> None:
    thu, an = cashier(name="Lê Thu"), cashier(name="Lê Thu")
    shifts.open_shift(db, thu)  # 08:00
    credit_last, credit_first = _overpaid(db), _overpaid(db)  # 08:00, in Thu's shift
    clock[0] = LAST
    _iid, code = make_invoice(db, 20_000)
    last = pay(db, code, 20_000)
    payments.refund(db, credit_last["_id"], None, "Trả lại", thu, None)  # by transfer, at 23:59:59.999
    closed = shifts.close_shift(db, thu, 0, 2 * 107_000 + 20_000, counted_transfers_refunded=7_000)
    clock[0] = FIRST
    first_shift = shifts.open_shift(db, an)["id"]
    _iid, code = make_invoice(db, 30_000)
    first = pay(db, code, 30_000)
    payments.refund(db, credit_first["_id"], None, "Trả lại", an, None)  # by transfer, at 00:00:00.000

    refund_last = db[payments.REFUNDS].find_one({"payment": credit_last["_id"]})
    refund_first = db[payments.REFUNDS].find_one({"payment": credit_first["_id"]})
    assert (refund_last["day"], refund_first["day"]) == ("2026-03-14", "2026-03-15")
    assert (last["day"], first["day"]) == ("2026-03-14", "2026-03-15")
    # Thu's shift, closed at 23:59:59.999: the transfer and the refund of its last millisecond, nothing after
    assert closed["closedAt"] == "2026-03-14T23:59:59+07:00"
    assert (closed["expected"]["transfersReceived"], closed["expected"]["transfersRefunded"]) == (234_000, 7_000)
    assert closed["difference"] == {"cash": 0, "transfers": 0}
    assert "recordedAfterClose" not in closed
    # An's, opened at 00:00:00.000: the transfer and the refund of that very millisecond
    expected = shifts.expected_totals(db, shifts.current(db, an), FIRST)
    assert (expected["transfersReceived"], expected["transfersRefunded"]) == (30_000, 7_000)
    # each day's report places them on their day, under the shift open then
    rows = {r["id"]: r for r in reconciliation.rows(db, DAY, "org-a") if r["kind"] == "payment"}
    assert rows[last["_id"]]["shift"] == closed["id"] and first["_id"] not in rows
    refunds = {r["id"]: r for r in reconciliation.rows(db, DAY, "org-a") if r["kind"] == "refund"}
    assert set(refunds) == {credit_last["_id"]} and refunds[credit_last["_id"]]["shift"] == closed["id"]
    nxt = {(r["kind"], r["id"]): r for r in reconciliation.rows(db, DAY + timedelta(days=1), "org-a")}
    assert nxt[("payment", first["_id"])]["shift"] == first_shift
    assert nxt[("refund", credit_first["_id"])]["shift"] == first_shift
    assert ("payment", last["_id"]) not in nxt and ("refund", credit_last["_id"]) not in nxt


HANDOVER = datetime.combine(DAY, time(14, 0, 0, 123_000), VN)  # one millisecond: Thu's close, An's opening


def test_a_hand_over_in_one_millisecond_counts_its_instant_in_one_shift(db, clock) -> None:
    """Thu closes and An opens in the same millisecond at one facility; a transfer and a refund by transfer of
    that instant count in Thu's shift only (its close read the money up to its own instant; a shift opened at
    the instant another closed starts after it). Before, both shifts' intervals held it: counted twice."""
    thu, an = cashier(name="Lê Thu"), cashier(name="Lê Thu")
    shifts.open_shift(db, thu)  # 08:00
    credit = _overpaid(db)  # 08:00, in Thu's shift: 107.000 ₫ in, 7.000 ₫ to give back
    clock[0] = HANDOVER
    _iid, code = make_invoice(db, 20_000)
    before = pay(db, code, 20_000)  # at the instant, recorded before the close
    closed = shifts.close_shift(db, thu, 0, 127_000)
    an_shift = shifts.open_shift(db, an)["id"]
    _iid, code = make_invoice(db, 30_000)
    after = pay(db, code, 30_000)  # at the instant, recorded after the close and the opening
    payments.refund(db, credit["_id"], None, "Trả lại", an, None)  # by transfer, at the instant

    assert closed["expected"]["transfersReceived"] == 127_000 and "recordedAfterClose" not in closed
    late = shifts.recorded_after_close(db, closed["id"])  # the instant's money recorded after Thu's close
    assert (late["transfersReceived"], late["transfersRefunded"]) == (30_000, 7_000)
    clock[0] = HANDOVER + timedelta(hours=1)
    expected = shifts.expected_totals(db, shifts.current(db, an), clock[0])
    assert (expected["transfersReceived"], expected["transfersRefunded"]) == (0, 0)  # none of it is An's
    rows = {(r["kind"], r["id"]): r for r in reconciliation.rows(db, DAY, "org-a")}
    for key in (("payment", before["_id"]), ("payment", after["_id"]), ("refund", credit["_id"])):
        assert rows[key]["shift"] == closed["id"], key
    # a transfer a millisecond later is An's alone
    clock[0] = HANDOVER + timedelta(milliseconds=1)
    _iid, code = make_invoice(db, 40_000)
    later = pay(db, code, 40_000)
    assert shifts.expected_totals(db, shifts.current(db, an), clock[0])["transfersReceived"] == 40_000
    row = next(r for r in reconciliation.rows(db, DAY, "org-a") if r["kind"] == "payment" and r["id"] == later["_id"])
    assert row["shift"] == an_shift
