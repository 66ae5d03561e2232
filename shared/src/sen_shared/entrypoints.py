"""The bodies of every service's one-off and worker entry points (`python -m sen_<svc>.indexes`,
`python -m sen_<svc>.worker`), so each service only names its settings, indexes and handlers."""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from . import mongo
from .config import Settings

S = TypeVar("S", bound=Settings)


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


def run_worker_process(load_settings: Callable[[], S], handlers: Mapping[str, Any],
                       outbox_collections: Sequence[str], *,
                       beside: Callable[[S, threading.Event], list[threading.Thread]] | None = None,
                       gates: Callable[[S], Mapping[str, Any]] | None = None) -> int:
    """Consume the service's queues and relay its outbox until SIGTERM. ``beside(settings, stop)``,
    called once the logs are set up, starts the service's own threads (periodic jobs, backfills, more
    consumers) and returns them: when the worker stops, ``stop`` is set and each is given 15 seconds
    to end. ``gates(settings)``: the relay's own gates by collection (``run_worker``)."""
    from .bus.worker import run_worker
    from .logs import setup_logging

    settings = load_settings()
    setup_logging(f"{settings.service}-worker", settings.log_level)
    stop = threading.Event()
    threads = beside(settings, stop) if beside is not None else []
    try:
        run_worker(settings, handlers=dict(handlers), outbox_collections=list(outbox_collections), stop=stop,
                   gates=gates(settings) if gates is not None else None)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=15)
    return 0


def start_thread(name: str, target: Callable[..., Any], *args: Any) -> threading.Thread:
    """``target(*args)`` in a daemon thread called ``name``, started (a worker's ``beside`` threads)."""
    t = threading.Thread(target=target, args=args, name=name, daemon=True)
    t.start()
    return t
