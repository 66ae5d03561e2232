"""A CCCD or BHYT number registered to a patient the caller may not see: the 409 names no one, and counts.

The engine refuses a Patient write that carries a number another Patient holds (409 ``duplicate``
naming the holder, ``sen_shared.fhir.unique``): that helps a facility merge its own duplicates.
Named to a nurse of another facility it made the registration an oracle: she could test any number
against the whole province (409 and the holder's id, or saved) without limit, then take the
patient on with the confirmed number, around ``$take-on``'s limit on wrong numbers.

So on the EHR, when the holder is a patient the caller may not see (``GuardedFhirServer.reaches_patient``:
not an admin, not its owner, not granted it):
- the 409 names no holder (no id, no facility): the number is registered to another patient, and the
  way to bring that patient into this facility's care is ``$take-on`` with the number
  (``POST [base]/Patient/$take-on``, the portal's "Take this patient on here");
- the collision counts as a wrong number in the user's budget of ``$take-on``
  (:mod:`.take_on_failures`: one inserted record, no counter document), so once the budget is spent
  such a collision answers the take-on's 429 with Retry-After, and the take-on refuses too, for the window.
A holder the caller may see is still named. Nothing is read or written on a write without a collision:
the check runs on the engine's 409 only (a nurse registering new patients is not limited).

The conditional create (``If-None-Exist: identifier=<system>|<number>``) and the conditional update
(``PUT Patient?identifier=...``) of a Patient carrying such a number are the same question asked another
way: their match, a patient the caller may not see, was a 403 naming it. That 403 is this 409 too, and
counts the same.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from sen_shared.fhir.guarded import GuardedFhirServer
from sen_shared.fhir.http import FhirRequest, FhirResponse
from sen_shared.fhir.outcome import FhirError

from . import take_on_failures as failures

OUTCOME_SYSTEM = "https://fhir.sen.vn/CodeSystem/outcome"
NAMED = "duplicate-identifier"  # sen_shared.fhir.unique.duplicate: details.text names the holder
HIDDEN = "registered-elsewhere"


def holder_of(err: FhirError) -> str | None:
    """``Patient/<id>`` the engine's 409 ``duplicate-identifier`` names, else None (another error)."""
    if err.status != 409 or not err.issues:
        return None
    for issue in err.issues:
        details = issue.get("details") or {}
        codes = [c.get("code") for c in details.get("coding") or () if c.get("system") == OUTCOME_SYSTEM]
        text = str(details.get("text") or "")
        if NAMED in codes and text.startswith("Patient/"):
            return text
    return None


def system_of(err: FhirError) -> str:
    """The identifier system the engine's 409 says the number is of (its diagnostics: ``(system <url>)``)."""
    detail = str(err.detail)
    start = detail.find("(system ")
    return detail[start + 8:detail.find(")", start)] if start >= 0 else ""


_NAMED_IN_REFUSAL = re.compile(r"\bPatient/([A-Za-z0-9\-.]{1,64})\b")


def refused_match(err: FhirError, req: FhirRequest, systems: frozenset[str]) -> tuple[str, str] | None:
    """(the ``Patient/<id>`` a 403 names, the unique system the Patient written carries) when a conditional
    write of a Patient carrying a unique number was refused for whose its match is; else None."""
    body = req.body if isinstance(req.body, dict) else {}
    if err.status != 403 or body.get("resourceType") != "Patient":
        return None
    carried = [i.get("system") for i in body.get("identifier") or () if isinstance(i, dict)
               and i.get("system") in systems and i.get("value")]
    m = _NAMED_IN_REFUSAL.search(str(err.detail))
    if not carried or m is None or m.group(1) == body.get("id"):
        return None
    return f"Patient/{m.group(1)}", str(carried[0])


def registered_elsewhere(system: str) -> FhirError:
    """409 naming no holder: the number is another patient's; take them on with it."""
    detail = (f"this number (system {system}) is already registered to another patient, whose record your facility "
              "does not reach; nothing was written. To bring that patient into this facility's care, take them "
              "on with the number: POST [base]/Patient/$take-on (Parameters: identifier, reason)")
    return FhirError(detail, status=409, code="duplicate", issues=[{
        "severity": "error", "code": "duplicate", "diagnostics": detail,
        "details": {"coding": [{"system": OUTCOME_SYSTEM, "code": HIDDEN}],
                    "text": "registered to another patient: take the patient on with the number ($take-on)"},
        "expression": ["Patient.identifier"]}])


class EhrFhirServer(GuardedFhirServer):
    """The guarded engine with the rule above on every write that claims identifiers (create, update,
    conditional update, patch, a batch's entries through these, a transaction)."""

    def __init__(self, *args: Any, limit: failures.Limit | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.limit = limit  # the take-on's budget (None: collisions are not counted)

    def _claiming(self, call: Callable[[], FhirResponse], conditional: FhirRequest | None = None) -> FhirResponse:
        try:
            return call()
        except FhirError as err:
            holder, system = holder_of(err), system_of(err)
            if holder is None and conditional is not None:
                holder, system = refused_match(err, conditional, self.config.unique_identifiers.get(
                    "Patient", frozenset())) or (None, "")
            if holder is None:
                raise
            principal = self.principal()
            if self.reaches_patient(principal, holder):
                raise  # the caller's own (or granted) patient: named, to merge duplicates
            if self.limit is not None:
                user = failures.user_of(principal)
                failures.begin(self.db, user, self.limit)  # 429 (its record gone) once the budget is spent
                failures.keep(self.db, user, self.limit)  # the collision stays a failure
            raise registered_elsewhere(system) from None

    def create(self, req: FhirRequest) -> FhirResponse:
        return self._claiming(lambda: super(EhrFhirServer, self).create(req),
                              req if req.header("If-None-Exist") else None)

    def update(self, req: FhirRequest) -> FhirResponse:
        return self._claiming(lambda: super(EhrFhirServer, self).update(req))

    def conditional_update(self, req: FhirRequest) -> FhirResponse:
        return self._claiming(lambda: super(EhrFhirServer, self).conditional_update(req), req)

    def patch(self, req: FhirRequest) -> FhirResponse:
        return self._claiming(lambda: super(EhrFhirServer, self).patch(req))

    def bundle(self, req: FhirRequest) -> FhirResponse:
        return self._claiming(lambda: super(EhrFhirServer, self).bundle(req))
