"""The daily reconciliation report on the cashier's shift page (``/shift``, its "Daily report"
section): a day (today in Vietnam by default), billing's CSV of it downloaded through the portal
with the user's own token (``/shift/daily-report.csv?day=``), and that day's totals on the page.
The download is billing's rows in the page's language (:func:`readable`: Vietnamese column names and
values on a Vietnamese page, English on an English one; times dd/mm/yyyy in Vietnam; amounts whole
đồng), written as the dashboard's CSVs are (``csvfile``: UTF-8 with its BOM, which Excel needs);
billing's own CSV stays the machine format (English codes, ISO times).

Billing's ``GET /payments/reports/daily.csv`` decides whose day it is: a cashier's facility's, every
facility's for an admin; it refuses every other role (the health department too), so the portal
offers it to cashiers and the admin only. The summary costs one billing request, the same CSV: its
last rows are billing's totals (``kind`` ``total``: transfers, cash, refunds, unmatched, net,
payments; and of the unmatched, assigned since, given back, still waiting, with the day's
assignments of earlier days' transfers), so the page shows billing's own arithmetic. An unmatched
transfer counts on the day it came, whatever became of it since (the dashboard's rule too); its row
in the download says to which invoice and when it was assigned. A malformed day or one in the future is
explained on the form, what was typed kept; the download of such a day goes back to the form.
"""

from __future__ import annotations

import csv
import io
from datetime import date, datetime
from typing import Any

from flask import redirect, request, url_for
from flask_babel import gettext
from flask_babel import lazy_gettext as _l
from wtforms import ValidationError
from wtforms.validators import InputRequired

from . import backend_message, bp, csvfile, login_required, outcome_label, refunded_label
from .backend import BackendError, call
from .formatting import TZ, payment_method, received_through, today
from .forms import FlaskForm, LocalDateField

TOTALS = ("transfers", "cash", "refunds", "unmatched", "net", "payments", "unmatched_assigned", "unmatched_refunded",
          "unmatched_waiting", "assigned_earlier")


class ReportDayField(LocalDateField):
    """A day typed dd/mm/yyyy; a malformed one explained in the page's language."""

    def process_formdata(self, valuelist: list[Any]) -> None:
        if not valuelist or not " ".join(str(v) for v in valuelist).strip():
            self.data = None  # nothing typed: InputRequired says so
            return
        try:
            super().process_formdata(valuelist)
        except ValueError:
            raise ValueError(str(_l("Write the day as dd/mm/yyyy, e.g. 05/12/2026."))) from None


class DailyReportForm(FlaskForm):
    class Meta:
        csrf = False  # a GET: it changes nothing

    day = ReportDayField(_l("Day"), validators=[InputRequired(_l("Enter the day."))])

    def validate_day(self, field: ReportDayField) -> None:
        if field.data and field.data > today():
            raise ValidationError(_l("This day has not come yet (today is %(today)s in Vietnam).",
                                     today=today().strftime("%d/%m/%Y")))


def fetch(day: date) -> bytes:
    """Billing's CSV of ``day`` for this user (a BackendError: refused, down)."""
    return call("billing", "GET", "/payments/reports/daily.csv", params={"day": day.isoformat()},
                accept="text/csv", timeout=30).content


def summarize(text: bytes, day: date) -> dict[str, Any]:
    """The day's totals from billing's CSV (its ``total`` rows), how many refunds it lists, and the shifts
    closed that day (its ``shift`` rows, as billing's shift summary names them: :func:`_closed_shift`)."""
    out: dict[str, Any] = {"day": day, "refund_count": 0, "shifts": [], **{k: 0 for k in TOTALS}}
    for r in csv.DictReader(io.StringIO(text.decode("utf-8-sig"))):
        if r.get("kind") == "total" and r.get("id") in TOTALS:
            try:
                out[str(r["id"])] = int(r.get("amount") or 0)
            except ValueError:
                continue
        elif r.get("kind") == "refund":
            out["refund_count"] += 1
        elif r.get("kind") == "shift":
            out["shifts"].append(_closed_shift(r))
    return out


def _amount(value: str | None) -> int | None:
    try:
        return int(value or "")
    except ValueError:
        return None


def _closed_shift(r: dict[str, str]) -> dict[str, Any]:
    """A ``shift`` row of billing's CSV as its shift summary (``/payments/shifts``) has it: when it opened and
    closed, whose, expected against counted cash and transfers, the difference and the note."""
    return {"openedAt": r.get("shift_opened_at") or "", "closedAt": r.get("time") or "",
            "cashierName": r.get("cashier_name") or r.get("cashier") or "", "note": r.get("note") or "",
            **{part: {k: _amount(r.get(f"{prefix}_{k}")) for k in ("cash", "transfers")}
               for part, prefix in (("expected", "expected"), ("counted", "counted"))},
            "difference": {k: _amount(r.get(f"{k}_difference")) for k in ("cash", "transfers")}}


def section() -> dict[str, Any]:
    """What the shift page's report section shows: the form (today by default) and, once a day is
    asked for (``?day=``), that day's summary or why there is none."""
    if "day" not in request.args:
        return {"report_form": DailyReportForm(formdata=None, day=today()), "report": None, "report_problem": None}
    form = DailyReportForm(formdata=request.args)
    if not form.validate():
        return {"report_form": form, "report": None, "report_problem": None}
    try:
        return {"report_form": form, "report": summarize(fetch(form.day.data), form.day.data),
                "report_problem": None}
    except BackendError as err:
        return {"report_form": form, "report": None, "report_problem": backend_message(err)}


@bp.route("/shift/daily-report.csv")
@login_required("cashier")
def daily_report_csv() -> Any:
    form = DailyReportForm(formdata=request.args)
    if not form.validate():  # the form says why, with what was typed
        return redirect(url_for("web.shift", day=request.args.get("day", ""), _anchor="daily-report"))
    try:
        body = fetch(form.day.data)
    except BackendError:  # the shift page asks again and says why (billing down, refused)
        return redirect(url_for("web.shift", day=form.day.data.strftime("%d/%m/%Y"), _anchor="daily-report"))
    from .directory import org_names  # the facilities' names (the EHR's, kept; ids when it does not answer)

    header, rows = readable(body, org_names())
    return csvfile.download(header, rows, f"doi-soat-{form.day.data.isoformat()}.csv",
                            headers={"Cache-Control": "no-store"})


# the download in the page's language: billing's CSV (its API's, a machine format: codes, ISO times)
# with each column, row kind, channel, yes/no, outcome and total named as the page names them
_COLUMNS = {"kind": _l("Row"), "time": _l("Time"),
            # what the cashier finds on the bank statement or in the cash book (:func:`_transaction`), not
            # billing's payment id (``standard:a5af…``, ``cashier:50d0…``, ``assign:…``: its own keys)
            "id": _l("Transaction (bank statement or cash book) or total"),
            "provider": _l("Received through"), "channel": _l("Channel"), "invoice": _l("Invoice"),
            "facility": _l("Facility"), "amount": _l("Amount (đồng)"),
            # whether the row's amount is in the day's totals (a spreadsheet's sum of the amounts is then the net)
            "in_totals": _l("In the day's totals"), "matched": _l("Matched to an invoice"),
            "outcome": _l("Outcome"), "reference": _l("Reference"), "cashier": _l("Cashier"),
            "shift": _l("Shift"), "note": _l("Note"),
            # a closed shift's row (billing's ``shift``: its time the close, its shift when it opened and whose)
            "expected_cash": _l("Expected cash (đồng)"), "counted_cash": _l("Counted cash (đồng)"),
            "cash_difference": _l("Cash difference (đồng)"), "expected_transfers": _l("Expected transfers (đồng)"),
            "counted_transfers": _l("Transfers on the bank statement (đồng)"),
            "transfers_difference": _l("Transfers difference (đồng)"),
            # money that raced a close (billing's ``recorded_after_close``: in no shift's expected figures): on
            # its row whether it was; on a closed shift's, the nets so recorded
            "recorded_after_close": _l("Recorded after its shift was closed"),
            "after_close_cash": _l("Cash recorded after the close (đồng)"),
            "after_close_transfers": _l("Transfers recorded after the close (đồng)"),
            # when the bank says a transfer happened (the row is on that day; "time" is when billing received it)
            "bank_time": _l("Time at the bank")}
_KINDS = {"payment": _l("Payment"), "refund": _l("Refund"), "total": _l("Total"), "shift": _l("Closed shift")}
_CHANNELS = {"cash": _l("Cash"), "transfer": _l("Bank transfer")}
_YES_NO = {"yes": _l("Yes"), "no": _l("No")}
_PROVIDERS = {"cashier": _l("Cashier")}  # the others are the payment gateways' names (SePay, Casso, payOS)
_TOTAL_NAMES = {"transfers": _l("Bank transfers"), "cash": _l("Cash"), "refunds": _l("Refunds"),
                "unmatched": _l("Unmatched transfers"), "net": _l("Net takings"),
                "payments": _l("Number of payments"),
                "unmatched_assigned": _l("Unmatched transfers: assigned to invoices since"),
                "unmatched_refunded": _l("Unmatched transfers: given back since"),
                "unmatched_waiting": _l("Unmatched transfers: still waiting"),
                # billing's assigned_earlier is net of the day's refunds of those assignments: said so
                "assigned_earlier": _l(
                    "Assigned this day from transfers of earlier days, less what was given back of them")}
_TASKS = {"invoice-cancelled": _l("To refund: the invoice was cancelled"),
          "invoice-balanced": _l("To refund: the invoice was already paid")}
_TASKS_DONE = {"invoice-cancelled": _l("Given back: the invoice was cancelled"),  # the task's payment refunded
               "invoice-balanced": _l("Given back: the invoice was already paid")}


def _label(table: dict[str, Any], value: str) -> str:
    label = table.get(value)
    return str(label) if label is not None else value


def _time(value: str) -> str:
    """An ISO time as dd/mm/yyyy HH:MM:SS in Vietnam (a total's day as dd/mm/yyyy); else as it is."""
    try:
        if len(value) == 10:
            return date.fromisoformat(value).strftime("%d/%m/%Y")
        return datetime.fromisoformat(value).astimezone(TZ).strftime("%d/%m/%Y %H:%M:%S")
    except ValueError:
        return value


def _assigned_label(invoice: str, at: str) -> str:
    """An unmatched transfer assigned since: "Đã gán vào HD2RXD3FDH5 (06/12/2026 10:15)"."""
    if not at:
        return gettext("Assigned to %(invoice)s", invoice=invoice)
    return gettext("Assigned to %(invoice)s (%(time)s)", invoice=invoice, time=_time(at)[:16])


def _note(value: str, given_back: bool = False, transfer: str = "") -> str:
    """The row's note; an assignment's names the transfer it came from by the bank's transaction
    (``transfer``: the row's own, the transfer's), not by billing's payment id."""
    if value.startswith("refund task: "):
        return _label(_TASKS_DONE if given_back else _TASKS, value.removeprefix("refund task: "))
    if value.startswith("assigned from "):
        if transfer:
            return gettext("Assigned from the transfer %(reference)s", reference=transfer)
        return gettext("Assigned from an unmatched transfer")
    return value  # a refund's reason, as the cashier wrote it


# billing's columns folded into others: the cashier's name into "cashier", the shift's opening into "shift"
# (and the shifts' names), a refund of the payment into "outcome"
# (and the shifts' names), a refund of the payment into "outcome", the bank's reference into "reference",
# an unmatched transfer's assignment since (to which invoice, when) into "outcome"
# and billing's ``reference`` (the invoice's HD… code, in "invoice"), its ``bank_reference`` into the
# transaction column (:func:`_transaction`)
_FOLDED = ("cashier_name", "shift_opened_at", "refunded_amount", "refunded_at", "shift_cashier_name",
           "bank_reference", "assigned_to", "assigned_at", "reference")


def _who_and_how(r: dict[str, str]) -> dict[str, str]:
    """A row's cashier by name (billing's ``cashier_name``, the name their shift was opened under;
    the token's subject only where billing has none), its shift by when it opened and whose ("05/12/2026
    07:00 · Lê Thị Thu"; its id where billing gives no opening), and how the money came (the gateway's
    name, "Chuyển khoản ngân hàng", "Tiền mặt") instead of billing's provider code."""
    if r.get("kind") == "total":
        return {}
    name = r.get("cashier_name") or r.get("cashier", "")
    shift = r.get("shift", "")
    if shift and r.get("shift_opened_at"):
        # a transfer counts under each shift of its facility open when it came (billing lists them, the
        # name each was opened under in ``shift_cashier_name``); a cash row or refund under its own
        opened = r["shift_opened_at"].split()
        names = r["shift_cashier_name"].split(" | ") if r.get("shift_cashier_name") else [name] * len(opened)
        shift = "; ".join(" · ".join(p for p in (_time(at)[:16], who) if p)
                          for at, who in zip(opened, names + [""] * (len(opened) - len(names)), strict=False))
    how = received_through(r.get("provider"), r.get("channel")) if r.get("kind") != "shift" else ""  # no money
    if r.get("kind") == "refund":  # money going out, by the refund's own channel (cash from the drawer, a transfer)
        how = gettext("Refunded through: %(how)s", how=payment_method(None, r.get("channel")))
    return {"cashier": name, "shift": shift, "provider": how}


def _bank_reference(r: dict[str, str]) -> str:
    """"Reference": what the cashier matches against the bank statement, billing's ``bank_reference``
    (a transfer's bank reference or transaction id; a refund's, the transfer it gives back); from a
    billing without that column, a transfer's transaction id (its payment id's after ``provider:``).
    Never the invoice's HD… code, which the "Invoice" column shows."""
    if "bank_reference" in r:
        return r["bank_reference"]
    if r.get("kind") == "payment" and r.get("channel") == "transfer" and ":" in r.get("id", ""):
        return r["id"].removeprefix("assign:").split(":", 1)[-1]
    return ""


def _transaction(r: dict[str, str]) -> str:
    """The row's transaction as the cashier finds it: a transfer's (and a refund by transfer's) on the bank
    statement, by the bank's transaction id or reference (:func:`_bank_reference`); cash in the cash book,
    "Tiền mặt · <cashier>" (the row's time tells one from another). A total by its name. Never billing's
    payment id, which no statement or cash book shows."""
    if r.get("kind") == "total":
        return _label(_TOTAL_NAMES, r.get("id", ""))
    if r.get("kind") == "shift":
        return ""  # its shift and times say which
    if r.get("kind") == "refund":
        return _refund_transaction(r)
    if r.get("channel") == "cash":
        who = r.get("cashier", "")
        return gettext("Cash · %(cashier)s", cashier=who) if who else str(_CHANNELS["cash"])
    return _bank_reference(r)


def _refund_transaction(r: dict[str, str]) -> str:
    """A refund's row is money going out: how it went (cash paid out of the drawer by the cashier, a transfer
    sent back) and the incoming transaction it gives back, by the bank's id ("Chuyển khoản trả lại · hoàn cho
    giao dịch FT26339123456"), never that transaction's id alone, which reads as money that came in."""
    if r.get("channel") == "cash":
        who = r.get("cashier", "")
        out = gettext("Cash paid out · %(cashier)s", cashier=who) if who else gettext("Cash paid out")
    else:
        out = gettext("Transfer sent back")
    given_back = _bank_reference(r)
    if not given_back:  # a cash payment given back: the cash book has it by the time and the invoice
        return out
    return gettext("%(refund)s · refund of the transaction %(reference)s", refund=out, reference=given_back)


IN_TOTALS = "in_totals"  # not billing's: said by the portal from the row (:func:`_in_totals`)


def _in_totals(row: dict[str, str]) -> str:
    """Whether a payment's or refund's amount is in the day's totals (billing's ``totals``): every one but an
    assignment of an unmatched transfer to an invoice (``assign:<transfer>``), whose money is on the row of
    the transfer when it came (its day's, perhaps an earlier one); "" for the total and shift rows. So a
    spreadsheet's sum of the rows counted is the day's net, not the assigned money twice."""
    if row.get("kind") not in ("payment", "refund"):
        return ""
    if row.get("kind") == "payment" and str(row.get("id") or "").startswith("assign:"):
        return str(_l("No: counted on the row of the transfer when it came"))
    return str(_YES_NO["yes"])


def readable(body: bytes, facilities: dict[str, str] | None = None) -> tuple[list[str], list[list[str]]]:
    """Billing's CSV as the page's language writes it: header, rows (amounts stay whole đồng). The
    invoice is named by its payment reference (HD…, the code the patient and the desk see; a refund's
    row, which billing gives no reference, by its invoice's payments' reference in the same day), the
    facility by its name (``facilities``: the directory's, id → name; else billing's ``facility_name``,
    which a cashier's CSV has since the EHR lets no cashier read Organizations), not by their ids. The
    cashier stays the id billing gives (no directory of cashiers' names)."""
    reader = csv.DictReader(io.StringIO(body.decode("utf-8-sig")))
    # billing's ``facility_name`` (its SEN_FACILITY_NAMES) names the facility where the directory cannot
    # (the EHR refuses Organization reads to a cashier): folded into the facility column, not shown twice
    columns = [c for c in reader.fieldnames or [] if c != "facility_name"]
    columns = [c for c in columns if c not in _FOLDED]
    if "amount" in columns:  # last: whether the day's totals count the row's amount (review 12)
        columns.append(IN_TOTALS)
    found = [{k: (v or "") for k, v in r.items() if k is not None} for r in reader]
    references = {r["invoice"]: r["reference"] for r in found if r.get("invoice") and r.get("reference")}
    facilities = facilities or {}
    rows = []
    for r in found:
        r.update(_who_and_how(r))
        values = {"kind": _label(_KINDS, r.get("kind", "")), "time": _time(r.get("time", "")),
                  "id": _transaction(r),
                  "provider": _label(_PROVIDERS, r.get("provider", "")),
                  "channel": _label(_CHANNELS, r.get("channel", "")), "matched": _label(_YES_NO, r.get("matched", "")),
                  # a late payment given back since (billing's ``refunded_amount``, ``refunded_at``): said so
                  "outcome": refunded_label(r["refunded_amount"], r.get("refunded_at")) if r.get("refunded_amount")
                  else _assigned_label(r["assigned_to"], r.get("assigned_at", "")) if r.get("assigned_to")
                  else outcome_label(r.get("outcome")) if r.get("outcome") else "",
                  "note": _note(r.get("note", ""), bool(r.get("refunded_amount")), _bank_reference(r)),
                  "invoice": r.get("reference") or references.get(r.get("invoice", ""), r.get("invoice", "")),
                  "facility": (facilities.get(r.get("facility", "")) or r.get("facility_name")
                               or r.get("facility", "")),
                  "recorded_after_close": _label(_YES_NO, "yes") if r.get("recorded_after_close") else "",
                  "bank_time": _time(r.get("bank_time", "")),
                  IN_TOTALS: _in_totals(r)}
        rows.append([values.get(c, r.get(c, "")) for c in columns])
    return [_label(_COLUMNS, c) for c in columns], rows
