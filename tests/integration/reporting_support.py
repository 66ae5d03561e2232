"""What the reporting suites share: events published on the real exchange and taken by the portal's real
``portal.reporting`` consumers, and the unmatched transfers' figures the dashboard and billing's daily report
must agree on."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from typing import Any

from kombu import Connection
from sen_portal.domain import reporting
from sen_shared.bus import EventConsumer, Publisher, Topology, load_catalog

from tests.support import wait_for

# the unmatched transfers' story, as billing's daily report totals it and the dashboard's cashless share shows it
UNMATCHED = ("unmatched", "unmatched_assigned", "unmatched_refunded", "unmatched_waiting", "assigned_earlier")


def dashboard_unmatched(figures: dict[str, Any]) -> dict[str, Any]:
    """The unmatched figures of the dashboard's cashless share (or a row of its CSV): its ``<figure>_amount``s."""
    return {k: figures[f"{k}_amount"] for k in UNMATCHED}


def report_unmatched(totals: dict[str, Any]) -> dict[str, Any]:
    """The unmatched figures of billing's daily report (``reconciliation.totals``)."""
    return {k: totals[k] for k in UNMATCHED}


def unmatched_figures(unmatched: int = 0, assigned: int = 0, refunded: int = 0, waiting: int = 0,
                      earlier: int = 0) -> dict[str, int]:
    """The unmatched figures :func:`report_unmatched` and :func:`dashboard_unmatched` give, by name: what
    came unmatched, was assigned, given back or is waiting that day, and what was assigned that day of earlier
    days' transfers; a figure not named is 0."""
    return dict(zip(UNMATCHED, (unmatched, assigned, refunded, waiting, earlier), strict=True))


def through_reporting(amqp_url: str, base_env: dict[str, str], db: Any, published: list[dict[str, Any]],
                      handler: Callable[..., Any] = reporting.count_event) -> list[EventConsumer]:
    """Publish ``published`` (in that order, repeats included) on a fresh prefix of the real exchange and run
    2 ``portal.reporting`` consumers with ``handler`` (the worker's, unless given) on ``db`` until every
    delivery is handled; the queues are deleted after. The consumers."""
    prefix = f"{base_env['SEN_BUS_PREFIX']}{uuid.uuid4().hex[:6]}."
    catalog = load_catalog().with_retry_tiers([100, 200]).only(["portal.reporting"])
    topology = Topology(catalog, prefix)
    with Connection(amqp_url) as conn:
        topology.declare(conn.default_channel)
    stop = threading.Event()
    consumers = [EventConsumer(amqp_url, topology, "portal.reporting", handler, db) for _ in range(2)]
    threads = [threading.Thread(target=c.run, args=(stop,), daemon=True) for c in consumers]
    try:
        for th in threads:
            th.start()
        assert all(c.ready.wait(15) for c in consumers)
        with Publisher(amqp_url, prefix=prefix, catalog=catalog) as pub:
            for e in published:
                pub.publish(e)
        wait_for(lambda: sum(c.handled for c in consumers) >= len(published), timeout=60)
    finally:
        stop.set()
        for th in threads:
            th.join(15)
        with Connection(amqp_url) as conn:
            topology.delete(conn.default_channel)
    return consumers
