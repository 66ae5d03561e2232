"""The portal service's MongoDB indexes, declared as data; `python -m sen_portal.indexes` creates them."""

from __future__ import annotations

from sen_shared import mongo
from sen_shared.bus.outbox import OUTBOX_INDEXES

from .domain import reporting
from .web import kept, seen, sent, tokens

INDEXES: list[mongo.Index] = [*OUTBOX_INDEXES, *reporting.INDEXES, *tokens.INDEXES, *kept.INDEXES, *sent.INDEXES,
                              *seen.INDEXES]


def main() -> int:
    from sen_shared.entrypoints import run_indexes

    from .config import settings_from_env

    return run_indexes(settings_from_env, INDEXES)


if __name__ == "__main__":
    raise SystemExit(main())
