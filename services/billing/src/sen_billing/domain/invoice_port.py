"""What payments need to know about invoices, in one place.

Invoices (their FHIR resources, amounts, reference codes and lifecycle) belong to
``domain.invoices``; payments read them only through these functions, so the two halves of
the service meet here and nowhere else.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from pymongo.database import Database
from sen_shared.bus.outbox import OUTBOX, PENDING
from sen_shared.claims import claim_once, latest
from sen_shared.fhir.body import unpack
from sen_shared.fhir.outcome import FhirError
from sen_shared.fhir.store import Store, rollforward_grace
from sen_shared.payment_reference import typed_reference

from .vietqr import reference_candidates, reference_code

PAYMENTS = "payments"
REFERENCES = "invoice_references"  # {_id: normalised reference code, invoice: id, issued: n}
ISSUED_LINK = "issued"  # in a reference record: the number of the invoice's ``issued`` link (absent in older ones)
# in an Invoice's current document, beside its resource (never in it: no read or search serves it), the
# same number, written with the issued version (invoices._roll_forward): a settling payment found the
# Invoice by its reference, so it claims the next link without reading the reference record (absent in
# invoices issued before it, and after a crashed write's roll-forward: the record is read then)
ISSUED_LINK_FIELD = "issued_link"
REFERENCE_SYSTEM = "urn:sen:billing:payment-reference"
# the invoices' lifecycle chains (``<invoice>/1`` draft, ``/2`` issued, then ``balanced`` or
# ``cancelled``): domain.invoices advances them to issued and cancelled, the settlement
# (receipts.settle_invoice) to balanced. Cancel and settlement race for the same next link, so
# exactly one of them wins: a cancel never succeeds on an invoice a payment has balanced.
STATES = "invoice_states"
REFUNDS = "refunds"  # a payment's refunds, link 1 {_id: payment id, ...}, link n {_id: refund<n>:<payment>, ...}
# (payments.refund, refund_links: each {payment, n, total, invoice, amount, reason, ...})
REFUND_TASKS = "refund_tasks"  # {_id: payment id, invoice, amount, facility, reason, payment}
# per invoice, a claims chain (``<invoice>/n``) deciding between giving a payment back while the
# invoice is still owed (``{state: "reversal", payment, amount}``: the invoice owes it again) and
# settling it (``{state: "settle"}``): a settling payment claims the link after the reversals it
# subtracted, a reversal the link after the last one it read, so a settlement never counts money
# given back, and no reversal follows a settlement (payments.refund, payments.after_payment)
GIVEBACKS = "invoice_givebacks"
REVERSAL = "reversal"
SETTLE = "settle"
# a give-back of a settled invoice's payment once its credit is gone (payments._after_settlement):
# ``{state: "refund", payment, amount}``, only after ``settle``; the invoice stays balanced
AFTER = "refund"


@dataclass(frozen=True)
class InvoiceView:
    id: str
    status: str  # draft | issued | balanced | cancelled | entered-in-error
    facility: str | None
    district: str | None
    owed: int  # what the patient pays, integer đồng (the patient's share)
    reference: str | None
    lines: list[dict[str, Any]] = field(default_factory=list)  # {text, patientShare}
    patient_display: str = ""
    title: str = ""
    version: int = 0  # the resource version read (for an If-Match write)
    issued_link: int | None = None  # the number of its lifecycle chain's ``issued`` link, when known
    resource: dict[str, Any] = field(default_factory=dict, repr=False)


def _store(db: Database) -> Store:
    return Store(db, service="billing", emit_events=False)


def _ref_id(reference: Any) -> str | None:
    text = (reference or {}).get("reference") if isinstance(reference, dict) else None
    return text.split("/", 1)[1] if isinstance(text, str) and "/" in text else None


def _extension(res: dict[str, Any], suffix: str) -> Any:
    for ext in res.get("extension") or []:
        if str(ext.get("url", "")).endswith(suffix):
            for key, value in ext.items():
                if key.startswith("value"):
                    return value
    return None


def _patient_share(line: dict[str, Any]) -> int:
    """A line's patient share: the component coded ``patient-share``, else base less deductions."""
    parts = line.get("priceComponent") or []
    for pc in parts:
        if any(c.get("code") == "patient-share" for c in (pc.get("code") or {}).get("coding") or []):
            return int((pc.get("amount") or {}).get("value", 0))
    base = sum(int((pc.get("amount") or {}).get("value", 0)) for pc in parts if pc.get("type") == "base")
    return base - sum(int((pc.get("amount") or {}).get("value", 0)) for pc in parts if pc.get("type") == "deduction")


def get(db: Database, invoice_id: str) -> InvoiceView | None:
    try:
        doc = _store(db).read_doc("Invoice", invoice_id)
    except FhirError:
        return None
    return view(invoice_id, doc)


def named(db: Database, text: str) -> InvoiceView | None:
    """The invoice a cashier types: its payment reference as the QR and the receipt print it
    (``HD0P2B6ZNPM``; case, spaces, dashes and look-alike letters do not matter, read as a transfer
    note's by ``sen_shared.payment_reference.typed_reference``, as the portal's search reads it), else its
    id; None when it is neither. Text that is a reference and more (a note) is no reference here: it
    names one invoice."""
    code = typed_reference(text)
    if code is not None:
        found = _by_reference(db, code)
        return view(*found) if found is not None else None
    return get(db, text)


def view(invoice_id: str, doc: dict[str, Any]) -> InvoiceView:
    """What payments need of a stored Invoice (``doc``: the store's ``{res, v}``, read by the caller)."""
    res = doc["res"]
    reference = next((i.get("value") for i in res.get("identifier") or []
                      if i.get("system") == REFERENCE_SYSTEM), None)
    owed = _extension(res, "patient-share")
    if isinstance(owed, dict):
        owed = owed.get("value")
    if owed is None:
        owed = ((res.get("totalNet") or {}).get("value"))
    lines = [{"text": ((li.get("chargeItemCodeableConcept") or {}).get("text")
                       or (li.get("chargeItemReference") or {}).get("display") or ""),
              "patientShare": _patient_share(li)}
             for li in res.get("lineItem") or []]
    link = doc.get(ISSUED_LINK_FIELD)
    return InvoiceView(id=invoice_id, status=str(res.get("status", "")), facility=_ref_id(res.get("issuer")),
                       district=_extension(res, "district"), owed=int(owed or 0), reference=reference,
                       lines=lines, patient_display=str((res.get("subject") or {}).get("display") or ""),
                       title=str((res.get("type") or {}).get("text") or ""), version=int(doc.get("v") or 0),
                       issued_link=link if isinstance(link, int) and not isinstance(link, bool) else None,
                       resource=res)


MAX_CANDIDATES = 8  # codes of one note looked up (a bank's note is a few hundred characters at most)
# an issued invoice always has its reference record: issue() claims it before it writes the
# issued version, and only a settlement (of an issued invoice) writes balanced after that
ISSUED_STATES = ("issued", "balanced")
_READ = {"res": 1, "v": 1, "lu": 1, "del": 1, ISSUED_LINK_FIELD: 1}  # what Store.read_doc fetches, and the link


def _by_reference(db: Database, code: str) -> tuple[str, dict[str, Any]] | None:
    """The Invoice carrying ``code`` as its payment reference (id and stored ``{res, v, ...}``),
    by the store's index field of its ``identifier`` search parameter: one query. Only the
    invoice whose id the code derives from counts (the code IS a function of the id, so no
    other resource can claim it by carrying it)."""
    for doc in _store(db).current("Invoice").find({"sp_identifier": f"{REFERENCE_SYSTEM}|{code}"}, _READ):
        if not doc.get("del") and reference_code(str(doc["_id"])) == code:
            return str(doc["_id"]), unpack(doc)  # type: ignore[return-value]
    return None


def find_by_note(db: Database, note: str) -> InvoiceView | None:
    """The invoice whose reference code the transfer note carries (``vietqr.reference_candidates``:
    case, spaces, punctuation, diacritics and look-alike letters do not matter), or None. Every
    well-formed code in the note is a candidate (``HD HD…`` folds to ``HDHD…``, whose first window
    may pass the check); the first one that is an issued invoice's wins, asked in the note's order
    until one hits (a note has two candidates about once in 30 when it repeats the ``HD``, and
    more only when it names several codes).

    Each candidate is ONE query: the Invoice by its reference identifier (an equality on a
    top-level index field, pushed down by FerretDB), not the reference record then the Invoice
    (two round trips; measured on 700 bench invoices, 23:00 UTC: 1.1 ms of CPU against 2.1 ms
    over client, FerretDB and PostgreSQL). An issued or balanced Invoice went through ``issue()``,
    so its reference record exists; any other status (a draft, a cancelled draft) matches only
    when its reference record does, as before. The issued link's number comes with the Invoice
    (:data:`ISSUED_LINK_FIELD`, written with its issued version); an Invoice without it (issued
    before it was written) has the record read when a payment settles it (:func:`issued_link`)."""
    for code in reference_candidates(note or "")[:MAX_CANDIDATES]:
        found = _by_reference(db, code)
        if found is None:
            continue
        invoice = view(*found)
        if invoice.status in ISSUED_STATES:
            return invoice
        hit = db[REFERENCES].find_one({"_id": code}, {"invoice": 1, ISSUED_LINK: 1})
        if hit is not None and hit.get("invoice") == invoice.id:
            return _with_link(invoice, hit)
    return None


def _with_link(invoice: InvoiceView, record: dict[str, Any]) -> InvoiceView:
    link = record.get(ISSUED_LINK)
    return replace(invoice, issued_link=link) if isinstance(link, int) else invoice


def issued_link(db: Database, invoice: InvoiceView) -> int | None:
    """The number of the invoice's ``issued`` link: as its Invoice document carried it
    (:data:`ISSUED_LINK_FIELD`, no read), else as its reference record does (one point read;
    None: unknown, an older record; the settlement then reads the chain)."""
    if invoice.issued_link is not None or not invoice.reference:
        return invoice.issued_link
    hit = db[REFERENCES].find_one({"_id": invoice.reference}, {"invoice": 1, ISSUED_LINK: 1})
    if hit is None or hit.get("invoice") != invoice.id:
        return None
    return _with_link(invoice, hit).issued_link


def paid_total(db: Database, invoice_id: str) -> int:
    """What counts toward the invoice: its payments less those given back (reversed) while it
    was owed (the give-backs chain is read only when there are payments)."""
    return sum(int(p["amount"]) for p in kept_payments(db, invoice_id))


def givebacks(db: Database, invoice_id: str) -> list[dict[str, Any]]:
    """The invoice's give-backs chain, oldest link first (reversals, then perhaps ``settle``)."""
    return sorted(db[GIVEBACKS].find({"k": invoice_id}), key=lambda link: int(link["n"]))


def reversed_payments(links: list[dict[str, Any]]) -> set[str]:
    return {str(link["payment"]) for link in links if link.get("state") == REVERSAL}


def kept_payments(db: Database, invoice_id: str) -> list[dict[str, Any]]:
    """The payments counted toward the invoice and not given back."""
    counted = counted_payments(db, invoice_id)
    if not counted:
        return counted
    given = reversed_payments(givebacks(db, invoice_id))
    return [p for p in counted if p["_id"] not in given]


CANCEL_MARK = "cancel"  # the ``marker`` of a cancel's mark in ``payments`` (see mark_cancel)


def counted_payments(db: Database, invoice_id: str) -> list[dict[str, Any]]:
    """The payments counted toward an invoice (without their outbox)."""
    return payments_and_mark(db, invoice_id)[0]


def payments_and_mark(db: Database, invoice_id: str,
                      mine: Mapping[str, Any] | None = None) -> tuple[list[dict[str, Any]], bool]:
    """The payments counted toward an invoice, and whether a cancel has marked it (one query).

    ``mine``: a payment of this invoice the caller has just inserted, as inserted (it is
    insert-only: the relay changes only its outbox fields). The query then leaves it out
    (``_id`` ``$ne``, pushed down by FerretDB) and the list takes it as it is, without its
    outbox: FerretDB decodes every document it returns, and the payment's own is one of each
    payment's reads (measured, 400 invoices, 23:30 UTC: 0.73 -> 0.55 ms of database CPU with no
    other payment, 1.2 -> 0.98 ms with two). Oldest first (received, then id)."""
    query: dict[str, Any] = {"invoice": invoice_id}
    if mine is not None:
        query["_id"] = {"$ne": mine["_id"]}
    docs = list(db[PAYMENTS].find(query, {"outbox": 0}))
    counted = [d for d in docs if not d.get("marker")]
    if mine is not None:
        counted.append({k: v for k, v in mine.items() if k not in (OUTBOX, PENDING)})
        counted.sort(key=lambda d: (_utc(d.get("received_at")), str(d["_id"])))
    return counted, any(d.get("marker") == CANCEL_MARK for d in docs)


def _utc(at: Any) -> datetime:
    """A stored time, comparable whatever the client's ``tz_aware`` (naive ones are UTC)."""
    if not isinstance(at, datetime):
        return datetime.min.replace(tzinfo=UTC)
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def mark_cancel(db: Database, invoice_id: str) -> None:
    """A cancel's mark among the invoice's payments, inserted BEFORE the cancel claims its link:
    a payment's own count of the invoice's payments (read after its insert) then shows whether a
    cancel may be under way, and only then does it read the lifecycle chain. A mark with no
    amount, day, facility or shift: no total, report or queue counts it."""
    claim_once(db[PAYMENTS], f"{CANCEL_MARK}:{invoice_id}", {"invoice": invoice_id, "marker": CANCEL_MARK,
                                                            "amount": 0})


def lifecycle(db: Database, invoice_id: str) -> dict[str, Any] | None:
    """The newest link of the invoice's lifecycle chain (its ``state``; None: no chain yet)."""
    return latest(db[STATES], invoice_id)


def lifecycle_state(db: Database, invoice_id: str) -> str | None:
    link = lifecycle(db, invoice_id)
    return str(link["state"]) if link is not None else None


def refund_task(db: Database, payment: dict[str, Any], invoice_id: str, why: str) -> bool:
    """Claim the refund task of a payment that counts toward nothing owed (``why``: the invoice is
    ``cancelled`` or already ``balanced``); once per payment, whoever notices first."""
    created, _ = claim_once(db[REFUND_TASKS], payment["_id"], {
        "invoice": invoice_id, "amount": int(payment["amount"]), "facility": payment.get("facility"),
        "reason": f"invoice-{why}", "payment": payment["_id"]})
    return created


def route_to_refunds(db: Database, invoice_id: str, why: str,
                     payments: list[dict[str, Any]] | None = None) -> int:
    """A refund task for every payment counted toward a cancelled invoice (the cancel's winner
    calls it after its link, and so does a payment that finds the link after its own insert: a
    payment racing a cancel is seen by one of the two, never by neither)."""
    if payments is None:  # those given back already (a reversal's refund, keyed by the payment) need no task
        payments = counted_payments(db, invoice_id)
        # a payment's refunds are links of its own (refund_links): each names its payment
        done = {str(r.get("payment") or r["_id"]) for r in db[REFUNDS].find({"invoice": invoice_id}, {"payment": 1})
                } if payments else set()
        payments = [p for p in payments if p["_id"] not in done]
    return sum(refund_task(db, p, invoice_id, why) for p in payments)


def balance_due(db: Database, invoice_id: str) -> int:
    """What is still owed (negative: paid too much). The amount owed is ours, never the payer's."""
    invoice = get(db, invoice_id)
    if invoice is None:
        raise LookupError(invoice_id)
    return invoice.owed - paid_total(db, invoice_id)


def mark_balanced(db: Database, invoice_id: str, known: InvoiceView | None = None) -> None:
    """The Invoice's FHIR status becomes ``balanced`` (called by the settlement claim's winner only).
    ``known``: the version already read, tried first (one read less).

    Its version follows the one read; a lost claim means another writer took that next version
    (a cancel, or the issue's own writer when ``known`` was read before its version was written).
    What won decides: ``balanced`` (a repair of this settlement) or ``cancelled`` ends it; any
    other version is waited for until it is current (:func:`_written`) and the next attempt
    follows it. So every attempt after the first follows a newer version than the one before,
    and the few versions an issued invoice can still get (issued, cancelled) fit in the bound."""
    store = _store(db)
    for attempt in range(5):
        if attempt == 0 and known is not None and known.resource and known.version:
            doc = {"v": known.version, "res": known.resource}
        else:
            doc = store.read_doc("Invoice", invoice_id)
        res = dict(doc["res"])
        if res.get("status") in FINAL_STATES:
            return  # a cancel that won the race keeps its status; the payments stay refundable
        res["status"] = "balanced"
        try:
            if attempt == 0 and known is not None and known.version:
                # the version just read stands in for the store's head read; a changed invoice
                # makes the versioned write miss (409) and the next round reads it again
                store.apply(store.prepare_update(res, invoice_id, {"v": known.version}))
            else:
                store.update(res, invoice_id, if_match=int(doc["v"]))
            return
        except FhirError as err:
            if err.status not in (409, 412):
                raise
        # the version after ours is claimed: by whom? Its history document says (its current
        # document may not be written yet)
        following = int(doc["v"]) + 1
        try:
            won = store.vread_doc("Invoice", invoice_id, str(following))
        except FhirError:
            continue  # (a deletion: the next read says what stands)
        if (won.get("res") or {}).get("status") in FINAL_STATES:
            return
        _written(store, invoice_id, following)
    raise FhirError(f"Invoice/{invoice_id} keeps changing; its settlement is finished by the repair job",
                    status=409, code="conflict")


FINAL_STATES = ("balanced", "cancelled", "entered-in-error")  # no settlement writes over them
_FIRST_PAUSE, _LONGEST_PAUSE = 0.002, 0.1  # seconds between looks at a version being written


def _written(store: Store, invoice_id: str, version: int) -> None:
    """Return once the Invoice's claimed ``version`` is current: its writer is between its claim and
    its current write (milliseconds; more on a loaded machine), or, cut off there, the version is
    rolled forward once its claim is past the store's grace period (``Store.ensure_current``; its
    409 'being written' until then). Re-reading the current document without waiting made no
    progress: five attempts in a row read the version before it while the writer was descheduled."""
    deadline = time.monotonic() + rollforward_grace().total_seconds() + 1
    pause = _FIRST_PAUSE
    while True:
        try:
            store.ensure_current("Invoice", invoice_id, version)
            return
        except FhirError:
            if time.monotonic() > deadline:
                raise
        time.sleep(pause)  # waiting on the state above: the version current, or its claim stale
        pause = min(pause * 2, _LONGEST_PAUSE)


def create_reconciliation(db: Database, rid: str, resource: dict[str, Any], *, fresh: bool = False) -> None:
    """Create it once (``fresh``: the settlement's first try, nothing there yet to look for)."""
    store = _store(db)
    if not fresh and store.head("PaymentReconciliation", rid) is not None:
        return  # a repaired settlement made it already
    try:
        store.create(resource, rid)
    except FhirError as err:
        if err.status != 409:
            raise
