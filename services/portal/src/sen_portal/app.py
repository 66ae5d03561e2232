"""Composition root of the portal web process: ``create_app()`` wires everything, connects to nothing."""

from __future__ import annotations

import connexion
from sen_shared.web import build_app

from .config import PortalSettings, settings_from_env
from .indexes import INDEXES
from .web import init_web


def create_app(settings: PortalSettings | None = None) -> connexion.FlaskApp:
    settings = settings or settings_from_env()
    # a body over the limit sent to a page gets the page's 413 (web.body_too_large); the JSON API's, a problem
    app = build_app(settings, spec="portal.yaml", api_package="sen_portal.api", indexes=INDEXES,
                    pages=lambda path: not path.startswith("/api/"))
    init_web(app.app, settings)  # the pages: a Flask blueprint on connexion's public Flask app
    return app
