"""Cost of the required value-set binding check per write (``make bench``).

For a typical Patient, Observation and Encounter of Sen and a 20-entry transaction's resources:
µs per ``bindings.check`` (the walk over ``data/bindings.json``) beside µs per whole
``validate_resource`` (the ``fhir.resources`` model plus the bindings), one thread, best of 5.
Prints one markdown table. No timing assertions; it asserts the resources pass.
"""

from __future__ import annotations

import timeit

from sen_shared.fhir import bindings
from sen_shared.fhir.validate import validate_resource

PATIENT = {
    "resourceType": "Patient", "active": True, "gender": "female", "birthDate": "1987-03-12",
    "identifier": [{"use": "official", "system": "http://sen.vn/cccd", "value": "079187001234"}],
    "name": [{"use": "official", "family": "Nguyễn", "given": ["Thị", "Hồng"]}],
    "telecom": [{"system": "phone", "value": "0901234567", "use": "mobile"}],
    "address": [{"use": "home", "type": "physical", "line": ["12 Lê Lợi"], "city": "Huế",
                 "state": "Thừa Thiên Huế", "country": "VN"}],
    "contact": [{"relationship": [{"text": "chồng"}], "name": {"family": "Trần", "given": ["Văn", "Nam"]},
                 "gender": "male", "telecom": [{"system": "phone", "value": "0912345678"}]}],
    "extension": [{"url": "http://sen.vn/fhir/ethnicity", "valueCode": "kinh"}],
}
OBSERVATION = {
    "resourceType": "Observation", "status": "final",
    "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                              "code": "vital-signs"}]}],
    "code": {"coding": [{"system": "http://loinc.org", "code": "85354-9"}], "text": "Huyết áp"},
    "subject": {"reference": "Patient/p1"}, "effectiveDateTime": "2026-12-04T09:30:00+07:00",
    "component": [
        {"code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]},
         "valueQuantity": {"value": 130, "unit": "mmHg", "system": "http://unitsofmeasure.org", "code": "mm[Hg]"}},
        {"code": {"coding": [{"system": "http://loinc.org", "code": "8462-4"}]},
         "valueQuantity": {"value": 85, "unit": "mmHg", "system": "http://unitsofmeasure.org", "code": "mm[Hg]"}}],
}
ENCOUNTER = {
    "resourceType": "Encounter", "status": "finished",
    "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "VR"},
    "subject": {"reference": "Patient/p1"}, "period": {"start": "2026-12-04T09:00:00+07:00"},
    "statusHistory": [{"status": "in-progress", "period": {"start": "2026-12-04T09:00:00+07:00"}}],
    "participant": [{"individual": {"reference": "Practitioner/d1"}}],
}


def _us(fn, number: int) -> float:
    return min(timeit.repeat(fn, number=number, repeat=5)) / number * 1e6


def test_fhir_bindings_bench() -> None:
    bindings.check(PATIENT)  # the table is loaded once per process
    rows = []
    for name, res in (("Patient", PATIENT), ("Observation", OBSERVATION), ("Encounter", ENCOUNTER)):
        assert bindings.check(res) == []
        assert validate_resource(res) == name
        rows.append((name, _us(lambda r=res: bindings.check(r), 5000), _us(lambda r=res: validate_resource(r), 300)))
    batch = [PATIENT, *([OBSERVATION] * 18), ENCOUNTER]
    rows.append(("transaction of 20 (sum)", _us(lambda: [bindings.check(r) for r in batch], 300),
                 _us(lambda: [validate_resource(r) for r in batch], 20)))
    print("\n| resource | bindings.check µs | validate_resource µs | share |")
    print("|---|---|---|---|")
    for name, b, v in rows:
        print(f"| {name} | {b:.1f} | {v:.1f} | {b / v:.1%} |")
