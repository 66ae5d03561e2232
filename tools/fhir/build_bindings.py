#!/usr/bin/env python3
"""Build ``sen_shared/fhir/data/bindings.json`` (required value-set bindings) from the official R4 package.

Reads the StructureDefinitions, ValueSets and CodeSystems of ``hl7.fhir.r4.examples`` 4.0.1 (the
package holds the whole core specification's conformance resources; ``hl7.fhir.r4.core`` has the same
definitions but is not published on every npm mirror) and writes what
:mod:`sen_shared.fhir.bindings` needs to check a resource without FHIRPath:

- ``nodes``: per resource type, complex datatype and backbone element (``Patient.contact``) the
  JSON keys that lead to a required binding, each ``[kind, value set, node]`` where kind is
  ``code`` (a primitive: string or array of strings), ``Coding``, ``CodeableConcept``, ``node``
  (descend into the object(s) with that node's table) or ``resource`` (a contained/inline
  resource: use the table of its ``resourceType``). Choice elements appear under each JSON name
  (``valueCode``, ``valueCodeableConcept``...). ``extension``/``modifierExtension`` are never
  listed; keys that lead to no binding are pruned.
- ``valueSets``: each enforceable value set as ``{system: [codes]}`` (``""`` for codes of a
  ``code`` element whose value set spans no system).
- ``skipped``: the value sets bound ``required`` that cannot be enumerated from the package, with why
  (a whole external system such as MIME types, UCUM, ISO 4217, BCP-47; a filter other than is-a;
  a code system the package only holds as a fragment or not at all).

Only ``derivation: specialization`` definitions are read (the base resources and datatypes, not
profiles such as vitalsigns).

Usage: tools/fhir/build_bindings.py [PACKAGE_DIR] [OUT]
(default ``.sen/fhir/hl7.fhir.r4.examples/package``; fetch it with ``tools/fhir/fetch-examples.sh``).
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_PKG = ROOT / ".sen/fhir/hl7.fhir.r4.examples/package"
DEFAULT_OUT = ROOT / "shared/src/sen_shared/fhir/data/bindings.json"

BINDABLE = {"code", "string", "uri", "Coding", "CodeableConcept"}
PRIMITIVE_KIND = {"code": "code", "string": "code", "uri": "code"}
SKIP_KEYS = {"extension", "modifierExtension", "id"}


class Unenforceable(Exception):
    """The value set cannot be enumerated from the package."""


# ------------------------------------------------------------------ loading

def load(pkg: Path) -> tuple[list[dict], dict[str, dict], dict[str, dict]]:
    sds: dict[str, dict] = {}
    value_sets: dict[str, dict] = {}
    code_systems: dict[str, dict] = {}

    def take(res: dict) -> None:
        rt = res.get("resourceType")
        if rt == "StructureDefinition":
            sds.setdefault(res["url"], res)
        elif rt == "ValueSet" and res.get("url"):
            value_sets.setdefault(res["url"], res)
        elif rt == "CodeSystem" and res.get("url"):
            have = code_systems.get(res["url"])
            # prefer the definition that lists its concepts
            if have is None or (not have.get("concept") and res.get("concept")):
                code_systems[res["url"]] = res

    for f in sorted(pkg.glob("*.json")):
        if not f.name.startswith(("StructureDefinition-", "ValueSet-", "CodeSystem-", "Bundle-")):
            continue
        data = json.loads(f.read_text("utf-8"))
        if data.get("resourceType") == "Bundle":
            if f.name in ("Bundle-valuesets.json", "Bundle-v2-valuesets.json", "Bundle-v3-valuesets.json",
                          "Bundle-types.json", "Bundle-resources.json"):
                for e in data.get("entry", []):
                    if isinstance(e.get("resource"), dict):
                        take(e["resource"])
        else:
            take(data)
    return list(sds.values()), value_sets, code_systems


# ------------------------------------------------------------------ value sets

def _all_codes(cs: dict) -> dict[str, list[str]]:
    """code -> its children codes (hierarchy), of a complete code system."""
    tree: dict[str, list[str]] = {}

    def walk(concepts: list[dict]) -> None:
        for c in concepts:
            tree[c["code"]] = [k["code"] for k in c.get("concept", [])]
            walk(c.get("concept", []))
    walk(cs.get("concept", []))
    # `subsumedBy` properties (flat code systems with a hierarchy in properties)
    def props(concepts: list[dict]) -> None:
        for c in concepts:
            for p in c.get("property", []):
                if p.get("code") in ("subsumedBy", "parent") and p.get("valueCode") in tree:
                    tree[p["valueCode"]].append(c["code"])
            props(c.get("concept", []))
    props(cs.get("concept", []))
    return tree


def _descendants(tree: dict[str, list[str]], code: str) -> set[str]:
    out: set[str] = set()
    todo = list(tree.get(code, []))
    while todo:
        c = todo.pop()
        if c not in out:
            out.add(c)
            todo += tree.get(c, [])
    return out


def _include(inc: dict, value_sets: dict, code_systems: dict, stack: tuple[str, ...]) -> dict[str, set[str]]:
    parts: list[dict[str, set[str]]] = []
    system = inc.get("system")
    if system:
        if inc.get("concept"):
            codes = {c["code"] for c in inc["concept"]}
            if inc.get("filter"):
                raise Unenforceable(f"{system}: concepts and filters together")
            parts.append({system: codes})
        else:
            cs = code_systems.get(system)
            if cs is None:
                raise Unenforceable(f"external code system {system}")
            if cs.get("content") != "complete" or not cs.get("concept"):
                raise Unenforceable(f"code system {system} is {cs.get('content') or 'empty'} in the package")
            tree = _all_codes(cs)
            codes = set(tree)
            for flt in inc.get("filter", []):
                op, value = flt.get("op"), flt.get("value")
                if flt.get("property") not in ("concept", "code", None) or op not in ("is-a", "descendent-of",
                                                                                        "is-not-a", "="):
                    raise Unenforceable(f"{system}: filter {flt.get('property')} {op} {value}")
                if value not in tree:
                    raise Unenforceable(f"{system}: filter on unknown code {value}")
                below = _descendants(tree, value)
                if op == "is-a":
                    codes &= below | {value}
                elif op == "descendent-of":
                    codes &= below
                elif op == "is-not-a":
                    codes -= below | {value}
                else:
                    codes &= {value}
            parts.append({system: codes})
    for vs_url in inc.get("valueSet", []):
        parts.append(expand(vs_url, value_sets, code_systems, stack))
    if not parts:
        raise Unenforceable("an include with neither system nor valueSet")
    # several parts of one include intersect
    out = parts[0]
    for p in parts[1:]:
        out = {s: out[s] & p[s] for s in out.keys() & p.keys()}
    return out


def expand(url: str, value_sets: dict, code_systems: dict, stack: tuple[str, ...] = ()) -> dict[str, set[str]]:
    url = url.split("|", 1)[0]
    if url in stack:
        raise Unenforceable(f"{url} includes itself")
    vs = value_sets.get(url)
    if vs is None:
        raise Unenforceable(f"value set {url} is not in the package")
    compose = vs.get("compose")
    if not compose:
        raise Unenforceable(f"value set {url} has no compose")
    out: dict[str, set[str]] = {}
    for inc in compose.get("include", []):
        for s, codes in _include(inc, value_sets, code_systems, (*stack, url)).items():
            out.setdefault(s, set()).update(codes)
    for exc in compose.get("exclude", []):
        for s, codes in _include(exc, value_sets, code_systems, (*stack, url)).items():
            if s in out:
                out[s] -= codes
    if not any(out.values()):
        raise Unenforceable(f"value set {url} is empty")
    return out


# ------------------------------------------------------------------ element tables

def _json_names(path: str, types: list[str]) -> list[tuple[str, str]]:
    """(JSON key, type) of an element: ``value[x]`` -> valueCode/code, valueQuantity/Quantity..."""
    name = path.rsplit(".", 1)[-1]
    if name.endswith("[x]"):
        stem = name[:-3]
        return [(stem + t[0].upper() + t[1:], t) for t in types]
    return [(name, t) for t in types[:1]] if types else [(name, "")]


def build_nodes(sds: list[dict], bound: dict[str, Any]) -> dict[str, dict[str, list]]:
    """All tables, unpruned. ``bound``: valueSet url (without version) -> True when enforceable."""
    spec = [sd for sd in sds if sd.get("derivation") == "specialization" and sd.get("kind") in
            ("resource", "complex-type") and sd.get("snapshot")]
    complex_types = {sd["type"] for sd in spec if sd["kind"] == "complex-type"}
    resources = {sd["type"] for sd in spec if sd["kind"] == "resource"}
    nodes: dict[str, dict[str, list]] = {}
    for sd in spec:
        elements = sd["snapshot"]["element"]
        paths = {e["path"] for e in elements}
        with_children = {p.rsplit(".", 1)[0] for p in paths if "." in p}
        nodes.setdefault(sd["type"], {})
        for e in elements:
            path = e["path"]
            if "." not in path:
                continue
            parent, name = path.rsplit(".", 1)
            if name in SKIP_KEYS:
                continue
            table = nodes.setdefault(parent, {})
            types = [t["code"] for t in e.get("type", [])]
            binding = e.get("binding") or {}
            vs = None
            if binding.get("strength") == "required" and binding.get("valueSet"):
                vs = binding["valueSet"].split("|", 1)[0]
            if e.get("contentReference"):
                table[name] = ["node", None, e["contentReference"].lstrip("#")]
                continue
            for key, t in _json_names(path, types):
                if path in with_children:
                    table[key] = ["node", None, path]
                elif vs and t in BINDABLE and bound.get(vs):
                    table[key] = [PRIMITIVE_KIND.get(t, t), vs, None]
                elif t in ("Resource",) or t in resources:
                    table[key] = ["resource", None, None]
                elif t in complex_types and t != "Extension":
                    table[key] = ["node", None, t]
    return nodes


def prune(nodes: dict[str, dict[str, list]]) -> dict[str, dict[str, list]]:
    live: set[str] = set()
    changed = True
    while changed:
        changed = False
        for name, table in nodes.items():
            if name in live:
                continue
            for kind, _vs, sub in table.values():
                if kind in ("code", "Coding", "CodeableConcept", "resource") or (kind == "node" and sub in live):
                    live.add(name)
                    changed = True
                    break
    out: dict[str, dict[str, list]] = {}
    for name in sorted(live):
        table = {k: v for k, v in sorted(nodes[name].items()) if v[0] != "node" or v[2] in live}
        out[name] = table
    return out


# ------------------------------------------------------------------ main

def build(pkg: Path) -> tuple[dict, Counter]:
    sds, value_sets, code_systems = load(pkg)
    required: Counter = Counter()
    for sd in sds:
        if sd.get("derivation") != "specialization" or sd.get("kind") not in ("resource", "complex-type"):
            continue
        for e in sd.get("snapshot", {}).get("element", []):
            b = e.get("binding") or {}
            if b.get("strength") == "required" and b.get("valueSet"):
                if {t["code"] for t in e.get("type", [])} & BINDABLE:
                    required[b["valueSet"].split("|", 1)[0]] += 1
    enforceable: dict[str, dict[str, list[str]]] = {}
    skipped: dict[str, str] = {}
    for url in sorted(required):
        try:
            exp = expand(url, value_sets, code_systems)
            enforceable[url] = {s: sorted(c) for s, c in sorted(exp.items()) if c}
        except Unenforceable as why:
            skipped[url] = str(why)
    nodes = prune(build_nodes(sds, {u: True for u in enforceable}))
    used = {v[1] for t in nodes.values() for v in t.values() if v[1]}
    data = {"fhirVersion": "4.0.1", "source": "hl7.fhir.r4.examples#4.0.1 StructureDefinition/ValueSet/CodeSystem",
            "valueSets": {u: enforceable[u] for u in sorted(used)},
            "skipped": skipped,
            "nodes": nodes}
    stats = Counter(required=len(required), enforceable=len(used), skipped=len(skipped),
                    elements=sum(required[u] for u in used),
                    skipped_elements=sum(required[u] for u in skipped))
    return data, stats


def main(argv: list[str]) -> int:
    pkg = Path(argv[1]) if len(argv) > 1 else DEFAULT_PKG
    out = Path(argv[2]) if len(argv) > 2 else DEFAULT_OUT
    if not (pkg / "StructureDefinition-Patient.json").exists():
        print(f"build_bindings: {pkg} has no StructureDefinitions; run tools/fhir/fetch-examples.sh",
              file=sys.stderr)
        return 1
    data, stats = build(pkg)
    out.parent.mkdir(parents=True, exist_ok=True)

    def section(name: str, items: dict) -> list[str]:
        lines = [json.dumps(name) + ":{"]
        keys = list(items)
        for i, k in enumerate(keys):
            sep = "," if i < len(keys) - 1 else ""
            lines.append(json.dumps(k) + ":" + json.dumps(items[k], ensure_ascii=False, separators=(",", ":")) + sep)
        lines.append("}")
        return lines

    # one value set / table per line keeps diffs readable
    lines = ['{"fhirVersion":"4.0.1","source":' + json.dumps(data["source"]) + ","]
    lines += section("valueSets", data["valueSets"]) + [","]
    lines += section("skipped", data["skipped"]) + [","]
    lines += section("nodes", data["nodes"]) + ["}"]
    text = "\n".join(lines) + "\n"
    assert json.loads(text) == data
    out.write_text(text, encoding="utf-8")
    print(f"build_bindings: {stats['enforceable']} value sets enforced on {stats['elements']} elements, "
          f"{stats['skipped']} skipped ({stats['skipped_elements']} elements), "
          f"{len(data['nodes'])} tables -> {out} ({len(text)} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
