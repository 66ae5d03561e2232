"""Run a parsed search against a pymongo ``Database`` (one collection per resource type)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pymongo.database import Database

from ...mongo import FIND_IN_MAX_EQUALITIES, find_in
from ..body import unpack
from .buckets import DEFAULT_SORT, start_bucket, walk
from .definitions import get_param, params_for
from .errors import SearchError
from .mongo import build_filter, build_sort, decode_cursor, encode_cursor, page_filter, sort_values
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


SubFilter = Callable[[str], "dict[str, Any] | None"]


def resolve_ids(db: Database, resource_type: str, req: SearchRequest, sub_filter: SubFilter | None = None
                ) -> list[str]:
    """Ids of every match of a sub-search (or, with ``req.returns``, the references they hold).

    ``sub_filter(resource_type)``: what the caller may see of that type, ANDed into this sub-search and
    every one it makes in turn (a chain's or a ``_has``'s records are the caller's to search, or the
    sub-search answers questions about records it may not read); None: all of them."""
    flt = build_filter(req, resolve_ids=lambda t, r: resolve_ids(db, t, r, sub_filter))
    limit = sub_filter(resource_type) if sub_filter is not None else None
    if limit:
        flt = {**flt, "$and": [*flt.get("$and", []), limit]}
    if req.returns:
        key = f"sp_{req.returns}"
        out: dict[str, None] = {}
        for doc in db[resource_type].find(flt, {key: 1}):
            for ref in doc.get(key) or ():
                out[ref] = None
        return list(out)
    return [doc["_id"] for doc in db[resource_type].find(flt, {"_id": 1})]


def search(db: Database, req: SearchRequest, *, count_total: bool = False,
           extra_filter: dict[str, Any] | None = None, sub_filter: SubFilter | None = None) -> SearchResult:
    """One page of ``req``: ``_count`` rows in sort order, the cursor of the next page, includes.

    ``extra_filter`` (e.g. the access policy's restriction) is ANDed with the search's filter;
    ``sub_filter`` limits its chained and ``_has`` sub-searches the same way (:func:`resolve_ids`).
    """
    flt = build_filter(req, resolve_ids=lambda t, r: resolve_ids(db, t, r, sub_filter))
    if extra_filter:
        # keep the search's top-level equalities at the top: FerretDB pushes only those down
        flt = {**flt, "$and": [*flt.get("$and", []), extra_filter]}
    coll = db[req.resource_type]
    total = coll.count_documents(flt) if count_total or req.total == "accurate" or req.summary == "count" \
        else None
    if req.summary == "count" or req.count == 0:
        return SearchResult([], None, total)
    sort = build_sort(req)
    after = [page_filter(req, req.cursor)] if req.cursor else []
    # only what the page needs travels back (FerretDB still decodes whole documents, but encodes
    # and sends a fraction): the body, version, sort keys, and the references includes follow
    projection = {**RESULT_FIELDS, **{f: 1 for f, _ in sort},
                  **{f"sp_{code}": 1 for inc in req.include for code in _include_codes(inc, req.resource_type)}}
    if sort == DEFAULT_SORT and not _selective(req):
        first = 0
        if req.cursor:  # a cursor of this order holds the last row's bucket
            first = start_bucket(decode_cursor(req.cursor)[0])
            if first is None:
                raise SearchError("the page cursor does not belong to this search", "_cursor")
        docs = walk(lambda eq, conds, limit: list(coll.find(_with(flt, eq, [*conds, *after]), projection)
                                                  .sort(DEFAULT_SORT).limit(limit)),
                    req.count + 1, first, density_key=(coll.full_name, repr(sorted(
                        (k, repr(v)) for k, v in flt.items() if not k.startswith("$")))))
    elif (split := _short_in(flt)) is not None:
        docs = _find_each(coll, flt, split, after, projection, sort, req.count + 1)
    else:
        docs = list(coll.find(_with(flt, {}, after), projection).sort(sort).limit(req.count + 1))
    next_cursor = None
    if len(docs) > req.count:
        docs = docs[: req.count]
        next_cursor = encode_cursor(sort_values(docs[-1], sort))
    for doc in docs:
        unpack(doc)
    included = _includes(db, req, docs)
    return SearchResult(docs, next_cursor, total, included)


# Parameters whose equality alone leaves few candidates: one query in any order beats a walk.
_SELECTIVE_CODES = frozenset({"_id", "identifier"})


def _selective(req: SearchRequest) -> bool:
    return any(c.code in _SELECTIVE_CODES or (c.type == "reference" and c.modifier is None and not c.chain)
               for c in req.criteria)


def _short_in(flt: dict[str, Any]) -> tuple[str, list[Any]] | None:
    """A top-level ``{field: {"$in": [...]}}`` of a few values (``_id=a,b,c``, ``subject=Patient/a,Patient/b``).

    FerretDB evaluates ``$in`` over every document of the collection but pushes a top-level
    equality down to an index, so such a search is asked as one equality query per value
    (:func:`sen_shared.mongo.find_in`'s rule); MongoDB answers either shape from its index."""
    for key, value in flt.items():
        if (not key.startswith("$") and isinstance(value, dict) and list(value) == ["$in"]
                and 1 < len(value["$in"]) <= FIND_IN_MAX_EQUALITIES):
            return key, list(value["$in"])
    return None


def _find_each(coll: Any, flt: dict[str, Any], split: tuple[str, list[Any]], after: list[dict[str, Any]],
               projection: dict[str, Any], sort: list[tuple[str, int]], limit: int) -> list[dict[str, Any]]:
    """The first ``limit`` rows in ``sort`` order of ``flt``, asked one value of ``split`` at a time."""
    key, values = split
    found: dict[Any, dict[str, Any]] = {}
    for value in dict.fromkeys(values):
        for doc in coll.find(_with({**flt, key: value}, {}, after), projection).sort(sort).limit(limit):
            found.setdefault(doc["_id"], doc)
    docs = list(found.values())
    for key_field, direction in reversed(sort):  # stable sorts, last key first
        docs.sort(key=lambda d, f=key_field: _bson_order(d.get(f)), reverse=direction == -1)
    return docs[:limit]


# MongoDB's order of values of different types (null first, then numbers, strings, ..., dates):
# a sort key never compares two Python types that cannot be compared
_TYPE_RANK = {int: 1, float: 1, str: 2, dict: 3, list: 4, bytes: 5, bool: 8, datetime: 9}


def _bson_order(value: Any) -> tuple[int, Any]:
    if value is None:
        return (0, 0)
    rank = _TYPE_RANK.get(type(value), 10)
    return (rank, repr(value)) if rank in (3, 4, 10) else (rank, value)  # a document or an array: by its text


def _with(flt: dict[str, Any], equalities: dict[str, Any], conds: list[dict[str, Any]]) -> dict[str, Any]:
    """``flt`` AND the equalities (at the top level: FerretDB pushes those down) AND ``conds``."""
    out = {**flt, **equalities}
    if conds:
        out["$and"] = [*flt.get("$and", []), *conds]
    return out


RESULT_FIELDS = {"res": 1, "v": 1, "lu": 1, "del": 1}


def _include_codes(inc: Include, source_type: str) -> list[str]:
    if inc.source_type not in ("*", source_type):
        return []
    if inc.param == "*":
        return [c for c, p in params_for(source_type).items() if p.type == "reference"]
    return [inc.param]


def _ref_targets(doc: dict[str, Any], inc: Include, source_type: str) -> list[tuple[str, str]]:
    out = []
    for code in _include_codes(inc, source_type):
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
                unpack(doc)
                included.append(doc)
                frontier.append((rtype, doc))
        if not frontier:
            break
    return included


def _known_types() -> set[str]:
    from .definitions import resource_types
    return set(resource_types())
