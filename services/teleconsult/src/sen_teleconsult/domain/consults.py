"""The consult request's rules, no I/O: what a submission must hold, the Task's state machine,
the minutes of the Ministry of Health, and the FHIR resources they become.

A consult is a ServiceRequest (intent ``order``, category consult, a priority, an ICD-10 reason,
the clinical question in ``note``, ``supportingInfo`` pointing at the EHR) and a Task that
carries its workflow. The Task's ``status`` moves along :data:`TRANSITIONS`; each operation
(``$accept``, ``$reject``, ...) is one step. Errors are :class:`ConsultError` (a ``FhirError``:
an OperationOutcome with the status the API answers).
"""

from __future__ import annotations

import base64
import copy
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from sen_shared import icd10
from sen_shared.fhir.guarded import Hidden
from sen_shared.fhir.names import name_and_role, name_key, same_person
from sen_shared.fhir.outcome import FhirError
from sen_shared.fhir.store import not_found

ICD10 = icd10.SYSTEM
SNOMED = "http://snomed.info/sct"
CONSULT_CATEGORY = {"system": SNOMED, "code": "11429006", "display": "Consultation"}
TASK_CODE = {"system": "http://hl7.org/fhir/CodeSystem/task-code", "code": "fulfill"}
SEN = "https://sen.vn/fhir"
EXT_CHANGED_BY = f"{SEN}/StructureDefinition/changed-by"  # who made this version (meta.extension)
EXT_ESCALATED_TO = f"{SEN}/StructureDefinition/escalated-to"  # the on-duty lead a breach went to
EXT_DISTRICT = f"{SEN}/StructureDefinition/district"  # the requesting clinic's district
BUSINESS_STATUS = f"{SEN}/CodeSystem/consult-business-status"
OUTPUT_TYPE = f"{SEN}/CodeSystem/consult-output"
# meta.tag on a consult's ServiceRequest, Task and Communications naming its hub (code: the hub's
# reference): the indexed field (``sp__tag``) that scopes doctors to their hub's consults
HUB_TAG = f"{SEN}/CodeSystem/consult-hub"
# meta.tag on an OPEN consult's Task (one of OPEN_STATES; removed by the step that closes it): the
# worklist's equality, so its query matches open Tasks only, however many closed ones a hub has
OPEN_TAG = f"{SEN}/CodeSystem/consult-open"  # code "open"
OPEN_AT_HUB_TAG = f"{SEN}/CodeSystem/consult-open-at-hub"  # code: the hub
OPEN_FROM_TAG = f"{SEN}/CodeSystem/consult-open-from"  # code: the requesting clinic
# meta.tag on an Appointment and on a Communication of the consult's thread naming the requesting
# clinic of the consult it is for (code: its reference): the equality (``sp__tag``) that scopes clinic
# staff to their facility's appointments and messages, whoever sent them (a Practitioner of the clinic)
REQUESTER_TAG = f"{SEN}/CodeSystem/consult-requester"

# most urgent first: the worklist's order
PRIORITIES: tuple[str, ...] = ("stat", "asap", "urgent", "routine")
PRIORITY_RANK = {p: i for i, p in enumerate(PRIORITIES)}
SUPPORTING_TYPES = ("DocumentReference", "ImagingStudy", "Observation")
MAX_SUPPORTING = 20
REF = re.compile(r"^([A-Z][A-Za-z]{1,63})/([A-Za-z0-9\-.]{1,64})$")

# the minutes' participants: a role as written (the portal sends the whole participants list, the chair's
# role first, as its chair's role) and a name; longer is 422, never cut (the event's schema says the same)
PARTICIPANT_ROLE_MAX_CHARS = 2000
PARTICIPANT_DISPLAY_MAX_CHARS = 200
# the minutes' other limits of teleconsult.consult.completed's schema (specs/events): over them its event would
# fail the relay's check and stay in the outbox (the consult completed, never charged nor in the EHR)
SITE_DISPLAY_MAX_CHARS = 200
CONCLUSION_DISPLAY_MAX_CHARS = 500
SPECIALTY_MAX_CHARS = 64  # teleconsult.consult.requested's specialty
FINDINGS_MAX_CHARS = 20000  # the findings as the event writes them: one text, each part after its label

OPEN_STATES = ("requested", "accepted", "on-hold", "in-progress")
FINAL_STATES = ("completed", "rejected", "cancelled")

# operation -> the Task states it may start from
TRANSITIONS: dict[str, tuple[str, ...]] = {
    "$accept": ("requested",),
    "$reject": ("requested", "on-hold"),
    "$reassign": ("requested", "accepted", "in-progress", "on-hold"),
    "$request-info": ("requested", "accepted", "in-progress"),
    "$provide-info": ("on-hold",),
    "$cancel": ("requested", "accepted", "on-hold", "in-progress"),
    "$start": ("accepted",),  # the specialist begins the consult (opens the visit): in-progress
    "$complete": ("accepted", "in-progress"),
    "$escalate": OPEN_STATES,  # the SLA sweeper's step (the state stays)
}
# who acts: the hub's doctors, or the requesting clinic
HUB_OPS = frozenset({"$accept", "$reject", "$reassign", "$request-info", "$start", "$complete"})
CLINIC_OPS = frozenset({"$cancel", "$provide-info"})
SYSTEM_OPS = frozenset({"$escalate", "$retag"})  # the worker's and the backfill's own steps

# the steps that close a consult, and with it its visit (``Consults.end_visits``): a visit still to come
# is cancelled, its slot freed; ``$complete`` marks fulfilled a visit that had begun
CLOSING_OPS = frozenset({"$cancel", "$reject", "$complete"})


def visit_end_reason(op: str, reason: str | None) -> str:
    """The ``cancelationReason`` of a visit its consult's closing step cancels (Vietnamese first)."""
    said = f": {reason.strip()[:300]}" if reason and reason.strip() else ""
    if op == "$cancel":
        return f"Phòng khám đã hủy yêu cầu hội chẩn (the clinic cancelled the consult){said}"
    if op == "$reject":
        return f"Bác sĩ tuyến trên đã từ chối hội chẩn (the hub declined the consult){said}"
    return "Hội chẩn đã kết thúc trước giờ hẹn (the consult was completed before this visit)"


# ``$message``: a free message on the consult's thread, by either side, at any time but once the consult
# was refused or withdrawn (a message after completion stays useful: thanks, a follow-up question). Not
# a step: the Task's state and version stay as they are (its own insert, :meth:`Consults.post_message`)
MESSAGE_STATES: tuple[str, ...] = (*OPEN_STATES, "completed")
MESSAGE_MAX_CHARS = 4000  # the text of one message
MESSAGE_MAX_ATTACHMENTS = 10
# Communication.category of the consult's thread: a free message, the hub's question, the clinic's answer
THREAD_CATEGORY = f"{SEN}/CodeSystem/consult-communication"


class ConsultError(FhirError):
    """A consult request or step refused; the OperationOutcome says why."""


def illegal(op: str, state: str) -> ConsultError:
    allowed = ", ".join(TRANSITIONS.get(op, ()))
    return ConsultError(f"{op} is not allowed: the Task is {state!r} (it needs {allowed})", status=409,
                        code="business-rule", expression=["Task.status"])


def check_transition(op: str, state: str) -> None:
    if state not in TRANSITIONS.get(op, ()):
        raise illegal(op, state)


def check_version(op: str, task_id: str, expected: int | None, version: int, state: str, owner: str | None) -> None:
    """``If-Match``: the step is taken only on the Task version the caller saw (a doctor taking the
    consult over from the holder the page named). Another version is 412 naming what the Task is now
    (its version, state and holder), so the caller can say who took it meanwhile."""
    if expected is None or expected == version:
        return
    seen = f"version {expected}" if expected >= 0 else "the version in If-Match"
    raise ConsultError(f"{op} was not applied: Task/{task_id} changed since {seen}; it is version {version} now, "
                       f"{state!r}, held by {owner or 'nobody'}", status=412, code="conflict",
                       expression=["Task.meta.versionId"])


def check_message(state: str) -> None:
    """409 naming the state when the consult's thread is closed to messages (refused or withdrawn)."""
    if state not in MESSAGE_STATES:
        raise ConsultError(f"$message is not allowed: the Task is {state!r} (it needs {', '.join(MESSAGE_STATES)})",
                           status=409, code="business-rule", expression=["Task.status"])


def check_role(op: str, principal: Any, system: bool = False) -> None:
    """403 unless ``principal``'s role may take ``op`` on a consult at all (the hub's doctors their steps,
    the requesting clinic's staff theirs, admins every one, the worker its own): asked before the Task is
    looked up, so an id the caller names changes nothing in the answer (a made-up one gets it too)."""
    roles = getattr(principal, "roles", frozenset())
    if "admin" in roles or op in SYSTEM_OPS and system:
        return
    if op in HUB_OPS:
        if "doctor" not in roles:
            raise ConsultError(f"{op} is for the hub's doctors", status=403, code="forbidden")
    elif op in CLINIC_OPS:
        if "clinic" not in roles:
            raise ConsultError(f"{op} is for the requesting clinic's staff", status=403, code="forbidden")
    else:
        raise ConsultError(f"{op} is not allowed", status=403, code="forbidden")


def check_message_role(principal: Any) -> None:
    """403 unless ``principal`` is a doctor or clinic staff (admins included: a message is one side's word to
    the other); asked before the Task is looked up, as :func:`check_role`."""
    if not getattr(principal, "roles", frozenset()) & {"doctor", "clinic"}:
        raise ConsultError("messages on a consult are for the requesting clinic's staff and the hub's doctors",
                           status=403, code="forbidden")


def message_side(principal: Any, facts: Mapping[str, Any]) -> str:
    """Which side of the consult ``principal`` writes for: ``"hub"`` (a doctor of the consult's hub,
    named by a practitioner) or ``"clinic"`` (staff of the requesting clinic). A doctor of the hub whose
    token names no practitioner: 403; another facility's consult (another hub's): :class:`Hidden`, answered
    as a Task not stored (404), as its steps are; any other role: 403 (:func:`check_message_role`)."""
    check_message_role(principal)
    roles = getattr(principal, "roles", frozenset())
    facility = f"Organization/{principal.facility}" if getattr(principal, "facility", None) else None
    if "doctor" in roles and facility == facts["hub"] and getattr(principal, "practitioner", None):
        return "hub"
    if "clinic" in roles and facility == facts["requester"]:
        return "clinic"
    if "doctor" in roles and facility == facts["hub"]:
        raise ConsultError("the token names no practitioner", status=403, code="forbidden")
    raise Hidden("this consult belongs to another facility", not_found("Task", ref_id(facts["task"])))


def thread_category(code: str) -> list[dict[str, Any]]:
    """``Communication.category`` of the thread: ``message``, ``question`` or ``answer``."""
    text = {"message": "Tin nhắn", "question": "Câu hỏi", "answer": "Trả lời"}[code]
    return [{"coding": [{"system": THREAD_CATEGORY, "code": code}], "text": text}]


# --------------------------------------------------------------------------- references

def ref_of(value: Any) -> str | None:
    """``"Type/id"`` of a FHIR Reference (an object with a relative ``reference``), None when it is not one."""
    if not isinstance(value, Mapping):
        return None
    ref = value.get("reference")
    # whole: REF's ``$`` also matches before a final new line ("Practitioner/a\n" was taken as the chair)
    return ref if isinstance(ref, str) and REF.fullmatch(ref) else None


def ref_id(ref: str) -> str:
    return ref.split("/", 1)[1]


def _bad(detail: str, where: str, status: int = 422) -> ConsultError:
    return ConsultError(detail, status=status, code="invalid" if status == 400 else "processing", expression=[where])


# --------------------------------------------------------------------------- submission

@dataclass(frozen=True)
class Submission:
    """A checked consult request: the facts every later step and event needs."""

    service_request: dict[str, Any]
    patient: str  # Patient/<id>
    requester: str  # Organization/<clinic>
    hub: str  # Organization/<hub>
    priority: str
    specialty: str | None  # a code
    specialty_concept: dict[str, Any] | None
    supporting: tuple[str, ...]
    # the patient's name as the EHR held it at submission (:func:`named`); '' until then, or unnamed
    patient_name: str = ""


def check_submission(sr: Any, *, clinic: str | None, default_hub: str | None, admin: bool = False) -> Submission:
    """The ServiceRequest of a submission, checked; ``clinic`` is the submitter's Organization/<id>."""
    if not isinstance(sr, dict) or sr.get("resourceType") != "ServiceRequest":
        raise _bad("a consult is submitted as a ServiceRequest (or a Parameters holding one as 'resource')",
                   "ServiceRequest", 400)
    sr = copy.deepcopy(sr)
    sr.pop("id", None)
    sr.pop("meta", None)
    if sr.setdefault("status", "active") != "active":
        raise _bad("a new consult request has status 'active'", "ServiceRequest.status")
    if sr.setdefault("intent", "order") != "order":
        raise _bad("a consult request has intent 'order'", "ServiceRequest.intent")
    priority = sr.get("priority")
    if priority not in PRIORITY_RANK:
        raise _bad(f"priority must be one of {', '.join(reversed(PRIORITIES))}", "ServiceRequest.priority")
    patient = ref_of(sr.get("subject"))
    if patient is None or not patient.startswith("Patient/"):
        raise _bad("subject must reference the patient: Patient/<id> (the EHR's)", "ServiceRequest.subject")
    if not _has_icd10(sr.get("reasonCode"), "ServiceRequest.reasonCode"):
        raise _bad(f"reasonCode needs an ICD-10 coding (system {ICD10}, e.g. code I21.9)",
                   "ServiceRequest.reasonCode")
    notes = sr.get("note")
    if not (isinstance(notes, list) and notes and isinstance(notes[0], dict)
            and isinstance(notes[0].get("text"), str) and notes[0]["text"].strip()):
        raise _bad("the clinical question goes in note[0].text", "ServiceRequest.note")
    # requester: the submitting clinic (an admin may submit on a clinic's behalf)
    given = ref_of(sr.get("requester"))
    if clinic is None:
        if not (admin and given and given.startswith("Organization/")):
            raise ConsultError("the token names no facility: only clinic staff submit consults", status=403,
                               code="forbidden")
        clinic = given
    elif given is not None and given != clinic:
        raise ConsultError(f"requester must be your facility ({clinic})", status=403, code="forbidden",
                           expression=["ServiceRequest.requester"])
    sr["requester"] = {"reference": clinic}
    performers = [r for r in (ref_of(p) for p in sr.get("performer") or []) if r]
    hubs = [r for r in performers if r.startswith("Organization/")]
    if not hubs:
        if not default_hub:
            raise _bad("performer must name the hub Organization the consult goes to", "ServiceRequest.performer")
        hubs = [f"Organization/{default_hub}"]
        sr["performer"] = [{"reference": hubs[0]}, *(sr.get("performer") or [])]
    category = sr.setdefault("category", [])
    if not isinstance(category, list):
        raise _bad("category must be a list", "ServiceRequest.category", 400)
    if not any(c.get("code") == CONSULT_CATEGORY["code"] for cc in category if isinstance(cc, dict)
               for c in cc.get("coding") or [] if isinstance(c, dict)):
        category.append({"coding": [dict(CONSULT_CATEGORY)], "text": "Hội chẩn từ xa"})
    supporting: list[str] = []
    for i, item in enumerate(sr.get("supportingInfo") or []):
        ref = ref_of(item)
        if ref is None or ref.split("/", 1)[0] not in SUPPORTING_TYPES:
            raise _bad(f"supportingInfo must reference the EHR's {', '.join(SUPPORTING_TYPES)}",
                       f"ServiceRequest.supportingInfo[{i}]")
        supporting.append(ref)
    if len(supporting) > MAX_SUPPORTING:
        raise _bad(f"at most {MAX_SUPPORTING} supporting references", "ServiceRequest.supportingInfo")
    concept = (sr.get("performerType") if isinstance(sr.get("performerType"), dict) else None)
    specialty = None
    if concept:
        codes = [c.get("code") for c in concept.get("coding") or [] if isinstance(c, dict) and c.get("code")]
        specialty = codes[0] if codes else None
        if isinstance(specialty, str) and len(specialty) > SPECIALTY_MAX_CHARS:  # teleconsult.consult.requested's
            raise _bad(f"the specialty's code is at most {SPECIALTY_MAX_CHARS} characters (this one has "
                       f"{len(specialty)})", "ServiceRequest.performerType.coding[0].code")
    return Submission(sr, patient, clinic, hubs[0], priority, specialty, concept, tuple(supporting))


def _has_icd10(reason: Any, where: str) -> bool:
    """Whether the CodeableConcepts hold an ICD-10 coding; one whose code is not in Sen's list
    (:mod:`sen_shared.icd10`: ``I21.99``, the US-only ``E11.65``) is refused by name."""
    found = [check_reason(cc, f"{where}[{i}]") for i, cc in enumerate(reason if isinstance(reason, list) else [])]
    return any(found)


def check_icd10(code: Any, where: str) -> None:
    """An ICD-10 code must be one of the list (WHO ICD-10 as listed, e.g. I21.9): a code of the right
    shape is not enough (the event schemas can only check the shape)."""
    if not icd10.is_code(code):
        shown = code if isinstance(code, str) and code else repr(code)
        raise _bad(f"{shown} is not an ICD-10 code (WHO ICD-10 as listed, with its dot, e.g. I21.9)", where)


def check_reason(reason: Any, where: str) -> bool:
    """Whether one CodeableConcept (a Task's ``reasonCode``) holds an ICD-10 coding; each one's code
    must be a code of the list."""
    found = False
    for j, c in enumerate((reason.get("coding") if isinstance(reason, dict) else None) or []):
        if isinstance(c, dict) and c.get("system") == ICD10:
            check_icd10(c.get("code"), f"{where}.coding[{j}].code")
            found = True
    return found


def named(sub: Submission, name: str) -> Submission:
    """``sub`` with the patient's name as the EHR holds it (``sen_shared.fhir.names.person_name`` of
    the Patient the submission read): the ``display`` of the ServiceRequest's ``subject`` and of the
    Task's ``for``, so that the consult's later steps name the patient without asking the EHR again
    (``teleconsult.consult.completed`` carries it to billing's invoice and receipt). A ``display``
    the client sent is replaced: the EHR names the patient; an unnamed Patient leaves none."""
    sr = dict(sub.service_request)
    subject = {k: v for k, v in sr["subject"].items() if k != "display"}
    if name:
        subject["display"] = name
    sr["subject"] = subject
    return replace(sub, service_request=sr, patient_name=name)


def due_time(requested: datetime, priority: str, sla_hours: Mapping[str, float]) -> datetime:
    """When a consult of ``priority`` submitted at ``requested`` is due (the SLA)."""
    return requested + timedelta(hours=float(sla_hours[priority]))


def new_task(sub: Submission, sr_ref: str, *, requested: str, due: str, district: str | None,
             reason: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The Task (``requested``) that carries the consult's workflow, owned by the hub.

    Its ``reasonCode`` (R4: one CodeableConcept) is ``reason`` (the client's own Task's, already
    checked) or else the ServiceRequest's first ``reasonCode``: a list of Tasks (the portal's
    worklist) shows why each consult was asked without reading the ServiceRequests."""
    if reason is None:
        reason = next(iter(sub.service_request.get("reasonCode") or []), None)
    task: dict[str, Any] = {
        "resourceType": "Task", "status": "requested", "intent": "order", "priority": sub.priority,
        "code": {"coding": [dict(TASK_CODE)], "text": "Hội chẩn từ xa"},
        "basedOn": [{"reference": sr_ref}], "focus": {"reference": sr_ref},
        "for": {"reference": sub.patient, **({"display": sub.patient_name} if sub.patient_name else {})},
        "authoredOn": requested, "lastModified": requested,
        "requester": {"reference": sub.requester}, "owner": {"reference": sub.hub},
        "restriction": {"period": {"end": due}, "recipient": [{"reference": sub.hub}]},
    }
    if isinstance(reason, Mapping):
        task["reasonCode"] = copy.deepcopy(dict(reason))
    if sub.specialty_concept:
        task["performerType"] = [sub.specialty_concept]
    if district:
        task["extension"] = [{"url": EXT_DISTRICT, "valueString": district}]
    return task


def _tag(resource: dict[str, Any], system: str, code: str) -> dict[str, Any]:
    """Put ``system|code`` in ``meta.tag`` (in place; any earlier tag of that system replaced)."""
    meta = dict(resource.get("meta") or {})
    meta["tag"] = [*(t for t in meta.get("tag") or [] if t.get("system") != system),
                   {"system": system, "code": code}]
    resource["meta"] = meta
    return resource


def _tagged(resource: Mapping[str, Any], system: str) -> str | None:
    """The code of ``resource``'s tag of ``system`` (None: untagged)."""
    for t in (resource.get("meta") or {}).get("tag") or []:
        if isinstance(t, Mapping) and t.get("system") == system:
            return t.get("code")
    return None


def tag_hub(resource: dict[str, Any], hub: str) -> dict[str, Any]:
    """Put the consult's hub in ``meta.tag`` (in place; any earlier hub tag replaced)."""
    return _tag(resource, HUB_TAG, hub)


def tag_requester(resource: dict[str, Any], requester: str) -> dict[str, Any]:
    """Put the consult's requesting clinic in ``meta.tag`` (in place; any earlier one replaced)."""
    return _tag(resource, REQUESTER_TAG, requester)


def requester_of(resource: Mapping[str, Any]) -> str | None:
    """The requesting clinic a consult resource is tagged with (None: untagged)."""
    return _tagged(resource, REQUESTER_TAG)


def tag_open(task: dict[str, Any], hub: str, requester: str, is_open: bool) -> dict[str, Any]:
    """Put (or take off) the open-consult tags of a Task version (in place)."""
    systems = (OPEN_TAG, OPEN_AT_HUB_TAG, OPEN_FROM_TAG)
    meta = dict(task.get("meta") or {})
    tags = [t for t in meta.get("tag") or [] if t.get("system") not in systems]
    if is_open:
        tags += [{"system": OPEN_TAG, "code": "open"}, {"system": OPEN_AT_HUB_TAG, "code": hub},
                 {"system": OPEN_FROM_TAG, "code": requester}]
    meta["tag"] = tags
    task["meta"] = meta
    return task


def hub_of(resource: Mapping[str, Any]) -> str | None:
    """The hub a consult resource is tagged with (None: untagged)."""
    return _tagged(resource, HUB_TAG)


def stamp_change(resource: dict[str, Any], who: str, display: str) -> dict[str, Any]:
    """Record in ``meta`` who made this version (history then says who and when)."""
    meta = dict(resource.get("meta") or {})
    meta.pop("versionId", None)
    meta.pop("lastUpdated", None)
    meta["extension"] = [{"url": EXT_CHANGED_BY, "valueReference": {"reference": who, "display": display}}]
    resource["meta"] = meta
    return resource


# --------------------------------------------------------------------------- minutes

@dataclass(frozen=True)
class Minutes:
    """The teleconsultation minutes (Circular 49/2017/TT-BYT; Decision 4054/QĐ-BYT)."""

    start: str
    end: str
    sites: tuple[dict[str, Any], ...]
    participants: tuple[dict[str, Any], ...]
    patient_identity: str | None
    history: str
    findings: dict[str, str]  # clinical / laboratory / imaging
    discussion: str | None
    conclusion: tuple[dict[str, Any], ...]  # ICD-10 codings
    recommendations: str
    chair: str  # Practitioner/<id> who signs off
    appointment: str | None
    conclusion_text: str | None = None  # the conclusion as the doctor wrote it (``conclusion-text``)
    # who took the minutes and signs them beside the chair (``secretary``): {"display", "reference"?}
    secretary: dict[str, str] | None = None

    def findings_text(self) -> str:
        return _findings_text(self.findings)

    def as_json(self) -> dict[str, Any]:
        return {"start": self.start, "end": self.end, "sites": list(self.sites),
                "participants": list(self.participants), "patientIdentity": self.patient_identity,
                "history": self.history, "findings": self.findings, "discussion": self.discussion,
                "conclusion": list(self.conclusion), "recommendations": self.recommendations, "chair": self.chair,
                **({"conclusionText": self.conclusion_text} if self.conclusion_text else {}),
                **({"secretary": dict(self.secretary)} if self.secretary else {})}


MINUTES_YEARS = (1900, 2999)  # the years a minutes' start or end may be in
DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|[+-]\d{2}:\d{2})$")


def _findings_text(findings: Mapping[str, str]) -> str:
    """The findings as the minutes' event writes them: one text, each part after its label."""
    labels = {"clinical": "Lâm sàng", "laboratory": "Cận lâm sàng", "imaging": "Chẩn đoán hình ảnh"}
    return "\n".join(f"{labels[k]}: {v}" for k, v in findings.items())


def _params(body: Any) -> list[dict[str, Any]]:
    if not isinstance(body, dict) or body.get("resourceType") != "Parameters":
        raise _bad("the operation takes a Parameters resource", "Parameters", 400)
    params = body.get("parameter") or []
    if not isinstance(params, list) or not all(isinstance(p, dict) for p in params):
        raise _bad("Parameters.parameter must be a list of parameters", "Parameters.parameter", 400)
    return params


def param_values(body: Any, name: str) -> list[dict[str, Any]]:
    return [p for p in _params(body) if p.get("name") == name]


def one_string(body: Any, name: str, *, required: bool, max_len: int = 20000) -> str | None:
    found = param_values(body, name)
    if not found:
        if required:
            raise _bad(f"the parameter {name!r} is required", f"Parameters.parameter.where(name='{name}')")
        return None
    value = found[0].get("valueString")
    if not isinstance(value, str) or not value.strip() or len(value) > max_len:
        raise _bad(f"{name!r} must be a non-empty valueString of at most {max_len} characters",
                   f"Parameters.parameter.where(name='{name}')")
    return value.strip()


def one_reference(body: Any, name: str, *, required: bool, types: tuple[str, ...]) -> str | None:
    found = param_values(body, name)
    if not found:
        if required:
            raise _bad(f"the parameter {name!r} is required", f"Parameters.parameter.where(name='{name}')")
        return None
    ref = ref_of(found[0].get("valueReference"))
    if ref is None or ref.split("/", 1)[0] not in types:
        raise _bad(f"{name!r} must be a valueReference to {' or '.join(types)}",
                   f"Parameters.parameter.where(name='{name}')")
    return ref


def _datetime(body: Any, name: str) -> str:
    found = param_values(body, name)
    value = found[0].get("valueDateTime") if found else None
    if isinstance(value, str) and DATETIME.match(value):
        try:
            # the calendar's edge (0001-01-01T00:00+07:00, 9999-12-31T23:59-14:00) is no instant in UTC or in
            # Vietnam: taken, every page showing the minutes failed (OverflowError)
            if MINUTES_YEARS[0] <= _instant(value).astimezone(UTC).year <= MINUTES_YEARS[1]:
                return value
        except (ValueError, OverflowError):  # 2025-13-45T...: the shape of a date, not a date
            pass
    raise _bad(f"{name!r} is required: a valueDateTime with a time zone, in the years {MINUTES_YEARS[0]} to "
               f"{MINUTES_YEARS[1]}, e.g. 2025-03-14T09:00:00+07:00", f"Parameters.parameter.where(name='{name}')")


def _parts(p: Mapping[str, Any]) -> dict[str, Any]:
    """A parameter's parts by name; none when ``part`` is no list (``5``, ``true``: iterating it was a 500)."""
    parts = p.get("part")
    if not isinstance(parts, list):
        return {}
    return {q["name"]: q for q in parts if isinstance(q, dict) and isinstance(q.get("name"), str)}


def parse_minutes(body: Any) -> Minutes:
    """The minutes from ``Task/$complete``'s Parameters (names in the service README)."""
    start, end = _datetime(body, "start"), _datetime(body, "end")
    if _instant(end) < _instant(start):
        raise _bad("end is before start", "Parameters.parameter.where(name='end')")
    sites = []
    for p in param_values(body, "site"):
        ref = ref_of(p.get("valueReference"))
        if ref is None or not ref.startswith("Organization/"):
            raise _bad("each 'site' is a valueReference to the Organization taking part",
                       "Parameters.parameter.where(name='site')")
        display = p["valueReference"].get("display")
        if isinstance(display, str) and len(display) > SITE_DISPLAY_MAX_CHARS:  # refused, never cut
            raise _bad(f"a site's name (display) is at most {SITE_DISPLAY_MAX_CHARS} characters (this one has "
                       f"{len(display)})", f"Parameters.parameter.where(name='site')[{len(sites)}]")
        sites.append({"reference": ref, **({"display": display} if isinstance(display, str) else {})})
    if not sites:
        raise _bad("'site' is required: the sites taking part (the hub and the clinic)",
                   "Parameters.parameter.where(name='site')")
    participants = []
    for p in param_values(body, "participant"):
        parts = _parts(p)
        who = ref_of((parts.get("who") or {}).get("valueReference"))
        role = (parts.get("role") or {}).get("valueString")
        if who is None or not isinstance(role, str) or not role.strip():
            raise _bad("each 'participant' has parts 'who' (valueReference) and 'role' (valueString)",
                       "Parameters.parameter.where(name='participant')")
        where = f"Parameters.parameter.where(name='participant')[{len(participants)}]"
        if len(role.strip()) > PARTICIPANT_ROLE_MAX_CHARS:  # refused, never cut: the minutes are a record
            raise _bad(f"a participant's role is at most {PARTICIPANT_ROLE_MAX_CHARS} characters (this one has "
                       f"{len(role.strip())})", f"{where}.part.where(name='role')")
        item: dict[str, Any] = {"reference": who, "role": role.strip()}
        display = (parts.get("who") or {}).get("valueReference", {}).get("display")
        if isinstance(display, str):
            if len(display) > PARTICIPANT_DISPLAY_MAX_CHARS:
                raise _bad(f"a participant's name (who.display) is at most {PARTICIPANT_DISPLAY_MAX_CHARS} "
                           f"characters (this one has {len(display)})", f"{where}.part.where(name='who')")
            item["display"] = display
        participants.append(item)
    if not participants:
        raise _bad("'participant' is required: who took part and in which role",
                   "Parameters.parameter.where(name='participant')")
    findings = {k: v for k in ("clinical", "laboratory", "imaging")
                if (v := one_string(body, f"findings-{k}", required=False))}
    if not findings:
        raise _bad("the findings reviewed are required: findings-clinical, findings-laboratory and/or "
                   "findings-imaging", "Parameters.parameter.where(name='findings-clinical')")
    written = len(_findings_text(findings))
    if written > FINDINGS_MAX_CHARS:
        raise _bad(f"the findings come to {written} characters as the minutes write them, each after its label "
                   f"(at most {FINDINGS_MAX_CHARS} characters together)",
                   "Parameters.parameter.where(name='findings-clinical')")
    conclusion = []
    for p in param_values(body, "conclusion"):
        c = p.get("valueCoding")
        if not (isinstance(c, dict) and c.get("system") == ICD10 and isinstance(c.get("code"), str)):
            raise _bad(f"each 'conclusion' is a valueCoding of ICD-10 ({ICD10})",
                       "Parameters.parameter.where(name='conclusion')")
        check_icd10(c["code"], "Parameters.parameter.where(name='conclusion')")
        if isinstance(c.get("display"), str) and len(c["display"]) > CONCLUSION_DISPLAY_MAX_CHARS:
            raise _bad(f"a conclusion's display is at most {CONCLUSION_DISPLAY_MAX_CHARS} characters (this one has "
                       f"{len(c['display'])})", f"Parameters.parameter.where(name='conclusion')[{len(conclusion)}]")
        conclusion.append({k: c[k] for k in ("system", "code", "display") if isinstance(c.get(k), str)})
    if not conclusion:
        raise _bad("'conclusion' is required: the diagnosis as ICD-10 codes",
                   "Parameters.parameter.where(name='conclusion')")
    chair = one_reference(body, "chair", required=True, types=("Practitioner",))
    assert chair is not None
    secretary = _secretary(body, participants, chair)
    return Minutes(
        start=start, end=end, sites=tuple(sites), participants=tuple(participants),
        patient_identity=one_string(body, "patient-identity", required=False, max_len=500),
        history=one_string(body, "history", required=True) or "", findings=findings,
        discussion=one_string(body, "discussion", required=False),
        conclusion=tuple(conclusion), recommendations=one_string(body, "recommendations", required=True) or "",
        chair=chair, appointment=one_reference(body, "appointment", required=False, types=("Appointment",)),
        conclusion_text=one_string(body, "conclusion-text", required=False), secretary=secretary)


SECRETARY = "Parameters.parameter.where(name='secretary')"


def participant_names(participants: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """(reference or "", name) of every person the minutes' participants name: each participant's ``who``
    (its display) and each "<name> — <role>" entry of its role (the portal sends the other participants so,
    in the chair's role, one entry a "; "); a role's first entry without a separator is that participant's
    own role ("chủ trì"), not a person; a later entry without one is a name typed alone."""
    found = []
    for p in participants:
        found.append((str(p.get("reference") or ""), str(p.get("display") or "")))
        entries = [e.strip() for line in str(p.get("role") or "").splitlines() for e in line.split(";") if e.strip()]
        for at, entry in enumerate(entries):
            name, role = name_and_role(entry)
            if role is not None or at > 0:
                found.append(("", name))
    return [(ref, name) for ref, name in found if ref or name_key(name)]


def _secretary(body: Any, participants: list[dict[str, Any]], chair: str) -> dict[str, str] | None:
    """``secretary`` (optional; Circular 49/2017/TT-BYT's minutes are signed by the chair and the secretary):
    a valueReference whose ``display`` is the secretary's name as the minutes print it (up to 200
    characters) and, when known, a ``reference`` to their Practitioner. One of the participants (by that
    reference, or by name whatever title either carries: ``same_person``), and not the chair; else 422."""
    found = param_values(body, "secretary")
    if not found:
        return None
    if len(found) > 1:
        raise _bad("'secretary' is given once: the one who took the minutes", SECRETARY)
    value = found[0].get("valueReference")
    display = value.get("display") if isinstance(value, Mapping) else None
    name = " ".join(display.split()) if isinstance(display, str) else ""
    if not name_key(name):  # nothing, or a title alone ("BS.")
        raise _bad("'secretary' needs the secretary's name (valueReference.display): who took the minutes, "
                   "one of the participants", SECRETARY)
    if len(name) > PARTICIPANT_DISPLAY_MAX_CHARS:
        raise _bad(f"the secretary's name (valueReference.display) is at most {PARTICIPANT_DISPLAY_MAX_CHARS} "
                   f"characters (this one has {len(name)})", SECRETARY)
    ref = None
    if isinstance(value, Mapping) and "reference" in value:
        ref = ref_of(value)
        if ref is None or not ref.startswith("Practitioner/"):
            raise _bad("'secretary' is a valueReference to a Practitioner (or a name alone, its display)",
                       SECRETARY)
    said = (param_values(body, "chair")[0].get("valueReference") or {}).get("display")
    chair_names = [str(p.get("display") or "") for p in participants if p.get("reference") == chair]
    chair_names += [said] if isinstance(said, str) else []
    if ref == chair or any(n and same_person(name, n) for n in chair_names):
        raise _bad(f"the secretary ({name}) is the chair: the minutes are signed by two people, the chair and "
                   "another participant who took them", SECRETARY)
    if not any((ref and ref == r) or (n and same_person(name, n)) for r, n in participant_names(participants)):
        raise _bad(f"the secretary ({name}) is not among the participants: name one of them (each 'participant', "
                   "or a '<name> — <role>' entry of a participant's role)", SECRETARY)
    return {"display": name, **({"reference": ref} if ref else {})}


def _instant(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def minutes_outputs(m: Minutes) -> list[dict[str, Any]]:
    """Task.output: what the requesting clinic reads on its Task (conclusion, advice, the whole minutes), each
    named as the Ministry's minutes form names the part (as the EHR's consult record titles its sections)."""
    text = json.dumps(m.as_json(), ensure_ascii=False).encode()
    return [
        {"type": {"coding": [{"system": OUTPUT_TYPE, "code": "conclusion"}], "text": "Kết luận"},
         "valueCodeableConcept": {"coding": [dict(c) for c in m.conclusion],
                                  **({"text": m.conclusion_text} if m.conclusion_text else {})}},
        {"type": {"coding": [{"system": OUTPUT_TYPE, "code": "recommendations"}], "text": "Hướng điều trị đề xuất"},
         "valueString": m.recommendations},
        {"type": {"coding": [{"system": OUTPUT_TYPE, "code": "minutes"}], "text": "Biên bản hội chẩn từ xa"},
         "valueAttachment": {"contentType": "application/json", "language": "vi",
                             "data": base64.b64encode(text).decode(), "title": "Biên bản hội chẩn từ xa",
                             "creation": m.end}},
    ]


def minutes_event(m: Minutes) -> dict[str, Any]:
    """The ``minutes`` of ``teleconsult.consult.completed`` (its schema: specs/events)."""
    out: dict[str, Any] = {
        "participants": [dict(p) for p in m.participants], "summary": m.history, "findings": m.findings_text(),
        "conclusion": dict(m.conclusion[0]), "recommendations": m.recommendations,
        "sites": [dict(s) for s in m.sites], "diagnoses": [dict(c) for c in m.conclusion], "chair": m.chair,
    }
    if m.conclusion_text:  # the conclusion as written: its own field, the advice stays the advice alone
        out["conclusionText"] = m.conclusion_text
    if m.discussion:
        out["discussion"] = m.discussion
    if m.secretary:  # absent when the minutes name none (and in events sent before it existed)
        out["secretary"] = dict(m.secretary)
    return out
