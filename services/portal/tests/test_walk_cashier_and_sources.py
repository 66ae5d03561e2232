"""Three things a walk through the portal found (a cashier and the health department's officer), each page
in its language: the invoice search's label names the phone it now finds a patient by; a partial cash
payment is said on the invoice page it leads back to (recorded, still due), one that settles the invoice
is left to the paid state; the dashboard says where its figures come from beside "Figures as of"."""

from __future__ import annotations

import html
from pathlib import Path

import pytest

from services.portal.tests.test_cashier_desk import _desk
from services.portal.tests.test_dashboard_districts import _figures
from tests.support import csrf_token, portal_app, portal_signed_in

NBSP = "\u00a0"


@pytest.mark.parametrize("lang,label,required", [
    ("vi", "Tên, số điện thoại người bệnh hoặc mã tham chiếu",
     "Nhập tên, số điện thoại người bệnh hoặc mã tham chiếu (HD...)."),
    ("en", "Patient's name, phone or payment reference", "Type a patient's name, phone or a reference (HD...)."),
])
def test_the_invoice_search_label_names_the_phone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, lang, label,
                                                  required):
    from sen_portal.web import cashier

    monkeypatch.setattr(cashier, "fhir_get", lambda *a, **k: {"resourceType": "Bundle", "entry": []})
    monkeypatch.setattr(cashier, "shared_get", lambda *a, **k: {})
    client = portal_signed_in(portal_app(tmp_path, monkeypatch, SEN_PORTAL_CACHE_SECONDS="0"), "cashier", lang)
    page = client.get("/invoices").get_data(as_text=True)
    assert label in html.unescape(page)
    empty = client.post("/invoices/search", data={"q": "", "csrf_token": csrf_token(page)}).get_data(as_text=True)
    assert required in html.unescape(empty)


@pytest.mark.parametrize("lang,said", [
    ("vi", f"Đã ghi nhận 20.000{NBSP}₫ tiền mặt, còn phải thu 19.000{NBSP}₫."),
    ("en", f"Recorded 20.000{NBSP}₫ cash, 19.000{NBSP}₫ still due."),
])
def test_a_partial_cash_payment_is_said_on_the_invoice_page(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, lang,
                                                            said):
    from sen_portal.web import cashier

    sent: list[tuple[str, str, object]] = []
    monkeypatch.setattr(cashier, "shared_get", _desk())  # 39.000 ₫ due
    monkeypatch.setattr(cashier, "_json", lambda method, path, body=None, params=None, key=None: sent.append(
        (method, path, body)) or {})
    monkeypatch.setattr(cashier, "patient_names", lambda ids: {})
    client = portal_signed_in(portal_app(tmp_path, monkeypatch, SEN_PORTAL_CACHE_SECONDS="0"), "cashier", lang)
    token = csrf_token(client.get("/invoices/inv-a").get_data(as_text=True))
    page = client.post("/invoices/inv-a/cash", data={"cash-amount": "20.000", "csrf_token": token},
                       follow_redirects=True).get_data(as_text=True)
    assert sent[-1][2]["amount"] == 20000
    assert f'data-testid="cash-recorded">{said}<' in page
    # all that is due: the paid state says it (the status box), no "still due" line
    page = client.post("/invoices/inv-a/cash", data={"cash-amount": "39.000", "csrf_token": token},
                       follow_redirects=True).get_data(as_text=True)
    assert sent[-1][2]["amount"] == 39000 and 'data-testid="cash-recorded"' not in page
    # more than is due: the change is said, not a balance
    page = client.post("/invoices/inv-a/cash", data={"cash-amount": "50.000", "csrf_token": token},
                       follow_redirects=True).get_data(as_text=True)
    assert 'data-testid="cash-change"' in page and 'data-testid="cash-recorded"' not in page


@pytest.mark.parametrize("lang,said", [
    ("vi", "Nguồn số liệu: hệ thống hồ sơ sức khỏe điện tử (EHR) cho hồ sơ, hệ thống hội chẩn từ xa cho ca hội chẩn, "
           "hệ thống viện phí cho thanh toán."),
    ("en", "Sources: the electronic health records (EHR) for records, teleconsultation for consults, billing for "
           "payments."),
])
def test_the_dashboard_names_where_its_figures_come_from(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, lang, said):
    from sen_portal.web import dashboard, directory

    monkeypatch.setattr(dashboard, "figures", _figures)
    monkeypatch.setattr(directory, "names", lambda rtype: {})
    monkeypatch.setattr(dashboard, "org_districts", lambda: {})
    client = portal_signed_in(portal_app(tmp_path, monkeypatch), "health-dept", lang)
    page = client.get("/dashboard").get_data(as_text=True)
    as_of = page.index("Số liệu tính đến" if lang == "vi" else "Figures as of")
    assert f'data-testid="sources">{said}<' in page[as_of:]
