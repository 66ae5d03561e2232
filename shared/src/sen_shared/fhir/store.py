"""Versioned FHIR storage on MongoDB, without multi-document transactions and without guarded updates.

Each current resource is one document in the collection named after its type::

    {"_id": id, "v": 3, "lu": datetime, "del": False, "res": "{...FHIR JSON text...}",
     "b2": "3f", "b4": "0f", "b1": "3", "sp_*": index values}

(``b2``/``b4``/``b1``: the id's buckets, the default search order; see search/buckets.py.)

The body ``res`` is the resource's compact JSON text (:func:`pack`), not a sub-document:
searches read only the ``sp_*`` index fields, never the body, so nothing is lost by keeping
it opaque, and a text is one value for the database to store, decode and send where a
sub-document is one per element (FerretDB's cost per document grows with its values; a
Patient's body is ~20 of them). HAPI FHIR keeps its resource text the same way. Code that
reads documents calls :func:`unpack`, which also accepts a body stored as a sub-document by
an earlier version (``backfill`` converts those).

Every version (deletes included, as tombstones with ``res: None``) is also a document of
``<Type>_history`` with ``_id = "<id>/<v>"``, and **a version is claimed by inserting its
history document first** (ARCHITECTURE.md §2, ``claims.claim``): FerretDB 1.24 applies an
update as an unlocked read-modify-write, so a version in an update's filter guards nothing,
while an insert under a unique ``_id`` has exactly one winner. The loser of the claim gets
409 (412 when it sent ``If-Match``). Only the winner then writes the current document, by
``_id``: the next version can only be claimed by someone who read the current document at
this version, i.e. after this write, so the current document has one writer at a time. A
history document is never overwritten.

The events of a version travel in its history document (``outbox``, ``outbox_pending``,
and ``b2``, the resource id's bucket, for the relay's crowded mode), never in the current
document: the outbox relay polls the ``_history`` collections (:func:`relay_targets`) and is
the only one to update a history document once it is pending, so the relay never touches a
document a request writes. A type with summary fields for its events (``event_fields``,
events.EventFields) keeps the fields its version's event carried in the history document
(``ef``; a deletion's ``{}``): an update's event then carries the replaced version's fields too
(``previousDistrict``) and a deletion's the deleted version's, read from that version's history
document (one read by ``_id``), so a consumer adding and taking away by those fields stays
right whatever order the events come in. A version without ``ef`` was written before its type
had fields. (A transaction's history documents carry its journal id, ``txn``:
the relay holds them back while that journal exists; see bundle.py.)

A process that dies between its claim and its current write leaves a history document ahead
of the current one. After a grace period (``SEN_FHIR_ROLLFORWARD_GRACE`` seconds, default 5)
that version is **rolled forward** (:meth:`Store.roll_forward`) by the relay before it
publishes the version's events, and by any writer whose claim lost against it (a version 1 a
fixed-id create lost against, at once: :meth:`Store.create_once` inserts it); the roll-
forward itself is a claim (a chain of markers ``<type>/<id>/<v>`` in ``fhir_rollforward``), so
one party writes it. Reads keep their single query: a crashed write's version becomes visible
when it is rolled forward, not before (``vread`` and ``_history`` read the history, so they show
a claimed version at once, an open transaction's claims included).

Residual window: a winner that stalls longer than the grace period between its claim and
its write may find its version rolled forward by someone else; both write the same content,
and its write is filtered on the version it replaces so a stale write matches nothing (a
defence in depth only: FerretDB does not make that filter atomic). Keep the grace period well
above any plausible pause.

The ``prepare_*`` functions build the writes without I/O so the bundle engine
can check a whole transaction first and apply it afterwards (the one exception:
:func:`note_type`, once per type and process).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from pymongo import UpdateOne
from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError

from .. import claims
from ..bus import outbox
from ..ids import new_uuid
from ..mongo import FIND_IN_MAX_EQUALITIES, Index, bulk_update, find_in
from . import events as ev
from . import unique
from .body import pack, unpack
from .outcome import FhirError
from .search.buckets import bucket_fields
from .search.extract import index_fields
from .store_time import iso, now

log = logging.getLogger("sen.fhir.store")

HISTORY_SUFFIX = "_history"
HEAD_PROJECTION = {"res": 0, "outbox": 0}  # (current documents of an older layout may still hold an outbox)
ROLLFORWARD_COLLECTION = "fhir_rollforward"  # chains <type>/<id>/<v>: who rolls a crashed version forward
CONDITIONS_COLLECTION = "fhir_conditions"  # chains <type>?<query>: conditional creates that found nothing
TXN = "txn"  # on a history document a transaction claimed: its journal id (open while the journal exists)
JOURNAL_COLLECTION = "_journal"  # the open transactions (bundle.py)
# types whose resources are stored once and never changed (the audit trail, audit.py: append-only, written
# without a history copy, since every measured request stores one): their only version is 1, the current
# document itself, which vread and _history read (Store.version_doc, Store.history_docs)
SINGLE_VERSION_TYPES = frozenset({"AuditEvent"})
GRACE_ENV = "SEN_FHIR_ROLLFORWARD_GRACE"
DEFAULT_GRACE_SECONDS = 5.0

# test seam: called with each Write after its version is claimed, before the current document
# is written (a test kills the process here to leave a claim without its current write)
after_claim: Callable[[Write], None] | None = None


def rollforward_grace() -> timedelta:
    """How old an unapplied claim must be before others roll it forward (its writer presumed dead)."""
    raw = os.environ.get(GRACE_ENV, "")
    try:
        return timedelta(seconds=float(raw)) if raw else timedelta(seconds=DEFAULT_GRACE_SECONDS)
    except ValueError:
        return timedelta(seconds=DEFAULT_GRACE_SECONDS)


def store_indexes() -> list[Index]:
    """The indexes of the store's own claim collections (the ``latest`` query of each chain)."""
    return [*claims.chain_indexes(ROLLFORWARD_COLLECTION), *claims.chain_indexes(CONDITIONS_COLLECTION),
            *unique.indexes()]


def _aware(at: Any) -> datetime | None:
    if not isinstance(at, datetime):
        return None
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def is_stale(doc: Mapping[str, Any], grace: timedelta | None = None) -> bool:
    """True when the claim ``doc`` (its ``at``, else ``lu``) is older than the grace period."""
    at = _aware(doc.get("at")) or _aware(doc.get("lu"))
    return at is not None and at < datetime.now(UTC) - (grace if grace is not None else rollforward_grace())
LANDED = "landed_before_search"  # condition_link's note on a claim it read (never stored)
TYPES_COLLECTION = "fhir_types"  # {_id: resource type}: the types that ever held a resource
LAYOUTS_COLLECTION = "fhir_layouts"  # {_id: collection, layout}: the layout backfill last brought it to
# The document layout this version writes: 3 = the body as JSON text, no sp_missing, id buckets.
# Raise it with any change ``_backfill`` must bring older documents to.
LAYOUT = 3

_noted: set[tuple[str, str]] = set()


def note_type(db: Database, resource_type: str) -> None:
    """Record once per process that ``resource_type`` holds resources, before its first write.

    ``Patient/$everything`` reads this registry to skip the compartment's empty types (one
    query instead of one per type); a type is noted before anything is written to it, so the
    registry never misses one.
    """
    key = (db.name, resource_type)
    if key in _noted:
        return
    # an idempotent upsert: every writer sets the same document (only $setOnInsert), so racing
    # writers at worst both insert-or-keep it; nothing is lost whoever wins
    try:
        db[TYPES_COLLECTION].update_one({"_id": resource_type}, {"$setOnInsert": {"since": now()}}, upsert=True)
    except DuplicateKeyError:  # a concurrent first write noted it
        pass
    _noted.add(key)


def types_present(db: Database) -> set[str] | None:
    """The noted types, or None when the registry is empty (a database from before it: assume all)."""
    names = {d["_id"] for d in db[TYPES_COLLECTION].find({}, {"_id": 1})}
    return names or None


def backfill(db: Database, resource_types: Iterable[str]) -> int:
    """Bring documents of an older layout up to date (idempotent): the id buckets, the type
    registry, the index fields of a layout with ``sp_missing`` and the body as JSON text, in
    the current collections and their histories. (Index fields of the layouts between still
    answer every search: a stored ``_x`` array matches ``:exact``, an ``sp_present`` list is
    only unused; they shrink when their resource is next written.)"""
    fixed = 0
    for rtype in resource_types:
        for coll in (db[rtype], db[rtype + HISTORY_SUFFIX]):
            fixed += _backfill(db, rtype, coll, history=coll.name.endswith(HISTORY_SUFFIX))
        fixed += move_legacy_outboxes(db, rtype)
    return fixed


def move_legacy_outboxes(db: Database, resource_type: str) -> int:
    """Events an earlier version left pending in current documents, moved to the history
    document of their version, where today's relay looks for them; how many documents moved.

    Each move is claimed first (``legacy-outbox/<type>/<id>/<v>`` in ``fhir_rollforward``), so a
    rerun moves nothing twice. The current document keeps its now inert ``outbox`` fields: an
    update of it here would race the requests writing it (nothing reads those fields).
    The history document's update has a single writer: this step (a history document without
    ``outbox_pending`` is touched by no relay, and requests never update history documents).
    Stop the previous version's workers first: its relay still updates current documents.
    """
    cur, hist = db[resource_type], db[resource_type + HISTORY_SUFFIX]
    moved = 0
    for doc in list(cur.find({outbox.PENDING: True}, {"v": 1, outbox.OUTBOX: 1})):
        entries = [e for e in doc.get(outbox.OUTBOX) or [] if isinstance(e, dict)]
        if not entries:
            continue
        rid, version = doc["_id"], int(doc["v"])
        won, _ = claims.claim_once(db[ROLLFORWARD_COLLECTION], f"legacy-outbox/{resource_type}/{rid}/{version}")
        if not won:
            continue
        fields = {outbox.OUTBOX: entries, outbox.PENDING: True, "b2": bucket_fields(rid)["b2"]}
        if hist.update_one({"_id": f"{rid}/{version}"}, {"$set": fields}).matched_count == 0:
            full = cur.find_one({"_id": rid}) or {}
            try:  # its history document was never written (an interrupted write of that version)
                hist.insert_one({"_id": f"{rid}/{version}", "id": rid, "v": version, "lu": full.get("lu", now()),
                                 "del": bool(full.get("del")), "m": "PUT", "res": full.get("res"), **fields})
            except DuplicateKeyError:
                hist.update_one({"_id": f"{rid}/{version}"}, {"$set": fields})
        moved += 1
    return moved


def _backfill(db: Database, rtype: str, coll: Collection, *, history: bool) -> int:
    """Older documents of one collection brought to ``LAYOUT``; once it is there, nothing is read.

    The scan reads every document (no index serves it), so a collection that reached this
    layout is recorded and passed over by the next runs of the indexes step (a deploy must not
    read a year of AuditEvents). A document an older process writes after that (a rolling
    deploy) stays as it is until it is next written: every read and search takes either form.
    """
    layouts = db[LAYOUTS_COLLECTION]
    marker = layouts.find_one({"_id": coll.name})
    if marker is not None and marker.get("layout") == LAYOUT:
        return 0
    if coll.find_one({}, {"_id": 1}) is None:
        return 0
    if not history:
        note_type(db, rtype)
    # {"res": {"$type": "object"}}: a body stored as a sub-document by an earlier version
    old: dict[str, Any] = {"res": {"$type": "object"}} if history else {"$or": [
        {"b4": {"$exists": False}}, {"sp_missing": {"$exists": True}}, {"res": {"$type": "object"}}]}
    # the ids first, then the writes: FerretDB stalls a write under a cursor open on its collection
    ids = [d["_id"] for d in coll.find(old, {"_id": 1})]
    fixed, step = 0, FIND_IN_MAX_EQUALITIES
    for start in range(0, len(ids), step):
        batch: list[UpdateOne] = []
        for doc in find_in(coll, "_id", ids[start:start + step], projection={"v": 1, "del": 1, "res": 1,
                                                                              "sp_missing": 1}):
            res = doc.get("res")
            update: dict[str, Any] = {"$set": {"res": pack(res)} if isinstance(res, dict) else {}}
            if not history:
                update["$set"].update(bucket_fields(doc["_id"]))
                if "sp_missing" in doc:
                    fields = index_fields(unpack(doc)["res"]) if not doc.get("del") and doc.get("res") else {}
                    update["$set"].update(fields)
                    update["$unset"] = {k: "" for k in ("sp_missing", "sp_present") if k not in fields}
            if update["$set"]:
                # a current document only at the version read: a request that wrote the next one since
                # keeps its body (this update was computed from the one before)
                where = {"_id": doc["_id"]} if history or "v" not in doc else {"_id": doc["_id"], "v": doc["v"]}
                batch.append(UpdateOne(where, update))
        # single writer of the layout: the indexes step (one Job / one process at deploy); the updates
        # are idempotent (each recomputes the same fields from the document), so a rerun only repeats.
        # The same for the layout marker below. Not the only writer of a current document, though: the
        # Job runs beside the serving web processes (k8s), whose requests write new versions meanwhile.
        # The filter on the version read keeps a version written since from getting the older body
        # (enough on MongoDB; FerretDB applies an update as an unlocked read-modify-write, so there a
        # request landing inside this very update can still lose: docs/invariants.md, finding 1).
        fixed += bulk_update(coll, batch)
    layouts.update_one({"_id": coll.name}, {"$set": {"layout": LAYOUT, "at": now()}}, upsert=True)
    return fixed


def new_id() -> str:
    return new_uuid()


def etag(version: int | str) -> str:
    return f'W/"{version}"'


def parse_etag(value: str | None) -> int | None:
    """``W/"3"`` (or ``"3"``, ``3``) → 3; None for no header; 412-worthy garbage → -1."""
    if value is None or value.strip() == "":
        return None
    v = value.strip()
    if v.startswith("W/"):
        v = v[2:]
    v = v.strip('"')
    return int(v) if v.isdigit() and len(v) < 19 else -1


def stamp(resource: dict[str, Any], rid: str, version: int, when: datetime) -> dict[str, Any]:
    """Set ``id`` and ``meta.versionId``/``meta.lastUpdated`` (server-owned) on ``resource`` in place."""
    resource["id"] = rid
    meta = resource.get("meta")
    meta = dict(meta) if isinstance(meta, dict) else {}
    meta["versionId"] = str(version)
    meta["lastUpdated"] = iso(when)
    resource["meta"] = meta
    return resource


def gone(resource_type: str, rid: str) -> FhirError:
    return FhirError(f"{resource_type}/{rid} was deleted", status=410, code="deleted")


def not_found(resource_type: str, rid: str) -> FhirError:
    return FhirError(f"{resource_type}/{rid} is not known", status=404, code="not-found")


def no_version(resource_type: str, rid: str, vid: str) -> FhirError:
    return FhirError(f"{resource_type}/{rid} has no version {vid}", status=404)


@dataclass
class Write:
    """One prepared change of one resource: what to send to MongoDB, and what it means."""

    resource_type: str
    rid: str
    verb: str  # created | updated | deleted
    version: int
    prev: int | None  # version replaced (None: the resource did not exist)
    when: datetime
    resource: dict[str, Any] | None
    doc: dict[str, Any] | None = None  # for inserts
    filter: dict[str, Any] | None = None  # for guarded updates
    update: dict[str, Any] | None = None
    history: dict[str, Any] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)
    # unique identifiers (``system|value``, unique.py) this write gives its resource and takes from it
    ident_add: set[str] = field(default_factory=set)
    ident_drop: set[str] = field(default_factory=set)

    @property
    def is_insert(self) -> bool:
        return self.doc is not None

    @property
    def method(self) -> str:
        return {"created": "POST", "updated": "PUT", "deleted": "DELETE"}[self.verb]


def _read_projection(param: str | None) -> dict[str, int]:
    return {"res": 1, "v": 1, "lu": 1, "del": 1, **({f"sp_{param}": 1} if param else {})}


class Store:
    """The versioned resource store of one database."""

    def __init__(self, db: Database, *, service: str = "fhir", emit_events: bool = True,
                 unique_identifiers: Mapping[str, frozenset[str]] | None = None,
                 event_fields: Mapping[str, ev.EventFields] | None = None) -> None:
        self.db = db
        self.service = service
        self.emit_events = emit_events
        self.event_fields = dict(event_fields or {})
        self.unique = unique.UniqueIdentifiers(db, unique_identifiers or {}, is_stale=is_stale,
                                               holds=self._holds_identifier)
        # a service's rule on a write that adds unique identifiers, run before they are claimed (it may
        # refuse: the EHR's budget of numbers, sen_ehr.domain.registered_elsewhere); None: no rule
        self.before_claim: Callable[[Write], None] | None = None

    def _holds_identifier(self, resource_type: str, rid: str, token: str) -> bool:
        head = self.current(resource_type).find_one({"_id": rid}, {"sp_identifier": 1, "del": 1})
        return token in unique.head_tokens(head, self.unique.for_type(resource_type))

    # ------------------------------------------------------------------ collections

    def current(self, resource_type: str) -> Collection:
        return self.db[resource_type]

    def history(self, resource_type: str) -> Collection:
        return self.db[resource_type + HISTORY_SUFFIX]

    # ------------------------------------------------------------------ reads

    def head(self, resource_type: str, rid: str) -> dict[str, Any] | None:
        """The current document without the resource body (version, deleted flag, index keys)."""
        return self.current(resource_type).find_one({"_id": rid}, HEAD_PROJECTION)

    def heads(self, resource_type: str, ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        ids = list(dict.fromkeys(ids))
        if not ids:
            return {}
        if len(ids) == 1:
            doc = self.head(resource_type, ids[0])
            return {doc["_id"]: doc} if doc else {}
        return {d["_id"]: d for d in find_in(self.current(resource_type), "_id", ids, projection=HEAD_PROJECTION)}

    def read_head(self, resource_type: str, rid: str, param: str | None = None) -> dict[str, Any] | None:
        """What a read returns plus the index field ``sp_<param>`` (an access check's), or None."""
        return unpack(self.current(resource_type).find_one({"_id": rid}, _read_projection(param)))

    def read_doc(self, resource_type: str, rid: str) -> dict[str, Any]:
        doc = unpack(self.current(resource_type).find_one({"_id": rid}, {"res": 1, "v": 1, "lu": 1, "del": 1}))
        if doc is None:
            raise not_found(resource_type, rid)
        if doc.get("del"):
            raise gone(resource_type, rid)
        return doc

    def version_doc(self, resource_type: str, rid: str, vid: str,
                    projection: Mapping[str, Any] | None = None) -> dict[str, Any] | None:
        """Version ``vid`` of ``resource_type/rid`` (its history document, unpacked), or None; of a
        :data:`SINGLE_VERSION_TYPES` type, version 1 is its current document and there is no other."""
        if not vid.isdigit() or len(vid) > 18:
            return None
        if resource_type in SINGLE_VERSION_TYPES:
            if int(vid) != 1:
                return None
            return unpack(self.current(resource_type).find_one({"_id": rid}, projection))
        return unpack(self.history(resource_type).find_one({"_id": f"{rid}/{int(vid)}"}, projection))

    def history_docs(self, resource_type: str, flt: dict[str, Any], limit: int) -> list[dict[str, Any]]:
        """The history documents matching ``flt`` (on ``id``, ``lu``, ``_id``), newest first, at most
        ``limit``; of a :data:`SINGLE_VERSION_TYPES` type, its current documents as their version 1's
        (each a create: ``id`` its ``_id``, the keyset's ``_id`` the resource's)."""
        if resource_type not in SINGLE_VERSION_TYPES:
            return list(self.history(resource_type).find(flt).sort([("lu", -1), ("_id", -1)]).limit(limit))
        own = {("_id" if k == "id" else k): v for k, v in flt.items()}
        return [{**d, "id": d["_id"], "m": "POST"} for d in self.current(resource_type).find(
            own, {"res": 1, "v": 1, "lu": 1, "del": 1}).sort([("lu", -1), ("_id", -1)]).limit(limit)]

    def vread_doc(self, resource_type: str, rid: str, vid: str) -> dict[str, Any]:
        doc = self.version_doc(resource_type, rid, vid)
        if doc is None:
            raise no_version(resource_type, rid, vid)
        if doc.get("del"):
            raise FhirError(f"version {vid} of {resource_type}/{rid} is a deletion", status=410, code="deleted")
        return doc

    # ------------------------------------------------------------------ preparing writes

    def _events(self, resource_type: str, verb: str, rid: str, version: int, when: datetime,
                fields: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        if not self.emit_events:
            return []
        return [ev.resource_event(self.service, resource_type, verb, rid, version, when, fields)]

    def _fields(self, resource_type: str, resource: Mapping[str, Any] | None) -> dict[str, Any] | None:
        """The type's summary fields of one version (``{}`` for a deletion); None: the type has none."""
        hook = self.event_fields.get(resource_type) if self.emit_events else None
        if hook is None:
            return None
        return dict(hook(resource)) if resource is not None else {}

    def _fields_of_version(self, resource_type: str, rid: str, version: int) -> dict[str, Any]:
        """The summary fields version ``version``'s event carried (its history document's ``ef``); for
        a version written before the type had fields, the fields of its content."""
        doc = self.history(resource_type).find_one({"_id": f"{rid}/{version}"}, {"ef": 1, "res": 1})
        if doc is not None and isinstance(doc.get("ef"), dict):
            return dict(doc["ef"])
        if doc is None:  # (a current document without its history: an older layout's)
            doc = self.current(resource_type).find_one({"_id": rid, "v": version}, {"res": 1})
        unpacked = unpack(doc)
        res = unpacked.get("res") if unpacked is not None else None
        return self._fields(resource_type, res if isinstance(res, dict) else None) or {}

    def _history_doc(self, resource_type: str, rid: str, version: int, when: datetime, verb: str,
                     resource: dict[str, Any] | None, events: Sequence[Mapping[str, Any]] = (),
                     fields: Mapping[str, Any] | None = None, body: str | None = None) -> dict[str, Any]:
        """The version's history document: the claim of the version, its whole content (a
        roll-forward rebuilds the current document from it), its summary fields (``ef``, when its
        type has them) and its events with the id's bucket. ``body``: ``pack(resource)`` when the
        caller has it already (the current document's: the same text, serialised once)."""
        doc = {"_id": f"{rid}/{version}", "id": rid, "v": version, "lu": when, "del": verb == "deleted",
               "m": {"created": "POST", "updated": "PUT", "deleted": "DELETE"}[verb],
               "res": pack(resource) if body is None else body}
        if fields is not None:
            doc["ef"] = dict(fields)
        if events:
            doc = outbox.new_document({**doc, "b2": bucket_fields(rid)["b2"]}, events)
        return doc

    def prepare_create(self, resource: dict[str, Any], rid: str | None = None,
                       when: datetime | None = None) -> Write:
        """An insert of a new resource (version 1) with a server id unless ``rid`` is given."""
        rtype = resource["resourceType"]
        rid = rid or new_id()
        when = when or now()
        note_type(self.db, rtype)
        stamp(resource, rid, 1, when)
        fields = self._fields(rtype, resource)
        events = self._events(rtype, "created", rid, 1, when, fields)
        body = pack(resource)
        doc = {"_id": rid, "v": 1, "lu": when, "del": False, "res": body,
               **bucket_fields(rid), **index_fields(resource)}
        return Write(rtype, rid, "created", 1, None, when, resource, doc=doc,
                     history=self._history_doc(rtype, rid, 1, when, "created", resource, events, fields, body),
                     events=events,
                     ident_add=unique.held_tokens(resource, self.unique.for_type(rtype)))

    def prepare_update(self, resource: dict[str, Any], rid: str, head: dict[str, Any] | None,
                       when: datetime | None = None) -> Write:
        """The write that makes ``resource`` the next version of ``head`` (or creates it when absent)."""
        if head is None:
            return self.prepare_create(resource, rid, when)
        rtype = resource["resourceType"]
        when = when or now()
        prev = int(head["v"])
        version = prev + 1
        verb = "created" if head.get("del") else "updated"
        stamp(resource, rid, version, when)
        fields = index_fields(resource)
        unset = {k: "" for k in head if k.startswith("sp_") and k not in fields}
        summary = self._fields(rtype, resource)
        said = summary
        if summary is not None and verb == "updated":  # and what the replaced version's event said
            said = {**summary, **ev.previous_fields(self._fields_of_version(rtype, rid, prev))}
        events = self._events(rtype, verb, rid, version, when, said)
        body = pack(resource)
        update: dict[str, Any] = {"$set": {"v": version, "lu": when, "del": False, "res": body,
                                           **bucket_fields(rid), **fields}}
        if unset:
            update["$unset"] = unset
        systems = self.unique.for_type(rtype)
        before, after = unique.head_tokens(head, systems), unique.held_tokens(resource, systems)
        return Write(rtype, rid, verb, version, prev, when, resource, filter={"_id": rid, "v": prev},
                     update=update,
                     history=self._history_doc(rtype, rid, version, when, verb, resource, events, summary, body),
                     events=events, ident_add=after - before, ident_drop=before - after)

    def prepare_delete(self, resource_type: str, rid: str, head: dict[str, Any],
                       when: datetime | None = None) -> Write:
        when = when or now()
        prev = int(head["v"])
        version = prev + 1
        summary = self._fields(resource_type, None)  # a tombstone's: {} (the type has fields), else None
        # the deleted version's fields: what the deletion takes away
        said = None if summary is None else self._fields_of_version(resource_type, rid, prev)
        events = self._events(resource_type, "deleted", rid, version, when, said)
        update: dict[str, Any] = {"$set": {"v": version, "lu": when, "del": True}}
        unset = {k: "" for k in head if k.startswith("sp_")}
        if unset:
            update["$unset"] = unset
        return Write(resource_type, rid, "deleted", version, prev, when, None, filter={"_id": rid, "v": prev},
                     update=update,
                     history=self._history_doc(resource_type, rid, version, when, "deleted", None, events, summary),
                     events=events, ident_drop=unique.head_tokens(head, self.unique.for_type(resource_type)))

    # ------------------------------------------------------------------ applying writes

    def apply(self, w: Write) -> None:
        """Claim ``w``'s version (its history document), then write the current document.

        A lost claim is a 409 (the caller's version is stale); when the claim it lost against is
        older than the grace period (its writer died before its current write), it is rolled
        forward first so the next attempt can succeed.

        Identifiers that must stay unique (unique.py) are claimed before the version (409
        ``duplicate`` naming their holder) and given back if the version is lost; the ones the
        write drops are released once it is stored.
        """
        claimed = self.claim_identifiers(w)
        try:
            self.claim_version(w)
        except BaseException:
            self.unique.release(w.resource_type, w.rid, claimed)
            raise
        if after_claim is not None:
            after_claim(w)
        self.write_current(w)
        self.release_identifiers(w)

    def claim_identifiers(self, w: Write) -> list[str]:
        """Claim the unique identifiers ``w`` adds (409 when another resource holds one), after
        :attr:`before_claim` (only for a write that adds one: one not already on its resource)."""
        if not w.ident_add:
            return []
        if self.before_claim is not None:
            self.before_claim(w)
        return self.unique.claim(w.resource_type, w.rid, w.ident_add)

    def release_identifiers(self, w: Write) -> None:
        """Release the unique identifiers ``w`` dropped (after its version is stored)."""
        if w.ident_drop:
            self.unique.release(w.resource_type, w.rid, w.ident_drop)

    def claim_version(self, w: Write, extra: Mapping[str, Any] | None = None) -> None:
        """Insert ``w``'s history document (plus ``extra`` fields); 409 when the version is taken."""
        try:
            claims.claim(self.history(w.resource_type), w.history["_id"], {**w.history, **(extra or {})})
        except claims.ClaimTaken as taken:
            if taken.holder is not None and is_stale(taken.holder) and not self.txn_open(taken.holder):
                self.roll_forward(w.resource_type, taken.holder)
            what = "created" if w.prev is None else "changed"
            raise FhirError(f"{w.resource_type}/{w.rid} was {what} by someone else meanwhile; "
                            "read it again and retry", status=409, code="conflict") from None

    def txn_open(self, hist: Mapping[str, Any]) -> bool:
        """True when ``hist`` was claimed by a transaction still open (its journal exists):
        its recovery, not a roll-forward, decides what becomes of it."""
        txn = hist.get(TXN)
        return bool(txn) and self.db[JOURNAL_COLLECTION].find_one({"_id": txn}, {"_id": 1}) is not None

    def write_current(self, w: Write) -> None:
        """The current document of a claimed version. Single writer: the winner of the claim
        ``<id>/<v>`` (no one else can claim ``<v+1>`` before this write lands); a roll-forward of
        the same version writes the same content. The filter on the replaced version only keeps
        a winner that stalled past the grace period from writing over a later version."""
        coll = self.current(w.resource_type)
        if w.is_insert:
            try:
                coll.insert_one(w.doc)
            except DuplicateKeyError:  # rolled forward by someone else meanwhile: the same version
                log.info("version already rolled forward", extra={"resource": f"{w.resource_type}/{w.rid}"})
        else:
            coll.update_one(w.filter, w.update)  # matches nothing only when rolled forward meanwhile

    # ------------------------------------------------------------------ rolling forward

    def current_from_history(self, resource_type: str, hist: Mapping[str, Any]) -> dict[str, Any]:
        """The current document of the version a history document holds."""
        rid = hist["id"]
        res = hist.get("res")
        resource = unpack({"res": res})["res"] if res is not None else None  # type: ignore[index]
        doc: dict[str, Any] = {"_id": rid, "v": int(hist["v"]), "lu": hist["lu"], "del": bool(hist.get("del")),
                               "res": pack(resource) if isinstance(resource, dict) else None, **bucket_fields(rid)}
        if isinstance(resource, dict) and not doc["del"]:
            doc.update(index_fields(resource))
        return doc

    def roll_forward(self, resource_type: str, hist: Mapping[str, Any], *, grace: timedelta | None = None) -> bool:
        """Make the version of the history document ``hist`` current unless the current document
        is already there (or further). True when it is current now.

        Exactly one party writes it: the roll-forward is a claim, the next link of the chain
        ``<type>/<id>/<v>`` in ``fhir_rollforward``; a link younger than the grace period means
        someone is at it (False), an older one that its roller died, and the next link is claimed.
        """
        rid, version = hist["id"], int(hist["v"])
        head = self.head(resource_type, rid)
        if head is not None and int(head["v"]) >= version:
            return True
        markers = self.db[ROLLFORWARD_COLLECTION]
        key = f"{resource_type}/{rid}/{version}"
        last = claims.latest(markers, key)
        if last is not None and not is_stale(last, grace):
            return False
        try:
            claims.advance(markers, key, last, {})
        except claims.ClaimTaken:
            return False
        if "res" not in hist:
            full = self.history(resource_type).find_one({"_id": hist["_id"]})
            if full is None:
                return False
            hist = full
        doc = self.current_from_history(resource_type, hist)
        # single writer: the holder of the marker just claimed (the version's own writer is
        # presumed dead); the filter keeps a later version that landed meanwhile
        try:
            self.current(resource_type).replace_one({"_id": rid, "v": {"$lt": version}}, doc, upsert=True)
        except DuplicateKeyError:  # the current document is at this version or later already
            pass
        log.warning("rolled a version forward", extra={"resource": f"{resource_type}/{rid}", "version": version})
        return True

    def ensure_current(self, resource_type: str, rid: str, version: int) -> None:
        """Make the claimed version ``version`` of ``resource_type/rid`` current when a write was cut off
        between its claim (the history document) and its current document: nothing when no such claim
        exists or the current document is at it or later; rolled forward (:meth:`roll_forward`) once the
        claim is older than the grace period and no open transaction holds it (its writer presumed dead);
        before that a 409 "try again" (its writer may still be at it). For a caller that lost a claim
        and goes on as if the version were stored: an event's redelivery, whose consumer retries it
        (the bus's retry tiers outlast the grace period), in a service whose relay does not roll its
        versions forward (no events in its history documents: ``emit_events=False``)."""
        head = self.head(resource_type, rid)
        if head is not None and int(head["v"]) >= version:
            return
        hist = self.history(resource_type).find_one({"_id": f"{rid}/{version}"})
        if hist is None:
            return
        if is_stale(hist) and not self.txn_open(hist) and self.roll_forward(resource_type, hist):
            return
        raise FhirError(f"{resource_type}/{rid} version {version} is being written; try again", status=409,
                        code="conflict")

    # ------------------------------------------------------------------ conditional creates

    def condition_link(self, resource_type: str,
                       params: Iterable[tuple[str, str]]) -> tuple[str, dict[str, Any] | None]:
        """The key of a conditional create's criteria and the newest claim made on it, read before
        the caller searches. Whether that claim's resource had landed is read here too (``LANDED``),
        before the search: a resource landing between the search and a later look would make an
        empty search look conclusive, and a second create would follow (two racing conditional
        creates then made two resources)."""
        key = condition_key(resource_type, params)
        link = claims.latest(self.db[CONDITIONS_COLLECTION], key)
        if link is not None and not is_stale(link) and link.get("rid") is not None:
            link = {**link, LANDED: self.head(resource_type, str(link.get("rid"))) is not None}
        return key, link

    def condition_busy(self, resource_type: str, link: Mapping[str, Any] | None) -> bool:
        """True while the create that claimed ``link`` may still be writing its resource: it had not
        landed when the link was read (:meth:`condition_link`), before the search that found nothing."""
        if link is None or is_stale(link) or link.get("rid") is None:  # none, or given back
            return False
        landed = link.get(LANDED)
        if landed is None:
            landed = self.head(resource_type, str(link.get("rid"))) is not None
        return not landed

    def claim_condition(self, key: str, link: Mapping[str, Any] | None, rid: str) -> dict[str, Any] | None:
        """Claim the right to create ``rid`` for the criteria ``key`` after ``link`` (the newest
        claim the caller saw before searching and finding nothing): the claim made, or None when
        someone else did."""
        try:
            return claims.advance(self.db[CONDITIONS_COLLECTION], key, link, {"rid": rid})
        except claims.ClaimTaken:
            return None

    def release_condition(self, key: str, claimed: Mapping[str, Any]) -> None:
        """The create that made the claim ``claimed`` wrote nothing (refused: an identifier another
        resource holds, a service's rule): a release link after it, so the criteria are free at
        once, not busy (:meth:`condition_busy`) for the grace period. Lost to a racing writer that
        already passed over it: nothing left to release."""
        try:
            claims.advance(self.db[CONDITIONS_COLLECTION], key, claimed, {"rid": None})
        except claims.ClaimTaken:
            pass

    # ------------------------------------------------------------------ interactions

    def create(self, resource: dict[str, Any], rid: str | None = None) -> Write:
        w = self.prepare_create(resource, rid)
        self.apply(w)
        return w

    def create_once(self, resource: dict[str, Any], rid: str) -> tuple[bool, dict[str, Any]]:
        """Create ``resource`` as version 1 of the fixed id ``rid`` unless that id was ever claimed:
        ``(True, the resource)`` for the winner, ``(False, the resource as it stands)`` for everyone
        after it (an event's redelivery, a racing consumer). The loser reads the current document,
        or, while the winner has claimed version 1 but not yet written it, that claim itself (the
        history document holds the whole version), and makes it current: the insert of the document
        the winner inserts, under the same ``_id`` (a duplicate key is that document there, or a later
        version, which an insert never overwrites; the winner's own insert finds it the same way). So
        the resource a loser answers can be read at once (a twin create of an invoice, then its issue,
        read no current document and answered 404). Not for a version an open transaction claimed
        (its recovery may undo it)."""
        rtype = resource["resourceType"]
        try:
            return True, self.create(resource, rid).resource  # type: ignore[return-value]
        except FhirError as err:
            if err.status != 409:
                raise
        doc = unpack(self.current(rtype).find_one({"_id": rid}, {"res": 1, "del": 1}))
        if doc is None:
            hist = self.history(rtype).find_one({"_id": f"{rid}/1"})
            if hist is not None and not hist.get("del") and hist.get("res") is not None and not hist.get(TXN):
                try:
                    self.current(rtype).insert_one(self.current_from_history(rtype, hist))
                except DuplicateKeyError:
                    pass  # the winner's insert (or a roll-forward, or another loser's) came first
            doc = unpack(hist)
        if doc is None or doc.get("del") or doc.get("res") is None:
            raise FhirError(f"{rtype}/{rid} was deleted", status=409, code="conflict")
        return False, doc["res"]

    def update(self, resource: dict[str, Any], rid: str, if_match: int | None = None) -> Write:
        rtype = resource["resourceType"]
        head = self.head(rtype, rid)
        check_version(rtype, rid, head, if_match)
        w = self.prepare_update(resource, rid, head)
        try:
            self.apply(w)
        except FhirError as err:
            # a lost version claim; an identifier another resource holds is its own 409 (unique.duplicate)
            if err.status == 409 and if_match is not None and err.code != "duplicate":
                raise FhirError(f"{rtype}/{rid} is no longer at version {if_match}", status=412,
                                code="conflict") from None
            raise
        return w

    def delete(self, resource_type: str, rid: str, if_match: int | None = None) -> Write | None:
        """Delete (a tombstone version); None when there was nothing to delete."""
        head = self.head(resource_type, rid)
        check_version(resource_type, rid, head, if_match)
        if head is None or head.get("del"):
            return None
        w = self.prepare_delete(resource_type, rid, head)
        try:
            self.apply(w)
        except FhirError as err:
            if err.status == 409 and if_match is not None:
                raise FhirError(f"{resource_type}/{rid} is no longer at version {if_match}", status=412,
                                code="conflict") from None
            raise
        return w


def condition_key(resource_type: str, params: Iterable[tuple[str, str]]) -> str:
    """``<type>?<query>`` with the parameters sorted (and ``_format``/``_pretty`` dropped).

    Claiming this key serializes conditional creates whose criteria are written the same way
    (same parameters and values, in any order): of two racing ``If-None-Exist: identifier=x``,
    one creates and the other finds it. It does not serialize different criteria that match
    the same resource (``identifier=x`` against ``identifier=x&name=y``), nor a plain create or
    update that makes a resource match meanwhile: those can still yield two matches, which the
    next conditional interaction reports (412).
    """
    kept = sorted((k, v) for k, v in params if k not in ("_format", "_pretty"))
    return f"{resource_type}?{urlencode(kept)}"


class HistoryGate:
    """The outbox relay's check on the pending history documents of one resource type: a
    version whose current write has not landed is held back while its claim is young, and
    rolled forward once it is older than the grace period, before its events go out; the claims
    of a transaction wait while its journal exists (one lookup per transaction in the batch)."""

    fields = ("id", "v", "at", "lu", TXN)

    def __init__(self, db: Database, resource_type: str, *, grace: timedelta | None = None) -> None:
        self.store = Store(db)
        self.resource_type = resource_type
        self.grace = grace

    def __call__(self, docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if not docs:
            return docs
        docs = sorted(docs, key=lambda d: (str(d.get("id")), int(d.get("v") or 0)))  # a resource's versions in order
        open_txns = self._open_transactions({d.get(TXN) for d in docs} - {None})
        docs = self._drop_rolled_back(docs, open_txns)
        # a transaction's claim whose journal is gone needs no look at the current document: the
        # journal is deleted only after every current write of the transaction landed
        ids = [str(d["id"]) for d in docs if "id" in d and not d.get(TXN)]
        heads: dict[str, int] = {}
        coll = self.store.current(self.resource_type)
        for start in range(0, len(ids), FIND_IN_MAX_EQUALITIES):  # equalities, never a scanning $in
            for h in find_in(coll, "_id", ids[start:start + FIND_IN_MAX_EQUALITIES], projection={"v": 1}):
                heads[h["_id"]] = int(h["v"])
        ready: list[dict[str, Any]] = []
        for d in docs:
            if d.get(TXN) in open_txns:
                continue  # an open transaction's claim: published once the transaction is through
            if d.get(TXN) or "id" not in d or heads.get(d["id"], 0) >= int(d["v"]):
                ready.append(d)
            elif is_stale(d, self.grace) and self.store.roll_forward(self.resource_type, d, grace=self.grace):
                heads[d["id"]] = int(d["v"])
                ready.append(d)
            # else: its writer is probably between its claim and its current write: next pass
        return ready


    def _drop_rolled_back(self, docs: list[dict[str, Any]], open_txns: set[Any]) -> list[dict[str, Any]]:
        """Keep a closed transaction's claim only if it is still there, still its transaction's.

        The relay read these documents before it looked the journals up. A transaction that lost
        a claim deletes its claims and then its journal: a claim read before that rollback and
        judged after it would find its journal gone and be published, an event of a version that
        was never written (and the same version, claimed again by another writer, would carry
        another event). Looked up after the journals, a claim still there with its ``txn`` was
        committed: a rollback deletes the claims before the journal."""
        closed = [d for d in docs if d.get(TXN) and d.get(TXN) not in open_txns]
        if not closed:
            return docs
        hist = self.store.history(self.resource_type)
        hids = [d["_id"] for d in closed]
        still = {h["_id"]: h.get(TXN)
                 for start in range(0, len(hids), FIND_IN_MAX_EQUALITIES)  # equalities, never a scanning $in
                 for h in find_in(hist, "_id", hids[start:start + FIND_IN_MAX_EQUALITIES], projection={TXN: 1})}
        return [d for d in docs if not d.get(TXN) or d.get(TXN) in open_txns or still.get(d["_id"]) == d.get(TXN)]

    def _open_transactions(self, txns: set[Any]) -> set[Any]:
        """The journals among ``txns`` that still exist; one left by a dead process (older than
        bundle.RECOVER_AFTER) is recovered here, so its events do not wait for the next bundle."""
        from .bundle import RECOVER_AFTER, recover  # bundle imports this module

        journals = self.store.db[JOURNAL_COLLECTION]
        found = {j["_id"]: j for t in txns for j in journals.find({"_id": t}, {"at": 1})}
        if any(is_stale(j, RECOVER_AFTER) for j in found.values()):
            recover(self.store)
            found = {j["_id"]: j for t in found for j in journals.find({"_id": t}, {"_id": 1})}
        return set(found)


def history_collection(resource_type: str) -> str:
    return resource_type + HISTORY_SUFFIX


def relay_targets(db: Database, names: Sequence[str], *,
                  grace: timedelta | None = None) -> tuple[list[str], dict[str, HistoryGate]]:
    """The collections an outbox relay polls for ``names`` (what a service registers): a name
    that is a FHIR resource type (capitalized, as every FHIR type is) stands for its history
    collection, which carries the type's events, with its :class:`HistoryGate`; any other
    collection (``payments``, ``consult_steps``, ...) is polled as it is."""
    collections: list[str] = []
    gates: dict[str, HistoryGate] = {}
    for name in names:
        if name[:1].isupper() and not name.endswith(HISTORY_SUFFIX):
            hist = history_collection(name)
            collections.append(hist)
            gates[hist] = HistoryGate(db, name, grace=grace)
        else:
            collections.append(name)
    return list(dict.fromkeys(collections)), gates


def check_version(resource_type: str, rid: str, head: dict[str, Any] | None, if_match: int | None) -> None:
    """412 when ``If-Match`` names another version than the current one."""
    if if_match is None:
        return
    current = None if head is None or head.get("del") else int(head["v"])
    if current != if_match:
        raise FhirError(f"{resource_type}/{rid} is at version {current if current is not None else 'none'}, "
                        f"not {if_match if if_match >= 0 else 'the one given'}: read it again",
                        status=412, code="conflict")
