"""The outbox and its relay against the real FerretDB and RabbitMQ, including a broker restart."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from kombu import Producer
from sen_shared.bus import (
    BusUnavailable,
    EventConsumer,
    OutboxRelay,
    Publisher,
    apply_once,
    load_catalog,
    make_event,
    new_document,
    with_events,
)
from sen_shared.bus.errors import ConfirmTimeout
from sen_shared.bus.publisher import ConfirmBatch

from tests.conftest import rabbit_restart
from tests.integration.test_bus import Bus, _bus, drain, queue_depth, rejecting, take
from tests.support import wait_for

READER = "portal.reporting"  # binds "#": sees every event


@pytest.fixture()
def bus(amqp_url: str, base_env: dict[str, str]) -> Iterator[Bus]:
    yield from _bus(amqp_url, base_env, [READER])


def changed(resource_id: str, version: int = 1) -> dict[str, Any]:
    return make_event("ehr.observation.updated", {"resourceType": "Observation", "id": resource_id,
                                               "versionId": str(version), "patient": "Patient/p1"},
                      subject=f"Observation/{resource_id}")


@contextmanager
def relay_and_reader(bus: Bus, db: Any, apply: Callable[[dict[str, Any], Any], None]
                     ) -> Iterator[tuple[OutboxRelay, EventConsumer]]:
    """The relay of ``db.observations`` and a READER consumer running ``apply``, each in a thread,
    reconnecting fast (backoff up to 1 s); stopped on leaving."""
    stop = threading.Event()
    pub = bus.publisher(max_retries=1)
    relay = OutboxRelay(db, pub, ["observations"], batch=50, poll_interval=0.1, max_backoff=1.0)
    consumer = EventConsumer(bus.url, bus.topology, READER, apply, db, max_backoff=1.0)
    threads = [threading.Thread(target=relay.run_forever, args=(stop,), daemon=True),
               threading.Thread(target=consumer.run, args=(stop,), daemon=True)]
    for t in threads:
        t.start()
    try:
        assert consumer.ready.wait(60)
        yield relay, consumer
    finally:
        stop.set()
        for t in threads:
            t.join(20)
        pub.close()


def test_outbox_rides_in_the_same_write_and_the_relay_empties_it(bus: Bus, fresh_db: Any) -> None:
    coll = fresh_db.observations
    coll.insert_one(new_document({"_id": "o1", "status": "preliminary"}, [changed("o1", 1)]))
    coll.update_one({"_id": "o1"}, with_events({"$set": {"status": "final"}}, [changed("o1", 2), changed("o1", 3)]))
    doc = coll.find_one({"_id": "o1"})
    assert doc["status"] == "final" and doc["outbox_pending"] is True
    assert [e["state"] for e in doc["outbox"]] == ["pending"] * 3

    with bus.publisher() as pub:
        relay = OutboxRelay(fresh_db, pub, ["observations"])
        assert relay.run_once() == 3
        assert relay.run_once() == 0
    doc = coll.find_one({"_id": "o1"})
    assert doc["outbox"] == [] and doc["outbox_pending"] is False
    msgs = take(bus, bus.topology.queue_name(READER), 3)
    assert len(msgs) == 3
    versions = [json.loads(m.body)["data"]["versionId"] for m in msgs]
    assert versions == ["1", "2", "3"]  # in the order they were written


def test_event_appended_while_relaying_keeps_the_flag(bus: Bus, fresh_db: Any) -> None:
    coll = fresh_db.observations
    coll.insert_one(new_document({"_id": "o2"}, [changed("o2", 1)]))
    late = changed("o2", 2)

    class Racing(Publisher):
        def publish_many(self, events: list[dict[str, Any]]) -> list[Any]:
            outcomes = super().publish_many(events)
            if late["id"] not in {e["id"] for e in events}:  # a writer appends one between our read and cleanup
                coll.update_one({"_id": "o2"}, with_events({"$set": {"v": 2}}, [late]))
            return outcomes

    with Racing(bus.url, prefix=bus.prefix, catalog=bus.catalog) as pub:
        relay = OutboxRelay(fresh_db, pub, ["observations"])
        assert relay.run_once() == 1
        doc = coll.find_one({"_id": "o2"})
        assert doc["outbox_pending"] is True and [e["id"] for e in doc["outbox"]] == [late["id"]]
        assert relay.run_once() == 1
    doc = coll.find_one({"_id": "o2"})
    assert doc["outbox"] == [] and doc["outbox_pending"] is False


def test_the_relay_empties_sent_outboxes_in_bulk(bus: Bus, fresh_db: Any, monkeypatch) -> None:
    """40 documents relayed in 3 batches: their outboxes are emptied by one command, not 40 updates (nor one
    bulk command of 16 guarded updates each, as before 2026-12-07, which FerretDB ran as a read and a write a
    document). A document holding two events is guarded by its count too: a second command."""
    from pymongo.collection import Collection

    coll = fresh_db.observations
    coll.insert_many([new_document({"_id": f"k{i}"}, [changed(f"k{i}")]) for i in range(40)])
    coll.insert_one(new_document({"_id": "two"}, [changed("two", 1), changed("two", 2)]))
    calls: list[str] = []
    for method in ("update_one", "bulk_write", "update_many"):
        original = getattr(Collection, method)
        monkeypatch.setattr(Collection, method, lambda self, *a, _o=original, _m=method, **k: (
            calls.append(_m), _o(self, *a, **k))[1])
    with bus.publisher() as pub:
        assert OutboxRelay(fresh_db, pub, ["observations"], batch=16).run_once() == 42
    assert calls == ["update_many"] * 2  # the 40 of one event, the one of two
    assert coll.count_documents({"outbox_pending": True}) == 0
    assert {d["_id"]: d["outbox"] for d in coll.find()} == {**{f"k{i}": [] for i in range(40)}, "two": []}
    assert len(take(bus, bus.topology.queue_name(READER), 42)) == 42


def test_a_crowded_outbox_is_taken_bucket_by_bucket_each_event_once(bus: Bus, fresh_db: Any) -> None:
    """After a bulk load the relay reads one id bucket at a time (a plain filtered query makes
    FerretDB fetch every pending document each pass), and returns to plain passes when done."""
    from sen_shared.fhir.search.buckets import bucket_fields

    coll = fresh_db.observations
    coll.insert_many([new_document({"_id": f"b{i}", **bucket_fields(f"b{i}")}, [changed(f"b{i}")])
                      for i in range(300)])
    with bus.publisher() as pub:
        relay = OutboxRelay(fresh_db, pub, ["observations"], batch=20, page=20)
        assert relay.run_once() == 20
        assert "observations" in relay._crowded  # a full page: bucket by bucket from now on
        passes, total = 1, 20
        while (n := relay.run_once()) or "observations" in relay._crowded:
            total, passes = total + n, passes + 1
            assert passes < 600
        assert total == 300 and "observations" not in relay._crowded
    assert coll.count_documents({"outbox_pending": True}) == 0
    msgs = take(bus, bus.topology.queue_name(READER), 300)
    assert sorted(json.loads(m.body)["data"]["id"] for m in msgs) == sorted(f"b{i}" for i in range(300))
    assert drain(bus, bus.topology.queue_name(READER)) == []  # nothing twice (the relay returned: all confirmed)


def test_a_relay_that_starts_half_way_through_a_backlog_passes_over_the_empty_buckets(bus: Bus,
                                                                                    fresh_db: Any) -> None:
    """A relay restarted mid-backlog finds the first buckets already emptied: it goes on to the
    next pending bucket in the same pass instead of reporting nothing (and pausing) per bucket."""
    from sen_shared.fhir.search.buckets import bucket_fields

    coll = fresh_db.observations
    docs = [new_document({"_id": f"h{i}", **bucket_fields(f"h{i}")}, [changed(f"h{i}")]) for i in range(300)]
    for doc in docs:
        if doc["b2"] < "c0":  # what an earlier relay already sent
            doc.update(outbox=[], outbox_pending=False)
    coll.insert_many(docs)
    pending = sum(1 for d in docs if d["outbox_pending"])
    assert 30 < pending < 150
    with bus.publisher() as pub:
        relay = OutboxRelay(fresh_db, pub, ["observations"], batch=10, page=10)
        total = relay.run_once()
        assert total == 10 and "observations" in relay._crowded
        while total < pending:
            n = relay.run_once()
            assert n > 0, f"a pass found nothing with {pending - total} still pending"
            total += n
    assert coll.count_documents({"outbox_pending": True}) == 0
    msgs = take(bus, bus.topology.queue_name(READER), pending)
    assert len({json.loads(m.body)["id"] for m in msgs}) == pending


def test_unroutable_outbox_event_stays_pending(amqp_url: str, base_env: dict[str, str], fresh_db: Any) -> None:
    for bus in _bus(amqp_url, base_env, ["ehr.consult-record"]):  # nothing binds ehr.observation.updated
        coll = fresh_db.observations
        coll.insert_one(new_document({"_id": "o3"}, [changed("o3")]))
        with bus.publisher() as pub:
            relay = OutboxRelay(fresh_db, pub, ["observations"])
            assert relay.run_once() == 0
            assert relay.run_once() == 0  # skipped while backing off
        doc = coll.find_one({"_id": "o3"})
        assert doc["outbox_pending"] is True and len(doc["outbox"]) == 1
        assert doc["outbox_attempts"] == 1 and doc["outbox_error"] == "Unroutable"


class Watching(Publisher):
    """A publisher that keeps each batch's events and outcomes (``publish_many``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.batches: list[tuple[list[str], list[Any]]] = []

    def publish_many(self, events: list[dict[str, Any]]) -> list[Any]:
        outcomes = super().publish_many(events)
        self.batches.append(([e["id"] for e in events], outcomes))
        return outcomes


def paid_event(n: int) -> dict[str, Any]:
    """A billing.payment.received event (its own routing key beside ehr.observation.updated)."""
    with open(load_catalog().path.parent / "examples" / "billing.payment.received.json", encoding="utf-8") as f:
        data = json.load(f)["data"]
    return make_event("billing.payment.received", {**data, "payment": f"standard:p{n}"}, subject=data["invoice"])


def test_a_batch_is_published_then_its_confirms_awaited_together(bus: Bus, fresh_db: Any) -> None:
    """250 documents, batch 100: three batches (one query), every event once, no event published alone."""
    coll = fresh_db.observations
    coll.insert_many([new_document({"_id": f"c{i}"}, [changed(f"c{i}")]) for i in range(250)])
    with Watching(bus.url, prefix=bus.prefix, catalog=bus.catalog) as pub:
        pub.publish = None  # type: ignore[method-assign]  # the relay publishes in batches only
        relay = OutboxRelay(fresh_db, pub, ["observations"], batch=100)
        assert relay.run_once() == 250
        assert relay.run_once() == 0
    assert [len(ids) for ids, _ in pub.batches] == [100, 100, 50]
    assert all(outcome is None for _, outcomes in pub.batches for outcome in outcomes)
    assert coll.count_documents({"outbox_pending": True}) == 0
    msgs = take(bus, bus.topology.queue_name(READER), 250)
    assert sorted(json.loads(m.body)["data"]["id"] for m in msgs) == sorted(f"c{i}" for i in range(250))


def test_a_nacked_event_of_a_batch_stays_pending_and_exactly_the_confirmed_ones_are_marked_sent(
        bus: Bus, fresh_db: Any) -> None:
    """A queue that rejects ehr.observation.updated (the broker nacks those); billing.payment.received is
    acked. In one batch: documents of each, and one holding both: only the acked entries leave."""
    with rejecting(bus, "ehr.observation.updated"):
        coll = fresh_db.observations
        both = [paid_event(99), changed("n-both")]
        coll.insert_many([new_document({"_id": f"n{i}"}, [changed(f"n{i}")]) for i in range(3)]
                         + [new_document({"_id": f"a{i}"}, [paid_event(i)]) for i in range(3)]
                         + [new_document({"_id": "both"}, both)])
        with Watching(bus.url, prefix=bus.prefix, catalog=bus.catalog) as pub:
            relay = OutboxRelay(fresh_db, pub, ["observations"], batch=100)
            assert relay.run_once() == 4  # the three payments and the payment of "both"
            [(ids, outcomes)] = pub.batches
        assert len(ids) == 8
        assert sorted(type(o).__name__ for o in outcomes) == ["NoneType"] * 4 + ["PublishNacked"] * 4
        for i in range(3):
            assert coll.find_one({"_id": f"a{i}"})["outbox_pending"] is False
            doc = coll.find_one({"_id": f"n{i}"})
            assert doc["outbox_pending"] is True and len(doc["outbox"]) == 1
            assert doc["outbox_attempts"] == 1 and doc["outbox_error"] == "PublishNacked"
        doc = coll.find_one({"_id": "both"})
        assert [e["id"] for e in doc["outbox"]] == [both[1]["id"]]  # the nacked one stays, in place
        assert doc["outbox_pending"] is True and doc["outbox_error"] == "PublishNacked"


def test_a_batch_whose_confirms_do_not_come_in_time_stays_pending(bus: Bus, fresh_db: Any,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """No confirm within the timeout: whether the broker has them is unknown, so none is marked sent nor
    counted as a failure, the pass says the broker is unavailable, and a later pass sends them. The broker's
    acks are not heard on the relay's channel (the batch's ack handler does nothing): with a timeout of 1e-9 s
    alone, acks read while the batch was still being published counted on a loaded machine (ci, session 31)."""
    coll = fresh_db.observations
    coll.insert_many([new_document({"_id": f"t{i}"}, [changed(f"t{i}")]) for i in range(20)])
    with monkeypatch.context() as deaf:
        deaf.setattr(ConfirmBatch, "_on_ack", lambda self, delivery_tag, multiple: None)
        with Watching(bus.url, prefix=bus.prefix, catalog=bus.catalog, confirm_timeout=0.2) as impatient:
            with pytest.raises(ConfirmTimeout):
                OutboxRelay(fresh_db, impatient, ["observations"]).run_once()
            [(ids, outcomes)] = impatient.batches
    assert len(ids) == 20 and all(isinstance(o, ConfirmTimeout) for o in outcomes)
    assert coll.count_documents({"outbox_pending": True}) == 20
    assert coll.count_documents({"outbox_attempts": {"$exists": True}}) == 0
    with bus.publisher() as pub:
        assert OutboxRelay(fresh_db, pub, ["observations"]).run_once() == 20
    assert coll.count_documents({"outbox_pending": True}) == 0
    # sent once or twice: at least once. Both publishers have returned (the impatient one's channel closed, the
    # broker routes a channel's messages before its close; the second's confirmed), so all are in the queue
    msgs = drain(bus, bus.topology.queue_name(READER))
    assert {json.loads(m.body)["data"]["id"] for m in msgs} == {f"t{i}" for i in range(20)}


def test_a_broker_restart_in_the_middle_of_a_batch_loses_no_event(bus: Bus, fresh_db: Any, monkeypatch) -> None:
    """RabbitMQ stops and starts while the relay's first batch is being published (its 50th message of 100):
    the confirmed ones are marked sent, the others stay pending and go out after the restart; every event
    reaches the queue at least once."""
    coll = fresh_db.observations
    total = 300
    coll.insert_many([new_document({"_id": f"m{i}"}, [changed(f"m{i}")]) for i in range(total)])
    sent = {"n": 0}
    original = Producer.publish

    def publish(self: Producer, *args: Any, **kwargs: Any) -> Any:
        sent["n"] += 1
        if sent["n"] == 50:
            rabbit_restart(2)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Producer, "publish", publish)
    stop = threading.Event()
    with Watching(bus.url, prefix=bus.prefix, catalog=bus.catalog, max_retries=1) as pub:
        relay = OutboxRelay(fresh_db, pub, ["observations"], batch=100, poll_interval=0.1, max_backoff=1.0)
        thread = threading.Thread(target=relay.run_forever, args=(stop,), daemon=True)
        thread.start()
        try:
            wait_for(lambda: coll.count_documents({"outbox_pending": True}) == 0, timeout=120)
        finally:
            stop.set()
            thread.join(20)
    first_ids, first = pub.batches[0]
    assert len(first_ids) == 100 and sent["n"] > 100
    assert any(isinstance(o, BusUnavailable) for o in first), "the restart must fall in the first batch"
    monkeypatch.undo()
    msgs = take(bus, bus.topology.queue_name(READER), total, timeout=30)
    msgs += drain(bus, bus.topology.queue_name(READER))  # and any sent twice (confirmed: in the queue already)
    assert {json.loads(m.body)["data"]["id"] for m in msgs} == {f"m{i}" for i in range(total)}  # none lost
    assert coll.count_documents({"outbox_attempts": {"$exists": True}}) == 0


def test_relay_delivers_1000_events_across_a_broker_restart_each_applied_once(bus: Bus, fresh_db: Any) -> None:
    """1,000 events written while the relay runs; RabbitMQ stops and starts in the middle."""
    total, per_doc = 1000, 4
    deadline = time.monotonic() + 120
    deliveries: list[str] = []

    def apply(event: dict[str, Any], db: Any) -> None:
        deliveries.append(event["id"])
        # each observation id here has one event: the fact keyed by it is the event's claim
        apply_once(db.effects, event["data"]["id"], {"n": 1, "event": event["id"]})

    with relay_and_reader(bus, fresh_db, apply) as (relay, consumer):
        coll = fresh_db.observations
        ids: list[str] = []
        for d in range(total // per_doc):  # the service keeps writing while the broker is down
            events = [changed(f"obs-{d}-{k}") for k in range(per_doc)]
            ids += [e["data"]["id"] for e in events]
            # One write per document: FerretDB 1.24 loses concurrent updates of one document
            # (see test_ferretdb_concurrent_updates_of_one_document_are_atomic), and a writer
            # updating a document while the relay cleans it would race with it there.
            coll.insert_one(new_document({"_id": f"doc-{d}"}, events))
            if d == total // per_doc // 3:
                published_before = relay.published
                restart = threading.Thread(target=rabbit_restart, args=(2,), daemon=True)
                restart.start()
            time.sleep(0.01)
        restart.join(60)
        while time.monotonic() < deadline and fresh_db.effects.count_documents({}) < total:
            time.sleep(0.2)

    effects = list(fresh_db.effects.find({}, {"n": 1}))
    if len(effects) != total:
        dlq = take(bus, bus.topology.dlq_name(READER), 10, timeout=1)
        state = {"main": queue_depth(bus, bus.topology.queue_name(READER)),
                 "pending_docs": fresh_db.observations.count_documents({"outbox_pending": True}),
                 "dlq": [(m.headers.get("x-sen-reason"), m.headers.get("x-death")) for m in dlq],
                 "deliveries": len(deliveries), "distinct": len(set(deliveries)), "published": relay.published,
                 "consumer": (consumer.handled, consumer.retried, consumer.dead_lettered, consumer.connections)}
        missing = set(ids) - {e["_id"] for e in effects}
        state["missing_pending"] = [d["_id"] for d in fresh_db.observations.find({"outbox_pending": True})]
        state["missing"] = sorted(missing)
        raise AssertionError(f"lost events: {state}")
    assert published_before > 0, "the restart must happen mid-stream"
    assert consumer.connections >= 2, "the consumer must have reconnected after the restart"
    assert len(effects) == total and {e["_id"] for e in effects} == set(ids)  # every event delivered
    assert sum(e["n"] for e in effects) == total  # none applied twice
    assert len(set(deliveries)) == total and len(deliveries) >= total  # duplicates allowed, effects not
    assert fresh_db.observations.count_documents({"outbox_pending": True}) == 0
    assert relay.published >= total


def test_ferretdb_one_insert_of_one_id_wins_which_the_claims_rely_on(fresh_db: Any) -> None:
    """Not the bus's code: the storage property every claim relies on, on the server in use.

    FerretDB 1.24 applies an update as an unlocked read-modify-write, so concurrent updates of
    one document lose writes (the reason no outbox document has two writers, and the FHIR store
    claims a version by inserting its history document: tests/integration/test_store_claims.py
    races writers and the relay on one resource). An insert of one ``_id`` has one winner.
    """
    from sen_shared.claims import ClaimTaken, claim

    coll = fresh_db.claims_probe
    for race in range(5):
        barrier = threading.Barrier(20)
        won: list[int] = []
        lost: list[int] = []

        def attempt(i: int, key: str = f"slot-{race}") -> None:
            barrier.wait()
            try:
                claim(coll, key, {"by": i})
                won.append(i)
            except ClaimTaken as taken:
                assert taken.holder is not None
                lost.append(i)

        threads = [threading.Thread(target=attempt, args=(i,)) for i in range(20)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert len(won) == 1 and len(lost) == 19
        assert coll.find_one({"_id": f"slot-{race}"})["by"] == won[0]
