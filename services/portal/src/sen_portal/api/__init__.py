"""operationId targets of the portal API: thin handlers."""
