"""Translate a :class:`SearchRequest` into a MongoDB filter, a sort and a keyset page condition.

No I/O: chained and ``_has`` searches call ``resolve_ids(resource_type,
request)``, which the executor implements against the database.

Shape (for FerretDB 1.24, which pushes down only top-level scalar
equalities): every criterion that has one puts an equality on a top-level
token array in the filter's own keys (``{"sp_name": "nguyen"}``); the precise
conditions (ranges, regexes, ``$elemMatch``) go under ``$and``. The same
filter is exact on MongoDB.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from . import dates
from .buckets import DEFAULT_SORT
from .definitions import STORAGE_PARAMS, get_param
from .errors import SearchError, UnsupportedSearch
from .extract import EXACT_SEP, PRESENCE_FIELDS, composite_key, composite_narrowing, string_container
from .parse import (
    Criterion,
    DateValue,
    NumberValue,
    QuantityValue,
    SearchRequest,
    SearchValue,
    TokenValue,
)
from .text import MAX_PREFIX, normalize, query_tokens, words

ResolveIds = Callable[[str, SearchRequest], list[str]]
Cond = dict[str, Any]
NOT_DELETED: Cond = {"del": {"$ne": True}}
_NOTHING: Cond = {"_id": {"$in": []}}


def _and(conds: list[Cond]) -> Cond:
    """Merge single-key conditions: equalities first at the top level, the rest under ``$and``."""
    top: Cond = {}
    rest: list[Cond] = []
    for cond in sorted(conds, key=lambda c: 0 if _is_equality(c) else 1):
        (key, value), = cond.items() if len(cond) == 1 else ((None, None),)
        if key is not None and not key.startswith("$") and key not in top:
            top[key] = value
        else:
            rest.append(cond)
    if rest:
        top["$and"] = rest
    return top


def _is_equality(cond: Cond) -> bool:
    return len(cond) == 1 and not next(iter(cond)).startswith("$") and not isinstance(next(iter(cond.values())), dict)


def _or(alternatives: list[list[Cond]]) -> list[Cond]:
    if not alternatives:
        return [_NOTHING]
    if len(alternatives) == 1:
        return alternatives[0]
    if all(len(a) == 1 and _is_equality(a[0]) for a in alternatives):
        keys = {next(iter(a[0])) for a in alternatives}
        if len(keys) == 1:
            key = keys.pop()
            return [{key: {"$in": list(dict.fromkeys(a[0][key] for a in alternatives))}}]
    return [{"$or": [_and(a) for a in alternatives]}]


# --------------------------------------------------------------------------- per type

def _f(crit: Criterion) -> str:
    return crit.param.field if crit.param is not None else (STORAGE_PARAMS.get(crit.code) or f"sp_{crit.code}")


def _num(d: Decimal) -> float:
    return float(d)


def _number_range_conds(v: NumberValue) -> list[Cond]:
    """Alternatives over one number, as operator dicts (AND within each)."""
    value = _num(v.value)
    p = v.prefix
    if p == "eq":
        return [{"$gte": _num(v.lo), "$lt": _num(v.hi)}]
    if p == "ap":
        d = abs(value) * 0.1 or 0.1 * (_num(v.hi) - _num(v.lo))
        return [{"$gte": value - d, "$lte": value + d}]
    return [{{"gt": "$gt", "sa": "$gt", "lt": "$lt", "eb": "$lt", "ge": "$gte", "le": "$lte"}[p]: value}]


def _number_conds(field: str, v: NumberValue) -> list[Cond]:
    if v.prefix == "ne":
        eq = NumberValue("eq", v.value, v.lo, v.hi)
        return [{"$nor": [{field: {"$elemMatch": _number_range_conds(eq)[0]}}]}]
    (ops,) = _number_range_conds(v)
    return [{field: {"$elemMatch": ops}}] if len(ops) > 1 else [{field: ops}]


def _approx_delta(v: DateValue) -> timedelta:
    return abs(datetime.now(UTC) - v.lo) / 10


def _shifted(value: datetime, by: timedelta, bound: datetime) -> datetime:
    """``value + by``, stopped at ``bound`` (dates.MIN or dates.MAX) rather than past year 1 or 9999."""
    try:
        moved = value + by
    except OverflowError:
        return bound
    return min(moved, bound) if bound == dates.MAX else max(moved, bound)


def _bucket(v: DateValue) -> str | None:
    """The containment token answering ``eq`` exactly, for year/month/day precision."""
    if v.precision not in (4, 7, 10):
        return None
    day = dates.local_day(v.lo)
    return day[:v.precision]


def _date_conds(field: str, v: DateValue, *, scalar: bool = False, buckets: bool = True) -> list[Cond]:
    """R4 prefix semantics over target ranges [lo, hi] and the value's range [ql, qh].

    ``field`` holds scalars (``lu``) or, for ranges, ``<field>_lo``/``_hi``/``_b`` arrays.
    """
    ql, qh, p = v.lo, v.hi, v.prefix
    lo, hi = (field, field) if scalar else (field + "_lo", field + "_hi")
    bucket = _bucket(v) if buckets and not scalar else None
    eq: list[Cond] = [{field + "_b": bucket}] if bucket else [{lo: {"$gte": ql}}, {hi: {"$lte": qh}}]
    if scalar:
        eq = [{field: {"$gte": ql, "$lte": qh}}]
    if p == "eq":
        return eq
    if p == "ne":
        if bucket:
            return [{field + "_b": {"$ne": bucket}}]
        return [{"$nor": [_and(eq)]}]
    if p == "gt":
        return [{hi: {"$gt": qh}}]
    if p == "sa":
        return [{lo: {"$gt": qh}}]
    if p == "lt":
        return [{lo: {"$lt": ql}}]
    if p == "eb":
        return [{hi: {"$lt": ql}}]
    if p == "ge":
        return [{"$or": [{hi: {"$gt": qh}}, _and(eq)]}]
    if p == "le":
        return [{"$or": [{lo: {"$lt": ql}}, _and(eq)]}]
    if p == "ap":
        d = _approx_delta(v)
        return [{lo: {"$lte": _shifted(qh, d, dates.MAX)}}, {hi: {"$gte": _shifted(ql, -d, dates.MIN)}}]
    raise SearchError(f"prefix {p} is not valid for dates")


def _token_string(t: TokenValue) -> str:
    if t.system is None:
        return t.code or ""
    if t.code is None:
        return f"{t.system}|"
    return f"{t.system}|{t.code}"


# String parameters searched word by word: every word of the value starts some word of a name,
# in any order ("tran hong" finds "Trần Thị Hồng Ánh"), as a person types a name. FHIR's string
# search matches one prefix of one part; several words in any order is Sen's extension. Other
# string parameters (an address, a city) keep the words together and in order ("cao lanh").
WORD_PARAMS = frozenset({"name", "family", "given", "phonetic"})


def _string_conds(field: str, raw: str, modifier: str | None, container: str | None = None,
                  *, any_order: bool = False) -> list[Cond]:
    """``container``: the field holding this parameter's prefix tokens when it has none of its own
    (extract.string_container): it narrows, the parameter's own normalized strings decide.
    ``any_order`` (WORD_PARAMS): each word is a prefix token of its own; the longest goes first, so
    the one equality FerretDB pushes down is the most selective, the others are checked on its rows."""
    if modifier == "exact":  # see extract.exact_key; {_x: raw}: an array stored by an earlier version
        return [{field + "_n": normalize(raw)},
                {"$or": [{field + "_x": {"$regex": re.escape(EXACT_SEP + raw + EXACT_SEP)}}, {field + "_x": raw}]}]
    q = normalize(raw)
    if modifier == "contains":
        return [{field + "_n": {"$regex": re.escape(q)}}]
    if any_order and words(q):
        conds: list[Cond] = []
        for word in sorted(set(words(q)), key=lambda w: (-len(w), w)):
            conds.append({container or field: word[:MAX_PREFIX]})
            if container or len(word) > MAX_PREFIX:
                conds.append({field + "_n": {"$regex": r"(?:^|[\W_])" + re.escape(word)}})
        return conds
    tokens = query_tokens(q)
    conds = [{container or field: tok} for tok in tokens]
    if container or len(tokens) != 1 or len(q) > MAX_PREFIX or tokens[0] != q:
        conds.append({field + "_n": {"$regex": r"(?:^|\s)" + re.escape(q)}})
    return conds


def _system_only(t: TokenValue) -> bool:
    return t.system is not None and t.code is None


def _token_match(field: str, t: TokenValue) -> Cond:
    """``field`` holds the token; ``system|`` (any code of the system) is a prefix match, since
    the index stores ``code`` and ``system|code`` only."""
    if _system_only(t):
        return {field: {"$regex": "^" + re.escape(t.system or "") + r"\|"}}
    return {field: _token_string(t)}


def _reference_token(crit: Criterion, raw: str) -> str:
    target = crit.modifier if crit.modifier and crit.modifier[0].isupper() else None
    if "/" in raw or ":" in raw:
        if target and not raw.startswith(target + "/") and "://" not in raw:
            raise SearchError(f"{raw!r} is not a {target} reference", crit.code)
        return raw
    if target:
        return f"{target}/{raw}"
    if crit.param is not None and len(crit.param.target) == 1:
        return f"{crit.param.target[0]}/{raw}"
    return raw


def _unit_token(q: QuantityValue) -> str | None:
    if not q.code:
        return None
    return f"{q.system}|{q.code}" if q.system else q.code


def _quantity_conds(field: str, q: QuantityValue) -> list[Cond]:
    unit = _unit_token(q)
    number = NumberValue("eq" if q.prefix == "ne" else q.prefix, q.number.value, q.number.lo, q.number.hi)
    conds = ([{field + "_u": unit}] if unit else []) + _number_conds(field, number)
    return [{"$nor": [_and(conds)]}] if q.prefix == "ne" else conds


def _value_conds(crit: Criterion, sv: SearchValue) -> list[Cond]:
    """The AND-ed conditions for one (of the OR-ed) values of a criterion."""
    f, t, m, v = _f(crit), crit.type, crit.modifier, sv.parsed
    if m == "missing":
        if crit.code in STORAGE_PARAMS:
            return [] if not v else [_NOTHING]
        exists = [{f + s: {"$exists": True}} for s in PRESENCE_FIELDS.get(crit.type, ("",))]
        return [{"$nor": exists}] if v else [exists[0] if len(exists) == 1 else {"$or": exists}]
    if crit.code == "_id":
        return [{"_id": sv.raw}]
    if crit.code == "_lastUpdated":
        return _date_conds("lu", v, scalar=True)
    if t == "string":
        return _string_conds(f, sv.raw, m, string_container(crit.param) if crit.param is not None else None,
                             any_order=crit.code in WORD_PARAMS)
    if t == "token":
        if m == "text":
            return [{f + "_t": {"$regex": r"(?:^|\s)" + re.escape(normalize(sv.raw))}}]
        if m == "of-type":
            return [{f + "_ot": "|".join(v)}]
        if m == "not":
            return [{"$nor": [_token_match(f, v)]}] if _system_only(v) else [{f: {"$ne": _token_string(v)}}]
        return [_token_match(f, v)]
    if t == "reference":
        if m == "identifier":
            return [_token_match(f + "_id", v)]
        return [{f: _reference_token(crit, sv.raw)}]
    if t == "date":
        return _date_conds(f, v)
    if t == "number":
        return _number_conds(f, v)
    if t == "quantity":
        return _quantity_conds(f, v)
    if t == "uri":
        if m == "below":
            return [{f: {"$regex": "^" + re.escape(sv.raw)}}]
        if m == "above":
            parts = sv.raw.split("/")
            return [{f: {"$in": ["/".join(parts[:i]) for i in range(len(parts), 2, -1)]}}]
        return [{f: sv.raw}]
    if t == "composite":
        return _composite_conds(crit, f, v)
    raise SearchError(f"cannot search {crit.code} ({t})", crit.code)


def _composite_conds(crit: Criterion, f: str, parts: list[SearchValue]) -> list[Cond]:
    """Mirrors ``extract._composite``: joined strings, or values keyed by the first token."""
    assert crit.param is not None
    types = [c.type for c in crit.param.component]
    if any(t == "token" and isinstance(sv.parsed, TokenValue) and _system_only(sv.parsed)
           for t, sv in zip(types, parts, strict=False)):
        raise SearchError(f"{crit.code}: a token in a composite value needs its code ('system|' alone matches "
                          "nothing here)", crit.code)
    first = _token_string(parts[0].parsed) if types[0] == "token" else parts[0].raw
    narrowing: list[Cond] = [{composite_narrowing(crit.param): first}]
    if all(t in ("token", "string", "reference", "uri") for t in types):
        words = [first] + [_token_string(sv.parsed) if t == "token" else normalize(sv.raw) if t == "string"
                           else sv.raw for t, sv in zip(types[1:], parts[1:], strict=True)]
        return [{f: "$".join(words)}]
    if len(types) == 2 and types[1] == "quantity":
        q: QuantityValue = parts[1].parsed
        unit = _unit_token(q)
        key = composite_key(f, first, unit) if unit else composite_key(f, first)
        number = NumberValue("eq" if q.prefix == "ne" else q.prefix, q.number.value, q.number.lo, q.number.hi)
        conds = _number_conds(key, number)
        return narrowing + ([{"$nor": [_and(conds)]}] if q.prefix == "ne" else conds)
    if len(types) == 2 and types[1] == "date":
        return narrowing + _date_conds(composite_key(f, first), parts[1].parsed, buckets=False)
    raise UnsupportedSearch(f"composite parameter {crit.code} is not supported", crit.code)


def _criterion_conds(crit: Criterion, resolve_ids: ResolveIds, resource_type: str) -> list[Cond]:
    if crit.has is not None:
        refs = resolve_ids(crit.has.resource_type, crit.has.request)
        ids = _ids_from_refs(refs, f"{resource_type}/")
        return [{"_id": ids[0]}] if len(ids) == 1 else [{"_id": {"$in": ids}}]
    if crit.chain is not None:
        refs: list[str] = []
        for target, sub in crit.chain.items():
            refs += [f"{target}/{i}" for i in resolve_ids(target, sub)]
        f = _f(crit)
        if not refs:
            return [_NOTHING]
        return [{f: refs[0]}] if len(refs) == 1 else [{f: {"$in": refs}}]
    if crit.modifier == "not" and crit.type == "token":
        return [c for sv in crit.values for c in _value_conds(crit, sv)]  # none of the values
    return _or([_value_conds(crit, sv) for sv in crit.values])


def _ids_from_refs(refs: list[str], prefix: str) -> list[str]:
    return list(dict.fromkeys(ref[len(prefix):] for ref in refs if ref.startswith(prefix)))


def build_filter(req: SearchRequest, *, resolve_ids: ResolveIds) -> Cond:
    """The MongoDB filter for ``req`` (deleted resources excluded, no paging)."""
    conds: list[Cond] = [NOT_DELETED]
    for crit in req.criteria:
        conds += _criterion_conds(crit, resolve_ids, req.resource_type)
    return _and(conds)


# --------------------------------------------------------------------------- sort and keyset paging

def sort_field(code: str, resource_type: str | None = None) -> str:
    param = get_param(resource_type, code) if resource_type else None
    return STORAGE_PARAMS.get(code) or f"sp_{param.stored_code if param else code}_s"


def build_sort(req: SearchRequest) -> list[tuple[str, int]]:
    """Sort keys, ``_id`` last as the tiebreak (ascending unless ``_id`` itself is sorted).

    Without ``_sort``: the id-bucket order ``(b2, _id)`` that a broad search can walk (buckets.py).
    """
    if not req.sort:
        return list(DEFAULT_SORT)
    keys: list[tuple[str, int]] = []
    for key in req.sort:
        field = sort_field(key.code, req.resource_type)
        if field not in (k for k, _ in keys):
            keys.append((field, -1 if key.descending else 1))
    if "_id" not in (k for k, _ in keys):
        keys.append(("_id", 1))
    return keys


def sort_values(doc: dict[str, Any], sort: list[tuple[str, int]]) -> list[Any]:
    return [doc.get(field) for field, _ in sort]


def page_filter(req: SearchRequest, cursor: str | list[Any]) -> Cond:
    """Rows strictly after the cursor's row in ``build_sort(req)`` order (nulls sort first)."""
    sort = build_sort(req)
    values = decode_cursor(cursor) if isinstance(cursor, str) else cursor
    if len(values) != len(sort):
        raise SearchError("the page cursor does not belong to this search", "_cursor")
    branches: list[Cond] = []
    equal: list[Cond] = []
    for (field, direction), value in zip(sort, values, strict=True):
        if value is None:
            after = {field: {"$ne": None}} if direction == 1 else None
        elif direction == 1:
            after = {field: {"$gt": value}}
        else:
            after = {"$or": [{field: {"$lt": value}}, {field: None}]}
        if after is not None:
            branches.append(_and([*equal, after]) if equal else after)
        equal.append({field: value})
    if not branches:
        return _NOTHING
    return branches[0] if len(branches) == 1 else {"$or": branches}


_CURSOR_KEY = b"sen.fhir.search.cursor.v1"


def _mac(payload: bytes, key: bytes | None) -> str:
    return base64.urlsafe_b64encode(
        hmac.new(key or _CURSOR_KEY, payload, hashlib.sha256).digest()[:12]).decode().rstrip("=")


def encode_cursor(values: list[Any], *, key: bytes | None = None) -> str:
    """A URL-safe, tamper-evident page cursor for the last row's sort values."""
    typed: list[list[Any]] = []
    for v in values:
        if v is None:
            typed.append(["z"])
        elif isinstance(v, datetime):
            typed.append(["d", dates.as_utc(v).isoformat()])
        elif isinstance(v, bool):
            typed.append(["b", v])
        elif isinstance(v, (int, float)):
            typed.append(["n", v])
        elif isinstance(v, str):
            typed.append(["s", v])
        else:
            raise TypeError(f"cannot put {type(v).__name__} in a cursor")
    payload = json.dumps(typed, separators=(",", ":"), ensure_ascii=False).encode()
    body = base64.urlsafe_b64encode(payload).decode().rstrip("=")
    return f"{body}.{_mac(payload, key)}"


def decode_cursor(cursor: str, *, key: bytes | None = None) -> list[Any]:
    bad = SearchError("invalid page cursor", "_cursor")
    try:
        body, mac = cursor.split(".")
        payload = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    except (ValueError, TypeError):
        raise bad from None
    if not hmac.compare_digest(mac, _mac(payload, key)):
        raise bad
    try:
        out: list[Any] = []
        for item in json.loads(payload):
            tag = item[0]
            if tag == "z":
                out.append(None)
            elif tag == "d":
                out.append(datetime.fromisoformat(item[1]).astimezone(UTC))
            elif tag in ("n", "s", "b"):
                out.append(item[1])
            else:
                raise ValueError(tag)
        return out
    except (ValueError, TypeError, IndexError, KeyError):
        raise bad from None
