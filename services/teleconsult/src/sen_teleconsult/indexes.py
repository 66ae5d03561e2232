"""The teleconsult service's MongoDB indexes, declared as data; `python -m sen_teleconsult.indexes` creates them."""

from __future__ import annotations

from sen_shared import mongo
from sen_shared.bus.outbox import OUTBOX_INDEXES, outbox_indexes
from sen_shared.fhir.store import HISTORY_SUFFIX, store_indexes

from .domain import RESOURCE_TYPES

# Search parameters whose stored tokens get an index in every type that has them: the
# equalities that narrow a search first (ARCHITECTURE §2).
INDEXED_SEARCH_PARAMS = ("identifier", "patient", "subject", "requester", "owner", "performer", "status",
                         "based-on", "focus", "actor", "schedule", "practitioner", "part-of")


def _search_indexes(rtype: str) -> list[mongo.Index]:
    from sen_shared.fhir.search.definitions import params_for

    have = params_for(rtype)
    return [mongo.Index(rtype, ((f"sp_{code}", 1),)) for code in INDEXED_SEARCH_PARAMS if code in have]


def _fhir_indexes() -> list[mongo.Index]:
    out: list[mongo.Index] = []
    for rtype in RESOURCE_TYPES:
        out.append(mongo.Index(rtype, (("lu", 1),)))
        out.append(mongo.Index(rtype, (("b2", 1), ("_id", 1))))  # the default search order (buckets.py)
        out.append(mongo.Index(rtype, (("b4", 1),)))
        out.append(mongo.Index(rtype, (("b1", 1),)))
        out.extend(_search_indexes(rtype))
        out.append(mongo.Index(rtype + HISTORY_SUFFIX, (("id", 1), ("v", -1))))
        out.append(mongo.Index(rtype + HISTORY_SUFFIX, (("lu", -1),)))
    out.append(mongo.Index("_journal", (("state", 1),)))
    return [*out, *store_indexes()]  # the store's own claim chains (roll-forwards, conditions)


def _workflow_indexes() -> list[mongo.Index]:
    from sen_shared import idempotency_key

    from . import workflow
    from .domain import scheduling

    return [*workflow.INDEXES, *idempotency_key.INDEXES, *scheduling.INDEXES]


# the events of a FHIR write (scheduling's) wait in its version's history document (sen_shared.fhir.store)
INDEXES: list[mongo.Index] = [*OUTBOX_INDEXES, *outbox_indexes([t + HISTORY_SUFFIX for t in RESOURCE_TYPES]),
                              *_fhir_indexes(), *_workflow_indexes()]


def main() -> int:
    from sen_shared.entrypoints import run_indexes

    from .config import settings_from_env

    return run_indexes(settings_from_env, INDEXES)


if __name__ == "__main__":
    raise SystemExit(main())
