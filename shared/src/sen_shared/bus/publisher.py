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
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from amqp.exceptions import MessageNacked
from kombu import Connection, Producer
from kombu.exceptions import ChannelError, OperationalError

from ..logs import current_correlation_id
from .catalog import Catalog, load_catalog
from .errors import BusError, BusUnavailable, PublishNacked, Unroutable
from .events import CONTENT_TYPE, encode
from .topology import Topology

log = logging.getLogger("sen.bus")

CORRELATION_HEADER = "x-correlation-id"


def connect(amqp_url: str, *, max_retries: int = 3, heartbeat: float = 0) -> Connection:
    """A kombu connection in confirm mode whose (re)connection attempts are bounded."""
    return Connection(amqp_url, heartbeat=heartbeat, connect_timeout=5, transport_options={
        "confirm_publish": True,
        "max_retries": max_retries, "interval_start": 0.2, "interval_step": 0.5, "interval_max": 2,
    })


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

    def send_raw(self, body: bytes, *, routing_key: str, message_id: str, content_type: str = CONTENT_TYPE,
                 headers: Mapping[str, Any] | None = None, exchange: str | None = None) -> None:
        """Publish bytes as they are (tests use it to send poison messages), with confirms."""
        self._ensured("send", body, exchange=exchange if exchange is not None else self.topology.exchange.name,
                      routing_key=routing_key, message_id=message_id, headers=headers, content_type=content_type)

    def reset(self) -> None:
        """Drop the connection; the next publish opens a new one."""
        conn, self._conn, self._sender = self._conn, None, None
        if conn is not None:
            try:
                conn.release()
            except Exception as err:  # noqa: BLE001 - a dead connection may fail to close; it is dropped anyway
                log.debug("closing a broken connection failed", extra={"error": type(err).__name__})

    def close(self) -> None:
        self.reset()

    def __enter__(self) -> Publisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
