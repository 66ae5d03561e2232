"""Batch and transaction Bundles; transactions are all-or-nothing without multi-document transactions.

A transaction is checked whole before anything is written: every entry parsed,
conditional creates/updates/deletes and conditional references resolved,
``urn:uuid`` references rewritten to the ids assigned, every resource
validated, every ``ifMatch`` compared. Then a journal document (``_journal``)
records each write (type, id, version replaced, version written, its event
ids) and the writes are applied: inserts with one ``insert_many`` per type,
updates one by one guarded by the version they replace, history with one
``insert_many`` per type. The journal is deleted at the end.

If anything fails on the way, :func:`rollback` undoes the writes the journal
lists (a created document is deleted, an updated one restored from its
previous history version, each only if it still holds the version this
transaction wrote) together with their outbox entries. A process that dies
mid-way leaves its journal behind; :func:`recover` (run by the next process
before its first bundle, or by hand) rolls such journals back.
"""

from __future__ import annotations

import logging
import re
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo.errors import BulkWriteError, DuplicateKeyError, PyMongoError

from . import store as st
from .http import FhirRequest, FhirResponse, parse_query
from .outcome import FhirError
from .search.buckets import bucket_fields
from .search.extract import index_fields
from .validate import check_id, validate_resource

log = logging.getLogger("sen.fhir.bundle")

JOURNAL = "_journal"
RECOVER_AFTER = timedelta(seconds=60)
MAX_ENTRIES = 10_000
_STATUS_TEXT = {200: "200 OK", 201: "201 Created", 204: "204 No Content", 304: "304 Not Modified"}
_CONDITIONAL_REF = re.compile(r"^[A-Z][A-Za-z]{1,63}\?")
_METHOD_ORDER = {"DELETE": 0, "POST": 1, "PUT": 2, "PATCH": 2, "GET": 3, "HEAD": 3}

_recovered_dbs: set[str] = set()


@dataclass
class Target:
    """Where a bundle entry's request points: ``Type``, ``Type/id``, ``Type/id/_history/v``, ``Type?query``."""

    resource_type: str | None
    rid: str | None = None
    vid: str | None = None
    tail: str | None = None  # "_history", "$everything", "_search", ...
    params: list[tuple[str, str]] = field(default_factory=list)
    has_query: bool = False


def parse_url(url: Any, base: str, where: str) -> Target:
    if not isinstance(url, str) or not url:
        raise FhirError("the entry's request needs a url", status=400, expression=[where])
    if base and url.startswith(base + "/"):
        url = url[len(base) + 1:]
    path, q, query = url.partition("?")
    parts = [p for p in path.strip("/").split("/") if p]
    t = Target(None, params=parse_query(query) if q else [], has_query=bool(q))
    if not parts:
        return t
    t.resource_type = parts[0]
    if len(parts) >= 2:
        if parts[1].startswith(("_", "$")):
            t.tail = parts[1]
        else:
            t.rid = check_id(parts[1], where)
    if len(parts) >= 3:
        t.tail = parts[2]
    if len(parts) == 4 and parts[2] == "_history":
        t.vid = parts[3]
    if len(parts) > 4:
        raise FhirError(f"cannot process the url {url!r}", status=400, expression=[where])
    return t


def _status_line(status: int) -> str:
    return _STATUS_TEXT.get(status, str(status))


def _entry_from_response(resp: FhirResponse, minimal: bool) -> dict[str, Any]:
    r: dict[str, Any] = {"status": _status_line(resp.status)}
    h = resp.headers
    loc = h.get("Location") or h.get("Content-Location")
    if loc:
        r["location"] = loc
    if "ETag" in h:
        r["etag"] = h["ETag"]
    if "Last-Modified" in h:
        r["lastModified"] = h["Last-Modified"]
    entry: dict[str, Any] = {"response": r}
    if resp.body is not None:
        if resp.status >= 400 or resp.body.get("resourceType") == "OperationOutcome":
            r["outcome"] = resp.body
        elif not minimal:
            entry["resource"] = resp.body
    return entry


def dispatch(server: Any, req: FhirRequest, method: str, target: Target, resource: Any) -> FhirResponse:
    """Run one entry's interaction as if it came over HTTP (batch entries, transaction reads)."""
    sub = server.copy_request(req, method=method, resource_type=target.resource_type, rid=target.rid,
                              vid=target.vid, params=target.params, body=resource, operation=None,
                              compartment=None)
    tail = target.tail
    if method in ("GET", "HEAD"):
        if target.resource_type is None:
            return server.history(sub) if tail == "_history" else server.capabilities(sub)
        if target.rid and tail == "$everything" and target.resource_type == "Patient":
            return server.everything(sub)
        if target.rid and tail == "_history" and target.vid:
            return server.vread(sub)
        if tail == "_history":
            return server.history(sub)
        if target.rid and tail is None:
            return server.read(sub)
        if target.rid is None and tail is None:
            return server.search(sub)
        if target.resource_type == "Patient" and target.rid and tail and tail[0].isupper():
            sub.compartment, sub.resource_type, sub.rid = ("Patient", target.rid), tail, None
            return server.compartment_search(sub)
    elif method == "POST" and target.rid is None and tail is None and target.resource_type:
        return server.create(sub)
    elif method == "POST" and tail == "$validate":
        return server.validate(sub)
    elif method == "PUT" and target.rid and tail is None:
        return server.update(sub)
    elif method == "PUT" and target.rid is None and target.has_query:
        return server.conditional_update(sub)
    elif method == "PATCH" and target.rid and tail is None:
        return server.patch(sub)
    elif method == "DELETE" and target.rid and tail is None:
        return server.delete(sub)
    raise FhirError(f"{method} {target.resource_type or ''} is not an interaction this server handles in a bundle",
                    status=400, code="not-supported")


# --------------------------------------------------------------------------- entry point

def process_bundle(server: Any, req: FhirRequest) -> FhirResponse:
    body = req.body
    if not isinstance(body, dict) or body.get("resourceType") != "Bundle":
        raise FhirError("POST [base] takes a Bundle of type batch or transaction", status=400,
                        expression=["Bundle"])
    btype = body.get("type")
    if btype not in ("batch", "transaction"):
        raise FhirError("the Bundle's type must be batch or transaction", status=400, expression=["Bundle.type"])
    entries = body.get("entry") or []
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise FhirError("Bundle.entry must be a list of objects", status=400, expression=["Bundle.entry"])
    if len(entries) > MAX_ENTRIES:
        raise FhirError(f"a bundle may hold at most {MAX_ENTRIES} entries", status=413, code="too-costly")
    db = server.db
    if db.name not in _recovered_dbs:
        _recovered_dbs.add(db.name)
        recover(server.store())
    minimal = (req.prefer("return") or "").lower() == "minimal"
    if btype == "batch":
        out = [_batch_entry(server, req, e, i, minimal) for i, e in enumerate(entries)]
        return FhirResponse(200, {"resourceType": "Bundle", "type": "batch-response", "entry": out})
    return Transaction(server, req, entries, minimal).run()


def _batch_entry(server: Any, req: FhirRequest, entry: dict[str, Any], i: int, minimal: bool) -> dict[str, Any]:
    where = f"Bundle.entry[{i}]"
    try:
        request = entry.get("request")
        if not isinstance(request, dict):
            raise FhirError("the entry needs a request", status=400, expression=[f"{where}.request"])
        method = str(request.get("method", "")).upper()
        target = parse_url(request.get("url"), req.base, f"{where}.request.url")
        sub_headers = dict(req.headers)
        for key, header in (("ifMatch", "if-match"), ("ifNoneExist", "if-none-exist"),
                            ("ifNoneMatch", "if-none-match")):
            sub_headers.pop(header, None)
            if isinstance(request.get(key), str):
                sub_headers[header] = request[key]
        sub = server.copy_request(req, headers=sub_headers)
        resp = dispatch(server, sub, method, target, entry.get("resource"))
        return _entry_from_response(resp, minimal)
    except FhirError as err:
        return {"response": {"status": str(err.status), "outcome": err.to_outcome()}}


# --------------------------------------------------------------------------- transactions

@dataclass
class Planned:
    index: int
    method: str
    target: Target
    resource: dict[str, Any] | None = None
    rid: str | None = None
    write: st.Write | None = None
    answer: FhirResponse | None = None  # entries answered without a write (GET, matched conditional create)
    if_match: int | None = None
    noop_status: int = 200


class Transaction:
    def __init__(self, server: Any, req: FhirRequest, entries: list[dict[str, Any]], minimal: bool) -> None:
        self.server = server
        self.req = req
        self.entries = entries
        self.minimal = minimal
        self.store: st.Store = server.store()
        self.refs: dict[str, str] = {}  # fullUrl → Type/id

    def run(self) -> FhirResponse:
        plans = self.plan()
        self.check(plans)
        writes = [p.write for p in plans if p.write is not None]
        if writes:
            apply_writes(self.store, writes, hook=self.server.after_write)
        out: list[dict[str, Any] | None] = [None] * len(plans)
        for p in plans:
            if p.method in ("GET", "HEAD"):
                try:
                    p.answer = dispatch(self.server, self.req, p.method, p.target, None)
                except FhirError as err:
                    p.answer = FhirResponse(err.status, err.to_outcome())
            out[p.index] = self._response(p)
        return FhirResponse(200, {"resourceType": "Bundle", "type": "transaction-response", "entry": out})

    def _response(self, p: Planned) -> dict[str, Any]:
        if p.answer is not None:
            return _entry_from_response(p.answer, self.minimal)
        w = p.write
        if w is None:
            return {"response": {"status": _status_line(p.noop_status)}}
        r = {"status": _status_line(201 if w.verb == "created" else 204 if w.verb == "deleted" else 200),
             "etag": st.etag(w.version), "lastModified": st.iso(w.when)}
        if w.verb != "deleted":
            r["location"] = f"{w.resource_type}/{w.rid}/_history/{w.version}"
        entry: dict[str, Any] = {"response": r}
        if w.resource is not None and not self.minimal:
            entry["resource"] = w.resource
        return entry

    # ---------------------------------------------------------------- check phase

    def plan(self) -> list[Planned]:
        plans: list[Planned] = []
        server = self.server
        for i, entry in enumerate(self.entries):
            where = f"Bundle.entry[{i}]"
            request = entry.get("request")
            if not isinstance(request, dict):
                raise FhirError("every transaction entry needs a request", status=400,
                                expression=[f"{where}.request"])
            method = str(request.get("method", "")).upper()
            if method not in _METHOD_ORDER:
                raise FhirError(f"unknown method {method!r}", status=400, expression=[f"{where}.request.method"])
            target = parse_url(request.get("url"), self.req.base, f"{where}.request.url")
            p = Planned(i, method, target)
            if method in ("GET", "HEAD"):
                if target.resource_type is not None:
                    server.check_type(target.resource_type)
                if target.tail not in (None, "_history", "$everything"):
                    raise FhirError(f"cannot read {request.get('url')!r} in a transaction", status=400,
                                    expression=[f"{where}.request.url"])
                plans.append(p)
                continue
            rtype = server.check_type(target.resource_type)
            server.check_writable(rtype)
            if method == "PATCH":
                raise FhirError("PATCH inside a transaction is not supported; use PUT", status=400,
                                code="not-supported", expression=[f"{where}.request.method"])
            if method in ("POST", "PUT"):
                resource = entry.get("resource")
                if not isinstance(resource, dict):
                    raise FhirError("the entry needs a resource", status=400, expression=[f"{where}.resource"])
                if resource.get("resourceType") != rtype:
                    raise FhirError(f"the resource is not a {rtype}", status=400,
                                    expression=[f"{where}.resource.resourceType"])
                p.resource = resource
            if isinstance(request.get("ifMatch"), str):
                p.if_match = st.parse_etag(request["ifMatch"])
            if method == "POST":
                if target.rid or target.tail:
                    raise FhirError("POST in a transaction creates: its url is the type", status=400,
                                    expression=[f"{where}.request.url"])
                cond = request.get("ifNoneExist")
                if isinstance(cond, str) and cond:
                    ids = server.match_ids(rtype, cond.lstrip("?"))
                    if len(ids) > 1:
                        raise FhirError("ifNoneExist matches more than one resource", status=412,
                                        expression=[f"{where}.request.ifNoneExist"])
                    if ids:
                        p.rid = ids[0]
                        p.noop_status = 200
                        self._map(entry, rtype, ids[0])
                        p.resource = None
                        p.answer = self._existing(rtype, ids[0])
                        plans.append(p)
                        continue
                p.rid = st.new_id()
            elif method == "PUT":
                if target.rid:
                    p.rid = target.rid
                    if p.resource.get("id") not in (None, target.rid):  # type: ignore[union-attr]
                        raise FhirError("the resource's id differs from the url's", status=400,
                                        expression=[f"{where}.resource.id"])
                elif target.has_query:
                    ids = server.match_ids(rtype, target.params)
                    if len(ids) > 1:
                        raise FhirError("the conditional update matches more than one resource", status=412,
                                        expression=[f"{where}.request.url"])
                    given = p.resource.get("id")  # type: ignore[union-attr]
                    p.rid = ids[0] if ids else (given if isinstance(given, str) else st.new_id())
                else:
                    raise FhirError("PUT needs Type/id or Type?search", status=400, expression=[f"{where}.request.url"])
            elif method == "DELETE":
                if target.rid:
                    p.rid = target.rid
                elif target.has_query:
                    ids = server.match_ids(rtype, target.params)
                    if len(ids) > 1:
                        raise FhirError("the conditional delete matches more than one resource", status=412,
                                        expression=[f"{where}.request.url"])
                    p.rid = ids[0] if ids else None
                    p.noop_status = 204
                else:
                    raise FhirError("DELETE needs Type/id or Type?search", status=400,
                                    expression=[f"{where}.request.url"])
            if p.rid is not None:
                self._map(entry, rtype, p.rid)
            plans.append(p)
        return plans

    def _existing(self, rtype: str, rid: str) -> FhirResponse:
        doc = self.store.read_doc(rtype, rid)
        return FhirResponse(200, doc["res"], {"Location": f"{rtype}/{rid}/_history/{doc['v']}",
                                              "ETag": st.etag(doc["v"]), "Last-Modified": st.iso(doc["lu"])})

    def _map(self, entry: dict[str, Any], rtype: str, rid: str) -> None:
        full = entry.get("fullUrl")
        if isinstance(full, str) and full:
            self.refs[full] = f"{rtype}/{rid}"
            if not full.startswith(("urn:uuid:", "urn:oid:")):
                self.refs.setdefault(f"{rtype}/{rid}", f"{rtype}/{rid}")

    def check(self, plans: list[Planned]) -> None:
        seen: dict[tuple[str, str], int] = {}
        heads_wanted: dict[str, list[str]] = {}
        for p in plans:
            if p.method in ("GET", "HEAD") or p.rid is None or p.answer is not None:
                continue
            key = (p.target.resource_type or "", p.rid)
            if key in seen:
                raise FhirError(f"{key[0]}/{key[1]} is the target of entries {seen[key]} and {p.index}",
                                status=400, expression=[f"Bundle.entry[{p.index}].request.url"])
            seen[key] = p.index
            if p.method in ("PUT", "DELETE"):
                heads_wanted.setdefault(key[0], []).append(p.rid)
        heads: dict[tuple[str, str], dict[str, Any]] = {}
        for rtype, ids in heads_wanted.items():
            for rid, doc in self.store.heads(rtype, ids).items():
                heads[(rtype, rid)] = doc
        when = st.now()
        for p in plans:
            if p.resource is not None:
                self._rewrite(p.resource, f"Bundle.entry[{p.index}].resource")
                validate_resource(p.resource, where=f"Bundle.entry[{p.index}].resource")
            if p.method in ("GET", "HEAD") or p.rid is None or p.answer is not None:
                continue
            rtype = p.target.resource_type or ""
            head = heads.get((rtype, p.rid))
            try:
                st.check_version(rtype, p.rid, head, p.if_match)
            except FhirError as err:
                err.expression = [f"Bundle.entry[{p.index}].request.ifMatch"]
                raise
            if p.method == "POST":
                p.write = self.store.prepare_create(p.resource, p.rid, when)  # type: ignore[arg-type]
            elif p.method == "PUT":
                p.write = self.store.prepare_update(p.resource, p.rid, head, when)  # type: ignore[arg-type]
            elif p.method == "DELETE":
                if head is not None and not head.get("del"):
                    p.write = self.store.prepare_delete(rtype, p.rid, head, when)
                else:
                    p.noop_status = 204

    def _rewrite(self, node: Any, where: str) -> None:
        """Replace ``urn:uuid`` (and other fullUrl) references and conditional references, in place."""
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "reference" and isinstance(value, str):
                    node[key] = self._resolve(value, where)
                elif isinstance(value, (dict, list)):
                    self._rewrite(value, where)
        elif isinstance(node, list):
            for item in node:
                if isinstance(item, (dict, list)):
                    self._rewrite(item, where)

    def _resolve(self, ref: str, where: str) -> str:
        hit = self.refs.get(ref)
        if hit is not None:
            return hit
        if ref.startswith("urn:uuid:"):
            raise FhirError(f"the reference {ref} names no entry of this transaction", status=400,
                            expression=[where])
        if _CONDITIONAL_REF.match(ref):
            rtype, _, query = ref.partition("?")
            ids = self.server.match_ids(rtype, query)
            if len(ids) != 1:
                raise FhirError(f"the conditional reference {ref} matches {len(ids)} resources, not 1",
                                status=412 if ids else 400, expression=[where])
            self.refs[ref] = f"{rtype}/{ids[0]}"
            return self.refs[ref]
        return ref


# --------------------------------------------------------------------------- applying with a journal

def apply_writes(store: st.Store, writes: list[st.Write], *, hook: Any = None) -> None:
    """Apply ``writes`` all or nothing: journal first, then the writes; roll back on any failure."""
    db = store.db
    journal_id = str(uuid.uuid4())
    db[JOURNAL].insert_one({"_id": journal_id, "state": "applying", "at": datetime.now(UTC),
                            "ops": [{"t": w.resource_type, "id": w.rid, "prev": w.prev, "v": w.version,
                                     "ev": [e["id"] for e in w.events]} for w in writes]})
    try:
        inserts: dict[str, list[st.Write]] = {}
        for w in writes:
            if w.is_insert:
                inserts.setdefault(w.resource_type, []).append(w)
        for rtype, group in inserts.items():
            try:
                store.current(rtype).insert_many([w.doc for w in group], ordered=True)
            except (BulkWriteError, DuplicateKeyError):
                raise FhirError(f"a {rtype} of this transaction was created by someone else meanwhile",
                                status=409, code="conflict") from None
            if hook:
                for w in group:
                    hook(w)
        for w in writes:
            if w.is_insert:
                continue
            res = store.current(w.resource_type).update_one(w.filter, w.update)
            if res.matched_count == 0:
                raise FhirError(f"{w.resource_type}/{w.rid} was changed by someone else meanwhile", status=409,
                                code="conflict")
            if hook:
                hook(w)
        by_type: dict[str, list[dict[str, Any]]] = {}
        for w in writes:
            by_type.setdefault(w.resource_type, []).append(w.history)
        for rtype, docs in by_type.items():
            try:
                store.history(rtype).insert_many(docs, ordered=False)
            except BulkWriteError as err:
                if any(e.get("code") != 11000 for e in err.details.get("writeErrors", [])):
                    raise
                for d in docs:  # leftovers of an interrupted earlier attempt: ours win
                    store.history(rtype).replace_one({"_id": d["_id"]}, d, upsert=True)
    except BaseException:
        try:
            rollback(store, db[JOURNAL].find_one({"_id": journal_id}))
        except PyMongoError:
            log.exception("rollback failed; the journal stays for recovery")
        raise
    db[JOURNAL].delete_one({"_id": journal_id})


def rollback(store: st.Store, journal: dict[str, Any] | None) -> int:
    """Undo the writes a journal lists that are still in place; return how many were undone."""
    if journal is None:
        return 0
    db = store.db
    undone = 0
    for op in reversed(journal.get("ops") or []):
        rtype, rid, prev, version = op["t"], op["id"], op.get("prev"), op["v"]
        cur = store.current(rtype).find_one({"_id": rid})
        if cur is not None and cur.get("v") == version:
            if prev is None:
                store.current(rtype).delete_one({"_id": rid, "v": version})
            else:
                old = st.unpack(store.history(rtype).find_one({"_id": f"{rid}/{prev}"}))
                if old is None:
                    log.error("cannot restore %s/%s version %s: no history", rtype, rid, prev)
                    continue
                drop = set(op.get("ev") or [])
                kept = [e for e in cur.get("outbox") or [] if not (isinstance(e, dict) and e.get("id") in drop)]
                doc: dict[str, Any] = {"_id": rid, "v": prev, "lu": old["lu"], "del": bool(old.get("del")),
                                       "res": st.pack(old.get("res")), **bucket_fields(rid)}
                if old.get("res") is not None and not old.get("del"):
                    doc.update(index_fields(old["res"]))
                if kept:
                    doc["outbox"] = kept
                    doc["outbox_pending"] = bool(cur.get("outbox_pending"))
                store.current(rtype).replace_one({"_id": rid, "v": version}, doc)
            undone += 1
        store.history(rtype).delete_one({"_id": f"{rid}/{version}"})
    db[JOURNAL].delete_one({"_id": journal["_id"]})
    return undone


def recover(store: st.Store, older_than: timedelta = RECOVER_AFTER) -> int:
    """Roll back every transaction left half-applied by a process that died; return how many."""
    limit = datetime.now(UTC) - older_than
    count = 0
    for journal in list(store.db[JOURNAL].find({"state": "applying"})):
        at = journal.get("at")
        if isinstance(at, datetime) and at.tzinfo is None:
            at = at.replace(tzinfo=UTC)
        if at is not None and at > limit:
            continue  # probably still running in another process
        rollback(store, journal)
        count += 1
    if count:
        log.warning("rolled back %d interrupted transaction(s)", count)
    return count


__all__ = ["apply_writes", "dispatch", "process_bundle", "recover", "rollback"]
