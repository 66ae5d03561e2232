"""The chart's trends are named, never "?" (review 6, finding 2).

A standard LOINC blood-pressure panel (85354-9) whose components (8480-6, 8462-4) carry no display is
charted as "Huyết áp tâm thu (mmHg)" / "Huyết áp tâm trương (mmHg)" on a Vietnamese page and
"Systolic blood pressure (mmHg)" / ... on an English one: the common vital-sign codes are named by
:mod:`sen_portal.web.loinc` in the page's language; another code by its coding's display, else by the
code itself ("LOINC 1234-5").

Flask's test client; the EHR is scripted at the HTTP transport (test_patient_register_and_chart).
"""

from __future__ import annotations

import copy
import re
from typing import Any
from urllib.parse import urlsplit

import pytest
from sen_shared import http

from services.portal.tests.test_patient_register_and_chart import PID, ChartBackends, _json
from tests.support import portal_app, portal_signed_in

LOINC = "http://loinc.org"


def _bp(oid: str, when: str, sys_: int, dia: int) -> dict[str, Any]:
    def comp(code: str, v: int) -> dict[str, Any]:
        return {"code": {"coding": [{"system": LOINC, "code": code}]},
                "valueQuantity": {"value": v, "unit": "mmHg", "system": "http://unitsofmeasure.org", "code": "mm[Hg]"}}

    return {"resourceType": "Observation", "id": oid, "status": "final",
            "code": {"coding": [{"system": LOINC, "code": "85354-9"}]}, "subject": {"reference": f"Patient/{PID}"},
            "effectiveDateTime": when, "component": [comp("8480-6", sys_), comp("8462-4", dia)]}


def _single(oid: str, code: str, value: float, unit: str, display: str | None = None) -> dict[str, Any]:
    coding = {"system": LOINC, "code": code, **({"display": display} if display else {})}
    return {"resourceType": "Observation", "id": oid, "status": "final", "code": {"coding": [coding]},
            "subject": {"reference": f"Patient/{PID}"}, "effectiveDateTime": "2026-11-20T08:00:00+07:00",
            "valueQuantity": {"value": value, "unit": unit}}


class ObservationBackends(ChartBackends):
    """The chart's EHR with two BP panels, an HbA1c, a code the table does not hold (with and without a
    display)."""

    observations = [_bp("bp-1", "2026-11-01T08:00:00+07:00", 150, 95),
                    _bp("bp-2", "2026-11-15T08:00:00+07:00", 138, 88),
                    _single("a1c", "4548-4", 7.2, "%"),
                    _single("ldl", "13457-7", 3.1, "mmol/L", "Cholesterol in LDL [Moles/volume] in Serum"),
                    _single("odd", "1234-5", 4, "U/L")]

    def __call__(self, method: str, url: str, **kw: Any) -> http.Response:
        if urlsplit(url).path.endswith(f"/fhir/Patient/{PID}/$everything"):
            return _json(200, {"resourceType": "Bundle", "type": "searchset", "entry": [
                {"resource": copy.deepcopy(r)} for r in (self.patient, *self.observations)]})
        return super().__call__(method, url, **kw)


def _captions(tmp_path, monkeypatch, lang: str) -> list[str]:
    monkeypatch.setattr(http, "request", ObservationBackends())
    c = portal_signed_in(portal_app(tmp_path, monkeypatch, backend="http://127.0.0.1:9",
                                    SEN_PORTAL_CACHE_SECONDS="0"), "doctor", lang)
    r = c.get(f"/patients/{PID}")
    assert r.status_code == 200
    return [re.sub(r"\s+", " ", t).strip() for t in re.findall(r"<figcaption>(.*?)</figcaption>",
                                                                r.get_data(as_text=True), re.S)]


@pytest.mark.parametrize(("lang", "names"), [
    ("vi", ["Huyết áp tâm thu (mmHg)", "Huyết áp tâm trương (mmHg)", "HbA1c (%)",
            "Cholesterol in LDL [Moles/volume] in Serum (mmol/L)", "LOINC 1234-5 (U/L)"]),
    ("en", ["Systolic blood pressure (mmHg)", "Diastolic blood pressure (mmHg)", "HbA1c (%)",
            "Cholesterol in LDL [Moles/volume] in Serum (mmol/L)", "LOINC 1234-5 (U/L)"]),
])
def test_the_charts_trends_are_named_in_the_pages_language_never_a_question_mark(tmp_path, monkeypatch, lang,
                                                                                  names):
    captions = _captions(tmp_path, monkeypatch, lang)
    assert sorted(captions) == sorted(names)
    assert not any("?" in c for c in captions)


def test_every_vital_sign_of_the_table_has_a_vietnamese_and_an_english_name():
    from sen_portal.web import loinc

    for code in ("8480-6", "8462-4", "8867-4", "8310-5", "9279-1", "2708-6", "59408-5", "29463-7", "8302-2",
                 "39156-5", "85354-9", "2339-0", "2345-7", "4548-4"):
        vi, en = loinc.name(code, "vi"), loinc.name(code, "en")
        assert vi and en and vi != "?" and en != "?", code
    assert loinc.name("8480-6", "vi") == "Huyết áp tâm thu" and loinc.name("1234-5", "vi") is None
