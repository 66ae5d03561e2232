"""The chart shows every result, not only the numbers it draws as trends.

Only Observations with a number (``valueQuantity``) on a time were shown; a rapid test's "Âm tính", a
blood group, a written finding, yes or no, a date, a panel part that is no number and a value not
obtained (``dataAbsentReason``) were collected and never shown. Now each is a line of "Các kết quả khác"
/ "Other results", newest first: when (Vietnam's time), the name (the LOINC table's, else the code's
display or text), the value in the page's language and the interpretation flag. The trends are as before,
and a result recorded in error is on neither.

Flask's test client; the EHR is scripted at the HTTP transport (test_chart_lists' ``RecordBackends``).
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from sen_shared.fhir.validate import validate_resource

from services.portal.tests.test_chart_lists import LOINC, SUBJECT, _chart, _items, _observation
from services.portal.tests.test_patient_register_and_chart import _text

SNOMED = "http://snomed.info/sct"
V3 = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
ABSENT = "http://terminology.hl7.org/CodeSystem/data-absent-reason"


def _obs(rid: str, code: dict[str, Any], when: str | None, **value: Any) -> dict[str, Any]:
    return {"resourceType": "Observation", "id": rid, "status": "final", "subject": SUBJECT, "code": code,
            **({"effectiveDateTime": when} if when else {}), **value}


RAPID_TEST = _obs(  # a COVID-19 rapid antigen test: negative, as SNOMED says it, with the clinic's own words
    "rapid", {"coding": [{"system": LOINC, "code": "94558-4",
                          "display": "SARS-CoV-2 (COVID-19) Ag [Presence] in Respiratory specimen by Rapid "
                                     "immunoassay"}], "text": "Test nhanh kháng nguyên COVID-19"},
    "2026-11-20T09:15:00+07:00",
    valueCodeableConcept={"coding": [{"system": SNOMED, "code": "260385009", "display": "Negative"}],
                          "text": "Âm tính"},
    interpretation=[{"coding": [{"system": V3, "code": "N"}]}])
BLOOD_GROUP = _obs(  # no date but when it was issued; a display with its Vietnamese translation
    "abo", {"coding": [{"system": LOINC, "code": "883-9", "display": "ABO group [Type] in Blood"}],
            "text": "Nhóm máu ABO"}, None, issued="2025-03-02T01:00:00Z",
    valueCodeableConcept={"coding": [{"system": SNOMED, "code": "58460004", "display": "Blood group O", "_display": {
        "extension": [{"url": "http://hl7.org/fhir/StructureDefinition/translation", "extension": [
            {"url": "lang", "valueCode": "vi"}, {"url": "content", "valueString": "Nhóm máu O"}]}]}}]})
FINDING = _obs("note", {"text": "Khám họng"}, "2026-11-20T09:00:00+07:00", valueString="Họng đỏ nhẹ, amidan không sưng")
SMOKER = _obs("smoke", {"text": "Đang hút thuốc lá"}, "2026-11-19T08:00:00+07:00", valueBoolean=False)
LMP = _obs("lmp", {"coding": [{"system": LOINC, "code": "8665-2", "display": "Last menstrual period start date"}]},
           "2026-11-18T08:00:00+07:00", valueDateTime="2026-11-01")
GLUCOSE_NOT_DONE = _obs("glu-none", {"coding": [{"system": LOINC, "code": "2339-0"}]}, "2026-11-21T07:30:00+07:00",
                        dataAbsentReason={"coding": [{"system": ABSENT, "code": "not-performed"}]})
HIGH_WBC = _obs(  # a number with no time: on no trend, listed with its flag
    "wbc", {"coding": [{"system": LOINC, "code": "6690-2", "display": "Leukocytes [#/volume] in Blood"}],
            "text": "Bạch cầu"}, None, valueQuantity={"value": 12.5, "unit": "10*9/L"},
    interpretation=[{"coding": [{"system": V3, "code": "H", "display": "High"}]}])
BP_HALF = {  # a blood-pressure panel whose diastolic value was not obtained: the systolic still on its trend
    "resourceType": "Observation", "id": "bp-half", "status": "final", "subject": SUBJECT,
    "code": {"coding": [{"system": LOINC, "code": "85354-9"}]}, "effectiveDateTime": "2026-11-20T08:00:00+07:00",
    "component": [{"code": {"coding": [{"system": LOINC, "code": "8480-6"}]},
                   "valueQuantity": {"value": 150, "unit": "mmHg", "system": "http://unitsofmeasure.org",
                                     "code": "mm[Hg]"}},
                  {"code": {"coding": [{"system": LOINC, "code": "8462-4"}]},
                   "dataAbsentReason": {"coding": [{"system": ABSENT, "code": "error"}]}}]}
IN_ERROR = {**_obs("oops", {"coding": [{"system": LOINC, "code": "883-9"}]}, "2026-11-22T08:00:00+07:00",
                   valueCodeableConcept={"text": "Nhóm máu B (ghi nhầm)"}), "status": "entered-in-error"}
WEIGHT_IN_ERROR = {**_observation("w-oops", "29463-7", 610, "2026-11-22T08:00:00+07:00"), "status": "entered-in-error"}

RECORD = [_observation("w-1", "29463-7", 61, "2026-11-01T08:00:00+07:00"),
          _observation("w-2", "29463-7", 60.5, "2026-11-15T08:00:00+07:00"),
          RAPID_TEST, BLOOD_GROUP, FINDING, SMOKER, LMP, GLUCOSE_NOT_DONE, HIGH_WBC, BP_HALF, IN_ERROR, WEIGHT_IN_ERROR]

EXPECTED = {
    "vi": ["21/11/2026 07:30 — Glucose máu: Không thực hiện",
           "20/11/2026 09:15 — Test nhanh kháng nguyên SARS-CoV-2: Âm tính (Bình thường)",
           "20/11/2026 09:00 — Khám họng: Họng đỏ nhẹ, amidan không sưng",
           "20/11/2026 08:00 — Huyết áp: Huyết áp tâm thu: 150 mmHg; Huyết áp tâm trương: Lỗi khi đo",
           "19/11/2026 08:00 — Đang hút thuốc lá: Không",
           "18/11/2026 08:00 — Ngày đầu kỳ kinh cuối: 01/11/2026",
           "02/03/2025 08:00 — Nhóm máu ABO: Nhóm máu O",
           "Bạch cầu: 12,5 10*9/L (Cao)"],
    "en": ["21/11/2026 07:30 — Blood glucose: Not performed",
           "20/11/2026 09:15 — SARS-CoV-2 rapid antigen test: Negative (Normal)",
           "20/11/2026 09:00 — Khám họng: Họng đỏ nhẹ, amidan không sưng",
           "20/11/2026 08:00 — Blood pressure: Systolic blood pressure: 150 mmHg; Diastolic blood pressure: Error",
           "19/11/2026 08:00 — Đang hút thuốc lá: No",
           "18/11/2026 08:00 — Last menstrual period start date: 01/11/2026",
           "02/03/2025 08:00 — ABO blood group: Blood group O",
           "Leukocytes [#/volume] in Blood: 12.5 10*9/L (High)"],
}


def test_the_record_is_real_fhir():
    for resource in RECORD:
        assert validate_resource(resource) == "Observation", resource["id"]


def _results(page: str) -> list[str]:
    found = re.search(r'data-testid="other-results">(.*?)</ul>', page, re.S)
    return _items(found.group(1)) if found else []


@pytest.mark.parametrize("lang", ["vi", "en"])
def test_every_result_no_trend_draws_is_listed_newest_first_in_the_pages_language(tmp_path, monkeypatch, lang):
    page = _chart(tmp_path, monkeypatch, RECORD, lang)
    assert _results(page) == EXPECTED[lang], _results(page)
    heading = {"vi": "Các kết quả khác", "en": "Other results"}[lang]
    assert f"<h2>{heading}</h2>" in page
    # in the EHR's order or another, the same list
    assert _results(_chart(tmp_path, monkeypatch, list(reversed(RECORD)), lang)) == EXPECTED[lang]


def test_the_trends_are_as_before_and_a_result_recorded_in_error_is_on_none(tmp_path, monkeypatch):
    page = _chart(tmp_path, monkeypatch, RECORD)
    series = json.loads(re.search(r'id="series-data">(.*?)</script>', page, re.S).group(1))
    assert list(series) == ["8480-6", "29463-7"], series  # the systolic of the half panel; body weight
    assert [p["v"] for p in series["29463-7"]["points"]] == [61, 60.5]  # not the 610 recorded in error
    assert [p["v"] for p in series["8480-6"]["points"]] == [150]
    assert "ghi nhầm" not in _text(page)
    assert not any("Cân nặng" in line for line in _results(page))  # a weight on its trend is not listed again


def test_a_chart_of_numbers_alone_has_no_other_results(tmp_path, monkeypatch):
    page = _chart(tmp_path, monkeypatch, RECORD[:2])
    assert 'data-testid="other-results"' not in page and "Các kết quả khác" not in page
    assert re.findall(r'<canvas data-series="([^"]+)"', page) == ["29463-7"]


# review 9: a common result that is no number, coded with the code system's English alone ("ABO and Rh group"),
# was named in English on the Vietnamese chart; the table names it in the page's language, else as before
NAMED_BY_THE_TABLE = [
    _obs("abo-rh", {"coding": [{"system": LOINC, "code": "882-1", "display": "ABO and Rh group"}]},
         "2026-11-24T08:00:00+07:00", valueString="O Rh+"),
    _obs("hbsag", {"coding": [{"system": LOINC, "code": "5196-1",
                               "display": "Hepatitis B virus surface Ag [Presence] in Serum"}]},
         "2026-11-24T08:05:00+07:00",
         valueCodeableConcept={"coding": [{"system": SNOMED, "code": "260385009", "display": "Negative"}]}),
    _obs("nitrite", {"coding": [{"system": LOINC, "code": "5802-4",
                                 "display": "Nitrite [Presence] in Urine by Test strip"}]},
         "2026-11-24T08:10:00+07:00",
         valueCodeableConcept={"coding": [{"system": SNOMED, "code": "10828004", "display": "Positive"}]}),
    _obs("other", {"coding": [{"system": LOINC, "code": "31208-2", "display": "Specimen source"}]},  # not the table's
         "2026-11-24T08:15:00+07:00", valueString="Máu tĩnh mạch"),
]


def test_the_named_results_are_real_fhir():
    for resource in NAMED_BY_THE_TABLE:
        assert validate_resource(resource) == "Observation", resource["id"]


@pytest.mark.parametrize(("lang", "expected"), [
    ("vi", ["24/11/2026 08:15 — Specimen source: Máu tĩnh mạch",
            "24/11/2026 08:10 — Nitrit niệu (que thử): Dương tính",
            "24/11/2026 08:05 — Kháng nguyên bề mặt viêm gan B (HBsAg): Âm tính",
            "24/11/2026 08:00 — Nhóm máu ABO và Rh: O Rh+"]),
    ("en", ["24/11/2026 08:15 — Specimen source: Máu tĩnh mạch",
            "24/11/2026 08:10 — Urine nitrite (dipstick): Positive",
            "24/11/2026 08:05 — Hepatitis B surface antigen (HBsAg): Negative",
            "24/11/2026 08:00 — ABO and Rh blood group: O Rh+"]),
])
def test_a_common_result_coded_in_english_alone_is_named_in_the_pages_language(tmp_path, monkeypatch, lang,
                                                                                 expected):
    assert _results(_chart(tmp_path, monkeypatch, NAMED_BY_THE_TABLE, lang)) == expected


def test_every_result_of_the_table_has_a_vietnamese_and_an_english_name():
    from sen_portal.web import loinc

    for code in ("882-1", "883-9", "10331-7", "94558-4", "2106-3", "5792-7", "5804-0", "5802-4", "5799-2"):
        vi, en = loinc.name(code, "vi"), loinc.name(code, "en")
        assert vi and en and vi != en, code
