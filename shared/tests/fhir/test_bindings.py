"""Required value-set bindings (sen_shared.fhir.bindings) and their place in validate_resource."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from sen_shared.fhir import bindings
from sen_shared.fhir.outcome import FhirError
from sen_shared.fhir.validate import validate_resource

ROOT = Path(__file__).resolve().parents[3]
EXAMPLES = ROOT / ".sen/fhir/hl7.fhir.r4.examples/package"
CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"


def paths(resource: dict) -> list[str]:
    return [i["expression"][0] for i in bindings.check(resource)]


def refused(resource: dict, **kw) -> FhirError:
    with pytest.raises(FhirError) as info:
        validate_resource(resource, **kw)
    return info.value


def obs(**extra) -> dict:
    return {"resourceType": "Observation", "status": "final", "code": {"text": "Mạch"}, **extra}


# ------------------------------------------------------------------ code elements

def test_patient_gender_outside_its_value_set_is_a_400_naming_the_element_and_the_codes():
    err = refused({"resourceType": "Patient", "gender": "banana"})
    assert err.status == 400
    out = err.to_outcome()
    assert out["resourceType"] == "OperationOutcome"
    [issue] = out["issue"]
    assert issue["code"] == "code-invalid"
    assert issue["expression"] == ["Patient.gender"]
    assert "'banana'" in issue["diagnostics"]
    assert "http://hl7.org/fhir/ValueSet/administrative-gender" in issue["diagnostics"]
    assert "female, male, other, unknown" in issue["diagnostics"]


@pytest.mark.parametrize("gender", ["male", "female", "other", "unknown"])
def test_every_administrative_gender_passes(gender):
    assert validate_resource({"resourceType": "Patient", "gender": gender}) == "Patient"


def test_codes_are_case_sensitive():
    assert paths({"resourceType": "Patient", "gender": "Male"}) == ["Patient.gender"]


def test_observation_status():
    assert paths(obs(status="bogus")) == ["Observation.status"]
    for status in ("registered", "preliminary", "final", "amended", "corrected", "cancelled",
                   "entered-in-error", "unknown"):
        assert paths(obs(status=status)) == []


def test_encounter_status_and_its_history():
    enc = {"resourceType": "Encounter", "status": "in-progress",
           "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"}}
    assert paths(enc) == []
    assert paths({**enc, "status": "started"}) == ["Encounter.status"]
    history = [{"status": "planned", "period": {"start": "2026-12-04"}},
               {"status": "running", "period": {"start": "2026-12-04"}}]
    assert paths({**enc, "statusHistory": history}) == ["Encounter.statusHistory[1].status"]
    refused({**enc, "status": "started"}, expected_type="Encounter")


# ------------------------------------------------------------------ structure

def test_nested_backbone_element():
    p = {"resourceType": "Patient", "gender": "female",
         "contact": [{"gender": "male"}, {"name": {"family": "Nguyễn"}, "gender": "nam"}]}
    assert paths(p) == ["Patient.contact[1].gender"]
    assert refused(p).to_outcome()["issue"][0]["expression"] == ["Patient.contact[1].gender"]


def test_content_reference_recursion():
    q = {"resourceType": "Questionnaire", "status": "active",
         "item": [{"linkId": "1", "type": "group",
                   "item": [{"linkId": "1.1", "type": "string"},
                            {"linkId": "1.2", "type": "group", "item": [{"linkId": "1.2.1", "type": "text-ish"}]}]}]}
    assert paths(q) == ["Questionnaire.item[0].item[1].item[0].type"]


def test_datatypes_inside_resources_and_arrays():
    p = {"resourceType": "Patient",
         "name": [{"use": "official", "family": "Trần"}, {"use": "nickname-ish", "given": ["Bé"]}],
         "telecom": [{"system": "phone", "value": "0901234567"}, {"system": "zalo", "value": "0901234567"}],
         "identifier": [{"use": "usual", "value": "079123456789"}]}
    assert paths(p) == ["Patient.name[1].use", "Patient.telecom[1].system"]


def test_array_of_codes():
    sp = {"resourceType": "SearchParameter", "url": "http://sen.example/sp", "name": "x", "status": "active",
          "description": "x", "code": "x", "base": ["Patient", "Bệnhnhân"], "type": "token"}
    assert paths(sp) == ["SearchParameter.base[1]"]


def test_choice_type_reaches_the_bound_datatype_element():
    assert paths(obs(valueQuantity={"value": 5, "comparator": "<"})) == []
    assert paths(obs(valueQuantity={"value": 5, "comparator": "=="})) == ["Observation.valueQuantity.comparator"]
    timing = {"repeat": {"frequency": 1, "period": 1, "periodUnit": "tuần"}}
    assert paths(obs(effectiveTiming=timing)) == ["Observation.effectiveTiming.repeat.periodUnit"]
    assert paths(obs(effectiveTiming={"repeat": {"frequency": 1, "period": 1, "periodUnit": "wk"}})) == []


def test_contained_resources_are_checked():
    p = {"resourceType": "Patient", "contained": [{"resourceType": "Observation", "id": "o",
                                                   "status": "done", "code": {"text": "x"}}]}
    assert paths(p) == ["Patient.contained[0].status"]


# ------------------------------------------------------------------ CodeableConcept / Coding

def condition(*codings, text=None) -> dict:
    cc: dict = {"coding": list(codings)} if codings else {}
    if text:
        cc["text"] = text
    return {"resourceType": "Condition", "subject": {"reference": "Patient/p"}, "clinicalStatus": cc}


def test_codeable_concept_coding_of_the_bound_system_must_be_in_the_set():
    assert paths(condition({"system": CLINICAL, "code": "active"})) == []
    assert paths(condition({"system": CLINICAL, "code": "cured"})) == ["Condition.clinicalStatus.coding[0].code"]
    err = refused(condition({"system": CLINICAL, "code": "cured"}))
    assert CLINICAL in err.to_outcome()["issue"][0]["diagnostics"]
    assert "active, inactive, recurrence, relapse, remission, resolved" in err.detail


def test_codeable_concept_other_systems_and_text_are_left_alone():
    translation = {"system": "http://snomed.info/sct", "code": "55561003"}
    assert paths(condition({"system": CLINICAL, "code": "active"}, translation)) == []
    assert paths(condition(translation)) == []
    assert paths(condition(text="đang điều trị")) == []
    assert paths(condition({"code": "cured"})) == []  # no system: cannot be judged


# ------------------------------------------------------------------ what must not be touched

def test_extensions_are_not_affected():
    p = {"resourceType": "Patient", "gender": "male",
         "extension": [{"url": "http://sen.example/x", "valueCode": "banana"},
                       {"url": "http://sen.example/y", "extension": [{"url": "z", "valueCode": "bogus"}]}],
         "modifierExtension": [{"url": "http://sen.example/m", "valueCode": "bogus"}],
         "_gender": {"extension": [{"url": "http://sen.example/g", "valueCode": "nam"}]},
         "name": [{"family": "Lê", "extension": [{"url": "http://sen.example/n", "valueCode": "x"}]}]}
    assert paths(p) == []
    assert validate_resource(p) == "Patient"


def test_elements_without_a_required_binding_accept_any_code():
    # Patient.maritalStatus is extensible, Observation.category preferred/example: not enforced
    p = {"resourceType": "Patient", "maritalStatus": {"coding": [{"system": "http://x", "code": "zz"}]}}
    assert paths(p) == []
    assert paths(obs(category=[{"coding": [{"system": "http://x", "code": "zz"}]}])) == []


# ------------------------------------------------------------------ messages and data

def test_long_value_sets_are_truncated_in_the_message():
    sp = {"resourceType": "SearchParameter", "url": "http://sen.example/sp", "name": "x", "status": "active",
          "description": "x", "code": "x", "base": ["NoSuchType"], "type": "token"}
    [issue] = bindings.check(sp)
    allowed = issue["diagnostics"].split("(allowed: ", 1)[1]
    assert allowed.count(",") == bindings.MAX_SHOWN - 1
    assert " more)" in allowed


def test_bundle_entries_say_where():
    err = refused({"resourceType": "Patient", "gender": "banana"}, where="Bundle.entry[2].resource")
    assert err.detail.startswith("Bundle.entry[2].resource: Patient.gender:")
    assert err.to_outcome()["issue"][0]["expression"] == ["Bundle.entry[2].resource.gender"]  # from the Bundle


def test_several_bad_codes_each_get_an_issue():
    p = {"resourceType": "Patient", "gender": "x", "contact": [{"gender": "y"}], "link": [
        {"other": {"reference": "Patient/a"}, "type": "merged"}]}
    assert paths(p) == ["Patient.gender", "Patient.contact[0].gender", "Patient.link[0].type"]


def test_skipped_value_sets_are_the_external_ones():
    skipped = bindings.skipped_value_sets()
    assert set(skipped) == {"http://hl7.org/fhir/ValueSet/currencies", "http://hl7.org/fhir/ValueSet/mimetypes",
                            "http://hl7.org/fhir/ValueSet/ucum-units", "http://loinc.org/vs/LL379-9"}
    # an unenforced element takes anything
    assert paths({"resourceType": "Binary", "contentType": "không/phải-mime"}) == []
    assert paths({"resourceType": "Invoice", "status": "issued",
                  "totalNet": {"value": 150000, "currency": "đồng"}}) == []


@pytest.mark.skipif(not (EXAMPLES / "StructureDefinition-Patient.json").exists(),
                    reason="official package not fetched (tools/fhir/fetch-examples.sh)")
def test_generated_table_is_up_to_date():
    data, _ = _builder().build(EXAMPLES)
    committed = json.loads((ROOT / "shared/src/sen_shared/fhir/data/bindings.json").read_text("utf-8"))
    assert data == committed, "run tools/fhir/build_bindings.py and commit the result"


# ------------------------------------------------------------------ the builder's expansion

def _builder():
    sys.path.insert(0, str(ROOT / "tools" / "fhir"))
    try:
        import build_bindings
    finally:
        sys.path.pop(0)
    return build_bindings


CS = {"resourceType": "CodeSystem", "url": "http://sen.vn/cs/khoa", "content": "complete", "concept": [
    {"code": "noi", "concept": [{"code": "tim-mach"}, {"code": "tieu-hoa", "concept": [{"code": "gan"}]}]},
    {"code": "ngoai"}]}


def _vs(url, *include, exclude=()):
    return {"resourceType": "ValueSet", "url": url, "compose": {"include": list(include), "exclude": list(exclude)}}


def test_expansion_of_enumerations_hierarchies_and_excludes():
    b = _builder()
    sets = {
        "all": _vs("all", {"system": CS["url"]}),
        "below": _vs("below", {"system": CS["url"], "filter": [{"property": "concept", "op": "is-a", "value": "noi"}]},
                     exclude=[{"system": CS["url"], "concept": [{"code": "gan"}]}]),
        "listed": _vs("listed", {"system": CS["url"], "concept": [{"code": "ngoai"}]}, {"valueSet": ["below"]}),
    }
    cs = {CS["url"]: CS}
    assert b.expand("all|4.0.1", sets, cs) == {CS["url"]: {"noi", "tim-mach", "tieu-hoa", "gan", "ngoai"}}
    assert b.expand("below", sets, cs) == {CS["url"]: {"noi", "tim-mach", "tieu-hoa"}}
    assert b.expand("listed", sets, cs) == {CS["url"]: {"ngoai", "noi", "tim-mach", "tieu-hoa"}}


@pytest.mark.parametrize("include", [
    {"system": "http://snomed.info/sct"},  # a whole external system
    {"system": "http://sen.vn/cs/khoa", "filter": [{"property": "parent", "op": "regex", "value": "n.*"}]},
    {"valueSet": ["http://sen.vn/vs/missing"]},
])
def test_open_ended_value_sets_are_not_enforceable(include):
    b = _builder()
    fragment = {**CS, "url": "http://sen.vn/cs/fragment", "content": "fragment"}
    sets = {"x": _vs("x", include), "f": _vs("f", {"system": fragment["url"]})}
    cs = {CS["url"]: CS, fragment["url"]: fragment}
    with pytest.raises(b.Unenforceable):
        b.expand("x", sets, cs)
    with pytest.raises(b.Unenforceable):
        b.expand("f", sets, cs)
