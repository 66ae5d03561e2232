"""Cashiers: the invoice queue, an invoice with its VietQR code (the page turns to Paid by itself:
htmx polls the invoice's payment summary every 2 s, which works through any proxy), the receipt,
cash and refunds, cancelling an invoice made by mistake (billing's ``$cancel``: its services are
given back, and the cancelled invoice's page links to a new invoice for the same patient), the
unmatched-transfers queue, and the shift. Built on specs/billing.yaml: FHIR ``Invoice``,
``Invoice/{id}/$vietqr`` and ``$cancel``, and the ``/payments/...`` endpoints."""

from __future__ import annotations

import hashlib
import re
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from flask import copy_current_request_context, g, render_template, request, url_for
from flask_babel import gettext
from sen_shared.payment_reference import typed_reference

from . import backend, backend_message, bp, charges, daily_report, is_htmx, login_required, searches
from .backend import BackendError, call, entries, fhir_get, outage_status, page_status, shared_get
from .charges import in_place as _in_place
from .charges import request_key
from .clinic import done_in_place
from .confirming import confirmation
from .confirming import status as confirming_status
from .formatting import human_name, parse_instant, payment_method, vnd
from .forms import CashForm, InvoiceCancelForm, InvoiceSearchForm, MatchForm, RefundForm, ShiftCloseForm, ShiftOpenForm
from .notices import flash, steps_done  # flash: said on the page the answer leads to, that page's alone
from .patients import FHIR_ID, lookup, patient_id, patient_names
from .refusals import gap_message, given_back_message, shift_needs_a_facility, whole_payment_message


def _json(method: str, path: str, body: Any = None, params: Any = None, key: str | None = None) -> Any:
    """billing's JSON answer; a POST goes with ``key`` as its ``Idempotency-Key`` (one of the form's,
    so a second click is the same request), else a fresh one (a retry of this call)."""
    r = call("billing", method, path, json=body, params=params, accept="application/json",
             idempotent=method == "POST" and key is None, headers={"Idempotency-Key": key} if key else None)
    return r.json() if r.content else {}


QUEUE_SIZE = 50  # invoices awaiting payment a queue page (and a search) shows


def _patient_id(inv: dict[str, Any]) -> str | None:
    return patient_id(inv.get("subject"))


def patient_pays(inv: dict[str, Any]) -> Any:
    """What the patient owes on the Invoice: billing's ``totalNet`` (the patient's share, after BHYT),
    ``totalGross`` where billing gives no net."""
    return (inv.get("totalNet") or inv.get("totalGross") or {}).get("value")


def summaries(invoices: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each invoice's payment summary, by id: billing's ``/payments/invoices?id=…`` for all of them in
    one request (kept ``SEN_PORTAL_CACHE_SECONDS``; billing's Invoice search carries no payments).
    When billing does not answer, none (the rows show the Invoices' totals)."""
    ids = list(dict.fromkeys(str(inv["id"]) for inv in invoices if inv.get("id")))[:100]
    if not ids:
        return {}
    try:
        found = shared_get("billing", "/payments/invoices", params=[("id", i) for i in ids],
                           accept="application/json", seconds=backend.settings().portal_cache_seconds)
    except BackendError:
        return {}
    return {str(s.get("invoice")): s for s in found.get("summaries") or []
            if isinstance(s, dict) and isinstance(s.get("balanceDue"), int)}


def to_refund(s: dict[str, Any] | None) -> bool:
    """Money to give back on the invoice: a credit (paid more than owed), a payment that came after it
    was paid or cancelled (``lateInvoice``) or one of a cancelled invoice, not given back yet (its
    ``refundable``; from a summary without it, the refund tasks not covered by what was refunded)."""
    if not s:
        return False
    if int(s.get("credit") or 0) > 0:
        return True
    payments = s.get("payments") or []
    if any("refundable" in p for p in payments):
        return any(int(p.get("refundable") or 0) > 0 and (p.get("lateInvoice") or s.get("status") == "cancelled")
                   for p in payments)
    tasks = sum(int(t.get("amount") or 0) for t in s.get("refundTasks") or [])
    return tasks > int(s.get("refunded") or 0)


def net_paid(s: dict[str, Any] | None) -> int:
    """What the patient paid toward the invoice and kept paid: billing's ``paid`` (already net of the
    payments given back whole while it was owed) less the credit given back since (it read "Đã trả
    74.000 ₫ trên 49.000 ₫" after 25.000 ₫ of it went back). The credit refunded is not the summary's
    ``refunded``, which counts those whole give-backs too: up to what is owed, then what credit is
    left (``credit``: paid over owed less the credit refunded)."""
    if not s:
        return 0
    paid, owed, credit = int(s.get("paid") or 0), int(s.get("owed") or 0), int(s.get("credit") or 0)
    return min(paid, owed) + credit if paid > owed else paid


def _issued_at(inv: dict[str, Any]) -> float:
    at = parse_instant(inv.get("date"))
    return at.timestamp() if at else float("inf")


def queue_rows(invoices: list[dict[str, Any]], names: dict[str, str] | None = None,
               sums: dict[str, dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """The rows the queue (and a search) shows: reference, patient, date, status, and ``amount``, what
    is left to pay: the summary's balance due (``sums``, else asked here) after what was paid already,
    the Invoice's total for the patient where billing gave no summary; ``owed`` that total when part
    of it is paid, ``gross`` the total before BHYT when BHYT pays part of it; ``refund`` when money
    is to be given back (names from the EHR, one request)."""
    if names is None:
        names = patient_names([pid for inv in invoices if (pid := _patient_id(inv))])
    if sums is None:
        sums = summaries(invoices)
    rows = []
    for inv in invoices:
        owed, gross = patient_pays(inv), (inv.get("totalGross") or {}).get("value")
        s = sums.get(str(inv.get("id")))
        status = (s or {}).get("status") or inv.get("status")
        amount = s["balanceDue"] if s else owed
        if status == "cancelled":
            amount = None
        rows.append({"id": inv.get("id"), "reference": invoice_reference(inv), "pid": _patient_id(inv),
                     "name": names.get(_patient_id(inv) or "", "—"), "date": inv.get("date"), "amount": amount,
                     "owed": owed if amount is not None and owed != amount else None,
                     "paid": net_paid(s),
                     "gross": gross if gross is not None and gross != owed else None, "status": status,
                     "refund": to_refund(s)})
    return rows


PHONE_SEPARATORS = re.compile(r"[\s.\-()]")
VN_PHONE = re.compile(r"0\d{9,10}")


def typed_phone(q: str) -> str | None:
    """A Vietnamese phone number as a cashier types what the patient says (``0913 000 001``,
    ``0913.000.001``, ``+84 913 000 001``), written as the record keeps it (``0913000001``); None for
    anything else (a name, a reference)."""
    digits = PHONE_SEPARATORS.sub("", q)
    if digits.startswith("+84"):
        digits = "0" + digits[3:]
    elif digits.startswith("84") and len(digits) in (11, 12):
        digits = "0" + digits[2:]
    return digits if VN_PHONE.fullmatch(digits) else None


def find_invoices(q: str) -> list[dict[str, Any]]:
    """The invoices a cashier's search names, of every status (awaiting payment, paid, cancelled: a
    receipt to print again, money to give back), newest first: a reference is billing's Invoice
    search by identifier (then the names, one EHR request); a phone number (:func:`typed_phone`) is the
    EHR's Patient search by phone; a name is the EHR's Patient search
    (accent-insensitive: ``nguyen van a`` finds "Nguyễn Văn A"), then billing's Invoice search by
    those subjects. What looks like a reference but is none (a name such as "hd..." typed without
    spaces) is searched as a name too. A BackendError of either search is the caller's."""
    code = typed_reference(q)  # as billing reads a reference: case, spaces, dashes, look-alikes, its check
    params = {"_count": str(QUEUE_SIZE), "_sort": "-date"}
    if code is not None:
        found = entries(fhir_get("billing", "/fhir/Invoice", {**params, "identifier": f"{REFERENCE_SYSTEM}|{code}"}),
                        "Invoice")
        if found:
            return queue_rows(found)
    phone = typed_phone(q)  # a number said across the counter: the EHR's phone search, else a name
    asked = {"phone": phone} if phone else {"name": q.strip()}
    patients = entries(fhir_get("ehr", "/fhir/Patient", {**asked, "_elements": "name", "_count": str(QUEUE_SIZE)}),
                       "Patient")
    names = {str(p.get("id")): human_name(p) for p in patients if FHIR_ID.fullmatch(str(p.get("id")))}
    if not names:
        return []
    subjects = ",".join(f"Patient/{pid}" for pid in sorted(names))
    found = entries(fhir_get("billing", "/fhir/Invoice", {**params, "subject": subjects}), "Invoice")
    return queue_rows(sorted(found, key=_issued_at, reverse=True), names)


@bp.route("/invoices")
@login_required("cashier")
def invoices() -> Any:
    """The queue: billing's invoices awaiting payment, oldest first (the patient waiting longest comes
    first), with what is left to pay on each (their summaries) and their patients' names (one EHR
    request). ``?s=``: a search this session made (:mod:`.searches`), its results instead (Back, refresh)."""
    q = searches.recall("invoices")
    if q:  # a service that did not answer: said on the page, with an outage's status
        rows, problem, status = invoices_found(q)
        return render_template("invoices.html", rows=rows, problem=problem, form=InvoiceSearchForm(q=q),
                               searched=True, title=gettext("Invoices")), status
    problem, rows, status = None, [], 200
    params = {"status": "issued", "_count": str(QUEUE_SIZE), "_sort": "date"}
    try:
        found = entries(fhir_get("billing", "/fhir/Invoice", params, cached=True), "Invoice")
        rows = queue_rows(sorted(found, key=_issued_at))
    except BackendError as err:  # the queue could not be read: said on the page, with an outage's status
        problem, status = backend_message(err), page_status(err)
    return render_template("invoices.html", rows=rows, problem=problem, form=InvoiceSearchForm(), searched=False,
                           title=gettext("Invoices")), status


def invoices_found(q: str) -> tuple[list[dict[str, Any]], str | None, int]:
    """The rows of an invoice search (:func:`find_invoices`), the refusal of a service that did not answer and
    the page's status (200, else :func:`.backend.page_status`: 503 down or slow, 502 failed, a refusal's own)."""
    try:
        return find_invoices(q), None, 200
    except BackendError as err:
        return [], backend_message(err), page_status(err)


@bp.route("/invoices/search", methods=["POST"])
@login_required("cashier")
def invoice_search() -> Any:
    """POST, so a patient's name never appears in a URL or an access log; htmx swaps the results in
    and the address names the search by a key (``/invoices?s=``, :mod:`.searches`: Back and refresh
    show it again), and without JavaScript the whole page comes back with them."""
    form = InvoiceSearchForm()
    rows, problem, status, headers = [], None, 200, {}
    if form.validate_on_submit():
        rows, problem, status = invoices_found(form.q.data)
        headers = searches.push_url("web.invoices", "invoices", form.q.data)
    htmx = request.headers.get("HX-Request") == "true"
    if htmx and status >= 400:  # htmx swaps no 4xx/5xx by itself: app.js swaps one that names its target
        headers = {**headers, "HX-Retarget": "#invoice-results"}
    return render_template("_invoice_rows.html" if htmx else "invoices.html", rows=rows, problem=problem, form=form,
                           searched=True, title=gettext("Invoices")), status, headers


def summary(iid: str, *, kept: bool = False) -> dict[str, Any]:
    """The payment status, fresh: the status box (and the Paid turn) reads it so; requests at the same
    moment share one answer. ``kept``: an answer up to ``SEN_PORTAL_CACHE_SECONDS`` old will do (the
    invoice page's shell, whose status box asks for the fresh one as soon as the page is shown)."""
    seconds = backend.settings().portal_cache_seconds if kept else 0
    return shared_get("billing", f"/payments/invoices/{iid}", accept="application/json", seconds=seconds)


def is_paid(s: dict[str, Any] | None) -> bool:
    """Balanced, or nothing left due on what is owed; a cancelled invoice (nothing due either) is not."""
    if not s or s.get("status") == "cancelled":
        return False
    return s.get("status") == "balanced" or (s.get("owed", 0) > 0 and s.get("balanceDue") == 0)


def cancellable(s: dict[str, Any]) -> bool:
    """Billing cancels a draft or issued invoice with nothing paid toward it (else 409: refund first);
    ``paid`` is net of the payments given back (the invoice owes them again). An invoice BHYT pays in
    full (nothing owed: settled when issued) too, unless a payment on it is kept (its credit)."""
    if covered(s):
        return not int(s.get("credit") or 0)
    return s.get("status") in ("draft", "issued") and not int(s.get("paid") or 0) and not is_paid(s)


def covered(s: dict[str, Any] | None) -> bool:
    """Settled with nothing for the patient to pay: BHYT pays all of it."""
    return bool(s) and s.get("status") == "balanced" and not int(s.get("owed") or 0)


def refundables(s: dict[str, Any]) -> list[dict[str, Any]]:
    """The payments a refund can give something back of now (billing's ``refundable`` > 0: a late
    one, one toward an invoice still owed, a paid invoice's credit); a summary without it (an older
    billing): every payment, as before."""
    payments = s.get("payments") or []
    if payments and all("refundable" in p for p in payments):
        return [p for p in payments if int(p.get("refundable") or 0) > 0]
    return payments


def after_refundables(s: dict[str, Any]) -> list[dict[str, Any]]:
    """The payments of a paid invoice with no credit left that a refund after settlement can give back
    (billing's ``refundableAfterSettlement``: a charge made in error, a service not given); the invoice
    stays paid, its receipt stands and shows the refund."""
    return [p for p in s.get("payments") or [] if int(p.get("refundableAfterSettlement") or 0) > 0]


def refund_offer(s: dict[str, Any]) -> tuple[list[dict[str, Any]], list[str]]:
    """The payments the page's refund box offers (those with something refundable now, then a paid
    invoice's payments a refund after settlement can give back), and the ids of the latter: the form
    carries them as shown (``after``), so billing is asked for a refund after settlement
    (``afterSettlement``) only of a payment the cashier saw offered as one."""
    after = after_refundables(s)
    ids = [str(p.get("id")) for p in after]
    return [p for p in refundables(s) if str(p.get("id")) not in ids] + after, ids


def refundable_total(s: dict[str, Any]) -> int:
    """What can be given back on the invoice now, in all: each late payment whole; toward an invoice
    still owed each payment whole (the invoice owes it again); of a paid or cancelled invoice its
    credit, once (each payment's ``refundable`` is capped by the same credit: their sum says more)."""
    # a paid invoice's payments, each once, all or part of it (no credit is left: billing's rule)
    paid_back = sum(int(p["refundableAfterSettlement"]) for p in after_refundables(s))
    late = [p for p in refundables(s) if p.get("lateInvoice")]
    counted = [p for p in refundables(s) if not p.get("lateInvoice")]
    total = sum(int(p.get("refundable", p.get("amount")) or 0) for p in late)
    toward = sum(int(p.get("refundable", p.get("amount")) or 0) for p in counted)
    if s.get("status") != "issued" or is_paid(s):  # the credit (each payment's share of it is at most all of it)
        credit = max([int(s.get("credit") or 0), *(int(p.get("refundable") or 0) for p in counted)])
        toward = min(toward, credit)
    return total + toward + paid_back


def payments_digest(s: dict[str, Any] | None) -> str:
    """What the page's payments and refunds box shows, as a short digest (the status box's ``?pays=``):
    the status box swaps the box in again only when this changed (a cashier typing a refund keeps it)."""
    if not s:
        return ""
    shown = [(p.get("id"), p.get("amount"), p.get("outcome"), p.get("refundable"), p.get("refunded"),
              p.get("refundableAfterSettlement")) for p in s.get("payments") or []]
    shown.append(tuple(sorted((r.get("payment"), r.get("amount")) for r in s.get("refunds") or [])))
    shown.append((s.get("status"), is_paid(s)))  # the Paid turn and a cancel change the box's hints and offers
    return hashlib.sha256(repr(shown).encode()).hexdigest()[:12]


@bp.app_template_global("transaction_of")
def transaction_of(p: dict[str, Any]) -> str:
    """A transfer's bank transaction id (billing's payment id is ``<provider>:<transaction>``), for the
    cashier to tell two transfers of the same amount apart; "" for cash (its id is the desk's own). A
    transfer assigned from the unmatched queue is billing's ``assign:<provider>:<transaction>``: its
    transaction is the one of the transfer it was assigned from (``assignedFrom``)."""
    pid = str(p.get("assignedFrom") or p.get("id") or "")
    if p.get("channel") == "cash" or ":" not in pid:
        return ""
    return pid.split(":", 1)[1][:40]


bp.add_app_template_global(payment_method, "payment_method")


def _refund_form(s: dict[str, Any]) -> RefundForm:
    """A new refund form: its own key, the first payment that can be refunded chosen, and "Refund by"
    that payment's own way (a transfer is given back by transfer, cash from the drawer). A paid
    invoice's payment line links here with ``?refund=<payment>``: that payment chosen."""
    rows = refund_offer(s)[0]
    first = next((p for p in rows if p.get("id") == request.args.get("refund")), None) or next(iter(rows), {})
    return RefundForm(formdata=None, txn=uuid.uuid4().hex, payment=first.get("id"),
                      method="cash" if first.get("channel") == "cash" else "transfer")


_pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="portal-invoice")


def _attempt(fn: Any) -> Any:
    try:
        return fn(), None
    except BackendError as err:
        return None, err


def desk(iid: str) -> dict[str, Any]:
    """What the invoice page shows, in one billing request (``/payments/invoices/{id}/desk``): the
    payment summary, the FHIR Invoice (``resource``) and its VietQR (``qr``) while something is due,
    else null (``qrProblem`` says why when one was due). Kept ``SEN_PORTAL_CACHE_SECONDS`` for this
    user (the page's shell; its status box reads the summary fresh)."""
    return shared_get("billing", f"/payments/invoices/{iid}/desk", accept="application/json",
                      seconds=backend.settings().portal_cache_seconds)


def _invoice_page(iid: str, status: int = 200, **ctx: Any) -> Any:
    """The invoice page: the summary, the Invoice and its QR in one billing answer (:func:`desk`).

    The page is a shell that may use this user's answer kept a few seconds (a reload, the page
    after the queue); its status box asks for the fresh summary the moment it is shown (htmx
    ``load``, then every 2 s) and that answer corrects the amounts and, once paid, takes the QR
    and the cash form away (out-of-band swaps): the cashier never waits more than one status read
    for Paid, and a reload under load does not wait on billing's summary. The user's own payment
    or refund forgets their kept answers (backend.call), so the page after it is fresh."""
    # the patient's name at the same time as the desk answer: the queue's link names the patient's
    # opaque id (``?p=``, no name); the Invoice's subject decides whose name shows
    hint = request.args.get("p", "")
    hint = hint if FHIR_ID.fullmatch(hint) else ""
    # with the record's identifiers: the card form's prefill reads the BHYT number there when the EHR holds no
    # Coverage, which was a second search of the same Patient
    name_job = _pool.submit(copy_current_request_context(lookup), [hint], "name,identifier") if hint else None
    s = desk(iid)  # a BackendError (billing down, 403, 404) is the error page
    inv, qr = s.get("resource"), s.get("qr")
    pid = _patient_id(inv or {})
    found = name_job.result() if name_job is not None else {}
    if pid and pid != hint:  # opened without the queue's link (or with another patient's): read it now
        found = lookup([pid], "name,identifier")
    record = (found or {}).get(pid or "")
    patient = human_name(record) if record is not None else "—"
    problem = ctx.pop("problem", None)
    if is_paid(s) or s.get("status") != "issued":
        qr = None
    elif qr is None and s.get("qrProblem"):
        problem = problem or backend_message(BackendError("refused", "billing", 0, str(s["qrProblem"])))
    if qr is not None and _passed(_expires(qr)):  # this user's kept answer, older than its code: ask again
        try:
            qr = _json("GET", f"/fhir/Invoice/{iid}/$vietqr")
        except BackendError:
            pass  # the code shown as it was; the status box asks again at its next poll
    qr = _versioned(qr)
    forms = ctx.pop("forms", {})  # the form posted (with its errors), else a new one where the page shows it
    if "cash_form" not in forms and not is_paid(s) and s.get("status") != "cancelled":
        forms["cash_form"] = _cash_form(s.get("balanceDue"))
    if "cancel_form" not in forms and cancellable(s):
        forms["cancel_form"] = InvoiceCancelForm(formdata=None, prefix="cancel", txn=uuid.uuid4().hex)
    offer, refund_after = refund_offer(s)
    box_problem = ctx.pop("box_problem", None)  # said on the refund box; with no box shown, as the page's problem
    if box_problem and not offer:
        problem = problem or box_problem
    if "refund_form" not in forms and offer:
        forms["refund_form"] = _refund_form(s)
    if "card_form" not in forms and card_step(s, inv):
        forms["card_form"] = charges.card_form(pid, record)
    done = steps_done()  # the step this page follows, said once (notices)
    return render_template("invoice.html", s=s, inv=inv, iid=iid, qr=qr, problem=problem, paid=is_paid(s),
                           issued=done.get("issued"), carded=done.get("carded"), refunded=done.get("refunded"),
                           links=replacement_links(inv), cancel_shown="cancel_form" in forms,
                           refundables=offer, refund_after=refund_after, refundable_total=refundable_total(s),
                           pays=payments_digest(s),
                           patient=patient, pid=pid, due=qr.get("amount") if qr else None,
                           until=_expires(qr), title=gettext("Invoice"), **forms, **ctx), status


REPLACES_EXT = "https://sen.vn/fhir/StructureDefinition/invoice-replaces"
REPLACED_BY_EXT = "https://sen.vn/fhir/StructureDefinition/invoice-replaced-by"


def replacement_links(inv: dict[str, Any] | None) -> dict[str, list[dict[str, str]]]:
    """The invoices this one replaces and the one that replaced it (billing's extensions
    ``invoice-replaces`` / ``invoice-replaced-by``: the BHYT card's re-invoice), each ``{id, reference}``
    named by its bill reference (HD…; one billing search for them all, kept; its id when billing does
    not answer). Nothing asked when the Invoice names none."""
    found: dict[str, list[str]] = {"replaces": [], "replaced_by": []}
    for ext in (inv or {}).get("extension") or []:
        key = {REPLACES_EXT: "replaces", REPLACED_BY_EXT: "replaced_by"}.get(str(ext.get("url") or ""))
        ref = str((ext.get("valueReference") or {}).get("reference") or "")
        iid = ref.removeprefix("Invoice/")
        if key and ref.startswith("Invoice/") and FHIR_ID.fullmatch(iid) and iid not in found[key]:
            found[key].append(iid)
    ids = found["replaces"] + found["replaced_by"]
    references: dict[str, str] = {}
    if ids:
        try:
            bundle = fhir_get("billing", "/fhir/Invoice", {"_id": ",".join(dict.fromkeys(ids)),
                                                           "_elements": "identifier"}, cached=True)
            references = {str(i.get("id")): invoice_reference(i) for i in entries(bundle, "Invoice")}
        except BackendError:
            pass
    return {k: [{"id": i, "reference": references.get(i) or i} for i in v] for k, v in found.items()}


def _cash_form(due: Any) -> CashForm:
    """A new cash form: the balance due prefilled, and the cash's transactionId made now, so a second
    click (or a reload's resubmit) of this form records nothing new (billing answers the first)."""
    return CashForm(formdata=None, prefix="cash", amount=due or None, txn=uuid.uuid4().hex)


@bp.route("/invoices/<iid>")
@login_required("cashier")
def invoice(iid: str) -> Any:
    return _invoice_page(iid)


def _versioned(qr: dict[str, Any] | None) -> dict[str, Any] | None:
    """The QR answer with ``v``, its payload's digest: the image's URL changes with the payload, so
    the browser draws a new code rather than keep the old one."""
    if not qr or not qr.get("payload"):
        return qr
    return {**qr, "v": hashlib.sha256(str(qr["payload"]).encode()).hexdigest()[:12]}


def _shown_due() -> int | None:
    """The amount the page's QR asks for (``?due=``, carried by the status box's URL), None: no QR shown."""
    due = request.args.get("due", "")
    return int(due) if due.isdigit() and len(due) <= 13 else None


def _expires(qr: dict[str, Any] | None) -> int | None:
    """When the QR's payload stops being served (billing's ``expiresAt``), in seconds since the epoch."""
    at = parse_instant((qr or {}).get("expiresAt"))
    return int(at.timestamp()) + (1 if at.microsecond else 0) if at else None


def _passed(until: int | None) -> bool:
    return until is not None and time.time() >= until


def _shown_until() -> int | None:
    """When the page's QR stops being served (``?until=``, carried by the status box's URL)."""
    until = request.args.get("until", "")
    return int(until) if until.isdigit() and len(until) <= 12 else None


@bp.route("/invoices/<iid>/status")
@login_required("cashier")
def invoice_status(iid: str) -> Any:
    """The status box alone; htmx asks for it every 2 s while the invoice awaits payment, every 10 s
    once it is paid or cancelled (a transfer arriving then shows, with its "to refund" note).

    The fresh answer corrects the amounts the page's shell showed; once paid it hides the QR and the
    cash form (htmx out-of-band swaps). When the balance due is no longer the amount the page's QR
    asks for (a partial transfer, cash, a refund), the QR box is replaced too, with billing's
    ``$vietqr`` for the current balance: a patient scanning the old code would pay the old amount.
    So is it once the time the page's code is valid until has passed (``until``): billing then serves
    a new one, valid for another while, and the page says until when."""
    due, until = _shown_due(), _shown_until()
    pays, pid = request.args.get("pays", "")[:12], _hint().get("p")
    cancel_shown = request.args.get("cx") == "1"  # the page offers the cancel (its box is the form)
    try:
        s = summary(iid)
    except BackendError:
        return render_template("_invoice_status.html", s=None, iid=iid, paid=False, stale=True, due=due,
                               until=until, pays=pays, pid=pid, cancel_shown=cancel_shown)
    paid, qr, qr_swap = is_paid(s), None, False
    balance = s.get("balanceDue")
    if (due is not None and not paid and s.get("status") == "issued" and isinstance(balance, int)
            and (balance != due or _passed(until))):
        qr_swap = True  # no QR rather than the old one when there is none to show
        if balance > 0:
            try:
                qr = _versioned(_json("GET", f"/fhir/Invoice/{iid}/$vietqr"))
            except BackendError:
                qr = None  # the old code goes; the next poll asks again (the URL keeps the old amount)
        if qr and isinstance(qr.get("amount"), int):
            due, until = qr["amount"], _expires(qr) or until
    # the cash form's prefill follows the balance too (app.js keeps an amount the cashier typed)
    cash_form = _cash_form(balance) if qr_swap and isinstance(balance, int) and balance > 0 else None
    # the payments, refunds and refund box follow too when they changed since the page (or the last
    # swap) showed them (the digest names the status too: the Paid turn, a cancel); a paid or cancelled
    # invoice's box keeps asking, slower: a transfer arriving late shows with its "to refund" note
    fresh = payments_digest(s)
    # a payment arrived while the page offered the cancel: its box gives way to how to cancel now (refund
    # first), said once (the next URL no longer says the page offers it), with the refund box brought open
    cancel_gone = cancel_shown and not paid and s.get("status") != "cancelled" and not cancellable(s)
    payments_swap = fresh != pays or cancel_gone
    return render_template("_invoice_status.html", s=s, iid=iid, paid=paid, stale=False, oob=True, qr=qr,
                           qr_swap=qr_swap, due=due, until=until, cash_form=cash_form,
                           cancel_shown=cancel_shown and not cancel_gone, cancel_gone=cancel_gone,
                           open_refund=cancel_gone, pays=fresh, pid=pid, payments_swap=payments_swap,
                           refundables=refund_offer(s)[0], refund_after=refund_offer(s)[1],
                           refundable_total=refundable_total(s),
                           refund_form=_refund_form(s) if payments_swap and refund_offer(s)[0] else None)


@bp.route("/invoices/<iid>/qr.svg")
@login_required("cashier")
def invoice_qr(iid: str) -> Any:
    r = call("billing", "GET", f"/fhir/Invoice/{iid}/$vietqr", params={"_format": "svg"}, accept="image/svg+xml")
    return r.content, 200, {"Content-Type": "image/svg+xml", "Cache-Control": "no-store"}


@bp.route("/invoices/<iid>/cash", methods=["POST"])
@login_required("cashier")
def invoice_cash(iid: str) -> Any:
    """Cash taken at the desk (billing's ``/payments/cash``; :func:`cash_to_record` decides how much
    of what was handed over is the payment, and the page after names the change to give back)."""
    form = CashForm(prefix="cash")
    if not form.validate_on_submit():
        return _in_place(_invoice_page(iid, 422, forms={"cash_form": form}))
    txn = form.txn.data = form.txn.data or uuid.uuid4().hex
    received = int(form.amount.data)
    try:
        s = summary(iid)
        recorded = _cash_to_record(s, received, txn, keep_credit=bool(form.keep_credit.data))
        if recorded is None:  # this form was recorded already (a second click, sent again): nothing new, and the
            # page after says what the first send did (its answer lost on the way: the change to give back too)
            recorded = _recorded_before(s, txn, received)
        else:
            body = {"invoice": iid, "amount": recorded, "transactionId": txn}
            _json("POST", "/payments/cash", body, key=request_key(txn, "cash", str(body)))
    except BackendError as err:  # the box stays open with what was typed (no shift open, a refusal)
        return _in_place(_invoice_page(iid, 409, problem=backend_message(err), forms={"cash_form": form},
                                       cash_open=True))
    if received > recorded:
        flash(gettext("Change to give back: %(change)s (received %(received)s, recorded %(recorded)s).",
                      change=vnd(received - recorded), received=vnd(received), recorded=vnd(recorded)), "cash-change")
    left = _still_due(iid)
    if left:  # part of what is owed: said on the page it leads back to (a payment that settles it: the paid state)
        flash(gettext("Recorded %(amount)s cash, %(due)s still due.", amount=vnd(recorded), due=vnd(left)),
              "cash-recorded")
    return _done(url_for("web.invoice", iid=iid, **_hint()))


def _recorded_before(s: dict[str, Any], txn: str, received: int) -> int:
    """What billing recorded of this form's cash (its payment ``cashier:<txn>`` in the summary ``s``); what was
    handed over when the summary gives no amount (no change said)."""
    amount = next((p.get("amount") for p in s.get("payments") or [] if str(p.get("id")) == f"cashier:{txn}"), None)
    return amount if isinstance(amount, int) and 0 < amount <= received else received


def _still_due(iid: str) -> int | None:
    """What is left to pay once the cash is recorded, as billing reads the invoice now (a fresh summary: the
    POST marked the session written, so no answer fetched before it is shared); None when nothing is (paid,
    a credit) or the read fails (the page it leads to says the balance, or that billing is out of reach).
    Not the balance read before the payment less the cash: a transfer landing in between made that overstate
    what is owed."""
    try:
        s = summary(iid)
    except BackendError:
        return None
    due = s.get("balanceDue")
    return due if s.get("status") == "issued" and isinstance(due, int) and due > 0 else None


def cash_to_record(iid: str, received: int, txn: str, *, keep_credit: bool = False) -> int | None:
    """How much of the cash handed over is recorded as the payment: what is left to pay (the fresh
    summary's ``balanceDue``) when more was handed over, the rest given back at once as change; all
    of it when the cashier chose to keep the excess as the patient's credit (``keep_credit``), or
    when nothing is due (billing then refuses the payment itself: the invoice is paid or cancelled).

    Why the change is never recorded: recording the whole and then a refund of the excess would be
    two records (a payment and a cash refund) that net to the same drawer, but the patient would
    hold a credit in between, the refund list would show it, and a refund needs a reason and a
    confirmation a queue has no time for. Recording only what is due keeps the shift's expected cash
    right (the drawer gains exactly the payment: received in, change out) and the patient's credit
    at 0. A transfer landing between this read and billing's record can still leave a credit: billing
    is the authority, and that credit shows on the invoice and the refund list as any other.

    None: this form's cash is recorded already (billing's payment ``cashier:<txn>`` is among the
    invoice's payments: a second click, a reload's resubmit), so nothing is sent again; billing's own
    transactionId check would refuse the retry's amount once the balance it was cut to is paid."""
    return _cash_to_record(summary(iid), received, txn, keep_credit=keep_credit)


def _cash_to_record(s: dict[str, Any], received: int, txn: str, *, keep_credit: bool = False) -> int | None:
    """:func:`cash_to_record` of the invoice's summary ``s`` as read (the page after says what is still due of it)."""
    if any(str(p.get("id")) == f"cashier:{txn}" for p in s.get("payments") or []):
        return None
    due = s.get("balanceDue")
    if keep_credit or not isinstance(due, int) or due <= 0 or s.get("status") != "issued":
        return received
    return min(received, due)


@bp.route("/invoices/<iid>/cancel", methods=["POST"])
@login_required("cashier")
def invoice_cancel(iid: str) -> Any:
    """Cancel with a reason (billing's ``$cancel``); the cancelled invoice's page then offers a new
    invoice for the patient, its services given back."""
    form = InvoiceCancelForm(prefix="cancel")
    form.txn.data = form.txn.data or uuid.uuid4().hex  # kept from the post: the same cancel again
    if not form.validate_on_submit():
        return _in_place(_invoice_page(iid, 422, forms={"cancel_form": form}))
    asked = confirmation("invoice-cancel")
    if asked is not None:  # nothing cancelled: the page with the step, the reason kept (the key too)
        return _in_place(_invoice_page(iid, confirming_status(asked), forms={"cancel_form": form}, asked=asked))
    body = {"resourceType": "Parameters", "parameter": [{"name": "reason", "valueString": form.reason.data}]}
    try:  # the form's key: sent again after its answer was lost, billing replays the cancel it made
        call("billing", "POST", f"/fhir/Invoice/{iid}/$cancel", json=body,
             headers={"Idempotency-Key": request_key(form.txn.data, "cancel", iid, str(body))})
    except BackendError as err:
        return _in_place(_invoice_page(iid, 409, problem=backend_message(err), forms={"cancel_form": form}))
    return _done(url_for("web.invoice", iid=iid, **_hint()))


def card_step(s: dict[str, Any], inv: dict[str, Any] | None) -> bool:
    """The BHYT card can still change the invoice: issued, with lines, and nothing paid toward it (no
    payment at all: billing's cancel under it refuses one counted)."""
    return (s.get("status") == "issued" and not int(s.get("paid") or 0) and not s.get("payments")
            and bool((inv or {}).get("lineItem")))


@bp.route("/invoices/<iid>/card", methods=["POST"])
@login_required("cashier")
def invoice_card(iid: str) -> Any:
    """Record the patient's BHYT card on an issued invoice nothing is paid on: the invoice is made
    again with BHYT's share (charges.split_again) and the page is the new invoice's."""
    form = charges.CardForm(prefix="card")
    form.txn.data = form.txn.data or uuid.uuid4().hex  # kept from the post: the same card again
    if not form.validate_on_submit():
        return _in_place(_invoice_page(iid, 422, forms={"card_form": form}))
    try:
        s = summary(iid)
        inv = call("billing", "GET", f"/fhir/Invoice/{iid}").json()
        replaced_by = replacement_links(inv)["replaced_by"] if s.get("status") == "cancelled" else []
        if replaced_by:  # made again already (this form sent twice, another tab): its page, as the first answer
            return _done(url_for("web.invoice", iid=replaced_by[0]["id"], **_hint()), "carded")
        if not card_step(s, inv):
            return _in_place(_invoice_page(
                iid, 409, problem=charges.paid_already_message() if s.get("payments")
                else gettext("This invoice is no longer awaiting payment: the BHYT card cannot change it."),
                forms={"card_form": form}))
        new = charges.split_again(form.txn.data, inv, form)
    except charges.PaidAlready:
        return _in_place(_invoice_page(iid, 409, problem=charges.paid_already_message(), forms={"card_form": form}))
    except BackendError as err:
        return _in_place(_invoice_page(iid, page_status(err), problem=backend_message(err),
                                       forms={"card_form": form}))
    # the new invoice names the one it replaces itself (billing's extension), not this link
    return _done(url_for("web.invoice", iid=new, **_hint()), "carded")


def _hint() -> dict[str, str]:
    """The patient's opaque id the page was opened with, carried to the page after a form."""
    hint = request.args.get("p", "")
    return {"p": hint} if FHIR_ID.fullmatch(hint) else {}


@bp.route("/invoices/<iid>/refund", methods=["POST"])
@login_required("cashier")
def invoice_refund(iid: str) -> Any:
    form = RefundForm()
    if not form.validate_on_submit():
        return _in_place(_invoice_page(iid, 422, forms={"refund_form": form}))
    over = over_refundable(iid, form)
    if over and confirmation("refund") is None:  # confirmed: perhaps this form's refund sent again after its
        try:  # answer was lost, which this check, reading the payment given back, refuses: billing replays it
            give_back(form)  # (the form's key); a new refund over the limit billing refuses, said as below
            return _done(url_for("web.invoice", iid=iid, **_hint()), "refunded")
        except BackendError:
            pass
    if over:  # refused before the confirmation step: the page knows what the payment can give back
        form.amount.errors = [*form.amount.errors, over]
        return _in_place(_invoice_page(iid, 422, forms={"refund_form": form}, box_problem=over))
    asked = confirmation("refund")
    if asked is not None:  # nothing refunded: the page with the step, the form as filled in (its key too)
        return _in_place(_invoice_page(iid, confirming_status(asked), forms={"refund_form": form}, asked=asked,
                                       refund_all=None if form.amount.data else whole_refund(iid, form)))
    try:
        give_back(form)
    except BackendError as err:
        return _in_place(_invoice_page(iid, refusal_status(err), problem=refund_refusal(err),
                                       forms={"refund_form": form}))
    return _done(url_for("web.invoice", iid=iid, **_hint()), "refunded")


def over_refundable(iid: str, form: RefundForm) -> str | None:
    """The amount typed is more than the chosen payment can give back (its ``refundable`` in the
    invoice's fresh summary): billing's own sentence for that refusal, said before the confirmation
    step. None when it fits, when no amount was typed (all that can be), or when the summary does not
    say (billing unreachable, an older billing): billing decides at the end, as always."""
    if not form.amount.data:
        return None
    try:
        s = summary(iid)
    except BackendError:
        return None
    p = next((p for p in s.get("payments") or [] if p.get("id") == form.payment.data), None)
    if p is not None and asked_after_settlement(form):  # a paid invoice's payment: what it still has
        p = {"refundable": int(p.get("refundableAfterSettlement") or 0)}
    elif p is not None and given_back_whole(s, p) and isinstance(p.get("amount"), int) \
            and form.amount.data != p["amount"]:  # billing's rule, said before the step rather than after it
        return whole_payment_message(p["amount"])
    if p is None or not isinstance(p.get("refundable"), int) or form.amount.data <= p["refundable"]:
        return None
    if p["refundable"] <= 0:
        return gettext("Nothing is left to refund on this payment: it was refunded already or the "
                       "invoice does not owe it back.")
    return gettext("At most %(amount)s of this payment can be refunded.", amount=vnd(p["refundable"]))


@bp.app_template_global("given_back_whole")
def given_back_whole(s: dict[str, Any], p: dict[str, Any]) -> bool:
    """A payment counted toward an invoice still owed (issued, not paid in full): billing gives it back
    whole or not at all (a reversal: the invoice owes it again); a late payment is given back in parts."""
    return s.get("status") == "issued" and not is_paid(s) and not p.get("lateInvoice")


def whole_refund(iid: str, form: RefundForm) -> int | None:
    """What billing gives back of the chosen payment when no amount is typed (all that can be), as its
    refund computes it from the invoice's fresh summary: the payment's ``refundable`` (toward an invoice
    still owed all of it, of a paid one its share of the credit left, a late one all of it), or, asked as
    a refund after settlement, its ``refundableAfterSettlement``. The confirmation step names it: the
    amount the cashier will hand over. None when the summary does not say (billing unreachable, the
    payment not on it, nothing left: billing's refusal at the end says why)."""
    try:
        s = summary(iid)
    except BackendError:
        return None
    p = next((p for p in s.get("payments") or [] if p.get("id") == form.payment.data), None)
    amount = (p or {}).get("refundableAfterSettlement" if asked_after_settlement(form) else "refundable")
    return amount if isinstance(amount, int) and amount > 0 else None


def asked_after_settlement(form: RefundForm) -> bool:
    """The chosen payment was offered as a paid invoice's refund after settlement when the form was
    shown (its ``after`` ids): billing is asked for one, ``afterSettlement``. Never decided from a fresh
    summary: a cashier giving back a credit a colleague gave back meanwhile is told so, not made to
    refund the payment itself."""
    return bool(form.payment.data) and form.payment.data in request.form.get("after", "").split()


def refusal_status(err: BackendError) -> int:
    """The page's status when billing refused a refund (its own 4xx: none such 404, and another facility's
    payment alike, billing answering it as one it does not hold; refunded already 409) or did not answer (503):
    backend.page_status."""
    return page_status(err)


def refund_refusal(err: BackendError) -> str:
    """Billing's refusal of a refund, in words: "refunded already" names who gave it back and when
    (billing's answer carries the refund), else the usual sentence."""
    if err.status == 409 and isinstance(err.extra.get("refund"), dict):
        return given_back_message(err.extra["refund"])
    return backend_message(err)


def give_back(form: RefundForm) -> None:
    """Billing's refund of the form's payment, with its reason, how, and amount (none: all that can
    be); a BackendError when refused or down. The form's key and what it asks make the request's
    key: a second click replays the first refund's answer; a changed form is new. A give-back another
    cashier started (their request stopped before it was recorded) is finished by this one at the
    amount they decided (billing's ``startedBy``): the page after says so, and how much to hand over,
    which may not be what this form asked."""
    body: dict[str, Any] = {"reason": form.reason.data, "method": form.method.data}
    if form.amount.data:
        body["amount"] = form.amount.data
    if asked_after_settlement(form):
        body["afterSettlement"] = True
    key = request_key(form.txn.data or uuid.uuid4().hex, "refund", form.payment.data or "", str(body))
    answer = _json("POST", f"/payments/{form.payment.data}/refund", body, key=key) or {}
    started = answer.get("startedBy") if isinstance(answer, dict) else None
    if isinstance(started, dict) and answer.get("amount") is not None:
        flash(gettext("%(started)s started this refund; it is recorded under you: give the patient %(amount)s "
                      "(the amount decided when it was started).",
                      started=started.get("cashierName") or started.get("cashier") or "—",
                      amount=vnd(int(answer["amount"]))), "refund-finished")


@bp.route("/invoices/<iid>/receipt")
@login_required("cashier")
def receipt(iid: str) -> Any:
    from .directory import org_names

    try:
        data = _json("GET", f"/payments/receipts/{iid}")
    except BackendError as err:
        return no_receipt_yet(iid, err)
    fid = str(data.get("facility") or "").split("/")[-1]
    # billing gives the facility's id (``tyt-my-hiep``): the receipt names it (the EHR's name), the id only
    # when the EHR does not answer
    facility = data.get("facilityName") or (org_names().get(fid) if fid else "") or fid
    patient = data.get("patient")
    if not patient:  # billing keeps no name for most invoices (a consult's): the EHR's, as the invoice page reads it
        try:
            pid = _patient_id(desk(iid).get("resource") or {})  # the page before it kept this answer
        except BackendError:
            pid = None
        patient = patient_names([pid]).get(pid, "") if pid else ""
    return render_template("receipt.html", r=data, iid=iid, facility=facility, patient=patient,
                           title=gettext("Receipt"))


@bp.route("/invoices/<iid>/receipt.pdf")
@login_required("cashier")
def receipt_pdf(iid: str) -> Any:
    try:
        r = call("billing", "GET", f"/payments/receipts/{iid}/pdf", accept="application/pdf", timeout=30)
    except BackendError as err:
        return no_receipt_yet(iid, err)
    return r.content, 200, {"Content-Type": "application/pdf", "Cache-Control": "no-store",
                            "Content-Disposition": f'inline; filename="receipt-{iid}.pdf"'}


def no_receipt_yet(iid: str, err: BackendError) -> Any:
    """Billing has no receipt of the invoice (404): when the invoice is there but not paid in full (or
    was cancelled unpaid), the page says so, with a way back to the invoice (409: the invoice's state,
    not a wrong address); any other refusal, or no such invoice, is the usual error page."""
    if err.status != 404 or not FHIR_ID.fullmatch(iid):
        raise err
    try:
        s = summary(iid)
    except BackendError:
        raise err from None
    if is_paid(s) or covered(s):  # paid: the receipt is being made (settled a moment ago); billing's own answer
        raise err
    message = gettext("This invoice was cancelled before it was paid in full: it has no receipt.") \
        if s.get("status") == "cancelled" else \
        gettext("This invoice has no receipt yet: it is not paid in full. The receipt is made once it is.")
    return render_template("error.html", title=gettext("No receipt yet"), message=message,
                           back=url_for("web.invoice", iid=iid, **_hint()),
                           back_label=gettext("Back to the invoice")), 409


UNMATCHED_PAGE = 50  # transfers a page of the queue shows (billing's limit, ≤ 200)
UNOWNED = "_unowned"  # billing's name for the queue of the transfers to an account no facility owns


def queue_filter() -> str:
    """The one queue an admin asked for (``?facility=``: a facility's id or :data:`UNOWNED`), "" for
    every queue; a cashier always reads their facility's (billing scopes it), so never a filter."""
    wanted = request.args.get("facility", "")
    if g.user.role != "admin" or not (wanted == UNOWNED or re.fullmatch(r"[A-Za-z0-9\-.]{1,64}", wanted)):
        return ""
    return wanted


def facility_choices(rows: list[dict[str, Any]], chosen: str) -> list[dict[str, str]]:
    """The admin's facility select: the EHR's facilities by name (kept ten minutes), with the
    chosen one and those of the page's rows even when the EHR does not answer."""
    from .directory import org_names

    names = dict(org_names())
    for fid in [chosen, *(str(p.get("facility") or "") for p in rows)]:
        if fid and fid != UNOWNED:
            names.setdefault(fid, fid)
    return [{"id": fid, "name": name} for fid, name in sorted(names.items(), key=lambda kv: (kv[1], kv[0]))]


def cursor_args() -> tuple[str, int]:
    """A list paged by billing's cursor: ``?after=`` (the ``next`` of the page before, "" for the
    first) and ``?page=``, which only numbers the page for the user (1 on the first)."""
    after = request.args.get("after", "")
    after = after if 3 <= len(after) <= 400 else ""
    try:
        page = max(1, min(int(request.args.get("page", "1")), 100_000)) if after else 1
    except ValueError:
        page = 1
    return after, page


def unknown_facility() -> Any:
    """An admin's ``?facility=`` that is none of the facilities (nor the unowned accounts' queue): refused
    with a readable page, as the dashboard refuses one, never shown as an empty queue. The EHR not
    answering (no names known): a well-formed id is taken as asked (billing scopes by it)."""
    from .directory import org_names

    wanted = request.args.get("facility", "")
    if g.user.role != "admin" or not wanted or wanted == UNOWNED:
        return None
    known = org_names()
    if re.fullmatch(r"[A-Za-z0-9\-.]{1,64}", wanted) and (not known or wanted in known):
        return None
    return render_template("error.html", title=gettext("Unmatched transfers"),
                           message=gettext("The facility in the link is not one of the facilities: choose one from "
                                           "the list, or Every facility."),
                           back=url_for("web.unmatched"), back_label=gettext("Back to the unmatched transfers")), 400


def invoice_facility(typed: str, issued: list[dict[str, Any]]) -> tuple[str, str]:
    """The facility (its id) of the invoice a cashier chose or typed (an id or its reference, HD…) and
    the invoice's reference: from the invoices awaiting payment the page listed, else billing's Invoice
    search by id, then by reference; ("", typed) when not found (billing's assignment says why)."""
    code = typed_reference(typed)
    def facility(inv: dict[str, Any]) -> str:
        return str((inv.get("issuer") or {}).get("reference") or "").removeprefix("Organization/")
    for inv in issued:
        if inv.get("id") == typed or (code is not None and invoice_reference(inv) == code):
            return facility(inv), invoice_reference(inv)
    try:
        found = entries(fhir_get("billing", "/fhir/Invoice", {"_id": typed}), "Invoice") \
            if FHIR_ID.fullmatch(typed) else []
        if not found and code is not None:
            found = entries(fhir_get("billing", "/fhir/Invoice", {"identifier": f"{REFERENCE_SYSTEM}|{code}"}),
                            "Invoice")
    except BackendError:
        found = []
    return (facility(found[0]), invoice_reference(found[0])) if found else ("", typed)


def other_facility_step(payment: str, typed: str, queue: list[dict[str, Any]],
                        issued: list[dict[str, Any]]) -> dict[str, Any] | None:
    """An admin putting a transfer that waits in facility A's queue (it came to A's account) on an invoice
    of facility B: the confirmation step (:mod:`.confirming`) naming both, None when it is confirmed or
    not needed (the same facility, the queue of the accounts no facility owns, a cashier: billing keeps
    them to their own facility, or what is not known here: billing decides)."""
    from .directory import org_names

    if g.user.role != "admin":
        return None
    waiting = next((str(p.get("facility") or "") for p in queue if p.get("id") == payment), "")
    if not waiting or waiting == UNOWNED:
        return None
    theirs, reference = invoice_facility(typed, issued)
    if not theirs or theirs == waiting:
        return None
    asked = confirmation("assign-other-facility")
    if asked is None:
        return None
    names = org_names()
    return {**asked, "queue": names.get(waiting, waiting), "other": names.get(theirs, theirs), "reference": reference}


@bp.route("/unmatched", methods=["GET", "POST"])
@login_required("cashier")
def unmatched() -> Any:
    from .directory import org_names

    refused = unknown_facility()
    if refused is not None:
        return refused
    form = MatchForm()
    problem, done, asked = None, None, None
    # one page of the queue (billing's ``next`` cursor: ``?after=`` pages on; ``page`` only numbers it
    # for the cashier) and the invoices awaiting payment (the choices to put a transfer on), at once
    after, page = cursor_args()
    facility = queue_filter()  # the cursor pages within it: both go to billing, and on in the links
    params = {"limit": str(UNMATCHED_PAGE), **({"after": after} if after else {}),
              **({"facility": facility} if facility else {})}

    def read() -> tuple[Any, Any, Any]:
        jobs = [_pool.submit(copy_current_request_context(_attempt), fn) for fn in (
            lambda: shared_get("billing", "/payments/unmatched", params, accept="application/json",
                               seconds=backend.settings().portal_cache_seconds),
            lambda: entries(fhir_get("billing", "/fhir/Invoice", {"status": "issued", "_count": "100"},
                                     cached=True), "Invoice"))]
        (queue, rows_err), (issued, _issued_err) = (j.result() for j in jobs)
        return queue, rows_err, issued

    queue, rows_err, issued = read()
    if request.method == "POST":
        if form.validate_on_submit():
            # the choice's id, or what the cashier typed: the reference as the QR and the receipt print it
            # (HD…), which billing reads as it reads a transfer note (case, dashes, look-alike letters), its
            # spaces taken out here (billing takes an id's characters only)
            typed = "".join(form.invoice.data.split())
            unknown = gettext("There is no invoice %(invoice)s at this facility.",
                              invoice=" ".join(form.invoice.data.split()))
            if not re.fullmatch(r"[A-Za-z0-9\-.]{1,64}", typed):
                problem = unknown  # no id or reference has other characters: nothing asked of billing
            elif (asked := other_facility_step(form.payment.data, typed, (queue or {}).get("payments") or [],
                                               issued or [])) is not None:
                pass  # nothing assigned: the row's confirmation step, naming both facilities
            else:
                try:
                    # the row's key and what it asks make the request's key: sent again after its answer
                    # was lost (a flaky link), billing replays the assignment instead of "not in the queue"
                    key = request_key(form.txn.data or uuid.uuid4().hex, "assign", form.payment.data or "", typed)
                    answer = _json("POST", f"/payments/unmatched/{form.payment.data}/assign", {"invoice": typed},
                                   key=key)
                    # named by the reference (HD…) billing's answer gives: the invoice may have left the issued
                    # choices (paid in full by this very transfer), which named it by its id
                    done = {"id": (answer or {}).get("invoice") or typed,
                            "reference": (answer or {}).get("reference")}
                    queue, rows_err, issued = read()  # the queue without it (the assignment forgot the kept one)
                except BackendError as err:
                    # no invoice so named, or another facility's (billing answers both 404): its refusal names
                    # what was sent
                    problem = unknown if err.status == 404 and "invoice" in err.extra else backend_message(err)
        else:
            problem = gettext("Please correct the highlighted fields.")
    if rows_err is not None:
        problem = problem or backend_message(rows_err)
    rows, next_cursor = (queue or {}).get("payments") or [], (queue or {}).get("next")
    # each choice names its patient (one EHR request for them all) and what is left to pay on it (a
    # transfer of the invoice's whole total would overpay one already part paid); a transfer's choices
    # list the invoices whose balance due is its very amount first
    choices = queue_rows(sorted((inv for inv in issued or [] if inv.get("id")), key=_issued_at)) if issued else []
    if done is not None and not done["reference"]:  # an older billing's answer: the choice's reference
        done["reference"] = next((c["reference"] for c in choices if c["id"] == done["id"]), None) \
            or _reference_of(done["id"])
    choices = [c for c in choices if c["status"] == "issued" and (c["amount"] is None or c["amount"] > 0)]
    orgs = org_names() if g.user.role == "admin" else {}  # the admin's Facility column names each facility
    issuers = {str(inv.get("id")): str((inv.get("issuer") or {}).get("reference") or "").removeprefix("Organization/")
               for inv in issued or []}
    # each row's key, made when it is shown (the row posted keeps its own: the same assignment sent again)
    rows = [{**p, "groups": choice_groups(choices, p, issuers, orgs),
             "txn": form.txn.data if form.txn.data and form.payment.data == p.get("id") else uuid.uuid4().hex,
             "facility_name": orgs.get(str(p.get("facility") or ""), p.get("facility"))} for p in rows]
    return render_template("unmatched.html", rows=rows, form=form, problem=problem, done=done, asked=asked,
                           choices=choices, page=page, after=after, next_cursor=next_cursor,
                           facility=facility, unowned=UNOWNED,
                           facilities=facility_choices(rows, facility) if g.user.role == "admin" else [],
                           title=gettext("Unmatched transfers")), \
        200 if is_htmx() else 422 if problem else confirming_status(asked) if asked else 200


def choice_groups(choices: list[dict[str, Any]], p: dict[str, Any], issuers: dict[str, str],
                  orgs: dict[str, str]) -> list[dict[str, Any]]:
    """A transfer's choices: those whose balance due is its very amount first; for an admin (who sees
    every facility's invoices) grouped by facility, the queue's own facility's first (the transfer came
    to its account), then the others' under their names. A cashier's (their facility's alone): one group,
    unnamed."""
    amount = p.get("amount")
    ordered = sorted(choices, key=lambda c: c["amount"] != amount)
    if g.user.role != "admin":
        return [{"label": None, "facility": "", "choices": ordered}]
    own = str(p.get("facility") or "")
    by: dict[str, list[dict[str, Any]]] = {}
    for c in ordered:
        by.setdefault(issuers.get(str(c["id"]), ""), []).append(c)
    order = sorted(by, key=lambda fid: (fid != own, not fid, orgs.get(fid, fid)))
    return [{"label": orgs.get(fid, fid) or gettext("Facility not known"), "facility": fid, "own": fid == own,
             "choices": by[fid]} for fid in order]


REFERENCE_SYSTEM = "urn:sen:billing:payment-reference"


def _reference_of(iid: str) -> str:
    """The invoice's reference as its payment summary gives it (``reference``), else its id."""
    try:
        return str(summary(iid).get("reference") or iid)
    except BackendError:
        return iid


def invoice_reference(inv: dict[str, Any]) -> str:
    """The bill reference the QR carries (the Invoice's identifier), else its id."""
    return next((str(i.get("value")) for i in inv.get("identifier") or []
                 if i.get("system") == REFERENCE_SYSTEM and i.get("value")), inv.get("id", ""))


INVOICE_PAGE = re.compile(r"/invoices/[A-Za-z0-9\-.]{1,64}(\?p=[A-Za-z0-9\-.]{1,64})?")


bp.add_app_template_global(shift_needs_a_facility)  # the shift page's words to an account of no facility


def shift_back() -> str | None:
    """The invoice page a refusal for want of an open shift sent the cashier here from (``?back=``,
    :func:`.refusals._no_shift`), to go back to once the shift is open; only an invoice page of this
    portal (never another site's address)."""
    back = request.args.get("back") or ""
    return back if INVOICE_PAGE.fullmatch(back) else None


@bp.route("/shift", methods=["GET", "POST"])
@login_required("cashier")
def shift() -> Any:
    """Open the shift (the cash counted in the drawer, asked: an empty box is not 0) or close it: the
    counts, and a note when they differ from what the shift expects, which is checked before the
    confirmation step (the shift's expected totals, read now; billing checks again at the end)."""
    if request.method == "POST" and request.form.get("which") == "open" and not g.user.facility:
        # the page offers the admin (no facility) no open; a post of one is refused in words, nothing sent
        return render_template("error.html", title=gettext("Open a shift"), message=shift_needs_a_facility(),
                               back=url_for("web.shift"), back_label=gettext("Shift")), 403
    open_form, close_form = ShiftOpenForm(prefix="open"), ShiftCloseForm(prefix="close")
    close_form.txn.data = close_form.txn.data or uuid.uuid4().hex  # kept from the post: the same close again
    open_form.txn.data = open_form.txn.data or uuid.uuid4().hex  # and the same open: one shift, however often sent
    problem, asked, current, read = None, None, None, False
    if request.method == "POST":
        try:
            if request.form.get("which") == "open" and open_form.validate_on_submit():
                body = {"openingCash": open_form.opening_cash.data}
                _json("POST", "/payments/shifts", body, key=request_key(open_form.txn.data, "shift-open", str(body)))
                return _done(shift_back() or url_for("web.shift"))
            closing = request.form.get("which") == "close" and close_form.validate_on_submit()
            if closing and not (close_form.note.data or "").strip():
                current, read = _current_shift(), True
                gap = shift_gap(current, close_form)
                if gap:  # said once, on the note, before any confirmation
                    close_form.note.errors = [gap_message(gap)]
                    closing = False
            if closing:  # closed only once confirmed: the first press shows the step, the counts kept
                asked = confirmation("shift-close")
            if closing and asked is None:
                body = {"countedCash": close_form.counted_cash.data,
                        "countedTransfers": close_form.counted_transfers.data}
                if close_form.counted_transfers_refunded.data:  # the statement's refunds by transfer
                    body["countedTransfersRefunded"] = close_form.counted_transfers_refunded.data
                if close_form.note.data:
                    body["note"] = close_form.note.data
                try:
                    closed = _json("POST", "/payments/shifts/current/close", body,
                                   key=request_key(close_form.txn.data, "shift-close", str(body)))
                except BackendError as err:
                    if err.status != 422 or not isinstance(err.extra.get("difference"), dict):
                        raise
                    # a gap without a note (the totals moved since the form's check): said once, on the note
                    close_form.note.errors = [gap_message(err.extra["difference"])]
                    closing, asked, read = False, None, False
            if closing and asked is None:
                history, history_problem = closed_shifts()
                return render_template("shift.html", current=None, closed=closed, open_form=open_form,
                                       history=[h for h in history if h.get("id") != closed.get("id")],
                                       history_problem=history_problem,
                                       close_form=close_form, problem=None, title=gettext("Shift"),
                                       **daily_report.section())  # sent in place: this page swapped in
            if asked is None:
                problem = gettext("Please correct the highlighted fields.")
        except BackendError as err:
            problem = backend_message(err)
    if not read or current is None:
        try:
            current = _json("GET", "/payments/shifts/current")
        except BackendError as err:
            if err.status != 404:
                problem = problem or backend_message(err)
    history, history_problem = closed_shifts()
    return render_template("shift.html", current=current, closed=None, open_form=open_form, close_form=close_form,
                           problem=problem, title=gettext("Shift"), history=history, history_problem=history_problem,
                           asked=asked, back=shift_back(), **daily_report.section()), \
        200 if is_htmx() else 422 if problem else confirming_status(asked) if asked else 200


def _current_shift() -> dict[str, Any] | None:
    """The cashier's open shift as billing has it now, None when none is open or billing does not answer."""
    try:
        return _json("GET", "/payments/shifts/current") or None
    except BackendError:
        return None


def shift_gap(current: dict[str, Any] | None, form: ShiftCloseForm) -> dict[str, int] | None:
    """What was counted less what the open shift expects (billing's ``expected`` cash and transfers, the
    statement's net of the transfers sent back, as its close computes the difference), when either
    differs; None when both match or the shift's expected totals are not known (billing checks at the end)."""
    expected = (current or {}).get("expected")
    if not isinstance(expected, dict) or not all(isinstance(expected.get(k), int) for k in ("cash", "transfers")):
        return None
    gap = {"cash": int(form.counted_cash.data) - expected["cash"],
           "transfers": form.counted_net_transfers() - expected["transfers"]}
    return gap if any(gap.values()) else None


REFUND_PAGE = 50  # rows a page of "To refund" shows (billing's limit, <= 200)


def _refund_list_args() -> tuple[str, int, str]:
    """The list's cursor, page number and (an admin's) facility, from the request."""
    after, page = cursor_args()
    wanted = request.args.get("facility", "")
    facility = wanted if g.user.role == "admin" and re.fullmatch(r"[A-Za-z0-9\-.]{1,64}", wanted) else ""
    return after, page, facility


def _refund_list(status: int = 200, problem: str | None = None, failed: RefundForm | None = None,
                 asked: dict[str, Any] | None = None) -> Any:
    """Every sum owed back to a patient, oldest first, a page at a time (billing's ``next`` cursor):
    billing's open refund tasks (a transfer after its invoice was paid in full or cancelled) and the
    credits of overpaid invoices (``include=credits``: what was paid over what was owed), of the
    cashier's facility (an admin: every facility's, or the one ``?facility=`` names). Each row names
    its invoice (its page), the patient where billing knows them, and gives the money back from the
    list (billing's refund of the row's payment, as the invoice page's refund form does). ``failed``: the
    form posted, kept on its row (with its errors, or ``asked``: its confirmation step, :mod:`.confirming`)."""
    from .directory import org_names

    after, page, facility = _refund_list_args()
    params = {"limit": str(REFUND_PAGE), "include": "credits", **({"after": after} if after else {}),
              **({"facility": facility} if facility else {})}
    body: dict[str, Any] = {}
    try:
        body = _json("GET", "/payments/refund-tasks", params=params) or {}
    except BackendError as err:
        problem = problem or backend_message(err)
        status = outage_status(err) if err.kind in ("down", "slow", "failed") else status
    rows = body.get("tasks") or []
    orgs = org_names() if g.user.role == "admin" and rows else {}
    # each row's patient (a credit's, a late transfer's): the invoice's name as billing keeps it, else the
    # EHR's (one request for them all); a row billing gives no subject (an older billing's task): the
    # subject its Invoice names (one billing search for them all)
    subjects = _subjects([str(t["invoice"]) for t in rows if t.get("invoice") and not t.get("subject")
                          and not t.get("patient")])
    rows = [{**t, "subject": t.get("subject") or subjects.get(str(t.get("invoice") or ""))} for t in rows]
    unnamed = [pid for t in rows if not t.get("patient") and (pid := patient_id({"reference": t.get("subject")}))]
    names = patient_names(unnamed) if unnamed else {}
    # the form posted goes back on its row (the first with its payment: one confirmation step on the page)
    posted = next((i for i, t in enumerate(rows) if failed is not None and failed.payment.data == t.get("payment")),
                  None)
    if failed is not None and posted is None and not problem:  # its row left the list: given back meanwhile
        problem, status = gone_from_list(failed.payment.data, request.form.get("invoice", "")), 409
    rows = [{**t, "facility_name": orgs.get(str(t.get("facility") or ""), t.get("facility")),
             "patient_name": t.get("patient") or names.get(patient_id({"reference": t.get("subject")}) or "", ""),
             **({"form": failed, "asked": asked} if i == posted
                else {"form": RefundForm(formdata=None, payment=t.get("payment"), txn=uuid.uuid4().hex,
                                         reason=_give_back_reason(t),
                                         # given back the way it came, as the invoice page's form starts
                                         method="transfer" if t.get("channel") == "transfer" else "cash")})}
            for i, t in enumerate(rows)]
    return render_template("refund_tasks.html", rows=rows, problem=problem, page=page, after=after,
                           next_cursor=body.get("next"), facility=facility, refunded=steps_done().get("refunded"),
                           title=gettext("To refund")), status


def gone_from_list(payment: str | None, iid: str) -> str:
    """Why the row a give-back was posted from is no longer on the list: given back already (another
    tab, a colleague), by whom and when where the invoice's summary has the refund of that payment."""
    refund = None
    if iid and FHIR_ID.fullmatch(iid):
        try:
            refund = next((r for r in summary(iid).get("refunds") or [] if r.get("payment") == payment), None)
        except BackendError:
            pass
    if refund is None:  # not said by billing: perhaps given back, perhaps on another page of the list now
        return gettext("This money is no longer on this page of the list: it was given back meanwhile (another "
                       "tab or a colleague) or the list changed. Reload the list to see what is left.")
    return given_back_message(refund)


def _subjects(iids: list[str]) -> dict[str, str]:
    """The Patient each of these Invoices names (``Patient/<id>``), by invoice id; none when billing
    does not answer (the rows say "—")."""
    if not iids:
        return {}
    try:
        found = entries(fhir_get("billing", "/fhir/Invoice", {"_id": ",".join(dict.fromkeys(iids)),
                                                              "_elements": "subject"}), "Invoice")
    except BackendError:
        return {}
    return {str(inv.get("id")): f"Patient/{pid}" for inv in found if (pid := _patient_id(inv))}


def _give_back_reason(row: dict[str, Any]) -> str:
    """The reason a give-back from the list starts with (the cashier may change it)."""
    if row.get("kind") == "credit":
        return gettext("Giving back what was paid over the amount owed")
    if row.get("reason") == "invoice-cancelled":
        return gettext("Giving back a payment to a cancelled invoice")
    return gettext("Giving back a payment made after the invoice was paid in full")


@bp.route("/refunds")
@login_required("cashier")
def refund_tasks() -> Any:
    """Money to give back: refund tasks and overpaid invoices' credits (:func:`_refund_list`)."""
    return _refund_list()


@bp.route("/refunds/give-back", methods=["POST"])
@login_required("cashier")
def refund_give_back() -> Any:
    """Give a row of the list back: billing's refund of its payment (a credit: what is left of it, the
    ``amount`` the row carried), with the reason and how (cash from the drawer of an open shift, or a
    transfer). Given back only once confirmed (:mod:`.confirming`, as the invoice page's refund): the first
    press gives nothing back and the list comes back with the row's step, what was typed kept (the form's
    key too). Once per payment and per credit (billing's claims): a second cashier giving the same money
    back at the same moment is told it was given back already."""
    form = RefundForm()
    if not form.validate_on_submit():
        return _in_place(_refund_list(422, gettext("Please correct the highlighted fields."), failed=form))
    asked = confirmation("give-back")
    if asked is not None:
        return _in_place(_refund_list(confirming_status(asked), failed=form, asked=asked))
    try:
        give_back(form)
    except BackendError as err:
        return _in_place(_refund_list(refusal_status(err), refund_refusal(err), failed=form))
    after, page, facility = _refund_list_args()
    return done_in_place(url_for("web.refund_tasks", **({"after": after, "page": page} if after else {}),
                                 **({"facility": facility} if facility else {})), "refunded")


def _done(url: str, step: str | None = None) -> Any:
    """A form of these pages done: the page ``url`` (htmx's by ``HX-Redirect``), saying ``step`` once."""
    return done_in_place(url, step)


CLOSED_SHIFTS = 3  # the last closed shifts /shift shows (to reread or print a close)


def closed_shifts() -> tuple[list[dict[str, Any]], str | None]:
    """The cashier's last closed shifts, newest first, each with its closing summary (billing's
    ``GET /payments/shifts?state=closed``), and a problem when billing did not answer."""
    try:
        body = _json("GET", "/payments/shifts", params={"state": "closed", "limit": str(CLOSED_SHIFTS)})
    except BackendError as err:
        return [], backend_message(err)
    return list((body or {}).get("shifts") or []), None
