"""One payment given back in several refunds (``refund_links``), on the real FerretDB.

Each refund is a link of the payment's refunds (link 1 under the payment's id, as the single record
was; link n ``refund<n>:<payment>``), claimed by an insert, carrying the running total, refused when
the total would pass the payment:

- through the API: two refunds of a late transfer summing to it are both 201 and both count (the
  invoice's summary, the refund task, the money-back list); a third is a 409 problem saying it was
  refunded already; more than is left a 422 naming ``refundable``;
- 20 cashiers at once, each a third of one payment: exactly three refunds, never more than it;
- a cancelled invoice's payment given back in two parts;
- the cashier's shift (its close) counts both cash refunds, the daily CSV has a row for each and
  the late payment's row their sum; each refund its own ``billing.payment.refunded`` with its own id;
- a link 1 made before the chain (no ``payment``, ``n``, ``total``) counts as the first refund.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

import pytest
from sen_billing.domain import invoices, payments, reconciliation, refund_events, refund_links, shifts
from sen_shared.bus.events import event_type
from sen_shared.bus.outbox import entry_event
from sen_shared.errors import SenError

from tests.billing_support import billing_app, cashier_headers, make_invoice, pay, refunds_at_once, scratch_db
from tests.support import vn_day_with_room

pytestmark = pytest.mark.integration

AN = SimpleNamespace(roles={"cashier"}, facility="org-a", sub="thu-ngan-an", name="Nguyễn Thị An")


@pytest.fixture()
def db(mongo_client):
    with scratch_db(mongo_client, "rp") as database:
        yield database


def late_transfer(db, amount: int) -> tuple[str, dict]:  # noqa: ANN001 - the test database
    """A transfer of ``amount`` to an invoice already paid in full: money to give back (a refund task)."""
    iid, code = make_invoice(db, 20_000)
    pay(db, code, 20_000)
    late = pay(db, code, amount)
    assert late["outcome"] == "late-balanced"
    return iid, late


def headers(dev_key: Path) -> dict[str, str]:
    return cashier_headers(dev_key, name="Trần Văn Bình")


def test_two_refunds_of_one_payment_both_count_and_a_third_is_refused(base_env, mongo_client, monkeypatch,
                                                                       dev_key) -> None:
    with billing_app(base_env, mongo_client, monkeypatch, "rpa") as (client, db):
        h = headers(dev_key)
        iid, late = late_transfer(db, 100_000)
        url = f"/payments/{late['_id']}/refund"
        first = client.post(url, headers=h, json={"reason": "Chuyển thừa, trả phần 1", "amount": 40_000,
                                                  "method": "transfer"})
        assert first.status_code == 201, first.text
        assert (first.json()["amount"], first.json()["n"], first.json()["total"]) == (40_000, 1, 40_000)
        assert first.json()["id"] == late["_id"]  # link 1 under the payment's id, as a single refund was
        desk = client.get(f"/payments/invoices/{iid}", headers=h).json()
        [row] = [p for p in desk["payments"] if p["id"] == late["_id"]]
        assert (row["refundable"], row["refunded"]) == (60_000, 40_000)  # the rest is still offered
        open_tasks = client.get("/payments/refund-tasks", headers=h).json()["tasks"]
        [task] = [t for t in open_tasks if t["payment"] == late["_id"]]
        assert (task["refunded"], task["refundedAmount"]) == (False, 40_000)  # open until all went back
        over = client.post(url, headers=h, json={"reason": "lại", "amount": 60_001, "method": "transfer"})
        assert over.status_code == 422 and over.json()["refundable"] == 60_000, over.text
        second = client.post(url, headers=h, json={"reason": "Trả phần còn lại", "amount": 60_000,
                                                   "method": "transfer"})
        assert second.status_code == 201, second.text
        assert (second.json()["n"], second.json()["total"], second.json()["id"]) == (
            2, 100_000, f"refund2:{late['_id']}")
        third = client.post(url, headers=h, json={"reason": "lại", "amount": 1, "method": "transfer"})
        assert third.status_code == 409 and third.headers["content-type"].startswith("application/problem+json")
        assert "refunded already" in third.json()["detail"]
        desk = client.get(f"/payments/invoices/{iid}", headers=h).json()
        [row] = [p for p in desk["payments"] if p["id"] == late["_id"]]
        assert (row["refundable"], row["refunded"]) == (0, 100_000) and desk["refunded"] == 100_000
        assert [(r["payment"], r["amount"], r["reason"], r["n"]) for r in desk["refunds"]] == [
            (late["_id"], 40_000, "Chuyển thừa, trả phần 1", 1), (late["_id"], 60_000, "Trả phần còn lại", 2)]
        assert all(r["cashierName"] == "Trần Văn Bình" for r in desk["refunds"])
        still_open = client.get("/payments/refund-tasks", headers=h).json()["tasks"]
        assert late["_id"] not in {t["payment"] for t in still_open}
        done = client.get("/payments/refund-tasks?state=all", headers=h).json()["tasks"]
        [task] = [t for t in done if t["payment"] == late["_id"]]
        assert (task["refunded"], task["refundedAmount"], [r["amount"] for r in task["refunds"]]) == (
            True, 100_000, [40_000, 60_000])


def test_twenty_refunds_of_a_third_of_one_payment_at_once_exactly_three(db) -> None:
    _iid, late = late_transfer(db, 90_000)
    answers = refunds_at_once(db, late["_id"], 30_000)
    won = [a for a in answers if isinstance(a, dict)]
    assert len(won) == 3 and len(answers) == 20
    assert all(a.status in (409, 422) for a in answers if isinstance(a, SenError))
    links = refund_links.chain(db, late["_id"])
    assert [(r["n"], r["total"]) for r in links] == [(1, 30_000), (2, 60_000), (3, 90_000)]
    assert sum(r["amount"] for r in db["refunds"].find({})) == 90_000  # never more than the payment
    assert sorted(w["id"] for w in won) == sorted(r["_id"] for r in links)


def test_a_cancelled_invoices_payment_given_back_in_two_parts(db) -> None:
    iid, code = make_invoice(db, 100_000)
    part = pay(db, code, 70_000)
    payments.refund(db, part["_id"], None, "Hóa đơn nhầm", AN, None)  # a reversal: whole, the invoice owed again
    with pytest.raises(SenError) as again:
        payments.refund(db, part["_id"], None, "lại", AN, None)
    assert again.value.status == 409
    invoices.cancel(db, iid, "nhập nhầm")
    # a cancelled invoice's payment (a late transfer to it): given back in two parts
    gone = pay(db, code, 30_000)
    assert gone["outcome"] == "late-cancelled"
    payments.refund(db, gone["_id"], 10_000, "phần 1", AN, None)
    payments.refund(db, gone["_id"], 20_000, "phần 2", AN, None)
    body = payments.invoice_summary(db, iid)
    [row] = [p for p in body["payments"] if p["id"] == gone["_id"]]
    assert (row["refunded"], row["refundable"]) == (30_000, 0)


def test_the_shift_the_daily_csv_and_the_events_count_every_refund(db) -> None:
    today = vn_day_with_room()  # what this test pays and reads is of one day in Vietnam (the daily report's)
    _iid, late = late_transfer(db, 90_000)
    shift = shifts.open_shift(db, AN, 200_000)["id"]
    payments.refund(db, late["_id"], 30_000, "phần 1", AN, shift)  # cash, from the drawer
    payments.refund(db, late["_id"], 60_000, "phần 2", AN, shift)
    totals = shifts.expected_totals(db, shifts.current(db, AN), datetime.now(UTC))
    assert totals["cashRefunded"] == 90_000 and totals["cash"] == 110_000
    closed = shifts.close_shift(db, AN, 110_000, totals["transfers"])
    assert closed["expected"]["cashRefunded"] == 90_000 and closed["difference"] == {"cash": 0, "transfers": 0}
    report = reconciliation.rows(db, today, "org-a")
    refunds = [r for r in report if r["kind"] == "refund"]
    assert sorted((r["id"], r["amount"], r["note"]) for r in refunds) == [
        (late["_id"], -60_000, "phần 2"), (late["_id"], -30_000, "phần 1")]
    [row] = [r for r in report if r["kind"] == "payment" and r["id"] == late["_id"]]
    assert row["refunded_amount"] == 90_000
    assert reconciliation.totals(report)["refunds"] == 90_000
    lines = reconciliation.to_csv(today, report).splitlines()
    assert sum(1 for line in lines if line.startswith("refund,")) == 2  # the CSV: a row a refund
    # one billing.payment.refunded a refund, each its own id (link 1's: the payment's, as before)
    kind = event_type(refund_events.KIND)
    events = [e for r in refund_links.chain(db, late["_id"], {"outbox": 1}) for e in map(entry_event, r["outbox"])
              if e["type"] == kind]
    assert [e["data"]["amount"] for e in events] == [30_000, 60_000]
    assert [e["id"] for e in events] == [refund_events.event_id(late["_id"]),
                                          refund_events.event_id(f"refund2:{late['_id']}")]


def test_a_refund_from_before_the_chain_is_its_first_link(db) -> None:
    """A refund recorded before refunds were chained (no ``payment``, ``n`` or ``total``): read as link 1,
    the next refund is link 2 and the total counts both."""
    _iid, late = late_transfer(db, 50_000)
    db["refunds"].insert_one({"_id": late["_id"], "invoice": late["late_invoice"], "amount": 20_000,
                              "reason": "trả trước", "facility": "org-a", "channel": "transfer", "reverses": False,
                              "day": "2026-12-01", "at": datetime.now(UTC)})
    more = payments.refund(db, late["_id"], None, "phần còn lại", AN, None)
    assert (more["amount"], more["n"], more["total"]) == (30_000, 2, 50_000)
    with pytest.raises(SenError) as done:
        payments.refund(db, late["_id"], 1, "lại", AN, None)
    assert done.value.status == 409
