"""An invoice's payment status as the cashier's pages read it, in as few database reads as the
records allow (read side only: nothing here writes, except the VietQR chain's next link).

The status box polls :func:`summary` every 2 s for each open invoice page, so its common case,
an issued invoice nobody has paid yet, is **two** reads: the Invoice (the caller's facility is
checked on that same document) and the payments filed under it (``{invoice: id}``, an equality
on a top-level field: pushed down by FerretDB, indexed on MongoDB). When that read finds
nothing at all, the rest is known without reading it:

- no ``cancelled`` link: a cancel inserts its mark among the invoice's payments BEFORE it
  claims the link (``invoice_port.mark_cancel``), and no mark was there;
- no ``balanced`` link: the settlement claims it only once payments counted toward the invoice
  reach what is owed (> 0), and payments are never removed; none was there;
- so the lifecycle chain is at ``issued`` (the resource says issued, and its status follows the
  chain), and no payment is late for it: a payment is filed as late (``late_invoice``) only
  when the invoice it names is cancelled or balanced (or a draft, which has no reference out
  there: its reference record is inserted after the ``issued`` link);
- no refund and no refund task: both are keyed by a payment of the invoice.

A payment inserted after that read is a later event: the next poll shows it. Anything else (a
payment, a mark, a draft or settled resource, nothing owed) takes the full path: the late
payments, the chain (unless the resource is already cancelled or balanced: its status follows
the chain's, so the chain says the same), and, when there are payments, their refunds and refund
tasks, each by an equality on ``invoice``.

:func:`desk` is what the invoice page shows, in one request: the summary, the Invoice resource
(read once, for the facility check too) and its current VietQR when something is due.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo.database import Database
from sen_shared.errors import NotFound
from sen_shared.fhir.guarded import Hidden

from . import invoice_port, refund_links
from .invoices import Bank, InvoiceConflict, current_qr, iso_vn, vnd
from .payments import (
    BANK_TIME,
    PAYMENTS,
    REFUND_TASKS,
    REFUNDS,
    assignments,
    check_facility,
    public_payment,
    public_task,
    received,
    started_by,
)

FINAL = ("balanced", "cancelled")  # terminal resource states: the chain reached them first
PAYMENT_FIELDS = {f: 1 for f in ("provider", "channel", "amount", "matched", "outcome", "received_at", "description",
                                 "invoice", "late_invoice", "facility", "assigned_from", "shift", "marker",
                                 "reference", BANK_TIME, "assigned_by", "assigned_by_name")}


def read_invoice(db: Database, invoice_id: str, principal: Any) -> invoice_port.InvoiceView:
    """The Invoice (one read), if the caller may see it: 404 as a problem detail, another facility's too
    (:func:`check_facility`)."""
    invoice = invoice_port.get(db, invoice_id)
    missing = NotFound(f"no invoice {invoice_id}")
    if invoice is None:
        raise missing
    check_facility(principal, invoice.facility, missing)
    return invoice


MAX_SUMMARIES = 100  # invoices a request of several may name (a queue page lists 50)


def summaries(db: Database, invoice_ids: list[str], principal: Any,
              refused: list[str] | None = None) -> list[dict[str, Any]]:
    """The summaries of several invoices in one request, in the order asked (duplicates once): the
    queue's rows would otherwise be one HTTP request each. An unknown invoice, or another facility's,
    is left out (the answer does not tell them apart); the ids of another facility's are added to
    ``refused`` (the caller records the refusal). Each is :func:`summary` of its own read: two reads for
    the common issued, unpaid one (FerretDB answers an ``$in`` over a collection's field by reading it all)."""
    out = []
    for iid in dict.fromkeys(invoice_ids):
        invoice = invoice_port.get(db, iid)
        if invoice is None:
            continue
        try:
            check_facility(principal, invoice.facility, NotFound(f"no invoice {iid}"))
        except Hidden:
            if refused is not None:
                refused.append(iid)
            continue
        out.append(summary(db, invoice))
    return out


def summary(db: Database, invoice: invoice_port.InvoiceView) -> dict[str, Any]:
    """What is owed, paid, refunded, due and credited on ``invoice`` (already read), from the
    records; the same answer as the full read of every record (module docstring)."""
    docs = list(db[PAYMENTS].find({"invoice": invoice.id}, PAYMENT_FIELDS))
    if not docs and invoice.status == "issued" and invoice.owed > 0:
        return _body(invoice, "issued", [], [], [], [])
    counted = [d for d in docs if not d.get("marker")]
    late = list(db[PAYMENTS].find({"late_invoice": invoice.id}, PAYMENT_FIELDS))
    filled = assignments(db, counted + late)  # an assigned transfer: when the bank received it, who assigned it
    for p in counted + late:
        p.update(filled.get(p["_id"]) or {})
    status = invoice.status if invoice.status in FINAL else (
        invoice_port.lifecycle_state(db, invoice.id) or invoice.status)  # the chain leads the resource
    ids = {p["_id"] for p in counted + late}
    # every refund of the invoice's payments: each payment's links (refund_links), one find by invoice
    refunds = [r for r in db[REFUNDS].find({"invoice": invoice.id}, REFUND_FIELDS)
               if refund_links.payment_of(r) in ids] if ids else []
    tasks = list(db[REFUND_TASKS].find({"invoice": invoice.id})) if ids else []
    body = _body(invoice, status, counted, late, refunds, tasks)
    body["refunds"] = _refund_rows(db, refunds)
    return body


REFUND_FIELDS = {f: 1 for f in ("amount", "reverses", "at", "channel", "reason", "cashier", "shift", "cashier_name",
                                 "started", "finish_reason", "after_settlement", "payment", "n", "total")}


def _refund_rows(db: Database, refunds: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The refunds given on the invoice's payments, oldest first, as the invoice page lists them: when,
    how much, how (cash from the drawer, or a transfer), why, and by whom (the cashier's name their
    shift was opened under; their token's subject where none is known). Names cost reads only when
    there are refunds (one a shift, a refund that names its cashier none). A refund another cashier
    started (``payments.refund``'s docstring) has ``startedBy`` too: ``cashier`` finished it."""
    if not refunds:
        return []
    from .shifts import cashier_names, opened

    shifts = opened(db, {str(r["shift"]) for r in refunds if r.get("shift") and not r.get("cashier_name")})
    names = cashier_names(db, {str(r["cashier"]) for r in refunds
                               if r.get("cashier") and not r.get("shift") and not r.get("cashier_name")})
    rows = []
    for r in sorted(refunds, key=lambda r: (r.get("at") or datetime.min.replace(tzinfo=UTC), r["_id"])):
        link = shifts.get(str(r.get("shift") or "")) or {}
        at = r.get("at")
        row = {"payment": refund_links.payment_of(r), "id": r["_id"], "n": refund_links.seq(r),
               "amount": int(r["amount"]), "at": iso_vn(at) if at else None,
               "channel": r.get("channel") or ("cash" if r.get("shift") else "transfer"),
               "reason": r.get("reason", ""), "cashier": r.get("cashier"),
               "cashierName": r.get("cashier_name") or link.get("cashier_name")
               or names.get(str(r.get("cashier") or ""), "")}
        started = started_by(r)
        if started is not None:
            row["startedBy"] = started
        if r.get("after_settlement"):  # a paid invoice's payment given back (it stays balanced)
            row["afterSettlement"] = True
        rows.append(row)
    return rows


def _body(invoice: invoice_port.InvoiceView, status: str, counted: list[dict[str, Any]], late: list[dict[str, Any]],
          refunds: list[dict[str, Any]], tasks: list[dict[str, Any]]) -> dict[str, Any]:
    """``paid``: what counts toward the invoice, less the payments given back while it was owed
    (reversals: it owes them again); ``credit``: paid over what is owed, less the credit given
    back; each payment's ``refundable``: what a refund of it may give back now (0: nothing); of a
    balanced invoice with no credit left, ``refundableAfterSettlement``: what a refund after settlement
    of it may give back (the payment less what of it went back; the invoice stays balanced, ``paid``
    unchanged). A payment is given back in as many refunds as it takes (``refund_links``): ``refunded``
    is their sum, and what is left of the payment bounds each ``refundable``."""
    counted_ids = {p["_id"] for p in counted}
    of = refund_links.payment_of
    refunded = refund_links.refunded(refunds)
    reversed_ = {of(r) for r in refunds if r.get("reverses") and of(r) in counted_ids}
    paid = sum(int(p["amount"]) for p in counted if p["_id"] not in reversed_)
    # what went back of the credit: the counted payments' refunds that are neither a reversal nor a
    # refund after settlement (the payment itself)
    refunded_credit = sum(int(r["amount"]) for r in refunds if of(r) in counted_ids and of(r) not in reversed_
                          and not r.get("reverses") and not r.get("after_settlement"))
    owed = 0 if status == "cancelled" else invoice.owed  # a cancelled invoice's payments all go back
    due = 0 if status == "cancelled" else max(0, owed - paid)
    credit = max(0, paid - owed - refunded_credit)

    def left(p: dict[str, Any]) -> int:  # what of the payment no refund gave back yet
        return max(0, int(p["amount"]) - refunded.get(p["_id"], 0))

    def refundable(p: dict[str, Any]) -> int:
        if p["_id"] not in counted_ids:
            return left(p)  # late: all that is left of it
        if p["_id"] in reversed_:
            return 0
        if status == "issued" and paid < owed:
            # still owed: given back whole, the invoice owes it again (never in part)
            return int(p["amount"]) if p["_id"] not in refunded else 0
        return min(left(p), credit)  # balanced (or settling), cancelled: the credit, within the payment

    payments = []
    for p in sorted(counted + late, key=received):  # as the page lists them: when the money came
        out = public_payment(p)
        out["refundable"] = refundable(p)
        if status == "balanced" and credit <= 0 and p["_id"] in counted_ids and left(p) > 0:
            # paid, no credit left: what is left of the payment, by refunds after settlement (payments.refund)
            out["refundableAfterSettlement"] = left(p)
        if p["_id"] in refunded:
            out["refunded"] = refunded[p["_id"]]
        payments.append(out)
    return {"invoice": invoice.id, "status": status, "owed": invoice.owed,
            "paid": paid, "balanceDue": due, "credit": credit,
            "refunded": sum(refunded.values()), "facility": invoice.facility,
            "reference": invoice.reference, "payments": payments, "refunds": [],
            "refundTasks": [public_task(t) for t in tasks]}


def qr_json(qr: dict[str, Any], bank: Bank, invoice_id: str) -> dict[str, Any]:
    """A VietQR chain link as the API shows it (``$vietqr``'s JSON)."""
    return {"payload": qr["payload"], "reference": qr["reference"], "amount": int(qr["amount"]),
            "amountText": vnd(qr["amount"]), "currency": "VND", "expiresAt": iso_vn(qr["expires"]),
            "bank": {"bin": bank.bin, "account": bank.account, "name": bank.name or None},
            "invoice": f"Invoice/{invoice_id}"}


def desk(db: Database, invoice_id: str, principal: Any, bank_of: Callable[[str | None], Bank | None],
         ttl: timedelta, now: datetime | None = None) -> dict[str, Any]:
    """The invoice page's answer: :func:`summary`, the Invoice resource (``resource``) and, while
    something is due on an issued invoice, its VietQR (``qr``, as ``$vietqr`` gives it; the
    payload served until it expires or the balance changes) or why there is none (``qrProblem``).
    ``bank_of``: the receiving account of the invoice's facility (``BillingSettings.bank_of``).
    Reads: the Invoice, its payments (the summary's), the QR chain's newest link."""
    invoice = read_invoice(db, invoice_id, principal)
    bank = bank_of(invoice.facility)
    body = summary(db, invoice)
    body["resource"] = invoice.resource
    body["qr"] = None
    if body["status"] != "issued" or body["balanceDue"] <= 0:
        return body
    if bank is None:
        body["qrProblem"] = "no receiving bank account is configured (SEN_BANK_BIN, SEN_BANK_ACCOUNT)"
        return body
    try:
        qr = current_qr(db, invoice_id, bank, ttl, now or datetime.now(UTC), invoice=invoice.resource,
                        due=body["balanceDue"])
    except InvoiceConflict as err:
        body["qrProblem"] = err.detail
        return body
    body["qr"] = qr_json(qr, bank, invoice_id)
    return body


__all__ = ["desk", "qr_json", "read_invoice", "summary"]
