"""An invoice BHYT pays in full (the patient owes 0 ₫) is settled when it is issued: balanced, its
receipt (0 to pay, BHYT's share) and one ``billing.invoice.paid`` (channel ``bhyt``, amount 0),
by the payments' own settlement, exactly once however many issues race; the consult's invoice too.
Before, such an invoice stayed "Chờ thanh toán" for ever: nothing to pay, so no payment to settle it.
An issue clicked again while the first one's issued version is claimed and not yet current (the
interleaving forced through the store's ``after_claim``) answers that version and leaves the
settlement to the first, which settles it once its version is written; and a settlement whose view
of the invoice was read before that version was written waits for it, then writes balanced after it."""

from __future__ import annotations

import json
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
from sen_billing.domain import invoice_port, invoices
from sen_billing.worker import consult_charge
from sen_shared.bus.catalog import load_catalog
from sen_shared.fhir import store as fhir_store
from sen_shared.fhir.store import Store

from tests.billing_support import billing_app, delivered, hand_invoice, in_the_claim_window
from tests.integration.test_billing_invoices import BANK, completed, record_card, requested, token

pytestmark = pytest.mark.integration


@pytest.fixture()
def billing(base_env: dict[str, str], mongo_client, monkeypatch: pytest.MonkeyPatch):
    with billing_app(base_env, mongo_client, monkeypatch, "z", BANK) as (client, db):
        yield client, db


def _settled_once(client, db, iid: str, headers: dict[str, str]) -> dict:
    assert db["invoice_balanced"].count_documents({"_id": iid}) == 1
    assert db["receipts"].count_documents({"invoice": iid}) == 1
    assert db["receipt_numbers"].count_documents({"invoice": iid}) == 1
    assert [link["state"] for link in sorted(db[invoices.STATES].find({"k": iid}), key=lambda x: x["n"])] == \
        ["draft", "issued", "balanced"]
    receipt = db["receipts"].find_one({"_id": iid})
    assert receipt["owed"] == 0 and receipt["paid"] == 0 and receipt["payments"] == [] and receipt["channel"] == "bhyt"
    [paid_event] = [json.loads(e["event"]) for e in receipt["outbox"]]
    load_catalog().validate(paid_event)
    assert paid_event["data"]["amount"] == 0 and paid_event["data"]["channel"] == "bhyt"
    assert paid_event["data"]["invoice"] == f"Invoice/{iid}"
    r = client.get(f"/fhir/Invoice/{iid}", headers=headers)
    assert r.status_code == 200 and r.json()["status"] == "balanced"
    shown = client.get(f"/payments/receipts/{iid}", headers=headers)
    assert shown.status_code == 200, shown.text
    return shown.json()


def test_a_hand_invoice_bhyt_pays_in_full_is_settled_once_when_issued_twice_at_once(billing, dev_key) -> None:
    client, db = billing
    cashier = token(dev_key, "cashier", "org-a")
    patient = f"Patient/p-{uuid.uuid4().hex[:6]}"
    record_card(client, cashier, patient, "DN4010123456789")  # 80 %, but 98.000 ₫ is under 15 % of the base
    iid, _ = hand_invoice(client, cashier, patient, ["sieu-am-bung", "sieu-am-bung"])
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda _: invoices.issue(db, iid), range(4)))
    assert {a["status"] for a in answers} <= {"issued", "balanced"}
    again = client.post(f"/fhir/Invoice/{iid}/$issue", headers=cashier)
    assert again.status_code == 200 and again.json()["status"] == "balanced"
    body = _settled_once(client, db, iid, cashier)
    assert body["owed"] == 0 and body["paid"] == 0
    assert body["insurerShare"] == 98_000 and body["gross"] == 98_000
    # nothing to pay: no QR, no payment summary owing anything
    assert client.get(f"/fhir/Invoice/{iid}/$vietqr", headers=cashier).status_code == 409
    summary = client.get(f"/payments/invoices/{iid}", headers=cashier).json()
    assert summary["balanceDue"] == 0 and summary["status"] == "balanced"


def test_an_issue_clicked_again_while_the_first_ones_issued_version_is_written_settles_once(
        billing, dev_key, monkeypatch: pytest.MonkeyPatch) -> None:
    """The race above, its interleaving forced (under load the issue answered 409 'keeps changing'):
    the first issue has claimed the Invoice's issued version (2), its current document not written
    yet; the second issue (a double click) runs to its end inside that window. It read the current
    document, still the draft, and settled from it: its balanced version was to follow version 1,
    whose successor was claimed and not written, so all its attempts lost (409), the settlement
    claimed and unfinished, the invoice left 'issued' for the repair job. Now it answers the issued
    version the first one claimed, and the first settles it once its own version is current."""
    client, db = billing
    cashier = token(dev_key, "cashier", "org-a")
    patient = f"Patient/p-{uuid.uuid4().hex[:6]}"
    record_card(client, cashier, patient, "DN4010123456789")
    iid, _ = hand_invoice(client, cashier, patient, ["sieu-am-bung", "sieu-am-bung"])
    # the first issue holds version 2 claimed, its current write not made: the second one runs then
    first, inside = in_the_claim_window(monkeypatch, db, iid, 2, lambda: invoices.issue(db, iid),
                                        again=lambda: invoices.issue(db, iid))
    assert inside["current"] == "draft"  # the window was forced: the current document still the draft
    again = inside["again"]
    assert isinstance(again, dict) and again["status"] == "issued", again
    assert again["meta"]["versionId"] == "2"  # the version the first issue claimed
    assert first["status"] == "balanced"
    body = _settled_once(client, db, iid, cashier)
    assert body["owed"] == 0 and body["insurerShare"] == 98_000


def test_a_balanced_version_from_a_view_read_before_the_issued_version_was_written_follows_it(
        billing, dev_key, monkeypatch: pytest.MonkeyPatch) -> None:
    """mark_balanced given the Invoice as read before its issued version (2) was written, while that
    version is claimed and its writer not done: its version 2 loses to the issued one, and reading
    the current document again gave the draft again (five times: 409 'keeps changing', the writer
    descheduled under load). Now it waits for version 2 to be current and writes version 3 after it.
    The writer is held until the settlement is waiting for it (or, before, has given up)."""
    client, db = billing
    cashier = token(dev_key, "cashier", "org-a")
    iid, _ = hand_invoice(client, cashier, f"Patient/p-{uuid.uuid4().hex[:6]}", ["sieu-am-bung"])
    stale = invoice_port.get(db, iid)
    assert stale is not None and stale.status == "draft" and stale.version == 1
    waiting = threading.Event()
    ensure_current = Store.ensure_current

    def watched(self, *args, **kwargs):  # noqa: ANN001, ANN202 - the store's own signature
        waiting.set()
        return ensure_current(self, *args, **kwargs)

    monkeypatch.setattr(Store, "ensure_current", watched)
    outcome: dict = {}

    def settle() -> None:
        try:
            invoice_port.mark_balanced(db, iid, stale)
            outcome["done"] = True
        except Exception as err:  # noqa: BLE001 - asserted below
            outcome["done"] = err
        finally:
            waiting.set()

    settler = threading.Thread(target=settle)

    def paused(w) -> None:  # the issue holds version 2 claimed: the settlement starts, then it writes
        if (w.resource_type, w.rid, w.version) != ("Invoice", iid, 2) or settler.ident is not None:
            return
        settler.start()
        waiting.wait()

    monkeypatch.setattr(fhir_store, "after_claim", paused)
    assert invoices.issue(db, iid)["status"] == "issued"
    monkeypatch.setattr(fhir_store, "after_claim", None)
    settler.join()
    assert outcome["done"] is True, outcome["done"]
    store = Store(db, service="billing")
    current = store.read_doc("Invoice", iid)
    assert current["v"] == 3 and current["res"]["status"] == "balanced"
    assert store.vread_doc("Invoice", iid, "2")["res"]["status"] == "issued"


def test_a_consult_bhyt_pays_in_full_is_settled_by_its_completed_event(billing, dev_key) -> None:
    client, db = billing
    cashier = token(dev_key, "cashier", "org-a")
    patient = f"Patient/p-{uuid.uuid4().hex[:6]}"
    record_card(client, cashier, patient, "DN4010123456789")
    sr = f"sr-{uuid.uuid4().hex[:8]}"
    consult_charge(requested(sr, "394579002"), db)  # 250.000 ₫ at a district clinic: under the threshold
    with ThreadPoolExecutor(3) as pool:
        list(pool.map(lambda _: delivered(completed(sr, patient), db), range(3)))  # each acked in the end
    iid = invoices.derived_id("consult", "invoice", f"ServiceRequest/{sr}")
    body = _settled_once(client, db, iid, cashier)
    assert body["insurerShare"] == 250_000 and body["owed"] == 0


def test_an_invoice_the_patient_owes_something_on_stays_issued(billing, dev_key) -> None:
    client, db = billing
    cashier = token(dev_key, "cashier", "org-a")
    iid, _ = hand_invoice(client, cashier, f"Patient/p-{uuid.uuid4().hex[:6]}", ["sieu-am-bung"])
    assert client.post(f"/fhir/Invoice/{iid}/$issue", headers=cashier).json()["status"] == "issued"
    assert db["invoice_balanced"].count_documents({"_id": iid}) == 0
