from datetime import UTC, datetime

from sen_shared.fhir.search import extract, index_fields
from sen_shared.fhir.search.dates import LOCAL_TZ
from sen_shared.fhir.search.definitions import get_param

PATIENT = {
    "resourceType": "Patient", "id": "p1",
    "identifier": [{"system": "urn:vn:cccd", "value": "001099012345",
                    "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "NI"}]}}],
    "name": [{"family": "Nguyễn", "given": ["Thị", "Đặng"]}],
    "gender": "female", "birthDate": "1990-05",
    "address": [{"city": "Cao Lãnh", "state": "Đồng Tháp"}],
    "telecom": [{"system": "phone", "value": "0901234567"}],
    "generalPractitioner": [{"reference": "Practitioner/pr1"}],
    "managingOrganization": {"reference": "https://other.example/fhir/Organization/o1/_history/2"},
}

OBSERVATION = {
    "resourceType": "Observation", "id": "o1", "status": "final",
    "code": {"coding": [{"system": "http://loinc.org", "code": "8480-6", "display": "Systolic BP"}],
             "text": "Huyết áp tâm thu"},
    "subject": {"reference": "Patient/p1"},
    "performer": [{"identifier": {"system": "urn:vn:cchn", "value": "CC-77"}}],
    "effectivePeriod": {"start": "2024-03-05T08:00:00+07:00", "end": "2024-03-05T09:00:00+07:00"},
    "valueQuantity": {"value": 120, "unit": "mmHg", "system": "http://unitsofmeasure.org", "code": "mm[Hg]"},
    "component": [{"code": {"coding": [{"system": "http://loinc.org", "code": "8462-4"}]},
                   "valueQuantity": {"value": 80, "system": "http://unitsofmeasure.org", "code": "mm[Hg]"}}],
}


def test_string_fields():
    f = index_fields(PATIENT)
    assert {"nguyen", "ngu", "dang", "thi"} <= set(f["sp_name"])
    assert "nguyen thi dang" in f["sp_name_n"]
    assert "Nguyễn" in extract.exact_values(f["sp_name_x"]) and isinstance(f["sp_name_x"], str)
    assert f["sp_name_s"] == "nguyen thi dang"
    # a part of address (or of name) keeps its own strings; its prefix tokens are address's
    assert "sp_address-city" not in f and {"c", "ca", "cao", "l", "la", "lan", "lanh"} <= set(f["sp_address"])
    assert f["sp_address-city_n"] == ["cao lanh"] and "sp_family" not in f and f["sp_family_n"] == ["nguyen"]
    assert extract.string_container(get_param("Patient", "family")) == "sp_name"


def test_token_fields():
    f = index_fields(PATIENT)
    # "system|" alone is matched by a prefix at search time, not stored
    assert set(f["sp_identifier"]) == {"001099012345", "urn:vn:cccd|001099012345"}
    assert f["sp_identifier_ot"] == ["http://terminology.hl7.org/CodeSystem/v2-0203|NI|001099012345"]
    assert set(f["sp_gender"]) == {"female", "|female"}
    assert set(f["sp_phone"]) == {"0901234567", "|0901234567"}
    assert "sp_present" not in f and "sp_gender" in f and "sp_email" not in f  # :missing asks the fields
    o = index_fields(OBSERVATION)
    assert {"8480-6", "http://loinc.org|8480-6"} <= set(o["sp_code"]) and "http://loinc.org|" not in o["sp_code"]
    assert "huyet ap tam thu" in o["sp_code_t"] and "systolic bp" in o["sp_code_t"]


def test_reference_fields():
    f = index_fields(PATIENT)
    assert set(f["sp_general-practitioner"]) == {"Practitioner/pr1", "pr1"}
    assert "Organization/o1" in f["sp_organization"]
    assert "https://other.example/fhir/Organization/o1" in f["sp_organization"]
    o = index_fields(OBSERVATION)
    assert "Patient/p1" in o["sp_patient"] and "Patient/p1" in o["sp_subject"]
    assert o["sp_performer_id"][:2] == ["CC-77", "urn:vn:cchn|CC-77"]


def test_resolve_is_answered_from_the_reference_type():
    o = dict(OBSERVATION, subject={"reference": "Group/g1"})
    f = index_fields(o)
    assert "sp_patient" not in f and "patient" not in f.get("sp_present", [])
    assert "Group/g1" in f["sp_subject"]


def test_date_fields_period_and_precision():
    f = index_fields(PATIENT)
    assert f["sp_birthdate_lo"] == [datetime(1990, 5, 1, tzinfo=LOCAL_TZ)]
    assert f["sp_birthdate_hi"] == [datetime(1990, 5, 31, 23, 59, 59, 999000, tzinfo=LOCAL_TZ)]
    assert f["sp_birthdate_b"] == ["1990", "1990-05"]  # the month is not within one day
    o = index_fields(OBSERVATION)
    assert o["sp_date_lo"] == [datetime(2024, 3, 5, 1, 0, tzinfo=UTC)]
    assert o["sp_date_hi"] == [datetime(2024, 3, 5, 2, 0, 0, 999000, tzinfo=UTC)]
    assert o["sp_date_b"] == ["2024", "2024-03", "2024-03-05"]
    late = dict(OBSERVATION, effectivePeriod={"start": "2024-03-05T23:30:00+07:00", "end": "2024-03-06T00:30:00+07:00"})
    assert index_fields(late)["sp_date_b"] == ["2024", "2024-03"]


def test_choice_type_as_datetime():
    p = dict(PATIENT, deceasedDateTime="2020-02-03")
    assert index_fields(p)["sp_death-date_lo"] == [datetime(2020, 2, 3, tzinfo=LOCAL_TZ)]
    p = dict(PATIENT, deceasedBoolean=True)
    f = index_fields(p)
    assert "sp_death-date_lo" not in f and f["sp_deceased"][0] == "true"


def test_quantity_and_composite_fields():
    o = index_fields(OBSERVATION)
    assert o["sp_value-quantity"] == [120.0]
    assert o["sp_value-quantity_u"] == ["mm[Hg]", "http://unitsofmeasure.org|mm[Hg]"]
    key = extract.composite_key("sp_code-value-quantity", "http://loinc.org|8480-6")
    assert o[key] == [120.0]
    assert o[extract.composite_key("sp_code-value-quantity", "8480-6", "mm[Hg]")] == [120.0]
    # its first-component tokens are code's own: narrowed by sp_code, not stored twice
    assert "sp_code-value-quantity_k" not in o and "http://loinc.org|8480-6" in o["sp_code"]
    assert extract.composite_narrowing(get_param("Observation", "code-value-quantity")) == "sp_code"
    comp = extract.composite_key("sp_component-code-value-quantity", "http://loinc.org|8462-4")
    assert o[comp] == [80.0]
    assert extract.composite_key("sp_component-code-value-quantity", "http://loinc.org|8480-6") not in o
    assert all("." not in k and not k.startswith("$") for k in o)


def test_timing_event_and_bounds():
    from sen_shared.fhir.search.definitions import SearchParam
    mr = {"resourceType": "MedicationRequest", "id": "m", "status": "active", "intent": "order",
          "dosageInstruction": [{"timing": {"event": ["2024-01-02"],
                                            "repeat": {"boundsPeriod": {"start": "2024-01-01"}}}}]}
    official = extract.extract_param(extract.params_for("MedicationRequest")["date"], mr)
    assert official["sp_date_lo"] == [datetime(2024, 1, 2, tzinfo=LOCAL_TZ)]
    timing = SearchParam("MedicationRequest", "timing", "date", "MedicationRequest.dosageInstruction.timing")
    f = extract.extract_param(timing, mr)
    assert sorted(f["sp_timing_lo"]) == [datetime(2024, 1, 1, tzinfo=LOCAL_TZ), datetime(2024, 1, 2, tzinfo=LOCAL_TZ)]
    assert max(f["sp_timing_hi"]).year == 9999  # open-ended bounds


def test_keys_are_storable():
    for res in (PATIENT, OBSERVATION):
        for key, value in index_fields(res).items():
            assert key.startswith("sp_") and "." not in key
            if isinstance(value, list):
                assert not any(isinstance(v, list) for v in value)


def test_broken_expression_is_reported_not_raised():
    from sen_shared.fhir.search.definitions import SearchParam
    bad = SearchParam("Patient", "broken", "token", "Patient.name.where(", ())
    assert extract.extract_param(bad, PATIENT) is None
    assert "Patient.broken" in extract.STATS.compile_failed | extract.STATS.eval_failed


def test_fast_path_covers_patient():
    from sen_shared.fhir.search.definitions import params_for
    slow = [c for c, p in params_for("Patient").items()
            if p.supported and p.expression and not extract.compile_expression(p.expression)[1]]
    assert slow == ["deceased"]  # `exists() and != false` needs real FHIRPath


def test_a_parenthesized_as_followed_by_a_path_takes_the_fast_path():
    fn, fast = extract.compile_expression("(Observation.value as string) | (Observation.value as CodeableConcept).text")
    assert fast
    assert fn({"resourceType": "Observation", "valueCodeableConcept": {"text": "dương tính"}}) == [("dương tính", None)]
    assert [v for v, _ in fn({"resourceType": "Observation", "valueString": "âm tính"})] == ["âm tính"]
    assert fn({"resourceType": "Observation", "valueQuantity": {"value": 1}}) == []
