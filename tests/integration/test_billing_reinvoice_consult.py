"""An invoice made again of a cancelled invoice's charges (the cashier's BHYT card on a consult's issued
invoice: billing's $cancel, then a new Invoice of the same charges) is the consult's invoice still: it
carries the cancelled one's consult link, district and patient's name, its ``billing.invoice.issued``
names the consult, and the two invoices name each other (``invoice-replaces``, ``invoice-replaced-by``),
written once however many creates and issues of the new one race (threads, real FerretDB)."""

from __future__ import annotations

import json
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from sen_billing.domain import invoices
from sen_shared.bus.catalog import load_catalog
from sen_shared.bus.outbox import entry_event
from sen_shared.fhir.body import unpack
from sen_shared.fhir.store import Store

from tests.billing_support import billing_app, hand_invoice, in_the_claim_window
from tests.integration.test_billing_invoices import BANK, completed, record_card, token

pytestmark = pytest.mark.integration

SD = "https://sen.vn/fhir/StructureDefinition/"
# the facility's own district differs from the consult's: the consult's invoice stands for the consult's
DISTRICTS = {"SEN_FACILITY_DISTRICTS": json.dumps({"org-a": "Huyện Tháp Mười"}, ensure_ascii=False)}


@pytest.fixture()
def billing(base_env, mongo_client, monkeypatch):
    with billing_app(base_env, mongo_client, monkeypatch, "ri", {**BANK, **DISTRICTS}) as (client, db):
        yield client, db


def _ext(res: dict[str, Any], name: str) -> list[Any]:
    return [next(v for k, v in e.items() if k.startswith("value")) for e in res.get("extension") or []
            if e["url"] == SD + name]


def _issued(db, iid: str) -> list[dict[str, Any]]:
    return [entry_event(e) for link in db["invoice_states"].find({"k": iid, "state": "issued"})
            for e in link.get("outbox") or []]


def _consult_invoice(db, patient: str) -> tuple[str, str]:
    sr = f"sr-{uuid.uuid4().hex[:8]}"
    event = completed(sr, patient)
    event["data"].update(district="Huyện Cao Lãnh", patientDisplay="Lê Thị Hoa")
    iid = invoices.charge_consult(db, event, level_of=lambda _f: "commune", base_salary=2_340_000)
    return iid, f"ServiceRequest/{sr}"


def _read(db, iid: str) -> dict[str, Any]:
    return Store(db, service="billing", emit_events=False).read_doc("Invoice", iid)["res"]


def test_the_consults_invoice_made_again_by_hand_is_the_consults_and_both_name_each_other(billing, dev_key):
    client, db = billing
    cashier = token(dev_key, "cashier", "org-a")
    patient = f"Patient/p-{uuid.uuid4().hex[:6]}"
    iid, sr = _consult_invoice(db, patient)
    [charge] = invoices.charges_of(_read(db, iid))
    record_card(client, cashier, patient, "DN4797912345678")  # 80 %
    r = client.post(f"/fhir/Invoice/{iid}/$cancel", headers=cashier, json={
        "resourceType": "Parameters", "parameter": [{"name": "reason", "valueString": "Ghi thẻ BHYT"}]})
    assert r.status_code == 200, r.text
    # the charge invoiced again, as the portal's card step does (no name in the body: the old one's is kept)
    r = client.post("/fhir/Invoice", headers=cashier, json={
        "resourceType": "Invoice", "status": "draft", "subject": {"reference": patient},
        "lineItem": [{"chargeItemReference": {"reference": f"ChargeItem/{charge}"}}]})
    assert r.status_code == 201, r.text
    nid = r.json()["id"]
    r = client.post(f"/fhir/Invoice/{nid}/$issue", headers=cashier)
    assert r.status_code == 200, r.text
    new = client.get(f"/fhir/Invoice/{nid}", headers=cashier).json()
    old = client.get(f"/fhir/Invoice/{iid}", headers=cashier).json()
    assert old["status"] == "cancelled"
    for res in (old, new):
        assert _ext(res, "consult") == [{"reference": sr}]
        assert _ext(res, "district") == ["Huyện Cao Lãnh"]  # the consult's, not the facility's setting
    for field in ("subject", "issuer", "account", "type"):
        assert new[field] == old[field], field
    assert _ext(new, "invoice-replaces") == [{"reference": f"Invoice/{iid}"}]
    assert _ext(old, "invoice-replaced-by") == [{"reference": f"Invoice/{nid}"}]
    assert _ext(new, "bhyt-benefit-level") == [80]
    [first], [again] = _issued(db, iid), _issued(db, nid)
    for event in (first, again):
        load_catalog().validate(event)
    assert first["data"]["consult"] == again["data"]["consult"] == sr
    assert first["data"]["district"] == again["data"]["district"] == "Huyện Cao Lãnh"
    assert again["data"]["replaces"] == f"Invoice/{iid}" and "replaces" not in first["data"]
    # the consult's event again changes nothing: the cancelled invoice stays cancelled, the new one stands
    event = completed(sr.removeprefix("ServiceRequest/"), patient)
    assert invoices.charge_consult(db, event, level_of=lambda _f: "commune", base_salary=2_340_000) == iid
    assert invoices.state(db, iid)["state"] == "cancelled" and len(_issued(db, nid)) == 1


def test_a_hand_invoice_of_fresh_charges_replaces_nothing_and_names_no_consult(billing, dev_key):
    client, db = billing
    cashier = token(dev_key, "cashier", "org-a")
    iid, _ = hand_invoice(client, cashier, f"Patient/p-{uuid.uuid4().hex[:6]}", ["sieu-am-bung"])
    r = client.post(f"/fhir/Invoice/{iid}/$issue", headers=cashier)
    res = r.json()
    assert not _ext(res, "invoice-replaces") and not _ext(res, "consult")
    assert _ext(res, "district") == ["Huyện Tháp Mười"]  # the facility's, as before
    [event] = _issued(db, iid)
    assert "consult" not in event["data"] and "replaces" not in event["data"]


@pytest.mark.parametrize("round_", range(3))
def test_creates_and_issues_racing_name_the_replacement_once(billing, round_):
    """Six threads make and issue the new invoice of a cancelled consult invoice's charge at once (the
    portal's tabs, retries): one new invoice, one ``invoice-replaced-by`` on the cancelled one, one
    issued event naming the consult."""
    _client, db = billing
    patient = f"Patient/p-{uuid.uuid4().hex[:6]}"
    iid, sr = _consult_invoice(db, patient)
    invoices.cancel(db, iid, "Ghi thẻ BHYT")
    old = _read(db, iid)
    [charge] = invoices.charges_of(old)
    item = Store(db, service="billing", emit_events=False).read_doc("ChargeItem", charge)["res"]
    nid = invoices.next_invoice_id(db, invoices.derived_id("inv", patient, "org-a", charge))

    def make_and_issue(_n: int) -> str:
        for _ in range(5):  # a charge being invoiced meanwhile is a 409 to try again
            try:
                invoices.create_draft(db, nid, patient=patient, facility="org-a", items=[item],
                                      base_salary=2_340_000)
                return invoices.issue(db, nid)["status"]
            except invoices.InvoiceConflict:
                continue
        raise AssertionError("never made")

    with ThreadPoolExecutor(6) as pool:
        statuses = list(pool.map(make_and_issue, range(6)))
    assert set(statuses) <= {"issued", "balanced"}
    old, new = _read(db, iid), _read(db, nid)
    assert old["status"] == "cancelled"
    assert _ext(old, "invoice-replaced-by") == [{"reference": f"Invoice/{nid}"}]
    assert _ext(new, "invoice-replaces") == [{"reference": f"Invoice/{iid}"}]
    assert _ext(new, "consult") == [{"reference": sr}] and new["subject"].get("display") == "Lê Thị Hoa"
    [event] = _issued(db, nid)
    assert event["data"]["consult"] == sr and event["data"]["replaces"] == f"Invoice/{iid}"
    # its versions: draft, issued, cancelled, then the one naming its replacement, written once
    history = Store(db, service="billing", emit_events=False).history("Invoice").find({"id": iid})
    versions = [unpack(h)["res"] for h in sorted(history, key=lambda h: h["v"])]
    assert [v["status"] for v in versions] == ["draft", "issued", "cancelled", "cancelled"]
    assert sum(bool(_ext(v, "invoice-replaced-by")) for v in versions) == 1


def test_a_create_that_lost_to_one_still_writing_its_draft_is_issued_at_once(billing, monkeypatch):
    """The interleaving the race above can meet under load (a round failed once while machines were loaded): one
    create of the new invoice has claimed its version 1, its current document not written yet; a twin
    create (another tab, a retry) loses that claim, answers the draft, and its issue follows. The issue
    finds the invoice (the twin made the claimed version current: an insert of the same document under
    the same id) and issues it; the first create's write after it changes nothing. Before, the issue read
    no current document and answered 404 for an invoice its create had just answered."""
    _client, db = billing
    patient = f"Patient/p-{uuid.uuid4().hex[:6]}"
    iid, _sr = _consult_invoice(db, patient)
    invoices.cancel(db, iid, "Ghi thẻ BHYT")
    [charge] = invoices.charges_of(_read(db, iid))
    item = Store(db, service="billing", emit_events=False).read_doc("ChargeItem", charge)["res"]
    nid = invoices.next_invoice_id(db, invoices.derived_id("inv", patient, "org-a", charge))

    def make() -> dict:
        return invoices.create_draft(db, nid, patient=patient, facility="org-a", items=[item], base_salary=2_340_000)

    # the first create holds version 1 claimed, its current write not made: the twin and the issue run then
    _, inside = in_the_claim_window(monkeypatch, db, nid, 1, make, twin=make, issued=lambda: invoices.issue(db, nid))
    assert inside["current"] is None  # the window was forced: version 1 claimed, not current
    assert not [v for v in inside.values() if isinstance(v, Exception)], inside
    assert inside["twin"]["status"] == "draft" and inside["issued"]["status"] == "issued"
    new = _read(db, nid)
    assert new["status"] == "issued" and new["meta"]["versionId"] == "2"  # the first create's write came after
    assert _ext(_read(db, iid), "invoice-replaced-by") == [{"reference": f"Invoice/{nid}"}]
    assert len(_issued(db, nid)) == 1
