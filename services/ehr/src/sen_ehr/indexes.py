"""The ehr service's MongoDB indexes, declared as data; `python -m sen_ehr.indexes` creates them."""

from __future__ import annotations

import sys

from sen_shared import mongo
from sen_shared.bus.outbox import OUTBOX_INDEXES, outbox_indexes
from sen_shared.fhir.store import HISTORY_SUFFIX

from .domain import RESOURCE_TYPES, grants


def _fhir_indexes() -> list[mongo.Index]:
    out: list[mongo.Index] = []
    for rtype in RESOURCE_TYPES:
        out.append(mongo.Index(rtype, (("lu", 1),)))
        out.append(mongo.Index(rtype + HISTORY_SUFFIX, (("id", 1), ("v", -1))))
        out.append(mongo.Index(rtype + HISTORY_SUFFIX, (("lu", -1),)))
    out.append(mongo.Index("_journal", (("state", 1),)))
    return out


INDEXES: list[mongo.Index] = [*OUTBOX_INDEXES, *outbox_indexes(RESOURCE_TYPES), *_fhir_indexes(), *grants.INDEXES]


def main() -> int:
    from .config import settings_from_env

    settings = settings_from_env()
    created = mongo.ensure_indexes(mongo.database(settings.mongo_url, settings.db_name), INDEXES)
    sys.stdout.write(f"{settings.db_name}: {created} indexes ensured\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
