"""Excel workbooks (.xlsx) of the dashboard's figures, for the people who open them in Excel.

The CSV beside each chart stays for machines (a decimal point, ISO dates). Opened by Excel with
Vietnamese regional settings (decimal comma, list separator ``;``) it splits its rows into the wrong
columns and reads ``0.9032`` as text or as nine thousand: a CSV carries no types. A workbook does:
counts and money are numbers, money with the đồng's number format (Excel shows ``150.000 ₫`` in
Vietnamese, ``150,000 ₫`` in English), a share is a number shown as a percentage, a day is a date
(shown ``dd/mm/yyyy``); sums and charts work on them at once. Written with ``openpyxl``, which makes a
text starting with ``=`` a formula: every text is a string cell here, never run (a name typed
``=HYPERLINK(...)`` shows as typed)."""

from __future__ import annotations

import io
from collections.abc import Iterable, Sequence
from datetime import date
from typing import Any

from flask import Response
from openpyxl import Workbook
from openpyxl.styles import Font

MIMETYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
DATE_FORMAT = "dd/mm/yyyy"
MONEY_FORMAT = '#,##0 "₫"'  # the group separator is Excel's, from the reader's regional settings
SHARE_FORMAT = "0.00%"
DATES = frozenset({"start", "end", "as_of", "since", "until"})
SHARES = frozenset({"share"})
# the dashboard's money columns (domain.dashboard's cashless_share): whole đồng
MONEY = frozenset({"refunds", "refunds_of_takings", "refunds_owed", "net", "unmatched_without_facility"})


def kind(key: str) -> str:
    """How a column of the dashboard's figures is written: ``date``, ``share``, ``money`` or ``plain``."""
    if key in DATES:
        return "date"
    if key in SHARES:
        return "share"
    if key in MONEY or key.endswith("_amount"):
        return "money"
    return "plain"


def _cell(value: Any, how: str) -> Any:
    if value is None or value == "":
        return None
    if how == "date" and isinstance(value, str):
        try:
            return date.fromisoformat(value)
        except ValueError:
            return value
    if isinstance(value, bool) or not isinstance(value, int | float | date):
        return str(value)  # a label (a lazy string, a priority's name)
    return value


def workbook(keys: Sequence[str], labels: Sequence[str], rows: Iterable[Sequence[Any]], title: str) -> bytes:
    """The rows as one sheet named ``title``: the header ``labels`` in bold and frozen, each column
    typed by its ``keys`` (:func:`kind`)."""
    book = Workbook()
    sheet = book.active
    sheet.title = title[:31]  # Excel's limit for a sheet's name
    sheet.append([str(label) for label in labels])
    for cell in sheet[1]:
        cell.font = Font(bold=True)
        cell.data_type = "s"
    kinds = [kind(k) for k in keys]
    formats = {"date": DATE_FORMAT, "money": MONEY_FORMAT, "share": SHARE_FORMAT}
    for row in rows:
        sheet.append([_cell(v, how) for v, how in zip(row, kinds, strict=True)])
        for cell, how in zip(sheet[sheet.max_row], kinds, strict=True):
            if cell.data_type == "f":  # a text openpyxl took for a formula: the figures hold none
                cell.data_type = "s"
            if how in formats and cell.value is not None and not isinstance(cell.value, str):
                cell.number_format = formats[how]
    sheet.freeze_panes = "A2"
    for column in sheet.columns:
        widest = max(len(str(c.value)) if c.value is not None else 0 for c in column)
        sheet.column_dimensions[column[0].column_letter].width = min(max(widest, 10) + 2, 60)
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


def download(keys: Sequence[str], labels: Sequence[str], rows: Iterable[Sequence[Any]], filename: str,
             title: str) -> Response:
    """The workbook of :func:`workbook` as an attachment named ``filename``."""
    return Response(workbook(keys, labels, rows, title), mimetype=MIMETYPE,
                    headers={"Content-Disposition": f'attachment; filename="{filename}"'})
