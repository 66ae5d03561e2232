"""Cashiers charge a walk-in patient by hand: "Hóa đơn mới / New invoice" (``/invoices/new``).

One page, one form, several buttons; it works without JavaScript and keeps everything typed
between posts (the lines travel in the form, never in the session). With it every button is sent in
place (htmx: the page's main swapped with the answer, 200, the address the draft's by ``HX-Replace-Url``;
an answer lost on the way said under the part of the form it came from, what was typed kept):

1. find the patient: the EHR's Patient search with the cashier's token (name without accents,
   CCCD or BHYT number: the clinic's :func:`sen_portal.web.clinic.search_params`), POSTed, so no
   name or number lands in a URL; "Chọn / Choose" keeps the patient's opaque id in the form
   (``/invoices/new?p=<id>`` opens the page with that patient chosen: a cancelled invoice's page
   links so, its services being given back to invoice again);
2. the patient's BHYT card: billing's own Coverage (``Coverage?beneficiary=``), which is what
   billing's BHYT split reads (``sen_billing.domain.invoices.coverage_level``: an active Coverage
   whose period holds today, its ``bhyt-benefit-level`` extension or the card's benefit code),
   not the EHR's. Without a card in force a form records one (number, 80/95/100 %, validity),
   prefilled from the BHYT number the EHR holds for the patient;
3. the services: the price list (billing's active ChargeItemDefinitions, readable by everyone
   signed in), searched by name without accents, each added as a line with a quantity 1-1000;
   the lines are reviewed with their prices, then ONE submit creates a ChargeItem per line
   (``definitionCanonical``: billing takes the price from the list), the Invoice of them
   (a draft; billing computes the amounts and the BHYT split; ``subject.display`` is the patient's
   name as the EHR gave it to the page, which billing's receipt prints) and ``$issue``, and lands on
   the invoice page (``/invoices/<id>``) with the VietQR code.

A resubmitted form (a double click, a retry on a slow link) makes nothing twice. The page's form
carries a random key (``key``, made when the page is first shown); each ChargeItem is created
with ``Idempotency-Key: <key>.<digest of patient, service, quantity>``, which billing honours
(``sen_shared.idempotency_key``: the same key with the same body replays the first answer, so the
same ChargeItem id; a second request while the first is still running waits for its answer). The
Invoice's id derives from its charges in billing, and ``$issue`` of an issued invoice answers it
again; both are sent with keys derived the same way. A line changed after a refusal is a new
request (its digest changes), so billing never answers 422 for a key reused with another body.

Charges not yet invoiced ("Dịch vụ chưa lập hóa đơn"). A submit refused part-way (the Invoice create
refused after two ChargeItems were made), a charge an admin or a cashier made by hand at billing's API:
a ChargeItem billable on no invoice. When a patient is chosen the page asks billing for theirs at the
cashier's facility (``ChargeItem?subject=&invoiced=false``, billing's own parameter, read from the
invoices' claims) and lists them, each ticked by default: the submit puts the ticked ones on the new
invoice with the lines (billing's Invoice create takes any distinct ChargeItems of the patient and
facility); an unticked one stays for later. Without JavaScript the page keeps which it has shown
(``pending_seen``) and which are ticked (``pending``): one not shown before is ticked. The
ChargeItems this form itself made before a refusal travel in ``made``: one whose line is unchanged is
that line (the line's replayed request answers its id again; it is not listed twice), one whose line
changed or went is listed unticked (the cashier changed what to charge).
"""

from __future__ import annotations

import hashlib
import re
import uuid
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from flask import g, render_template, request, url_for
from flask_babel import get_locale, gettext
from flask_babel import lazy_gettext as _l
from sen_shared import bhyt
from sen_shared.fhir.names import person_name
from sen_shared.fhir.search.text import normalize
from wtforms import HiddenField, SelectField, StringField
from wtforms.validators import DataRequired, InputRequired, Length, Optional, ValidationError

from .. import caches
from . import backend_message, bp, is_htmx, login_required, patients, prices
from .backend import BackendError, call, entries, fhir_get, page_status
from .clinic import SYS_BHYT, SYS_CCCD, WHOLE_PAGE, done_in_place, find_patients
from .formatting import TZ, human_name, identifier, vnd
from .forms import FlaskForm, FormKey, LocalDateField, Pattern
from .patients import FHIR_ID

MAX_LINES = 30
MAX_PENDING = 50  # the charges not yet invoiced listed (a patient has a few)
MAX_QUANTITY = 1000
PRICE_LIST_SIZE = 500
SERVICES_SHOWN = 50  # the whole list for an empty search (a few dozen entries)
_CARD = r"[A-Za-z]{2}\d{13}"


class CardForm(FlaskForm):
    """A BHYT card to record in billing (a Coverage, :func:`coverage_body`): the walk-in invoice's step,
    and the invoice page's for an issued invoice nothing is paid on (:func:`split_again`)."""

    card_number = StringField(_l("BHYT card number"), validators=[
        InputRequired(_l("Enter the card number.")),
        Pattern(_CARD, message=_l("An insurance number is 2 letters then 13 digits."))])
    card_level = SelectField(_l("Benefit level"), choices=[("", "—"), ("80", "80 %"), ("95", "95 %"),
                                                           ("100", "100 %")],
                             validators=[DataRequired(_l("Choose the benefit level printed on the card."))])
    card_start = LocalDateField(_l("Valid from"), validators=[InputRequired(_l("Enter a valid date."))])
    card_end = LocalDateField(_l("Valid until"), validators=[InputRequired(_l("Enter a valid date."))])
    txn = FormKey()  # the invoice page's form key (made with the page): a second click does nothing twice

    def validate_card_end(self, field: Any) -> None:
        if self.card_start.data and field.data and field.data < self.card_start.data:
            raise ValidationError(_l("The card ends before it starts."))
        if field.data and field.data < datetime.now(TZ).date():
            raise ValidationError(_l("This card has expired; it cannot be used today."))


class ChargeForm(CardForm):
    """The page's form; the lines are read from ``line_service``/``line_qty`` pairs (:func:`read_lines`)."""

    key = FormKey()
    patient = HiddenField()
    who = StringField(_l("Patient: name, CCCD or health insurance number"), validators=[
        DataRequired(_l("Type a name, a CCCD or an insurance number.")),
        Length(min=2, max=100, message=_l("Type 2 to 100 characters."))])
    service_q = StringField(_l("Find a service"), validators=[Optional(), Length(max=100, message=_l(
        "Type at most 100 characters."))])


@dataclass
class Line:
    """One line of the form: the service's id in the price list, the quantity as typed."""

    service: str
    qty_text: str
    entry: dict[str, Any] | None = None  # the price list's entry (None: not on it, or the list unknown)
    error: str | None = None
    shown: int | None = None  # the unit price the page showed the cashier (``line_price``), if it did

    @property
    def qty(self) -> int | None:
        text = self.qty_text.strip()
        return int(text) if text.isdigit() and 1 <= int(text) <= MAX_QUANTITY else None

    @property
    def qty_error(self) -> str | None:
        """What is wrong with the quantity typed, said beside it whenever the page is shown (Enter in the
        box too, not only at the submit); the page's script says the same as it is typed."""
        return None if self.qty is not None else quantity_message()

    @property
    def total(self) -> int | None:
        return int(self.entry["price"]) * self.qty if self.entry is not None and self.qty is not None else None


def quantity_message() -> str:
    return gettext("A quantity is a whole number from 1 to %(n)d.", n=MAX_QUANTITY)


def read_lines(form: Any) -> list[Line]:
    """The lines posted (``line_service`` and ``line_qty`` in pairs), ids checked, at most MAX_LINES."""
    services, qtys, shown = form.getlist("line_service"), form.getlist("line_qty"), form.getlist("line_price")
    lines = []
    for i, sid in enumerate(services[:MAX_LINES]):
        if FHIR_ID.fullmatch(sid):
            price = shown[i] if i < len(shown) else ""
            lines.append(Line(sid, (qtys[i] if i < len(qtys) else "1")[:12],
                              shown=int(price) if price.isdigit() and len(price) <= 13 else None))
    return lines


# --------------------------------------------------------------------------- back-end reads

# The listing made of a kept answer, by that answer (the very object the user's kept answer is while it lasts:
# backend.AnswerCache) and the page's language, with the answer itself (so its id is not reused meanwhile).
# prices.row of every entry, again on every render of the new invoice's form (each search, line added, Enter,
# reload), was about 40% of the form's CPU in the portal; the listing is read, never changed, by its users.
_listings: dict[tuple[int, str], tuple[dict[str, Any], dict[str, dict[str, Any]]]] = caches.kept({})
_LISTINGS_KEPT = 64  # answers' listings per process (about the users of one SEN_PORTAL_CACHE_SECONDS)


def price_list(*, fresh: bool = False) -> dict[str, dict[str, Any]]:
    """Billing's active price list by id, as the price list page reads an entry (``prices.row``:
    ``vi``, ``en``, ``price``, ``covered``, ...), by Vietnamese name. Kept ``SEN_PORTAL_CACHE_SECONDS``
    for the user unless ``fresh`` (the submit checks the lines against a fresh one). Read only: the
    same listing answers the user's renders while their kept answer lasts."""
    bundle = fhir_get("billing", "/fhir/ChargeItemDefinition", {"status": "active", "_count": str(PRICE_LIST_SIZE)},
                      cached=not fresh)
    key = (id(bundle), str(get_locale()))
    hit = None if fresh else _listings.get(key)
    if hit is not None and hit[0] is bundle:
        return hit[1]
    rows = [prices.row(res) for res in entries(bundle, "ChargeItemDefinition")]
    rows = [r for r in rows if r["active"] and r["price"] is not None and FHIR_ID.fullmatch(str(r["id"]))]
    rows.sort(key=lambda r: (normalize(r["vi"]), r["id"]))
    listing = {str(r["id"]): r for r in rows}
    if not fresh:  # a fresh answer is nobody's kept one: never asked for again
        if len(_listings) >= _LISTINGS_KEPT:
            _listings.clear()
        _listings[key] = (bundle, listing)
    return listing


def find_services(listing: dict[str, dict[str, Any]], q: str) -> list[dict[str, Any]]:
    """Entries whose name (Vietnamese or English) or code holds every word typed, accents optional
    (``xet nghiem mau``); the price list page's own matching."""
    return [r for r in listing.values() if prices.matches(r, q)][:SERVICES_SHOWN]


def coverage_rows(bundle: dict[str, Any], today: date) -> list[dict[str, Any]]:
    """The patient's BHYT cards billing holds, as shown: number, level, validity, in force today
    (billing's own rule: active, and the period holds today in Asia/Ho_Chi_Minh)."""
    rows = []
    for c in entries(bundle, "Coverage"):
        number, level = bhyt.card_number(c), bhyt.recorded_level(c)
        period = c.get("period") or {}
        start, end = str(period.get("start") or "")[:10], str(period.get("end") or "")[:10]
        day = today.isoformat()
        rows.append({"number": number, "level": level, "start": start, "end": end,
                     "in_force": c.get("status") == "active" and level is not None
                     and (start or "0000") <= day <= (end or "9999")})
    return sorted(rows, key=lambda r: (not r["in_force"], r["end"]), reverse=False)


@dataclass
class Pending:
    """A ChargeItem of the patient billable on no invoice, as listed: its service (the price list's
    id, its name when the entry was made), quantity, amount (billing's ``priceOverride``: the line's
    total) and when it was entered."""

    cid: str
    service: str
    name: str
    qty: int | None
    amount: int | None
    entered: str
    ticked: bool = True
    earlier: bool = False  # made by this form before a refusal; its line changed since


def pending_row(item: dict[str, Any]) -> Pending | None:
    cid = str(item.get("id") or "")
    if not FHIR_ID.fullmatch(cid):
        return None
    canon = (item.get("definitionCanonical") or [""])[0]
    qty, amount = (item.get("quantity") or {}).get("value"), (item.get("priceOverride") or {}).get("value")
    return Pending(cid, str(canon).split("|")[0].rsplit("/", 1)[-1], str((item.get("code") or {}).get("text") or ""),
                   int(qty) if isinstance(qty, int | float) else None,
                   int(amount) if isinstance(amount, int | float) else None,
                   str(item.get("enteredDate") or item.get("occurrenceDateTime") or ""))


@dataclass
class Chosen:
    """The patient the form names, as the page shows them."""

    pid: str
    name: str = "—"
    born: str = ""
    cccd: str = ""
    bhyt: str = ""  # the BHYT number the EHR holds (a hint for the card form)
    known: bool = True  # the EHR answered
    cards: list[dict[str, Any]] | None = None  # None: billing did not answer
    problem: str | None = None
    pending: list[Pending] | None = None  # the charges not yet invoiced; None: billing did not answer
    pending_problem: str | None = None

    @property
    def card(self) -> dict[str, Any] | None:
        return next((c for c in self.cards or [] if c["in_force"]), None)


def chosen_patient(pid: str) -> Chosen:
    """The patient's name and numbers (one EHR search, with the user's token) and their BHYT
    cards in billing; a back-end that does not answer leaves its part empty, never an error page."""
    found = patients.lookup([pid], "name,birthDate,identifier")
    shown = Chosen(pid, known=found is not None)
    p = (found or {}).get(pid)
    if p is not None:
        shown.name, shown.born = human_name(p), str(p.get("birthDate") or "")
        shown.cccd, shown.bhyt = identifier(p, SYS_CCCD), identifier(p, SYS_BHYT)
    try:
        bundle = fhir_get("billing", "/fhir/Coverage", {"beneficiary": f"Patient/{pid}", "_count": "20"})
        shown.cards = coverage_rows(bundle, datetime.now(TZ).date())
    except BackendError as err:
        shown.problem = backend_message(err)
    try:  # read fresh: what the submit would put on the invoice
        bundle = fhir_get("billing", "/fhir/ChargeItem", {"subject": f"Patient/{pid}", "invoiced": "false",
                                                           "_count": str(MAX_PENDING)})
        rows = [pending_row(c) for c in entries(bundle, "ChargeItem")]
        shown.pending = sorted((r for r in rows if r is not None), key=lambda r: (r.entered, r.cid))
    except BackendError as err:
        shown.pending_problem = backend_message(err)
    return shown


def posted_ids(name: str) -> list[str]:
    """The ChargeItem ids the form posted under ``name`` (checked, at most MAX_PENDING)."""
    return [i for i in dict.fromkeys(request.form.getlist(name)) if FHIR_ID.fullmatch(i)][:MAX_PENDING]


def mark_pending(chosen: Chosen, lines: list[Line], made: list[str]) -> None:
    """Which charges not yet invoiced are listed and ticked (module docstring): a charge this form
    made whose line is unchanged is that line; the others are ticked as the cashier left them, by
    default ticked (unticked: one this form made whose line changed)."""
    if not chosen.pending:
        return
    seen, ticked = set(posted_ids("pending_seen")), set(posted_ids("pending"))
    kept = []
    for row in chosen.pending:
        if row.cid in made:
            if any(line.service == row.service and line.qty == row.qty for line in lines):
                continue
            row.earlier = True
        row.ticked = row.cid in ticked if row.cid in seen else not row.earlier
        kept.append(row)
    chosen.pending = kept


# --------------------------------------------------------------------------- writes

def _digest(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:24]


def request_key(form_key: str, kind: str, *parts: str) -> str:
    """The ``Idempotency-Key`` of one write of this form: the form's key and what is written."""
    return f"portal-{kind}-{form_key}-{_digest(*parts)}"


def _post(path: str, body: Any, key: str) -> dict[str, Any]:
    r = call("billing", "POST", path, json=body, headers={"Idempotency-Key": key})
    return r.json() if r.content else {}


def charge_body(pid: str, line: Line) -> dict[str, Any]:
    """The ChargeItem as the cashier asks for it: the same bytes for the same line (a replay
    must match the first request); the price, facility and account are billing's."""
    return {"resourceType": "ChargeItem", "status": "billable", "code": {"text": line.service},
            "subject": {"reference": f"Patient/{pid}"},
            "definitionCanonical": [f"ChargeItemDefinition/{line.service}"], "quantity": {"value": line.qty}}


def coverage_body(pid: str, form: CardForm) -> dict[str, Any]:
    number = form.card_number.data.strip().upper()
    return {"resourceType": "Coverage", "status": "active",
            "extension": [{"url": bhyt.LEVEL_EXTENSION, "valueUnsignedInt": int(form.card_level.data)}],
            "identifier": [{"system": bhyt.CARD_SYSTEM, "value": number}],
            "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                                 "code": "PUBLICPOL"}], "text": "Bảo hiểm y tế"},
            "subscriberId": number, "beneficiary": {"reference": f"Patient/{pid}"},
            "period": {"start": form.card_start.data.isoformat(), "end": form.card_end.data.isoformat()},
            "payor": [{"display": "Bảo hiểm xã hội Việt Nam"}]}


class Refused(Exception):
    """A line billing would not charge (the price list entry went meanwhile)."""


def issue_invoice(form_key: str, pid: str, lines: list[Line], pending: list[str] | None = None,
                  made: list[str] | None = None, name: str = "") -> str:
    """The ChargeItems, their Invoice (with the ``pending`` charges ticked, each once) and ``$issue``,
    each write keyed (module docstring); the id. The ChargeItems made are appended to ``made``.
    ``name``: the patient's name as the EHR gave it to the page, sent as the Invoice's
    ``subject.display`` (billing keeps it for the receipt it prints); '' sends none."""
    charges: list[str] = []
    for line in lines:
        body = charge_body(pid, line)
        try:
            answer = _post("/fhir/ChargeItem", body, request_key(form_key, "charge", pid, line.service,
                                                                  str(line.qty)))
        except BackendError as err:
            if err.kind == "refused" and err.status == 422 and "ChargeItemDefinition" in err.detail:
                line.error = gettext("This service is no longer on the price list; remove the line.")
                raise Refused from err
            raise
        charges.append(str(answer["id"]))
        if made is not None:
            made.append(charges[-1])
    charges += [cid for cid in dict.fromkeys(pending or []) if cid not in charges]
    subject = {"reference": f"Patient/{pid}", **({"display": name} if name else {})}
    invoice = {"resourceType": "Invoice", "status": "draft", "subject": subject,
               "lineItem": [{"sequence": i, "chargeItemReference": {"reference": f"ChargeItem/{cid}"}}
                            for i, cid in enumerate(charges, start=1)]}
    # the name is in the key: a retry whose EHR read failed (no name) is another request, never a 422
    answer = _post("/fhir/Invoice", invoice, request_key(form_key, "invoice", pid, name, *charges))
    iid = str(answer["id"])
    _post(f"/fhir/Invoice/{iid}/$issue", None, request_key(form_key, "issue", iid))
    return iid


def record_card(form_key: str, pid: str, form: CardForm) -> None:
    """The card as billing's Coverage of the patient (what its BHYT split reads), keyed by the form
    and the card: a second click records nothing new."""
    body = coverage_body(pid, form)
    _post("/fhir/Coverage", body, request_key(form_key, "coverage", pid, repr(sorted(body["period"].items())),
                                              body["subscriberId"], form.card_level.data))


def card_on_record(pid: str, record: dict[str, Any] | None = None) -> dict[str, Any]:
    """The patient's BHYT card as the health record holds it, to prefill the card form: the EHR's
    Coverage (in force first: number, level, validity), else the BHYT number on the Patient (its level
    as the number prints it, by its prefix); {} when the record has none or does not answer. ``record``:
    the Patient (with its identifiers) the page read already, else it is read here."""
    try:
        bundle = fhir_get("ehr", "/fhir/Coverage", {"beneficiary": f"Patient/{pid}", "_count": "20"}, cached=True)
        rows = [r for r in coverage_rows(bundle, datetime.now(TZ).date()) if _CARD_RE.fullmatch(r["number"])]
    except BackendError:
        rows = []
    if rows:
        card = rows[0]
        return {**card, "level": card["level"] or bhyt.level_from_card(card["number"])}
    if record is None:
        record = (patients.lookup([pid], "identifier") or {}).get(pid)
    number = identifier(record or {}, SYS_BHYT)
    return {"number": number, "level": bhyt.level_from_card(number), "start": "", "end": ""} if number else {}


_CARD_RE = re.compile(_CARD, re.ASCII)


def card_form(pid: str | None, record: dict[str, Any] | None = None) -> CardForm:
    """The invoice page's card form, prefilled with the card on the patient's record (checked against
    the card the patient shows); ``record``: the Patient as the page read it, if it did."""
    card = card_on_record(pid, record) if pid else {}
    data: dict[str, Any] = {"card_number": card.get("number") or None}
    if card.get("level") in bhyt.LEVELS:
        data["card_level"] = str(card["level"])
    for name, key in (("card_start", "start"), ("card_end", "end")):
        try:
            data[name] = date.fromisoformat(card[key]) if card.get(key) else None
        except ValueError:
            data[name] = None
    return CardForm(formdata=None, prefix="card", txn=uuid.uuid4().hex, **data)


class PaidAlready(Exception):
    """Something is paid toward the invoice: the card no longer changes it (:func:`split_again`)."""


def paid_already_message() -> str:
    return gettext("Something is paid toward this invoice, so the BHYT card can no longer change it: refund what "
                   "was paid first, then record the card.")


def split_again(form_key: str, invoice: dict[str, Any], form: CardForm) -> str:
    """An issued invoice nothing is paid on, split again with the patient's BHYT card, by billing's
    own way for a walk-in invoice's card: the card recorded as billing's Coverage, the invoice
    cancelled (billing's ``$cancel``: its ``cancelled`` link, a claim by insert, refused once a payment
    is counted: a 409 the page says), and its charges invoiced again and issued (:func:`issue_invoice`:
    the new draft reads the card, billing splits each line by its level and the threshold). Each write
    is keyed by the form: a second click does nothing twice. The new invoice's id."""
    pid = FHIR_ID.fullmatch(str((invoice.get("subject") or {}).get("reference") or "").removeprefix("Patient/"))
    charges = [ref.removeprefix("ChargeItem/") for li in invoice.get("lineItem") or []
               if (ref := str((li.get("chargeItemReference") or {}).get("reference") or "")).startswith("ChargeItem/")]
    if pid is None or not charges:
        raise BackendError("refused", "billing", 422, "the invoice names no patient or no charges")
    record_card(form_key, pid.group(0), form)
    number = form.card_number.data.strip().upper()
    try:  # the reason is the record's, in Vietnamese whatever the page's language
        reason = f"Ghi thẻ BHYT {number}: lập lại hóa đơn có phần BHYT chi trả"
        _post(f"/fhir/Invoice/{invoice['id']}/$cancel",
              {"resourceType": "Parameters", "parameter": [{"name": "reason", "valueString": reason}]},
              request_key(form_key, "card-cancel", str(invoice["id"]), number))
    except BackendError as err:
        if err.kind == "refused" and err.status == 409:  # a payment was counted meanwhile (or it was settled)
            raise PaidAlready from err
        raise
    return issue_invoice(form_key, pid.group(0), [], pending=charges,
                         name=str((invoice.get("subject") or {}).get("display") or ""))


# --------------------------------------------------------------------------- the page

def _render(form: ChargeForm, lines: list[Line], status: int = 200, **ctx: Any) -> Any:
    listing: dict[str, dict[str, Any]] | None = ctx.pop("listing", None)
    problem = ctx.pop("problem", None)
    if listing is None:
        try:
            listing = price_list()
        except BackendError as err:
            problem = problem or backend_message(err)
    for line in lines:
        line.entry = (listing or {}).get(line.service)
        if listing is not None and line.entry is None and line.error is None:
            line.error = gettext("This service is no longer on the price list; remove the line.")
    pid = form.patient.data or ""
    chosen = ctx.pop("chosen", None)
    if chosen is None and FHIR_ID.fullmatch(pid):
        chosen = chosen_patient(pid)
    if chosen is not None and chosen.card is None and not form.card_number.data and not form.card_number.errors:
        form.card_number.data = chosen.bhyt  # the EHR's BHYT number, for the cashier to check on the card
        level = bhyt.level_from_card(chosen.bhyt)  # a suggestion: billing applies the recorded one
        form.card_level.data = str(level) if level else ""
    made = list(dict.fromkeys([*posted_ids("made"), *ctx.pop("made", [])]))[:MAX_PENDING]
    if chosen is not None:
        mark_pending(chosen, lines, made)
    totals = [line.total for line in lines]
    total = sum(t for t in totals if t is not None) if lines and None not in totals else None
    ticked = [r.amount for r in (chosen.pending or []) if r.ticked] if chosen is not None else []
    ctx["pending_total"] = sum(a for a in ticked if a is not None) if ticked and None not in ticked else None
    ctx["grand_total"] = (total or 0) + ctx["pending_total"] \
        if ctx["pending_total"] is not None and (total is not None or not lines) else None
    ctx.setdefault("found", None)
    ctx.setdefault("services", None)
    ctx.setdefault("own_address", own_address(form, lines))
    page = render_template("invoice_new.html", form=form, lines=lines, chosen=chosen, listing=listing,
                           max_quantity=MAX_QUANTITY, quantity_message=quantity_message(),
                           total=total, made=made, problem=problem, title=gettext("New invoice"),
                           SYS_CCCD=SYS_CCCD, SYS_BHYT=SYS_BHYT, **ctx)
    if request.method == "POST" and is_htmx():  # sent in place: the page's main swapped, the address the draft's
        return page, 200, {"HX-Replace-Url": ctx["own_address"]}
    return page, status


@bp.route("/invoices/new", methods=["GET", "POST"])
@login_required("cashier")
def invoice_new() -> Any:
    if not g.user.facility:  # a form sent in place: the refusal is the page's main (app.js swaps a 4xx retargeted)
        return render_template("error.html", title=gettext("New invoice"),
                               message=gettext("New invoices are made by a facility's cashier: your account "
                                               "names no facility.")), 403, WHOLE_PAGE if is_htmx() else {}
    form = ChargeForm()
    if request.method == "GET" or not form.key.data:  # none posted, or not a key (forms.FormKey)
        form.key.data = uuid.uuid4().hex  # this form's key: every resubmission of it sends the same one
    if request.method == "GET":
        # ``?p=<id>``: the patient chosen already (a cancelled invoice's page links here for its patient)
        form.patient.data = request.args.get("p", "") if FHIR_ID.fullmatch(request.args.get("p", "")) else ""
        return _lines_from_address(form)
    if not FHIR_ID.fullmatch(form.patient.data or ""):
        form.patient.data = ""
    lines = read_lines(request.form)
    if request.form.get("choose"):
        return _choose(form, lines, request.form["choose"])
    if request.form.get("add"):
        return _add(form, lines, request.form["add"])
    if request.form.get("remove", "").isdigit():
        i = int(request.form["remove"])
        return _render(form, [line for j, line in enumerate(lines) if j != i])
    action = request.form.get("action", "")
    if action == "find-patient":
        return _find_patient(form, lines)
    if action == "change-patient":
        form.patient.data = ""
        return _render(form, lines)
    if action == "find-service":
        return _find_service(form, lines)
    if action == "record-card":
        return _record_card(form, lines)
    if action == "issue":
        return _issue(form, lines)
    return _enter(form, lines)


def own_address(form: ChargeForm, lines: list[Line]) -> str:
    """The address a page the form's POST rendered takes in the history (static/own-address.js): the
    patient and the lines (price-list ids and quantities, as the form posts them), so a reload or Back
    to it shows the same draft (:func:`_lines_from_address`) and sends nothing."""
    return url_for("web.invoice_new", p=form.patient.data or None,
                   line_service=[line.service for line in lines] or None,
                   line_qty=[line.qty_text for line in lines] or None)


def _lines_from_address(form: ChargeForm) -> Any:
    """The new invoice's page by its address: ``?p=<id>`` the patient chosen already (a cancelled invoice's
    page links here for its patient), ``line_service``/``line_qty`` the draft's lines (the address the
    form's pages take). A line the form would refuse (an id not on the price list, a quantity not from 1 to
    MAX_QUANTITY, a service listed twice) is left out, and the page says which; nothing is written."""
    lines, dropped = [], []
    listed = len(request.args.getlist("line_service"))
    try:
        listing: dict[str, dict[str, Any]] | None = price_list() if listed else None
    except BackendError:
        listing = None  # _render says the price list could not be read; the lines stay, checked at the submit
    for line in read_lines(request.args):
        entry = (listing or {}).get(line.service)
        name = entry["vi"] if entry else line.service
        if listing is not None and entry is None:
            dropped.append(gettext("%(service)s: not on the price list", service=line.service))
        elif line.qty is None:
            dropped.append(gettext("%(service)s: the quantity “%(qty)s” is not a whole number from 1 to %(n)d",
                                   service=name, qty=line.qty_text, n=MAX_QUANTITY))
        elif any(kept.service == line.service for kept in lines):
            dropped.append(gettext("%(service)s: listed twice", service=name))
        else:
            lines.append(line)
    if listed > len(lines) + len(dropped):  # ids that are no ids, or past MAX_LINES
        dropped.append(gettext("%(n)d more that the form does not take", n=listed - len(lines) - len(dropped)))
    note = gettext("Lines in the page's address were left out; add them again if they are needed: %(lines)s.",
                   lines="; ".join(dropped)) if dropped else None
    return _render(form, lines, lines_note=note, **({"listing": listing} if listing is not None else {}))


def _enter(form: ChargeForm, lines: list[Line]) -> Any:
    """Enter pressed in a box (the form's hidden first button): the searches typed are run, the
    quantities' amounts recomputed; nothing is written."""
    ctx: dict[str, Any] = {}
    if not form.patient.data and form.who.data:
        if form.who.validate(form):
            try:
                ctx["found"] = _patients_found(form.who.data)
            except BackendError as err:
                ctx["who_problem"] = backend_message(err)
    return _render(form, lines, **ctx, **_service_search(form))


def _patients_found(q: str) -> list[dict[str, Any]]:
    """The patients the EHR finds for ``q`` (the clinic's search), those the form can name."""
    return [p for p in find_patients(q) if FHIR_ID.fullmatch(str(p.get("id")))]


def _service_search(form: ChargeForm) -> dict[str, Any]:
    """The price list's entries for the search typed, if any: ``listing`` and ``services``, or the
    ``problem`` of a price list that could not be read."""
    if not (form.service_q.data and form.service_q.validate(form)):
        return {}
    try:
        listing = price_list()
    except BackendError as err:
        return {"problem": backend_message(err)}
    return {"listing": listing, "services": find_services(listing, form.service_q.data)}


def _find_patient(form: ChargeForm, lines: list[Line]) -> Any:
    found, problem = None, None
    if form.who.validate(form):
        try:
            found = _patients_found(form.who.data)
        except BackendError as err:
            problem = backend_message(err)
    return _render(form, lines, 200 if found is not None else 422, found=found, who_problem=problem)


def _choose(form: ChargeForm, lines: list[Line], pid: str) -> Any:
    if not FHIR_ID.fullmatch(pid):
        return _render(form, lines, 422)
    form.patient.data = pid
    return _render(form, lines)


def _find_service(form: ChargeForm, lines: list[Line]) -> Any:
    if not form.service_q.validate(form):
        return _render(form, lines, 422)
    try:
        listing = price_list()
    except BackendError as err:
        return _render(form, lines, page_status(err), problem=backend_message(err))
    return _render(form, lines, listing=listing, services=find_services(listing, form.service_q.data or ""))


def _add(form: ChargeForm, lines: list[Line], sid: str) -> Any:
    """A service added from the list: a new line of 1, or one more on its line if it is there."""
    if FHIR_ID.fullmatch(sid):
        same = next((line for line in lines if line.service == sid), None)
        if same is not None:
            same.qty_text = str(min(MAX_QUANTITY, (same.qty or 0) + 1))
        elif len(lines) < MAX_LINES:
            lines.append(Line(sid, "1"))
        else:
            return _render(form, lines, 422, lines_problem=gettext("An invoice holds at most %(n)d lines.",
                                                                    n=MAX_LINES))
    return _render(form, lines, **_service_search(form))  # the search stays: the next service is one click


def _record_card(form: ChargeForm, lines: list[Line]) -> Any:
    pid = form.patient.data
    fields = (form.card_number, form.card_level, form.card_start, form.card_end)
    ok = all([f.validate(form, extra_validators=[type(form).validate_card_end] if f is form.card_end else ())
              for f in fields])
    # refused (the form's checks or billing's): the card box stays with what was typed and says why, even
    # when billing's list of the patient's cards could not be read (card_typed)
    if not pid or not ok:
        return _render(form, lines, 422, card_typed=True,
                       card_problem=None if pid else gettext("Choose the patient first."))
    try:
        record_card(form.key.data, pid, form)
    except BackendError as err:
        return _render(form, lines, page_status(err), card_typed=True, card_problem=backend_message(err))
    for f in fields:
        f.data = None
    return _render(form, lines, card_saved=True)


def _issue(form: ChargeForm, lines: list[Line]) -> Any:
    """The one submit: checks, then the charges, the invoice and $issue; then the invoice page."""
    pid = form.patient.data
    patient_problem = None if pid else gettext("Choose the patient first.")
    found = patients.lookup([pid]) if pid else None  # None: the EHR did not answer
    if found is not None and pid not in found:  # the EHR answered: no such patient
        patient_problem = gettext("The health record has no such patient; choose the patient again.")
        form.patient.data = ""
    pending = posted_ids("pending")  # the charges not yet invoiced the cashier left ticked
    lines_problem = None if lines or pending else gettext("Add at least one service from the price list.")
    seen: set[str] = set()
    for line in lines:  # a quantity not 1-1000 is said beside it (Line.qty_error)
        if line.qty is not None and line.service in seen:
            line.error = gettext("This service is listed twice; keep one line and raise its quantity.")
        seen.add(line.service)
    try:
        listing = price_list(fresh=True)  # what billing will price: a line gone from it is refused here
    except BackendError as err:
        return _render(form, lines, page_status(err), problem=backend_message(err),
                       patient_problem=patient_problem, lines_problem=lines_problem)
    for line in lines:
        if line.service not in listing and line.error is None:
            line.error = gettext("This service is no longer on the price list; remove the line.")
        elif line.error is None and line.shown is not None and listing[line.service]["price"] != line.shown:
            # an admin changed the price since the page showed it: the cashier sees the new one before
            # the patient is charged it (the page now shows it, so issuing again charges it)
            line.error = gettext("The price changed from %(old)s to %(new)s since the page showed it: check "
                                 "the total, then issue again.", old=vnd(line.shown),
                                 new=vnd(listing[line.service]["price"]))
    if patient_problem or lines_problem or any(line.error or line.qty_error for line in lines):
        return _render(form, lines, 422, listing=listing, patient_problem=patient_problem,
                       lines_problem=lines_problem, errors_summary=True)
    made: list[str] = []  # the ChargeItems made (or answered again) before a refusal: the form keeps them
    try:
        iid = issue_invoice(form.key.data, pid, lines, pending, made, name=person_name((found or {}).get(pid)))
    except Refused:
        return _render(form, lines, 422, listing=listing, errors_summary=True, made=made)
    except BackendError as err:
        return _render(form, lines, page_status(err), listing=listing, problem=backend_message(err), made=made)
    return done_in_place(url_for("web.invoice", iid=iid, p=pid), "issued")  # htmx's: by HX-Redirect


def in_place(answer: tuple[Any, int]) -> tuple[Any, int]:
    """A form's page again (its errors, its step, a refusal): 200 to htmx, which swaps the form's box only with
    a 2xx (the refusal is said in the box), the page's own status to a browser's post."""
    page, status = answer
    return page, 200 if is_htmx() else status


# --------------------------------------------------------------------------- the invoice page's shares

SD = "https://sen.vn/fhir/StructureDefinition/"
PRICE_COMPONENT_SYSTEM = "urn:sen:billing:price-component"


def _ext_value(res: dict[str, Any], name: str) -> Any:
    for ext in res.get("extension") or []:
        if ext.get("url") == SD + name:
            return next((v for k, v in ext.items() if k.startswith("value")), None)
    return None


@bp.app_template_filter("shares")
def invoice_shares(inv: dict[str, Any] | None) -> dict[str, Any] | None:
    """The BHYT split billing wrote on an Invoice (``sen_billing.domain.invoices``: extensions
    ``insurer-share``, ``patient-share``, ``bhyt-benefit-level``, ``bhyt-applied-percent``): the
    gross total, what BHYT pays, what the patient pays, the card's level and the percentage
    applied (100 under the threshold). None for an invoice without them."""
    insurer, patient = _ext_value(inv or {}, "insurer-share"), _ext_value(inv or {}, "patient-share")
    if not isinstance(insurer, dict) or not isinstance(patient, dict):
        return None
    return {"gross": ((inv or {}).get("totalGross") or {}).get("value"), "insurer": insurer.get("value"),
            "patient": patient.get("value"), "level": _ext_value(inv or {}, "bhyt-benefit-level"),
            "applied": _ext_value(inv or {}, "bhyt-applied-percent")}


@bp.app_template_filter("line_shares")
def line_shares(line: dict[str, Any]) -> dict[str, Any] | None:
    """A line's insurer and patient shares (its price components coded by billing), or None."""
    found = {}
    for pc in line.get("priceComponent") or []:
        for c in (pc.get("code") or {}).get("coding") or []:
            if c.get("system") == PRICE_COMPONENT_SYSTEM and c.get("code") in ("insurer-share", "patient-share"):
                found[c["code"]] = (pc.get("amount") or {}).get("value")
    return {"insurer": found["insurer-share"], "patient": found["patient-share"]} if len(found) == 2 else None
