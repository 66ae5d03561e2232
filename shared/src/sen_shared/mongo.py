"""MongoDB access: one client per process, created on first use.

Gunicorn forks workers; a pymongo client must not cross a fork. The client is
created lazily and re-created when the process id changes, so nothing is
connected at import time and each worker owns its own pool. Works on MongoDB
and FerretDB alike (see ARCHITECTURE.md §2 for what that rules out).

The client blocks: it is called from connexion's thread pool (every web handler runs
there, see ``sen_shared.web``), from workers and from scripts, never from a coroutine
on an event loop.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from pymongo import MongoClient
from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import ConnectionFailure, ExecutionTimeout, OperationFailure
from pymongo.operations import IndexModel

_lock = threading.Lock()
_clients: dict[tuple[int, str], MongoClient] = {}
CLIENT_OPTIONS: dict[str, Any] = {"tz_aware": True, "serverSelectionTimeoutMS": 5000, "appname": "sen",
                                  "uuidRepresentation": "standard"}


def client(url: str) -> MongoClient:
    """The process's client for ``url`` (fork-safe)."""
    key = (os.getpid(), url)
    c = _clients.get(key)
    if c is None:
        with _lock:
            c = _clients.get(key)
            if c is None:
                for stale in [k for k in _clients if k[0] != key[0]]:
                    _clients.pop(stale, None)  # inherited across fork: never used, never closed here
                c = MongoClient(url, connect=False, **CLIENT_OPTIONS)
                _clients[key] = c
    return c


class _Database(Database):
    """pymongo's ``Database`` whose collections (``db[name]``, ``db.name``) are made once and kept: the FHIR
    engine and the services ask for the same few collections many times a request (a ``$submit`` about 25
    times), and each ``Collection`` object built (its options resolved from the database's) cost ~5 us.
    A ``Collection`` holds no state of its own beyond its name and options (pymongo's "lightweight"
    objects, safe to share between threads); ``get_collection`` with other options still makes a new one."""

    def __init__(self, client: MongoClient, name: str) -> None:
        super().__init__(client, name)
        self._kept: dict[str, Collection] = {}

    def __getitem__(self, name: str) -> Collection:
        coll = self._kept.get(name)
        if coll is None:
            coll = super().__getitem__(name)
            if len(self._kept) < MAX_KEPT:
                self._kept[name] = coll
        return coll


MAX_KEPT = 4096  # databases (a test run makes a few hundred) and collections of one database kept
_databases: dict[tuple[int, str], _Database] = {}


def database(url: str, name: str) -> Database:
    """The database ``name`` of the process's client for ``url``, made once per client (a ``Database`` object
    built cost ~5 us, asked for many times a request) and its collections kept (:class:`_Database`)."""
    c = client(url)
    key = (id(c), name)
    db = _databases.get(key)
    if db is None or db.client is not c:  # (the id of a client since closed and collected: made again)
        db = _Database(c, name)
        if len(_databases) >= MAX_KEPT:
            _databases.clear()
        _databases[key] = db
    return db


def ping(db: Database) -> None:
    db.client.admin.command("ping")


# FerretDB answers an InternalError (code 1; 65 for a batch's write errors) when the PostgreSQL under it is
# away: refusing connections while it starts or stops, or ending them under a command (a fast shutdown,
# 57P01; a crash, 57P02; starting up, 57P03). Measured with PostgreSQL restarted under FerretDB 1.24.2.
_BACKEND_AWAY = re.compile(r"failed to connect to|SQLSTATE 57P0[123]|unexpected EOF|connection reset by peer|"
                           r"broken pipe|conn closed|connection refused|closed pool", re.IGNORECASE)


def unavailable(err: BaseException) -> bool:
    """Whether ``err`` says the database is out of reach (try again later), not that the command is wrong:
    pymongo's connection failures (MongoDB's primary stepping down is one) and timeouts, and FerretDB's
    internal error when the PostgreSQL under it is away. The web answers these 503, and a consumer holds
    its event until the database answers again, instead of counting a failure (``bus.consumer``)."""
    if isinstance(err, ConnectionFailure | ExecutionTimeout):
        return True
    if isinstance(err, OperationFailure) and err.code in (1, 65):
        return bool(_BACKEND_AWAY.search(f"{err} {err.details or ''}"))
    return False


FIND_IN_MAX_EQUALITIES = 200
# FerretDB 1.24 holds one PostgreSQL connection per update statement of a command until the
# whole command ends, from a pool of 50: one `update` (bulk_write) of 50 statements waits for
# itself forever, and two of 30 at once do too. So bulk updates go in commands of this many.
MAX_UPDATES_PER_COMMAND = 16


def bulk_update(coll: Collection, requests: Iterable[Any]) -> int:
    """``coll.bulk_write(requests, ordered=False)`` in commands of ``MAX_UPDATES_PER_COMMAND``;
    the number of documents modified. Each update is an unlocked read-modify-write on FerretDB:
    callers state who the single writer of the documents they update is (claims.py)."""
    modified, chunk = 0, []
    for req in requests:
        chunk.append(req)
        if len(chunk) == MAX_UPDATES_PER_COMMAND:
            modified += coll.bulk_write(chunk, ordered=False).modified_count
            chunk = []
    if chunk:
        modified += coll.bulk_write(chunk, ordered=False).modified_count
    return modified


def find_in(coll: Collection, field: str, values: Iterable[Any], extra: dict[str, Any] | None = None,
            projection: dict[str, Any] | None = None) -> Iterator[dict[str, Any]]:
    """Documents whose ``field`` equals (or, for an array, holds) one of ``values``.

    FerretDB evaluates ``$in`` in its own code over every document of the collection, but
    pushes a top-level equality down to an index, so a short list becomes one equality query
    per value (MongoDB serves either shape from its index). A document that matches several
    values is yielded once.
    """
    wanted = list(dict.fromkeys(values))
    if not wanted:
        return
    if len(wanted) > FIND_IN_MAX_EQUALITIES:
        yield from coll.find({field: {"$in": wanted}, **(extra or {})}, projection)
        return
    seen: set[Any] = set()
    for value in wanted:
        for doc in coll.find({field: value, **(extra or {})}, projection):
            if doc["_id"] not in seen:
                seen.add(doc["_id"])
                yield doc


@dataclass(frozen=True)
class Index:
    """One index a collection needs; declared as data by each service."""

    collection: str
    keys: tuple[tuple[str, int], ...]
    unique: bool = False
    name: str | None = None

    def model(self) -> IndexModel:
        name = self.name or "_".join(f"{k}_{d}" for k, d in self.keys)
        return IndexModel(list(self.keys), unique=self.unique, name=name)


def _missing(db: Database, indexes: Iterable[Index]) -> dict[str, list[IndexModel]]:
    by_collection: dict[str, list[IndexModel]] = {}
    for ix in indexes:
        by_collection.setdefault(ix.collection, []).append(ix.model())
    out: dict[str, list[IndexModel]] = {}
    existing_collections = set(db.list_collection_names())
    for coll, models in by_collection.items():
        # only the missing ones: FerretDB 1.24 panics when a batch re-creates existing indexes
        have = set(db[coll].index_information()) if coll in existing_collections else set()
        missing = [m for m in models if m.document["name"] not in have]
        if missing:
            out[coll] = missing
    return out


def missing_indexes(db: Database, indexes: Iterable[Index]) -> list[str]:
    """``<collection>.<name>`` of each declared index the database does not have (yet)."""
    return [f"{coll}.{m.document['name']}" for coll, models in _missing(db, indexes).items() for m in models]


def ensure_indexes(db: Database, indexes: Iterable[Index]) -> int:
    """Create the indexes that are missing; safe to run again and from many processes."""
    return sum(len(db[coll].create_indexes(models)) for coll, models in _missing(db, indexes).items())
