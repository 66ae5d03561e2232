"""Sen's shared runtime: what every service uses.

Configuration, JSON logging with correlation ids, lazy MongoDB clients, the
event bus and outbox, JWT authentication, RFC 9457 problems, health and
metrics endpoints, and the FHIR engine.
"""

import warnings

# connexion imports starlette's test client at start, which warns about httpx on
# every process start; the warning is about tests, not about what we run.
warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
