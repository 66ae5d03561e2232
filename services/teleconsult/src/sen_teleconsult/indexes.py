"""The teleconsult service's MongoDB indexes, declared as data; `python -m sen_teleconsult.indexes` creates them."""

from __future__ import annotations

from sen_shared import mongo
from sen_shared.bus.outbox import OUTBOX_INDEXES
from sen_shared.fhir.indexes import fhir_indexes

from .domain import RESOURCE_TYPES

# Search parameters whose stored tokens get an index in every type that has them: the
# equalities that narrow a search first (ARCHITECTURE §2).
INDEXED_SEARCH_PARAMS = ("identifier", "patient", "subject", "requester", "owner", "performer", "status",
                         "based-on", "focus", "actor", "schedule", "practitioner", "part-of")


def _workflow_indexes() -> list[mongo.Index]:
    from sen_shared import idempotency_key

    from . import backfill, workflow
    from .domain import lead_alerts, scheduling

    return [*workflow.INDEXES, *idempotency_key.INDEXES, *scheduling.INDEXES, *backfill.INDEXES,
            *lead_alerts.indexes()]


INDEXES: list[mongo.Index] = [*OUTBOX_INDEXES, *fhir_indexes(RESOURCE_TYPES, INDEXED_SEARCH_PARAMS),
                              *_workflow_indexes()]


def main() -> int:
    from sen_shared.entrypoints import run_indexes

    from .config import settings_from_env

    return run_indexes(settings_from_env, INDEXES)


if __name__ == "__main__":
    raise SystemExit(main())
