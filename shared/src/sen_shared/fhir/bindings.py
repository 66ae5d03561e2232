"""Required value-set bindings of FHIR R4, checked on every write.

``fhir.resources`` checks structure and datatypes but not codes: ``"gender": "banana"`` passes it.
This module checks every element that R4 binds ``required`` to a value set that can be enumerated,
from the table ``data/bindings.json`` that ``tools/fhir/build_bindings.py`` generates from the
official package (``hl7.fhir.r4.examples`` 4.0.1: the StructureDefinitions, ValueSets and
CodeSystems of the core specification). No download and no FHIRPath at run time: the table lists,
per resource type, complex datatype and backbone element, only the JSON keys that lead to a
binding, so a check is one walk over the keys of the resource that can hold a bound code.

What is checked
  - ``code`` (and the few ``string``/``uri``) elements: the value must be a code of the value set
    (any of its systems). Arrays are checked item by item.
  - ``Coding`` and ``CodeableConcept`` elements (R4 binds 14 CodeableConcepts required, e.g.
    ``Condition.clinicalStatus``, ``AllergyIntolerance.verificationStatus``): every coding whose
    ``system`` is a system of the value set must carry one of that system's codes. A coding of
    another system, or without a system, is left alone (translations are allowed; a coding without
    system cannot be judged), and so is a concept with only ``text``.
  - Backbone elements (``Patient.contact.gender``, ``Questionnaire.item.item`` through
    ``contentReference``), complex datatypes wherever they occur (``HumanName.use``,
    ``ContactPoint.system``, ``Quantity.comparator``, ``Identifier.use``, ``Narrative.status``...),
    choice elements under each JSON name (``valueQuantity.comparator``), and resources inside
    resources (``contained``, ``Bundle.entry.resource``, ``Parameters.parameter.resource``).
  - Extensions are never looked into (``extension``, ``modifierExtension`` and the ``_element``
    siblings of primitives are not in the table): an extension's value may use any code.

What is skipped (``skipped`` in the data file, 4 value sets on 17 elements in R4 4.0.1)
  Value sets that include a whole external code system or are not in the package cannot be
  enumerated and are not enforced: ``currencies`` (ISO 4217, ``Money.currency``), ``mimetypes``
  (BCP 13, ``Attachment.contentType``, ``Binary.contentType``...), ``ucum-units`` (UCUM,
  ``Duration``/``Timing`` units) and ``http://loinc.org/vs/LL379-9``
  (``Observation.referenceRange``... type codes from LOINC). A value set built from a filter other
  than ``is-a``/``descendent-of``/``is-not-a``/``=`` on a complete code system of the package would
  be skipped too (none in R4 4.0.1). 220 value sets on 349 elements are enforced.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

MAX_SHOWN = 12  # allowed codes listed in a message; the rest are counted
MAX_ISSUES = 20


class _ValueSet:
    __slots__ = ("by_system", "codes", "shown", "url")

    def __init__(self, url: str, by_system: dict[str, list[str]]) -> None:
        self.url = url
        self.by_system = {s: frozenset(c) for s, c in by_system.items()}
        self.codes = frozenset().union(*self.by_system.values())
        ordered = sorted(self.codes)
        more = len(ordered) - MAX_SHOWN
        self.shown = ", ".join(ordered[:MAX_SHOWN]) + (f" and {more} more" if more > 0 else "")


@cache
def _tables() -> tuple[dict[str, dict[str, tuple[str, _ValueSet | None, str | None]]], dict[str, str]]:
    data = json.loads(resources.files(__package__).joinpath("data/bindings.json").read_text("utf-8"))
    value_sets = {u: _ValueSet(u, s) for u, s in data["valueSets"].items()}
    nodes = {name: {k: (kind, value_sets[vs] if vs else None, sub) for k, (kind, vs, sub) in table.items()}
             for name, table in data["nodes"].items()}
    return nodes, data["skipped"]


def skipped_value_sets() -> dict[str, str]:
    """The value sets R4 binds required that are not enforced, with why."""
    return dict(_tables()[1])


def check(resource: dict[str, Any]) -> list[dict[str, Any]]:
    """OperationOutcome issues (``code-invalid``) for each bound element whose code is outside its value set.

    ``resource`` must already have passed the structural validation (its JSON types are right);
    anything unexpected is left to that validation rather than reported here.
    """
    nodes = _tables()[0]
    rtype = resource.get("resourceType")
    table = nodes.get(rtype) if isinstance(rtype, str) else None
    issues: list[dict[str, Any]] = []
    if table is not None:
        _walk(resource, table, rtype, nodes, issues)  # type: ignore[arg-type]
    return issues


def _walk(obj: dict[str, Any], table: dict, path: str, nodes: dict, issues: list) -> None:
    for key, value in obj.items():
        spec = table.get(key)
        if spec is None:
            continue
        if isinstance(value, list):
            for i, item in enumerate(value):
                _one(item, spec, f"{path}.{key}[{i}]", nodes, issues)
        else:
            _one(value, spec, f"{path}.{key}", nodes, issues)
        if len(issues) >= MAX_ISSUES:
            return


def _one(value: Any, spec: tuple, path: str, nodes: dict, issues: list) -> None:
    kind, vs, sub = spec
    if kind == "code":
        if isinstance(value, str) and value not in vs.codes:
            issues.append(_issue(path, value, vs))
    elif kind == "node":
        if isinstance(value, dict):
            _walk(value, nodes[sub], path, nodes, issues)
    elif kind == "resource":
        if isinstance(value, dict):
            table = nodes.get(value.get("resourceType"))
            if table is not None:
                _walk(value, table, path, nodes, issues)
    elif isinstance(value, dict):  # Coding / CodeableConcept
        if kind == "Coding":
            _coding(value, vs, path, issues)
        else:
            codings = value.get("coding")
            if isinstance(codings, list):
                for i, c in enumerate(codings):
                    if isinstance(c, dict):
                        _coding(c, vs, f"{path}.coding[{i}]", issues)


def _coding(coding: dict[str, Any], vs: _ValueSet, path: str, issues: list) -> None:
    allowed = vs.by_system.get(coding.get("system"))  # type: ignore[arg-type]
    code = coding.get("code")
    if allowed is not None and isinstance(code, str) and code not in allowed:
        issues.append(_issue(f"{path}.code", code, vs, system=coding["system"]))


def _issue(path: str, code: str, vs: _ValueSet, system: str | None = None) -> dict[str, Any]:
    if system:
        shown = sorted(vs.by_system[system])
        more = len(shown) - MAX_SHOWN
        allowed = ", ".join(shown[:MAX_SHOWN]) + (f" and {more} more" if more > 0 else "")
        what = f"{code!r} is not a code of {system} in the required value set {vs.url}"
    else:
        allowed = vs.shown
        what = f"{code!r} is not a code of the required value set {vs.url}"
    return {"severity": "error", "code": "code-invalid",
            "diagnostics": f"{path}: {what} (allowed: {allowed})", "expression": [path]}
