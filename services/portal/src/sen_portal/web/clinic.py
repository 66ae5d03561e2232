"""Clinic staff: find or register a patient, the patient's chart, request a consult and follow it."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from html import unescape
from typing import Any
from urllib.parse import urlsplit

from flask import Response, copy_current_request_context, g, make_response, redirect, render_template, request, url_for
from flask_babel import force_locale, format_decimal, gettext
from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from sen_shared import bhyt
from sen_shared.fhir.search.text import normalize
from wtforms import MultipleFileField, SelectField

from .. import caches
from . import (
    backend,
    backend_message,
    bp,
    icd10,
    imaging,
    kept,
    login_required,
    loinc,
    patients,
    results,
    searches,
    select_locale,
    sent,
    typed_text,
    uploads,
)
from .backend import BackendError, entries, fhir_get, fhir_post, outage_status, page_status
from .confirming import confirmation
from .confirming import status as confirming_status
from .formatting import codeable, parse_instant, when
from .forms import (
    AnswerForm,
    ConsultForm,
    EndTakeOnForm,
    FormKey,
    MessageForm,
    PatientForm,
    PatientSearchForm,
    ReasonForm,
    TakeOnForm,
)
from .notices import flash_step, step_done, steps_done
from .patients import FHIR_ID, patient_id

SYS_CCCD = "https://fhir.sen.vn/sid/cccd"
SYS_BHYT = bhyt.CARD_SYSTEM
MAX_FILE_BYTES = 1_500_000  # a DocumentReference carries its file inline; the EHR takes bodies up to 2 MB
FORM_FIELDS_BYTES = 64_000  # what a form's own fields may take of the portal's body limit besides its files
UPLOAD_SYSTEM = "https://sen.vn/sid/portal-upload"  # a file's DocumentReference identifier: the form's key


class KeyedConsultForm(ConsultForm):
    """The consult request form with its own ``key`` (made when the form is first shown): its
    resubmissions (a double click, a retry on a slow link) send the same files and ``$submit``. ``specialty``:
    the hub's specialty asked for (:func:`specialty_field`), none by default."""

    key = FormKey()
    specialty = SelectField(_l("Specialty"), choices=[], default="", validate_choice=False)


class AnswerFilesForm(AnswerForm):
    """The clinic's answer to the hub's question, with files (an ECG the hub asked for): the consult
    form's kind of files, each a DocumentReference of the patient, sent as the answer's attachments.
    ``key``: the form's own, as the consult form's."""

    key = FormKey()
    files = MultipleFileField(_l("Images and documents (PDF, JPEG, PNG, WebP; at most 1.5 MB each)"))


class KeyedPatientForm(PatientForm):
    """The registration form with its own ``key`` (made when the form is first shown): the same details
    sent again with it (their answer lost on a slow link, Back and Register once more) open the chart of
    the patient the first registered (:func:`patient_new`), not a second patient nor the question whether
    the patient is registered already."""

    key = FormKey()


class CancelForm(ReasonForm):
    """The clinic's cancel of its consult, with the form's ``key`` as the consult form's: a double click
    cancels once and both clicks land on the cancelled consult."""

    key = FormKey()


def upload_limits() -> dict[str, Any]:
    """The file limits a form with files says and its page checks: ``file`` bytes each (the EHR's
    inline copy) and ``total`` bytes of all a form's files together (the portal's whole-request limit,
    ``max_body_bytes``, less room for the form's fields); ``hint``, the sentence saying both."""
    total = max(backend.settings().max_body_bytes - FORM_FIELDS_BYTES, 0)
    each = min(MAX_FILE_BYTES, total)

    def mb(n: int) -> str:
        return format_decimal(int(n / 100_000) / 10, format="0.#")

    return {"file": each, "total": total,
            "hint": gettext("At most %(each)s MB a file and %(total)s MB all files together.",
                            each=mb(each), total=mb(total))}


def form_key(form: FlaskForm) -> FlaskForm:
    """``form``'s ``key`` as posted, else a new one (a form shown for the first time): every
    resubmission of the form sends the same one (``charges.request_key`` makes its writes' keys)."""
    if not form.key.data:  # none posted, or not a key (forms.FormKey)
        form.key.data = uuid.uuid4().hex
    return form


def _is_htmx() -> bool:
    return request.headers.get("HX-Request") == "true"


def search_params(q: str) -> dict[str, str]:
    """A CCCD (12 digits) or BHYT number (2 letters, 13 digits) searches identifiers; else the name."""
    compact = q.replace(" ", "")
    if compact.isdigit() and len(compact) == 12:
        return {"identifier": f"{SYS_CCCD}|{compact}"}
    if len(compact) == 15 and compact[:2].isalpha() and compact[2:].isdigit():
        return {"identifier": f"{SYS_BHYT}|{compact.upper()}"}
    return {"name": q.strip()}


def find_patients(q: str) -> list[dict[str, Any]]:
    """The EHR's first 20 patients for what was typed (:func:`search_params`), with the user's token;
    a BackendError when the EHR refuses or does not answer."""
    return entries(fhir_get("ehr", "/fhir/Patient", {**search_params(q), "_count": "20"}), "Patient")


def patients_found(q: str) -> dict[str, Any]:
    """What a patient search shows: the patients (None when the EHR did not answer), the EHR's refusal,
    and for a whole CCCD or BHYT number none of the user's patients holds, the take-on form; ``status``, the
    page's (200, else :func:`.backend.page_status`: 503 down or slow, 502 failed, a refusal's own)."""
    results, problem, take_on, status = None, None, None, 200
    try:
        results = find_patients(q)
    except BackendError as err:
        problem, status = backend_message(err), page_status(err)
    # a whole CCCD or BHYT number that is none of the user's patients: a clinic may take on the
    # patient holding it (registered at another facility), never found by a name
    ident = search_params(q).get("identifier")
    if results == [] and ident and g.user.can("clinic") and g.user.facility:
        system, number = ident.split("|", 1)
        take_on = TakeOnForm(formdata=None, system="cccd" if system == SYS_CCCD else "bhyt", number=number)
    return {"results": results, "problem": problem, "take_on": take_on, "status": status}


@bp.route("/patients", methods=["GET"])
@login_required("clinic", "doctor")
def clinic_home() -> Any:
    """The search; ``?s=``: a search this session made (:mod:`.searches`), shown again (Back, refresh)."""
    q = searches.recall("patients")
    found = patients_found(q) if q else {"results": None}
    status = found.pop("status", 200)  # the EHR not answering: said on the page, with an outage's status
    return render_template("patients.html", form=PatientSearchForm(q=q), **found, title=gettext("Patients"),
                           SYS_CCCD=SYS_CCCD, SYS_BHYT=SYS_BHYT), status


@bp.route("/patients/search", methods=["POST"])
@login_required("clinic", "doctor")
def patient_search() -> Any:
    """POST, so names and CCCD numbers never appear in a URL or an access log; the address then names
    the search by a key (``/patients?s=``, :mod:`.searches`), so Back and refresh show it again."""
    form = PatientSearchForm()
    found: dict[str, Any] = {"results": None}
    headers: dict[str, str] = {}
    if form.validate_on_submit():
        found = patients_found(form.q.data)
        headers = searches.push_url("web.clinic_home", "patients", form.q.data)
    status = found.pop("status", 200)
    if _is_htmx() and status >= 400:  # htmx swaps no 4xx/5xx by itself: app.js swaps one that names its target
        headers = {**headers, "HX-Retarget": "#results"}
    template = "_patient_results.html" if _is_htmx() else "patients.html"
    return render_template(template, form=form, **found, title=gettext("Patients"), SYS_CCCD=SYS_CCCD,
                           SYS_BHYT=SYS_BHYT), status, headers


def facility_needed(title: str) -> Any:
    """The refusal of a clinic's step (registering a patient, taking one on, requesting a consult) to an account
    of no facility (the province's admin), or None. The EHR makes a patient a clinic's by
    ``Patient.managingOrganization``, the registering user's facility; an admin's patient would be no clinic's,
    seen by none, and an admin's consult would have no requesting clinic to answer it. Those steps are the
    staff's of the facility caring for the patient: the admin is not offered them (the pages' links need a
    facility too) and is told so here."""
    if g.user.facility:
        return None
    return render_template("error.html", title=title, message=gettext(
        "Patients are registered, taken on and sent for a consult by the staff of the facility caring for them: "
        "your account names no facility, so a patient or a consult made here would be no clinic's and no clinic "
        "would see it."), back=url_for("web.clinic_home"), back_label=gettext("Find a patient")), 403


@bp.route("/patients/new", methods=["GET", "POST"])
@login_required("clinic")
def patient_new() -> Any:
    """Register a patient. Before anything is stored, the facility's patients of the same name (accents
    and case aside), date of birth and sex are listed ("perhaps registered already") and the patient is
    registered only once a tick confirms another person (its value: the patients it was shown; one
    registered since is asked about again). A CCCD or BHYT number another patient holds: that patient's
    chart when the user may read it, else the offer to take the patient on here (:func:`patient_take_on`)."""
    from .charges import request_key

    refused = facility_needed(gettext("Register a patient"))
    if refused is not None:
        return refused
    form = form_key(KeyedPatientForm())
    problem, existing, same, take_on = None, None, [], None
    if form.validate_on_submit():
        # the form's key and what it says: registered by this form already (its answer lost on the way back),
        # sent again unchanged: that patient's chart; changed, the form is checked again as any other
        typed = json.dumps(patient_resource(form, None), sort_keys=True)
        registered = "registered/" + request_key(str(form.key.data), "register", typed)
        done = kept.get(registered)
        if isinstance(done, str) and FHIR_ID.fullmatch(done):
            return done_in_place(url_for("web.patient_chart", pid=done), "created")
        try:
            same = patients.same_person(form.family.data or "", form.given.data or "", form.birth_date.data,
                                        form.gender.data or "")
        except BackendError as err:
            problem = backend_message(err)
        confirmed = {p["id"] for p in same} <= set(request.form.get("again", "").split(","))
        if problem is None and confirmed:
            try:
                created = fhir_post("ehr", "/fhir/Patient", patient_resource(form, g.user.facility))
                kept.put(registered, created["id"])
                return done_in_place(url_for("web.patient_chart", pid=created["id"]), "created")
            except BackendError as err:
                if err.kind == "refused" and err.status == 429:  # too many numbers of others' patients
                    return registration_throttled(err, form)
                existing = registered_already(err, form)
                if existing is None:
                    problem = backend_message(err)
                else:
                    take_on = take_on_offer(existing, form)
    # each what tells them apart on the record: when registered (or last changed), the cards' last digits,
    # the address and the phone
    shown = [{"pid": p["id"], "name": patients.human_name(p), "born": p.get("birthDate"),
              "sex": patients.sex_text(p.get("gender")), "cccd": patients.masked(_identifier(p, SYS_CCCD)),
              "bhyt": patients.masked(_identifier(p, SYS_BHYT)), "recorded": patients.recorded(p),
              "address": patients.address_text(p), "phone": patients.phone_text(p)} for p in same]
    return render_template("patient_new.html", form=form, problem=problem, existing=existing, take_on=take_on,
                           take_on_pid=None if existing == ELSEWHERE else existing,
                           same=shown, same_ids=",".join(p["pid"] for p in shown),
                           title=gettext("Register a patient"))


def registration_throttled(err: BackendError, form: PatientForm) -> Any:
    """The EHR refuses the registration for a while (the user's numbers held by others' patients and wrong
    numbers at the take-on spent one budget): the page again, what was typed kept, saying until when."""
    message, headers = throttled(err)
    return render_template("patient_new.html", form=form, problem=message, existing=None, take_on=None,
                           take_on_pid=None, same=[], same_ids="", title=gettext("Register a patient")), \
        200 if _is_htmx() else 429, headers  # sent in place: htmx swaps a 2xx only


def _identifier(patient: dict[str, Any], system: str) -> str:
    return next((str(i.get("value") or "") for i in patient.get("identifier") or () if i.get("system") == system), "")


def take_on_offer(pid: str, form: PatientForm) -> TakeOnForm | None:
    """The take-on form for the patient ``pid`` who holds the number typed, when the EHR says the user
    may not read them (a patient of another facility); None when the user may (the chart's link is
    enough) or the EHR did not answer (the link then, as before)."""
    if pid != ELSEWHERE:  # named: the user may read them unless the lookup says otherwise
        found = patients.lookup([pid])
        if found is None or pid in found:
            return None
    # registered_already named the field whose number the patient holds (the form had no error before)
    system, number = ("bhyt", (form.bhyt.data or "").upper()) if form.bhyt.errors else ("cccd", form.cccd.data or "")
    return TakeOnForm(formdata=None, system=system, number=number, family=form.family.data, given=form.given.data,
                      birth_date=form.birth_date.data.isoformat(), gender=form.gender.data)


@bp.route("/patients/take-on", methods=["POST"], defaults={"pid": None})
@bp.route("/patients/<pid>/take-on", methods=["POST"])
@login_required("clinic")
def patient_take_on(pid: str | None) -> Any:
    """Take a patient registered at another facility on here (the EHR's ``$take-on``, with the full CCCD or
    BHYT number the nurse typed and the reason chosen or written), once confirmed, then open the chart:
    the patient the registration named (``pid``), or (from a search of the number) the one holding it.
    A second click lands on the same chart (the EHR grants once). The name, birth date and sex the
    registration form had come along: the chart says which of them the record says otherwise
    (:func:`patients.differences`); the record is not changed. Sent in place (_take_on_form.html, the page's main
    its box): done, the chart by HX-Redirect; not done (the step to confirm, the reason to give, a refusal) the
    page's main swapped with what the page says, its status kept (:data:`WHOLE_PAGE`). Sent again after its answer
    was lost, the EHR answers the grant it made: the same chart, one grant."""
    answer = make_response(_take_on(pid))
    if _is_htmx() and not answer.headers.get("HX-Redirect"):
        answer.headers.update(WHOLE_PAGE)
    return answer


WHOLE_PAGE = {"HX-Retarget": "#main", "HX-Reselect": "#main", "HX-Reswap": "outerHTML"}
"""The headers of a form sent in place whose answer is a whole page (the step, a refusal), 4xx too (app.js)."""


def _take_on(pid: str | None) -> Any:
    refused = facility_needed(gettext("Take this patient on here"))
    if refused is not None:
        return refused
    form = TakeOnForm()
    valid = form.validate_on_submit()
    if (pid is not None and not FHIR_ID.fullmatch(pid)) or set(form.errors) - {"reason", "other"}:
        return render_template("error.html", title=gettext("The request was refused"), message=gettext(
            "The patient could not be taken on: the form was incomplete. Register the patient again with "
            "their CCCD or health insurance number."), back=url_for("web.patient_new"),
            back_label=gettext("Register a patient")), 400
    # why, then the confirmation step (web/confirming.py): nothing is asked of the EHR before both
    asked = None if not valid else confirmation("take-on")
    if not valid or asked is not None:
        return render_template("take_on.html", take_on=form, asked=asked, registering=pid is not None,
                               action=url_for("web.patient_take_on", pid=pid),
                               title=gettext("Take this patient on here")), \
            400 if not valid else confirming_status(asked)
    system = SYS_CCCD if form.system.data == "cccd" else SYS_BHYT
    try:
        granted = patients.take_on(pid, system, (form.number.data or "").upper(), form.reason_text())
    except BackendError as err:
        if err.kind == "refused" and err.status == 403:
            return render_template("error.html", title=gettext("Not allowed"), message=gettext(
                "The health record service did not grant this patient: the number is not theirs, or your "
                "role may not take patients on. Check the card and register again.") if pid else gettext(
                "The health record service found no patient with this number to take on. Check the card, "
                "or register the patient."),
                back=url_for("web.patient_new"), back_label=gettext("Register a patient")), 403
        if err.kind == "refused" and err.status == 429:
            return too_many_wrong_numbers(err)
        raise
    pid = pid or next((patient_id(p.get("valueReference")) for p in granted.get("parameter") or ()
                       if p.get("name") == "patient"), None)
    if pid is None:
        return redirect(url_for("web.clinic_home"))
    # what the registration form said, for the chart to name where the record differs: kept on the server
    # (web/kept.py: never in the cookie nor a URL), the step's confirmation carrying a random reference to
    # it; the chart takes it once
    typed = {k: v for k, v in {"family": form.family.data, "given": form.given.data,
                                "birthDate": form.birth_date.data, "gender": form.gender.data}.items() if v}
    ref = secrets.token_urlsafe(12)  # 96 random bits
    if not typed or not kept.put(f"taken-on/{ref}", {"pid": pid, **typed}):
        ref = "1"  # nothing typed to compare (a take-on from a search), or not kept: the chart says the step only
    return done_in_place(url_for("web.patient_chart", pid=pid), "taken", ref)


def too_many_wrong_numbers(err: BackendError) -> Any:
    """The EHR compares no more numbers of this user's for a while (too many wrong ones): say until when,
    in the page's language, with the EHR's Retry-After."""
    message, headers = throttled(err)
    page = render_template("error.html", title=gettext("Too many wrong numbers"), message=message,
                           back=url_for("web.clinic_home"), back_label=gettext("Find a patient"))
    return page, 429, headers


def throttled(err: BackendError) -> tuple[str, dict[str, str]]:
    """What the EHR's 429 on numbers says (until when, in the page's language) and its Retry-After."""
    until = patients.retry_at(err)
    until_dt = parse_instant(until) if until else None
    message = gettext("Too many wrong card numbers were typed: the health record service checks no more "
                      "numbers from you until %(time)s. Check the patient's card, then try again at that time.",
                      time=when(until_dt)) if until_dt else gettext(
        "Too many wrong card numbers were typed: the health record service checks no more numbers from you "
        "for a while. Check the patient's card, then try again later.")
    headers = {}
    if until_dt is not None:
        headers["Retry-After"] = str(max(1, int((until_dt - datetime.now(UTC)).total_seconds()) + 1))
    return message, headers


_HOLDER = re.compile(r"^Patient/([A-Za-z0-9\-.]{1,64}) already has the identifier \S+ \(system (\S+)\)")
# a holder the user may not see is not named (sen_ehr.domain.registered_elsewhere): taken on by the number
_ELSEWHERE = re.compile(r"^this number \(system (\S+)\) is already registered to another patient")
ELSEWHERE = "(elsewhere)"  # registered_already's answer then: no id, never a FHIR id (parentheses)


def registered_already(err: BackendError, form: PatientForm) -> str | None:
    """The id of the patient who already holds the CCCD or BHYT number typed, or ``ELSEWHERE`` when the
    EHR does not name them (a patient the user may not see), when the EHR refused the registration for
    that (409 ``duplicate``, sen_shared/fhir/unique.py); the field gets the sentence, what was typed
    stays. None for any other refusal."""
    if err.status != 409 or err.code != "duplicate":
        return None
    m = _HOLDER.match(err.detail or "")
    hidden = _ELSEWHERE.match(err.detail or "") if m is None else None
    if m is None and hidden is None:
        return None
    system, holder = (m.group(2), m.group(1)) if m is not None else (hidden.group(1), ELSEWHERE)
    if system == SYS_BHYT:
        form.bhyt.errors = [*form.bhyt.errors, gettext("This health insurance number is already registered "
                                                       "to another patient.")]
    else:
        form.cccd.errors = [*form.cccd.errors, gettext("This CCCD number is already registered to another patient.")]
    return holder


def patient_resource(form: PatientForm, facility: str | None) -> dict[str, Any]:
    given = (form.given.data or "").split()
    family = (form.family.data or "").strip()
    res: dict[str, Any] = {
        "resourceType": "Patient", "active": True, "gender": form.gender.data,
        "birthDate": form.birth_date.data.isoformat(),
        "name": [{"use": "official", "family": family, "given": given, "text": " ".join([family, *given])}],
        "identifier": [], "communication": [{"language": {"coding": [{"system": "urn:ietf:bcp:47", "code": "vi"}]},
                                             "preferred": True}],
    }
    if form.cccd.data:
        res["identifier"].append({"system": SYS_CCCD, "value": form.cccd.data, "type": {"text": "Căn cước công dân"}})
    if form.bhyt.data:
        res["identifier"].append({"system": SYS_BHYT, "value": form.bhyt.data.upper(),
                                  "type": {"text": "Thẻ bảo hiểm y tế"}})
    if not res["identifier"]:
        del res["identifier"]
    if form.phone.data:
        res["telecom"] = [{"system": "phone", "value": form.phone.data, "use": "mobile"}]
    if form.district.data:
        res["address"] = [{"district": form.district.data, "country": "VN"}]
    if facility:
        res["managingOrganization"] = {"reference": f"Organization/{facility}"}
    return res


def chart_data(bundle: dict[str, Any]) -> dict[str, Any]:
    """The chart's sections from a Patient/$everything Bundle; numeric observations as series."""
    by_type: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in entries(bundle):
        by_type[r.get("resourceType", "")].append(r)
    series: dict[str, dict[str, Any]] = {}
    other: list[dict[str, Any]] = []  # the results that are no point of a trend, or have a part that is none
    for obs in by_type.get("Observation", []):
        if obs.get("status") == "entered-in-error":  # recorded by mistake: no result, on no trend
            continue
        code = (obs.get("code") or {})
        key = next((c.get("code") for c in code.get("coding") or [] if c.get("code")), code.get("text", "?"))
        when = results.effective(obs)
        vq = obs.get("valueQuantity")
        listed = not obs.get("component")  # a value not charted (below), or none at all
        if vq is not None and when and isinstance(vq.get("value"), int | float):
            s = series.setdefault(key, {"label": loinc.label(code), "unit": vq.get("unit") or vq.get("code") or "",
                                        "points": []})
            s["points"].append({"t": when, "v": vq["value"]})
            listed = False
        elif any(k in obs for k in (*results.VALUES, "dataAbsentReason")):
            listed = True
        for comp in obs.get("component") or []:  # blood pressure: one series per component
            cq = comp.get("valueQuantity")
            if cq is not None and when and isinstance(cq.get("value"), int | float):
                ckey = next((c.get("code") for c in (comp.get("code") or {}).get("coding") or []), "?")
                s = series.setdefault(ckey, {"label": loinc.label(comp.get("code")),
                                             "unit": cq.get("unit") or "", "points": []})
                s["points"].append({"t": when, "v": cq["value"]})
            else:  # a part that is no number on a time: the panel is listed too, all its parts named
                listed = True
        if listed:
            other.append(results.line(obs))
    for s in series.values():
        s["points"].sort(key=lambda p: p["t"])
    # the measurements in the LOINC table's order (blood pressure, heart rate, ... HbA1c), the others by name:
    # never the order the EHR happened to return the Observations in (their ids)
    order = {code: at for at, code in enumerate(loinc.NAMES)}
    series = dict(sorted(series.items(), key=lambda kv: (order.get(kv[0], len(order)), _sort_text(kv[1]["label"]),
                                                         kv[0])))
    encounters = sorted(by_type.get("Encounter", []), key=lambda e: (e.get("period") or {}).get("start", ""),
                        reverse=True)
    records = {r["id"]: r for r in (consult_record(c) for c in by_type.get("Composition", [])) if r}
    endpoints = {str(e.get("id")): e for e in by_type.get("Endpoint", [])}
    by_encounter = {r["encounter"]: r for r in records.values() if r["encounter"]}
    return {
        "patient": (by_type.get("Patient") or [None])[0],
        # each list newest first, then by name (:func:`_newest_first`): not in the ids' order the EHR returns
        "conditions": [{"line": problem_line(c), "onset": c.get("onsetDateTime")} for c in _newest_first(
            by_type.get("Condition", []), lambda c: codeable(c.get("code")), "onsetDateTime", "onsetPeriod.start",
            "recordedDate")],
        "medications": _newest_first(by_type.get("MedicationStatement", []) + by_type.get("MedicationRequest", []),
                                     lambda m: codeable(m.get("medicationCodeableConcept")), "authoredOn",
                                     "effectiveDateTime", "effectivePeriod.start", "dateAsserted"),
        "allergies": _newest_first(by_type.get("AllergyIntolerance", []), lambda a: codeable(a.get("code")),
                                   "recordedDate", "onsetDateTime"),
        "encounters": encounters,
        # each encounter as the page's language says it, with its consult record when it has one
        "visits": [{"start": (e.get("period") or {}).get("start"), "label": _encounter_label(e),
                    "record": by_encounter.get(f"Encounter/{e.get('id')}")} for e in encounters],
        "documents": _newest_first(by_type.get("DocumentReference", []) + by_type.get("Composition", []),
                                   lambda d: str(d.get("title") or d.get("description") or ""), "date"),
        "consult_records": records,
        # the consults' conclusions (ICD-10), newest first: the problem list beside the Conditions
        "consult_conclusions": sorted((r for r in records.values() if r["codes"]), key=lambda r: r["date"] or "",
                                      reverse=True),
        "series": series,
        # every result no trend draws (a test's "Âm tính", a blood group, a value not obtained), newest first
        "other_results": _newest_first(other, lambda r: r["label"], "t"),
        # the imaging studies (an X-ray, an ultrasound), newest first, each with a link to its images if it has one
        "imaging": _newest_first([imaging.line(st, endpoints) for st in by_type.get("ImagingStudy", [])
                                  if st.get("status") != "entered-in-error"],
                                 lambda r: r["description"] or r["modality"], "t"),
    }


def _sort_text(text: str) -> str:
    """``text`` as a list sorts it: case and accents off (``Đau`` by ``dau``), the accented form breaking ties."""
    return f"{normalize(text)}\x00{text}"


def _newest_first(resources: list[dict[str, Any]], name: Callable[[dict[str, Any]], str],
                  *fields: str) -> list[dict[str, Any]]:
    """``resources`` newest first by the first of ``fields`` each has (``onsetPeriod.start``: a field's field),
    read as an instant (a day alone at its start in Vietnam); those with none after them; equals by ``name``
    (a resource's name as the page shows it), then id: the same list in the same order on every load."""
    def instant(r: dict[str, Any]) -> float | None:
        for f in fields:
            value: Any = r
            for part in f.split("."):
                value = value.get(part) if isinstance(value, dict) else None
            if (dt := parse_instant(value)) is not None:
                return dt.timestamp()
        return None

    named = sorted(resources, key=lambda r: (_sort_text(name(r)), str(r.get("id") or "")))
    return sorted(named, key=lambda r: (t := instant(r)) is None or -t)  # stable: equals keep the names' order


def problem_line(cond: dict[str, Any]) -> str:
    """A Condition of the problem list: an ICD-10 code of the list as its code and its title in the page's
    language (``I10 — Tăng huyết áp vô căn (nguyên phát)``, as the consults' conclusions beside it), never the
    code alone; another code by its text or display."""
    coding = next((c for c in (cond.get("code") or {}).get("coding") or []
                   if c.get("system") in (icd10.SYSTEM, None) and icd10.lookup(str(c.get("code") or ""))), None)
    if coding is None:
        return codeable(cond.get("code"))
    return icd10.line(coding)


# The EHR's consult record (services/ehr/src/sen_ehr/domain/consult_record.py): a Composition whose
# identifier is the consult's ServiceRequest id, its conclusion's ICD-10 codes in an extension.
CONSULT_RECORD_SYSTEM = "https://sen.vn/fhir/sid/consult-service-request"
CONCLUSION_EXT = "https://sen.vn/fhir/StructureDefinition/consult-conclusion"
_PARAGRAPH = re.compile(r"<p>(.*?)</p>", re.S)
_TAG = re.compile(r"<[^>]+>")


def consult_record(comp: dict[str, Any]) -> dict[str, Any] | None:
    """A consult record's facts for the chart, or None for another Composition: its id, the consult's
    ServiceRequest id, date, the consult's period (the minutes' time), encounter, the conclusion (ICD-10
    codings, the text as written), the chair who signed the minutes off (the professional attester's
    party, a Practitioner reference) and the secretary who signed beside them (the attester the EHR marks so: their
    name; "" for minutes naming none and records stored before it)."""
    ident = comp.get("identifier") or {}
    if ident.get("system") != CONSULT_RECORD_SYSTEM or not ident.get("value") or not comp.get("id"):
        return None
    codes, written = [], ""
    for section in comp.get("section") or []:
        for ext in section.get("extension") or []:
            if ext.get("url") == CONCLUSION_EXT:
                concept = ext.get("valueCodeableConcept") or {}
                codes = [c for c in concept.get("coding") or [] if c.get("code")]
                written = str(concept.get("text") or "")
    period = next((e["period"] for e in comp.get("event") or [] if isinstance(e, dict)
                   and isinstance(e.get("period"), dict) and e["period"].get("start")), None)
    return {"id": comp["id"], "sr": str(ident["value"]), "date": comp.get("date"), "period": period,
            "encounter": (comp.get("encounter") or {}).get("reference"), "codes": codes, "text": written,
            "chair": next((a["party"] for a in comp.get("attester") or [] if not _secretary_attester(a)
                           and a.get("mode") == "professional" and (a.get("party") or {}).get("reference")), None),
            "secretary": next((str(a["party"]["display"]) for a in comp.get("attester") or []
                               if _secretary_attester(a) and (a.get("party") or {}).get("display")), "")}


# the EHR's mark of the minutes' secretary among a consult record's attesters (its chair's carries none)
ATTESTER_ROLE_EXT = "https://sen.vn/fhir/StructureDefinition/consult-attester-role"


def _secretary_attester(attester: dict[str, Any]) -> bool:
    return any(e.get("url") == ATTESTER_ROLE_EXT and any(
        c.get("code") == "secretary" for c in (e.get("valueCodeableConcept") or {}).get("coding") or [])
        for e in attester.get("extension") or [] if isinstance(e, dict))


def _encounter_label(enc: dict[str, Any]) -> str:
    """A teleconsultation in the page's language (the EHR writes its type in Vietnamese with English
    in brackets); any other encounter by its type as recorded, else its class."""
    if any(i.get("system") == CONSULT_RECORD_SYSTEM for i in enc.get("identifier") or []):
        return gettext("Teleconsultation")
    if enc.get("type"):
        return codeable((enc.get("type") or [{}])[0])
    cls = enc.get("class") or {}
    return str(cls.get("display") or cls.get("code") or "")


def section_paragraphs(section: dict[str, Any]) -> list[str]:
    """A section's narrative as plain paragraphs (the EHR writes each as ``<p>``, escaped)."""
    div = str((section.get("text") or {}).get("div") or "")
    found = _PARAGRAPH.findall(div) or [div]
    return [t for t in (unescape(_TAG.sub("", p)).strip() for p in found) if t and t != "-"]


def patient_refused_page(err: BackendError, typed: list[str] | None = None) -> tuple[str, int] | None:
    """The page for the EHR refusing the user a patient (the chart, the consult form), or None for another
    failure (an outage: the caller's own handling): no such patient or another facility's (the EHR answers
    both 404, so the page cannot tell them apart and says neither), 404, for a clinic with the way in (their
    card, the search's take-on, never a link); for a clinic, 403 when the facility's take-on ended (when).
    ``typed``: what a form sent for the patient held, shown to copy (nothing was sent; an htmx form keeps it
    in the page, web.in_page)."""
    back = {"back": url_for("web.clinic_home"), "back_label": gettext("Find a patient"), "typed": typed}
    if err.status == 404:
        if g.user.role == "clinic":
            return render_template("error.html", title=gettext("Not found"), message=gettext(
                "This patient does not exist or you may not see them. If the patient is here with their card, "
                "search their CCCD or health insurance number to take them on at this facility."), **back), 404
        return render_template("error.html", title=gettext("Not found"), typed=typed,
                               message=gettext("This patient does not exist or you may not see them.")), 404
    ended = patients.ended_at(err)
    if ended is not None and g.user.role == "clinic":
        return render_template("error.html", title=gettext("Take-on ended"), message=gettext(
            "Your facility's take-on of this patient ended at %(time)s: their record is no longer open to your "
            "clinic. If the patient comes back with their card, search their CCCD or health insurance number "
            "to take them on again.", time=when(ended)), **back), 403
    return None


@bp.route("/patients/<pid>")
@login_required("clinic", "doctor")
def patient_chart(pid: str) -> Any:
    return chart_page(pid)


def consult_back(pid: str, tid: str, role: str) -> str | None:
    """The way back from a chart opened from a consult's page (its link's ``?consult=<task>``): that consult's
    page for the user's ``role`` (the doctor's ``/tasks/<task>``, the clinic's ``/consults/<task>``), only when
    teleconsult shows the user that consult (with their token) and it is about this patient; None otherwise
    (no such consult, another patient's, not one of theirs, teleconsult not answering)."""
    if not FHIR_ID.fullmatch(tid):
        return None
    try:
        bundle = fhir_get("teleconsult", "/fhir/Task", {"_id": tid}, cached=True)
    except BackendError:
        return None
    task = next((t for t in entries(bundle, "Task") if t.get("id") == tid), None)
    if task is None or patient_id(task.get("for")) != pid:
        return None
    return url_for("web.task_detail" if role == "doctor" else "web.consult_detail", tid=tid)


def chart_page(pid: str, end_form: EndTakeOnForm | None = None, problem: str | None = None, status: int = 200) -> Any:
    """The chart; for a clinic reading another facility's patient (taken on here), the form ending the
    take-on (``end_form``: the one sent back with its errors, ``problem``: why the EHR refused it). Opened
    from a consult's page (``?consult=<task>``), a link back to it (:func:`consult_back`, asked of teleconsult
    while the EHR reads the chart)."""
    consult = request.args.get("consult", "")
    back_job = pool.submit(copy_current_request_context(consult_back), pid, consult, g.user.role) \
        if consult else None
    try:
        bundle = fhir_get("ehr", f"/fhir/Patient/{pid}/$everything", {"_count": "500"}, cached=True)
    except BackendError as err:
        page = patient_refused_page(err)
        if page is None:
            raise
        return page
    data = chart_data(bundle)
    if data["patient"] is None:
        data["patient"] = fhir_get("ehr", f"/fhir/Patient/{pid}", cached=True)
    series = json.dumps(data["series"]).replace("</", "<\\/")
    done = steps_done()
    typed = kept.get(f"taken-on/{done['taken']}", once=True) if done.get("taken", "1") != "1" else None
    differs = patients.differences(data["patient"], typed) if typed and typed.get("pid") == pid else []
    if end_form is None and g.user.role == "clinic" and patients.taken_on_here(data["patient"], g.user.facility):
        end_form = EndTakeOnForm(formdata=None)
    return render_template("chart.html", pid=pid, chart=data, series_json=series,
                           back_to_consult=back_job.result() if back_job is not None else None,
                           created=done.get("created"), taken=done.get("taken"), differs=differs,
                           end_form=end_form, end_problem=problem, title=gettext("Patient chart"),
                           SYS_CCCD=SYS_CCCD, SYS_BHYT=SYS_BHYT), status


@bp.route("/patients/<pid>/end-take-on", methods=["POST"])
@login_required("clinic")
def patient_end_take_on(pid: str) -> Any:
    """End this facility's take-on of the patient (the EHR's ``$end-take-on``) with the reason typed, once
    the box confirming it is ticked; then the chart, which says the take-on ended (the EHR refuses it
    from then on). The form not complete, or the EHR refusing: the chart again, saying why, the
    reason typed kept. Sent in place (chart.html's ``#end-take-on``): done, the chart by HX-Redirect; not done,
    the box again (200: htmx swaps a 2xx only) saying why. Sent again after its answer was lost, the EHR answers
    the end it made (200): done, one end."""
    if not FHIR_ID.fullmatch(pid):
        return render_template("error.html", title=gettext("Not found"),
                               message=gettext("This patient does not exist or you may not see them.")), 404
    form = EndTakeOnForm()
    if not form.validate_on_submit():
        return chart_page(pid, form, status=200 if _is_htmx() else 400)
    try:
        patients.end_take_on(pid, form.reason.data or "")
    except BackendError as err:
        if err.kind == "refused" and err.status == 403:
            return chart_page(pid, form, gettext(
                "The health record service did not end the take-on: your facility has not taken this patient "
                "on (it may manage the patient itself)."), 200 if _is_htmx() else 403)
        return chart_page(pid, form, backend_message(err), 200 if _is_htmx() else
                          err.status if err.kind == "refused" else outage_status(err))
    return done_in_place(url_for("web.patient_chart", pid=pid), None)


def _section_title(section: dict[str, Any]) -> str:
    """A consult record's section by its code in the page's language; another by its stored title."""
    code = next((c.get("code") for c in (section.get("code") or {}).get("coding") or []), None)
    titles = {"sites": gettext("Sites taking part"), "participants": gettext("Participants and their roles"),
              "summary": gettext("History and current state"),  # the minutes form's name for it
              "findings": gettext("Findings reviewed (clinical, lab, images)"),
              "discussion": gettext("Discussion"), "conclusion": gettext("Conclusion"),
              "recommendations": gettext("Recommendations for treatment")}
    return titles.get(str(code), str(section.get("title") or ""))


def record_consult(sr: str) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """A consult record's consult in teleconsult: its Task and ServiceRequest (one search by the record's
    ServiceRequest, ``_include``); (None, None) when teleconsult does not say (down, or not this user's)."""
    try:
        bundle = fhir_get("teleconsult", "/fhir/Task", {"based-on": f"ServiceRequest/{sr}", "_count": "1",
                                                        "_include": "Task:based-on"}, cached=True)
    except BackendError:
        return None, None
    return next(iter(entries(bundle, "Task")), None), next(iter(entries(bundle, "ServiceRequest")), None)


def _consult_page(sr: str) -> str | None:
    """The consult's own page for the user's role (the clinic's consult, the doctor's task), found by
    the consult's ServiceRequest; None when teleconsult does not say (down, or not this user's)."""
    task, _ = record_consult(sr)
    tid = str(task.get("id") or "") if task else ""
    if not FHIR_ID.fullmatch(tid):
        return None
    return url_for("web.task_detail" if g.user.role == "doctor" else "web.consult_detail", tid=tid)


def patients_consult_record(pid: str, cid: str) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """The consult record ``cid`` of patient ``pid`` as the EHR lets the user read it: the Composition and
    its facts (:func:`consult_record`); None when there is none to show (no such record, another
    Composition, another patient's, or one the user may not see: the EHR answers those 404)."""
    comp = None
    if FHIR_ID.fullmatch(pid) and FHIR_ID.fullmatch(cid):
        try:
            comp = fhir_get("ehr", f"/fhir/Composition/{cid}", cached=True)
        except BackendError as err:
            if err.status not in (404, 410):
                raise
    record = consult_record(comp) if comp else None
    if record is None or (comp.get("subject") or {}).get("reference") != f"Patient/{pid}":  # type: ignore[union-attr]
        return None
    return comp, record  # type: ignore[return-value]


def no_consult_record(pid: str) -> tuple[str, int]:
    """The page for a consult record there is none of to show (:func:`patients_consult_record`): 404."""
    return render_template("error.html", title=gettext("Not found"),
                           message=gettext("This consult record does not exist or you may not see it."),
                           back=url_for("web.patient_chart", pid=pid) if FHIR_ID.fullmatch(pid) else None,
                           back_label=gettext("Back to the patient's chart")), 404


def record_sections(comp: dict[str, Any]) -> list[dict[str, Any]]:
    """Each section the EHR wrote (sites and discussion when the minutes had them), in its order: its code,
    title in the page's language, paragraphs and entries' references (the sites: named from the directory,
    the EHR's line holding only the reference when none was sent)."""
    return [{"code": next((c.get("code") for c in (s.get("code") or {}).get("coding") or []), None),
             "title": _section_title(s), "paragraphs": section_paragraphs(s),
             "entries": [e for e in s.get("entry") or [] if isinstance(e, dict) and e.get("reference")]}
            for s in comp.get("section") or []]


@bp.route("/patients/<pid>/consult-records/<cid>")
@login_required("clinic", "doctor")
def consult_record_page(pid: str, cid: str) -> Any:
    """A consult record from the chart: the minutes' sections in the page's language, the conclusion's
    ICD-10 codes by the page's language, the way to the consult's page and back to the chart, and the
    minutes to print (``minutes_print``)."""
    found = patients_consult_record(pid, cid)
    if found is None:
        return no_consult_record(pid)
    comp, record = found
    return render_template("consult_record.html", pid=pid, cid=cid, record=record, sections=record_sections(comp),
                           consult_page=_consult_page(record["sr"]), title=gettext("Minutes of the teleconsultation"))


@bp.route("/icd10")
@login_required("clinic", "doctor")
def icd10_search() -> Any:
    """Suggestions for the reason field (htmx): the query is a disease name, not patient data."""
    target = request.args.get("for", "reason")
    typed = request.args.get(target)  # the box's text, which the list answers (_icd10.html)
    q = typed or request.args.get("q", "")
    return render_template("_icd10.html", hits=icd10.search(q), lang=select_locale(), target=target, typed=typed)


def _attach(files: list[Any], pid: str, key: str | None = None) -> list[dict[str, str]]:
    """Each uploaded file becomes a DocumentReference of the patient in the EHR (a consult's request
    or the clinic's answer to the hub's question). ``key``: the form's; each file's DocumentReference
    then carries an identifier made of it and the file (``charges.request_key``) and is created only
    if none has it (``If-None-Exist``): the form sent twice makes one DocumentReference a file, so its
    two submissions name the same ones. Of two at once, the one the EHR asks to retry (409) does, for up
    to the back-end timeout."""
    from .charges import request_key

    refs = []
    for f in files:
        if not f or not f.filename:
            continue
        f.seek(0)
        data = f.read()
        name = f.filename[:200]
        doc: dict[str, Any] = {
            "resourceType": "DocumentReference", "status": "current", "subject": {"reference": f"Patient/{pid}"},
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "description": gettext("Attached to a consult request"),
            "content": [{"attachment": {"contentType": f.mimetype, "title": name,
                                        "data": base64.b64encode(data).decode()}}]}
        headers = None
        if key:
            value = request_key(key, "file", pid, name, f.mimetype, hashlib.sha256(data).hexdigest())
            doc["identifier"] = [{"system": UPLOAD_SYSTEM, "value": value}]
            headers = {"If-None-Exist": f"identifier={UPLOAD_SYSTEM}|{value}"}
        deadline = time.monotonic() + backend.settings().http_timeout  # a busy machine stores slowly
        while True:
            try:
                created = fhir_post("ehr", "/fhir/DocumentReference", doc, headers=headers)
                break
            except BackendError as err:
                if headers is None or err.status != 409 or time.monotonic() >= deadline:
                    raise
                time.sleep(0.3)  # the same file of the same form is being stored: it will be found
        refs.append({"reference": f"DocumentReference/{created['id']}", "display": name})
    return refs


@bp.route("/documents/<did>")
@login_required("clinic", "doctor")
def document(did: str) -> Any:
    """A file attached to a consult or kept in the record (a DocumentReference's inline attachment),
    shown in the browser: read from the EHR with the user's token, so the EHR decides who may see it.
    Only the PDF, JPEG, PNG and WebP files the consult form takes, and only when the bytes are what their
    type says (:func:`uploads.is_a`); sandboxed and never sniffed. The file name is not the upload's (it may
    name the patient)."""
    try:
        doc = fhir_get("ehr", f"/fhir/DocumentReference/{did}")
    except BackendError as err:
        if err.status in (403, 404, 410):
            return render_template("error.html", title=gettext("Not found"),
                                   message=gettext("This document does not exist or you may not see it.")), 404
        raise
    attachment = next((c.get("attachment") or {} for c in doc.get("content") or [] if c.get("attachment")), {})
    kind = str(attachment.get("contentType") or "").split(";")[0].strip().lower()
    try:
        data = base64.b64decode(attachment.get("data") or "", validate=True)
    except ValueError:
        data = b""
    if not uploads.is_a(kind, data[:uploads.HEAD_BYTES]):
        consult = request.args.get("consult", "")
        back = None
        if FHIR_ID.fullmatch(consult):  # opened from a consult's page: the way back to it
            back = url_for("web.task_detail" if g.user.role == "doctor" else "web.consult_detail", tid=consult)
        return render_template("error.html", title=gettext("This file cannot be shown here"),
                               message=gettext("Only PDF, JPEG, PNG and WebP files kept in the record can "
                                               "be opened here."),
                               back=back, back_label=gettext("Back to the consult")), 415
    # an image in a sandboxed document of its own; a PDF without the sandbox, which keeps the
    # browser's PDF viewer out (its scripts run in the viewer, never with this origin's pages)
    policy = "frame-ancestors 'none'" if kind == "application/pdf" else \
        "sandbox; default-src 'none'; img-src 'self'; style-src 'unsafe-inline'; frame-ancestors 'none'"
    return Response(data, mimetype=kind, headers={
        "Content-Disposition": f'inline; filename="tai-lieu-{did[:40]}.{uploads.EXTENSION[kind]}"',
        "X-Content-Type-Options": "nosniff", "Cache-Control": "private, max-age=300",
        "Content-Security-Policy": policy})


def _check_files(form: FlaskForm) -> bool:
    """The form's ``files`` (a MultipleFileField) are PDF, JPEG, PNG or WebP of at most 1.5 MB each, and
    their bytes are what their type says (:func:`uploads.is_a`: a file named ``.png`` that is not one could
    never be opened); else each refused file is said on the field, by its name."""
    ok = True
    limits = upload_limits()
    errors = list(form.files.errors)
    for f in form.files.data or []:
        if not f or not f.filename:
            continue
        f.seek(0, 2)
        size = f.tell()
        f.seek(0)
        head = f.read(uploads.HEAD_BYTES)
        f.seek(0)
        if f.mimetype not in uploads.TYPES:
            errors.append(gettext("%(name)s: only PDF, JPEG, PNG and WebP files can be attached.", name=f.filename))
            ok = False
        elif size > limits["file"]:
            errors.append(gettext("%(name)s is larger than 1.5 MB.", name=f.filename))
            ok = False
        elif not uploads.is_a(f.mimetype, head):
            errors.append(gettext("%(name)s is not a real PDF, JPEG, PNG or WebP file (its content is not what "
                                  "its name says); save it again as one of those.", name=f.filename))
            ok = False
    form.files.errors = errors
    return ok


def service_request(form: ConsultForm, user: Any, supporting: list[dict[str, Any]],
                    key: str | None = None, specialty: dict[str, Any] | None = None) -> dict[str, Any]:
    """The consult request's ServiceRequest; ``key``: the form's, kept as its identifier (:data:`REQUEST_SYSTEM`),
    by which the same form sent again knows the consult it made (:func:`open_same_reason`); ``specialty``: its
    ``performerType`` (:func:`specialty_asked`), none when any of the hub's doctors may take it."""
    code = icd10.parse_field(form.reason.data or "")
    assert code is not None
    sr: dict[str, Any] = {
        "resourceType": "ServiceRequest", "status": "active", "intent": "order",
        **({"identifier": [{"system": REQUEST_SYSTEM, "value": key}]} if key else {}),
        "category": [{"coding": [{"system": "http://snomed.info/sct", "code": "11429006",
                                  "display": "Consultation"}], "text": "consult"}],
        "code": {"coding": [{"system": "http://snomed.info/sct", "code": "11429006", "display": "Consultation"}],
                 "text": "Hội chẩn từ xa"},
        "priority": form.priority.data,
        "subject": {"reference": f"Patient/{form.patient.data}"},  # authoredOn: teleconsult's, when it takes it
        "reasonCode": [{"coding": [{"system": icd10.SYSTEM, "code": code.code, "display": code.vi}],
                        "text": code.vi}],
        "note": [{"text": form.question.data}],
    }
    if user.facility:
        sr["requester"] = {"reference": f"Organization/{user.facility}"}
    sr["performer"] = [{"reference": f"Organization/{backend.settings().hub}"}]
    if specialty:
        sr["performerType"] = specialty
    if supporting:
        sr["supportingInfo"] = supporting
    return sr


SNOMED = "http://snomed.info/sct"  # a specialty's code system: teleconsult's performerType, billing's useContext


def specialty_field(form: KeyedConsultForm) -> list[tuple[str, str]]:
    """Fill the form's specialty select: "Any specialty" first, then the specialties of the hub's doctors by name
    (the worklist filter's list, :func:`doctor.specialty_choices` of the hub the consult goes to); those."""
    from .doctor import specialty_choices

    choices = specialty_choices(backend.settings().hub)
    form.specialty.choices = [("", gettext("Any specialty")), *choices]
    return choices


def specialty_asked(form: KeyedConsultForm, choices: list[tuple[str, str]]) -> tuple[dict[str, Any] | None, bool]:
    """The specialty the form asks for as a ``performerType`` (SNOMED code: what teleconsult's ``$submit`` and
    billing's consult prices key on; SNOMED's English display on the coding, the Vietnamese name as the
    concept's text), None for any; and whether it is one of the hub's (else the field says so). The EHR not
    answering (no choices known): a specialty the portal names (the price list's) is taken as asked."""
    from .prices import SPECIALTIES

    code = (form.specialty.data or "").strip()
    if not code:
        return None, True
    if not (code in dict(choices) or (not choices and code in SPECIALTIES)):
        form.specialty.errors = [*form.specialty.errors, gettext(
            "This specialty is not one of the hub's specialties: choose one from the list, or Any specialty.")]
        return None, False
    if code in SPECIALTIES:
        with force_locale("vi"):
            name = str(SPECIALTIES[code])
    else:
        name = dict(choices)[code]
    display = snomed_display(code)
    return {"coding": [{"system": SNOMED, "code": code, **({"display": display} if display else {})}],
            "text": name}, True


def snomed_display(code: str) -> str | None:
    """SNOMED CT's display of a specialty code: the portal's table (:data:`prices.SPECIALTY_DISPLAYS`), else the
    one the hub's directory writes on the code's coding (the seed writes SNOMED's); None when neither knows."""
    from .directory import hub_specialties
    from .prices import SPECIALTY_DISPLAYS

    if code in SPECIALTY_DISPLAYS:
        return SPECIALTY_DISPLAYS[code]
    hub = backend.settings().hub or g.user.facility
    return next((str(c["display"]) for concept in (hub_specialties(hub) if hub else [])
                 for c in concept.get("coding") or []
                 if isinstance(c, dict) and c.get("system") == SNOMED and c.get("code") == code and c.get("display")),
                None)


RECENT_RESULTS = 15  # the patient's newest results offered to a consult request


def record_choices(pid: str) -> list[dict[str, Any]] | None:
    """The patient's records the consult form offers to attach (its ``supporting`` boxes, none ticked), grouped
    as the chart shows them: documents (DocumentReferences), imaging studies, the :data:`RECENT_RESULTS` newest
    results (Observations); each newest first, an item's ``ref`` (what the ServiceRequest's ``supportingInfo``
    points at, teleconsult's three kinds), ``label`` (its name and date in the page's language),
    ``display`` and ``display_en`` (the same in Vietnamese and in English, kept with the reference, the English
    as its display's translation, for the pages that show it: :func:`results.reference_display`). Nothing recorded in
    error. None when the EHR does not answer (the form offers none; files still go)."""
    try:
        bundle = fhir_get("ehr", f"/fhir/Patient/{pid}/$everything", {"_count": "500"}, cached=True)
    except BackendError:
        return None
    by_type: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in entries(bundle):
        if r.get("status") != "entered-in-error" and FHIR_ID.fullmatch(str(r.get("id") or "")):
            by_type[r.get("resourceType", "")].append(r)

    def item(rtype: str, rid: str, name: Callable[[str], str], at: str | None) -> dict[str, Any]:
        date = f" ({when(at)})" if at else ""
        return {"ref": f"{rtype}/{rid}", "label": f"{name(select_locale() or 'vi')}{date}",
                "display": f"{name('vi')}{date}"[:200], "display_en": f"{name('en')}{date}"[:200]}

    def document_name(d: dict[str, Any]) -> str:
        file = ((d.get("content") or [{}])[0] or {}).get("attachment") or {}
        return str(file.get("title") or d.get("description") or codeable(d.get("type")) or d.get("id"))

    documents = [item("DocumentReference", d["id"], lambda _lang, d=d: document_name(d), d.get("date"))
                 for d in _newest_first(by_type["DocumentReference"], document_name, "date")]
    studies = [item("ImagingStudy", st["id"], lambda lang, st=st: _study_name(imaging.line(st, {}, lang)),
                    st.get("started"))
               for st in _newest_first(by_type["ImagingStudy"], lambda st: str(st.get("description") or ""),
                                       "started")]
    observations = [r for r in by_type["Observation"] if results.effective(r)]
    observations = sorted(observations, key=lambda o: parse_instant(results.effective(o)) or datetime.min.replace(
        tzinfo=UTC), reverse=True)[:RECENT_RESULTS]
    found = [item("Observation", o["id"], lambda lang, o=o: _result_name(results.line(o, lang)), results.effective(o))
             for o in observations]
    return [{"kind": kind, "items": items} for kind, items in (
        ("documents", documents), ("imaging", studies), ("results", found)) if items]


def _study_name(line: dict[str, Any]) -> str:
    return ": ".join(p for p in (line["modality"], line["description"]) if p) or "ImagingStudy"


def _result_name(line: dict[str, Any]) -> str:
    return f"{line['label']}: {line['value']}"


def ticked_records(choices: list[dict[str, Any]] | None) -> tuple[list[dict[str, Any]], str | None]:
    """The records the form's ``supporting`` boxes ticked, as ``supportingInfo`` references (with their
    Vietnamese names and dates, the English beside them: FHIR's translation extension), and what is wrong
    with them (one no longer offered: gone from the record, or never the patient's), else None."""
    offered = {i["ref"]: i for group in choices or [] for i in group["items"]}
    ticked = list(dict.fromkeys(request.form.getlist("supporting")))
    if any(t not in offered for t in ticked):
        return [], gettext("A record you ticked is no longer in the patient's record. Tick the records again.")
    return [{"reference": t, **results.with_translation(offered[t]["display"], "en", offered[t]["display_en"])}
            for t in ticked], None


# a consult request's identifier: the key of the form that sent it (clinic.form_key)
REQUEST_SYSTEM = "https://sen.vn/fhir/sid/portal-consult-request"
MAX_SUPPORTING = 20  # teleconsult's limit of a request's supportingInfo


def _patient_open(pid: str) -> dict[str, Any] | None:
    """The patient's open consults of this clinic (teleconsult scopes the clinic's Task search), newest request
    first, with their ServiceRequests; None when teleconsult does not answer."""
    params = {"patient": f"Patient/{pid}", "status": ",".join(OPEN), "_include": "Task:based-on",
              "_sort": "-authored-on", "_count": "50"}
    if g.user.facility:
        params["requester"] = f"Organization/{g.user.facility}"
    try:
        return _consult_read("/fhir/Task", params)
    except BackendError:
        return None


JUST_SENT_MINUTES = 10  # a consult of the patient requested this recently is said on the consult form


def just_sent(pid: str) -> dict[str, Any] | None:
    """The patient's newest open consult this clinic requested in the last :data:`JUST_SENT_MINUTES` (its Task's
    id and when), said on the form with a link to it: a page reloaded while its request was being sent (the
    consult made, the answer lost) shows an empty form, and the nurse would send it again. None if there is
    none, or teleconsult does not answer (the form is shown all the same)."""
    bundle = _patient_open(pid)
    since = datetime.now(UTC) - timedelta(minutes=JUST_SENT_MINUTES)
    for task in entries(bundle or {}, "Task"):
        authored = parse_instant(task.get("authoredOn"))
        if task.get("status") in OPEN and authored is not None and authored >= since:
            return {"tid": str(task.get("id")), "authored": task.get("authoredOn")}
    return None


def open_same_reason(pid: str, code: str, key: str) -> list[dict[str, Any]]:
    """The patient's open consults (this clinic's, as teleconsult scopes the clinic's Task search) whose reason
    is the ICD-10 ``code``, newest first: each Task's id and when it was requested. One this form made (its
    identifier is the form's ``key``: the form sent twice lands on it) is not one of them. Teleconsult not
    answering leaves the question unasked (the request itself then fails readably)."""
    bundle = _patient_open(pid)
    if bundle is None:
        return []
    srs = {str(sr.get("id")): sr for sr in entries(bundle, "ServiceRequest")}
    found = []
    for task in entries(bundle, "Task"):
        sr = srs.get(request_id(task) or "") or {}
        if task.get("status") not in OPEN or any(
                i.get("system") == REQUEST_SYSTEM and i.get("value") == key for i in sr.get("identifier") or []):
            continue
        reasons = [task["reasonCode"]] if task.get("reasonCode") else sr.get("reasonCode") or []
        if any(c.get("code") == code and c.get("system") in (None, icd10.SYSTEM)
               for r in reasons for c in (r or {}).get("coding") or []):
            found.append({"tid": str(task.get("id")), "authored": task.get("authoredOn")})
    return found


@bp.route("/patients/<pid>/consult", methods=["GET", "POST"])
@login_required("clinic")
def consult_new(pid: str) -> Any:
    """The consult request form. Its ``key`` (made when the form is first shown, kept through its
    errors) names its files' DocumentReferences (:func:`_attach`) and, with what is asked, its
    ``$submit``'s Idempotency-Key (``charges.request_key``): the form sent twice (a double click, a
    retry) submits one consult, and teleconsult answers the second with the first's answer, so both
    land on the same consult. What is asked changed after an error is another request."""
    from .charges import request_key

    refused = facility_needed(gettext("Request a consult"))
    if refused is not None:
        return refused
    form = form_key(KeyedConsultForm(patient=pid))
    form.patient.data = pid
    problem = None
    same_open: list[dict[str, Any]] = []
    # the patient first: one the EHR refuses the nurse (another facility's, not taken on or the take-on ended
    # since the form was opened, or none) is the chart's page with the way in, never a form to fill in for
    # nothing, and nothing is sent; what a form sent held is shown with it (an htmx form keeps it in place)
    typed = typed_text(request.form) if request.method == "POST" and not _is_htmx() else None
    patient, read_problem = None, None
    try:
        patient = fhir_get("ehr", f"/fhir/Patient/{pid}")
    except BackendError as err:
        refused = patient_refused_page(err, typed)
        if refused is not None:
            return refused
        read_problem = backend_message(err)  # an outage: the form still, saying so
    specialties = specialty_field(form)
    posted = request.method == "POST" and form.validate_on_submit()
    specialty, known = specialty_asked(form, specialties) if request.method == "POST" else (None, True)
    posted = posted and known
    code = icd10.parse_field(form.reason.data or "") if request.method == "POST" else None
    # the patient's documents, imaging studies and newest results the request may point at (none ticked at first)
    choices = record_choices(pid) if patient is not None else None
    records, records_problem = ticked_records(choices) if request.method == "POST" else ([], None)
    if records_problem is None and len(records) + len([f for f in form.files.data or [] if f and f.filename]) > \
            MAX_SUPPORTING:
        records_problem = gettext("At most %(n)s files and records can be attached to one request.", n=MAX_SUPPORTING)
    if posted and code is not None and _check_files(form) and records_problem is None:
        # another open consult of the patient for the same reason: said, with a link to it, and the request
        # sent only once its tick confirms another (the tick's value: the consults it was shown), before
        # anything is stored (its files)
        same_open = open_same_reason(pid, code.code, form.key.data or "")
        if {c["tid"] for c in same_open} <= set(request.form.get("again", "").split(",")):
            try:
                supporting = _attach(form.files.data or [], pid, form.key.data) + records
                body = service_request(form, g.user, supporting, form.key.data, specialty)
                key = request_key(form.key.data, "consult", pid, form.priority.data or "", code.code,
                                  form.question.data or "", *([form.specialty.data] if specialty else []),
                                  *(ref["reference"] for ref in supporting))
                answer = fhir_post("teleconsult", "/fhir/ServiceRequest/$submit", body,
                                   headers={"Idempotency-Key": key})
                task = next((r["id"] for r in entries(answer, "Task")), None) or _task_from_locations(answer)
                if task:  # news for the clinic's other staff and the hub's doctors: their kept lists are older
                    sent.record(task, g.user.facility, backend.settings().hub)
                    url = url_for("web.consult_detail", tid=task)
                    flash_step(url, "submitted")
                    if _is_htmx():
                        return "", 204, {"HX-Redirect": url}
                    return redirect(url)
                return redirect(url_for("web.consults"))
            except BackendError as err:
                # refused: the take-on may have ended this very moment; the EHR says so if it did
                refused = _patient_refused_now(pid, typed) if err.status in (403, 404) else None
                if refused is not None:
                    return refused
                problem = backend_message(err)
    elif request.method == "POST" and code is None and not form.reason.errors and form.reason.data:
        # a reason typed, not chosen (its code's shape but no such code); a chosen one is never flagged
        # because another field failed
        form.reason.errors = [gettext("Choose a reason from the ICD-10 list.")]
    problem = problem or records_problem or read_problem
    # htmx swaps only 2xx answers: the form with its errors comes back as 200 there
    status = 200 if request.method == "GET" or _is_htmx() or not (form.errors or problem) else 422
    template = "_consult_form.html" if _is_htmx() and request.method == "POST" else "consult_new.html"
    files_again = _files_dropped(form, problem) or bool(same_open and _has_files(form))  # the tick asked first
    # the form opened afresh: a consult of the patient sent minutes ago (a reload while it was being sent) is said
    recent = just_sent(pid) if request.method == "GET" and patient is not None else None
    return render_template(template, form=form, patient=patient, pid=pid, problem=problem, same_open=same_open,
                           limits=upload_limits(), files_again=files_again, just_sent=recent, choices=choices,
                           ticked=set(request.form.getlist("supporting")),
                           title=gettext("Request a consult")), status


def _patient_refused_now(pid: str, typed: list[str] | None) -> tuple[str, int] | None:
    """The EHR's page refusing the patient (:func:`patient_refused_page`) if it refuses them now, else None."""
    try:
        fhir_get("ehr", f"/fhir/Patient/{pid}")
    except BackendError as err:
        return patient_refused_page(err, typed)
    return None


def _task_from_locations(bundle: dict[str, Any]) -> str | None:
    for e in bundle.get("entry", []) or []:
        loc = (e.get("response") or {}).get("location", "")
        if loc.startswith("Task/"):
            return loc.split("/")[1]
        if (e.get("resource") or {}).get("resourceType") == "Task":
            return e["resource"]["id"]
    return None


@bp.route("/consults")
@login_required("clinic")
def consults() -> Any:
    """The facility's consults, open ones first then those that ended, each part newest request first,
    :data:`CONSULTS_PAGE` a page, however many there are (:func:`consults_page`)."""
    from .cashier import cursor_args
    from .doctor import overdue

    after = request.args.get("after") or None
    problem, rows, next_after, status = None, [], None, 200
    try:
        tasks, next_after = consults_page(after)
        now = datetime.now(UTC)  # each past its answer deadline says "Quá hạn", as its page and the worklist do
        rows = consult_rows(tasks, {str(t.get("id")): {"overdue": overdue(t, now)} for t in tasks})
    except ValueError:
        problem, status = page_gone(), 400
    except BackendError as err:  # the list could not be read: said on the page, with an outage's status
        problem, status = backend_message(err), page_status(err)
    return render_template("consults.html", rows=rows, problem=problem, after=after, page=cursor_args()[1],
                           next_after=next_after, title=gettext("Consults")), status


OPEN = ("requested", "accepted", "on-hold", "in-progress")
FINAL = ("completed", "rejected", "cancelled")
CONSULTS_PAGE = 50
# teleconsult's page cursor (its searches' ``_cursor``, the worklist's too): base64url.mac
CURSOR = r"[A-Za-z0-9_\-]{1,2000}\.[A-Za-z0-9_\-]{1,100}"
_CURSOR = re.compile(rf"^{CURSOR}$")
# a page of the clinic's list after the first: which part it continues ("o" the open consults, "e" those
# that ended) and, unless that part starts there, teleconsult's cursor of its search
_AFTER = re.compile(rf"^([oe])(?:-({CURSOR}))?$")


def page_gone() -> str:
    """What a page link that is not (or no longer) one of the list's says (with a 400)."""
    return gettext("This page of the list is no longer valid. Start again from the first page.")


def teleconsult_page(path: str, params: dict[str, str], cursor: str | None) -> tuple[dict[str, Any], str | None]:
    """One page of a teleconsult searchset paged by its ``next`` link's ``_cursor`` (the Task search, the
    worklist): the Bundle and the cursor of the next page (None: the last). ``cursor``: the ``_cursor`` of
    the page, as :func:`teleconsult_page` gave it the page before; one not of that form, or one teleconsult
    refuses (400: made for another list, altered), is ValueError (the page: :func:`page_gone`, 400)."""
    from urllib.parse import parse_qs

    if cursor is not None and not _CURSOR.match(cursor):
        raise ValueError(cursor)
    facility = g.user.facility  # a list kept from before a consult its clinic or hub was sent is not used
    try:
        bundle = fhir_get("teleconsult", path, {**params, **({"_cursor": cursor} if cursor else {})}, cached=True,
                          news=lambda: sent.newest(facility))
    except BackendError as err:
        if cursor and err.status == 400:
            raise ValueError(cursor) from err
        raise
    nxt = next((str(link.get("url") or "") for link in bundle.get("link") or [] if link.get("relation") == "next"), "")
    more = (parse_qs(urlsplit(nxt).query).get("_cursor") or [None])[0] if nxt else None
    return bundle, more if more and _CURSOR.match(more) else None


def consults_page(after: str | None) -> tuple[list[dict[str, Any]], str | None]:
    """One page of the clinic's list and the ``after`` of the next (None: the last page). The list is two
    of teleconsult's searches one after the other, each sorted and paged by teleconsult (``_sort=-authored-on``,
    ``_count``, its ``next`` link's ``_cursor``): the open consults, newest request first, then those that
    ended, newest first; a page the open ones do not fill goes on with those that ended. ``after``: as a
    page's "next" link gave it (a bad one is ValueError)."""
    m = _AFTER.match(after or "o")
    if m is None:
        raise ValueError(after)
    part, cursor = m.groups()
    if part == "e":
        tasks, more = _consults_part(FINAL, CONSULTS_PAGE, cursor)
        return tasks, f"e-{more}" if more else None
    tasks, more = _consults_part(OPEN, CONSULTS_PAGE, cursor)
    if more:
        return tasks, f"o-{more}"
    room = CONSULTS_PAGE - len(tasks)
    ended, more = _consults_part(FINAL, max(room, 1), None)  # a full page: is there anything after it?
    if room == 0:
        return tasks, "e" if ended else None
    return tasks + ended, f"e-{more}" if more else None


def _consults_part(states: tuple[str, ...], count: int, cursor: str | None) -> tuple[list[dict[str, Any]], str | None]:
    """``count`` of the facility's Tasks in ``states`` after ``cursor``, newest request first (teleconsult's
    Task search, scoped by it to the clinic's own consults), and the cursor of the next ones, if any."""
    params = {"status": ",".join(states), "_sort": "-authored-on", "_count": str(count)}
    if g.user.facility:
        params["requester"] = f"Organization/{g.user.facility}"
    bundle, more = teleconsult_page("/fhir/Task", params, cursor)
    return [t for t in entries(bundle, "Task") if t.get("status") in states], more


def request_id(task: dict[str, Any]) -> str | None:
    """The id of the ServiceRequest a consult's Task carries out (its ``focus``, else ``basedOn``)."""
    for ref in [task.get("focus"), *(task.get("basedOn") or [])]:
        text = str((ref or {}).get("reference") or "")
        rid = text.removeprefix("ServiceRequest/")
        if text.startswith("ServiceRequest/") and FHIR_ID.fullmatch(rid):
            return rid
    return None


REASON_SECONDS = 600  # a consult's reason is kept this long per process
REASONS_KEPT = 4096
# ServiceRequest id -> (until, reason and requester)
_reasons_kept: dict[str, tuple[float, dict[str, Any]]] = caches.kept({})
_reasons_lock = threading.Lock()


def _kept_reasons(rids: list[str]) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """Those of the consults' ServiceRequests read recently (:func:`_reasons`) by id, and the ids not kept."""
    now = time.monotonic()
    wanted = sorted(set(rids))
    found = {rid: hit[1] for rid in wanted if (hit := _reasons_kept.get(rid)) is not None and hit[0] > now}
    return found, [rid for rid in wanted if rid not in found]


def _reasons(rids: list[str], kept: tuple[dict[str, dict[str, Any]], list[str]] | None = None,
             ) -> dict[str, dict[str, Any]]:
    """The consults' ServiceRequests (reason and requester only) by id. Those not read recently come
    from ONE teleconsult search (``ServiceRequest?_id=a,b,c``, with the user's token); its failing
    leaves their reasons out (a dash), never the list. ``kept``: :func:`_kept_reasons` of ``rids``, if
    the caller has it already.

    A consult's reason and requester never change after its submission (teleconsult changes a
    ServiceRequest only through the workflow's operations, which set its status), so what a search
    answered is kept :data:`REASON_SECONDS` for every user of this process, like the directory's
    names: a worklist refresh asks teleconsult nothing more than its ``$worklist``. It is shown only
    beside a Task the user's own worklist answered, whose own ServiceRequest it is (the clinic and
    the hub see a consult's Task and its ServiceRequest alike)."""
    now = time.monotonic()
    found, missing = kept if kept is not None else _kept_reasons(rids)
    if not missing:
        return found
    try:
        bundle = fhir_get("teleconsult", "/fhir/ServiceRequest", {
            "_id": ",".join(missing), "_elements": "reasonCode,requester", "_count": str(len(missing))}, cached=True)
    except BackendError:
        return found
    read = {str(sr.get("id")): {k: sr[k] for k in ("reasonCode", "requester") if k in sr}
            for sr in entries(bundle, "ServiceRequest") if str(sr.get("id")) in missing}
    with _reasons_lock:
        if len(_reasons_kept) + len(read) > REASONS_KEPT:  # bounded: the oldest half goes
            for old in list(_reasons_kept)[: REASONS_KEPT // 2]:
                del _reasons_kept[old]
        _reasons_kept.update({rid: (now + REASON_SECONDS, sr) for rid, sr in read.items()})
    return {**found, **read}


def consult_rows(tasks: list[dict[str, Any]], extra: dict[str, dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """A list's rows of consults: each Task with its patient (name only where the EHR lets this user
    read them: :mod:`patients`), its reason and the requesting clinic. The patients (one EHR search)
    and the reasons not kept yet (one teleconsult search, :func:`_reasons`) are asked for at once; the
    Task's own ``reasonCode`` is used when it has one. ``extra``: more per Task id (the worklist's due flags).
    Every reason kept already (a list read again within :data:`REASON_SECONDS`): the patients alone, in this
    thread (a pool's thread waited on for nothing to do meanwhile cost a hand-off and a copied request context)."""
    pids = [patient_id(t.get("for")) for t in tasks]
    rids = [request_id(t) for t in tasks]
    asked = [r for t, r in zip(tasks, rids, strict=True) if r and not t.get("reasonCode")]
    kept = _kept_reasons(asked)
    if kept[1]:
        names_job = pool.submit(copy_current_request_context(patients.lookup), [p for p in pids if p])
        srs = _reasons(asked, kept)
        found = names_job.result()
    else:
        srs, found = kept[0], patients.lookup([p for p in pids if p])
    rows = []
    for task, pid, rid in zip(tasks, pids, rids, strict=True):
        sr = srs.get(rid or "") or {}
        reason = task.get("reasonCode") or next(iter(sr.get("reasonCode") or []), None)
        rows.append({"task": task, "patient": patients.shown(pid, found), "reason": reason,
                     "requester": task.get("requester") or sr.get("requester"),
                     **(extra or {}).get(str(task.get("id")), {})})
    return rows


def _consult_request(tid: str) -> tuple[dict[str, Any], dict[str, Any] | None, str | None]:
    """The consult's Task, its ServiceRequest (one search, ``_include``, fresh: :func:`_consult_read`)
    and its patient's id; a 404 BackendError when the user sees no such Task."""
    bundle = _consult_read("/fhir/Task", {"_id": tid, "_include": "Task:based-on"})
    task = next(iter(entries(bundle, "Task")), None)
    if task is None:
        raise BackendError("refused", "teleconsult", 404)
    sr = next(iter(entries(bundle, "ServiceRequest")), None)
    return task, sr, patient_id(task.get("for")) or patient_id((sr or {}).get("subject"))


def _consult_read(path: str, params: dict[str, str]) -> dict[str, Any]:
    """One read of a consult page (its Task, thread, visit), as fresh as the request: the other side
    writes on them (a message, an answer, a booked visit), and the user's own answers kept a few
    seconds (``SEN_PORTAL_CACHE_SECONDS``, ``cached=True``) forget only the user's own writes, so a page
    opened right after the other side's message did not show it for those seconds."""
    return fhir_get("teleconsult", path, params)


def consult_bundle(tid: str, *, with_patient: bool = False) -> dict[str, Any]:
    """The Task with its ServiceRequest (one search, ``_include``), then its Communications and
    Appointment (and ``with_patient``, the patient's name, sex and age from the EHR: ``patient``,
    a :class:`patients.Shown`) asked for at once: two round trips, each as fresh as the request
    (:func:`_consult_read`)."""
    task, sr, pid = _consult_request(tid)
    patient_job = pool.submit(copy_current_request_context(patients.one), pid) if with_patient else None
    comms: list[dict[str, Any]] = []
    appts: list[dict[str, Any]] = []
    if sr is not None:
        based_on = f"ServiceRequest/{sr['id']}"
        jobs = [pool.submit(copy_current_request_context(_extra), rtype, params) for rtype, params in (
            ("Communication", {"based-on": based_on, "_count": "200"}),
            ("Appointment", {"based-on": based_on, "_count": "20"}))]
        comms, appts = (j.result() for j in jobs)
    comms = thread_of(comms)
    if with_patient:  # a page: its files by their names
        comms = name_files(comms)
    return {"task": task, "sr": sr, "comms": comms, "thread": [{"kind": thread_kind(c), "c": c} for c in comms],
            "appointment": current_visit(appts),
            "patient": patient_job.result() if patient_job is not None else None, "pid": pid}


FILE_NAMES_KEPT = 4096
_file_names: dict[str, str] = caches.kept({})  # DocumentReference id -> its file's name (content.attachment.title)
_file_names_lock = threading.Lock()


def name_files(comms: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The thread's Communications with each file they carry named (``contentReference.display``).
    Teleconsult keeps the name the portal sent beside each file (the ``display``), so a thread's files
    are named by the Communications themselves: no EHR call. Only files of Communications stored before
    it kept them (a bare reference) are named by their DocumentReferences (``content.attachment.title``,
    the uploaded file's name): the ones not known yet are read from the EHR in ONE search with the
    user's token, asking for the names only (``_elements``: not the files' base64 content), then kept
    for every user of this process (a file's name does not change; it is shown only beside a reference
    the user's own thread holds). A failed search leaves them unnamed ("File n")."""
    refs = [str(pl["contentReference"].get("reference") or "") for c in comms for pl in c.get("payload") or []
            if isinstance(pl.get("contentReference"), dict) and not pl["contentReference"].get("display")]
    ids = sorted({r.removeprefix("DocumentReference/") for r in refs if r.startswith("DocumentReference/")}
                 - set(_file_names))
    ids = [i for i in ids if FHIR_ID.fullmatch(i)]
    if ids:
        try:
            # the names only (the subject: what the EHR's audit records of the search)
            names = {"_id": ",".join(ids), "_count": str(len(ids)), "_elements": "content.attachment.title,subject"}
            docs = entries(fhir_get("ehr", "/fhir/DocumentReference", names, cached=True), "DocumentReference")
        except BackendError:
            docs = []
        found = {str(d.get("id")): str(t)[:200] for d in docs if str(d.get("id")) in ids
                 and (t := next((c.get("attachment", {}).get("title") for c in d.get("content") or []
                                 if (c.get("attachment") or {}).get("title")), None))}
        with _file_names_lock:
            if len(_file_names) + len(found) > FILE_NAMES_KEPT:
                for old in list(_file_names)[: FILE_NAMES_KEPT // 2]:
                    del _file_names[old]
            _file_names.update(found)

    def named(pl: dict[str, Any]) -> dict[str, Any]:
        ref = pl.get("contentReference")
        if not isinstance(ref, dict) or ref.get("display"):
            return pl
        name = _file_names.get(str(ref.get("reference") or "").removeprefix("DocumentReference/"))
        return {**pl, "contentReference": {**ref, "display": name}} if name else pl

    return [{**c, "payload": [named(pl) for pl in c.get("payload") or []]} if c.get("payload") else c for c in comms]


THREAD_CATEGORY = "https://sen.vn/fhir/CodeSystem/consult-communication"


def thread_kind(comm: dict[str, Any]) -> str:
    """``question`` (the hub's $request-info), ``answer`` (the clinic's $provide-info) or ``message``
    (either side's $message): the Communication's category; one stored before categories: an answer
    answers (``inResponseTo``), else it is a question (the only other kind there was)."""
    for cc in comm.get("category") or []:
        for c in cc.get("coding") or []:
            if c.get("system") == THREAD_CATEGORY and c.get("code") in ("question", "answer", "message"):
                return str(c["code"])
    return "answer" if comm.get("inResponseTo") else "question"


def thread_of(comms: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The consult's thread in time order (when sent, then when stored: messages a moment apart)."""
    def order(c: dict[str, Any]) -> tuple[float, str]:
        sent = parse_instant(c.get("sent"))
        return (sent.timestamp() if sent else 0.0, str((c.get("meta") or {}).get("lastUpdated") or ""))

    return sorted(comms, key=order)


def message_form(form: MessageForm | None = None) -> MessageForm:
    """The thread's message form: ``form`` as posted (its text and key kept), else an empty one with
    a new key (every resubmission of it sends the same one: :func:`form_key`)."""
    return form_key(form or MessageForm(formdata=None))


def send_message(tid: str, form: MessageForm) -> None:
    """Post ``form``'s text on the consult's thread (teleconsult's ``$message``). The Idempotency-Key
    is the form's key and the text (``charges.request_key``): a double click or a retry of the same
    message stores it once; the text changed after a refusal is a new message. A BackendError when
    teleconsult refuses."""
    from .charges import request_key

    form_key(form)
    body = {"resourceType": "Parameters", "parameter": [{"name": "text", "valueString": form.text.data}]}
    backend.call("teleconsult", "POST", f"/fhir/Task/{tid}/$message", json=body,
                 headers={"Idempotency-Key": request_key(form.key.data, "message", tid, form.text.data)})


def current_visit(appts: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The consult's video visit to show: the active one (booked or held; a move books the new time
    and cancels the old, so the active one is the new), else the one changed last (the visit
    cancelled, marked no-show or done; not an older time it was moved away from)."""
    active = [a for a in appts if a.get("status") in ("booked", "pending")]
    return max(active or appts, key=lambda a: str((a.get("meta") or {}).get("lastUpdated") or ""), default=None)


pool = ThreadPoolExecutor(max_workers=16, thread_name_prefix="portal-consult")  # side requests of a page


def _extra(rtype: str, params: dict[str, str]) -> list[dict[str, Any]]:
    """The consult's thread or visit: extras; when they fail the Task itself is still shown."""
    try:
        return entries(_consult_read(f"/fhir/{rtype}", params), rtype)
    except BackendError:
        return []


@bp.app_template_global("consult_overdue")
def consult_overdue(task: dict[str, Any]) -> bool:
    """The clinic's consult page says "Quá hạn" beside the answer's due time by the rule the clinic's list,
    the hub's consult page and its worklist use (doctor.overdue)."""
    from .doctor import overdue

    return overdue(task, datetime.now(UTC))


@bp.route("/consults/<tid>")
@login_required("clinic", "doctor")
def consult_detail(tid: str) -> Any:
    data = consult_bundle(tid, with_patient=True)
    done = steps_done()
    return render_template("consult_detail.html", tid=tid, **data, answer_form=form_key(AnswerFilesForm()),
                           cancel_form=form_key(CancelForm()), message_form=message_form(), limits=upload_limits(),
                           submitted=done.get("submitted"), sent=done.get("sent"), answered=done.get("answered"),
                           cancelled=done.get("cancelled"),
                           title=gettext("Consult"))


@bp.route("/consults/<tid>/message", methods=["POST"])
@login_required("clinic")
def consult_message(tid: str) -> Any:
    """The clinic's message to the hub on the consult's thread; the page again with the text kept on error."""
    form = MessageForm()
    if form.validate_on_submit():
        try:
            send_message(tid, form)
            return done_in_place(url_for("web.consult_detail", tid=tid, _anchor="consult-thread"), "sent")
        except BackendError as err:
            return _detail_with(tid, message_form=message_form(form), **refusal_said(err, "message_problem"))
    return _detail_with(tid, message_form=message_form(form))


def done_in_place(url: str, step: str | None, value: str = "1") -> Any:
    """A form's step done: the redirect to ``url``, the page there saying it once (``value``: the step's, as
    ``step_done`` carries it; ``step`` None: the page says nothing of it, the sign-in's, the language's); a form
    sent in place (htmx: the consult's answer and message boxes) goes there by ``HX-Redirect``. To a place on the
    page it was sent from (``#consult-thread``) htmx's ``location.href`` only scrolls: ``HX-Refresh`` then reloads
    it there."""
    if not _is_htmx():
        return step_done(url, step, value) if step else redirect(url)
    if step:
        flash_step(url, step, value)
    headers = {"HX-Redirect": url}
    here = urlsplit(request.headers.get("HX-Current-URL", "")).path
    if urlsplit(url).fragment and here == urlsplit(url).path:
        headers["HX-Refresh"] = "true"
    return "", 204, headers


def refusal_said(err: BackendError | str, box: str) -> dict[str, str]:
    """Where a service's refusal of a form (or the portal's own words for it, a ``str``) is said: in the form's
    own box (``box``, the template's name for it) when it was sent in place (htmx swaps that box only), else
    above the page."""
    return {box if _is_htmx() else "problem": err if isinstance(err, str) else backend_message(err)}


@bp.route("/consults/<tid>/answer", methods=["POST"])
@login_required("clinic")
def consult_answer(tid: str) -> Any:
    """The clinic's answer to the hub's question (``$provide-info``), its files first (:func:`_attach`).
    The form's key and the answer make the Idempotency-Key (as the consult form's): sent twice, it is
    answered once. Back on the consult page saying it was sent; the page again on an error."""
    from .charges import request_key

    form = form_key(AnswerFilesForm())
    if form.validate_on_submit() and _check_files(form):
        try:
            # the files are the consult's patient's (not consult_bundle: its side requests' copied request
            # contexts close the upload's files when they end)
            attached = _attach(form.files.data or [], str(_consult_request(tid)[2]), form.key.data) \
                if _has_files(form) else []
            key = request_key(form.key.data, "answer", tid, form.answer.data or "",
                              *(ref["reference"] for ref in attached))
            fhir_post("teleconsult", f"/fhir/Task/{tid}/$provide-info", {
                "resourceType": "Parameters", "parameter": [
                    {"name": "answer", "valueString": form.answer.data},
                    *({"name": "attachment", "valueReference": ref} for ref in attached)]},
                headers={"Idempotency-Key": key})
            return done_in_place(url_for("web.consult_detail", tid=tid), "answered")
        except BackendError as err:
            return _detail_with(tid, answer_form=form, **refusal_said(err, "answer_problem"))
    return _detail_with(tid, answer_form=form)


@bp.route("/consults/<tid>/cancel", methods=["POST"])
@login_required("clinic")
def consult_cancel(tid: str) -> Any:
    """The clinic cancels its consult (``$cancel``); the Idempotency-Key is the form's key and the reason
    (as the answer's): sent twice, it is cancelled once and the second gets the first's answer. Sent in place
    (``#consult-cancel``, as the answer and the message): its answer lost on a slow link, the page and the
    reason stay, the box says so, and sent again the consult is cancelled once and the page says it."""
    from .charges import request_key

    form = form_key(CancelForm())
    if form.validate_on_submit():
        asked = confirmation("consult-cancel")
        if asked is not None:  # nothing cancelled: the page with the step, what was typed kept
            # htmx swaps a 2xx only: the step sent unticked is the box again (400 to a browser's post)
            return _detail_with(tid, cancel_form=form, asked=asked)[0], 200 if _is_htmx() else confirming_status(asked)
        try:
            fhir_post("teleconsult", f"/fhir/Task/{tid}/$cancel", {
                "resourceType": "Parameters", "parameter": [{"name": "reason", "valueString": form.reason.data}]},
                headers={"Idempotency-Key": request_key(form.key.data, "cancel", tid, form.reason.data or "")})
            return done_in_place(url_for("web.consult_detail", tid=tid), "cancelled")
        except BackendError as err:
            # refused, most often because the consult changed meanwhile (closed: no cancel box any more): sent in
            # place, the whole page is swapped (htmx's HX-Retarget), its state now and the refusal above it;
            # cancelled already (another tab, a colleague): no refusal, the page says so, its cancelled state below
            page, status = _detail_with(tid, cancel_form=form, cancel_refused=err)
            whole = {"HX-Retarget": "#main", "HX-Reselect": "#main", "HX-Reswap": "outerHTML"}
            return page, status, whole if _is_htmx() else {}
    return _detail_with(tid, cancel_form=form)


def _has_files(form: FlaskForm) -> bool:
    return any(f and f.filename for f in form.files.data or [])


def _files_dropped(form: FlaskForm, problem: str | None = None) -> bool:
    """Files were chosen on ``form`` and its page comes back (an error): a page shown again cannot keep
    them, so it says to choose them again."""
    return request.method == "POST" and _has_files(form) and bool(form.errors or problem)


def _detail_with(tid: str, cancel_refused: BackendError | None = None, **forms: Any) -> Any:
    """The consult's page again after a form of it was not done (``forms``: the form with its errors, ``problem``
    or a box's refusal). ``cancel_refused``: teleconsult refused the cancel; the consult read now is cancelled (by
    another tab, a colleague): not a refusal, the page says it was cancelled already (200), else the refusal."""
    data = consult_bundle(tid, with_patient=True)
    before = cancel_refused is not None and cancel_refused.kind == "refused" and \
        (data.get("task") or {}).get("status") == "cancelled"
    if cancel_refused is not None and not before:
        forms["problem"] = backend_message(cancel_refused)
    ctx = {"answer_form": form_key(AnswerFilesForm(formdata=None)), "cancel_form": form_key(CancelForm(formdata=None)),
           "message_form": message_form(), **forms}
    answer_form = ctx["answer_form"]
    problem = forms.get("problem") or forms.get("answer_problem")
    # htmx swaps only 2xx answers: a box sent in place (the answer, the message) comes back with its errors as 200
    return render_template("consult_detail.html", tid=tid, **data, **ctx, limits=upload_limits(),
                           files_again="files" in request.files and _files_dropped(answer_form, problem),
                           cancelled_before=before, title=gettext("Consult")), 200 if _is_htmx() or before else 422


