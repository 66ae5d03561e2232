"""JSON logs, one object a line, with the correlation id of the request or event.

The correlation id lives in a context variable: the web layer sets it from the
``X-Correlation-ID`` header (or makes one), the bus copies it into every event
it publishes and sets it again in the handler that consumes the event, so one
id follows a request through every service it touches.

Patient data never goes into logs: log ids and counts, never names, bodies or
query strings.
"""

from __future__ import annotations

import contextvars
import logging
import sys

from pythonjsonlogger.json import JsonFormatter

from .ids import new_hex

correlation_id: contextvars.ContextVar[str] = contextvars.ContextVar("correlation_id", default="")


def new_correlation_id() -> str:
    """32 random hex digits (as a uuid4's hex, without building a UUID object on every request)."""
    return new_hex(16)


def current_correlation_id() -> str:
    """The current id, making one when none is set (a process started outside a request)."""
    cid = correlation_id.get()
    if not cid:
        cid = new_correlation_id()
        correlation_id.set(cid)
    return cid


class _ContextFilter(logging.Filter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def filter(self, record: logging.LogRecord) -> bool:
        record.service = self.service
        record.correlation_id = correlation_id.get()
        return True


def setup_logging(service: str, level: str = "INFO") -> None:
    """Send every log record to stderr as JSON; idempotent."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(
        "%(asctime)s %(levelname)s %(name)s %(message)s %(service)s %(correlation_id)s",
        rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
        timestamp=False,
    ))
    handler.addFilter(_ContextFilter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # uvicorn's access log prints query strings, which may carry patient names.
    logging.getLogger("uvicorn.access").disabled = True
    for noisy in ("amqp", "kombu", "pymongo"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level)))
    # connexion's parameter decorator logs an ERROR ("Function argument 'x' ... not defined in
    # specification", "Body property 'x' not defined in body schema") for a query parameter or form
    # field the spec does not declare when the handler takes **kwargs or has an argument of that name
    # (a path parameter's: ?id=, ?type=). connexion marks it unreachable ("pragma: no cover") because
    # strict_validation turns such a request into a 400 first; the FHIR services run with
    # strict_validation=False (a search's parameters are the FHIR layer's: an unknown one is its 400
    # or ignored under Prefer: handling=lenient), so a client's typo would be an ERROR per request,
    # and no server fault ever reaches these lines. The parameter is dropped and the answer is the
    # handler's either way; this logger says nothing else above DEBUG.
    logging.getLogger("connexion.decorators.parameter").setLevel(logging.CRITICAL)
