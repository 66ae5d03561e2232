"""Thin handlers of the cashier's payment operations under ``/payments``: invoice payment
summaries, the unmatched queue, cash, refunds, shifts, receipts and the daily report."""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import date, datetime, timedelta
from typing import Any, TypeVar

from flask import Response
from sen_shared.auth import current_principal, require_roles
from sen_shared.errors import NotFound, SenError
from sen_shared.fhir.audit import Record
from sen_shared.fhir.guarded import hidden_refusals
from sen_shared.idempotency_key import idempotent
from sen_shared.runtime import current

from ..domain import credits, payments, receipts, reconciliation, shifts, status
from ..domain.payments import VN

JSON = {"Content-Type": "application/json"}
F = TypeVar("F", bound=Callable[..., Any])


def _db() -> Any:
    return current().db


def _cashier_only(fn: F) -> F:
    """``require_roles("cashier")`` (admins too), and every 403 the endpoint answers (a role refused it,
    another facility's queue, report or refund tasks) recorded in billing's AuditEvent trail as the refusal
    it is, once (``hidden_refusals``: one :func:`_hiding` recorded inside is not recorded again)."""
    checked = require_roles("cashier")(fn)

    @functools.wraps(fn)
    def handler(*args: Any, **kwargs: Any) -> Any:
        rec = Record("operation", None, None, operation=fn.__name__.replace("_", "-"))
        with hidden_refusals(current().extras["fhir"].auditor, current_principal(), rec):
            return checked(*args, **kwargs)

    return handler  # type: ignore[return-value]


def _hiding(operation: str, key: str, rtype: str | None = "Invoice") -> Callable[[F], F]:
    """Another facility's invoice or payment (``payments.check_facility``: :class:`Hidden`) is answered as
    one not held, the same problem (404), so that a cashier does not learn which exist elsewhere; the
    refusal (403 and why) is recorded in billing's AuditEvent trail, as the Invoice operations' are
    (``BillingFhirServer.hide``). ``key``: the parameter (or body member) naming what was asked for."""
    def wrap(fn: F) -> F:
        @functools.wraps(fn)
        def handler(*args: Any, **kwargs: Any) -> Any:
            named = kwargs[key] if key in kwargs else (kwargs.get("body") or {}).get(key)
            rec = Record("operation", rtype, str(named) if named is not None and rtype else None, operation=operation)
            with hidden_refusals(current().extras["fhir"].auditor, current_principal(), rec):
                return fn(*args, **kwargs)

        return handler  # type: ignore[return-value]

    return wrap


@_cashier_only
def invoice_summaries(id: list[str]) -> Any:  # noqa: A002 - the spec's name
    """The queue's rows in one request: what is left to pay on each invoice it lists. Another facility's are
    left out as unknown ones are; their refusal is recorded once for the request, one AuditEvent naming them."""
    principal, refused = current_principal(), []
    found = status.summaries(_db(), id[:status.MAX_SUMMARIES], principal, refused)
    if refused:
        named = [f"Invoice/{i}" for i in refused]
        current().extras["fhir"].auditor.record(principal, Record(
            "operation", "Invoice", None, operation="invoice-summaries", status=403, subjects=named,
            detail=f"{', '.join(named)} belong to another facility"))
    return {"summaries": found}, 200, JSON


@_cashier_only
@_hiding("payments", "invoice_id")
def invoice_payments(invoice_id: str) -> Any:
    """The status box's poll: two reads for an issued invoice nobody paid yet (domain/status.py)."""
    invoice = status.read_invoice(_db(), invoice_id, current_principal())
    return status.summary(_db(), invoice), 200, JSON


@_cashier_only
@_hiding("desk", "invoice_id")
def invoice_desk(invoice_id: str) -> Any:
    """The invoice page's answer in one request: summary, Invoice and its VietQR (domain/status.py)."""
    settings = current().settings
    return status.desk(_db(), invoice_id, current_principal(), settings.bank_of,
                       timedelta(seconds=settings.qr_ttl_seconds)), 200, JSON


@_cashier_only
def unmatched(limit: int = 50, after: str | None = None, facility: str | None = None) -> Any:
    """The cashier's facility's queue (an admin: every facility's and the unowned accounts', or the
    one ``facility`` names, ``_unowned`` the unowned accounts')."""
    scope = payments.queue_scope(current_principal(), facility)
    rows, cursor = payments.unmatched_queue(_db(), limit, after, scope)
    body: dict[str, Any] = {"payments": [payments.public_payment(p) for p in rows]}
    if cursor:
        body["next"] = cursor
    return body, 200, JSON


@_cashier_only
@idempotent()  # sent again after its answer was lost: the first answer, not "not in the queue"
@_hiding("assign", "invoice", None)  # the refusal names the payment or the invoice
def assign(payment_id: str, body: dict[str, Any]) -> Any:
    recorded = payments.assign_unmatched(_db(), payment_id, body["invoice"], current_principal(),
                                         current().settings.account_facilities)
    return payments.public_payment(recorded.payment), 201, JSON


def _open_shift_id(required: bool) -> str | None:
    shift = shifts.current(_db(), current_principal())
    if shift is None and required:
        raise SenError("open a shift first (POST /payments/shifts)", status=409, title="Conflict")
    return shift["shift"] if shift else None


@_cashier_only
@idempotent()  # sent again after its answer was lost: the first answer (the transactionId is one payment anyway)
@_hiding("cash", "invoice")
def cash(body: dict[str, Any]) -> Any:
    shift_id = _open_shift_id(True)
    recorded = payments.record_cash(_db(), body["invoice"], int(body["amount"]), current_principal(),
                                    shift_id or "", body.get("transactionId"))
    return payments.public_payment(recorded.payment), 201 if recorded.created else 200, JSON


@_cashier_only
@idempotent()
@_hiding("refund", "payment_id", None)  # the refusal names the payment
def refund(payment_id: str, body: dict[str, Any]) -> Any:
    shift_id = _open_shift_id(body.get("method", "cash") == "cash")
    return payments.refund(_db(), payment_id, body.get("amount"), body.get("reason", ""), current_principal(),
                           shift_id if body.get("method", "cash") == "cash" else None,
                           after_settlement=bool(body.get("afterSettlement"))), 201, JSON


@_cashier_only
@idempotent()  # sent again after its answer was lost: the shift it opened, not "a shift is open already"
def open_shift(body: dict[str, Any] | None = None) -> Any:
    return shifts.open_shift(_db(), current_principal(), int((body or {}).get("openingCash", 0))), 201, JSON


@_cashier_only
def current_shift() -> Any:
    shift = shifts.current(_db(), current_principal())
    if shift is None:
        raise NotFound("no shift is open")
    out = shifts.public(shift)
    out["expected"] = shifts.expected_totals(_db(), shift, datetime.now(VN))
    return out, 200, JSON


@_cashier_only
@idempotent()  # sent again after its answer was lost: the close it made, not "no shift is open"
def close_shift(body: dict[str, Any]) -> Any:
    return shifts.close_shift(_db(), current_principal(), int(body["countedCash"]), int(body["countedTransfers"]),
                              body.get("note", ""), int(body.get("countedTransfersRefunded", 0))), 200, JSON


def _receipt(invoice_id: str) -> dict[str, Any]:
    receipt = _db()[receipts.RECEIPTS].find_one({"_id": invoice_id}, {"outbox": 0})
    missing = NotFound(f"invoice {invoice_id} has no receipt (it is not paid in full)")
    if receipt is None:
        raise missing
    payments.check_facility(current_principal(), receipt.get("facility"), missing)  # another's: as missing
    return receipt


def _line(li: dict[str, Any]) -> dict[str, Any]:
    out = {"text": str(li.get("text") or ""), "patientShare": int(li.get("patientShare") or 0)}
    for key in ("service", "quantity", "unitPrice", "amount", "insurerShare"):  # a receipt's invoice read
        if li.get(key) is not None:
            out[key] = li[key]
    return out


@_cashier_only
@_hiding("receipt", "invoice_id")
def receipt(invoice_id: str) -> Any:
    r = receipts.receipt_view(_db(), _receipt(invoice_id))
    name = current().settings.name_of(r.get("facility"))  # as the printed receipt names it (SEN_FACILITY_NAMES)
    body = {"number": r["number"], "invoice": invoice_id, "facility": r.get("facility"),
            **({"facilityName": name} if name and name != r.get("facility") else {}),
            **({"reference": r["reference"]} if r.get("reference") else {}), "owed": r["owed"],
            "gross": r["gross"], "insurerShare": r["insurer"],
            "paid": r["paid"], "refunded": r["refunded"], "credit": r["credit"],
            "settledAt": payments.iso(r["settled_at"]),
            # what was paid for and by whom, as the printed receipt says it (the portal's page showed neither)
            "lines": [_line(li) for li in r.get("lines") or []],
            "payments": [{"at": payments.iso(p["at"]), "channel": p["channel"], "amount": int(p["amount"])}
                         for p in r.get("payments") or []],
            "refunds": [{"at": payments.iso(x["at"]) if x.get("at") else None, "channel": x["channel"],
                         "amount": x["amount"], "reason": x["reason"],
                         # one cashier started it, another finished it (payments.refund): both named
                         **({"startedBy": x["started_by"], "finishedBy": x["finished_by"]}
                            if x.get("started_by") else {}),
                         # a paid invoice's payment given back after its settlement (the receipt stands)
                         **({"afterSettlement": True, "by": x["by"]} if x.get("after_settlement") else {})}
                        for x in r["refunds"]],
            **({"patient": r["patient"]} if r.get("patient") else {}),
            **({"cancelled": True} if r.get("cancelled") else {}),  # an invoice BHYT paid in full, cancelled since
            "reconciliation": f"PaymentReconciliation/{r['reconciliation']}",
            "html": f"/payments/receipts/{invoice_id}/html", "pdf": f"/payments/receipts/{invoice_id}/pdf"}
    return body, 200, JSON


# a receipt is opened and printed on the cash desk's computer: kept in no cache (sen_shared.web's default is
# ``private, no-cache``); its page's own style, inline, is all it loads; a browser's PDF viewer is a plugin that
# ``default-src 'none'`` would block, so the PDF's policy only keeps it out of other sites' frames
RECEIPT_HTML_HEADERS = {"Cache-Control": "no-store",
                        "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
                                                   "frame-ancestors 'none'"}
RECEIPT_PDF_HEADERS = {"Cache-Control": "no-store", "Content-Security-Policy": "frame-ancestors 'none'"}


@_cashier_only
@_hiding("receipt-html", "invoice_id")
def receipt_html(invoice_id: str) -> Any:
    r = receipts.receipt_view(_db(), _receipt(invoice_id))
    name = current().settings.name_of(r.get("facility"))
    return Response(receipts.receipt_html(r, name), 200, mimetype="text/html", headers=RECEIPT_HTML_HEADERS)


@_cashier_only
@_hiding("receipt-pdf", "invoice_id")
def receipt_pdf(invoice_id: str) -> Any:
    r = receipts.receipt_view(_db(), _receipt(invoice_id))
    pdf = receipts.receipt_pdf(r, current().settings.name_of(r.get("facility")))
    return Response(pdf, 200, mimetype="application/pdf",
                    headers={**RECEIPT_PDF_HEADERS,
                             "Content-Disposition": f'inline; filename="bien-lai-{r["number"]}.pdf"'})


@_cashier_only
def daily_report(day: str | None = None, facility: str | None = None) -> Any:
    principal = current_principal()
    if "admin" not in principal.roles:
        facility = principal.facility  # a cashier sees their own facility's day
        if not facility:
            raise SenError("a cashier's token must name their facility", status=403, title="Forbidden")
    try:
        when = date.fromisoformat(day) if day else datetime.now(VN).date()
    except ValueError:
        raise SenError("day must be a date, YYYY-MM-DD") from None
    if when == date.max:  # the day's end (its next midnight) is past the calendar (a 500 before)
        raise SenError("day must be a date before 9999-12-31")
    settings = current().settings
    text = reconciliation.to_csv(when, reconciliation.rows(_db(), when, facility,
                                                           account_facilities=settings.account_facilities),
                                 settings.facility_names)
    return Response(text, 200, mimetype="text/csv", headers={
        "Content-Disposition": f'attachment; filename="doi-soat-{when.isoformat()}.csv"'})


@_cashier_only
def refund_tasks(limit: int = 50, after: str | None = None, facility: str | None = None,
                 state: str = "open", include: str | None = None) -> Any:
    """Money to give back: the facility's refund tasks (a cashier: their own; an admin: ``facility``
    or every facility's), the open ones (not refunded yet) by default, oldest first, a page at a time;
    ``include=credits``: and the credits of overpaid invoices, in the same order (domain/credits.py)."""
    scope = payments.task_scope(current_principal(), facility)
    if include == "credits":
        tasks, cursor = credits.money_back(_db(), limit, after, scope, state)
    else:
        rows, cursor = payments.refund_tasks(_db(), limit, after, scope, state)
        tasks = [payments.public_refund_task(r) for r in rows]
    body: dict[str, Any] = {"tasks": tasks}
    if cursor:
        body["next"] = cursor
    return body, 200, JSON


@_cashier_only
def shifts_list(state: str = "closed", limit: int = 5) -> Any:
    """The cashier's own closed shifts, newest first, each with its closing summary."""
    if state != "closed":
        raise SenError("state: only closed shifts are listed (the open one: /payments/shifts/current)")
    return {"shifts": shifts.closed_shifts(_db(), current_principal(), limit)}, 200, JSON
