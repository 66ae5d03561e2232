"""Cashiers: the invoice queue, an invoice with its VietQR code, receipts, refunds, unmatched
transfers, shifts. Built against the billing API (specs/billing.yaml)."""

from __future__ import annotations

from typing import Any

from flask import g, render_template
from flask_babel import gettext

from . import backend_message, bp, login_required
from .backend import BackendError, entries, fhir_get


@bp.route("/invoices")
@login_required("cashier")
def invoices() -> Any:
    problem, rows = None, []
    params = {"status": "issued", "_count": "50", "_sort": "-date"}
    if g.user.facility:
        params["issuer"] = f"Organization/{g.user.facility}"
    try:
        rows = entries(fhir_get("billing", "/fhir/Invoice", params), "Invoice")
    except BackendError as err:
        problem = backend_message(err)
    return render_template("invoices.html", rows=rows, problem=problem, title=gettext("Invoices"))


@bp.route("/unmatched")
@login_required("cashier")
def unmatched() -> Any:
    return render_template("error.html", title=gettext("Unmatched transfers"),
                           message=gettext("The billing service does not offer this yet.")), 501


@bp.route("/shift")
@login_required("cashier")
def shift() -> Any:
    return render_template("error.html", title=gettext("Shift"),
                           message=gettext("The billing service does not offer this yet.")), 501


def _invoice(iid: str) -> dict[str, Any]:
    return fhir_get("billing", f"/fhir/Invoice/{iid}")


def is_paid(inv: dict[str, Any]) -> bool:
    return inv.get("status") == "balanced"


@bp.route("/invoices/<iid>")
@login_required("cashier")
def invoice(iid: str) -> Any:
    inv = _invoice(iid)
    qr, problem = None, None
    if not is_paid(inv) and inv.get("status") == "issued":
        try:
            qr = fhir_get("billing", f"/fhir/Invoice/{iid}/$vietqr")
        except BackendError as err:
            problem = backend_message(err)
    return render_template("invoice.html", inv=inv, iid=iid, qr=qr, problem=problem, paid=is_paid(inv),
                           title=gettext("Invoice"))


@bp.route("/invoices/<iid>/status")
@login_required("cashier")
def invoice_status(iid: str) -> Any:
    """The status box alone; htmx asks for it every few seconds until the invoice is paid."""
    try:
        inv = _invoice(iid)
    except BackendError:
        return render_template("_invoice_status.html", inv=None, iid=iid, paid=False, stale=True)
    return render_template("_invoice_status.html", inv=inv, iid=iid, paid=is_paid(inv), stale=False)


@bp.route("/invoices/<iid>/qr.svg")
@login_required("cashier")
def invoice_qr(iid: str) -> Any:
    from .backend import call

    r = call("billing", "GET", f"/fhir/Invoice/{iid}/$vietqr", params={"_format": "svg"}, accept="image/svg+xml")
    return r.content, 200, {"Content-Type": "image/svg+xml", "Cache-Control": "no-store"}


@bp.route("/invoices/<iid>/receipt")
@login_required("cashier")
def receipt(iid: str) -> Any:
    inv = _invoice(iid)
    return render_template("receipt.html", inv=inv, iid=iid, title=gettext("Receipt"))
