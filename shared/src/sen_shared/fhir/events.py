"""The events a FHIR write causes (``<service>.<resource>.created|updated|deleted``), as outbox entries.

Every write puts its events in the insert that claims its version: the
version's history document (ARCHITECTURE.md §3, outbox without transactions;
store.py). The event names the resource and its version, never clinical
content: consumers that need more read the resource. ``with_events`` and
``new_document`` remain for other users of the generic outbox.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ..bus import outbox
from ..bus.events import make_event
from .store_time import iso


def resource_event(service: str, resource_type: str, verb: str, resource_id: str, version: int,
                   when: datetime) -> dict[str, Any]:
    """A CloudEvents 1.0 envelope for ``<service>.<resource>.<verb>``."""
    data = {"resourceType": resource_type, "id": resource_id, "versionId": str(version)}
    return make_event(f"{service}.{resource_type.lower()}.{verb}", data, subject=f"{resource_type}/{resource_id}",
                      time=iso(when), validate=False)


def with_events(update: dict[str, Any], events: list[dict[str, Any]]) -> dict[str, Any]:
    """``update`` extended so it appends ``events`` to the document's outbox (same single update)."""
    return outbox.with_events(update, events)


def new_document(doc: dict[str, Any], events: list[dict[str, Any]]) -> dict[str, Any]:
    """``doc`` with its outbox entries, for an insert."""
    return outbox.new_document(doc, events) if events else doc
