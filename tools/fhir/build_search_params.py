#!/usr/bin/env python3
"""Build ``sen_shared/fhir/data/search-parameters.json`` from the official R4 package.

Reads the ``Bundle-searchParams.json`` of ``hl7.fhir.r4.examples`` 4.0.1 (the
1,375 SearchParameters of the core specification; the package's loose
``SearchParameter-*.json`` files add IG/extension examples that are not part
of the core and are left out on purpose) and writes, per resource type,
a compact table ``{code: {type, expression, target, component, ...}}``.

A definition whose ``base`` lists several types carries an expression that is
a ``|`` union over those types; each type keeps only its own parts.

Usage: tools/fhir/build_search_params.py [PACKAGE_DIR] [OUT]
(default ``.sen/fhir/hl7.fhir.r4.examples/package``; fetch it with
``tools/fhir/fetch-examples.sh``).
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

from sen_shared.fhir.search.extract import split_union  # the engine's own reading of `|`

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_PKG = ROOT / ".sen/fhir/hl7.fhir.r4.examples/package"
DEFAULT_OUT = ROOT / "shared/src/sen_shared/fhir/data/search-parameters.json"

# R4 has no per-parameter modifier list; these are the modifiers the spec
# defines per type that Sen's engine implements.
MODIFIERS = {
    "string": ["missing", "exact", "contains"],
    "token": ["missing", "not", "text", "of-type"],
    "reference": ["missing", "identifier", "type"],
    "date": ["missing"],
    "number": ["missing"],
    "quantity": ["missing"],
    "uri": ["missing", "below", "above"],
    "composite": [],
    "special": [],
}


def restrict(expression: str | None, base: str) -> str | None:
    if not expression:
        return None
    own = [p for p in split_union(expression) if re.match(rf"^\(*{re.escape(base)}\b", p)]
    return " | ".join(own) if own else None


def narrow_targets(expression: str | None, targets: list[str]) -> list[str]:
    """``X.subject.where(resolve() is Patient)`` can only point to a Patient, whatever the shared list says."""
    if not expression:
        return targets
    found = [re.search(r"where\(resolve\(\) is (\w+)\)$", p) for p in split_union(expression)]
    if all(found):
        narrowed = sorted({m.group(1) for m in found if m} & set(targets))
        return narrowed or targets
    return targets


def build(pkg: Path) -> dict:
    bundle = json.loads((pkg / "Bundle-searchParams.json").read_text(encoding="utf-8"))
    sps = [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "SearchParameter"]
    by_url = {sp["url"]: sp for sp in sps}
    out: dict[str, dict] = {}
    for sp in sps:
        for base in sp.get("base", []):
            entry: dict = {"type": sp["type"]}
            expr = restrict(sp.get("expression"), base)
            if expr is None and sp.get("expression") and len(sp["base"]) == 1:
                expr = sp["expression"]
            if expr:
                entry["expression"] = expr
            if sp.get("target"):
                entry["target"] = narrow_targets(expr, sorted(sp["target"]))
            if sp.get("component"):
                comps = []
                for comp in sp["component"]:
                    ref = by_url.get(comp["definition"])
                    comps.append({"code": ref["code"] if ref else None,
                                  "type": ref["type"] if ref else None,
                                  "expression": comp["expression"]})
                entry["component"] = comps
            if sp.get("multipleOr") is False:
                entry["multipleOr"] = False
            if sp.get("multipleAnd") is False:
                entry["multipleAnd"] = False
            if sp.get("comparator"):
                entry["comparator"] = sp["comparator"]
            entry["modifier"] = MODIFIERS[sp["type"]]
            out.setdefault(base, {})[sp["code"]] = entry
    return {"fhirVersion": "4.0.1", "source": "hl7.fhir.r4.examples#4.0.1 Bundle-searchParams.json",
            "resources": {k: dict(sorted(v.items())) for k, v in sorted(out.items())}}


def main(argv: list[str]) -> int:
    pkg = Path(argv[1]) if len(argv) > 1 else DEFAULT_PKG
    out = Path(argv[2]) if len(argv) > 2 else DEFAULT_OUT
    if not (pkg / "Bundle-searchParams.json").exists():
        print(f"build_search_params: {pkg} has no Bundle-searchParams.json; run tools/fhir/fetch-examples.sh",
              file=sys.stderr)
        return 1
    data = build(pkg)
    out.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(data, ensure_ascii=False, sort_keys=False, separators=(",", ":"))
    # one resource type per line keeps diffs readable
    lines = ['{"fhirVersion":"4.0.1","source":' + json.dumps(data["source"]) + ',"resources":{']
    items = list(data["resources"].items())
    for i, (rt, params) in enumerate(items):
        sep = "," if i < len(items) - 1 else ""
        lines.append(json.dumps(rt) + ":" + json.dumps(params, ensure_ascii=False, separators=(",", ":")) + sep)
    lines.append("}}")
    text = "\n".join(lines) + "\n"
    json.loads(text)
    out.write_text(text, encoding="utf-8")
    n = sum(len(v) for v in data["resources"].values())
    print(f"build_search_params: {n} parameters over {len(items)} types -> {out} ({len(text)} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
