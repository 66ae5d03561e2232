"""A cancelled invoice gives its charges back (billing on the real FerretDB).

- a cashier cancels an issued invoice: ``ChargeItem?subject=&invoiced=false`` lists its charges
  again, an Invoice create of the same charges makes a NEW invoice (issued), the cancelled one
  keeps its lines; cancelling again is fine; an admin may then delete a charge it gave back;
- a cancel that stopped between its link and its release is finished by cancelling again, or by
  the next draft that finds the charge held by a cancelled invoice;
- 10 drafts at once for the same released charge: exactly one takes it, the others are 409; and
  drafts racing the cancels (several at once) of the charge's invoice: never two live invoices
  holding it, and a draft that lost (409) succeeds when retried after the cancel; every cancel
  answers 'cancelled', also one clicked again while the first one's cancelled version is claimed and
  not yet current (the interleaving forced through the store's ``after_claim``);
- ``teleconsult.consult.completed`` arriving again after its invoice was cancelled and its charge
  invoiced again by hand: nothing is taken again, nothing raised for the bus to retry;
- a claim written before the claims became a chain (``{_id: <charge>, invoice}``) still holds.
"""

from __future__ import annotations

import copy
import json
import threading
import uuid
from pathlib import Path

import pytest
from sen_billing import worker
from sen_billing.domain import charge_claims, invoices
from sen_shared.auth import issue_dev_token
from sen_shared.claims import CHAIN_SEQ, advance
from sen_shared.fhir.store import Store

from tests.billing_support import billing_app, in_the_claim_window
from tests.support import ROOT

pytestmark = pytest.mark.integration

FHIR = "application/fhir+json"
EXAMPLE = json.loads((ROOT / "specs/events/examples/teleconsult.consult.completed.json").read_text(encoding="utf-8"))
REASON = {"resourceType": "Parameters", "parameter": [{"name": "reason", "valueString": "Sai thẻ BHYT"}]}


@pytest.fixture()
def billing(base_env: dict[str, str], mongo_client, monkeypatch: pytest.MonkeyPatch):
    with billing_app(base_env, mongo_client, monkeypatch, "x") as pair:
        yield pair


def token(dev_key: Path, role: str, facility: str | None = "org-a") -> dict[str, str]:
    claims = {"facility": facility} if facility else {}
    tok = issue_dev_token(dev_key, role, sub=f"{role}-{uuid.uuid4().hex[:6]}", **claims)
    return {"Authorization": f"Bearer {tok}", "Content-Type": FHIR, "Accept": FHIR}


def charge(client, headers, patient: str, code: str = "kham-benh") -> str:
    r = client.post("/fhir/ChargeItem", headers=headers, json={
        "resourceType": "ChargeItem", "status": "billable", "code": {"text": code},
        "subject": {"reference": patient}, "definitionCanonical": [f"ChargeItemDefinition/{code}"]})
    assert r.status_code == 201, r.text
    return r.json()["id"]


def create_invoice(client, headers, patient: str, charges: list[str]):
    return client.post("/fhir/Invoice", headers=headers, json={
        "resourceType": "Invoice", "status": "draft", "subject": {"reference": patient},
        "lineItem": [{"chargeItemReference": {"reference": f"ChargeItem/{c}"}} for c in charges]})


def not_invoiced(client, headers, patient: str) -> list[str]:
    r = client.get("/fhir/ChargeItem", headers=headers, params={"subject": patient, "invoiced": "false"})
    assert r.status_code == 200, r.text
    return sorted(e["resource"]["id"] for e in r.json().get("entry", []) if e["search"]["mode"] == "match")


def line_charges(invoice: dict) -> list[str]:
    return sorted(li["chargeItemReference"]["reference"].split("/")[1] for li in invoice["lineItem"])


def test_a_cancelled_invoices_charges_go_on_a_new_invoice(billing, dev_key) -> None:
    client, db = billing
    a = token(dev_key, "cashier")
    patient = f"Patient/p-{uuid.uuid4().hex[:6]}"
    charges = sorted([charge(client, a, patient), charge(client, a, patient, "xn-cong-thuc-mau")])
    r = create_invoice(client, a, patient, charges)
    assert r.status_code == 201, r.text
    old = r.json()["id"]
    assert client.post(f"/fhir/Invoice/{old}/$issue", headers=a).json()["status"] == "issued"
    assert not_invoiced(client, a, patient) == []
    assert create_invoice(client, a, patient, charges[:1]).status_code == 409  # on a live invoice

    r = client.post(f"/fhir/Invoice/{old}/$cancel", headers=a, json=REASON)
    assert r.status_code == 200 and r.json()["status"] == "cancelled", r.text
    assert not_invoiced(client, a, patient) == charges  # given back
    again = client.post(f"/fhir/Invoice/{old}/$cancel", headers=a, json=REASON)  # twice is fine
    assert again.status_code == 200 and again.json()["status"] == "cancelled"
    assert not_invoiced(client, a, patient) == charges

    # the same services on a new invoice: a new id, issued
    r = create_invoice(client, a, patient, charges)
    assert r.status_code == 201, r.text
    new = r.json()["id"]
    assert new != old and line_charges(r.json()) == charges
    assert client.post(f"/fhir/Invoice/{new}/$issue", headers=a).json()["status"] == "issued"
    retry = create_invoice(client, a, patient, list(reversed(charges)))  # a retried create finds it
    assert retry.status_code == 200 and retry.json()["id"] == new
    assert not_invoiced(client, a, patient) == []
    assert {c: charge_claims.holder(db, c) for c in charges} == dict.fromkeys(charges, new)
    # the old one is still cancelled with its lines; cancelling it again gives back nothing of the new one's
    cancelled = client.get(f"/fhir/Invoice/{old}", headers=a).json()
    assert cancelled["status"] == "cancelled" and line_charges(cancelled) == charges
    assert client.post(f"/fhir/Invoice/{old}/$cancel", headers=a, json=REASON).status_code == 200
    assert not_invoiced(client, a, patient) == [] and charge_claims.holder(db, charges[0]) == new
    assert create_invoice(client, a, patient, charges[:1]).status_code == 409
    extra = charge(client, a, patient)  # with a charge a live invoice holds: refused, the other not taken
    assert create_invoice(client, a, patient, [extra, charges[0]]).status_code == 409
    assert not_invoiced(client, a, patient) == [extra] and charge_claims.holder(db, extra) is None

    # an admin deletes a charge only once its invoice gave it back
    admin = token(dev_key, "admin", None)
    assert client.delete(f"/fhir/ChargeItem/{charges[0]}", headers=admin).status_code == 409
    assert client.post(f"/fhir/Invoice/{new}/$cancel", headers=a, json=REASON).status_code == 200
    assert client.delete(f"/fhir/ChargeItem/{charges[0]}", headers=admin).status_code in (200, 204)
    assert not_invoiced(client, a, patient) == sorted([extra, *charges[1:]])


def test_a_cancel_that_stopped_before_its_release_is_finished(billing, dev_key) -> None:
    """The cancelled link won, then the process stopped: cancelling again releases the charges,
    and so does the next draft that finds a charge held by the cancelled invoice."""
    client, db = billing
    a = token(dev_key, "cashier")
    patient = f"Patient/p-{uuid.uuid4().hex[:6]}"
    first, second = charge(client, a, patient), charge(client, a, patient)
    stopped = []
    for charges in ([first], [second]):
        iid = create_invoice(client, a, patient, charges).json()["id"]
        client.post(f"/fhir/Invoice/{iid}/$issue", headers=a)
        advance(db[invoices.STATES], iid, invoices.state(db, iid), {"state": "cancelled", "reason": "x"})
        stopped.append(iid)
    assert not_invoiced(client, a, patient) == []  # still held by the cancelled invoices
    r = client.post(f"/fhir/Invoice/{stopped[0]}/$cancel", headers=a, json=REASON)
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    assert not_invoiced(client, a, patient) == [first]
    r = create_invoice(client, a, patient, [second])  # its invoice's cancel never released it
    assert r.status_code == 201, r.text
    assert charge_claims.holder(db, second) == r.json()["id"] != stopped[1]


def _released_charge(db, patient: str) -> tuple[dict, str]:
    """A ChargeItem whose invoice was issued, then cancelled."""
    iid, _ = _issued(db, patient)
    invoices.cancel(db, iid, "nhập nhầm")
    item = Store(db, service="billing").read_doc("ChargeItem", f"ci-{iid}")["res"]
    assert charge_claims.holder(db, item["id"]) is None
    return item, iid


def _issued(db, patient: str) -> tuple[str, dict]:
    iid = "inv-" + uuid.uuid4().hex[:12]
    definition = {"title": "Khám bệnh", "code": {"text": "Khám bệnh"},
                  "propertyGroup": [{"priceComponent": [{"type": "base", "amount": invoices.money(39_000)}]}]}
    item = invoices.charge_item(patient=patient, facility="org-a", definition=definition)
    item = Store(db, service="billing", emit_events=False).create(item, f"ci-{iid}").resource
    invoices.create_draft(db, iid, patient=patient, facility="org-a", items=[item], base_salary=2_340_000)
    invoices.issue(db, iid)
    return iid, item


def _at_once(jobs: list) -> list:
    """Run the jobs in threads released together; each one's result or the exception it raised."""
    start = threading.Barrier(len(jobs))
    results: list = [None] * len(jobs)

    def run(i: int) -> None:
        start.wait()
        try:
            results[i] = jobs[i]()
        except Exception as err:  # noqa: BLE001 - the outcome is what the test counts
            results[i] = err

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def _draft(db, iid: str, patient: str, item: dict):
    return lambda: invoices.create_draft(db, iid, patient=patient, facility="org-a", items=[item],
                                         base_salary=2_340_000)


def test_ten_drafts_at_once_for_a_released_charge_one_takes_it(billing) -> None:
    _client, db = billing
    patient = f"Patient/p-{uuid.uuid4().hex[:6]}"
    item, _old = _released_charge(db, patient)
    ids = [f"inv-{uuid.uuid4().hex[:12]}" for _ in range(10)]
    results = _at_once([_draft(db, iid, patient, item) for iid in ids])
    won = [iid for iid, r in zip(ids, results, strict=True) if isinstance(r, dict)]
    lost = [r for r in results if not isinstance(r, dict)]
    assert len(won) == 1, results
    assert all(isinstance(r, invoices.InvoiceConflict) and r.status == 409 for r in lost), lost
    assert charge_claims.holder(db, item["id"]) == won[0]
    links = list(db[invoices.CHARGE_INVOICED].find({"k": item["id"]}))
    assert sorted(link["state"] for link in links) == ["invoiced", "invoiced", "released"]


@pytest.mark.parametrize("rounds", [6])
def test_drafts_racing_the_cancels_never_make_two_live_invoices(billing, rounds: int) -> None:
    """Each round: an issued invoice's cancel and two more cancels of it (a double click, a
    re-call) race six drafts of its charge under other ids. Afterwards at most one draft holds
    it, it is the holder, the others were 409; with no winner a retry now succeeds."""
    _client, db = billing
    for _ in range(rounds):
        patient = f"Patient/p-{uuid.uuid4().hex[:6]}"
        old, item = _issued(db, patient)
        ids = [f"inv-{uuid.uuid4().hex[:12]}" for _ in range(6)]
        cancels = [lambda: invoices.cancel(db, old, "nhập nhầm") for _ in range(3)]
        results = _at_once([*cancels, *[_draft(db, iid, patient, item) for iid in ids]])
        assert all(isinstance(r, dict) and r["status"] == "cancelled" for r in results[:3]), results[:3]
        drafts = results[3:]
        won = [iid for iid, r in zip(ids, drafts, strict=True) if isinstance(r, dict)]
        assert all(isinstance(r, invoices.InvoiceConflict) for r in drafts if not isinstance(r, dict)), drafts
        assert len(won) <= 1, drafts
        invoices.cancel(db, old, "nhập nhầm")  # a late re-call releases nothing of the winner's
        if won:
            assert charge_claims.holder(db, item["id"]) == won[0]
        else:
            assert charge_claims.holder(db, item["id"]) is None
            invoices.create_draft(db, ids[0], patient=patient, facility="org-a", items=[item], base_salary=2_340_000)
            assert charge_claims.holder(db, item["id"]) == ids[0]
        assert invoices.state(db, old)["state"] == "cancelled"


def test_a_cancel_clicked_again_while_the_first_ones_version_is_written_answers_cancelled(billing, monkeypatch) -> None:
    """The race above, its interleaving forced (under load a cancel answered the invoice 'issued'):
    the first cancel has won the cancelled link, given the charge back and claimed the Invoice's
    cancelled version, its current document not written yet. Then the cancel again (a double click)
    and a draft of the charge: the cancel answers 'cancelled' (the version claimed, not the stale
    current document, nor a 409), the draft takes the charge; one live invoice holds it."""
    _client, db = billing
    patient = f"Patient/p-{uuid.uuid4().hex[:6]}"
    old, item = _issued(db, patient)
    new = f"inv-{uuid.uuid4().hex[:12]}"
    store = Store(db, service="billing")
    # the first cancel holds version 3 claimed, its current write not made: the cancel again and the draft run then
    first, inside = in_the_claim_window(monkeypatch, db, old, 3, lambda: invoices.cancel(db, old, "nhập nhầm"),
                                        again=lambda: invoices.cancel(db, old, "bấm lại"),
                                        draft=_draft(db, new, patient, item))
    assert inside["current"] == "issued"  # the window was forced: the current document still the issued one
    again = inside["again"]
    assert isinstance(again, dict) and again["status"] == "cancelled", again
    assert again["meta"]["versionId"] == "3"  # the version the first cancel claimed
    assert first["status"] == "cancelled"
    assert isinstance(inside["draft"], dict) and inside["draft"]["status"] == "draft", inside["draft"]
    assert charge_claims.holder(db, item["id"]) == new
    links = sorted((link[CHAIN_SEQ], link["state"], link["invoice"])
                   for link in db[invoices.CHARGE_INVOICED].find({"k": item["id"]}))
    assert links == [(1, "invoiced", old), (2, "released", old), (3, "invoiced", new)]
    assert invoices.cancel(db, old, "nhập nhầm")["status"] == "cancelled"  # a late re-call gives back nothing
    assert charge_claims.holder(db, item["id"]) == new
    assert store.read_doc("Invoice", old)["res"]["status"] == "cancelled"
    invoices.issue(db, new)  # the replacement issued names it on the cancelled one (if its draft could not yet)
    named = [e["valueReference"]["reference"] for e in store.read_doc("Invoice", old)["res"].get("extension", [])
             if e["url"] == invoices.REPLACED_BY_EXT]
    assert named == [f"Invoice/{new}"]


def completed(sr: str, patient: str) -> dict:
    event = copy.deepcopy(EXAMPLE)
    event["id"] = str(uuid.uuid4())
    event["subject"] = f"ServiceRequest/{sr}"
    event["data"].update(serviceRequest=f"ServiceRequest/{sr}", patient=patient, requester="Organization/org-a")
    return event


def test_a_consult_event_again_after_its_invoice_was_cancelled_and_invoiced_by_hand(billing, dev_key) -> None:
    client, db = billing
    a = token(dev_key, "cashier")
    sr = f"sr-{uuid.uuid4().hex[:8]}"
    patient = f"Patient/p-{uuid.uuid4().hex[:6]}"
    event = completed(sr, patient)
    worker.consult_charge(event, db)
    consult_invoice = invoices.derived_id("consult", "invoice", f"ServiceRequest/{sr}")
    consult_charge = invoices.derived_id("consult", "charge", f"ServiceRequest/{sr}")
    assert client.post(f"/fhir/Invoice/{consult_invoice}/$cancel", headers=a, json=REASON).status_code == 200
    worker.consult_charge(event, db)  # redelivered while the charge is free: not taken again
    worker.consult_charge(completed(sr, patient), db)
    assert charge_claims.holder(db, consult_charge) is None
    assert not_invoiced(client, a, patient) == [consult_charge]

    r = create_invoice(client, a, patient, [consult_charge])  # the cashier invoices it by hand
    assert r.status_code == 201, r.text
    by_hand = r.json()["id"]
    assert client.post(f"/fhir/Invoice/{by_hand}/$issue", headers=a).json()["status"] == "issued"
    for again in (event, completed(sr, patient)):  # the same delivery, and the event again
        worker.consult_charge(again, db)  # no 409 for the bus to retry
        assert invoices.charge_consult(db, again, level_of=lambda _f: "district",
                                       base_salary=2_340_000) == consult_invoice
    assert charge_claims.holder(db, consult_charge) == by_hand
    assert invoices.state(db, consult_invoice)["state"] == "cancelled"
    store = Store(db, service="billing")
    assert store.read_doc("Invoice", consult_invoice)["res"]["status"] == "cancelled"
    assert store.current("ChargeItem").count_documents({}) == 1
    assert store.current("Invoice").count_documents({}) == 2


def test_a_charge_invoiced_by_hand_before_its_consult_invoice_was_made(billing, dev_key, monkeypatch) -> None:
    """The first delivery stopped after the consult's charge; a cashier put it on an invoice; the
    redelivery finds it billed there and ends (no consult invoice, no retry)."""
    client, db = billing
    a = token(dev_key, "cashier")
    sr = f"sr-{uuid.uuid4().hex[:8]}"
    patient = f"Patient/p-{uuid.uuid4().hex[:6]}"
    with monkeypatch.context() as patch:
        patch.setattr(invoices, "create_draft", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("stopped")))
        with pytest.raises(RuntimeError):
            worker.consult_charge(completed(sr, patient), db)
    consult_charge = invoices.derived_id("consult", "charge", f"ServiceRequest/{sr}")
    r = create_invoice(client, a, patient, [consult_charge])
    assert r.status_code == 201, r.text
    by_hand = r.json()["id"]
    assert invoices.charge_consult(db, completed(sr, patient), level_of=lambda _f: "district",
                                   base_salary=2_340_000) == by_hand
    assert Store(db, service="billing").head("Invoice", invoices.derived_id("consult", "invoice",
                                                                            f"ServiceRequest/{sr}")) is None


def test_a_claim_from_before_the_chain_still_holds_and_is_released(billing) -> None:
    _client, db = billing
    patient = f"Patient/p-{uuid.uuid4().hex[:6]}"
    iid, item = _issued(db, patient)
    coll = db[invoices.CHARGE_INVOICED]
    coll.delete_many({"k": item["id"]})  # as an older billing wrote it: one document under the charge's id
    coll.insert_one({"_id": item["id"], "invoice": iid})
    assert charge_claims.holders(db, [item["id"], "other"]) == {item["id"]: iid}
    other = f"inv-{uuid.uuid4().hex[:12]}"
    with pytest.raises(invoices.InvoiceConflict):
        _draft(db, other, patient, item)()
    invoices.cancel(db, iid, "nhập nhầm")
    assert charge_claims.holder(db, item["id"]) is None
    _draft(db, other, patient, item)()
    assert charge_claims.holder(db, item["id"]) == other
