"""The EHR over HTTP, where a user is waiting: does this patient exist, may this caller see it?

The caller's own bearer token is forwarded, so the EHR decides with its own access policy
(a clinic sees the patients its facility manages or was referred; ARCHITECTURE §6) and
audits the read. Every call goes through :mod:`sen_shared.http` (the process's urllib3 pool,
as the portal's calls do) with the total timeout ``SEN_HTTP_TIMEOUT``. Each way it can go
wrong is a :class:`~sen_shared.fhir.outcome.FhirError` saying which, for the client:

- the EHR does not answer in time: 504; cannot be reached: 503 (retry later);
- the patient (or a supporting record) is not known: 422; the caller may not see it: 403.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from sen_shared import http
from sen_shared.fhir.outcome import FhirError

DISTRICT_TTL = 600.0
DISTRICT_MAX_CHARS = 200  # a district the events carry (specs/events/schemas: common.json's district)
_districts: dict[tuple[str, str], tuple[str | None, float]] = {}  # (EHR, Organization) -> (district, until)
FHIR_JSON = "application/fhir+json"
log = logging.getLogger(__name__)


def _judged(ref: str, where: str, status: int, resource: Any) -> dict[str, Any]:
    """The resource of a read the EHR answered ``status``, or the error saying why not."""
    if status == 200 and isinstance(resource, dict):
        return resource
    if status in (404, 410):
        raise FhirError(f"{ref} is not known to the EHR", status=422, code="not-found", expression=[where])
    if status == 403:
        raise FhirError(f"the EHR does not let you see {ref}: it is not managed by your facility "
                        "nor referred to it", status=403, code="forbidden", expression=[where])
    if status == 401:
        raise FhirError("the EHR refused the token", status=401, code="login")
    raise FhirError(f"the EHR answered {status} for {ref}; nothing was created, retry later",
                    status=502, code="transient")


class EhrClient:
    def __init__(self, base_url: str, timeout: float, token: str) -> None:
        self.base = base_url.rstrip("/") + "/fhir"
        self.timeout = timeout
        self.headers = {"Authorization": f"Bearer {token}", "Accept": FHIR_JSON}

    def _send(self, method: str, url: str, *, params: dict[str, str] | None = None, json: Any = None,
              reads: bool = False) -> http.Response:
        """One call to the EHR; no answer in time is a 504, no connection a 503 (nothing created).
        ``reads``: a POST that only reads (a batch of reads), so it may be sent twice (sen_shared.http)."""
        headers = self.headers if json is None else {**self.headers, "Content-Type": FHIR_JSON}
        try:
            return http.request(method, url, params=params, json=json, headers=headers, timeout=self.timeout,
                                replayable=True if reads else None)
        except http.TimedOut:
            raise FhirError(f"the EHR did not answer within {self.timeout:g} s; nothing was created, "
                            "retry later", status=504, code="timeout") from None
        except http.TransportError as err:
            raise FhirError(f"the EHR cannot be reached ({err.reason}); nothing was created, retry later",
                            status=503, code="transient") from None

    def _get(self, path: str, params: dict[str, str] | None = None) -> http.Response:
        return self._send("GET", f"{self.base}/{path}", params=params)

    def check_readable(self, ref: str, where: str) -> dict[str, Any]:
        """The EHR's ``ref`` (``Type/id``) as the caller may read it, or the error saying why not."""
        r = self._get(ref)
        return _judged(ref, where, r.status_code, r.json() if r.status_code == 200 else None)

    def check_all_readable(self, refs: list[tuple[str, str]]) -> list[dict[str, Any]]:
        """Each ``(ref, where)`` as :meth:`check_readable` answers it, in ONE call: a batch Bundle of
        reads when there are several (a submission's patient and its supporting records), which
        the EHR answers entry by entry with its own access rules and audit, as it would the reads
        one by one. The first refusal in ``refs``' order is raised."""
        if len(refs) == 1:
            return [self.check_readable(*refs[0])]
        batch = {"resourceType": "Bundle", "type": "batch",
                 "entry": [{"request": {"method": "GET", "url": ref}} for ref, _ in refs]}
        r = self._send("POST", self.base, json=batch, reads=True)
        if r.status_code == 401:
            raise FhirError("the EHR refused the token", status=401, code="login")
        entries = r.json().get("entry") if r.status_code == 200 else None
        if not isinstance(entries, list) or len(entries) != len(refs):
            raise FhirError(f"the EHR answered {r.status_code} to a batch of {len(refs)} reads; nothing was "
                            "created, retry later", status=502, code="transient")
        out = []
        for (ref, where), entry in zip(refs, entries, strict=True):
            status = str(((entry or {}).get("response") or {}).get("status", "")).split(" ", 1)[0]
            out.append(_judged(ref, where, int(status) if status.isdigit() else 0, (entry or {}).get("resource")))
        return out

    def district_of(self, organization: str) -> str | None:
        """The district of an Organization (its first address), if the EHR knows it; never fails.
        Kept for ``DISTRICT_TTL`` seconds per process: a clinic's district does not move."""
        key = (self.base, organization)
        hit = _districts.get(key)
        if hit is not None and hit[1] > time.monotonic():
            return hit[0]
        try:
            r = http.request("GET", f"{self.base}/{organization}", headers=self.headers, timeout=self.timeout)
        except http.TransportError:
            return None
        if r.status_code != 200:
            return None
        district = next((a["district"] for a in r.json().get("address") or []
                         if isinstance(a, dict) and isinstance(a.get("district"), str)), None)
        if district is not None and len(district) > DISTRICT_MAX_CHARS:
            # every event of the clinic's consults carries it: over the events' limit they would fail their
            # schema in the outbox (never reaching billing, the EHR, the dashboard); counted without one
            log.warning("the district of %s is %d characters, over the %d the events carry: its consults "
                        "name no district", organization, len(district), DISTRICT_MAX_CHARS)
            district = None
        if len(_districts) > 10_000:
            _districts.clear()
        _districts[key] = (district, time.monotonic() + DISTRICT_TTL)
        return district

    def is_practitioner_of(self, practitioner: str, organization: str) -> bool:
        """Does a PractitionerRole tie ``practitioner`` to ``organization`` in the EHR?"""
        r = self._get("PractitionerRole", {"practitioner": practitioner, "organization": organization,
                                           "_count": "1"})
        if r.status_code != 200:
            raise FhirError(f"the EHR answered {r.status_code} when asked for the roles of {practitioner}",
                            status=502, code="transient")
        return any((e.get("search") or {}).get("mode", "match") == "match" for e in r.json().get("entry") or [])
