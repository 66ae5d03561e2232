"""Effectively-once handling: an event's effect is claimed by inserting a record keyed by the event id.

Delivery is at least once, so a consumer sees some events twice, sometimes at the same
moment on two consumers. The rule (ARCHITECTURE.md §2, :mod:`sen_shared.claims`):

**The claim and the effect cannot be separated by a crash.** Either

1. the claim IS the effect: the consumer's effect is an insert-only fact, one document per
   event in a collection of its purpose, ``_id`` = the event id. :func:`apply_once` inserts
   it; a redelivery hits the unique ``_id`` and changes nothing. Readers derive state from
   the facts (the latest grant of a pair, the sum of a day's payments, ...). Nothing is ever
   updated, so two different events never write one document; or
2. the effect lives elsewhere and is itself idempotent, keyed by the event (an insert under a
   key derived from the event id, a conditional create, a chain link whose key the event
   names): pass it as ``effect``. It runs BEFORE the claim, so a crash between the two leaves
   no claim and the redelivery runs the effect again (harmlessly, being idempotent) and then
   claims. The claim only saves later redeliveries the work.

What is never done: growing an array of seen event ids in an effect document (FerretDB never
trims it and rewrites it whole on every update), or a guarded update of a document that two
consumers can update at once (FerretDB applies updates as unlocked read-modify-writes: the
guard guarantees nothing).

The collection should serve one consumer purpose; if several purposes share one, prefix
the key (``f"{purpose}/{event_id}"``). :func:`apply_many` is the same claim for several events
in one unordered insert (a consumer grouping the facts of concurrent deliveries).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from pymongo.collection import Collection
from pymongo.errors import BulkWriteError

from ..claims import claim_once


def apply_once(effects: Collection, event_id: str, fact: Mapping[str, Any] | None = None, *,
               effect: Callable[[], Any] | None = None) -> bool:
    """Claim ``event_id`` in ``effects`` by inserting ``fact`` under ``_id = event_id``.

    True when this call applied the event, False when it had been applied before (the
    stored fact is left as it was). With ``effect`` (an idempotent callable keyed by the
    event, see the module docstring) the effect runs first, unless the claim already exists,
    and the claim records that it is done; two concurrent deliveries may both run it.
    """
    if not event_id:
        raise ValueError("apply_once needs the event's id")
    if effect is not None:
        if effects.find_one({"_id": event_id}, {"_id": 1}) is not None:
            return False
        effect()
    applied, _ = claim_once(effects, event_id, fact)
    return applied


def apply_many(effects: Collection, facts: Sequence[tuple[str, Mapping[str, Any] | None]]) -> list[bool]:
    """:func:`apply_once` for several events in one unordered insert: for each ``(event id, fact)``,
    True when applied now, False when it had been applied before (or earlier in ``facts``).

    A duplicate ``_id`` is the only error taken as "applied before"; any other failure raises,
    and the caller's redelivery finds the facts that did get in.
    """
    if not facts:
        return []
    now = datetime.now(UTC)
    docs = []
    for event_id, fact in facts:
        if not event_id:
            raise ValueError("apply_many needs each event's id")
        doc = {**(fact or {}), "_id": event_id}
        doc.setdefault("at", now)
        docs.append(doc)
    applied = [True] * len(docs)
    try:
        effects.insert_many(docs, ordered=False)
    except BulkWriteError as err:
        details = err.details or {}
        if details.get("writeConcernErrors") or any(w.get("code") != 11000 for w in details.get("writeErrors", ())):
            raise
        for w in details.get("writeErrors", ()):
            applied[int(w["index"])] = False
    return applied


__all__ = ["apply_many", "apply_once"]
