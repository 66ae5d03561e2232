"""Matching a transfer note to its invoice on the real FerretDB (``invoice_port.find_by_note``).

- An issued invoice is found by ONE query (the Invoice by its reference identifier), not the
  reference record and then the Invoice; the settling payment still claims the ``balanced`` link
  right after the issued one, whose number the Invoice's document carries since its issued version
  (no chain read, no reference record read); an Invoice issued without it (before it was written)
  has the reference record read, as before.
- Only the invoice whose id the code derives from matches: an Invoice carrying another
  invoice's code in its identifier is not that invoice.
- A code whose invoice was never issued (a draft, a cancelled draft) matches nothing, as when the
  reference record alone decided.
- The index step makes the reference collection, so the local FerretDB's tune indexes its ``_id``.
- A payment reads the invoice's OTHER payments after its insert and counts its own as inserted
  (FerretDB decodes one document less); the receipt lists them all, oldest first.
"""

from __future__ import annotations

import uuid

import pytest
from pymongo import MongoClient, monitoring
from sen_billing.domain import invoice_port, invoices, payments, receipts, vietqr
from sen_billing.domain.webhooks import Transfer
from sen_shared.fhir.store import Store

from tests.billing_support import make_invoice, scratch_db

pytestmark = pytest.mark.integration


class _Commands(monitoring.CommandListener):
    def __init__(self) -> None:
        self.names: list[str] = []
        self.filters: list[dict] = []

    def started(self, event) -> None:
        self.names.append(f"{event.command_name} {event.command.get(event.command_name)}")
        self.filters.append(dict(event.command.get("filter") or {}))

    def succeeded(self, event) -> None:
        pass

    def failed(self, event) -> None:
        pass


@pytest.fixture()
def watched(mongo_url):
    """A billing scratch database on a client of its own whose commands are recorded."""
    commands = _Commands()
    client = MongoClient(mongo_url, tz_aware=True, uuidRepresentation="standard", event_listeners=[commands])
    try:
        with scratch_db(client, "m") as database:
            yield database, commands
    finally:
        client.close()


def pay(db, code: str, amount: int) -> payments.Recorded:
    transfer = Transfer(provider="standard", transaction_id=uuid.uuid4().hex[:12], amount=amount,
                        description=f"chuyen tien {code.lower()} kham benh")
    return payments.record_transfer(db, transfer, inbox_id=uuid.uuid4().hex, seen=False)


def test_the_index_step_makes_the_reference_collection(watched) -> None:
    db, _ = watched
    assert invoice_port.REFERENCES in db.list_collection_names()


def test_an_issued_invoice_is_found_by_one_query(watched) -> None:
    db, commands = watched
    iid, code = make_invoice(db, 50_000)
    commands.names.clear()
    found = invoice_port.find_by_note(db, f"TT {code[:5]} {code[5:].lower()}")
    assert found is not None and found.id == iid and found.status == "issued" and found.owed == 50_000
    assert commands.names == ["find Invoice"]
    # the issued link's number came with it (written with the issued version): nothing else read
    assert found.issued_link == invoice_port.lifecycle(db, iid)["n"]


def test_the_settling_payment_claims_the_link_after_the_issued_one_without_reading_the_chain(
        watched, monkeypatch) -> None:
    db, commands = watched
    iid, code = make_invoice(db, 30_000)
    issued = invoice_port.lifecycle(db, iid)

    def no_chain_read(*_args, **_kwargs):
        raise AssertionError("the settlement read the lifecycle chain")

    monkeypatch.setattr(receipts, "latest", no_chain_read)
    assert pay(db, code, 10_000).payment["outcome"] == "applied"
    commands.names.clear()
    pay(db, code, 20_000)
    assert "find invoice_references" not in commands.names  # the number came with the Invoice
    link = invoice_port.lifecycle(db, iid)
    assert link["state"] == "balanced" and link["n"] == issued["n"] + 1
    assert db["receipts"].find_one({"_id": iid}) is not None
    assert Store(db, service="billing").read_doc("Invoice", iid)["res"]["status"] == "balanced"


def test_an_invoice_issued_without_the_number_beside_it_has_its_reference_record_read(
        watched, monkeypatch) -> None:
    """An Invoice issued before the number was written beside it (or whose current document a
    crashed write's roll-forward rebuilt from its history): the reference record gives it."""
    db, commands = watched
    iid, code = make_invoice(db, 30_000)
    db["Invoice"].update_one({"_id": iid}, {"$unset": {invoice_port.ISSUED_LINK_FIELD: ""}})
    issued = invoice_port.lifecycle(db, iid)
    assert invoice_port.find_by_note(db, code).issued_link is None

    def no_chain_read(*_args, **_kwargs):
        raise AssertionError("the settlement read the lifecycle chain")

    monkeypatch.setattr(receipts, "latest", no_chain_read)
    pay(db, code, 10_000)
    commands.names.clear()
    pay(db, code, 20_000)
    assert "find invoice_references" in commands.names  # the issued link's number, settling only
    link = invoice_port.lifecycle(db, iid)
    assert link["state"] == "balanced" and link["n"] == issued["n"] + 1
    assert db["receipts"].find_one({"_id": iid}) is not None


def test_the_number_beside_the_invoice_is_never_in_its_resource(watched) -> None:
    db, _ = watched
    iid, _ = make_invoice(db, 30_000)
    store = Store(db, service="billing", emit_events=False)
    assert db["Invoice"].find_one({"_id": iid})[invoice_port.ISSUED_LINK_FIELD] == invoice_port.lifecycle(db, iid)["n"]
    assert invoice_port.ISSUED_LINK_FIELD not in store.read_doc("Invoice", iid)["res"]
    assert invoice_port.ISSUED_LINK_FIELD not in str(store.vread_doc("Invoice", iid, "2")["res"])


def test_a_partial_payment_does_not_read_the_reference_record(watched) -> None:
    db, commands = watched
    _, code = make_invoice(db, 30_000)
    commands.names.clear()
    assert pay(db, code, 10_000).payment["outcome"] == "applied"
    # the day records of the facility at the transfer's time after its insert (shifts.after_money_in): a shift
    # that closed meanwhile without counting it is told, the one command the webhook path took on for it
    assert commands.names == ["find Invoice", "insert payments", "find shift_days", "find payments"]


def test_an_invoice_carrying_another_invoices_code_is_not_that_invoice(watched) -> None:
    db, _ = watched
    real, code = make_invoice(db, 40_000)
    forged = {"resourceType": "Invoice", "status": "issued", "issuer": {"reference": "Organization/org-x"},
              "identifier": [{"system": invoice_port.REFERENCE_SYSTEM, "value": code}],
              "totalNet": {"value": 1, "currency": "VND"}}
    Store(db, service="billing", emit_events=False).create(forged, "inv-forged")
    found = invoice_port.find_by_note(db, code)
    assert found is not None and found.id == real and found.owed == 40_000
    # the forged one alone (its own code is another): nothing
    other = vietqr.reference_code("inv-nothing-" + uuid.uuid4().hex[:6])
    forged2 = {**forged, "identifier": [{"system": invoice_port.REFERENCE_SYSTEM, "value": other}]}
    Store(db, service="billing", emit_events=False).create(forged2, "inv-forged-2")
    assert invoice_port.find_by_note(db, other) is None


@pytest.mark.parametrize("status", ["draft", "cancelled"])
def test_a_code_never_issued_matches_nothing(watched, status: str) -> None:
    db, _ = watched
    iid, code = make_invoice(db, 25_000, status="draft")
    if status == "cancelled":
        invoices.cancel(db, iid, "nhập nhầm")
    assert invoice_port.find_by_note(db, code) is None
    recorded = pay(db, code, 25_000)
    assert recorded.payment["outcome"] == "unmatched" and not recorded.payment.get("late_invoice")
    assert db["unmatched_waiting"].find_one({"_id": recorded.payment["_id"]}) is not None


def test_a_cancelled_issued_invoice_still_takes_late_payments(watched) -> None:
    db, _ = watched
    iid, code = make_invoice(db, 25_000, status="cancelled")
    recorded = pay(db, code, 25_000)
    assert recorded.payment["outcome"] == "late-cancelled" and recorded.payment["late_invoice"] == iid
    assert db["refund_tasks"].find_one({"_id": recorded.payment["_id"]})["reason"] == "invoice-cancelled"


def test_a_payment_reads_the_other_payments_and_counts_its_own(watched) -> None:
    db, commands = watched
    iid, code = make_invoice(db, 30_000)
    first = pay(db, code, 10_000).payment["_id"]
    second = pay(db, code, 10_000).payment["_id"]
    commands.names.clear()
    commands.filters.clear()
    third = pay(db, code, 10_000).payment["_id"]  # settles: the sum counts its own amount
    reads = [f for n, f in zip(commands.names, commands.filters, strict=True) if n == "find payments"]
    assert reads == [{"invoice": iid, "_id": {"$ne": third}}]
    receipt = db["receipts"].find_one({"_id": iid})
    assert receipt["paid"] == 30_000 and [p["id"] for p in receipt["payments"]] == [first, second, third]
    assert db["invoice_balanced"].find_one({"_id": iid})["payments"] == [first, second, third]
    pr = Store(db, service="billing").read_doc("PaymentReconciliation", f"pr-{iid}")["res"]
    assert [d["identifier"]["value"] for d in pr["detail"]] == [first, second, third]
