"""The cashier's pages after review C, billing and the EHR faked as they answer:

- an invoice BHYT pays in full (billing settles it when issued: balanced, 0 owed) reads "Bảo hiểm
  chi trả toàn bộ", with no QR, no cash box, and its receipt (it read "Chờ thanh toán" for ever, the
  cash box refused 0 ₫ and the receipt was a 400).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.support import portal_app, portal_signed_in

REF = "urn:sen:billing:payment-reference"


@pytest.fixture()
def client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    return portal_signed_in(portal_app(tmp_path, monkeypatch, SEN_PORTAL_CACHE_SECONDS="0"), "cashier")


@pytest.fixture()
def no_names(monkeypatch):
    from sen_portal.web import cashier

    monkeypatch.setattr(cashier, "patient_names", lambda ids: {})


COVERED = {"resourceType": "Invoice", "id": "inv-bh", "status": "balanced", "date": "2026-12-05T09:00:00+07:00",
           "subject": {"reference": "Patient/bn-0002"}, "totalGross": {"value": 98000, "currency": "VND"},
           "totalNet": {"value": 0, "currency": "VND"}, "identifier": [{"system": REF, "value": "HD7K2M9QX4C"}]}


def test_an_invoice_bhyt_pays_in_full_reads_covered_with_no_qr_no_cash_and_its_receipt(client, monkeypatch, no_names):
    from sen_portal.web import cashier

    summary = {"status": "balanced", "owed": 0, "paid": 0, "balanceDue": 0, "reference": "HD7K2M9QX4C",
               "payments": []}
    monkeypatch.setattr(cashier, "shared_get", lambda service, path, **kw: (
        {**summary, "resource": COVERED, "qr": None} if path.endswith("/desk") else summary))
    page = client.get("/invoices/inv-bh?issued=1").get_data(as_text=True)
    assert 'data-testid="covered">✓ Bảo hiểm chi trả toàn bộ' in page
    assert "người bệnh không phải trả tiền" in page and "người bệnh có thể thanh toán" not in page.lower()
    assert 'id="qr-box"' not in page and 'id="cash-box"' not in page and 'id="cancel-box"' not in page
    assert "/invoices/inv-bh/receipt" in page
    status = client.get("/invoices/inv-bh/status").get_data(as_text=True)
    assert "Bảo hiểm chi trả toàn bộ" in status and "/invoices/inv-bh/receipt" in status
    # its receipt: 0 to pay, BHYT's share shown
    receipt = {"number": "TYT-MY-HIEP-2026-000003", "invoice": "inv-bh", "reference": "HD7K2M9QX4C",
               "facility": "tyt-my-hiep", "facilityName": "Trạm Y tế xã Mỹ Hiệp", "patient": "Trần Thị Bích",
               "settledAt": "2026-12-05T09:00:00+07:00", "gross": 98000, "insurerShare": 98000, "owed": 0,
               "paid": 0, "credit": 0, "payments": [],
               "lines": [{"text": "Siêu âm ổ bụng", "quantity": 2, "unitPrice": 49000, "amount": 98000,
                          "insurerShare": 98000, "patientShare": 0}]}
    monkeypatch.setattr(cashier, "_json", lambda method, path, *a, **kw: receipt)
    shown = client.get("/invoices/inv-bh/receipt").get_data(as_text=True)
    assert 'data-testid="receipt-bhyt">98.000\u00a0₫' in shown
    assert 'data-testid="receipt-covered">(Bảo hiểm chi trả toàn bộ)' in shown
    assert re.search(r'data-testid="receipt-reference"><strong>HD7K2M9QX4C<', shown)
