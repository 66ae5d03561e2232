"""Effectively-once handling: an effect and its event id in one atomic update.

:func:`apply_once` adds a guard ``events_seen: {$ne: <event id>}`` to the
filter and pushes the id in the same ``update_one``, so applying an effect and
remembering it cannot be separated by a crash, and a redelivered event
matches nothing. Works on MongoDB and FerretDB 1.24 (top-level array equality
is pushed down; no transactions needed).

Upserts: when the document already holds the event id, the guarded filter
matches nothing and the upsert tries to insert a second document. With the
document named by ``_id`` (required here) that insert fails with a duplicate
key, which is how "already applied" is recognised; a concurrent first write of
a *different* event is told apart by retrying without upsert.

The list keeps the last ``keep`` ids (``$slice``) on MongoDB; FerretDB 1.24
ignores ``$slice``, so there the list grows with every event applied to the
document. Design effect documents so that one does not receive unbounded
events (one per resource or per day, not one per province forever).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pymongo.collection import Collection
from pymongo.errors import DuplicateKeyError

SEEN = "events_seen"


def apply_once(collection: Collection, filter: Mapping[str, Any], update: Mapping[str, Any], event_id: str,
               *, upsert: bool = False, keep: int = 200) -> bool:
    """Apply ``update`` to the document ``filter`` names unless it already saw ``event_id``.

    Returns True when the effect was applied now, False when it had been
    applied before (or, without upsert, when no document matches).
    """
    if upsert and "_id" not in filter:
        raise ValueError("apply_once with upsert needs the document's _id in the filter")
    if SEEN in filter or any(SEEN in (v or {}) for v in update.values() if isinstance(v, Mapping)):
        raise ValueError(f"{SEEN} is managed by apply_once")
    guarded = {**filter, SEEN: {"$ne": event_id}}
    full: dict[str, Any] = {k: dict(v) if isinstance(v, Mapping) else v for k, v in update.items()}
    full.setdefault("$push", {})[SEEN] = {"$each": [event_id], "$slice": -keep}
    try:
        res = collection.update_one(guarded, full, upsert=upsert)
    except DuplicateKeyError:
        # The document exists. Either it has seen the event, or another event created it
        # between our find and our insert: retry as a plain guarded update.
        res = collection.update_one(guarded, full)
        if res.matched_count:
            return True
        if collection.count_documents({"_id": filter["_id"], SEEN: event_id}, limit=1):
            return False
        raise  # a duplicate on another unique index: a real conflict, not a redelivery
    return bool(res.matched_count or res.upserted_id is not None)
