"""Billing's races on the real FerretDB: a cancel against payments, repair jobs in two workers,
and the unmatched-transfer queue read a page at a time.

- A cancel and the payment that settles the invoice race for the same link of the invoice's
  lifecycle chain: exactly one wins. A payment that lands on an invoice being cancelled is kept
  and gets a refund task (the cancel reads the payments after its link; each payment reads the
  chain after its own insert), never dropped, never counted toward a receipt.
- Two workers repairing the same crashed settlements (and a slow winner finishing at the same
  time) give each invoice one receipt number, with no gap in the series, one reconciliation,
  one receipt and one ``billing.invoice.paid``.
"""

from __future__ import annotations

import threading
import time
import uuid
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from contextlib import nullcontext
from datetime import UTC, datetime, timedelta

import pytest
from sen_billing.domain import invoice_port, invoices, payments, receipts
from sen_billing.domain.webhooks import Transfer
from sen_shared.fhir.store import Store

from tests.billing_support import make_invoice, scratch_db

pytestmark = pytest.mark.integration


@pytest.fixture()
def db(mongo_client):
    with scratch_db(mongo_client, "r") as database:
        yield database



def pay(db, code: str, amount: int, tx: str | None = None) -> payments.Recorded:
    transfer = Transfer(provider="standard", transaction_id=tx or uuid.uuid4().hex[:12], amount=amount,
                        description=f"TT {code}")
    return payments.record_transfer(db, transfer, inbox_id=uuid.uuid4().hex)


def resource_status(db, iid: str) -> str:
    return Store(db, service="billing").read_doc("Invoice", iid)["res"]["status"]


def assert_accounted(db, iid: str) -> str:
    """Every payment of the invoice is in exactly one place; the invoice's outcome."""
    state = invoice_port.lifecycle_state(db, iid)
    counted = invoice_port.counted_payments(db, iid)
    late = list(db["payments"].find({"late_invoice": iid}))
    tasks = {t["_id"] for t in db["refund_tasks"].find({"invoice": iid})}
    receipt = db["receipts"].find_one({"_id": iid})
    assert {p["_id"] for p in late} <= tasks, "a late payment without a refund task"
    if state == "cancelled":
        assert receipt is None
        assert {p["_id"] for p in counted} <= tasks, "a payment on a cancelled invoice without a refund task"
        assert resource_status(db, iid) == "cancelled"
    else:
        assert state == "balanced"
        assert receipt is not None and resource_status(db, iid) == "balanced"
        on_receipt = {p["id"] for p in receipt["payments"]}
        # every counted payment is either on the receipt or to give back, never both
        assert {p["_id"] for p in counted} | {p["_id"] for p in late} == on_receipt | tasks
        assert not on_receipt & tasks
    return state


# ------------------------------------------------------------------------------- cancel vs payment

def test_a_payment_between_the_cancels_check_and_its_link_gets_a_refund_task(db, monkeypatch) -> None:
    """The interleaving the old cancel lost: its 'nothing paid' check passes, then the transfer
    settles the invoice in full, then the cancel claims its link."""
    iid, code = make_invoice(db, 70000)
    checked = invoice_port.paid_total

    def check_then_pay(database, invoice_id):
        seen = checked(database, invoice_id)
        pay(db, code, 70000)  # lands right after the check
        return seen

    monkeypatch.setattr(invoices, "paid_total", check_then_pay)
    with pytest.raises(invoices.InvoiceConflict, match="balanced"):  # the settlement won the chain first
        invoices.cancel(db, iid, "nhập nhầm")
    monkeypatch.undo()
    assert assert_accounted(db, iid) == "balanced"
    assert db["refund_tasks"].count_documents({"invoice": iid}) == 0


def test_a_payment_that_read_the_chain_before_the_cancel_is_swept_by_the_cancel(db, monkeypatch) -> None:
    """The other interleaving: the payment is inserted and reads the chain as 'issued' (partial,
    nothing to settle), then the cancel, which checked 'nothing paid' earlier, claims its link:
    the cancel's own sweep finds the payment."""
    iid, code = make_invoice(db, 90000)
    real = invoice_port.paid_total
    monkeypatch.setattr(invoices, "paid_total", lambda database, invoice_id: (real(database, invoice_id),
                                                                               pay(db, code, 30000))[0])
    invoices.cancel(db, iid, "bệnh nhân đổi ý")
    monkeypatch.undo()
    assert assert_accounted(db, iid) == "cancelled"
    summary = payments.invoice_summary(db, iid)
    assert (summary["status"], summary["paid"], summary["balanceDue"], summary["credit"]) == ("cancelled", 30000,
                                                                                            0, 30000)
    assert [t["reason"] for t in summary["refundTasks"]] == ["invoice-cancelled"]


def test_a_payment_between_the_cancels_mark_and_its_link_settles_and_the_cancel_fails(db, monkeypatch) -> None:
    """The payment sees the cancel's mark, reads the chain (still issued) and settles: the
    settlement takes the link the cancel wanted, so the cancel fails."""
    iid, code = make_invoice(db, 50000)
    real = invoice_port.mark_cancel
    monkeypatch.setattr(invoice_port, "mark_cancel", lambda database, invoice_id: (real(database, invoice_id),
                                                                                  pay(db, code, 50000))[0])
    with pytest.raises(invoices.InvoiceConflict, match="balanced"):
        invoices.cancel(db, iid, "nhập nhầm")
    monkeypatch.undo()
    assert assert_accounted(db, iid) == "balanced"
    assert payments.invoice_summary(db, iid)["paid"] == 50000  # the mark counts for nothing


def test_a_payment_after_the_cancelled_link_gets_its_refund_task_itself(db, monkeypatch) -> None:
    iid, code = make_invoice(db, 50000)
    real = invoice_port.route_to_refunds
    late: list[str] = []

    def sweep_late(database, invoice_id, why, payments_=None):
        late.append(pay(db, code, 20000).payment["_id"])  # after the link, before the cancel's sweep
        return real(database, invoice_id, why, payments_)

    monkeypatch.setattr(invoice_port, "route_to_refunds", sweep_late)
    invoices.cancel(db, iid, "nhập nhầm")
    monkeypatch.undo()
    assert assert_accounted(db, iid) == "cancelled"
    assert db["refund_tasks"].find_one({"_id": late[0]})["reason"] == "invoice-cancelled"


def test_a_cancel_never_succeeds_on_an_invoice_a_payment_balanced(db) -> None:
    iid, code = make_invoice(db, 40000)
    pay(db, code, 40000)
    with pytest.raises(invoices.InvoiceConflict):
        invoices.cancel(db, iid, "muộn")
    assert assert_accounted(db, iid) == "balanced"


@pytest.mark.parametrize("parts", [1, 3])
def test_cancels_racing_payments_in_threads_lose_nothing(db, parts: int) -> None:
    """12 invoices; for each, a cancel and ``parts`` payments (together the amount owed) start at
    once. Whatever wins, every payment is on the receipt or has a refund task, and the invoice
    is either balanced (every cancel failed) or cancelled (no receipt)."""
    owed = 60000
    made = [make_invoice(db, owed) for _ in range(12)]
    outcomes: dict[str, list[str]] = {iid: [] for iid, _ in made}

    def cancel(iid: str, gate: threading.Barrier) -> None:
        gate.wait()
        try:
            invoices.cancel(db, iid, "hủy")
            outcomes[iid].append("cancelled")
        except invoices.InvoiceConflict:
            outcomes[iid].append("refused")

    def payment(code: str, gate: threading.Barrier) -> None:
        gate.wait()
        pay(db, code, owed // parts)

    with ThreadPoolExecutor(2 * (parts + 1)) as pool:
        futures = []
        for iid, code in made:
            gate = threading.Barrier(parts + 1)
            futures.append(pool.submit(cancel, iid, gate))
            futures += [pool.submit(payment, code, gate) for _ in range(parts)]
        for f in futures:
            f.result()
    for iid, _ in made:
        state = assert_accounted(db, iid)
        assert db["payments"].count_documents({"$or": [{"invoice": iid}, {"late_invoice": iid}],
                                               "marker": {"$exists": False}}) == parts  # none lost
        assert outcomes[iid] == (["cancelled"] if state == "cancelled" else ["refused"])
    # any settlement record of a cancelled invoice is finished as void (the repair job finds none)
    assert receipts.repair_settlements(db, older_than=timedelta(0)) == 0


# ------------------------------------------------------------------------------- repair in two workers

def _crashed_settlement(db, owed: int) -> str:
    """An invoice paid in full whose settlement winner died right after its claim."""
    iid, _ = make_invoice(db, owed)
    now = datetime.now(UTC)
    db["payments"].insert_one({"_id": f"standard:crash-{iid}", "provider": "standard", "channel": "transfer",
                               "amount": owed, "invoice": iid, "matched": True, "outcome": "applied",
                               "received_at": now, "day": "2025-03-14", "facility": "org-r"})
    db["invoice_balanced"].insert_one({"_id": iid, "facility": "org-r", "paid": owed, "owed": owed,
                                       "channel": "transfer", "payments": [f"standard:crash-{iid}"],
                                       "done": False, "at": now - timedelta(minutes=5)})
    return iid


def test_two_workers_repairing_at_once_give_one_receipt_number_each_without_gaps(db) -> None:
    made = [_crashed_settlement(db, 10000 + i) for i in range(8)]
    # a slow winner finishing its own settlement while two workers' repair jobs run
    slow = made[0]
    record = db["invoice_balanced"].find_one({"_id": slow})
    view = invoice_port.get(db, slow)
    gate = threading.Barrier(3)

    def worker() -> int:
        gate.wait()
        return receipts.repair_settlements(db)

    def winner() -> None:
        gate.wait()
        receipts._settle_claimed(db, view, record, fresh=True)

    with ThreadPoolExecutor(3) as pool:
        jobs = [pool.submit(worker), pool.submit(worker), pool.submit(winner)]
        for job in jobs:
            job.result()
    # the series of the settlements' year in Vietnam (receipts._settle; from 17:00 UTC on 31 December
    # that is the next year), not the year in UTC
    [year] = {(b["at"] if b["at"].tzinfo else b["at"].replace(tzinfo=UTC)).astimezone(payments.VN).year
              for b in db["invoice_balanced"].find({"_id": {"$in": made}})}
    numbers = list(db["receipt_numbers"].find({"k": f"receipt:org-a:{year}"}))
    by_invoice: dict[str, list[int]] = {}
    for link in numbers:
        by_invoice.setdefault(link["invoice"], []).append(link["n"])
    assert sorted(by_invoice) == sorted(made)
    assert all(len(ns) == 1 for ns in by_invoice.values()), by_invoice
    assert sorted(n for ns in by_invoice.values() for n in ns) == list(range(1, len(made) + 1))  # no gap
    for iid in made:
        receipt = db["receipts"].find_one({"_id": iid})
        assert receipt is not None and receipt["number"].endswith(f"{by_invoice[iid][0]:06d}")
        assert db["receipts"].count_documents({"_id": iid}) == 1
        assert len(receipt["outbox"]) == 1  # one billing.invoice.paid
        assert Store(db, service="billing").read_doc("PaymentReconciliation", f"pr-{iid}")["res"][
            "paymentIdentifier"]["value"] == receipt["number"]
        assert assert_accounted(db, iid) == "balanced"
    assert receipts.repair_settlements(db) == 0



# ------------------------------------------------------------------------------- receipt numbers from a hint

def _series(db, chain: str) -> dict[int, str]:
    return {link["n"]: link["invoice"] for link in db["receipt_numbers"].find({"k": chain})}


def _taken_elsewhere(db, chain: str, numbers: range) -> None:
    """Links claimed by another process (its own invoices), behind this process's back."""
    for n in numbers:
        db["receipt_numbers"].insert_one({"_id": f"{chain}/{n}", "k": chain, "n": n,
                                          "invoice": f"other-{n}", "facility": "org-h"})


@pytest.fixture()
def own_hint_only(monkeypatch):
    """This process's settlers claim from its own hint only, without the machine's turn (the
    other processes these tests play are on other machines)."""
    monkeypatch.setattr(receipts, "_host_turn", lambda key, server: nullcontext())


def test_a_receipt_number_claimed_from_a_stale_hint_follows_the_newest_without_gaps(db, own_hint_only) -> None:
    year, chain = 2031, "receipt:org-h:2031"
    key = f"{db.name}/{chain}"
    assert receipts._receipt_number(db, "org-h", "inv-1", year, fresh=True) == "ORG-H-2031-000001"
    _taken_elsewhere(db, chain, range(2, 4))  # the hint (1) is recent but two numbers behind
    assert receipts._receipt_number(db, "org-h", "inv-4", year, fresh=True) == "ORG-H-2031-000004"
    _taken_elsewhere(db, chain, range(5, 40))  # far behind: two lost claims, then the chain is read
    assert receipts._receipt_number(db, "org-h", "inv-40", year, fresh=True) == "ORG-H-2031-000040"
    receipts._seen_at[key] -= receipts.HINT_TRUSTED_SECONDS  # an old hint is read before the claim
    _taken_elsewhere(db, chain, range(41, 43))
    assert receipts._receipt_number(db, "org-h", "inv-43", year, fresh=True) == "ORG-H-2031-000043"
    series = _series(db, chain)
    assert sorted(series) == list(range(1, 44))  # no gap, no number twice
    assert [series[n] for n in (1, 4, 40, 43)] == ["inv-1", "inv-4", "inv-40", "inv-43"]


def test_an_invoice_whose_number_another_settler_took_keeps_that_number(db) -> None:
    year, chain = 2032, "receipt:org-h:2032"
    _taken_elsewhere(db, chain, range(1, 3))
    db["receipt_numbers"].insert_one({"_id": f"{chain}/3", "k": chain, "n": 3, "invoice": "inv-r",
                                      "facility": "org-h"})  # a repair job's, this invoice's
    _taken_elsewhere(db, chain, range(4, 6))
    key = f"{db.name}/{chain}"
    receipts._remember(key, 1)  # recent: the claim of 2 is lost, 3's holder is this invoice
    assert receipts._receipt_number(db, "org-h", "inv-r", year, fresh=True) == "ORG-H-2032-000003"
    receipts._remember(key, 5)  # 6 is free: the unique (invoice, chain) index refuses it
    assert receipts._receipt_number(db, "org-h", "inv-r", year, fresh=True) == "ORG-H-2032-000003"
    assert receipts._receipt_number(db, "org-h", "inv-n", year, fresh=True) == "ORG-H-2032-000006"
    assert sorted(_series(db, chain)) == list(range(1, 7))
    assert db["receipt_numbers"].count_documents({"invoice": "inv-r"}) == 1


def test_a_lost_receipt_number_claim_is_followed_by_the_next_claim_without_a_read(db, monkeypatch) -> None:
    """The other process took the next number since this one's hint: its link refuses the claim, and
    the number after it is claimed at once (no read of the holder, none of the chain)."""
    from pymongo.collection import Collection

    year, chain = 2034, "receipt:org-h:2034"
    assert receipts._receipt_number(db, "org-h", "inv-1", year, fresh=True) == "ORG-H-2034-000001"
    _taken_elsewhere(db, chain, range(2, 3))  # the hint (1) is recent, one number behind
    reads: list[str] = []
    real = Collection.find_one

    def find_one(self, *args, **kwargs):
        reads.append(self.name)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Collection, "find_one", find_one)
    assert receipts._receipt_number(db, "org-h", "inv-3", year, fresh=True) == "ORG-H-2034-000003"
    assert reads == []
    monkeypatch.undo()
    assert sorted(_series(db, chain)) == [1, 2, 3]


def test_settlers_of_many_processes_at_once_take_one_number_each_without_gaps(db, monkeypatch,
                                                                           own_hint_only) -> None:
    """Threads without this process's per-chain lock (nor the machine's turn) race for the links as
    processes of several machines do."""
    class NoLock(dict):
        def setdefault(self, key, default=None):
            return threading.Lock()  # a lock of its own each: nothing serialises the claims

    monkeypatch.setattr(receipts, "_chain_locks", NoLock())
    year, chain = 2033, "receipt:org-h:2033"
    gate = threading.Barrier(12)

    def settle(i: int) -> str:
        gate.wait()
        return receipts._receipt_number(db, "org-h", f"inv-{i}", year, fresh=True)

    for round_ in range(3):  # the first from no hint, then from a recent one that others overtake
        with ThreadPoolExecutor(12) as pool:
            got = list(pool.map(settle, range(round_ * 12, round_ * 12 + 12)))
        assert len(set(got)) == 12
    series = _series(db, chain)
    assert sorted(series) == list(range(1, 37))
    assert sorted(series.values()) == sorted(f"inv-{i}" for i in range(36))


def _settle_numbers(url: str, name: str, year: int, tag: str, threads: int, each: int, wait: float,
                    start: float) -> tuple[list[str], int]:
    """In a process of its own (``spawn``): ``threads`` settlers taking ``each`` numbers of org-m's series
    from ``start`` (wall clock) on; the numbers, and the claims of ``receipt_numbers`` the database refused."""
    from pymongo import monitoring
    from sen_billing.domain import receipts as _receipts
    from sen_shared import mongo as _mongo

    refused = []

    class Refused(monitoring.CommandListener):
        def started(self, event) -> None:
            pass

        def succeeded(self, event) -> None:
            if event.command_name == "insert" and event.reply.get("writeErrors"):
                refused.append(1)

        def failed(self, event) -> None:
            pass

    monitoring.register(Refused())
    _receipts.HOST_WAIT_SECONDS = wait
    database = _mongo.client(url)[name]
    database.command("ping")
    time.sleep(max(0.0, start - time.time()))

    def settle(i: int) -> list[str]:
        return [_receipts._receipt_number(database, "org-m", f"inv-{tag}-{i}-{j}", year, fresh=True)
                for j in range(each)]

    with ThreadPoolExecutor(threads) as pool:
        got = [n for ns in pool.map(settle, range(threads)) for n in ns]
    return got, len(refused)


def test_the_processes_of_one_machine_take_a_series_numbers_in_turn_without_lost_claims(db, mongo_url) -> None:
    """Two processes (gunicorn's workers) × 4 settlers of one facility at once: numbers without gaps
    or doubles, and no claim of one refused because another took that number first (each process's
    hint would be behind by the other's numbers: a refused insert each). The wait for the machine's
    turn is unbounded here (a loaded machine's slow insert must not make a process go without it)."""
    import multiprocessing

    year, chain = 2035, "receipt:org-m:2035"
    start = time.time() + 3.0  # both processes started and connected by then
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        jobs = [pool.submit(_settle_numbers, mongo_url, db.name, year, tag, 4, 10, 600.0, start)
                for tag in ("a", "b")]
        results = [job.result(timeout=600) for job in jobs]
    got = [n for numbers, _ in results for n in numbers]
    assert len(got) == 80 and len(set(got)) == 80
    assert sorted(_series(db, chain)) == list(range(1, 81))  # no gap, no number twice
    assert [refused for _, refused in results] == [0, 0]


def test_the_machines_hint_of_a_series_is_for_its_own_database_server(db) -> None:
    """Another stack on the machine (another server, the same database name) keeps its own hint."""
    key, other = f"{db.name}/receipt:org-s:2036", "elsewhere.example:27017"
    receipts._remember(key, 41)
    with receipts._host_turn(key, other):
        pass  # this process's newest (41) goes to the file, as the other server's
    receipts._newest_seen.pop(key)
    receipts._seen_at.pop(key)
    with receipts._host_turn(key, receipts._server(db)):
        assert key not in receipts._newest_seen
    with receipts._host_turn(key, other):
        assert receipts._newest_seen[key] == 41

# ------------------------------------------------------------------------------- the unmatched queue

def test_the_unmatched_queue_is_read_a_page_at_a_time_and_holds_only_waiting_transfers(db) -> None:
    from types import SimpleNamespace

    admin = SimpleNamespace(sub="admin-1", roles=["admin"], facility=None)
    sent = [pay(db, f"chuyen tien lan {i}", 10000 + i).payment["_id"] for i in range(7)]
    for _ in range(3):  # a provider's retries add nothing
        pay(db, "chuyen tien lan 0", 10000, tx=sent[0].split(":", 1)[1])
    assert db["unmatched_waiting"].count_documents({}) == 7
    iid, _ = make_invoice(db, 10001)
    payments.assign_unmatched(db, sent[1], iid, admin)
    payments.refund(db, sent[2], None, "không rõ người chuyển", admin, None)
    assert db["unmatched_waiting"].count_documents({}) == 5  # the queue holds only what still waits
    pages, cursor = [], None
    while True:
        rows, cursor = payments.unmatched_queue(db, limit=2, after=cursor)
        pages.append([p["_id"] for p in rows])
        if cursor is None:
            break
    assert [len(p) for p in pages] == [2, 2, 1]
    assert [i for page in pages for i in page] == [sent[0]] + sent[3:]  # oldest first, each once
    assert invoice_port.lifecycle_state(db, iid) == "balanced"
    with pytest.raises(payments.BadCursor):
        payments.unmatched_queue(db, after="nonsense")
