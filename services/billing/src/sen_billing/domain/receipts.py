"""Settling a paid invoice: one "balanced" claim, one receipt number, one receipt, one event.

:func:`settle_invoice` runs after every payment that leaves nothing due. It claims
``invoice_balanced/<invoice id>`` by insert: among any number of concurrent final payments
exactly one wins, and only the winner goes on (:func:`complete_settlement`):

1. a receipt number from the facility's series: a claims chain ``receipt:<facility>:<year>``
   in ``receipt_numbers`` whose link n IS receipt n (``advance`` from the newest link; a writer
   that loses the race reads the new newest link and tries the next number, so numbers have no
   gaps and are never given twice; no counter is ever updated);
2. the PaymentReconciliation (FHIR, id ``pr-<invoice id>``);
3. the Invoice's status ``balanced`` (the single writer of that change: the claim's winner);
4. the receipt document (``receipts``, keyed by the invoice id) carrying ``billing.invoice.paid``
   in its outbox, written by the same insert.

Each step is idempotent, so :func:`repair_settlements` (the worker, one process) can roll a
crashed winner forward. Receipts are rendered as HTML and as PDF (WeasyPrint).
"""

from __future__ import annotations

import html
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo.collection import Collection
from pymongo.database import Database
from sen_shared.bus.events import make_event
from sen_shared.bus.outbox import new_document
from sen_shared.claims import CHAIN_SEQ, ClaimTaken, advance, claim_once, link_id

from . import invoice_port
from .payments import BALANCED, VN, iso, local_day

RECEIPTS = "receipts"
RECEIPT_NUMBERS = "receipt_numbers"


def vnd(amount: int) -> str:
    """``150.000 ₫``: Vietnamese grouping with dots."""
    return f"{int(amount):,}".replace(",", ".") + " ₫"


def settle_invoice(db: Database, invoice_id: str, *, channel: str, invoice: invoice_port.InvoiceView | None = None,
                   paid: int | None = None, counted: list[dict[str, Any]] | None = None) -> bool:
    """Claim the invoice's settlement; True for the one caller that won (and settled it).
    ``invoice``, ``paid`` and ``counted`` (the payments): what the caller read already."""
    paid = invoice_port.paid_total(db, invoice_id) if paid is None else paid
    invoice = invoice if invoice is not None and invoice.id == invoice_id else invoice_port.get(db, invoice_id)
    if invoice is None:
        return False
    won, claim = claim_once(db[BALANCED], invoice_id, {"facility": invoice.facility, "district": invoice.district,
                                                       "paid": paid, "owed": invoice.owed, "channel": channel,
                                                       "done": False})
    if won:
        _settle(db, invoice, claim, fresh=True, counted=counted)
    return won


_newest_seen: dict[str, int] = {}  # chain -> the newest link number this process saw (a hint only)


def newest_link_number(coll: Collection, chain: str) -> int:
    """The number of the newest link of ``chain`` (0: none), by ``_id`` look-ups only.

    ``claims.latest`` sorts the chain's links, which FerretDB does in its own code after
    fetching all of them: a receipt series grows by thousands a year. Links of a chain are
    contiguous (link n+1 is only ever claimed after link n), so a galloping search on the
    ``_id``s finds the newest in O(log n) point reads, and from this process's last answer
    (the hint) usually in one or two.
    """
    def exists(n: int) -> bool:
        return n == 0 or coll.find_one({"_id": link_id(chain, n)}, {"_id": 1}) is not None

    lo = _newest_seen.get(chain, 0)
    if not exists(lo):  # a hint from another database (tests) or a wiped one: start over
        lo = 0
    step = 1
    hi = lo + step
    while exists(hi):
        lo, step = hi, step * 2
        hi = lo + step
    while hi - lo > 1:  # lo exists, hi does not
        mid = (lo + hi) // 2
        if exists(mid):
            lo = mid
        else:
            hi = mid
    _newest_seen[chain] = lo
    return lo


def _receipt_number(db: Database, facility: str, invoice_id: str, year: int, *, fresh: bool) -> str:
    """The next number of the facility's series for this invoice (its own, if a crashed try took one)."""
    coll = db[RECEIPT_NUMBERS]
    chain = f"receipt:{facility}:{year}"
    mine = None if fresh else coll.find_one({"k": chain, "invoice": invoice_id})
    while mine is None:
        last = newest_link_number(coll, chain)
        try:
            mine = advance(coll, chain, {CHAIN_SEQ: last}, {"invoice": invoice_id, "facility": facility})
            _newest_seen[chain] = int(mine[CHAIN_SEQ])
        except ClaimTaken:
            _newest_seen[chain] = last + 1  # another invoice took that number: try the next one
    return f"{facility.upper()[:12]}-{year}-{int(mine[CHAIN_SEQ]):06d}"


def complete_settlement(db: Database, invoice_id: str) -> dict[str, Any]:
    """Finish a claimed settlement (the repair job; idempotent): the receipt, whether it was there or not."""
    done = db[RECEIPTS].find_one({"_id": invoice_id}, {"outbox": 0})
    if done is not None:
        db[BALANCED].update_one({"_id": invoice_id}, {"$set": {"done": True}})  # see the end of _settle
        return done
    balanced = db[BALANCED].find_one({"_id": invoice_id})
    invoice = invoice_port.get(db, invoice_id)
    if balanced is None or invoice is None:
        raise LookupError(f"invoice {invoice_id} is not balanced")
    return _settle(db, invoice, balanced, fresh=False)


def _settle(db: Database, invoice: invoice_port.InvoiceView, balanced: dict[str, Any], *,
            fresh: bool, counted: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Steps 1-4 for a claimed invoice; only the claim's winner (``fresh``) or the one repair
    process calls it, so each step has one writer."""
    invoice_id = invoice.id
    settled_at: datetime = balanced["at"]
    if settled_at.tzinfo is None:
        settled_at = settled_at.replace(tzinfo=UTC)
    facility = invoice.facility or "unknown"
    number = _receipt_number(db, facility, invoice_id, settled_at.astimezone(VN).year, fresh=fresh)
    # the payments read after the claim was won, or by the winner just before it: a payment
    # inserted later still counts toward the invoice (as credit), it is only not on the receipt
    payments = counted if counted is not None else invoice_port.counted_payments(db, invoice_id)
    paid = sum(int(p["amount"]) for p in payments)
    channels = {p["channel"] for p in payments}
    channel = channels.pop() if len(channels) == 1 else "mixed"
    reconciliation_id = f"pr-{invoice_id}"[:64]
    invoice_port.create_reconciliation(db, reconciliation_id, _reconciliation(
        invoice, number, paid, payments, settled_at), fresh=fresh)
    invoice_port.mark_balanced(db, invoice_id, invoice)
    data: dict[str, Any] = {"invoice": f"Invoice/{invoice_id}", "amount": max(paid, 1), "currency": "VND",
                            "paidAt": iso(settled_at), "reconciliation": f"PaymentReconciliation/{reconciliation_id}"}
    if invoice.facility:
        data["facility"] = f"Organization/{invoice.facility}"
    if invoice.district:
        data["district"] = invoice.district
    if channel in ("transfer", "cash", "mixed"):
        data["channel"] = channel
    # validated against its schema in the tests (test_billing_webhooks), not on every settlement
    event = make_event("billing.invoice.paid", data, subject=f"Invoice/{invoice_id}", validate=False)
    receipt = {"number": number, "invoice": invoice_id, "facility": invoice.facility, "owed": invoice.owed,
               "paid": paid, "credit": max(0, paid - invoice.owed), "settled_at": settled_at,
               "day": local_day(settled_at), "reconciliation": reconciliation_id, "channel": channel,
               "payments": [{"id": p["_id"], "amount": int(p["amount"]), "channel": p["channel"],
                             "provider": p["provider"], "at": p["received_at"]} for p in payments],
               "lines": invoice.lines, "patient": invoice.patient_display, "invoice_title": invoice.title}
    _, held = claim_once(db[RECEIPTS], invoice_id, new_document(receipt, [event]))
    # the claim's winner (or the one repair process, when the winner died) is this flag's only writer;
    # both write the same value. It lets the repair job find unfinished settlements by an equality.
    db[BALANCED].update_one({"_id": invoice_id}, {"$set": {"done": True}})
    return held


def _reconciliation(invoice: invoice_port.InvoiceView, number: str, paid: int, payments: list[dict[str, Any]],
                    settled_at: datetime) -> dict[str, Any]:
    pr: dict[str, Any] = {
        "resourceType": "PaymentReconciliation", "status": "active",
        "created": settled_at.astimezone(VN).isoformat(timespec="seconds"),
        "paymentDate": settled_at.astimezone(VN).date().isoformat(),
        "paymentAmount": {"value": paid, "currency": "VND"},
        "paymentIdentifier": {"system": "urn:sen:billing:receipt", "value": number},
        "outcome": "complete", "disposition": f"Hóa đơn đã thanh toán đủ; biên lai {number}",
        "detail": [{"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/payment-type",
                                         "code": "payment"}]},
                    "identifier": {"system": "urn:sen:billing:payment", "value": p["_id"]},
                    "request": {"reference": f"Invoice/{invoice.id}"},
                    "date": p["received_at"].astimezone(VN).date().isoformat(),
                    "amount": {"value": int(p["amount"]), "currency": "VND"}} for p in payments],
    }
    if invoice.facility:
        pr["requestor"] = {"reference": f"Organization/{invoice.facility}"}
    return pr


def repair_settlements(db: Database, older_than: timedelta = timedelta(minutes=1)) -> int:
    """Finish settlements whose winner stopped half-way (the worker runs this; one process)."""
    cutoff = datetime.now(UTC) - older_than
    fixed = 0
    for claim in db[BALANCED].find({"done": False}, {"_id": 1, "at": 1}):
        at = claim["at"] if claim["at"].tzinfo else claim["at"].replace(tzinfo=UTC)
        if at < cutoff:
            complete_settlement(db, claim["_id"])
            fixed += 1
    return fixed


# ------------------------------------------------------------------------------- rendering

def receipt_html(receipt: dict[str, Any]) -> str:
    esc = html.escape
    settled = receipt["settled_at"]
    settled = settled if settled.tzinfo else settled.replace(tzinfo=UTC)
    lines = "".join(
        f"<tr><td>{esc(str(line.get('text', '')))}</td><td class=n>{vnd(line.get('patientShare', 0))}</td></tr>"
        for line in receipt.get("lines") or [])
    pays = "".join(
        f"<tr><td>{esc(p['id'])}</td><td>{'Tiền mặt' if p['channel'] == 'cash' else 'Chuyển khoản'}</td>"
        f"<td class=n>{vnd(p['amount'])}</td></tr>" for p in receipt.get("payments") or [])
    credit = (f"<p>Số tiền trả thừa (ghi có cho người bệnh): <b>{vnd(receipt['credit'])}</b></p>"
              if receipt.get("credit") else "")
    return f"""<!doctype html>
<html lang="vi"><head><meta charset="utf-8"><title>Biên lai {esc(receipt['number'])}</title>
<style>
 body {{ font-family: "DejaVu Sans", "Noto Sans", sans-serif; font-size: 11pt; margin: 2em; }}
 h1 {{ font-size: 16pt; margin-bottom: 0; }} table {{ border-collapse: collapse; width: 100%; margin: 1em 0; }}
 td, th {{ border-bottom: 1px solid #ccc; padding: 4px; text-align: left; }} .n {{ text-align: right; }}
 @page {{ size: A5; margin: 12mm; }}
</style></head>
<body>
<h1>BIÊN LAI THU TIỀN</h1>
<p>Số: <b>{esc(receipt['number'])}</b> · Cơ sở: {esc(str(receipt.get('facility') or ''))}</p>
<p>Ngày: {settled.astimezone(VN).strftime('%d/%m/%Y %H:%M')} (giờ Việt Nam)</p>
<p>Hóa đơn: {esc(receipt['invoice'])}{(' · ' + esc(receipt['patient'])) if receipt.get('patient') else ''}</p>
<table><tr><th>Dịch vụ</th><th class=n>Người bệnh trả</th></tr>{lines}</table>
<table><tr><th>Thanh toán</th><th>Hình thức</th><th class=n>Số tiền</th></tr>{pays}</table>
<p>Phải trả: <b>{vnd(receipt['owed'])}</b> · Đã trả: <b>{vnd(receipt['paid'])}</b></p>
{credit}
</body></html>
"""


def receipt_pdf(receipt: dict[str, Any]) -> bytes:
    from weasyprint import HTML  # imported on use: it loads pango, which only receipts need

    return HTML(string=receipt_html(receipt)).write_pdf()
