"""A consult's specialty as FHIR codes it (task O): the consult form's ``performerType`` coding carries SNOMED CT's
own display (English), the Vietnamese name goes as the concept's text; the pages name it in the page's language,
SNOMED's display on an English page for a specialty the portal has no name of (the directory's)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
from flask_babel import force_locale

from tests.support import portal_app

SNOMED = "http://snomed.info/sct"
NEPHRO = {"coding": [{"system": SNOMED, "code": "394589003", "display": "Nephrology"}], "text": "Thận"}


@pytest.fixture()
def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    return portal_app(tmp_path, monkeypatch)


def _asked(code: str, choices: list[tuple[str, str]]) -> tuple[dict | None, bool]:
    from sen_portal.web.clinic import specialty_asked

    form = SimpleNamespace(specialty=SimpleNamespace(data=code, errors=[]))
    return specialty_asked(form, choices)  # type: ignore[arg-type]


def test_the_asked_specialty_carries_snomeds_display_and_the_vietnamese_name_as_text(app, monkeypatch) -> None:
    from sen_portal.web import directory

    monkeypatch.setattr(directory, "hub_specialties", lambda hub: [NEPHRO])
    with app.test_request_context():
        # a specialty the portal names: its table's SNOMED display (not the page's English name, 'Paediatrics')
        assert _asked("394537008", [("394537008", "Nhi khoa")]) == (
            {"coding": [{"system": SNOMED, "code": "394537008", "display": "Pediatric specialty"}], "text": "Nhi"},
            True)
        assert _asked("394579002", [])[0] == {
            "coding": [{"system": SNOMED, "code": "394579002", "display": "Cardiology"}], "text": "Tim mạch"}
        # one only the hub's directory names: the display its coding carries, the directory's name as text
        assert _asked("394589003", [("394589003", "Thận")]) == (NEPHRO, True)
    monkeypatch.setattr(directory, "hub_specialties", lambda hub: [])
    with app.test_request_context():  # no display known: none written, never the Vietnamese name as one
        assert _asked("394589003", [("394589003", "Thận")])[0] == {
            "coding": [{"system": SNOMED, "code": "394589003"}], "text": "Thận"}


def test_the_pages_name_the_specialty_in_their_language(app) -> None:
    from sen_portal.web.doctor import specialty_name

    cardio = {"coding": [{"system": SNOMED, "code": "394579002", "display": "Cardiology"}], "text": "Tim mạch"}
    older = {"coding": [{"system": SNOMED, "code": "394589003", "display": "Thận"}], "text": "Thận"}  # before the fix
    with app.test_request_context():
        with force_locale("vi"):
            assert [specialty_name(c) for c in (cardio, NEPHRO, [NEPHRO], older)] == \
                ["Tim mạch", "Thận", "Thận", "Thận"]
        with force_locale("en"):
            assert [specialty_name(c) for c in (cardio, NEPHRO, [NEPHRO], older)] == \
                ["Cardiology", "Nephrology", "Nephrology", "Thận"]
        assert specialty_name(None) == specialty_name([]) == ""
