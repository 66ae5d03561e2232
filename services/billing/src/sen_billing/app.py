"""Composition root of the billing web process: ``create_app()`` wires everything, connects to nothing."""

from __future__ import annotations

import connexion
from sen_shared.web import build_app

from .config import BillingSettings, settings_from_env
from .indexes import INDEXES


def create_app(settings: BillingSettings | None = None) -> connexion.FlaskApp:
    settings = settings or settings_from_env()
    return build_app(settings, spec="billing.yaml", api_package="sen_billing.api", indexes=INDEXES,
                     fhir_base="/fhir")
