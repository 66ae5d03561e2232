"""operationId targets of the teleconsult API: thin handlers."""
