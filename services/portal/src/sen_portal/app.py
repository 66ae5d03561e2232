"""Composition root of the portal web process: ``create_app()`` wires everything, connects to nothing."""

from __future__ import annotations

import logging
from typing import Any

import connexion
from sen_shared.web import build_app
from werkzeug.exceptions import HTTPException, MethodNotAllowed

from .config import PortalSettings, settings_from_env
from .indexes import INDEXES
from .web import init_web

log = logging.getLogger("sen.portal")


def create_app(settings: PortalSettings | None = None) -> connexion.FlaskApp:
    settings = settings or settings_from_env()
    # what the shared middleware refuses (a body over the limit, a path with control characters) a page answers
    # itself in the user's language (web.body_too_large, web.bad_address); the JSON API's, a problem
    app = build_app(settings, spec="portal.yaml", api_package="sen_portal.api", indexes=INDEXES,
                    pages=lambda scope: is_page(app.app, scope))
    init_web(app.app, settings)  # the pages: a Flask blueprint on connexion's public Flask app
    if settings.env == "production" and not settings.cookie_secure:
        log.warning("SEN_PORTAL_COOKIE_SECURE=false in production: the session cookie goes over plain HTTP too, "
                    "where anyone on the network can read it and sign in as its user; only for a lab without TLS")
    return app


def is_page(flask_app: Any, scope: Any) -> bool:
    """Whether an ASGI request is for one of the portal's pages, as :func:`web.no_such_page` tells a page's
    404: a route of the ``web`` blueprint for its method (a GET of a form-only address too), or no route
    at all outside the JSON API (``/api/...``, ``/admin/...``) asked by a browser (it prefers HTML). Asked
    only of what the shared middleware refuses."""
    from werkzeug.datastructures import MIMEAccept
    from werkzeug.http import parse_accept_header

    from .web import API_PREFIXES

    path, method = str(scope.get("path", "")), str(scope.get("method", "GET"))
    adapter = flask_app.url_map.bind("portal")
    try:
        return str(adapter.match(path, method=method)[0]).startswith("web.")
    except MethodNotAllowed as err:  # a route for other methods: whose it is
        allowed = sorted(err.valid_methods or ())
    except HTTPException:  # no route (or only one with or without a trailing slash)
        allowed = []
    for other in allowed:
        try:
            return str(adapter.match(path, method=other)[0]).startswith("web.")
        except HTTPException:
            continue
    accept = dict(scope.get("headers") or []).get(b"accept", b"").decode("latin-1")
    accepts = parse_accept_header(accept, MIMEAccept)
    return not path.startswith(API_PREFIXES) and accepts.quality("text/html") > accepts.quality("application/json")
