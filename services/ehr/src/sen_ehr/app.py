"""Composition root of the ehr web process: ``create_app()`` wires everything, connects to nothing."""

from __future__ import annotations

import connexion
from sen_shared.web import build_app

from .config import EhrSettings, settings_from_env
from .indexes import INDEXES


def create_app(settings: EhrSettings | None = None) -> connexion.FlaskApp:
    settings = settings or settings_from_env()
    return build_app(settings, spec="ehr.yaml", api_package="sen_ehr.api", indexes=INDEXES,
                     fhir_base="/fhir")
