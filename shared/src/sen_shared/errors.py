"""The one exception family of the shared runtime, rendered as RFC 9457 problems.

Handlers raise a subclass of :class:`SenError`; the web layer turns it into an
``application/problem+json`` response (or a FHIR ``OperationOutcome`` on FHIR
APIs, see ``sen_shared.fhir``).
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any


def status_title(status: int) -> str:
    """The title of an ``about:blank`` problem: the status's reason phrase (RFC 9457 §4.2.1), "Not Found"
    for 404; a status with no registered phrase is titled by its number."""
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return f"HTTP {status}"


class SenError(Exception):
    """Base of every error a client can cause; carries its HTTP status."""

    status = 400
    title = "Bad Request"

    def __init__(self, detail: str, *, status: int | None = None, title: str | None = None,
                 **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        if status is not None:
            self.status = status
        if title is not None:
            self.title = title
        self.extra = extra

    def problem(self, instance: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": "about:blank",
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
        }
        if instance:
            body["instance"] = instance
        body.update(self.extra)
        return body


class Unauthorized(SenError):
    status = 401
    title = "Unauthorized"


class Forbidden(SenError):
    status = 403
    title = "Forbidden"


class NotFound(SenError):
    status = 404
    title = "Not Found"


class Conflict(SenError):
    status = 409
    title = "Conflict"


class PayloadTooLarge(SenError):
    status = 413
    title = "Content Too Large"


class Unavailable(SenError):
    status = 503
    title = "Service Unavailable"
