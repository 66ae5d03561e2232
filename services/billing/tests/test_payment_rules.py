"""Pure parts of payments: amounts in Vietnamese, the receipt page, the daily CSV's totals."""

from __future__ import annotations

import csv
import io
from datetime import UTC, date, datetime

from sen_billing.domain import receipts, reconciliation


def test_vnd_groups_with_dots() -> None:
    assert receipts.vnd(150000) == "150.000 ₫"
    assert receipts.vnd(0) == "0 ₫"
    assert receipts.vnd(1234567890) == "1.234.567.890 ₫"


def test_receipt_html_escapes_and_shows_credit() -> None:
    page = receipts.receipt_html({
        "number": "ORG-A-2025-000001", "invoice": "inv-1", "facility": "org-a", "owed": 100000, "paid": 130000,
        "credit": 30000, "settled_at": datetime(2025, 3, 14, 3, 2, tzinfo=UTC), "patient": "<b>Nguyễn</b>",
        "lines": [{"text": "Khám <tim>", "patientShare": 100000}],
        "payments": [{"id": "casso:1", "amount": 130000, "channel": "transfer"}]})
    assert "14/03/2025 10:02" in page  # Asia/Ho_Chi_Minh
    assert "&lt;b&gt;Nguyễn&lt;/b&gt;" in page and "Khám &lt;tim&gt;" in page
    assert "30.000\u00a0₫" in page and "Chuyển khoản" in page  # never wrapped between number and sign


def _row(kind: str, pid: str, channel: str, amount: int, outcome: str = "applied") -> dict:
    return {"kind": kind, "time": "", "id": pid, "provider": "x", "channel": channel, "invoice": "", "facility": "",
            "amount": amount, "matched": "yes", "outcome": outcome, "reference": "", "cashier": "", "shift": "",
            "note": ""}


def test_daily_totals_count_an_assigned_transfer_once() -> None:
    rows = [_row("payment", "sepay:1", "transfer", 50000, "unmatched"),
            _row("payment", "assign:sepay:1", "transfer", 50000),
            _row("payment", "cashier:c1", "cash", 20000),
            _row("refund", "cashier:c1", "cash", -5000, "refunded")]
    totals = reconciliation.totals(rows)
    assert totals == {"transfers": 50000, "cash": 20000, "refunds": 5000, "unmatched": 50000, "net": 65000,
                      "payments": 2, "unmatched_assigned": 50000, "unmatched_refunded": 0, "unmatched_waiting": 0,
                      "assigned_earlier": 0}
    text = reconciliation.to_csv(date(2025, 3, 14), rows)
    parsed = list(csv.DictReader(io.StringIO(text)))
    assert [r["id"] for r in parsed if r["kind"] == "total"] == list(totals)


def test_receipt_html_prints_the_facility_name_else_its_id() -> None:
    receipt = {"number": "TYT-2025-000001", "invoice": "inv-1", "facility": "tyt-my-hiep", "owed": 1000,
               "paid": 1000, "credit": 0, "settled_at": datetime(2025, 3, 14, 3, 2, tzinfo=UTC), "lines": [],
               "payments": []}
    assert "Cơ sở: Trạm Y tế xã Mỹ Hiệp" in receipts.receipt_html(receipt, "Trạm Y tế xã Mỹ Hiệp")
    assert "Cơ sở: tyt-my-hiep" in receipts.receipt_html(receipt)
    assert "Cơ sở: &lt;x&gt;" in receipts.receipt_html(receipt, "<x>")  # escaped like the rest
