"""The ehr's own Patient operations: ``$take-on`` (``domain.take_on``), a clinic granted a patient
registered elsewhere on presenting the patient's full CCCD or BHYT number, ``$end-take-on``
(``domain.end_take_on``), that grant ended, and their OperationDefinitions, served at the URLs the
CapabilityStatement names."""

from __future__ import annotations

from typing import Any

from sen_shared.auth import current_principal
from sen_shared.fhir.capability import operation_definition as definition
from sen_shared.fhir.http import FhirResponse, from_flask, to_connexion
from sen_shared.runtime import current

from ..domain import end_take_on as ending
from ..domain import take_on as rules
from ..domain.take_on_failures import Limit


def take_on(id: str, **_: Any) -> Any:  # noqa: A002 - the path parameter's name
    req = from_flask("Patient", id, operation=f"${rules.OPERATION}")
    status, body = rules.run(current().extras["fhir"], current_principal(), id, req.body,
                             Limit.from_settings(current().settings))
    return to_connexion(FhirResponse(status, body), req)


def end_take_on(id: str, **_: Any) -> Any:  # noqa: A002 - the path parameter's name
    req = from_flask("Patient", id, operation=f"${ending.OPERATION}")
    status, body = ending.run(current().extras["fhir"], current_principal(), id, req.body)
    return to_connexion(FhirResponse(status, body), req)


def take_on_by_identifier(**_: Any) -> Any:
    req = from_flask("Patient", operation=f"${rules.OPERATION}")
    status, body = rules.run(current().extras["fhir"], current_principal(), None, req.body,
                             Limit.from_settings(current().settings))
    return to_connexion(FhirResponse(status, body), req)


def operation_definition(id: str) -> Any:  # noqa: A002 - the path parameter's name
    """``GET /fhir/OperationDefinition/{id}``: the definition of an operation of the ehr's own
    ($take-on, $end-take-on), at the canonical URL its CapabilityStatement names."""
    req = from_flask("OperationDefinition", id)
    fhir = current().extras["fhir"]
    return to_connexion(FhirResponse(200, definition(fhir.config, req.base, id)), req)
