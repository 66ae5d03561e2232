"""The cashier's pages after review C, billing and the EHR faked as they answer:

- an invoice BHYT pays in full (billing settles it when issued: balanced, 0 owed) reads "Bảo hiểm
  chi trả toàn bộ", with no QR, no cash box, and its receipt (it read "Chờ thanh toán" for ever, the
  cash box refused 0 ₫ and the receipt was a 400).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from services.portal.tests.cashier_support import daily_csv_from_billing
from tests.support import flash_step, portal_app, portal_signed_in

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
    flash_step(client, "/invoices/inv-bh", "issued")
    page = client.get("/invoices/inv-bh").get_data(as_text=True)
    assert 'data-testid="covered">✓ Bảo hiểm chi trả toàn bộ' in page
    assert "người bệnh không phải trả tiền" in page and "người bệnh có thể thanh toán" not in page.lower()
    assert '<div id="qr-box">' not in page and '<details class="card" id="cash-box"' not in page
    # issued by mistake, it can be cancelled (nothing paid is kept: no credit), as an unpaid invoice can
    assert 'id="cancel-box"' in page
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


def bundle(resources: list[dict]) -> dict:
    return {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": r} for r in resources]}


def issued(iid: str, ref: str, net: int) -> dict:
    return {"resourceType": "Invoice", "id": iid, "status": "issued", "date": "2026-12-05T09:00:00+07:00",
            "subject": {"reference": "Patient/bn-0002"}, "totalGross": {"value": net, "currency": "VND"},
            "totalNet": {"value": net, "currency": "VND"}, "identifier": [{"system": REF, "value": ref}]}


def test_a_transfer_that_pays_its_invoice_in_full_is_named_by_the_reference_billing_answers(
        client, monkeypatch, no_names):
    """Assigned, the transfer paid the invoice in full: it left the issued invoices the page's choices
    come from, and the notice named it "inv-2f62ecf0…"; billing's answer carries the reference."""
    from sen_portal.web import cashier

    from tests.support import csrf_token

    sent: list[tuple[str, str]] = []

    def billing(method, path, body=None, params=None, key=None):
        sent.append((method, path))
        return {"id": "assign:standard:t1", "invoice": "inv-2f62ecf0a1b2", "reference": "HD2F62ECF0X",
                "amount": 49000, "matched": True, "outcome": "applied"}

    monkeypatch.setattr(cashier, "_json", billing)
    monkeypatch.setattr(cashier, "shared_get", lambda *a, **k: {"payments": []})
    monkeypatch.setattr(cashier, "fhir_get", lambda *a, **k: bundle([issued("inv-other", "HD00000000Y", 39000)]))
    page = client.get("/unmatched").get_data(as_text=True)
    r = client.post("/unmatched", data={"payment": "standard:t1", "invoice": "inv-2f62ecf0a1b2",
                                        "csrf_token": csrf_token(page)})
    body = r.get_data(as_text=True)
    assert sent == [("POST", "/payments/unmatched/standard:t1/assign")]
    done = re.search(r'data-testid="unmatched-done">(.*?)</div>', body, re.S).group(1)
    assert ">HD2F62ECF0X</a>" in done and "inv-2f62ecf0a1b2</a>" not in done


def test_the_search_shows_what_was_paid_net_of_the_credit_given_back(monkeypatch):
    """74.000 ₫ paid on 49.000 ₫, the 25.000 ₫ over given back: 'Đã trả 49.000 ₫ trên 49.000 ₫'."""
    from sen_portal.web import cashier

    inv = issued("inv-r", "HD00000000R", 49000)
    refunded = {"invoice": "inv-r", "status": "balanced", "owed": 49000, "paid": 74000, "balanceDue": 0,
                "credit": 0, "refunded": 25000}
    [row] = cashier.queue_rows([inv], {}, {"inv-r": refunded})
    assert row["paid"] == 49000
    kept = {**refunded, "credit": 25000, "refunded": 0}  # not given back yet: all of it shows, and the credit
    assert cashier.queue_rows([inv], {}, {"inv-r": kept})[0]["paid"] == 74000
    # a payment given back whole while the invoice was owed: billing's paid is already without it
    reversed_ = {"invoice": "inv-r", "status": "issued", "owed": 49000, "paid": 20000, "balanceDue": 29000,
                 "credit": 0, "refunded": 30000}
    assert cashier.queue_rows([inv], {}, {"inv-r": reversed_})[0]["paid"] == 20000
    assert cashier.net_paid(None) == 0


DAILY = (
    "kind,time,id,provider,channel,invoice,facility,amount,matched,outcome,reference,cashier,shift,note\r\n"
    "payment,2026-12-05T07:07:29+00:00,sepay:504650312,sepay,transfer,inv-40bb729f2607,tyt-my-hiep,74000,yes,"
    "applied,HDZEE2AYJGS,,,\r\n"
    "refund,2026-12-05T07:10:00+00:00,sepay:504650312,cashier,cash,inv-40bb729f2607,tyt-my-hiep,-25000,,"
    "refunded,,portal-cashier,sh-1,trả lại tiền thừa\r\n"
    "total,2026-12-05,net,,,,,49000,,,,,,\r\n"
).encode()


def test_the_vietnamese_daily_csv_names_the_invoice_by_reference_and_the_facility_by_name(client, monkeypatch):
    from sen_portal.web import daily_report

    daily_csv_from_billing(monkeypatch, DAILY, {"tyt-my-hiep": "Trạm Y tế xã Mỹ Hiệp"})
    r = client.get("/shift/daily-report.csv?day=05/12/2026")
    assert r.status_code == 200
    lines = r.get_data(as_text=True).lstrip("\ufeff").splitlines()
    payment, refund = lines[1].split(","), lines[2].split(",")
    assert payment[5] == "HDZEE2AYJGS" and payment[6] == "Trạm Y tế xã Mỹ Hiệp"
    assert refund[5] == "HDZEE2AYJGS" and refund[6] == "Trạm Y tế xã Mỹ Hiệp"  # the refund: its invoice's code
    assert "inv-40bb729f2607" not in r.get_data(as_text=True) and "tyt-my-hiep" not in r.get_data(as_text=True)
    # no directory answer: the ids, as before
    header, rows = daily_report.readable(DAILY)
    assert rows[0][6] == "tyt-my-hiep" and rows[0][5] == "HDZEE2AYJGS"
