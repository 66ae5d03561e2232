"""The committed definitions table, and how its expressions fare on the official examples."""

from __future__ import annotations

import json
from collections import Counter

import pytest
from sen_shared.fhir.search import extract
from sen_shared.fhir.search.definitions import get_param, params_for, resource_types

from .conftest import EXAMPLES


def test_table_loads_and_restricts_unions():
    assert len(resource_types()) > 120
    assert get_param("Observation", "patient").expression == "Observation.subject.where(resolve() is Patient)"
    assert get_param("Observation", "patient").target == ("Patient",)
    assert get_param("Patient", "_id").field == "_id" and get_param("Patient", "_lastUpdated").field == "lu"
    assert not get_param("Patient", "_text").supported
    assert "|" not in get_param("Condition", "patient").expression
    assert [c.type for c in get_param("Observation", "code-value-quantity").component] == ["token", "quantity"]


@pytest.mark.skipif(not EXAMPLES.exists(), reason="official examples not fetched: run tools/fhir/fetch-examples.sh")
def test_expressions_on_official_examples(capsys):
    compiled = failed_compile = fast = 0
    for rt in resource_types():
        for p in params_for(rt).values():
            if not p.supported or not p.expression:
                continue
            try:
                _, is_fast = extract.compile_expression(p.expression)
                compiled += 1
                fast += is_fast
            except Exception:
                failed_compile += 1
    extract.STATS.eval_failed.clear()
    values = Counter()
    n = 0
    for path in sorted(EXAMPLES.glob("*.json")):
        if path.name.startswith(("SearchParameter-", "Bundle-searchParams", "package.json", "StructureDefinition-")):
            continue
        try:
            res = json.loads(path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError):
            continue
        if not isinstance(res, dict) or not params_for(res.get("resourceType", "")):
            continue
        fields = extract.index_fields(res)
        n += 1
        values.update(k for k in fields if k != "sp_present")
    with capsys.disabled():
        print(f"\nsearch expressions: {compiled} compile ({fast} fast path), {failed_compile} fail to compile; "
              f"{len(extract.STATS.eval_failed)} fail to evaluate on {n} examples: "
              f"{sorted(extract.STATS.eval_failed)[:10]}")
    assert n > 2000
    assert failed_compile == 0
    assert len(extract.STATS.eval_failed) < 20
