"""A refund of a PAID (balanced) invoice's payment, by a cashier with a reason (issue 15), on the real
FerretDB.

The model: the invoice stays ``balanced`` (its receipt stands, with its number); the refund is its own
money record (``after_settlement``), a link of the invoice's give-backs chain after its ``settle`` link,
in as many parts as it takes (each a link, and its record a link of the payment's refunds:
``refund_links``), never more than the payment in all, the credit of an overpaid invoice given back first. Shifts, the
daily reconciliation and ``billing.payment.refunded`` (outcome ``applied``: a refund of takings on the
dashboard) count it as any refund.

- full and partial refunds after settlement through the API: 201, the invoice balanced, its summary's
  refund rows and its receipt (JSON and print) saying "refunded after payment", a second part of the
  payment 201, one once all of it went back 409, more than is left 422, no reason 422;
- an overpaid invoice: the credit first, then the payments themselves;
- 20 cashiers refunding a third of one payment each at once: exactly three refunds, never more than
  the payment; a cashier who found a colleague's part in flight and lost its record to them gives back
  their own part (the race forced; it gave back 2 of 3 under load); 20 payments of one invoice
  refunded at once: each once, the chain's links all after settle;
- a refund racing the settlement: before the settle link a reversal (the invoice owes it again),
  between the settle link and the settlement's record refused, after it a refund after settlement;
  12 invoices in threads: money given back is never counted by a settlement, and every refund is
  recorded once;
- the cashier's shift, the daily report and the event.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import pytest
from sen_billing.domain import invoice_port, payments, reconciliation, refund_events, refund_links, shifts
from sen_portal.domain.report_facts import money_outcome
from sen_shared.bus.events import event_type
from sen_shared.bus.outbox import entry_event
from sen_shared.errors import Conflict, SenError
from sen_shared.fhir.guarded import Hidden

from tests.billing_support import (
    billing_app,
    cashier_headers,
    make_invoice,
    partly_paid,
    pay,
    race_last_payments,
    refunds_at_once,
    scratch_db,
)
from tests.support import vn_day_with_room

pytestmark = pytest.mark.integration

AN = SimpleNamespace(roles={"cashier"}, facility="org-a", sub="thu-ngan-an", name="Nguyễn Thị An")
OTHER = SimpleNamespace(roles={"cashier"}, facility="org-b", sub="thu-ngan-b", name="Lê Văn Khác")


@pytest.fixture()
def db(mongo_client):
    with scratch_db(mongo_client, "ras") as database:
        yield database



def state(db, iid: str) -> str | None:  # noqa: ANN001
    return invoice_port.lifecycle_state(db, iid)


def headers(dev_key: Path) -> dict[str, str]:
    return cashier_headers(dev_key)


def test_full_and_partial_refunds_of_a_paid_invoice_through_the_api(base_env, mongo_client, monkeypatch,
                                                                     dev_key) -> None:
    with billing_app(base_env, mongo_client, monkeypatch, "ras") as (client, db):
        h = headers(dev_key)
        iid, code = make_invoice(db, 100_000)
        first, second = pay(db, code, 60_000), pay(db, code, 40_000)
        assert state(db, iid) == "balanced"
        number = db["receipts"].find_one({"_id": iid})["number"]
        desk = client.get(f"/payments/invoices/{iid}", headers=h).json()
        assert [(p["refundable"], p["refundableAfterSettlement"]) for p in desk["payments"]] == [
            (0, 60_000), (0, 40_000)]
        url = f"/payments/{first['_id']}/refund"
        # not asked for: the credit only, and there is none (as before)
        credit_only = client.post(url, headers=h, json={"reason": "Thu nhầm", "method": "transfer"})
        assert credit_only.status_code == 409 and credit_only.json()["why"] == "balanced"
        blank = {"reason": " ", "method": "transfer", "afterSettlement": True}
        assert client.post(url, headers=h, json=blank).status_code == 422
        over = client.post(url, headers=h, json={"reason": "Thu nhầm", "amount": 60_001, "method": "transfer",
                                                 "afterSettlement": True})
        assert over.status_code == 422 and over.json()["refundable"] == 60_000
        part = client.post(url, headers=h, json={"reason": "Dịch vụ không thực hiện", "amount": 25_000,
                                                 "method": "transfer", "afterSettlement": True})
        assert part.status_code == 201, part.text
        assert part.json()["amount"] == 25_000 and part.json()["afterSettlement"] is True
        too_much = client.post(url, headers=h, json={"reason": "lại", "amount": 35_001, "method": "transfer",
                                                     "afterSettlement": True})
        assert too_much.status_code == 422 and too_much.json()["refundable"] == 35_000, too_much.text
        rest = client.post(url, headers=h, json={"reason": "lại", "amount": 35_000, "method": "transfer",
                                                 "afterSettlement": True})
        assert rest.status_code == 201 and rest.json()["amount"] == 35_000 and rest.json()["n"] == 2, rest.text
        again = client.post(url, headers=h, json={"reason": "lại", "amount": 1_000, "method": "transfer",
                                                  "afterSettlement": True})
        assert again.status_code == 409 and "refunded already" in again.json()["detail"]
        whole = client.post(f"/payments/{second['_id']}/refund", headers=h,
                            json={"reason": "Thu hai lần", "method": "transfer", "afterSettlement": True})
        assert whole.status_code == 201 and whole.json()["amount"] == 40_000
        # the invoice stays balanced, its receipt stands with its number; the refunds are beside it
        assert state(db, iid) == "balanced" and invoice_port.get(db, iid).status == "balanced"
        desk = client.get(f"/payments/invoices/{iid}", headers=h).json()
        assert desk["status"] == "balanced" and desk["paid"] == 100_000 and desk["credit"] == 0
        assert desk["refunded"] == 100_000 and [p["refundable"] for p in desk["payments"]] == [0, 0]
        assert [p["refunded"] for p in desk["payments"]] == [60_000, 40_000]
        assert not any("refundableAfterSettlement" in p for p in desk["payments"])
        assert [(r["amount"], r["reason"], r.get("afterSettlement")) for r in desk["refunds"]] == [
            (25_000, "Dịch vụ không thực hiện", True), (35_000, "lại", True), (40_000, "Thu hai lần", True)]
        receipt = client.get(f"/payments/receipts/{iid}", headers=h).json()
        assert receipt["number"] == number and receipt["refunded"] == 100_000 and receipt["credit"] == 0
        assert all(r.get("afterSettlement") for r in receipt["refunds"]) and len(receipt["refunds"]) == 3
        printed = client.get(f"/payments/receipts/{iid}/html", headers=h).text
        assert printed.count("Đã hoàn sau thanh toán") == 3 and "Dịch vụ không thực hiện" in printed
        # the chain: settle, then the refunds in the order they were decided
        links = invoice_port.givebacks(db, iid)
        assert [(link["state"], link.get("payment")) for link in links] == [
            ("settle", None), ("refund", first["_id"]), ("refund", first["_id"]), ("refund", second["_id"])]
        # the payment's refunds: link 1 under its id, link 2 beside it, the running total on each
        assert [(r["_id"], r["n"], r["total"]) for r in refund_links.chain(db, first["_id"])] == [
            (first["_id"], 1, 25_000), (f"refund2:{first['_id']}", 2, 60_000)]


def test_another_facilitys_cashier_cannot_refund_a_paid_invoice(db) -> None:
    _iid, code = make_invoice(db, 50_000)
    paid = pay(db, code, 50_000)
    with pytest.raises(Hidden) as err:  # answered as a payment not held (the handler records the 403)
        payments.refund(db, paid["_id"], None, "Thu nhầm", OTHER, None, after_settlement=True)
    assert err.value.answer.status == 404 and err.value.answer.detail == f"no payment {paid['_id']}"
    assert db["refunds"].count_documents({}) == 0


def test_an_overpaid_invoice_gives_back_its_credit_first_then_the_payments(db) -> None:
    iid, code = make_invoice(db, 50_000)
    first, second = pay(db, code, 30_000), pay(db, code, 30_000)  # 10.000 over
    with pytest.raises(payments.PaymentError) as over:
        payments.refund(db, first["_id"], 20_000, "Thu nhầm", AN, None)
    assert over.value.extra["refundable"] == 10_000  # the credit first
    with pytest.raises(Conflict) as credit_first:
        payments.refund(db, first["_id"], 20_000, "Thu nhầm", AN, None, after_settlement=True)
    assert credit_first.value.extra["why"] == "balanced" and "credit" in credit_first.value.detail
    credit = payments.refund(db, second["_id"], None, "Tiền thừa", AN, None)
    assert credit["amount"] == 10_000 and "afterSettlement" not in credit
    body = payments.invoice_summary(db, iid)
    # the payment that gave back the credit keeps the rest of it refundable after settlement (the gap of
    # session 20: one refund a payment), the other all of it
    assert body["credit"] == 0 and [p.get("refundableAfterSettlement") for p in body["payments"]] == [30_000, 20_000]
    with pytest.raises(Conflict):  # the credit asked for again (a colleague gave it back): not the payment
        payments.refund(db, first["_id"], None, "Tiền thừa", AN, None)
    after = payments.refund(db, first["_id"], None, "Dịch vụ không thực hiện", AN, None, after_settlement=True)
    assert after["amount"] == 30_000 and after["afterSettlement"] is True
    with pytest.raises(payments.PaymentError) as too_much:  # the credit's payment: what is left of it
        payments.refund(db, second["_id"], 20_001, "Hủy dịch vụ", AN, None, after_settlement=True)
    assert too_much.value.status == 422 and too_much.value.extra["refundable"] == 20_000
    rest = payments.refund(db, second["_id"], None, "Hủy dịch vụ", AN, None, after_settlement=True)
    assert rest["amount"] == 20_000 and rest["afterSettlement"] is True and rest["n"] == 2 and rest["total"] == 30_000
    body = payments.invoice_summary(db, iid)
    assert body["status"] == "balanced" and body["refunded"] == 60_000 and body["credit"] == 0
    assert [(p["refunded"], p["refundable"], p.get("refundableAfterSettlement")) for p in body["payments"]] == [
        (30_000, 0, None), (30_000, 0, None)]
    assert [(r["payment"], r["amount"], bool(r.get("afterSettlement"))) for r in body["refunds"]] == [
        (second["_id"], 10_000, False), (first["_id"], 30_000, True), (second["_id"], 20_000, True)]
    with pytest.raises(Conflict) as done:  # nothing left of either
        payments.refund(db, second["_id"], 1, "lại", AN, None, after_settlement=True)
    assert "refunded already" in done.value.detail


def test_twenty_cashiers_each_refunding_a_third_of_one_payment_at_once_give_back_three(db) -> None:
    """20 cashiers at once, each a third of one paid payment after settlement: exactly three refunds
    (three links of the give-backs chain, three of the payment's refunds, each decision recorded once),
    all of the payment and never more; the others refused."""
    _iid, code = make_invoice(db, 90_000)
    paid = pay(db, code, 90_000)
    answers = refunds_at_once(db, paid["_id"], 30_000, after_settlement=True)
    won = [a for a in answers if isinstance(a, dict)]
    assert len(won) == 3 and len(answers) == 20
    assert all(a.status in (409, 422) for a in answers if isinstance(a, SenError))
    records = refund_links.chain(db, paid["_id"])
    assert [(r["n"], r["amount"], r["total"]) for r in records] == [(1, 30_000, 30_000), (2, 30_000, 60_000),
                                                                   (3, 30_000, 90_000)]
    assert all(r["after_settlement"] is True for r in records)
    links = [link for link in invoice_port.givebacks(db, _iid) if link["state"] == "refund"]
    assert len(links) == 3 and sorted(r["decision"] for r in records) == sorted(
        f"invoice_givebacks/{link['_id']}" for link in links)  # each decision recorded once
    assert sorted(w["id"] for w in won) == sorted(r["_id"] for r in records)
    assert sum(r["amount"] for r in db["refunds"].find({})) == 90_000


@pytest.mark.parametrize("after_settlement", [True, False], ids=["after-settlement", "credit"])
def test_a_cashier_who_finds_a_colleagues_part_in_flight_and_loses_its_record_gives_back_their_own(
        db, monkeypatch, after_settlement: bool) -> None:
    """The 20 cashiers' race, its interleaving forced (it gave back 2 of 3 parts under load): An's part is
    decided (her link after settle; or of the credit, 60.000 ₫ of a 90.000 ₫ payment on a 30.000 ₫
    invoice), not recorded yet; Bình reads the chain, finds An's part in flight and sets out to record
    it; An records it first. Bình recorded nothing and his own part was never decided: he gives it back
    (the next link, his reason), not "refunded already" with a part left."""
    from sen_billing.domain import credits

    iid, code = make_invoice(db, 90_000 if after_settlement else 30_000)
    paid = pay(db, code, 90_000)
    binh = SimpleNamespace(roles={"cashier"}, facility="org-a", sub="thu-ngan-binh", name="Trần Văn Bình")
    an_decided, binh_found, an_recorded = threading.Event(), threading.Event(), threading.Event()
    module, name = (payments, "_after_settlement") if after_settlement else (credits, "claim")
    real = getattr(module, name)

    def forced(*args):  # noqa: ANN002 - the decision's step, as refund calls it (``by`` last)
        decided, by = real(*args), args[-1]
        if by["cashier"] == AN.sub:
            an_decided.set()
            assert binh_found.wait(30)  # Bình reads the chain while An's part is in flight
        elif not binh_found.is_set():
            assert decided["cashier"] == AN.sub  # An's part, not recorded yet: Bình sets out to record it
            binh_found.set()
            assert an_recorded.wait(30)  # ... and An records it first
        return decided

    monkeypatch.setattr(module, name, forced)
    answers: dict[str, object] = {}

    def give_back(who: SimpleNamespace, why: str) -> None:
        try:
            answers[who.sub] = payments.refund(db, paid["_id"], 30_000, why, who, None,
                                               after_settlement=after_settlement)
        except SenError as err:
            answers[who.sub] = err
        finally:
            if who is AN:
                an_recorded.set()

    an = threading.Thread(target=give_back, args=(AN, "Dịch vụ không thực hiện"))
    an.start()
    assert an_decided.wait(30)
    give_back(binh, "Thu nhầm")
    an.join(30)
    mine, his = answers[AN.sub], answers[binh.sub]
    assert isinstance(mine, dict) and isinstance(his, dict), answers  # before: his a 409 "refunded already"
    assert (mine["amount"], mine["reason"], mine["n"]) == (30_000, "Dịch vụ không thực hiện", 1)
    assert (his["amount"], his["reason"], his["n"], his["cashier"]) == (30_000, "Thu nhầm", 2, binh.sub)
    assert "startedBy" not in his  # his own part, not An's finished by him
    assert [(r["n"], r["total"]) for r in refund_links.chain(db, paid["_id"])] == [(1, 30_000), (2, 60_000)]
    body = payments.invoice_summary(db, iid)
    assert body["credit"] == 0 and body["refunded"] == 60_000
    assert body["payments"][0].get("refundableAfterSettlement") == 30_000


def test_twenty_payments_of_one_paid_invoice_refunded_at_once_each_once_after_the_settlement(db) -> None:
    iid, code = make_invoice(db, 200_000)
    paid = [pay(db, code, 10_000) for _ in range(20)]
    assert state(db, iid) == "balanced"
    gate = threading.Barrier(20)

    def give_back(p: dict) -> None:
        gate.wait()
        payments.refund(db, p["_id"], None, "Hủy dịch vụ", AN, None, after_settlement=True)

    with ThreadPoolExecutor(20) as pool:
        for f in [pool.submit(give_back, p) for p in paid]:
            f.result()
    assert db["refunds"].count_documents({"invoice": iid}) == 20
    links = invoice_port.givebacks(db, iid)
    assert links[0]["state"] == "settle" and sorted(link["payment"] for link in links[1:]) == sorted(
        p["_id"] for p in paid)
    assert [int(link["n"]) for link in links] == list(range(1, 22))
    assert payments.invoice_summary(db, iid)["refunded"] == 200_000 and state(db, iid) == "balanced"


def test_a_refund_between_the_settle_link_and_the_settlement_is_refused_then_given_after_it(db, monkeypatch) -> None:
    iid, code = make_invoice(db, 60_000)
    first = pay(db, code, 20_000)
    real = payments.settling_payments
    seen: list[BaseException] = []

    def refund_meanwhile(db_, invoice_id, counted, owed):  # noqa: ANN001
        kept = real(db_, invoice_id, counted, owed)  # the settle link claimed, the settlement not recorded
        try:
            payments.refund(db, first["_id"], None, "Thu nhầm", AN, None, after_settlement=True)
        except Conflict as err:
            seen.append(err)
        return kept

    monkeypatch.setattr(payments, "settling_payments", refund_meanwhile)
    pay(db, code, 40_000)
    monkeypatch.setattr(payments, "settling_payments", real)
    assert len(seen) == 1 and seen[0].extra.get("why") == "settling"
    assert db["invoice_balanced"].find_one({"_id": iid})["paid"] == 60_000
    done = payments.refund(db, first["_id"], None, "Thu nhầm", AN, None, after_settlement=True)  # now: after it
    assert done["afterSettlement"] is True and done["amount"] == 20_000 and state(db, iid) == "balanced"


def test_refunds_racing_the_final_payment_in_threads_are_ordered_by_the_chain(db) -> None:
    owed = 60_000
    made = partly_paid(db, 12, owed, 20_000)
    answers: dict[str, str] = {}

    def give_back(iid: str, payment: dict, gate: threading.Barrier) -> None:
        gate.wait()
        after = False
        # refused while the invoice settles: asked again, as a paid invoice's page asks, until a deadline
        # (not a count of tries: on a loaded machine the settling thread may wait its turn for seconds)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                payments.refund(db, payment["_id"], None, "Thu nhầm", AN, None, after_settlement=after)
                answers[iid] = "refunded"
                return
            except Conflict as err:
                if err.extra.get("why") not in ("settling", "balanced"):
                    raise
                after = True
            time.sleep(0.005)
        answers[iid] = "refused"

    race_last_payments(db, made, give_back, 40_000)
    for iid, _code, first in made:
        assert answers[iid] == "refunded"
        [record] = list(db["refunds"].find({"_id": first["_id"]}))
        states = [link["state"] for link in invoice_port.givebacks(db, iid)]
        if record["reverses"]:  # before the settle link: the invoice owes it again, no settlement counted it
            assert states == ["reversal"] or states[0] == "reversal"
            assert state(db, iid) == "issued" and invoice_port.balance_due(db, iid) == 20_000
            assert not record.get("after_settlement")
        else:  # after the settlement: it stands, the refund beside it
            assert states == ["settle", "refund"] and record["after_settlement"] is True
            assert state(db, iid) == "balanced"
            assert db["invoice_balanced"].find_one({"_id": iid})["paid"] == owed


def test_a_refund_after_settlement_counts_in_the_shift_the_day_and_the_event(db) -> None:
    vn_day_with_room()  # what this test pays and reads is of one day in Vietnam (the daily report's)
    iid, code = make_invoice(db, 90_000)
    shift = shifts.open_shift(db, AN, 300_000)["id"]
    cash = payments.record_cash(db, iid, 90_000, AN, shift).payment
    assert state(db, iid) == "balanced"
    payments.refund(db, cash["_id"], 35_000, "Dịch vụ không thực hiện", AN, shift, after_settlement=True)
    totals = shifts.expected_totals(db, shifts.current(db, AN), shifts.datetime.now(shifts.UTC))
    assert totals["cashTaken"] == 90_000 and totals["cashRefunded"] == 35_000 and totals["cash"] == 355_000
    report = reconciliation.rows(db, payments.now_utc().astimezone(payments.VN).date(), "org-a")
    [line] = [r for r in report if r["kind"] == "refund"]
    assert line["amount"] == -35_000 and line["shift"] == shift and line["note"] == "Dịch vụ không thực hiện"
    assert reconciliation.totals(report)["refunds"] == 35_000
    record = db["refunds"].find_one({"_id": cash["_id"]})
    [event] = [e for e in map(entry_event, record["outbox"]) if e["type"] == event_type(refund_events.KIND)]
    data = event["data"]
    assert data["amount"] == 35_000 and data["outcome"] == "applied" and data["channel"] == "cash"
    assert data["invoice"] == f"Invoice/{iid}" and data["facility"] == "Organization/org-a"
    # the dashboard reads it as a refund of takings
    assert money_outcome(refund_events.KIND, data) == "applied"
