"""A database restart mid-stream loses nothing: the outbox relay, two consumers and the billing webhook.

Each test runs on a database of its own (``tests/own_database.py``): a PostgreSQL cluster initialised
for the test and the project's FerretDB over it, never the shared servers, which other suites use
meanwhile. RabbitMQ is the shared one, under a bus prefix of the test's own (it is never restarted
here; ``test_outbox.py`` restarts it). Mid-stream, FerretDB is killed (SIGKILL) and started again,
and later the PostgreSQL under it has a fast shutdown and starts again. Afterwards every event is
delivered and applied once, every consult record is stored once, every bank transfer is one
payment and every invoice is settled once; the webhook answered 503 (problem JSON, the bank
retries) while the database was away, never 500.

What they found (each failed before its fix): FerretDB's answer while its PostgreSQL restarts is a
command error (InternalError, "failed to connect to ..."), which the web answered 500 and consumers
counted as a failed event: with the retry tiers spent during the outage, 24 of 90 consult events went
to the DLQ (``mongo.unavailable``: now 503, and a consumer holds the event until the database
answers). A bank's retry of a call cut off between its payment and the invoice's settlement found the
payment and stopped there: the invoice stayed issued, paid in full (``payments.finish_payment``).
Billing's consult charge redelivered after a write cut off between a version's claim and its current
document acked with the ChargeItem never current (read: not known) or the Invoice a draft for good:
billing's relay rolls no version forward (its history documents carry no events); now the delivery
makes each version current (``Store.ensure_current``) or fails to be retried past the grace period.

Two repairs are the workers' by design, and the tests run them as the workers do: a FHIR version
whose write was cut off between its claim (the history document, the whole version) and its current
document is rolled forward by the service's outbox relay once past the grace period (a consult record
acked meanwhile is stored: in its history document); a settlement cut off before its receipt is
finished by billing's periodic repair job. Billing's consult-charge consumer relies on no repair job:
its redeliveries finish what a cut-off delivery left.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from pymongo import monitoring
from pymongo.errors import DuplicateKeyError, PyMongoError
from sen_shared import mongo
from sen_shared.bus import EventConsumer, OutboxRelay, apply_once, make_event, new_document

from tests.integration.test_bus import Bus, _bus, drain, queue_depth
from tests.integration.test_outbox import READER, changed, relay_and_reader
from tests.own_database import OwnFerretDB, OwnPostgres, own_ferretdb, own_postgres

pytestmark = pytest.mark.integration

DOWN = 1.0  # seconds without a server at each restart
DEADLINE = 60.0  # the most a test waits for the stream to drain (a passing run takes a few seconds)


@pytest.fixture(scope="module")
def own_db() -> Iterator[tuple[OwnPostgres, OwnFerretDB]]:
    """One PostgreSQL and FerretDB for the module's tests (a database each), started once. At the end FerretDB is
    killed, not stopped: its data goes with the PostgreSQL under it, and its graceful stop waited ~3 s for the
    module's clients (pymongo's, kept open by the process) to go."""
    with own_postgres() as pg, own_ferretdb(pg.url) as fd:
        yield pg, fd
        fd.kill()


def restarts(pg: OwnPostgres, fd: OwnFerretDB) -> list[Callable[[], None]]:
    """The two outages, in order: FerretDB killed and started again; PostgreSQL restarted under it."""
    return [lambda: fd.restart(DOWN), lambda: pg.restart(DOWN)]


def retried(write: Callable[[], Any], deadline: float) -> None:
    """``write`` until the database takes it, as a client whose request failed sends it again;
    a duplicate key means an earlier attempt did get in."""
    while True:
        try:
            write()
            return
        except DuplicateKeyError:
            return
        except PyMongoError:
            assert time.monotonic() < deadline, "the database did not come back"
            time.sleep(0.1)


# ------------------------------------------------------------------------------- the relay


@pytest.fixture()
def bus(amqp_url: str, base_env: dict[str, str]) -> Iterator[Bus]:
    yield from _bus(amqp_url, base_env, [READER])


def test_the_relay_delivers_every_event_across_a_ferretdb_kill_and_a_postgresql_restart(own_db, bus: Bus) -> None:
    """500 events written while the relay runs; its database (and the consumer's) goes away twice."""
    pg, fd = own_db
    db = mongo.database(fd.url, f"sen_relay_{uuid.uuid4().hex[:6]}")
    total, per_doc = 500, 2
    deadline = time.monotonic() + DEADLINE
    deliveries: list[str] = []

    def apply(event: dict[str, Any], database: Any) -> None:
        deliveries.append(event["id"])
        apply_once(database.effects, event["data"]["id"], {"n": 1, "event": event["id"]})

    published_before: list[int] = []
    with relay_and_reader(bus, db, apply) as (relay, consumer):
        outages = restarts(pg, fd)
        ids: list[str] = []
        docs = total // per_doc
        for d in range(docs):  # the service keeps writing: a write that fails is sent again
            events = [changed(f"obs-{d}-{k}") for k in range(per_doc)]
            ids += [e["data"]["id"] for e in events]
            retried(lambda d=d, events=events: db.observations.insert_one(new_document({"_id": f"doc-{d}"}, events)),
                    deadline)
            if d in (docs // 3, 2 * docs // 3):  # once the relay has sent some since the last outage
                wait_until(lambda: relay.published > (published_before or [0])[-1], deadline)
                published_before.append(relay.published)
                outages.pop(0)()
            time.sleep(0.005)
        while time.monotonic() < deadline and (consumer.handled < total or _count(db.effects) < total):
            time.sleep(0.2)

    effects = list(db.effects.find({}, {"n": 1}))
    state = {"effects": len(effects), "published": relay.published, "deliveries": len(deliveries),
             "pending": db.observations.count_documents({"outbox_pending": True}),
             "consumer": (consumer.handled, consumer.retried, consumer.dead_lettered, consumer.connections),
             "dlq": queue_depth(bus, bus.topology.dlq_name(READER))}
    assert 0 < published_before[0] < published_before[1] < total, f"the restarts must be mid-stream: {state}"
    assert {e["_id"] for e in effects} == set(ids), f"events lost: {state}"  # every event delivered
    assert sum(e["n"] for e in effects) == total  # and applied once
    assert state["pending"] == 0 and state["dlq"] == 0, state
    assert len(set(deliveries)) == total and relay.published >= total
    db.client.drop_database(db.name)


def _count(coll: Any) -> int:
    try:
        return coll.count_documents({})
    except PyMongoError:
        return -1


# ------------------------------------------------------------------------------- a consumer

CONSULT_RECORD = "ehr.consult-record"


@pytest.fixture()
def consult_bus(amqp_url: str, base_env: dict[str, str]) -> Iterator[Bus]:
    """The consult-record queue, and READER so that the records' own ``ehr.*`` events are routable."""
    yield from _bus(amqp_url, base_env, [CONSULT_RECORD, READER])


def roll_forward_as_the_relay_does(bus: Bus, db: Any, resource_types: list[str]) -> None:
    """A write cut off between its version's claim (the history document, the whole version) and its
    current document is rolled forward by the service's outbox relay (its ``HistoryGate``) once the
    claim is older than the grace period (``SEN_FHIR_ROLLFORWARD_GRACE``, 5 s): passes of that relay
    until nothing is pending, the grace 0 here (the stream is over: no writer is still at work)."""
    from sen_shared.fhir.store import relay_targets

    collections, gates = relay_targets(db, resource_types, grace=timedelta(0))
    with bus.publisher() as pub:
        relay = OutboxRelay(db, pub, collections, gates=gates)
        for _ in range(100):
            if relay.run_once() == 0 and not any(db[c].find_one({"outbox_pending": True}, {"_id": 1})
                                                 for c in collections):
                return


def _consult_data(n: int) -> dict[str, Any]:
    from sen_shared.bus import load_catalog

    with open(load_catalog().path.parent / "examples" / "teleconsult.consult.completed.json", encoding="utf-8") as f:
        data = json.load(f)["data"]
    data["serviceRequest"] = f"ServiceRequest/sr-{n}-{uuid.uuid4().hex[:6]}"
    data["patient"] = f"Patient/p-{n}"
    return data


def stream_across_restarts(pg: OwnPostgres, fd: OwnFerretDB, bus: Bus, purpose: str,
                           apply: Callable[[dict[str, Any], Any], Any], db: Any, events: list[dict[str, Any]],
                           pause: float = 0.05) -> None:
    """``events`` published one by one (every fifth twice: a redelivery) to ``purpose``'s consumer,
    which applies each with ``apply`` (the worker's handler) on ``db``, while FerretDB is killed and
    started again after a third of them and the PostgreSQL under it restarted after two thirds (each
    once the consumer has applied some since the last outage; events keep coming meanwhile). Returns
    once every event is applied; asserts the outages were mid-stream and nothing went to the DLQ (a
    handler that could not reach the database is not a failed event)."""
    handled: list[str] = []

    def handler(event: dict[str, Any], database: Any) -> None:
        apply(event, database)
        handled.append(event["id"])  # returned: the consumer acks now, the event is applied

    stop = threading.Event()
    consumer = EventConsumer(bus.url, bus.topology, purpose, handler, db, max_backoff=1.0)
    thread = threading.Thread(target=consumer.run, args=(stop,), daemon=True)
    thread.start()
    deadline = time.monotonic() + DEADLINE
    count = len(events)
    handled_at_outage: list[int] = []
    outage: threading.Thread | None = None
    try:
        assert consumer.ready.wait(30)
        outages = restarts(pg, fd)
        with bus.publisher() as pub:
            for n, event in enumerate(events):
                pub.publish(event)
                if n % 5 == 0:
                    pub.publish(event)  # a redelivery
                if n in (count // 3, 2 * count // 3):  # events keep coming while the database is away
                    if outage is not None:
                        outage.join(DEADLINE)
                    # once the consumer has applied some since the last outage
                    wait_until(lambda: len(handled) > (handled_at_outage or [0])[-1], deadline)
                    handled_at_outage.append(len(handled))
                    outage = threading.Thread(target=outages.pop(0), daemon=True)
                    outage.start()
                time.sleep(pause)
        outage.join(DEADLINE)
        wait_until(lambda: len(set(handled)) >= count, deadline, allow_errors=True)
    finally:
        stop.set()
        thread.join(20)

    dlq = bus.topology.dlq_name(purpose)
    state = {"handled": len(handled), "distinct": len(set(handled)), "retried": consumer.retried,
             "dead": consumer.dead_lettered, "dlq": queue_depth(bus, dlq),
             "dead_reasons": [m.headers.get("x-sen-reason") for m in drain(bus, dlq)[:3]]}  # there now: no wait
    assert 0 < handled_at_outage[0] < handled_at_outage[1] < count, "the restarts must be mid-stream"
    assert state["dead"] == 0 and state["dlq"] == 0, f"events dead-lettered: {state}"
    assert len(set(handled)) == count, state


def test_the_ehr_consult_record_consumer_stores_each_record_once_across_database_restarts(own_db,
                                                                                          consult_bus: Bus) -> None:
    """``teleconsult.consult.completed`` events (some twice) reach the EHR's consumer while its database is
    killed and restarted: each consult has one Encounter and one Composition, version 1 only, and nothing
    went to the DLQ (a handler that could not reach the database is not a failed event)."""
    from sen_ehr.domain.consult_record import record_ids
    from sen_ehr.worker import HANDLERS
    from sen_shared.fhir.store import Store

    pg, fd = own_db
    db = mongo.database(fd.url, f"sen_consults_{uuid.uuid4().hex[:6]}")
    events = [make_event("teleconsult.consult.completed", data, subject=data["serviceRequest"])
              for data in (_consult_data(n) for n in range(90))]
    stream_across_restarts(pg, fd, consult_bus, CONSULT_RECORD, HANDLERS[CONSULT_RECORD], db, events)
    roll_forward_as_the_relay_does(consult_bus, db, ["Encounter", "Composition"])
    store = Store(db, service="ehr")
    for event in events:
        enc_id, comp_id = record_ids(event["data"]["serviceRequest"])
        for rtype, rid in (("Encounter", enc_id), ("Composition", comp_id)):
            assert store.read_doc(rtype, rid)["res"]["meta"]["versionId"] == "1", (rtype, rid)
            assert db[f"{rtype}_history"].count_documents({"_id": f"{rid}/2"}) == 0  # never written twice
            # its create attributed once (audit.version_event_id), whichever delivery got through
            assert db["AuditEvent"].count_documents({"sp_entity": f"{rtype}/{rid}", "sp_subtype": "create"}) == 1
    assert db["Encounter"].count_documents({}) == len(events) and db["Composition"].count_documents({}) == len(events)
    db.client.drop_database(db.name)


CONSULT_CHARGE = "billing.consult-charge"


@pytest.fixture()
def charge_bus(amqp_url: str, base_env: dict[str, str]) -> Iterator[Bus]:
    """Billing's consult-charge queue (its ``billing.invoice.issued`` events stay in the outbox here)."""
    yield from _bus(amqp_url, base_env, [CONSULT_CHARGE])


def test_the_billing_consult_charge_consumer_bills_each_consult_once_across_database_restarts(
        own_db, charge_bus: Bus, base_env: dict[str, str], monkeypatch) -> None:
    """``teleconsult.consult.completed`` events (some twice) reach billing's consult-charge consumer
    while its database is killed and restarted: each consult has one ChargeItem (version 1) and one
    Invoice, issued (draft then issued: two versions, two links of its state chain, one
    ``billing.invoice.issued``), and nothing went to the DLQ. No repair job runs: the consumer holds an
    event until its database answers, and a redelivery finishes what a cut-off delivery left (a version
    claimed and not written: rolled forward by a retry past the store's grace period)."""
    from sen_billing import worker
    from sen_billing.domain import invoices, pricing
    from sen_billing.indexes import INDEXES
    from sen_shared.fhir.store import GRACE_ENV, Store

    pg, fd = own_db
    db = mongo.database(fd.url, f"sen_charges_{uuid.uuid4().hex[:6]}")
    mongo.ensure_indexes(db, INDEXES)
    pricing.load(db)
    for key, value in {**base_env, "MONGO_URL": fd.url, "SEN_DB": db.name}.items():
        monkeypatch.setenv(key, value)  # the worker's settings (the clinics' levels, the base salary)
    worker._settings.cache_clear()
    # a charge cut off between a version's claim and its current document is finished by a retry past
    # the store's grace period (Store.ensure_current): the queue's tiers (1 s, 5 s) outlast its 5 s;
    # here the test's tiers (100 ms, 200 ms) outlast 0.2 s
    monkeypatch.setenv(GRACE_ENV, "0.2")
    events = [make_event("teleconsult.consult.completed", data, subject=data["serviceRequest"])
              for data in (_consult_data(n) for n in range(45))]
    try:
        stream_across_restarts(pg, fd, charge_bus, CONSULT_CHARGE, worker.HANDLERS[CONSULT_CHARGE], db, events)
    finally:
        worker._settings.cache_clear()
    store = Store(db, service="billing", emit_events=False)
    for event in events:
        sr = event["data"]["serviceRequest"]
        charge_id = invoices.derived_id("consult", "charge", sr)
        invoice_id = invoices.derived_id("consult", "invoice", sr)
        state = {"consult": sr, "charge": db["ChargeItem_history"].find_one({"_id": f"{charge_id}/1"}, {"res": 0}),
                 "invoice": list(db["Invoice_history"].find({"id": invoice_id}, {"res": 0})),
                 "links": list(db[invoices.STATES].find({"k": invoice_id}, {"outbox": 0}))}
        charge = store.read_doc("ChargeItem", charge_id)
        assert charge["res"]["meta"]["versionId"] == "1", state
        assert db["ChargeItem_history"].count_documents({"id": charge_id}) == 1, state
        invoice = store.read_doc("Invoice", invoice_id)
        assert invoice["res"]["status"] == "issued" and invoice["res"]["meta"]["versionId"] == "2", state
        assert db["Invoice_history"].count_documents({"id": invoice_id}) == 2, state  # draft, issued
        assert [line["chargeItemReference"]["reference"] for line in invoice["res"]["lineItem"]] == [
            f"ChargeItem/{charge_id}"], state
        links = sorted(db[invoices.STATES].find({"k": invoice_id}), key=lambda link: link["_id"])
        assert [link["state"] for link in links] == ["draft", "issued"], state
        assert sum(len(link.get("outbox") or []) for link in links) == 1, state  # one billing.invoice.issued
    assert store.current("ChargeItem").count_documents({}) == len(events)
    assert store.current("Invoice").count_documents({}) == len(events)
    db.client.drop_database(db.name)


def _client(fd: OwnFerretDB, **options: Any) -> Any:
    """A client of ``fd`` with the product's client options and a shorter wait for a server (each held or
    cut-off attempt waits that long)."""
    from pymongo import MongoClient

    return MongoClient(fd.url, **{**mongo.CLIENT_OPTIONS, "serverSelectionTimeoutMS": 1000, **options})


def _put_back(fd: OwnFerretDB, client: Any, db: Any) -> None:
    """After a test of ``_client``: FerretDB started again if the test left it down, its database dropped."""
    if fd.proc is None or fd.proc.poll() is not None:
        fd.start()
    client.drop_database(db.name)
    client.close()


def test_a_consumer_stopped_while_its_database_is_away_leaves_the_events_unacked(own_db, consult_bus: Bus) -> None:
    """Events arrive while FerretDB is down: the consumer holds them unacked (no ack before the record is
    stored, no retry tier spent) and, stopped meanwhile, leaves them in the queue, not in the DLQ; a
    consumer started once the database is back stores each record once."""
    from sen_ehr.domain.consult_record import record_ids
    from sen_ehr.worker import HANDLERS

    _, fd = own_db
    client = _client(fd)
    db = client[f"sen_consults_{uuid.uuid4().hex[:6]}"]
    events = [make_event("teleconsult.consult.completed", data, subject=data["serviceRequest"])
              for data in (_consult_data(n) for n in range(3))]
    queue, dlq = consult_bus.topology.queue_name(CONSULT_RECORD), consult_bus.topology.dlq_name(CONSULT_RECORD)
    deadline = time.monotonic() + DEADLINE

    def consume(until: Callable[[], bool]) -> EventConsumer:
        stop = threading.Event()
        consumer = EventConsumer(consult_bus.url, consult_bus.topology, CONSULT_RECORD, HANDLERS[CONSULT_RECORD],
                                 db, max_backoff=0.5)
        thread = threading.Thread(target=consumer.run, args=(stop,), daemon=True)
        thread.start()
        try:
            assert consumer.ready.wait(30)
            wait_until(lambda: until(consumer), deadline, allow_errors=True)
        finally:
            stop.set()
            thread.join(20)
        return consumer

    try:
        db.command("ping")
        fd.kill()
        with consult_bus.publisher() as pub:
            for event in events:
                pub.publish(event)
        held = consume(lambda c: c.database_waits > 0)
        assert held.database_waits > 0 and held.handled == held.retried == held.dead_lettered == 0
        wait_until(lambda: queue_depth(consult_bus, queue) == len(events), deadline)
        assert queue_depth(consult_bus, queue) == len(events) and queue_depth(consult_bus, dlq) == 0
        fd.start()
        later = consume(lambda c: c.handled >= len(events))
        assert later.handled == len(events) and later.dead_lettered == 0
        for event in events:
            enc_id, comp_id = record_ids(event["data"]["serviceRequest"])
            assert db["Encounter"].count_documents({"_id": enc_id}) == 1
            assert db["Composition"].count_documents({"_id": comp_id}) == 1
    finally:
        _put_back(fd, client, db)


def wait_until(predicate: Callable[[], bool], deadline: float, allow_errors: bool = False) -> None:
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except PyMongoError:
            if not allow_errors:
                raise
        time.sleep(0.1)


# ------------------------------------------------------------------------------- the billing webhook

def test_the_billing_webhook_answers_503_while_the_database_restarts_and_stores_each_payment_once(
        own_db, base_env: dict[str, str], tmp_path, monkeypatch) -> None:
    """A bank sends two transfers for each of 20 invoices, retrying each call until it is answered 200;
    the database goes away twice meanwhile. Every call is answered 200 or 503 (problem JSON, a
    Retry-After), never 500; afterwards each transfer is one payment and each invoice is settled once,
    its receipt for the whole amount."""
    from sen_billing.domain import invoice_port, receipts, webhooks
    from sen_billing.indexes import INDEXES
    from sen_shared.fhir.store import GRACE_ENV, Store

    from tests.billing_support import make_invoice
    from tests.support import web_process

    pg, fd = own_db
    name = f"sen_billing_{uuid.uuid4().hex[:6]}"
    db = mongo.database(fd.url, name)
    mongo.ensure_indexes(db, INDEXES)
    secret = "whsec_" + "c2VuLXJlc3RhcnQtdGVzdC1zZWNyZXQ="
    invoices = [make_invoice(db, 100_000) for _ in range(20)]
    calls = [(f"tx-{iid}-{half}", 50_000, f"thanh toan {code}") for iid, code in invoices for half in (1, 2)]
    env = {**base_env, "MONGO_URL": fd.url, "SEN_DB": name, "SEN_WEBHOOK_SECRET": secret}
    answers: list[tuple[int, str, str]] = []  # (status, content type, detail)
    done = threading.Event()
    deadline = time.monotonic() + DEADLINE

    def bank(url: str) -> None:
        with httpx.Client(base_url=url, timeout=30) as client:
            for txid, amount, note in calls:
                while time.monotonic() < deadline:
                    body = json.dumps({"type": "transfer.received", "data": {
                        "id": txid, "amount": amount, "description": note, "account": "0011000000001"}}).encode()
                    ts, msg = str(int(time.time())), f"msg_{txid}"
                    r = client.post("/webhooks/standard", content=body, headers={
                        "webhook-id": msg, "webhook-timestamp": ts, "content-type": "application/json",
                        "webhook-signature": webhooks.standard_signature(msg, ts, body, secret)})
                    answers.append((r.status_code, r.headers.get("content-type", ""), r.text[:300]))
                    if r.status_code == 200:
                        break
                    time.sleep(0.1)  # the bank's retry
                time.sleep(0.02)
        done.set()

    with web_process("billing", env, tmp_path / "billing.log", WEB_CONCURRENCY="1") as url:
        sender = threading.Thread(target=bank, args=(url,), daemon=True)
        sender.start()
        for outage, at in zip(restarts(pg, fd), (len(calls) // 3, 2 * len(calls) // 3), strict=True):
            wait_until(lambda at=at: sum(1 for a in answers if a[0] == 200) >= at, deadline)
            outage()
        sender.join(DEADLINE)
        assert done.is_set(), "the bank did not get through"

    # a settlement cut off between its claim and its receipt is the billing worker's periodic job's
    # (every 30 s, for claims over a minute old): run it now, as it will run
    # (over a minute old, its Invoice's balanced version claimed by the cut-off settler is past the
    # store's grace period: the repair rolls it forward; 0 here stands in for that minute)
    unfinished = sorted(d["_id"] for d in db["invoice_balanced"].find({"done": False})
                        if db["receipts"].find_one({"_id": d["_id"]}, {"_id": 1}) is None)
    monkeypatch.setenv(GRACE_ENV, "0")
    repaired = receipts.repair_settlements(db, older_than=timedelta(0))
    statuses = [a[0] for a in answers]
    assert set(statuses) <= {200, 503}, [a for a in answers if a[0] not in (200, 503)][:3]
    assert statuses.count(200) == len(calls)
    for status, ctype, detail in answers:
        if status == 503:
            assert ctype.startswith("application/problem+json"), (ctype, detail)
    store = Store(db, service="billing")
    for iid, _ in invoices:
        assert db["payments"].count_documents({"invoice": iid}) == 2, iid  # each transfer once
        assert invoice_port.paid_total(db, iid) == 100_000
        state = {"invoice": iid, "unfinished": unfinished, "repaired": repaired,
                 "balanced": db["invoice_balanced"].find_one({"_id": iid}),
                 "states": list(db["invoice_states"].find({"k": iid})), "503s": statuses.count(503)}
        assert store.read_doc("Invoice", iid)["res"]["status"] == "balanced", state
        assert db["invoice_balanced"].count_documents({"_id": iid}) == 1
        assert db["receipts"].count_documents({"invoice": iid}) == 1
        assert db["receipts"].find_one({"invoice": iid})["paid"] == 100_000
    db.client.drop_database(name)


class _KillAfterPaymentInsert(monitoring.CommandListener):
    """A pymongo command listener that kills FerretDB as soon as a payment's insert is answered: the
    database goes away between the payment and its invoice's settlement, every time."""

    def __init__(self, fd: OwnFerretDB) -> None:
        self.fd, self.armed, self.fired, self._ids = fd, False, False, set()

    def started(self, event: Any) -> None:
        if self.armed and event.command_name == "insert" and event.command.get("insert") == "payments":
            self._ids.add(event.request_id)

    def succeeded(self, event: Any) -> None:
        if self.armed and event.request_id in self._ids:
            self.armed, self.fired = False, True
            self.fd.kill()

    def failed(self, event: Any) -> None:
        pass


@pytest.mark.parametrize("channel", ["transfer", "cash"])
def test_a_payment_whose_settlement_the_outage_cut_off_is_settled_by_the_retry(own_db, channel: str) -> None:
    """The payment is stored, then the database goes away before the invoice is settled (the call is
    answered 503); the retry of the same call (the bank's; the cashier's, with the same transaction id)
    finds the payment and finishes the settlement: the invoice is balanced once, with its receipt, and
    the money is still one payment."""
    from sen_billing.domain import invoice_port, payments
    from sen_billing.domain.webhooks import Transfer
    from sen_billing.indexes import INDEXES
    from sen_shared.auth import Principal
    from sen_shared.fhir.store import Store

    from tests.billing_support import make_invoice

    _, fd = own_db
    listener = _KillAfterPaymentInsert(fd)
    client = _client(fd, event_listeners=[listener])
    db = client[f"sen_billing_{uuid.uuid4().hex[:6]}"]
    try:
        mongo.ensure_indexes(db, INDEXES)
        iid, code = make_invoice(db, 100_000)
        transfer = Transfer("standard", f"tx-{uuid.uuid4().hex[:8]}", 100_000, f"thanh toan {code}")
        cashier = Principal(sub="cashier-an", roles=frozenset({"cashier"}), facility="org-a")

        def call() -> payments.Recorded:
            if channel == "cash":  # POST /payments/cash with its transactionId
                return payments.record_cash(db, iid, 100_000, cashier, "shift-1", transfer.transaction_id)
            # what POST /webhooks/standard does with a verified call
            inbox, seen = payments.store_call(db, "standard", b"{}", {}, [transfer])
            pid = payments.payment_id(transfer.provider, transfer.transaction_id)
            return payments.record_transfer(db, transfer, inbox, seen=pid in seen)

        listener.armed = True
        with pytest.raises(PyMongoError) as cut:
            call()
        assert listener.fired and mongo.unavailable(cut.value)  # the web answers it 503: the bank retries
        fd.start()
        retry = call()
        assert not retry.created  # the same payment, not a second one
        assert db["payments"].count_documents({"invoice": iid}) == 1
        assert invoice_port.paid_total(db, iid) == 100_000
        assert Store(db, service="billing").read_doc("Invoice", iid)["res"]["status"] == "balanced"
        assert db["invoice_balanced"].count_documents({"_id": iid}) == 1
        assert db["receipts"].count_documents({"invoice": iid}) == 1
    finally:
        _put_back(fd, client, db)


def test_a_cut_off_partial_payments_retry_writes_nothing_until_the_payments_reach_what_is_owed(
        mongo_client, monkeypatch) -> None:
    """Calls cut off between their payment's insert and the invoice's part (the step that died raises
    as the gone database did), then the provider's retries. A partial payment's retry (10.000 ₫ of
    30.000 ₫) writes nothing: the amount owed was kept in the payment, so it reads the invoice's payments
    and not the Invoice (its commands: the bench's ``ROUND_TRIPS``). A second payment cut off too brings
    the sum to what is owed with no settlement: the retry of the FIRST (partial) one settles the invoice,
    once. A payment placed on an issued invoice and inserted after a cancel had swept its payments gets
    its refund task from its retry (the cancel's mark among the payments)."""
    from pymongo.errors import AutoReconnect
    from sen_billing.domain import invoice_port, invoices, payments
    from sen_billing.domain.webhooks import Transfer

    from tests.billing_support import make_invoice, scratch_db

    def cut(*_args: Any, **_kw: Any) -> None:
        raise AutoReconnect("the database went away")  # what the first call met right after the insert

    def call(db: Any, transfer: Transfer, *, cut_off: bool = False) -> payments.Recorded:
        inbox, seen = payments.store_call(db, transfer.provider, b"{}", {}, [transfer])
        pid = payments.payment_id(transfer.provider, transfer.transaction_id)
        with monkeypatch.context() as m:
            if cut_off:
                m.setattr(payments, "after_payment", cut)
            return payments.record_transfer(db, transfer, inbox, seen=pid in seen)

    with scratch_db(mongo_client, "cutpart") as db:
        iid, code = make_invoice(db, 30_000)
        first = Transfer("standard", f"tx-{uuid.uuid4().hex[:8]}", 10_000, f"thanh toan {code}")
        with pytest.raises(AutoReconnect):
            call(db, first, cut_off=True)
        stored = db["payments"].find_one({"invoice": iid})
        assert stored[payments.OWED] == 30_000  # what the call knew: the Invoice was read before the insert
        assert not call(db, first).created
        assert db["invoice_balanced"].count_documents({}) == 0 and db["refund_tasks"].count_documents({}) == 0
        assert db["receipts"].count_documents({}) == 0

        second = Transfer("standard", f"tx-{uuid.uuid4().hex[:8]}", 20_000, f"thanh toan {code}")
        with pytest.raises(AutoReconnect):
            call(db, second, cut_off=True)
        assert db["invoice_balanced"].count_documents({"_id": iid}) == 0  # paid in full, nothing settled
        assert not call(db, first).created  # the partial one's retry: the sum reaches what is owed
        assert db["invoice_balanced"].count_documents({"_id": iid}) == 1
        assert sorted(db["invoice_balanced"].find_one({"_id": iid})["payments"]) == sorted(
            payments.payment_id("standard", t.transaction_id) for t in (first, second))
        assert not call(db, second).created  # listed by the settlement now: nothing more
        assert db["receipts"].count_documents({"invoice": iid}) == 1
        assert invoice_port.paid_total(db, iid) == 30_000

        # placed while its invoice was issued, inserted after a cancel swept the invoice's payments
        iid2, code2 = make_invoice(db, 30_000)
        late = Transfer("standard", f"tx-{uuid.uuid4().hex[:8]}", 10_000, f"thanh toan {code2}")
        seen_as = invoice_port.find_by_note(db, late.description)
        assert seen_as is not None and seen_as.status == "issued"
        invoices.cancel(db, iid2, "nhập nhầm")
        with monkeypatch.context() as m:
            m.setattr(invoice_port, "find_by_note", lambda _db, _note: seen_as)
            with pytest.raises(AutoReconnect):
                call(db, late, cut_off=True)
        pid = payments.payment_id("standard", late.transaction_id)
        assert db["payments"].find_one({"_id": pid})["invoice"] == iid2  # counted toward it, as placed
        assert db["refund_tasks"].count_documents({"_id": pid}) == 0  # the cancel's sweep came before it
        assert not call(db, late).created
        assert db["refund_tasks"].find_one({"_id": pid})["reason"] == "invoice-cancelled"


@pytest.mark.parametrize(("rtype", "version"), [("ChargeItem", 1), ("Invoice", 1), ("Invoice", 2)])
def test_a_consult_charge_cut_off_after_a_version_claim_is_finished_by_the_redelivery(
        mongo_client, base_env: dict[str, str], monkeypatch, rtype: str, version: int) -> None:
    """The consult's charge cut off right after ``rtype``'s version ``version`` was claimed (its history
    document), before its current document (the step after the claim raises as the gone database did).
    Delivered again at once, within the store's grace period (the claim's writer may still be at it):
    a cut-off version 1 (a create) is made current by the redelivery's create itself (``Store.create_once``
    inserts the same document under the same id: safe with its writer still at it) and the charge is
    finished; a cut-off version 2 fails with a 409 to retry, and its retry past the grace period (the
    consult-charge queue's tiers, 1 s then 5 s, outlast the 5 s grace; 0 here) rolls the version forward
    and finishes the charge: the ChargeItem readable, the Invoice issued, each version once. Before, the redelivery
    acked with the ChargeItem never current (read: not known) or the Invoice current as a draft, and
    billing's relay rolls no version forward (its history documents carry no events)."""
    from pymongo.errors import AutoReconnect
    from sen_billing import worker
    from sen_billing.domain import invoices, pricing
    from sen_shared.fhir import store as fhir_store
    from sen_shared.fhir.outcome import FhirError
    from sen_shared.fhir.store import GRACE_ENV, Store

    from tests.billing_support import scratch_db

    with scratch_db(mongo_client, "cutcharge") as db:
        pricing.load(db)
        for key, value in {**base_env, "SEN_DB": db.name}.items():
            monkeypatch.setenv(key, value)
        worker._settings.cache_clear()
        data = _consult_data(0)
        event = make_event("teleconsult.consult.completed", data, subject=data["serviceRequest"])
        charge_id = invoices.derived_id("consult", "charge", data["serviceRequest"])
        invoice_id = invoices.derived_id("consult", "invoice", data["serviceRequest"])

        def cut(w: Any) -> None:
            if w.resource_type == rtype and int(w.history["v"]) == version:
                raise AutoReconnect("the database went away")

        with monkeypatch.context() as m:
            m.setattr(fhir_store, "after_claim", cut)
            with pytest.raises(AutoReconnect):
                worker.consult_charge(event, db)
        assert db[f"{rtype}_history"].count_documents({"v": version}) == 1
        if version == 1:
            worker.consult_charge(event, db)  # the broker delivers it again, at once: the create lands it
        else:
            with pytest.raises(FhirError) as again:
                worker.consult_charge(event, db)  # the broker delivers it again, at once
            assert again.value.status == 409
            monkeypatch.setenv(GRACE_ENV, "0")
            worker.consult_charge(event, db)  # its retry, past the grace period
        store = Store(db, service="billing", emit_events=False)
        assert store.read_doc("ChargeItem", charge_id)["res"]["meta"]["versionId"] == "1"
        invoice = store.read_doc("Invoice", invoice_id)["res"]
        assert invoice["status"] == "issued" and invoice["meta"]["versionId"] == "2"
        assert db["ChargeItem_history"].count_documents({}) == 1 and db["Invoice_history"].count_documents({}) == 2
        worker._settings.cache_clear()
