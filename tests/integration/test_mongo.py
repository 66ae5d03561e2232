"""MongoDB access on the real server: lazy, fork-safe clients and idempotent index creation."""

from __future__ import annotations

import os

import pytest
from sen_shared import mongo

pytestmark = pytest.mark.integration


def test_ensure_indexes_is_idempotent(fresh_db):
    from sen_ehr.indexes import INDEXES

    first = mongo.ensure_indexes(fresh_db, INDEXES)
    assert first == len(INDEXES)
    # again, as every process start and the Kubernetes Job do: nothing new, no error
    assert mongo.ensure_indexes(fresh_db, INDEXES) == 0
    assert mongo.ensure_indexes(fresh_db, INDEXES) == 0
    names = set(fresh_db["Patient"].index_information())
    assert {ix.model().document["name"] for ix in INDEXES if ix.collection == "Patient"} <= names


def test_unique_index_guards_an_invariant(fresh_db):
    mongo.ensure_indexes(fresh_db, [mongo.Index("payments", (("provider", 1), ("txn", 1)), unique=True)])
    fresh_db.payments.insert_one({"provider": "vietqr", "txn": "FT1"})
    from pymongo.errors import DuplicateKeyError

    with pytest.raises(DuplicateKeyError):
        fresh_db.payments.insert_one({"provider": "vietqr", "txn": "FT1"})


def test_client_is_made_lazily_and_again_after_fork(mongo_url):
    a = mongo.client(mongo_url)
    assert mongo.client(mongo_url) is a
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: must not reuse the parent's pool
        try:
            child = mongo.client(mongo_url)
            ok = child is not a and child.admin.command("ping")["ok"] == 1
            os.write(w, b"1" if ok else b"0")
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    assert os.read(r, 1) == b"1"


def test_bulk_update_of_many_documents_finishes(fresh_db, mongo_url):
    """200 updates: one command of them would wait forever on FerretDB 1.24 (a PostgreSQL
    connection per statement, pool of 50); in commands of MAX_UPDATES_PER_COMMAND they pass,
    also from three threads at once (the local pool's limit is shared by every client)."""
    from concurrent.futures import ThreadPoolExecutor

    from pymongo import MongoClient, UpdateOne

    fresh_db.t.insert_many([{"_id": i, "n": 0} for i in range(600)])
    # fail rather than hang if a regression lets a command wait on itself
    coll = MongoClient(mongo_url, socketTimeoutMS=20_000)[fresh_db.name].t
    with ThreadPoolExecutor(3) as pool:
        done = list(pool.map(lambda k: mongo.bulk_update(coll, [UpdateOne({"_id": i}, {"$inc": {"n": 1}})
                                                                 for i in range(k * 200, k * 200 + 200)]),
                             range(3)))
    assert done == [200, 200, 200]
    assert fresh_db.t.count_documents({"n": 1}) == 600
    coll.database.client.close()


def test_each_event_loop_gets_its_own_asyncio_twin_of_a_database(fresh_db, mongo_url):
    """``async_database``: the same server and options as the process's client, one per loop."""
    import asyncio
    from datetime import UTC, datetime

    db = mongo.database(mongo_url, fresh_db.name)
    db.t.insert_one({"_id": "a", "at": datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)})

    async def read() -> tuple[object, dict]:
        twin = mongo.async_database(db)
        assert mongo.async_database(db).client is twin.client and twin.name == db.name
        return twin.client, await twin.t.find_one({"_id": "a"})

    first, doc = asyncio.run(read())
    second, again = asyncio.run(read())
    assert first is not second  # a client belongs to the loop it ran on
    assert doc == again == {"_id": "a", "at": datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)}  # tz-aware, as sync


def test_the_awaited_read_gives_what_the_blocking_read_gives(fresh_db, mongo_url):
    """``Store.aread_head`` sends the find command itself: same fields, tz-aware times, None when absent."""
    import asyncio
    from datetime import UTC, datetime

    from sen_shared.fhir.store import Store

    store = Store(mongo.database(mongo_url, fresh_db.name))
    when = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
    store.current("Patient").insert_one({"_id": "p", "v": 2, "lu": when, "del": False, "res": '{"id": "p"}',
                                         "sp_name": ["an"], "sp_gender": ["male"]})

    async def read(rid: str, param: str | None = None) -> dict | None:
        assert mongo.async_database(store.db) is not None  # the awaited way, not the fallback
        return await store.aread_head("Patient", rid, param)

    for rid, param in [("p", None), ("p", "name"), ("nobody", None)]:
        awaited = asyncio.run(read(rid, param))
        assert awaited == store.read_head("Patient", rid, param), (rid, param)
    assert asyncio.run(read("p"))["lu"] == when and "sp_gender" not in asyncio.run(read("p", "name"))


def test_a_database_from_a_client_of_its_own_is_read_the_blocking_way(fresh_db):
    """``fresh_db`` comes from a MongoClient made outside ``mongo.client``: no twin, and the
    store's awaited read still answers (blocking)."""
    import asyncio

    from sen_shared.fhir.store import Store

    store = Store(fresh_db)
    store.current("Patient").insert_one({"_id": "p", "v": 1, "lu": None, "del": False, "res": '{"id": "p"}'})

    async def read() -> tuple[object, dict | None]:
        return mongo.async_database(fresh_db), await store.aread_head("Patient", "p")

    twin, doc = asyncio.run(read())
    assert twin is None and doc["res"] == {"id": "p"} and doc["v"] == 1


def test_reads_awaited_on_a_loop_are_bounded_and_wait_their_turn_in_order():
    import asyncio

    async def main() -> list[str]:
        log: list[str] = []
        release = asyncio.Event()

        async def read(i: int) -> None:
            async with mongo.read_slot():
                log.append(f"in {i}")
                await release.wait()

        tasks = [asyncio.create_task(read(i)) for i in range(mongo.READS_IN_FLIGHT + 3)]
        await asyncio.sleep(0.05)
        assert len(log) == mongo.READS_IN_FLIGHT  # the others wait
        release.set()
        await asyncio.gather(*tasks)
        return log

    assert asyncio.run(main()) == [f"in {i}" for i in range(mongo.READS_IN_FLIGHT + 3)]
