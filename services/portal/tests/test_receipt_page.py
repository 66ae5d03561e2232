"""The cashier's receipt page reads as the printed receipt does: the payment reference (HD…) the
patient saw, the lines with quantity, unit price, BHYT's and the patient's share, the total before
BHYT, each payment by time, channel and amount, the refunds given since and the credit LEFT (the
page said "Tiền thừa của người bệnh 20.000 ₫" after the 20.000 ₫ change had been given back), and
on an English page the consult line by its English name (it read "Hội chẩn từ xa"). Billing's
receipt JSON is canned (no back-end runs)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.support import csrf_token, portal_app


@pytest.fixture()
def client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    with portal_app(tmp_path, monkeypatch).test_client() as c:
        yield c


def sign_in(client) -> None:
    page = client.get("/login").get_data(as_text=True)
    client.post("/login", data={"username": "cashier", "password": "sen-cashier", "csrf_token": csrf_token(page)})


RECEIPT = {
    "number": "TYT-MY-HIEP-2026-000002", "invoice": "consult-1ca2", "reference": "HD7K2M9QX4T",
    "facility": "tyt-my-hiep", "facilityName": "Trạm Y tế xã Mỹ Hiệp", "patient": "Đặng Quốc Hưng",
    "settledAt": "2026-12-05T13:09:00+07:00", "gross": 242000, "insurerShare": 92000, "owed": 150000,
    "paid": 170000, "refunded": 20000, "credit": 0,
    "lines": [{"text": "Hội chẩn từ xa", "service": "teleconsult", "quantity": 1, "unitPrice": 150000,
               "amount": 150000, "insurerShare": 0, "patientShare": 150000},
              {"text": "Xét nghiệm tổng phân tích tế bào máu", "service": "xn-cong-thuc-mau", "quantity": 2,
               "unitPrice": 46000, "amount": 92000, "insurerShare": 92000, "patientShare": 0}],
    "payments": [{"at": "2026-12-05T13:05:00+07:00", "channel": "transfer", "amount": 100000},
                 {"at": "2026-12-05T13:09:00+07:00", "channel": "cash", "amount": 70000}],
    "refunds": [{"at": "2026-12-05T13:12:00+07:00", "channel": "cash", "amount": 20000,
                 "reason": "trả lại tiền thừa"}],
}


@pytest.fixture()
def receipt(monkeypatch):
    from sen_portal.web import cashier

    data = dict(RECEIPT)
    monkeypatch.setattr(cashier, "_json", lambda method, path, *a, **kw: data)
    return data


def cells(page: str, testid: str) -> list[list[str]]:
    table = re.search(rf'<table[^>]*data-testid="{testid}".*?</table>', page, re.S)
    assert table, testid
    return [[re.sub(r"<[^>]+>", "", c).strip() for c in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)]
            for row in re.findall(r"<tr role=\"row\">(.*?)</tr>", table.group(0), re.S) if "<td" in row]


def test_the_receipt_shows_reference_bhyt_quantities_payments_refunds_and_no_credit_left(client, receipt):
    sign_in(client)
    page = client.get("/invoices/consult-1ca2/receipt").get_data(as_text=True)
    assert '<dd data-testid="receipt-reference"><strong>HD7K2M9QX4T</strong></dd>' in page
    assert 'data-testid="receipt-bhyt">92.000\u00a0₫' in page and "Tổng trước BHYT" in page
    assert cells(page, "receipt-lines") == [
        ["Hội chẩn từ xa", "1", "150.000\u00a0₫", "150.000\u00a0₫", "0\u00a0₫", "150.000\u00a0₫"],
        ["Xét nghiệm tổng phân tích tế bào máu", "2", "46.000\u00a0₫", "92.000\u00a0₫", "92.000\u00a0₫", "0\u00a0₫"]]
    assert cells(page, "receipt-payments") == [["05/12/2026 13:05", "Chuyển khoản", "100.000\u00a0₫"],
                                               ["05/12/2026 13:09", "Tiền mặt", "70.000\u00a0₫"]]
    assert cells(page, "receipt-refunds") == [["05/12/2026 13:12", "Tiền mặt", "20.000\u00a0₫", "trả lại tiền thừa"]]
    assert 'data-testid="receipt-refunded">20.000\u00a0₫' in page
    # the change went back: no credit is claimed for the patient
    assert "Tiền thừa" not in page and 'data-testid="receipt-credit"' not in page
    receipt["credit"] = 5000  # some left
    page = client.get("/invoices/consult-1ca2/receipt").get_data(as_text=True)
    assert 'data-testid="receipt-credit">5.000\u00a0₫' in page and "Tiền thừa còn lại" in page


def test_an_english_receipt_names_the_consult_line_in_english(client, receipt):
    sign_in(client)
    token = csrf_token(client.get("/invoices/consult-1ca2/receipt").get_data(as_text=True))
    client.post("/language", data={"lang": "en", "next": "/invoices/consult-1ca2/receipt", "csrf_token": token})
    page = client.get("/invoices/consult-1ca2/receipt").get_data(as_text=True)
    titles = [row[0] for row in cells(page, "receipt-lines")]
    assert titles == ["Teleconsultation", "Complete blood count"]
    assert "Hội chẩn" not in page
    assert cells(page, "receipt-payments")[0][1] == "Bank transfer"


def test_an_older_receipt_without_the_invoices_details_still_shows(client, receipt):
    """A receipt whose invoice billing could not read: lines with text and the patient's share only."""
    for key in ("reference", "gross", "insurerShare", "refunded", "payments", "refunds"):
        receipt.pop(key)
    receipt["lines"] = [{"text": "Khám bệnh", "patientShare": 39000}]
    sign_in(client)
    r = client.get("/invoices/consult-1ca2/receipt")
    assert r.status_code == 200
    assert cells(r.get_data(as_text=True), "receipt-lines") == [
        ["Khám bệnh", "1", "39.000\u00a0₫", "39.000\u00a0₫", "0\u00a0₫", "39.000\u00a0₫"]]


def test_a_refund_another_cashier_started_names_both_on_the_receipt(client, receipt):
    """Billing's receipt names who started a refund and who finished it when they differ (its
    ``startedBy``/``finishedBy``): the refund's line says both under its reason."""
    receipt["refunds"] = [{**RECEIPT["refunds"][0], "startedBy": "Nguyễn Thị An", "finishedBy": "Trần Văn Bình"}]
    sign_in(client)
    page = client.get("/invoices/consult-1ca2/receipt").get_data(as_text=True)
    assert cells(page, "receipt-refunds") == [["05/12/2026 13:12", "Tiền mặt", "20.000\u00a0₫",
                                               "trả lại tiền thừaBắt đầu: Nguyễn Thị An · Hoàn tất: Trần Văn Bình"]]
    receipt["refunds"] = RECEIPT["refunds"]
    page = client.get("/invoices/consult-1ca2/receipt").get_data(as_text=True)
    assert 'data-testid="receipt-refund-cashiers"' not in page


@pytest.mark.parametrize("path", ["/invoices/inv-open/receipt", "/invoices/inv-open/receipt.pdf"])
@pytest.mark.parametrize("status", ["issued", "cancelled"])
def test_the_receipt_of_an_invoice_not_paid_in_full_says_so_with_a_way_back(client, monkeypatch, path, status):
    """Review 8: a receipt asked for an invoice not paid yet was 404 "Không tìm thấy · Dịch vụ thanh toán
    không có hồ sơ này". It says the invoice has no receipt yet because it is not paid in full (409), with
    a link back to the invoice; an invoice billing does not know is still 404."""
    from sen_portal.web import cashier
    from sen_portal.web.backend import BackendError

    def none(*_a, **_kw):
        raise BackendError("refused", "billing", 404, "no receipt for invoice inv-open")

    summaries = {"inv-open": {"invoice": "inv-open", "status": status, "owed": 150000, "paid": 50000,
                              "balanceDue": 100000 if status == "issued" else 0, "credit": 0, "payments": []}}

    def summary(service, path, **_kw):
        iid = path.removeprefix("/payments/invoices/")
        if iid not in summaries:
            raise BackendError("refused", "billing", 404, f"no invoice {iid}")
        return summaries[iid]

    monkeypatch.setattr(cashier, "_json", none)
    monkeypatch.setattr(cashier, "call", none)
    monkeypatch.setattr(cashier, "shared_get", summary)
    sign_in(client)
    r = client.get(path)
    page = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", r.get_data(as_text=True)))
    assert r.status_code == 409, page
    said = ("Hóa đơn này chưa có biên lai vì chưa được thanh toán đủ." if status == "issued"
            else "Hóa đơn này đã hủy trước khi được thanh toán đủ: không có biên lai.")
    assert said in page and "Không tìm thấy" not in page
    assert 'href="/invoices/inv-open"' in r.get_data(as_text=True) and "Quay lại hóa đơn" in page
    assert client.get(path.replace("inv-open", "inv-none")).status_code == 404
