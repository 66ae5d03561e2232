"""The bodies of every service's one-off and worker entry points (`python -m sen_<svc>.indexes`,
`python -m sen_<svc>.worker`), so each service only names its settings, indexes and handlers."""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from . import mongo
from .config import Settings


def run_indexes(load_settings: Callable[[], Settings], indexes: Sequence[mongo.Index],
                migrate: Callable[[Any], str] | None = None) -> int:
    """Create the missing indexes of the service's database, then run ``migrate(db)`` if given
    (both idempotent; the Kubernetes Job runs them before the new version serves)."""
    settings = load_settings()
    db = mongo.database(settings.mongo_url, settings.db_name)
    created = mongo.ensure_indexes(db, indexes)
    sys.stdout.write(f"{settings.db_name}: {created} indexes created, {len(indexes)} declared\n")
    if migrate is not None:
        sys.stdout.write(f"{settings.db_name}: {migrate(db)}\n")
    return 0


def run_worker_process(load_settings: Callable[[], Settings], handlers: Mapping[str, Any],
                       outbox_collections: Sequence[str]) -> int:
    """Consume the service's queues and relay its outbox until SIGTERM."""
    from .bus.worker import run_worker
    from .logs import setup_logging

    settings = load_settings()
    setup_logging(f"{settings.service}-worker", settings.log_level)
    run_worker(settings, handlers=dict(handlers), outbox_collections=list(outbox_collections))
    return 0
