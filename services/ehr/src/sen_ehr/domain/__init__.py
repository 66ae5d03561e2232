"""The ehr service's own rules: which FHIR resource types it holds."""

from __future__ import annotations

# The clinical record. ServiceRequest belongs to teleconsult, Binary is not served.
RESOURCE_TYPES: tuple[str, ...] = (
    "Patient", "Practitioner", "PractitionerRole", "Organization", "Location", "Encounter", "Observation",
    "Condition", "Procedure", "Medication", "MedicationRequest", "MedicationStatement", "AllergyIntolerance",
    "Immunization", "DiagnosticReport", "DocumentReference", "ImagingStudy", "Composition", "CarePlan",
    "Coverage", "Consent", "Provenance", "AuditEvent", "RelatedPerson", "Specimen", "Device", "Group", "List",
    "FamilyMemberHistory", "ClinicalImpression", "RiskAssessment", "Goal", "CareTeam", "EpisodeOfCare",
    "NutritionOrder", "QuestionnaireResponse", "Questionnaire", "Media",
)
