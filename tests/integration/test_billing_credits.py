"""The credit of an overpaid invoice on the list of money to give back (billing on the real FerretDB).

- ``GET /payments/refund-tasks?include=credits``: an invoice paid 50.000 ₫ on 39.000 ₫ owed is a row
  ``kind: credit`` (11.000 ₫, ``invoice-overpaid``, its reference, the patient, since its settlement)
  beside the refund tasks, oldest first under one cursor; another facility's cashier does not see it;
  given back (``POST /payments/{payment}/refund``), it leaves the open list and shows refunded in
  ``state=all``. Without ``include`` the list is the refund tasks alone, as before.
- Two cashiers giving the same credit back at once, through the same payment or through two
  different payments of the invoice: the credit goes back once (12 invoices in threads), and what
  was given back never exceeds the credit (the credit's give-backs chain, ``domain/credits.py``).
- A transfer landing after the settlement counted the others keeps its own refund task: the credit
  row is the settlement's credit alone (each sum listed once).
"""

from __future__ import annotations

import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import pytest
from sen_billing.domain import credits, invoice_port, payments
from sen_shared.auth import issue_dev_token
from sen_shared.errors import SenError

from tests.billing_support import billing_app, make_invoice, pay, scratch_db

pytestmark = pytest.mark.integration

CASHIERS = [SimpleNamespace(roles={"cashier"}, facility="org-a", sub=f"thu-ngan-{i}") for i in (1, 2)]


# every answer a cashier losing a give-back race may get: the money went back (the portal words both so)
GIVEN_BACK = ("this payment was refunded already", credits.NOTHING_LEFT)



def headers(dev_key: Path, facility: str = "org-a", role: str = "cashier") -> dict[str, str]:
    tok = issue_dev_token(dev_key, role, sub=f"{role}-{uuid.uuid4().hex[:6]}", facility=facility)
    return {"Authorization": f"Bearer {tok}", "Accept": "application/json", "Content-Type": "application/json"}


@pytest.fixture()
def db(mongo_client):
    with scratch_db(mongo_client, "cr") as database:
        yield database


def test_an_overpaid_invoice_is_on_the_list_until_its_credit_is_given_back(
        base_env, mongo_client, monkeypatch, dev_key) -> None:
    with billing_app(base_env, mongo_client, monkeypatch, "cr") as (client, db):
        a = headers(dev_key)
        late_iid, late_code = make_invoice(db, 20_000)
        pay(db, late_code, 20_000)
        late = pay(db, late_code, 5_000)  # after it was paid: a refund task, older than the credit
        iid, code = make_invoice(db, 39_000)
        first = pay(db, code, 30_000)
        over = pay(db, code, 20_000)  # 50.000 on 39.000: 11.000 ₫ over
        assert client.get(f"/payments/invoices/{iid}", headers=a).json()["credit"] == 11_000

        plain = client.get("/payments/refund-tasks", headers=a).json()["tasks"]
        assert [t["payment"] for t in plain] == [late["_id"]] and "kind" not in plain[0]  # as before
        r = client.get("/payments/refund-tasks", params={"include": "credits"}, headers=a)
        assert r.status_code == 200, r.text
        rows = r.json()["tasks"]
        assert [(t["kind"], t["amount"]) for t in rows] == [("task", 5_000), ("credit", 11_000)]
        credit = rows[1]
        assert credit["invoice"] == iid and credit["reference"] == code and credit["reason"] == "invoice-overpaid"
        assert credit["credit"] == 11_000 and credit["refunded"] is False and credit["createdAt"].endswith("+07:00")
        assert credit["payment"] == over["_id"]  # the newest payment holding all of it
        assert credit["subject"] and credit["subject"].startswith("Patient/")
        # paged one at a time under one cursor: the task, then the credit, then nothing
        one = client.get("/payments/refund-tasks", params={"include": "credits", "limit": 1}, headers=a).json()
        two = client.get("/payments/refund-tasks", params={"include": "credits", "limit": 1, "after": one["next"]},
                         headers=a).json()
        assert [t["kind"] for t in one["tasks"] + two["tasks"]] == ["task", "credit"] and "next" not in two
        other = client.get("/payments/refund-tasks", params={"include": "credits"},
                           headers=headers(dev_key, "org-b")).json()["tasks"]
        assert other == []
        bad = client.get("/payments/refund-tasks", params={"include": "everything"}, headers=a)
        assert bad.status_code == 400 and bad.headers["Content-Type"].startswith("application/problem+json")

        too_much = client.post(f"/payments/{first['_id']}/refund", headers=a,
                               json={"reason": "Trả tiền thừa", "amount": 12_000, "method": "transfer"})
        assert too_much.status_code == 422, too_much.text
        done = client.post(f"/payments/{credit['payment']}/refund", headers=a,
                           json={"reason": "Trả tiền thừa", "method": "transfer"})
        assert done.status_code == 201, done.text
        assert done.json()["amount"] == 11_000
        # nothing left: through the other payment too
        again = client.post(f"/payments/{first['_id']}/refund", headers=a,
                            json={"reason": "Trả tiền thừa", "method": "transfer"})
        assert again.status_code == 409, again.text
        rows = client.get("/payments/refund-tasks", params={"include": "credits"}, headers=a).json()["tasks"]
        assert [t["kind"] for t in rows] == ["task"]
        every = client.get("/payments/refund-tasks", params={"include": "credits", "state": "all"},
                           headers=a).json()["tasks"]
        assert [(t["kind"], t["refunded"], t["amount"]) for t in every] == [("task", False, 5_000),
                                                                             ("credit", True, 0)]
        assert client.get(f"/payments/invoices/{iid}", headers=a).json()["credit"] == 0
        assert late_iid != iid


def test_a_transfer_after_the_settlement_keeps_its_task_and_the_credit_row_is_the_settlements(db) -> None:
    iid, code = make_invoice(db, 39_000)
    pay(db, code, 45_000)  # 6.000 over, counted by the settlement
    late = pay(db, code, 9_000)  # the invoice is balanced now: a late payment with its task
    rows, _ = credits.money_back(db, 50, None, "org-a")
    assert sorted((r["kind"], r["amount"]) for r in rows) == [("credit", 6_000), ("task", 9_000)]
    assert next(r for r in rows if r["kind"] == "task")["payment"] == late["_id"]


def test_two_cashiers_giving_one_credit_back_at_once_give_it_back_once(db) -> None:
    """12 invoices, each 30.000 + 20.000 on 39.000 (11.000 over); per invoice two cashiers give the
    credit back at the same moment: on even invoices through the same payment, on odd ones through
    the two payments. Exactly one refund goes through; the other is refused (409); the credit is
    given back once, and the list no longer shows it."""
    made = []
    for _ in range(12):
        iid, code = make_invoice(db, 39_000)
        made.append((iid, pay(db, code, 30_000), pay(db, code, 20_000)))
    open_rows, _ = credits.money_back(db, 50, None, "org-a")
    assert sorted(r["invoice"] for r in open_rows) == sorted(i for i, _, _ in made)

    def give(args) -> str:
        key, cashier, barrier = args
        barrier.wait()
        try:
            payments.refund(db, key, None, "Trả tiền thừa", cashier, None)
            return "ok"
        except SenError as err:
            assert str(err).startswith(GIVEN_BACK), err  # the loser is told it went back, whatever it read
            return str(err.status)

    jobs = []
    for n, (_iid, first, second) in enumerate(made):
        barrier = threading.Barrier(2)
        keys = (second["_id"], second["_id"]) if n % 2 == 0 else (first["_id"], second["_id"])
        jobs += [(keys[0], CASHIERS[0], barrier), (keys[1], CASHIERS[1], barrier)]
    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(give, jobs))
    given = {iid: sum(int(r["amount"]) for r in db[invoice_port.REFUNDS].find({"invoice": iid}))
             for iid, _, _ in made}
    assert given == {iid: 11_000 for iid, _, _ in made}
    assert [sorted(outcomes[2 * n:2 * n + 2]) for n in range(len(made))] == [["409", "ok"]] * len(made)
    assert all(len(credits.links(db, iid)) == 1 for iid, _, _ in made)
    assert credits.money_back(db, 50, None, "org-a")[0] == []


def _two_cashiers_refund(db, payment_id: str) -> list[str]:  # noqa: ANN001 - the test database
    """Two cashiers refund the payment at the same moment; their answers, sorted: the amount given back,
    or the refusal as "<status> <message>"."""
    barrier = threading.Barrier(2)

    def give(cashier: SimpleNamespace) -> str:
        barrier.wait()
        try:
            return str(payments.refund(db, payment_id, None, "Trả tiền thừa", cashier, None)["amount"])
        except SenError as err:
            return f"{err.status} {err}"

    with ThreadPoolExecutor(2) as pool:
        return sorted(pool.map(give, CASHIERS))


def test_the_loser_of_a_give_back_race_through_one_payment_is_told_the_credit_went_back(db) -> None:
    """20 rounds of two cashiers giving one credit back through the same payment at once. Whichever
    of billing's reads the loser made before the winner's link or refund landed (the invoice's summary,
    the give-backs chain, the refund's claim), it is told the money went back ("refunded already" or
    the credit given back), never that the invoice had no credit; one refund, of the credit."""
    for _ in range(20):
        iid, code = make_invoice(db, 39_000)
        pay(db, code, 30_000)
        over = pay(db, code, 20_000)
        answers = _two_cashiers_refund(db, over["_id"])
        assert answers[0] == "11000" and answers[1].startswith(tuple(f"409 {g}" for g in GIVEN_BACK)), answers
        assert [int(r["amount"]) for r in db[invoice_port.REFUNDS].find({"invoice": iid})] == [11_000]


def test_a_stopped_give_back_finished_by_two_requests_at_once_is_recorded_once(db) -> None:
    """A give-back that stopped after its credit link and before its refund's record (a crash): two
    other requests for that payment (other cashiers, other keys) finish it at the same moment, 10
    rounds. The refund's record is a claim keyed by the payment: one records the link's amount, the
    other is told it was refunded already; never two refunds of one link."""
    for _ in range(10):
        iid, code = make_invoice(db, 39_000)
        pay(db, code, 30_000)
        over = pay(db, code, 20_000)
        assert credits.give_back(db, over, 11_000) == 11_000  # the link, and then the try stopped
        answers = _two_cashiers_refund(db, over["_id"])
        assert answers[0] == "11000" and answers[1].startswith(tuple(f"409 {g}" for g in GIVEN_BACK)), answers
        assert [int(r["amount"]) for r in db[invoice_port.REFUNDS].find({"invoice": iid})] == [11_000]
        assert len(credits.links(db, iid)) == 1


def test_credits_of_invoices_overpaid_before_they_were_noted_are_backfilled_once(
        db, base_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Three invoices overpaid before credits were noted (their entries removed, as before this
    change): one whose credit was refunded whole then, one part refunded, one untouched. The worker's
    run notes the two with something left (the part refunded shows what is left), once for good."""
    from sen_billing import worker
    from sen_billing.config import settings_from_env

    made = []
    for _ in range(3):
        iid, code = make_invoice(db, 39_000)
        made.append((iid, pay(db, code, 30_000), pay(db, code, 20_000)))
    payments.refund(db, made[0][2]["_id"], None, "Trả tiền thừa", CASHIERS[0], None)
    payments.refund(db, made[1][1]["_id"], 4_000, "Trả một phần", CASHIERS[0], None)
    db[credits.CREDITS].delete_many({})
    db[credits.GIVEBACKS].delete_many({})  # as before the chain: the refunds alone say what went back
    for key, value in {**base_env, "SEN_DB": db.name}.items():
        monkeypatch.setenv(key, value)
    settings = settings_from_env()
    assert worker.backfill_credits_once(settings) == {"credits": 2}
    assert worker.backfill_credits_once(settings) is None  # a second start: not run
    rows, _ = credits.money_back(db, 50, None, "org-a")
    assert sorted((r["invoice"], r["amount"]) for r in rows) == sorted([(made[1][0], 7_000), (made[2][0], 11_000)])
    # what the refunds gave back before the chain still counts: 7.000 left (through the other payment), not 11.000
    with pytest.raises(SenError) as too_much:
        payments.refund(db, made[1][2]["_id"], 8_000, "x", CASHIERS[0], None)
    assert too_much.value.status == 422 and "at most 7000 đồng" in str(too_much.value)
    assert payments.refund(db, made[1][2]["_id"], 7_000, "Trả nốt", CASHIERS[0], None)["amount"] == 7_000
    assert [r["invoice"] for r in credits.money_back(db, 50, None, "org-a")[0]] == [made[2][0]]
