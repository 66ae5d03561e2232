"""The chart's lists read the same on every load and name what they list.

The EHR's ``$everything`` returns each type's resources in their ids' order (random uuids), so the
problems, medications, allergies, documents and measurements came in no order a reader could follow,
and an ICD-10 Condition stored without a display showed its code alone ("I10"). Each list is newest
first, then by name; the measurements in the LOINC table's order; an ICD-10 problem is its code and its
title in the page's language, as the consults' conclusions beside it.

Flask's test client; the EHR and teleconsult are scripted at the HTTP transport (``ChartBackends``).
"""

from __future__ import annotations

import copy
import json
import re
from typing import Any

import pytest
from sen_shared import http

from services.portal.tests.test_patient_register_and_chart import PID, ChartBackends, _json, _section, _text
from tests.support import portal_app, portal_signed_in

ICD = "http://hl7.org/fhir/sid/icd-10"
LOINC = "http://loinc.org"
SUBJECT = {"reference": f"Patient/{PID}"}


def _condition(rid: str, code: dict[str, Any], onset: str | None = None) -> dict[str, Any]:
    return {"resourceType": "Condition", "id": rid, "subject": SUBJECT, "code": code,
            **({"onsetDateTime": onset} if onset else {})}


def _observation(rid: str, code: str, value: float, when: str) -> dict[str, Any]:
    return {"resourceType": "Observation", "id": rid, "status": "final", "subject": SUBJECT,
            "code": {"coding": [{"system": LOINC, "code": code}]}, "effectiveDateTime": when,
            "valueQuantity": {"value": value, "unit": "x"}}


RECORD = [
    # an ICD-10 code alone (no display, no text): named from the list, in the page's language
    _condition("a-cond", {"coding": [{"system": ICD, "code": "I10"}]}, "2024-05-01"),
    _condition("b-cond", {"coding": [{"system": ICD, "code": "E11.9", "display": "Đái tháo đường typ 2"}]},
               "2026-01-10T08:00:00+07:00"),
    _condition("c-cond", {"text": "Thoái hóa khớp gối"}),  # no date: after those with one
    {"resourceType": "MedicationStatement", "id": "a-med", "status": "active", "subject": SUBJECT,
     "medicationCodeableConcept": {"text": "Metformin 500 mg"}, "effectiveDateTime": "2026-01-10"},
    {"resourceType": "MedicationStatement", "id": "b-med", "status": "active", "subject": SUBJECT,
     "medicationCodeableConcept": {"text": "Amlodipine 5 mg"}, "effectiveDateTime": "2024-05-01"},
    {"resourceType": "AllergyIntolerance", "id": "a-all", "patient": SUBJECT, "code": {"text": "Penicillin"},
     "recordedDate": "2020-02-02"},
    {"resourceType": "AllergyIntolerance", "id": "b-all", "patient": SUBJECT, "code": {"text": "Aspirin"},
     "recordedDate": "2023-03-03"},
    {"resourceType": "DocumentReference", "id": "a-doc", "status": "current", "subject": SUBJECT,
     "date": "2024-01-01T08:00:00+07:00", "content": [{"attachment": {"title": "Phim X-quang 2024"}}]},
    {"resourceType": "DocumentReference", "id": "b-doc", "status": "current", "subject": SUBJECT,
     "date": "2026-06-01T08:00:00+07:00", "content": [{"attachment": {"title": "Điện tim 2026"}}]},
    _observation("a-obs", "4548-4", 7.1, "2026-01-10T08:00:00+07:00"),  # HbA1c: last in the table
    _observation("b-obs", "8867-4", 80, "2026-01-10T08:00:00+07:00"),  # heart rate
    _observation("c-obs", "29463-7", 61, "2026-01-10T08:00:00+07:00"),  # body weight
]


class RecordBackends(ChartBackends):
    """The chart's EHR with the record above after the consult's resources, in the order given."""

    def __init__(self, order: list[dict[str, Any]]) -> None:
        super().__init__()
        self.order = order

    def __call__(self, method: str, url: str, **kw: Any) -> http.Response:
        if url.split("?")[0].endswith(f"/fhir/Patient/{PID}/$everything"):
            return _json(200, {"resourceType": "Bundle", "type": "searchset", "entry": [
                {"resource": copy.deepcopy(r)}
                for r in (self.patient, self.encounter, self.composition, *self.order)]})
        return super().__call__(method, url, **kw)


def _chart(tmp_path, monkeypatch, order: list[dict[str, Any]], lang: str = "vi") -> str:
    monkeypatch.setattr(http, "request", RecordBackends(order))
    c = portal_signed_in(portal_app(tmp_path, monkeypatch, backend="http://127.0.0.1:9",
                                    SEN_PORTAL_CACHE_SECONDS="0"), "clinic", lang)
    return c.get(f"/patients/{PID}").get_data(as_text=True)


def _items(part: str) -> list[str]:
    return [_text(li).strip() for li in re.findall(r"<li>(.*?)</li>", part, re.S)]


def test_each_list_is_newest_first_then_by_name_whatever_order_the_ehr_returns(tmp_path, monkeypatch):
    page = _chart(tmp_path, monkeypatch, RECORD)
    problems = _items(re.search(r'data-testid="conditions">(.*?)</ul>', page, re.S).group(1))
    assert problems == ["E11.9 — Đái tháo đường typ 2 không có biến chứng (10/01/2026)",
                        "I10 — Tăng huyết áp vô căn (nguyên phát) (01/05/2024)", "Thoái hóa khớp gối"], problems
    assert _items(_section(page, "Thuốc đang dùng")) == ["Metformin 500 mg", "Amlodipine 5 mg"]
    assert _items(_section(page, "Dị ứng")) == ["Aspirin", "Penicillin"]
    documents = _items(_section(page, "Tài liệu"))
    assert [d.split(" (")[0] for d in documents] == ["Điện tim 2026", "Biên bản hội chẩn từ xa", "Phim X-quang 2024"]
    figures = re.findall(r'<canvas data-series="([^"]+)"', page)
    assert figures == ["8867-4", "29463-7", "4548-4"], figures  # heart rate, body weight, HbA1c: the table's order

    for order in (list(reversed(RECORD)), RECORD[3:] + RECORD[:3]):
        again = _chart(tmp_path, monkeypatch, order)
        for heading in ("Bệnh lý", "Thuốc đang dùng", "Dị ứng", "Tài liệu"):
            assert _items(_section(again, heading)) == _items(_section(page, heading)), heading
        assert re.findall(r'<canvas data-series="([^"]+)"', again) == figures
        assert json.loads(re.search(r'id="series-data">(.*?)</script>', again, re.S).group(1)) == \
            json.loads(re.search(r'id="series-data">(.*?)</script>', page, re.S).group(1))


@pytest.mark.parametrize(("lang", "line"), [("vi", "I10 — Tăng huyết áp vô căn (nguyên phát)"),
                                            ("en", "I10 — Essential (primary) hypertension")])
def test_an_icd10_problem_is_its_code_and_its_title_in_the_pages_language(tmp_path, monkeypatch, lang, line):
    page = _chart(tmp_path, monkeypatch, RECORD, lang)
    problems = _items(re.search(r'data-testid="conditions">(.*?)</ul>', page, re.S).group(1))
    assert any(p.startswith(line) for p in problems), problems
    assert not any(re.fullmatch(r"[A-Z]\d\d(\.\d+)?( \(.*\))?", p) for p in problems), problems  # never a code alone


def test_a_conclusion_code_nothing_names_is_shown_once_not_as_its_own_name(tmp_path, monkeypatch):
    """A consult conclusion's code outside the list, stored without a display (an ICD-10-CM ``E11.65`` from
    another system), read "E11.65 — E11.65" on the chart and the record; now the code alone, the others
    with their names."""
    backends = RecordBackends([])
    for section in backends.composition["section"]:
        for ext in section.get("extension") or []:
            ext["valueCodeableConcept"]["coding"].append({"system": ICD, "code": "E11.65"})
    monkeypatch.setattr(http, "request", backends)
    c = portal_signed_in(portal_app(tmp_path, monkeypatch, backend="http://127.0.0.1:9",
                                    SEN_PORTAL_CACHE_SECONDS="0"), "clinic")
    chart = _text(c.get(f"/patients/{PID}").get_data(as_text=True))
    record = _text(c.get(f"/patients/{PID}/consult-records/{backends.composition['id']}").get_data(as_text=True))
    for page in (chart, record):
        assert "E11.65 — E11.65" not in page and "E11.65" in page
        assert "I20.0 — Đau thắt ngực không ổn định" in page  # the list's own name, as before
