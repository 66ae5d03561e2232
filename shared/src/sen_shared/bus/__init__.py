"""Sen's event bus: CloudEvents on one RabbitMQ topic exchange, declared by the catalog.

- :mod:`.catalog`   ``specs/events/catalog.yaml`` as data, and schema validation
- :mod:`.events`    building, encoding and decoding CloudEvents
- :mod:`.topology`  exchanges and quorum queues with retry tiers and a DLQ
- :mod:`.publisher` confirmed, mandatory publishing
- :mod:`.consumer`  ack after the effect, retry tiers, DLQ for poison
- :mod:`.idempotency` ``apply_once``: an event's effect claimed by one insert keyed by its id
- :mod:`.outbox`    events in the changed document, and the relay
- :mod:`.worker`    the worker process of a service

Nothing here connects at import time.
"""

from .catalog import Catalog, ConsumerSpec, EventSpec, load_catalog
from .consumer import EventConsumer, Handler
from .errors import BusError, BusUnavailable, CatalogError, InvalidEvent, PublishNacked, UndecodableMessage, Unroutable
from .events import CONTENT_TYPE, decode, encode, make_event
from .idempotency import apply_many, apply_once
from .outbox import OutboxRelay, new_document, outbox_indexes, with_events
from .publisher import Publisher
from .topology import Topology
from .worker import run_worker

__all__ = [
    "CONTENT_TYPE", "BusError", "BusUnavailable", "Catalog", "CatalogError", "ConsumerSpec", "EventConsumer",
    "EventSpec", "Handler", "InvalidEvent", "OutboxRelay", "PublishNacked", "Publisher", "Topology",
    "UndecodableMessage", "Unroutable", "apply_many", "apply_once", "decode", "encode", "load_catalog", "make_event",
    "new_document", "outbox_indexes", "run_worker", "with_events",
]
