"""Parse a FHIR search query into a plain :class:`SearchRequest` (no database code here).

``params`` is the query as ``(name, value)`` pairs in order. Repeated names are
AND-ed, comma-separated values (``\\,`` escapes a comma) are OR-ed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from . import dates
from .definitions import SearchParam, get_param, is_resource_type, params_for, unsortable_detail, unsupported_detail
from .errors import SearchError, UnsupportedSearch

DEFAULT_COUNT = 20
MAX_COUNT = 1000
PREFIXES = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap")
SUMMARY = ("true", "false", "text", "data", "count")
TOTAL = ("none", "estimate", "accurate")
# Result parameters the HTTP layer deals with; the engine accepts and ignores them.
PASSTHROUGH = frozenset({"_format", "_pretty"})
UNSUPPORTED = frozenset({"_text", "_content", "_query", "_filter", "_list", "_contained",
                         "_containedType", "_type"})
_PREFIX = re.compile(r"^(eq|ne|gt|lt|ge|le|sa|eb|ap)(?=[-+0-9.])")


@dataclass
class TokenValue:
    system: str | None  # None: any system; "": no system
    code: str | None  # None: any code (``system|``)


@dataclass
class DateValue:
    prefix: str
    lo: datetime
    hi: datetime
    precision: int  # length of the literal date part: 4 year, 7 month, 10 day, >10 time


@dataclass
class NumberValue:
    prefix: str
    value: Decimal
    lo: Decimal  # implicit precision: 100 means [99.5, 100.5)
    hi: Decimal


@dataclass
class QuantityValue:
    prefix: str
    number: NumberValue
    system: str | None
    code: str | None


@dataclass
class SearchValue:
    raw: str
    parsed: Any = None  # str | TokenValue | DateValue | NumberValue | QuantityValue | list[SearchValue]


@dataclass
class Criterion:
    """One query parameter: its OR-ed values; several criteria are AND-ed."""

    code: str
    type: str
    modifier: str | None = None
    values: list[SearchValue] = field(default_factory=list)
    param: SearchParam | None = None
    # chaining: ``subject:Patient.name=x`` → code "subject", chain {"Patient": SearchRequest(name=x)}
    chain: dict[str, SearchRequest] | None = None
    # reverse chaining: ``_has:Observation:patient:code=x``
    has: HasClause | None = None


@dataclass
class HasClause:
    resource_type: str
    reference_param: str
    request: SearchRequest


@dataclass
class Include:
    source_type: str
    param: str  # "*" for every reference parameter
    target_type: str | None = None
    iterate: bool = False
    reverse: bool = False


@dataclass
class SortKey:
    code: str
    descending: bool = False


@dataclass
class SearchRequest:
    resource_type: str
    criteria: list[Criterion] = field(default_factory=list)
    sort: list[SortKey] = field(default_factory=list)
    count: int = DEFAULT_COUNT
    total: str | None = None
    summary: str | None = None
    elements: list[str] | None = None
    include: list[Include] = field(default_factory=list)
    revinclude: list[Include] = field(default_factory=list)
    cursor: str | None = None
    ignored: list[str] = field(default_factory=list)
    # For sub-searches of ``_has``: the executor returns the references held by this
    # reference parameter of the matches, instead of their ids.
    returns: str | None = None


# --------------------------------------------------------------------------- values

def split_values(value: str) -> list[str]:
    """Split on unescaped commas; ``\\,`` is a literal comma, ``\\\\`` a backslash."""
    out, cur, i = [], [], 0
    while i < len(value):
        ch = value[i]
        if ch == "\\" and i + 1 < len(value) and value[i + 1] in ",$|\\":
            cur.append(value[i + 1] if value[i + 1] in ",\\" else "\\" + value[i + 1])
            i += 2
            continue
        if ch == ",":
            out.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
        i += 1
    out.append("".join(cur))
    return out


def _split_unescaped(value: str, sep: str) -> list[str]:
    parts = re.split(rf"(?<!\\){re.escape(sep)}", value)
    return [p.replace("\\" + sep, sep) for p in parts]


def _prefix(raw: str) -> tuple[str, str]:
    m = _PREFIX.match(raw)
    return (m.group(1), raw[2:]) if m else ("eq", raw)


def parse_number(raw: str, location: str, *, allow_prefix: bool = True) -> NumberValue:
    prefix, text = _prefix(raw) if allow_prefix else ("eq", raw)
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise SearchError(f"not a number: {raw!r}", location) from None
    if not value.is_finite():
        raise SearchError(f"not a number: {raw!r}", location)
    exponent = value.as_tuple().exponent
    half = Decimal(5).scaleb(int(exponent) - 1) if isinstance(exponent, int) else Decimal(0)
    return NumberValue(prefix, value, value - half, value + half)


def parse_date(raw: str, location: str) -> DateValue:
    prefix, text = _prefix(raw)
    try:
        lo, hi = dates.parse_range(text)
    except dates.DateFormatError:
        raise SearchError(f"not a FHIR date: {raw!r}", location) from None
    return DateValue(prefix, lo, hi, len(text.split("T")[0]) + (1 if "T" in text else 0))


def parse_token(raw: str) -> TokenValue:
    parts = _split_unescaped(raw, "|")
    if len(parts) == 1:
        return TokenValue(None, parts[0])
    system, code = parts[0], "|".join(parts[1:])
    return TokenValue(system, code or None)


def parse_quantity(raw: str, location: str) -> QuantityValue:
    parts = _split_unescaped(raw, "|")
    number = parse_number(parts[0], location)
    if len(parts) == 1:
        return QuantityValue(number.prefix, number, None, None)
    if len(parts) != 3:
        raise SearchError(f"a quantity is number|system|code: {raw!r}", location)
    return QuantityValue(number.prefix, number, parts[1] or None, parts[2] or None)


def _parse_value(ptype: str | None, raw: str, location: str, param: SearchParam | None,
                 modifier: str | None) -> SearchValue:
    if modifier == "missing":
        if raw not in ("true", "false"):
            raise SearchError(":missing takes true or false", location)
        return SearchValue(raw, raw == "true")
    if modifier == "of-type":
        parts = _split_unescaped(raw, "|")
        if len(parts) != 3 or not parts[2]:
            raise SearchError(":of-type takes system|code|value", location)
        return SearchValue(raw, parts)
    if ptype == "token":
        if modifier == "text":
            return SearchValue(raw, raw)
        return SearchValue(raw, parse_token(raw))
    if ptype == "date":
        return SearchValue(raw, parse_date(raw, location))
    if ptype == "number":
        return SearchValue(raw, parse_number(raw, location))
    if ptype == "quantity":
        return SearchValue(raw, parse_quantity(raw, location))
    if ptype == "composite":
        assert param is not None
        parts = _split_unescaped(raw, "$")
        if len(parts) != len(param.component):
            raise SearchError(f"{param.code} takes {len(param.component)} components separated by '$'", location)
        return SearchValue(raw, [_parse_value(c.type, p, location, None, None)
                                 for c, p in zip(param.component, parts, strict=True)])
    if ptype == "reference" and modifier == "identifier":
        return SearchValue(raw, parse_token(raw))
    if ptype in ("string", "uri", "reference"):
        if raw == "":
            raise SearchError("empty value", location)
        return SearchValue(raw, raw)
    raise UnsupportedSearch(f"search parameter type {ptype!r} is not supported", location)


# --------------------------------------------------------------------------- parameters

def _count(value: str, location: str) -> int:
    if not value.isdigit():
        raise SearchError("_count must be a non-negative integer", location)
    return min(int(value), MAX_COUNT)


def _include(value: str, location: str, *, reverse: bool, iterate: bool) -> Include:
    parts = value.split(":")
    if value == "*":
        return Include("*", "*", None, iterate, reverse)
    if len(parts) not in (2, 3) or not is_resource_type(parts[0]):
        raise SearchError(f"{location} takes SourceType:param[:TargetType]", location)
    source, code = parts[0], parts[1]
    target = parts[2] if len(parts) == 3 else None
    if code != "*":
        p = get_param(source, code)
        if p is None or p.type != "reference":
            raise SearchError(f"{source} has no reference parameter {code!r}", location)
    if target is not None and not is_resource_type(target):
        raise SearchError(f"unknown resource type {target!r}", location)
    return Include(source, code, target, iterate, reverse)


def _criterion(resource_type: str, name: str, value: str, *, lenient: bool) -> Criterion | None:
    location = name
    if name.startswith("_has:"):
        return _has(resource_type, name, value, lenient=lenient)
    head, _, rest = name.partition(".")
    code, _, modifier_text = head.partition(":")
    modifier: str | None = modifier_text or None
    param = get_param(resource_type, code)
    if param is None:
        raise SearchError(f"unknown search parameter {code!r} for {resource_type}", location)
    if not param.supported:
        raise UnsupportedSearch(unsupported_detail(param), location)
    if rest:  # chained search
        if param.type != "reference":
            raise SearchError(f"{code} is not a reference parameter and cannot be chained", location)
        targets = [modifier] if modifier else list(param.target)
        if modifier and not is_resource_type(modifier):
            raise SearchError(f"unknown resource type {modifier!r}", location)
        chain: dict[str, SearchRequest] = {}
        errors: list[SearchError] = []
        for target in targets:
            try:
                sub = parse_search(target, [(rest, value)], lenient=False)
            except SearchError as exc:
                errors.append(exc)
                continue
            chain[target] = sub
        if not chain:
            if errors:
                raise SearchError(f"cannot chain {name}: {errors[0].message}", location)
            raise SearchError(f"{code} has no target type to chain into", location)
        return Criterion(code, "reference", modifier, [], param, chain=chain)
    if modifier is not None:
        if modifier == "type" or (param.type == "reference" and is_resource_type(modifier)):
            if param.type != "reference":
                raise SearchError(f"modifier :{modifier} applies to reference parameters", location)
            if param.target and modifier not in param.target:
                raise SearchError(f"{code} cannot refer to {modifier}", location)
        elif modifier not in param.modifiers and not (code == "_id" and modifier in ("missing", "not")):
            raise SearchError(f"modifier :{modifier} is not supported for {code} ({param.type})", location)
        if modifier == "of-type" and param.code != "identifier":
            raise SearchError(":of-type applies to identifier parameters", location)
    raws = split_values(value)
    if len(raws) > 1 and not param.multiple_or:
        raise SearchError(f"{code} does not allow several values", location)
    values = [_parse_value(param.type, raw, location, param, modifier) for raw in raws]
    if modifier == "missing" and len(values) != 1:
        raise SearchError(":missing takes one value", location)
    return Criterion(code, param.type, modifier, values, param)


def _has(resource_type: str, name: str, value: str, *, lenient: bool) -> Criterion:
    parts = name.split(":", 3)
    if len(parts) != 4:
        raise SearchError("_has takes _has:Type:reference:parameter", name)
    _, source, ref, inner = parts
    if not is_resource_type(source):
        raise SearchError(f"unknown resource type {source!r}", name)
    ref_param = get_param(source, ref)
    if ref_param is None or ref_param.type != "reference":
        raise SearchError(f"{source} has no reference parameter {ref!r}", name)
    if ref_param.target and resource_type not in ref_param.target:
        raise SearchError(f"{source}.{ref} cannot refer to {resource_type}", name)
    sub = parse_search(source, [(inner, value)], lenient=False)
    sub.returns = ref
    return Criterion("_has", "special", None, [], None,
                     has=HasClause(source, ref, sub))


def parse_search(resource_type: str, params: list[tuple[str, str]], *, lenient: bool = False) -> SearchRequest:
    """Parse the query of a ``GET [base]/[type]?...`` search."""
    if not is_resource_type(resource_type):
        raise SearchError(f"unknown resource type {resource_type!r}", resource_type, status=404)
    req = SearchRequest(resource_type)
    for name, value in params:
        try:
            _apply(req, name, value, lenient=lenient)
        except SearchError as exc:
            if lenient and not isinstance(exc, UnsupportedSearch) and _is_unknown(resource_type, name):
                req.ignored.append(name)
                continue
            if lenient and isinstance(exc, UnsupportedSearch):
                req.ignored.append(name)
                continue
            raise
    return req


def _is_unknown(resource_type: str, name: str) -> bool:
    code = name.split(".")[0].split(":")[0]
    return not name.startswith("_has:") and code not in params_for(resource_type) and code not in (
        "_sort", "_count", "_total", "_summary", "_elements", "_include", "_revinclude", "_cursor")


def _apply(req: SearchRequest, name: str, value: str, *, lenient: bool) -> None:
    base, _, mod = name.partition(":")
    if name in PASSTHROUGH:
        return
    if base in UNSUPPORTED:
        raise UnsupportedSearch(f"{base} is not supported", name)
    if name == "_sort":
        keys = []
        for item in value.split(","):
            desc = item.startswith("-")
            code = item[1:] if desc else item
            p = get_param(req.resource_type, code)
            if p is None or not p.supported or p.type == "composite":
                raise SearchError(f"cannot sort by {code!r}", name)
            if not p.sortable:
                raise SearchError(unsortable_detail(p), name)
            keys.append(SortKey(code, desc))
        req.sort.extend(keys)
    elif name == "_count":
        req.count = _count(value, name)
    elif name == "_total":
        if value not in TOTAL:
            raise SearchError("_total takes none, estimate or accurate", name)
        req.total = value
    elif name == "_summary":
        if value not in SUMMARY:
            raise SearchError("_summary takes true, false, text, data or count", name)
        req.summary = value
    elif name == "_elements":
        req.elements = [e.strip() for e in value.split(",") if e.strip()]
    elif name == "_cursor":
        req.cursor = value
    elif base in ("_include", "_revinclude"):
        if mod not in ("", "iterate", "recurse"):
            raise SearchError(f"unknown modifier :{mod}", name)
        for v in value.split(","):
            inc = _include(v, name, reverse=base == "_revinclude", iterate=bool(mod))
            (req.revinclude if inc.reverse else req.include).append(inc)
    else:
        crit = _criterion(req.resource_type, name, value, lenient=lenient)
        if crit is not None:
            req.criteria.append(crit)
