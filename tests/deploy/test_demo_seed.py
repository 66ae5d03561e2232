"""The demo province's seed (deploy/local/seed.py): practitioners under their own title, specialties coded in
two languages.

A doctor (bác sĩ) is written "BS." before their name, an assistant doctor (y sĩ) "YS.": the seed derives the
title from each practitioner's qualification in demo-province.json (it gave every one "BS."). Each specialty
coding carries SNOMED CT's English display (FHIR's c80-practice-codes, the terminology test's confirmed table)
with the Vietnamese name as the concept's text, on the PractitionerRole and on the hub specialists' Schedules.
"""

from __future__ import annotations

import copy
import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest
from sen_shared.fhir.validate import validate_resource

ROOT = Path(__file__).resolve().parents[2]
DATA = json.loads((ROOT / "deploy" / "local" / "demo-province.json").read_text(encoding="utf-8"))


def _seed() -> Any:
    spec = importlib.util.spec_from_file_location("sen_demo_seed", ROOT / "deploy" / "local" / "seed.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


seed = _seed()


def _resources(bundle: dict[str, Any], rtype: str) -> dict[str, dict[str, Any]]:
    return {e["resource"]["id"]: e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == rtype}


def test_each_practitioner_is_titled_by_their_qualification() -> None:
    practitioners = _resources(seed.province_bundle(DATA), "Practitioner")
    assert practitioners["ys-vo-minh-tam"]["name"][0]["prefix"] == ["YS."]
    assert practitioners["ys-vo-minh-tam"]["qualification"] == [{"code": {"text": "Y sĩ"}}]
    for pid in ("bs-nguyen-van-an", "bs-tran-thi-bich", "bs-le-hoang-duc", "bs-pham-thu-ha"):
        assert practitioners[pid]["name"][0]["prefix"] == ["BS."], pid
        assert practitioners[pid]["qualification"] == [{"code": {"text": "Bác sĩ"}}], pid
    # the name as pages show it carries no title (sen_shared.fhir.names.person_name reads text)
    assert practitioners["ys-vo-minh-tam"]["name"][0]["text"] == "Võ Minh Tâm"
    for resource in practitioners.values():
        validate_resource(resource, expected_type="Practitioner")


def test_a_practitioner_without_a_known_qualification_is_refused_by_name() -> None:
    data = copy.deepcopy(DATA)
    data["practitioners"][0]["qualification"] = "dieu-duong"
    with pytest.raises(ValueError, match="bs-nguyen-van-an.*dieu-duong"):
        seed.province_bundle(data)


def test_specialties_carry_their_english_display_and_vietnamese_text() -> None:
    roles = _resources(seed.province_bundle(DATA), "PractitionerRole")
    schedules = _resources(seed.teleconsult_bundle(DATA), "Schedule")
    assert roles["ys-vo-minh-tam-role"]["specialty"] == [{
        "coding": [{"system": "http://snomed.info/sct", "code": "394814009", "display": "General practice"}],
        "text": "Y sĩ đa khoa"}]
    assert schedules["sched-bs-nguyen-van-an"]["specialty"] == [{
        "coding": [{"system": "http://snomed.info/sct", "code": "394579002", "display": "Cardiology"}],
        "text": "Tim mạch"}]
    assert len(schedules) == 3  # the hub's three specialists
    for resource in [*roles.values(), *schedules.values()]:
        for concept in resource["specialty"]:
            assert concept["text"] and all(c["display"] for c in concept["coding"]), resource["id"]
        validate_resource(resource)
