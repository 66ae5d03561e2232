"""Consuming one queue purpose: decode, validate, handle, then ack; or retry; or DLQ.

The handler gets the validated CloudEvent and the service's Database, with the
logs' correlation id set from the event. What happens to each message:

- handler returned: ack (the handler has stored its effect by then);
- body not a structured-mode CloudEvent (content type, UTF-8, JSON) or not
  valid against its schema: straight to ``<queue>.dlq`` with ``x-sen-reason``;
  never acked without a trace. Messages are taken raw (kombu ``on_message``),
  so kombu's decode-error path, which would ack them, never runs;
- handler could not reach the database (``mongo.unavailable``: FerretDB or the PostgreSQL under it
  restarting, MongoDB electing a primary): not a failure of the event. It stays unacked, the
  database is pinged with backoff (the broker's heartbeats kept) and the handler runs again once it
  answers; no retry tier is spent on an outage, so a restart longer than the tiers sends nothing to
  the DLQ. Stopping meanwhile leaves it unacked: the broker delivers it again;
- handler raised: republished to ``<queue>.retry.<n>`` (n = failures so far),
  whose TTL sends it back to this queue; after the last tier, to the DLQ with
  ``x-sen-reason`` (exception type and message) and ``x-sen-attempts``.

Republishing uses publisher confirms and ``mandatory`` *before* the original
is acked, so a crash in between duplicates a message and never loses one.
Deliveries are buffered by the kombu callback and handled outside
``drain_events``, so a confirm wait never re-enters a handler.

A handler may offer a batch form as its ``batch`` attribute (``handler.batch(events, db)``):
when several deliveries wait, the valid ones are handed over together (at most the prefetch)
and acked after it returns, so a consumer stores a prefetched burst in one round trip instead of
one per message. If the batch form raises, each message of the batch takes the one-by-one way
above (the handler is idempotent, so what the batch did store is found again, not doubled).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from kombu import Consumer
from kombu.exceptions import OperationalError
from pymongo.database import Database
from pymongo.errors import PyMongoError

from .. import mongo
from ..logs import correlation_id
from .catalog import Catalog
from .errors import BusError, InvalidEvent, UndecodableMessage
from .events import decode
from .publisher import ConfirmedSender, connect
from .topology import Topology

log = logging.getLogger("sen.bus")

Handler = Callable[[dict[str, Any], Database], None]

H_REASON = "x-sen-reason"
H_ATTEMPTS = "x-sen-attempts"
H_QUEUE = "x-sen-queue"
H_ROUTING_KEY = "x-sen-routing-key"
H_FAILED_AT = "x-sen-failed-at"
_DROP_HEADERS = ("x-death", "x-first-death-exchange", "x-first-death-queue", "x-first-death-reason",
                 "x-delivery-count", "x-last-death-exchange", "x-last-death-queue", "x-last-death-reason")
MAX_REASON = 1000


class EventConsumer:
    """Runs one consumer purpose on its own connection (one thread each)."""

    def __init__(self, amqp_url: str, topology: Topology, purpose: str, handler: Handler, db: Database, *,
                 prefetch: int | None = None, max_backoff: float = 5.0) -> None:
        self.amqp_url = amqp_url
        self.topology = topology
        self.catalog: Catalog = topology.catalog
        self.purpose = purpose
        self.spec = topology.spec(purpose)
        self.handler = handler
        self.batch_handler: Callable[[list[dict[str, Any]], Database], None] | None = getattr(handler, "batch", None)
        self.db = db
        self.prefetch = prefetch or self.spec.prefetch
        self.max_backoff = max_backoff
        self.queue_name = topology.queue_name(purpose)
        # counters, for tests and health
        self.connections = 0
        self.handled = 0
        self.retried = 0
        self.dead_lettered = 0
        self.database_waits = 0  # handler calls that found the database away (held, then run again)
        self.ready = threading.Event()
        self._stop = threading.Event()
        self._conn: Any = None

    # ------------------------------------------------------------ loop
    def run(self, stop: threading.Event) -> None:
        """Consume until ``stop`` is set, reconnecting (with backoff) after broker failures."""
        delay = 0.2
        self._stop = stop
        while not stop.is_set():
            try:
                self._consume(stop)
                delay = 0.2
            except (OperationalError, BusError, OSError, *_amqp_errors()) as err:
                self.ready.clear()
                log.warning("consumer lost the broker, reconnecting",
                            extra={"queue": self.queue_name, "error": type(err).__name__, "retry_in": delay})
            except Exception:
                self.ready.clear()
                log.exception("consumer failed, restarting", extra={"queue": self.queue_name})
            if stop.wait(delay):
                break
            delay = min(delay * 2, self.max_backoff)

    def _consume(self, stop: threading.Event) -> None:
        with connect(self.amqp_url, max_retries=1, heartbeat=30) as conn:
            conn.ensure_connection(max_retries=1)
            self._conn = conn
            self.topology.declare(conn.default_channel)  # idempotent; the queues may be gone after a reset
            sender = ConfirmedSender(conn.channel())
            channel = conn.channel()
            channel.basic_qos(0, self.prefetch, False)
            pending: deque[Any] = deque()
            queue = self.topology.queue(self.purpose)
            with Consumer(channel, queues=[queue], no_ack=False, auto_declare=False, on_message=pending.append):
                self.connections += 1
                self.ready.set()
                log.info("consuming", extra={"queue": self.queue_name})
                while not stop.is_set():
                    while pending and not stop.is_set():
                        if self.batch_handler is not None and len(pending) > 1:
                            batch = [pending.popleft() for _ in range(min(len(pending), self.prefetch))]
                            self._process_batch(batch, sender)
                        else:
                            self._process(pending.popleft(), sender)
                    try:
                        conn.drain_events(timeout=0.5)
                        # a batch handler gets what else has already arrived too (a delivery a
                        # call): drain briefly until the prefetch is in hand or the socket is quiet
                        while self.batch_handler is not None and len(pending) < self.prefetch:
                            conn.drain_events(timeout=0.005)
                    except TimeoutError:
                        conn.heartbeat_check()

    # ------------------------------------------------------------ several messages
    def _process_batch(self, messages: list[Any], sender: ConfirmedSender) -> None:
        """Valid messages through the handler's batch form, then acked; poison to the DLQ as one by
        one; a failing batch falls back to one by one (retries and DLQ per message)."""
        good: list[tuple[Any, dict[str, Any]]] = []
        for message in messages:
            try:
                event = decode(message.body, message.content_type)
                self.catalog.validate(event)
            except (UndecodableMessage, InvalidEvent):
                self._process(message, sender)  # the one-by-one way sends it to the DLQ with its reason
                continue
            good.append((message, event))
        if not good:
            return
        try:
            self.batch_handler([event for _, event in good], self.db)  # type: ignore[misc]
        except Exception as err:  # noqa: BLE001 - each message is then handled (and retried) on its own
            log.warning("batch handler failed, handling one by one",
                        extra={"queue": self.queue_name, "error": type(err).__name__, "messages": len(good)})
            for message, _ in good:
                self._process(message, sender)
            return
        for message, event in good:
            message.ack()
            self.handled += 1
            token = correlation_id.set(str(event.get("correlationid") or event["id"]))
            try:
                log.info("event handled", extra={"queue": self.queue_name, "event_id": event["id"],
                                                 "event_type": event["type"], "batch": len(good)})
            finally:
                correlation_id.reset(token)

    # ------------------------------------------------------------ one message
    def _process(self, message: Any, sender: ConfirmedSender) -> None:
        headers = dict(message.headers or {})
        failures = int(headers.get(H_ATTEMPTS, 0) or 0)
        message_id = (message.properties or {}).get("message_id") or ""
        try:
            event = decode(message.body, message.content_type)
            self.catalog.validate(event)
        except (UndecodableMessage, InvalidEvent) as err:
            log.error("poison message sent to the DLQ",
                      extra={"queue": self.queue_name, "message_id": message_id, "error": type(err).__name__})
            self._forward(message, sender, self.topology.dlq_name(self.purpose), headers,
                          reason=f"{type(err).__name__}: {err}", attempts=failures)
            self.dead_lettered += 1
            return

        ids = {"queue": self.queue_name, "event_id": event["id"], "event_type": event["type"]}
        token = correlation_id.set(str(event.get("correlationid") or event["id"]))
        try:
            try:
                self._handle(event, ids)
            except _Stopping:
                return  # unacked: delivered again to whoever consumes next
            except _BrokerLost as lost:
                raise lost.error from None  # unacked too; the loop reconnects
            except Exception as err:  # noqa: BLE001 - any handler failure is retried, then dead-lettered
                failures += 1
                reason = f"{type(err).__name__}: {err}"
                tiers = self.spec.retry_tiers_ms
                if failures <= len(tiers):
                    log.warning("handler failed, retrying later",
                                extra={**ids, "error": type(err).__name__, "attempt": failures,
                                       "retry_in_ms": tiers[failures - 1]})
                    self._forward(message, sender, self.topology.retry_queue_name(self.purpose, failures), headers,
                                  reason=reason, attempts=failures)
                    self.retried += 1
                else:
                    log.error("handler failed on every attempt, sent to the DLQ",
                              extra={**ids, "error": type(err).__name__, "attempts": failures})
                    self._forward(message, sender, self.topology.dlq_name(self.purpose), headers,
                                  reason=reason, attempts=failures)
                    self.dead_lettered += 1
                return
            message.ack()
            self.handled += 1
            log.info("event handled", extra=ids)
        finally:
            correlation_id.reset(token)  # after the log line, which carries it

    def _handle(self, event: dict[str, Any], ids: dict[str, Any]) -> None:
        """The handler, run again each time it finds the database away, once the database answers."""
        while True:
            try:
                self.handler(event, self.db)
                return
            except Exception as err:
                if not mongo.unavailable(err):
                    raise
                self.database_waits += 1
                log.warning("database unavailable, holding the event until it answers",
                            extra={**ids, "error": type(err).__name__})
                self._await_database()

    def _await_database(self) -> None:
        """Until the database answers a ping (backing off up to ``max_backoff``, keeping the broker's
        heartbeats); :class:`_Stopping` when stopped meanwhile."""
        delay = 0.2
        while not self._stop.wait(delay):
            if self._conn is not None:
                try:
                    self._conn.heartbeat_check()
                except (OperationalError, OSError, *_amqp_errors()) as err:
                    raise _BrokerLost(err) from err
            try:
                mongo.ping(self.db)
                return
            except PyMongoError as err:
                if not mongo.unavailable(err):
                    return  # the handler will say what is wrong
            delay = min(delay * 2, self.max_backoff)
        raise _Stopping

    def _forward(self, message: Any, sender: ConfirmedSender, routing_key: str, headers: dict[str, Any], *,
                 reason: str, attempts: int) -> None:
        """Republish ``message`` to a retry queue or the DLQ with confirms, then ack the original."""
        out = {k: v for k, v in headers.items() if k not in _DROP_HEADERS}
        out.update({
            H_REASON: reason[:MAX_REASON],
            H_ATTEMPTS: attempts,
            H_QUEUE: self.queue_name,
            H_ROUTING_KEY: out.get(H_ROUTING_KEY) or (message.delivery_info or {}).get("routing_key", ""),
            H_FAILED_AT: datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        })
        props = message.properties or {}
        sender.send(message.body, exchange=self.topology.retry_exchange.name, routing_key=routing_key,
                    message_id=props.get("message_id") or f"unidentified-{time.time_ns()}", headers=out,
                    content_type=message.content_type or "application/octet-stream",
                    content_encoding=message.content_encoding or "binary",
                    correlation_id=props.get("correlation_id"), type_=props.get("type"))
        message.ack()


class _Stopping(Exception):
    """Stopped while waiting for the database: the message stays unacked."""


class _BrokerLost(Exception):
    """The broker's connection failed while waiting for the database (not the handler's failure)."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


def _amqp_errors() -> tuple[type[BaseException], ...]:
    import amqp

    return (amqp.exceptions.ConnectionError, amqp.exceptions.ChannelError)
