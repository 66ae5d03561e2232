"""operationId targets of the billing API: thin handlers."""
