"""Thin handlers of the FHIR endpoints every Sen FHIR server shares: request in, one engine call, response out.

The paths they serve are defined once, in ``specs/common/fhir.yaml``, merged into a service's
spec at start (``sen_shared.web.load_spec``) when the spec says ``x-sen-fhir: true``. Their
operationIds are relative (``fhir.read``): each service's ``api/fhir.py`` re-exports this module
(``from sen_shared.fhir.api import *``), so an operation belongs to the service that serves it
(``sen_ehr.api.fhir.read``) while the code is one. The engine is the service's
:class:`~sen_shared.fhir.rest.FhirServer` in ``current().extras["fhir"]``.
"""

from __future__ import annotations

from typing import Any

from ..runtime import current
from .http import FhirRequest, FhirResponse, from_flask, to_connexion
from .rest import FhirServer

Reply = Any


def _server() -> FhirServer:
    return current().extras["fhir"]


def _run(method: str, req: FhirRequest) -> Reply:
    return to_connexion(getattr(_server(), method)(req), req)


def capabilities() -> Reply:
    return _run("capabilities", from_flask(body=False))


def operation_definition(id: str) -> Reply:  # noqa: A002 - the path parameter's name
    """The definition of one of the server's own operations, at the URL its CapabilityStatement names."""
    from .capability import operation_definition as definition

    req = from_flask("OperationDefinition", id, body=False)
    return to_connexion(FhirResponse(200, definition(_server().config, req.base, id)), req)


def bundle(**_: Any) -> Reply:
    return _run("bundle", from_flask())


def history_system() -> Reply:
    return _run("history", from_flask(body=False))


def search(type: str) -> Reply:
    return _run("search", from_flask(type, body=False))


def search_post(type: str, **_: Any) -> Reply:
    return _run("search_form", from_flask(type, form=True))


def create(type: str, **_: Any) -> Reply:
    return _run("create", from_flask(type))


def conditional_update(type: str, **_: Any) -> Reply:
    return _run("conditional_update", from_flask(type))


def history_type(type: str) -> Reply:
    return _run("history", from_flask(type, body=False))


def validate_type(type: str, **_: Any) -> Reply:
    return _run("validate", from_flask(type))


def validate_instance(type: str, id: str, **_: Any) -> Reply:
    return _run("validate", from_flask(type, id))


def read(type: str, id: str) -> Reply:
    return _run("read", from_flask(type, id, body=False))


def vread(type: str, id: str, vid: str) -> Reply:
    return _run("vread", from_flask(type, id, vid, body=False))


def update(type: str, id: str, **_: Any) -> Reply:
    return _run("update", from_flask(type, id))


def patch(type: str, id: str, **_: Any) -> Reply:
    return _run("patch", from_flask(type, id))


def delete(type: str, id: str) -> Reply:
    return _run("delete", from_flask(type, id, body=False))


def history_instance(type: str, id: str) -> Reply:
    return _run("history", from_flask(type, id, body=False))


def everything(id: str) -> Reply:
    return _run("everything", from_flask("Patient", id, body=False))


def compartment_search(id: str, type: str) -> Reply:
    if type == "_history":  # /Patient/{id}/_history routes here (the more specific path wins)
        return _run("history", from_flask("Patient", id, body=False))
    return _run("compartment_search", from_flask(type, body=False, compartment=("Patient", id)))


__all__ = ["bundle", "capabilities", "compartment_search", "conditional_update", "create", "delete", "everything",
           "history_instance", "history_system", "history_type", "operation_definition", "patch", "read", "search",
           "search_post", "update", "validate_instance", "validate_type", "vread"]
