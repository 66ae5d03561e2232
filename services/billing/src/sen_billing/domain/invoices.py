"""Charges and invoices: ChargeItem, Account, Invoice and their lifecycle, exactly once.

Storage (every invariant a claim by insert, ``sen_shared.claims``; ARCHITECTURE §2):

- FHIR resources in billing's store (``sen_shared.fhir.store``). A resource created by an
  event's effect gets a FIXED id derived from what it is for (the consult's ServiceRequest, the
  patient and facility of an Account), so the store's create (an insert under that id) is the
  claim: a redelivered or concurrent event re-creates nothing, and no separate "done" record
  can be separated from its effect by a crash.
- ``invoice_states``: the lifecycle of each invoice as a chain (``<invoice id>/1`` draft,
  ``/2`` issued, ``/3`` balanced or cancelled). ``issued`` carries the ``billing.invoice.issued``
  event in its outbox, written by the same insert. Whoever wins a link (one writer) then writes
  the Invoice resource's new version; a crash between the two is repaired by the next call
  (:func:`issue` / :func:`cancel` roll the resource forward to the chain's state); the store's
  own version claims keep two such writers from both writing.
- ``balanced`` is claimed in the same chain by the settlement (``receipts.settle_invoice``), so
  a cancel and the payment that settles the invoice race for the same link and exactly one
  wins. :func:`cancel` also refuses (409) an invoice with any payment counted; a payment that
  lands between that check and the cancelled link is caught: the cancel inserts a mark among
  the invoice's payments (``invoice_port.mark_cancel``), then claims its link, then reads the
  payments; every payment reads the invoice's payments after its own insert (it needs their sum
  anyway) and, seeing the mark, the chain. So one of the two always sees the other and claims
  the payment's refund task (``invoice_port.route_to_refunds``).
- ``charge_invoiced``: one live invoice per ChargeItem, a chain of claims per charge
  (:mod:`.charge_claims`): :func:`create_draft` takes each charge (an insert of the chain's next
  link), :func:`cancel` gives them back (another insert: a ``released`` link), so a cancelled
  invoice's charges can go on a new invoice. The cancel releases after winning its ``cancelled``
  link, and again when called on a cancelled invoice (the repair of a crash in between); a draft
  that finds a charge held by a cancelled invoice releases it itself. A draft racing the cancel
  of its charges' invoice either reads the charge still held (409: try again) or wins its link.
  The cancelled Invoice keeps its lines (its resource is not changed by the release).
- ``consult_facts``: what ``teleconsult.consult.requested`` told us (the specialty), keyed by
  the ServiceRequest (``claim_once``: the first delivery's fact stands).
- ``invoice_references`` (shared with payments, ``invoice_port.REFERENCES``): ``{_id: bill
  reference, invoice}``, inserted when the invoice is issued.
- ``vietqr_codes``: per invoice, a chain of the QR payloads handed out (insert-only; the newest
  unexpired one whose amount is still the balance due is served, else the next is claimed).

The Invoice (FHIR mapping of the BHYT split; amounts are integer đồng, currency VND):

- ``lineItem[i].chargeItemReference``: the ChargeItem (``display``: its Vietnamese title);
  extension ``invoice-line-service`` (valueCodeableConcept): the price list's service code
  (system ``urn:sen:billing:service``, as the ChargeItemDefinition's ``code``) with the
  Vietnamese title as ``text``, so a reader can name the service in its own language.
- ``lineItem[i].priceComponent``: ``base`` = the line's gross amount; ``deduction`` coded
  ``insurer-share`` = what BHYT pays; ``informational`` coded ``patient-share`` = what the
  patient pays (base − deduction).
- ``totalGross`` = the sum of the lines' gross amounts; ``totalNet`` = the patient's share
  (what is owed at the desk or by transfer).
- extensions ``patient-share`` and ``insurer-share`` (valueMoney), ``bhyt-benefit-level``
  (valueUnsignedInt, the card's level; absent without a card), ``bhyt-applied-percent``
  (valueUnsignedInt: 100 under the threshold), ``district`` (valueString), ``consult``
  (valueReference to the ServiceRequest); ``invoice-replaces`` on an invoice of charges a cancelled
  invoice gave back (valueReference to that Invoice: its consult, district and name carried over,
  :func:`create_draft`) and ``invoice-replaced-by`` on the cancelled one (:func:`_name_replacement`).
- ``identifier`` ``urn:sen:billing:payment-reference`` = the bill reference the QR carries.
- ``issuer`` = the facility (``Organization/<id>``) whose cashiers collect it; ``account`` =
  the patient's Account at that facility; ``subject`` = the patient, its ``display`` the patient's
  name when billing was told it (the consult's event, the cashier's invoice): the name the receipt
  prints, as it was then (the EHR stays the record of the name; billing never asks it).

The payments side reads invoices only through ``invoice_port`` (the balance due, the
reference lookup); :func:`balance_due` here is that same function.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from pymongo.database import Database
from sen_shared.bus.events import make_event
from sen_shared.bus.outbox import new_document
from sen_shared.claims import CHAIN_SEQ, ClaimTaken, advance, claim_once, latest
from sen_shared.fhir.names import one_line
from sen_shared.fhir.outcome import FhirError
from sen_shared.fhir.search import parse_search
from sen_shared.fhir.search.executor import search as run_search
from sen_shared.fhir.store import Store

from . import bhyt, charge_claims, invoice_port, pricing, vietqr

VN = ZoneInfo("Asia/Ho_Chi_Minh")
STATES = invoice_port.STATES
CHARGE_INVOICED = charge_claims.COLLECTION
CONSULT_FACTS = "consult_facts"
QR_CODES = "vietqr_codes"
REFERENCES = invoice_port.REFERENCES
REFERENCE_SYSTEM = invoice_port.REFERENCE_SYSTEM
BALANCED = "invoice_balanced"  # payments' settlement claim (receipts.py)
# the payments collection (written by payments, insert-only): {_id, invoice: <Invoice id or None>,
# amount: int đồng, channel, provider, received_at, matched, ...}; a payment counts toward
# ``invoice`` (a late one has ``late_invoice`` instead and counts toward nothing)
PAYMENTS = invoice_port.PAYMENTS
SD = "https://sen.vn/fhir/StructureDefinition/"
PRICE_COMPONENT_SYSTEM = "urn:sen:billing:price-component"
# a line's service (extension of lineItem): FHIR R4's chargeItem[x] holds the ChargeItem reference
# OR a code, never both, and the reference stays (charges are found by it)
SERVICE_EXT = SD + "invoice-line-service"
# an invoice of charges a cancelled invoice gave back names that one (FHIR R4's Invoice has no
# ``replaces``), and the cancelled one names it back (a version of its own, :func:`_name_replacement`)
REPLACES_EXT = SD + "invoice-replaces"
REPLACED_BY_EXT = SD + "invoice-replaced-by"
INVOICE_TYPE = {"coding": [{"system": "urn:sen:billing:invoice-type", "code": "visit"}], "text": "Hóa đơn viện phí"}
CONSULT_EVENT = "teleconsult.consult.completed"
REQUESTED_EVENT = "teleconsult.consult.requested"

balance_due = invoice_port.balance_due
paid_total = invoice_port.paid_total


class InvoiceConflict(FhirError):
    def __init__(self, detail: str) -> None:
        super().__init__(detail, status=409, code="conflict")


@dataclass(frozen=True)
class Pricing:
    base_salary: int = bhyt.BASE_SALARY


def _store(db: Database) -> Store:
    return Store(db, service="billing", emit_events=False)


def derived_id(kind: str, *parts: str) -> str:
    """A fixed FHIR id for what ``parts`` name (≤ 64 characters of [a-z0-9-])."""
    return f"{kind}-" + hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:32]


def money(value: int) -> dict[str, Any]:
    return {"value": int(value), "currency": "VND"}


def vnd(value: int) -> str:
    """``150.000 ₫``."""
    return f"{int(value):,}".replace(",", ".") + " ₫"


def iso_vn(when: datetime) -> str:
    return when.astimezone(VN).isoformat(timespec="seconds")


def _ref_id(ref: Any, rtype: str) -> str | None:
    text = ref.get("reference") if isinstance(ref, dict) else ref
    if isinstance(text, str) and text.startswith(rtype + "/"):
        return text.split("/", 1)[1]
    return None


def _ext(res: dict[str, Any], name: str) -> Any:
    for ext in res.get("extension") or []:
        if ext.get("url") == SD + name:
            return next((v for k, v in ext.items() if k.startswith("value")), None)
    return None


def _create_once(store: Store, resource: dict[str, Any], rid: str) -> dict[str, Any]:
    """Create under the fixed id, or the one already there (the id is the claim)."""
    return store.create_once(resource, rid)[1]


# --------------------------------------------------------------------------- coverage

def coverage_level(db: Database, patient: str, when: datetime | None = None) -> int | None:
    """The BHYT benefit level of the patient's active Coverage kept by billing (None: no card).

    Billing keeps its own copy of the patient's BHYT card as a Coverage (the cashier records
    it at the desk, where the card is checked at every visit): an invoice never waits on the EHR.
    """
    day = (when or datetime.now(UTC)).astimezone(VN).date().isoformat()
    sreq = parse_search("Coverage", [("beneficiary", patient), ("status", "active")])
    sreq.count = 20
    sreq.total = None
    best = None
    for doc in run_search(db, sreq).docs:
        res = doc["res"]
        period = res.get("period") or {}
        if period.get("start", "0000")[:10] > day or period.get("end", "9999")[:10] < day:
            continue
        level = bhyt.benefit_level(res)
        if level is not None and (best is None or level > best):
            best = level
    return best


# --------------------------------------------------------------------------- charges

def account_for(db: Database, patient: str, facility: str) -> str:
    """The patient's Account at the facility (created once, fixed id); its id."""
    rid = derived_id("acct", facility, patient)
    _create_once(_store(db), {
        "resourceType": "Account", "status": "active",
        "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "PBILLACCT"}],
                 "text": "Tài khoản viện phí của người bệnh"},
        "subject": [{"reference": patient}], "owner": {"reference": f"Organization/{facility}"},
    }, rid)
    return rid


def patient_ref(patient: str, display: str = "") -> dict[str, Any]:
    """The Reference to the patient, named by ``display`` (one line, at most 200 characters) if any."""
    name = one_line(display)
    return {"reference": patient, **({"display": name} if name else {})}


def charge_item(*, patient: str, facility: str, definition: dict[str, Any], quantity: int = 1,
                account: str | None = None, when: datetime | None = None, enterer: str | None = None,
                supporting: Sequence[str] = (), note: str | None = None, patient_display: str = "") -> dict[str, Any]:
    """A billable ChargeItem priced from ``definition`` (the price copied into priceOverride)."""
    unit = pricing.price(definition)
    res: dict[str, Any] = {
        "resourceType": "ChargeItem", "status": "billable",
        "definitionCanonical": [f"{definition['url']}|{definition.get('meta', {}).get('versionId', '1')}"]
        if definition.get("url") else [],
        "code": definition.get("code") or {"text": definition.get("title", "")},
        "subject": patient_ref(patient, patient_display),
        "occurrenceDateTime": iso_vn(when or datetime.now(UTC)),
        "performingOrganization": {"reference": f"Organization/{facility}"},
        "costCenter": {"reference": f"Organization/{facility}"},
        "quantity": {"value": quantity},
        "priceOverride": money(unit * quantity),
        "enteredDate": iso_vn(datetime.now(UTC)),
    }
    if not res["definitionCanonical"]:
        del res["definitionCanonical"]
    if account:
        res["account"] = [{"reference": f"Account/{account}"}]
    if enterer:
        res["enterer"] = {"reference": enterer}
    if supporting:
        res["supportingInformation"] = [{"reference": r} for r in supporting]
    if not pricing.covered(definition):
        res["extension"] = [{"url": pricing.COVERED_EXT, "valueBoolean": False}]
    if note:
        res["note"] = [{"text": note}]
    return res


def charge_amount(item: dict[str, Any]) -> int:
    value = (item.get("priceOverride") or {}).get("value")
    if value is None:
        raise FhirError(f"ChargeItem/{item.get('id')} has no price", status=422)
    return int(value)


def charge_covered(item: dict[str, Any]) -> bool:
    for ext in item.get("extension") or []:
        if ext.get("url") == pricing.COVERED_EXT:
            return bool(ext.get("valueBoolean", True))
    return True


# --------------------------------------------------------------------------- invoices

def service_of(item: dict[str, Any]) -> str | None:
    """The price list's service code (``urn:sen:billing:service``) the ChargeItem copied from its
    definition's ``code``; None for a charge without one."""
    for coding in (item.get("code") or {}).get("coding") or []:
        if coding.get("system") == pricing.SERVICE_SYSTEM and coding.get("code"):
            return str(coding["code"])
    return None


def build_invoice(*, invoice_id: str, patient: str, facility: str, items: Sequence[dict[str, Any]],
                  level: int | None, base_salary: int, district: str | None = None, account: str | None = None,
                  consult: str | Sequence[str] | None = None, when: datetime | None = None, patient_display: str = "",
                  replaces: Sequence[str] = ()) -> dict[str, Any]:
    """A draft Invoice for ``items`` with each line split between BHYT and the patient; ``consult``: the
    consult's ServiceRequest (or several, one extension each: the event names the first); ``replaces``:
    the ids of the cancelled invoices whose charges it invoices again."""
    split = bhyt.split([bhyt.Line(charge_amount(i), charge_covered(i)) for i in items], level,
                       base_salary=base_salary)
    lines = []
    for seq, (item, share) in enumerate(zip(items, split.lines, strict=True), start=1):
        text = (item.get("code") or {}).get("text") or "Dịch vụ"
        line: dict[str, Any] = {"sequence": seq}
        service = service_of(item)
        if service is not None:
            line["extension"] = [{"url": SERVICE_EXT, "valueCodeableConcept": {
                "coding": [{"system": pricing.SERVICE_SYSTEM, "code": service}], "text": text}}]
        lines.append({**line,
                      "chargeItemReference": {"reference": f"ChargeItem/{item['id']}", "display": text},
                      "priceComponent": [
                          {"type": "base", "amount": money(share.amount)},
                          {"type": "deduction", "code": {"coding": [{"system": PRICE_COMPONENT_SYSTEM,
                                                                     "code": "insurer-share"}],
                                                         "text": "BHYT chi trả"}, "amount": money(share.insurer)},
                          {"type": "informational", "code": {"coding": [{"system": PRICE_COMPONENT_SYSTEM,
                                                                         "code": "patient-share"}],
                                                             "text": "Người bệnh trả"},
                           "amount": money(share.patient)}]})
    ext: list[dict[str, Any]] = [{"url": SD + "patient-share", "valueMoney": money(split.patient)},
                                 {"url": SD + "insurer-share", "valueMoney": money(split.insurer)}]
    if split.level:
        ext.append({"url": SD + "bhyt-benefit-level", "valueUnsignedInt": split.level})
        ext.append({"url": SD + "bhyt-applied-percent", "valueUnsignedInt": split.applied})
    if district:
        ext.append({"url": SD + "district", "valueString": district})
    for sr in [consult] if isinstance(consult, str) else consult or ():
        ext.append({"url": SD + "consult", "valueReference": {"reference": sr}})
    for old in replaces:
        ext.append({"url": REPLACES_EXT, "valueReference": {"reference": f"Invoice/{old}"}})
    res: dict[str, Any] = {
        "resourceType": "Invoice", "extension": ext, "status": "draft", "type": INVOICE_TYPE,
        "identifier": [{"system": REFERENCE_SYSTEM, "value": vietqr.reference_code(invoice_id)}],
        "subject": patient_ref(patient, patient_display), "issuer": {"reference": f"Organization/{facility}"},
        "date": iso_vn(when or datetime.now(UTC)), "lineItem": lines,
        "totalGross": money(split.total), "totalNet": money(split.patient),
    }
    if account:
        res["account"] = {"reference": f"Account/{account}"}
    return res


def create_draft(db: Database, invoice_id: str, *, patient: str, facility: str, items: Sequence[dict[str, Any]],
                 base_salary: int, district: str | None = None, consult: str | None = None,
                 patient_display: str = "") -> dict[str, Any]:
    """The draft Invoice of ``items`` under ``invoice_id`` (the one already there if any, as it is:
    its first creator's name for the patient stands); ``patient_display``: the patient's name.

    Charges a cancelled invoice gave back make the new one its replacement (:func:`_carried`): it
    carries the cancelled one's consult link, district and patient's name (so its FHIR resource and its
    ``billing.invoice.issued`` read as the first did: the cashier's BHYT card on a consult's invoice
    cancels it and invoices its charge again), names it (``invoice-replaces``) and is named by it
    (``invoice-replaced-by``). A consult's charge names its consult (``supportingInformation``), so
    any invoice of it carries the consult link."""
    if not items:
        raise FhirError("an invoice needs at least one charge", status=422, expression=["Invoice.lineItem"])
    store = _store(db)
    head = store.head("Invoice", invoice_id)
    if head is not None:
        res = store.read_doc("Invoice", invoice_id)["res"]
        _name_replacement(db, res, invoice_id)  # a create that stopped before it: finished by its retry
        return res
    charges = [str(item["id"]) for item in items]
    # one live invoice per charge; several are checked all first, so a refusal takes none of them
    # (one charge: its take below checks the same)
    for charge, held in charge_claims.holders(db, charges).items() if len(charges) > 1 else ():
        if held != invoice_id and not _given_back(db, charge, held):
            raise _on_invoice(charge, held)
    for charge in charges:
        _take(db, charge, invoice_id)
    replaced, consults, carried_district, carried_name = _carried(db, invoice_id, items)
    account = account_for(db, patient, facility)
    level = coverage_level(db, patient)
    res = build_invoice(invoice_id=invoice_id, patient=patient, facility=facility, items=items, level=level,
                        base_salary=base_salary, district=carried_district or district, account=account,
                        consult=list(dict.fromkeys([*([consult] if consult else []), *consults])),
                        patient_display=patient_display or carried_name, replaces=replaced)
    res = _create_once(store, res, invoice_id)
    try:
        advance(db[STATES], invoice_id, None, {"state": "draft"})
    except ClaimTaken:
        link = state(db, invoice_id)
        if link is not None and link["state"] == "cancelled":
            # a twin call made the invoice and it was cancelled (its charges released) before our
            # takes above: read after them, the link tells us to give back what we took
            _release_charges(db, invoice_id, res)
    _name_replacement(db, res, invoice_id)
    return res


def _carried(db: Database, invoice_id: str, items: Sequence[dict[str, Any]],
             ) -> tuple[list[str], list[str], str | None, str]:
    """What a new invoice of ``items`` (taken by ``invoice_id`` already) carries over: the cancelled
    invoices that gave its charges back (in the lines' order), the consults (theirs, then those its
    charges name), the district and patient's name of the first of them that has one."""
    given = charge_claims.given_back_by(db, [str(i["id"]) for i in items], invoice_id)
    replaced = list(dict.fromkeys(given[str(i["id"])] for i in items if str(i["id"]) in given))
    consults: list[str] = []
    district: str | None = None
    name = ""
    store = _store(db)
    for old in replaced:
        try:
            res = store.read_doc("Invoice", old)["res"]
        except FhirError:
            continue  # (an invoice is never deleted; nothing to carry from one that is not there)
        consults += [ref for e in res.get("extension") or [] if e.get("url") == SD + "consult"
                     and isinstance(ref := (e.get("valueReference") or {}).get("reference"), str)]
        district = district or _ext(res, "district")
        name = name or str((res.get("subject") or {}).get("display") or "")
    for item in items:  # the consult's charge names its ServiceRequest (charge_consult)
        consults += [ref for s in item.get("supportingInformation") or []
                     if isinstance(ref := s.get("reference"), str) and ref.startswith("ServiceRequest/")]
    return replaced, list(dict.fromkeys(consults)), district, name


def _name_replacement(db: Database, invoice: dict[str, Any], invoice_id: str) -> None:
    """Each cancelled invoice ``invoice`` replaces (its ``invoice-replaces``) names it back
    (``invoice-replaced-by``, in a new version of the cancelled Invoice, written once). Writers: the
    replacement's creates and issues (twins, retries) and a cancel's roll-forward, each a version
    claim of the store (``if_match``): a loser reads again and finds the name written, or writes it."""
    ref = f"Invoice/{invoice_id}"
    olds = [_ref_id(e.get("valueReference"), "Invoice") for e in invoice.get("extension") or []
            if e.get("url") == REPLACES_EXT]
    store = _store(db)
    for old in filter(None, olds):
        link = state(db, old)
        if link is None or link["state"] != "cancelled":
            continue  # only a cancelled invoice gives its charges back
        for _ in range(4):
            doc = store.read_doc("Invoice", old)
            res = dict(doc["res"])
            if any(e.get("url") == REPLACED_BY_EXT and (e.get("valueReference") or {}).get("reference") == ref
                   for e in res.get("extension") or []):
                break
            if res.get("status") != "cancelled":  # its cancel stopped before its version: write that first
                _roll_forward(db, old, link)
                continue
            res["extension"] = [*(res.get("extension") or []),
                                {"url": REPLACED_BY_EXT, "valueReference": {"reference": ref}}]
            try:
                store.update(res, old, if_match=int(doc["v"]))
                break
            except FhirError as err:
                if err.status not in (409, 412):
                    raise


def next_invoice_id(db: Database, invoice_id: str) -> str:
    """The id an invoice derived as ``invoice_id`` takes: that one, unless that invoice is cancelled,
    then the id derived from it, and so on. So the same charges invoiced again after a cancel make
    a new invoice, and a retried create still finds the one that is not cancelled."""
    while (link := state(db, invoice_id)) is not None and link["state"] == "cancelled":
        invoice_id = derived_id("inv", invoice_id)
    return invoice_id


def _on_invoice(charge: str, invoice_id: str) -> InvoiceConflict:
    return InvoiceConflict(f"ChargeItem/{charge} is on Invoice/{invoice_id} already")


def _given_back(db: Database, charge: str, invoice_id: str) -> bool:
    """Whether ``invoice_id``, which holds ``charge``, is cancelled: then the charge is released here
    (its cancel stopped between its link and its release, or is releasing it right now)."""
    link = state(db, invoice_id)
    if link is None or link["state"] != "cancelled":
        return False
    try:
        charge_claims.release(db, charge, invoice_id)
    except charge_claims.Busy:
        raise InvoiceConflict(f"ChargeItem/{charge} is being invoiced meanwhile; try again") from None
    return True


def _take(db: Database, charge: str, invoice_id: str) -> None:
    """``charge`` for ``invoice_id``, or 409 naming the live invoice that holds it."""
    for _ in range(2):
        try:
            held = charge_claims.take(db, charge, invoice_id)
        except charge_claims.Busy:
            break
        if held is None:
            return
        if not _given_back(db, charge, held):
            raise _on_invoice(charge, held)
    raise InvoiceConflict(f"ChargeItem/{charge} is being invoiced meanwhile; try again")


def charges_of(invoice: dict[str, Any]) -> list[str]:
    """The ChargeItem ids on the Invoice's lines."""
    return [cid for line in invoice.get("lineItem") or []
            if (cid := _ref_id(line.get("chargeItemReference"), "ChargeItem")) is not None]


def _release_charges(db: Database, invoice_id: str, invoice: dict[str, Any]) -> None:
    """Give back the charges the cancelled invoice holds (those another invoice holds since stay)."""
    for charge in charges_of(invoice):
        try:
            charge_claims.release(db, charge, invoice_id)
        except charge_claims.Busy:
            raise InvoiceConflict(f"Invoice/{invoice_id} is cancelled; its charges are being released: "
                                  "cancel it again to finish") from None


def _issued_event(invoice: dict[str, Any], invoice_id: str, when: datetime) -> dict[str, Any]:
    data: dict[str, Any] = {
        "invoice": f"Invoice/{invoice_id}", "facility": invoice["issuer"]["reference"],
        "total": int(invoice["totalGross"]["value"]), "patientShare": int(_ext(invoice, "patient-share")["value"]),
        "insurerShare": int(_ext(invoice, "insurer-share")["value"]), "currency": "VND", "issuedAt": iso_vn(when),
    }
    if (invoice.get("subject") or {}).get("reference"):
        data["patient"] = invoice["subject"]["reference"]
    if _ext(invoice, "district"):
        data["district"] = _ext(invoice, "district")
    if (consult := _ext(invoice, "consult")) is not None:
        data["consult"] = consult["reference"]
    if (replaces := _ext(invoice, "invoice-replaces")) is not None:
        data["replaces"] = replaces["reference"]  # the (first) cancelled invoice this one invoices again
    return make_event("billing.invoice.issued", data, subject=f"Invoice/{invoice_id}",
                      event_id=str(uuid.UUID(hashlib.sha256(f"issued\x1f{invoice_id}".encode()).hexdigest()[:32])))


def state(db: Database, invoice_id: str) -> dict[str, Any] | None:
    return latest(db[STATES], invoice_id)


def _roll_forward(db: Database, invoice_id: str, link: dict[str, Any]) -> dict[str, Any]:
    """Write the Invoice resource's version for the chain's state if it is not written yet.
    Writer: the caller that holds (or found) the link; two of them race on the store's version
    claim (``if_match``), and the loser answers the version the winner claimed when it shows the
    chain's state (:func:`_claimed_at`), else reads again."""
    store = _store(db)
    for _ in range(3):
        doc = store.read_doc("Invoice", invoice_id)
        res = dict(doc["res"])
        target = link["state"]
        if res.get("status") == target or (target == "issued" and res.get("status") == "balanced"):
            return res
        res["status"] = target
        if target == "issued":
            res["date"] = iso_vn(link["at"] if link["at"].tzinfo else link["at"].replace(tzinfo=UTC))
        if target == "cancelled" and link.get("reason"):
            res["cancelledReason"] = link["reason"]
        try:
            if target != "issued":
                return store.update(res, invoice_id, if_match=int(doc["v"])).resource
            head = store.head("Invoice", invoice_id)
            if head is None or int(head["v"]) != int(doc["v"]):
                continue  # changed since the read above: read it again
            w = store.prepare_update(res, invoice_id, head)
            # the issued link's number beside the resource, in the same write: a settling payment,
            # which reads this document anyway, claims the next link from it (invoice_port.ISSUED_LINK_FIELD)
            if w.update is not None:  # (an update of the head just read: always)
                w.update["$set"][invoice_port.ISSUED_LINK_FIELD] = int(link[CHAIN_SEQ])
            store.apply(w)
            return w.resource
        except FhirError as err:
            if err.status not in (409, 412):
                raise
            won = _claimed_at(store, invoice_id, int(doc["v"]) + 1, target)
            if won is not None:
                return won
    return store.read_doc("Invoice", invoice_id)["res"]


def _claimed_at(store: Store, invoice_id: str, version: int, target: str) -> dict[str, Any] | None:
    """The Invoice's claimed version ``version`` (its history document) when it shows the chain's state
    ``target`` (issued: or paid since), else None. What a writer that lost that version to another
    answers: the claim decided it, and its current document may not be written yet (a double-clicked
    cancel read the issued version three times while the winner's write was still on its way, and
    answered the invoice issued; re-reading the current document is timing, the claim is not)."""
    try:
        res = store.vread_doc("Invoice", invoice_id, str(version))["res"]
    except FhirError:
        return None  # (no such version, or a deletion: read the current document again)
    status = res.get("status")
    return res if status == target or (target == "issued" and status == "balanced") else None


def issue(db: Database, invoice_id: str) -> dict[str, Any]:
    """draft → issued, once: the chain link (with ``billing.invoice.issued`` in its outbox), the
    bill reference, then the Invoice's new version. Issuing an issued invoice answers it again."""
    store = _store(db)
    invoice = store.read_doc("Invoice", invoice_id)["res"]
    link = state(db, invoice_id)
    if link is None:  # a draft whose first link a crash lost
        try:
            link = advance(db[STATES], invoice_id, None, {"state": "draft"})
        except ClaimTaken as taken:
            link = taken.holder or state(db, invoice_id)
    if link["state"] == "draft":
        now = datetime.now(UTC)
        event = _issued_event(invoice, invoice_id, now)
        try:
            link = advance(db[STATES], invoice_id, link, new_document({"state": "issued", "at": now}, [event]))
        except ClaimTaken as taken:
            link = taken.holder or state(db, invoice_id)
    if link["state"] == "cancelled":
        raise InvoiceConflict(f"Invoice/{invoice_id} is cancelled")
    if link["state"] == "balanced":  # issued long ago and paid: the settlement writes its status
        return store.read_doc("Invoice", invoice_id)["res"]
    reference = vietqr.reference_code(invoice_id)
    # the issued link's number rides along: a settling payment, which reads this record anyway,
    # claims the next link from it without reading the chain first (receipts._balanced_link)
    claim_once(db[REFERENCES], reference, {"invoice": invoice_id, invoice_port.ISSUED_LINK: int(link[CHAIN_SEQ])})
    res = _roll_forward(db, invoice_id, link)
    _name_replacement(db, res, invoice_id)  # (done by its create unless that stopped before it)
    if _owes_nothing(res):
        return _settle_covered(db, invoice_id, res)
    return res


def _owes_nothing(invoice: dict[str, Any]) -> bool:
    share = _ext(invoice, "patient-share")
    return isinstance(share, dict) and int(share.get("value") or 0) <= 0


def _settle_covered(db: Database, invoice_id: str, res: dict[str, Any]) -> dict[str, Any]:
    """An issued invoice the patient owes nothing on (BHYT pays it all) is settled at once by the
    payments' own settlement (``receipts.settle_invoice``, with no payment): its claim
    ``invoice_balanced/<id>`` makes it once however many issues race, then the ``balanced`` link,
    the receipt (0 to pay, BHYT's share) and ``billing.invoice.paid`` (channel ``bhyt``). A winner
    that stopped half-way is finished by the repair job, as any settlement.

    Settled from the current document only once it shows the issued version: the settlement's
    balanced version follows the version it read (``invoice_port.mark_balanced``), and no version
    can follow one that is claimed and not yet written. An issue that found the issued version so
    (clicked again while the first one writes it: :func:`_roll_forward` answered the claim) answers
    that version and leaves the settlement to the claim's winner, which settles right after its
    write; a winner cut off in between leaves it to the next issue (or the consult event's
    redelivery), which rolls the version forward. Before, it settled from the draft it read, its
    balanced version lost to the issued one five times over, and it answered 409 'keeps changing'."""
    from .receipts import settle_invoice

    view = invoice_port.get(db, invoice_id)
    if view is None or view.owed > 0 or view.status not in invoice_port.ISSUED_STATES:
        return res
    if settle_invoice(db, invoice_id, channel="bhyt", invoice=view, paid=0, counted=[]):
        return _store(db).read_doc("Invoice", invoice_id)["res"]
    return res


_PAID_NOT_CANCELLED = "a paid invoice is not cancelled (only its credit is refunded)"


def _kept_after_refunds(db: Database, invoice_id: str) -> int:
    """What is paid toward a settled invoice and not given back: its payments less those refunded
    (of an invoice the patient owes nothing on, every payment counted is credit, refundable whole)."""
    kept = invoice_port.kept_payments(db, invoice_id)
    if not kept:
        return 0
    refunded: dict[str, int] = {}  # by payment: a payment given back in parts has a link each (refund_links)
    for r in db[invoice_port.REFUNDS].find({"invoice": invoice_id}, {"amount": 1, "payment": 1}):
        pid = str(r.get("payment") or r["_id"])
        refunded[pid] = refunded.get(pid, 0) + int(r["amount"])
    return sum(max(0, int(p["amount"]) - refunded.get(p["_id"], 0)) for p in kept)


def cancel(db: Database, invoice_id: str, reason: str) -> dict[str, Any]:
    """draft or issued → cancelled, unless anything paid toward it is kept (not given back by a
    refund: ``payments.refund`` reverses a payment of an invoice still owed) or it is balanced; an
    invoice the patient owes nothing on (BHYT pays it all), balanced when issued, is cancelled too.

    The cancelled link is the decision (the settlement races for the same link). A payment
    recorded after the check below and before the link counts toward a cancelled invoice: after
    winning the link, every payment counted toward the invoice gets a refund task (a payment
    inserted later finds the link itself, ``payments.after_payment``)."""
    invoice = _store(db).read_doc("Invoice", invoice_id)["res"]
    link = state(db, invoice_id)
    if link is not None and link["state"] == "cancelled":
        invoice_port.route_to_refunds(db, invoice_id, "cancelled")  # a crashed winner's sweep, again
        _release_charges(db, invoice_id, invoice)  # and its release of the charges
        return _roll_forward(db, invoice_id, link)
    settled = link is not None and link["state"] == "balanced"
    settling = not settled and db[BALANCED].find_one({"_id": invoice_id}, {"_id": 1}) is not None
    if (settled or settling) and not _owes_nothing(invoice):
        raise InvoiceConflict(f"Invoice/{invoice_id} is {'balanced' if settled else 'being settled'}: "
                              f"{_PAID_NOT_CANCELLED}")
    # an invoice BHYT pays in full was settled when issued with nothing paid (_settle_covered): it is
    # cancelled as an issued one is, its cancelled link after the balanced one (or racing the
    # settlement for it: a settlement that loses to a cancel is void), once nothing paid is kept
    kept = _kept_after_refunds(db, invoice_id) if settled or settling else paid_total(db, invoice_id)
    if kept > 0:
        raise InvoiceConflict(f"Invoice/{invoice_id} has payments; refund them before cancelling")
    invoice_port.mark_cancel(db, invoice_id)  # before the link: payments check for it after their insert
    for _ in range(2):  # a covered invoice's settlement may take the link first: cancelled after it
        try:
            link = advance(db[STATES], invoice_id, link, {"state": "cancelled", "reason": reason})
            break
        except ClaimTaken as taken:
            link = taken.holder or state(db, invoice_id)
            if link["state"] == "balanced" and _owes_nothing(invoice):
                continue
            if link["state"] == "balanced":
                raise InvoiceConflict(f"Invoice/{invoice_id} was balanced meanwhile: {_PAID_NOT_CANCELLED}") from None
            if link["state"] != "cancelled":
                raise InvoiceConflict(f"Invoice/{invoice_id} changed meanwhile ({link['state']}); try again") from None
            break
    if link["state"] != "cancelled":
        raise InvoiceConflict(f"Invoice/{invoice_id} changed meanwhile ({link['state']}); try again")
    invoice_port.route_to_refunds(db, invoice_id, "cancelled")
    _release_charges(db, invoice_id, invoice)  # its services can go on a new invoice
    return _roll_forward(db, invoice_id, link)


# --------------------------------------------------------------------------- the consult's charge

def remember_request(db: Database, event: dict[str, Any]) -> None:
    """``teleconsult.consult.requested``: keep the consult's specialty (its price depends on it)."""
    data = event.get("data") or {}
    sr = data.get("serviceRequest")
    if isinstance(sr, str) and sr:
        claim_once(db[CONSULT_FACTS], sr, {"specialty": data.get("specialty"), "requester": data.get("requester"),
                                           "district": data.get("district")})


def charge_consult(db: Database, event: dict[str, Any], *, level_of: Any, base_salary: int) -> str:
    """``teleconsult.consult.completed``: the consult's ChargeItem and its Invoice, draft then
    issued, exactly once however often the event arrives (every id derives from the
    ServiceRequest). The invoice's issuer is the requesting clinic, where the patient pays;
    the price is the consult's specialty at that clinic's level; the patient is named as the
    event names them (``patientDisplay``: the EHR's name at submission; none in older events).
    The consult's Invoice id (the cashier's, when one invoiced the charge by hand before the
    consult's invoice was made: the event is then done). An event arriving again after a cashier
    cancelled the invoice changes nothing: the invoice exists, so no charge is taken again, and a
    cancelled one is not issued (no 409 for the bus to retry forever)."""
    data = event["data"]
    sr = data["serviceRequest"]
    patient = data["patient"]
    name = one_line(data.get("patientDisplay"))
    facility = _ref_id(data["requester"], "Organization")
    if facility is None:
        raise ValueError("the consult's requester is not an Organization")
    facts = db[CONSULT_FACTS].find_one({"_id": sr}) or {}
    district = data.get("district") or facts.get("district")
    store = _store(db)
    charge_id = derived_id("consult", "charge", sr)
    invoice_id = derived_id("consult", "invoice", sr)
    head = store.head("ChargeItem", charge_id)
    if head is None:
        definition = pricing.consult_definition(db, facts.get("specialty"), level_of(facility))
        account = account_for(db, patient, facility)
        completed = datetime.fromisoformat(str(data.get("completedAt")).replace("Z", "+00:00"))
        item = charge_item(patient=patient, facility=facility, definition=definition, account=account,
                           when=completed, enterer=data.get("performer"), supporting=[sr], patient_display=name)
        item = _create_once(store, item, charge_id)
    else:
        item = store.read_doc("ChargeItem", charge_id)["res"]
    try:
        create_draft(db, invoice_id, patient=patient, facility=facility, items=[item], base_salary=base_salary,
                     district=district, consult=sr, patient_display=name)
    except InvoiceConflict:
        held = charge_claims.holder(db, charge_id)
        if held is None or held == invoice_id:
            raise  # a race to retry (the bus redelivers)
        return held  # a cashier invoiced the charge by hand before its invoice was made: billed there
    # A delivery cut off between a version's claim (its history document) and its current document
    # left the ChargeItem unknown or the Invoice unknown or a draft to every reader, and billing's
    # relay rolls no version forward (its history documents carry no events): each version this
    # event makes is made current here (Store.ensure_current: rolled forward once its claim is past
    # the grace period; before that a 409, retried: its writer may still be at it, and the queue's
    # tiers, 1 s then 5 s, outlast the 5 s grace). Checked after the steps, not at each claim lost: a
    # racing delivery's current documents have landed by then.
    store.ensure_current("Invoice", invoice_id, 1)  # (issue reads it)
    link = state(db, invoice_id)
    if link is not None and link["state"] == "cancelled":
        return invoice_id  # cancelled at the desk (its charge given back, perhaps re-invoiced): done
    issue(db, invoice_id)
    store.ensure_current("ChargeItem", charge_id, 1)
    store.ensure_current("Invoice", invoice_id, 2)  # the issued version
    return invoice_id


# --------------------------------------------------------------------------- VietQR

@dataclass(frozen=True)
class Bank:
    bin: str
    account: str
    name: str = ""


def current_qr(db: Database, invoice_id: str, bank: Bank, ttl: timedelta, now: datetime | None = None, *,
               invoice: dict[str, Any] | None = None, due: int | None = None) -> dict[str, Any]:
    """The invoice's VietQR payload: the newest one handed out while it is unexpired and its
    amount is still the balance due; else a new one (the next link of the invoice's chain).
    ``invoice``: the resource the caller read in this request (not read again); ``due``: the
    balance due the caller computed from the invoice's payments (not read again)."""
    now = now or datetime.now(UTC)
    if invoice is None:
        invoice = _store(db).read_doc("Invoice", invoice_id)["res"]
    if invoice.get("status") != "issued":
        raise InvoiceConflict(f"Invoice/{invoice_id} is {invoice.get('status')}: no QR to pay")
    if due is None:
        due = invoice_port.view(invoice_id, {"res": invoice}).owed - paid_total(db, invoice_id)
    if due <= 0:
        raise InvoiceConflict(f"Invoice/{invoice_id} has nothing left to pay")
    reference = vietqr.reference_code(invoice_id)
    for _ in range(3):
        link = latest(db[QR_CODES], invoice_id)
        if link is not None:
            expires = link["expires"] if link["expires"].tzinfo else link["expires"].replace(tzinfo=UTC)
            if expires > now and link["amount"] == due and link["bin"] == bank.bin and link["account"] == bank.account:
                return {**link, "expires": expires}
        payload = vietqr.build(vietqr.VietQr(bin=bank.bin, account=bank.account, amount=due, reference=reference,
                                             purpose=vietqr.purpose_text(reference)))
        try:
            new = advance(db[QR_CODES], invoice_id, link, {"invoice": invoice_id, "payload": payload,
                                                            "reference": reference, "amount": due, "bin": bank.bin,
                                                            "account": bank.account, "issued": now,
                                                            "expires": now + ttl})
            return new
        except ClaimTaken:
            continue  # another request issued one meanwhile: serve it if it fits
    raise InvoiceConflict("the QR code is being renewed; try again")


__all__ = ["BALANCED", "Bank", "CHARGE_INVOICED", "CONSULT_FACTS", "InvoiceConflict", "PAYMENTS", "QR_CODES",
           "REFERENCES", "STATES", "account_for", "balance_due", "build_invoice", "cancel", "charge_amount",
           "charge_consult", "charge_item", "charges_of", "coverage_level", "create_draft", "current_qr", "derived_id",
           "issue", "money", "next_invoice_id", "paid_total", "remember_request", "state", "vnd"]
