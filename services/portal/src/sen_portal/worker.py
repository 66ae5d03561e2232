"""The portal worker process: event consumers, the reporting model's sealer, and the outbox relay.

Feeds the reporting read model from every event (queue portal.reporting) with
``SEN_REPORT_CONSUMERS`` consumers (default 4) on their own connections: the facts of the
deliveries they hold at once are inserted together (``domain.reporting.FactWriter``), which is
what lets the model keep up with the suite's bursts. Every 10 seconds the sealer sums the arrival
buckets that are over into their immutable totals (``domain.reporting.seal``; a query computes
a missing total itself, so the sealer only keeps queries fast).
Run as `python -m sen_portal.worker`.
"""

from __future__ import annotations

import logging
import threading

from sen_shared import mongo
from sen_shared.bus import EventConsumer, Topology, load_catalog, run_worker
from sen_shared.config import Settings
from sen_shared.logs import setup_logging

from .config import PortalSettings, settings_from_env
from .domain.reporting import count_event, seal

PURPOSE = "portal.reporting"
HANDLERS = {PURPOSE: count_event}
OUTBOX_COLLECTIONS: list[str] = []
SEAL_EVERY = 10.0  # cheap when there is nothing to seal (a few small marker reads)

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


def extra_consumers(settings: PortalSettings, count: int) -> list[EventConsumer]:
    """``count`` more consumers of portal.reporting beside the one ``run_worker`` starts."""
    if count <= 0:
        return []
    topology = Topology(load_catalog(), settings.bus_prefix)
    db = mongo.database(settings.mongo_url, settings.db_name)
    return [EventConsumer(settings.amqp_url, topology, PURPOSE, count_event, db) for _ in range(count)]


def main() -> int:
    settings = settings_from_env()
    setup_logging(f"{settings.service}-worker", settings.log_level)
    stop = threading.Event()
    threads = [threading.Thread(target=seal_forever, args=(settings, stop), name="report-sealer", daemon=True)]
    threads += [threading.Thread(target=c.run, args=(stop,), name=f"consumer:{PURPOSE}:{i + 2}", daemon=True)
                for i, c in enumerate(extra_consumers(settings, settings.report_consumers - 1))]
    for t in threads:
        t.start()
    try:
        run_worker(settings, handlers=HANDLERS, outbox_collections=OUTBOX_COLLECTIONS, stop=stop)
    finally:
        stop.set()
        for t in threads:
            t.join(15)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
