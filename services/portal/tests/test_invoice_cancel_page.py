"""A cashier cancels an invoice made by mistake (``/invoices/<id>/cancel``, billing's ``$cancel``):
the cancelled invoice's page says its services are given back and links to a new invoice for the
same patient (``/invoices/new?p=<id>``), which opens with that patient chosen and the charges listed.
Billing and the EHR are stubs answering what the real ones answer (billing's side:
``tests/integration/test_billing_invoice_cancel.py``)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from sen_portal.web.backend import BackendError

from tests.support import csrf_token, portal_app

MAI = {"resourceType": "Patient", "id": "bn-0001", "name": [{"family": "Nguyễn", "given": ["Thị", "Mai"]}]}
LINE = {"chargeItemReference": {"reference": "ChargeItem/ci-1", "display": "Khám bệnh"},
        "priceComponent": [{"type": "base", "amount": {"value": 39000, "currency": "VND"}}]}
CHARGE = {"resourceType": "ChargeItem", "id": "ci-1", "status": "billable", "code": {"text": "Khám bệnh"},
          "subject": {"reference": "Patient/bn-0001"}, "quantity": {"value": 1},
          "definitionCanonical": ["https://sen.vn/fhir/ChargeItemDefinition/kham-benh|1"],
          "priceOverride": {"value": 39000, "currency": "VND"}, "enteredDate": "2026-12-05T08:30:00+07:00"}


class Billing:
    """The invoice's desk answer, and ``$cancel`` turning it cancelled (billing's summary of a
    cancelled invoice: nothing due, what it owed kept)."""

    def __init__(self) -> None:
        self.status = "issued"
        self.cancels: list[tuple[str, Any]] = []
        self.refuse: BackendError | None = None

    def desk(self, service: str, path: str, params: Any = None, **_kw: Any) -> dict[str, Any]:
        assert (service, path) == ("billing", "/payments/invoices/inv-a/desk")
        due = 0 if self.status == "cancelled" else 39000
        return {"invoice": "inv-a", "status": self.status, "owed": 39000, "paid": 0, "balanceDue": due,
                "reference": "HD7K2M9QX4C", "payments": [], "qr": None,
                "resource": {"resourceType": "Invoice", "id": "inv-a", "status": self.status,
                             "date": "2026-12-05T09:00:00+07:00", "subject": {"reference": "Patient/bn-0001"},
                             "lineItem": [LINE]}}

    def call(self, service: str, method: str, path: str, *, json: Any = None, **_kw: Any) -> Any:
        assert (service, method, path) == ("billing", "POST", "/fhir/Invoice/inv-a/$cancel")
        self.cancels.append((path, json))
        if self.refuse is not None:
            raise self.refuse
        self.status = "cancelled"
        return None


@pytest.fixture()
def client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    with portal_app(tmp_path, monkeypatch, SEN_PORTAL_CACHE_SECONDS="0").test_client() as c:
        page = c.get("/login").get_data(as_text=True)
        c.post("/login", data={"username": "cashier", "password": "sen-cashier", "csrf_token": csrf_token(page)})
        yield c


@pytest.fixture()
def billing(monkeypatch) -> Billing:
    from sen_portal.web import cashier, charges
    from sen_portal.web import patients as patient_module

    b = Billing()
    monkeypatch.setattr(cashier, "shared_get", b.desk)
    monkeypatch.setattr(cashier, "call", b.call)
    bundle = {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": MAI}]}
    monkeypatch.setattr(patient_module, "fhir_get", lambda *a, **k: bundle)

    def billing_get(service: str, path: str, params: Any = None, **_kw: Any) -> dict[str, Any]:
        if path == "/fhir/ChargeItem":  # the charges the cancel gave back
            assert params["invoiced"] == "false" and params["subject"] == "Patient/bn-0001"
            return {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": CHARGE}]}
        return {"resourceType": "Bundle", "type": "searchset", "entry": []}  # price list, cards

    monkeypatch.setattr(charges, "fhir_get", billing_get)
    return b


def language(client, lang: str) -> None:
    page = client.get("/invoices/inv-a").get_data(as_text=True)
    client.post("/language", data={"lang": lang, "next": "/", "csrf_token": csrf_token(page)})


def text(page: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", page))


def cancel(client, reason: str, confirm: str | None = "invoice-cancel") -> Any:
    page = client.get("/invoices/inv-a?p=bn-0001").get_data(as_text=True)
    data = {"cancel-reason": reason, "csrf_token": csrf_token(page)}
    if confirm:
        data["confirm"] = confirm
    return client.post("/invoices/inv-a/cancel?p=bn-0001", data=data)


@pytest.mark.parametrize("lang", ["vi", "en"])
def test_a_cancel_is_confirmed_first_and_nothing_is_cancelled_before(client, billing, lang) -> None:
    if lang == "en":
        language(client, "en")
    r = cancel(client, "Sai thẻ BHYT", confirm=None)  # the first press: the step, nothing sent
    page = r.get_data(as_text=True)
    assert r.status_code == 200 and not billing.cancels
    step = re.search(r'<details class="card" id="cancel-box" open>.*?</details>', page, re.S).group(0)
    assert "Sai thẻ BHYT</textarea>" in step  # the reason kept
    assert 'name="confirm" value="invoice-cancel"' in step and 'name="confirming" value="invoice-cancel"' in step
    assert ("sẽ bị hủy" if lang == "vi" else "will be cancelled") in text(step)
    # the step sent without its tick: said on the tick, still nothing cancelled
    r = cancel(client, "Sai thẻ BHYT", confirm=None)
    page = client.post("/invoices/inv-a/cancel?p=bn-0001", data={
        "cancel-reason": "Sai thẻ BHYT", "confirming": "invoice-cancel",
        "csrf_token": csrf_token(r.get_data(as_text=True))})
    assert page.status_code == 400 and not billing.cancels
    assert ("Hãy đánh dấu vào ô để xác nhận" if lang == "vi" else "Tick the box to confirm") in \
        page.get_data(as_text=True)
    # a tick confirming another action is no confirmation of this one
    assert cancel(client, "Sai thẻ BHYT", confirm="refund").status_code == 200 and not billing.cancels
    r = cancel(client, "Sai thẻ BHYT")
    assert r.status_code == 302 and len(billing.cancels) == 1


def test_a_cancelled_invoice_offers_a_new_invoice_for_its_patient(client, billing) -> None:
    page = client.get("/invoices/inv-a").get_data(as_text=True)
    assert 'id="cancel-box"' in page and 'data-testid="cancelled"' not in page
    r = cancel(client, "Sai thẻ BHYT")
    assert r.status_code == 302 and r.headers["Location"].endswith("/invoices/inv-a?p=bn-0001")
    assert billing.cancels == [("/fhir/Invoice/inv-a/$cancel", {
        "resourceType": "Parameters", "parameter": [{"name": "reason", "valueString": "Sai thẻ BHYT"}]})]

    page = client.get(r.headers["Location"]).get_data(as_text=True)
    assert 'data-testid="cancelled"' in page
    assert "Hóa đơn này đã hủy. Các dịch vụ trên hóa đơn đã được trả lại: có thể lập vào hóa đơn mới." in page
    link = re.search(r'<a[^>]*href="([^"]*)"[^>]*data-testid="invoice-again">([^<]*)<', page)
    assert link is not None and link.group(1) == "/invoices/new?p=bn-0001"
    assert link.group(2) == "Lập hóa đơn mới cho người bệnh này"
    # a cancelled invoice is not "paid" (nothing is due on it), takes no cash and no second cancel
    assert 'data-testid="paid"' not in page and '<details class="card" id="cash-box"' not in page
    assert '<details class="card" id="cancel-box"' not in page
    # still asked, slower: a transfer arriving on the cancelled invoice shows, to give back (review 8)
    box = page.split('id="invoice-status"')[1].split(">")[0]
    assert "Đã hủy" in text(page) and 'hx-trigger="load, every 10s"' in box
    assert [li for li in re.findall(r'data-testid="line-title">([^<]*)<', page)] == ["Khám bệnh"]  # its lines stay
    # what it was for, struck through and said not owed: no "balance due 0 ₫" under "amount owed"
    assert "Số tiền (đã hủy: không phải trả)" in page and "Còn phải trả" not in page
    assert re.search(r'data-testid="cancelled-amount"><s>39\.000\xa0₫</s>', page)

    language(client, "en")
    page = client.get("/invoices/inv-a?p=bn-0001").get_data(as_text=True)
    assert "This invoice is cancelled. Its services are given back: they can go on a new invoice." in page
    assert "New invoice for this patient" in page

    # the link opens the new invoice with the patient chosen and the given-back charge listed, ticked
    page = client.get("/invoices/new?p=bn-0001").get_data(as_text=True)
    assert re.search(r'name="patient"[^>]*value="bn-0001"|value="bn-0001"[^>]*name="patient"', page)
    assert "Nguyễn Thị Mai" in page and re.search(r'name="pending" value="ci-1"[^>]*checked', page)
    page = client.get("/invoices/new?p=not%20an%20id").get_data(as_text=True)
    assert 'data-testid="chosen-patient"' not in page


def test_a_cancel_needs_a_reason_and_billings_refusal_is_a_sentence(client, billing) -> None:
    r = cancel(client, "")
    assert r.status_code == 422 and "Nêu lý do." in text(r.get_data(as_text=True)) and not billing.cancels
    billing.refuse = BackendError("refused", "billing", 409,
                                  "Invoice/inv-a has payments; refund them before cancelling", "conflict")
    r = cancel(client, "Nhập nhầm dịch vụ")
    body = r.get_data(as_text=True)
    assert r.status_code == 409 and "Hóa đơn này đã có khoản thanh toán: hãy hoàn tiền các khoản đó" in body
    assert "refund them before cancelling" not in body and "inv-a" not in text(body)  # no English, no id
    assert "Nhập nhầm dịch vụ" in body and 'data-testid="cancelled"' not in body  # the form keeps the reason
