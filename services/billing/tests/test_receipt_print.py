"""The printed receipt (domain/receipts.receipt_pdf) as a reader of the PDF sees it: every amount as
the pages write it, ``0 ₫`` with its space as ``100.000 ₫`` (a one-digit amount read "0₫": the
extractors take a gap narrower than the digit's own width for none), and the payment reference
labelled "Mã tham chiếu", as the portal's invoice page and HTML receipt label it."""

from __future__ import annotations

import re
import shutil
import subprocess
from datetime import UTC, datetime

import pytest
from sen_billing.domain import receipts

AT = datetime(2026, 12, 5, 9, 3, tzinfo=UTC)
RECEIPT = {"number": "BL-2026-000001", "reference": "HD7K2M9QX4C", "patient": "Trương Quốc Đạt", "settled_at": AT,
           "owed": 100000, "paid": 130000, "gross": 100000, "insurer": 0, "refunded": 30000, "credit": 0,
           "lines": [{"text": "Hội chẩn từ xa", "quantity": 1, "unitPrice": 100000, "amount": 100000,
                      "insurerShare": 0, "patientShare": 100000}],
           "payments": [{"at": AT, "channel": "cash", "amount": 50000}, {"at": AT, "channel": "transfer",
                                                                       "amount": 80000}],
           "refunds": [{"at": AT, "channel": "cash", "amount": 5}]}


@pytest.mark.skipif(not shutil.which("pdftotext"), reason="poppler's pdftotext reads the PDF")
@pytest.mark.parametrize("layout", [["-layout"], []])
def test_the_pdf_writes_every_amount_with_its_space_and_names_the_reference_as_the_pages(tmp_path, layout):
    path = tmp_path / "r.pdf"
    path.write_bytes(receipts.receipt_pdf(RECEIPT, "Trạm Y tế Mỹ Hiệp"))
    text = subprocess.run(["pdftotext", *layout, str(path), "-"], capture_output=True, text=True, check=True).stdout
    assert not re.search(r"\d₫", text), text
    assert re.search(r"BHYT chi trả\s+0 ₫", text) or "\n0 ₫" in text, text
    assert "5 ₫" in text and "100.000 ₫" in text
    assert re.search(r"Mã tham chiếu\s+HD7K2M9QX4C", text) and "Mã thanh toán" not in text, text


def test_the_html_receipt_labels_the_reference_as_the_pages():
    page = receipts.receipt_html(RECEIPT, "Trạm Y tế Mỹ Hiệp")
    assert "<th>Mã tham chiếu</th><td><b>HD7K2M9QX4C</b>" in page and "Mã thanh toán" not in page
    assert "<td class=n>0\u00a0₫</td>" in page  # the one formatter: the same text as the pages'
