"""The teleconsult service's I/O: the EHR over HTTP, the consult workflow's storage."""
