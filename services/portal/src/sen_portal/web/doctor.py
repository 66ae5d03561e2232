"""Hub doctors: the worklist, a consult's triage (accept, reject, reassign, ask the clinic), finding and
booking a slot, the minutes, and the weekly availability with leave."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, time, timedelta
from typing import Any

from flask import copy_current_request_context, g, redirect, render_template, request, url_for
from flask_babel import get_locale, gettext, lazy_gettext
from markupsafe import Markup
from sen_shared.fhir.names import name_and_role, same_person

from . import backend_message, bp, icd10, is_htmx, login_required, select_locale, status_label, typed_text
from .backend import BackendError, call, entries, fhir_get, fhir_post, page_status
from .charges import request_key
from .clinic import (
    CURSOR,
    OPEN,
    WHOLE_PAGE,
    consult_bundle,
    consult_rows,
    done_in_place,
    form_key,
    message_form,
    page_gone,
    pool,
    refusal_said,
    send_message,
    teleconsult_page,
)
from .confirming import confirmation
from .confirming import status as confirming_status
from .directory import answered_by_clinic, hub_specialties, party
from .formatting import TZ, parse_instant, today, when
from .forms import (
    FORM_KEY,
    PARTICIPANTS_MAX,
    AvailabilityForm,
    FindSlotForm,
    LeaveForm,
    MessageForm,
    MinutesForm,
    QuestionForm,
    ReasonForm,
    ReassignForm,
    VisitCancelForm,
    minutes_people,
)
from .notices import steps_done
from .patients import lookup, patient_id, shown
from .seen import mark_seen, seen_of

EXT_BREACHED = "https://sen.vn/fhir/StructureDefinition/sla-breached"
EXT = "https://fhir.sen.vn/StructureDefinition/"
EXT_AVAILABLE, EXT_SLOT_MINUTES = EXT + "schedule-available-time", EXT + "schedule-slot-minutes"
EXT_NOT_AVAILABLE = EXT + "schedule-not-available"
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def overdue(task: dict[str, Any], now: datetime, search: dict[str, Any] | None = None) -> bool:
    """Whether the consult is past its answer deadline ("Quá hạn"), for the worklist and the consult page
    alike: teleconsult's breach flag (:data:`EXT_BREACHED`) on a worklist entry (its ``search``); a Task read
    alone (the consult page) by teleconsult's rule for that flag: the SLA sweep marked it (``businessStatus``
    ``sla-breached``) or it is still open after its due time (the sweep not run yet)."""
    flags = [x.get("valueBoolean") for x in (search or {}).get("extension") or [] if x.get("url") == EXT_BREACHED]
    if flags:
        return bool(flags[0])
    if any(c.get("code") == "sla-breached" for c in (task.get("businessStatus") or {}).get("coding") or []):
        return True
    due = parse_instant(((task.get("restriction") or {}).get("period") or {}).get("end"))
    return task.get("status") in OPEN and due is not None and now > due


def worklist_rows(bundle: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    now = datetime.now(TZ)
    for e in bundle.get("entry", []) or []:
        task = e.get("resource") or {}
        breached = overdue(task, now, e.get("search") or {})
        due_text = ((task.get("restriction") or {}).get("period") or {}).get("end")
        due = parse_instant(due_text)
        # still to answer, and due within the hour (not a consult closed, nor one already past its time)
        soon = bool(due and not breached and task.get("status") in OPEN and now <= due < now + timedelta(hours=1))
        rows.append({"task": task, "breached": breached, "soon": soon, "due": due_text,
                     "waiting": task.get("status") == WAITING})
    return rows


WORKLIST = "/fhir/Task/$worklist"
WORKLIST_PAGE = 50
WORKLIST_STATES = ("requested", "accepted", "on-hold", "in-progress", "completed")
WAITING = "on-hold"  # asked the clinic (the hub's $request-info): waiting for its answer, nothing to do meanwhile
ACTIONABLE = ("requested", "accepted", "in-progress")  # the open states the hub acts on
# a page of the open worklist after the first: its part ("act": those she can act on, "wait": those waiting
# for the clinic) and, unless that part starts there, teleconsult's cursor of the part's $worklist
_PART = re.compile(rf"^(act|wait)(?:-({CURSOR}))?$")


def _total(bundle: dict[str, Any]) -> int | None:
    return bundle["total"] if isinstance(bundle.get("total"), int) else None


def open_worklist_page(params: dict[str, str], after: str | None,
                       ) -> tuple[list[dict[str, Any]], str | None, int | None]:
    """One page of the open worklist (no status asked): its entries, the ``after`` of the next page (None: the
    last) and how many open consults there are. The consults she can act on (requested, accepted, in progress)
    come first, then those waiting for the clinic's answer (on hold), each part in teleconsult's order
    (priority, then due time: issue 14's ``$worklist``, whose own order stays as it is). The usual worklist,
    every open consult on one page, is one ``$worklist`` read ordered here; a longer one is its two parts one
    after the other, each paged by teleconsult's cursor (as the clinic's list, :func:`clinic.consults_page`): a
    page the first part does not fill goes on with the second. ``after``: as a page's "next" link gave it (a
    bad one is ValueError: the page's 400)."""
    if after is None:
        bundle, more = teleconsult_page(WORKLIST, params, None)
        if more is None:  # all of them on this page
            found = bundle.get("entry") or []
            return [e for e in found if not waiting(e)] + [e for e in found if waiting(e)], None, _total(bundle)
    m = _PART.match(after or "act")
    if m is None:
        raise ValueError(after)
    part, cursor = m.groups()
    act, wait = {**params, "status": ",".join(ACTIONABLE)}, {**params, "status": WAITING}
    if part == "wait":
        bundle, more = teleconsult_page(WORKLIST, wait, cursor)
        others, _ = teleconsult_page(WORKLIST, {**act, "_count": "1"}, None)  # only how many
        return bundle.get("entry") or [], f"wait-{more}" if more else None, _sum(bundle, others)
    bundle, more = teleconsult_page(WORKLIST, act, cursor)
    found = bundle.get("entry") or []
    room = WORKLIST_PAGE - len(found)
    # the waiting ones that fill the page (one at least: is there any after a full page?), and how many
    rest, rest_more = teleconsult_page(WORKLIST, {**wait, "_count": str(1 if more else max(room, 1))}, None)
    if more:
        return found, f"act-{more}", _sum(bundle, rest)
    if room == 0:
        return found, "wait" if rest.get("entry") else None, _sum(bundle, rest)
    return found + (rest.get("entry") or []), f"wait-{rest_more}" if rest_more else None, _sum(bundle, rest)


def _sum(*bundles: dict[str, Any]) -> int | None:
    totals = [_total(b) for b in bundles]
    return sum(t for t in totals if t is not None) if None not in totals else None


def waiting(entry: dict[str, Any]) -> bool:
    """Whether a worklist entry waits for the clinic's answer (:data:`WAITING`)."""
    return (entry.get("resource") or {}).get("status") == WAITING


@bp.route("/worklist")
@login_required("doctor")
def worklist() -> Any:
    """The hub's consults, most urgent first (priority, then due time: teleconsult's ``$worklist``),
    :data:`WORKLIST_PAGE` a page however many there are: ``?after=`` is the ``_cursor`` of the worklist's
    ``next`` link (a keyset: consults taken or sent meanwhile shift no other), the status filter kept
    across the pages, the count of all the matching consults above the list."""
    from .cashier import cursor_args

    status = request.args.get("status", "")
    status = status if status in WORKLIST_STATES else ""
    after = request.args.get("after") or None
    specialties, facilities = specialty_choices(), facility_choices()
    specialty, facility = request.args.get("specialty", "").strip(), request.args.get("facility", "").strip()
    facility = facility.removeprefix("Organization/")
    params = {"_count": str(WORKLIST_PAGE), **({"status": status} if status else {}),
              **({"specialty": specialty} if specialty else {}), **({"facility": facility} if facility else {})}
    problem, rows, total, next_after, code = None, [], None, None, 200
    unknown = unknown_filter(specialty, specialties, facility, facilities)
    try:
        if unknown:  # never an empty list for a value the doctor cannot have meant
            raise LookupError(unknown)
        if status:
            bundle, next_after = teleconsult_page(WORKLIST, params, after)
            found, total = bundle.get("entry") or [], _total(bundle)
        else:  # the open ones: those she can act on first, then those waiting for the clinic
            found, next_after, total = open_worklist_page(params, after)
        rows = worklist_rows({"entry": found})
    except LookupError as err:
        problem, code = str(err), 400
    except ValueError:
        problem, code = page_gone(), 400
    except BackendError as err:  # the list could not be read: said on the page, with an outage's status
        problem, code = backend_message(err), page_status(err)
    else:  # each consult's patient (named only where the EHR lets this doctor read them), reason, clinic
        rows = consult_rows([r["task"] for r in rows], {str(r["task"].get("id")): r for r in rows})
        answered = [r["task"] for r in rows if answered_by_clinic(r["task"], g.user.facility, g.user.practitioner)]
        # until she opens the consult at the version the answer made (web/seen.py): one read, only if a row says it
        said = {str(t.get("id")) for t in answered} - (seen_of(answered) if answered else set())
        for r in rows:
            r["answered"] = str(r["task"].get("id")) in said
    refresh = request.headers.get("HX-Request") == "true"  # the table alone, without the page's message
    done = steps_done()  # the step this page follows, said once (notices; none to a refresh)
    given = done.get("reassigned")
    # the filters as the links keep them (the pages, the refresh, the first page): each only when asked for
    kept = {"status": status or None, "specialty": specialty or None, "facility": facility or None}
    return render_template("_worklist_table.html" if refresh else "worklist.html", rows=rows, problem=problem,
                           status=status, specialty=specialty, facility=facility, specialties=specialties,
                           facilities=facilities, kept=kept, total=total, after=after, page=cursor_args()[1],
                           next_after=next_after, title=gettext("Worklist"), rejected=done.get("rejected"),
                           reassigned=bool(given), reassigned_to=reassigned_to(given)), code, \
        {"HX-Retarget": "#worklist"} if refresh and code >= 400 else {}  # htmx swaps a 4xx/5xx it is told where to


_FILTER_VALUE = re.compile(r"[A-Za-z0-9\-.]{1,64}")


def specialty_choices(hub: str | None = None) -> list[tuple[str, str]]:
    """The worklist's specialty filter (teleconsult's ``specialty``: a consult's ``performerType`` code): the
    specialties of the hub's doctors (their PractitionerRoles in the EHR directory), by name in the page's
    language (the portal's specialty names, else the directory's own text), sorted by name; [] when the EHR
    does not answer. ``hub``: the hub's Organization id (the consult form's: the hub a clinic asks), else the
    user's facility (a hub doctor's worklist)."""
    from .prices import SPECIALTIES

    facility = hub or g.user.facility
    found: dict[str, str] = {}
    # the directory's, kept ten minutes per hub: the worklist's every load and refresh asked the EHR for them
    for concept in hub_specialties(facility) if facility else []:
        for coding in concept.get("coding") or []:
            code = str(coding.get("code") or "")
            if _FILTER_VALUE.fullmatch(code):
                label = SPECIALTIES.get(code)
                found.setdefault(code, str(label) if label else str(concept.get("text") or coding.get("display")
                                                                     or code))
    return sorted(found.items(), key=lambda kv: (kv[1].casefold(), kv[0]))


def facility_choices() -> list[tuple[str, str]]:
    """The worklist's facility filter (teleconsult's ``facility``: the requesting clinic): the facilities of
    the province (the EHR's Organizations that give care, as the dashboard's filter), by name."""
    from .dashboard import facilities

    return sorted(((fid, name) for fid, (name, _) in facilities().items() if fid != g.user.facility),
                  key=lambda kv: (kv[1].casefold(), kv[0]))


def unknown_filter(specialty: str, specialties: list[tuple[str, str]], facility: str,
                   facilities: list[tuple[str, str]]) -> str:
    """Why the worklist's filter is refused ("" when it is not): a specialty or facility in the link that is
    none of the choices. The EHR not answering (no choices known): a well-formed code is taken as asked."""
    for value, choices, message in (
            (specialty, specialties, lazy_gettext("The specialty in the link is not one of the hub's specialties: "
                                                  "choose one from the list, or Every specialty.")),
            (facility, facilities, lazy_gettext("The facility in the link is not one of the province's "
                                                "facilities: choose one from the list, or Every facility."))):
        if value and not (_FILTER_VALUE.fullmatch(value) and (not choices or value in dict(choices))):
            return str(message)
    return ""


@bp.app_template_filter("specialty")
def specialty_name(concept: Any) -> str:
    """A consult's specialty (its ServiceRequest's ``performerType``, a Task's first one) by name in the page's
    language: the portal's specialty names by SNOMED code, else the concept's text (Vietnamese) on a Vietnamese
    page and SNOMED's display (English) on another, either when the other is missing; "" for none."""
    from .prices import SPECIALTIES

    concept = (concept[0] if concept else {}) if isinstance(concept, list) else concept
    if not isinstance(concept, dict):
        return ""
    codings = [c for c in concept.get("coding") or [] if isinstance(c, dict)]
    named = next((SPECIALTIES[str(c.get("code"))] for c in codings if str(c.get("code")) in SPECIALTIES), None)
    if named is not None:
        return str(named)
    display = next((c["display"] for c in codings if c.get("system") == "http://snomed.info/sct" and c.get("display")),
                   None)
    if display and str(get_locale() or "vi").split("_")[0] != "vi":
        return str(display)
    return str(concept.get("text") or next((c.get("display") or c.get("code") for c in codings), "") or "")


def reassigned_to(pid: str | None) -> str | None:
    """The name of the doctor a consult was just given to (the Practitioner id the confirmed reassign
    flashed, ``notices``), looked up among the hub's doctors the choice was made from; None for any other
    value (an id that is not one of them)."""
    if not pid or pid == "1":
        return None
    return dict(_hub_doctors(g.user.facility, g.user.practitioner)).get(f"Practitioner/{pid}")


def _hub_doctors(facility: str | None, me: str | None) -> list[tuple[str, str]]:
    """The other doctors of the hub ``facility`` (``me``: the signed-in doctor's Practitioner id)."""
    try:
        roles = fhir_get("ehr", "/fhir/PractitionerRole",
                         {"organization": f"Organization/{facility}",
                          "_include": "PractitionerRole:practitioner", "_count": "50"},
                         cached=True) if facility else {}
    except BackendError:
        return []
    from .formatting import human_name

    out = [(f"Practitioner/{p['id']}", human_name(p)) for p in entries(roles, "Practitioner")
           if p.get("id") != me]
    if not out:
        out = [(r["practitioner"]["reference"], r["practitioner"]["reference"].split("/")[-1])
               for r in entries(roles, "PractitionerRole") if (r.get("practitioner") or {}).get("reference")]
    return out


def _task_page(tid: str, status: int = 200, **ctx: Any) -> Any:
    # the hub's doctors (for reassigning) are asked for while the consult is read: one wait
    doctors = pool.submit(copy_current_request_context(_hub_doctors), g.user.facility, g.user.practitioner)
    data = consult_bundle(tid, with_patient=True)
    if answered_by_clinic(data["task"], g.user.facility, g.user.practitioner):
        mark_seen(data["task"])  # the clinic's answer is on her screen: the worklist no longer says it
    start = today()  # in Vietnam: a server on UTC is still on yesterday before 07:00 here
    forms = {"reject_form": ReasonForm(formdata=None), "question_form": QuestionForm(formdata=None),
             "reassign_form": form_key(ReassignForm(formdata=None)),
             "find_form": FindSlotForm(formdata=None, start=start), "minutes_form": _minutes_defaults(data),
             "visit_cancel_form": form_key(VisitCancelForm(formdata=None, prefix="visit")),
             "message_form": message_form()}
    # the key of the visit's one-button forms (a free time to book or move to, the no-show): one a page shown,
    # kept through an answer sent in place (the form's as posted), so a press sent again is done once
    ctx.setdefault("visit_key", posted_key() or uuid.uuid4().hex)
    forms.update(ctx.pop("forms", {}))
    begun = parse_instant((data["appointment"] or {}).get("start"))
    ctx["visit_begun"] = begun is not None and begun <= datetime.now(TZ)  # a no-show can be marked from then on
    # minutes signed before the booked visit's time end it: teleconsult's $complete cancels it, its time
    # given back (only a visit that had begun is fulfilled); the minutes form says so first
    ctx["visit_ahead"] = begun is not None and not ctx["visit_begun"] and \
        (data["appointment"] or {}).get("status") == "booked"
    # the answer is due then: the free times after it are marked, and said when none is before it
    due_text = ((data["task"].get("restriction") or {}).get("period") or {}).get("end")
    due = parse_instant(due_text)
    ctx["after_due"] = [due is not None and (begins := parse_instant(a.get("start"))) is not None and begins >= due
                        for a in ctx.get("proposals") or []]
    ctx["due"] = due_text
    ctx["overdue"] = overdue(data["task"], datetime.now(TZ))  # "Quá hạn" beside it, as on the worklist
    ctx["all_after_due"] = bool(ctx["after_due"]) and all(ctx["after_due"])
    forms["reassign_form"].practitioner.choices = reassign_choices(doctors.result())
    ctx["held_by_other"] = other_holder(data["task"])  # taking it back asks for a confirmation
    ctx["minutes_from"] = minutes_start(data["task"], datetime.now(TZ)).isoformat()
    ctx["participants_max"] = PARTICIPANTS_MAX
    ctx["signer"] = bool(g.user.practitioner)  # no Practitioner (an admin): no start, question nor minutes
    page = render_template("task.html", tid=tid, **data, **forms, **ctx, title=gettext("Consult"))
    return (page, *in_place_answer(status, bool(ctx.get("problem"))))


def in_place_answer(status: int, whole: bool) -> tuple[int, dict[str, str]]:
    """A doctor's form sent in place (htmx, _form.html's sent_in_place) and not done: the page's status and
    headers. htmx swaps only a 2xx: 200, and the form's box is swapped (its ``hx-select``) with its errors or
    the refusal said in it; ``whole``: the page says what changed meanwhile (the consult taken, completed,
    cancelled; the user no signer), the form perhaps no longer offered, so the whole page is swapped
    (``#main``), what was typed kept in the form or below it as not sent. A page the browser posted, or
    htmx's GET (a poll): as it was."""
    if not (is_htmx() and request.method == "POST"):
        return status, {}
    return 200, {"HX-Retarget": "#main", "HX-Reselect": "#main", "HX-Reswap": "outerHTML"} if whole else {}


def reassign_choices(doctors: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The reassign box's choices: an empty first one (a press of the button without choosing gives the
    consult to nobody: "Choose a doctor."), then the hub's other doctors."""
    return [("", gettext("— Choose a doctor —")), *doctors]


def _minutes_defaults(data: dict[str, Any]) -> MinutesForm:
    """The minutes form as first shown: the signed-in doctor chairs; the participants one a line, as the hint
    says: this doctor, then the one who wrote the consult at the clinic (:func:`clinic_side`)."""
    form = MinutesForm(formdata=None)
    form.chair.data = g.user.name
    form.participants.data = "\n".join([gettext("%(name)s — specialist, hub", name=g.user.name), clinic_side(data)])
    return form


def consult_writer(sr: dict[str, Any] | None) -> str | None:
    """The Practitioner who wrote the consult at the clinic: the ServiceRequest's ``requester`` when it names
    one, else who made its version (teleconsult's ``changed-by``: the nurse who submitted it; the portal's
    requester is the clinic itself); None when neither is a Practitioner."""
    sr = sr or {}
    refs = [str((sr.get("requester") or {}).get("reference") or "")]
    refs += [str((e.get("valueReference") or {}).get("reference") or "")
             for e in (sr.get("meta") or {}).get("extension") or [] if e.get("url") == EXT_CHANGED_BY]
    return next((r for r in refs if r.startswith("Practitioner/")), None)


def clinic_side(data: dict[str, Any]) -> str:
    """The minutes' participants line of the requesting clinic: the one who wrote the consult by name, with
    the clinic's name (:func:`consult_writer`); the clinic's staff when their name is not known."""
    task, sr = data.get("task") or {}, data.get("sr") or {}
    clinic = party(task.get("requester") or sr.get("requester"))
    who = consult_writer(sr)
    name = party(who) if who else ""
    if name and name != who:
        return gettext("%(name)s — requested the consult, %(clinic)s", name=name, clinic=clinic)
    return gettext("Staff of %(clinic)s — requested the consult", clinic=clinic)


@bp.route("/tasks/<tid>")
@login_required("doctor")
def task_detail(tid: str) -> Any:
    done = steps_done()  # the step this page follows, said once (notices)
    return _task_page(tid, booked=done.get("booked"), done=done.get("done"), accepted=done.get("accepted"),
                      started=done.get("started"), visit=done.get("visit"), sent=done.get("sent"),
                      question_sent=done.get("asked"), next_consult=next_consult(tid) if done.get("done") else None)


def next_consult(tid: str) -> dict[str, Any] | None:
    """The consult to go on with once ``tid``'s minutes are signed: the first on the worklist (most urgent, then
    soonest due) that is this doctor's to act on: no doctor's yet or theirs, not waiting for the clinic's answer
    (on hold), not ``tid``. None when there is none or the worklist cannot be read (the page links the worklist)."""
    try:
        bundle, _ = teleconsult_page("/fhir/Task/$worklist", {"_count": "20"}, None)
    except (BackendError, ValueError):
        return None
    me = f"Practitioner/{g.user.practitioner}"
    for e in bundle.get("entry") or []:
        task = e.get("resource") or {}
        owner = (task.get("owner") or {}).get("reference") or ""
        if task.get("id") != tid and task.get("status") in ("requested", "accepted", "in-progress") and \
                (not owner.startswith("Practitioner/") or owner == me):
            return task
    return None


def _op(tid: str, op: str, params: list[dict[str, Any]] | None, headers: dict[str, str] | None = None) -> None:
    body = {"resourceType": "Parameters", "parameter": params} if params else {"resourceType": "Parameters"}
    fhir_post("teleconsult", f"/fhir/Task/{tid}/${op}", body, headers=headers)


def other_holder(task: dict[str, Any]) -> str | None:
    """The Practitioner reference of the doctor who holds the consult (``Task.owner``) when that is
    not the signed-in doctor (given to another with "Chuyển cho bác sĩ khác"); else None."""
    owner = str((task.get("owner") or {}).get("reference") or "")
    mine = f"Practitioner/{g.user.practitioner}" if g.user.practitioner else None
    return owner if owner.startswith("Practitioner/") and owner != mine else None


EXT_CHANGED_BY = "https://sen.vn/fhir/StructureDefinition/changed-by"  # teleconsult: who made this version


@bp.app_template_global()
def rejected_by(task: dict[str, Any]) -> str | None:
    """The Practitioner reference of the doctor who rejected the consult: who made the rejected Task's
    version (teleconsult's ``changed-by`` in its ``meta``: rejecting is its last step), else its owner
    then; None when neither is a doctor (the page then names no one rather than "no doctor yet")."""
    for e in (task.get("meta") or {}).get("extension") or []:
        ref = str((e.get("valueReference") or {}).get("reference") or "")
        if e.get("url") == EXT_CHANGED_BY and ref.startswith("Practitioner/"):
            return ref
    owner = str((task.get("owner") or {}).get("reference") or "")
    return owner if owner.startswith("Practitioner/") else None


@bp.app_template_global()
def consult_times(task: dict[str, Any]) -> dict[str, str | None]:
    """When the consult was accepted and when it was really started (``$start``), for the doctor's and
    the clinic's consult pages: ``{"accepted": ..., "started": ...}``, each None when it did not happen
    or is not known. teleconsult sets ``executionPeriod.start`` at acceptance, sets it again at the
    start and replaces it by the minutes' time at completion; an accepted Task was never started, one
    in progress was (its start is the Task's own); for the others (in progress: when it was accepted; a
    question open, cancelled, rejected, completed) the Task's versions say it (its ``_history``: the
    first accepted one, the first in progress). The history not answering: nothing is said of what
    only it knows rather than a guess."""
    status = task.get("status")
    begun = (task.get("executionPeriod") or {}).get("start")
    if status == "accepted":
        return {"accepted": begun, "started": None}
    known = {"accepted": None, "started": begun if status == "in-progress" else None}
    if status == "requested" or (not begun and status != "completed"):
        return known
    versions = task_versions(task)
    if versions is None:
        return known

    def first(state: str) -> str | None:
        return next(((v.get("executionPeriod") or {}).get("start") for v in versions
                     if v.get("status") == state), None)

    return {"accepted": first("accepted"), "started": known["started"] or first("in-progress")}


def task_versions(task: dict[str, Any]) -> list[dict[str, Any]] | None:
    """The Task's versions, oldest first (its ``_history``, the newest 100), read once per page; None when
    teleconsult does not answer."""
    memo = g.setdefault("task_versions", {})
    key = (task.get("id"), (task.get("meta") or {}).get("versionId"))
    if key not in memo:
        path = f"/fhir/Task/{task.get('id')}/_history"
        try:
            versions = _by_version(fhir_get("teleconsult", path, {"_count": "100"}, cached=True))
            if key[1] and versions and str((versions[-1].get("meta") or {}).get("versionId")) != str(key[1]):
                versions = _by_version(fhir_get("teleconsult", path, {"_count": "100"}))  # kept one is older
        except BackendError:
            return None
        memo[key] = versions
    return memo[key]


def _by_version(bundle: dict[str, Any]) -> list[dict[str, Any]]:
    return sorted(entries(bundle, "Task"), key=lambda t: int((t.get("meta") or {}).get("versionId") or 0))


@bp.app_template_global()
def held_since(task: dict[str, Any]) -> str | None:
    """Since when the doctor holding the consult (``Task.owner``, a Practitioner) has held it: the time of
    the first of the Task's newest versions owned by them (when they accepted it, took it over, were given
    it or started it), for the consult pages. None when no doctor holds it, or the history does not say."""
    owner = str((task.get("owner") or {}).get("reference") or "")
    if not owner.startswith("Practitioner/"):
        return None
    since = None
    for v in task_versions(task) or []:
        mine = str((v.get("owner") or {}).get("reference") or "") == owner
        since = (since or (v.get("meta") or {}).get("lastUpdated")) if mine else None
    return since


# the reasons teleconsult writes on a visit it cancels with its consult (``visit_end_reason``: Vietnamese,
# its English in brackets, then ": " and the person's own reason when one was given)
_VISIT_ENDS = (("Phòng khám đã hủy yêu cầu hội chẩn (the clinic cancelled the consult)",
                lazy_gettext("the clinic cancelled the consult")),
               ("Bác sĩ tuyến trên đã từ chối hội chẩn (the hub declined the consult)",
                lazy_gettext("the specialist declined the consult")),
               ("Hội chẩn đã kết thúc trước giờ hẹn (the consult was completed before this visit)",
                lazy_gettext("the consult was completed before this visit")))
_MOVED = ("rescheduled", "superseded by another reschedule")


@bp.app_template_global()
def visit_reason(text: str | None) -> str:
    """Why a visit was cancelled, for the consult pages, with no closing full stop (the page ends the
    sentence): teleconsult's own reasons (a move, the consult cancelled, declined or completed) in the
    page's language, followed by the clinic's or the doctor's own reason as they wrote it; any other
    text as written; "" when there is none to say."""
    said = (text or "").strip()
    if said in ("", "cancelled"):
        return ""
    if said in _MOVED:
        return gettext("moved to another time")
    for head, kind in _VISIT_ENDS:
        if said.startswith(head):
            own = said[len(head):].lstrip(":").strip().rstrip(". ")
            return f"{kind}: {own}" if own else str(kind)
    return said.rstrip(". ")


@bp.route("/tasks/<tid>/accept", methods=["POST"])
@login_required("doctor")
def task_accept(tid: str) -> Any:
    """Accept the consult. One another doctor holds (given to them) is taken over only when the form
    says so (``takeover``: that doctor's reference, the page's checkbox): otherwise the page again,
    naming them, and nothing changed. Either is sent with ``If-Match``, the Task version the page showed
    (its form's ``version``): a consult another doctor took (or was given) meanwhile is not taken from
    them unseen, while one only escalated or asked about and answered since is accepted all the same
    (:func:`_step_on_page`). Of several doctors at once one wins (teleconsult claims the step); the others
    get the page again saying who took it (:func:`_taken_meanwhile`). Sent in place (task.html's
    ``#consult-accept``): done, HX-Redirect; refused, the whole page saying why. Sent again after its answer was
    lost, the page's version is 412 and the consult read again is this doctor's: done, as the first was."""
    seen, ticked = page_version(), request.form.get("takeover") or None
    try:
        task = _task_now(tid)
        holder = other_holder(task)
        version = str((task.get("meta") or {}).get("versionId") or "")
        if holder and ticked != holder:
            # the box names another holder, or the page named none and the consult was given since
            if ticked or (seen.isdigit() and version and seen != version
                          and _owner(_task_as_seen(tid, seen)) != holder):
                return _taken_meanwhile(tid, task)
            return _task_page(tid, 409, problem=gettext(
                "This consult is held by %(name)s. To take it over, tick the box above the button, then press "
                "it again.", name=party(holder)))
        expected = seen if seen.isdigit() else version
        changed = _step_on_page(tid, "accept", lambda headers, _now: _op(tid, "accept", None, headers=headers),
                                version=expected)
    except BackendError as err:
        if err.kind == "refused" and err.status == 409:  # taken by a doctor meanwhile, else the state says why
            try:
                task = _task_now(tid)
            except BackendError:
                task = {}
            if str((task.get("owner") or {}).get("reference") or "").startswith("Practitioner/"):
                return _taken_meanwhile(tid, task)
        return _task_page(tid, 409, problem=backend_message(err))
    if changed is not None:  # another step came first: say whose
        return _taken_meanwhile(tid, changed)
    return done_in_place(url_for("web.task_detail", tid=tid), "accepted")


def _task_now(tid: str) -> dict[str, Any]:
    """The Task as teleconsult holds it now ({} when it does not answer with one)."""
    return next(iter(entries(fhir_get("teleconsult", "/fhir/Task", {"_id": tid}), "Task")), {})


def _task_as_seen(tid: str, version: str) -> dict[str, Any] | None:
    """The Task at ``version``, the one a page showed (its ``_history``: a version never changes, so it may be
    kept); None when teleconsult does not give it."""
    try:
        return fhir_get("teleconsult", f"/fhir/Task/{tid}/_history/{version}", cached=True)
    except BackendError:
        return None


def _owner(task: dict[str, Any] | None) -> str:
    return str(((task or {}).get("owner") or {}).get("reference") or "")


RESENDS = 3  # times a step is sent again on a newer version that changed nothing the doctor saw


def as_the_page_showed(op: str, seen: dict[str, Any] | None, now: dict[str, Any]) -> bool:
    """Whether the consult ``now`` is, for the doctor's step ``op``, what the page showed (``seen``, the Task
    at the page's version): the same holder and the same state, or (for any step but starting it) accepted
    then started. teleconsult makes a Task version for every step of the consult: besides the ones that
    matter to a doctor between two patients (cancelled by the clinic, given to another doctor or taken over,
    rejected, completed, a question now open) there are the clinic's answer to a question (on hold, then back
    where it was), the SLA sweep's escalation to the on-duty lead, the doctor's own start in another tab, a
    backfill's tags. Those leave the holder and the state as they were. (Messages on the thread and the
    visit's reminders make no Task version at all.) ``seen`` unknown (teleconsult did not give that
    version): not the same, so nothing is sent on a guess."""
    if seen is None or _owner(seen) != _owner(now):
        return False
    was, state = seen.get("status"), now.get("status")
    return was == state or (op != "start" and (was, state) == ("accepted", "in-progress"))


_VERSION = re.compile(r"[0-9]{1,18}")


def page_version() -> str:
    """The Task version the page showed (its form's ``version``), ASCII digits; "" when the form has none (an
    older page) or posts anything else: '١' or '²' (``str.isdigit``) went into ``If-Match`` and the page was
    a 500 (the header unsendable)."""
    seen = request.form.get("version", "")
    return seen if _VERSION.fullmatch(seen) else ""


def _step_on_page(tid: str, op: str, send: Callable[[dict[str, str] | None, dict[str, Any] | None], Any], *,
                  version: str | None = None) -> dict[str, Any] | None:
    """Send a doctor's step on the Task version the page showed (``If-Match``; ``version``, else the form's
    ``version``): ``send(headers, task)`` with the headers to send it with, and the Task as read again when
    it is sent again (None the first time). None once it is taken.

    teleconsult answering 412 (the Task has a newer version), the Task is read again and compared with the
    version the page showed (:func:`as_the_page_showed`): the same holder and state, the step is sent
    again on the version now, and nothing is said (at most :data:`RESENDS` times, each judged against what
    the page showed, never against a version the doctor did not see); otherwise nothing is sent and the
    Task now is returned, for the page to say what changed (:func:`_taken_meanwhile`). The step is only
    ever taken on a version that was read and judged (``If-Match`` of it): a change landing between that
    read and the step is 412 again and judged again, so the lost-update protection stays whole.
    BackendError for any other refusal."""
    seen = version if version is not None else page_version()  # none: an older page
    headers = {"If-Match": f'W/"{seen}"'} if seen.isdigit() else None
    saw: dict[str, Any] | None = None
    now: dict[str, Any] | None = None
    for attempt in range(RESENDS + 1):
        try:
            send(headers, now)
            return None
        except BackendError as err:
            if not (_changed_since_page(err) and seen.isdigit()):
                raise
        now = _task_now(tid)
        if attempt == 0:
            saw = _task_as_seen(tid, seen)
        newer = str((now.get("meta") or {}).get("versionId") or "")
        if attempt == RESENDS or not newer.isdigit() or not as_the_page_showed(op, saw, now):
            return now
        headers = {"If-Match": f'W/"{newer}"'}
    return now


def _taken_meanwhile(tid: str, task: dict[str, Any] | None = None, *, accepting: bool = True,
                     forms: dict[str, Any] | None = None) -> Any:
    """After a step lost to another one (teleconsult's 412 on the page's version, :func:`_step_on_page`):
    the consult as it is now (read again), saying what changed that matters to the doctor, nothing changed
    (``forms``: what was typed, kept: in its form when the page still offers it, else shown as not sent).
    Cancelled by the clinic, rejected or completed meanwhile: said with who and when. Given to a doctor and
    not yet accepted, it says so ("vừa được chuyển cho"), not that they took it. A question now open: said.
    An acceptance whose own earlier click won (a double click, another tab): done, as if this one had."""
    forms = forms or {}
    if task is None:
        try:
            task = _task_now(tid)
        except BackendError as err:
            return _task_page(tid, 409, problem=backend_message(err), forms=forms)
    owner = _owner(task)
    mine = bool(g.user.practitioner) and owner == f"Practitioner/{g.user.practitioner}"
    status = task.get("status")
    if accepting and mine and status != "requested":  # sent in place (task.html): HX-Redirect
        return done_in_place(url_for("web.task_detail", tid=tid), "accepted")
    at = when((task.get("meta") or {}).get("lastUpdated"))
    if status == "cancelled":
        problem = gettext("The clinic cancelled this consult at %(when)s. Nothing was sent.", when=at)
    elif status == "rejected":
        by = rejected_by(task)
        problem = gettext("%(name)s rejected this consult at %(when)s. Nothing was sent.", name=party(by),
                          when=at) if by else gettext("This consult was rejected at %(when)s. Nothing was sent.",
                                                      when=at)
    elif status == "completed":
        problem = gettext("You completed this consult at %(when)s (its minutes are below). Nothing was sent again.",
                          when=at) if mine else \
            gettext("%(name)s completed this consult at %(when)s (its minutes are below). Nothing was sent.",
                    name=party(owner), when=at) if owner.startswith("Practitioner/") else \
            gettext("This consult was completed at %(when)s (its minutes are below). Nothing was sent.", when=at)
    elif owner.startswith("Practitioner/") and not mine and status == "requested":
        since = held_since(task)  # given to them (reassigned), not accepted: not "took it"
        problem = gettext("This consult was just given to %(name)s (at %(when)s). Nothing was changed.",
                          name=party(owner), when=when(since)) if since else \
            gettext("This consult was just given to %(name)s. Nothing was changed.", name=party(owner))
    elif owner.startswith("Practitioner/") and not mine:
        since = held_since(task)
        problem = gettext("Another doctor took this consult meanwhile: %(name)s (since %(when)s). Nothing was "
                          "changed; it is theirs now.", name=party(owner), when=when(since)) if since else \
            gettext("Another doctor took this consult meanwhile: %(name)s. Nothing was changed; it is theirs now.",
                    name=party(owner))
    elif status == "on-hold":
        problem = gettext("A question to the clinic was sent meanwhile (%(when)s): the consult waits for its "
                          "answer. Nothing was sent.", when=at)
    else:
        problem = gettext("This consult changed while you were looking at it. Nothing was changed: check it "
                          "below and try again.")
    # what was typed: in its form when the page still offers it, else shown as not sent (``kept``, task.html)
    kept = {name: typed_text(request.form, form) for name, form in forms.items()}
    if any(kept.values()):
        problem = " ".join((problem, gettext("What you typed is kept below.")))  # a call pybabel extract finds
    return _task_page(tid, 409, problem=problem, forms=forms, kept=kept)


def _refused_on_page(tid: str, op: str, forms: dict[str, Any]) -> Any:
    """A doctor's form refused by its own checks (a field left empty, too long): the page again with the form
    and its errors, 422. The consult changed meanwhile in a way that matters to the step (a question sent
    from another tab, cancelled, taken: :func:`as_the_page_showed` against the page's version), the page
    says what changed and keeps what was typed (:func:`_taken_meanwhile`): the page now may not offer the
    form, and the 422 page then showed neither the errors nor the typed text, nor why."""
    seen = page_version()
    if seen:
        try:
            now = _task_now(tid)
        except BackendError:
            now = {}
        newer = str((now.get("meta") or {}).get("versionId") or "")
        if newer.isdigit() and newer != seen and not as_the_page_showed(op, _task_as_seen(tid, seen), now):
            return _taken_meanwhile(tid, now, accepting=False, forms=forms)
    return _task_page(tid, 422, forms=forms)


def _changed_since_page(err: BackendError) -> bool:
    """teleconsult's 412: the step's ``If-Match`` (the page's version) is not the Task's version now."""
    return err.kind == "refused" and err.status == 412


def not_a_signer(tid: str, forms: dict[str, Any] | None = None) -> Any:
    """None for a user named by a Practitioner; else the page saying plainly why nothing was sent: the
    consult closed meanwhile (completed: by whom, when, :func:`_taken_meanwhile`), else that starting it,
    asking the clinic and signing its minutes are a hub doctor's (teleconsult's minutes name their chair,
    a Practitioner: an admin's were refused with the back-end's vague words). What was typed is kept."""
    if g.user.practitioner:
        return None
    forms = forms or {}
    try:
        task = _task_now(tid)
    except BackendError as err:
        return _task_page(tid, 409, problem=backend_message(err), forms=forms)
    if task.get("status") not in ("requested", "accepted", "in-progress", "on-hold"):
        return _taken_meanwhile(tid, task, accepting=False, forms=forms)
    kept = {name: typed_text(request.form, form) for name, form in forms.items()}
    problem = " ".join((no_signer_reason(task), gettext("Nothing was sent.")))
    return _task_page(tid, 403, problem=problem, forms=forms, kept=kept)


@bp.app_template_global()
def no_signer_reason(task: dict[str, Any]) -> str:
    """Why this user (no Practitioner) cannot start the consult, ask the clinic or sign its minutes."""
    owner = _owner(task)
    if owner.startswith("Practitioner/"):
        return gettext("Your account names no doctor (no Practitioner): starting this consult, asking the clinic "
                       "and signing its minutes are for the hub's doctor. %(name)s holds it.",
                       name=party(owner))
    return gettext("Your account names no doctor (no Practitioner): starting this consult, asking the clinic and "
                   "signing its minutes are for the hub's doctor.")


@bp.route("/tasks/<tid>/start", methods=["POST"])
@login_required("doctor")
def task_start(tid: str) -> Any:
    """The specialist begins work on the accepted consult (teleconsult's ``$start``): the Task goes
    in-progress. Not the video visit's start (that is its time; the doctor joins by its link). Sent in place
    (task.html's ``#consult-start``): done, HX-Redirect; refused, the whole page saying why (:func:`in_place_answer`).
    Sent again after its answer was lost, the page's version is 412 and the consult read again is this doctor's in
    progress: done, as the first was (one ``$start``)."""
    refused = not_a_signer(tid)
    if refused is not None:
        return refused
    try:
        changed = _step_on_page(tid, "start", lambda headers, _now: _op(tid, "start", None, headers=headers))
    except BackendError as err:
        return _task_page(tid, 409, problem=backend_message(err))
    if changed is not None:
        if changed.get("status") == "in-progress" and _owner(changed) == f"Practitioner/{g.user.practitioner}":
            # started already: another tab, or this form sent again after its answer was lost on the way back
            return done_in_place(url_for("web.task_detail", tid=tid), "started")
        return _taken_meanwhile(tid, changed, accepting=False)
    return done_in_place(url_for("web.task_detail", tid=tid), "started")


@bp.route("/tasks/<tid>/reject", methods=["POST"])
@login_required("doctor")
def task_reject(tid: str) -> Any:
    form = ReasonForm()
    if not form.validate_on_submit():
        return _refused_on_page(tid, "reject", {"reject_form": form})
    step = confirmation("reject")
    if step is not None:  # nothing sent: the page with the step, the reason kept
        return _task_page(tid, confirming_status(step), forms={"reject_form": form}, confirming=step)
    params = [{"name": "reason", "valueString": form.reason.data}]
    try:
        changed = _step_on_page(tid, "reject", lambda headers, _now: _op(tid, "reject", params, headers=headers))
    except BackendError as err:
        return _task_page(tid, 409, **refusal_said(err, "reject_problem"), forms={"reject_form": form})
    if changed is not None:
        return _taken_meanwhile(tid, changed, accepting=False, forms={"reject_form": form})
    return done_in_place(url_for("web.worklist"), "rejected")


@bp.route("/tasks/<tid>/reassign", methods=["POST"])
@login_required("doctor")
def task_reassign(tid: str) -> Any:
    """Give the consult to another doctor of the hub, once confirmed; sent in place (task.html's
    ``#consult-reassign``). Sent with ``If-Match`` (the version the first page showed) and an
    ``Idempotency-Key`` of the form's key, the doctor and that version: its answer lost on the way back and
    the form sent again, teleconsult answers as the first time and the consult is given once."""
    form = form_key(ReassignForm())
    form.practitioner.choices = reassign_choices(_hub_doctors(g.user.facility, g.user.practitioner))
    if not form.validate_on_submit():
        return _task_page(tid, 422, forms={"reassign_form": form})
    step = confirmation("reassign")
    if step is not None:
        # the doctor chosen is said by name and confirmed by the shared step (confirming.py), which sends the
        # same choice and the version the first page showed: a consult changed since in a way that matters is
        # not given
        seen = page_version()
        if seen:
            try:
                task = _task_now(tid)
            except BackendError as err:
                return _task_page(tid, 409, **refusal_said(err, "reassign_problem"), forms={"reassign_form": form})
            if str((task.get("meta") or {}).get("versionId") or "") != seen and \
                    not as_the_page_showed("reassign", _task_as_seen(tid, seen), task):
                return _taken_meanwhile(tid, task, accepting=False)
        name = dict(form.practitioner.choices).get(form.practitioner.data, form.practitioner.data)
        return _task_page(tid, confirming_status(step), forms={"reassign_form": form}, confirming=step,
                          reassign_to={"ref": form.practitioner.data, "name": name, "version": seen})
    params = [{"name": "practitioner", "valueReference": {"reference": form.practitioner.data}}]

    def give(headers: dict[str, str] | None, _now: Any) -> None:
        # the key names the version sent on (If-Match): a step sent again on a newer one is a new request
        matched = (headers or {}).get("If-Match", "")
        key = request_key(form.key.data, "reassign", tid, form.practitioner.data, matched)
        _op(tid, "reassign", params, headers={**(headers or {}), "Idempotency-Key": key})

    try:
        changed = _step_on_page(tid, "reassign", give)
    except BackendError as err:
        return _task_page(tid, 409, **refusal_said(err, "reassign_problem"), forms={"reassign_form": form})
    if changed is not None:  # accepted or given meanwhile: not given on a stale confirmation
        return _taken_meanwhile(tid, changed, accepting=False)
    # the Practitioner's id, never a name: the worklist says the name it looks up (reassigned_to)
    return done_in_place(url_for("web.worklist"), "reassigned", form.practitioner.data.rsplit("/", 1)[-1])


@bp.route("/tasks/<tid>/request-info", methods=["POST"])
@login_required("doctor")
def task_request_info(tid: str) -> Any:
    form = QuestionForm()
    refused = not_a_signer(tid, {"question_form": form})
    if refused is not None:
        return refused
    if not form.validate_on_submit():
        return _refused_on_page(tid, "request-info", {"question_form": form})
    params = [{"name": "question", "valueString": form.question.data}]
    try:
        changed = _step_on_page(tid, "request-info",
                                lambda headers, _now: _op(tid, "request-info", params, headers=headers))
    except BackendError as err:
        return _task_page(tid, 409, **refusal_said(err, "question_problem"), forms={"question_form": form})
    if changed is not None:
        return _taken_meanwhile(tid, changed, accepting=False, forms={"question_form": form})
    return done_in_place(url_for("web.task_detail", tid=tid), "asked")


@bp.route("/tasks/<tid>/message", methods=["POST"])
@login_required("doctor")
def task_message(tid: str) -> Any:
    """The doctor's message to the clinic on the consult's thread (the Task's state stays); the page
    again with the text kept on error."""
    form = MessageForm()  # sent in place, its box comes back with its errors or the refusal (in_place_answer)
    if not form.validate_on_submit():
        return _task_page(tid, 422, forms={"message_form": message_form(form)})
    try:
        send_message(tid, form)
    except BackendError as err:
        return _task_page(tid, 409 if err.status == 409 else 422,
                          **refusal_said(err, "message_problem"), forms={"message_form": message_form(form)})
    return done_in_place(url_for("web.task_detail", tid=tid, _anchor="consult-thread"), "sent")


SLOTS_SHOWN = 120  # free times a search shows at once (a week of 30-minute slots, 7 hours a day: 98)


def find_proposals(data: dict[str, Any], form: FindSlotForm, later: datetime | None = None,
                   count: int = SLOTS_SHOWN + 1) -> list[dict[str, Any]]:
    """Free slots (teleconsult's ``Appointment/$find``, at most ``count``, earliest first) of the
    signed-in doctor (or, for a user who is no practitioner, the hub's) in the days ``form`` names
    (from ``later`` on, when given: the "later times" of a search), proposed for the consult ``data``;
    the same for booking a first visit and for moving one. A BackendError when teleconsult refuses."""
    first = datetime.combine(form.start.data, time(0, 0), TZ)
    end = first + timedelta(days=form.days.data or 7)
    start = later if later is not None and first < later < end else first
    params = [{"name": "start", "valueDateTime": start.isoformat()}, {"name": "end", "valueDateTime": end.isoformat()},
              {"name": "_count", "valueInteger": count}]
    if g.user.practitioner:
        me = {"reference": f"Practitioner/{g.user.practitioner}"}
        params.append({"name": "practitioner", "valueReference": me})
    if data["sr"]:
        sr_ref = {"reference": f"ServiceRequest/{data['sr']['id']}"}
        params.append({"name": "service-request", "valueReference": sr_ref})
        params.append({"name": "patient-reference", "valueReference": data["sr"]["subject"]})
    found = fhir_post("teleconsult", "/fhir/Appointment/$find", {"resourceType": "Parameters", "parameter": params},
                      idempotent=False, reads=True)  # a search: the session is not written (backend.call)
    return entries(found, "Appointment")


def page_of_times(proposals: list[dict[str, Any]], shown: int = SLOTS_SHOWN) -> tuple[list[dict[str, Any]], str | None]:
    """The free times a search shows (at most ``shown``) and, when $find had more, the start of the
    first one not shown (the "later times" link searches from there). The cut falls between two start
    times: times at the same instant (several schedules, for a user who is no practitioner) are all
    on this page or all on the next."""
    if len(proposals) <= shown:
        return proposals, None
    later = proposals[shown].get("start")
    page = [a for a in proposals[:shown] if a.get("start") != later]
    return (page, later) if page else (proposals[:shown], None)


def days_of(proposals: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The free times by day (in Vietnam), in order: each day's date and weekday code (``mon``...)
    and its times, each with its position in ``proposals`` (the deadline marks follow it)."""
    out: list[dict[str, Any]] = []
    for i, a in enumerate(proposals):
        begins = parse_instant(a.get("start"))
        if begins is None:
            continue
        local = begins.astimezone(TZ)
        if not out or out[-1]["date"] != local.date():
            out.append({"date": local.date(), "weekday": DAYS[local.weekday()], "times": []})
        out[-1]["times"].append({"i": i, "a": a, "at": local})
    return out


@bp.route("/tasks/<tid>/slots")
@login_required("doctor")
def task_slots(tid: str) -> Any:
    """Free slots for the consult's video visit: to book one, or (a visit is booked) to move it there;
    the page offers the times, by day, with the button that fits the visit's state. A GET (the
    search's fields in the query string): the page can be bookmarked, reloaded and come back to
    with the browser's Back after booking, without resending a form. ``later`` (an instant inside
    the days searched): the times from then on, the "later times" link of a search that had more.

    The booking form asks for its first week's times itself once the consult's page is shown (task.html: htmx,
    ``hx-trigger="load"`` into ``#free-times``): the page is not kept waiting for ``$find``; that request's answer
    is the page with the times in that box, or why there are none said in it (teleconsult slow or down, the
    consult no longer open to booking: 200, htmx swaps only a 2xx), the search's form there for another try."""
    if "start" not in request.args:
        return redirect(url_for("web.task_detail", tid=tid, _anchor="visit"))
    in_box = is_htmx() and request.headers.get("HX-Target") == "free-times"  # the booking form's own first search
    try:
        data = consult_bundle(tid)
    except BackendError as err:
        if not in_box:
            raise  # the page saying teleconsult did not answer (web.__init__'s handler)
        note = gettext("The free times could not be found just now: %(why)s Press “%(find)s” to try again.",
                       why=backend_message(err), find=gettext("Find free times"))
        return Markup('<div id="free-times"><p class="alert warn" role="status" data-testid="free-times-problem">'
                      '{}</p></div>').format(note)  # the box alone, the page around it as it was
    unbookable = no_booking_now(data["task"])
    if unbookable:  # the page offers no search then (nor shows its errors): said why, never a bare page
        if in_box:
            return _task_page(tid, 200, free_times_problem=unbookable)
        return _task_page(tid, 409, problem=unbookable)
    form = FindSlotForm(request.args)
    if not form.validate():
        return _task_page(tid, 200 if in_box else 422, forms={"find_form": form})
    first = datetime.combine(form.start.data, time(0, 0), TZ)
    later = parse_instant(request.args.get("later"))
    if later is not None and not first < later < first + timedelta(days=form.days.data):
        later = None  # not inside the days searched (a link edited by hand): the search from its first day
    try:
        found = _free_times(tid, data, form, later)
    except BackendError as err:
        if in_box:  # said in the box, the rest of the page as it was
            return _task_page(tid, 200, free_times_problem=backend_message(err), forms={"find_form": form})
        return _task_page(tid, page_status(err), problem=backend_message(err), forms={"find_form": form})
    return _task_page(tid, **found, searched_from=later, forms={"find_form": form})


def _free_times(tid: str, data: dict[str, Any], form: FindSlotForm, later: datetime | None = None) -> dict[str, Any]:
    """The page's free times for the search ``form`` (from ``later`` on): the proposals shown, by day, and the
    "later times" link when $find had more. A BackendError when teleconsult refuses."""
    proposals, more = page_of_times(find_proposals(data, form, later))
    later_url = url_for("web.task_slots", tid=tid, start=form.start.data.strftime("%d/%m/%Y"),
                        days=form.days.data, later=more) if more else None
    return {"proposals": proposals, "slot_days": days_of(proposals), "later_url": later_url}


def no_booking_now(task: dict[str, Any]) -> str:
    """Why the consult's free times are not searched now ("" when they are: accepted or in progress, the
    states the page offers the search in): a consult still to accept, one waiting for the clinic's answer,
    one closed."""
    status = task.get("status")
    if status in ("accepted", "in-progress"):
        return ""
    if status == "requested":
        return gettext("Accept the consult first: free times for its video visit are found once it is accepted "
                       "(Triage, below).")
    if status == "on-hold":
        return gettext("A question to the clinic is open: find free times once the clinic has answered and the "
                       "consult goes on.")
    return gettext("This consult is closed (%(status)s): no video visit is booked for it.",
                   status=status_label(str(status or "")))


def posted_key(name: str = "key") -> str | None:
    """The key a form posted (its ``name`` field), when it is one as the pages make it (``forms.FORM_KEY``);
    else None (an older page, anything else posted)."""
    key = request.form.get(name, "") if request.method == "POST" else ""
    return key if FORM_KEY.fullmatch(key) else None


def _chosen_time(data: dict[str, Any]) -> dict[str, Any] | None:
    """The Appointment proposal for the time the doctor picked (``slot``, ``start``, ``end`` of a
    $find proposal, posted back by its button): the patient, this doctor, the consult's request."""
    slot = request.form.get("slot", "")
    start, end = request.form.get("start", ""), request.form.get("end", "")
    if not slot or not start or not end or data["sr"] is None:
        return None
    participants = [{"actor": {"reference": f"Practitioner/{g.user.practitioner}"}, "status": "needs-action"}] \
        if g.user.practitioner else []
    participants.insert(0, {"actor": data["sr"]["subject"], "status": "needs-action"})
    return {"resourceType": "Appointment", "status": "proposed", "start": start, "end": end,
            "slot": [{"reference": f"Slot/{slot}"}], "participant": participants,
            "basedOn": [{"reference": f"ServiceRequest/{data['sr']['id']}"}]}


def _time_asked() -> tuple[str, ...]:
    """What a free time's button asks (its slot, start and end): with the page's key, its request's key."""
    return tuple(request.form.get(k, "") for k in ("slot", "start", "end"))


def _search_again(tid: str, data: dict[str, Any], message: str, **ctx: Any) -> Any:
    """A free time refused because it was taken meanwhile (teleconsult's 409): ``message`` said in the visit's
    box (sent in place; above the page otherwise) with the free times found again for the search the page
    showed (the button carries it: ``search_start``, ``search_days``; else from today, a week), so the next
    step, another time, is one press away; the rest of the page as it was."""
    from werkzeug.datastructures import MultiDict

    form = FindSlotForm(formdata=MultiDict({"start": request.form.get("search_start", ""),
                                            "days": request.form.get("search_days", "")}))
    if not form.validate():
        form = FindSlotForm(formdata=None, start=today())
    try:
        found = _free_times(tid, data, form)
    except BackendError:
        found = {}  # the search's form is there to try again
    return _task_page(tid, 409, **refusal_said(message, "visit_problem"), **found,
                      forms={"find_form": form, **ctx.pop("forms", {})}, **ctx)


@bp.route("/tasks/<tid>/book", methods=["POST"])
@login_required("doctor")
def task_book(tid: str) -> Any:
    """Hold the chosen slot, then book it (two operations: a lost race says so at the hold, with the free times
    found again). Sent in place (task.html's ``#visit``); each operation with an ``Idempotency-Key`` of the
    page's key (``visit_key``) and what it asks: its answer lost on the way back and the time pressed again,
    teleconsult answers both as the first time and the visit is booked once."""
    data = consult_bundle(tid)
    proposal = _chosen_time(data)
    if proposal is None:
        return _task_page(tid, 422, problem=gettext("Choose a time first."))
    key = posted_key() or uuid.uuid4().hex
    appt = None
    try:
        held = fhir_post("teleconsult", "/fhir/Appointment/$hold", {
            "resourceType": "Parameters", "parameter": [{"name": "appointment-resource", "resource": proposal}]},
            headers={"Idempotency-Key": request_key(key, "hold", tid, *_time_asked())})
        appt = next(iter(entries(held, "Appointment")), None)
        if appt is None or appt.get("status") != "pending":
            return _search_again(tid, data, gettext("This time was just taken. Choose another."))
        fhir_post("teleconsult", "/fhir/Appointment/$book", {"resourceType": "Parameters", "parameter": [
            {"name": "appointment-reference", "valueReference": {"reference": f"Appointment/{appt['id']}"}}]},
            headers={"Idempotency-Key": request_key(key, "book", tid, str(appt["id"]))})
    except BackendError as err:
        return _book_refused(tid, data, err, (appt or {}).get("id"))
    return done_in_place(url_for("web.task_detail", tid=tid), "booked")


def _book_refused(tid: str, data: dict[str, Any], err: BackendError, held: str | None) -> Any:
    """The page after teleconsult refused a booking: a 409 while the consult has an active visit (booked
    from another tab or by another user meanwhile: teleconsult keeps one a consult) says when that
    visit is and to move or cancel it; the time taken meanwhile (a conflict) says so with the free times
    found again; anything else in the portal's words, in the visit's box when sent in place."""
    if err.kind == "refused" and err.status == 409:
        appt = consult_bundle(tid)["appointment"]  # read again: the failed write forgot the kept answers
        if appt is not None and appt.get("status") in ACTIVE and appt.get("id") != held:
            return _task_page(tid, 409, problem=gettext(
                "This consult already has a video visit, at %(when)s: no other time was booked. Move or cancel "
                "that visit instead.", when=when(appt.get("start"))))
        if err.code in ("conflict", "not-found"):  # the slot held, booked or gone meanwhile: said in its words
            return _search_again(tid, data, backend_message(err))
        return _task_page(tid, 409, problem=backend_message(err))  # the consult closed meanwhile: the page now
    return _task_page(tid, page_status(err), **refusal_said(err, "visit_problem"))


# ------------------------------------------------------------------ changing a booked visit

ACTIVE = ("booked", "pending")


def _visit_stale(data: dict[str, Any], aid: str) -> bool:
    """Whether the visit ``aid`` the doctor's page showed is no longer the consult's active visit: someone
    else moved or cancelled it meanwhile, or this very form did (its answer lost on the way back)."""
    appt = data["appointment"]
    return not (appt is not None and appt.get("id") == aid and appt.get("status") in ACTIVE)


def _changed_meanwhile(appt: dict[str, Any] | None) -> str:
    if appt is not None and appt.get("status") in ACTIVE:
        return gettext("This visit was changed by someone else meanwhile: it is now at %(when)s. Nothing was "
                       "changed; look at it again below.", when=when(appt.get("start")))
    return gettext("This visit was cancelled or closed by someone else meanwhile. Nothing was changed; the "
                   "page shows it as it is now.")


def _visit_op(aid: str, op: str, body: dict[str, Any], key: str, *asked: str) -> dict[str, Any]:
    """teleconsult's ``op`` on the visit ``aid``, with an ``Idempotency-Key`` of the form's ``key`` and what
    it asks (``asked``): sent again, teleconsult answers as the first time and changes nothing twice. The
    Appointment it answers with."""
    return fhir_post("teleconsult", f"/fhir/Appointment/{aid}/${op}", body,
                     headers={"Idempotency-Key": request_key(key, f"visit-{op}", aid, *asked)})


def _done_already(data: dict[str, Any], done: Callable[[dict[str, Any]], bool]) -> bool:
    """The visit the form names is no longer the consult's active one (:func:`_visit_stale`): whether it is as
    the form asked (``done``, of the consult's visit now), as when this very form's answer was lost on the way back
    and the form is sent again. Read, nothing sent: the step is said done, not sent a second time (the form's
    ``Idempotency-Key`` covers a form sent again while its first request is still on its way)."""
    appt = data["appointment"]
    return appt is not None and done(appt)


def _visit_refused(tid: str, aid: str, err: BackendError, still_active: str,
                   data: dict[str, Any] | None = None, **ctx: Any) -> Any:
    """The page after teleconsult refused a change of the visit ``aid``: a 409 on a visit that is
    still the active one is ``still_active`` (the slot taken: with ``data``, the free times found again;
    not started yet), said in the visit's box when sent in place; on one that changed meanwhile, what it
    is now (the whole page); anything else (no answer, not allowed) in the portal's words."""
    if err.kind == "refused" and err.status == 409:
        appt = consult_bundle(tid)["appointment"]  # read again: the failed write forgot the kept answers
        if appt is not None and appt.get("id") == aid and appt.get("status") in ACTIVE:
            if data is not None:
                return _search_again(tid, data, still_active, **ctx)
            return _task_page(tid, 409, **refusal_said(still_active, "visit_problem"), **ctx)
        return _task_page(tid, 409, problem=_changed_meanwhile(appt), **ctx)
    # a 404 is a 404, a 403 a 403
    return _task_page(tid, page_status(err), **refusal_said(err, "visit_problem"), **ctx)


@bp.route("/tasks/<tid>/visit/move", methods=["POST"])
@login_required("doctor")
def visit_move(tid: str) -> Any:
    """Move the booked visit to the free time the doctor picked (teleconsult's ``$reschedule``): the
    new time is booked and the old one cancelled, its slot free again; the new time taken meanwhile:
    409, nothing changed, the free times found again. Sent in place (``#visit``) with an ``Idempotency-Key``
    of the page's key and the time: its answer lost and the time pressed again, the visit is moved once."""
    aid = request.form.get("appointment", "")
    data = consult_bundle(tid)
    proposal = _chosen_time(data)
    body = {"resourceType": "Parameters", "parameter": [{"name": "appointment-resource", "resource": proposal}]}
    if _visit_stale(data, aid):
        slot = f"Slot/{request.form.get('slot', '')}"  # the visit now at the time pressed: moved there
        if proposal is not None and _done_already(data, lambda a: a.get("status") in ACTIVE and any(
                (s or {}).get("reference") == slot for s in a.get("slot") or [])):
            return done_in_place(url_for("web.task_detail", tid=tid), "visit", "moved")
        return _task_page(tid, 409, problem=_changed_meanwhile(data["appointment"]))
    if proposal is None:
        return _task_page(tid, 422, problem=gettext("Choose a time first."))
    try:
        _visit_op(aid, "reschedule", body, posted_key() or uuid.uuid4().hex, *_time_asked())
    except BackendError as err:
        return _visit_refused(tid, aid, err, gettext(
            "This time was just taken by someone else. The visit stays at %(when)s; choose another time.",
            when=when(data["appointment"].get("start"))), data)
    return done_in_place(url_for("web.task_detail", tid=tid), "visit", "moved")


@bp.route("/tasks/<tid>/visit/cancel", methods=["POST"])
@login_required("doctor")
def visit_cancel(tid: str) -> Any:
    """Cancel the booked visit with a reason (teleconsult's ``$cancel``), once confirmed (the shared step,
    confirming.py: the first press sends nothing): its slot is free again and the page offers free times
    to book another visit. Sent in place (``#visit``) with an ``Idempotency-Key`` of the form's key and the
    reason: its answer lost and the form sent again, the visit is cancelled once and the page says so."""
    form = form_key(VisitCancelForm(prefix="visit"))
    aid = request.form.get("appointment", "")
    if not form.validate_on_submit():
        return _task_page(tid, 422, forms={"visit_cancel_form": form})
    data = consult_bundle(tid)
    reason = form.reason.data or ""
    body = {"resourceType": "Parameters", "parameter": [{"name": "reason", "valueString": reason}]}
    step = confirmation("visit-cancel")
    if _visit_stale(data, aid):
        if step is None and _done_already(data, lambda a: a.get("id") == aid and a.get("status") == "cancelled"
                                          and (a.get("cancelationReason") or {}).get("text") == reason[:500]):
            return done_in_place(url_for("web.task_detail", tid=tid), "visit", "cancelled")
        return _task_page(tid, 409, problem=_changed_meanwhile(data["appointment"]))
    if step is not None:  # nothing sent: the page with the step, the reason kept
        return _task_page(tid, confirming_status(step), forms={"visit_cancel_form": form}, confirming=step)
    try:
        _visit_op(aid, "cancel", body, str(form.key.data), reason)
    except BackendError as err:
        return _visit_refused(tid, aid, err, _changed_meanwhile(None), forms={"visit_cancel_form": form})
    return done_in_place(url_for("web.task_detail", tid=tid), "visit", "cancelled")


@bp.route("/tasks/<tid>/visit/noshow", methods=["POST"])
@login_required("doctor")
def visit_noshow(tid: str) -> Any:
    """The patient did not attend (teleconsult's ``$noshow``; the page offers it once the visit's time
    has begun, and teleconsult refuses it before): the clinic sees it and is asked for a new time. It cannot
    be undone: confirmed first (the shared step, confirming.py; the first press sends nothing). Sent in place
    (``#visit``) with an ``Idempotency-Key`` of the page's key: its answer lost and sent again, marked once."""
    aid = request.form.get("appointment", "")
    data = consult_bundle(tid)
    body = {"resourceType": "Parameters"}
    if _visit_stale(data, aid):
        if confirmation("visit-noshow") is None and \
                _done_already(data, lambda a: a.get("id") == aid and a.get("status") == "noshow"):
            return done_in_place(url_for("web.task_detail", tid=tid), "visit", "noshow")
        return _task_page(tid, 409, problem=_changed_meanwhile(data["appointment"]))
    # no undo: the first press sends nothing, the page asks to confirm; a visit not begun yet is not asked
    # about (teleconsult refuses it, said below)
    begun = parse_instant(data["appointment"].get("start"))
    step = confirmation("visit-noshow") if begun is not None and begun <= datetime.now(TZ) else None
    if step is not None:
        return _task_page(tid, confirming_status(step), confirming=step)
    try:
        _visit_op(aid, "noshow", body, posted_key() or uuid.uuid4().hex)
    except BackendError as err:
        return _visit_refused(tid, aid, err, gettext(
            "The visit has not begun yet (it starts at %(when)s): mark the patient absent only after that.",
            when=when(data["appointment"].get("start"))))
    return done_in_place(url_for("web.task_detail", tid=tid), "visit", "noshow")


def minutes_start(task: dict[str, Any], now: datetime) -> datetime:
    """When the consult the minutes record began: the Task's ``executionPeriod.start``, which
    teleconsult sets when the doctor starts work on it ("Bắt đầu xử lý ca", ``$start``) and, for one never
    started, when it was accepted; never later than ``now`` (nor, unknown, other than ``now``). Not
    the booked visit's time: minutes signed before a visit booked for later are dated today."""
    begun = parse_instant((task.get("executionPeriod") or {}).get("start"))
    return min(begun, now) if begun is not None else now


CHAIR_ROLE = "chủ trì"  # the chair's role when the participants text gives none (the record is Vietnamese first)


def chair_role(participants: str, chair: str) -> str:
    """The ``role`` of the minutes' one participant, the chair (named beside it): the chair's own role
    from the participants text ("<name> — <role>" entries, one a line or split by ";"), then the others'
    entries as typed; the chair's name is not said again (the record reads "<chair> — <role>; <others>").
    The chair's entry is the one naming the same person whatever title either carries ("BS. Nguyễn Văn An"
    for the chair "BS.CKII Nguyễn Văn An": ``same_person``). A chair the text does not name, or names with
    no role, is "chủ trì"."""
    entries = [e.strip() for line in participants.splitlines() for e in line.split(";") if e.strip()]
    own, others = "", []
    for entry in entries:
        name, role = name_and_role(entry)
        if not own and same_person(name, chair):
            own = role or CHAIR_ROLE
            continue
        others.append(entry)
    return "; ".join([own or CHAIR_ROLE, *others])


def minutes_parameters(form: MinutesForm, data: dict[str, Any], user: Any) -> dict[str, Any]:
    """teleconsult's ``$complete`` Parameters from the signed ``form``: the time is the actual one
    (from :func:`minutes_start` to now, Vietnam's offset), each diagnosis a ``conclusion`` in the
    order written."""
    appt = data.get("appointment")
    now = datetime.now(TZ).replace(microsecond=0)
    task = data["task"]
    start = minutes_start(task, now).astimezone(TZ).isoformat(timespec="seconds")
    end = now.isoformat(timespec="seconds")
    sites = []
    for ref in ((task.get("owner") or {}).get("reference"), (task.get("requester") or {}).get("reference")):
        if ref and ref.startswith("Organization/"):
            sites.append({"name": "site", "valueReference": {"reference": ref}})
    if user.facility and not any(s["valueReference"]["reference"] == f"Organization/{user.facility}" for s in sites):
        sites.append({"name": "site", "valueReference": {"reference": f"Organization/{user.facility}"}})
    chair = f"Practitioner/{user.practitioner}" if user.practitioner else ""
    params: list[dict[str, Any]] = [
        {"name": "start", "valueDateTime": start}, {"name": "end", "valueDateTime": end}, *sites,
        {"name": "participant", "part": [
            {"name": "who", "valueReference": {"reference": chair, "display": form.chair.data}},
            {"name": "role", "valueString": chair_role(form.participants.data, form.chair.data)}]},
        {"name": "history", "valueString": form.history.data},
        {"name": "findings-clinical", "valueString": form.findings.data},
        *({"name": "conclusion", "valueCoding": {"system": icd10.SYSTEM, "code": c.code, "display": c.vi}}
          for c in form.codes),
        {"name": "conclusion-text", "valueString": form.conclusion.data},  # the conclusion as written
        {"name": "recommendations", "valueString": form.recommendations.data},
        {"name": "chair", "valueReference": {"reference": chair, "display": form.chair.data}},
    ]
    if form.discussion.data:
        params.append({"name": "discussion", "valueString": form.discussion.data})
    if form.secretary.data:  # one of the participants (MinutesForm.validate_secretary), by the name typed
        params.append({"name": "secretary", "valueReference": {"display": form.secretary.data}})
    if appt and appt.get("status") in (*ACTIVE, "fulfilled"):  # the visit the minutes are of; not one cancelled
        params.append({"name": "appointment", "valueReference": {"reference": f"Appointment/{appt['id']}"}})
    return {"resourceType": "Parameters", "parameter": params}


@bp.route("/icd10/diagnoses")
@login_required("doctor")
def diagnosis_search() -> Any:
    """Suggestions for the minutes' diagnoses (htmx): for the words being typed at the end of the field
    (icd10.typed_term); a pick is added to the codes already there (app.js, ``data-append``)."""
    typed = request.args.get("diagnosis", "")
    query = icd10.typed_term(typed)
    return render_template("_icd10.html", hits=icd10.search(query), lang=select_locale(), target="diagnosis",
                           query=query, append=True, typed=typed)


@bp.route("/minutes/secretary-names", methods=["POST"])
@login_required("doctor")
def secretary_names() -> Any:
    """The secretary box's suggestions (htmx) for the participants and the chair as they are typed now: the
    datalist the page drew follows the participants box (``MinutesForm.people``, the chair's aside). POSTed,
    its fields named (``hx-params``): the names typed go in no URL."""
    participants = request.form.get("participants", "")[:PARTICIPANTS_MAX]
    return render_template("_secretary_names.html", names=minutes_people(participants,
                                                                         request.form.get("chair", "")[:200]))


@bp.route("/tasks/<tid>/complete", methods=["POST"])
@login_required("doctor")
def task_complete(tid: str) -> Any:
    form = MinutesForm()
    refused = not_a_signer(tid, {"minutes_form": form})  # no chair to name: never sent to be refused vaguely
    if refused is not None:
        return refused
    if not form.validate_on_submit():  # each diagnosis a code of the ICD-10 list (MinutesForm.validate_diagnosis)
        return _refused_on_page(tid, "complete", {"minutes_form": form})
    role = chair_role(form.participants.data or "", form.chair.data or "")
    if len(role) > PARTICIPANTS_MAX:  # as sent (one entry a line becomes "; "): said here, never cut there
        form.participants.errors = [gettext(
            "The participants come to %(n)d characters as the minutes write them (at most %(max)d). Shorten "
            "the list.", n=len(role), max=PARTICIPANTS_MAX)]
        return _refused_on_page(tid, "complete", {"minutes_form": form})
    data = consult_bundle(tid)

    def sign(headers: dict[str, str] | None, now: dict[str, Any] | None) -> None:
        # sent again on a newer version: the minutes' start from the Task as it is now (started meanwhile)
        fhir_post("teleconsult", f"/fhir/Task/{tid}/$complete",
                  minutes_parameters(form, {**data, "task": now} if now else data, g.user), headers=headers)

    try:
        changed = _step_on_page(tid, "complete", sign)
    except BackendError as err:
        if err.kind == "refused":  # closed meanwhile (a page without its version): said with who and when
            try:
                now = _task_now(tid)
            except BackendError:
                now = {}
            if now.get("status") in ("completed", "cancelled", "rejected"):
                return _taken_meanwhile(tid, now, accepting=False, forms={"minutes_form": form})
        return _task_page(tid, 409, **refusal_said(err, "minutes_problem"), forms={"minutes_form": form})
    if changed is not None:  # the minutes kept: the page again carries the version to sign on
        return _taken_meanwhile(tid, changed, accepting=False, forms={"minutes_form": form})
    return done_in_place(url_for("web.task_detail", tid=tid), "done")


# ------------------------------------------------------------------ weekly availability and leave

def _my_schedule() -> dict[str, Any] | None:
    if not g.user.practitioner:
        return None
    bundle = fhir_get("teleconsult", "/fhir/Schedule", {"actor": f"Practitioner/{g.user.practitioner}", "_count": "1"})
    return next(iter(entries(bundle, "Schedule")), None)


def schedule_summary(schedule: dict[str, Any] | None) -> dict[str, Any]:
    out: dict[str, Any] = {"windows": [], "slot_minutes": None, "leave": []}
    for ext in (schedule or {}).get("extension") or []:
        if ext.get("url") == EXT_AVAILABLE:
            parts = ext.get("extension") or []
            out["windows"].append({
                "days": [p.get("valueCode") for p in parts if p.get("url") == "daysOfWeek"],
                "start": next((p.get("valueTime") for p in parts if p.get("url") == "availableStartTime"), ""),
                "end": next((p.get("valueTime") for p in parts if p.get("url") == "availableEndTime"), "")})
        elif ext.get("url") == EXT_SLOT_MINUTES:
            out["slot_minutes"] = ext.get("valueInteger")
        elif ext.get("url") == EXT_NOT_AVAILABLE:
            parts = ext.get("extension") or []
            out["leave"].append({
                "description": next((p.get("valueString") for p in parts if p.get("url") == "description"), ""),
                "during": next((p.get("valuePeriod") for p in parts if p.get("url") == "during"), {})})
    return out


def _leave_entry(exts: list[dict[str, Any]], start: str, end: str) -> dict[str, Any] | None:
    """The leave extension of the period ``start``–``end`` (as stored: the page posts them back)."""
    for ext in exts:
        if ext.get("url") != EXT_NOT_AVAILABLE:
            continue
        during = next((p.get("valuePeriod") for p in ext.get("extension") or [] if p.get("url") == "during"), None)
        if isinstance(during, dict) and start and during.get("start") == start and during.get("end") == end:
            return ext
    return None


def _fhir_instant(dt: datetime) -> str:
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def booked_in(schedule: dict[str, Any], start: datetime, end: datetime) -> list[dict[str, Any]]:
    """The visits booked (or held) with the schedule's doctor starting between ``start`` and ``end``
    (teleconsult's Appointment search: ``practitioner``, ``date``, ``status``), earliest first: each
    with its time, its patient as the lists show them and its consult's Task id (the doctor's consult
    page, where it is moved or cancelled; None when the Task is not found). Leave does not cancel
    them: a doctor adding leave over them is told, before and after. A BackendError when teleconsult
    does not answer the search."""
    doctors = [a["reference"] for a in schedule.get("actor") or []
               if str((a or {}).get("reference") or "").startswith("Practitioner/")]
    if not doctors:
        return []
    bundle = fhir_get("teleconsult", "/fhir/Appointment", [
        ("practitioner", ",".join(doctors)), ("date", f"ge{_fhir_instant(start)}"),
        ("date", f"le{_fhir_instant(end)}"), ("status", "booked,pending"), ("_count", "100")])
    appts = sorted((a for a in entries(bundle, "Appointment") if a.get("status") in ACTIVE),
                   key=lambda a: parse_instant(a.get("start")) or start)
    srs = sorted({r["reference"] for a in appts for r in a.get("basedOn") or []
                  if str(r.get("reference") or "").startswith("ServiceRequest/")})
    tasks: dict[str, str] = {}
    if srs:
        found = fhir_get("teleconsult", "/fhir/Task", {"based-on": ",".join(srs), "_count": str(2 * len(srs))})
        for t in entries(found, "Task"):
            for r in t.get("basedOn") or []:
                tasks.setdefault(str(r.get("reference")), str(t.get("id")))
    pids = [patient_id(p.get("actor")) for a in appts for p in a.get("participant") or []]
    names = lookup([p for p in pids if p])
    out = []
    for a in appts:
        pid = next((x for p in a.get("participant") or [] if (x := patient_id(p.get("actor")))), None)
        tid = next((tasks[r["reference"]] for r in a.get("basedOn") or [] if r.get("reference") in tasks), None)
        out.append({"start": a.get("start"), "end": a.get("end"), "status": a.get("status"),
                    "patient": shown(pid, names), "tid": tid})
    return out


def _schedules() -> list[dict[str, Any]]:
    return entries(fhir_get("teleconsult", "/fhir/Schedule", {"_count": "100"}), "Schedule")


@bp.route("/availability", methods=["GET", "POST"])
@login_required("doctor")
def availability() -> Any:
    """A doctor sees and changes their OWN weekly hours and leave (the teleconsult service allows a
    doctor to update the Schedule naming only them); an admin picks any doctor's schedule. A doctor
    who sends another schedule's id is refused here (403) before anything is asked of the back-end."""
    form, leave_form = AvailabilityForm(prefix="week"), LeaveForm(prefix="leave")
    problem, saved, removed = None, None, False
    in_leave: list[dict[str, Any]] = []  # booked visits inside the leave being added
    confirm = False  # the leave covers them: asked before it is saved
    schedule, choices = None, []
    admin = g.user.role == "admin"
    try:
        if admin:
            choices = _schedules()
            wanted = request.values.get("schedule") or (choices[0]["id"] if choices else None)
            schedule = next((c for c in choices if c["id"] == wanted), None)
        else:
            schedule = _my_schedule()
            wanted = request.values.get("schedule")
            if wanted and (schedule is None or wanted != schedule["id"]):
                # a form of the page sent in place: the refusal is the page's main (app.js swaps a 4xx retargeted)
                return render_template("error.html", title=gettext("Not allowed"),
                                       message=gettext("You can change only your own hours and leave.")), 403, \
                    WHOLE_PAGE if is_htmx() else {}
    except BackendError as err:
        problem = backend_message(err)
    editable = schedule is not None
    key = posted_key() or uuid.uuid4().hex  # the page's: kept through its answers sent in place
    if request.method == "POST" and schedule is not None:
        which = request.form.get("which")
        seen = page_version()
        if seen.isdigit() and seen != str((schedule.get("meta") or {}).get("versionId") or ""):
            schedule = _schedule_as_seen(schedule, seen)
        updated = dict(schedule)
        exts = list(schedule.get("extension") or [])
        if which == "week" and request.form.get("add"):  # one more empty window row, nothing saved yet
            form.windows.append_entry()
            problem = ""
        elif which == "week" and form.validate():
            exts = [e for e in exts if e.get("url") not in (EXT_AVAILABLE, EXT_SLOT_MINUTES)]
            for w in form.filled():  # each window its own extension: several per day (morning, afternoon)
                exts.append({"url": EXT_AVAILABLE, "extension": [
                    *({"url": "daysOfWeek", "valueCode": d} for d in DAYS if d in w.days.data),
                    {"url": "availableStartTime", "valueTime": f"{w.start_time.data}:00"},
                    {"url": "availableEndTime", "valueTime": f"{w.end_time.data}:00"}]})
            exts.append({"url": EXT_SLOT_MINUTES, "valueInteger": form.slot_minutes.data})
        elif which == "leave" and leave_form.validate():
            start = datetime.combine(leave_form.start.data, time(0, 0), TZ)
            end = datetime.combine(leave_form.end.data, time(23, 59, 59), TZ)
            try:  # leave frees no booked visit: the doctor sees them first, and confirms
                in_leave = booked_in(schedule, start, end)
            except BackendError as err:
                problem = backend_message(err)
            if in_leave and not request.form.get("confirm"):
                problem, confirm = "", True  # nothing saved yet: the page lists them and asks
            exts.append({"url": EXT_NOT_AVAILABLE, "extension": [
                {"url": "description", "valueString": leave_form.reason.data or gettext("Leave")},
                {"url": "during", "valuePeriod": {"start": start.isoformat(), "end": end.isoformat()}}]})
        elif which == "leave-remove":  # the leave the page showed, named by its period (not its position)
            gone = _leave_entry(exts, request.form.get("start", ""), request.form.get("end", ""))
            if gone is None:
                problem = gettext("This leave is no longer in the schedule: nothing was removed.")
            else:
                exts.remove(gone)
                removed = True
        else:
            problem = problem or gettext("Please correct the highlighted fields.")
        if problem is None:
            updated["extension"] = exts
            updated.pop("meta", None)
            # sent with the version the page showed (If-Match: another tab's or a colleague's change is not
            # overwritten unseen) and a key of the page's, the change and that version: sent again after its
            # answer was lost, the body is built from the same version, so teleconsult replays its answer
            # (one leave, not two) where the version alone would refuse it
            headers = {"Idempotency-Key": request_key(key, f"schedule-{which}", schedule["id"], seen,
                                                      json.dumps(updated, sort_keys=True))}
            if seen.isdigit():
                headers["If-Match"] = f'W/"{seen}"'
            try:
                r = call("teleconsult", "PUT", f"/fhir/Schedule/{schedule['id']}", json=updated, headers=headers)
                schedule, saved = (r.json() if r.content else None) or updated, True
            except BackendError as err:
                problem = backend_message(err)
                if err.kind == "refused" and err.status in (409, 412):
                    try:  # changed meanwhile: the page shows it as it is now, what was typed kept
                        schedule = _my_schedule() if not admin else next(
                            (c for c in _schedules() if c["id"] == schedule["id"]), schedule)
                    except BackendError:
                        pass
    summary = schedule_summary(schedule)
    if request.method == "GET" or saved or request.form.get("which") != "week":
        # the form shows the stored windows and one empty row to add one (a refused week form keeps what was typed)
        form = AvailabilityForm(prefix="week", formdata=None)
        while len(form.windows.entries):
            form.windows.pop_entry()
        for w in summary["windows"]:
            form.windows.append_entry({"days": w["days"], "start_time": w["start"][:5], "end_time": w["end"][:5]})
        form.windows.append_entry()
        form.slot_minutes.data = summary["slot_minutes"] or 30
    return render_template("availability.html", form=form, leave_form=leave_form, summary=summary,
                           schedule=schedule, problem=problem, saved=saved, removed=removed and saved, DAYS=DAYS,
                           editable=editable, choices=choices, in_leave=in_leave, confirm=confirm, key=key,
                           title=gettext("Availability")), (200 if not problem or is_htmx() else 422)


def _schedule_as_seen(schedule: dict[str, Any], version: str) -> dict[str, Any]:
    """The schedule at the version the page showed (teleconsult's history): a form of the page sent again after
    its answer was lost is built from it as the first was. Not readable: the schedule as it is now (the
    If-Match version then refuses a change built on another)."""
    try:
        return call("teleconsult", "GET", f"/fhir/Schedule/{schedule['id']}/_history/{version}").json()
    except BackendError:
        return schedule
