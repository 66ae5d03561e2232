"""Who may read and write which FHIR resources: roles, SMART v2 scopes and referral grants.

Pure rules: nothing here talks to a database. The caller (``guarded.py``)
gathers the facts (the patients a resource belongs to, their managing
organizations, the referral grants) and asks :func:`check`; for searches it
asks :func:`patient_filter` / :func:`compartment_filter` for a MongoDB filter
the search executor ANDs in.

Role rules (ARCHITECTURE.md §6; decisions written down here):

- ``admin``: everything.
- ``health-dept``: reads everything (read, vread, search, history,
  ``$everything``), writes nothing. The dashboard is aggregate, but the
  department also audits facilities and investigates cases; every read is
  audited like anyone else's.
- ``service``: what the events need: create/update/patch of Encounter,
  Composition and Provenance; reads of those and of Patient, Practitioner and
  Organization. Nothing else.
- ``cashier``: read and search Patient and Coverage (billing looks patients
  up at the desk, whichever clinic manages them); no clinical data, no writes.
- ``clinic``: patients *reached* through its facility: ``Patient.managingOrganization``
  or a ``generalPractitioner`` is ``Organization/<facility>``, or a grant names
  the facility: a referral grant, or a take-on grant (the EHR's
  ``Patient/{id}/$take-on``: the clinic presented the patient's full CCCD or
  BHYT number and a reason; audited, never by name, never expiring). Read and
  write those patients and every resource of their compartment; create
  patients for its facility; delete resources of its patients (not via a grant).
  A take-on grant ends when its facility (or an admin) ends it (``Patient/{id}/$end-take-on``):
  an insert-only end record in the same collection names the grant it ends (:func:`active_grants`);
  the refusal then says the facility's take-on was ended, and when.
- ``doctor``: patients of their hub (``facility``, as for clinics), patients
  whose ``generalPractitioner`` is ``Practitioner/<practitioner>``, and
  patients REFERRED to them (a grant to ``Practitioner/<practitioner>`` or to
  the hub's organization). Read and write; no deletes.
- Resource types outside the Patient compartment (Practitioner, Organization,
  Location, Medication, Questionnaire, ...): readable by every role but the
  cashier, writable by ``admin`` only. A compartment resource that names no
  patient is reachable by the unrestricted roles only.
- ``AuditEvent``: read by ``admin`` and ``health-dept``; never created,
  updated, patched or deleted over the API (the server writes it: a 405 for
  every caller, admins too, ``capability.SERVER_WRITTEN``).
- Type and system ``_history`` of patient data: unrestricted readers only
  (it cannot be filtered per patient cheaply). Instance history follows read.

SMART v2 scopes: when the token carries resource scopes (``patient/*.rs``,
``user/Observation.cruds``, ``system/*.r``, or the v1 forms ``*.read`` /
``*.write`` / ``*.*``), the interaction also needs a scope granting its letter
for the type (c create, r read/vread/history, u update/patch, s search,
d delete; ``$everything`` needs ``r`` and ``s`` on ``*``). Scopes only narrow
what the role allows. Sen has no SMART launch context, so ``patient/``
scopes are treated like ``user/`` ones (the role rules still bind them to the
user's patients). Granular scopes with a query (``?category=...``) grant
nothing here (they are ignored rather than over-granting). A token without
resource scopes is judged by its roles alone.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

READ_INTERACTIONS = frozenset({"read", "vread", "history", "history-type", "search", "everything"})
WRITE_INTERACTIONS = frozenset({"create", "update", "patch", "delete"})
INTERACTIONS = READ_INTERACTIONS | WRITE_INTERACTIONS

# the SMART letter each interaction needs
SCOPE_LETTER = {"create": "c", "read": "r", "vread": "r", "history": "r", "history-type": "s", "search": "s",
                "update": "u", "patch": "u", "delete": "d", "everything": "rs"}

UNRESTRICTED_READERS = frozenset({"admin", "health-dept"})
SERVICE_WRITES = frozenset({"Encounter", "Composition", "Provenance"})
SERVICE_READS = SERVICE_WRITES | {"Patient", "Practitioner", "Organization"}
CASHIER_TYPES = frozenset({"Patient", "Coverage"})
AUDIT_TYPE = "AuditEvent"

GRANTS = "grants"  # the EHR database's collection of grants (referral and take-on), insert-only
ENDED = "take-on-end"  # kind of a grants document that ends the take-on grant named by its ``ends``


class Denied(Exception):
    """The policy refuses; the message says what is missing (no patient data in it)."""


# --------------------------------------------------------------------------- SMART scopes

@dataclass(frozen=True)
class Scope:
    context: str  # patient | user | system
    resource_type: str  # a type or "*"
    letters: frozenset[str]

    def grants(self, resource_type: str, letter: str) -> bool:
        return self.resource_type in ("*", resource_type) and letter in self.letters


_SCOPE = re.compile(r"^(patient|user|system)/(\*|[A-Z][A-Za-z]{1,63})\.([a-z*]+)$")
_V2 = re.compile(r"^c?r?u?d?s?$")


def parse_scope(text: str) -> Scope | None:
    """One SMART scope (v2 ``cruds`` letters, or v1 ``read``/``write``/``*``); None if not a resource scope."""
    m = _SCOPE.match(text.strip())
    if m is None:
        return None
    context, rtype, perms = m.groups()
    if perms == "read":
        letters = "rs"
    elif perms == "write":
        letters = "cud"
    elif perms == "*":
        letters = "cruds"
    elif perms and _V2.match(perms):
        letters = perms
    else:
        return None
    return Scope(context, rtype, frozenset(letters))


def parse_scopes(scopes: Iterable[str]) -> list[Scope]:
    """The resource scopes among ``scopes`` (``openid``, ``launch``, granular ones... are left out)."""
    out = []
    for s in scopes:
        for part in str(s).split():
            sc = parse_scope(part)
            if sc is not None:
                out.append(sc)
    return out


def scope_allows(scopes: Sequence[Scope], interaction: str, resource_type: str) -> bool:
    letters = SCOPE_LETTER[interaction]
    if interaction == "everything":
        return all(any(s.grants("*", ch) for s in scopes) for ch in letters)
    return all(any(s.grants(resource_type, ch) for s in scopes) for ch in letters)


# --------------------------------------------------------------------------- facts

@dataclass(frozen=True)
class PatientFacts:
    """What the policy needs to know about one patient."""

    ref: str  # Patient/<id>
    owners: frozenset[str] = frozenset()  # managingOrganization and generalPractitioner references
    granted_to: frozenset[str] = frozenset()  # grantees of unexpired referral grants
    ended: dict[str, str] = field(default_factory=dict)  # grantee -> when its take-on was ended (ISO)


@dataclass(frozen=True)
class Reach:
    """Whose patients a principal reaches: the references that own them, and the patients granted."""

    unrestricted: bool = False
    owner_refs: frozenset[str] = frozenset()
    grantee_refs: frozenset[str] = frozenset()
    granted: frozenset[str] = field(default_factory=frozenset)  # Patient/<id> refs (filled by the caller)


def owner_refs(principal: Any) -> frozenset[str]:
    """The references a clinic/doctor principal owns patients through."""
    refs: set[str] = set()
    roles = principal.roles
    if roles & {"clinic", "doctor"} and principal.facility:
        refs.add(f"Organization/{principal.facility}")
    if "doctor" in roles and principal.practitioner:
        refs.add(f"Practitioner/{principal.practitioner}")
    return frozenset(refs)


def grantee_refs(principal: Any) -> frozenset[str]:
    """The grantee references a principal receives referral grants under."""
    return owner_refs(principal)


def reaches(principal: Any, patient: PatientFacts, *, via_grant: bool = True) -> bool:
    mine = owner_refs(principal)
    if patient.owners & mine:
        return True
    return via_grant and bool(patient.granted_to & grantee_refs(principal))


def is_unrestricted_reader(principal: Any) -> bool:
    return bool(principal.roles & UNRESTRICTED_READERS)


# --------------------------------------------------------------------------- the decision

def _role_allows(role: str, principal: Any, interaction: str, resource_type: str, compartment: bool,
                 patients: Sequence[PatientFacts] | None) -> str | None:
    """None when ``role`` allows the interaction, else the reason it does not."""
    write = interaction in WRITE_INTERACTIONS
    if role == "admin":
        return None
    if resource_type == AUDIT_TYPE:
        if write:
            return "the audit trail is written by the server only"
        return None if role == "health-dept" else "reading the audit trail needs the admin or health-dept role"
    if role == "health-dept":
        return "the health-dept role reads only" if write else None
    if role == "service":
        allowed = SERVICE_WRITES if write else SERVICE_READS
        if write and interaction == "delete":
            return "service accounts do not delete"
        if resource_type in allowed and interaction != "everything":
            return None
        return f"service accounts may not {interaction} {resource_type}"
    if role == "cashier":
        if write:
            return "the cashier role reads only"
        if resource_type in CASHIER_TYPES and interaction in ("read", "vread", "history", "search"):
            return None
        return f"the cashier role reads Patient and Coverage only, not {resource_type}"
    if role in ("clinic", "doctor"):
        if not compartment:
            return f"{resource_type} is written by admin only" if write else None
        if interaction == "history-type":
            return "type and system history of patient data is for admin and health-dept"
        if interaction == "delete" and role == "doctor":
            return "doctors do not delete records"
        if patients is None:
            return None  # type-level question: searches are filtered, unknown resources answer 404/410
        if not patients:
            return f"this {resource_type} names no patient your {role} role reaches"
        if not owner_refs(principal):
            return f"the token names no facility{' or practitioner' if role == 'doctor' else ''}"
        for p in patients:
            if not reaches(principal, p, via_grant=interaction != "delete"):
                ended = next((p.ended[g] for g in sorted(grantee_refs(principal)) if g in p.ended), None)
                # the patient is named only when it is what was asked for: which patient another
                # facility's Observation (Encounter, ...) belongs to is not said to who may not read it
                whose = p.ref if resource_type == "Patient" else f"this {resource_type}'s patient"
                return (f"{whose} is not managed by your facility"
                        + (" and has not been referred to you" if role == "doctor" else "")
                        + (" (a referral grant does not allow deleting)" if interaction == "delete" else "")
                        + (f" (your facility's take-on of this patient was ended at {ended})" if ended else ""))
        return None
    return f"the role {role!r} has no access to FHIR data"


def check(principal: Any, interaction: str, resource_type: str, *, compartment: bool,
          patients: Sequence[PatientFacts] | None = None) -> None:
    """Raise :class:`Denied` unless ``principal`` may do ``interaction`` on ``resource_type``.

    ``patients``: the patients the resource belongs to (before and after a
    write); ``None`` asks the type-level question only (a search, restricted
    by :func:`patient_filter` / :func:`compartment_filter` instead, or a
    resource that does not exist, which answers 404/410). ``compartment``: the type is Patient
    or in the Patient compartment.
    """
    if interaction not in INTERACTIONS:
        raise ValueError(f"unknown interaction {interaction!r}")
    roles = sorted(principal.roles)
    if not roles:
        raise Denied("the token carries no Sen role")
    reasons = []
    for role in roles:
        why = _role_allows(role, principal, interaction, resource_type, compartment, patients)
        if why is None:
            break
        reasons.append(why)
    else:
        raise Denied("; ".join(dict.fromkeys(reasons)))
    scopes = parse_scopes(principal.scopes)
    if scopes and not scope_allows(scopes, interaction, resource_type):
        need = SCOPE_LETTER[interaction]
        target = "*" if interaction == "everything" else resource_type
        raise Denied(f"the token's SMART scopes do not grant '{need}' on {target} "
                     f"(e.g. user/{target}.{need})")


def search_is_unrestricted(principal: Any, resource_type: str, compartment: bool) -> bool:
    """True when the principal's searches of ``resource_type`` need no patient filter."""
    roles = principal.roles
    if roles & UNRESTRICTED_READERS or not compartment:
        return True
    if "service" in roles and resource_type in SERVICE_READS:
        return True
    return "cashier" in roles and resource_type in CASHIER_TYPES


def patient_filter(reach: Reach) -> dict[str, Any]:
    """The Patient documents ``reach`` covers (stored index fields of managingOrganization/generalPractitioner)."""
    ors: list[dict[str, Any]] = []
    for ref in sorted(reach.owner_refs):
        if ref.startswith("Organization/"):
            ors.append({"sp_organization": ref})
        ors.append({"sp_general-practitioner": ref})
    if reach.granted:
        ors.append({"_id": {"$in": sorted(r.split("/", 1)[1] for r in reach.granted)}})
    if not ors:
        return {"_id": {"$in": []}}
    return ors[0] if len(ors) == 1 else {"$or": ors}


def compartment_filter(param: str, patient_refs: Iterable[str]) -> dict[str, Any]:
    """Resources of the compartment whose ``param`` reference is one of ``patient_refs``."""
    return {f"sp_{param}": {"$in": sorted(set(patient_refs))}}


# --------------------------------------------------------------------------- referral grants

def grant_id(patient: str, grantee: str) -> str:
    """The (patient, grantee) pair a grant document is for (its ``pair`` field; one document per referral event)."""
    return f"{patient}|{grantee}"


def grant_active(doc: dict[str, Any] | None, now: datetime | None = None) -> bool:
    """Whether one grant document grants by itself (unexpired, not revoked; an end record never
    does). A take-on grant may also have been ended by another document: :func:`active_grants`."""
    if not doc or doc.get("revoked") or doc.get("kind") == ENDED:
        return False
    exp = doc.get("expires")
    if exp is None:
        return True
    if isinstance(exp, datetime):
        if exp.tzinfo is None:
            exp = exp.replace(tzinfo=UTC)
        return exp > (now or datetime.now(UTC))
    return False


def active_grants(docs: Iterable[dict[str, Any]], now: datetime | None = None) -> list[dict[str, Any]]:
    """The grants among ``docs`` (a pair's or a grantee's documents, end records included) that grant:
    active by :func:`grant_active` and not ended by an end record among the same documents (the end
    record names the grant's ``_id`` in ``ends``, and carries the grant's pair and grantee, so the
    one query that finds a grant finds its end)."""
    docs = list(docs)
    ended = {d.get("ends") for d in docs if d.get("kind") == ENDED}
    return [d for d in docs if d.get("_id") not in ended and grant_active(d, now)]


def ended_at(docs: Iterable[dict[str, Any]]) -> str | None:
    """When the latest take-on end among ``docs`` was made (ISO, UTC), or None: what a refusal says."""
    times = [d.get("created") for d in docs if d.get("kind") == ENDED and isinstance(d.get("created"), datetime)]
    if not times:
        return None
    last = max(t if t.tzinfo else t.replace(tzinfo=UTC) for t in times)
    return last.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


__all__ = ["ENDED", "GRANTS", "Denied", "PatientFacts", "Reach", "Scope", "active_grants", "check",
           "compartment_filter", "ended_at", "grant_active", "grant_id", "grantee_refs", "is_unrestricted_reader",
           "owner_refs", "parse_scope", "parse_scopes", "patient_filter", "reaches", "scope_allows",
           "search_is_unrestricted"]
