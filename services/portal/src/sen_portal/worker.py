"""The portal worker process: event consumers, the reporting model's sealer, and the outbox relay.

Feeds the reporting read model from every event (queue portal.reporting) and, once a
minute, sums the arrival buckets that are over into their immutable totals
(:func:`.domain.reporting.seal`; any query computes a missing total itself, so the sealer only
keeps queries fast). Run as `python -m sen_portal.worker`.
"""

from __future__ import annotations

import logging
import threading

from sen_shared import mongo
from sen_shared.config import Settings
from sen_shared.entrypoints import run_worker_process

from .config import settings_from_env
from .domain.reporting import count_event, seal

HANDLERS = {"portal.reporting": count_event}
OUTBOX_COLLECTIONS: list[str] = []
SEAL_EVERY = 60.0

log = logging.getLogger("sen.portal.worker")


def seal_forever(settings: Settings, stop: threading.Event, every: float = SEAL_EVERY) -> None:
    """Seal the reporting model's finished buckets until ``stop`` is set."""
    db = mongo.database(settings.mongo_url, settings.db_name)
    while not stop.wait(every):
        try:
            done = seal(db)
            if done:
                log.info("report totals sealed", extra={"buckets": done})
        except Exception as err:  # noqa: BLE001 - a failed round is retried next minute; queries still answer
            log.warning("sealing report totals failed", extra={"error": f"{type(err).__name__}: {err}"[:300]})


def main() -> int:
    settings = settings_from_env()
    stop = threading.Event()
    sealer = threading.Thread(target=seal_forever, args=(settings, stop), name="report-sealer", daemon=True)
    sealer.start()
    try:
        return run_worker_process(lambda: settings, HANDLERS, OUTBOX_COLLECTIONS)
    finally:
        stop.set()
        sealer.join(10)


if __name__ == "__main__":
    raise SystemExit(main())
