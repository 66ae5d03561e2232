"""Composition root of the portal web process: ``create_app()`` wires everything, connects to nothing."""

from __future__ import annotations

from typing import Any

import connexion
from sen_shared.web import build_app
from werkzeug.exceptions import HTTPException

from .config import PortalSettings, settings_from_env
from .indexes import INDEXES
from .web import init_web


def create_app(settings: PortalSettings | None = None) -> connexion.FlaskApp:
    settings = settings or settings_from_env()
    # a body over the limit sent to a page gets the page's 413 (web.body_too_large); the JSON API's, a problem
    app = build_app(settings, spec="portal.yaml", api_package="sen_portal.api", indexes=INDEXES,
                    pages=lambda path: is_page(app.app, path))
    init_web(app.app, settings)  # the pages: a Flask blueprint on connexion's public Flask app
    return app


def is_page(flask_app: Any, path: str) -> bool:
    """Whether ``path`` is one of the portal's pages (a route of the ``web`` blueprint taking a form),
    not its JSON API (``/api/...``, ``/admin/...``): asked only of a body over the limit."""
    adapter = flask_app.url_map.bind("portal")
    for method in ("POST", "PUT", "PATCH"):
        try:
            endpoint = adapter.match(path, method=method)[0]
        except HTTPException:
            continue
        return str(endpoint).startswith("web.")
    return False
