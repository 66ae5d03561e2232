"""The MongoDB indexes a FHIR store needs, declared once for every service that serves FHIR.

Per resource type: the default search order (id buckets, search/buckets.py), ``_lastUpdated``,
the equalities that narrow a search first (the service names which search parameters), the
history's version and date order, the relay's index on the history's pending events (a
version's events ride in its history document, store.py), the transaction journal, and the
store's own claim chains (roll-forwards, conditional creates).
"""

from __future__ import annotations

from collections.abc import Iterable

from .. import mongo
from ..bus.outbox import outbox_indexes
from .store import HISTORY_SUFFIX, store_indexes


def fhir_indexes(resource_types: Iterable[str], searched: Iterable[str]) -> list[mongo.Index]:
    """Every index the store of ``resource_types`` uses; ``searched``: the search parameters
    whose stored tokens get an index in every type that has them."""
    from .search.definitions import params_for

    searched = tuple(searched)
    types = list(resource_types)
    out: list[mongo.Index] = []
    for rtype in types:
        out.append(mongo.Index(rtype, (("lu", 1),)))
        out.append(mongo.Index(rtype, (("b2", 1), ("_id", 1))))  # the default search order (buckets.py)
        out.append(mongo.Index(rtype, (("b4", 1),)))
        out.append(mongo.Index(rtype, (("b1", 1),)))
        have = params_for(rtype)
        out.extend(mongo.Index(rtype, ((f"sp_{code}", 1),)) for code in searched if code in have)
        out.append(mongo.Index(rtype + HISTORY_SUFFIX, (("id", 1), ("v", -1))))
        out.append(mongo.Index(rtype + HISTORY_SUFFIX, (("lu", -1),)))
    out.append(mongo.Index("_journal", (("state", 1),)))
    return [*out, *outbox_indexes([t + HISTORY_SUFFIX for t in types]), *store_indexes()]


__all__ = ["fhir_indexes"]
