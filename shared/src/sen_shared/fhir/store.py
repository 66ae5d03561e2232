"""Versioned FHIR storage on MongoDB, without multi-document transactions.

Each current resource is one document in the collection named after its type::

    {"_id": id, "v": 3, "lu": datetime, "del": False, "res": "{...FHIR JSON text...}",
     "b2": "3f", "b4": "0f", "b1": "3", "sp_*": index values, "outbox": [...], "outbox_pending": True}

(``b2``/``b4``/``b1``: the id's buckets, the default search order; see search/buckets.py.)

The body ``res`` is the resource's compact JSON text (:func:`pack`), not a sub-document:
searches read only the ``sp_*`` index fields, never the body, so nothing is lost by keeping
it opaque, and a text is one value for the database to store, decode and send where a
sub-document is one per element (FerretDB's cost per document grows with its values; a
Patient's body is ~20 of them). HAPI FHIR keeps its resource text the same way. Code that
reads documents calls :func:`unpack`, which also accepts a body stored as a sub-document by
an earlier version (``backfill`` converts those).

Every version (deletes included, as tombstones with ``res: None``) is also a
document of ``<Type>_history`` with ``_id = "<id>/<v>"``. One current version
per resource is guarded by the version in the update's filter
(``{"_id": id, "v": expected}``); the unique ``_id`` of the history guards
two writers racing to the same version. The index fields and the outbox
entries travel in the same single-document update as the resource.

The ``prepare_*`` functions build the writes without I/O so the bundle engine
can check a whole transaction first and apply it afterwards (the one exception:
:func:`note_type`, once per type and process).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pymongo import UpdateOne
from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError

from ..ids import new_uuid
from ..mongo import FIND_IN_MAX_EQUALITIES, async_database, bulk_update, find_in, read_slot
from . import events as ev
from .body import pack, unpack
from .outcome import FhirError
from .search.buckets import bucket_fields
from .search.extract import index_fields
from .store_time import iso, now

HISTORY_SUFFIX = "_history"
HEAD_PROJECTION = {"res": 0, "outbox": 0}
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
    return fixed


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
        for doc in find_in(coll, "_id", ids[start:start + step], projection={"del": 1, "res": 1, "sp_missing": 1}):
            res = doc.get("res")
            update: dict[str, Any] = {"$set": {"res": pack(res)} if isinstance(res, dict) else {}}
            if not history:
                update["$set"].update(bucket_fields(doc["_id"]))
                if "sp_missing" in doc:
                    fields = index_fields(unpack(doc)["res"]) if not doc.get("del") and doc.get("res") else {}
                    update["$set"].update(fields)
                    update["$unset"] = {k: "" for k in ("sp_missing", "sp_present") if k not in fields}
            if update["$set"]:
                batch.append(UpdateOne({"_id": doc["_id"]}, update))
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

    def __init__(self, db: Database, *, service: str = "fhir", emit_events: bool = True) -> None:
        self.db = db
        self.service = service
        self.emit_events = emit_events

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

    async def aread_head(self, resource_type: str, rid: str, param: str | None = None) -> dict[str, Any] | None:
        """:meth:`read_head` awaited on the event loop (``mongo.async_database``, within ``mongo.read_slot``);
        a database that has no asyncio twin is read the blocking way."""
        twin = async_database(self.db)
        if twin is None:
            return self.read_head(resource_type, rid, param)
        # the find command itself, not find_one: no cursor to build and close (30 µs of the 250 of
        # Python the awaited find_one took); the database's read preference and codecs, as find_one
        command = {"find": resource_type, "filter": {"_id": rid}, "projection": _read_projection(param),
                   "limit": 1, "singleBatch": True}
        async with read_slot():
            reply = await twin.command(command, read_preference=twin.read_preference,
                                       codec_options=twin.codec_options)
        batch = reply["cursor"]["firstBatch"]
        return unpack(batch[0] if batch else None)

    def read_doc(self, resource_type: str, rid: str) -> dict[str, Any]:
        doc = unpack(self.current(resource_type).find_one({"_id": rid}, {"res": 1, "v": 1, "lu": 1, "del": 1}))
        if doc is None:
            raise not_found(resource_type, rid)
        if doc.get("del"):
            raise gone(resource_type, rid)
        return doc

    def vread_doc(self, resource_type: str, rid: str, vid: str) -> dict[str, Any]:
        if not vid.isdigit() or len(vid) > 18:
            raise FhirError(f"{resource_type}/{rid} has no version {vid}", status=404)
        doc = unpack(self.history(resource_type).find_one({"_id": f"{rid}/{int(vid)}"}))
        if doc is None:
            raise FhirError(f"{resource_type}/{rid} has no version {vid}", status=404)
        if doc.get("del"):
            raise FhirError(f"version {vid} of {resource_type}/{rid} is a deletion", status=410, code="deleted")
        return doc

    # ------------------------------------------------------------------ preparing writes

    def _events(self, resource_type: str, verb: str, rid: str, version: int, when: datetime) -> list[dict[str, Any]]:
        if not self.emit_events:
            return []
        return [ev.resource_event(self.service, resource_type, verb, rid, version, when)]

    def _history_doc(self, resource_type: str, rid: str, version: int, when: datetime, verb: str,
                     resource: dict[str, Any] | None) -> dict[str, Any]:
        return {"_id": f"{rid}/{version}", "id": rid, "v": version, "lu": when, "del": verb == "deleted",
                "m": {"created": "POST", "updated": "PUT", "deleted": "DELETE"}[verb], "res": pack(resource)}

    def prepare_create(self, resource: dict[str, Any], rid: str | None = None,
                       when: datetime | None = None) -> Write:
        """An insert of a new resource (version 1) with a server id unless ``rid`` is given."""
        rtype = resource["resourceType"]
        rid = rid or new_id()
        when = when or now()
        note_type(self.db, rtype)
        stamp(resource, rid, 1, when)
        events = self._events(rtype, "created", rid, 1, when)
        doc = ev.new_document({"_id": rid, "v": 1, "lu": when, "del": False, "res": pack(resource),
                               **bucket_fields(rid), **index_fields(resource)}, events)
        return Write(rtype, rid, "created", 1, None, when, resource, doc=doc,
                     history=self._history_doc(rtype, rid, 1, when, "created", resource), events=events)

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
        events = self._events(rtype, verb, rid, version, when)
        update: dict[str, Any] = {"$set": {"v": version, "lu": when, "del": False, "res": pack(resource),
                                           **bucket_fields(rid), **fields}}
        if unset:
            update["$unset"] = unset
        update = ev.with_events(update, events)
        return Write(rtype, rid, verb, version, prev, when, resource, filter={"_id": rid, "v": prev},
                     update=update, history=self._history_doc(rtype, rid, version, when, verb, resource),
                     events=events)

    def prepare_delete(self, resource_type: str, rid: str, head: dict[str, Any],
                       when: datetime | None = None) -> Write:
        when = when or now()
        prev = int(head["v"])
        version = prev + 1
        events = self._events(resource_type, "deleted", rid, version, when)
        update: dict[str, Any] = {"$set": {"v": version, "lu": when, "del": True}}
        unset = {k: "" for k in head if k.startswith("sp_")}
        if unset:
            update["$unset"] = unset
        update = ev.with_events(update, events)
        return Write(resource_type, rid, "deleted", version, prev, when, None, filter={"_id": rid, "v": prev},
                     update=update, history=self._history_doc(resource_type, rid, version, when, "deleted", None),
                     events=events)

    # ------------------------------------------------------------------ applying writes

    def apply(self, w: Write) -> None:
        """Apply one prepared write; a lost race is a 409 (the caller's version is stale)."""
        if w.is_insert:
            try:
                self.current(w.resource_type).insert_one(w.doc)
            except DuplicateKeyError:
                raise FhirError(f"{w.resource_type}/{w.rid} was created by someone else meanwhile; retry",
                                status=409, code="conflict") from None
        else:
            res = self.current(w.resource_type).update_one(w.filter, w.update)
            if res.matched_count == 0:
                raise FhirError(f"{w.resource_type}/{w.rid} was changed by someone else meanwhile; "
                                "read it again and retry", status=409, code="conflict")
        try:
            self.history(w.resource_type).insert_one(w.history)
        except DuplicateKeyError:
            # a leftover of an interrupted write of the same version: the current document wins
            self.history(w.resource_type).replace_one({"_id": w.history["_id"]}, w.history)

    # ------------------------------------------------------------------ interactions

    def create(self, resource: dict[str, Any], rid: str | None = None) -> Write:
        w = self.prepare_create(resource, rid)
        self.apply(w)
        return w

    def update(self, resource: dict[str, Any], rid: str, if_match: int | None = None) -> Write:
        rtype = resource["resourceType"]
        head = self.head(rtype, rid)
        check_version(rtype, rid, head, if_match)
        w = self.prepare_update(resource, rid, head)
        try:
            self.apply(w)
        except FhirError as err:
            if err.status == 409 and if_match is not None:
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
        self.apply(w)
        return w


def check_version(resource_type: str, rid: str, head: dict[str, Any] | None, if_match: int | None) -> None:
    """412 when ``If-Match`` names another version than the current one."""
    if if_match is None:
        return
    current = None if head is None or head.get("del") else int(head["v"])
    if current != if_match:
        raise FhirError(f"{resource_type}/{rid} is at version {current if current is not None else 'none'}, "
                        f"not {if_match if if_match >= 0 else 'the one given'}: read it again",
                        status=412, code="conflict")
