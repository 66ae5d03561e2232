"""The billing service's MongoDB indexes, declared as data; `python -m sen_billing.indexes` creates them."""

from __future__ import annotations

import sys

from sen_shared import mongo
from sen_shared.bus.outbox import OUTBOX_INDEXES

INDEXES: list[mongo.Index] = [*OUTBOX_INDEXES]


def main() -> int:
    from .config import settings_from_env

    settings = settings_from_env()
    created = mongo.ensure_indexes(mongo.database(settings.mongo_url, settings.db_name), INDEXES)
    sys.stdout.write(f"{settings.db_name}: {created} indexes ensured\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
