"""Payments: the webhook inbox, one payment per bank transaction, matching to invoices.

Every invariant is a claim by insert (``sen_shared.claims``); nothing here updates a document
another writer may touch:

- ``webhook_inbox``: the raw call, inserted FIRST (before any check), one document per request;
  ``webhook_outcomes``: what became of it (applied / rejected and why), keyed by the inbox id.
- ``payments``: one document per ``<provider>:<transaction id>`` (the ``_id`` is the unique key):
  the same webhook sent 20 times makes one payment. It carries its ``billing.payment.received``
  event in its outbox (written by the same insert; the relay is the document's only writer after).
- A payment is matched by the reference code found in the transfer note (normalised: spaces,
  case, punctuation and diacritics do not matter) and counts toward that invoice. The amount
  owed always comes from our invoice, never from the payer's side.
- An unmatched transfer waits in the queue; a cashier assigns it with a second payment document
  ``assign:<payment id>`` (a claim: one assignment per transfer). The queue is its own collection
  ``unmatched_waiting`` (``{_id: payment id, at, facility}``), holding only the transfers still waiting:
  the entry is claimed before the payment is inserted (a crash in between leaves an entry
  without a payment, which readers skip; never a payment without an entry) and removed by the
  assignment's or the refund's winner (its single remover; a reader also skips entries whose
  transfer was assigned or refunded). A page reads the waiting ones, never the history.
  The entry's ``facility`` is whose queue it is in: the facility that owns the receiving account
  (``SEN_BANK_ACCOUNT_FACILITIES``), or a draft invoice's the note named; ``""`` (:data:`NO_FACILITY`)
  when no facility owns the account: only admins see those. A cashier reads and assigns their
  facility's entries only. :func:`backfill_unmatched` (the worker, once: ``worker.backfill_unmatched_once``)
  puts in the queue the unmatched payments recorded before it existed, and gives a facility to
  entries made before it carried one.
- A payment to a cancelled or already balanced invoice counts toward nothing and claims a refund
  task (``refund_tasks``, keyed by the payment).
- When what was paid reaches what is owed, the invoice's "balanced" is claimed by inserting
  ``invoice_balanced`` keyed by the invoice id: among 20 concurrent final payments exactly one
  wins, and only the winner issues the receipt, the PaymentReconciliation, the Invoice's status
  change and ``billing.invoice.paid`` (``receipts.settle_invoice``).
- A call cut off after its payment's insert (the database went away, answered 503; the web worker
  died) left the invoice's part undone: the provider's retry (a cashier's, with the same transaction
  id) finds the payment and runs its effects again (:func:`finish_payment`; each is a claim, so
  running them twice changes nothing), unless they are known done (the settlement lists it) or known
  to be none (a partial payment: its invoice's payments still below what it owed, ``invoice_owed``,
  kept in the payment at its insert).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from pymongo.database import Database
from pymongo.errors import BulkWriteError
from sen_shared.bus.outbox import new_document
from sen_shared.claims import CHAIN_SEQ, ClaimTaken, advance, claim_once, latest, release
from sen_shared.errors import Conflict, Forbidden, NotFound, SenError
from sen_shared.fhir.guarded import Hidden
from sen_shared.mongo import find_in

from . import invoice_port, refund_events, refund_links
from .webhooks import Transfer, bank_time

VN = ZoneInfo("Asia/Ho_Chi_Minh")

INBOX = "webhook_inbox"
TX = "tx:"  # a bank transaction's claim in the inbox collection: ``tx:<payment id>``
OUTCOMES = "webhook_outcomes"
PAYMENTS = invoice_port.PAYMENTS
REFUND_TASKS = invoice_port.REFUND_TASKS
REFUNDS = invoice_port.REFUNDS
UNMATCHED = "unmatched_waiting"
BALANCED = "invoice_balanced"
# in a transfer's payment counted toward an invoice: what the invoice owed when the payment was placed (its
# amounts are fixed once issued). A retry then tells a partial payment, which left nothing undone, by one
# read of the invoice's payments, not the Invoice's read and that one (:func:`finish_payment`)
OWED = "invoice_owed"
# what became of an unmatched transfer, claimed once: {_id: payment id, fate: "assigned" | "refunded"};
# an assignment and an admin's refund of the same transfer race for it, so exactly one of them goes on
FATES = "unmatched_fates"
FACILITY_FIXES = "unmatched_facility_fixes"  # one claim per entry made before entries had a facility
NO_FACILITY = ""  # the queue of transfers to an account no facility owns: admins only

KEPT_HEADERS = ("content-type", "user-agent", "x-casso-signature", "webhook-id", "webhook-timestamp",
                "webhook-signature", "x-forwarded-for")  # never Authorization: SePay's key is a secret


class PaymentError(SenError):
    """A cashier's payment operation that cannot be done (the status says why)."""


def now_utc() -> datetime:
    """Now, to the millisecond: a BSON date keeps milliseconds, so a time this process compares (a
    transfer's against a shift's close, before its record is read back) is the time stored. With the
    microseconds kept, a transfer timed in its shift's closing millisecond, after the close's instant,
    was within the shift as stored (the close's figures, the daily report, the periodic repair) and
    after it as its own check after its insert compared it: a close that had read before its insert
    then reported it nowhere."""
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def local_day(when: datetime) -> str:
    return when.astimezone(VN).date().isoformat()


def facility_day(facility: str, day: str) -> str:
    """``<facility>|<day>``: one facility's records of one local day by a single top-level equality
    (FerretDB pushes it down; a range on a time, or two equalities on ``facility`` and ``day``, it
    answers over all the facility's, or all the day's, records)."""
    return f"{facility}|{day}"


def iso(when: datetime) -> str:
    return when.astimezone(VN).isoformat(timespec="seconds")


# ------------------------------------------------------------------------------- inbox

def _stored_body(raw: bytes) -> str:
    """The raw call as text to store: UTF-8, each byte that is not (and each NUL, which PostgreSQL under
    FerretDB cannot store) as U+FFFD; its size is kept beside it."""
    return raw.decode("utf-8", errors="replace").replace("\x00", "\ufffd")


def store_raw(db: Database, provider: str, raw: bytes, headers: Mapping[str, str]) -> str:
    """Insert the raw call before anything else looks at it; its id."""
    inbox_id = uuid.uuid4().hex
    kept = {k.lower(): v[:512] for k, v in headers.items() if k.lower() in KEPT_HEADERS}
    db[INBOX].insert_one({"_id": inbox_id, "provider": provider[:32], "at": now_utc(), "size": len(raw),
                          "headers": kept, "body": _stored_body(raw)})
    return inbox_id


def store_call(db: Database, provider: str, raw: bytes, headers: Mapping[str, str],
               transfers: list[Transfer]) -> tuple[str, set[str]]:
    """A verified call: the raw call and, in the same insert (one round trip), a claim per bank
    transaction it reports (``tx:<payment id>``, in the inbox collection). Its id, and the payment
    ids claimed before (a provider's retry, or a call still in flight; :func:`record_transfer`
    checks that the payment is there). Nothing is applied before this insert."""
    inbox_id = uuid.uuid4().hex
    now = now_utc()
    kept = {k.lower(): v[:512] for k, v in headers.items() if k.lower() in KEPT_HEADERS}
    docs: list[dict[str, Any]] = [{"_id": inbox_id, "provider": provider[:32], "at": now, "size": len(raw),
                                   "headers": kept, "body": _stored_body(raw)}]
    docs += [{"_id": TX + payment_id(t.provider, t.transaction_id), "at": now, "inbox": inbox_id} for t in transfers]
    try:
        db[INBOX].insert_many(docs, ordered=False)
    except BulkWriteError as err:
        errors = err.details.get("writeErrors") or []
        if any(e.get("code") != 11000 or e.get("index") == 0 for e in errors):
            raise
        return inbox_id, {docs[e["index"]]["_id"][len(TX):] for e in errors}
    return inbox_id, set()


def record_outcome(db: Database, inbox_id: str, provider: str, status: str, *, reason: str = "",
                   detail: str = "", payments: list[str] | None = None) -> None:
    """What became of an inbox call; inserted once (the request that stored the call is its only writer)."""
    claim_once(db[OUTCOMES], inbox_id, {"provider": provider, "status": status, "reason": reason,
                                        "detail": detail, "payments": payments or []})


# ------------------------------------------------------------------------------- payments

@dataclass(frozen=True)
class Recorded:
    payment: dict[str, Any]
    created: bool  # False: the same transaction was recorded before (a retry)


def payment_id(provider: str, transaction_id: str) -> str:
    return f"{provider}:{transaction_id}"


def _event(payment: Mapping[str, Any]) -> dict[str, Any]:
    from sen_shared.bus.events import make_event

    data: dict[str, Any] = {"payment": payment["_id"], "amount": payment["amount"], "currency": "VND",
                            "channel": payment["channel"], "provider": payment["provider"],
                            "receivedAt": iso(payment["received_at"]), "matched": payment["matched"]}
    if payment.get("invoice"):
        data["invoice"] = f"Invoice/{payment['invoice']}"
    if payment.get("facility"):
        data["facility"] = f"Organization/{payment['facility']}"
    if payment.get("district"):
        data["district"] = payment["district"]
    if payment.get("bank_at"):  # when the bank says it happened: the day's report places it there
        data["bankTime"] = iso(payment["bank_at"])
    if payment.get("assigned_from"):  # the same money as the unmatched transfer's own event: not new money
        data["assignedFrom"] = payment["assigned_from"]
        if payment.get("assigned_from_received_at"):  # when it came: the day whose unmatched transfers it was
            data["assignedFromReceivedAt"] = iso(payment["assigned_from_received_at"])
        if payment.get("assigned_from_bank_at"):  # when its bank says it was made: that day's, as the CSV has it
            data["assignedFromBankTime"] = iso(payment["assigned_from_bank_at"])
        if "assigned_from_queue" in payment:  # whose unmatched queue it waited in ("": the admins')
            queue = payment["assigned_from_queue"]
            data["assignedFromQueue"] = f"Organization/{queue}" if queue else ""
    if payment.get("outcome"):  # applied, unmatched, late-balanced / late-cancelled (owed back: a refund task)
        data["outcome"] = payment["outcome"]
    if not payment.get("facility") and payment.get("queue_facility"):  # whose unmatched queue it waits in
        data["queueFacility"] = f"Organization/{payment['queue_facility']}"
    # an unmatched payment's subject: a PaymentNotice-style reference built from its id
    subject = data.get("invoice") or "PaymentNotice/" + re.sub(r"[^A-Za-z0-9\-.]", "-", payment["_id"])[:64]
    # validated against its schema in the tests (test_billing_webhooks), not on every payment (0.8 ms)
    return make_event("billing.payment.received", data, subject=subject, validate=False)


def _insert_payment(db: Database, doc: dict[str, Any]) -> Recorded:
    """Claim the payment's key; the doc goes in with its event (outbox) in the same insert, and with
    ``fd`` (:func:`facility_day`) when it has a facility, or, naming no invoice, the facility of the
    unmatched queue it joins (whose account it reached): a shift's expected transfers are read by it
    (``shifts.expected_totals``), a field of this insert, no command more."""
    where = doc.get("facility") or (doc.get("queue_facility") if doc.get("outcome") == "unmatched" else None)
    fd = {"fd": facility_day(where, doc["day"])} if where and doc.get("day") else {}
    record = new_document({**doc, **fd}, [_event(doc)])
    created, held = claim_once(db[PAYMENTS], doc["_id"], record)
    return Recorded(held, created)


def account_key(account: str) -> str:
    """A receiving account number as the facility map knows it: without spaces, dots or dashes."""
    return re.sub(r"[\s.\-]", "", account or "").upper()


def queue_facility(payment: Mapping[str, Any], account_facilities: Mapping[str, str] | None) -> str:
    """Whose unmatched queue a transfer waits in: the facility of the draft invoice its note named,
    else the facility owning the account that received it, else :data:`NO_FACILITY` (admins)."""
    if payment.get("facility"):
        return str(payment["facility"])
    wanted = account_key(str(payment.get("account") or ""))
    for account, facility in (account_facilities or {}).items():
        if wanted and account_key(account) == wanted:
            return facility
    return NO_FACILITY


BANK_SKEW = timedelta(minutes=5)  # a bank time this far past billing's own is a provider's clock, not the bank's


def bank_day(paid_at: str, received: datetime) -> dict[str, Any]:
    """A transfer's bank time (``bank_at``: what the provider says the bank recorded, read in
    Asia/Ho_Chi_Minh, ``webhooks.bank_time``) and, when its local day is not the day billing received
    it (``day``), that day (``bank_day``): a transfer made at 23:59:58 and delivered at 00:00:03, or
    retried an hour later, is on the bank statement of the first day, and the daily report places it
    there (``reconciliation.rows``: one equality on ``bank_day``). None of them when the provider gave no
    time, or one later than billing's own by more than :data:`BANK_SKEW` (no bank records the future).
    Shifts keep counting a transfer when billing received it (``received_at``, ``fd``)."""
    at = bank_time(paid_at)
    if at is None or at > received + BANK_SKEW:
        return {}
    day = local_day(at)
    return {"bank_at": at, **({"bank_day": day} if day != local_day(received) else {})}


def record_transfer(db: Database, transfer: Transfer, inbox_id: str, *, seen: bool = True,
                    account_facilities: Mapping[str, str] | None = None) -> Recorded:
    """One payment for one bank transaction, matched to its invoice when the note names one;
    then the invoice's state follows (:func:`after_payment`). ``seen=False``: this call won the
    transaction's claim (:func:`store_call`), so no payment can be there yet: no look-up.
    ``account_facilities``: receiving account → facility, whose queue an unmatched transfer joins."""
    received = now_utc()
    pid = payment_id(transfer.provider, transfer.transaction_id)
    existing = db[PAYMENTS].find_one({"_id": pid}, {"outbox": 0}) if seen else None
    if existing is not None:  # a provider's retry: nothing new, the answer is the same
        finish_payment(db, existing)  # but the first call may have been cut off before the invoice's part
        return Recorded(existing, False)
    invoice = invoice_port.find_by_note(db, transfer.description)
    doc: dict[str, Any] = {
        "_id": pid, "provider": transfer.provider, "transaction_id": transfer.transaction_id,
        "channel": "transfer", "amount": transfer.amount, "description": transfer.description[:500],
        "bank_reference": transfer.bank_reference[:100], "account": transfer.account[:40],
        "paid_at_provider": transfer.paid_at[:40], "received_at": received, "day": local_day(received),
        "inbox": inbox_id, **_placement(db, invoice, transfer.amount), **bank_day(transfer.paid_at, received),
    }
    if not doc["matched"]:  # the queue entry first: a waiting transfer is never out of the queue
        # the entry carries its facility (same insert): a cashier's page filters on it by equality
        doc["queue_facility"] = queue_facility(doc, account_facilities)
        claim_once(db[UNMATCHED], pid, {"at": received, "facility": doc["queue_facility"]})
    recorded = _insert_payment(db, doc)
    if recorded.created:
        _after_insert(db, recorded.payment)
        after_payment(db, recorded.payment, invoice)
    return recorded


def _after_insert(db: Database, payment: Mapping[str, Any]) -> None:
    """After a payment's insert: a shift that closed meanwhile without it is told (``shifts.after_money_in``:
    cash naming a closed shift; a transfer received while a shift since closed was open)."""
    from .shifts import after_money_in  # shifts reads this module's records: imported when first used

    after_money_in(db, dict(payment))


def finish_payment(db: Database, payment: Mapping[str, Any],
                   invoice: invoice_port.InvoiceView | None = None) -> None:
    """:func:`after_payment` again for a payment found stored (a provider's retry), unless its effect is
    known done or known to be nothing. A counted payment: done when its invoice's settlement lists it
    (one point read; a settlement claimed but not finished is the repair job's,
    ``receipts.repair_settlements``). With no settlement yet, a payment below what its invoice owed
    (:data:`OWED`, stored at its insert; ``invoice``: the caller's read of it) has nothing to finish
    while the invoice's payments stay below it and no cancel marked it (one read: the query
    ``after_payment`` makes): only a payment bringing the sum to what is owed, or one racing a cancel,
    writes anything there. A payment stored without :data:`OWED` (before it was kept), or one reaching
    it, runs ``after_payment``. An unmatched one has nothing (its queue entry went in before it); a
    late one, its refund task. Idempotent: every step of ``after_payment`` is a claim."""
    invoice_id = payment.get("invoice")
    if invoice_id:
        settled = db[BALANCED].find_one({"_id": invoice_id}, {"payments": 1})
        if settled is not None and payment["_id"] in (settled.get("payments") or []):
            return
        owed = invoice.owed if invoice is not None and invoice.id == invoice_id else payment.get(OWED)
        if settled is None and owed is not None and int(payment["amount"]) < int(owed):
            counted, marked = invoice_port.payments_and_mark(db, invoice_id, mine=payment)
            if not marked and sum(int(p["amount"]) for p in counted) < int(owed):
                return
    elif not (payment.get("late_invoice") and payment.get("matched")):
        return
    after_payment(db, payment, invoice)


def _placement(db: Database, invoice: invoice_port.InvoiceView | None, amount: int) -> dict[str, Any]:
    """Where a payment goes: to its invoice, to the unmatched queue, or (late) to a refund."""
    if invoice is None:
        return {"invoice": None, "matched": False, "outcome": "unmatched", "facility": None, "district": None}
    base = {"facility": invoice.facility, "district": invoice.district, "reference": invoice.reference}
    # the settlement's winner sets the Invoice balanced right after its claim; a payment landing in
    # between counts toward the invoice and shows as credit (refundable all the same)
    if invoice.status in ("cancelled", "balanced"):
        # counts toward nothing; the money goes back (a refund task for the cashier)
        why = "cancelled" if invoice.status == "cancelled" else "balanced"
        return {**base, "invoice": None, "late_invoice": invoice.id, "matched": True, "outcome": f"late-{why}"}
    if invoice.status == "draft":
        # issued in its lifecycle chain, the resource not rolled forward yet (invoices.py)?
        link = latest(db["invoice_states"], invoice.id)
        if link is not None and link.get("state") in ("issued", "cancelled"):
            return _placement(db, replace(invoice, status=link["state"]), amount)
    if invoice.status != "issued":
        # a draft has no QR and no reference out there; keep it for a cashier to look at
        return {"invoice": None, "late_invoice": invoice.id, "matched": False, "outcome": "unmatched",
                "facility": invoice.facility, "district": invoice.district}
    return {**base, "invoice": invoice.id, "matched": True, "outcome": "applied", OWED: invoice.owed}


def after_payment(db: Database, payment: Mapping[str, Any], invoice: invoice_port.InvoiceView | None = None) -> None:
    """The effects of a newly recorded payment: a refund task for a late one; for a counted one,
    the invoice's balance, and its settlement when nothing is left to pay."""
    if payment.get("late_invoice") and payment.get("matched"):
        invoice_port.refund_task(db, dict(payment), payment["late_invoice"],
                                 str(payment.get("outcome", "")).removeprefix("late-"))
        return
    invoice_id = payment.get("invoice")
    if not invoice_id:
        return
    if invoice is None or invoice.id != invoice_id:
        invoice = invoice_port.get(db, invoice_id)
        if invoice is None:
            return
    # the invoice's payments, read AFTER this payment's insert. A cancel marks them before its link
    # and reads them after it, so a payment racing a cancel is seen by one of the two and gets its
    # refund task. A payment after the settlement finds paid >= owed and the settlement's record.
    counted, marked = invoice_port.payments_and_mark(db, invoice_id, mine=payment)
    if marked and invoice_port.lifecycle_state(db, invoice_id) == "cancelled":
        invoice_port.refund_task(db, dict(payment), invoice_id, "cancelled")
        return
    paid = sum(int(p["amount"]) for p in counted)
    if invoice.owed - paid <= 0:
        kept = settling_payments(db, invoice_id, counted, invoice.owed)
        if kept is None:
            return  # some of them were given back: the invoice is still owed
        from .receipts import settle_invoice

        settle_invoice(db, invoice_id, channel=payment["channel"], invoice=invoice,
                       paid=sum(int(p["amount"]) for p in kept), counted=kept, payment=dict(payment))


def settling_payments(db: Database, invoice_id: str, counted: list[dict[str, Any]],
                      owed: int) -> list[dict[str, Any]] | None:
    """Before a settlement: the ``settle`` link of the invoice's give-backs chain
    (``invoice_port.GIVEBACKS``), claimed after the reversals it subtracts, and the payments that
    count (``counted`` less those given back), or None when they no longer reach ``owed``. Tried
    first as the chain's first link, without a read (no payment of most invoices is ever given
    back); a lost claim reads the chain. A chain already ending in ``settle``: another payment
    settles (or settled) it; this one goes on too (the settlement claim picks one winner). A
    reversal claims its link from the last one it read, so it either comes before this link (and
    is subtracted here) or finds it (and refuses): a settlement never counts money given back."""
    after: dict[str, Any] | None = None
    for _ in range(8):
        if after is not None:
            links = invoice_port.givebacks(db, invoice_id)
            given = invoice_port.reversed_payments(links)
            kept = [p for p in counted if p["_id"] not in given]
            if sum(int(p["amount"]) for p in kept) < owed:
                return None
            if any(link.get("state") == invoice_port.SETTLE for link in links):
                return kept
            after = links[-1] if links else None
        else:
            kept = counted
        try:
            advance(db[invoice_port.GIVEBACKS], invoice_id, after, {"state": invoice_port.SETTLE, "at": now_utc()})
            return kept
        except ClaimTaken as taken:
            after = taken.holder or {CHAIN_SEQ: 0}
    raise Conflict(f"invoice {invoice_id}: its payments keep being given back; try again")


def assign_unmatched(db: Database, payment_key: str, invoice_id: str, principal: Any,
                     account_facilities: Mapping[str, str] | None = None) -> Recorded:
    """A cashier puts an unmatched transfer of their facility's queue on an invoice of their
    facility (once per transfer); a transfer in another facility's queue, or in the admins' (to an
    account no facility owns): 403. An admin puts a transfer of any queue on an invoice of any
    facility: one of another facility than the queue's is allowed (a patient paid the wrong
    facility's account), and counted as the queue's arrival and the invoice's facility's payment
    (``assigned_from_queue``); the portal asks the admin to confirm it, naming both facilities."""
    original = db[PAYMENTS].find_one({"_id": payment_key}, {"outbox": 0})
    no_payment = NotFound(f"no payment {payment_key}")
    if original is None or original.get("marker"):
        raise no_payment
    # a payment recorded before entries carried a facility: derived the way the backfill does
    waiting = original.get("queue_facility")
    if waiting is None:
        waiting = queue_facility(original, account_facilities)
    # another facility's transfer (or one of the admins' queue) is answered as a payment not held, before
    # anything else is said of it
    check_facility(principal, waiting, no_payment, f"payment {payment_key} waits in another facility's queue")
    if original.get("matched") or original.get("assigned_from"):
        raise Conflict("this payment is not in the unmatched queue")
    # the invoice by its reference (HD…, as printed) or its id; none and another facility's alike (404):
    # the refusal carries ``invoice`` (what was sent), so a page can say "no invoice <it> here"
    invoice = invoice_port.named(db, invoice_id)
    no_invoice = NotFound(f"no invoice {invoice_id}", invoice=invoice_id)
    if invoice is None:
        raise no_invoice
    check_facility(principal, invoice.facility, no_invoice, f"invoice {invoice_id} belongs to another facility")
    if invoice.status != "issued" or db[BALANCED].find_one({"_id": invoice.id}, {"_id": 1}):
        raise Conflict(f"invoice {invoice.reference or invoice.id} is {invoice.status}, not awaiting payment",
                       status=409)
    if db[REFUNDS].find_one({"_id": payment_key}, {"_id": 1}) is not None or \
            _fate(db, payment_key, "assigned") != "assigned":
        raise Conflict("this payment is not in the unmatched queue: it was given back")
    received = now_utc()
    doc = {"_id": f"assign:{payment_key}", "provider": original["provider"],
           "transaction_id": original["transaction_id"], "channel": original["channel"],
           "amount": original["amount"], "description": original.get("description", ""),
           "received_at": received, "day": local_day(received), "assigned_from": payment_key,
           "assigned_from_received_at": original["received_at"],
           # its bank time (when its provider gave one): the day the daily report places the transfer on
           **({"assigned_from_bank_at": original["bank_at"]} if original.get("bank_at") else {}),
           # the queue it waited in: its arrival is that facility's money (its report: came, assigned since),
           # the invoice's facility counts it in its takings (the module's reconciliation, the portal's dashboard)
           "assigned_from_queue": waiting,
           "assigned_by": principal.sub, "assigned_by_name": str(getattr(principal, "name", None) or "")[:200],
           "invoice": invoice.id, "matched": True, "outcome": "applied",
           "facility": invoice.facility, "district": invoice.district, "reference": invoice.reference}
    recorded = _insert_payment(db, doc)
    if not recorded.created:
        raise Conflict("this transfer was assigned already", assignedTo=recorded.payment.get("invoice"))
    release(db[UNMATCHED], payment_key)  # the assignment's winner is the entry's single remover
    after_payment(db, recorded.payment)
    return recorded


ASSIGNED = "assign:"  # an assignment's payment id: ``assign:<the unmatched transfer's id>``
BANK_TIME = "assigned_from_received_at"  # an assignment's: when the bank received the transfer


def assignments(db: Database, docs: list[Mapping[str, Any]], *, names: bool = True) -> dict[str, dict[str, Any]]:
    """For each payment of ``docs`` (payment records, or a receipt's lines: ``id``) assigned from the
    unmatched queue, by its id: when the bank received the transfer (:data:`BANK_TIME`) and, with
    ``names``, who assigned it (``assigned_by_name``). An assignment records both; one recorded before
    it did has them from the transfer it was assigned from (its ``received_at``: one read of those
    transfers) and from the cashier's newest shift (the name it was opened under). Nothing is read
    when nothing is missing, as for every invoice no transfer was assigned to."""
    out: dict[str, dict[str, Any]] = {}
    origins: dict[str, str] = {}
    subs: dict[str, str] = {}  # an assignment whose record names no cashier's name: its cashier
    for p in docs:
        pid = str(p.get("_id") or p.get("id") or "")
        if not pid.startswith(ASSIGNED):
            continue
        out[pid] = {k: p[k] for k in (BANK_TIME, "assigned_by_name") if p.get(k)}
        if BANK_TIME not in out[pid]:
            origins[pid] = str(p.get("assigned_from") or pid.removeprefix(ASSIGNED))
        if names and "assigned_by_name" not in out[pid] and p.get("assigned_by"):
            subs[pid] = str(p["assigned_by"])
    if origins:
        came = {d["_id"]: d.get("received_at") for d in find_in(db[PAYMENTS], "_id", sorted(set(origins.values())),
                                                                  projection={"received_at": 1})}
        for pid, origin in origins.items():
            if isinstance(came.get(origin), datetime):
                out[pid][BANK_TIME] = came[origin]
    if subs:
        from .shifts import cashier_names  # shifts reads this module's records: imported when first used

        known = cashier_names(db, set(subs.values()))
        for pid, sub in subs.items():
            if known.get(sub):
                out[pid]["assigned_by_name"] = known[sub]
    return out


def received(p: Mapping[str, Any]) -> datetime:
    """When the money of a payment record came: the bank's time of a transfer assigned from the unmatched
    queue (its ``received_at`` is the assignment's: when it began to count toward the invoice), else its
    ``received_at``."""
    at = p.get(BANK_TIME)
    return at if isinstance(at, datetime) else p["received_at"]


class BadCursor(SenError):
    def __init__(self) -> None:
        super().__init__("after: not a cursor this queue gave out", status=400)


def _cursor(entry: Mapping[str, Any]) -> str:
    at = entry["at"] if entry["at"].tzinfo else entry["at"].replace(tzinfo=UTC)
    return f"{round(at.timestamp() * 1000)}.{entry['_id']}"


def _after(cursor: str) -> dict[str, Any]:
    ms, _, key = cursor.partition(".")
    if not ms.isdigit() or not key:
        raise BadCursor()
    at = datetime.fromtimestamp(int(ms) / 1000, UTC)
    return {"$or": [{"at": {"$gt": at}}, {"at": at, "_id": {"$gt": key}}]}


ALL_FACILITIES = None  # an admin's scope: every facility's queue and the unowned accounts'
UNOWNED = "_unowned"  # how a request names the unowned accounts' queue (no FHIR id holds "_")


def queue_scope(principal: Any, facility: str | None = None) -> str | None:
    """Which queue a principal reads. ``facility``: the one asked for (:data:`UNOWNED` or
    :data:`NO_FACILITY`: the unowned accounts'), None: the principal's whole scope. An admin reads
    any one, or every entry (:data:`ALL_FACILITIES`); a cashier their facility's only (another
    facility's or the unowned accounts': Forbidden; a cashier without a facility: Forbidden)."""
    wanted = NO_FACILITY if facility == UNOWNED else facility
    if "admin" in principal.roles:
        return wanted
    if not principal.facility:
        raise Forbidden("a cashier without a facility has no unmatched queue")
    if wanted is not None and wanted != principal.facility:
        raise Forbidden("a cashier reads their own facility's unmatched queue only")
    return str(principal.facility)


def unmatched_queue(db: Database, limit: int = 50, after: str | None = None,
                    facility: str | None = ALL_FACILITIES) -> tuple[list[dict[str, Any]], str | None]:
    """A page of the transfers that matched no invoice and wait for a cashier, oldest first, and
    the cursor of the next page (None: this was the last). ``facility``: that facility's queue
    (:data:`NO_FACILITY`: the unowned accounts'), by an equality FerretDB pushes down and the
    ``(facility, at, _id)`` index; :data:`ALL_FACILITIES`: every entry (``(at, _id)`` index). Reads
    the queue's entries of the page, then their payments and any assignment or refund by ``_id``."""
    query: dict[str, Any] = _after(after) if after else {}
    if facility is not ALL_FACILITIES:
        query = {"facility": facility, **query}
    entries = list(db[UNMATCHED].find(query, {"at": 1, "facility": 1}, sort=[("at", 1), ("_id", 1)],
                                      limit=limit + 1))
    more = len(entries) > limit
    entries = entries[:limit]
    if not entries:
        return [], None
    ids = [e["_id"] for e in entries]
    # by _id equalities (find_in), not one $in: FerretDB evaluates $in over every document of the
    # collection, and payments and refunds grow with every transfer ever received (20,000
    # documents: $in of 5 ids 300 ms, 5 point reads 25 ms); a page costs its size, not the history
    found = {p["_id"]: p for p in find_in(db[PAYMENTS], "_id", ids + [f"assign:{i}" for i in ids],
                                          projection={"outbox": 0})}
    refunded = {r["_id"] for r in find_in(db[REFUNDS], "_id", ids, projection={"_id": 1})}
    queue = {e["_id"]: e.get("facility") or NO_FACILITY for e in entries}
    rows = [_in_queue(found[i], queue[i]) for i in ids
            if i in found and f"assign:{i}" not in found and i not in refunded]
    return rows, (_cursor(entries[-1]) if more else None)


def _in_queue(payment: Mapping[str, Any], facility: str) -> Mapping[str, Any]:
    """An unmatched payment with the facility whose queue holds it (an admin's page mixes them;
    the unowned accounts' queue has none)."""
    return {**payment, "facility": facility} if facility and not payment.get("facility") else payment


def _gone_from_queue(db: Database, payment_key: str) -> bool:
    """The transfer was assigned or refunded (its queue entry is removed or skipped)."""
    return (db[PAYMENTS].find_one({"_id": f"assign:{payment_key}"}, {"_id": 1}) is not None
            or db[REFUNDS].find_one({"_id": payment_key}, {"_id": 1}) is not None)


def backfill_unmatched(db: Database, account_facilities: Mapping[str, str] | None = None) -> dict[str, int]:
    """Put in the queue the unmatched transfers recorded before it had one, each in its facility's
    queue; run once by the billing worker (``worker.backfill_unmatched_once``: the replica whose
    run claim wins, at the first start), idempotent and safe to run twice at once (a run taken
    over after its worker looked dead may still be going on).

    - A payment recorded unmatched before the queue (no ``queue_facility``; the equality on
      ``outcome`` is pushed down, then only those old payments are looked at), with no
      assignment and no refund, gets its entry by a claim (:func:`claim_once`): two workers at once
      make one entry. After its claim a worker looks again for an assignment or a refund and, if
      one came meanwhile, removes the entry (an assignment inserts before it removes, the backfill
      claims before it looks: one of the two sees the other; removing twice is harmless).
    - An entry made before entries carried a facility gets it (from its payment) from one writer
      by construction: the backfill whose insert of the entry's fix claim (``FACILITY_FIXES``)
      wins sets that one field. The entry's other writers only remove it (an assignment, a
      refund), and an update by ``_id`` never brings a removed entry back. A worker that dies
      between its claim and its update leaves that entry in the admins' view only (a limit).
    Returns how many entries were made and how many were given their facility."""
    made = given = 0
    for p in db[PAYMENTS].find({"outcome": "unmatched"}, {"outbox": 0}):
        if "queue_facility" in p or p.get("matched") or p.get("invoice") or p.get("marker"):
            continue  # recorded with its entry, or not waiting
        if not _gone_from_queue(db, p["_id"]):
            made += _enqueue(db, p, account_facilities)
    for entry in db[UNMATCHED].find({"facility": {"$exists": False}}, {"_id": 1}):
        p = db[PAYMENTS].find_one({"_id": entry["_id"]}, {"outbox": 0})
        if p is None:
            continue  # an entry whose payment never came (a crash between the two): readers skip it
        won, _ = claim_once(db[FACILITY_FIXES], p["_id"], {"at": now_utc()})
        if won:  # this backfill is the entry's one updater (see above)
            given += db[UNMATCHED].update_one({"_id": p["_id"]},
                                              {"$set": {"facility": queue_facility(p, account_facilities)}}
                                              ).modified_count
    return {"entries": made, "facilities": given}


def _enqueue(db: Database, payment: Mapping[str, Any], account_facilities: Mapping[str, str] | None) -> int:
    """Claim ``payment``'s queue entry in its facility's queue, then look for an assignment or a
    refund: one that came meanwhile removes the entry again (an assignment inserts before it
    removes, this claims before it looks: one of the two sees the other). 1 if this made it."""
    key = payment["_id"]
    created, _ = claim_once(db[UNMATCHED], key, {"at": payment["received_at"],
                                                 "facility": queue_facility(payment, account_facilities)})
    if _gone_from_queue(db, key):
        release(db[UNMATCHED], key)  # assigned or refunded while we claimed: not waiting
        return 0
    return int(created)


# ------------------------------------------------------------------------------- cashier

def check_facility(principal: Any, facility: str | None, missing: SenError,
                   reason: str = "this invoice belongs to another facility") -> None:
    """A cashier acts on their own facility's invoices (payments) only; admin on every facility's. Another
    facility's is :class:`Hidden`: answered as ``missing`` (what an id not held gets, the same problem), so
    that a cashier does not learn which invoices exist elsewhere; the handler records the refusal (403 and
    ``reason``) as an AuditEvent (``api/payments.py``)."""
    if "admin" in principal.roles:
        return
    if not principal.facility or principal.facility != facility:
        raise Hidden(reason, missing)


def record_cash(db: Database, invoice_id: str, amount: int, principal: Any, shift_id: str,
                transaction_id: str | None = None) -> Recorded:
    """Cash taken at the desk by a cashier in an open shift."""
    invoice = invoice_port.get(db, invoice_id)
    missing = NotFound(f"no invoice {invoice_id}")
    if invoice is None:
        raise missing
    check_facility(principal, invoice.facility, missing)
    if amount <= 0:
        raise PaymentError("the amount must be a positive number of đồng", status=422)
    if transaction_id:  # the same cash again (a double click, a retry): answered, even once it settled the invoice
        before = db[PAYMENTS].find_one({"_id": payment_id("cashier", transaction_id)}, {"outbox": 0})
        if before is not None:
            if before.get("invoice") != invoice.id or before.get("amount") != amount:
                raise PaymentError("this transactionId recorded another cash payment: send a new one",
                                   status=422)
            finish_payment(db, before, invoice)  # the first try may have been cut off before the invoice's part
            return Recorded(before, False)
    if invoice.status != "issued" or db[BALANCED].find_one({"_id": invoice.id}, {"_id": 1}):
        raise Conflict(f"invoice {invoice_id} is {invoice.status}, not awaiting payment")
    received = now_utc()
    txid = transaction_id or uuid.uuid4().hex
    doc = {"_id": payment_id("cashier", txid), "provider": "cashier", "transaction_id": txid, "channel": "cash",
           "amount": amount, "description": "", "received_at": received, "day": local_day(received),
           "cashier": principal.sub, "shift": shift_id, "invoice": invoice.id, "matched": True,
           "outcome": "applied", "facility": invoice.facility, "district": invoice.district,
           "reference": invoice.reference}
    recorded = _insert_payment(db, doc)
    if recorded.created:
        _after_insert(db, recorded.payment)
        after_payment(db, recorded.payment)
    return recorded


def invoice_summary(db: Database, invoice_id: str,
                    invoice: invoice_port.InvoiceView | None = None) -> dict[str, Any]:
    """What is owed, paid, refunded, due and credited on an invoice (``domain/status.summary``: the
    cashier's read side, in as few reads as the records allow). ``invoice``: the caller's read of
    it in this request (one read less), else read here."""
    from .status import summary  # status reads this module's records: imported when first used

    invoice = invoice if invoice is not None and invoice.id == invoice_id else invoice_port.get(db, invoice_id)
    if invoice is None:
        raise NotFound(f"no invoice {invoice_id}")
    return summary(db, invoice)


def refund(db: Database, payment_key: str, amount: int | None, reason: str, principal: Any,
           shift_id: str | None, *, after_settlement: bool = False) -> dict[str, Any]:
    """A cashier gives money back for one payment, with a reason, in as many refunds as it takes,
    never more than the payment in all (each refund the next link of the payment's refunds,
    ``refund_links.record``: a claim by insert carrying the running total): all or part of what is
    left of a late payment; all of a payment toward an invoice still owed (issued,
    not settled: a **reversal**, the invoice owes it again, so once nothing is left paid it can be
    cancelled); of a settled (balanced) invoice's payment only the credit the overpayment left;
    all that is left of a cancelled invoice's (the invoice's summary gives each payment's ``refundable``);
    an unmatched transfer: an admin, unless it is assigned (its fate claim, :data:`FATES`).

    **A give-back started by one cashier and finished by another.** Most give-backs are two claims:
    the decision first (the reversal's link in the invoice's give-backs chain, :func:`_reverse`; the
    credit's link, ``credits.claim``; an unmatched transfer's fate, :func:`_fate_claim`), then the
    refund's record keyed by the payment (its event in the same insert). A request that dies between
    the two (its worker killed, the tab closed) leaves the decision made and no refund recorded; the
    next refund of that payment, by whoever asks, finishes it. The decision's claim therefore carries
    who made it (:func:`_starter`: ``cashier``, ``cashier_name``, ``shift``, ``reason``, the
    ``amount`` decided), and the record that finishes it says both:

    - ``amount`` and ``reason``: those of the decision (what was decided is what goes back; the
      finisher's own reason, when it differs, is kept as ``finish_reason``);
    - ``cashier``, ``cashier_name``, ``shift`` and ``channel``: the FINISHER's. Theirs is the request
      that answered "recorded", so they are the one told to hand the money over (cash from their
      drawer, or a transfer); the starter's request answered an error, or "refunded already" when it
      lost the race, so nothing left the starter's drawer. A cash refund therefore counts toward the
      finisher's shift (``shifts.expected_totals`` reads refunds by ``shift``), never the starter's;
    - ``started``: ``{cashier, cashier_name, shift, at}`` of the decision's claim (the same cashier
      when they finish their own try), so the audit says who decided and who handed the money over;
      the invoice page and the receipt show "Started: … · Finished: …" when the two differ.

    **After settlement.** A balanced invoice whose credit is all given back (or was never there): what is
    left of each payment can be given back, all or part of it, in one refund or several (a charge made
    in error, a service not given). The invoice stays ``balanced`` (FHIR has no "refunded" status; its receipt
    stands, with its number); the refund is its own money record (``after_settlement: true``) that the
    invoice page and the receipt show as "Đã hoàn sau thanh toán", and that shifts, the daily
    reconciliation and ``billing.payment.refunded`` (outcome ``applied``: a refund of takings) count as
    any refund. Its decision is a link of the invoice's give-backs chain after ``settle``
    (:func:`_after_settlement`); a payment that still holds credit gives back the credit first. It is
    given only when asked for (``after_settlement``: the request's ``afterSettlement``, sent by a page
    that showed the payment's ``refundableAfterSettlement``): a cashier giving back the credit, who
    loses that race to a colleague, is told the credit went back, never refunded the payment itself.

    **A colleague's decision in flight.** The decision found not recorded may be a colleague's whose
    request is still running (two cashiers giving back parts of one payment at once). When that
    request (or a third) records it first, this one recorded nothing and its own refund was never
    decided: it reads again and decides its own (:class:`_OtherFinished`, at most
    :data:`REFUND_ROUNDS` rounds, each one a colleague's refund recorded), so a cashier is refused only
    truthfully (nothing or less left, or the rounds used up: "try again"). Refusing it said "refunded
    already" with a part left: 20 cashiers each a third gave back 2 of 3 under load. A cashier's own
    decision recorded by another request (a double submit, or a colleague finishing it) is "refunded
    already": it went back, once.

    A decision claimed before its claims carried a cashier has no ``started``. A late payment's
    refund is one claim (nothing to finish). ``billing.payment.refunded`` names no cashier (its
    schema has none), so it is unchanged."""
    reason = (reason or "").strip()
    if not reason:
        raise PaymentError("a refund needs a reason", status=422)
    payment = db[PAYMENTS].find_one({"_id": payment_key}, {"outbox": 0})
    missing = NotFound(f"no payment {payment_key}")
    if payment is None or payment.get("marker"):
        raise missing
    check_facility(principal, payment.get("facility"), missing, f"payment {payment_key} is another facility's")
    for _ in range(REFUND_ROUNDS):  # each round another cashier's refund was recorded: bounded by them
        try:
            return _refund_round(db, payment, amount, reason, principal, shift_id, after_settlement)
        except _OtherFinished:
            continue  # this request helped record a colleague's refund and recorded none: its own, again
    raise Conflict("this payment is being given back meanwhile; try again")  # as refund_links.record says


REFUND_ROUNDS = 64  # as many as cashiers refunding one payment at once (refund_links.TRIES)


class _OtherFinished(Exception):
    """A round of :func:`refund` found a colleague's decision not recorded yet (in flight, or a try
    that stopped), and that decision was recorded by someone else before this request's record: this
    request recorded nothing and its own refund was never decided, so it reads again."""


def _refund_round(db: Database, payment: Mapping[str, Any], amount: int | None, reason: str, principal: Any,
                  shift_id: str | None, after_settlement: bool) -> dict[str, Any]:
    """One round of :func:`refund`: read what is left, decide (or finish the decision in flight), record."""
    payment_key = str(payment["_id"])
    whole = int(payment["amount"])
    before = refund_links.chain(db, payment_key)  # its refunds so far (several: refund_links)
    if before and refund_links.total(before) >= whole:
        raise Conflict("this payment was refunded already", refund=public_refund(before[-1]))
    if not payment.get("invoice") and not (payment.get("late_invoice") and payment.get("matched")):
        if "admin" not in principal.roles:
            raise Conflict("an unmatched transfer is assigned to an invoice, or refunded by an admin")
        if db[PAYMENTS].find_one({"_id": f"assign:{payment_key}"}, {"_id": 1}) is not None:
            raise Conflict(_ASSIGNED)
    refundable, why = whole - refund_links.total(before), "late"
    if payment.get("invoice"):
        refundable, why = _refundable_toward(db, payment)
    if why == AFTER_SETTLEMENT and not after_settlement:  # the credit asked for, and there is none
        refundable, why = 0, "balanced"
    if refundable <= 0:
        if why in ("balanced", "settling"):
            _given_back_meanwhile(db, payment)
        raise Conflict(_NOTHING[why], refundable=0, why=why)
    if after_settlement and why != AFTER_SETTLEMENT:
        if why == "owed" and any(link.get("state") == invoice_port.SETTLE
                                 for link in invoice_port.givebacks(db, str(payment["invoice"]))):
            why = "settling"  # its settle link claimed, the settlement not recorded yet
        raise Conflict(_NOT_AFTER.get(why, _NOT_AFTER["owed"]), refundable=refundable, why=why)
    amount = refundable if amount is None else amount
    if why == "owed" and amount != whole:
        raise PaymentError(f"a payment toward an invoice still owed is given back whole: {whole} đồng", status=422,
                           refundable=refundable, why=why)
    if amount <= 0 or amount > refundable:
        raise PaymentError(f"at most {refundable} đồng of this payment can be refunded", status=422,
                           refundable=refundable, why=why)
    by = _starter(principal, shift_id, amount, reason)
    decided: Mapping[str, Any] | None = None  # the decision's claim (perhaps another cashier's)
    chain = ""  # the decision's collection: its id there names it in the refund's record
    if why == "owed":
        decided, chain = _reverse(db, payment, by), invoice_port.GIVEBACKS  # settled meanwhile → Conflict
    elif why == AFTER_SETTLEMENT:  # the invoice's give-backs chain after its settle link
        decided, chain = _after_settlement(db, payment, by), invoice_port.GIVEBACKS
    elif why in ("balanced", "settling"):  # the credit's give-backs chain: two at once give it back once
        from .credits import GIVEBACKS, claim

        decided, chain = claim(db, payment, amount, by), GIVEBACKS
    unmatched = not payment.get("invoice") and not (payment.get("late_invoice") and payment.get("matched"))
    if unmatched:
        decided, chain = _fate_claim(db, payment_key, "refunded", by), FATES
        if decided.get("fate") != "refunded":
            raise Conflict(_ASSIGNED)  # an assignment of it won meanwhile
    # the next link of the payment's refunds (refund_links: never past the payment in all), naming the
    # decision it records (once); its billing.payment.refunded event rides in the link's insert. Its time and
    # its local day are one instant: a day read from another clock reading than ``at`` put a refund at
    # 00:00:00.002 on the day before, where a shift opened at 00:00 (reading its own days) never found it
    at = now_utc()
    created, doc = refund_links.record(db, payment, {
        "invoice": payment.get("invoice") or payment.get("late_invoice"),
        **_finished(decided, by),
        # an unmatched transfer given back: under the facility whose queue held it (its report)
        "facility": payment.get("facility") or payment.get("queue_facility") or None,
        "reverses": why == "owed", "at": at, "day": local_day(at),
        **({"after_settlement": True} if why == AFTER_SETTLEMENT else {})},
        decision=refund_links.decision_id(chain, decided) if decided is not None else None,
        with_event=lambda link: refund_events.with_event(link, payment))
    if not created:
        if decided is not None and decided.get("cashier") != by["cashier"]:
            # a colleague's decision, recorded by someone else first: this cashier's own refund was
            # never decided (refusing it said "refunded already" while a part was left: 2 of 3 parts)
            raise _OtherFinished
        # this cashier's own decision (this request's, or their earlier try's: a double submit),
        # recorded by another request: it is given back, once
        raise Conflict("this payment was refunded already", refund=public_refund(doc))
    from .shifts import after_refund  # shifts reads this module's records: imported when first used

    after_refund(db, doc)  # after the record: a shift that closed meanwhile without it is told (shifts)
    if unmatched:
        release(db[UNMATCHED], payment_key)  # the refund's winner: an unmatched transfer given back
    return public_refund(doc)


def task_scope(principal: Any, facility: str | None = None) -> str | None:
    """Whose refund tasks a principal reads: an admin the facility asked for, or every facility's
    (None); a cashier their own facility's only (another's: Forbidden; none: Forbidden)."""
    if "admin" in principal.roles:
        return facility or None
    if not principal.facility:
        raise Forbidden("a cashier without a facility has no refund tasks")
    if facility and facility != principal.facility:
        raise Forbidden("a cashier reads their own facility's refund tasks only")
    return str(principal.facility)


TASK_STATES = ("open", "all")


def refund_tasks(db: Database, limit: int = 50, after: str | None = None, facility: str | None = None,
                 state: str = "open") -> tuple[list[dict[str, Any]], str | None]:
    """A page of the refund tasks (money that counts toward nothing owed: a late transfer to a
    balanced or cancelled invoice, :func:`invoice_port.refund_task`), oldest first, and the cursor of
    the next page (None: the last), as :func:`unmatched_queue` pages (``at``, ``_id``). ``state``
    ``open``: those whose payment is not refunded yet (no ``refunds`` claim keyed by it); ``all``:
    every task, each with its refund. ``facility``: that facility's (an equality FerretDB pushes
    down; the ``(facility, at, _id)`` index), None every facility's. Each row: the task, its
    payment (time, amount, channel) and its refund (if any). The tasks are never removed (the
    refund claim says a task is done), so an open page reads the facility's tasks after the
    cursor, a batch at a time, until it has a page of open ones (see the README's limits)."""
    if state not in TASK_STATES:
        raise PaymentError("state: open or all", status=400)
    query: dict[str, Any] = _after(after) if after else {}
    if facility is not None:
        query = {"facility": facility, **query}
    rows: list[dict[str, Any]] = []
    last: Mapping[str, Any] | None = None
    more = False
    while True:
        batch = list(db[REFUND_TASKS].find(query, sort=[("at", 1), ("_id", 1)], limit=limit + 1))
        if not batch:
            break
        ids = [t["_id"] for t in batch]
        refunds = refund_links.chains(db, ids)  # a task is done once its refunds give back all of it
        found = {p["_id"]: p for p in find_in(db[PAYMENTS], "_id", ids, projection={"outbox": 0})}
        for task in batch:
            given = refunds.get(task["_id"]) or []
            if state == "open" and given and refund_links.total(given) >= int(task["amount"]):
                last = task
                continue
            if len(rows) == limit:
                more = True
                break
            rows.append({"task": task, "payment": found.get(task["_id"]), "refund": given[-1] if given else None,
                         "refunds": given})
            last = task
        if more or len(batch) <= limit:
            break
        query = {**({"facility": facility} if facility is not None else {}), **_after(_cursor(batch[-1]))}
    _name_patients(db, rows)
    return rows, (_cursor(last) if more and last is not None else None)


def _name_patients(db: Database, rows: list[dict[str, Any]]) -> None:
    """Each row's patient as its invoice names them (``subject``: the Patient reference; ``patient``:
    its display, where the invoice keeps one), as a credit's row does: one point read an invoice."""
    views: dict[str, Any] = {}
    for row in rows:
        iid = row["task"].get("invoice")
        if not iid:
            continue
        if iid not in views:
            views[iid] = invoice_port.get(db, str(iid))
        inv = views[iid]
        if inv is not None:
            subject = (inv.resource.get("subject") or {}).get("reference")
            row["subject"] = subject if isinstance(subject, str) else None
            row["patient"] = inv.patient_display or None


def public_refund_task(row: Mapping[str, Any]) -> dict[str, Any]:
    """A refund task as ``GET /payments/refund-tasks`` lists it."""
    task, payment, done = row["task"], row.get("payment") or {}, row.get("refund")
    at = task.get("at")
    out: dict[str, Any] = {
        "payment": task["_id"], "invoice": task.get("invoice"), "amount": int(task["amount"]),
        "reason": task.get("reason", ""), "facility": task.get("facility"),
        "createdAt": iso(at) if isinstance(at, datetime) else None,
        "channel": payment.get("channel"), "provider": payment.get("provider"),
        "receivedAt": iso(payment["received_at"]) if payment.get("received_at") else None,
        "description": payment.get("description", ""), "reference": payment.get("reference"),
        "patient": row.get("patient"), "subject": row.get("subject")}
    given = row.get("refunds") or ([done] if done is not None else [])
    # done once its refunds give back all of it; ``refund``: the newest of them, ``refunds``: each
    out["refundedAmount"] = refund_links.total(given)
    out["refunded"] = bool(given) and out["refundedAmount"] >= out["amount"]
    if done is not None:
        out["refund"] = public_refund(done)
        out["refunds"] = [public_refund(r) for r in given]
    return out


_ASSIGNED = "this transfer was assigned already: refund it on its invoice"
_NOTHING = {  # why a payment toward an invoice has nothing to refund (the portal words each)
    "balanced": "this invoice is paid in full (balanced): only its credit, money paid over what was owed, "
                "can be refunded, and there is none",
    "settling": "this invoice is being settled: only its credit, money paid over what was owed, can be refunded, "
                "and there is none",
    "cancelled": "this cancelled invoice's payments were all given back",
    "late": "this payment was given back already",
}
# a refund of a paid (balanced) invoice's payment once no credit is left: all or part of the payment,
# the invoice staying balanced (its receipt stands); ``refund``'s docstring, :func:`_after_settlement`
AFTER_SETTLEMENT = "paid"
_NOT_AFTER = {  # a refund after settlement asked of a payment that cannot have one now
    "balanced": "this invoice still holds credit (money paid over what was owed): give the credit back first",
    "settling": "this invoice is being settled; try again",
    "owed": "this payment's invoice is not paid in full: refund it as a payment of an invoice still owed",
}


def _fate(db: Database, payment_key: str, fate: str) -> str:
    """Claim what becomes of an unmatched transfer (``fate``: assigned or refunded); the fate that
    holds (an assignment and a refund racing: exactly one wins; the point reads before it catch
    those made before the claim existed)."""
    return str(_fate_claim(db, payment_key, fate).get("fate"))


def _fate_claim(db: Database, payment_key: str, fate: str, by: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """:func:`_fate`'s claim, the one that holds; ``by``: who decides it (:func:`_starter`, a refund's
    decision: its amount and reason are what the refund that finishes it records)."""
    _created, held = claim_once(db[FATES], payment_key, {"fate": fate, "at": now_utc(), **(by or {})})
    return held


def _starter(principal: Any, shift_id: str | None, amount: int, reason: str) -> dict[str, Any]:
    """Who decides a give-back, carried by its decision's claim (``refund``'s docstring): the cashier
    (their token's subject and name), the shift they would give it back from (None: by transfer), the
    reason and the amount decided."""
    return {"cashier": principal.sub, "cashier_name": str(getattr(principal, "name", None) or "")[:200],
            "shift": shift_id, "reason": reason[:500], "amount": int(amount)}


def _finished(decided: Mapping[str, Any] | None, by: Mapping[str, Any]) -> dict[str, Any]:
    """The refund record's who, what and why when ``by`` (:func:`_starter` of this request) finishes the
    decision claimed as ``decided`` (None: there is none, the refund is one claim): the decision's amount
    and reason, the finisher's cashier, shift and channel, and the decision's cashier as ``started``
    (``refund``'s docstring). A decision claimed before claims carried a cashier: this request's reason."""
    decided = decided or {}
    reason = str(decided.get("reason") or "") or str(by["reason"])
    out: dict[str, Any] = {
        "amount": int(decided.get("amount") or by["amount"]), "reason": reason,
        "cashier": by["cashier"], "cashier_name": by["cashier_name"], "shift": by["shift"],
        "channel": "cash" if by["shift"] else "transfer"}
    if decided.get("cashier"):
        out["started"] = {"cashier": decided["cashier"], "cashier_name": str(decided.get("cashier_name") or ""),
                          "shift": decided.get("shift"), "at": decided.get("at")}
    if by["reason"] != reason:
        out["finish_reason"] = by["reason"]
    return out


def _refundable_toward(db: Database, payment: Mapping[str, Any]) -> tuple[int, str]:
    """How much of a payment counted toward an invoice can be given back, and why: ``owed`` (the
    invoice is issued and not settled: all of it), ``balanced`` / ``settling`` (the credit only),
    ``cancelled`` (all that is left)."""
    from .status import summary  # status reads this module's records: imported when first used

    invoice = invoice_port.get(db, payment["invoice"])
    if invoice is None:
        raise NotFound(f"no invoice {payment['invoice']}")
    body = summary(db, invoice)
    settling = db[BALANCED].find_one({"_id": invoice.id}, {"_id": 1}) is not None
    if body["status"] == "issued" and not settling:
        # whole, whatever the payments add up to now: a settlement under way claims its link in the
        # give-backs chain, and the reversal's link (_reverse) comes before it or is refused
        return int(payment["amount"]), "owed"
    mine = next((p for p in body["payments"] if p["id"] == payment["_id"]), None)
    refundable = int(mine["refundable"]) if mine is not None else 0
    if body["status"] == "issued":
        return min(refundable, body["credit"]), "settling"
    if mine is not None and mine.get("refundableAfterSettlement"):
        return int(mine["refundableAfterSettlement"]), AFTER_SETTLEMENT  # no credit left: the payment itself
    return refundable, body["status"]


def _given_back_meanwhile(db: Database, payment: Mapping[str, Any]) -> None:
    """A payment of a settled (or settling) invoice with nothing left to refund: when the invoice was
    overpaid, its credit went back, most often by another cashier's give-back of it at the same
    moment (its link or its refund's record landed between this request's reads). Say so as the
    claims that decided it do: this payment's own refund if it has one ("refunded already"), else
    the credit given back (``credits.NOTHING_LEFT``); an invoice never overpaid returns (the caller
    says it has no credit)."""
    from .credits import NOTHING_LEFT, credit_of

    done = refund_links.chain(db, str(payment["_id"]))
    if done and refund_links.total(done) >= int(payment["amount"]):
        raise Conflict("this payment was refunded already", refund=public_refund(done[-1]))
    if credit_of(db, str(payment["invoice"])) > 0:
        raise Conflict(NOTHING_LEFT, refundable=0, why="balanced")


def _reverse(db: Database, payment: Mapping[str, Any], by: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Claim the reversal of ``payment`` in its invoice's give-backs chain, after the last link read;
    a chain ending in ``settle`` (a payment settles the invoice meanwhile): Conflict, nothing given
    back. The link is the decision, carrying who made it (``by``: :func:`_starter`): a crash before
    the refund's record leaves the payment reversed and the refund is recorded by the next try (its
    claim keyed by the payment), whoever makes it. The reversal's link: this one, or the one before."""
    invoice_id = payment["invoice"]
    for _ in range(8):
        links = invoice_port.givebacks(db, invoice_id)
        before = next((link for link in links if link.get("state") == invoice_port.REVERSAL
                       and link.get("payment") == payment["_id"]), None)
        if before is not None:
            return before  # reversed before (a try that stopped before its refund's record): finish it
        if any(link.get("state") == invoice_port.SETTLE for link in links):
            raise Conflict(_NOTHING["settling"], refundable=0, why="settling")
        try:
            return advance(db[invoice_port.GIVEBACKS], invoice_id, links[-1] if links else None,
                           {**(by or {}), "state": invoice_port.REVERSAL, "payment": payment["_id"],
                            "amount": int(payment["amount"]), "at": now_utc()})
        except ClaimTaken:
            continue
    raise Conflict("this invoice's payments are changing meanwhile; try again")


AFTER_TRIES = 64


def _after_settlement(db: Database, payment: Mapping[str, Any], by: Mapping[str, Any]) -> dict[str, Any]:
    """Claim a give-back of ``payment`` of a settled invoice, once no credit is left: a link of the
    invoice's give-backs chain AFTER its ``settle`` link (``{state: "refund", payment, amount}`` and who
    decided it, ``by``), advanced from the last link read, so it is ordered against the settlement and
    every other give-back of the invoice: a chain without ``settle`` (not settled: the invoice is owed
    again meanwhile?) is a Conflict. Several a payment, each within what is left of it (its amount less
    its refund records and its links not recorded yet; more: 422 with ``refundable``, none: 409). The
    payment's oldest link not recorded yet (a try that stopped before its refund's record, or a cashier
    who won a link a moment ago) is returned: the refund's record (``refund_links.record``, naming the
    link) then finishes it, once (its amount, the decision's)."""
    invoice_id = str(payment["invoice"])
    whole = int(payment["amount"])
    for _ in range(AFTER_TRIES):  # each round one contender wins the link: as many rounds as cashiers at once
        links = invoice_port.givebacks(db, invoice_id)
        recorded = refund_links.chain(db, str(payment["_id"]))
        mine = [link for link in links if link.get("state") == invoice_port.AFTER
                and link.get("payment") == payment["_id"]]
        pending = refund_links.unrecorded(recorded, mine, invoice_port.GIVEBACKS, refund_links.AFTER)
        if pending is not None:
            return pending
        if not any(link.get("state") == invoice_port.SETTLE for link in links):
            raise Conflict("this invoice's settlement is not recorded yet; try again", refundable=0, why="settling")
        left = whole - refund_links.total(recorded)
        if left <= 0:
            raise Conflict("this payment was refunded already", refundable=0, why="refunded",
                           refund=public_refund(recorded[-1]))
        if int(by["amount"]) > left:
            raise PaymentError(f"at most {left} đồng of this payment can be refunded",
                               status=422, refundable=left, why=AFTER_SETTLEMENT)
        try:
            return advance(db[invoice_port.GIVEBACKS], invoice_id, links[-1],
                           {**by, "state": invoice_port.AFTER, "payment": payment["_id"],
                            "amount": int(by["amount"]), "at": now_utc()})
        except ClaimTaken:
            continue  # another give-back of this invoice won the link: read the chain again
    raise Conflict("this invoice's payments are changing meanwhile; try again")


# ------------------------------------------------------------------------------- views

def public_payment(p: Mapping[str, Any]) -> dict[str, Any]:
    out = {"id": p["_id"], "provider": p["provider"], "channel": p["channel"], "amount": int(p["amount"]),
           "matched": bool(p.get("matched")), "outcome": p.get("outcome", ""),
           "receivedAt": iso(p["received_at"]), "description": p.get("description", "")}
    for key, name in (("invoice", "invoice"), ("late_invoice", "lateInvoice"), ("facility", "facility"),
                      ("assigned_from", "assignedFrom"), ("shift", "shift"), ("reference", "reference"),
                      ("assigned_by", "assignedBy"), ("assigned_by_name", "assignedByName")):
        if p.get(key):
            out[name] = p[key]
    if p.get("assigned_from"):  # from the unmatched queue: received by the bank (:func:`received`), assigned since
        out["assignedAt"], out["receivedAt"] = out["receivedAt"], iso(received(p))
    return out


def public_task(t: Mapping[str, Any]) -> dict[str, Any]:
    return {"payment": t["_id"], "invoice": t.get("invoice"), "amount": int(t["amount"]), "reason": t["reason"]}


def public_refund(r: Mapping[str, Any]) -> dict[str, Any]:
    """A refund as the API answers it; one another cashier started (``refund``'s docstring) with
    ``startedBy`` (that cashier, their name, when) beside ``cashier``, who finished it."""
    at = r.get("at")
    out = {"payment": refund_links.payment_of(r), "invoice": r.get("invoice"), "amount": int(r["amount"]),
           "reason": r["reason"], "cashier": r.get("cashier"), "at": iso(at) if isinstance(at, datetime) else None,
           "id": r["_id"], "n": refund_links.seq(r)}
    if r.get("total"):  # what the payment's refunds gave back with this one (its link 1 from before: its amount)
        out["total"] = int(r["total"])
    if r.get("cashier_name"):
        out["cashierName"] = r["cashier_name"]
    started = started_by(r)
    if started is not None:
        out["startedBy"] = started
    if r.get("finish_reason"):
        out["finishReason"] = r["finish_reason"]
    if r.get("after_settlement"):  # a paid invoice's payment given back; the invoice stays balanced
        out["afterSettlement"] = True
    return out


def started_by(r: Mapping[str, Any]) -> dict[str, Any] | None:
    """Who started a refund another cashier finished (``cashier``, ``cashierName``, ``at``), else None
    (one cashier did it all, or a refund recorded before refunds said who started them)."""
    started = r.get("started") or {}
    if not started.get("cashier") or started["cashier"] == r.get("cashier"):
        return None
    at = started.get("at")
    return {"cashier": started["cashier"], "cashierName": str(started.get("cashier_name") or ""),
            "at": iso(at) if isinstance(at, datetime) else None}
