"""The price list (billing's ChargeItemDefinitions): every signed-in role reads it, the admin
changes a price.

- ``/prices``: the services with code, Vietnamese name and an English one beside it, facility level
  and specialty where the entry has them (the ``useContext`` billing prices consults by), the price
  in đồng, the version and its time. Filtered by name without accents (``tim mach`` finds "Tim
  mạch"; the English name too), in the portal: the list is one billing search of at most
  :data:`LIST_SIZE` entries, a few dozen in practice.
- ``POST /prices/<id>`` (admin): the entry as billing holds it now, its base price replaced, PUT
  with ``If-Match`` of the version the admin saw on the page. Billing answers 412 when anyone
  changed the entry since (its store claims version n+1 by an insert: exactly one of two
  concurrent edits of version n wins), so a second admin never silently overwrites the first:
  the page says so, shows the price now in force and keeps what was typed. Billing also refuses
  every other role (403); the portal refuses their POST first with a readable page.
- Saving the price in force changes nothing: the entry is sent as it stands, billing writes no version and
  answers the one the admin saw, and the page says "Không có thay đổi" instead of the new price.
- ``/prices/<id>/history``: every version (billing's ``_history``): when, who, old → new price.

Who made a version: billing writes it into every version its API is sent, from the caller's
token (the extension :data:`CHANGED_BY`: name and subject; ``sen_billing.domain.pricing.
stamp_changer``), whatever the body says; the portal only reads it. A version without it was
written by billing itself from the price list file (version 1, or a change of the file).
"""

from __future__ import annotations

import copy
import re
import uuid
from datetime import datetime
from typing import Any

from flask import g, render_template, request, url_for
from flask_babel import force_locale, get_locale, gettext
from flask_babel import lazy_gettext as _l
from sen_shared.fhir.search.text import normalize, prefix_tokens, query_tokens
from wtforms import HiddenField
from wtforms.validators import InputRequired, NumberRange

from . import backend_message, bp, kept, login_required
from .backend import BackendError, call, entries, page_status
from .formatting import TZ, codeable, vnd
from .forms import FlaskForm, FormKey, Pattern, VndField
from .notices import flash, taken  # flash: said on the page the answer leads to, that page's alone
from .users import shown_name

LIST_SIZE = 1000  # billing's largest search page; a province's price list is a few dozen entries
HISTORY_SIZE = 200  # versions a history page shows, newest first
MAX_PRICE = 1_000_000_000  # one tỷ đồng: no service of the list costs more; billing's own cap is 10 tỷ
SERVICE_SYSTEM = "urn:sen:billing:service"
CONTEXT_SYSTEM = "urn:sen:billing:context"
COVERED_EXT = "https://sen.vn/fhir/StructureDefinition/bhyt-covered"
CHANGED_BY = "https://sen.vn/fhir/StructureDefinition/price-changed-by"
_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
SAVED = "price-saved:"  # the category of a saved price's message: this prefix and the entry's id

LEVELS = {"central": _l("Central"), "province": _l("Provincial"), "district": _l("District"),
          "commune": _l("Commune")}
SPECIALTIES = {"394579002": _l("Cardiology"), "394583002": _l("Endocrinology"), "394914008": _l("Radiology"),
               "394537008": _l("Paediatrics")}
# SNOMED CT's own display of each (its preferred term: a coding's ``display``; the names above are the page's)
SPECIALTY_DISPLAYS = {"394579002": "Cardiology", "394583002": "Endocrinology", "394914008": "Radiology",
                      "394537008": "Pediatric specialty"}
# the English name beside the Vietnamese one, by the service's code (the price list file's services)
SERVICES = {"teleconsult": _l("Teleconsultation"), "kham-benh": _l("Medical examination"),
            "xn-cong-thuc-mau": _l("Complete blood count"), "xn-duong-huyet": _l("Blood glucose test"),
            "dien-tim": _l("Electrocardiogram"), "sieu-am-bung": _l("Abdominal ultrasound"),
            "x-quang-nguc": _l("Chest X-ray"), "ban-sao-ho-so": _l("Certified copy of the medical record")}


LINE_SERVICE_EXT = "https://sen.vn/fhir/StructureDefinition/invoice-line-service"


@bp.app_template_filter("line_title")
def line_title(line: dict[str, Any]) -> str:
    """What an Invoice line is for, in the page's language: billing writes the price list's service
    code in the line's ``invoice-line-service`` extension (``sen_billing.domain.invoices``), with
    its Vietnamese title as text; a receipt's line (billing's receipt JSON) has the code as ``service``
    and the title as ``text``. An English page names a known code in English
    (:data:`SERVICES`); otherwise the title as billing wrote it (the ChargeItem reference's
    display, or an inline code as text), as for an invoice made before billing wrote codes."""
    concepts = [e.get("valueCodeableConcept") or {} for e in line.get("extension") or []
                if isinstance(e, dict) and e.get("url") == LINE_SERVICE_EXT]
    concepts.append(line.get("chargeItemCodeableConcept") or {})
    if line.get("service"):  # a receipt's line (billing's receipt JSON): the service's code beside its text
        concepts.append({"coding": [{"system": SERVICE_SYSTEM, "code": line["service"]}]})
    locale = get_locale()
    if locale is not None and locale.language == "en":
        title = line.get("text") or (line.get("chargeItemReference") or {}).get("display") or ""
        for concept in concepts:
            for c in concept.get("coding") or []:
                if c.get("system") == SERVICE_SYSTEM and c.get("code") in SERVICES:
                    text = str(concept.get("text") or title)
                    specialty = _specialty_named(concepts, text)
                    if specialty is None and _more_than(c["code"], text):
                        break  # a specialty the portal has no English for: billing's title names it
                    return _english(c["code"], specialty)
    if line.get("chargeItemCodeableConcept"):
        return codeable(line["chargeItemCodeableConcept"])
    if line.get("text"):  # a receipt's line
        return str(line["text"])
    return str((line.get("chargeItemReference") or {}).get("display") or gettext("Teleconsultation"))


# ------------------------------------------------------------------ reading an entry

def base_price(res: dict[str, Any]) -> int | None:
    for group in res.get("propertyGroup") or []:
        for pc in group.get("priceComponent") or []:
            if pc.get("type") == "base":
                value = (pc.get("amount") or {}).get("value")
                return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
    return None


def _context(res: dict[str, Any], code: str) -> str | None:
    for uc in res.get("useContext") or []:
        if (uc.get("code") or {}).get("system") == CONTEXT_SYSTEM and (uc.get("code") or {}).get("code") == code:
            for c in (uc.get("valueCodeableConcept") or {}).get("coding") or []:
                if c.get("code"):
                    return str(c["code"])
    return None


def service_code(res: dict[str, Any]) -> str:
    for c in (res.get("code") or {}).get("coding") or []:
        if c.get("system") == SERVICE_SYSTEM and c.get("code"):
            return str(c["code"])
    return ""


def _label(table: dict[str, Any], code: str | None) -> str:
    label = table.get(code or "")
    return str(label) if label is not None else (code or "")


def _english(service: str, specialty: str | None) -> str:
    """A service of the price list in English with its specialty (``Teleconsultation — Cardiology``): what
    names a price list entry and an invoice's line alike."""
    with force_locale("en"):
        parts = [str(SERVICES[service])]
        if specialty:
            parts.append(_label(SPECIALTIES, specialty))
        return " — ".join(parts)


def _specialty_named(concepts: list[dict[str, Any]], title: str) -> str | None:
    """The specialty an invoice line's service is of (a consult's: its price is the specialty's): a SNOMED
    specialty code the line carries, else the one its Vietnamese title ends with (billing's title of a
    specialty's entry, ``Hội chẩn từ xa chuyên khoa Tim mạch``, the line's text); None for none."""
    for concept in concepts:
        for c in concept.get("coding") or []:
            if c.get("code") in SPECIALTIES and c.get("system") == "http://snomed.info/sct":
                return str(c["code"])
    words = " ".join(title.split()).casefold()
    with force_locale("vi"):
        for code, label in SPECIALTIES.items():
            if words.endswith(" " + " ".join(str(label).split()).casefold()):
                return code
    return None


def _more_than(service: str, title: str) -> bool:
    """The Vietnamese title says more than the service's own name (``Hội chẩn từ xa chuyên khoa Lão khoa``
    beside ``Hội chẩn từ xa``): its English name alone would drop what."""
    with force_locale("vi"):
        plain = " ".join(str(SERVICES[service]).split()).casefold()
    words = " ".join(title.split()).casefold()
    return words != plain and words.startswith(plain + " ")


def english_name(res: dict[str, Any]) -> str:
    """The service in English (the page shows it beside billing's Vietnamese title): its service,
    specialty and level from the portal's labels; "" for a service the portal has no name for."""
    if service_code(res) not in SERVICES:
        return ""
    name = _english(service_code(res), _context(res, "specialty"))
    level = _context(res, "facility-level")
    with force_locale("en"):
        return f"{name} ({str(LEVELS[level]).lower()} level)" if level in LEVELS else name


def covered(res: dict[str, Any]) -> bool:
    return all(ext.get("valueBoolean", True) for ext in res.get("extension") or [] if ext.get("url") == COVERED_EXT)


def changed_by(res: dict[str, Any]) -> str | None:
    """Who made this version, as billing recorded it from their token: their name (a role's label, as the
    demo admin's, in the page's language: :func:`.users.shown_name`), else their subject; None for a
    version billing wrote from the price list file (see the module)."""
    for ext in res.get("extension") or []:
        if ext.get("url") != CHANGED_BY:
            continue
        parts = {e.get("url"): e for e in ext.get("extension") or []}
        name = (parts.get("name") or {}).get("valueString")
        return shown_name(name) if name else (parts.get("user") or {}).get("valueString") or None
    return None


def vietnamese_name(res: dict[str, Any]) -> str:
    """Billing's title of the entry (Vietnamese), else its code's text, else its id."""
    return str(res.get("title") or (res.get("code") or {}).get("text") or res.get("id") or "")


def page_name(res: dict[str, Any]) -> tuple[str, str]:
    """The service's name in the page's language and that name's language (``vi``, ``en``): on an English
    page the English name where the portal has one (:func:`english_name`), else billing's Vietnamese title.
    What names an entry in a sentence or a heading: the change box's label, the history link and page,
    the saved price's notice."""
    en = english_name(res)
    locale = get_locale()
    if en and locale is not None and locale.language == "en":
        return en, "en"
    return vietnamese_name(res), "vi"


def row(res: dict[str, Any]) -> dict[str, Any]:
    meta = res.get("meta") or {}
    vi = vietnamese_name(res)
    en = english_name(res)
    level, specialty = _context(res, "facility-level"), _context(res, "specialty")
    name = page_name(res)[0]
    with force_locale("vi"):  # what a Vietnamese row shows beside the title (English: in the English name)
        shown = [_label(LEVELS, level) if level else "", _label(SPECIALTIES, specialty) if specialty else ""]
    return {"id": res.get("id"), "vi": vi, "en": en, "name": name,
            "service": str((res.get("code") or {}).get("text") or vi),
            "level_code": level, "specialty_code": specialty,
            "level": _label(LEVELS, level) if level else "", "specialty": _label(SPECIALTIES, specialty) if specialty
            else "", "price": base_price(res), "version": str(meta.get("versionId") or ""),
            "updated": meta.get("lastUpdated"), "active": res.get("status") == "active", "covered": covered(res),
            "key": prefix_tokens(normalize(" ".join([vi, en, *shown, service_code(res), str(res.get("id") or "")])))}


def matches(r: dict[str, Any], q: str) -> bool:
    """Every word typed begins a word of the entry's name (Vietnamese or English), of the level or specialty its
    row shows, or of its code: Sen's string search (sen_shared's ``normalize`` and word prefixes, the FHIR
    engine's), accents, đ and case aside either way. Before, a word matched inside any word ("xa" in
    "examination") and the Vietnamese level ("Xã") was not searched."""
    return set(query_tokens(normalize(q))) <= r["key"]


# ------------------------------------------------------------------ the form

class PriceForm(FlaskForm):
    """One entry's new price; ``version``: the version the admin saw (sent as ``If-Match``). The price
    is the pages' one money box (forms.VndField), its limit :data:`MAX_PRICE`."""

    price = VndField(_l("New price (đồng)"), maximum=MAX_PRICE,
                     invalid=_l("Write the price as a whole number of đồng, e.g. 150.000."),
                     validators=[InputRequired(_l("Enter the new price.")),
                                 NumberRange(1, None, _l("A price is more than 0 đồng."))])
    version = HiddenField(validators=[InputRequired(), Pattern(r"\d{1,12}")])
    key = FormKey()  # made when the page is shown: sent again, billing replays the save (Idempotency-Key)


def price_form(r: dict[str, Any], posted: FlaskForm | None = None) -> FlaskForm:
    if posted is not None:
        return posted
    return PriceForm(formdata=None, prefix=f"p-{r['id']}", version=r["version"],
                     price=r["price"], key=uuid.uuid4().hex)


# ------------------------------------------------------------------ billing

def fetch_list() -> tuple[list[dict[str, Any]], bool]:
    """The price list as rows, by Vietnamese name; ``more``: billing has more than one page."""
    bundle = call("billing", "GET", "/fhir/ChargeItemDefinition", params={"_count": str(LIST_SIZE)}).json()
    rows = [row(res) for res in entries(bundle, "ChargeItemDefinition")]
    # by service (a consult's group by specialty), then by level from the central down
    order = {level: i for i, level in enumerate(LEVELS)}
    rows.sort(key=lambda r: (normalize(r["service"]), order.get(r["level_code"] or "", len(order)), r["id"]))
    more = any(link.get("relation") == "next" for link in bundle.get("link") or [])
    return rows, more


def fetch_entry(cid: str) -> dict[str, Any]:
    return call("billing", "GET", f"/fhir/ChargeItemDefinition/{cid}").json()


def with_price(res: dict[str, Any], price: int, at: str | None = None) -> dict[str, Any]:
    """``res`` with its base price ``price`` (billing records who changes it, from the token). The same
    price leaves the entry as it is (its ``date`` too): billing then writes no version and answers the one
    in force. ``at``: the change's time (``date``), now when None."""
    out = copy.deepcopy(res)
    out.pop("meta", None)  # the server's
    if base_price(res) == price:
        return out
    for group in out.get("propertyGroup") or []:
        for pc in group.get("priceComponent") or []:
            if pc.get("type") == "base":
                pc["amount"] = {"value": price, "currency": "VND"}
    out["date"] = at or datetime.now(TZ).isoformat(timespec="seconds")  # ChargeItemDefinition.date: last changed
    return out


def put_price(cid: str, price: int, version: str, key: str | None = None) -> dict[str, Any]:
    """The new version, or a BackendError (412: the entry is no longer at ``version``). ``key``: the form's
    (:class:`PriceForm`), made the save's ``Idempotency-Key`` with the entry, the version and the price: the form
    sent again after its answer was lost sends the same request (built from the version the page showed, read
    from the history once the entry has moved on, and the first send's time, kept on the server under the key:
    web/kept.py), so billing answers the version it made instead of a 412 saying someone changed it."""
    from .charges import request_key  # charges imports this module

    shown = fetch_entry(cid)
    headers = {"If-Match": f'W/"{version}"'}
    at = None
    if key:
        headers["Idempotency-Key"] = request_key(key, "price", cid, version, str(price))
        if str((shown.get("meta") or {}).get("versionId") or "") != version:
            try:  # moved on since the page (this form's own save, or another's: then billing's 412)
                shown = call("billing", "GET", f"/fhir/ChargeItemDefinition/{cid}/_history/{version}").json()
            except BackendError:
                pass  # not readable: sent with what is in force, billing answers 412
        at = datetime.now(TZ).isoformat(timespec="seconds")
        # sent before: that send's time. put answers True when a record of the name is there already (the
        # first send's, which it leaves), so the time is read back every time: taking put's True for "first"
        # sent a new time with the same key a second later, and billing refused it (ci-local, session 30)
        kept.put(f"price/{headers['Idempotency-Key']}", at)
        at = kept.get(f"price/{headers['Idempotency-Key']}") or at
    r = call("billing", "PUT", f"/fhir/ChargeItemDefinition/{cid}", json=with_price(shown, price, at),
             headers=headers)
    return r.json()


# ------------------------------------------------------------------ pages

def _page(status: int = 200, *, posted: dict[str, FlaskForm] | None = None, problem: str | None = None,
          notice: dict[str, str] | None = None) -> Any:
    q = (request.args.get("q") or "").strip()[:100]
    rows, more, failed, failed_status = [], False, None, 200
    try:
        rows, more = fetch_list()
    except BackendError as err:  # said on the page, with an outage's status (503, 502) or a refusal's own
        failed, failed_status = backend_message(err), page_status(err)
    shown = [r for r in rows if matches(r, q)] if q else rows
    admin = g.user.role == "admin"
    # a saved price is said on its entry, where the page's anchor brings the admin back (walk of session 28: said
    # above the list, a row further down was saved with no word in sight, at 360 px and at 1280 alike); above
    # the list only for an entry the page does not show
    # this page's own messages, taken by its full load only (notices.taken): a filter's answer (htmx's GET as one
    # types) sent after a save took the save's message from the page it leads to (ci-local, session 29)
    flashed = taken()
    saved = {cat.removeprefix(SAVED): msg for cat, msg in flashed if cat.startswith(SAVED)}
    on_rows = {r["id"] for r in shown} if admin else set()
    forms = {r["id"]: price_form(r, (posted or {}).get(r["id"])) for r in shown} if admin else {}
    headers = {}
    if request.headers.get("HX-Request") == "true":  # the filter typed: the rows alone
        template, status = "_prices_rows.html", failed_status
        if failed:  # htmx swaps no 4xx/5xx by itself: app.js swaps one that names its target
            headers = {"HX-Retarget": "#price-results"}
    else:
        template, status = "prices.html", failed_status if failed and status == 200 else status
    return render_template(template, rows=shown, total=len(rows), q=q, more=more, admin=admin, forms=forms,
                           problem=problem or failed, notice=notice or {}, limit=LIST_SIZE,
                           saved={cid: m for cid, m in saved.items() if cid in on_rows},
                           saved_elsewhere=[m for cid, m in saved.items() if cid not in on_rows],
                           title=gettext("Price list")), status, headers


@bp.route("/prices")
@login_required()
def prices() -> Any:
    return _page()


@bp.route("/prices/<cid>", methods=["POST"])
@login_required()
def price_change(cid: str) -> Any:
    if g.user.role != "admin":
        return render_template("error.html", title=gettext("Not allowed"),
                               message=gettext("Only the administrator changes the price list.")), 403
    if not _ID.fullmatch(cid):
        return render_template("error.html", title=gettext("Not found"),
                               message=gettext("This page or record does not exist.")), 404
    form = PriceForm(prefix=f"p-{cid}")
    if not form.validate_on_submit():
        return _page(422, posted={cid: form}, problem=gettext("Please correct the highlighted fields."))
    try:
        saved = put_price(cid, form.price.data, form.version.data, form.key.data)
    except BackendError as err:
        if err.kind == "refused" and err.status in (409, 412):
            return _conflict(cid, form)
        # billing's own status (an entry it has none of: 404, not the admin's to change: 403), as the sentence says
        return _page(page_status(err), posted={cid: form}, problem=backend_message(err))
    version = str((saved.get("meta") or {}).get("versionId", ""))
    name = page_name(saved)[0] or cid
    if version == form.version.data:  # billing wrote no version: the price typed is the one in force
        flash(gettext("No change: the price of %(name)s is still %(price)s (version %(version)s).",
                      name=name, price=vnd(base_price(saved)), version=version), SAVED + cid)
    else:
        flash(gettext("%(name)s: the price is now %(price)s (version %(version)s).", name=name,
                      price=vnd(base_price(saved)), version=version), SAVED + cid)
    from .clinic import done_in_place  # clinic imports charges, which imports this module

    # sent in place (_prices_rows.html): the page again by HX-Redirect (and a reload: the same page, to its entry)
    return done_in_place(url_for("web.prices", q=request.args.get("q") or None, _anchor=f"price-{cid}"), None)


def _conflict(cid: str, form: PriceForm) -> Any:
    """Someone changed the entry since the admin opened the page: nothing was saved; the page shows the
    price in force now, keeps what was typed, and the form now names the current version (saving again
    is a deliberate choice made with the new price in sight)."""
    try:
        now = fetch_entry(cid)
    except BackendError as err:
        return _page(409, posted={cid: form}, problem=backend_message(err))
    seen = int(form.version.data)
    if int((now.get("meta") or {}).get("versionId") or 0) <= seen:
        # the save that won has claimed version seen+1 (its history document, the whole version) but
        # its current write has not landed yet: that version is the price in force
        try:
            now = call("billing", "GET", f"/fhir/ChargeItemDefinition/{cid}/_history/{seen + 1}").json()
        except BackendError:
            pass  # none readable: the page shows what the current document says
    meta = now.get("meta") or {}
    form.version.data = str(meta.get("versionId") or form.version.data)
    from .formatting import when

    who = changed_by(now)
    message = gettext("Someone changed this price meanwhile: it is now %(price)s (version %(version)s, "
                      "%(when)s%(who)s). Your price was not saved; check it and save again if it should "
                      "still change.", price=vnd(base_price(now)), version=meta.get("versionId", ""),
                      when=when(meta.get("lastUpdated")), who=", " + who if who else "")
    return _page(409, posted={cid: form}, notice={cid: message},
                 problem=gettext("The price was not saved: someone changed it meanwhile (see the entry)."))


@bp.route("/prices/<cid>/history")
@login_required()
def price_history(cid: str) -> Any:
    if not _ID.fullmatch(cid):
        return render_template("error.html", title=gettext("Not found"),
                               message=gettext("This page or record does not exist.")), 404
    bundle = call("billing", "GET", f"/fhir/ChargeItemDefinition/{cid}/_history",
                  params={"_count": str(HISTORY_SIZE)}).json()  # a BackendError: the error page (404, down)
    versions = []
    newest = next((e["resource"] for e in bundle.get("entry") or [] if e.get("resource")), None)
    name, name_lang = page_name(newest) if newest else (cid, "")  # as the list names it, in the page's language
    for e in bundle.get("entry") or []:
        res = e.get("resource")
        method = (e.get("request") or {}).get("method")
        resp = e.get("response") or {}
        version = re.sub(r"\D", "", str(resp.get("etag") or "")) or str(((res or {}).get("meta") or {})
                                                                        .get("versionId") or "")
        versions.append({"version": version, "when": resp.get("lastModified") or ((res or {}).get("meta") or {})
                         .get("lastUpdated"), "price": base_price(res) if res else None, "deleted": res is None,
                         "created": method == "POST", "who": changed_by(res) if res else None})
    for newer, older in zip(versions, versions[1:], strict=False):  # newest first: each one's previous price
        newer["old"] = older["price"]
    more = any(link.get("relation") == "next" for link in bundle.get("link") or [])
    return render_template("price_history.html", versions=versions, cid=cid, name=name, name_lang=name_lang, more=more,
                           limit=HISTORY_SIZE, title=gettext("Price history"))
