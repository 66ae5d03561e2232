"""Search parameter definitions: the official R4 table, read once from package data."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from functools import cache, lru_cache
from importlib import resources
from typing import Any

COMMON_BASES = ("DomainResource", "Resource")
SUPPORTED_TYPES = frozenset({"string", "token", "reference", "date", "number", "quantity", "uri", "composite"})
# Parameters answered from the storage engine's own fields, not from sp_* keys.
STORAGE_PARAMS = {"_id": "_id", "_lastUpdated": "lu"}
# Types indexed for fewer parameters than R4 defines: (searchable codes, sortable codes).
# AuditEvent: one is stored with every read and search, and each index value it carries is paid
# on each of them (the documents are the audit writer's whole cost for FerretDB and PostgreSQL:
# 160 µs a read's event with every parameter, 105 with these). The others (type, site, source,
# entity type and role, policy, address...) hold the same value on every event Sen records, so a
# search on them would find everything: they are not indexed (unsupported: ignored with
# ``Prefer: handling=lenient``, refused with strict), and the trail sorts by date only.
NARROWED: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    "AuditEvent": (frozenset({"date", "agent", "altid", "agent-role", "subtype", "action", "entity", "patient",
                              "outcome"}), frozenset({"date"})),
}


@dataclass(frozen=True, slots=True)
class Component:
    code: str | None
    type: str | None
    expression: str


@dataclass(frozen=True, slots=True)
class SearchParam:
    resource_type: str
    code: str
    type: str
    expression: str | None
    target: tuple[str, ...] = ()
    component: tuple[Component, ...] = ()
    multiple_or: bool = True
    multiple_and: bool = True
    modifiers: frozenset[str] = frozenset()
    # a string parameter with the same expression as an earlier one of its type (Patient
    # ``phonetic`` is ``name``) is stored once, under the earlier one's fields
    alias_of: str | None = None
    indexed: bool = True  # False: left out of the type's index (NARROWED)
    sortable: bool = True  # False: no ``_s`` key, no ``_sort`` (NARROWED)

    @property
    def supported(self) -> bool:
        if self.code in STORAGE_PARAMS:
            return True
        return self.indexed and self.type in SUPPORTED_TYPES and bool(self.expression)

    @property
    def field(self) -> str:
        """Top-level document key holding this parameter's index values."""
        return STORAGE_PARAMS.get(self.code) or f"sp_{self.alias_of or self.code}"

    @property
    def stored_code(self) -> str:
        """The code whose fields hold this parameter's values (itself unless an alias)."""
        return self.alias_of or self.code


@lru_cache(maxsize=1)
def _table() -> dict[str, dict[str, Any]]:
    text = resources.files("sen_shared.fhir").joinpath("data/search-parameters.json").read_text("utf-8")
    return json.loads(text)["resources"]


def _make(resource_type: str, code: str, raw: dict[str, Any]) -> SearchParam:
    return SearchParam(
        resource_type=resource_type, code=code, type=raw["type"], expression=raw.get("expression"),
        target=tuple(raw.get("target", ())),
        component=tuple(Component(c.get("code"), c.get("type"), c["expression"]) for c in raw.get("component", ())),
        multiple_or=raw.get("multipleOr", True), multiple_and=raw.get("multipleAnd", True),
        modifiers=frozenset(raw.get("modifier", ())),
    )


@cache
def params_for(resource_type: str) -> dict[str, SearchParam]:
    """Every parameter of ``resource_type``, the common Resource ones included; {} for an unknown type."""
    table = _table()
    if resource_type not in table or resource_type in COMMON_BASES:
        return {}
    out: dict[str, SearchParam] = {}
    for base in (*reversed(COMMON_BASES), resource_type):
        for code, raw in table.get(base, {}).items():
            out[code] = _make(resource_type, code, raw)
    first: dict[str, str] = {}
    for code, param in list(out.items()):
        if param.type == "string" and param.expression:
            if param.expression in first:
                out[code] = replace(param, alias_of=first[param.expression])
            else:
                first[param.expression] = code
    narrowed = NARROWED.get(resource_type)
    if narrowed is not None:
        searchable, sortable = narrowed
        for code, param in list(out.items()):
            if code not in STORAGE_PARAMS:
                out[code] = replace(param, indexed=code in searchable, sortable=code in sortable)
    return out


def unsupported_detail(param: SearchParam) -> str:
    """Why ``param`` cannot be searched, for the OperationOutcome."""
    narrowed = NARROWED.get(param.resource_type)
    if narrowed is not None and not param.indexed:
        return (f"search parameter {param.code!r} is not indexed for {param.resource_type}; it is searched by "
                f"{', '.join(sorted(narrowed[0]))}")
    return f"search parameter {param.code!r} is not supported"


def unsortable_detail(param: SearchParam) -> str:
    sortable = sorted({*NARROWED.get(param.resource_type, ((), ()))[1], *STORAGE_PARAMS})
    return f"cannot sort {param.resource_type} by {param.code!r}; it sorts by {', '.join(sortable)}"


def get_param(resource_type: str, code: str) -> SearchParam | None:
    return params_for(resource_type).get(code)


def resource_types() -> list[str]:
    return [t for t in _table() if t not in COMMON_BASES]


def is_resource_type(name: str) -> bool:
    return name in _table() and name not in COMMON_BASES
