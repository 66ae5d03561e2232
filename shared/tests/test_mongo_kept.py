"""``sen_shared.mongo.database``: one ``Database`` object per client and name, its collections made once,
and never one bound to a client the process no longer uses (another client for the URL, a forked child's).
No server needed: pymongo connects on first command, and none is sent here."""

from __future__ import annotations

import os

import pytest
from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.write_concern import WriteConcern
from sen_shared import mongo

URL = "mongodb://127.0.0.1:1/"  # nothing listens there: nothing here connects


@pytest.fixture()
def fresh(monkeypatch):
    """This test's own clients and databases (closed after), as tests.support.quick_server_selection does."""
    clients: dict = {}
    monkeypatch.setattr(mongo, "_clients", clients)
    monkeypatch.setattr(mongo, "_databases", {})
    yield
    for c in clients.values():
        c.close()


def test_a_database_and_its_collections_are_made_once(fresh):
    db = mongo.database(URL, "sen_kept")
    assert mongo.database(URL, "sen_kept") is db
    assert isinstance(db, Database) and db.name == "sen_kept" and db.client is mongo.client(URL)
    coll = db["Task"]
    assert isinstance(coll, Collection) and coll.full_name == "sen_kept.Task"
    assert db["Task"] is coll and db.Task is coll  # item and attribute access alike
    assert db["Task_history"] is not coll and db["Task_history"].name == "Task_history"
    assert mongo.database(URL, "sen_other") is not db
    assert mongo.database(URL, "sen_other")["Task"].full_name == "sen_other.Task"


def test_other_options_still_make_a_collection_of_their_own(fresh):
    db = mongo.database(URL, "sen_kept")
    majority = db.get_collection("Task", write_concern=WriteConcern("majority"))
    assert majority is not db["Task"] and majority.write_concern.document == {"w": "majority"}
    assert db["Task"].write_concern.document == {}
    assert db.with_options(write_concern=WriteConcern("majority"))["Task"].write_concern.document == {"w": "majority"}


def test_another_client_for_the_url_gets_databases_of_its_own(fresh, monkeypatch):
    """A test (or anything) that replaces the process's clients gets databases on the new client: a kept one
    would send its commands through the client it was made with."""
    before = mongo.database(URL, "sen_kept")
    first = mongo.client(URL)
    mongo._clients.clear()
    after = mongo.database(URL, "sen_kept")
    try:
        assert mongo.client(URL) is not first
        assert after is not before and after.client is mongo.client(URL)
        assert after["Task"] is not before["Task"] and after["Task"].database is after
    finally:
        first.close()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork")
def test_a_forked_child_gets_its_own_database_and_client(fresh):
    parent = mongo.database(URL, "sen_kept")
    parent_task = parent["Task"]
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: a gunicorn worker after the master made its database
        ok = False
        try:
            child = mongo.database(URL, "sen_kept")
            ok = (child is not parent and child.client is mongo.client(URL) and child.client is not parent.client
                  and child["Task"] is not parent_task and child["Task"] is child["Task"])
        finally:
            os.write(w, b"1" if ok else b"0")
            os._exit(0)
    os.waitpid(pid, 0)
    assert os.read(r, 1) == b"1"
    assert mongo.database(URL, "sen_kept") is parent
