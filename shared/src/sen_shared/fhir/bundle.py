"""Batch and transaction Bundles; transactions are all-or-nothing without multi-document transactions.

A transaction is checked whole before anything is written: every entry parsed,
conditional creates/updates/deletes and conditional references resolved,
``urn:uuid`` references rewritten to the ids assigned, every resource
validated, every ``ifMatch`` compared. Then a journal document (``_journal``)
records each write (type, id, version replaced, version written, its event
ids) and the writes are applied the way single writes are (store.py): every
version is claimed first by inserting its history document (one
``insert_many`` per type), marked with the journal's id, which keeps the
relay and the roll-forward off it while the journal exists; a lost claim
deletes this transaction's claims and answers 409. Once all claims are in
(the commit point) the current documents are written and the journal deleted,
which releases the events to the relay. A transaction refused before that point gives back the
conditional criteria its entries claimed (:meth:`Transaction.give_back`), as a refused single
conditional write does.

A failure after the commit point is finished at once (:func:`complete`, a
roll-forward from the history documents). A process that dies mid-way leaves
its journal behind; :func:`recover` (run by the next process before its first
bundle, or by hand) completes a transaction whose claims were all in and
deletes the claims of one that died while claiming (:func:`rollback`).
"""

from __future__ import annotations

import contextlib
import logging
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo.errors import BulkWriteError, PyMongoError
from werkzeug.http import http_date as format_http_date

from .. import claims
from . import store as st
from .http import FhirRequest, FhirResponse, condition_query, parse_query
from .outcome import FhirError
from .validate import check_id, is_resource_type, validate_resource

log = logging.getLogger("sen.fhir.bundle")

JOURNAL = st.JOURNAL_COLLECTION
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
            own = server.own_reads.get(target.resource_type)  # a read of its own: as GET [type]/[id] answers
            return server.read(sub) if own is None else own(sub)
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


def _http_date(instant: str) -> str:
    """An entry's ``ifModifiedSince`` (a FHIR instant) as the HTTP-date its read compares (``rest.not_modified``);
    one that is not an instant stays as given, which the read ignores as it would the header."""
    try:
        when = datetime.fromisoformat(instant)
    except ValueError:
        return instant
    return format_http_date(when) if when.tzinfo is not None else instant


_ENTRY_HEADERS = (("ifMatch", "if-match"), ("ifNoneExist", "if-none-exist"), ("ifNoneMatch", "if-none-match"),
                  ("ifModifiedSince", "if-modified-since"))


def entry_headers(req: FhirRequest, request: dict[str, Any]) -> dict[str, str]:
    """The headers an entry's interaction runs with: the Bundle's POST's, its conditional ones replaced by the
    entry's own ``request.ifMatch``, ``ifNoneExist``, ``ifNoneMatch`` and ``ifModifiedSince`` (Bundle.entry.request:
    the POST's If-None-Match or If-Modified-Since is about the Bundle, never about an entry). A read entry's
    ``ifNoneMatch``/``ifModifiedSince`` then make it the conditional read a GET with those headers is
    (``rest.not_modified``): ``304 Not Modified``, no resource."""
    headers = dict(req.headers)
    for key, header in _ENTRY_HEADERS:
        headers.pop(header, None)
        if isinstance(request.get(key), str):
            headers[header] = request[key] if key != "ifModifiedSince" else _http_date(request[key])
    return headers


def _batch_entry(server: Any, req: FhirRequest, entry: dict[str, Any], i: int, minimal: bool) -> dict[str, Any]:
    where = f"Bundle.entry[{i}]"
    try:
        request = entry.get("request")
        if not isinstance(request, dict):
            raise FhirError("the entry needs a request", status=400, expression=[f"{where}.request"])
        method = str(request.get("method", "")).upper()
        target = parse_url(request.get("url"), req.base, f"{where}.request.url")
        urn = _bundle_reference(entry.get("resource"))
        if urn is not None:  # stored as written, it would name nothing once out of this Bundle
            raise FhirError(f"the reference {urn} names another entry: a batch's entries are processed one by "
                            "one, independently; send entries that refer to each other as a transaction",
                            status=400, expression=[f"{where}.resource"])
        sub = server.copy_request(req, headers=entry_headers(req, request))
        resp = dispatch(server, sub, method, target, entry.get("resource"))
        return _entry_from_response(resp, minimal)
    except FhirError as err:
        return {"response": {"status": str(err.status), "outcome": err.to_outcome()}}


def _bundle_reference(node: Any) -> str | None:
    """The first ``urn:uuid:`` or ``urn:oid:`` reference in ``node`` (a reference to a Bundle entry), or None."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "reference" and isinstance(value, str) and value.startswith(("urn:uuid:", "urn:oid:")):
                return value
            if isinstance(value, (dict, list)) and (hit := _bundle_reference(value)) is not None:
                return hit
    elif isinstance(node, list):
        for item in node:
            if isinstance(item, (dict, list)) and (hit := _bundle_reference(item)) is not None:
                return hit
    return None


# --------------------------------------------------------------------------- transactions

WRITE_INTERACTION = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}


@contextlib.contextmanager
def refused_entry(index: int, resource_type: str | None) -> Iterator[None]:
    """A transaction entry whose type is not served here (404) or whose method its type does not take
    (405) fails the transaction (http.html#transaction) with 422, or 400 when its url names no FHIR
    resource type: the entry is no malformed request (a 400 says that), and neither status of a
    single interaction fits the Bundle's: its target, [base], takes POST (a 405 would say the
    Bundle's POST is refused, and ``Allow: POST`` contradict it), and it exists (404). 422 is FHIR's
    "violates server business rules" (the server writes the audit trail, a Task changes through its
    operations). The outcome names the entry and keeps what its type allows; no ``Allow``."""
    try:
        yield
    except FhirError as err:
        if err.status not in (404, 405):
            raise
        where = f"Bundle.entry[{index}]"
        status = 422 if is_resource_type(resource_type) else 400
        raise FhirError(f"{where}: {err.detail}; the transaction is refused whole, nothing was written",
                        status=status, code=err.code, expression=[where]) from None

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
    headers: dict[str, str] | None = None  # a read's: its own conditional headers (entry_headers)


class Transaction:
    def __init__(self, server: Any, req: FhirRequest, entries: list[dict[str, Any]], minimal: bool) -> None:
        self.server = server
        self.req = req
        self.entries = entries
        self.minimal = minimal
        self.store: st.Store = server.store()
        self.refs: dict[str, str] = {}  # fullUrl → Type/id
        # the conditional criteria this transaction claimed (store.condition_key) and its claims
        self.conditions: list[tuple[str, dict[str, Any]]] = []

    def run(self) -> FhirResponse:
        try:
            plans = self.plan()
            self.check(plans)
        except Exception:
            self.give_back()
            raise
        writes = [p.write for p in plans if p.write is not None]
        if writes:
            try:
                apply_writes(self.store, writes, hook=self.server.after_write)
            except FhirError:  # refused before its commit point (apply_writes): nothing was written
                self.give_back()
                raise
        out: list[dict[str, Any] | None] = [None] * len(plans)
        for p in plans:
            if p.method in ("GET", "HEAD"):
                try:
                    sub = self.server.copy_request(self.req, headers=p.headers)
                    p.answer = dispatch(self.server, sub, p.method, p.target, None)
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
                    with refused_entry(i, target.resource_type):
                        server.check_type(target.resource_type)
                if target.tail not in (None, "_history", "$everything"):
                    raise FhirError(f"cannot read {request.get('url')!r} in a transaction", status=400,
                                    expression=[f"{where}.request.url"])
                p.headers = entry_headers(self.req, request)
                plans.append(p)
                continue
            with refused_entry(i, target.resource_type):
                rtype = server.check_type(target.resource_type)
                server.check_writable(rtype, WRITE_INTERACTION[method])
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
                cond = condition_query(rtype, request.get("ifNoneExist")) \
                    if isinstance(request.get("ifNoneExist"), str) else ""
                if cond:
                    key, link = self.store.condition_link(rtype, parse_query(cond))
                    ids = server.match_ids(rtype, cond)
                    if not ids:  # claim the criteria (store.condition_key), as a single conditional create
                        p.rid = st.new_id()
                        self._claim_condition(rtype, key, link, p.rid, f"{where}.request.ifNoneExist")
                        self._map(entry, rtype, p.rid)
                        plans.append(p)
                        continue
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
                elif target.has_query:  # resolved once: the access check's resolution, if it made one
                    key, link, ids = server.condition(self.req, rtype, target.params)
                    if len(ids) > 1:
                        raise FhirError("the conditional update matches more than one resource", status=412,
                                        expression=[f"{where}.request.url"])
                    given = p.resource.get("id")  # type: ignore[union-attr]
                    p.rid = ids[0] if ids else (given if isinstance(given, str) else st.new_id())
                    if not ids:
                        self._claim_condition(rtype, key, link, p.rid, f"{where}.request.url")
                else:
                    raise FhirError("PUT needs Type/id or Type?search", status=400, expression=[f"{where}.request.url"])
            elif method == "DELETE":
                if target.rid:
                    p.rid = target.rid
                elif target.has_query:
                    ids = server.matches(self.req, rtype, target.params)
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

    def _claim_condition(self, rtype: str, key: str, link: dict[str, Any] | None, rid: str, where: str) -> None:
        """Claim conditional criteria that matched nothing (a 409 when a racing create holds them), as a
        single conditional create or update does; the transaction refused, :meth:`give_back` frees them."""
        claimed = None if self.store.condition_busy(rtype, link) else self.store.claim_condition(key, link, rid)
        if claimed is None:
            raise FhirError("a conditional create with the same criteria ran meanwhile; retry", status=409,
                            code="conflict", expression=[where])
        self.conditions.append((key, claimed))

    def give_back(self) -> None:
        """The transaction is refused and wrote nothing: every conditional criteria it claimed is given back
        (:meth:`Store.release_condition`, the single conditional write's way: a release link, an insert), so
        the corrected transaction sent at once is not a 409 "ran meanwhile" for the grace period. A release
        that fails (the database unreachable) leaves that claim to expire after the grace period."""
        for key, claimed in self.conditions:
            try:
                self.store.release_condition(key, claimed)
            except PyMongoError:
                log.warning("a refused transaction's conditional claim was not given back", exc_info=True)
        self.conditions.clear()

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
            ids = self.server.matches(self.req, rtype, query)  # as the access check resolved it
            if len(ids) != 1:
                raise FhirError(f"the conditional reference {ref} matches {len(ids)} resources, not 1",
                                status=412 if ids else 400, expression=[where])
            self.refs[ref] = f"{rtype}/{ids[0]}"
            return self.refs[ref]
        return ref


# --------------------------------------------------------------------------- applying with a journal

def apply_writes(store: st.Store, writes: list[st.Write], *, hook: Any = None) -> None:
    """Apply ``writes`` all or nothing: journal, claims, current documents, journal deleted.

    1. The journal lists the writes (type, id, version replaced and written, event ids).
    2. Every version is claimed by inserting its history document with the journal's id
       (``txn``); the relay and the roll-forward leave such a document alone while the journal
       exists. A lost claim (a racing writer got there first): this transaction deletes the
       claims it inserted (it is their only writer) and answers 409. All claims in is the
       commit point.
    3. The current documents are written (single writer each: the claim's holder), inserts
       with one ``insert_many`` per type.
    4. The journal is deleted: the relay may publish the events from then on.

    Deviation from flipping the history documents to pending in step 4 (a design considered):
    measured on FerretDB, 220 such updates (16 a command) took 414 ms against 26 ms for the
    ``insert_many`` of the same 220 claims, which would have halved bundle ingest; the relay
    instead looks the journal up once per transaction in its batch, and nothing but the relay
    ever updates a history document.

    A failure after the commit point is finished by :func:`complete` at once; a crash leaves the
    journal for :func:`recover`, which completes a transaction whose claims are all in and
    deletes the claims of one that did not get there.

    Unique identifiers (unique.py) are claimed before all that and released when the
    transaction is refused; a crash leaves their links young, then stale, and a stale link
    whose resource does not carry the identifier is passed over by the next claimer.
    """
    claimed = _claim_identifiers(store, writes)
    try:
        _apply_journaled(store, writes, hook)
    except FhirError:  # refused before the commit point (a lost claim): nothing was written
        for w, tokens in claimed:
            store.unique.release(w.resource_type, w.rid, tokens)
        raise
    for w in writes:
        store.release_identifiers(w)


def _claim_identifiers(store: st.Store, writes: list[st.Write]) -> list[tuple[st.Write, list[str]]]:
    """The unique identifiers (unique.py) every write adds, claimed before anything else; on a
    refusal (409 ``duplicate``) the ones claimed so far are released."""
    claimed: list[tuple[st.Write, list[str]]] = []
    try:
        for w in writes:
            claimed.append((w, store.claim_identifiers(w)))
    except BaseException:
        for w, tokens in claimed:
            store.unique.release(w.resource_type, w.rid, tokens)
        raise
    return claimed


def _apply_journaled(store: st.Store, writes: list[st.Write], hook: Any) -> None:
    db = store.db
    journal_id = str(uuid.uuid4())
    db[JOURNAL].insert_one({"_id": journal_id, "state": "applying", "at": datetime.now(UTC),
                            "ops": [{"t": w.resource_type, "id": w.rid, "prev": w.prev, "v": w.version,
                                     "ev": [e["id"] for e in w.events]} for w in writes]})
    try:
        _claim_all(store, writes, journal_id)
    except BaseException:
        try:
            rollback(store, db[JOURNAL].find_one({"_id": journal_id}))
        except PyMongoError:
            log.exception("rollback failed; the journal stays for recovery")
        raise
    try:
        _write_currents(store, writes, hook)
    except BaseException as err:  # committed: finish from the history documents
        try:
            complete(store, db[JOURNAL].find_one({"_id": journal_id}))
        except PyMongoError:
            log.exception("completing a committed transaction failed; the journal stays for recovery")
            raise err from None
        if not isinstance(err, Exception):
            raise
        log.warning("a committed transaction was completed after an error", extra={"error": type(err).__name__})
        return
    db[JOURNAL].delete_one({"_id": journal_id})


def _write_currents(store: st.Store, writes: list[st.Write], hook: Any) -> None:
    """The current documents of claimed versions: inserts in one ``insert_many`` per type, then
    the updates one by one; ``hook`` (a test seam) after each."""
    inserts: dict[str, list[st.Write]] = {}
    for w in writes:
        if w.is_insert:
            inserts.setdefault(w.resource_type, []).append(w)
    for rtype, group in inserts.items():
        try:
            store.current(rtype).insert_many([w.doc for w in group], ordered=False)
        except BulkWriteError as err:  # rolled forward by someone else meanwhile: the same versions
            if any(e.get("code") != 11000 for e in err.details.get("writeErrors", [])):
                raise
        if hook:
            for w in group:
                hook(w)
    for w in writes:
        if not w.is_insert:
            store.write_current(w)
            if hook:
                hook(w)


def _txn_history(w: st.Write, journal_id: str) -> dict[str, Any]:
    return {**w.history, st.TXN: journal_id}


def _claim_all(store: st.Store, writes: list[st.Write], journal_id: str) -> None:
    """Insert every write's history document (one ``insert_many`` per type); 409 on a lost claim."""
    by_type: dict[str, list[st.Write]] = {}
    for w in writes:
        by_type.setdefault(w.resource_type, []).append(w)
    lost: list[tuple[str, str]] = []
    when = datetime.now(UTC)
    for rtype, group in by_type.items():
        try:
            store.history(rtype).insert_many([{**_txn_history(w, journal_id), "at": when} for w in group],
                                             ordered=False)
        except BulkWriteError as err:
            errors = err.details.get("writeErrors", [])
            if any(e.get("code") != 11000 for e in errors):
                raise
            lost += [(rtype, group[e["index"]].history["_id"]) for e in errors]
    if not lost:
        return
    for rtype, hid in lost:  # a claim left by a writer that died is rolled forward for the next try
        holder = store.history(rtype).find_one({"_id": hid})
        if holder is not None and st.is_stale(holder) and not store.txn_open(holder):
            store.roll_forward(rtype, holder)
    rtype, hid = lost[0]
    raise FhirError(f"{rtype}/{hid.rsplit('/', 1)[0]} was changed by someone else meanwhile; "
                    "read it again and retry", status=409, code="conflict")


def rollback(store: st.Store, journal: dict[str, Any] | None) -> int:
    """Undo a transaction that did not claim all its versions: delete the history documents it
    inserted (still carrying its ``txn``; it is their only writer) and its journal. Its current
    documents were never written (they come after the commit point). Returns how many claims
    were deleted."""
    if journal is None:
        return 0
    undone = 0
    for op in journal.get("ops") or []:
        res = store.history(op["t"]).delete_one({"_id": f"{op['id']}/{op['v']}", st.TXN: journal["_id"]})
        undone += res.deleted_count
    store.db[JOURNAL].delete_one({"_id": journal["_id"]})
    return undone


def complete(store: st.Store, journal: dict[str, Any] | None) -> int:
    """Finish a transaction whose versions are all claimed: roll each forward (a claim of its
    own, so one party writes each current document), then drop the journal (which releases the
    events to the relay).
    Returns how many versions were rolled forward."""
    if journal is None:
        return 0
    done = 0
    ops = journal.get("ops") or []
    for op in ops:
        hist = store.history(op["t"]).find_one({"_id": f"{op['id']}/{op['v']}"})
        if hist is None:
            log.error("a committed transaction lost a history document", extra={"journal": journal["_id"]})
            continue
        if store.roll_forward(op["t"], hist, grace=timedelta(0)):
            done += 1
    store.db[JOURNAL].delete_one({"_id": journal["_id"]})
    return done


def _all_claimed(store: st.Store, journal: dict[str, Any]) -> bool:
    for op in journal.get("ops") or []:
        hid = f"{op['id']}/{op['v']}"
        if store.history(op["t"]).find_one({"_id": hid, st.TXN: journal["_id"]}, {"_id": 1}) is None:
            return False
    return True


def recover(store: st.Store, older_than: timedelta = RECOVER_AFTER) -> int:
    """Finish or undo every transaction left open by a process that died; return how many.

    One recoverer per journal: the recovery is a claim (chain ``txn/<journal id>`` in
    ``fhir_rollforward``; a recoverer that died is taken over after ``older_than``). A
    transaction whose claims are all in is completed (rolled forward); one that died while
    claiming has its claims deleted. A process stalled longer than ``older_than`` inside a
    transaction is taken for dead: keep it well above any plausible pause.
    """
    limit = datetime.now(UTC) - older_than
    count = 0
    markers = store.db[st.ROLLFORWARD_COLLECTION]
    for journal in list(store.db[JOURNAL].find({"state": "applying"})):
        at = journal.get("at")
        if isinstance(at, datetime) and at.tzinfo is None:
            at = at.replace(tzinfo=UTC)
        if at is not None and at > limit:
            continue  # probably still running in another process
        key = f"txn/{journal['_id']}"
        last = claims.latest(markers, key)
        if last is not None and not st.is_stale(last, older_than):
            continue
        try:
            claims.advance(markers, key, last, {})
        except claims.ClaimTaken:
            continue
        if _all_claimed(store, journal):
            complete(store, journal)
        else:
            rollback(store, journal)
        count += 1
    if count:
        log.warning("recovered %d interrupted transaction(s)", count)
    return count


__all__ = ["apply_writes", "complete", "dispatch", "process_bundle", "recover", "refused_entry", "rollback"]
