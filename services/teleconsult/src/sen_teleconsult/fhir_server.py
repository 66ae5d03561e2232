"""The teleconsult FHIR server: the shared guarded engine, with the consult's own rules in front.

- ServiceRequest, Task and Communication change only through the workflow's operations
  (``ServiceRequest/$submit`` or a transaction Bundle holding a consult, ``Task/{id}/$accept``,
  ...): a plain create/update/patch/delete of them is 405 saying which operation to use. A Task's
  versions are its step chain's links (``workflow``), which a write beside it would break.
- A transaction Bundle that writes a ServiceRequest (and optionally its Task) is a consult
  submission and goes through the same checks as ``$submit`` (EHR, idempotency, events).
- A doctor may update their OWN Schedule (weekly hours and leave: every actor of the stored and
  of the new Schedule is their ``Practitioner``); any other Schedule write stays admin only.
- Who sees what: the shared policy (``sen_shared.fhir.access``) by patient, through the referral
  grants each submission records here for the clinic and the hub; on top of it, clinic staff see
  only their own facility's consults (ServiceRequest and Task whose requester is their
  facility, Communications and Appointments tagged with their facility as the consult's requester,
  ``domain.consults.REQUESTER_TAG``, whoever sent them), in reads, histories and searches (a chain's and a
  ``_has``'s sub-searches, conditional references and included resources too: ``scope_filter``); a
  Communication stored before that tag (until the backfill gives it one) is read by the clinic
  that sent or received it, and is not found by a clinic's search; hub doctors only the consults sent to
  their hub (tagged with it, ``domain.consults.HUB_TAG``: ServiceRequest, Task, Communication,
  Appointment), not every consult of a patient some grant lets them reach.
- An AppointmentResponse (a clinic or a doctor of the patient may write one) is in scope when the
  Appointment it names is: found, read, included and written only by who sees that visit (a clinic's or a
  hub doctor's search of them is limited to the answers naming its consults' visits, ``sp_appointment``
  among their ids). One naming a visit the caller does not see, or none stored, is refused as the same
  422 ("Appointment/<id> is not known"), its AuditEvent the 403.
- What a caller may not see is answered as what it would be if it were not stored (``hide_refused``, as
  the EHR): a read, vread or history of another facility's (another hub's) consult resource is the 404 of
  a made-up id, byte for byte; its AuditEvent records the refusal (403 and why). A role that may not read
  the type at all is still 403, whatever the id.
"""

from __future__ import annotations

from typing import Any

from sen_shared.fhir import access
from sen_shared.fhir import store as st
from sen_shared.fhir.audit import Record
from sen_shared.fhir.body import unpack
from sen_shared.fhir.bundle import refused_entry
from sen_shared.fhir.capability import READ_ONLY_INTERACTIONS
from sen_shared.fhir.guarded import GuardedFhirServer, Hidden, hidden_refusals, in_compartment, mark_recorded
from sen_shared.fhir.http import FhirRequest, FhirResponse
from sen_shared.fhir.outcome import FhirError

from .domain.availability import EXT_ORGANIZATION
from .domain.consults import HUB_TAG, REQUESTER_TAG, ref_id, ref_of, requester_of

WORKFLOW_TYPES = frozenset({"ServiceRequest", "Task", "Communication"})
# the consult's resources whose readers are limited to the consult's clinic and hub
SCOPED_TYPES = WORKFLOW_TYPES | {"Appointment"}
# what the CapabilityStatement lists (FhirConfig.interactions, .search_params): the consult's resources are
# read here and changed through their operations; Slots are computed (api/scheduling.py: read and a search
# of these parameters only)
INTERACTIONS: dict[str, tuple[str, ...]] = {**{t: READ_ONLY_INTERACTIONS for t in sorted(SCOPED_TYPES)},
                                            "Slot": ("read", "search-type")}
SEARCH_PARAMS: dict[str, tuple[str, ...]] = {"Slot": ("_id", "schedule", "start", "status")}
_HOW = {"ServiceRequest": "POST /fhir/ServiceRequest/$submit (or a transaction Bundle holding the consult)",
        "Task": "the Task operations ($accept, $start, $reject, $reassign, $request-info, $provide-info, $cancel, "
                "$complete; $message posts on its thread)",
        "Communication": "Task/{id}/$message (and $request-info, $provide-info)"}
# the index fields naming a workflow resource's facility parties (a Communication's: the rule for
# one stored before the requester tag only)
_PARTY_FIELDS = {"ServiceRequest": ("sp_requester",), "Task": ("sp_requester",),
                 "Communication": ("sp_sender", "sp_recipient")}
# the types a clinic reaches by the requesting-clinic tag (``REQUESTER_TAG``) rather than a party field
_REQUESTER_TAGGED = frozenset({"Appointment", "Communication"})
# an answer to a visit: in scope when the Appointment it names is (``TeleconsultFhirServer.visit_denial``)
ANSWER_TYPE = "AppointmentResponse"


def _clinic_of(principal: Any) -> str | None:
    """``Organization/<facility>`` of a caller whose reach is limited to its clinic's consults."""
    roles = getattr(principal, "roles", frozenset())
    if "clinic" in roles and not roles & {"admin", "health-dept", "doctor"} and principal.facility:
        return f"Organization/{principal.facility}"
    return None


def _hub_of(principal: Any) -> str | None:
    """``Organization/<facility>`` of a hub doctor, whose reach is limited to the consults sent to
    that hub (tagged with it: ``domain.consults.HUB_TAG``); admin and health-dept are not limited."""
    roles = getattr(principal, "roles", frozenset())
    if "doctor" in roles and not roles & {"admin", "health-dept"}:
        return f"Organization/{principal.facility}" if principal.facility else "Organization/-"
    return None


def _limited(principal: Any) -> bool:
    """Is ``principal``'s reach limited to its clinic's (its hub's) consults?"""
    return _clinic_of(principal) is not None or _hub_of(principal) is not None


def _named_visit(reference: Any) -> str | None:
    """``Appointment/<id>`` an AppointmentResponse's ``appointment`` names, as its search index keeps it
    (the last two segments of a reference, absolute or relative), or None."""
    ref = reference.get("reference") if isinstance(reference, dict) else None
    if not isinstance(ref, str) or "?" in ref:
        return None
    rel = "/".join(ref.split("/_history/")[0].rsplit("/", 2)[-2:])
    return rel if (found := ref_of({"reference": rel})) is not None and found.startswith("Appointment/") else None


def _unknown_visit(ref: str | None, where: str) -> FhirError:
    """What an AppointmentResponse naming a visit not stored gets (another facility's gets it too)."""
    return FhirError(f"{ref or 'the appointment'} is not known", status=422, code="processing",
                     expression=[where])


def _tags(head: dict[str, Any]) -> set[str]:
    """``system|code`` of a stored resource's tags (its index field, or its body's meta)."""
    tags = {str(v) for v in head.get("sp__tag") or () if "|" in str(v)}
    res = head.get("res")
    if isinstance(res, dict):
        tags.update(f"{t.get('system')}|{t.get('code')}" for t in (res.get("meta") or {}).get("tag") or ()
                    if isinstance(t, dict))
    return tags


def _scope_denial(principal: Any, rtype: str, head: dict[str, Any] | None) -> str | None:
    """Why ``principal`` may not see this consult resource (None: it may)."""
    if rtype not in SCOPED_TYPES or head is None or head.get("del"):
        return None
    clinic = _clinic_of(principal)
    if clinic is not None:
        if rtype in _REQUESTER_TAGGED:  # tagged with the requesting clinic of its consult when created
            tags = _tags(head)
            mine = f"{REQUESTER_TAG}|{clinic}" in tags
            if rtype == "Communication" and not any(t.startswith(f"{REQUESTER_TAG}|") for t in tags):
                mine = clinic in TeleconsultFhirServer._parties(rtype, head)  # stored before the tag
            if not mine:
                return f"this {rtype} belongs to another facility's consult"
        elif clinic not in TeleconsultFhirServer._parties(rtype, head):
            return f"this {rtype} belongs to another facility's consult"
    hub = _hub_of(principal)
    if hub is not None and f"{HUB_TAG}|{hub}" not in _tags(head):
        return f"this {rtype} belongs to a consult sent to another hub"
    return None


def _scope_filter(principal: Any, rtype: str | None) -> dict[str, Any] | None:
    """The stored documents ``principal`` may find among ``rtype``'s (None: no limit here)."""
    if rtype not in SCOPED_TYPES:
        return None
    clinic, hub = _clinic_of(principal), _hub_of(principal)
    if clinic is not None:
        if rtype in _REQUESTER_TAGGED:  # an equality FerretDB pushes down (an $or over parties it does not)
            return {"sp__tag": f"{REQUESTER_TAG}|{clinic}"}
        return {"sp_requester": clinic}
    if hub is not None:
        return {"sp__tag": f"{HUB_TAG}|{hub}"}  # an equality on an indexed field
    return None


class TeleconsultFhirServer(GuardedFhirServer):
    """:class:`GuardedFhirServer` for teleconsult; ``submit`` handles a consult transaction."""

    submit: Any = None  # (req) -> FhirResponse, wired by the app: the workflow's submission

    # ------------------------------------------------------------------ writes

    def _refuse(self, rtype: str | None) -> None:
        if rtype == "Appointment":  # its status is its slot's claim chain (domain/scheduling.py)
            raise FhirError("Appointment is changed through its operations here: Appointment/$hold, $book, and "
                            "Appointment/{id}/$cancel, $reschedule, $noshow, $fulfill", status=405,
                            code="not-supported")
        if rtype in WORKFLOW_TYPES:
            raise FhirError(f"{rtype} is changed through its operations here: {_HOW[rtype]}", status=405,
                            code="not-supported")

    def create(self, req: FhirRequest) -> FhirResponse:
        self._refuse(req.resource_type)
        return super().create(req)

    def update(self, req: FhirRequest) -> FhirResponse:
        self._refuse(req.resource_type)
        return super().update(req)

    def conditional_update(self, req: FhirRequest) -> FhirResponse:
        self._refuse(req.resource_type)
        return super().conditional_update(req)

    def patch(self, req: FhirRequest) -> FhirResponse:
        self._refuse(req.resource_type)
        principal = self.principal()
        if req.resource_type == ANSWER_TYPE and req.rid and _limited(principal):
            # another consult's answer is patched as one not stored: judged before its version is (412)
            why = self.scope_denial(principal, ANSWER_TYPE, self.store().head(ANSWER_TYPE, req.rid))
            if why is not None:
                with hidden_refusals(self.auditor, principal, Record("patch", resource_type=ANSWER_TYPE,
                                                                     rid=req.rid)):
                    raise Hidden(why, st.not_found(ANSWER_TYPE, req.rid))
        return super().patch(req)

    def body_resource(self, req: FhirRequest, *, where: str = "") -> dict[str, Any]:
        body = super().body_resource(req, where=where)
        self._check_visit(self.principal(), body, f"{where}{ANSWER_TYPE}.appointment")
        return body

    def patched(self, req: FhirRequest, resource: dict[str, Any]) -> dict[str, Any]:
        self._check_visit(self.principal(), resource, f"{ANSWER_TYPE}.appointment")
        return super().patched(req, resource)

    def _check_visit(self, principal: Any, body: dict[str, Any], where: str) -> None:
        """An AppointmentResponse written by a clinic or a hub doctor names a visit of its consults: one it
        does not see is refused as one not stored would be (:func:`_unknown_visit`, the 403 audited)."""
        if body.get("resourceType") != ANSWER_TYPE or not _limited(principal):
            return
        ref = _named_visit(body.get("appointment"))
        why = self.visit_denial(principal, ref)
        if why is not None:
            raise Hidden(why, _unknown_visit(ref, where))

    def delete(self, req: FhirRequest) -> FhirResponse:
        self._refuse(req.resource_type)
        return super().delete(req)

    def _check_write(self, p: Any, f: Any, rec: Any, interaction: str, rtype: str, rid: str | None,
                     body: Any) -> None:
        if rtype == "Schedule" and interaction == "update" and rid and self._own_schedule(p, rid, body):
            return  # a doctor's own hours and leave; audited like every write
        super()._check_write(p, f, rec, interaction, rtype, rid, body)
        if rtype == ANSWER_TYPE and rid and _limited(p):  # overwriting another consult's answer
            why = self.scope_denial(p, rtype, self.store().head(rtype, rid))
            if why is not None:
                raise access.Denied(f"AppointmentResponse/{rid} is not yours to write: {why}")

    def _check_entry(self, p: Any, f: Any, entry: dict[str, Any], interaction: str, rtype: str | None,
                     rec: Record, by_url: dict[str, Any], req: FhirRequest) -> None:
        super()._check_entry(p, f, entry, interaction, rtype, rec, by_url, req)
        res = entry.get("resource")
        if rtype != ANSWER_TYPE or not isinstance(res, dict) or not _limited(p):
            return
        if interaction == "update" and (rid := self._entry_rid(entry, req)) is not None:
            why = self.scope_denial(p, rtype, self.store().head(rtype, rid))
            if why is not None:
                raise access.Denied(f"AppointmentResponse/{rid} is not yours to write: {why}")
        ref = (res.get("appointment") or {}).get("reference") if isinstance(res.get("appointment"), dict) else None
        if isinstance(ref, str) and ref.startswith("Appointment?"):  # as the transaction will resolve it
            ids = self.matches(req, "Appointment", ref.partition("?")[2])
            if len(ids) != 1:
                return  # the transaction refuses it (400/412)
            ref = f"Appointment/{ids[0]}"
        visit = _named_visit({"reference": ref})
        why = self.visit_denial(p, visit)
        if why is not None:
            rec.status, rec.detail = 403, why
            self.auditor.record(p, rec)
            index = next((i for i, e in enumerate((req.body or {}).get("entry") or []) if e is entry), 0)
            raise mark_recorded(_unknown_visit(visit, f"Bundle.entry[{index}].resource.appointment"))

    def _entry_rid(self, entry: dict[str, Any], req: FhirRequest) -> str | None:
        from sen_shared.fhir.bundle import parse_url

        target = parse_url((entry.get("request") or {}).get("url"), req.base, "Bundle.entry.request.url")
        if target.rid is None and target.has_query:
            ids = self.condition(req, ANSWER_TYPE, target.params)[2]
            return ids[0] if len(ids) == 1 else None
        return target.rid

    def _own_schedule(self, principal: Any, rid: str, body: Any) -> bool:
        """The stored Schedule ``rid`` and the new body both name only the caller's Practitioner."""
        roles = getattr(principal, "roles", frozenset())
        me = getattr(principal, "practitioner", None)
        if "doctor" not in roles or not me or not isinstance(body, dict):
            return False
        mine = {f"Practitioner/{me}"}
        doc = self.store().current("Schedule").find_one({"_id": rid}, {"res": 1, "del": 1})
        stored = (unpack(doc) or {}).get("res") if doc and not doc.get("del") else None
        if not isinstance(stored, dict):
            return False
        def actors(res: dict[str, Any]) -> set[str]:
            return {str((a or {}).get("reference", "")) for a in res.get("actor") or [] if isinstance(a, dict)}
        def hub(res: dict[str, Any]) -> list[Any]:  # the Schedule's organization stays the admin's choice
            return [e for e in res.get("extension") or [] if isinstance(e, dict) and e.get("url") == EXT_ORGANIZATION]
        return actors(stored) == mine and actors(body) == mine and hub(stored) == hub(body)

    def bundle(self, req: FhirRequest) -> FhirResponse:
        body = req.body if isinstance(req.body, dict) else {}
        entries = [e for e in body.get("entry") or [] if isinstance(e, dict)]
        touched = {(e.get("resource") or {}).get("resourceType") if isinstance(e.get("resource"), dict) else None
                   for e in entries if str((e.get("request") or {}).get("method", "")).upper() != "GET"}
        touched |= {str((e.get("request") or {}).get("url", "")).split("/", 1)[0].split("?", 1)[0]
                    for e in entries if str((e.get("request") or {}).get("method", "")).upper() != "GET"}
        if body.get("type") == "transaction" and touched & WORKFLOW_TYPES:
            if self.submit is None:
                raise FhirError("consult submission is not wired", status=500)
            return self.submit(req, entries)
        if body.get("type") == "transaction":  # its writes skip create/update/...: refuse the same types here
            for i, e in enumerate(body.get("entry") or []):
                request = e.get("request") if isinstance(e, dict) else None
                if not isinstance(request, dict) or str(request.get("method", "")).upper() == "GET":
                    continue
                resource = e.get("resource") if isinstance(e.get("resource"), dict) else {}
                for rtype in (resource.get("resourceType"),
                              str(request.get("url", "")).split("/", 1)[0].split("?", 1)[0]):
                    if isinstance(rtype, str):
                        with refused_entry(i, rtype):  # 422 naming the entry (not the [base]'s 405)
                            self._refuse(rtype)
        return super().bundle(req)

    # ------------------------------------------------------------------ reads

    def _existing(self, principal: Any, facts: Any, rec: Any, interaction: str, rtype: str, rid: str,
                  head: dict[str, Any] | None = None, *, hide: bool = False) -> None:
        if head is None:
            head = self.store().head(rtype, rid)
        why = self.scope_denial(principal, rtype, head)
        if why is not None and hide:
            # judged before whose patient it is: a refusal by patient (a clinic deletes nothing it reaches by
            # a grant: 403) would tell that it is stored; a role refused the type is still 403, whatever the id
            access.check(principal, interaction, rtype, compartment=in_compartment(rtype))
            raise Hidden(why, st.not_found(rtype, rid))
        super()._existing(principal, facts, rec, interaction, rtype, rid, head=head, hide=hide)
        if why is not None:  # another facility's (another hub's) consult, where a refusal is not hidden: 403
            raise access.Denied(why)

    def vread(self, req: FhirRequest) -> FhirResponse:
        principal = self.principal()
        rtype = req.resource_type
        limited = _clinic_of(principal) is not None or _hub_of(principal) is not None
        if limited and rtype in SCOPED_TYPES | {ANSWER_TYPE} and req.rid and req.vid:
            doc = unpack(self.store().history(rtype).find_one({"_id": f"{req.rid}/{req.vid}"}, {"res": 1}))
            if rtype == "Communication" and doc is not None and isinstance(doc.get("res"), dict) \
                    and requester_of(doc["res"]) is None:
                # a thread message's versions differ by their tags only (the backfill's): one stored
                # before the tags is judged by its current version, as its read and history are
                current = self.store().read_head(rtype, req.rid)
                if current is not None and not current.get("del") and isinstance(current.get("res"), dict):
                    doc = current
            detail = self.scope_denial(principal, rtype, {"res": doc["res"]}) \
                if doc is not None and isinstance(doc.get("res"), dict) else None
            if detail is not None:  # as a version not stored (GuardedFhirServer's vread), its AuditEvent the 403
                with hidden_refusals(self.auditor, principal, Record("vread", resource_type=rtype, rid=req.rid,
                                                                     vid=req.vid)):
                    raise Hidden(detail, st.no_version(rtype, req.rid, req.vid))
        return super().vread(req)

    @staticmethod
    def _parties(rtype: str, head: dict[str, Any]) -> set[str]:
        parties: set[str] = set()
        for key in _PARTY_FIELDS[rtype]:
            parties.update(str(v) for v in head.get(key) or ())
        res = head.get("res")
        if isinstance(res, dict):  # a read's document carries the body, not every index field
            for name in ("requester", "sender"):
                if (r := ref_of(res.get(name))) is not None:
                    parties.add(r)
            for item in res.get("recipient") or []:
                if (r := ref_of(item)) is not None:
                    parties.add(r)
        return parties

    # the consult scoping in every search the caller makes (its own, a chain's or a _has's sub-search, a
    # conditional reference's) and in the included resources of its searches (the shared engine's hooks)
    def scope_filter(self, principal: Any, resource_type: str | None) -> dict[str, Any] | None:
        if resource_type == ANSWER_TYPE and _limited(principal):
            # the answers naming a visit the caller sees: that visits' ids (an equality on their tag, pushed
            # down) and the answers among them (an $in FerretDB evaluates itself: few answers are written)
            visits = self.store().current("Appointment").find(_scope_filter(principal, "Appointment"), {"_id": 1})
            return {"sp_appointment": {"$in": sorted(f"Appointment/{d['_id']}" for d in visits)}}
        return _scope_filter(principal, resource_type)

    def scope_denial(self, principal: Any, resource_type: str, head: dict[str, Any] | None) -> str | None:
        if resource_type == ANSWER_TYPE and head is not None and not head.get("del") and _limited(principal):
            res = head.get("res")
            if isinstance(res, dict):
                visit = _named_visit(res.get("appointment"))
            else:  # a head without its body: the visit its index names
                visit = next((str(v) for v in head.get("sp_appointment") or ()
                              if str(v).startswith("Appointment/")), None)
            return self.visit_denial(principal, visit)
        return _scope_denial(principal, resource_type, head)

    def visit_denial(self, principal: Any, visit: str | None) -> str | None:
        """Why ``principal`` may not see the visit ``Appointment/<id>`` (None: it may): another facility's
        (another hub's) consult's, or none stored."""
        if not _limited(principal):
            return None
        head = self.store().head("Appointment", ref_id(visit)) if visit is not None else None
        if head is None or head.get("del"):
            return "it names no visit of the caller's consults"
        why = _scope_denial(principal, "Appointment", head)
        return None if why is None else f"it names a visit of another consult: {why}"
