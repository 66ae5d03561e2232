"""The event bus against the real RabbitMQ and FerretDB: confirms, returns, retries, DLQ, idempotency.

Every test declares its own topology under ``<run prefix><random>.`` with short
retry tiers (100 ms, 200 ms) and deletes it at the end.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest
from kombu import Connection, Queue
from sen_shared.bus import (
    EventConsumer,
    OutboxRelay,
    Publisher,
    PublishNacked,
    Topology,
    Unroutable,
    apply_once,
    load_catalog,
    make_event,
)
from sen_shared.bus.catalog import Catalog
from sen_shared.logs import correlation_id

from tests.support import wait_for

TIERS_MS = [100, 200]
CONSULT = "ehr.consult-record"


@dataclass
class Bus:
    url: str
    prefix: str
    catalog: Catalog
    topology: Topology

    def publisher(self, **kw: Any) -> Publisher:
        return Publisher(self.url, prefix=self.prefix, catalog=self.catalog, **kw)

    def relay_all(self, db: Any, collections: list[str]) -> None:
        """Publish every event waiting in the outboxes of ``collections``, as the worker's relay does."""
        with self.publisher() as pub:
            relay = OutboxRelay(db, pub, collections)
            while relay.run_once():
                pass


def _bus(amqp_url: str, base_env: dict[str, str], consumers: list[str] | None = None) -> Iterator[Bus]:
    prefix = f"{base_env['SEN_BUS_PREFIX']}{uuid.uuid4().hex[:6]}."
    catalog = load_catalog().with_retry_tiers(TIERS_MS)
    if consumers is not None:
        catalog = catalog.only(consumers)
    topology = Topology(catalog, prefix)
    with Connection(amqp_url) as conn:
        topology.declare(conn.default_channel)
    yield Bus(amqp_url, prefix, catalog, topology)
    with Connection(amqp_url) as conn:
        topology.delete(conn.default_channel)


@pytest.fixture()
def bus(amqp_url: str, base_env: dict[str, str]) -> Iterator[Bus]:
    """Only the consult-record consumer: other routing keys are unroutable."""
    yield from _bus(amqp_url, base_env, [CONSULT])


@contextmanager
def consuming(bus: Bus, purpose: str, handler: Callable[[dict, Any], None], db: Any) -> Iterator[EventConsumer]:
    stop = threading.Event()
    consumer = EventConsumer(bus.url, bus.topology, purpose, handler, db)
    thread = threading.Thread(target=consumer.run, args=(stop,), daemon=True)
    thread.start()
    assert consumer.ready.wait(15), "consumer did not start"
    try:
        yield consumer
    finally:
        stop.set()
        thread.join(15)
        assert not thread.is_alive()


def take(bus: Bus, queue_name: str, count: int, timeout: float = 15.0) -> list[Any]:
    """Take ``count`` messages from a queue (acknowledged), waiting for them."""
    got: list[Any] = []
    deadline = time.monotonic() + timeout
    with Connection(bus.url) as conn:
        q = Queue(queue_name)(conn.default_channel)
        while len(got) < count and time.monotonic() < deadline:
            m = q.get(no_ack=True)
            if m is None:
                time.sleep(0.05)
            else:
                got.append(m)
    return got


def drain(bus: Bus, queue_name: str) -> list[Any]:
    """Every message in a queue now (acknowledged): for messages already confirmed by the broker (a relay that
    returned), which a queue holds as soon as the confirm comes, so nothing is waited for."""
    got: list[Any] = []
    with Connection(bus.url) as conn:
        q = Queue(queue_name)(conn.default_channel)
        while (m := q.get(no_ack=True)) is not None:
            got.append(m)
    return got


def queue_depth(bus: Bus, queue_name: str) -> int:
    with Connection(bus.url) as conn:
        return conn.default_channel.queue_declare(queue=queue_name, passive=True).message_count


def consult_event(**kw: Any) -> dict[str, Any]:
    with open(load_catalog().path.parent / "examples" / "teleconsult.consult.completed.json", encoding="utf-8") as f:
        example = json.load(f)
    return make_event("teleconsult.consult.completed", example["data"], subject=example["subject"], **kw)


# ---------------------------------------------------------------- publishing

def test_published_event_is_confirmed_persistent_cloudevent(bus: Bus) -> None:
    event = consult_event(correlation_id="req-123")
    with bus.publisher() as pub:
        pub.publish(event)
    [m] = take(bus, bus.topology.queue_name(CONSULT), 1)
    assert m.content_type == "application/cloudevents+json"
    assert m.properties["delivery_mode"] == 2
    assert m.properties["message_id"] == event["id"]
    assert m.headers["x-correlation-id"] == "req-123"
    assert m.delivery_info["routing_key"] == "teleconsult.consult.completed"
    assert json.loads(m.body) == event


def test_unroutable_publish_raises(bus: Bus) -> None:
    paid = make_event("billing.invoice.paid", {
        "invoice": "Invoice/i1", "amount": 150000, "currency": "VND", "paidAt": "2025-03-14T03:02:45Z",
        "reconciliation": "PaymentReconciliation/r1"}, subject="Invoice/i1")
    with bus.publisher() as pub:
        with pytest.raises(Unroutable):
            pub.publish(paid)  # only teleconsult.consult.completed is bound in this topology
        pub.publish(consult_event())  # the channel is still usable, and a routable event passes
    assert queue_depth(bus, bus.topology.queue_name(CONSULT)) == 1


@contextmanager
def rejecting(bus: Bus, routing_key: str) -> Iterator[None]:
    """A full queue bound to ``routing_key`` that rejects every message: the broker nacks them."""
    full = f"{bus.prefix}full"
    with Connection(bus.url) as conn:
        ch = conn.default_channel
        ch.queue_declare(queue=full, durable=True, arguments={"x-max-length": 0, "x-overflow": "reject-publish"})
        ch.queue_bind(queue=full, exchange=bus.topology.exchange.name, routing_key=routing_key)
    try:
        yield
    finally:
        with Connection(bus.url) as conn:
            conn.default_channel.queue_delete(full)


def test_nacked_publish_raises(bus: Bus) -> None:
    with rejecting(bus, "teleconsult.consult.completed"), bus.publisher() as pub, pytest.raises(PublishNacked):
        pub.publish(consult_event())


def test_publisher_validates_events(bus: Bus) -> None:
    bad = consult_event()
    bad["data"]["patientName"] = "Nguyễn Văn A"
    with bus.publisher() as pub, pytest.raises(Exception, match="additionalProperties"):
        pub.publish(bad)
    assert queue_depth(bus, bus.topology.queue_name(CONSULT)) == 0


# ---------------------------------------------------------------- consuming

def test_handler_failing_on_every_attempt_lands_in_dlq(bus: Bus, fresh_db: Any) -> None:
    calls: list[str] = []

    def always_fails(event: dict, db: Any) -> None:
        calls.append(event["id"])
        raise RuntimeError("ehr is having a bad day")

    event = consult_event()
    with consuming(bus, CONSULT, always_fails, fresh_db) as consumer:
        with bus.publisher() as pub:
            pub.publish(event)
        [m] = take(bus, bus.topology.dlq_name(CONSULT), 1)
    assert len(calls) == len(TIERS_MS) + 1
    assert consumer.retried == len(TIERS_MS) and consumer.dead_lettered == 1 and consumer.handled == 0
    assert m.properties["message_id"] == event["id"]
    assert m.headers["x-sen-reason"] == "RuntimeError: ehr is having a bad day"
    assert m.headers["x-sen-attempts"] == len(TIERS_MS) + 1
    assert m.headers["x-sen-routing-key"] == "teleconsult.consult.completed"
    assert json.loads(m.body) == event
    assert queue_depth(bus, bus.topology.queue_name(CONSULT)) == 0


def test_handler_failing_once_then_succeeding_applies_once(bus: Bus, fresh_db: Any) -> None:
    calls: list[str] = []

    def flaky(event: dict, db: Any) -> None:
        calls.append(event["id"])
        if len(calls) == 1:
            raise ConnectionError("database blinked")
        apply_once(db.records, event["id"], {"serviceRequest": event["data"]["serviceRequest"]})

    event = consult_event()
    with consuming(bus, CONSULT, flaky, fresh_db) as consumer:
        with bus.publisher() as pub:
            pub.publish(event)
        wait_for(lambda: consumer.handled == 1)
    assert len(calls) == 2
    assert fresh_db.records.count_documents({"serviceRequest": event["data"]["serviceRequest"]}) == 1
    assert queue_depth(bus, bus.topology.dlq_name(CONSULT)) == 0


@pytest.mark.parametrize("body,content_type,reason", [
    (b"\x00not json at all", "application/cloudevents+json", "UndecodableMessage: body is not UTF-8 JSON"),
    (b'{"specversion": "1.0"', "application/cloudevents+json", "UndecodableMessage: body is not UTF-8 JSON"),
    (b'["a", "list"]', "application/cloudevents+json", "UndecodableMessage: body is JSON but not an object"),
    (b"<xml/>", "application/xml", "UndecodableMessage: content type 'application/xml'"),
])
def test_undecodable_message_goes_to_dlq_with_reason(bus: Bus, fresh_db: Any, body: bytes, content_type: str,
                                                     reason: str) -> None:
    calls: list[dict] = []
    with consuming(bus, CONSULT, lambda e, db: calls.append(e), fresh_db) as consumer:
        with bus.publisher() as pub:
            pub.send_raw(body, routing_key="teleconsult.consult.completed", message_id="poison-1",
                         content_type=content_type)
        [m] = take(bus, bus.topology.dlq_name(CONSULT), 1)
    assert calls == [] and consumer.dead_lettered == 1
    assert m.headers["x-sen-reason"].startswith(reason)
    assert (m.body if isinstance(m.body, bytes) else m.body.encode()) == body
    assert m.properties["message_id"] == "poison-1"


def test_event_failing_its_schema_goes_to_dlq_with_reason(bus: Bus, fresh_db: Any) -> None:
    event = consult_event()
    event["data"]["minutes"]["conclusion"]["code"] = "not icd"
    calls: list[dict] = []
    with consuming(bus, CONSULT, lambda e, db: calls.append(e), fresh_db):
        with bus.publisher(validate=False) as pub:
            pub.publish(event)
        [m] = take(bus, bus.topology.dlq_name(CONSULT), 1)
    assert calls == []
    reason = m.headers["x-sen-reason"]
    assert reason.startswith("InvalidEvent: vn.sen.teleconsult.consult.completed.v1 does not match its schema")
    assert "$.data.minutes.conclusion.code" in reason and "not icd" not in reason  # the path, never the value


def test_same_event_delivered_twice_has_one_effect(bus: Bus, fresh_db: Any) -> None:
    applied: list[bool] = []
    seen_cids: list[str] = []

    def record(event: dict, db: Any) -> None:
        seen_cids.append(correlation_id.get())
        applied.append(apply_once(db.records, event["id"], {"serviceRequest": event["data"]["serviceRequest"],
                                                            "patient": event["data"]["patient"]}))

    event = consult_event(correlation_id="req-twice")
    with consuming(bus, CONSULT, record, fresh_db) as consumer:
        with bus.publisher() as pub:
            pub.publish(event)
            pub.publish(event)
        wait_for(lambda: consumer.handled == 2)
    assert applied == [True, False]
    assert seen_cids == ["req-twice", "req-twice"]
    [doc] = fresh_db.records.find({"serviceRequest": event["data"]["serviceRequest"]})
    assert doc["_id"] == event["id"] and doc["patient"] == event["data"]["patient"]


def test_consumer_reconnects_after_broker_restart(bus: Bus, fresh_db: Any) -> None:
    from tests.conftest import rabbit_restart

    got: list[str] = []
    with consuming(bus, CONSULT, lambda e, db: got.append(e["id"]), fresh_db) as consumer:
        rabbit_restart(1)
        wait_for(lambda: consumer.ready.is_set() and consumer.connections >= 2, timeout=60)
        event = consult_event()
        with bus.publisher() as pub:
            pub.publish(event)
        wait_for(lambda: got == [event["id"]])
