"""The bodies of every service's one-off and worker entry points (`python -m sen_<svc>.indexes`,
`python -m sen_<svc>.worker`), so each service only names its settings, indexes and handlers."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from . import mongo
from .config import Settings

S = TypeVar("S", bound=Settings)


def run_indexes(load_settings: Callable[[], Settings], indexes: Sequence[mongo.Index],
                migrate: Callable[[Any], str] | None = None, argv: Sequence[str] | None = None) -> int:
    """Create the missing indexes of the service's database, then run ``migrate(db)`` if given
    (both idempotent; the Kubernetes Job runs them before the new version serves).

    ``--wait`` (in ``argv``, default the command line): create nothing, wait until every declared index
    exists, then exit 0. The init container of every Kubernetes web and worker pod runs it, so a
    process of a release never serves before the indexes it declares (its unique ones above all) are
    there, however the Job and the rollout interleave."""
    settings = load_settings()
    db = mongo.database(settings.mongo_url, settings.db_name)
    if "--wait" in (sys.argv[1:] if argv is None else argv):
        return wait_for_indexes(db, indexes, settings.db_name)
    created = mongo.ensure_indexes(db, indexes)
    sys.stdout.write(f"{settings.db_name}: {created} indexes created, {len(indexes)} declared\n")
    if migrate is not None:
        sys.stdout.write(f"{settings.db_name}: {migrate(db)}\n")
    return 0


def wait_for_indexes(db: Any, indexes: Sequence[mongo.Index], name: str, poll_seconds: float = 3.0) -> int:
    """Until every index of ``indexes`` exists in ``db``: say what is missing when that changes, look
    again every ``poll_seconds``. Returns 0 once they all exist (it never gives up: a pod waits in its
    init container, saying why, until the indexes Job has run)."""
    from pymongo.errors import PyMongoError

    said = ""
    while True:
        try:
            missing = mongo.missing_indexes(db, indexes)
        except PyMongoError as err:
            state = f"{name}: database unavailable ({type(err).__name__}), waiting"
        else:
            if not missing:
                sys.stdout.write(f"{name}: the {len(indexes)} declared indexes exist\n")
                sys.stdout.flush()
                return 0
            state = (f"{name}: waiting for {len(missing)} of {len(indexes)} declared indexes (first {missing[0]}); "
                     f"the indexes step creates them (python -m sen_<service>.indexes, the <service>-indexes Job)")
        if state != said:
            sys.stdout.write(state + "\n")
            sys.stdout.flush()
            said = state
        time.sleep(poll_seconds)


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
