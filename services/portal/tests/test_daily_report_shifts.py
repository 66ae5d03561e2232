"""Review 8's daily reconciliation report on the cashier's shift page: (a) the day's closed shifts are listed,
on the page and in the CSV (billing's ``shift`` rows: who opened and closed each and when, in Vietnam time,
expected against counted cash and transfers, the difference, the note); (b) a row's transaction is what the
cashier finds on the bank statement or in the cash book, never billing's payment id. Billing is the fake of
``test_prices_page`` (its CSV as billing writes it)."""

from __future__ import annotations

import csv
import io
import re

from services.portal.tests.test_prices_page import app, billing  # noqa: F401  (fixtures)
from tests.support import csrf_token, portal_signed_in

HEAD = ("kind,time,id,provider,channel,invoice,facility,amount,matched,outcome,reference,cashier,shift,note,"
        "facility_name,cashier_name,shift_opened_at,refunded_amount,refunded_at,shift_cashier_name,bank_reference,"
        "assigned_to,assigned_at,expected_cash,counted_cash,cash_difference,expected_transfers,counted_transfers,"
        "transfers_difference\r\n")
DAY = (HEAD +
       "payment,2026-12-06T09:59:03+07:00,standard:a5afa9e0e71c,standard,transfer,inv-1,tyt-my-hiep,40000,yes,applied,"
       "HDWYNWPKMRQ,,,,,,,,,,FT26340111,,,,,,,,\r\n"
       "payment,2026-12-06T10:04:15+07:00,cashier:50d06cc95f774feaa04e725ac1f04d6a,cashier,cash,inv-2,tyt-my-hiep,"
       "90000,yes,applied,HDB3WHGJFZD,portal-cashier,sh1,,,Lê Thị Thu,2026-12-06T07:02:00+07:00,,,Lê Thị Thu,"
       ",,,,,,,,\r\n"
       "shift,2026-12-06T11:30:00+07:00,sh1,,,,tyt-my-hiep,,,,,portal-cashier,sh1,thiếu 10.000 tiền lẻ,,Lê Thị Thu,"
       "2026-12-06T07:02:00+07:00,,,Lê Thị Thu,,,,590000,580000,-10000,40000,40000,0\r\n"
       "total,2026-12-06,transfers,,,,,40000,,,,,,,,,,,,,,,,,,,,,\r\n"
       "total,2026-12-06,cash,,,,,90000,,,,,,,,,,,,,,,,,,,,,\r\n"
       "total,2026-12-06,net,,,,,130000,,,,,,,,,,,,,,,,,,,,,\r\n").encode()


def test_the_days_closed_shifts_are_on_the_page_and_in_the_csv(app, billing) -> None:  # noqa: F811
    billing.csv = DAY
    client = portal_signed_in(app, "cashier")
    page = client.get("/shift?day=06/12/2026").get_data(as_text=True)
    report = page[page.index('id="daily-report"'):]
    shifts = re.findall(r'<article class="closed-shift" data-testid="daily-shift">(.*?)</article>', report, re.S)
    assert len(shifts) == 1, report
    times = re.search(r'data-testid="daily-shift-times">([^<]*)<', shifts[0]).group(1)
    assert "07:02" in times and "11:30" in times and "Lê Thị Thu" in times
    assert "Ghi chú: thiếu 10.000 tiền lẻ" in shifts[0]
    cells = re.findall(r'<td role="cell"[^>]*class="money">([^<]*)<', shifts[0])
    assert cells == ["590.000\u00a0₫", "580.000\u00a0₫", "-10.000\u00a0₫", "40.000\u00a0₫", "40.000\u00a0₫",
                     "0\u00a0₫"], cells
    assert 'data-total="cash">90.000\u00a0₫' in report  # the totals as before: a shift is no money

    rows = list(csv.reader(io.StringIO(client.get("/shift/daily-report.csv?day=06/12/2026").data.decode("utf-8-sig"))))
    header = rows[0]
    shift = next(r for r in rows if r[0] == "Ca đã đóng")
    got = dict(zip(header, shift, strict=True))
    assert got["Thời gian"] == "06/12/2026 11:30:00"  # closed (Vietnam time)
    assert got["Ca làm việc"] == "06/12/2026 07:02 · Lê Thị Thu" and got["Thu ngân"] == "Lê Thị Thu"  # opened, whose
    assert (got["Tiền mặt dự kiến (đồng)"], got["Tiền mặt đếm được (đồng)"], got["Chênh lệch tiền mặt (đồng)"]) == (
        "590000", "580000", "-10000")
    assert (got["Chuyển khoản dự kiến (đồng)"], got["Chuyển khoản theo sao kê (đồng)"],
            got["Chênh lệch chuyển khoản (đồng)"]) == ("40000", "40000", "0")
    assert got["Ghi chú"] == "thiếu 10.000 tiền lẻ" and got["Số tiền (đồng)"] == "" and got["Nhận qua"] == ""


def test_a_rows_transaction_is_the_banks_or_the_cash_books_not_billings_id(app, billing) -> None:  # noqa: F811
    billing.csv = DAY
    client = portal_signed_in(app, "cashier")
    body = client.get("/shift/daily-report.csv?day=06/12/2026").data.decode("utf-8-sig")
    rows = list(csv.reader(io.StringIO(body)))
    assert rows[0][2] == "Giao dịch (trên sao kê ngân hàng hoặc sổ quỹ) hoặc khoản tổng"
    assert [r[2] for r in rows[1:3]] == ["FT26340111", "Tiền mặt · Lê Thị Thu"]
    assert "standard:" not in body and "cashier:50d0" not in body and "sh1" not in body
    # an English page: the same
    token = csrf_token(client.get("/shift").get_data(as_text=True))
    client.post("/language", data={"lang": "en", "next": "/shift", "csrf_token": token})
    english = list(csv.reader(io.StringIO(client.get("/shift/daily-report.csv?day=06/12/2026").data.decode(
        "utf-8-sig"))))
    assert english[0][2] == "Transaction (bank statement or cash book) or total"
    assert [r[2] for r in english[1:3]] == ["FT26340111", "Cash · Lê Thị Thu"]
    assert next(r for r in english if r[0] == "Closed shift")[english[0].index("Cash difference (đồng)")] == "-10000"
