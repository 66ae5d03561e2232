"""CSV files people open in Excel: UTF-8 with its byte order mark (without it Excel in Vietnam
reads the diacritics as mojibake), CRLF line ends, an empty cell for a missing value, a text that a
spreadsheet would run as a formula (``=HYPERLINK(...)`` typed as a refund reason) with ``'`` before it
(:func:`sen_shared.spreadsheet.cell`). The dashboard's exports and the cashier's daily reconciliation
report are written by it."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping
from typing import Any

from flask import Response
from sen_shared.spreadsheet import cell


def download(header: list[str], rows: Iterable[list[Any]], filename: str,
             headers: Mapping[str, str] | None = None) -> Response:
    """``header`` and ``rows`` as an attachment named ``filename`` (``headers``: more response headers)."""
    out = io.StringIO()
    out.write("\ufeff")  # Excel reads UTF-8 (Vietnamese names) with the mark
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow([cell(h) for h in header])
    writer.writerows(["" if v is None else cell(v) for v in row] for row in rows)
    return Response(out.getvalue(), mimetype="text/csv", headers={
        "Content-Disposition": f'attachment; filename="{filename}"', **(headers or {})})
