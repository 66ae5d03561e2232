"""A shift's close counts the money sent back during it, through the channel it went back by (billing
on the real FerretDB; review: a refund by transfer in a shift left its close expecting every transfer
in, a false difference the size of the refund).

A refund in cash leaves the drawer of the shift it names (``cashRefunded``, as before); a refund by
transfer leaves the facility's account, whose statement every shift of the facility open then is
checked against (``transfersRefunded``, beside ``transfersReceived``; ``transfers`` their net, as
``cash`` is). The close takes the statement's transfers in and sent back (``countedTransfersRefunded``)
and compares the nets; the daily report names, on a refund by transfer's row, the shifts that count
it, as it does on a transfer's.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from types import SimpleNamespace

import pytest
from sen_billing.domain import payments, reconciliation, shifts
from sen_shared.auth import issue_dev_token
from sen_shared.errors import SenError

from tests.billing_support import billing_app, make_invoice, pay, scratch_db
from tests.integration.shift_support import cashier, closed_link, race_with_close
from tests.support import vn_day_with_room

pytestmark = pytest.mark.integration


@pytest.fixture()
def db(mongo_client):
    with scratch_db(mongo_client, "sr") as database:
        yield database


def _overpaid(db, owed: int, paid: int, facility: str = "org-a") -> dict:  # noqa: ANN001
    """An invoice of ``owed`` paid ``paid`` by transfer (more: a credit to give back); the payment."""
    _iid, code = make_invoice(db, owed, facility)
    return pay(db, code, paid)


def _expected(db, who: SimpleNamespace) -> dict[str, int]:  # noqa: ANN001
    shift = shifts.current(db, who)
    assert shift is not None
    return shifts.expected_totals(db, shift, datetime.now(UTC))


def test_a_refund_by_transfer_in_the_shift_is_expected_off_the_statement(db) -> None:
    """Thu's shift: 150.000 ₫ came for an invoice of 100.000 ₫, and she sent the 50.000 ₫ over back by
    transfer. The statement shows 150.000 ₫ in and 50.000 ₫ out: she closes with those counts and no
    difference, no note needed. Before, the shift expected 150.000 ₫ and the statement's net 100.000 ₫
    was a 50.000 ₫ gap a note had to explain."""
    thu = cashier()
    shifts.open_shift(db, thu, 200_000)
    paid = _overpaid(db, 100_000, 150_000)
    payments.refund(db, paid["_id"], None, "Trả lại tiền chuyển thừa", thu, None)  # no shift: by transfer

    expected = _expected(db, thu)
    assert expected == {"cash": 200_000, "cashTaken": 0, "cashRefunded": 0, "transfers": 100_000,
                        "transfersReceived": 150_000, "transfersRefunded": 50_000}
    closed = shifts.close_shift(db, thu, 200_000, 150_000, counted_transfers_refunded=50_000)
    assert closed["difference"] == {"cash": 0, "transfers": 0}, closed
    assert closed["counted"] == {"cash": 200_000, "transfers": 100_000, "transfersReceived": 150_000,
                                 "transfersRefunded": 50_000}
    assert closed["expected"]["transfersRefunded"] == 50_000


def test_the_close_without_the_refund_counted_shows_the_difference(db) -> None:
    """A statement counted as 150.000 ₫ in and nothing sent back, with a refund by transfer of 50.000 ₫
    recorded: that is a difference of +50.000 ₫ (a note must say why), not a silent match."""
    thu = cashier()
    shifts.open_shift(db, thu)
    paid = _overpaid(db, 100_000, 150_000)
    payments.refund(db, paid["_id"], None, "Trả lại tiền chuyển thừa", thu, None)
    with pytest.raises(SenError) as refused:
        shifts.close_shift(db, thu, 0, 150_000)
    assert refused.value.status == 422 and refused.value.extra["difference"] == {"cash": 0, "transfers": 50_000}


def test_refunds_before_or_after_a_shift_or_of_another_facility_are_not_its_own(db) -> None:
    """A refund by transfer before the shift opened, one after it closed and one of another facility's
    account are none of its figures; the one after is the next shift's."""
    thu = cashier()
    before = _overpaid(db, 100_000, 130_000)
    payments.refund(db, before["_id"], None, "Trước ca", thu, None)  # 30.000 ₫ out before the shift
    shifts.open_shift(db, thu)
    during = _overpaid(db, 100_000, 120_000)
    payments.refund(db, during["_id"], None, "Trong ca", thu, None)  # 20.000 ₫ out in the shift
    other = _overpaid(db, 100_000, 110_000, facility="org-b")
    payments.refund(db, other["_id"], None, "Cơ sở khác", cashier("org-b"), None)  # org-b's account
    assert _expected(db, thu)["transfersRefunded"] == 20_000
    closed = shifts.close_shift(db, thu, 0, 120_000, counted_transfers_refunded=20_000)
    assert closed["difference"] == {"cash": 0, "transfers": 0}, closed
    after = _overpaid(db, 100_000, 105_000)
    payments.refund(db, after["_id"], None, "Sau ca", thu, None)  # 5.000 ₫ out after the close
    link = db[shifts.SHIFTS].find_one({"shift": closed["id"], "state": "closed"})
    # the closed shift, counted again up to its close, still does not count the refund made after it
    assert shifts.expected_totals(db, link, link["closed_at"])["transfersRefunded"] == 20_000
    shifts.open_shift(db, thu)
    assert _expected(db, thu)["transfersRefunded"] == 0  # 'after' came before this shift too
    late = _overpaid(db, 100_000, 104_000)
    payments.refund(db, late["_id"], None, "Ca sau", thu, None)
    assert _expected(db, thu)["transfersRefunded"] == 4_000
    assert _expected(db, thu)["transfers"] == 104_000 - 4_000


def test_a_cash_refund_comes_off_the_drawer_not_the_statement(db) -> None:
    """A transfer's credit given back in cash at the desk leaves the drawer: expected cash less it, the
    transfers expected as they came (nothing left the account)."""
    thu = cashier()
    shift = shifts.open_shift(db, thu, 100_000)["id"]
    paid = _overpaid(db, 100_000, 125_000)
    payments.refund(db, paid["_id"], None, "Trả tiền mặt tại quầy", thu, shift)
    expected = _expected(db, thu)
    assert expected == {"cash": 75_000, "cashTaken": 0, "cashRefunded": 25_000, "transfers": 125_000,
                        "transfersReceived": 125_000, "transfersRefunded": 0}
    closed = shifts.close_shift(db, thu, 75_000, 125_000)
    assert closed["difference"] == {"cash": 0, "transfers": 0}, closed


def test_the_daily_report_names_the_shifts_that_count_a_refund_by_transfer(db) -> None:
    """The day's CSV counts the same money the same way: a refund by transfer's row names the facility's
    shifts open when it went (as a transfer's row does), a refund before any shift none; the closed shift's
    row expects the net."""
    today = vn_day_with_room()
    thu, an = cashier(), cashier()
    before = _overpaid(db, 100_000, 130_000)
    payments.refund(db, before["_id"], None, "Trước ca", thu, None)
    mine = shifts.open_shift(db, thu)["id"]
    hers = shifts.open_shift(db, an)["id"]
    during = _overpaid(db, 100_000, 120_000)
    payments.refund(db, during["_id"], None, "Trong ca", thu, None)
    shifts.close_shift(db, thu, 0, 120_000, counted_transfers_refunded=20_000)
    rows = reconciliation.rows(db, today, "org-a")
    refunds = {r["id"]: r for r in rows if r["kind"] == "refund"}
    assert refunds[before["_id"]]["shift"] == "" and refunds[before["_id"]]["channel"] == "transfer"
    assert set(refunds[during["_id"]]["shift"].split()) == {mine, hers}
    assert refunds[during["_id"]]["amount"] == -20_000
    [closed] = [r for r in rows if r["kind"] == "shift"]
    assert (closed["expected_transfers"], closed["counted_transfers"], closed["transfers_difference"]) == (
        100_000, 100_000, 0)
    # each shift open then counts it, as it counts the transfer that came: An's too
    assert _expected(db, an)["transfersRefunded"] == 20_000 and _expected(db, an)["transfersReceived"] == 120_000


def test_the_close_api_takes_the_transfers_sent_back(base_env, dev_key, mongo_client, monkeypatch) -> None:
    """``POST /payments/shifts/current/close`` with ``countedTransfersRefunded``: closed with no difference;
    the shift page's ``expected`` names the lines; a negative count is a 400, never a 500."""
    with billing_app(base_env, mongo_client, monkeypatch, "sr") as (client, db):
        sub = f"thu-ngan-{uuid.uuid4().hex[:6]}"
        headers = {"Authorization": "Bearer " + issue_dev_token(dev_key, "cashier", sub=sub, facility="org-a",
                                                                name="Lê Thị Thu"),
                   "Accept": "application/json", "Content-Type": "application/json"}
        assert client.post("/payments/shifts", headers=headers, json={"openingCash": 0}).status_code == 201
        paid = _overpaid(db, 100_000, 150_000)
        r = client.post(f"/payments/{paid['_id']}/refund", headers=headers,
                        json={"reason": "Trả lại tiền chuyển thừa", "method": "transfer"})
        assert r.status_code == 201, r.text
        current = client.get("/payments/shifts/current", headers=headers).json()
        assert (current["expected"]["transfersReceived"], current["expected"]["transfersRefunded"],
                current["expected"]["transfers"]) == (150_000, 50_000, 100_000)
        r = client.post("/payments/shifts/current/close", headers=headers,
                        json={"countedCash": 0, "countedTransfers": 150_000, "countedTransfersRefunded": -1})
        assert r.status_code == 400, r.text
        r = client.post("/payments/shifts/current/close", headers=headers,
                        json={"countedCash": 0, "countedTransfers": 150_000, "countedTransfersRefunded": 50_000})
        assert r.status_code == 200, r.text
        assert r.json()["difference"] == {"cash": 0, "transfers": 0}
        assert r.json()["counted"]["transfersRefunded"] == 50_000


def test_a_cash_refund_recorded_after_its_shift_closed_is_reported_apart(db) -> None:
    """A cash refund whose request read the shift open, recorded after the shift closed (the close read its
    refunds before): the close's figures stay as counted, and the closed shift says the refund was recorded
    after its close (``recordedAfterClose``), once."""
    thu = cashier()
    shift = shifts.open_shift(db, thu, 100_000)["id"]
    paid = _overpaid(db, 100_000, 125_000)
    shifts.close_shift(db, thu, 100_000, 125_000)
    payments.refund(db, paid["_id"], None, "Trả tiền mặt", thu, shift)  # the shift read before the close
    [listed] = shifts.closed_shifts(db, thu, 1)
    assert listed["expected"]["cashRefunded"] == 0 and listed["difference"] == {"cash": 0, "transfers": 0}
    late = listed["recordedAfterClose"]
    assert (late["cashRefunded"], late["transfersRefunded"]) == (25_000, 0)
    assert [r["amount"] for r in late["refunds"]] == [25_000] and late["refunds"][0]["channel"] == "cash"
    shifts.after_refund(db, db[payments.REFUNDS].find_one({"_id": paid["_id"]}))  # again: the same record
    assert db[shifts.LATE_REFUNDS].count_documents({"shift": shift}) == 1


def test_a_refund_by_transfer_timed_in_the_shift_but_stored_after_its_close_is_reported_apart(db) -> None:
    """A refund by transfer whose time is within the shift but whose record became visible only after the close
    read (a slow insert): its record's check finds the close did not count it, and says so."""
    thu = cashier()
    shift = shifts.open_shift(db, thu)["id"]
    closed = shifts.close_shift(db, thu, 0, 0)
    link = closed_link(db, shift)
    at = link["closed_at"]  # within the shift (its close included), as a transfer's at its close
    refund = {"_id": f"payos:{uuid.uuid4().hex[:10]}", "amount": 7_000, "channel": "transfer", "facility": "org-a",
              "shift": None, "at": at, "day": payments.local_day(at), "reason": "chậm"}
    db[payments.REFUNDS].insert_one(refund)
    shifts.after_refund(db, refund)
    [listed] = shifts.closed_shifts(db, thu, 1)
    assert listed["id"] == closed["id"] and listed["recordedAfterClose"]["transfersRefunded"] == 7_000
    assert listed["expected"]["transfersRefunded"] == 0


def test_refunds_racing_the_close_are_counted_by_it_or_reported_after_it_once(db) -> None:
    """Eight refunds (four in cash from the shift's drawer, four by transfer) and the close started together,
    five rounds (the close let go after none to four of them): each refund the shift counts is in its
    close's figures or recorded after its close, never both, never neither; one by transfer after the close
    is in neither (the next shift's); and the close's figures plus those recorded after it are the shift's
    figures counted again."""
    for before in range(5):  # the close starts once this many refunds are recorded: 0 to 4, the others racing it
        thu = cashier()
        paid = [_overpaid(db, 100_000, 100_000 + 1_000 * (i + 1)) for i in range(8)]
        shift = shifts.open_shift(db, thu)["id"]
        race_with_close(db, thu, [lambda i=i, p=p, thu=thu, shift=shift: payments.refund(
            db, p["_id"], None, "Trả lại", thu, shift if i % 2 == 0 else None) for i, p in enumerate(paid)], before)
        link = closed_link(db, shift)
        counted = set(link["counted_refunds"])
        late = {r["refund"] for r in db[shifts.LATE_REFUNDS].find({"shift": shift})}
        assert not counted & late
        for i, p in enumerate(paid):
            r = db[payments.REFUNDS].find_one({"_id": p["_id"]})
            mine = i % 2 == 0 or shifts._aware(r["at"]) <= shifts._aware(link["closed_at"])
            assert (r["_id"] in counted or r["_id"] in late) == mine, (i, r, link["closed_at"])
        again = shifts.expected_totals(db, link, link["closed_at"])
        after = shifts.recorded_after_close(db, shift) or {"cashRefunded": 0, "transfersRefunded": 0}
        assert again["cashRefunded"] == link["expected"]["cashRefunded"] + after["cashRefunded"]
        assert again["transfersRefunded"] == link["expected"]["transfersRefunded"] + after["transfersRefunded"]
