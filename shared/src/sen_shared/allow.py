"""The ``Allow`` header of a 405: the methods the request's target serves (RFC 9110 §15.5.6, §10.2.1).

Built once per app from its OpenAPI spec, the routes' truth: every path template that matches the
request's path gives its methods (``HEAD`` with ``GET``, as the router answers it). connexion routes
each (path, method) on its own, so the router's own 405 names the methods of the first route it
tried only (``DELETE /fhir/Patient`` answered ``Allow: HEAD, GET`` though POST and PUT are served);
every 405 the error handlers send takes its ``Allow`` from here instead (``web._error_handlers``).

A FHIR server narrows the spec's methods to what it serves (:meth:`FhirServer.served_methods`): the
``{type}`` routes for the types it serves, a type's writes as its interactions say (an AuditEvent is
read and created, never updated or deleted). An empty value says no method is served there (§10.2.1); under
the FHIR base the answer there is no 405 but a 404 (``web._error_handlers``, :meth:`FhirServer.unserved`):
the type's when the path names a resource type the server does not serve, as FHIR's http.html says, else one
saying nothing is served there (billing's ``[base]``: no Bundles), which an empty ``Allow`` did not.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

_ORDER = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE")
_PARAM = re.compile(r"\\\{[^/]+?\\\}")

# (template, concrete path, the template's methods) -> the methods served there
Narrow = Callable[[str, str, tuple[str, ...]], tuple[str, ...]]


class AllowedMethods:
    """``allowed(path)``: the ``Allow`` value of ``path`` (None when no route matches it)."""

    def __init__(self, paths: Mapping[str, Any], *, base: str | None = None, narrow: Narrow | None = None) -> None:
        self._routes: list[tuple[re.Pattern[str], str, tuple[str, ...]]] = []
        for template, item in paths.items():
            if not isinstance(item, dict):
                continue
            methods = {m.upper() for m in item if m.upper() in _ORDER}
            if "GET" in methods:
                methods.add("HEAD")  # served with GET by the router (Flask answers it without the body)
            pattern = re.compile(_PARAM.sub("[^/]+", re.escape(template)) + "/?")
            self._routes.append((pattern, template, tuple(m for m in _ORDER if m in methods)))
        self._base = base.rstrip("/") if base else None
        self._narrow = narrow

    def served(self, path: str) -> list[tuple[str, tuple[str, ...]]]:
        """Each spec path template that matches ``path``, with the methods served there (narrowed)."""
        out = []
        for pattern, template, methods in self._routes:
            if not pattern.fullmatch(path):
                continue
            if self._narrow is not None and self._base is not None and template.startswith(self._base):
                methods = self._narrow(template[len(self._base):], path[len(self._base):], methods)
            out.append((template, methods))
        return out

    def methods(self, path: str) -> tuple[str, ...] | None:
        served = self.served(path)
        found = {m for _, methods in served for m in methods}
        return tuple(m for m in _ORDER if m in found) if served else None

    def templates(self, path: str) -> list[str]:
        """The spec's path templates that match ``path``."""
        return [template for pattern, template, _ in self._routes if pattern.fullmatch(path)]

    def allowed(self, path: str) -> str | None:
        methods = self.methods(path)
        return None if methods is None else ", ".join(methods)
