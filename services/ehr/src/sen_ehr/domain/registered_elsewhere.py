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
A holder the caller may see is still named. A collision is looked for on the engine's 409 only.

While the budget is spent, a Patient write that adds a number not already on that patient (create,
update, patch, conditional create or update, a batch's or transaction's entry) is refused with the same
429 before the number is claimed, whether someone holds the number or not: else the 429 on a held number
against the 201 on a free one still told them apart. That costs such a write one read of
``take_on_failures`` (the user's records in the window, an indexed equality; :func:`.take_on_failures.check`,
run by the store just before it claims the numbers: ``Store.before_claim``); a Patient write that adds
no number (an address changed, the same CCCD) and every other type read nothing more. Registration is
human-paced (a nurse types each number), so one indexed read per new number is nothing beside the write's
own claims; and a nurse who spent her budget on other facilities' numbers waits out the window for new
ones too (the 429 says until when), as she would for ``$take-on``.

A condition (``If-None-Exist``, ``PUT Patient?...``) sees only what the caller may see
(``GuardedFhirServer.match_ids``): a match on another facility's patient is a miss, so a conditional
create on its number creates, meets the number and is this 409.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sen_shared.fhir import store as st
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

    def store(self) -> st.Store:
        store = super().store()
        if self.limit is not None:
            store.before_claim = self._budget_first
        return store

    def _budget_first(self, w: st.Write) -> None:
        """A Patient write adding a number: refused (429) while the caller's budget is spent."""
        if w.resource_type == "Patient" and self.limit is not None:
            failures.check(self.db, failures.user_of(self.principal()), self.limit)

    def _claiming(self, call: Callable[[], FhirResponse]) -> FhirResponse:
        try:
            return call()
        except FhirError as err:
            holder, system = holder_of(err), system_of(err)
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
        return self._claiming(lambda: super(EhrFhirServer, self).create(req))

    def update(self, req: FhirRequest) -> FhirResponse:
        return self._claiming(lambda: super(EhrFhirServer, self).update(req))

    def conditional_update(self, req: FhirRequest) -> FhirResponse:
        return self._claiming(lambda: super(EhrFhirServer, self).conditional_update(req))

    def patch(self, req: FhirRequest) -> FhirResponse:
        return self._claiming(lambda: super(EhrFhirServer, self).patch(req))

    def bundle(self, req: FhirRequest) -> FhirResponse:
        return self._claiming(lambda: super(EhrFhirServer, self).bundle(req))
