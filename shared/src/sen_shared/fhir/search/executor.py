"""Run a parsed search against a pymongo ``Database`` (one collection per resource type)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pymongo.database import Database

from ...mongo import find_in
from .definitions import get_param, params_for
from .mongo import build_filter, build_sort, encode_cursor, page_filter, sort_values
from .parse import Include, SearchRequest

MAX_INCLUDE_ROUNDS = 4


@dataclass
class SearchResult:
    docs: list[dict[str, Any]]
    next_cursor: str | None
    total: int | None
    included: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ids(self) -> list[str]:
        return [d["_id"] for d in self.docs]


def resolve_ids(db: Database, resource_type: str, req: SearchRequest) -> list[str]:
    """Ids of every match of a sub-search (or, with ``req.returns``, the references they hold)."""
    flt = build_filter(req, resolve_ids=lambda t, r: resolve_ids(db, t, r))
    if req.returns:
        key = f"sp_{req.returns}"
        out: dict[str, None] = {}
        for doc in db[resource_type].find(flt, {key: 1}):
            for ref in doc.get(key) or ():
                out[ref] = None
        return list(out)
    return [doc["_id"] for doc in db[resource_type].find(flt, {"_id": 1})]


def search(db: Database, req: SearchRequest, *, count_total: bool = False,
           extra_filter: dict[str, Any] | None = None) -> SearchResult:
    """One page of ``req``: ``_count`` rows in sort order, the cursor of the next page, includes.

    ``extra_filter`` (e.g. the access policy's restriction) is ANDed with the search's filter.
    """
    flt = build_filter(req, resolve_ids=lambda t, r: resolve_ids(db, t, r))
    if extra_filter:
        # keep the search's top-level equalities at the top: FerretDB pushes only those down
        flt = {**flt, "$and": [*flt.get("$and", []), extra_filter]}
    coll = db[req.resource_type]
    total = coll.count_documents(flt) if count_total or req.total == "accurate" or req.summary == "count" \
        else None
    if req.summary == "count" or req.count == 0:
        return SearchResult([], None, total)
    sort = build_sort(req)
    page = flt
    if req.cursor:
        page = {"$and": [flt, page_filter(req, req.cursor)]}
    docs = list(coll.find(page).sort(sort).limit(req.count + 1))
    next_cursor = None
    if len(docs) > req.count:
        docs = docs[: req.count]
        next_cursor = encode_cursor(sort_values(docs[-1], sort))
    included = _includes(db, req, docs)
    return SearchResult(docs, next_cursor, total, included)


def _ref_targets(doc: dict[str, Any], inc: Include, source_type: str) -> list[tuple[str, str]]:
    codes = [c for c, p in params_for(source_type).items() if p.type == "reference"] if inc.param == "*" \
        else [inc.param]
    out = []
    for code in codes:
        for ref in doc.get(f"sp_{code}") or ():
            if "://" in ref or ref.count("/") != 1:
                continue
            rtype, rid = ref.split("/")
            if inc.target_type in (None, rtype):
                out.append((rtype, rid))
    return out


def _includes(db: Database, req: SearchRequest, docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    if not (req.include or req.revinclude) or not docs:
        return []
    seen = {(req.resource_type, d["_id"]) for d in docs}
    frontier = [(req.resource_type, d) for d in docs]
    included: list[dict[str, Any]] = []
    for round_no in range(MAX_INCLUDE_ROUNDS):
        wanted: dict[str, set[str]] = {}
        found: list[tuple[str, dict[str, Any]]] = []
        for inc in req.include:
            if round_no and not inc.iterate:
                continue
            for rtype, doc in frontier:
                if inc.source_type not in ("*", rtype):
                    continue
                for ttype, tid in _ref_targets(doc, inc, rtype):
                    if (ttype, tid) not in seen:
                        wanted.setdefault(ttype, set()).add(tid)
        for ttype, ids in wanted.items():
            if ttype not in _known_types():
                continue
            for doc in find_in(db[ttype], "_id", sorted(ids), {"del": {"$ne": True}}):
                found.append((ttype, doc))
        for inc in req.revinclude:
            if round_no and not inc.iterate:
                continue
            refs = [f"{rtype}/{doc['_id']}" for rtype, doc in frontier]
            codes = [c for c, p in params_for(inc.source_type).items() if p.type == "reference"] \
                if inc.param == "*" else [inc.param]
            for code in codes:
                if get_param(inc.source_type, code) is None:
                    continue
                found += [(inc.source_type, doc)
                          for doc in find_in(db[inc.source_type], f"sp_{code}", refs, {"del": {"$ne": True}})]
        frontier = []
        for rtype, doc in found:
            if (rtype, doc["_id"]) not in seen:
                seen.add((rtype, doc["_id"]))
                included.append(doc)
                frontier.append((rtype, doc))
        if not frontier:
            break
    return included


def _known_types() -> set[str]:
    from .definitions import resource_types
    return set(resource_types())
