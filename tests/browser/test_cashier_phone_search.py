"""A patient at the cashier's counter gives her phone number, not her name: the cashier types it as it is said
(``0918 765 432``, ``+84 918 765 432``) in the invoice search, presses Enter, and the patient's invoice is the
one row found (headless Chromium against the whole stack, axe-checked), at 1280 px in Vietnamese and at a
360 px phone width in English. Failed before: a number was searched as a name ("0 hóa đơn").
Screenshots: vi-1280 / en-360 ``cashier-phone-search``."""

from __future__ import annotations

import random

import httpx
import pytest
from playwright.sync_api import expect

from tests.browser.test_pages import _admin
from tests.browser.test_roles import FACILITY, issued_at_the_desk

pytestmark = pytest.mark.integration


def _patient_with_a_phone(stack: dict[str, str]) -> tuple[str, str]:
    """The test's own patient of the demo cashier's facility with a mobile number no other patient has, and an
    examination invoiced and issued for her: (her phone as the record keeps it, the invoice's reference)."""
    phone = "09" + "".join(random.choices("0123456789", k=8))
    r = httpx.post(f"{stack['ehr']}/fhir/Patient", headers=_admin(stack), timeout=30, json={
        "resourceType": "Patient", "name": [{"family": "Huỳnh", "given": ["Thị", "Ngọc"]}], "gender": "female",
        "birthDate": "1985-03-09", "telecom": [{"system": "phone", "value": phone, "use": "mobile"}],
        "managingOrganization": {"reference": f"Organization/{FACILITY}"}})
    assert r.status_code == 201, r.text[:300]
    iid, _charges = issued_at_the_desk(stack, f"Patient/{r.json()['id']}", display="Huỳnh Thị Ngọc")
    r = httpx.get(f"{stack['billing']}/fhir/Invoice/{iid}", headers=_admin(stack), timeout=30)
    reference = next(i["value"] for i in r.json()["identifier"] if i["system"].endswith("payment-reference"))
    return phone, reference


@pytest.mark.parametrize(("tag", "width", "spoken"), [
    ("vi-1280", 1280, lambda p: f"{p[:4]} {p[4:7]} {p[7:]}"),
    ("en-360", 360, lambda p: f"+84 {p[1:4]} {p[4:7]} {p[7:]}")])
def test_the_cashier_finds_the_invoice_by_the_phone_number_said(visitor_factory, stack, tag, width, spoken):
    phone, reference = _patient_with_a_phone(stack)
    v = visitor_factory(tag, width=width)
    v.sign_in("cashier")
    if tag.startswith("en"):
        v.english()
    v.go("/invoices")
    v.page.fill("#q", spoken(phone))
    v.page.press("#q", "Enter")
    # the queue's rows are in the same box: wait until the search's answer replaced them with its one row
    expect(v.page.locator("#invoice-results [data-testid=invoice-reference]")).to_have_text([reference])
    assert "Huỳnh Thị Ngọc" in v.page.inner_text("#invoice-results")
    v.check("cashier-phone-search")
