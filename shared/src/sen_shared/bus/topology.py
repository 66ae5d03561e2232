"""The catalog as exchanges and queues on the broker, declared idempotently.

For each consumer purpose ``p`` (queue name ``<prefix>p``):

- ``<prefix>p`` quorum queue, bound to the events exchange for each routing
  key of the catalog and to the retry exchange under its own name (so a
  retried message comes back to this queue only, not to every subscriber);
  ``x-delivery-limit`` dead-letters a message that keeps coming back without
  an ack (a handler that crashes the process) to the DLQ;
- ``<prefix>p.retry.<n>`` quorum queue with ``x-message-ttl`` = tier n, whose
  expired messages are dead-lettered (at-least-once) back to ``<prefix>p``;
- ``<prefix>p.dlq`` quorum queue, the end of the line, read by people.

The consumer republishes a failed message to the retry exchange with
confirms before acking it; the broker only moves messages between these
queues by TTL expiry.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from kombu import Exchange, Queue, binding

from .catalog import Catalog, ConsumerSpec

QUORUM = {"x-queue-type": "quorum"}


class Topology:
    def __init__(self, catalog: Catalog, prefix: str = "", consumers: Iterable[str] | None = None) -> None:
        self.catalog = catalog
        self.prefix = prefix
        self.purposes = list(consumers) if consumers is not None else list(catalog.consumers)
        for p in self.purposes:
            catalog.consumer(p)  # fail early on an unknown purpose
        self.exchange = Exchange(prefix + catalog.exchange, type="topic", durable=True)
        self.retry_exchange = Exchange(prefix + catalog.retry_exchange, type="direct", durable=True)

    # ------------------------------------------------------------ names
    def queue_name(self, purpose: str) -> str:
        return self.prefix + purpose

    def retry_queue_name(self, purpose: str, tier: int) -> str:
        return f"{self.queue_name(purpose)}.retry.{tier}"

    def dlq_name(self, purpose: str) -> str:
        return f"{self.queue_name(purpose)}.dlq"

    def spec(self, purpose: str) -> ConsumerSpec:
        return self.catalog.consumer(purpose)

    # ------------------------------------------------------------ kombu objects
    def queue(self, purpose: str) -> Queue:
        spec = self.spec(purpose)
        name = self.queue_name(purpose)
        bindings = [binding(self.exchange, routing_key=key) for key in spec.bind]
        bindings.append(binding(self.retry_exchange, routing_key=name))
        return Queue(name, bindings=bindings, durable=True, auto_delete=False, queue_arguments={
            **QUORUM,
            "x-delivery-limit": spec.delivery_limit,
            "x-dead-letter-exchange": self.retry_exchange.name,
            "x-dead-letter-routing-key": self.dlq_name(purpose),
        })

    def retry_queues(self, purpose: str) -> list[Queue]:
        spec = self.spec(purpose)
        queues = []
        for tier, ttl in enumerate(spec.retry_tiers_ms, start=1):
            name = self.retry_queue_name(purpose, tier)
            queues.append(Queue(name, exchange=self.retry_exchange, routing_key=name, durable=True,
                                auto_delete=False, queue_arguments={
                                    **QUORUM,
                                    "x-message-ttl": ttl,
                                    "x-dead-letter-exchange": self.retry_exchange.name,
                                    "x-dead-letter-routing-key": self.queue_name(purpose),
                                    "x-dead-letter-strategy": "at-least-once",
                                    "x-overflow": "reject-publish",
                                }))
        return queues

    def dlq(self, purpose: str) -> Queue:
        name = self.dlq_name(purpose)
        return Queue(name, exchange=self.retry_exchange, routing_key=name, durable=True, auto_delete=False,
                     queue_arguments=dict(QUORUM))

    def all_queues(self, purpose: str) -> list[Queue]:
        return [self.dlq(purpose), *self.retry_queues(purpose), self.queue(purpose)]

    # ------------------------------------------------------------ broker operations
    def declare(self, channel: Any) -> None:
        """Declare exchanges, queues and bindings; safe to repeat from every process."""
        self.exchange(channel).declare()
        self.retry_exchange(channel).declare()
        for purpose in self.purposes:
            for q in self.all_queues(purpose):
                q(channel).declare()

    def delete(self, channel: Any) -> None:
        """Remove everything :meth:`declare` made (tests clean up their prefix with it)."""
        for purpose in self.purposes:
            for q in self.all_queues(purpose):
                channel.queue_delete(q.name)
        channel.exchange_delete(self.exchange.name)
        channel.exchange_delete(self.retry_exchange.name)
