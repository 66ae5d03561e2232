"""Scheduling operations (IHE ITI Scheduling) and the computed Slots: thin handlers.

``Appointment/$find``, ``$hold``, ``$book`` take a ``Parameters`` resource (``$find`` also the
query string); ``Appointment/{id}/$cancel``, ``$reschedule``, ``$noshow``, ``$fulfill`` act on one
appointment. ``GET /fhir/Slot`` and ``/fhir/Slot/{id}`` serve the computed slots (their status
from the claim chains); a bundle's ``GET Slot/{id}`` entry is answered by the same read
(``slot_entry``). The rules are in ``domain/scheduling.py``.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta
from typing import Any

from sen_shared.auth import current_principal
from sen_shared.errors import Forbidden
from sen_shared.fhir.audit import Record
from sen_shared.fhir.guarded import Hidden, already_recorded, hidden_refusals, mark_recorded
from sen_shared.fhir.http import FhirRequest, FhirResponse, from_flask, to_connexion
from sen_shared.fhir.outcome import FhirError, outcome
from sen_shared.fhir.rest import not_modified
from sen_shared.fhir.store import not_found
from sen_shared.fhir.validate import check_id, validate_resource
from sen_shared.idempotency_key import idempotent
from sen_shared.ids import new_uuid
from sen_shared.runtime import current

from ..domain import scheduling as sch
from ..domain.availability import TZ, parse_slot_id
from ..scheduling_settings import SchedulingSettings, scheduling_config
from ..workflow import Actor

BOOKERS = ("clinic", "doctor", "admin")
READERS = ("clinic", "doctor", "admin", "health-dept", "service")
_configs: dict[int, sch.SchedulingConfig] = {}


def _cfg() -> sch.SchedulingConfig:
    settings = current().settings
    cfg = _configs.get(id(settings))
    if cfg is None:
        if not isinstance(settings, SchedulingSettings):
            raise RuntimeError("the teleconsult settings lack the scheduling settings")
        cfg = _configs[id(settings)] = scheduling_config(settings)
    return cfg


def _allow(*roles: str, rec: Record | None = None) -> Any:
    """The caller, when it holds one of ``roles``; else 403, recorded as ``rec`` (the request's one AuditEvent,
    :func:`hidden_refusals`) when given."""
    p = current_principal()
    if not p.has_any(roles):
        refusal = Forbidden(f"this needs one of the roles {', '.join(sorted(roles))}; "
                            f"the token has {', '.join(sorted(p.roles)) or 'none'}")
        if rec is None:
            raise refusal
        with hidden_refusals(current().extras["fhir"].auditor, p, rec):
            raise refusal
    return p


def _operation(op: str, rid: str | None = None) -> Record:
    """The AuditEvent record of an Appointment operation's refusal by role."""
    return Record("operation", "Appointment", rid, operation=op)


def _check_facility(principal: Any, appointment: dict[str, Any] | None, stored: str | None = None,
                    op: str = "") -> None:
    """Clinic staff act only on their own facility's consults: an Appointment based on a
    ServiceRequest must be one their facility requested. Hub doctors act only on their hub's
    appointments: the slot's Schedule belongs to their facility (``schedule-organization``).
    ``stored``: the id of the stored Appointment ``op`` acts on, whose refusal is answered as an
    Appointment not stored (404, :func:`sch.read_appointment`'s), its AuditEvent the 403; a proposal's
    (what ``$hold``, ``$book`` or ``$reschedule`` would create) ``basedOn`` another facility's
    ServiceRequest is answered as one not stored (422, as a made-up id's), another hub's slot is 403. Each
    refusal is the request's one AuditEvent, recorded here (the error marked so, ``mark_recorded``)."""
    why = _facility_refusal(principal, appointment)
    if why is None:
        return
    reason, unknown = why
    if stored is None and unknown is None:
        _audit(principal, op, None, appointment, 403, reason)
        raise mark_recorded(FhirError(f"forbidden: {reason}", status=403, code="forbidden"))
    with hidden_refusals(current().extras["fhir"].auditor, principal,
                         Record("operation", "Appointment", stored, patients=_patients(appointment), operation=op)):
        raise Hidden(reason, not_found("Appointment", stored) if stored is not None else unknown)


def _unknown_request(ref: str) -> FhirError:
    """What a proposal ``basedOn`` a ServiceRequest not stored gets (another facility's gets it too)."""
    return FhirError(f"{ref} is not known", status=422, code="processing", expression=["basedOn"])


def _facility_refusal(principal: Any, appointment: dict[str, Any] | None) -> tuple[str, FhirError | None] | None:
    """Why ``principal`` may not act on ``appointment`` (:func:`_check_facility`), None when it may; with
    the answer of an id not stored when the refusal names a record the caller may not know exists."""
    roles = principal.roles
    if appointment is not None and "doctor" in roles and not roles & {"admin", "health-dept"}:
        ref = next((str(s.get("reference", "")) for s in appointment.get("slot") or () if isinstance(s, dict)), "")
        parsed = parse_slot_id(ref[5:]) if ref.startswith("Slot/") else None
        av = sch.availability_of(current().db, parsed[0]) if parsed else None
        hub = av.organization if av is not None else None
        if hub is not None and hub != f"Organization/{principal.facility}":
            return f"this appointment is with another hub ({hub})", None
        return None
    if appointment is None or "clinic" not in roles or roles & {"admin", "doctor", "health-dept"}:
        return None
    for ref in (str((b or {}).get("reference", "")) for b in appointment.get("basedOn") or ()):
        if not ref.startswith("ServiceRequest/"):
            continue
        doc = current().db["ServiceRequest"].find_one({"_id": ref.split("/", 1)[1]}, {"sp_requester": 1, "del": 1})
        if doc is None or doc.get("del"):
            raise _unknown_request(ref)
        if not principal.facility or f"Organization/{principal.facility}" not in (doc.get("sp_requester") or ()):
            return f"{ref} is another facility's consult", _unknown_request(ref)
    return None


def _ctx(principal: Any) -> sch.Ctx:
    return sch.Ctx(_cfg(), by=principal.sub or "anonymous", now=sch.utcnow(), ref=Actor.of(principal).ref)


def _audit(principal: Any, op: str, rid: str | None, resource: dict[str, Any] | None, status: int,
           detail: str | None = None) -> None:
    fhir = current().extras.get("fhir")
    if fhir is None or status == 409:  # a lost race read and changed nothing: under contention
        return                         # its AuditEvent would double the database's work
    fhir.auditor.record(principal, Record("operation", "Appointment", rid, patients=_patients(resource),
                                          status=status, detail=detail, operation=op))


def _audit_failure(principal: Any, op: str, rid: str | None, resource: dict[str, Any] | None,
                   err: FhirError) -> None:
    """The AuditEvent of ``op`` answered ``err``, unless it is a refusal recorded already (as the 403 it is,
    :func:`_check_facility`): one AuditEvent per refused request."""
    if not already_recorded(err):
        _audit(principal, op, rid, resource, err.status, err.detail)


def _patients(resource: dict[str, Any] | None) -> list[str]:
    """The ``Patient/<id>`` participants of an Appointment (its AuditEvent's entities)."""
    return [str((p.get("actor") or {}).get("reference")) for p in (resource or {}).get("participant") or ()
            if str((p.get("actor") or {}).get("reference", "")).startswith("Patient/")]


# ---------------------------------------------------------------------------- parameters

def _params(req: FhirRequest) -> dict[str, list[Any]]:
    """Operation parameters from the query string and a ``Parameters`` body (values unwrapped)."""
    out: dict[str, list[Any]] = defaultdict(list)
    for k, v in req.params:
        if k not in ("_format", "_pretty"):
            out[k].append(v)
    body = req.body
    if body is None:
        return out
    if not isinstance(body, dict):
        raise FhirError("the body must be a Parameters resource", status=400)
    if body.get("resourceType") == "Appointment":  # a bare proposal: taken as appointment-resource
        out["appointment-resource"].append(body)
        return out
    if body.get("resourceType") != "Parameters":
        raise FhirError("the body must be a Parameters resource", status=400, expression=["resourceType"])
    given = body.get("parameter") or []
    if not isinstance(given, list):
        raise FhirError("Parameters.parameter must be a list", status=400, expression=["Parameters.parameter"])
    for i, p in enumerate(given):
        if not isinstance(p, dict) or not isinstance(p.get("name"), str):
            raise FhirError("each parameter needs a name", status=400, expression=[f"Parameters.parameter[{i}]"])
        if "resource" in p:
            out[p["name"]].append(p["resource"])
            continue
        values = [v for k, v in p.items() if k.startswith("value")]
        if len(values) != 1:
            raise FhirError(f"parameter {p['name']} needs one value[x]", status=400,
                            expression=[f"Parameters.parameter[{i}]"])
        out[p["name"]].append(values[0])
    return out


def _datetime(value: Any, name: str) -> datetime:
    text = str(value)
    try:
        if len(text) == 10:
            return datetime.fromisoformat(text).replace(tzinfo=TZ)
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise FhirError(f"{name} must be a date or dateTime, e.g. 2026-12-07T08:00:00+07:00", status=400,
                        expression=[name]) from None
    return dt if dt.tzinfo else dt.replace(tzinfo=TZ)


def _ref(value: Any) -> str:
    if isinstance(value, dict):
        return str(value.get("reference") or "")
    return str(value)


def _codes(values: list[Any]) -> set[str]:
    out: set[str] = set()
    for v in values:
        if isinstance(v, dict):
            codings = v.get("coding") if "coding" in v else [v]
            out.update(str(c.get("code")) for c in codings or () if isinstance(c, dict) and c.get("code"))
        else:
            out.update(p.split("|")[-1] for p in str(v).split(",") if p)
    return out


def _refs(values: list[Any], rtype: str) -> set[str]:
    out: set[str] = set()
    for v in values:
        for part in _ref(v).split(","):
            if part:
                out.add(part if "/" in part else f"{rtype}/{part}")
    return out


def _one(params: dict[str, list[Any]], name: str, required: bool = False) -> Any:
    values = params.get(name) or []
    if len(values) > 1:
        raise FhirError(f"{name} may be given once", status=400, expression=[name])
    if required and not values:
        raise FhirError(f"{name} is required", status=400, expression=[name])
    return values[0] if values else None


def _count(value: Any) -> int:
    if value is None:
        return sch.DEFAULT_COUNT
    text = str(value)
    if not text.isdigit() or not 1 <= int(text) <= sch.MAX_COUNT:
        raise FhirError(f"_count takes 1..{sch.MAX_COUNT}", status=400, expression=["_count"])
    return int(text)


def _bundle(kind: str, resources: list[dict[str, Any]], base: str, *, mode: str | None = None) -> dict[str, Any]:
    entries = []
    for r in resources:
        entry: dict[str, Any] = {"fullUrl": f"{base}/{r['resourceType']}/{r['id']}" if r.get("id")
                                 else f"urn:uuid:{new_uuid()}", "resource": r}
        if mode:
            entry["search"] = {"mode": mode if r["resourceType"] != "OperationOutcome" else "outcome"}
        entries.append(entry)
    out: dict[str, Any] = {"resourceType": "Bundle", "id": new_uuid(), "type": kind, "entry": entries}
    if kind == "searchset":
        out["total"] = sum(1 for r in resources if r["resourceType"] != "OperationOutcome")
    return out


def _proposal(params: dict[str, list[Any]]) -> dict[str, Any] | None:
    res = _one(params, "appointment-resource")
    if res is None:
        return None
    if not isinstance(res, dict) or res.get("resourceType") != "Appointment":
        raise FhirError("appointment-resource must be an Appointment", status=400,
                        expression=["appointment-resource"])
    validate_resource(res, expected_type="Appointment", where="appointment-resource")
    return res


def _appointment_ref(params: dict[str, list[Any]]) -> str | None:
    value = _one(params, "appointment-reference")
    if value is None:
        return None
    ref = _ref(value)
    if not ref.startswith("Appointment/"):
        raise FhirError("appointment-reference must be Appointment/<id>", status=400,
                        expression=["appointment-reference"])
    return check_id(ref.split("/", 1)[1], "appointment-reference")


# ---------------------------------------------------------------------------- operations
# $find, $hold and $book take no arguments from connexion: they read the query and the body
# themselves (``from_flask``), and a handler that accepted them (``**kwargs``) would have connexion
# parse the JSON body a second time on every request, a lost race's included.

def find() -> Any:
    _allow(*BOOKERS, "service", rec=_operation("$find"))
    req = from_flask("Appointment", operation="$find")
    params = _params(req)
    start = _datetime(_one(params, "start", True), "start")
    end = _datetime(_one(params, "end", True), "end")
    if end - start > timedelta(days=93):
        raise FhirError("a search covers at most 93 days (end - start)", status=400, expression=["end"])
    patient = _one(params, "patient-reference") or _one(params, "patient")
    sr = _one(params, "service-request")
    q = sch.FindQuery(
        start=start, end=end, specialty=_codes(params.get("specialty", [])),
        practitioner=_refs(params.get("practitioner", []), "Practitioner"),
        organization=_refs(params.get("organization", []), "Organization"),
        count=_count(_one(params, "_count")),
        patient=_ref(patient) if patient else None, service_request=_ref(sr) if sr else None)
    found = sch.find(current().db, _cfg(), q)  # free slots only, no patient data read: no AuditEvent
    return to_connexion(FhirResponse(200, _bundle("searchset", found, req.base, mode="match")), req)


@idempotent()
def hold() -> Any:
    principal = _allow(*BOOKERS, rec=_operation("$hold"))
    req = from_flask("Appointment", operation="$hold")
    params = _params(req)
    proposal = _proposal(params)
    ref = None
    if proposal is None:
        ref = _appointment_ref(params)
        if ref is None:
            raise FhirError("$hold needs appointment-resource (a proposal from $find) or appointment-reference",
                            status=400, expression=["appointment-resource"])
        proposal = sch.read_appointment(current().db, ref)
    _check_facility(principal, proposal, ref, "$hold")  # a stored one's refusal: as one not stored
    try:
        appointment = sch.hold(current().db, _ctx(principal), proposal)
    except sch.SlotGone as gone:
        cancelled = {**proposal, "status": "cancelled"}
        cancelled.pop("id", None)
        _audit(principal, "$hold", None, proposal, 409, gone.detail)
        body = _bundle("collection", [cancelled, outcome(gone.detail, status=409, code="not-found",
                                                             severity="warning")], req.base)
        return to_connexion(FhirResponse(200, body), req)
    except FhirError as err:
        _audit_failure(principal, "$hold", None, proposal, err)
        raise
    _audit(principal, "$hold", appointment["id"], appointment, 200)
    return to_connexion(FhirResponse(200, _bundle("collection", [appointment], req.base)), req)


@idempotent()
def book() -> Any:
    principal = _allow(*BOOKERS, rec=_operation("$book"))
    req = from_flask("Appointment", operation="$book")
    params = _params(req)
    ref = _appointment_ref(params)
    ctx = _ctx(principal)
    peeked = None
    raw = None if ref else _one(params, "appointment-resource")
    if isinstance(raw, dict) and raw.get("resourceType") == "Appointment":
        # the slot first: a taken one is a 409 before the body is validated or anything else is
        # done (most requests on a contended slot lose; their answer should cost little)
        # (a free slot is this request's to claim, the only one of this process: others on the
        # same slot wait for its outcome; the turn ends with the claim, or below when none is made)
        peeked = sch.peek(current().db, ctx.cfg, raw, ctx.now)
    try:
        proposal = None if ref else _proposal(params)
        if ref is None and proposal is None:
            raise FhirError("$book needs appointment-reference (a held Appointment) or appointment-resource",
                            status=400, expression=["appointment-reference"])
        if ref is None:
            _check_facility(principal, proposal, op="$book")
        else:
            _check_facility(principal, sch.read_appointment(current().db, ref), ref, "$book")
        try:
            appointment = sch.book(current().db, ctx, request=proposal, appointment_id=ref, peeked=peeked)
        except FhirError as err:
            _audit_failure(principal, "$book", ref, proposal, err)
            raise
    finally:
        if peeked is not None:
            peeked.end()
    _audit(principal, "$book", appointment["id"], appointment, 200)
    return to_connexion(FhirResponse(200, _bundle("collection", [appointment], req.base)), req)


def _on_one(op: str, roles: tuple[str, ...], id: str, act: Any) -> Any:  # noqa: A002
    principal = _allow(*roles, rec=_operation(op, id))
    req = from_flask("Appointment", check_id(id), operation=op)
    params = _params(req)
    _check_facility(principal, sch.read_appointment(current().db, id), id, op)
    try:
        appointment = act(principal, params, id)
    except FhirError as err:
        _audit_failure(principal, op, id, None, err)
        raise
    _audit(principal, op, appointment.get("id", id), appointment, 200)
    return to_connexion(FhirResponse(200, appointment), req)


@idempotent()
def cancel(id: str, **_: Any) -> Any:  # noqa: A002 - the spec's name
    def act(p: Any, params: dict[str, list[Any]], rid: str) -> dict[str, Any]:
        reason = _one(params, "reason")
        return sch.cancel(current().db, _ctx(p), rid, str(reason)[:500] if reason else "cancelled")
    return _on_one("$cancel", BOOKERS, id, act)


@idempotent()
def reschedule(id: str, **_: Any) -> Any:  # noqa: A002
    def act(p: Any, params: dict[str, list[Any]], rid: str) -> dict[str, Any]:
        proposal = _proposal(params)
        if proposal is None:
            raise FhirError("$reschedule needs appointment-resource (the new slot, a proposal from $find)",
                            status=400, expression=["appointment-resource"])
        _check_facility(p, proposal, op="$reschedule")
        return sch.reschedule(current().db, _ctx(p), rid, proposal)
    return _on_one("$reschedule", BOOKERS, id, act)


@idempotent()
def noshow(id: str, **_: Any) -> Any:  # noqa: A002
    return _on_one("$noshow", ("doctor", "admin"), id,
                   lambda p, params, rid: sch.mark_noshow(current().db, _ctx(p), rid))


@idempotent()
def fulfill(id: str, **_: Any) -> Any:  # noqa: A002
    return _on_one("$fulfill", ("doctor", "admin"), id,
                   lambda p, params, rid: sch.mark_fulfilled(current().db, rid, by=p.sub or "anonymous", cfg=_cfg()))


# ---------------------------------------------------------------------------- slots (computed)

def _slot_reader(rid: str | None) -> Any:
    """The caller of a read of Slot ``rid`` (``GET /fhir/Slot/{id}``, a bundle's ``GET Slot/{id}`` entry): a
    role that reads no Slot is 403, recorded once as the read it refuses (:func:`_allow`)."""
    return _allow(*READERS, rec=Record("read", "Slot", rid))


def read_slot(id: str) -> Any:  # noqa: A002
    _slot_reader(id)
    req = from_flask("Slot", check_id(id), body=False)
    return to_connexion(slot_answer(req), req)


def slot_entry(req: FhirRequest) -> FhirResponse:
    """A bundle's ``GET Slot/{id}`` entry (the engine's ``own_reads``): answered as ``GET /fhir/Slot/{id}``
    (:func:`slot_answer`); a role that reads no Slot is the entry's 403, recorded as the single read's is
    (one AuditEvent per refused entry, stored with the bundle's)."""
    try:
        _slot_reader(req.rid)
    except Forbidden as err:
        raise mark_recorded(FhirError(f"forbidden: {err.detail}", status=403, code="forbidden")) from None
    return slot_answer(req)


def slot_answer(req: FhirRequest) -> FhirResponse:
    """The computed Slot ``req.rid`` (a conditional read as the engine's: 304 when unchanged)."""
    slot = sch.read_slot(current().db, _cfg(), check_id(req.rid))
    headers = {"ETag": f'W/"{slot["meta"]["versionId"]}"'}
    changed = slot["meta"].get("lastUpdated")  # a slot never held has none
    if changed:
        headers["Last-Modified"] = changed
    when = datetime.fromisoformat(changed) if changed else None
    if not_modified(req, int(slot["meta"]["versionId"]), when):  # a conditional read, as the engine's
        return FhirResponse(304, None, headers)
    return FhirResponse(200, slot, headers)


def search_slots() -> Any:
    _allow(*READERS, rec=Record("search", "Slot"))
    req = from_flask("Slot", body=False)
    params: dict[str, list[str]] = defaultdict(list)
    for k, v in req.params:
        params[k].append(v)
    known = {"schedule", "start", "status", "_count", "_format", "_pretty", "_id"}
    unknown = sorted(set(params) - known)
    if unknown:
        raise FhirError(f"Slot search takes schedule, start (ge/gt/le/lt), status, _id and _count; not "
                        f"{', '.join(unknown)}", status=400, expression=unknown)
    now = sch.utcnow()
    lo, hi = now, now + timedelta(days=_cfg().horizon_days)
    for v in params.get("start", []):
        prefix, text = (v[:2], v[2:]) if v[:2] in ("ge", "gt", "le", "lt", "eq") else ("eq", v)
        dt = _datetime(text, "start")
        if not 1900 <= dt.year < 9999:  # the calendar's days are derived around it (9999-12-31: 400, not 500)
            raise FhirError("start must lie between the years 1900 and 9998", status=400, expression=["start"])
        if prefix in ("ge", "gt"):
            lo = dt
        elif prefix in ("le", "lt"):
            hi = dt
        else:
            lo, hi = dt, dt + (timedelta(days=1) if len(text) == 10 else timedelta(minutes=1))
    if hi - lo > timedelta(days=93):
        raise FhirError("a Slot search covers at most 93 days: give start=ge... and start=lt...", status=400,
                        expression=["start"])
    schedules = {s.split("/")[-1] for v in params.get("schedule", []) for s in v.split(",") if s} or None
    status = {s for v in params.get("status", []) for s in v.split(",") if s} or None
    count = _count(params["_count"][0] if params.get("_count") else None)
    if params.get("_id"):
        wanted = {s for v in params["_id"] for s in v.split(",")}
        slots = []
        for sid in sorted(wanted):
            try:
                slots.append(sch.read_slot(current().db, _cfg(), sid))
            except FhirError:
                continue
        slots = [s for s in slots if status is None or s["status"] in status]
    else:
        slots = list(sch.search_slots(current().db, _cfg(), schedule=schedules, start=lo, end=hi, status=status,
                                      count=count))
    return to_connexion(FhirResponse(200, _bundle("searchset", slots, req.base, mode="match")), req)


def slot_write() -> Any:
    raise FhirError("Slots are computed from the Schedules' availability and their bookings: change the "
                    "Schedule, or use Appointment/$hold, $book and $cancel", status=405, code="not-supported")


def slot_put(id: str, **_: Any) -> Any:  # noqa: A002
    return slot_write()


def slot_delete(id: str, **_: Any) -> Any:  # noqa: A002
    return slot_write()


find_get = find  # the query form of $find (one operationId per operation)
