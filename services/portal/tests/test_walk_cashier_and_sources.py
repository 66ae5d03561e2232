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


class _Billing:
    """Billing as the cash form sees it: an invoice of 39.000 ₫ whose summary follows what is recorded;
    ``landing``: a transfer that lands after the form read the summary, before its cash is recorded."""

    def __init__(self, landing: int = 0) -> None:
        self.paid, self.landing, self.sent = 0, landing, []
        self.desk = _desk()

    def summary(self, service, path, params=None, **kw):
        due = 39000 - self.paid
        return {**self.desk(service, path, params, **kw), "paid": self.paid, "balanceDue": max(0, due),
                "credit": max(0, -due), "status": "issued" if due > 0 else "balanced"}

    def post(self, method, path, body=None, params=None, key=None):
        self.sent.append((method, path, body))
        self.paid += self.landing + body["amount"]  # the transfer first, then the cash
        self.landing = 0
        return {}


def _cashier(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, lang: str, billing: _Billing):
    from sen_portal.web import cashier

    monkeypatch.setattr(cashier, "shared_get", billing.summary)
    monkeypatch.setattr(cashier, "_json", billing.post)
    monkeypatch.setattr(cashier, "patient_names", lambda ids: {})
    return portal_signed_in(portal_app(tmp_path, monkeypatch, SEN_PORTAL_CACHE_SECONDS="0"), "cashier", lang)


@pytest.mark.parametrize("lang,said", [
    ("vi", f"Đã ghi nhận 20.000{NBSP}₫ tiền mặt, còn phải thu 19.000{NBSP}₫."),
    ("en", f"Recorded 20.000{NBSP}₫ cash, 19.000{NBSP}₫ still due."),
])
def test_a_partial_cash_payment_is_said_on_the_invoice_page(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, lang,
                                                            said):
    for amount, partial in (("20.000", True), ("39.000", False), ("50.000", False)):
        billing = _Billing()
        client = _cashier(tmp_path, monkeypatch, lang, billing)
        token = csrf_token(client.get("/invoices/inv-a").get_data(as_text=True))
        page = client.post("/invoices/inv-a/cash", data={"cash-amount": amount, "csrf_token": token},
                           follow_redirects=True).get_data(as_text=True)
        assert billing.sent[-1][2]["amount"] == min(int(amount.replace(".", "")), 39000)
        if partial:
            assert f'data-testid="cash-recorded">{said}<' in page
        else:  # all that is due: the paid state says it (the status box), no "still due" line
            assert 'data-testid="cash-recorded"' not in page
    assert 'data-testid="cash-change"' in page  # more than is due: the change is said, not a balance


@pytest.mark.parametrize("lang,said", [
    ("vi", f"Đã ghi nhận 20.000{NBSP}₫ tiền mặt, còn phải thu 9.000{NBSP}₫."),
    ("en", f"Recorded 20.000{NBSP}₫ cash, 9.000{NBSP}₫ still due."),
])
def test_still_due_counts_a_transfer_landing_while_the_cash_is_recorded(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch, lang, said):
    """The balance read before the payment (39.000 ₫) less the cash said 19.000 ₫ still due; a transfer of
    10.000 ₫ landed between that read and billing's record of the cash, so 9.000 ₫ is: the invoice as read
    after the cash is recorded says so."""
    billing = _Billing(landing=10000)
    client = _cashier(tmp_path, monkeypatch, lang, billing)
    token = csrf_token(client.get("/invoices/inv-a").get_data(as_text=True))
    page = client.post("/invoices/inv-a/cash", data={"cash-amount": "20.000", "csrf_token": token},
                       follow_redirects=True).get_data(as_text=True)
    assert billing.sent[-1][2]["amount"] == 20000  # what was handed over, read against 39.000 ₫
    assert f'data-testid="cash-recorded">{said}<' in page, page[-3000:]


def test_cash_and_a_transfer_that_settle_the_invoice_between_them_say_nothing_still_due(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    billing = _Billing(landing=19000)  # with the 20.000 ₫ of cash: all of it paid
    client = _cashier(tmp_path, monkeypatch, "vi", billing)
    token = csrf_token(client.get("/invoices/inv-a").get_data(as_text=True))
    page = client.post("/invoices/inv-a/cash", data={"cash-amount": "20.000", "csrf_token": token},
                       follow_redirects=True).get_data(as_text=True)
    assert billing.paid == 39000 and 'data-testid="cash-recorded"' not in page


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
