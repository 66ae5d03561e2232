"""The FHIR store's claims against the real FerretDB and RabbitMQ: nothing acknowledged is lost.

A version is claimed by inserting its history document; only the winner writes the current
document; a version's events ride in its history document and the relay publishes each once;
a writer killed between its claim and its current write is rolled forward (store.py).
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from sen_shared.bus import OutboxRelay
from sen_shared.fhir import store as st
from sen_shared.fhir.outcome import FhirError

from tests.integration.test_bus import Bus, _bus, drain, take
from tests.support import admin_headers, app_client

pytestmark = pytest.mark.integration

READER = "portal.reporting"  # binds "#": sees every event
GRACE = timedelta(seconds=0.3)


@pytest.fixture()
def bus(amqp_url: str, base_env: dict[str, str]) -> Iterator[Bus]:
    yield from _bus(amqp_url, base_env, [READER])


@pytest.fixture()
def ehr(base_env: dict[str, str], run_id: str, mongo_client: Any) -> Iterator[tuple[Any, Any, Any]]:
    """(test client, the bare FHIR engine, database) of a fresh ehr app."""
    from sen_shared.fhir.rest import FhirServer
    from sen_shared.runtime import EXTENSION

    name = f"sen_t{run_id}_claims_{uuid.uuid4().hex[:6]}"
    with app_client("ehr", base_env, name, mongo_client) as (client, app):
        db = mongo_client[name]
        server = FhirServer(app.app.extensions[EXTENSION].extras["fhir"].config, db=lambda: db)
        yield client, server, db


class Relaying:
    """The outbox relay of the Patient history at full speed (no pause between passes) in a thread."""

    def __init__(self, db: Any, bus: Bus, types: tuple[str, ...] = ("Patient",)) -> None:
        collections, gates = st.relay_targets(db, types, grace=GRACE)
        self.db, self.types = db, types
        self.pub = bus.publisher()
        self.relay = OutboxRelay(db, self.pub, collections, gates=gates, poll_interval=0.01)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.relay.run_forever, args=(self.stop,), daemon=True)

    def __enter__(self) -> Relaying:
        self.thread.start()
        return self

    def drain(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(self.db[t + st.HISTORY_SUFFIX].count_documents({"outbox_pending": True}) == 0
                   for t in self.types):
                return
            time.sleep(0.1)
        raise AssertionError("the relay did not catch up")

    def __exit__(self, *exc: Any) -> None:
        self.stop.set()
        self.thread.join(20)
        self.pub.close()


def published(bus: Bus, expected: int) -> Counter[tuple[str, int]]:
    """(resource id, version) of every event on the reader queue: ``expected`` of them, then nothing. Called once the
    relay has stopped (its ``Relaying`` left: thread joined, publisher closed), so every event it sent is in the queue
    already (the broker routes a channel's messages before its close): what is left after the ``expected`` is read as
    it is (a duplicate would be there), where one more was waited for a whole second."""
    msgs = take(bus, bus.topology.queue_name(READER), expected, timeout=60)
    msgs += drain(bus, bus.topology.queue_name(READER))  # one more would be a duplicate
    return Counter((json.loads(m.body)["data"]["id"], int(json.loads(m.body)["data"]["versionId"])) for m in msgs)


def history_versions(db: Any, rid: str) -> list[int]:
    return sorted(int(d["v"]) for d in db.Patient_history.find({"id": rid}, {"v": 1}))


def patient(rid: str | None = None, mark: str = "") -> dict[str, Any]:
    res: dict[str, Any] = {"resourceType": "Patient", "name": [{"family": "Nguyễn", "given": [mark or "Văn"]}]}
    if rid:
        res["id"] = rid
    return res


def test_twenty_writers_with_the_same_if_match_one_wins(ehr: Any) -> None:
    _, _, db = ehr
    rid = st.Store(db, service="ehr").create(patient()).rid
    barrier = threading.Barrier(20)
    outcomes: dict[int, int] = {}

    def write(i: int) -> None:
        store = st.Store(db, service="ehr")
        barrier.wait()
        try:
            store.update(patient(rid, f"writer-{i}"), rid, if_match=1)
            outcomes[i] = 200
        except FhirError as err:
            outcomes[i] = err.status

    threads = [threading.Thread(target=write, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(outcomes) == 20
    winners = [i for i, status in outcomes.items() if status == 200]
    assert len(winners) == 1, outcomes
    assert set(outcomes.values()) <= {200, 409, 412}
    assert history_versions(db, rid) == [1, 2]
    v2 = st.unpack(db.Patient_history.find_one({"_id": f"{rid}/2"}))
    assert v2["res"]["name"][0]["given"] == [f"writer-{winners[0]}"]
    current = st.Store(db).read_doc("Patient", rid)
    assert current["v"] == 2 and current["res"]["name"][0]["given"] == [f"writer-{winners[0]}"]
    assert "outbox" not in db.Patient.find_one({"_id": rid})  # events ride in the history only


def test_a_thousand_conditional_updates_while_the_relay_runs(ehr: Any, bus: Bus, dev_key: Any) -> None:
    """Sequential If-Match updates over HTTP, the relay polling without pause: every update is
    acknowledged, every version is in the history, every version's event is published once."""
    client, _, db = ehr
    headers = admin_headers(dev_key)
    total = 1000
    with Relaying(db, bus) as relaying:
        r = client.post("/fhir/Patient", content=json.dumps(patient()), headers=headers)
        assert r.status_code == 201, r.text
        rid, etag = r.json()["id"], r.headers["ETag"]
        statuses: Counter[int] = Counter()
        for i in range(total):
            r = client.put(f"/fhir/Patient/{rid}", content=json.dumps(patient(rid, f"u{i}")),
                           headers={**headers, "If-Match": etag})
            statuses[r.status_code] += 1
            assert r.status_code == 200, (i, r.text)
            etag = r.headers["ETag"]
        relaying.drain()
    assert statuses == {200: total}
    assert etag == f'W/"{total + 1}"'
    assert history_versions(db, rid) == list(range(1, total + 2))
    assert client.get(f"/fhir/Patient/{rid}", headers=headers).json()["name"][0]["given"] == [f"u{total - 1}"]
    events = published(bus, total + 1)
    assert events == Counter({(rid, v): 1 for v in range(1, total + 2)})


def test_a_transaction_racing_single_updates_is_all_or_nothing(ehr: Any, bus: Bus) -> None:
    from sen_shared.fhir.http import FhirRequest

    _, server, db = ehr
    store = st.Store(db, service="ehr")
    ids = [store.create(patient()).rid for _ in range(5)]
    acked: list[tuple[str, int, str]] = []  # (id, version, mark) of every acknowledged write
    txn_outcome: dict[str, int] = {}
    lock = threading.Lock()
    stop = threading.Event()
    lost_in_a_row = [0]  # transactions lost before the first got through (the singles read it: one int)

    def transactions() -> None:
        # 25 transactions, then more until one got through (on a loaded machine the two writers can
        # win 25 in a row), bounded: the race itself, not the count, is under test
        for i in range(200):
            if i >= 25 and 200 in txn_outcome.values():
                break
            mark = f"txn-{i}"
            bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
                {"resource": patient(rid, mark), "request": {"method": "PUT", "url": f"Patient/{rid}"}}
                for rid in ids]}
            try:
                resp = server.bundle(FhirRequest("POST", body=bundle, base="http://test/fhir"))
                txn_outcome[mark] = resp.status
                lost_in_a_row[0] = 0 if resp.status == 200 else lost_in_a_row[0]
                with lock:
                    for rid, e in zip(ids, resp.body["entry"], strict=True):
                        acked.append((rid, int(e["response"]["etag"][3:-1]), mark))
            except FhirError as err:
                txn_outcome[mark] = err.status
                if 200 not in txn_outcome.values():
                    lost_in_a_row[0] += 1
        stop.set()

    def singles(t: int) -> None:
        s = st.Store(db, service="ehr")
        j = 0
        while not stop.is_set():
            rid, mark = random.choice(ids), f"single-{t}-{j}"
            j += 1
            try:
                w = s.update(patient(rid, mark), rid)
                with lock:
                    acked.append((rid, w.version, mark))
            except FhirError as err:
                assert err.status == 409, err
            # leave the transactions a chance: unpaused, two writers starve them. While none has got through, the
            # pause grows with the transactions lost (0.02 s, then 0.02 s more every 25): on a slow machine a
            # transaction of five claims lasted through a single write every time, 200 lost in a row (ci-local,
            # session 31); the singles still race every transaction, only less often
            time.sleep(0.02 * (1 + lost_in_a_row[0] // 25))

    with Relaying(db, bus) as relaying:
        threads = [threading.Thread(target=transactions)] + [threading.Thread(target=singles, args=(t,))
                                                              for t in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(300)
        relaying.drain()

    assert set(txn_outcome.values()) <= {200, 409} and len(txn_outcome) >= 25
    assert 200 in txn_outcome.values()  # some transactions got through the race
    marks: dict[tuple[str, int], str] = {}
    for doc in db.Patient_history.find({}, {"id": 1, "v": 1, "res": 1}):
        marks[(doc["id"], int(doc["v"]))] = json.loads(doc["res"])["name"][0]["given"][0]
    for rid, version, mark in acked:  # no acknowledged version lost or overwritten
        assert marks[(rid, version)] == mark
    for mark, status in txn_outcome.items():  # all or nothing
        written = [k for k, m in marks.items() if m == mark]
        assert len(written) == (len(ids) if status == 200 else 0), (mark, status, written)
    for rid in ids:  # every claimed version applied, the current document at the newest
        versions = history_versions(db, rid)
        assert versions == list(range(1, len(versions) + 1))
        assert st.Store(db).read_doc("Patient", rid)["v"] == versions[-1]
    assert db["_journal"].count_documents({}) == 0
    assert published(bus, len(marks)) == Counter({k: 1 for k in marks})


def test_the_relay_never_publishes_the_claim_of_a_transaction_rolled_back_after_it_was_read(ehr: Any) -> None:
    """The relay reads pending claims, then looks their journals up. A transaction that lost a
    race in between deletes its claims and then its journal: its claim, read before and judged
    after, must not go out (it was, 1 CI run in 4, in the race test above); a committed
    transaction's claim (journal gone, claim kept) must."""
    from datetime import UTC, datetime

    from sen_shared.fhir import bundle

    _, _, db = ehr
    store = st.Store(db, service="ehr")
    rolled, committed = store.create(patient()).rid, store.create(patient()).rid
    gate = st.relay_targets(db, ("Patient",), grace=GRACE)[1]["Patient_history"]
    for rid, journal in ((rolled, "j-rolled"), (committed, "j-committed")):
        db[st.JOURNAL_COLLECTION].insert_one({"_id": journal, "state": "applying", "at": datetime.now(UTC),
                                              "ops": [{"t": "Patient", "id": rid, "prev": 1, "v": 2, "ev": []}]})
        db.Patient_history.insert_one({"_id": f"{rid}/2", "id": rid, "v": 2, st.TXN: journal,
                                       "at": datetime.now(UTC), "outbox_pending": True, "outbox": []})
    read = list(db.Patient_history.find({"_id": {"$in": [f"{rolled}/2", f"{committed}/2"]}}))
    assert gate(list(read)) == []  # both journals open: both wait
    assert bundle.rollback(store, db[st.JOURNAL_COLLECTION].find_one({"_id": "j-rolled"})) == 1
    db[st.JOURNAL_COLLECTION].delete_one({"_id": "j-committed"})  # committed: its journal goes last
    assert [d["_id"] for d in gate(list(read))] == [f"{committed}/2"]


CRASHING_WRITER = """
import json, os, sys
from pymongo import MongoClient
from sen_shared.fhir import store as st

db = MongoClient(os.environ["MONGO_URL"])[sys.argv[1]]
st.after_claim = lambda w: os._exit(9)  # killed between the claim and the current write
st.Store(db, service="ehr").update(json.loads(sys.argv[3]), sys.argv[2], if_match=int(sys.argv[4]))
"""


def crash_writer(mongo_url: str, db: Any, rid: str, resource: dict[str, Any], if_match: int) -> None:
    proc = subprocess.run([sys.executable, "-c", CRASHING_WRITER, db.name, rid, json.dumps(resource), str(if_match)],
                          env={**os.environ, "MONGO_URL": mongo_url}, capture_output=True, timeout=120)
    assert proc.returncode == 9, proc.stderr.decode()[-2000:]


def test_a_writer_killed_after_its_claim_is_rolled_forward_once(ehr: Any, bus: Bus, dev_key: Any,
                                                                mongo_url: str, monkeypatch: Any) -> None:
    client, _, db = ehr
    monkeypatch.setenv(st.GRACE_ENV, str(GRACE.total_seconds()))
    headers = admin_headers(dev_key)
    rid = client.post("/fhir/Patient", content=json.dumps(patient()), headers=headers).json()["id"]

    # 1. killed after claiming version 2: the claim holds the version and its event
    crash_writer(mongo_url, db, rid, patient(rid, "crashed-2"), 1)
    assert history_versions(db, rid) == [1, 2]
    assert db.Patient.find_one({"_id": rid})["v"] == 1
    assert db.Patient_history.find_one({"_id": f"{rid}/2"})["outbox_pending"] is True
    time.sleep(GRACE.total_seconds() * 2)
    with Relaying(db, bus) as relaying:  # the relay rolls it forward before publishing its event
        relaying.drain()
        got = client.get(f"/fhir/Patient/{rid}", headers=headers)
        assert got.headers["ETag"] == 'W/"2"' and got.json()["name"][0]["given"] == ["crashed-2"]

        # 2. killed after claiming version 3; the next writer loses against that stale claim,
        # rolls it forward, and its retry becomes version 4
        crash_writer(mongo_url, db, rid, patient(rid, "crashed-3"), 2)
        time.sleep(GRACE.total_seconds() * 2)
        r = client.put(f"/fhir/Patient/{rid}", content=json.dumps(patient(rid, "next")),
                       headers={**headers, "If-Match": 'W/"2"'})
        assert r.status_code == 412, r.text  # the resource is at version 3 now
        got = client.get(f"/fhir/Patient/{rid}", headers=headers)
        assert got.headers["ETag"] == 'W/"3"' and got.json()["name"][0]["given"] == ["crashed-3"]
        r = client.put(f"/fhir/Patient/{rid}", content=json.dumps(patient(rid, "next")),
                       headers={**headers, "If-Match": got.headers["ETag"]})
        assert r.status_code == 200 and r.headers["ETag"] == 'W/"4"', r.text
        relaying.drain()
    assert history_versions(db, rid) == [1, 2, 3, 4]
    assert db[st.ROLLFORWARD_COLLECTION].count_documents({}) == 2  # one roll-forward claim per version
    assert published(bus, 4) == Counter({(rid, v): 1 for v in (1, 2, 3, 4)})


def test_conditional_creates_with_the_same_criteria_make_one_resource(ehr: Any) -> None:
    from sen_shared.fhir.http import FhirRequest

    _, server, db = ehr
    ident = f"cccd-{uuid.uuid4().hex[:8]}"
    barrier = threading.Barrier(10)
    statuses: list[int] = []

    def create() -> None:
        body = {**patient(), "identifier": [{"system": "http://sen.vn/cccd", "value": ident}]}
        req = FhirRequest("POST", resource_type="Patient", body=body, base="http://test/fhir",
                          headers={"if-none-exist": f"identifier=http://sen.vn/cccd|{ident}"})
        barrier.wait()
        try:
            statuses.append(server.create(req).status)
        except FhirError as err:
            statuses.append(err.status)

    threads = [threading.Thread(target=create) for _ in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert statuses.count(201) == 1 and set(statuses) <= {200, 201, 409}, statuses
    assert db.Patient.count_documents({}) == 1


def test_a_conditional_create_whose_rival_lands_after_its_search_does_not_create_again(ehr: Any) -> None:
    """The claim on the criteria is read, then the search finds nothing, then the rival's resource
    lands: the empty search says nothing about it, so the criteria stay busy (a 409, retried) and
    no second resource is made. Before, the rival's resource was looked for only after the search,
    found, and the criteria claimed again: two racing creates of one form made two files."""
    _, server, db = ehr
    store = server.store()
    ident = f"cccd-{uuid.uuid4().hex[:8]}"
    params = [("identifier", f"http://sen.vn/cccd|{ident}")]
    key, _ = store.condition_link("Patient", params)
    rival = st.new_id()
    assert store.claim_condition(key, None, rival)  # the rival claimed the criteria, still writing
    key, link = store.condition_link("Patient", params)  # read before the search
    assert server.match_ids("Patient", params) == []
    store.create({**patient(), "identifier": [{"system": "http://sen.vn/cccd", "value": ident}]}, rival)
    assert store.condition_busy("Patient", link)  # it landed after the search: retry, do not create
    key, link = store.condition_link("Patient", params)  # the retry
    assert not store.condition_busy("Patient", link)
    assert server.match_ids("Patient", params) == [rival]


def test_conditional_creates_retried_on_409_make_one_resource_per_criteria(ehr: Any) -> None:
    """As a client does (the portal's files): every 409 is retried after a moment. Over 15 rounds
    of 6 racing creates each, every criteria ends with exactly one resource, and every create
    answers it (201 once, 200 for the rest)."""
    from sen_shared.fhir.http import FhirRequest

    _, server, db = ehr
    for _round in range(15):
        ident = f"cccd-{uuid.uuid4().hex[:8]}"
        barrier = threading.Barrier(6)
        answers: list[tuple[int, str]] = []

        def create() -> None:
            body = {**patient(), "identifier": [{"system": "http://sen.vn/cccd", "value": ident}]}
            barrier.wait()
            for _attempt in range(200):
                req = FhirRequest("POST", resource_type="Patient", body=dict(body), base="http://test/fhir",
                                  headers={"if-none-exist": f"identifier=http://sen.vn/cccd|{ident}"})
                try:
                    resp = server.create(req)
                except FhirError as err:
                    assert err.status == 409, err
                    time.sleep(random.uniform(0, 0.02))
                    continue
                answers.append((resp.status, resp.body["id"]))
                return

        threads = [threading.Thread(target=create) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert len(server.match_ids("Patient", [("identifier", f"http://sen.vn/cccd|{ident}")], limit=5)) == 1
        assert sorted(s for s, _ in answers) == [200] * 5 + [201], answers
        assert len({rid for _, rid in answers}) == 1, answers


def test_events_left_in_current_documents_by_an_earlier_version_move_to_the_history(ehr: Any, bus: Bus) -> None:
    from sen_shared.bus.outbox import new_document
    from sen_shared.fhir.events import resource_event

    _, _, db = ehr
    store = st.Store(db, service="ehr")
    rid = store.create(patient()).rid
    db.Patient_history.update_one({"_id": f"{rid}/1"}, {"$unset": {"outbox": "", "outbox_pending": "", "b2": ""}})
    old = new_document({}, [resource_event("ehr", "Patient", "created", rid, 1, st.now())])
    db.Patient.update_one({"_id": rid}, {"$set": old})  # the layout before the claims
    st.backfill(db, ["Patient"])
    st.backfill(db, ["Patient"])  # a rerun moves nothing twice
    hist = db.Patient_history.find_one({"_id": f"{rid}/1"})
    assert hist["outbox_pending"] is True and len(hist["outbox"]) == 1
    with Relaying(db, bus) as relaying:
        relaying.drain()
    assert published(bus, 1) == Counter({(rid, 1): 1})


def test_the_relay_recovers_a_transaction_left_open_by_a_dead_process(ehr: Any) -> None:
    from datetime import UTC, datetime

    _, _, db = ehr
    store = st.Store(db, service="ehr")
    rid = store.create(patient()).rid
    w = store.prepare_update(patient(rid, "in-a-dead-transaction"), rid, store.head("Patient", rid))
    journal = "dead-" + uuid.uuid4().hex[:8]
    db.Patient_history.insert_one({**w.history, st.TXN: journal, "at": datetime.now(UTC)})  # all claims in
    db["_journal"].insert_one({"_id": journal, "state": "applying", "at": datetime.now(UTC) - timedelta(minutes=5),
                               "ops": [{"t": "Patient", "id": rid, "prev": 1, "v": 2,
                                        "ev": [e["id"] for e in w.events]}]})
    held = list(db.Patient_history.find({st.TXN: journal}, {"res": 0}))
    assert [d["_id"] for d in st.HistoryGate(db, "Patient")(held)] == [f"{rid}/2"]  # recovered, then ready
    assert db["_journal"].count_documents({"_id": journal}) == 0
    doc = store.read_doc("Patient", rid)
    assert doc["v"] == 2 and doc["res"]["name"][0]["given"] == ["in-a-dead-transaction"]
