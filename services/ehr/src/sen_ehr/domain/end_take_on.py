"""Ending a take-on: the facility that took a patient on (or an admin) gives the record back.

``POST /fhir/Patient/{id}/$end-take-on`` (a Parameters: ``reason``, a ``valueString``; an admin
also names the facility, ``grantee``, a ``valueReference`` to its Organization) ends the take-on
grant of ``Patient/{id}`` to the facility (:func:`.take_on.end`): an end record inserted under
``take-on-end|<Patient ref>|<Organization ref>|<generation>``, so ten ends at once make one end
and each answers it (200, the end's Parameters: patient, grantee, reason, ended, endedBy). From
the moment the insert is acknowledged the access policy refuses the facility's reads and writes
of the patient (``sen_shared.fhir.access.active_grants``: the end record is found by the same
query as the grant), 403 saying the take-on was ended and when. Taking the patient on again
(``$take-on``) makes the next generation's grant.

- The ``clinic`` role ends its own facility's take-on only (a ``grantee`` naming another: 403);
  the ``admin`` role ends any facility's and must name it (400 without). Other roles: 403.
- No take-on of the patient by the facility: 403 for a clinic (as any patient it does not reach),
  404 for an admin. Ended already: 200 with the end that was made (a double click, a retry).
- Every attempt is an AuditEvent (subtype ``operation`` + ``end-take-on``, the patient as entity,
  the reason as ``purposeOfEvent``; who and when as every AuditEvent).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from sen_shared.fhir.access import Denied
from sen_shared.fhir.outcome import FhirError

from . import take_on

OPERATION = "end-take-on"
_ORG = re.compile(r"^Organization/[A-Za-z0-9\-.]{1,64}$")

DEFINITION: dict[str, Any] = take_on.definition(
    "EndTakeOn", "End a facility's take-on of a patient", OPERATION, type_level=False,
    description=(
        "Ends the take-on grant ($take-on) of the patient to a facility: the clinic role ends its own "
        "facility's, the admin role any facility's (naming it). From then on the facility's reads and writes of "
        "the patient are refused (403), unless it takes the patient on again ($take-on: a new grant). One end per "
        "grant, claimed by an insert: any number of calls at once end it once and all answer that end (200). "
        "No take-on to end: 403 (clinic) or 404 (admin). Every attempt is an AuditEvent (subtype end-take-on, "
        "the reason as purposeOfEvent)."),
    parameters=[
        take_on.parameter("reason", "in", "string",
                          f"why the take-on ends (1 to {take_on.REASON_MAX} characters), e.g. 'Người bệnh đã "
                          "chuyển về cơ sở quản lý'; the AuditEvent's purposeOfEvent"),
        take_on.parameter("grantee", "in", "Reference",
                          "the facility whose take-on ends (Organization/<id>): required for an admin; a "
                          "clinic's own facility when given by a clinic", min_=0),
        *take_on.out_parameters("the patient", "the facility whose take-on ended (Organization)",
                                "the reason given by the call that ended it"),
        take_on.parameter("ended", "out", "dateTime", "when the take-on ended"),
        take_on.parameter("endedBy", "out", "string", "who ended it (the token's subject)")])


@dataclass(frozen=True)
class Request:
    reason: str
    grantee: str | None


def parse(body: Any) -> Request:
    """The operation's Parameters: one ``reason`` (valueString, 1 to 500 characters), at most one
    ``grantee`` (valueReference to an Organization). 400 naming the part otherwise."""
    found = take_on.parameters(body, OPERATION, "reason", "grantee")
    reason = take_on.reason_of(found["reason"], "why the take-on ends")
    grantees = found["grantee"]
    where_grantee = take_on.where("grantee")
    if len(grantees) > 1:
        raise take_on.bad("give at most one grantee", where_grantee)
    grantee = None
    if grantees:
        ref = (grantees[0].get("valueReference") or {}).get("reference") \
            if isinstance(grantees[0].get("valueReference"), dict) else None
        if not isinstance(ref, str) or not _ORG.match(ref):
            raise take_on.bad("grantee must be a valueReference to the facility: Organization/<id>",
                              f"{where_grantee}.valueReference.reference")
        grantee = ref
    return Request(reason, grantee)


def answer(doc: dict[str, Any]) -> dict[str, Any]:
    """The end's Parameters: the patient, the facility, the reason, when and by whom."""
    return take_on.answer_parameters(doc, {"name": "ended", "valueDateTime": take_on.iso(doc.get("created"))},
                                     {"name": "endedBy", "valueString": str(doc.get("by") or "")})


def run(server: Any, principal: Any, pid: str, body: Any) -> tuple[int, dict[str, Any]]:
    """``$end-take-on`` by ``principal`` on the guarded FHIR ``server`` of ``Patient/<pid>``: (200, the
    end's Parameters); FhirError 400/403/404 otherwise. Audited whatever the outcome."""
    from sen_shared.fhir.audit import Record
    from sen_shared.fhir.validate import check_id

    rec = Record("operation", resource_type="Patient", rid=pid, operation=OPERATION)
    with server.audited(principal, rec):
        check_id(pid)
        ref = f"Patient/{pid}"
        rec.patients.append(ref)
        admin = "admin" in principal.roles
        facility = getattr(principal, "facility", None)
        if not admin and ("clinic" not in principal.roles or not facility):
            raise Denied("$end-take-on is for the clinic staff of the facility that took the patient on, or an admin")
        req = parse(body)
        rec.purpose = req.reason
        if admin:
            if req.grantee is None:
                raise take_on.bad("name the facility whose take-on ends: grantee (valueReference Organization/<id>)",
                                  take_on.where("grantee"))
            grantee = req.grantee
        else:
            grantee = f"Organization/{facility}"
            if req.grantee not in (None, grantee):
                raise Denied("a clinic ends its own facility's take-on only")
        ended = take_on.end(server.db, ref, grantee, req.reason, str(principal.sub or ""))
        if ended is None:
            if admin:
                raise FhirError(f"{ref} was not taken on by {grantee}", status=404, code="not-found")
            raise Denied("your facility has not taken this patient on")
        rec.status = 200
    return 200, answer(ended[1])
