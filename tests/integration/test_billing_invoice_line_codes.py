"""Billing's Invoice lines name their service by the price list's code, so a reader can name it in
its own language: a consult's invoice (``teleconsult.consult.completed``) and an invoice of charges
made by hand carry ``urn:sen:billing:service`` codes in each line's ``invoice-line-service``
extension (FHIR R4's ``chargeItem[x]`` holds the ChargeItem reference, which stays), the
Vietnamese title as its ``text``, and the same amounts as before.
"""

from __future__ import annotations

import copy
import json
import uuid

import pytest
from sen_billing.domain import invoices, pricing
from sen_shared.auth import issue_dev_token
from sen_shared.fhir.store import Store
from sen_shared.fhir.validate import validate_resource

from tests.billing_support import billing_app, hand_invoice
from tests.support import ROOT

pytestmark = pytest.mark.integration

FHIR = "application/fhir+json"
EXAMPLE = json.loads((ROOT / "specs/events/examples/teleconsult.consult.completed.json").read_text(encoding="utf-8"))


@pytest.fixture()
def billing(base_env: dict[str, str], mongo_client, monkeypatch: pytest.MonkeyPatch):
    with billing_app(base_env, mongo_client, monkeypatch, "l") as pair:
        yield pair


def services(invoice: dict) -> list[tuple[str | None, str | None]]:
    """(code, text) of each line's service extension."""
    out = []
    for line in invoice["lineItem"]:
        [ext] = [e for e in line.get("extension") or [] if e["url"] == invoices.SERVICE_EXT] or [{}]
        concept = ext.get("valueCodeableConcept") or {}
        codes = [c["code"] for c in concept.get("coding") or [] if c.get("system") == "urn:sen:billing:service"]
        out.append((codes[0] if codes else None, concept.get("text")))
    return out


def test_a_consult_invoice_line_carries_the_teleconsult_code(billing) -> None:
    _client, db = billing
    sr = f"sr-{uuid.uuid4().hex[:8]}"
    event = copy.deepcopy(EXAMPLE)
    event["data"].update(serviceRequest=f"ServiceRequest/{sr}", patient=f"Patient/p-{uuid.uuid4().hex[:6]}",
                         requester="Organization/org-a")
    inv_id = invoices.charge_consult(db, event, level_of=lambda _f: "district", base_salary=2_340_000)
    invoice = Store(db, service="billing").read_doc("Invoice", inv_id)["res"]
    validate_resource(invoice)  # still a valid R4 Invoice
    assert services(invoice) == [("teleconsult", "Hội chẩn từ xa")]
    line = invoice["lineItem"][0]
    assert line["chargeItemReference"]["reference"].startswith("ChargeItem/")  # the charge is still named
    assert line["chargeItemReference"]["display"] == "Hội chẩn từ xa"
    price = pricing.price(pricing.definition(db, "consult-any-district"))  # no specialty: the general price
    assert line["priceComponent"][0]["amount"] == {"value": price, "currency": "VND"}


def test_a_hand_invoice_carries_each_lines_service_code(billing, dev_key) -> None:
    client, _db = billing
    tok = issue_dev_token(dev_key, "cashier", sub=f"cashier-{uuid.uuid4().hex[:6]}", facility="org-a")
    headers = {"Authorization": f"Bearer {tok}", "Content-Type": FHIR, "Accept": FHIR}
    patient = f"Patient/p-{uuid.uuid4().hex[:6]}"
    iid, _items = hand_invoice(client, headers, patient, ["kham-benh", "xn-cong-thuc-mau"])
    invoice = client.get(f"/fhir/Invoice/{iid}", headers=headers).json()
    got = services(invoice)
    assert [code for code, _ in got] == ["kham-benh", "xn-cong-thuc-mau"]
    assert all(text and text == line["chargeItemReference"]["display"]
               for (_, text), line in zip(got, invoice["lineItem"], strict=True))
    assert invoice["totalGross"]["value"] == 39_000 + 46_000  # the amounts as before
