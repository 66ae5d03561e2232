"""Sen's shared runtime: what every service uses.

Configuration, JSON logging with correlation ids, lazy MongoDB clients, the
event bus and outbox, JWT authentication, RFC 9457 problems, health and
metrics endpoints, and the FHIR engine.
"""
