"""CloudEvents 1.0 envelopes in structured JSON mode: build, encode, decode.

An event is a plain dict; its schema in ``specs/events/`` is the one
definition (no event classes copied into each consumer)::

    make_event("ehr.patient.created", {"resourceType": "Patient", "id": "p1", "versionId": "1"},
               subject="Patient/p1")
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from ..ids import new_uuid
from ..logs import current_correlation_id
from .catalog import Catalog, event_type, load_catalog
from .errors import UndecodableMessage

CONTENT_TYPE = "application/cloudevents+json"
SPECVERSION = "1.0"


def utc_now() -> str:
    """RFC 3339 in UTC with milliseconds, e.g. ``2025-03-14T02:30:00.123Z``."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def make_event(routing_key: str, data: dict[str, Any], *, subject: str, correlation_id: str | None = None,
               event_id: str | None = None, time: str | None = None, catalog: Catalog | None = None,
               validate: bool = True) -> dict[str, Any]:
    """A CloudEvent for ``routing_key`` (``<service>.<entity>.<verb>``), validated against its schema.

    The correlation id defaults to the current one (the HTTP request's, see
    ``sen_shared.logs``), so the event carries it to every consumer.
    """
    service = routing_key.split(".", 1)[0]
    event = {
        "specversion": SPECVERSION,
        "id": event_id or new_uuid(),
        "source": f"/sen/{service}",
        "type": event_type(routing_key),
        "time": time or utc_now(),
        "subject": subject,
        "datacontenttype": "application/json",
        "correlationid": correlation_id or current_correlation_id(),
        "data": data,
    }
    if validate:
        (catalog or load_catalog()).validate(event)
    return event


def encode(event: dict[str, Any]) -> bytes:
    return json.dumps(event, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def decode(body: bytes | str, content_type: str | None) -> dict[str, Any]:
    """The event in a message body, or :class:`UndecodableMessage` saying why not."""
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media != CONTENT_TYPE:
        raise UndecodableMessage(f"content type {content_type!r} is not {CONTENT_TYPE}")
    try:
        text = body.decode("utf-8") if isinstance(body, bytes | bytearray | memoryview) else body
        event = json.loads(text)
    except (UnicodeDecodeError, ValueError) as err:
        raise UndecodableMessage(f"body is not UTF-8 JSON ({type(err).__name__})") from None
    if not isinstance(event, dict):
        raise UndecodableMessage("body is JSON but not an object")
    return event
