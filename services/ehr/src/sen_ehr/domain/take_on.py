"""Taking a patient on: a clinic whose nurse holds the patient's card is granted the record.

A patient registered at another facility comes to this clinic. The nurse types the CCCD (or BHYT
card number) and the EHR answers 409: that number is ``Patient/x``'s, whom the clinic does not
reach (``sen_shared.fhir.access``: owners are managingOrganization / generalPractitioner). The
operation ``POST /fhir/Patient/{id}/$take-on`` (a Parameters: ``identifier``, the FULL number
as a ``valueIdentifier`` of the CCCD or BHYT system, and ``reason``, a ``valueString`` such as
"Người bệnh đến khám tại cơ sở") grants the caller's facility the patient, as a referral grant
does a hub: read and write the record, no deletes, no change of the managing organization.

- Only the ``clinic`` role with a facility claim; the identifier must be exactly one the patient
  holds (the number compared without spaces, a BHYT number without case). A wrong number, or a
  patient that does not exist, is 403 (``forbidden``): the answer says nothing about who holds
  what. Bad input is 400 with an OperationOutcome naming the parameter.
- The grant is one insert-only document of the ``grants`` collection (the referral grants' own),
  ``_id`` = ``take-on|<Patient ref>|<Organization ref>`` (:func:`grant_key`): a double click, two
  nurses of the clinic at once, a retry on a slow link: one insert wins, every call answers the
  same grant (201 for the winner, 200 for the others). It does not expire; ``pair`` and ``grantee``
  are what the access policy reads.
- It ends when the facility (or an admin) ends it (``$end-take-on``, :mod:`.end_take_on`): an end
  record inserted under ``take-on-end|<Patient ref>|<Organization ref>|<generation>``
  (:func:`end_key`), one per grant whatever the number of ends at once. Taking the patient on
  again then claims the next generation's grant (``take-on|...|<n>``, n >= 2), again one insert
  per generation: nothing is ever updated (ARCHITECTURE §2).
- Wrong numbers are limited per user (:mod:`.take_on_failures`): after ``SEN_TAKE_ON_MAX_FAILURES``
  in ``SEN_TAKE_ON_FAILURE_WINDOW_SECONDS``, 429 with Retry-After before any number is compared.
- Every attempt, refused ones included, is an AuditEvent (subtype ``operation`` + ``take-on``,
  the patient as entity, the reason as ``purposeOfEvent``), written by the guarded server's auditor.

Never by name: the operation takes no search, and a patient search stays limited to the patients
the caller reaches. The pure rules (:func:`parse`, :func:`holds`) are separate from the store.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pymongo.database import Database
from sen_shared import bhyt
from sen_shared.claims import claim_once
from sen_shared.fhir.access import ENDED, GRANTS, Denied, grant_id
from sen_shared.fhir.outcome import FhirError

from . import CCCD_SYSTEM
from . import take_on_failures as failures

OPERATION = "take-on"
SYSTEMS = (CCCD_SYSTEM, bhyt.CARD_SYSTEM)
REASON_MAX = 500
KIND = "take-on"  # the grant document's kind (a referral grant has none)


def definition(name: str, title: str, code: str, *, type_level: bool, description: str,
               parameters: list[dict[str, Any]]) -> dict[str, Any]:
    """The OperationDefinition ``Patient-<code>`` of a Patient operation that changes the record's
    grants (``$take-on``, ``$end-take-on``), on an instance (and on the type when ``type_level``)."""
    return {
        "resourceType": "OperationDefinition", "id": f"Patient-{code}", "name": name, "title": title,
        "status": "active", "kind": "operation", "publisher": "Sen", "affectsState": True, "code": code,
        "resource": ["Patient"], "system": False, "type": type_level, "instance": True,
        "description": description, "parameter": parameters}


def parameter(name: str, use: str, type_: str, documentation: str, *, min_: int = 1) -> dict[str, Any]:
    """One parameter of :func:`definition` (at most once)."""
    return {"name": name, "use": use, "min": min_, "max": "1", "type": type_, "documentation": documentation}


def out_parameters(patient: str, grantee: str, reason: str) -> list[dict[str, Any]]:
    """The out parameters both operations answer first (:func:`answer_parameters`), so documented."""
    return [parameter("patient", "out", "Reference", patient), parameter("grantee", "out", "Reference", grantee),
            parameter("reason", "out", "string", reason)]


# The operation as the CapabilityStatement defines it (sen_shared.fhir.capability: served at
# <base>/OperationDefinition/Patient-take-on, its canonical URL, added there)
DEFINITION: dict[str, Any] = definition(
    "TakeOn", "Take on a patient registered at another facility", OPERATION, type_level=True,
    description=(
        "Grants the caller's facility (the clinic role with a facility claim) the patient's record, as a "
        "referral grant grants a hub (read and write, no deletes, no expiry), on presenting the patient's "
        "FULL CCCD or BHYT card number. On an instance (Patient/[id]/$take-on) the number must be that "
        "patient's; on the type (Patient/$take-on) the one patient holding it is taken on. One grant per "
        "patient and facility: 201 for the call that made it, 200 (the same grant) for any other. A number "
        "that is not the patient's, or nobody's: 403. Every attempt is an AuditEvent (subtype take-on)."),
    parameters=[
        parameter("identifier", "in", "Identifier",
                  f"the patient's full number: system {CCCD_SYSTEM} or {bhyt.CARD_SYSTEM}"),
        parameter("reason", "in", "string", f"why the patient is taken on (1 to {REASON_MAX} characters), e.g. "
                                            "'Người bệnh đến khám tại cơ sở'; the AuditEvent's purposeOfEvent"),
        *out_parameters("the patient taken on", "the facility granted the record (Organization)",
                        "the reason given by the call that made the grant"),
        parameter("granted", "out", "dateTime", "when the grant was made")])


@dataclass(frozen=True)
class Request:
    system: str
    value: str
    reason: str


def bad(detail: str, where: str) -> FhirError:
    return FhirError(detail, status=400, code="invalid", expression=[where])


def _compact(system: str, value: str) -> str:
    text = "".join(value.split())
    return text.upper() if system == bhyt.CARD_SYSTEM else text


def where(name: str) -> str:
    """The FHIRPath of the Parameters' parameters named ``name`` (an error's expression)."""
    return f"Parameters.parameter.where(name='{name}')"


def parameters(body: Any, code: str, first: str, second: str) -> dict[str, list[dict[str, Any]]]:
    """The parameters of ``$<code>``'s Parameters ``body`` by name (each a list): only ``first`` and
    ``second`` are known. 400 naming the part otherwise."""
    if not isinstance(body, dict) or body.get("resourceType") != "Parameters":
        raise bad(f"${code} takes a Parameters resource ({first}, {second})", "Parameters")
    params = body.get("parameter")
    if not isinstance(params, list) or not all(isinstance(p, dict) for p in params):
        raise bad("Parameters.parameter must be a list of parameters", "Parameters.parameter")
    for p in params:
        if not isinstance(p.get("name"), str) or p["name"] not in (first, second):  # a list or object: unhashable
            raise bad(f"unknown parameter {p.get('name')!r}: ${code} takes {first} and {second}",
                      "Parameters.parameter.name")
    return {name: [p for p in params if p.get("name") == name] for name in (first, second)}


def reason_of(found: list[dict[str, Any]], why: str) -> str:
    """The one ``reason`` parameter's valueString (1 to REASON_MAX characters), its white space folded;
    400 otherwise (``why``: what the reason says, for the error)."""
    if len(found) != 1:
        raise bad(f"give exactly one reason ({why})", where("reason"))
    reason = found[0].get("valueString")
    if not isinstance(reason, str) or not reason.strip() or len(reason) > REASON_MAX:
        raise bad(f"reason must be a valueString of 1 to {REASON_MAX} characters", f"{where('reason')}.valueString")
    return " ".join(reason.split())


def parse(body: Any) -> Request:
    """The operation's Parameters: one ``identifier`` (valueIdentifier of the CCCD or BHYT system with
    a value) and one ``reason`` (valueString, 1 to 500 characters). 400 naming the part otherwise."""
    found = parameters(body, OPERATION, "identifier", "reason")
    where_id = where("identifier")
    if len(found["identifier"]) != 1:
        raise bad("give exactly one identifier: the patient's CCCD or health insurance card number", where_id)
    ident = found["identifier"][0].get("valueIdentifier")
    if not isinstance(ident, dict) or ident.get("system") not in SYSTEMS:
        raise bad(f"identifier must be a valueIdentifier of the system {CCCD_SYSTEM} or {bhyt.CARD_SYSTEM}",
                   f"{where_id}.valueIdentifier.system")
    value = ident.get("value")
    if not isinstance(value, str) or not value.strip() or len(value) > 64:
        raise bad("identifier.value must be the full number (1 to 64 characters)", f"{where_id}.valueIdentifier.value")
    reason = reason_of(found["reason"], "e.g. the patient came to this facility")
    return Request(ident["system"], _compact(ident["system"], value), reason)


def holds(patient: dict[str, Any] | None, req: Request) -> bool:
    """Whether the stored Patient resource holds ``req``'s identifier (system and full number)."""
    if not isinstance(patient, dict):
        return False
    for ident in patient.get("identifier") or ():
        if not isinstance(ident, dict) or ident.get("system") != req.system:
            continue
        value = ident.get("value")
        if isinstance(value, str) and hmac.compare_digest(_compact(req.system, value).encode(), req.value.encode()):
            return True
    return False


def grant_key(patient: str, grantee: str, generation: int = 1) -> str:
    """The grant's ``_id``: one per (patient, facility, generation), whoever asks and however often.
    The first generation's key is the one grants had before they could end."""
    key = f"{KIND}|{patient}|{grantee}"
    return key if generation <= 1 else f"{key}|{generation}"


def end_key(patient: str, grantee: str, generation: int) -> str:
    """The ``_id`` of the record ending the grant of that generation: one end per grant."""
    return f"{ENDED}|{patient}|{grantee}|{generation}"


def generation(doc: dict[str, Any]) -> int:
    return int(doc.get("generation") or 1)


@dataclass(frozen=True)
class State:
    """The (patient, facility) pair's latest take-on grant (None: never taken on) and its end (None: active)."""

    grant: dict[str, Any] | None
    end: dict[str, Any] | None


def state(db: Database, patient: str, grantee: str) -> State:
    """The pair's take-on state from its documents (one equality on ``pair``, pushed down by FerretDB)."""
    docs = list(db[GRANTS].find({"pair": grant_id(patient, grantee)}))
    grants = [d for d in docs if d.get("kind") == KIND]
    if not grants:
        return State(None, None)
    latest = max(grants, key=generation)
    return State(latest, next((d for d in docs if d.get("kind") == ENDED and d.get("ends") == latest["_id"]), None))


ROUNDS = 8  # take-on and end alternating faster than this is not a nurse's doing


def grant(db: Database, patient: str, grantee: str, reason: str, requester: str) -> tuple[bool, dict[str, Any]]:
    """Claim the take-on grant of ``patient`` for ``grantee``: (True, the document) for the call that
    made it, (False, the first one's document) for any other, however many run at once. An ended grant
    is followed by the next generation's (claimed the same way); a grant found ended after the claim
    (an end in between) is followed too, so the answer is a grant that was active after the call began."""
    coll = db[GRANTS]
    stored: dict[str, Any] = {}
    for _ in range(ROUNDS):
        now = state(db, patient, grantee)
        gen = 1 if now.grant is None else generation(now.grant) + (1 if now.end is not None else 0)
        made, stored = claim_once(coll, grant_key(patient, grantee, gen), {
            "pair": grant_id(patient, grantee), "patient": patient, "grantee": grantee, "kind": KIND,
            "generation": gen, "reason": reason, "requester": requester, "expires": None,
            "created": datetime.now(UTC)})
        if made or coll.find_one({"_id": end_key(patient, grantee, gen)}, {"_id": 1}) is None:
            return made, stored
    return False, stored


def end(db: Database, patient: str, grantee: str, reason: str, by: str) -> tuple[bool, dict[str, Any]] | None:
    """End the pair's take-on grant: (True, the end record) for the call that ended it, (False, that
    record) for any other, however many at once (one insert under :func:`end_key` wins); None when
    the facility never took the patient on."""
    now = state(db, patient, grantee)
    if now.grant is None:
        return None
    if now.end is not None:
        return False, now.end
    gen = generation(now.grant)
    return claim_once(db[GRANTS], end_key(patient, grantee, gen), {
        "pair": grant_id(patient, grantee), "patient": patient, "grantee": grantee, "kind": ENDED,
        "ends": now.grant["_id"], "generation": gen, "reason": reason, "by": by, "created": datetime.now(UTC)})


def iso(value: Any) -> str:
    if isinstance(value, datetime):
        value = (value if value.tzinfo else value.replace(tzinfo=UTC)).astimezone(UTC).isoformat(timespec="seconds")
    return str(value or "").replace("+00:00", "Z")


def answer_parameters(doc: dict[str, Any], *more: dict[str, Any]) -> dict[str, Any]:
    """The Parameters answering a grant or end record ``doc``: its patient, facility and reason, then ``more``."""
    return {"resourceType": "Parameters", "parameter": [
        {"name": "patient", "valueReference": {"reference": doc["patient"]}},
        {"name": "grantee", "valueReference": {"reference": doc["grantee"]}},
        {"name": "reason", "valueString": str(doc.get("reason") or "")}, *more]}


def answer(doc: dict[str, Any]) -> dict[str, Any]:
    """The operation's Parameters: the patient, the facility granted, the reason and since when."""
    return answer_parameters(doc, {"name": "granted", "valueDateTime": iso(doc.get("created"))})


def holder(server: Any, req: Request) -> str | None:
    """The one Patient holding ``req``'s identifier (an equality on the stored ``sp_identifier``, which
    a deleted Patient no longer has), or None (nobody, or more than one: decided by no one here)."""
    found = [d for d in server.store().current("Patient").find({"sp_identifier": f"{req.system}|{req.value}"},
                                                                {"_id": 1, "del": 1}).limit(2) if not d.get("del")]
    return str(found[0]["_id"]) if len(found) == 1 else None


def compare(server: Any, pid: str | None, req: Request, rec: Any) -> str:
    """The id of the patient ``req``'s number is (``pid``, or the one holding it), else Denied."""
    if pid is None:
        pid = rec.rid = holder(server, req)
        if pid is None:
            raise Denied("no patient holds the identifier given")
        rec.patients.append(f"Patient/{pid}")
    doc = server.store().read_head("Patient", pid)
    if doc is None or doc.get("del") or not holds(doc.get("res"), req):
        raise Denied("the identifier given is not this patient's: the patient is taken on only with "
                     "their full CCCD or health insurance card number")
    return pid


def run(server: Any, principal: Any, pid: str | None, body: Any,
        limit: failures.Limit | None = None) -> tuple[int, dict[str, Any]]:
    """``$take-on`` by ``principal`` on the guarded FHIR ``server``, of ``Patient/<pid>`` or (``pid``
    None, the type-level operation) of the patient holding the identifier given: (201 made | 200 made
    before, the grant's Parameters); FhirError 400/403 otherwise, 429 once the user's wrong numbers
    reach ``limit`` (None: no limit). Audited whatever the outcome."""
    from sen_shared.fhir.audit import Record
    from sen_shared.fhir.validate import check_id

    rec = Record("operation", resource_type="Patient", rid=pid, operation=OPERATION)
    with server.audited(principal, rec):
        if pid is not None:
            check_id(pid)
        facility = getattr(principal, "facility", None)
        if "clinic" not in principal.roles or not facility:
            raise Denied("$take-on is for clinic staff of a facility (the clinic role and a facility claim)")
        req = parse(body)
        rec.purpose = req.reason
        if pid is not None:
            rec.patients.append(f"Patient/{pid}")
        user = failures.user_of(principal)
        # counted as a wrong number from here (429 here once there were too many) until shown otherwise
        attempt = failures.begin(server.db, user, limit) if limit is not None else None
        try:
            pid = compare(server, pid, req, rec)
        except Denied:
            if limit is not None:
                failures.keep(server.db, user, limit)
            raise
        except BaseException:
            failures.forget(server.db, attempt)
            raise
        failures.forget(server.db, attempt)
        ref = f"Patient/{pid}"
        made, stored = grant(server.db, ref, f"Organization/{facility}", req.reason, str(principal.sub or ""))
        rec.status = 201 if made else 200
    return rec.status, answer(stored)
