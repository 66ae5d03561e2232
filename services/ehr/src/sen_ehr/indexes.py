"""The ehr service's MongoDB indexes, declared as data; `python -m sen_ehr.indexes` creates them."""

from __future__ import annotations

from sen_shared import mongo
from sen_shared.bus.outbox import OUTBOX_INDEXES
from sen_shared.fhir.indexes import fhir_indexes

from .domain import RESOURCE_TYPES, grants, take_on_failures

# Search parameters whose stored tokens get an index in every type that has them: the
# equalities that narrow a search first (ARCHITECTURE §2). Dates, sorts and the rest are
# evaluated on the candidates these select.
INDEXED_SEARCH_PARAMS = ("identifier", "patient", "subject", "encounter", "code", "name",
                         "organization", "general-practitioner", "practitioner", "based-on", "author",
                         "performer", "agent")


INDEXES: list[mongo.Index] = [*OUTBOX_INDEXES, *fhir_indexes(RESOURCE_TYPES, INDEXED_SEARCH_PARAMS), *grants.INDEXES,
                              *take_on_failures.INDEXES]


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
