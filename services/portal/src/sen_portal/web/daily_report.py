"""The daily reconciliation report on the cashier's shift page (``/shift``, its "Daily report"
section): a day (today in Vietnam by default), billing's CSV of it downloaded through the portal
with the user's own token (``/shift/daily-report.csv?day=``), and that day's totals on the page.

Billing's ``GET /payments/reports/daily.csv`` decides whose day it is: a cashier's facility's, every
facility's for an admin; it refuses every other role (the health department too), so the portal
offers it to cashiers and the admin only. The summary costs one billing request, the same CSV: its
last rows are billing's totals (``kind`` ``total``: transfers, cash, refunds, unmatched, net,
payments), so the page shows billing's own arithmetic. A malformed day or one in the future is
explained on the form, what was typed kept; the download of such a day goes back to the form.
"""

from __future__ import annotations

import csv
import io
from datetime import date
from typing import Any

from flask import Response, redirect, request, url_for
from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from wtforms import ValidationError
from wtforms.validators import InputRequired

from . import backend_message, bp, login_required
from .backend import BackendError, call
from .formatting import today
from .forms import LocalDateField

TOTALS = ("transfers", "cash", "refunds", "unmatched", "net", "payments")


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
    """The day's totals from billing's CSV (its ``total`` rows), and how many refunds it lists."""
    out: dict[str, Any] = {"day": day, "refund_count": 0, **{k: 0 for k in TOTALS}}
    for r in csv.DictReader(io.StringIO(text.decode("utf-8-sig"))):
        if r.get("kind") == "total" and r.get("id") in TOTALS:
            try:
                out[str(r["id"])] = int(r.get("amount") or 0)
            except ValueError:
                continue
        elif r.get("kind") == "refund":
            out["refund_count"] += 1
    return out


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
    name = f"doi-soat-{form.day.data.isoformat()}.csv"
    return Response(body, mimetype="text/csv", headers={"Content-Disposition": f'attachment; filename="{name}"',
                                                        "Cache-Control": "no-store"})
