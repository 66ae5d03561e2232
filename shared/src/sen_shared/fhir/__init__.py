"""Sen's FHIR R4 engine, shared by the ehr, teleconsult and billing services."""
