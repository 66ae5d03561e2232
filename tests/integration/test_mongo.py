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
