"""Names of the province's facilities and practitioners, for pages that hold only references.

A Task's owner, a schedule's actor or a minutes participant is a FHIR reference
(``Organization/bvdk-dong-thap``, ``Practitioner/bs-nguyen-van-an``); people read names. The names
come from the EHR (one search per type, ``_elements=name``), are kept ten minutes per process
(they rarely change) and are the same for every user (no patient data). When the EHR does not
answer, a page shows the reference instead: nothing on it depends on the name.

The specialties of a hub's doctors (their PractitionerRoles: the worklist's specialty filter) are
directory data as well, kept the same way, per hub.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from typing import Any

from .. import caches
from .backend import BackendError, entries, fhir_get
from .formatting import human_name

CACHE_SECONDS = 600
RETRY_SECONDS = 60  # after the EHR did not answer
TYPES = ("Organization", "Practitioner")
_kept: dict[str, tuple[float, dict[str, str]]] = caches.kept({})
_lock = threading.Lock()


def names(rtype: str) -> dict[str, str]:
    """``rtype``'s names by id (an Organization's ``name``, a Practitioner's first HumanName)."""
    if rtype == "Organization":
        return _kept_search(rtype, rtype, "name", lambda o: str(o.get("name") or o["id"]))
    return _kept_search(rtype, rtype, "name", human_name)


def _kept_search(key: str, rtype: str, elements: str, pick: Any,
                 where: Mapping[str, str] | None = None) -> dict[str, Any]:
    """``pick(resource)`` of every ``rtype`` by id (one EHR search, ``_elements``, narrowed by the search
    parameters ``where``), kept per ``key``."""
    at, known = _kept.get(key, (0.0, {}))
    if time.monotonic() - at < CACHE_SECONDS:
        return known
    try:
        bundle = fhir_get("ehr", f"/fhir/{rtype}", {**(where or {}), "_count": "500", "_elements": elements})
    except BackendError as err:  # references instead of names
        if err.kind == "refused":  # refused to this user (a cashier reads no Organization): not to the others,
            return known  # so nothing is kept for them (a cashier's receipt left the clinics' pages unnamed)
        with _lock:  # the EHR down: asked again in a minute, not at every page
            _kept[key] = (time.monotonic() - CACHE_SECONDS + RETRY_SECONDS, known)
        return known
    found = {r["id"]: value for r in entries(bundle, rtype) if (value := pick(r))}
    with _lock:
        _kept[key] = (time.monotonic(), found)
    return found


def _district(org: Mapping[str, Any]) -> str:
    return next((str(a["district"]).strip() for a in org.get("address") or []
                 if isinstance(a, Mapping) and isinstance(a.get("district"), str) and a["district"].strip()), "")


def org_names() -> dict[str, str]:
    """Facility names by id."""
    return names("Organization")


def org_districts() -> dict[str, str]:
    """Each facility's district by id (its first address's ``district``, as teleconsult reads it into
    a consult's events); facilities without one are left out."""
    return _kept_search("Organization.district", "Organization", "address", _district)


def _gives_no_care(org: Mapping[str, Any]) -> str:
    codes = {str(c.get("code")) for t in org.get("type") or [] if isinstance(t, Mapping)
             for c in t.get("coding") or [] if isinstance(c, Mapping)}
    return "no-care" if codes and "prov" not in codes else ""


def org_without_care() -> set[str]:
    """The Organizations that are no healthcare provider by their ``type`` (HL7 organization-type: a
    type, and ``prov`` not among its codes; the health department itself is ``govt``): no facility of
    the dashboard's facility filter. Those without a type are facilities; the EHR not answering: none."""
    return set(_kept_search("Organization.type", "Organization", "type", _gives_no_care))


def _hub_roles(hub: str) -> dict[str, dict[str, Any]]:
    """The PractitionerRoles of the facility ``hub`` (its doctors'), by id: each one's ``specialty`` concepts and
    ``practitioner`` reference. One search per hub, kept as the names are (the worklist asked the EHR on every
    load and every 30 s refresh); {} when the EHR does not answer."""
    return _kept_search(f"PractitionerRole {hub}", "PractitionerRole", "specialty,practitioner",
                        lambda r: {"specialty": [c for c in r.get("specialty") or [] if isinstance(c, Mapping)],
                                   "practitioner": str((r.get("practitioner") or {}).get("reference") or "")},
                        {"organization": f"Organization/{hub}"})


def hub_specialties(hub: str) -> list[Mapping[str, Any]]:
    """The specialties (CodeableConcepts) of the PractitionerRoles of the facility ``hub``, role by role as the
    EHR lists them; [] when the EHR does not answer."""
    return [concept for role in _hub_roles(hub).values() for concept in role["specialty"]]


def hub_practitioners(hub: str) -> set[str]:
    """The Practitioner references of the facility ``hub``'s roles (its doctors); empty when the EHR does not
    answer."""
    return {role["practitioner"] for role in _hub_roles(hub).values() if role["practitioner"]}


CHANGED_BY = "https://sen.vn/fhir/StructureDefinition/changed-by"  # teleconsult: who made a version (meta.extension)
STILL_OPEN = ("requested", "accepted", "in-progress")


def answered_by_clinic(task: Mapping[str, Any], hub: str | None, me: str | None = None) -> bool:
    """Whether the requesting clinic made the consult's latest version while it is open with the hub: its answer
    to the hub's question (teleconsult's ``$provide-info`` resumes the Task). The clinic's other steps close it
    (``$cancel``) or leave the Task alone (a message); its first version is the request itself. The changer is
    the clinic's side when it is the requesting Organization, or a Practitioner who holds no role at ``hub``
    (the hub's doctors, known from the EHR: nothing is said while they cannot be read); never ``me``, the
    signed-in doctor's own Practitioner id."""
    if task.get("status") not in STILL_OPEN or str((task.get("meta") or {}).get("versionId") or "1") == "1":
        return False
    by = next((str((x.get("valueReference") or {}).get("reference") or "")
               for x in (task.get("meta") or {}).get("extension") or []
               if isinstance(x, Mapping) and x.get("url") == CHANGED_BY), "")
    if by and by == str((task.get("requester") or {}).get("reference") or ""):
        return True
    if not by.startswith("Practitioner/") or not hub or (me and by == f"Practitioner/{me}"):
        return False
    doctors = hub_practitioners(hub)
    return bool(doctors) and by not in doctors


def party(ref: Mapping[str, Any] | str | None) -> str:
    """A Reference as people read it: its ``display``, else the name of what it points to, else the reference."""
    if not ref:
        return "—"
    if isinstance(ref, Mapping):
        if ref.get("display"):
            return str(ref["display"])
        ref = str(ref.get("reference") or "")
    rtype, _, rid = ref.partition("/")
    if rtype in TYPES and rid:
        name = names(rtype).get(rid)
        if name and name != "—":
            return name
    return ref or "—"


def kind(ref: Mapping[str, Any] | str | None) -> str:
    """The resource type a Reference points to (``Practitioner``, ``Organization``), or ``""``.

    A relative reference (``Practitioner/bs-an``) or an absolute one (``.../fhir/Practitioner/bs-an``)
    says it; a reference without one falls back on its ``type``."""
    if not ref:
        return ""
    rtype = ""
    if isinstance(ref, Mapping):
        rtype = str(ref.get("type") or "")
        ref = str(ref.get("reference") or "")
    parts = [p for p in ref.split("?")[0].split("/") if p]
    if len(parts) >= 2 and parts[-2][:1].isupper():
        return parts[-2]
    return rtype


def install(app: Any) -> None:
    app.jinja_env.filters["party"] = party
    app.jinja_env.filters["kind"] = kind
    app.jinja_env.globals["answered_by_clinic"] = answered_by_clinic
