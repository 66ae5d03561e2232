"""The ehr service's own rules: which FHIR resource types it holds."""

from __future__ import annotations

from sen_shared import bhyt

# The clinical record. ServiceRequest belongs to teleconsult, Binary is not served.
RESOURCE_TYPES: tuple[str, ...] = (
    "Patient", "Practitioner", "PractitionerRole", "Organization", "Location", "Encounter", "Observation",
    "Condition", "Procedure", "Medication", "MedicationRequest", "MedicationStatement", "AllergyIntolerance",
    "Immunization", "DiagnosticReport", "DocumentReference", "ImagingStudy", "Composition", "CarePlan",
    "Coverage", "Consent", "Provenance", "AuditEvent", "RelatedPerson", "Specimen", "Device", "Group", "List",
    "FamilyMemberHistory", "ClinicalImpression", "RiskAssessment", "Goal", "CareTeam", "EpisodeOfCare",
    "NutritionOrder", "QuestionnaireResponse", "Questionnaire", "Media",
)

CCCD_SYSTEM = "https://fhir.sen.vn/sid/cccd"

# A citizen id (CCCD) or a health insurance card number names one Patient: a second Patient with
# the same one is refused (409 duplicate, naming the first; sen_shared/fhir/unique.py).
UNIQUE_IDENTIFIERS: dict[str, frozenset[str]] = {"Patient": frozenset({CCCD_SYSTEM, bhyt.CARD_SYSTEM})}
