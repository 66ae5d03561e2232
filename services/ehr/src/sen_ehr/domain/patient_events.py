"""What the EHR's Patient events say beside the ids: the patient's district, for the reporting.

The health department's dashboard counts residents with a record per district (the portal's
reporting read model adds ``ehr.patient.created`` and takes away ``ehr.patient.deleted``), so
each Patient event carries ``district`` (the FHIR engine's per-type summary fields,
``FhirConfig.event_fields``): the district of the patient's home address as that version holds
it, ``null`` when it has none. An ``ehr.patient.updated`` also carries ``previousDistrict``, the
replaced version's (as its own event said it), so a move takes one from the old district and
adds one to the new whatever order the events arrive in; a deletion carries the deleted
version's. No other part of the record leaves the EHR this way (no name, no address line).

Records registered before the events named a district were counted without one.
:func:`backfill` (the EHR worker, once: ``worker.backfill_patient_districts_once``) announces
each such record's district once: ``ehr.patient.district_noted`` names the district of its last
version whose event said none, and the reporting moves it there from "no district".
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import UTC, date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from pymongo.database import Database
from sen_shared.bus.events import make_event
from sen_shared.bus.outbox import new_document
from sen_shared.claims import claim_once
from sen_shared.fhir.body import unpack
from sen_shared.fhir.outcome import FhirError
from sen_shared.fhir.store import HISTORY_SUFFIX

NOTED = "patient_district_events"  # {_id: "<patient>/<version>", outbox}: backfilled districts, one a record
KIND = "ehr.patient.district_noted"
_NAMESPACE = uuid.UUID("6d0f3c1e-2b7a-4c8e-9f51-0a3e6b2d7c94")
# address uses that are not where the patient lives now
_NOT_RESIDENCE = frozenset({"old", "billing", "work"})
VN = ZoneInfo("Asia/Ho_Chi_Minh")  # whose date an address's period is read on


def _current(address: Mapping[str, Any], today: str) -> bool:
    end = (address.get("period") or {}).get("end") if isinstance(address.get("period"), Mapping) else None
    return not (isinstance(end, str) and end[:10] < today)


def patient_district(patient: Mapping[str, Any], today: date | None = None) -> str | None:
    """The district of the patient's home address (``address[].district``): the current ``home``
    address's, else the first current address's that is not an old, billing or work one; spaces
    collapsed; None when no such address names a district. ``today``: Vietnam's date by default (not
    the server's UTC one, still the day before from 00:00 to 07:00 there)."""
    day = (today or datetime.now(VN).date()).isoformat()
    found: list[tuple[bool, str]] = []
    for address in patient.get("address") or ():
        if not isinstance(address, Mapping) or address.get("use") in _NOT_RESIDENCE or not _current(address, day):
            continue
        district = address.get("district")
        if isinstance(district, str) and district.split():
            found.append((address.get("use") == "home", " ".join(district.split())))
    home = [d for is_home, d in found if is_home]
    return (home or [d for _, d in found] or [None])[0]


DISTRICT_MAX_CHARS = 200  # a district the events carry (specs/events/schemas/common.json's district)


def patient_event_fields(patient: Mapping[str, Any]) -> dict[str, Any]:
    """The summary fields of a Patient version's events (``FhirConfig.event_fields``). A district longer
    than the events carry is refused (422), never cut: taken, its event failed its schema and stayed in
    the outbox."""
    district = patient_district(patient)
    if district is not None and len(district) > DISTRICT_MAX_CHARS:
        raise FhirError(f"the home address's district is at most {DISTRICT_MAX_CHARS} characters (this one has "
                        f"{len(district)})", status=422, code="invariant", expression=["Patient.address.district"])
    return {"district": district}


EVENT_FIELDS = {"Patient": patient_event_fields}


def event_id(patient: str, version: int) -> str:
    """The backfill event's id: the same for a record's version whoever announces it."""
    return str(uuid.uuid5(_NAMESPACE, f"{KIND}:{patient}/{version}"))


def _iso(at: datetime) -> str:
    at = at if at.tzinfo is not None else at.replace(tzinfo=UTC)
    return at.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def district_noted(patient: str, version: int, district: str, at: datetime) -> dict[str, Any]:
    """The event saying version ``version`` of ``patient``, counted without a district, is in ``district``
    (dated as that version, so the dashboard counts the record there from then on)."""
    return make_event(KIND, {"resourceType": "Patient", "id": patient, "versionId": str(version),
                             "district": district},
                      subject=f"Patient/{patient}", event_id=event_id(patient, version), time=_iso(at),
                      validate=False)


def backfill(db: Database) -> dict[str, int]:
    """Announce the district of each live record counted without one: for each Patient, its last
    version whose event said no district (its history document has no ``ef``, written before the
    events named districts); when that version is live and has a district, one claim in
    :data:`NOTED` keyed by the version carrying :func:`district_noted` in its outbox. Versions after
    it carried their districts (an update ``previousDistrict``, so they move the record from this
    district on). Safe twice, and beside writes: the claim is made once, the event's id is the
    version's, and a version's history document never changes."""
    history = db["Patient" + HISTORY_SUFFIX]
    noted = without = 0
    for head in db["Patient"].find({}, {"_id": 1, "v": 1}):
        rid = str(head["_id"])
        version = int(head["v"])
        doc = history.find_one({"_id": f"{rid}/{version}"}, {"ef": 1, "res": 1, "del": 1, "lu": 1})
        while doc is not None and "ef" in doc and version > 1:  # back to the last version without fields
            version -= 1
            doc = history.find_one({"_id": f"{rid}/{version}"}, {"ef": 1, "res": 1, "del": 1, "lu": 1})
        if doc is None or "ef" in doc or doc.get("del"):
            continue
        res = (unpack(doc) or {}).get("res")
        district = patient_district(res) if isinstance(res, dict) else None
        if district is None:
            without += 1
            continue
        made, _ = claim_once(db[NOTED], f"{rid}/{version}",
                             new_document({}, [district_noted(rid, version, district, doc["lu"])]))
        noted += made
    return {"districts_noted": noted, "without_district": without}


__all__ = ["EVENT_FIELDS", "KIND", "NOTED", "backfill", "district_noted", "event_id", "patient_district",
           "patient_event_fields"]
