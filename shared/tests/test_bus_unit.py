"""Unit tests of sen_shared.bus that need no server: catalog, envelopes, topology, outbox shapes."""

from __future__ import annotations

import json

import pytest
from sen_shared.bus import (
    CatalogError,
    InvalidEvent,
    Topology,
    UndecodableMessage,
    apply_once,
    decode,
    encode,
    load_catalog,
    make_event,
    new_document,
    outbox_indexes,
    with_events,
)
from sen_shared.bus.catalog import routing_key_of_type
from sen_shared.logs import correlation_id

CATALOG = load_catalog()


def patient_created(pid: str = "p1") -> dict:
    return make_event("ehr.patient.created", {"resourceType": "Patient", "id": pid, "versionId": "1"},
                      subject=f"Patient/{pid}")


def test_make_event_is_a_cloudevent_with_the_current_correlation_id() -> None:
    token = correlation_id.set("req-42")
    try:
        ev = patient_created()
    finally:
        correlation_id.reset(token)
    assert ev["specversion"] == "1.0" and ev["type"] == "vn.sen.ehr.patient.created.v1"
    assert ev["source"] == "/sen/ehr" and ev["datacontenttype"] == "application/json"
    assert ev["correlationid"] == "req-42" and ev["time"].endswith("Z")


def test_make_event_refuses_data_outside_the_schema() -> None:
    with pytest.raises(InvalidEvent, match=r"\$\.data fails 'additionalProperties'"):
        make_event("ehr.patient.created", {"resourceType": "Patient", "id": "p1", "versionId": "1",
                                           "name": "Nguyễn Văn A"}, subject="Patient/p1")
    with pytest.raises(InvalidEvent, match="not in the catalog"):
        make_event("ehr.patient.merged", {}, subject="Patient/p1")


def test_invalid_event_message_never_carries_the_value() -> None:
    ev = patient_created()
    ev["data"]["id"] = "Nguyễn Văn A"
    with pytest.raises(InvalidEvent) as err:
        CATALOG.validate(ev)
    assert "Nguy" not in str(err.value)


def test_encode_decode_round_trip_and_poison() -> None:
    ev = patient_created()
    assert decode(encode(ev), "application/cloudevents+json; charset=utf-8") == ev
    with pytest.raises(UndecodableMessage, match="content type"):
        decode(encode(ev), "application/json")
    with pytest.raises(UndecodableMessage, match="not UTF-8 JSON"):
        decode(b"\xff\xfe", "application/cloudevents+json")
    with pytest.raises(UndecodableMessage, match="not an object"):
        decode(b"42", "application/cloudevents+json")


def test_routing_key_of_type() -> None:
    assert routing_key_of_type("vn.sen.teleconsult.consult.completed.v1") == "teleconsult.consult.completed"
    with pytest.raises(InvalidEvent):
        routing_key_of_type("com.example.thing.v1")


def test_catalog_declares_the_initial_events_and_consumers() -> None:
    assert set(CATALOG.events) >= {f"ehr.{e}.{v}" for e in ("patient", "observation", "organization")
                                   for v in ("created", "updated", "deleted")} | {
        "teleconsult.consult.completed", "billing.invoice.paid"}
    assert CATALOG.consumer("ehr.consult-record").bind == ("teleconsult.consult.completed",)
    assert "teleconsult.consult.completed" in CATALOG.consumer("billing.consult-charge").bind
    assert CATALOG.consumer("portal.reporting").bind == ("#",)
    assert CATALOG.consumer("portal.reporting").retry_tiers_ms == (1000, 5000, 30000)
    with pytest.raises(CatalogError):
        CATALOG.consumer("portal.nothing")


def test_topology_names_and_queue_arguments() -> None:
    topo = Topology(CATALOG.with_retry_tiers([100, 200]), "t1.")
    assert topo.exchange.name == "t1.sen.events" and topo.exchange.type == "topic" and topo.exchange.durable
    q = topo.queue("ehr.consult-record")
    assert q.name == "t1.ehr.consult-record"
    assert q.queue_arguments["x-queue-type"] == "quorum"
    assert q.queue_arguments["x-dead-letter-routing-key"] == "t1.ehr.consult-record.dlq"
    assert {(b.exchange.name, b.routing_key) for b in q.bindings} == {
        ("t1.sen.events", "teleconsult.consult.completed"), ("t1.sen.retry", "t1.ehr.consult-record")}
    retries = topo.retry_queues("ehr.consult-record")
    assert [r.name for r in retries] == ["t1.ehr.consult-record.retry.1", "t1.ehr.consult-record.retry.2"]
    assert [r.queue_arguments["x-message-ttl"] for r in retries] == [100, 200]
    assert all(r.queue_arguments["x-dead-letter-routing-key"] == "t1.ehr.consult-record" for r in retries)
    assert topo.dlq("ehr.consult-record").queue_arguments == {"x-queue-type": "quorum"}


def test_with_events_adds_the_outbox_to_the_same_update() -> None:
    ev = patient_created()
    update = {"$set": {"status": "active"}, "$inc": {"version": 1}}
    out = with_events(update, [ev])
    assert out["$set"] == {"status": "active", "outbox_pending": True}
    assert out["$inc"] == {"version": 1}
    [entry] = out["$push"]["outbox"]["$each"]
    assert entry["id"] == ev["id"] and entry["state"] == "pending" and json.loads(entry["event"]) == ev
    assert update == {"$set": {"status": "active"}, "$inc": {"version": 1}}  # not mutated
    assert with_events(update, []) == update
    with pytest.raises(ValueError):
        with_events({"$set": {"outbox_pending": False}}, [ev])


def test_new_document_carries_its_events() -> None:
    ev = patient_created()
    doc = new_document({"_id": "p1", "active": True}, [ev])
    assert doc["outbox_pending"] is True and json.loads(doc["outbox"][0]["event"]) == ev
    assert new_document({"_id": "p2"}, [])["outbox_pending"] is False
    json.dumps(doc)  # plain JSON: no datetimes, nothing MongoDB-specific


def test_an_entry_event_is_read_back_from_text_or_from_an_older_document() -> None:
    from sen_shared.bus.outbox import entry_event

    ev = patient_created()
    [entry] = new_document({"_id": "p1"}, [ev])["outbox"]
    assert isinstance(entry["event"], str) and entry_event(entry) == ev
    assert entry_event({**entry, "event": ev}) == ev  # written before events were text


def test_outbox_indexes_are_top_level_equality() -> None:
    [ix] = outbox_indexes(["patients"])
    assert ix.collection == "patients" and ix.keys == (("outbox_pending", 1),)


class FakeCollection:
    """Enough of a collection for apply_once: a unique _id and nothing else."""

    def __init__(self) -> None:
        self.docs: dict[str, dict] = {}
        self.inserts = 0

    def insert_one(self, doc: dict) -> None:
        from pymongo.errors import DuplicateKeyError

        self.inserts += 1
        if doc["_id"] in self.docs:
            raise DuplicateKeyError("E11000 duplicate key")
        self.docs[doc["_id"]] = dict(doc)

    def find_one(self, flt: dict, projection: dict | None = None) -> dict | None:
        return self.docs.get(flt["_id"])


def test_apply_once_inserts_the_fact_under_the_event_id_and_never_updates() -> None:
    coll = FakeCollection()
    assert apply_once(coll, "e1", {"n": 1}) is True
    assert apply_once(coll, "e1", {"n": 2}) is False  # redelivered: the first fact stays
    assert coll.docs["e1"]["n"] == 1 and "events_seen" not in coll.docs["e1"]
    assert apply_once(coll, "e2", {"n": 2}) is True and set(coll.docs) == {"e1", "e2"}
    with pytest.raises(ValueError, match="id"):
        apply_once(coll, "", {"n": 1})


def test_apply_once_runs_a_separate_effect_before_the_claim() -> None:
    coll, calls = FakeCollection(), []

    def crashing() -> None:
        calls.append("effect")
        raise RuntimeError("crash after the effect")

    with pytest.raises(RuntimeError):
        apply_once(coll, "e1", effect=crashing)
    assert calls == ["effect"] and coll.docs == {}  # no claim: the redelivery runs it again
    assert apply_once(coll, "e1", effect=lambda: calls.append("effect")) is True
    assert apply_once(coll, "e1", effect=lambda: calls.append("effect")) is False
    assert calls == ["effect", "effect"] and set(coll.docs) == {"e1"}


def test_every_event_that_carries_a_district_takes_the_district_a_consult_or_record_carries() -> None:
    """A consult's district (teleconsult's events, from the clinic's Organization; the EHR's, common.json's
    district: up to 200 characters) goes on to its invoice and its payments: billing's payment and paid
    events took 100 and the payment's event of a consult from a district of 101-200 characters failed its
    schema in the outbox. Every event's district takes what the others carry."""
    from pathlib import Path

    folder = Path(__file__).resolve().parents[2] / "specs" / "events" / "schemas"
    limits = {}
    for path in sorted(folder.glob("*.v1.json")):
        data = json.loads(path.read_text(encoding="utf-8"))["properties"]["data"]
        district = (data.get("properties") or {}).get("district")
        if district is not None:
            ref = district.get("$ref")
            limits[path.name] = 200 if ref == "common.json#/$defs/district" else district.get("maxLength")
    assert len(limits) >= 8, limits
    assert set(limits.values()) == {200}, limits
