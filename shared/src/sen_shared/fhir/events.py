"""The events a FHIR write causes (``<service>.<resource>.created|updated|deleted``), as outbox entries.

Every write puts its events in the insert that claims its version: the
version's history document (ARCHITECTURE.md §3, outbox without transactions;
store.py). The event names the resource and its version, never clinical
content: consumers that need more read the resource. A service may add a few
summary fields per resource type (:data:`EventFields`, ``FhirConfig.event_fields``:
e.g. the EHR's Patient events carry the patient's district for the reporting);
its event schema must list them. ``with_events`` and ``new_document`` remain for
other users of the generic outbox.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from ..bus import outbox
from ..bus.events import make_event
from .store_time import iso

# a resource type's summary fields for its events: the resource (one version) -> JSON scalars (names
# and values the type's event schema lists; no clinical content, no names)
EventFields = Callable[[Mapping[str, Any]], dict[str, Any]]


def previous_fields(fields: Mapping[str, Any]) -> dict[str, Any]:
    """The replaced version's summary fields as an update's event carries them beside the new
    version's: ``district`` -> ``previousDistrict``."""
    return {f"previous{k[:1].upper()}{k[1:]}": v for k, v in fields.items()}


def resource_event(service: str, resource_type: str, verb: str, resource_id: str, version: int,
                   when: datetime, fields: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A CloudEvents 1.0 envelope for ``<service>.<resource>.<verb>`` (``fields``: its type's summary
    fields, :data:`EventFields`, added to ``data``)."""
    data = {**(fields or {}), "resourceType": resource_type, "id": resource_id, "versionId": str(version)}
    return make_event(f"{service}.{resource_type.lower()}.{verb}", data, subject=f"{resource_type}/{resource_id}",
                      time=iso(when), validate=False)


def with_events(update: dict[str, Any], events: list[dict[str, Any]]) -> dict[str, Any]:
    """``update`` extended so it appends ``events`` to the document's outbox (same single update)."""
    return outbox.with_events(update, events)


def new_document(doc: dict[str, Any], events: list[dict[str, Any]]) -> dict[str, Any]:
    """``doc`` with its outbox entries, for an insert."""
    return outbox.new_document(doc, events) if events else doc
