"""Write-time extraction: a resource's search index as top-level ``sp_*`` document keys.

Encodings (``<c>`` is the parameter code; every key starts with ``sp_``):

==========  ================================================================
string      ``sp_<c>``: word-prefix tokens (1..20 chars) of the normalized
            values; ``sp_<c>_n``: normalized full values; ``sp_<c>_x``:
            the original values as ONE string, each between two U+001F
            (``:exact``: an equality on ``_n`` narrows, a regex confirms;
            one value instead of one per original for the database to
            decode; an array of originals from an earlier version still
            matches, see :func:`exact_values`)
token       ``sp_<c>``: ``code``, ``system|code`` (``|code`` when there is no
            system) and ``system|``; ``sp_<c>_t``: normalized display/text
            (``:text``); ``sp_<c>_ot``: ``typesystem|typecode|value`` for
            Identifiers (``:of-type``)
reference   ``sp_<c>``: ``Type/id``, bare ``id``, the absolute URL as written,
            canonical URLs with and without ``|version``; ``sp_<c>_id``:
            Reference.identifier as token strings (``:identifier``)
date        ``sp_<c>_lo`` / ``sp_<c>_hi``: inclusive UTC range ends (scalar
            arrays); ``sp_<c>_b``: the local (UTC+7) ``YYYY``/``YYYY-MM``/
            ``YYYY-MM-DD`` that wholly contain a range, so ``eq``/``ne`` at
            those precisions are one equality
number      ``sp_<c>``: ``[float]``
quantity    ``sp_<c>``: ``[float]``; ``sp_<c>_u``: ``code`` and ``system|code``
composite   token$token/string/reference: ``sp_<c>`` = ``["a$b", ...]``;
            token$quantity/date: the values under ``composite_key(sp_<c>,
            token[, unit])`` (``_lo``/``_hi`` for dates), so the pairing
            survives FerretDB, whose ``$elemMatch`` on sub-documents is
            broken; ``sp_<c>_k``: first-component tokens (narrowing)
sort        ``sp_<c>_s``: one scalar per sortable parameter that has a value:
            first normalized string, earliest ``lo``, smallest number, first
            token/reference/uri, first quantity value
present     nothing stored: ``:missing`` asks whether any of the fields the
            parameter writes exists (:data:`PRESENCE_FIELDS`; composites take
            no ``:missing``). Earlier layouts listed the codes in ``sp_present``
==========  ================================================================
"""

from __future__ import annotations

import functools
import hashlib
import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from itertools import product
from typing import Any

from . import dates
from .definitions import STORAGE_PARAMS, SearchParam, params_for
from .text import normalize, prefix_tokens

log = logging.getLogger(__name__)

Node = tuple[Any, str | None]  # a value and its FHIR type when known (from a choice suffix or `as`)
Evaluator = Callable[[Any], list[Node]]

MAX_COMBINATIONS = 200
CONTACT_SYSTEMS = frozenset({"phone", "fax", "email", "pager", "url", "sms", "other"})


# --------------------------------------------------------------------------- FHIRPath

_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
_STEP = re.compile(
    rf"""\.(?:
        where\(resolve\(\)\s+is\s+(?P<resolve>{_IDENT})\)
      | where\((?P<wfield>{_IDENT})\s*=\s*'(?P<wvalue>[^']*)'\)
      | (?:as|ofType)\((?P<astype>{_IDENT})\)
      | extension\('(?P<ext>[^']*)'\)
      | (?P<field>{_IDENT})
    )""",
    re.VERBOSE,
)
_AS_SUFFIX = re.compile(rf"^(?P<path>.*?)\s+as\s+(?P<type>{_IDENT})$")
# "(Observation.value as CodeableConcept).text": the step form "Observation.value.as(CodeableConcept).text"
_PAREN_AS_STEPS = re.compile(rf"^\((?P<path>[^()]*?)\s+as\s+(?P<type>{_IDENT})\)(?P<rest>(?:\.{_IDENT})+)$")
_REF_TYPE = re.compile(r"(?:^|/)([A-Z][A-Za-z]+)/[A-Za-z0-9\-.]{1,64}(?:/_history/[^/]+)?$")


def split_union(expression: str) -> list[str]:
    parts, depth, quote, start = [], 0, False, 0
    for i, ch in enumerate(expression):
        if ch == "'":
            quote = not quote
        elif quote:
            continue
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "|" and depth == 0:
            parts.append(expression[start:i].strip())
            start = i + 1
    parts.append(expression[start:].strip())
    return [p for p in parts if p]


def reference_type(ref: dict[str, Any]) -> str | None:
    """The resource type a Reference points to, from ``type`` or its ``reference`` string."""
    if ref.get("type"):
        return ref["type"]
    m = _REF_TYPE.search(ref.get("reference") or "")
    return m.group(1) if m else None


def _parse_fast(part: str) -> tuple[str | None, list[tuple[str, str, str | None]]] | None:
    """A dotted path as (root type or None, steps), or None when it needs real FHIRPath."""
    text = part.strip()
    while text.startswith("(") and text.endswith(")") and text.count("(") == text.count(")"):
        inner = text[1:-1]
        if inner.count("(") != inner.count(")"):
            break
        text = inner.strip()
    m = _PAREN_AS_STEPS.match(text)
    if m:
        text = f"{m.group('path').strip()}.as({m.group('type')}){m.group('rest')}"
    as_type = None
    m = _AS_SUFFIX.match(text)
    if m:
        text, as_type = m.group("path").strip(), m.group("type")
    root_match = re.match(rf"^{_IDENT}", text)
    if not root_match:
        return None
    first = root_match.group(0)
    root = first if first[0].isupper() else None
    rest = text[len(first):] if root else "." + text
    steps: list[tuple[str, str, str | None]] = []
    pos = 0
    while pos < len(rest):
        sm = _STEP.match(rest, pos)
        if not sm:
            return None
        if sm.group("resolve"):
            steps.append(("resolve", sm.group("resolve"), None))
        elif sm.group("wfield"):
            steps.append(("where", sm.group("wfield"), sm.group("wvalue")))
        elif sm.group("astype"):
            steps.append(("as", sm.group("astype"), None))
        elif sm.group("ext") is not None:
            steps.append(("ext", sm.group("ext"), None))
        else:
            steps.append(("field", sm.group("field"), None))
        pos = sm.end()
    if as_type:
        steps.append(("as", as_type, None))
    return root, steps


def _children(node: Any, name: str) -> Iterable[Node]:
    if not isinstance(node, dict):
        return ()
    if name in node:
        value = node[name]
        return [(v, None) for v in value] if isinstance(value, list) else [(value, None)]
    # a choice element: valueQuantity, effectivePeriod, ...
    out: list[Node] = []
    for key, value in node.items():
        if len(key) > len(name) and key.startswith(name) and key[len(name)].isupper():
            hint = key[len(name):]
            out.extend((v, hint) for v in value) if isinstance(value, list) else out.append((value, hint))
    return out


def _type_matches(hint: str | None, value: Any, wanted: str) -> bool:
    if hint is not None:
        return hint.lower() == wanted.lower()
    w = wanted.lower()
    if w in ("string", "code", "uri", "canonical", "url", "date", "datetime", "instant", "id"):
        return isinstance(value, str)
    if w == "boolean":
        return isinstance(value, bool)
    if w == "reference":
        return isinstance(value, dict) and ("reference" in value or "identifier" in value)
    return isinstance(value, dict)


def _fast_evaluator(root: str | None, steps: list[tuple[str, str, str | None]]) -> Evaluator:
    def run(resource: Any) -> list[Node]:
        if root is not None and isinstance(resource, dict) and resource.get("resourceType") not in (
                root, None) and root not in ("Resource", "DomainResource"):
            return []
        nodes: list[Node] = [(resource, None)]
        for kind, arg, value in steps:
            if kind == "field":
                nodes = [c for n, _ in nodes for c in _children(n, arg)]
            elif kind == "as":
                nodes = [(n, h or arg) for n, h in nodes if _type_matches(h, n, arg)]
            elif kind == "resolve":
                nodes = [(n, h) for n, h in nodes if isinstance(n, dict) and reference_type(n) == arg]
            elif kind == "where":
                nodes = [(n, h) for n, h in nodes if isinstance(n, dict) and n.get(arg) == value]
            else:  # extension('url')
                nodes = [(e, "Extension") for n, _ in nodes if isinstance(n, dict)
                         for e in n.get("extension", ()) if isinstance(e, dict) and e.get("url") == arg]
            if not nodes:
                break
        return nodes
    return run


_RESOLVE_IS = re.compile(rf"resolve\(\)\s+is\s+({_IDENT})")
_PAREN_AS = re.compile(rf"^\((.*)\s+as\s+({_IDENT})\)$")


def _rewrite_for_fhirpathpy(expression: str) -> str:
    """Work around fhirpathpy's two known failures: ``resolve() is X`` and ``as`` on collections."""
    parts = []
    for part in split_union(expression):
        part = _RESOLVE_IS.sub(r"(reference.startsWith('\1/') or reference.contains('/\1/'))", part)
        m = _PAREN_AS.match(part)
        if m and m.group(1).count("(") == m.group(1).count(")"):
            part = f"({m.group(1)}).ofType({m.group(2)})"
        part = re.sub(rf"\.as\(({_IDENT})\)", r".ofType(\1)", part)
        parts.append(part)
    return " | ".join(parts)


def _plain(value: Any) -> Any:
    if isinstance(value, (str, bool, int, float, dict, list)) or value is None:
        return value
    return str(value)


@lru_cache(maxsize=4096)
def compile_expression(expression: str) -> tuple[Evaluator, bool]:
    """Compile once: ``(evaluator, is_fast_path)``. Raises on an expression fhirpathpy cannot compile."""
    parsed = [_parse_fast(p) for p in split_union(expression)]
    if all(p is not None for p in parsed):
        runs = [_fast_evaluator(root, steps) for root, steps in parsed]  # type: ignore[misc]
        if len(runs) == 1:
            return runs[0], True
        return (lambda res: [n for r in runs for n in r(res)]), True
    import fhirpathpy  # imported lazily: only a few expressions need it
    from fhirpathpy.models import models

    compiled = fhirpathpy.compile(_rewrite_for_fhirpathpy(expression), models["r4"])

    def slow(resource: Any) -> list[Node]:
        root = resource if isinstance(resource, dict) else {}
        return [(_plain(v), None) for v in compiled(resource, {"resource": root, "rootResource": root})]
    return slow, False


# --------------------------------------------------------------------------- values per type

def _strings(value: Any, hint: str | None) -> list[str]:
    if isinstance(value, str):
        return [value]
    if not isinstance(value, dict):
        return []
    if "family" in value or "given" in value or hint == "HumanName":
        given = [g for g in value.get("given", ()) if isinstance(g, str)]
        family = value.get("family") if isinstance(value.get("family"), str) else None
        out = list(given)
        if family:
            out.append(family)
        out += [p for p in [*value.get("prefix", ()), *value.get("suffix", ())] if isinstance(p, str)]
        if value.get("text"):
            out.append(value["text"])
        if family and given:  # both name orders: Vietnamese (family first) and Western
            out.append(" ".join([family, *given]))
            out.append(" ".join([*given, family]))
        return out
    out = []
    for key, item in value.items():
        if key in ("extension", "id", "use", "type", "period"):
            continue
        if isinstance(item, str):
            out.append(item)
        elif isinstance(item, list):
            out += [x for x in item if isinstance(x, str)]
    return out


def _string_sort_key(value: Any) -> str | None:
    """Names sort by family name, then given names."""
    if isinstance(value, dict) and isinstance(value.get("family"), str):
        given = [g for g in value.get("given", ()) if isinstance(g, str)]
        return normalize(" ".join([value["family"], *given]))
    return None


def _coding_tokens(system: Any, code: Any, out: list[str]) -> None:
    if code is None or code == "":
        return
    code = str(code).lower() if isinstance(code, bool) else str(code)
    out.append(code)
    if system:  # "system|" alone (any code of the system) is matched by a prefix, not stored: rare, and
        out.append(f"{system}|{code}")  # a third of every coded field's elements otherwise
    else:
        out.append(f"|{code}")


def _token_values(value: Any, hint: str | None) -> tuple[list[str], list[str], list[str]]:
    """(tokens, display texts, of-type tokens)."""
    tokens: list[str] = []
    texts: list[str] = []
    of_type: list[str] = []
    if isinstance(value, bool):
        _coding_tokens(None, value, tokens)
    elif isinstance(value, (str, int, float)):
        _coding_tokens(None, value, tokens)
    elif isinstance(value, dict):
        if "coding" in value or hint == "CodeableConcept" or ("text" in value and "code" not in value
                                                                and "value" not in value):
            for c in value.get("coding", ()):
                if isinstance(c, dict):
                    _coding_tokens(c.get("system"), c.get("code"), tokens)
                    if c.get("display"):
                        texts.append(c["display"])
            if value.get("text"):
                texts.append(value["text"])
        elif "value" in value and (hint == "ContactPoint" or value.get("system") in CONTACT_SYSTEMS):
            _coding_tokens(None, value["value"], tokens)
        elif "value" in value and not isinstance(value.get("value"), (int, float)) or hint == "Identifier":
            _coding_tokens(value.get("system"), value.get("value"), tokens)
            typ = value.get("type") if isinstance(value.get("type"), dict) else {}
            for c in typ.get("coding", ()):
                if isinstance(c, dict) and value.get("value"):
                    of_type.append(f"{c.get('system') or ''}|{c.get('code') or ''}|{value['value']}")
            if typ.get("text"):
                texts.append(typ["text"])
        elif "code" in value or "system" in value:  # Coding, or a Quantity searched as a token
            _coding_tokens(value.get("system"), value.get("code"), tokens)
            if value.get("display"):
                texts.append(value["display"])
    return tokens, texts, of_type


def _reference_values(value: Any) -> tuple[list[str], list[str]]:
    refs: list[str] = []
    idents: list[str] = []
    if isinstance(value, str):  # canonical / uri
        refs.append(value)
        if "|" in value:
            refs.append(value.split("|", 1)[0])
        m = _REF_TYPE.search(value)
        if m and "://" not in value:
            refs.append(value.split("/_history/")[0].rsplit("/", 1)[-1])
        return refs, idents
    if not isinstance(value, dict):
        return refs, idents
    ref = value.get("reference")
    if isinstance(ref, str) and ref and not ref.startswith("#"):
        base = ref.split("/_history/")[0]
        refs.append(base)
        m = _REF_TYPE.search(base)
        if m:
            rel = "/".join(base.rsplit("/", 2)[-2:])
            refs.append(rel)
            refs.append(rel.split("/", 1)[1])
        if "|" in base:
            refs.append(base.split("|", 1)[0])
    ident = value.get("identifier")
    if isinstance(ident, dict):
        idents, _, _ = _token_values(ident, "Identifier")
    return refs, idents


def _date_ranges(value: Any, hint: str | None) -> list[tuple[Any, Any]]:
    try:
        if isinstance(value, str):
            return [dates.parse_range(value)]
        if not isinstance(value, dict):
            return []
        if "start" in value or "end" in value or hint == "Period":
            lo = dates.parse_range(value["start"])[0] if value.get("start") else dates.MIN
            hi = dates.parse_range(value["end"])[1] if value.get("end") else dates.MAX
            return [(lo, hi)] if lo <= hi else [(hi, lo)]
        if "event" in value or "repeat" in value or hint == "Timing":
            out = [dates.parse_range(e) for e in value.get("event", ()) if isinstance(e, str)]
            bounds = (value.get("repeat") or {}).get("boundsPeriod")
            if bounds:
                out += _date_ranges(bounds, "Period")
            return out
    except dates.DateFormatError:
        return []
    return []


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, dict) and isinstance(value.get("value"), (int, float)):
        return float(value["value"])
    return None


def _quantity(value: Any) -> dict[str, Any] | None:
    if not isinstance(value, dict) or not isinstance(value.get("value"), (int, float)):
        return None
    return {"v": float(value["value"]), "s": value.get("system") or "",
            "c": value.get("code") or value.get("unit") or ""}


# --------------------------------------------------------------------------- per parameter

@dataclass
class ExtractStats:
    """Parameters whose expression failed, by ``Type.code`` (reported, never raised on writes)."""

    compile_failed: set[str] = field(default_factory=set)
    eval_failed: set[str] = field(default_factory=set)


STATS = ExtractStats()


def _evaluate(param: SearchParam, resource: dict[str, Any]) -> list[Node] | None:
    key = f"{param.resource_type}.{param.code}"
    try:
        evaluator, _ = compile_expression(param.expression or "")
    except Exception:  # noqa: BLE001 - any compile failure of an official expression is reported
        if key not in STATS.compile_failed:
            log.warning("search parameter %s: expression does not compile", key)
        STATS.compile_failed.add(key)
        return None
    try:
        return evaluator(resource)
    except Exception:  # noqa: BLE001 - a failing expression must not fail the write
        if key not in STATS.eval_failed:
            log.warning("search parameter %s: expression failed to evaluate", key)
        STATS.eval_failed.add(key)
        return None


def _unit_tokens(q: dict[str, Any]) -> list[str]:
    return [q["c"], f"{q['s']}|{q['c']}"] if q["c"] else []


def composite_key(field: str, *tokens: str) -> str:
    """Top-level key holding the second component's values for one first-component token.

    FerretDB 1.24 evaluates ``$elemMatch`` on sub-documents wrongly, so the pairing of
    a code with its value is kept in the key itself (hashed: tokens hold ``.``).
    """
    digest = hashlib.blake2b("$".join(tokens).encode(), digest_size=6).hexdigest()
    return f"{field}__{digest}"


def _words_of(ptype: str | None, nodes: list[Node]) -> list[str]:
    if ptype == "token":
        return [t for v, h in nodes for t in _token_values(v, h)[0]]
    if ptype == "string":
        return [normalize(x) for v, h in nodes for x in _strings(v, h)]
    if ptype == "reference":
        return [r for v, _ in nodes for r in _reference_values(v)[0]]
    return [v for v, _ in nodes if isinstance(v, str)]


_NOT_STRINGS = frozenset({"extension", "id", "use", "type", "period"})  # keys _strings() skips


@functools.lru_cache(maxsize=1024)
def string_container(param: SearchParam) -> str | None:
    """The field of a string parameter whose prefix tokens already hold all of ``param``'s.

    ``Patient.name.family`` lies inside ``Patient.name``, whose tokens come from every part
    of the name: a search of ``family`` narrows by ``sp_name`` and checks its own normalized
    strings (``sp_family_n``), so the document keeps one set of prefix tokens, not three.
    """
    expr = param.expression or ""
    if param.type != "string" or param.alias_of or not expr or "|" in expr or "(" in expr:
        return None
    parent, _, leaf = expr.rpartition(".")
    if not parent or leaf in _NOT_STRINGS:
        return None
    for other in params_for(param.resource_type).values():
        if (other is not param and other.type == "string" and other.expression == parent
                and other.supported and not other.alias_of):
            return other.field
    return None


@functools.lru_cache(maxsize=1024)
def composite_narrowing(param: SearchParam) -> str:
    """The field whose equality narrows a search of composite ``param`` by its first token.

    Its own ``sp_<c>_k``, unless a token parameter of the type indexes exactly the first
    component's values (``code-value-quantity`` starts with ``code``): then that parameter's
    field, a superset of ``_k`` (every resource with the code, with or without a value) that
    the precise condition then cuts, so the document does not hold the same tokens twice.
    """
    own = param.field + "_k"
    if not param.component or param.component[0].type != "token" or not param.expression:
        return own
    first = param.component[0].expression
    wanted = " | ".join(f"{part}.{first}" for part in split_union(param.expression))
    for other in params_for(param.resource_type).values():
        if other.type == "token" and other.expression == wanted and other.supported:
            return other.field
    return own


def _composite(param: SearchParam, nodes: list[Node]) -> dict[str, Any]:
    """token$token|string|reference: joined strings in ``sp_<c>``; token$quantity|date: keyed values."""
    f = param.field
    out: dict[str, Any] = {}
    joined: list[str] = []
    first_all: list[str] = []
    types = [c.type for c in param.component]
    for context, _ in nodes:
        evaluated = [compile_expression(c.expression)[0](context) for c in param.component]
        first = _words_of(types[0], evaluated[0])
        if not first:
            continue
        if all(t in ("token", "string", "reference", "uri") for t in types):
            lists = [first] + [_words_of(t, e) for t, e in zip(types[1:], evaluated[1:], strict=True)]
            joined += ["$".join(combo) for combo in product(*lists)][:MAX_COMBINATIONS]
            first_all += first
        elif len(types) == 2 and types[1] == "quantity":
            qs = [q for v, _ in evaluated[1] if (q := _quantity(v))]
            if qs:
                first_all += first
            for tok in first:
                for q in qs:
                    for key in [composite_key(f, tok)] + [composite_key(f, tok, u) for u in _unit_tokens(q)]:
                        out.setdefault(key, []).append(q["v"])
        elif len(types) == 2 and types[1] == "date":
            ranges = [r for v, h in evaluated[1] for r in _date_ranges(v, h)]
            if ranges:
                first_all += first
            for tok in first:
                key = composite_key(f, tok)
                for lo, hi in ranges:
                    out.setdefault(key + "_lo", []).append(lo)
                    out.setdefault(key + "_hi", []).append(hi)
    if joined:
        out[f] = _dedup(joined)
    if first_all and composite_narrowing(param) == f + "_k":
        out[f + "_k"] = _dedup(first_all)
    return out


def _dedup(items: Iterable[Any]) -> list[Any]:
    return list(dict.fromkeys(items))


def extract_param(param: SearchParam, resource: dict[str, Any]) -> dict[str, Any] | None:
    """The ``sp_*`` keys of one parameter ({} when it has no value; None when it failed)."""
    nodes = _evaluate(param, resource)
    if nodes is None:
        return None
    try:
        return _encode(param, nodes)
    except Exception:  # noqa: BLE001 - an odd value must not fail the write
        key = f"{param.resource_type}.{param.code}"
        if key not in STATS.eval_failed:
            log.warning("search parameter %s: value could not be indexed", key)
        STATS.eval_failed.add(key)
        return None


EXACT_SEP = "\x1f"  # unit separator: not a character FHIR strings carry


def exact_key(originals: Iterable[str]) -> str:
    """The stored ``_x`` of a string parameter: its original values, each between separators."""
    return EXACT_SEP + EXACT_SEP.join(s.replace(EXACT_SEP, " ") for s in originals) + EXACT_SEP


def exact_values(stored: Any) -> list[str]:
    """The original values of a stored ``_x`` (a list, as an earlier version stored them, or a key)."""
    if isinstance(stored, str):
        return [s for s in stored.split(EXACT_SEP) if s]
    return list(stored or ())


def _encode(param: SearchParam, nodes: list[Node]) -> dict[str, Any]:
    f = param.field
    out: dict[str, Any] = {}
    t = param.type
    if t == "string":
        originals = _dedup(s for v, h in nodes for s in _strings(v, h) if s)
        if originals:
            normed = _dedup(normalize(s) for s in originals)
            tokens: set[str] = set()
            for s in normed:
                tokens |= prefix_tokens(s)
            if string_container(param) is None:
                out[f] = sorted(tokens)
            out[f + "_n"] = normed
            out[f + "_x"] = exact_key(originals)
            out[f + "_s"] = _string_sort_key(nodes[0][0]) or normed[0]
    elif t == "token":
        toks: list[str] = []
        texts: list[str] = []
        of_type: list[str] = []
        for v, h in nodes:
            a, b, c = _token_values(v, h)
            toks += a
            texts += b
            of_type += c
        if toks:
            out[f] = _dedup(toks)
            out[f + "_s"] = toks[0]
        if texts:
            out[f + "_t"] = _dedup(normalize(x) for x in texts)
        if of_type:
            out[f + "_ot"] = _dedup(of_type)
    elif t == "reference":
        refs: list[str] = []
        idents: list[str] = []
        for v, _ in nodes:
            a, b = _reference_values(v)
            refs += a
            idents += b
        if refs:
            out[f] = _dedup(refs)
            out[f + "_s"] = refs[0]
        if idents:
            out[f + "_id"] = _dedup(idents)
    elif t == "date":
        ranges = _dedup(r for v, h in nodes for r in _date_ranges(v, h))
        if ranges:
            out[f + "_lo"] = [lo for lo, _ in ranges]
            out[f + "_hi"] = [hi for _, hi in ranges]
            buckets = _dedup(b for lo, hi in ranges for b in dates.containing_buckets(lo, hi))
            if buckets:
                out[f + "_b"] = buckets
            out[f + "_s"] = min(lo for lo, _ in ranges)
    elif t == "number":
        nums = [n for v, _ in nodes if (n := _number(v)) is not None]
        if nums:
            out[f] = _dedup(nums)
            out[f + "_s"] = min(nums)
    elif t == "quantity":
        qs = [q for v, _ in nodes if (q := _quantity(v))]
        if qs:
            out[f] = _dedup(q["v"] for q in qs)
            units = _dedup(u for q in qs for u in _unit_tokens(q))
            if units:
                out[f + "_u"] = units
            out[f + "_s"] = qs[0]["v"]
    elif t == "uri":
        uris = _dedup(v for v, _ in nodes if isinstance(v, str))
        if uris:
            out[f] = uris
            out[f + "_s"] = uris[0]
    elif t == "composite":
        out.update(_composite(param, nodes))
    if not param.sortable:
        out.pop(f + "_s", None)
    return out


@functools.lru_cache(maxsize=4096)
def expression_roots(expression: str) -> frozenset[str] | None:
    """The first field each part of a fast-path expression reads (None: not known, always evaluate)."""
    roots: set[str] = set()
    for part in split_union(expression):
        parsed = _parse_fast(part)
        if parsed is None or not parsed[1] or parsed[1][0][0] != "field":
            return None
        roots.add(parsed[1][0][1])
    return frozenset(roots)


# The suffixes of the fields a parameter of each type writes when it has a value: ``:missing``
# asks whether any exists (not pushed down by FerretDB: a bucket walk or the other criteria
# narrow first). Composites take no ``:missing``.
PRESENCE_FIELDS: dict[str, tuple[str, ...]] = {
    "string": ("_n",), "token": ("", "_t", "_ot"), "reference": ("", "_id"), "date": ("_lo",),
    "number": ("",), "quantity": ("",), "uri": ("",)}


@functools.cache
def _indexed(resource_type: str) -> tuple[tuple[SearchParam, frozenset[str] | None], ...]:
    """The parameters ``index_fields`` extracts for a type, with their root fields (made once a type)."""
    return tuple((param, expression_roots(param.expression or ""))
                 for code, param in params_for(resource_type).items()
                 if code not in STORAGE_PARAMS and param.supported and not param.alias_of)


def index_fields(resource: dict[str, Any]) -> dict[str, Any]:
    """Every ``sp_*`` key for ``resource`` (its type's parameters plus the common ones)."""
    out: dict[str, Any] = {}
    # a parameter whose root field is absent (no key equal to it or starting with it, as a
    # choice element would) has no value: skip the walk, as most parameters of a resource do
    prefixes = {key[:i] for key in resource for i in range(1, len(key) + 1)}
    for param, roots in _indexed(resource.get("resourceType", "")):
        if roots is not None and roots.isdisjoint(prefixes):
            continue
        fields = extract_param(param, resource)
        if fields:
            out.update(fields)
    return out
