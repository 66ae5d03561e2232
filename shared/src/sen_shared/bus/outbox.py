"""The outbox without transactions: events ride in the record they come from.

A change and the events it causes are written by ONE insert (``new_document``)
of the change's immutable record: each event is an entry of the document's
``outbox`` array and the top-level flag ``outbox_pending`` is true. The FHIR
store puts a version's events in the version's history document (fhir/store.py),
billing in its payment and receipt records, teleconsult in its claim links.
FerretDB pushes down only top-level equality, so the relay finds work with
``{outbox_pending: true}`` (an index on it serves MongoDB).

**Single writer.** FerretDB 1.24 applies an update as an unlocked read-modify-
write (ARCHITECTURE.md §2): the relay's update that empties an outbox would
revert anything another writer changed in the same document meanwhile. So once
a document is pending, the relay is its only writer: nothing else may update a
document of an outbox collection (several relays on one collection only
duplicate deliveries; they write the same values). ``with_events`` (events in
an ``update_one`` of the changed document) is kept for code whose document has
no other writer while events are pending; the FHIR store no longer uses it.
A relay may be given a *gate* per collection (the FHIR store's ``HistoryGate``):
a check run on each batch before publishing, which holds back or prepares
documents (a FHIR version whose current write has not landed is rolled forward
first).

:class:`OutboxRelay` polls each collection and publishes the pending entries
of up to ``batch`` documents (100) at once, in order, then waits for all their
publisher confirms together (``Publisher.publish_many``: RabbitMQ's batch
strategy; one confirm at a time cost ~4.5 ms an event under load, the relay
publishing ~46 events/s). Exactly the confirmed entries are marked sent; a
nacked, returned or invalid one is counted and backed off, and a lost
connection or a confirm timeout leaves every unconfirmed entry pending, sent
again by a later pass (at-least-once). The documents of a pass fully confirmed
are emptied together, after its last batch, by ONE ``update_many`` guarded by
the number of entries each held as read (``{outbox_pending: true, _id: {$in:
<ids>}, outbox: {$size: k}}`` → empty it and clear the flag; the relay alone
removes entries and writers may only append them, so the count stands for the
array): an entry appended meanwhile makes the guard miss that document, and
then every document of the group takes the careful way: the sent entries go
with ``$pullAll`` of the exact entries it read (FerretDB 1.24 ignores ``$pull``
conditions; nothing left to pull in the emptied ones) and the flag with a
guarded update ``{_id, outbox_pending: true, outbox: {$size: 0}}``, so the
flag is never cleared under a new event. Until 2026-12-07 each document had its
own update guarded by the array as read, 16 a command (``mongo.bulk_update``):
FerretDB then read each document by ``_id`` before rewriting it, where one
``update_many`` reads the pending documents once.

FerretDB fetches every match of a filtered query from PostgreSQL (it pushes
a limit down only without a filter and a sort: ``msg_find.go`` of v1.24.2), so
``{outbox_pending: true}`` with a limit still decodes every pending document.
So a pass takes up to ``page`` documents (10 batches) from one query, not one
batch: a backlog is decoded once a page instead of once a batch. A bounded
read of pending ids (an index on ``{outbox_pending, _id}``, a sort and a limit)
would serve MongoDB but not FerretDB, which evaluates sorts in its own code too.
After a bulk load (100,000 pending) that made each pass cost a scan: when a
pass finds a full page, the relay
takes the collection one id bucket at a time (``{outbox_pending: true, b2:
<bucket>}``, the FHIR store's bucket field; both equalities are pushed down)
until a whole round of buckets leaves less than a page. A bucket's query takes
up to ten batches: FerretDB decodes every pending document of the bucket
whatever the limit, so a smaller limit only made it decode them again.
Measured on the 110,000-document backlog of ``make bench`` (this 2-core
machine): about 300 documents/s, of which 1.7 ms a document is FerretDB and
PostgreSQL rewriting it (every index of the collection) to empty its outbox.

A crash between publish and removal republishes the entry: the delivery is
at-least-once and consumers deduplicate by event id (``apply_once``).
Several relays on one collection also only duplicate. The careful way
(``$pullAll``, the guarded flag update) is what remains of the time requests
appended to pending documents; with one writer a document it finds nothing to
do.

A document whose publish fails for a reason other than the broker being
down or not confirming in time (unroutable, nacked, invalid) is counted in ``outbox_attempts`` with the
error type in ``outbox_error``, and skipped with a growing delay; the others
go on. Positional updates of single entries are avoided on purpose: FerretDB
1.24 supports neither ``$[<id>]`` array filters nor ``$`` here.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol

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


class Gate(Protocol):
    """A per-collection check before publishing: the documents of a batch that may go out now.
    ``fields`` are the extra fields it reads (added to the relay's projection)."""

    fields: Sequence[str]

    def __call__(self, docs: list[dict[str, Any]]) -> list[dict[str, Any]]: ...


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
                 page: int | None = None, poll_interval: float = 0.5, max_backoff: float = 30.0,
                 gates: Mapping[str, Gate | Callable[[list[dict[str, Any]]], list[dict[str, Any]]]] | None = None,
                 ) -> None:
        self.db = db
        self.publisher = publisher
        self.collections = list(collections)
        self.gates = dict(gates or {})
        self.batch = batch  # documents whose events are published together, their confirms awaited together
        # documents one query may return (published ``batch`` at a time): FerretDB decodes every pending
        # document a filtered query matches whatever its limit, so a pass takes them all, up to this bound
        self.page = page or batch * 10
        self.bucket_batch = self.page  # the same bound for one bucket's query in crowded mode
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
            docs = self._pending(name, query)
            gate = self.gates.get(name)
            if gate is not None and docs:
                docs = gate(docs)
            count += self._relay_all(name, docs)
        return count

    def _projection(self, name: str, *fields: str) -> dict[str, int]:
        gate = self.gates.get(name)
        return {f: 1 for f in (OUTBOX, *fields, *getattr(gate, "fields", ()))}

    def _pending(self, name: str, query: dict[str, Any]) -> list[dict[str, Any]]:
        """Up to a batch of pending documents; one id bucket at a time while the collection is crowded.

        Buckets with nothing pending are passed over in the same call (a relay that restarts
        half-way through a backlog, or follows another one, finds the first buckets empty): an
        empty answer means the collection has nothing pending, never a pause in the walk.
        """
        coll = self.db[name]
        state = self._crowded.get(name)
        if state is None:
            docs = list(coll.find(query, self._projection(name, SPREAD), limit=self.page))
            if len(docs) >= self.page and any(SPREAD in d for d in docs):
                self._crowded[name] = (0, 0)
            return docs
        bucket, found = state
        while True:
            # FerretDB decodes every pending document of the bucket whatever the limit: take
            # them all (up to a bound), not a batch of them
            docs = list(coll.find({**query, SPREAD: SPREAD_VALUES[bucket]}, self._projection(name, SPREAD),
                                  limit=self.bucket_batch))
            found += len(docs)
            if len(docs) >= self.bucket_batch:  # more in this bucket: stay on it
                break
            bucket += 1
            if bucket == len(SPREAD_VALUES):  # a whole round: still crowded?
                if found < self.page:
                    self._crowded.pop(name, None)
                    return docs
                bucket, found = 0, 0
                break
            if docs:
                break
            # an emptied bucket: on to the next one now
        self._crowded[name] = (bucket, found)
        return docs

    def _relay_all(self, name: str, docs: list[dict[str, Any]]) -> int:
        """Publish the pending entries of ``docs``, ``batch`` documents at a time (:meth:`_relay_batch`);
        the documents whose every entry was confirmed are emptied together once the last batch is
        confirmed, or when a batch stops the pass (:meth:`_empty`: one command for all of them)."""
        coll = self.db[name]
        count = 0
        sent: list[dict[str, Any]] = []
        try:
            for start in range(0, len(docs), self.batch):
                count += self._relay_batch(coll, name, docs[start:start + self.batch], sent)
        finally:
            emptied = self._empty(coll, name, sent)
        return count + emptied

    def _relay_batch(self, coll: Any, name: str, docs: list[dict[str, Any]], sent_docs: list[dict[str, Any]]) -> int:
        """Publish the pending entries of ``docs`` as one batch whose confirms are awaited together
        (``Publisher.publish_many``), then mark exactly the confirmed ones sent: the documents whose
        every entry was confirmed go to ``sent_docs`` (emptied by the caller, :meth:`_empty`), the others
        lose their confirmed entries one by one (:meth:`_settle`), their unconfirmed ones staying pending.
        Raises :class:`BusUnavailable` after that when the connection was lost or the confirms did not
        come. Returns the events counted here (those of ``sent_docs`` are counted by :meth:`_empty`)."""
        work = [(doc, [e for e in doc.get(OUTBOX) or [] if isinstance(e, dict) and e.get("state") == "pending"])
                for doc in docs]
        events = [entry_event(entry) for _, entries in work for entry in entries]
        outcomes = iter(self._publish_batch(events))
        full: list[dict[str, Any]] = []
        partial: list[tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]], BusError | None]] = []
        for doc, entries in work:
            results = [next(outcomes) for _ in entries]
            sent = [entry for entry, result in zip(entries, results, strict=True) if result is None]
            failed = next(((entry, r) for entry, r in zip(entries, results, strict=True) if r is not None), None)
            if failed is None and sent and len(sent) == len(doc.get(OUTBOX) or ()):
                full.append(doc)
            else:
                partial.append((doc, sent, *(failed or (None, None))))
        sent_docs.extend(full)
        count = 0
        unavailable: BusUnavailable | None = None
        for doc, sent, failed_entry, failed in partial:
            count += self._settle(coll, name, doc, failed_entry, sent, failed)
            if isinstance(failed, BusUnavailable) and unavailable is None:
                unavailable = failed
        if unavailable is not None:
            raise unavailable
        return count

    def _publish_batch(self, events: list[dict[str, Any]]) -> list[BusError | None]:
        """Each event's outcome (None: confirmed), the batch's confirms awaited together."""
        if not events:
            return []
        outcomes = self.publisher.publish_many(events)
        self.published += sum(1 for outcome in outcomes if outcome is None)
        return outcomes

    def _empty(self, coll: Any, name: str, docs: list[dict[str, Any]]) -> int:
        """Empty the outbox of ``docs``, whose entries were all sent: ONE ``update_many`` for the
        documents whose outbox held as many entries (all of them, nearly always: one event a record),
        guarded by that count (``{outbox_pending: true, _id: {$in: ids}, outbox: {$size: k}}``, plus
        their id bucket when they share one). The relay is the only writer that removes entries and a
        writer may only append them, so an outbox still holding ``k`` entries holds the ``k`` read.
        When the guard missed one (an event was appended meanwhile), every document of that group takes
        the careful way: ``$pullAll`` of what was sent (nothing left to pull from the emptied ones) and
        the guarded flag update.

        One command, not one guarded update a document (16 a command, ``mongo.bulk_update``): FerretDB
        reads each of those documents by ``_id`` before it rewrites it, where ``update_many`` reads the
        pending documents once (the equality on ``outbox_pending``, and on the bucket, pushed down; the
        ``$in`` and ``$size`` evaluated in its own code over them) and rewrites the matched ones in one
        transaction. The pending documents it reads are about those this pass took (at most a page, or
        one bucket's in a crowded collection), read once a pass, not once a batch."""
        if not docs:
            return 0
        groups: dict[tuple[int, Any], list[dict[str, Any]]] = {}
        for d in docs:
            groups.setdefault((len(d[OUTBOX]), d.get(SPREAD)), []).append(d)
        if len({spread for _, spread in groups}) > 1:  # not one bucket: group by count only
            merged: dict[tuple[int, Any], list[dict[str, Any]]] = {}
            for (size, _), group in groups.items():
                merged.setdefault((size, None), []).extend(group)
            groups = merged
        for (size, spread), group in groups.items():
            guard: dict[str, Any] = {PENDING: True, "_id": {"$in": [d["_id"] for d in group]}, OUTBOX: {"$size": size}}
            if spread is not None:
                guard[SPREAD] = spread
            # single writer: the relay (ARCHITECTURE.md §3): no request updates a pending document
            emptied = coll.update_many(guard, {"$set": {OUTBOX: [], PENDING: False},
                                               "$unset": {ATTEMPTS: "", ERROR: ""}}).modified_count
            if emptied < len(group):
                for d in group:
                    coll.update_one({"_id": d["_id"]}, {"$pullAll": {OUTBOX: d[OUTBOX]}})
                    self._clear_flag(coll, d)
        for d in docs:
            self._skip.pop((name, d["_id"]), None)
        return sum(len(d[OUTBOX]) for d in docs)

    def _clear_flag(self, coll: Any, doc: Mapping[str, Any]) -> None:
        # single writer: the relay, as in _empty
        coll.update_one({"_id": doc["_id"], PENDING: True, OUTBOX: {"$size": 0}},
                        {"$set": {PENDING: False}, "$unset": {ATTEMPTS: "", ERROR: ""}})

    def _settle(self, coll: Any, name: str, doc: Mapping[str, Any], failed_entry: Mapping[str, Any] | None,
                sent: list[dict[str, Any]], failed: BusError | None) -> int:
        """A document not fully sent (or holding entries that were not pending): remove what was
        sent (``failed_entry``: the first entry whose publish ``failed``); on a failure other than the
        broker being away or not confirming, count it and back off.
        Single writer of these updates: the relay, as in :meth:`_empty`."""
        if sent:
            coll.update_one({"_id": doc["_id"]}, {"$pullAll": {OUTBOX: sent}})
        if isinstance(failed, BusUnavailable):
            return len(sent)
        if failed is not None:
            self.failures += 1
            key = (name, doc["_id"])
            delay = min(self._skip.get(key, (0.0, 0.5))[1] * 2, self.max_backoff)
            self._skip[key] = (time.monotonic() + delay, delay)
            coll.update_one({"_id": doc["_id"]}, {"$inc": {ATTEMPTS: 1}, "$set": {ERROR: type(failed).__name__}})
            log.error("outbox event not published, will retry",
                      extra={"collection": name, "event_id": (failed_entry or {}).get("id"),
                             "error": type(failed).__name__, "retry_in": delay})
            return len(sent)
        self._clear_flag(coll, doc)
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
