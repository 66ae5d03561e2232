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
from sen_shared.bus import EventConsumer, Topology, load_catalog
from sen_shared.config import Settings
from sen_shared.entrypoints import run_worker_process, start_thread

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


def beside(settings: PortalSettings, stop: threading.Event) -> list[threading.Thread]:
    """The sealer and the consumers beyond the first, started beside the worker."""
    consumers = extra_consumers(settings, settings.report_consumers - 1)
    return [start_thread("report-sealer", seal_forever, settings, stop),
            *(start_thread(f"consumer:{PURPOSE}:{i + 2}", c.run, stop) for i, c in enumerate(consumers))]


def main() -> int:
    return run_worker_process(settings_from_env, HANDLERS, OUTBOX_COLLECTIONS, beside=beside)


if __name__ == "__main__":
    raise SystemExit(main())
