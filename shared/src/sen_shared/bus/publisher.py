"""Publishing with publisher confirms and ``mandatory``: a lost event is an error.

Every message is published on a channel in confirm mode (the transport option
``confirm_publish``) with ``mandatory=True``. The broker answers each one
with basic.ack or basic.nack, and sends basic.return *before* the ack when no
queue is bound to the routing key; kombu hands returns to ``on_return``. So
after a confirmed publish:

- a nack raises :class:`PublishNacked`;
- a return recorded for the message's id raises :class:`Unroutable`;
- connection errors are retried by kombu's ``Connection.ensure`` (bounded),
  then raise :class:`BusUnavailable`. A retried publish may reach the broker
  twice: delivery is at-least-once and consumers deduplicate by event id.

:meth:`Publisher.publish_many` is RabbitMQ's "publishing messages in batches"
strategy (its publisher-confirms guide): publish a batch, then wait once for
all its confirms, each event's outcome its own (acked; nacked; returned; not
confirmed when the connection was lost or the wait timed out). kombu cannot
do it: with ``confirm_publish`` py-amqp's ``basic_publish`` waits for each
message's confirm before returning, and kombu's ``Producer.batch()`` is
implemented by its Redis transport only (py-amqp publishes at once). So the
batch uses py-amqp's channel API, which kombu wraps, as py-amqp documents it:
a connection without ``confirm_publish``, ``Channel.confirm_select()`` once,
and the confirms through ``Channel.events['basic_ack'/'basic_nack']`` while
the connection's events are drained (:class:`ConfirmBatch`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

from amqp.exceptions import MessageNacked
from kombu import Connection, Producer
from kombu.exceptions import ChannelError, OperationalError

from ..logs import current_correlation_id
from .catalog import Catalog, load_catalog
from .errors import BusError, BusUnavailable, ConfirmTimeout, PublishNacked, Unroutable
from .events import CONTENT_TYPE, encode
from .topology import Topology

log = logging.getLogger("sen.bus")

CORRELATION_HEADER = "x-correlation-id"


def connect(amqp_url: str, *, max_retries: int = 3, heartbeat: float = 0, confirm_publish: bool = True
            ) -> Connection:
    """A kombu connection whose (re)connection attempts are bounded; in confirm mode (each publish
    waits for its confirm) unless ``confirm_publish`` is false (:class:`ConfirmBatch` selects it)."""
    options: dict[str, Any] = {"max_retries": max_retries, "interval_start": 0.2, "interval_step": 0.5,
                               "interval_max": 2}
    if confirm_publish:
        options["confirm_publish"] = True
    return Connection(amqp_url, heartbeat=heartbeat, connect_timeout=5, transport_options=options)


class ConfirmedSender:
    """Publishes raw messages on one channel and turns returns and nacks into exceptions.

    ``revive`` lets ``Connection.ensure`` rebind it to a new channel after a reconnect.
    """

    def __init__(self, channel_or_connection: Any, *, confirm_timeout: float = 10.0) -> None:
        self.confirm_timeout = confirm_timeout
        self._returned: dict[str, str] = {}
        self.producer = Producer(channel_or_connection, auto_declare=False, on_return=self._on_return)

    def _on_return(self, exc: Exception, exchange: str, routing_key: str, message: Any) -> None:
        message_id = (message.properties or {}).get("message_id") or ""
        self._returned[message_id] = f"{exc} (exchange {exchange!r}, routing key {routing_key!r})"

    def revive(self, channel: Any) -> None:
        self.producer.revive(channel)

    def send(self, body: bytes, *, exchange: str, routing_key: str, message_id: str,
             headers: Mapping[str, Any] | None = None, content_type: str = CONTENT_TYPE,
             correlation_id: str | None = None, type_: str | None = None,
             content_encoding: str = "utf-8") -> None:
        self._returned.pop(message_id, None)
        properties: dict[str, Any] = {"message_id": message_id}
        if correlation_id:
            properties["correlation_id"] = correlation_id
        if type_:
            properties["type"] = type_
        try:
            self.producer.publish(body, exchange=exchange, routing_key=routing_key, mandatory=True,
                                  delivery_mode=2, content_type=content_type, content_encoding=content_encoding,
                                  headers=dict(headers or {}), confirm_timeout=self.confirm_timeout,
                                  retry=False, **properties)
        except MessageNacked:
            raise PublishNacked(f"the broker nacked message {message_id} to {routing_key!r}") from None
        returned = self._returned.pop(message_id, None)
        if returned is not None:
            raise Unroutable(f"message {message_id} was returned: {returned}")


_UNCONFIRMED: Any = object()  # a message whose confirm has not arrived (yet)


class ConfirmBatch:
    """Publishes batches of messages on one channel of its own in confirm mode, each batch's
    confirms awaited together.

    The channel counts its publishes from 1 after ``confirm.select`` (the delivery tags the broker
    confirms by, ``multiple`` covering every tag up to it); a return (``mandatory``, no queue
    bound) comes before its message's ack. After a lost connection, a channel error or a timeout
    the tags still awaited are unknown: the owner drops this object and its connection
    (:attr:`broken`), and a new one counts from 1 again.
    """

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self.channel = connection.channel()
        self.channel.confirm_select()
        self.channel.events["basic_ack"].add(self._on_ack)
        self.channel.events["basic_nack"].add(self._on_nack)
        self.producer = Producer(self.channel, auto_declare=False, on_return=self._on_return)
        self.broken = False
        self._tag = 0  # delivery tag of the last message published on the channel
        self._awaited: dict[int, int] = {}  # delivery tag -> index in the current batch
        self._ids: list[str] = []  # message id by index
        self._outcomes: list[Any] = []
        self._returned: dict[str, str] = {}

    def _on_return(self, exc: Exception, exchange: str, routing_key: str, message: Any) -> None:
        message_id = (message.properties or {}).get("message_id") or ""
        self._returned[message_id] = f"{exc} (exchange {exchange!r}, routing key {routing_key!r})"

    def _confirmed(self, delivery_tag: int, multiple: bool) -> list[int]:
        tags = [t for t in self._awaited if t <= delivery_tag] if multiple else [delivery_tag]
        return [self._awaited.pop(t) for t in tags if t in self._awaited]

    def _on_ack(self, delivery_tag: int, multiple: bool) -> None:
        for i in self._confirmed(delivery_tag, multiple):
            returned = self._returned.pop(self._ids[i], None)
            self._outcomes[i] = (None if returned is None
                                 else Unroutable(f"message {self._ids[i]} was returned: {returned}"))

    def _on_nack(self, delivery_tag: int, multiple: bool) -> None:
        for i in self._confirmed(delivery_tag, multiple):
            self._outcomes[i] = PublishNacked(f"the broker nacked message {self._ids[i]}")

    def send(self, messages: Sequence[Mapping[str, Any]], timeout: float) -> list[BusError | None]:
        """Publish ``messages`` (keyword arguments of ``Producer.publish``, ``message_id`` among
        them) with ``mandatory``, then wait up to ``timeout`` seconds for all their confirms: each
        message's outcome, None when the broker acked it and did not return it."""
        self._ids = [m["message_id"] for m in messages]
        self._outcomes = [_UNCONFIRMED] * len(messages)
        self._awaited = {}
        self._returned.clear()
        failure: BusError | None = None
        try:
            for i, m in enumerate(messages):
                self.producer.publish(**m, mandatory=True, delivery_mode=2, retry=False)
                self._tag += 1
                self._awaited[self._tag] = i
            deadline = time.monotonic() + timeout
            while self._awaited:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError()
                self.connection.drain_events(timeout=left)
        except TimeoutError:
            failure = ConfirmTimeout(f"not confirmed within {timeout} s")
        except self.connection.channel_errors as err:  # the broker closed the channel (e.g. no such exchange)
            failure = BusError(f"channel error: {type(err).__name__}: {err}")
        except (*self.connection.connection_errors, OSError) as err:
            failure = BusUnavailable(f"RabbitMQ unavailable: {type(err).__name__}: {err}")
        finally:
            self._awaited = {}
        if failure is not None:
            self.broken = True  # tags still awaited would be confirmed on a channel we no longer count
        return [failure if outcome is _UNCONFIRMED else outcome for outcome in self._outcomes]


class Publisher:
    """Publishes validated CloudEvents to the events exchange; one per thread.

    Connects lazily on first use. ``validate`` checks each event against its
    schema first (on in tests and by default; the relay's events were already
    validated by ``make_event``).
    """

    def __init__(self, amqp_url: str, *, prefix: str = "", catalog: Catalog | None = None,
                 validate: bool = True, confirm_timeout: float = 10.0, max_retries: int = 3) -> None:
        self.amqp_url = amqp_url
        self.catalog = catalog or load_catalog()
        self.topology = Topology(self.catalog, prefix)
        self.validate = validate
        self.confirm_timeout = confirm_timeout
        self.max_retries = max_retries
        self._conn: Connection | None = None
        self._sender: ConfirmedSender | None = None
        self._batch: ConfirmBatch | None = None  # publish_many's channel, on a connection of its own

    def _ready(self) -> tuple[Connection, ConfirmedSender]:
        if self._conn is None or self._sender is None:
            self._conn = connect(self.amqp_url, max_retries=self.max_retries)
            self._sender = ConfirmedSender(self._conn, confirm_timeout=self.confirm_timeout)
        return self._conn, self._sender

    def _ensured(self, fun_name: str, *args: Any, **kwargs: Any) -> Any:
        conn, sender = self._ready()

        def errback(exc: Exception, interval: float) -> None:
            log.warning("broker connection lost, retrying", extra={"error": type(exc).__name__})

        try:
            ensured = conn.ensure(sender, getattr(sender, fun_name), errback=errback,
                                  max_retries=self.max_retries, interval_start=0.2, interval_step=0.5,
                                  interval_max=2)
            return ensured(*args, **kwargs)
        except (OperationalError, *conn.connection_errors) as err:
            self.reset()
            raise BusUnavailable(f"RabbitMQ unavailable: {type(err).__name__}: {err}") from err
        except (ChannelError, *conn.channel_errors) as err:
            self.reset()  # the broker closed the channel (e.g. the exchange is not declared)
            raise BusError(f"channel error: {type(err).__name__}: {err}") from err

    def declare(self) -> None:
        """Declare the catalog's whole topology (idempotent)."""
        conn, _ = self._ready()
        try:
            conn.ensure_connection(max_retries=self.max_retries, interval_start=0.2, interval_step=0.5,
                                   interval_max=2)
            self.topology.declare(conn.default_channel)
        except (OperationalError, *conn.connection_errors) as err:
            self.reset()
            raise BusUnavailable(f"RabbitMQ unavailable: {type(err).__name__}: {err}") from err

    def publish(self, event: dict[str, Any]) -> None:
        """Publish one event and return once the broker has confirmed it; raise a BusError otherwise."""
        spec = self.catalog.validate(event) if self.validate else self.catalog.event_for_type(event["type"])
        cid = event.get("correlationid") or current_correlation_id()
        self._ensured("send", encode(event), exchange=self.topology.exchange.name,
                      routing_key=spec.routing_key, message_id=event["id"],
                      headers={CORRELATION_HEADER: cid}, correlation_id=cid, type_=event["type"])
        log.debug("event published", extra={"event_id": event["id"], "event_type": event["type"]})

    def publish_many(self, events: Sequence[dict[str, Any]]) -> list[BusError | None]:
        """Publish ``events`` in order, then wait once for all their confirms (up to
        ``confirm_timeout``): each event's outcome, None when the broker confirmed it, else why not
        (:class:`InvalidEvent` before sending, :class:`PublishNacked`, :class:`Unroutable`;
        :class:`BusUnavailable` for every event not confirmed when the connection was lost, or
        :class:`ConfirmTimeout` when the wait ran out: the broker may have it or not). Raises nothing
        for the broker's sake: the caller keeps what was confirmed and sends the rest again later."""
        outcomes: list[BusError | None] = [None] * len(events)
        messages: list[dict[str, Any]] = []
        sent: list[int] = []
        for i, event in enumerate(events):
            try:
                spec = self.catalog.validate(event) if self.validate else self.catalog.event_for_type(event["type"])
            except BusError as err:
                outcomes[i] = err
                continue
            cid = event.get("correlationid") or current_correlation_id()
            properties = {"correlation_id": cid} if cid else {}
            messages.append({"body": encode(event), "exchange": self.topology.exchange.name,
                             "routing_key": spec.routing_key, "message_id": event["id"], "type": event["type"],
                             "headers": {CORRELATION_HEADER: cid}, "content_type": CONTENT_TYPE,
                             "content_encoding": "utf-8", **properties})
            sent.append(i)
        if not messages:
            return outcomes
        try:
            batch = self._ready_batch()
        except BusUnavailable as err:
            results: list[BusError | None] = [err] * len(messages)
        else:
            results = batch.send(messages, self.confirm_timeout)
            if batch.broken:
                self._reset_batch()
        for i, result in zip(sent, results, strict=True):
            outcomes[i] = result
        return outcomes

    def _ready_batch(self) -> ConfirmBatch:
        if self._batch is None:
            conn = connect(self.amqp_url, max_retries=self.max_retries, confirm_publish=False)
            try:
                conn.ensure_connection(max_retries=self.max_retries, interval_start=0.2, interval_step=0.5,
                                       interval_max=2)
                self._batch = ConfirmBatch(conn)
            except (OperationalError, *conn.connection_errors, *conn.channel_errors) as err:
                _release(conn)
                raise BusUnavailable(f"RabbitMQ unavailable: {type(err).__name__}: {err}") from err
        return self._batch

    def _reset_batch(self) -> None:
        batch, self._batch = self._batch, None
        if batch is not None:
            _release(batch.connection)

    def send_raw(self, body: bytes, *, routing_key: str, message_id: str, content_type: str = CONTENT_TYPE,
                 headers: Mapping[str, Any] | None = None, exchange: str | None = None) -> None:
        """Publish bytes as they are (tests use it to send poison messages), with confirms."""
        self._ensured("send", body, exchange=exchange if exchange is not None else self.topology.exchange.name,
                      routing_key=routing_key, message_id=message_id, headers=headers, content_type=content_type)

    def reset(self) -> None:
        """Drop the connections; the next publish opens a new one."""
        conn, self._conn, self._sender = self._conn, None, None
        if conn is not None:
            _release(conn)
        self._reset_batch()

    def close(self) -> None:
        self.reset()

    def __enter__(self) -> Publisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _release(conn: Connection) -> None:
    try:
        conn.release()
    except Exception as err:  # noqa: BLE001 - a dead connection may fail to close; it is dropped anyway
        log.debug("closing a broken connection failed", extra={"error": type(err).__name__})
