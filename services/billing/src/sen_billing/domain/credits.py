"""The credit of an overpaid invoice: money a patient paid over what was owed, to give back.

A refund task (``refund_tasks``) covers a payment that counts toward nothing owed. A payment that
pays an invoice more than it owes counts toward it, and the settlement's receipt shows the rest as
the patient's credit; until now no list named that money. Here it gets its own records, all
claims by insert (nothing is updated):

- ``credits``: one entry per overpaid invoice, keyed by the invoice, claimed when its settlement
  counts more than is owed (``receipts._settle``, before the receipt: a repair of a crashed
  settlement notes it too): ``{invoice, facility, at (settled), amount (the credit then), reference,
  patient, subject, payments (those the settlement counted)}``. Entries are never removed: the
  give-backs below say how much is left (as refund tasks are done by their refund's claim);
- ``credit_givebacks``: per invoice a claims chain (``<invoice>/n``: ``{payment, amount}``, and who
  decided it: ``cashier``, ``cashier_name``, ``shift``, ``reason``; ``payments.refund``), one
  link per give-back of that credit (``payments.refund`` of a payment the settlement counted, of a
  balanced or settling invoice). A give-back claims the link after the last one it read, and only
  while the links stay within the credit: two cashiers giving it back at once (through one payment
  or two) race for the same link, and the loser reads the winner's and finds nothing left. The
  link is the decision; the refund's record (keyed by the payment) follows it, and a crash in
  between is finished by the next try of the same refund.

A payment that lands after the settlement counted the others is not part of this credit: it has a
refund task of its own (once per payment), so the list names each sum once.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from pymongo.database import Database
from sen_shared.claims import ClaimTaken, advance, claim_once
from sen_shared.errors import Conflict, SenError
from sen_shared.mongo import find_in

from . import invoice_port, refund_links

CREDITS = "credits"
GIVEBACKS = "credit_givebacks"
BALANCED = "invoice_balanced"  # the settlement's record (payments.BALANCED): what it counted, paid and owed
OVERPAID = "invoice-overpaid"  # a credit's ``reason`` on the list of money to give back
NOTHING_LEFT = ("this invoice's credit (money paid over what was owed) was given back already: "
                "nothing is left to refund")


def note(db: Database, invoice: invoice_port.InvoiceView, receipt: Mapping[str, Any]) -> None:
    """The entry of a settlement's credit (``receipt``: the receipt being written, credit > 0);
    once per invoice however many settlers (the winner, repair jobs) get here."""
    settled = receipt["settled_at"]
    subject = (invoice.resource.get("subject") or {}).get("reference")
    claim_once(db[CREDITS], invoice.id, {
        "invoice": invoice.id, "facility": invoice.facility, "at": settled, "amount": int(receipt["credit"]),
        "reference": invoice.reference, "patient": invoice.patient_display or None,
        "subject": subject if isinstance(subject, str) else None,
        "payments": [p["id"] for p in receipt.get("payments") or []]})


def links(db: Database, invoice_id: str) -> list[dict[str, Any]]:
    """The invoice's credit give-backs, oldest first."""
    return sorted(db[GIVEBACKS].find({"k": invoice_id}), key=lambda link: int(link["n"]))


def _refunded_before(chain: list[dict[str, Any]], refunds: list[dict[str, Any]], counted: list[str]) -> int:
    """The refunds of the settlement's payments recorded before the give-backs chain existed (none
    of them has a link; every refund of this credit since claims one)."""
    linked = {str(link["payment"]) for link in chain}
    return sum(int(r["amount"]) for r in refunds
               if refund_links.payment_of(r) in counted and refund_links.payment_of(r) not in linked
               and not r.get("reverses") and not r.get("after_settlement"))


def _given(chain: list[dict[str, Any]], refunds: list[dict[str, Any]], counted: list[str]) -> int:
    """What of the credit went back: the chain's links, and the refunds from before the chain."""
    return sum(int(link["amount"]) for link in chain) + _refunded_before(chain, refunds, counted)


def _credit(record: Mapping[str, Any]) -> int:
    """The credit a settlement's record (``BALANCED``) left: what was paid over what was owed."""
    return max(0, int(record.get("paid") or 0) - int(record.get("owed") or 0))


def credit_of(db: Database, invoice_id: str) -> int:
    """The credit the invoice's settlement left (0: not settled, or not overpaid)."""
    record = db[BALANCED].find_one({"_id": invoice_id}, {"paid": 1, "owed": 1})
    return _credit(record) if record is not None else 0


def give_back(db: Database, payment: Mapping[str, Any], amount: int, by: Mapping[str, Any] | None = None) -> int:
    """Claim the give-back of ``amount`` of the invoice's credit through ``payment`` (a payment
    counted toward a balanced or settling invoice); the amount to record (:func:`claim`'s link's).
    A payment the settlement did not count (it came after: its refund task) is not this credit:
    ``amount`` as asked. Nothing left: Conflict; more than is left: 422 (``refundable`` says how much is)."""
    link = claim(db, payment, amount, by)
    return int(link["amount"]) if link is not None else amount


def claim(db: Database, payment: Mapping[str, Any], amount: int,
          by: Mapping[str, Any] | None = None) -> dict[str, Any] | None:
    """:func:`give_back`'s link: the one this claims, carrying who decides it (``by``: the cashier, their
    shift, reason and amount, ``payments._starter``), or the payment's oldest link no refund record
    finishes yet (a try that stopped before its refund's record, perhaps another cashier's: the refund
    finishing it records that link's amount, reason and cashier; ``refund_links.unrecorded``); None
    when ``payment`` is not part of the credit. A payment may give the credit back in several parts,
    each its own link."""
    invoice_id = str(payment["invoice"])
    record = db[BALANCED].find_one({"_id": invoice_id}, {"paid": 1, "owed": 1, "payments": 1})
    counted = [str(p) for p in (record or {}).get("payments") or []]
    if record is None or payment["_id"] not in counted:
        return None
    credit = _credit(record)
    for _ in range(8):
        chain = links(db, invoice_id)
        refunds = list(db[invoice_port.REFUNDS].find({"invoice": invoice_id},
                                                     {"amount": 1, "reverses": 1, "after_settlement": 1,
                                                      "payment": 1, "n": 1, "decision": 1}))
        recorded = refund_links.by_payment(refunds).get(str(payment["_id"]), [])
        through = [link for link in chain if link.get("payment") == payment["_id"]]
        mine = refund_links.unrecorded(list(recorded), through, GIVEBACKS, refund_links.CREDIT)
        if mine is not None:  # a try that stopped before its refund's record: finish it
            return mine
        left = credit - _given(chain, refunds, counted)
        if left <= 0:
            raise Conflict(NOTHING_LEFT, refundable=0, why="balanced")
        if amount > left:
            raise SenError(f"at most {left} đồng of this invoice's credit is left to refund", status=422,
                           title="Unprocessable Content", refundable=left, why="balanced")
        try:
            return advance(db[GIVEBACKS], invoice_id, chain[-1] if chain else None,
                           {**(by or {}), "payment": payment["_id"], "amount": int(amount), "at": datetime.now(UTC)})
        except ClaimTaken:
            continue  # another give-back of this credit won the link: read what is left again
    raise Conflict("this invoice's credit is being given back meanwhile; try again")


def backfill(db: Database) -> dict[str, int]:
    """The credits of invoices settled before credits were noted (a receipt whose ``credit`` > 0 and
    no entry), each noted as its settlement would have, less what refunds gave back of it before the
    give-backs chain (so an entry's ``amount`` less its links is always what is left); one given back
    whole is left out. Run once by the billing worker (``worker.backfill_credits_once``); safe twice
    at once: each entry is a claim, made once. Reads every receipt once."""
    made = 0
    for receipt in db["receipts"].find({}, {"outbox": 0, "lines": 0}):
        if int(receipt.get("credit") or 0) <= 0 or db[CREDITS].find_one({"_id": receipt["_id"]}, {"_id": 1}):
            continue
        paid_by = [str(p["id"]) for p in receipt.get("payments") or []]
        chain = links(db, receipt["_id"])
        given = refund_links.chains(db, paid_by, {"amount": 1, "reverses": 1, "after_settlement": 1, "decision": 1})
        before = _refunded_before(chain, [r for links_ in given.values() for r in links_], paid_by)
        left = int(receipt["credit"]) - before
        invoice = invoice_port.get(db, receipt["_id"])
        if left - sum(int(link["amount"]) for link in chain) <= 0 or invoice is None:
            continue
        note(db, invoice, {**receipt, "credit": left})
        made += 1
    return {"credits": made}


# ------------------------------------------------------------------------------- the list

def _aware(at: Any) -> datetime:
    if not isinstance(at, datetime):
        return datetime.min.replace(tzinfo=UTC)
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def _left(entries: list[dict[str, Any]], db: Database) -> dict[str, int]:
    """What is left of each entry's credit: its amount less its give-back links (one equality a
    credit; a backfilled entry's amount is already net of the refunds from before the chain)."""
    given: dict[str, int] = {e["_id"]: 0 for e in entries}
    for link in find_in(db[GIVEBACKS], "k", list(given)):
        given[str(link["k"])] = given.get(str(link["k"]), 0) + int(link["amount"])
    return {e["_id"]: max(0, int(e["amount"]) - given[e["_id"]]) for e in entries}


def page(db: Database, limit: int, after_query: dict[str, Any], facility: str | None,
         state: str = "open") -> tuple[list[dict[str, Any]], bool]:
    """Up to ``limit`` credit entries after the cursor (``after_query``: the refund tasks' cursor
    query, same ``(at, _id)`` order), each with ``left``, and whether more follow. ``open``: those
    with something left; ``all``: every one. ``facility``: that facility's (an equality, the
    ``(facility, at, _id)`` index), None every facility's. Given-back entries stay (never removed),
    so an open page reads on a batch at a time until it has its rows (as the refund tasks do)."""
    base: dict[str, Any] = {"facility": facility} if facility is not None else {}
    query = {**base, **after_query}
    rows: list[dict[str, Any]] = []
    while True:
        batch = list(db[CREDITS].find(query, sort=[("at", 1), ("_id", 1)], limit=limit + 1))
        if not batch:
            return rows, False
        left = _left(batch, db)
        for entry in batch:
            if state == "open" and left[entry["_id"]] <= 0:
                continue
            if len(rows) == limit:
                return rows, True
            rows.append({**entry, "left": left[entry["_id"]]})
        if len(batch) <= limit:
            return rows, False
        last = batch[-1]
        at = _aware(last["at"])
        query = {**base, "$or": [{"at": {"$gt": at}}, {"at": at, "_id": {"$gt": last["_id"]}}]}


def public(entry: Mapping[str, Any], iso: Any) -> dict[str, Any]:
    """A credit as the list of money to give back shows it (beside the refund tasks): ``payment`` is
    the one to give it back through (the settlement's newest payment holding all that is left, else
    its largest), ``amount`` what is left, ``credit`` what it was at the settlement."""
    left = int(entry["left"])
    out: dict[str, Any] = {
        "kind": "credit", "invoice": entry["invoice"], "reference": entry.get("reference"), "amount": left,
        "credit": int(entry["amount"]), "reason": OVERPAID, "facility": entry.get("facility"),
        "createdAt": iso(_aware(entry["at"])), "receivedAt": iso(_aware(entry["at"])),
        "patient": entry.get("patient"), "subject": entry.get("subject"), "refunded": left <= 0,
        "payment": entry.get("give_back_payment") or (entry.get("payments") or [""])[-1]}
    if entry.get("channel"):
        out["channel"] = entry["channel"]
    return out


def with_payments(db: Database, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each credit row with the payment to give it back through and its channel: of the settlement's
    payments, the newest whose amount holds all that is left, else the largest (point reads)."""
    ids = [p for r in rows for p in r.get("payments") or []]
    found = {p["_id"]: p for p in find_in(db[invoice_port.PAYMENTS], "_id", ids,
                                          projection={"amount": 1, "channel": 1, "received_at": 1})}
    out = []
    for r in rows:
        mine = [found[p] for p in r.get("payments") or [] if p in found]
        holding = [p for p in mine if int(p["amount"]) >= int(r["left"])]
        pick = (max(holding, key=lambda p: _aware(p.get("received_at"))) if holding
                else max(mine, key=lambda p: int(p["amount"])) if mine else None)
        out.append({**r, **({"give_back_payment": pick["_id"], "channel": pick.get("channel")} if pick else {})})
    return out


def money_back(db: Database, limit: int = 50, after: str | None = None, facility: str | None = None,
               state: str = "open") -> tuple[list[dict[str, Any]], str | None]:
    """The list of money to give back: the refund tasks (``payments.refund_tasks``) and the credits
    of overpaid invoices, merged oldest first (``at``, then ``_id``: a task is keyed by its payment,
    a credit by its invoice), a page at a time with one cursor over both: each list's page after
    the cursor, the first ``limit`` of the two, the cursor of the last one shown."""
    from .payments import _after, _cursor, iso, public_refund_task, refund_tasks

    tasks, more_tasks = refund_tasks(db, limit, after, facility, state)
    owed, more_credits = page(db, limit, _after(after) if after else {}, facility, state)
    merged = [({"kind": "task", **public_refund_task(t)}, t["task"]) for t in tasks]
    merged += [(public(c, iso), c) for c in with_payments(db, owed)]
    merged.sort(key=lambda pair: (_aware(pair[1]["at"]), str(pair[1]["_id"])))
    shown = merged[:limit]
    more = len(merged) > limit or more_tasks is not None or more_credits
    return [row for row, _ in shown], (_cursor(shown[-1][1]) if more and shown else None)


__all__ = ["CREDITS", "GIVEBACKS", "NOTHING_LEFT", "OVERPAID", "backfill", "claim", "credit_of", "give_back", "links",
           "money_back", "note", "page", "public", "with_payments"]
