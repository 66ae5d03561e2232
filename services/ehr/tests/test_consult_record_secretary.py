"""The consult record names the minutes' secretary (thư ký), who signs them beside the chair (Circular
49/2017/TT-BYT): ``minutes.secretary`` of ``teleconsult.consult.completed`` becomes a second professional
attester of the Composition, marked as the secretary's by its role extension; an event without it (sent before it
existed, or minutes naming none) gives the record as before, the chair alone."""

from __future__ import annotations

import json
from typing import Any

from sen_ehr.domain.consult_record import ATTESTER_ROLE_EXT, build_composition
from sen_shared.bus import load_catalog
from sen_shared.fhir.validate import validate_resource


def _data(example: str = "teleconsult.consult.completed+full.json") -> dict[str, Any]:
    with open(load_catalog().path.parent / "examples" / example, encoding="utf-8") as f:
        return json.load(f)["data"]


def _secretaries(comp: dict[str, Any]) -> list[dict[str, Any]]:
    return [a for a in comp["attester"] if any(e["url"] == ATTESTER_ROLE_EXT for e in a.get("extension") or [])]


def test_the_secretary_is_a_professional_attester_after_the_chair_once():
    data = _data()
    comp = build_composition(data, "c-1", "e-1")
    validate_resource(comp, expected_type="Composition")  # R4's Composition takes it
    chair, secretary = comp["attester"]
    assert chair == {"mode": "professional", "time": data["completedAt"],
                     "party": {"reference": "Practitioner/bs-tran-van-minh", "display": "BS. Trần Văn Minh"}}
    assert secretary["mode"] == "professional" and secretary["time"] == data["completedAt"]
    assert secretary["party"] == {"reference": "Practitioner/bs-nguyen-thi-thu", "display": "BS. Nguyễn Thị Thu"}
    [role] = secretary["extension"]
    assert role["valueCodeableConcept"]["coding"][0]["code"] == "secretary"
    assert role["valueCodeableConcept"]["text"] == "Thư ký"
    assert len(_secretaries(comp)) == 1


def test_a_secretary_named_only_by_the_name_typed_is_the_party_by_display():
    data = _data()
    data["minutes"]["secretary"] = {"display": "YS. Võ Minh Tâm"}
    comp = build_composition(data, "c-1", "e-1")
    validate_resource(comp, expected_type="Composition")
    assert [a["party"] for a in _secretaries(comp)] == [{"display": "YS. Võ Minh Tâm"}]


def test_an_event_without_a_secretary_gives_the_chair_alone_as_before():
    for data in (_data("teleconsult.consult.completed.json"),
                 {**_data(), "minutes": {k: v for k, v in _data()["minutes"].items() if k != "secretary"}}):
        comp = build_composition(data, "c-1", "e-1")
        assert len(comp["attester"]) == 1 and not _secretaries(comp)
        assert "extension" not in comp["attester"][0]
