"""Composition root of the billing web process: ``create_app()`` wires everything, connects to nothing."""

from __future__ import annotations

import logging

import connexion
from sen_shared.fhir.rest import FhirConfig
from sen_shared.runtime import database_of
from sen_shared.web import build_app

from .config import BillingSettings, settings_from_env
from .fhir_server import INTERACTIONS, RESOURCE_TYPES, BillingFhirServer
from .indexes import INDEXES


def create_app(settings: BillingSettings | None = None) -> connexion.FlaskApp:
    settings = settings or settings_from_env()
    # billing publishes its own events (billing.invoice.issued, ...): no generic billing.<type>.<verb> ones
    fhir = BillingFhirServer(FhirConfig(RESOURCE_TYPES, service="billing", base_path="/fhir", emit_events=False,
                                        interactions=INTERACTIONS),
                             db=database_of(settings), settings=settings)
    # FHIR search takes open-ended query parameters: the engine validates them, not connexion
    app = build_app(settings, spec="billing.yaml", api_package="sen_billing.api", indexes=INDEXES,
                    fhir_base="/fhir", extras={"fhir": fhir}, strict_validation=False)
    # FHIR bodies come as application/fhir+json or application/json: connexion warns on every request
    logging.getLogger("connexion.operations.openapi3").setLevel(logging.ERROR)
    return app
