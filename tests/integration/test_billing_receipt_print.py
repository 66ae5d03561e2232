"""What a receipt shows a patient (GET /payments/receipts/{id}, its HTML and its PDF): the payment
reference the patient saw (HD…) instead of the invoice's id, the lines with quantity, unit price,
BHYT's share and the patient's, the totals before and after BHYT, each payment by time, channel
and amount (not by an internal id), and refunds given after the settlement with the credit LEFT
(a receipt printed after the change was given back said the patient still had it as credit)."""

from __future__ import annotations

import re
import subprocess
import uuid

import pytest
from sen_shared.auth import issue_dev_token

from tests.billing_support import billing_app

pytestmark = pytest.mark.integration

FHIR = "application/fhir+json"


@pytest.fixture()
def billing(base_env: dict[str, str], mongo_client, monkeypatch: pytest.MonkeyPatch):
    with billing_app(base_env, mongo_client, monkeypatch, "rp") as pair:
        yield pair


def _headers(dev_key, facility: str) -> dict[str, str]:
    tok = issue_dev_token(dev_key, "cashier", sub=f"cashier-{uuid.uuid4().hex[:6]}", facility=facility)
    return {"Authorization": f"Bearer {tok}", "Content-Type": FHIR, "Accept": FHIR}


def _paid_with_change_given_back(client, dev_key, facility: str) -> tuple[str, str, dict[str, str]]:
    """A hand invoice under a BHYT card (80 %, under the threshold: BHYT pays the covered lines in
    full), a blood count ×2, paid 50.000 ₫ cash on 20.000 ₫ due, the 30.000 ₫ change refunded."""
    h = _headers(dev_key, facility)
    patient = f"Patient/p-{uuid.uuid4().hex[:6]}"
    r = client.post("/fhir/Coverage", headers=h, json={
        "resourceType": "Coverage", "status": "active", "subscriberId": "DN4010123456789",
        "identifier": [{"system": "https://fhir.sen.vn/sid/bhyt", "value": "DN4010123456789"}],
        "beneficiary": {"reference": patient}, "payor": [{"display": "Bảo hiểm xã hội Việt Nam"}]})
    assert r.status_code == 201, r.text
    items = []
    for code, qty in (("kham-benh", 1), ("xn-cong-thuc-mau", 2), ("ban-sao-ho-so", 1)):
        r = client.post("/fhir/ChargeItem", headers=h, json={
            "resourceType": "ChargeItem", "status": "billable", "code": {"text": code}, "quantity": {"value": qty},
            "subject": {"reference": patient}, "definitionCanonical": [f"ChargeItemDefinition/{code}"]})
        assert r.status_code == 201, r.text
        items.append(r.json()["id"])
    r = client.post("/fhir/Invoice", headers=h, json={
        "resourceType": "Invoice", "status": "draft", "subject": {"reference": patient, "display": "Trương Quốc Đạt"},
        "lineItem": [{"chargeItemReference": {"reference": f"ChargeItem/{i}"}} for i in items]})
    assert r.status_code == 201, r.text
    iid = r.json()["id"]
    issued = client.post(f"/fhir/Invoice/{iid}/$issue", headers=h)
    assert issued.status_code == 200, issued.text
    reference = next(i["value"] for i in issued.json()["identifier"] if i["system"].endswith("payment-reference"))
    j = {**h, "Content-Type": "application/json", "Accept": "application/json"}
    assert client.post("/payments/shifts", json={"openingCash": 0}, headers=j).status_code == 201
    cash = client.post("/payments/cash", json={"invoice": iid, "amount": 50000, "transactionId": "c-1"}, headers=j)
    assert cash.status_code == 201, cash.text
    refund = client.post(f"/payments/{cash.json()['id']}/refund", json={"reason": "trả lại tiền thừa",
                                                                      "method": "cash"}, headers=j)
    assert refund.status_code == 201 and refund.json()["amount"] == 30000, refund.text
    return iid, reference, j


def test_the_receipt_json_shows_reference_bhyt_quantities_payments_and_the_refund(billing, dev_key) -> None:
    client, _db = billing
    iid, reference, h = _paid_with_change_given_back(client, dev_key, "org-a")
    body = client.get(f"/payments/receipts/{iid}", headers=h).json()
    assert body["reference"] == reference and reference.startswith("HD")
    assert body["gross"] == 39000 + 2 * 46000 + 20000 and body["owed"] == 20000
    assert body["insurerShare"] == 39000 + 2 * 46000
    assert body["paid"] == 50000 and body["refunded"] == 30000
    assert body["credit"] == 0  # the change went back: no credit is left
    blood = body["lines"][1]
    assert (blood["service"], blood["quantity"], blood["unitPrice"], blood["amount"]) == (
        "xn-cong-thuc-mau", 2, 46000, 92000)
    assert (blood["insurerShare"], blood["patientShare"]) == (92000, 0)
    assert body["lines"][2]["patientShare"] == 20000 and body["lines"][2]["insurerShare"] == 0
    [pay] = body["payments"]
    assert pay["channel"] == "cash" and pay["amount"] == 50000 and pay["at"].endswith("+07:00")
    [refund] = body["refunds"]
    assert refund["amount"] == 30000 and refund["channel"] == "cash" and refund["reason"] == "trả lại tiền thừa"


def test_the_printed_receipt_reads_like_a_hospital_receipt(billing, dev_key, tmp_path) -> None:
    client, db = billing
    iid, reference, h = _paid_with_change_given_back(client, dev_key, "org-a")
    page = client.get(f"/payments/receipts/{iid}/html", headers=h).text
    assert reference in page and iid not in page  # the reference the patient saw, not the invoice's id
    assert "cashier:" not in page and "Tiền thừa" not in page  # no internal ids; no credit left to claim
    assert "Đã hoàn trả" in page and "30.000\u00a0₫" in page
    assert "BHYT chi trả" in page and "Tổng chi phí" in page and "151.000\u00a0₫" in page
    pdf = client.get(f"/payments/receipts/{iid}/pdf", headers=h)
    assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF")
    path = tmp_path / "r.pdf"
    path.write_bytes(pdf.content)
    text = subprocess.run(["pdftotext", "-layout", str(path), "-"], capture_output=True, text=True,
                          check=True).stdout
    assert reference in text and "Trương Quốc Đạt" in text
    assert re.search(r"Xét nghiệm.*\s2\s.*46\.000 ₫.*92\.000 ₫.*92\.000 ₫", text), text
    assert re.search(r"Tiền mặt\s+50\.000 ₫", text) and re.search(r"Tiền mặt\s+30\.000 ₫", text), text
    # nothing runs past the right margin: every word's box ends inside the page's printable width
    bbox = subprocess.run(["pdftotext", "-bbox", str(path), "-"], capture_output=True, text=True,
                          check=True).stdout
    page_width = float(re.search(r'<page width="([\d.]+)"', bbox).group(1))
    words = [(float(x0), float(y0), float(x1), w) for x0, y0, x1, w in re.findall(
        r'<word xMin="([\d.]+)" yMin="([\d.]+)" xMax="([\d.]+)" yMax="[\d.]+">([^<]*)</word>', bbox)]
    # every amount on one line with a space before its sign ("50.000 ₫", never "50.000" then "₫"
    # below it, nor "0₫"): each ₫ follows a number on its own line, a space's width after it
    signs = [i for i, (_x, _y, _x1, w) in enumerate(words) if w == "₫"]
    assert len(signs) >= 14
    for i in signs:
        x0, y0, _x1, _w = words[i]
        px0, py0, px1, prev = words[i - 1]
        assert re.fullmatch(r"[\d.]+", prev) and abs(py0 - y0) < 1 and x0 - px1 > 2, (prev, words[i])
    right = max(float(x) for x in re.findall(r'xMax="([\d.]+)"', bbox))
    assert right <= page_width - 15 / 25.4 * 72 + 1  # the 15 mm margin
    # the credit, while some is left, is said as what is LEFT
    db["refunds"].delete_many({"invoice": iid})  # the test is the only writer
    again = client.get(f"/payments/receipts/{iid}/html", headers=h).text
    assert "Tiền thừa còn lại" in again and "Đã hoàn trả" not in again


def test_a_consult_line_is_named_by_its_code_even_on_an_invoice_made_before_lines_carried_it(billing, dev_key) -> None:
    """The portal names a receipt's line in the page's language by its ``service`` code: the consult's
    line read "Hội chẩn từ xa" on an English receipt. An invoice made before billing wrote the code on
    its lines still has it on its ChargeItem (copied from the price list): the receipt takes it there."""
    import copy
    import json

    from sen_billing.domain import invoices

    from tests.support import ROOT

    client, db = billing
    event = copy.deepcopy(json.loads((ROOT / "specs/events/examples/teleconsult.consult.completed.json")
                                     .read_text(encoding="utf-8")))
    event["data"].update(serviceRequest=f"ServiceRequest/sr-{uuid.uuid4().hex[:8]}",
                         patient=f"Patient/p-{uuid.uuid4().hex[:6]}", requester="Organization/org-a")
    iid = invoices.charge_consult(db, event, level_of=lambda _f: "district", base_salary=2_340_000)
    # as an older invoice: no invoice-line-service extension (the test is the only writer)
    res = invoices.invoice_port.get(db, iid).resource
    del res["lineItem"][0]["extension"]
    db["Invoice"].update_one({"_id": iid}, {"$set": {"res": json.dumps(res, ensure_ascii=False)}})
    assert "extension" not in invoices.invoice_port.get(db, iid).resource["lineItem"][0]
    invoices.issue(db, iid)
    h = {**_headers(dev_key, "org-a"), "Content-Type": "application/json", "Accept": "application/json"}
    assert client.post("/payments/shifts", json={"openingCash": 0}, headers=h).status_code == 201
    owed = invoices.invoice_port.get(db, iid).owed
    r = client.post("/payments/cash", json={"invoice": iid, "amount": owed, "transactionId": "c-2"}, headers=h)
    assert r.status_code == 201, r.text
    [line] = client.get(f"/payments/receipts/{iid}", headers=h).json()["lines"]
    assert line["service"] == "teleconsult" and line["text"] == "Hội chẩn từ xa" and line["quantity"] == 1
