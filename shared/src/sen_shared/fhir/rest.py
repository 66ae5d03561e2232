"""The FHIR RESTful interactions, independent of the web framework.

A service configures one :class:`FhirServer` with the resource types it serves
and calls its methods from thin handlers (``http.from_flask`` in,
``http.to_connexion`` out). Bundles reuse the same methods for their entries.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from pymongo.database import Database
from werkzeug.http import parse_date

from . import store as st
from .http import FhirRequest, FhirResponse, condition_query, parse_query, shape_resource, version_headers, write_answer
from .outcome import FhirError, outcome
from .parameters import parameter_list
from .search import SearchError, parse_search
from .search.dates import DateFormatError, parse_range
from .search.definitions import params_for
from .search.executor import search as run_search
from .validate import check_id, validate_resource

DEFAULT_HISTORY_COUNT = 50
OPERATION_DEFINITION = "OperationDefinition"  # listed, read only, where a server defines operations
_HISTORY_PARAMS = frozenset({"_count", "_since", "_cursor", "_format", "_pretty"})
MAX_HISTORY_COUNT = 1000


@dataclass
class FhirConfig:
    """What one service serves: its types, its name (events, software) and where."""

    resource_types: Sequence[str]
    service: str = "fhir"
    base_path: str = "/fhir"
    software: str = "Sen"
    version: str = "0.1.0"
    read_only: frozenset[str] = frozenset()
    # the interactions a type allows when not every one (the CapabilityStatement's codes, e.g.
    # teleconsult's Task: read, vread, history-instance, history-type, search-type: it changes through its
    # operations): the statement lists exactly these and a create, update, patch or delete not among them
    # is 405 (capability.interactions; AuditEvent is read-only everywhere: the server writes it)
    interactions: Mapping[str, Sequence[str]] = field(default_factory=dict)
    # a type's search parameters when not the R4 definitions' (teleconsult's computed Slot)
    search_params: Mapping[str, Sequence[str]] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    # the <service>.<type>.<verb> event of every write, in its outbox (off where a service
    # publishes its own workflow events instead, e.g. teleconsult)
    emit_events: bool = True
    # identifier systems that name one resource of a type at a time (unique.py), e.g.
    # {"Patient": frozenset({CCCD system, BHYT system})}: a write that would duplicate one is a 409
    unique_identifiers: dict[str, frozenset[str]] = field(default_factory=dict)
    # summary fields a type's events carry beside its ids (events.EventFields), e.g. the EHR's
    # {"Patient": the patient's district}: an update's event also carries the replaced version's
    event_fields: dict[str, Callable[[Mapping[str, Any]], dict[str, Any]]] = field(default_factory=dict)
    # the service's own operations (EHR's Patient/$take-on) as OperationDefinition resources (data,
    # ``url`` left out): the CapabilityStatement lists each under its types, defined at
    # <base>/OperationDefinition/<id>, where capability.operation_definition serves it
    operations: tuple[dict[str, Any], ...] = ()


class FhirServer:
    """The interactions of one FHIR endpoint over one database."""

    def __init__(self, config: FhirConfig, db: Callable[[], Database]) -> None:
        self.config = config
        self.types = frozenset(config.resource_types)
        self._db = db
        # test seam: called after each applied write of a bundle (crash simulation)
        self.after_write: Callable[[st.Write], None] | None = None
        # a type read by the service's own function, not from the store (teleconsult's computed Slots: its
        # GET [type]/[id] route): a bundle's read entry of it is answered by that function (bundle.dispatch);
        # an HTTP read never looks here (its route is the service's)
        self.own_reads: dict[str, Callable[[FhirRequest], FhirResponse]] = {}

    @property
    def db(self) -> Database:
        return self._db()

    def store(self) -> st.Store:
        return st.Store(self.db, service=self.config.service, emit_events=self.config.emit_events,
                        unique_identifiers=self.config.unique_identifiers, event_fields=self.config.event_fields)

    # ------------------------------------------------------------------ checks

    def check_type(self, resource_type: str | None) -> str:
        if not resource_type or resource_type not in self.types:
            if resource_type == OPERATION_DEFINITION and self.config.operations:
                # listed in the statement with read only (capability.operation_definition serves it): any
                # other interaction on it is a 405, its Allow the methods served at the path
                raise FhirError(f"{self._definitions_only()}; nothing else is done with it", status=405,
                                code="not-supported")
            raise self.not_served(resource_type)
        return resource_type

    def _definitions_only(self) -> str:
        return (f"{OPERATION_DEFINITION} is read by id only here (GET [base]/{OPERATION_DEFINITION}/[id]: the "
                "definitions of this server's own operations, which its CapabilityStatement names)")

    def not_served(self, resource_type: str | None) -> FhirError:
        """The 404 of a resource type this server does not serve (http.html: "resource type not supported"),
        naming the types it serves: a FHIR type served elsewhere, or a name that is no FHIR resource type."""
        from .validate import is_resource_type

        if resource_type == OPERATION_DEFINITION and self.config.operations:
            return FhirError(f"{self._definitions_only()}; GET [base]/metadata says what is done with each type",
                             status=404, code="not-supported")
        what = (f"{resource_type} is a FHIR resource type this server does not serve"
                if is_resource_type(resource_type) else f"{resource_type!r} is not a FHIR resource type")
        return FhirError(f"{what}; the {self.config.service} server serves {', '.join(sorted(self.types))} "
                         f"(GET [base]/metadata says what it does with each)", status=404, code="not-supported")

    def unserved(self, template: str, path: str) -> FhirError | None:
        """The 404 of a path (under the base, as ``/Basic/1``, matching ``template``, as ``/{type}/{id}``)
        where this server serves no method at all: :meth:`not_served` of the type it names when that is not
        served here, else a 404 saying what is not served there (the ``[base]`` of a server that takes no
        Bundles: billing). A method routed there answers this 404, not a 405 with an empty ``Allow``
        (RFC 9110 §15.5.6: a 405 names the methods the target serves; it serves none). Called only for
        such a path (``web._error_handlers``: the spec's methods narrowed by :meth:`served_methods`)."""
        names, parts = template.strip("/").split("/"), path.strip("/").split("/")
        if len(names) == len(parts):
            for name, part in zip(names, parts, strict=True):
                if name == "{type}" and part not in self.types:
                    return self.not_served(part)
        if not path.strip("/"):
            return FhirError(f"the {self.config.service} server takes no batch or transaction Bundles and has no "
                             "system search: nothing is served at [base] itself (its CapabilityStatement lists no "
                             "such interaction); write each resource at [base]/[type], and GET [base]/metadata "
                             "says what is done with each type", status=404, code="not-supported")
        return FhirError(f"nothing is served at [base]{path} here (its CapabilityStatement does not list that "
                         "interaction); GET [base]/metadata says what is done with each type", status=404,
                         code="not-supported")

    def check_writable(self, resource_type: str, interaction: str = "create") -> None:
        """405 for a write (``create``, ``update``, ``patch``, ``delete``) the type does not allow here, as
        the CapabilityStatement says (:func:`capability.interactions`)."""
        from .capability import SERVER_WRITTEN, interactions

        allowed = interactions(self.config, resource_type)
        if interaction not in allowed and resource_type in SERVER_WRITTEN:
            raise FhirError(f"the audit trail is written by the server only: {resource_type} is read and searched "
                            f"here, never created, updated, patched or deleted through the API ({', '.join(allowed)}; "
                            "GET [base]/metadata says so)", status=405, code="not-supported")
        if interaction not in allowed:
            writes = [c for c in allowed if c in ("create", "update", "patch", "delete")]
            raise FhirError(f"{resource_type} is read-only here ({', '.join(allowed)}; GET [base]/metadata lists "
                            "each type's interactions)" if not writes else
                            f"{interaction} of {resource_type} is not supported here (only {', '.join(writes)}; "
                            "GET [base]/metadata lists each type's interactions)", status=405, code="not-supported")

    def check_declared(self, resource_type: str, interaction: str) -> None:
        """405 for a read-side interaction (``vread``, ``history-instance``, ``history-type``) the type does not
        list here (teleconsult's computed Slot: read and search only), as for a write (:meth:`check_writable`);
        the path then serves no method, so the answer is its 404 (``web._error_handlers``)."""
        from .capability import interactions

        allowed = interactions(self.config, resource_type)
        if interaction not in allowed:
            raise FhirError(f"{interaction} of {resource_type} is not served here ({', '.join(allowed)}; "
                            "GET [base]/metadata lists each type's interactions)", status=405, code="not-supported")

    def served_methods(self, template: str, path: str, methods: tuple[str, ...]) -> tuple[str, ...]:
        """Of the spec's ``methods`` on ``template`` (under the base), those served on ``path``: a 405's
        ``Allow`` (:func:`capability.served_methods`; a service narrowing it further overrides this)."""
        from .capability import served_methods

        return served_methods(self.config, template, path, methods)

    def body_resource(self, req: FhirRequest, *, where: str = "") -> dict[str, Any]:
        rtype = self.check_type(req.resource_type)
        body = req.body
        if not isinstance(body, dict):
            raise FhirError("the body must be a JSON object holding a FHIR resource", status=400)
        validate_resource(body, expected_type=rtype, where=where)
        return body

    # ------------------------------------------------------------------ read

    def read(self, req: FhirRequest, doc: dict[str, Any] | None = None) -> FhirResponse:
        """``doc``: the current document when the caller has just read it (a live, not deleted one)."""
        rtype = self.check_type(req.resource_type)
        rid = check_id(req.rid)
        if doc is None or doc.get("del") or "res" not in doc:
            doc = self.store().read_doc(rtype, rid)
        version = int(doc["v"])
        headers = {"ETag": st.etag(version), "Last-Modified": st.iso(doc["lu"])}
        if not_modified(req, version, doc["lu"]):
            return FhirResponse(304, None, headers)
        return FhirResponse(200, self._shape(req, doc["res"]), headers)

    def vread(self, req: FhirRequest) -> FhirResponse:
        """A version, which never changes: ``If-None-Match`` naming it or ``If-Modified-Since`` at or after
        its time is 304, as for a read (:func:`not_modified`)."""
        rtype = self.check_type(req.resource_type)
        self.check_declared(rtype, "vread")
        rid = check_id(req.rid)
        doc = self.store().vread_doc(rtype, rid, req.vid or "")
        headers = {"ETag": st.etag(doc["v"]), "Last-Modified": st.iso(doc["lu"])}
        if not_modified(req, int(doc["v"]), doc["lu"]):
            return FhirResponse(304, None, headers)
        return FhirResponse(200, self._shape(req, doc["res"]), headers)

    def _shape(self, req: FhirRequest, resource: dict[str, Any]) -> dict[str, Any]:
        summary = req.param("_summary")
        elements = req.param("_elements")
        if summary is None and elements is None:
            return resource
        if summary not in (None, "true", "false", "text", "data"):
            raise FhirError("_summary takes true, false, text or data here", status=400, expression=["_summary"])
        return shape_resource(resource, summary, [e.strip() for e in elements.split(",")] if elements else None)

    # ------------------------------------------------------------------ writes

    def _answer(self, req: FhirRequest, w: st.Write, status: int) -> FhirResponse:
        headers = version_headers(req.base, w.resource_type, w.rid, w.version, st.iso(w.when),
                                  location=status == 201)
        return write_answer(req, status, w.resource, headers, f"{w.resource_type}/{w.rid} {w.verb}")

    def sub_search_filter(self, resource_type: str) -> dict[str, Any] | None:
        """What a chained or ``_has`` sub-search of ``resource_type`` may match beyond its own criteria
        (a guarded server's: what the caller may search); None: everything."""
        return None

    def match_ids(self, resource_type: str, query: str | list[tuple[str, str]], limit: int = 2,
                  extra_filter: dict[str, Any] | None = None) -> list[str]:
        """Ids matching a conditional query (at most ``limit``), for If-None-Exist, conditional updates and
        deletes and conditional references; ``extra_filter`` ANDed in (a guarded server's: what the caller
        may see)."""
        params = parse_query(query) if isinstance(query, str) else list(query)
        params = [(k, v) for k, v in params if k not in ("_format", "_pretty")]
        if not params:
            raise FhirError("a conditional interaction needs search parameters", status=400)
        sreq = parse_search(resource_type, params)
        sreq.count = limit
        sreq.total = None
        return [d["_id"] for d in run_search(self.db, sreq, extra_filter=extra_filter,
                                               sub_filter=self.sub_search_filter).docs]

    def matches(self, req: FhirRequest, resource_type: str, query: str | list[tuple[str, str]]) -> list[str]:
        """:meth:`match_ids` of the criteria, once per request (``req.resolved``): a conditional
        reference or delete seen by the access check is the one the write uses."""
        params = parse_query(query) if isinstance(query, str) else list(query)
        memo = ("match", st.condition_key(resource_type, params))
        ids = req.resolved.get(memo)
        if ids is None:
            ids = req.resolved[memo] = self.match_ids(resource_type, params)
        return ids

    def condition(self, req: FhirRequest, resource_type: str,
                  query: str | list[tuple[str, str]]) -> tuple[str, dict[str, Any] | None, list[str]]:
        """The criteria's claim key, the newest claim on them and the ids they match, once per
        request (``req.resolved``). The claim is read before the search, as claiming the criteria
        needs (:meth:`Store.condition_link`); the ids are also what :meth:`matches` answers."""
        params = parse_query(query) if isinstance(query, str) else list(query)
        key = st.condition_key(resource_type, params)
        hit = req.resolved.get(("condition", key))
        if hit is None:
            key, link = self.store().condition_link(resource_type, params)
            hit = req.resolved[("condition", key)] = (key, link, self.match_ids(resource_type, params))
            req.resolved[("match", key)] = hit[2]
        return hit

    def create(self, req: FhirRequest) -> FhirResponse:
        self.check_writable(self.check_type(req.resource_type), "create")
        resource = self.body_resource(req)
        rtype = resource["resourceType"]
        cond = condition_query(rtype, req.header("if-none-exist"))
        rid = None
        store = self.store()
        key, claimed = "", None
        if cond:
            # the criteria are claimed (store.condition_key says what that serializes): read the
            # newest claim first, search, and claim the next one only if nothing matched
            key, link = store.condition_link(rtype, parse_query(cond))
            ids = self.match_ids(rtype, cond)
            if not ids and store.condition_busy(rtype, link):
                raise FhirError("a conditional create with the same criteria is running; retry", status=409,
                                code="conflict")
            rid = st.new_id()
            claimed = store.claim_condition(key, link, rid) if not ids else None
            if not ids and claimed is None:
                ids = self.match_ids(rtype, cond)  # the racing create may have landed
                if not ids:
                    raise FhirError("a conditional create with the same criteria ran meanwhile; retry",
                                    status=409, code="conflict")
            if len(ids) > 1:
                raise FhirError("If-None-Exist matches more than one resource", status=412,
                                expression=["If-None-Exist"])
            if ids:
                doc = store.read_doc(rtype, ids[0])
                headers = version_headers(req.base, rtype, ids[0], int(doc["v"]),
                                          st.iso(doc["lu"]), location=True)
                return write_answer(req, 200, doc["res"], headers, "an existing resource matches; nothing created")
        resource.pop("id", None)  # create assigns the id
        w = self._creating(store, key, claimed, lambda: store.create(resource, rid))
        return self._answer(req, w, 201)

    @staticmethod
    def _creating(store: st.Store, key: str, claimed: dict[str, Any] | None,
                  write: Callable[[], st.Write]) -> st.Write:
        """``write()``, the create a conditional interaction's claim ``claimed`` on its criteria ``key``
        was for (None: no claim); refused, the claim is given back (else the criteria stay busy)."""
        try:
            return write()
        except FhirError:
            if claimed is not None:
                store.release_condition(key, claimed)
            raise

    def update(self, req: FhirRequest) -> FhirResponse:
        self.check_writable(self.check_type(req.resource_type), "update")
        resource = self.body_resource(req)
        rtype = resource["resourceType"]
        rid = check_id(req.rid)
        if "id" not in resource:
            raise FhirError("an update needs the resource's id in the body, equal to the URL's", status=400,
                            expression=[f"{rtype}.id"])
        if resource["id"] != rid:
            raise FhirError(f"the body's id {resource['id']!r} differs from the URL's {rid!r}", status=400,
                            expression=[f"{rtype}.id"])
        w = self.store().update(resource, rid, if_match=st.parse_etag(req.header("if-match")))
        return self._answer(req, w, 201 if w.version == 1 else 200)

    def conditional_update(self, req: FhirRequest) -> FhirResponse:
        self.check_writable(self.check_type(req.resource_type), "update")
        resource = self.body_resource(req)
        rtype = resource["resourceType"]
        store = self.store()
        key, link, ids = self.condition(req, rtype, req.params)  # the claim read before the search: see create
        if len(ids) > 1:
            raise FhirError("the conditional update matches more than one resource", status=412)
        claimed = None
        if ids:
            rid = ids[0]
            if resource.get("id", rid) != rid:
                raise FhirError("the body's id differs from the matching resource's", status=400,
                                expression=[f"{rtype}.id"])
        else:
            rid = resource.get("id") or st.new_id()
            # creating: the criteria are claimed as for a conditional create (store.condition_key)
            claimed = None if store.condition_busy(rtype, link) else store.claim_condition(key, link, rid)
            if claimed is None:
                raise FhirError("a conditional update with the same criteria ran meanwhile; retry",
                                status=409, code="conflict")
        resource["id"] = rid
        w = self._creating(store, key, claimed,
                           lambda: store.update(resource, rid, if_match=st.parse_etag(req.header("if-match"))))
        return self._answer(req, w, 201 if w.version == 1 or w.verb == "created" else 200)

    def patch(self, req: FhirRequest) -> FhirResponse:
        from .patch import apply_patch

        rtype = self.check_type(req.resource_type)
        self.check_writable(rtype, "patch")
        rid = check_id(req.rid)
        s = self.store()
        doc = s.read_doc(rtype, rid)
        if_match = st.parse_etag(req.header("if-match"))
        if if_match is not None and if_match != int(doc["v"]):
            raise FhirError(f"{rtype}/{rid} is at version {doc['v']}, not {if_match}", status=412)
        resource = apply_patch(doc["res"], req.body)
        if resource.get("resourceType") != rtype or resource.get("id") != rid:
            raise FhirError("a patch may not change resourceType or id", status=422)
        resource = self.patched(req, resource)
        validate_resource(resource, expected_type=rtype)
        w = s.update(resource, rid, if_match=int(doc["v"]))
        return self._answer(req, w, 200)

    def patched(self, req: FhirRequest, resource: dict[str, Any]) -> dict[str, Any]:
        """The resource a patch makes, as it will be stored (a service's rules check or complete it
        here, as they do a PUT's body); the patched resource itself by default."""
        return resource

    def delete(self, req: FhirRequest) -> FhirResponse:
        rtype = self.check_type(req.resource_type)
        self.check_writable(rtype, "delete")
        rid = check_id(req.rid)
        w = self.store().delete(rtype, rid, if_match=st.parse_etag(req.header("if-match")))
        return FhirResponse(204, None, {"ETag": st.etag(w.version)} if w else {})

    # ------------------------------------------------------------------ search

    def search(self, req: FhirRequest, extra: list[tuple[str, str]] | None = None,
               self_path: str | None = None, extra_filter: dict[str, Any] | None = None) -> FhirResponse:
        rtype = self.check_type(req.resource_type)
        if rtype in self.config.search_params:
            # a search of its own (teleconsult's computed Slots: its GET [type] route), which this engine's
            # search of the type's collection is not: it would answer nothing (POST _search, a batch's GET)
            raise FhirError(f"{rtype} is searched with GET [base]/{rtype}?... only (a search of its own)",
                            status=405, code="not-supported")
        lenient = (req.prefer("handling") or "").lower() == "lenient"
        params = [(k, v) for k, v in req.params if k not in ("_format", "_pretty")]
        sreq = parse_search(rtype, params + (extra or []), lenient=lenient)
        result = run_search(self.db, sreq, extra_filter=extra_filter, sub_filter=self.sub_search_filter)
        path = self_path or f"{req.base}/{rtype}"
        bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset"}
        if result.total is not None:
            bundle["total"] = result.total
        own = [(k, v) for k, v in params if k != "_cursor"]
        links = [{"relation": "self", "url": _url(path, params)}]
        if result.next_cursor:
            links.append({"relation": "next", "url": _url(path, [*own, ("_cursor", result.next_cursor)])})
        bundle["link"] = links
        if sreq.summary != "count":
            entries = [self._entry(req, d, "match", sreq.summary, sreq.elements) for d in result.docs]
            entries += [self._entry(req, d, "include", sreq.summary, sreq.elements) for d in result.included]
            bundle["entry"] = entries
        if sreq.ignored:
            bundle.setdefault("entry", []).append({"resource": outcome(
                f"ignored parameters: {', '.join(sreq.ignored)}", status=200, code="not-supported",
                severity="warning"), "search": {"mode": "outcome"}})
        return FhirResponse(200, bundle)

    def search_form(self, req: FhirRequest) -> FhirResponse:
        """``POST [type]/_search``: :meth:`search` of the form's parameters (a type with a search of its own
        is refused there: its URL then serves nothing, so the answer is its 404)."""
        return self.search(req)

    def _entry(self, req: FhirRequest, doc: dict[str, Any], mode: str, summary: str | None,
               elements: list[str] | None) -> dict[str, Any]:
        res = doc["res"]
        return {"fullUrl": f"{req.base}/{res['resourceType']}/{doc['_id']}",
                "resource": shape_resource(res, summary, elements), "search": {"mode": mode}}

    def compartment_search(self, req: FhirRequest) -> FhirResponse:
        """``/Patient/{id}/{type}``: a search of ``type`` limited to the patient's compartment."""
        pid = check_id(req.compartment[1] if req.compartment else None)
        rtype = self.check_type(req.resource_type)
        param = compartment_param(rtype)
        if param is None:
            raise FhirError(f"{rtype} is not in the Patient compartment", status=404, code="not-supported")
        extra = [("_id", pid)] if param == "_id" else [(param, f"Patient/{pid}")]
        return self.search(req, extra, self_path=f"{req.base}/Patient/{pid}/{rtype}")

    # ------------------------------------------------------------------ history

    def history(self, req: FhirRequest) -> FhirResponse:
        """Instance, type or system history, newest first; ``_since``, ``_count``, ``_cursor`` (keyset)."""
        taken = _HISTORY_PARAMS | ({"_type"} if req.resource_type is None else set())
        unknown = sorted({k for k, _ in req.params} - taken)
        if unknown:  # not ignored: a history of everything would answer a filter never applied
            raise FhirError(f"history does not take {', '.join(unknown)}; it takes _count, _since"
                            f"{', _type' if req.resource_type is None else ''} (and the next link's _cursor)",
                            status=400, code="not-supported", expression=unknown)
        count = _count_param(req.param("_count"), DEFAULT_HISTORY_COUNT, MAX_HISTORY_COUNT)
        since = _since_param(req.param("_since"))
        cursor = _history_cursor(req.param("_cursor"))
        if req.resource_type is not None:
            rtypes = [self.check_type(req.resource_type)]
            self.check_declared(rtypes[0], "history-type" if req.rid is None else "history-instance")
        elif req.param("_type"):  # system history of these types only
            rtypes = sorted({self.check_type(t.strip()) for v in (v for k, v in req.params if k == "_type")
                             for t in v.split(",") if t.strip()})
        else:  # the audit trail is not a change of the record: asked by _type or as its own type's history
            rtypes = sorted(self.types - st.SINGLE_VERSION_TYPES)
        rid = check_id(req.rid) if req.rid is not None else None
        rows: list[tuple[datetime, str, str, dict[str, Any]]] = []
        s = self.store()
        for rtype in rtypes:
            flt: dict[str, Any] = {}
            if rid is not None:
                flt["id"] = rid
                if s.current(rtype).count_documents({"_id": rid}, limit=1) == 0:
                    raise st.not_found(rtype, rid)
            conds: list[dict[str, Any]] = []
            if since is not None:
                conds.append({"lu": {"$gte": since}})
            if cursor is not None:
                lu, ctype, cid = cursor
                conds.append({"$or": [{"lu": {"$lt": lu}}, {"lu": lu, "_id": {"$lt": cid}}]}
                             if ctype == rtype else
                             {"$or": [{"lu": {"$lt": lu}}, {"lu": lu}]} if ctype > rtype else {"lu": {"$lt": lu}})
            if conds:
                flt["$and"] = conds
            for doc in s.history_docs(rtype, flt, count + 1):
                rows.append((doc["lu"], rtype, doc["_id"], doc))
        rows.sort(key=lambda r: (r[0], r[1], r[2]), reverse=True)
        page, more = rows[:count], len(rows) > count
        entries = []
        for lu, rtype, _hid, doc in page:
            entry: dict[str, Any] = {"fullUrl": f"{req.base}/{rtype}/{doc['id']}"}
            if doc.get("res") is not None:
                entry["resource"] = st.unpack(doc)["res"]
            url = f"{rtype}/{doc['id']}" if doc.get("m") != "POST" else rtype
            entry["request"] = {"method": doc.get("m", "PUT"), "url": url}
            entry["response"] = {"status": {"POST": "201 Created", "DELETE": "204 No Content"}.get(
                doc.get("m", ""), "200 OK"), "etag": st.etag(doc["v"]), "lastModified": st.iso(lu)}
            entries.append(entry)
        path = req.base + "".join(f"/{p}" for p in (req.resource_type, rid) if p) + "/_history"
        own = [(k, v) for k, v in req.params if k != "_cursor"]
        links = [{"relation": "self", "url": _url(path, req.params)}]
        if more and page:
            lu, rtype, hid, _ = page[-1]
            links.append({"relation": "next", "url": _url(path, [*own, ("_cursor", f"{st.iso(lu)}~{rtype}~{hid}")])})
        return FhirResponse(200, {"resourceType": "Bundle", "type": "history", "link": links, "entry": entries})

    # ------------------------------------------------------------------ operations

    def validate(self, req: FhirRequest) -> FhirResponse:
        """``$validate``: the resource (or a Parameters with a ``resource`` part) checked, never stored."""
        rtype = self.check_type(req.resource_type)
        body = req.body
        if isinstance(body, dict) and body.get("resourceType") == "Parameters" and rtype != "Parameters":
            parts = [p for p in parameter_list(body) if p.get("name") == "resource"]
            body = parts[0].get("resource") if parts else None
        try:
            validate_resource(body, expected_type=rtype)
            if req.rid is not None:
                check_id(req.rid)
                if isinstance(body, dict) and body.get("id") not in (None, req.rid):
                    raise FhirError("the resource's id differs from the URL's", status=400,
                                    expression=[f"{rtype}.id"])
        except FhirError as err:
            return FhirResponse(err.status if err.status != 400 else 400, err.to_outcome())
        return FhirResponse(200, outcome("the resource is valid", status=200, code="informational",
                                         severity="information"))

    def everything(self, req: FhirRequest) -> FhirResponse:
        from .everything import everything

        return everything(self, req)

    def capabilities(self, req: FhirRequest) -> FhirResponse:
        from ..runtime import current
        from .capability import capability_statement

        try:
            settings = current().settings
            issuer, audience = settings.jwt_issuer, settings.jwt_audience
        except (LookupError, RuntimeError, AttributeError):  # an engine outside a web app (tests, tools)
            issuer = audience = None
        return FhirResponse(200, capability_statement(self.config, req.base, issuer=issuer, audience=audience))

    def bundle(self, req: FhirRequest) -> FhirResponse:
        from .bundle import process_bundle

        return process_bundle(self, req)

    def copy_request(self, req: FhirRequest, **changes: Any) -> FhirRequest:
        new = copy.copy(req)
        new.resolved = {}  # a batch entry resolves its own criteria, after the entries before it
        for k, v in changes.items():
            setattr(new, k, v)
        return new


# --------------------------------------------------------------------------- helpers

def not_modified(req: FhirRequest, version: int, last_updated: datetime | None) -> bool:
    """Whether a conditional read (http.html#cread) is answered 304: by ``If-None-Match`` when the request has
    one (``*``, or a list holding the version's ETag, ``W/"3"``), else by ``If-Modified-Since``: the
    version is no newer than its HTTP-date, compared to the second as ``Last-Modified`` says it. RFC 9110
    §13.2.2: If-Modified-Since is ignored beside If-None-Match, and so is one that is not one valid HTTP-date
    (§13.1.3), or when the version has no time (``last_updated`` None). Nothing is parsed for a read
    without either header."""
    inm = req.header("if-none-match")
    if inm is not None:
        return any(tag == "*" or st.parse_etag(tag) == version for tag in (t.strip() for t in inm.split(",")) if tag)
    ims = req.header("if-modified-since")
    if ims is None or last_updated is None or ims.count(",") > 1:  # an HTTP-date holds one comma at most
        return False
    since = parse_date(ims)
    return since is not None and last_updated.replace(microsecond=0) <= since


def compartment_param(resource_type: str) -> str | None:
    """The parameter linking ``resource_type`` to its patient (Patient compartment), or None."""
    if resource_type == "Patient":
        return "_id"
    params = params_for(resource_type)
    for code in ("patient", "subject", "beneficiary", "member"):
        p = params.get(code)
        if p is not None and p.type == "reference" and (not p.target or "Patient" in p.target):
            return code
    return None


def _url(path: str, params: list[tuple[str, str]]) -> str:
    return f"{path}?{urlencode(params)}" if params else path


def _count_param(value: str | None, default: int, maximum: int) -> int:
    if value is None:
        return default
    if not value.isdigit() or len(value) > 6:
        raise FhirError("_count must be a non-negative integer", status=400, expression=["_count"])
    return max(1, min(int(value), maximum))


def _since_param(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        return parse_range(value)[0]
    except (DateFormatError, ValueError, OverflowError):
        raise FhirError("_since must be a FHIR instant, e.g. 2024-05-01T00:00:00Z", status=400,
                        expression=["_since"]) from None


def _history_cursor(value: str | None) -> tuple[datetime, str, str] | None:
    if value is None:
        return None
    try:
        lu, rtype, hid = value.split("~", 2)
        return datetime.fromisoformat(lu.replace("Z", "+00:00")), rtype, hid
    except ValueError:
        raise FhirError("_cursor is not one this server gave out", status=400, expression=["_cursor"]) from None


__all__ = ["FhirConfig", "FhirServer", "SearchError", "compartment_param"]
