"""The "Ghi thẻ BHYT" step on an issued invoice's page (web/cashier.invoice_card, charges.split_again)
with the Flask test client, billing and the EHR faked as they answer: offered only while nothing is
paid, prefilled with the card on the patient's record (the EHR's Coverage, else the Patient's BHYT
number with its level by prefix), a bad card refused on its fields with nothing sent, and the writes
in billing's order: the Coverage, the cancel, the invoice of the same charges, its issue."""

from __future__ import annotations

import json
import re
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.support import VN_TZ, csrf_token, flash_step, input_value, portal_app, portal_signed_in

# a card valid from last year to the end of next (in Vietnam), whenever the suite runs: never a year that passes
_YEAR = datetime.now(VN_TZ).year
CARD_FROM, CARD_UNTIL = f"01/01/{_YEAR - 1}", f"31/12/{_YEAR + 1}"

INV = {"resourceType": "Invoice", "id": "inv-a", "status": "issued", "date": "2026-12-05T09:00:00+07:00",
       "subject": {"reference": "Patient/pa", "display": "Lê Thị Hoa"},
       "totalGross": {"value": 100000, "currency": "VND"}, "totalNet": {"value": 100000, "currency": "VND"},
       "lineItem": [{"sequence": 1, "chargeItemReference": {"reference": "ChargeItem/ci-consult"},
                     "priceComponent": [{"type": "base", "amount": {"value": 100000, "currency": "VND"}}]}]}


class Answer:
    def __init__(self, body: Any) -> None:
        self.status_code, self.content = 200, json.dumps(body).encode()

    def json(self) -> Any:
        return json.loads(self.content)


class Fake:
    def __init__(self) -> None:
        self.s: dict[str, Any] = {"invoice": "inv-a", "status": "issued", "owed": 100000, "paid": 0,
                                  "balanceDue": 100000, "credit": 0, "reference": "HD7K2M9QX4C", "payments": []}
        self.writes: list[tuple[str, Any]] = []
        self.ehr_coverage: list[dict[str, Any]] = []

    def shared_get(self, service, path, params=None, **_kw):
        return {**self.s, "resource": INV, "qr": None} if path.endswith("/desk") else dict(self.s)

    def call(self, service, method, path, **kw):
        if method == "GET":
            return Answer(INV)
        self.writes.append((path, kw.get("json")))
        return Answer({"id": "inv-b"} if path == "/fhir/Invoice" else {})

    def fhir_get(self, service, path, params=None, **_kw):
        if (service, path) == ("ehr", "/fhir/Coverage"):
            return {"resourceType": "Bundle", "entry": [{"resource": c} for c in self.ehr_coverage]}
        if (service, path) == ("ehr", "/fhir/Patient"):
            return {"resourceType": "Bundle", "entry": [{"resource": {
                "resourceType": "Patient", "id": "pa", "name": [{"text": "Lê Thị Hoa"}],
                "identifier": [{"system": "https://fhir.sen.vn/sid/bhyt", "value": "HT2878701234567"}]}}]}
        return {"resourceType": "Bundle", "entry": []}


@pytest.fixture()
def fake(monkeypatch) -> Fake:
    from sen_portal.web import cashier, charges, patients

    f = Fake()
    monkeypatch.setattr(cashier, "shared_get", f.shared_get)
    monkeypatch.setattr(cashier, "call", f.call)
    monkeypatch.setattr(charges, "call", f.call)
    monkeypatch.setattr(charges, "fhir_get", f.fhir_get)
    monkeypatch.setattr(patients, "fhir_get", f.fhir_get)
    monkeypatch.setattr(cashier, "patient_names", lambda ids: {"pa": "Lê Thị Hoa"})
    return f


@pytest.fixture()
def client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    return portal_signed_in(portal_app(tmp_path, monkeypatch, SEN_PORTAL_CACHE_SECONDS="0"), "cashier")


def test_offered_prefilled_from_the_patients_record_and_split_in_billings_order(client, fake):
    page = client.get("/invoices/inv-a?p=pa").get_data(as_text=True)
    assert 'data-testid="card-box"' in page and "<summary>Ghi thẻ BHYT</summary>" in page
    assert input_value(page, "card-card_number") == "HT2878701234567"  # the Patient's number
    assert re.search(r'<option selected value="100">', page)  # HT2…: 100 %
    r = client.post("/invoices/inv-a/card?p=pa", data={
        "csrf_token": csrf_token(page), "card-txn": input_value(page, "card-txn"),
        "card-card_number": "HT2878701234567",
        "card-card_level": "100", "card-card_start": CARD_FROM, "card-card_end": CARD_UNTIL})
    # the new invoice names the one it replaces from billing's extension, not from this link
    assert r.status_code == 302 and r.headers["Location"].endswith("/invoices/inv-b?p=pa")  # "carded": flashed
    assert [w[0] for w in fake.writes] == ["/fhir/Coverage", "/fhir/Invoice/inv-a/$cancel", "/fhir/Invoice",
                                           "/fhir/Invoice/inv-b/$issue"]
    coverage, cancel, invoice = fake.writes[0][1], fake.writes[1][1], fake.writes[2][1]
    assert coverage["subscriberId"] == "HT2878701234567" and coverage["extension"][0]["valueUnsignedInt"] == 100
    assert coverage["beneficiary"] == {"reference": "Patient/pa"}
    assert cancel["parameter"][0]["valueString"].startswith("Ghi thẻ BHYT HT2878701234567")
    assert invoice["subject"] == {"reference": "Patient/pa", "display": "Lê Thị Hoa"}
    assert [li["chargeItemReference"]["reference"] for li in invoice["lineItem"]] == ["ChargeItem/ci-consult"]


def test_the_ehrs_coverage_gives_level_and_validity(client, fake):
    fake.ehr_coverage = [{"resourceType": "Coverage", "status": "active", "subscriberId": "DN4010123456789",
                          "identifier": [{"system": "https://fhir.sen.vn/sid/bhyt", "value": "DN4010123456789"}],
                          "period": {"start": "2026-01-01", "end": "2026-12-31"}}]
    page = client.get("/invoices/inv-a?p=pa").get_data(as_text=True)
    assert input_value(page, "card-card_number") == "DN4010123456789"
    assert re.search(r'<option selected value="80">', page)  # DN4…: 80 %
    assert input_value(page, "card-card_start") == "01/01/2026" and input_value(page, "card-card_end") == "31/12/2026"


def test_a_bad_card_is_refused_on_its_fields_and_nothing_is_sent(client, fake):
    page = client.get("/invoices/inv-a?p=pa").get_data(as_text=True)
    r = client.post("/invoices/inv-a/card?p=pa", data={
        "csrf_token": csrf_token(page), "card-card_number": "HT28787", "card-card_level": "100",
        "card-card_start": CARD_FROM, "card-card_end": CARD_UNTIL})
    assert r.status_code == 422 and "2 chữ cái" in r.get_data(as_text=True)
    assert fake.writes == []


def test_not_offered_once_something_is_paid_and_refused_readably(client, fake):
    fake.s.update(paid=20000, balanceDue=80000, payments=[{"id": "standard:t1", "provider": "standard",
                                                           "channel": "transfer", "amount": 20000,
                                                           "outcome": "applied", "refundable": 20000,
                                                           "receivedAt": "2026-12-05T10:00:00+07:00"}])
    page = client.get("/invoices/inv-a?p=pa").get_data(as_text=True)
    assert 'data-testid="card-box"' not in page
    r = client.post("/invoices/inv-a/card?p=pa", data={
        "csrf_token": csrf_token(page), "card-card_number": "HT2878701234567", "card-card_level": "100",
        "card-card_start": CARD_FROM, "card-card_end": CARD_UNTIL})
    body = r.get_data(as_text=True)
    assert r.status_code == 409 and "thẻ BHYT không thay đổi được hóa đơn nữa" in body
    assert fake.writes == []


def test_a_payment_arriving_while_the_page_is_open_takes_the_card_box_away(client, fake):
    page = client.get("/invoices/inv-a?p=pa").get_data(as_text=True)
    poll = re.search(r'hx-get="([^"]*/status[^"]*)"', page).group(1).replace("&amp;", "&")
    assert "card-box" not in client.get(poll).get_data(as_text=True)  # nothing paid: it stays
    fake.s.update(paid=20000, balanceDue=80000, payments=[{"id": "standard:t1", "provider": "standard",
                                                           "channel": "transfer", "amount": 20000,
                                                           "outcome": "applied", "refundable": 20000,
                                                           "receivedAt": "2026-12-05T10:00:00+07:00"}])
    answer = client.get(poll).get_data(as_text=True)
    assert '<div id="card-box" hx-swap-oob="true" hidden></div>' in answer


def test_the_issued_banner_goes_once_a_payment_is_swapped_in(client, fake):
    """Review 4: "Đã phát hành hóa đơn" stayed above a payment the status box had swapped in."""
    flash_step(client, "/invoices/inv-a", "issued")
    page = client.get("/invoices/inv-a?p=pa").get_data(as_text=True)
    assert re.search(r'<div id="issued-box"><div class="alert ok" role="status" data-testid="issued">Đã phát hành',
                     page)
    assert '<div id="issued-box"></div>' in client.get("/invoices/inv-a?p=pa").get_data(as_text=True)  # a target
    poll = re.search(r'hx-get="([^"]*/status[^"]*)"', page).group(1).replace("&amp;", "&")
    assert "issued-box" not in client.get(poll).get_data(as_text=True)  # nothing paid: it stays
    fake.s.update(paid=20000, balanceDue=80000, payments=[{"id": "standard:t1", "provider": "standard",
                                                           "channel": "transfer", "amount": 20000,
                                                           "outcome": "applied", "refundable": 20000,
                                                           "receivedAt": "2026-12-05T10:00:00+07:00"}])
    assert '<div id="issued-box" hx-swap-oob="true"></div>' in client.get(poll).get_data(as_text=True)


EXT = "https://sen.vn/fhir/StructureDefinition/"


def test_the_replaced_invoice_and_its_replacement_name_each_other_from_billings_extensions(
        client, fake, monkeypatch):
    from sen_portal.web import cashier

    asked = []

    def invoices(service, path, params=None, **_kw):
        asked.append((service, path, dict(params or {})))
        return {"resourceType": "Bundle", "entry": [{"resource": {"resourceType": "Invoice", "id": i, "identifier": [
            {"system": cashier.REFERENCE_SYSTEM, "value": ref}]}} for i, ref in
            (("inv-a", "HD7K2M9QX4C"), ("inv-b", "HD9Q8P7N6MB"))]}

    monkeypatch.setattr(cashier, "fhir_get", invoices)
    old = {**INV, "status": "cancelled",
           "extension": [{"url": EXT + "invoice-replaced-by", "valueReference": {"reference": "Invoice/inv-b"}}]}
    fake.s.update(status="cancelled", balanceDue=0)
    monkeypatch.setattr(cashier, "shared_get", lambda service, path, params=None, **_kw: {
        **fake.s, "resource": old, "qr": None})
    page = client.get("/invoices/inv-a?p=pa").get_data(as_text=True)
    box = re.search(r'data-testid="cancelled">(.*?)</div>', page, re.S).group(1)
    assert "Hóa đơn này đã hủy. Đã thay bằng hóa đơn" in box and 'href="/invoices/inv-b?p=pa"' in box
    assert ">HD9Q8P7N6MB</a>" in box and 'data-testid="invoice-again"' not in page  # no "new invoice" dead end
    assert asked == [("billing", "/fhir/Invoice", {"_id": "inv-b", "_elements": "identifier"})]

    new = {**INV, "id": "inv-b",
           "extension": [{"url": EXT + "invoice-replaces", "valueReference": {"reference": "Invoice/inv-a"}}]}
    fake.s.update(status="issued", balanceDue=100000, invoice="inv-b")
    monkeypatch.setattr(cashier, "shared_get", lambda service, path, params=None, **_kw: {
        **fake.s, "resource": new, "qr": None})
    flash_step(client, "/invoices/inv-b", "carded", "HDXXXXXXXXX")
    page = client.get("/invoices/inv-b?p=pa&carded=HDXXXXXXXXX").get_data(as_text=True)
    line = re.search(r'data-testid="replaces">(.*?)</p>', page, re.S).group(1)
    assert line.startswith("Thay cho hóa đơn") and '>HD7K2M9QX4C</a>' in line and 'href="/invoices/inv-a?p=pa"' in line
    carded = re.search(r'data-testid="carded">(.*?)</div>', page, re.S).group(1)
    assert "HDXXXXXXXXX" not in carded + line  # the link's text is not shown
    assert "Đã ghi thẻ BHYT: hóa đơn được lập lại có phần BHYT chi trả." in page


def test_an_invoice_replacing_none_asks_nothing_more(client, fake, monkeypatch):
    from sen_portal.web import cashier

    monkeypatch.setattr(cashier, "fhir_get", lambda *a, **k: pytest.fail("no search"))
    page = client.get("/invoices/inv-a?p=pa").get_data(as_text=True)
    assert 'data-testid="replaces"' not in page and 'data-testid="replaced-by"' not in page


def test_a_card_form_sent_again_once_the_invoice_was_made_again_goes_to_the_new_one(client, fake, monkeypatch):
    """A refused form's reload is refused again with nothing sent; the form sent again after it worked
    (another tab, a resubmit) finds the invoice cancelled and replaced: the new invoice's page."""
    from sen_portal.web import cashier

    page = client.get("/invoices/inv-a?p=pa").get_data(as_text=True)
    bad = {"csrf_token": csrf_token(page), "card-txn": input_value(page, "card-txn"),
           "card-card_number": "HT2878701234567",
           "card-card_level": "100", "card-card_start": CARD_UNTIL, "card-card_end": CARD_FROM}
    for _reload in range(2):
        r = client.post("/invoices/inv-a/card?p=pa", data=bad)
        assert r.status_code == 422 and "Thẻ hết hạn trước khi có hiệu lực." in r.get_data(as_text=True)
    assert fake.writes == []

    replaced = {**INV, "status": "cancelled",
                "extension": [{"url": EXT + "invoice-replaced-by", "valueReference": {"reference": "Invoice/inv-b"}}]}
    fake.s.update(status="cancelled", balanceDue=0)
    monkeypatch.setattr(cashier, "call", lambda service, method, path, **kw: Answer(replaced))
    monkeypatch.setattr(cashier, "fhir_get", lambda *a, **k: {"resourceType": "Bundle", "entry": []})
    r = client.post("/invoices/inv-a/card?p=pa", data={**bad, "card-card_start": CARD_FROM,
                                                       "card-card_end": CARD_UNTIL})
    assert r.status_code == 302 and r.headers["Location"].endswith("/invoices/inv-b?p=pa")
    assert "Đã ghi thẻ BHYT" in client.get(r.headers["Location"]).get_data(as_text=True)
    assert fake.writes == []


@pytest.mark.parametrize(("status", "said"), [(403, "Dịch vụ thanh toán từ chối: bạn không có quyền làm việc này."),
                                              (404, "Dịch vụ thanh toán không có hồ sơ này."),
                                              (422, "Dịch vụ thanh toán từ chối yêu cầu. Hãy kiểm tra")])
def test_billing_refusing_the_card_gives_its_own_status(client, fake, monkeypatch, status, said):
    """Billing refusing the card's writes was a 409 page whatever it answered: now its own status
    (backend.page_status: a 404 is a 404, a 403 a 403), the invoice's page readable."""
    from sen_portal.web.backend import BackendError

    page = client.get("/invoices/inv-a?p=pa").get_data(as_text=True)
    written = fake.call

    def refusing(service, method, path, **kw):
        if method != "GET":
            raise BackendError("refused", "billing", status, "refused")
        return written(service, method, path, **kw)

    from sen_portal.web import cashier, charges

    monkeypatch.setattr(cashier, "call", refusing)
    monkeypatch.setattr(charges, "call", refusing)
    r = client.post("/invoices/inv-a/card?p=pa", data={
        "csrf_token": csrf_token(page), "card-card_number": "HT2878701234567", "card-card_level": "100",
        "card-card_start": CARD_FROM, "card-card_end": CARD_UNTIL})
    body = r.get_data(as_text=True)
    assert r.status_code == status and said in re.sub(r"\s+", " ", body) and "Traceback" not in body
    assert 'data-testid="card-box"' in body and input_value(body, "card-card_number") == "HT2878701234567"


def test_the_page_reads_the_patient_once_for_the_name_and_the_cards_prefill(client, fake, monkeypatch):
    """The page's name and the card form's prefill (the Patient's BHYT number, the EHR holding no Coverage) come
    from one search of the Patient, with its identifiers: the prefill searched it again for them."""
    from sen_portal.web import charges, patients

    asked: list[tuple[str, str, dict[str, Any]]] = []

    def counted(service, path, params=None, **kw):
        asked.append((service, path, dict(params or {})))
        return fake.fhir_get(service, path, params, **kw)

    monkeypatch.setattr(charges, "fhir_get", counted)
    monkeypatch.setattr(patients, "fhir_get", counted)
    for link in ("/invoices/inv-a?p=pa", "/invoices/inv-a"):  # with the queue's hint, and without it
        asked.clear()
        page = client.get(link).get_data(as_text=True)
        assert re.search(r'data-testid="invoice-patient">Lê Thị Hoa<', page), link
        assert input_value(page, "card-card_number") == "HT2878701234567", link
        searched = [a for a in asked if a[1] == "/fhir/Patient"]
        assert len(searched) == 1 and searched[0][2]["_elements"] == "name,identifier", (link, asked)
