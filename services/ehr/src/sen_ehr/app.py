"""Composition root of the ehr web process: ``create_app()`` wires everything, connects to nothing."""

from __future__ import annotations

import logging

import connexion
from sen_shared.fhir.rest import FhirConfig
from sen_shared.runtime import database_of
from sen_shared.web import build_app

from .config import EhrSettings, settings_from_env
from .domain import RESOURCE_TYPES, UNIQUE_IDENTIFIERS, end_take_on, patient_events, take_on
from .domain.registered_elsewhere import EhrFhirServer
from .domain.take_on_failures import Limit
from .indexes import INDEXES


def create_app(settings: EhrSettings | None = None) -> connexion.FlaskApp:
    settings = settings or settings_from_env()
    # a number registered to a patient the caller may not see: a 409 naming no one, counted in the take-on's budget
    fhir = EhrFhirServer(FhirConfig(RESOURCE_TYPES, service="ehr", base_path="/fhir",
                                    unique_identifiers=UNIQUE_IDENTIFIERS,
                                    operations=(take_on.DEFINITION, end_take_on.DEFINITION),
                                    event_fields=dict(patient_events.EVENT_FIELDS)),
                         db=database_of(settings), hide_refused=True, limit=Limit.from_settings(settings))
    # FHIR search takes open-ended query parameters: the engine validates them, not connexion
    app = build_app(settings, spec="ehr.yaml", api_package="sen_ehr.api", indexes=INDEXES,
                    fhir_base="/fhir", extras={"fhir": fhir}, strict_validation=False)
    # FHIR bodies come as application/fhir+json or application/json: connexion warns on every request
    logging.getLogger("connexion.operations.openapi3").setLevel(logging.ERROR)
    return app
