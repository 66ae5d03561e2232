"""Composition root of the teleconsult web process: ``create_app()`` wires everything, connects to nothing."""

from __future__ import annotations

import logging

import connexion
from sen_shared.fhir.rest import FhirConfig
from sen_shared.runtime import database_of
from sen_shared.web import build_app

from .config import TeleconsultSettings, settings_from_env
from .domain import RESOURCE_TYPES
from .fhir_server import INTERACTIONS, SEARCH_PARAMS, TeleconsultFhirServer
from .indexes import INDEXES
from .workflow import Consults


def create_app(settings: TeleconsultSettings | None = None) -> connexion.FlaskApp:
    settings = settings or settings_from_env()
    # the workflow publishes its own events (workflow.py): no generic teleconsult.<type>.<verb> ones
    fhir = TeleconsultFhirServer(FhirConfig(RESOURCE_TYPES, service="teleconsult", base_path="/fhir",
                                            emit_events=False, interactions=INTERACTIONS,
                                            search_params=SEARCH_PARAMS), db=database_of(settings),
                                 hide_refused=True)
    consults = Consults(fhir, settings)
    from .api.consults import submit_transaction
    from .api.scheduling import slot_entry

    fhir.submit = submit_transaction
    fhir.own_reads["Slot"] = slot_entry  # computed: a bundle's GET Slot/{id} is GET /fhir/Slot/{id}'s read
    # FHIR search takes open-ended query parameters: the engine validates them, not connexion
    app = build_app(settings, spec="teleconsult.yaml", api_package="sen_teleconsult.api", indexes=INDEXES,
                    fhir_base="/fhir", extras={"fhir": fhir, "consults": consults}, strict_validation=False)
    # FHIR bodies come as application/fhir+json or application/json: connexion warns on every request
    logging.getLogger("connexion.operations.openapi3").setLevel(logging.ERROR)
    return app
