"""The ehr service's MongoDB indexes, declared as data; `python -m sen_ehr.indexes` creates them."""

from __future__ import annotations

from sen_shared import mongo
from sen_shared.bus.outbox import OUTBOX_INDEXES, outbox_indexes
from sen_shared.fhir.store import HISTORY_SUFFIX, store_indexes

from .domain import RESOURCE_TYPES, grants

# Search parameters whose stored tokens get an index in every type that has them: the
# equalities that narrow a search first (ARCHITECTURE §2). Dates, sorts and the rest are
# evaluated on the candidates these select.
INDEXED_SEARCH_PARAMS = ("identifier", "patient", "subject", "encounter", "code", "name",
                         "organization", "general-practitioner", "practitioner", "based-on", "author",
                         "performer", "agent")


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
    return [*out, *store_indexes()]


# the events of a FHIR write wait in its version's history document (sen_shared.fhir.store)
INDEXES: list[mongo.Index] = [*OUTBOX_INDEXES, *outbox_indexes([t + HISTORY_SUFFIX for t in RESOURCE_TYPES]),
                              *_fhir_indexes(), *grants.INDEXES]


def main() -> int:
    from sen_shared.entrypoints import run_indexes

    from .config import settings_from_env

    return run_indexes(settings_from_env, INDEXES, migrate)


def migrate(db) -> str:  # noqa: ANN001 - a pymongo Database
    """Documents of an older layout get the id buckets, the type registry and today's index fields."""
    from sen_shared.fhir.store import backfill

    return f"{backfill(db, RESOURCE_TYPES)} documents brought up to date"


if __name__ == "__main__":
    raise SystemExit(main())
