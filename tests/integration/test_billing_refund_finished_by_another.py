"""A give-back one cashier started and another finished (billing on the real FerretDB; issue 15).

A give-back is two claims: the decision (a reversal's link in the invoice's give-backs chain, a
credit's link, an unmatched transfer's fate), then the refund's record keyed by the payment. The
first cashier's request dies between the two (simulated by calling the decision's step alone, as
the race tests do); a second cashier's refund of that payment finishes it. Before, the refund was
recorded under the second cashier with the second's reason and nothing said the first had decided
it. Now (``payments.refund``'s docstring): one refund, of the decided amount with the decided
reason; ``cashier`` and ``shift`` the finisher's, who handed the money over, so a cash refund
counts toward the finisher's shift and never the starter's; ``started`` the starter's (cashier,
name, shift, when), shown as ``startedBy`` by the refund's answer, the invoice's summary, the
receipt and the daily report. 20 cashiers finishing one stopped give-back at once: one records
it, the 19 others are told it was refunded already, and only the winner's shift counts it.
"""

from __future__ import annotations

import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import pytest
from sen_billing.domain import credits, invoice_port, payments, receipts, reconciliation, shifts, status
from sen_billing.domain.webhooks import Transfer
from sen_shared.auth import issue_dev_token
from sen_shared.errors import SenError

from tests.billing_support import billing_app, make_invoice, pay, scratch_db
from tests.support import vn_day_with_room

pytestmark = pytest.mark.integration

AN = SimpleNamespace(roles={"cashier"}, facility="org-a", sub="thu-ngan-an", name="Nguyễn Thị An")
BINH = SimpleNamespace(roles={"cashier"}, facility="org-a", sub="thu-ngan-binh", name="Trần Văn Bình")


@pytest.fixture()
def db(mongo_client):
    with scratch_db(mongo_client, "rf") as database:
        yield database



def refunds_of(db, iid: str) -> list[dict]:  # noqa: ANN001
    return list(db[invoice_port.REFUNDS].find({"invoice": iid}, {"outbox": 0}))


def drawer(db, cashier: SimpleNamespace) -> dict[str, int]:  # noqa: ANN001
    shift = shifts.current(db, cashier)
    assert shift is not None
    return shifts.expected_totals(db, shift, shifts.datetime.now(shifts.UTC))


def test_a_reversal_stopped_after_its_link_is_finished_by_another_cashier_under_their_shift(db) -> None:
    """An paid 30.000 ₫ of an invoice owing 39.000 ₫ back (a wrong invoice): her reversal's link is
    claimed, then her request dies. Bình refunds the same payment in cash from his drawer: one refund
    of 30.000 ₫ with An's reason, recorded under Bình and his shift (his drawer is 30.000 ₫ short, hers
    untouched), An named as who started it, Bình's own reason kept beside."""
    today = vn_day_with_room()  # the refund's day in Vietnam: the day's report read below
    iid, code = make_invoice(db, 39_000)
    paid = pay(db, code, 30_000)
    an_shift = shifts.open_shift(db, AN, 500_000)["id"]
    binh_shift = shifts.open_shift(db, BINH, 200_000)["id"]
    link = payments._reverse(db, paid, payments._starter(AN, an_shift, 30_000, "Chuyển nhầm hóa đơn"))
    assert (link["cashier"], link["shift"], link["reason"]) == ("thu-ngan-an", an_shift, "Chuyển nhầm hóa đơn")

    answer = payments.refund(db, paid["_id"], None, "Hoàn lại cho người bệnh", BINH, binh_shift)

    [record] = refunds_of(db, iid)
    assert (record["amount"], record["reason"], record["cashier"], record["shift"], record["channel"]) == (
        30_000, "Chuyển nhầm hóa đơn", "thu-ngan-binh", binh_shift, "cash")
    assert record["started"]["cashier"] == "thu-ngan-an" and record["started"]["shift"] == an_shift
    assert record["started"]["cashier_name"] == "Nguyễn Thị An" and record["finish_reason"] == "Hoàn lại cho người bệnh"
    assert answer["cashier"] == "thu-ngan-binh" and answer["cashierName"] == "Trần Văn Bình"
    assert answer["startedBy"]["cashier"] == "thu-ngan-an" and answer["startedBy"]["cashierName"] == "Nguyễn Thị An"
    assert answer["amount"] == 30_000 and answer["reason"] == "Chuyển nhầm hóa đơn"
    # the money left Bình's drawer, not An's
    assert drawer(db, BINH) == {"cash": 170_000, "cashTaken": 0, "cashRefunded": 30_000, "transfers": 0,
                                "transfersReceived": 0, "transfersRefunded": 0}
    assert drawer(db, AN)["cash"] == 500_000 and drawer(db, AN)["cashRefunded"] == 0
    # the invoice owes it again, and its page's refund line names both
    body = payments.invoice_summary(db, iid)
    assert body["paid"] == 0 and body["balanceDue"] == 39_000
    [row] = body["refunds"]
    assert row["cashier"] == "thu-ngan-binh" and row["cashierName"] == "Trần Văn Bình"
    assert row["startedBy"]["cashierName"] == "Nguyễn Thị An"
    # the day's report: the refund under Bình's shift, An in its note
    [line] = [r for r in reconciliation.rows(db, today, "org-a")
              if r["kind"] == "refund"]
    assert line["cashier"] == "thu-ngan-binh" and line["shift"] == binh_shift and line["amount"] == -30_000
    assert line["note"] == "Chuyển nhầm hóa đơn (started by Nguyễn Thị An)"
    # a second refund of it: refunded already
    with pytest.raises(SenError) as err:
        payments.refund(db, paid["_id"], None, "lại", AN, an_shift)
    assert err.value.status == 409


def test_a_credit_give_back_stopped_after_its_link_is_finished_at_the_amount_decided(db) -> None:
    """An decided to give back 6.000 ₫ of an 11.000 ₫ credit in cash, and her request died after the
    credit's link. Bình asks for all that can be refunded of that payment: the refund is An's 6.000 ₫
    (what was decided), from Bình's drawer; 5.000 ₫ of the credit is left; the receipt names both."""
    iid, code = make_invoice(db, 39_000)
    pay(db, code, 30_000)
    over = pay(db, code, 20_000)
    an_shift = shifts.open_shift(db, AN)["id"]
    binh_shift = shifts.open_shift(db, BINH)["id"]
    assert credits.give_back(db, over, 6_000, payments._starter(AN, an_shift, 6_000, "Trả một phần tiền thừa")) == 6_000

    answer = payments.refund(db, over["_id"], None, "Trả tiền thừa", BINH, binh_shift)

    assert answer["amount"] == 6_000 and answer["startedBy"]["cashier"] == "thu-ngan-an"
    [record] = refunds_of(db, iid)
    assert (record["amount"], record["reason"], record["cashier"], record["shift"]) == (
        6_000, "Trả một phần tiền thừa", "thu-ngan-binh", binh_shift)
    assert len(credits.links(db, iid)) == 1
    assert drawer(db, BINH)["cashRefunded"] == 6_000 and drawer(db, AN)["cashRefunded"] == 0
    [row] = credits.money_back(db, 50, None, "org-a")[0]
    assert row["kind"] == "credit" and row["amount"] == 5_000
    view = receipts.receipt_view(db, db[receipts.RECEIPTS].find_one({"_id": iid}))
    [line] = view["refunds"]
    assert (line["amount"], line["started_by"], line["finished_by"]) == (6_000, "Nguyễn Thị An", "Trần Văn Bình")


def test_an_unmatched_transfers_refund_decided_by_one_admin_is_finished_by_another_at_that_amount(db) -> None:
    """An admin decided to give back 20.000 ₫ of a 50.000 ₫ transfer that matched nothing (its fate
    claimed), and the request died; another admin's refund of it records the 20.000 ₫ and both."""
    first = SimpleNamespace(roles={"admin"}, facility=None, sub="admin-1", name="Quản trị Một")
    second = SimpleNamespace(roles={"admin"}, facility=None, sub="admin-2", name="")
    lost = payments.record_transfer(db, Transfer(provider="standard", transaction_id=uuid.uuid4().hex[:12],
                                                 amount=50_000, description="chuyen tien"),
                                    inbox_id=uuid.uuid4().hex).payment
    decided = payments._starter(first, None, 20_000, "Khách chuyển nhầm")
    held = payments._fate_claim(db, lost["_id"], "refunded", decided)
    assert held["fate"] == "refunded"

    answer = payments.refund(db, lost["_id"], None, "Trả lại khách", second, None)

    assert (answer["amount"], answer["reason"], answer["cashier"]) == (20_000, "Khách chuyển nhầm", "admin-2")
    assert answer["startedBy"] == {"cashier": "admin-1", "cashierName": "Quản trị Một",
                                   "at": answer["startedBy"]["at"]}
    assert db[invoice_port.REFUNDS].find_one({"_id": lost["_id"]})["channel"] == "transfer"


def test_a_cashier_finishing_their_own_stopped_give_back_is_not_said_to_be_two(db) -> None:
    iid, code = make_invoice(db, 39_000)
    paid = pay(db, code, 30_000)
    an_shift = shifts.open_shift(db, AN)["id"]
    payments._reverse(db, paid, payments._starter(AN, an_shift, 30_000, "Chuyển nhầm"))
    answer = payments.refund(db, paid["_id"], None, "Chuyển nhầm", AN, an_shift)
    assert "startedBy" not in answer and "finishReason" not in answer
    [record] = refunds_of(db, iid)
    assert record["started"]["cashier"] == "thu-ngan-an" and record["shift"] == an_shift
    assert "startedBy" not in payments.invoice_summary(db, iid)["refunds"][0]


def test_twenty_cashiers_finishing_one_stopped_give_back_at_once_record_it_once_under_the_winner(db) -> None:
    """An's reversal stopped after its link; 20 other cashiers, each in an open shift, refund the
    payment at the same moment. Exactly one refund is recorded (the claim keyed by the payment), of
    An's amount and reason, under the winner and the winner's shift; the 19 others are told it was
    refunded already; across the 21 drawers the money left one, the winner's."""
    iid, code = make_invoice(db, 39_000)
    paid = pay(db, code, 30_000)
    an_shift = shifts.open_shift(db, AN)["id"]
    payments._reverse(db, paid, payments._starter(AN, an_shift, 30_000, "Chuyển nhầm hóa đơn"))
    others = [SimpleNamespace(roles={"cashier"}, facility="org-a", sub=f"thu-ngan-{n}", name=f"Thu ngân {n}")
              for n in range(20)]
    opened = {c.sub: shifts.open_shift(db, c, 100_000)["id"] for c in others}
    barrier = threading.Barrier(len(others))

    def finish(cashier: SimpleNamespace) -> str:
        barrier.wait()
        try:
            payments.refund(db, paid["_id"], None, "Hoàn tiền", cashier, opened[cashier.sub])
            return "ok " + cashier.sub
        except SenError as err:
            return f"{err.status} {err}"

    with ThreadPoolExecutor(len(others)) as pool:
        answers = list(pool.map(finish, others))
    winners = [a.removeprefix("ok ") for a in answers if a.startswith("ok ")]
    assert len(winners) == 1, answers
    losers = [a for a in answers if not a.startswith("ok ")]
    assert all(a.startswith("409 this payment was refunded already") for a in losers), answers
    [record] = refunds_of(db, iid)
    assert (record["amount"], record["reason"], record["cashier"], record["shift"]) == (
        30_000, "Chuyển nhầm hóa đơn", winners[0], opened[winners[0]])
    assert record["started"]["cashier"] == "thu-ngan-an"
    refunded = {c.sub: drawer(db, c)["cashRefunded"] for c in [AN, *others]}
    assert refunded == {sub: (30_000 if sub == winners[0] else 0) for sub in refunded}
    assert len([link for link in invoice_port.givebacks(db, iid) if link.get("state") == invoice_port.REVERSAL]) == 1
    assert [r["amount"] for r in status.summary(db, invoice_port.get(db, iid))["refunds"]] == [30_000]


def test_the_refund_api_answers_who_started_and_who_finished_it(base_env, mongo_client, monkeypatch, dev_key) -> None:
    """Through the JSON API: Bình's ``POST /payments/{id}/refund`` (cash, his shift open) finishing An's
    stopped reversal answers 201 with ``cashier`` Bình and ``startedBy`` An; the invoice's summary says
    the same, and his shift's expected cash is the refund less."""
    with billing_app(base_env, mongo_client, monkeypatch, "rf") as (client, db):
        binh = {"Authorization": "Bearer " + issue_dev_token(dev_key, "cashier", sub="thu-ngan-binh", facility="org-a",
                                                               name="Trần Văn Bình"),
                "Accept": "application/json", "Content-Type": "application/json"}
        iid, code = make_invoice(db, 39_000)
        paid = pay(db, code, 30_000)
        an_shift = shifts.open_shift(db, AN)["id"]
        payments._reverse(db, paid, payments._starter(AN, an_shift, 30_000, "Chuyển nhầm hóa đơn"))
        assert client.post("/payments/shifts", json={"openingCash": 100_000}, headers=binh).status_code == 201
        r = client.post(f"/payments/{paid['_id']}/refund", headers=binh,
                        json={"reason": "Hoàn tiền", "method": "cash"})
        assert r.status_code == 201, r.text
        body = r.json()
        assert (body["amount"], body["reason"], body["cashier"]) == (30_000, "Chuyển nhầm hóa đơn", "thu-ngan-binh")
        assert body["startedBy"]["cashier"] == "thu-ngan-an" and body["finishReason"] == "Hoàn tiền"
        [row] = client.get(f"/payments/invoices/{iid}", headers=binh).json()["refunds"]
        assert row["startedBy"]["cashierName"] == "Nguyễn Thị An" and row["cashier"] == "thu-ngan-binh"
        shift = client.get("/payments/shifts/current", headers=binh).json()
        assert shift["expected"]["cash"] == 70_000 and shift["expected"]["cashRefunded"] == 30_000
