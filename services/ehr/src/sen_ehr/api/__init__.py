"""operationId targets of the ehr API: thin handlers."""
