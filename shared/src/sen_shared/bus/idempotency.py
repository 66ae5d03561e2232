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
the key (``f"{purpose}/{event_id}"``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from pymongo.collection import Collection

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


__all__ = ["apply_once"]
