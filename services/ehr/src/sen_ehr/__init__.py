"""Sen ehr service:
the clinical record as FHIR R4: Patient, Practitioner, Organization, Encounter, Observation, Composition and the rest.
"""
