"""The outbox without transactions: events ride in the document they come from.

A change and the events it causes are written by ONE single-document update
(``with_events``) or insert (``new_document``): each event is appended to the
document's ``outbox`` array and the top-level flag ``outbox_pending`` is set
to true. FerretDB pushes down only top-level equality, so the relay finds
work with ``{outbox_pending: true}`` (an index on it serves MongoDB).

:class:`OutboxRelay` polls each collection, publishes a document's pending
entries in order with confirms, then removes the sent entries with
one update guarded by the whole array as read (``{_id, outbox: <as read>}``
→ empty it and clear the flag): an entry appended meanwhile makes the guard
miss, and then the sent entries go with ``$pullAll`` of the exact entries it
read (FerretDB 1.24 ignores ``$pull`` conditions) and the flag with a guarded
update ``{_id, outbox_pending: true, outbox: {$size: 0}}``, so the flag is
never cleared under a new event.

FerretDB fetches every match of a filtered query from PostgreSQL (it pushes
a limit down only without a filter), so ``{outbox_pending: true}`` with a
limit still reads every pending document. After a bulk load (100,000 pending)
that made each pass cost a scan: when a pass finds a full batch, the relay
takes the collection one id bucket at a time (``{outbox_pending: true, b2:
<bucket>}``, the FHIR store's bucket field; both equalities are pushed down)
until a whole round of buckets leaves less than a batch.

A crash between publish and removal republishes the entry: the delivery is
at-least-once and consumers deduplicate by event id (``apply_once``).
Several relays on one collection also only duplicate.

A document whose publish fails for a reason other than the broker being
down (unroutable, nacked, invalid) is counted in ``outbox_attempts`` with the
error type in ``outbox_error``, and skipped with a growing delay; the others
go on. Positional updates of single entries are avoided on purpose: FerretDB
1.24 supports neither ``$[<id>]`` array filters nor ``$`` here.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from pymongo.database import Database
from pymongo.errors import PyMongoError

from .. import mongo
from .errors import BusError, BusUnavailable
from .events import utc_now
from .publisher import Publisher

log = logging.getLogger("sen.bus.outbox")

OUTBOX = "outbox"
PENDING = "outbox_pending"
ATTEMPTS = "outbox_attempts"
ERROR = "outbox_error"
SPREAD = "b2"  # the FHIR store's id bucket (search/buckets.py): 256 values "00".."ff"
SPREAD_VALUES = [f"{i:02x}" for i in range(256)]

# Services list these in their INDEXES; the collections are known only to the service,
# so the relay also ensures its own index at start (see OutboxRelay.ensure_indexes).
OUTBOX_INDEXES: list[mongo.Index] = []


def outbox_indexes(collections: Iterable[str]) -> list[mongo.Index]:
    """The index that serves the relay's query in each outbox collection."""
    return [mongo.Index(c, ((PENDING, 1),), name="outbox_pending_1") for c in collections]


def _entries(events: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One outbox entry per event; the event as its JSON text (what the broker gets), which costs
    the database one value instead of one per field while it waits (see store.py's body)."""
    now = utc_now()
    return [{"id": e["id"], "state": "pending", "created": now,
             "event": json.dumps(e, ensure_ascii=False, separators=(",", ":"))} for e in events]


def entry_event(entry: Mapping[str, Any]) -> dict[str, Any]:
    """The event of an outbox entry (entries written before it was text hold the event itself)."""
    event = entry["event"]
    return json.loads(event) if isinstance(event, str) else dict(event)


def with_events(update: Mapping[str, Any], events: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """``update`` plus the outbox entries of ``events``, for the same ``update_one``/``find_one_and_update``."""
    out: dict[str, Any] = {k: dict(v) if isinstance(v, Mapping) else v for k, v in update.items()}
    if not events:
        return out
    for op in out.values():
        if isinstance(op, dict) and (OUTBOX in op or PENDING in op):
            raise ValueError(f"{OUTBOX} and {PENDING} are managed by the outbox")
    out.setdefault("$push", {})[OUTBOX] = {"$each": _entries(events)}
    out.setdefault("$set", {})[PENDING] = True
    return out


def new_document(doc: Mapping[str, Any], events: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """``doc`` with its outbox, for ``insert_one``."""
    if OUTBOX in doc or PENDING in doc:
        raise ValueError(f"{OUTBOX} and {PENDING} are managed by the outbox")
    return {**doc, OUTBOX: _entries(events), PENDING: bool(events)}


class OutboxRelay:
    """Publishes the pending outbox entries of ``collections`` in ``db``."""

    def __init__(self, db: Database, publisher: Publisher, collections: Sequence[str], *, batch: int = 100,
                 poll_interval: float = 0.5, max_backoff: float = 30.0) -> None:
        self.db = db
        self.publisher = publisher
        self.collections = list(collections)
        self.batch = batch
        self.poll_interval = poll_interval
        self.max_backoff = max_backoff
        self._skip: dict[tuple[str, Any], tuple[float, float]] = {}  # (coll, _id) -> (until, delay)
        self._crowded: dict[str, tuple[int, int]] = {}  # collection -> (next bucket, found this round)
        self.published = 0
        self.failures = 0

    def ensure_indexes(self) -> None:
        mongo.ensure_indexes(self.db, outbox_indexes(self.collections))

    def run_once(self) -> int:
        """One pass over every collection; returns how many events were published.

        Raises :class:`BusUnavailable` when the broker cannot be reached (after
        removing what was already sent).
        """
        count = 0
        now = time.monotonic()
        self._skip = {k: v for k, v in self._skip.items() if v[0] > now}
        for name in self.collections:
            query: dict[str, Any] = {PENDING: True}
            skipped = [doc_id for (c, doc_id) in self._skip if c == name]
            if skipped:
                query["_id"] = {"$nin": skipped}
            for doc in self._pending(name, query):
                count += self._relay(name, doc)
        return count

    def _pending(self, name: str, query: dict[str, Any]) -> list[dict[str, Any]]:
        """Up to a batch of pending documents; one id bucket at a time while the collection is crowded.

        Buckets with nothing pending are passed over in the same call (a relay that restarts
        half-way through a backlog, or follows another one, finds the first buckets empty): an
        empty answer means the collection has nothing pending, never a pause in the walk.
        """
        coll = self.db[name]
        state = self._crowded.get(name)
        if state is None:
            docs = list(coll.find(query, {OUTBOX: 1, SPREAD: 1}, limit=self.batch))
            if len(docs) >= self.batch and any(SPREAD in d for d in docs):
                self._crowded[name] = (0, 0)
            return docs
        bucket, found = state
        while True:
            docs = list(coll.find({**query, SPREAD: SPREAD_VALUES[bucket]}, {OUTBOX: 1}, limit=self.batch))
            found += len(docs)
            if len(docs) >= self.batch:  # more in this bucket: stay on it
                break
            bucket += 1
            if bucket == len(SPREAD_VALUES):  # a whole round: still crowded?
                if found < self.batch:
                    self._crowded.pop(name, None)
                    return docs
                bucket, found = 0, 0
                break
            if docs:
                break
            # an emptied bucket: on to the next one now
        self._crowded[name] = (bucket, found)
        return docs

    def _relay(self, name: str, doc: Mapping[str, Any]) -> int:
        coll = self.db[name]
        entries = [e for e in doc.get(OUTBOX) or [] if isinstance(e, dict) and e.get("state") == "pending"]
        sent: list[dict[str, Any]] = []
        failed: BusError | None = None
        emptied = False
        try:
            for entry in entries:
                try:
                    self.publisher.publish(entry_event(entry))
                except BusUnavailable:
                    raise
                except BusError as err:  # unroutable, nacked, invalid: later events of this document wait
                    failed = err
                    break
                sent.append(entry)
            if sent and len(sent) == len(doc.get(OUTBOX) or ()):
                # everything the document held is sent: one update, guarded by the array as read
                emptied = coll.update_one(
                    {"_id": doc["_id"], OUTBOX: doc[OUTBOX]},
                    {"$set": {OUTBOX: [], PENDING: False}, "$unset": {ATTEMPTS: "", ERROR: ""}}).matched_count > 0
        finally:
            self.published += len(sent)
            if sent and not emptied:
                coll.update_one({"_id": doc["_id"]}, {"$pullAll": {OUTBOX: sent}})
        if emptied:
            self._skip.pop((name, doc["_id"]), None)
            return len(sent)
        if failed is not None:
            self.failures += 1
            key = (name, doc["_id"])
            delay = min(self._skip.get(key, (0.0, 0.5))[1] * 2, self.max_backoff)
            self._skip[key] = (time.monotonic() + delay, delay)
            coll.update_one({"_id": doc["_id"]}, {"$inc": {ATTEMPTS: 1}, "$set": {ERROR: type(failed).__name__}})
            log.error("outbox event not published, will retry",
                      extra={"collection": name, "event_id": entries[len(sent)]["id"],
                             "error": type(failed).__name__, "retry_in": delay})
            return len(sent)
        coll.update_one({"_id": doc["_id"], PENDING: True, OUTBOX: {"$size": 0}},
                        {"$set": {PENDING: False}, "$unset": {ATTEMPTS: "", ERROR: ""}})
        self._skip.pop((name, doc["_id"]), None)
        return len(sent)

    def run_forever(self, stop: threading.Event) -> None:
        """Poll until ``stop`` is set; back off while the broker or the database is down."""
        delay = self.poll_interval
        while not stop.is_set():
            try:
                n = self.run_once()
                delay = self.poll_interval
            except BusUnavailable as err:
                log.warning("outbox relay: broker unavailable, backing off",
                            extra={"error": str(err)[:200], "retry_in": delay})
                self.publisher.reset()
                n = 0
                delay = min(delay * 2, self.max_backoff)
            except PyMongoError as err:
                log.warning("outbox relay: database error, backing off",
                            extra={"error": type(err).__name__, "retry_in": delay})
                n = 0
                delay = min(delay * 2, self.max_backoff)
            except Exception:
                log.exception("outbox relay failed, backing off")
                n = 0
                delay = min(delay * 2, self.max_backoff)
            if n == 0 and stop.wait(delay):
                break
