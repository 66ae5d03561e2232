"""Charges, invoices, BHYT and the VietQR code: billing's FHIR server on FerretDB.

- the price list: loaded from its file once (a second load creates nothing and keeps an admin's
  edit), edited by admins only, every change a version in the history;
- ``teleconsult.consult.completed`` 5 times (one after another, and 5 at once) → one ChargeItem,
  one Invoice (draft then issued: two versions), one ``billing.invoice.issued`` in the outbox;
- BHYT at 80/95/100 % and under the threshold, through the Coverage a cashier records;
- cashiers: their own facility only (read 404 as a missing one, search empty, writes 403), charges by hand,
  invoice of them, $issue, $cancel;
- ``$vietqr``: the payload (parsed back, amount = balance due, reference with its check symbol),
  a PNG that zbarimg decodes to the same payload, SVG, expiry → a new payload.
"""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sen_billing.domain import invoices, pricing, vietqr
from sen_billing.worker import CONSULT_CHARGE, consult_charge
from sen_shared.auth import issue_dev_token
from sen_shared.bus.catalog import event_type, load_catalog
from sen_shared.bus.outbox import entry_event
from sen_shared.fhir.store import Store

from tests.billing_support import billing_app, delivered, hand_invoice
from tests.support import ROOT

pytestmark = pytest.mark.integration

FHIR = "application/fhir+json"
EXAMPLE = json.loads((ROOT / "specs/events/examples/teleconsult.consult.completed.json").read_text(encoding="utf-8"))
BANK = {"SEN_BANK_BIN": "970436", "SEN_BANK_ACCOUNT": "0011001234567", "SEN_BANK_ACCOUNT_NAME": "BENH VIEN DEMO",
        "SEN_FACILITY_LEVELS": json.dumps({"org-prov": "province"})}


@pytest.fixture()
def billing(base_env: dict[str, str], mongo_client, monkeypatch: pytest.MonkeyPatch):
    with billing_app(base_env, mongo_client, monkeypatch, "i", BANK) as (client, db):
        yield client, db


def token(dev_key: Path, role: str, facility: str | None = None) -> dict[str, str]:
    claims = {"facility": facility} if facility else {}
    tok = issue_dev_token(dev_key, role, sub=f"{role}-{uuid.uuid4().hex[:6]}", **claims)
    return {"Authorization": f"Bearer {tok}", "Content-Type": FHIR, "Accept": FHIR}


def completed(sr: str, patient: str, clinic: str = "org-a") -> dict:
    event = copy.deepcopy(EXAMPLE)
    event["id"] = str(uuid.uuid4())
    event["subject"] = f"ServiceRequest/{sr}"
    event["data"].update(serviceRequest=f"ServiceRequest/{sr}", patient=patient, requester=f"Organization/{clinic}")
    return event


def requested(sr: str, specialty: str) -> dict:
    return {"id": str(uuid.uuid4()), "type": event_type("teleconsult.consult.requested"),
            "data": {"serviceRequest": f"ServiceRequest/{sr}", "specialty": specialty,
                     "requester": "Organization/org-a", "district": "Huyện Cao Lãnh"}}


def store(db) -> Store:
    return Store(db, service="billing", emit_events=False)


def record_card(client, headers, patient: str, card: str) -> None:
    cov = {"resourceType": "Coverage", "status": "active", "subscriberId": card,
           "identifier": [{"system": "https://fhir.sen.vn/sid/bhyt", "value": card}],
           "beneficiary": {"reference": patient}, "payor": [{"display": "Bảo hiểm xã hội Việt Nam"}]}
    r = client.post("/fhir/Coverage", json=cov, headers=headers)
    assert r.status_code == 201, r.text


# ----------------------------------------------------------------------------- the price list

def test_price_list_loads_once_and_keeps_an_admins_edit(billing, dev_key) -> None:
    client, db = billing
    count = len(pricing.read_file())
    assert store(db).current("ChargeItemDefinition").count_documents({}) == count
    admin = token(dev_key, "admin")
    r = client.get("/fhir/ChargeItemDefinition/consult-394579002-province", headers=admin)
    assert r.status_code == 200
    cid = r.json()
    assert pricing.price(cid) == 350_000
    cid["propertyGroup"][0]["priceComponent"][0]["amount"]["value"] = 380_000
    r = client.put("/fhir/ChargeItemDefinition/consult-394579002-province", json=cid, headers=admin)
    assert r.status_code == 200, r.text
    assert pricing.load(db) == 0  # a restart creates nothing and overwrites nothing
    r = client.get("/fhir/ChargeItemDefinition/consult-394579002-province/_history", headers=admin)
    versions = [e["resource"]["propertyGroup"][0]["priceComponent"][0]["amount"]["value"] for e in r.json()["entry"]]
    assert versions == [380_000, 350_000]


def test_saving_a_price_unchanged_makes_no_version_and_a_change_does(billing, dev_key) -> None:
    """A PUT of the entry as it stands (its meta as read, whoever saves it) answers 200 with the version in
    force, its ETag and resource, and writes nothing: no version, no history entry, the author kept. If-Match
    still decides first (another version: 412). A real change is the next version; saving that again is not."""
    client, db = billing
    url = "/fhir/ChargeItemDefinition/kham-benh"
    first = token(dev_key, "admin")
    current = client.get(url, headers=first).json()
    version = int(current["meta"]["versionId"])
    history = store(db).history("ChargeItemDefinition")
    kept = history.count_documents({})
    for headers in (first, {**first, "If-Match": f'W/"{version}"'}, token(dev_key, "admin")):
        r = client.put(url, json=current, headers=headers)
        assert r.status_code == 200, r.text
        assert r.headers["ETag"] == f'W/"{version}"' and r.json() == current
    assert history.count_documents({}) == kept
    assert client.get(url, headers=first).json() == current  # the file's version, naming no author
    r = client.put(url, json=current, headers={**first, "If-Match": f'W/"{version + 5}"'})
    assert r.status_code == 412, r.text
    changed = copy.deepcopy(current)
    changed["propertyGroup"][0]["priceComponent"][0]["amount"]["value"] = pricing.price(current) + 1000
    r = client.put(url, json=changed, headers={**first, "If-Match": f'W/"{version}"'})
    assert r.status_code == 200 and r.headers["ETag"] == f'W/"{version + 1}"', r.text
    again = r.json()
    r = client.put(url, json=again, headers={**token(dev_key, "admin"), "If-Match": f'W/"{version + 1}"'})
    assert r.status_code == 200 and r.headers["ETag"] == f'W/"{version + 1}"' and r.json() == again
    assert history.count_documents({}) == kept + 1
    entries = client.get(f"{url}/_history", headers=first).json()["entry"]
    assert [e["resource"]["meta"]["versionId"] for e in entries] == [str(version + 1), str(version)]


def test_every_price_version_names_its_author_from_the_token(billing, dev_key) -> None:
    """Billing writes who made each version its API is sent (the store records no author), from
    the caller's token, whatever the body claims; a patch's version names the patcher, not the one
    the patched version named; the price list file's versions name nobody."""
    client, _db = billing

    def who(res: dict) -> dict:
        stamps = [e for e in res.get("extension") or [] if e.get("url") == pricing.CHANGED_BY]
        assert len(stamps) <= 1
        return {e["url"]: e["valueString"] for e in stamps[0]["extension"]} if stamps else {}

    url = "/fhir/ChargeItemDefinition/kham-benh"
    loaded = client.get(url, headers=token(dev_key, "admin")).json()
    assert who(loaded) == {}  # from the file
    hoa = issue_dev_token(dev_key, "admin", sub="admin-hoa", name="Nguyễn Thị Hoa")
    headers = {"Authorization": f"Bearer {hoa}", "Content-Type": FHIR, "Accept": FHIR}
    forged = copy.deepcopy(loaded)
    forged["propertyGroup"][0]["priceComponent"][0]["amount"]["value"] = 41_000
    forged["extension"] = [*(forged.get("extension") or []), {"url": pricing.CHANGED_BY, "extension": [
        {"url": "name", "valueString": "Người khác"}, {"url": "user", "valueString": "someone-else"}]}]
    r = client.put(url, json=forged, headers=headers)
    assert r.status_code == 200, r.text
    assert who(r.json()) == {"name": "Nguyễn Thị Hoa", "user": "admin-hoa"}
    binh = issue_dev_token(dev_key, "admin", sub="admin-binh")  # a token without a name
    patch = [{"op": "replace", "path": "/propertyGroup/0/priceComponent/0/amount/value", "value": 42_000}]
    r = client.patch(url, json=patch, headers={"Authorization": f"Bearer {binh}", "Accept": FHIR,
                                               "Content-Type": "application/json-patch+json"})
    assert r.status_code == 200, r.text
    assert pricing.price(r.json()) == 42_000 and who(r.json()) == {"user": "admin-binh"}
    history = client.get(f"{url}/_history", headers=headers).json()["entry"]
    assert [who(e["resource"]).get("user") for e in history] == ["admin-binh", "admin-hoa", None]


@pytest.mark.parametrize("role", ["cashier", "doctor", "clinic", "health-dept"])
def test_only_admins_change_prices(billing, dev_key, role: str) -> None:
    client, _db = billing
    headers = token(dev_key, role, "org-a")
    r = client.get("/fhir/ChargeItemDefinition/kham-benh", headers=headers)
    assert r.status_code == 200  # everyone reads the price list
    cid = r.json()
    cid["propertyGroup"][0]["priceComponent"][0]["amount"]["value"] = 1
    assert client.put("/fhir/ChargeItemDefinition/kham-benh", json=cid, headers=headers).status_code == 403
    assert client.delete("/fhir/ChargeItemDefinition/kham-benh", headers=headers).status_code == 403
    new = {**cid, "id": None}
    new.pop("id")
    assert client.post("/fhir/ChargeItemDefinition", json=new, headers=headers).status_code == 403


def test_a_price_is_whole_dong(billing, dev_key) -> None:
    client, _db = billing
    admin = token(dev_key, "admin")
    cid = client.get("/fhir/ChargeItemDefinition/kham-benh", headers=admin).json()
    cid["propertyGroup"][0]["priceComponent"][0]["amount"] = {"value": 39000.5, "currency": "VND"}
    r = client.put("/fhir/ChargeItemDefinition/kham-benh", json=cid, headers=admin)
    assert r.status_code == 422 and r.json()["resourceType"] == "OperationOutcome"


# ----------------------------------------------------------------------------- the consult's charge

def _consult_outcome(db, sr: str) -> tuple[list, list, list]:
    charges = list(store(db).current("ChargeItem").find({}, {"_id": 1}))
    invs = list(store(db).current("Invoice").find({}, {"_id": 1}))
    links = list(db[invoices.STATES].find({}))
    return charges, invs, links


def test_consult_completed_five_times_makes_one_charge_and_one_invoice(billing) -> None:
    _client, db = billing
    sr = f"sr-{uuid.uuid4().hex[:8]}"
    consult_charge(requested(sr, "394579002"), db)
    for _ in range(5):
        consult_charge(completed(sr, "Patient/p-1"), db)  # each delivery a new event id
    charges, invs, links = _consult_outcome(db, sr)
    assert len(charges) == 1 and len(invs) == 1
    assert sorted(link["state"] for link in links) == ["draft", "issued"]
    inv_id = invs[0]["_id"]
    invoice = store(db).read_doc("Invoice", inv_id)
    assert invoice["res"]["status"] == "issued" and int(invoice["v"]) == 2  # draft, then issued
    assert invoice["res"]["totalGross"] == {"value": 250_000, "currency": "VND"}  # cardiology, district level
    issued = [e for link in links for e in link.get("outbox") or []]
    assert len(issued) == 1
    data = entry_event(issued[0])["data"]
    assert data["invoice"] == f"Invoice/{inv_id}" and data["consult"] == f"ServiceRequest/{sr}"
    assert data["total"] == 250_000 and data["patientShare"] == 250_000 and data["insurerShare"] == 0
    assert db[invoices.REFERENCES].find_one({"invoice": inv_id})["_id"] == vietqr.reference_code(inv_id)
    assert invoices.balance_due(db, inv_id) == 250_000


def test_consult_completed_five_times_at_once_makes_one_of_each(billing) -> None:
    _client, db = billing
    sr = f"sr-{uuid.uuid4().hex[:8]}"
    with ThreadPoolExecutor(5) as pool:  # a delivery refused (a draft claimed, not yet written) comes again
        list(pool.map(lambda _: delivered(completed(sr, "Patient/p-2"), db), range(5)))
    charges, invs, links = _consult_outcome(db, sr)
    assert len(charges) == 1 and len(invs) == 1
    assert sorted(link["state"] for link in links) == ["draft", "issued"]
    assert store(db).read_doc("Invoice", invs[0]["_id"])["res"]["status"] == "issued"


def test_a_crash_after_the_issued_link_is_rolled_forward_by_the_redelivery(billing) -> None:
    _client, db = billing
    sr = f"sr-{uuid.uuid4().hex[:8]}"
    event = completed(sr, "Patient/p-3")
    inv_id = invoices.derived_id("consult", "invoice", f"ServiceRequest/{sr}")
    real = invoices._roll_forward
    invoices._roll_forward = lambda *a, **k: (_ for _ in ()).throw(RuntimeError("crash"))
    try:
        with pytest.raises(RuntimeError):
            consult_charge(event, db)
    finally:
        invoices._roll_forward = real
    assert store(db).read_doc("Invoice", inv_id)["res"]["status"] == "draft"
    assert invoices.state(db, inv_id)["state"] == "issued"
    consult_charge(event, db)  # the broker redelivers
    assert store(db).read_doc("Invoice", inv_id)["res"]["status"] == "issued"
    assert db[invoices.STATES].count_documents({"k": inv_id}) == 2


def test_consult_price_follows_the_clinics_level(billing) -> None:
    _client, db = billing
    sr = f"sr-{uuid.uuid4().hex[:8]}"
    consult_charge(requested(sr, "394579002"), db)
    from sen_billing.config import BillingSettings

    settings = BillingSettings(_env_file=None, MONGO_URL="mongodb://x", AMQP_URL="amqp://x", SEN_DEV_JWT_KEY="k",
                               SEN_FACILITY_LEVELS={"org-prov": "province"})
    inv_id = invoices.charge_consult(db, completed(sr, "Patient/p-4", clinic="org-prov"),
                                     level_of=settings.level_of, base_salary=settings.base_salary)
    assert store(db).read_doc("Invoice", inv_id)["res"]["totalGross"]["value"] == 350_000
    # no specialty known: the general consult price at that level
    sr2 = f"sr-{uuid.uuid4().hex[:8]}"
    inv2 = invoices.charge_consult(db, completed(sr2, "Patient/p-4", clinic="org-prov"),
                                   level_of=settings.level_of, base_salary=settings.base_salary)
    assert store(db).read_doc("Invoice", inv2)["res"]["totalGross"]["value"] == 200_000



def test_a_commune_clinics_consult_is_priced_by_its_specialty(billing) -> None:
    """A commune clinic's cardiology consult is priced at the commune cardiology price (before, the price list
    had no commune-level specialty prices: consult-any-commune, 100.000 ₫, whatever the specialty); a specialty
    the list has no commune price for still falls back to consult-any-commune. The shipped list prices each of
    its specialties at every level, the commune's between consult-any-commune and the district's."""
    _client, db = billing
    from sen_billing.config import BillingSettings

    settings = BillingSettings(_env_file=None, MONGO_URL="mongodb://x", AMQP_URL="amqp://x", SEN_DEV_JWT_KEY="k",
                               SEN_FACILITY_LEVELS={"tram-y-te-xa": "commune"})
    totals = []
    for specialty in ("394579002", "394585009"):  # cardiology; obstetrics and gynaecology: no price of its own
        sr = f"sr-{uuid.uuid4().hex[:8]}"
        consult_charge(requested(sr, specialty), db)
        inv = invoices.charge_consult(db, completed(sr, "Patient/p-5", clinic="tram-y-te-xa"),
                                      level_of=settings.level_of, base_salary=settings.base_salary)
        invoice = store(db).read_doc("Invoice", inv)["res"]
        totals.append(invoice["totalGross"]["value"])
    assert totals == [170_000, 100_000]
    prices = {d["id"]: pricing.price(d) for d in pricing.read_file()}
    specialties = {i.split("-")[1] for i in prices if i.startswith("consult-") and not i.startswith("consult-any-")}
    for code in specialties:
        assert prices["consult-any-commune"] <= prices[f"consult-{code}-commune"] <= prices[f"consult-{code}-district"]


# ----------------------------------------------------------------------------- BHYT

def _shares(invoice: dict) -> tuple[int, int, int]:
    ext = {e["url"].rsplit("/", 1)[-1]: e for e in invoice["extension"]}
    return (invoice["totalGross"]["value"], ext["insurer-share"]["valueMoney"]["value"],
            ext["patient-share"]["valueMoney"]["value"])


@pytest.mark.parametrize(("card", "shares"), [
    ("DN4010123456789", (450_000, 360_000, 90_000)),     # 80 %
    ("HT3878701234567", (450_000, 427_500, 22_500)),     # 95 %
    ("TE1010123456789", (450_000, 450_000, 0)),          # 100 %
    (None, (450_000, 0, 450_000)),                       # no card
])
def test_bhyt_split_on_the_invoice(billing, dev_key, card: str | None, shares: tuple[int, int, int]) -> None:
    client, db = billing
    patient = f"Patient/p-{uuid.uuid4().hex[:6]}"
    cashier = token(dev_key, "cashier", "org-a")
    if card:
        record_card(client, cashier, patient, card)
    sr = f"sr-{uuid.uuid4().hex[:8]}"
    consult_charge(requested(sr, "394583002"), db)
    inv_id = invoices.charge_consult(db, completed(sr, patient), level_of=lambda _f: "central",
                                     base_salary=2_340_000)
    r = client.get(f"/fhir/Invoice/{inv_id}", headers=cashier)
    assert r.status_code == 200
    invoice = r.json()
    assert _shares(invoice) == shares
    assert invoice["totalNet"]["value"] == shares[2]  # what the patient owes
    line = invoice["lineItem"][0]["priceComponent"]
    assert [pc["type"] for pc in line] == ["base", "deduction", "informational"]
    assert [pc["amount"]["value"] for pc in line] == list(shares)
    assert invoices.balance_due(db, inv_id) == shares[2]


def test_bhyt_under_the_threshold_is_covered_in_full(billing, dev_key) -> None:
    client, db = billing
    patient = f"Patient/p-{uuid.uuid4().hex[:6]}"
    cashier = token(dev_key, "cashier", "org-a")
    record_card(client, cashier, patient, "DN4010123456789")  # 80 %
    sr = f"sr-{uuid.uuid4().hex[:8]}"
    consult_charge(requested(sr, "394579002"), db)
    inv_id = invoices.charge_consult(db, completed(sr, patient), level_of=lambda _f: "district",
                                     base_salary=2_340_000)  # 250,000 < 351,000
    invoice = store(db).read_doc("Invoice", inv_id)["res"]
    assert _shares(invoice) == (250_000, 250_000, 0)
    applied = {e["url"].rsplit("/", 1)[-1]: e for e in invoice["extension"]}["bhyt-applied-percent"]
    assert applied["valueUnsignedInt"] == 100


# ----------------------------------------------------------------------------- cashiers

def _hand_invoice(client, headers, patient: str, services: list[str]) -> str:
    iid, items = hand_invoice(client, headers, patient, services,
                              totalNet={"value": 1, "currency": "VND"})  # the body's amounts are ignored
    again = client.post("/fhir/Invoice", headers=headers, json={
        "resourceType": "Invoice", "status": "draft", "subject": {"reference": patient},
        "lineItem": [{"chargeItemReference": {"reference": f"ChargeItem/{i}"}} for i in reversed(items)]})
    assert again.status_code == 200 and again.json()["id"] == iid  # a retry: the same invoice
    return iid


def test_cashier_charges_by_hand_and_sees_their_facility_only(billing, dev_key) -> None:
    client, db = billing
    a, b = token(dev_key, "cashier", "org-a"), token(dev_key, "cashier", "org-b")
    patient = f"Patient/p-{uuid.uuid4().hex[:6]}"
    inv_id = _hand_invoice(client, a, patient, ["kham-benh", "xn-cong-thuc-mau", "ban-sao-ho-so"])
    invoice = client.get(f"/fhir/Invoice/{inv_id}", headers=a).json()
    assert invoice["status"] == "draft" and invoice["issuer"]["reference"] == "Organization/org-a"
    assert invoice["totalGross"]["value"] == 39_000 + 46_000 + 20_000
    assert invoice["totalNet"]["value"] == 105_000  # no card
    # the other facility's cashier: as if it did not exist (test_billing_hides_other_facilities)
    assert client.get(f"/fhir/Invoice/{inv_id}", headers=b).status_code == 404
    assert client.get(f"/fhir/Invoice/{inv_id}/_history", headers=b).status_code == 404
    assert client.post(f"/fhir/Invoice/{inv_id}/$issue", headers=b).status_code == 404
    assert client.get(f"/fhir/Invoice/{inv_id}/$vietqr", headers=b).status_code == 404
    found = client.get(f"/fhir/Invoice?subject={patient}", headers=b).json()
    assert not [e for e in found.get("entry", []) if e["search"]["mode"] == "match"]
    found = client.get(f"/fhir/ChargeItem?subject={patient}", headers=b).json()
    assert not [e for e in found.get("entry", []) if e["search"]["mode"] == "match"]
    mine = client.get(f"/fhir/ChargeItem?subject={patient}", headers=a).json()
    assert len([e for e in mine["entry"] if e["search"]["mode"] == "match"]) == 3
    # writing for another facility, or naming a price, is refused
    r = client.post("/fhir/ChargeItem", headers=b, json={
        "resourceType": "ChargeItem", "status": "billable", "code": {"text": "x"}, "subject": {"reference": patient},
        "performingOrganization": {"reference": "Organization/org-a"},
        "definitionCanonical": ["ChargeItemDefinition/kham-benh"]})
    assert r.status_code == 403
    r = client.post("/fhir/ChargeItem", headers=a, json={
        "resourceType": "ChargeItem", "status": "billable", "code": {"text": "x"}, "subject": {"reference": patient},
        "definitionCanonical": ["ChargeItemDefinition/kham-benh"], "priceOverride": {"value": 1, "currency": "VND"}})
    assert r.status_code == 422
    # the lifecycle goes through the operations
    assert client.put(f"/fhir/Invoice/{inv_id}", json={**invoice, "status": "balanced"}, headers=a).status_code == 405
    r = client.post(f"/fhir/Invoice/{inv_id}/$issue", headers=a)
    assert r.status_code == 200 and r.json()["status"] == "issued"
    assert client.post(f"/fhir/Invoice/{inv_id}/$issue", headers=a).json()["status"] == "issued"
    assert db[invoices.STATES].count_documents({"k": inv_id}) == 2
    # a doctor reads no invoices
    assert client.get(f"/fhir/Invoice/{inv_id}", headers=token(dev_key, "doctor", "org-a")).status_code == 403


def test_cancel_needs_a_reason_and_no_payment(billing, dev_key) -> None:
    client, db = billing
    a = token(dev_key, "cashier", "org-a")
    inv_id = _hand_invoice(client, a, "Patient/p-c", ["kham-benh"])
    client.post(f"/fhir/Invoice/{inv_id}/$issue", headers=a)
    assert client.post(f"/fhir/Invoice/{inv_id}/$cancel", headers=a, json={
        "resourceType": "Parameters", "parameter": []}).status_code == 422
    r = client.post(f"/fhir/Invoice/{inv_id}/$cancel", headers=a, json={
        "resourceType": "Parameters", "parameter": [{"name": "reason", "valueString": "Nhập nhầm dịch vụ"}]})
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    assert r.json()["cancelledReason"] == "Nhập nhầm dịch vụ"
    assert client.post(f"/fhir/Invoice/{inv_id}/$issue", headers=a).status_code == 409
    assert client.get(f"/fhir/Invoice/{inv_id}/$vietqr", headers=a).status_code == 409
    # an invoice with a payment counted is not cancelled
    paid = _hand_invoice(client, a, "Patient/p-d", ["kham-benh"])
    client.post(f"/fhir/Invoice/{paid}/$issue", headers=a)
    db[invoices.PAYMENTS].insert_one({"_id": f"test:{paid}", "invoice": paid, "amount": 10_000, "channel": "cash"})
    assert invoices.balance_due(db, paid) == 29_000  # partial payment leaves a balance
    r = client.post(f"/fhir/Invoice/{paid}/$cancel", headers=a, json={
        "resourceType": "Parameters", "parameter": [{"name": "reason", "valueString": "x"}]})
    assert r.status_code == 409


# ----------------------------------------------------------------------------- VietQR

def test_vietqr_json_png_svg_and_expiry(billing, dev_key) -> None:
    client, db = billing
    a = token(dev_key, "cashier", "org-a")
    inv_id = _hand_invoice(client, a, "Patient/p-q", ["kham-benh", "dien-tim"])
    assert client.get(f"/fhir/Invoice/{inv_id}/$vietqr", headers=a).status_code == 409  # a draft has no QR
    client.post(f"/fhir/Invoice/{inv_id}/$issue", headers=a)
    r = client.get(f"/fhir/Invoice/{inv_id}/$vietqr", headers=a)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["amount"] == 74_000 and body["amountText"] == "74.000 ₫"
    assert body["reference"] == vietqr.reference_code(inv_id)
    assert vietqr.normalize_reference(f"chuyen khoan {body['reference'].lower()}") == body["reference"]
    parsed = vietqr.parse(body["payload"])
    assert (parsed.bin, parsed.account, parsed.amount, parsed.reference) == \
        ("970436", "0011001234567", 74_000, body["reference"])
    again = client.get(f"/fhir/Invoice/{inv_id}/$vietqr", headers=a).json()
    assert again["payload"] == body["payload"] and again["expiresAt"] == body["expiresAt"]  # the same, unexpired
    # a partial payment: a new payload for what is left
    db[invoices.PAYMENTS].insert_one({"_id": f"test:{inv_id}", "invoice": inv_id, "amount": 4_000, "channel": "cash"})
    left = client.get(f"/fhir/Invoice/{inv_id}/$vietqr", headers=a).json()
    assert left["amount"] == 70_000 and vietqr.parse(left["payload"]).amount == 70_000
    # expiry: later than the lifetime, a new one is issued (the old one is kept)
    bank = invoices.Bank("970436", "0011001234567")
    later = datetime.now(UTC) + timedelta(hours=1)
    renewed = invoices.current_qr(db, inv_id, bank, timedelta(minutes=15), now=later)
    assert renewed["n"] == 3 and renewed["expires"] > later
    assert db[invoices.QR_CODES].count_documents({"k": inv_id}) == 3
    svg = client.get(f"/fhir/Invoice/{inv_id}/$vietqr?_format=svg", headers=a)
    assert svg.status_code == 200 and svg.headers["content-type"].startswith("image/svg+xml")
    assert b"<svg" in svg.content
    png = client.get(f"/fhir/Invoice/{inv_id}/$vietqr?_format=png", headers=a)
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    assert png.content[:8] == b"\x89PNG\r\n\x1a\n"
    if shutil.which("zbarimg"):  # a real decoder reads back what the JSON answer says
        served = client.get(f"/fhir/Invoice/{inv_id}/$vietqr", headers=a).json()["payload"]
        path = Path(f"/tmp/sen-qr-{uuid.uuid4().hex}.png")
        path.write_bytes(png.content)
        try:
            out = subprocess.run(["zbarimg", "--raw", "-q", str(path)], capture_output=True, timeout=30, check=True)
        finally:
            path.unlink()
        assert out.stdout.decode().rstrip("\n") == served
    assert client.get(f"/fhir/Invoice/{inv_id}/$vietqr?_format=gif", headers=a).status_code == 406


def test_no_bank_account_is_503(base_env, mongo_client, monkeypatch, dev_key) -> None:
    with billing_app(base_env, mongo_client, monkeypatch, "i") as (client, _db):
        a = token(dev_key, "cashier", "org-a")
        inv_id = _hand_invoice(client, a, "Patient/p-n", ["kham-benh"])
        client.post(f"/fhir/Invoice/{inv_id}/$issue", headers=a)
        r = client.get(f"/fhir/Invoice/{inv_id}/$vietqr", headers=a)
        assert r.status_code == 503 and r.json()["resourceType"] == "OperationOutcome"


# ----------------------------------------------------------------------------- through the bus

def test_consult_completed_five_times_on_the_bus(base_env, mongo_client, tmp_path) -> None:
    """The real worker process on RabbitMQ: the same consult's event published 5 times (the same
    event id twice, as a redelivery, and three new ids) makes one charge and one issued invoice."""
    import os
    import subprocess
    import sys

    from sen_shared.bus.publisher import Publisher

    from tests.support import wait_for

    db_name = f"sen_billing_b{uuid.uuid4().hex[:8]}"
    env = {**os.environ, **base_env, **BANK, "SEN_DB": db_name}
    subprocess.run([sys.executable, "-m", "sen_billing.indexes"], env=env, cwd=ROOT, check=True, timeout=300,
                   capture_output=True)
    log = tmp_path / "billing-worker.log"  # its JSON lines: the consumer logs each delivery it has handled
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "sen_billing.worker"], env={**env, "LOG_LEVEL": "INFO"},
                                cwd=ROOT, stdout=subprocess.DEVNULL, stderr=out)
    db = mongo_client[db_name]
    try:
        wait_for(lambda: db["ChargeItemDefinition"].count_documents({}) > 0, timeout=60)  # price list loaded
        sr = f"sr-{uuid.uuid4().hex[:8]}"
        first = completed(sr, "Patient/p-bus")
        events = [first, first] + [completed(sr, "Patient/p-bus") for _ in range(3)]
        with Publisher(base_env["AMQP_URL"], prefix=base_env["SEN_BUS_PREFIX"]) as publisher:
            publisher.declare()
            for event in events:
                publisher.publish(event)
        inv_id = invoices.derived_id("consult", "invoice", f"ServiceRequest/{sr}")
        ids = {e["id"] for e in events}

        def handled() -> int:  # the deliveries of ``events`` the charge's consumer has handled (and acked)
            written = log.read_text(errors="replace").split("\n")[:-1]  # whole lines only
            lines = (json.loads(line) for line in written if line.startswith("{"))
            return sum(1 for line in lines if line.get("message") == "event handled" and line.get("event_id") in ids
                       and str(line.get("queue", "")).endswith(CONSULT_CHARGE))

        wait_for(lambda: handled() == 5, timeout=60)  # every delivery handled: a second charge would be stored by now
        assert store(db).current("ChargeItem").count_documents({}) == 1
        assert store(db).current("Invoice").count_documents({}) == 1
        assert store(db).read_doc("Invoice", inv_id)["res"]["status"] == "issued"
        assert db[invoices.STATES].count_documents({"k": inv_id}) == 2
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        mongo_client.drop_database(db_name)


def test_a_cashier_finds_issued_invoices_by_several_patients_or_by_reference(billing, dev_key) -> None:
    """What the portal's invoice search asks: ``Invoice?status=issued&subject=Patient/a,Patient/b``
    (the patients a name search found in the EHR) and ``identifier=<reference system>|HD...``;
    the cashier's facility only."""
    client, _db = billing
    a, b = token(dev_key, "cashier", "org-a"), token(dev_key, "cashier", "org-b")
    p1, p2, p3 = (f"Patient/p-{uuid.uuid4().hex[:6]}" for _ in range(3))
    issued = {}
    for p in (p1, p2):
        iid = _hand_invoice(client, a, p, ["kham-benh"])
        issued[p] = client.post(f"/fhir/Invoice/{iid}/$issue", headers=a).json()
    _hand_invoice(client, a, p3, ["kham-benh"])  # a draft: not awaiting payment

    def ids(params: dict, headers: dict) -> set[str]:
        r = client.get("/fhir/Invoice", params=params, headers=headers)
        assert r.status_code == 200, r.text
        return {e["resource"]["id"] for e in r.json().get("entry", []) if e["search"]["mode"] == "match"}

    subjects = {"status": "issued", "subject": f"{p1},{p2},{p3}"}
    assert ids(subjects, a) == {issued[p1]["id"], issued[p2]["id"]}
    assert ids(subjects, b) == set()  # another facility's cashier
    ref = next(i["value"] for i in issued[p2]["identifier"] if i["system"] == invoices.REFERENCE_SYSTEM)
    assert ids({"status": "issued", "identifier": f"{invoices.REFERENCE_SYSTEM}|{ref}"}, a) == {issued[p2]["id"]}


def test_a_patients_charges_not_yet_invoiced_are_found_from_the_invoices_claims(billing, dev_key) -> None:
    """``ChargeItem?subject=&invoiced=false``: billing's own parameter (fhir_server's docstring), read
    from the claims an Invoice create inserts; a cashier still sees their own facility's only."""
    client, db = billing
    a, b = token(dev_key, "cashier", "org-a"), token(dev_key, "cashier", "org-b")
    patient = f"Patient/p-{uuid.uuid4().hex[:6]}"
    on_invoice = _hand_invoice(client, a, patient, ["kham-benh"])
    loose = []
    for code, who in (("xn-cong-thuc-mau", a), ("ban-sao-ho-so", a), ("kham-benh", b)):
        r = client.post("/fhir/ChargeItem", headers=who, json={
            "resourceType": "ChargeItem", "status": "billable", "code": {"text": code},
            "subject": {"reference": patient}, "definitionCanonical": [f"ChargeItemDefinition/{code}"]})
        assert r.status_code == 201, r.text
        loose.append(r.json()["id"])

    def found(headers, **params) -> tuple[list[str], dict]:
        r = client.get("/fhir/ChargeItem", headers=headers, params={"subject": patient, **params})
        assert r.status_code == 200, r.text
        return sorted(e["resource"]["id"] for e in r.json().get("entry", []) if e["search"]["mode"] == "match"), \
            r.json()

    invoiced = client.get(f"/fhir/Invoice/{on_invoice}", headers=a).json()["lineItem"][0]
    invoiced_id = invoiced["chargeItemReference"]["reference"].split("/")[1]
    assert found(a, invoiced="false")[0] == sorted(loose[:2])
    assert found(a, invoiced="true")[0] == [invoiced_id]
    assert found(b, invoiced="false")[0] == [loose[2]]  # the other facility's cashier: their own only
    assert found(a)[0] == sorted([invoiced_id, *loose[:2]])  # without it: every charge, as before
    ids, bundle = found(a, invoiced="false", _count="1")  # the next page keeps the parameter
    nxt = next(link["url"] for link in bundle["link"] if link["relation"] == "next")
    assert "invoiced=false" in nxt and len(ids) == 1
    r = client.get(nxt[nxt.index("/fhir/"):], headers=a)
    assert [e["resource"]["id"] for e in r.json()["entry"]] == [i for i in sorted(loose[:2]) if i not in ids]
    # once on an invoice, a charge is invoiced
    r = client.post("/fhir/Invoice", headers=a, json={
        "resourceType": "Invoice", "status": "draft", "subject": {"reference": patient},
        "lineItem": [{"chargeItemReference": {"reference": f"ChargeItem/{loose[0]}"}}]})
    assert r.status_code == 201, r.text
    assert found(a, invoiced="false")[0] == [loose[1]]
    # no patient, or a value that is not true/false: 400 with an OperationOutcome
    for params in ({"invoiced": "false", "subject": None}, {"invoiced": "no"}, {"invoiced": ["true", "false"]}):
        query = {"subject": patient, **params}
        query = {k: v for k, v in query.items() if v is not None}
        r = client.get("/fhir/ChargeItem", headers=a, params=query)
        assert r.status_code == 400 and r.json()["resourceType"] == "OperationOutcome", (params, r.text)


# ----------------------------------------------------------------------------- the patient's name

def test_a_consult_event_naming_the_patient_gives_a_receipt_that_names_them(billing, dev_key) -> None:
    """``patientDisplay`` of ``teleconsult.consult.completed`` (the EHR's name at submission) names the
    patient on the ChargeItem and the Invoice (``subject.display``), so the receipt billing prints, as
    HTML and as the PDF the portal links to, names them; an older event without it names no one."""
    client, db = billing
    sr = f"sr-{uuid.uuid4().hex[:8]}"
    event = completed(sr, "Patient/p-named")
    event["data"]["patientDisplay"] = "Đặng Thị Thu Hà"
    load_catalog().validate(event)  # the event as teleconsult sends it is valid v1
    consult_charge(event, db)
    inv_id = invoices.derived_id("consult", "invoice", f"ServiceRequest/{sr}")
    invoice = store(db).read_doc("Invoice", inv_id)["res"]
    assert invoice["subject"] == {"reference": "Patient/p-named", "display": "Đặng Thị Thu Hà"}
    charge = store(db).read_doc("ChargeItem", invoices.derived_id("consult", "charge", f"ServiceRequest/{sr}"))["res"]
    assert charge["subject"] == {"reference": "Patient/p-named", "display": "Đặng Thị Thu Hà"}
    h = {"Authorization": f"Bearer {issue_dev_token(dev_key, 'cashier', facility='org-a', sub='thu-ngan')}"}
    assert client.post("/payments/shifts", json={"openingCash": 0}, headers=h).status_code == 201
    r = client.post("/payments/cash", json={"invoice": inv_id, "amount": invoices.balance_due(db, inv_id)}, headers=h)
    assert r.status_code == 201, r.text
    assert client.get(f"/payments/receipts/{inv_id}", headers=h).json()["patient"] == "Đặng Thị Thu Hà"
    page = client.get(f"/payments/receipts/{inv_id}/html", headers=h)
    assert page.status_code == 200 and "Đặng Thị Thu Hà" in page.text
    pdf = client.get(f"/payments/receipts/{inv_id}/pdf", headers=h)
    assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF")
    if shutil.which("pdftotext"):  # the PDF's own text, where poppler is installed (the PDF renders the HTML above)
        text = subprocess.run(["pdftotext", "-", "-"], input=pdf.content, capture_output=True, check=True).stdout
        assert "Đặng Thị Thu Hà" in " ".join(text.decode().split()), text.decode()
    # an event from before teleconsult named the patient: an invoice without a name, as before
    sr2 = f"sr-{uuid.uuid4().hex[:8]}"
    old = completed(sr2, "Patient/p-named")
    old["data"].pop("patientDisplay", None)
    consult_charge(old, db)
    unnamed = store(db).read_doc("Invoice", invoices.derived_id("consult", "invoice", f"ServiceRequest/{sr2}"))["res"]
    assert unnamed["subject"] == {"reference": "Patient/p-named"}


def test_a_hand_invoice_keeps_the_patients_name_it_was_given_and_nothing_else(billing, dev_key) -> None:
    """``POST /fhir/Invoice``: ``subject.display`` (the name the cashier's page read from the EHR) is
    kept, as one line; a name past 200 characters is 422; the body's amounts are still ignored."""
    client, db = billing
    a = token(dev_key, "cashier", "org-a")
    patient = f"Patient/p-{uuid.uuid4().hex[:6]}"
    r = client.post("/fhir/ChargeItem", headers=a, json={
        "resourceType": "ChargeItem", "status": "billable", "code": {"text": "kham-benh"},
        "subject": {"reference": patient}, "definitionCanonical": ["ChargeItemDefinition/kham-benh"]})
    assert r.status_code == 201, r.text
    line = [{"chargeItemReference": {"reference": f"ChargeItem/{r.json()['id']}"}}]
    too_long = client.post("/fhir/Invoice", headers=a, json={
        "resourceType": "Invoice", "status": "draft", "subject": {"reference": patient, "display": "A" * 201},
        "lineItem": line})
    assert too_long.status_code == 422 and too_long.json()["resourceType"] == "OperationOutcome"
    assert "Invoice.subject.display" in too_long.text
    r = client.post("/fhir/Invoice", headers=a, json={
        "resourceType": "Invoice", "status": "draft", "subject": {"reference": patient, "display": " Nguyễn  Thị Mai "},
        "lineItem": line, "totalNet": {"value": 1, "currency": "VND"}})
    assert r.status_code == 201, r.text
    invoice = client.get(f"/fhir/Invoice/{r.json()['id']}", headers=a).json()
    assert invoice["subject"] == {"reference": patient, "display": "Nguyễn Thị Mai"}
    assert invoice["totalNet"]["value"] == 39_000
