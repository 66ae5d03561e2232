"""The access policy's rules, role by role, and SMART scope parsing (pure: no servers)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sen_shared.auth import Principal
from sen_shared.fhir import access
from sen_shared.fhir.access import Denied, PatientFacts, check, parse_scope, parse_scopes

A, B = "Organization/fac-a", "Organization/fac-b"
PA = PatientFacts("Patient/pa", owners=frozenset({A}))
PB = PatientFacts("Patient/pb", owners=frozenset({B}))
PB_GRANTED_DOC = PatientFacts("Patient/pb", owners=frozenset({B}), granted_to=frozenset({"Practitioner/d1"}))


def who(role: str, *, facility: str | None = None, practitioner: str | None = None,
        scope: str = "") -> Principal:
    return Principal(sub=f"u-{role}", roles=frozenset({role}), facility=facility, practitioner=practitioner,
                     scopes=frozenset(scope.split()))


CLINIC_A = who("clinic", facility="fac-a")
DOCTOR_HUB = who("doctor", facility="hub", practitioner="d1")


def allowed(principal: Principal, interaction: str, rtype: str, patients=None, compartment=True) -> bool:
    try:
        check(principal, interaction, rtype, compartment=compartment, patients=patients)
        return True
    except Denied:
        return False


# ------------------------------------------------------------------ role × interaction matrix

@pytest.mark.parametrize("interaction", ["read", "vread", "search", "history", "everything", "create", "update",
                                         "patch", "delete"])
def test_admin_may_do_everything(interaction: str) -> None:
    assert allowed(who("admin"), interaction, "Observation", [PB])


@pytest.mark.parametrize(("interaction", "ok"), [("read", True), ("search", True), ("everything", True),
                                                 ("history-type", True), ("create", False), ("update", False),
                                                 ("delete", False)])
def test_health_dept_reads_everything_writes_nothing(interaction: str, ok: bool) -> None:
    assert allowed(who("health-dept"), interaction, "Observation", [PB]) is ok


@pytest.mark.parametrize(("rtype", "interaction", "ok"), [
    ("Patient", "read", True), ("Patient", "search", True), ("Coverage", "read", True),
    ("Coverage", "search", True), ("Observation", "read", False), ("Observation", "search", False),
    ("Condition", "read", False), ("Patient", "everything", False), ("Patient", "update", False),
    ("Coverage", "create", False), ("Practitioner", "read", False), ("AuditEvent", "search", False),
])
def test_cashier_reads_patient_and_coverage_only(rtype: str, interaction: str, ok: bool) -> None:
    assert allowed(who("cashier"), interaction, rtype, [PA]) is ok


@pytest.mark.parametrize(("rtype", "interaction", "ok"), [
    ("Encounter", "create", True), ("Composition", "update", True), ("Provenance", "create", True),
    ("Patient", "read", True), ("Observation", "read", False), ("Observation", "create", False),
    ("Patient", "update", False), ("Encounter", "delete", False), ("Patient", "everything", False),
])
def test_service_does_what_events_need(rtype: str, interaction: str, ok: bool) -> None:
    assert allowed(who("service"), interaction, rtype, [PA]) is ok


@pytest.mark.parametrize(("interaction", "patient", "ok"), [
    ("read", PA, True), ("read", PB, False), ("update", PA, True), ("update", PB, False),
    ("create", PA, True), ("create", PB, False), ("delete", PA, True), ("delete", PB, False),
    ("everything", PA, True), ("everything", PB, False), ("history", PA, True),
])
def test_clinic_reaches_its_facilitys_patients(interaction: str, patient: PatientFacts, ok: bool) -> None:
    assert allowed(CLINIC_A, interaction, "Observation", [patient]) is ok


def test_clinic_write_touching_two_patients_needs_both() -> None:
    assert not allowed(CLINIC_A, "update", "Observation", [PA, PB])  # moving a result to another facility


def test_clinic_type_history_and_no_patient_are_refused() -> None:
    assert not allowed(CLINIC_A, "history-type", "Observation", None)
    assert not allowed(CLINIC_A, "read", "Observation", [])  # names no patient
    assert allowed(CLINIC_A, "search", "Observation", None)  # filtered instead


def test_clinic_reads_directory_types_but_does_not_write_them() -> None:
    assert allowed(CLINIC_A, "read", "Practitioner", None, compartment=False)
    assert not allowed(CLINIC_A, "create", "Organization", None, compartment=False)


def test_clinic_without_facility_claim_reaches_nobody() -> None:
    with pytest.raises(Denied, match="facility"):
        check(who("clinic"), "read", "Observation", compartment=True, patients=[PA])


def test_doctor_needs_hub_or_referral_grant() -> None:
    hub_patient = PatientFacts("Patient/ph", owners=frozenset({"Organization/hub"}))
    own_gp = PatientFacts("Patient/pg", owners=frozenset({"Practitioner/d1"}))
    assert allowed(DOCTOR_HUB, "read", "Observation", [hub_patient])
    assert allowed(DOCTOR_HUB, "read", "Patient", [own_gp])
    with pytest.raises(Denied, match="not been referred to you"):
        check(DOCTOR_HUB, "read", "Observation", compartment=True, patients=[PB])
    assert allowed(DOCTOR_HUB, "read", "Observation", [PB_GRANTED_DOC])
    assert allowed(DOCTOR_HUB, "create", "Composition", [PB_GRANTED_DOC])
    assert not allowed(DOCTOR_HUB, "delete", "Observation", [hub_patient])  # doctors never delete


def test_grant_to_another_doctor_does_not_help() -> None:
    other = who("doctor", facility="hub2", practitioner="d2")
    assert not allowed(other, "read", "Observation", [PB_GRANTED_DOC])


def test_audit_trail_is_append_only_and_for_overseers() -> None:
    assert allowed(who("health-dept"), "search", "AuditEvent", None)
    assert not allowed(CLINIC_A, "search", "AuditEvent", None)
    assert not allowed(who("health-dept"), "update", "AuditEvent", [PA])
    assert allowed(who("admin"), "delete", "AuditEvent", [PA])  # admin: everything, as documented


def test_denial_says_what_is_missing() -> None:
    with pytest.raises(Denied) as err:
        check(who("cashier"), "read", "Observation", compartment=True, patients=[PA])
    assert "Patient and Coverage" in str(err.value)
    with pytest.raises(Denied, match="no Sen role"):
        check(Principal(sub="x", roles=frozenset()), "read", "Patient", compartment=True, patients=[PA])


def test_several_roles_any_may_allow() -> None:
    both = Principal(sub="u", roles=frozenset({"cashier", "clinic"}), facility="fac-a")
    assert allowed(both, "read", "Observation", [PA])
    assert not allowed(both, "read", "Observation", [PB])


# ------------------------------------------------------------------ SMART scopes

@pytest.mark.parametrize(("text", "context", "rtype", "letters"), [
    ("patient/*.rs", "patient", "*", "rs"), ("user/Observation.cruds", "user", "Observation", "cruds"),
    ("system/*.r", "system", "*", "r"), ("user/Patient.cu", "user", "Patient", "cu"),
    ("patient/*.read", "patient", "*", "rs"), ("user/*.write", "user", "*", "cud"), ("user/*.*", "user", "*", "cruds"),
])
def test_scope_parsing(text: str, context: str, rtype: str, letters: str) -> None:
    s = parse_scope(text)
    assert s is not None and (s.context, s.resource_type, s.letters) == (context, rtype, frozenset(letters))


@pytest.mark.parametrize("text", ["openid", "fhirUser", "launch/patient", "offline_access", "user/*.sr",
                                  "user/*.rx", "user/observation.r", "patient/Observation.rs?category=laboratory",
                                  "user/*.", "bogus/*.r"])
def test_non_resource_or_malformed_scopes_grant_nothing(text: str) -> None:
    assert parse_scope(text) is None


def test_scopes_narrow_the_role() -> None:
    read_only = who("admin", scope="openid user/*.rs")
    assert allowed(read_only, "read", "Observation", [PA])
    assert allowed(read_only, "search", "Observation", None)
    with pytest.raises(Denied, match="'c' on Observation"):
        check(read_only, "create", "Observation", compartment=True, patients=[PA])
    obs_only = who("clinic", facility="fac-a", scope="user/Observation.r")
    assert allowed(obs_only, "read", "Observation", [PA])
    assert not allowed(obs_only, "search", "Observation", None)  # s missing
    assert not allowed(obs_only, "read", "Condition", [PA])
    assert not allowed(obs_only, "everything", "Patient", [PA])
    assert allowed(who("clinic", facility="fac-a", scope="patient/*.rs"), "everything", "Patient", [PA])


def test_scopes_never_widen_the_role() -> None:
    assert not allowed(who("cashier", scope="user/*.cruds"), "read", "Observation", [PA])
    assert not allowed(who("clinic", facility="fac-a", scope="system/*.cruds"), "read", "Observation", [PB])


def test_no_resource_scope_means_roles_alone() -> None:
    assert parse_scopes(["openid profile"]) == []
    assert allowed(who("clinic", facility="fac-a", scope="openid profile"), "create", "Observation", [PA])


# ------------------------------------------------------------------ search filters and grants

def test_patient_filter_uses_stored_index_fields() -> None:
    reach = access.Reach(owner_refs=frozenset({A}), granted=frozenset({"Patient/p9"}))
    flt = access.patient_filter(reach)
    assert {"sp_organization": A} in flt["$or"] and {"sp_general-practitioner": A} in flt["$or"]
    assert {"_id": {"$in": ["p9"]}} in flt["$or"]
    assert access.patient_filter(access.Reach()) == {"_id": {"$in": []}}
    assert access.compartment_filter("patient", ["Patient/b", "Patient/a", "Patient/a"]) == \
        {"sp_patient": {"$in": ["Patient/a", "Patient/b"]}}


def test_search_restriction_by_role() -> None:
    assert access.search_is_unrestricted(who("admin"), "Observation", True)
    assert access.search_is_unrestricted(who("health-dept"), "Observation", True)
    assert access.search_is_unrestricted(who("cashier"), "Patient", True)
    assert not access.search_is_unrestricted(CLINIC_A, "Observation", True)
    assert not access.search_is_unrestricted(CLINIC_A, "Patient", True)
    assert access.search_is_unrestricted(CLINIC_A, "Practitioner", False)


def test_grant_ids_and_expiry() -> None:
    assert access.grant_id("Patient/p", "Practitioner/d") == "Patient/p|Practitioner/d"
    now = datetime.now(UTC)
    assert access.grant_active({"expires": now + timedelta(hours=1)}, now)
    assert not access.grant_active({"expires": now - timedelta(seconds=1)}, now)
    assert not access.grant_active({"expires": now + timedelta(hours=1), "revoked": True}, now)
    assert not access.grant_active(None, now)
    assert access.grant_active({"expires": (now + timedelta(hours=1)).replace(tzinfo=None)}, now)
