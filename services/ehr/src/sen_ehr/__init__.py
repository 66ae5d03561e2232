"""Sen ehr service:
the clinical record as FHIR R4: Patient, Practitioner, Organization, Encounter, Observation, Composition and the rest.
"""

import sen_shared  # noqa: F401,E402 - first: it silences a warning connexion prints at import
