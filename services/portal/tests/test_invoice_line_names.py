"""The invoice page names each line's service in the page's language: billing writes the price
list's service code on each line (extension ``invoice-line-service``, Vietnamese title as text);
an English page shows the English name (``prices.SERVICES``), a Vietnamese one billing's title,
and a line without a known code (an invoice made before billing wrote codes) its title as it is."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.support import csrf_token, portal_app, stub_invoice_desk

EXT = "https://sen.vn/fhir/StructureDefinition/invoice-line-service"


@pytest.fixture()
def client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    with portal_app(tmp_path, monkeypatch).test_client() as c:
        yield c


def line(title: str, code: str | None, amount: int) -> dict:
    li = {"chargeItemReference": {"reference": "ChargeItem/c", "display": title},
          "priceComponent": [{"type": "base", "amount": {"value": amount, "currency": "VND"}}]}
    if code:
        li["extension"] = [{"url": EXT, "valueCodeableConcept": {
            "coding": [{"system": "urn:sen:billing:service", "code": code}], "text": title}}]
    return li


@pytest.fixture()
def invoice_page(client, monkeypatch):
    invoice = {"resourceType": "Invoice", "id": "inv-a", "status": "issued", "date": "2026-12-04T09:00:00+07:00",
               "subject": {"reference": "Patient/pa"},
               "lineItem": [line("Hội chẩn từ xa", "teleconsult", 150000),
                            line("Khám bệnh", "kham-benh", 39000),
                            line("Dịch vụ cũ", None, 20000),  # an old invoice's line: no code
                            line("Dịch vụ lạ", "not-in-the-map", 10000),  # a code the portal does not know
                            # a specialty's consult (billing's titles of the price list's entries)
                            line("Hội chẩn từ xa chuyên khoa Tim mạch", "teleconsult", 250000),
                            line("Hội chẩn từ xa Chẩn đoán hình ảnh", "teleconsult", 250000),
                            # a specialty the portal has no English name for: billing's title, not less
                            line("Hội chẩn từ xa chuyên khoa Lão khoa", "teleconsult", 250000)]}

    stub_invoice_desk(monkeypatch, invoice, 1219000)
    page = client.get("/login").get_data(as_text=True)
    client.post("/login", data={"username": "cashier", "password": "sen-cashier", "csrf_token": csrf_token(page)})

    def titles(lang: str) -> list[str]:
        page = client.get("/invoices/inv-a?p=pa").get_data(as_text=True)
        client.post("/language", data={"lang": lang, "next": "/", "csrf_token": csrf_token(page)})
        page = client.get("/invoices/inv-a?p=pa").get_data(as_text=True)
        assert f'<html lang="{lang}">' in page
        return re.findall(r'<td data-testid="line-title">([^<]*)<', page)

    return titles


def test_an_english_invoice_page_names_the_services_in_english(invoice_page) -> None:
    """A specialty's consult keeps its specialty in English (review 8: "Hội chẩn từ xa chuyên khoa Tim mạch" and
    "Hội chẩn từ xa" were both "Teleconsultation"), named as the price list page names the entry."""
    assert invoice_page("en") == ["Teleconsultation", "Medical examination", "Dịch vụ cũ", "Dịch vụ lạ",
                                  "Teleconsultation — Cardiology", "Teleconsultation — Radiology",
                                  "Hội chẩn từ xa chuyên khoa Lão khoa"]


def test_a_vietnamese_invoice_page_names_them_as_billing_wrote(invoice_page) -> None:
    assert invoice_page("vi") == ["Hội chẩn từ xa", "Khám bệnh", "Dịch vụ cũ", "Dịch vụ lạ",
                                  "Hội chẩn từ xa chuyên khoa Tim mạch", "Hội chẩn từ xa Chẩn đoán hình ảnh",
                                  "Hội chẩn từ xa chuyên khoa Lão khoa"]
