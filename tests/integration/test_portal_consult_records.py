# ruff: noqa: F811 - the fixtures imported from test_portal_consult_patients are parameters by name
"""A consult request points at the patient's records already in the EHR (review 7): the consult form lists the
patient's documents, imaging studies and newest results, grouped, none ticked; those the nurse ticks go as the
ServiceRequest's ``supportingInfo`` (teleconsult checks each is the patient's and readable), and the hub
doctor's consult page shows each by name and date, an imaging study or a result linked into the patient's
chart. A record of another patient, forged into the form, is refused readably and nothing is sent.

Against a real EHR and teleconsult (gunicorn processes on loopback), the real FerretDB and RabbitMQ: the
services and the portal of ``test_portal_consult_patients``, started afresh for this module."""

from __future__ import annotations

import json
import re
import uuid
from html import unescape
from typing import Any

import httpx
import pytest

from tests.integration.consult_stack import *  # noqa: F403 - its fixtures, used by name
from tests.integration.test_portal_consult_patients import BINH, LAN, _headers
from tests.integration.test_portal_consult_same_reason import _asked
from tests.support import csrf_token, portal_signed_in

pytestmark = pytest.mark.integration

DCM = "http://dicom.nema.org/resources/ontology/DCM"
LOINC = "http://loinc.org"


def _put(ehr: str, dev_key: Any, res: dict[str, Any]) -> None:
    r = httpx.put(f"{ehr}/fhir/{res['resourceType']}/{res['id']}", content=json.dumps(res),
                  headers=_headers(dev_key, "admin"), timeout=30)
    assert r.status_code in (200, 201), r.text


@pytest.fixture(scope="module")
def records(ehr, dev_key) -> dict[str, str]:
    """Nguyễn Thị Lan's chest X-ray, an ECG file, a pulse and a rapid test; an X-ray of Trần Văn Bình."""
    tag = uuid.uuid4().hex[:6]
    lan = {"reference": f"Patient/{LAN}"}
    made = {
        "xray": {"resourceType": "ImagingStudy", "id": f"xq-{tag}", "status": "available", "subject": lan,
                 "started": "2026-11-20T09:30:00+07:00", "modality": [{"system": DCM, "code": "DX"}],
                 "description": "X-quang ngực thẳng", "numberOfSeries": 1, "numberOfInstances": 1},
        "ecg": {"resourceType": "DocumentReference", "id": f"dt-{tag}", "status": "current", "subject": lan,
                "date": "2026-11-19T08:00:00+07:00", "description": "Điện tim 12 chuyển đạo",
                "content": [{"attachment": {"contentType": "application/pdf", "title": "dien-tim.pdf",
                                            "data": "JVBERi0xLjQK"}}]},
        "pulse": {"resourceType": "Observation", "id": f"m-{tag}", "status": "final", "subject": lan,
                  "code": {"coding": [{"system": LOINC, "code": "8867-4"}]},
                  "effectiveDateTime": "2026-11-21T07:00:00+07:00",
                  "valueQuantity": {"value": 96, "unit": "/min", "system": "http://unitsofmeasure.org",
                                    "code": "/min"}},
        "rapid": {"resourceType": "Observation", "id": f"tn-{tag}", "status": "final", "subject": lan,
                  "code": {"coding": [{"system": LOINC, "code": "94558-4",
                                       "display": "SARS-CoV-2 (COVID-19) Ag [Presence] in Respiratory specimen by "
                                                  "Rapid immunoassay"}]},
                  "effectiveDateTime": "2026-11-21T08:00:00+07:00",
                  "valueCodeableConcept": {"coding": [{"system": "http://snomed.info/sct", "code": "260385009",
                                                       "display": "Negative"}]}},
        "other": {"resourceType": "ImagingStudy", "id": f"xq-binh-{tag}", "status": "available",
                  "subject": {"reference": f"Patient/{BINH}"}, "started": "2026-11-20T10:00:00+07:00",
                  "description": "X-quang cột sống"},
    }
    for res in made.values():
        _put(ehr, dev_key, res)
    return {k: f"{r['resourceType']}/{r['id']}" for k, r in made.items()}


def _form(clinic: Any) -> tuple[str, dict[str, str]]:
    page = clinic.get(f"/patients/{LAN}/consult").get_data(as_text=True)
    key = re.search(r'name="key" type="hidden" value="([0-9a-f]{32})"', page).group(1)
    return page, {"csrf_token": csrf_token(page), "key": key, "patient": LAN, "priority": "routine",
                  "reason": "J18.9 — Viêm phổi", "question": f"Sốt, ho kéo dài ({key[:8]}), xin ý kiến."}


def test_the_records_ticked_go_with_the_request_and_the_doctor_sees_them(portal, tc, records, dev_key):
    clinic = portal_signed_in(portal, "clinic")
    page, data = _form(clinic)
    offered = re.search(r'data-testid="record-choices">(.*?)</fieldset>', page, re.S).group(1)
    boxes = re.findall(r'<input type="checkbox" name="supporting" value="([^"]+)"[^>]*>', offered)
    assert set(boxes) == {records["xray"], records["ecg"], records["pulse"], records["rapid"]}, boxes  # not Bình's
    assert "checked" not in offered  # none ticked at first
    text = re.sub(r"<[^>]+>", " ", offered)
    assert all(h in text for h in ("Tài liệu", "Chẩn đoán hình ảnh", "Kết quả gần đây"))
    assert "X-quang kỹ thuật số: X-quang ngực thẳng (20/11/2026 09:30)" in text
    assert "dien-tim.pdf (19/11/2026 08:00)" in text

    # another patient's record forged into the form: said, nothing sent
    r = clinic.post(f"/patients/{LAN}/consult", data={**data, "supporting": [records["xray"], records["other"]]})
    assert r.status_code == 422 and "Một mục bạn đã chọn không còn trong hồ sơ người bệnh" in r.get_data(as_text=True)
    assert not _asked(tc, dev_key, data["question"])

    r = clinic.post(f"/patients/{LAN}/consult", data={**data, "supporting": [records["xray"], records["pulse"]]})
    assert r.status_code == 302, r.get_data(as_text=True)[:800]
    tid = re.search(r"/consults/([^?]+)", r.headers["Location"]).group(1)
    (sr,) = _asked(tc, dev_key, data["question"])
    assert [(s["reference"], s["display"]) for s in sr["supportingInfo"]] == [  # in Vietnamese, English beside
        (records["xray"], "X-quang kỹ thuật số: X-quang ngực thẳng (20/11/2026 09:30)"),
        (records["pulse"], f"{_pulse_name()}: 96 /min (21/11/2026 07:00)")]

    doctor = portal_signed_in(portal, "doctor")
    page = doctor.get(f"/tasks/{tid}").get_data(as_text=True)
    shown = re.search(r'data-testid="attachments">(.*?)</dd>', page, re.S).group(1)
    links = re.findall(r'<a href="([^"]+)"[^>]*data-testid="attachment-record">([^<]+)</a>', shown)
    assert links == [(f"/patients/{LAN}#imaging", "X-quang kỹ thuật số: X-quang ngực thẳng (20/11/2026 09:30)"),
                     (f"/patients/{LAN}#results", f"{_pulse_name()}: 96 /min (21/11/2026 07:00)")], shown
    page = clinic.get(f"/consults/{tid}").get_data(as_text=True)  # the clinic's page alike
    assert f'href="/patients/{LAN}#imaging"' in page


def _pulse_name() -> str:
    from sen_portal.web import loinc

    return loinc.label({"coding": [{"system": LOINC, "code": "8867-4"}]}, "vi")


def _in(client: Any, lang: str, path: str) -> str:
    token = csrf_token(client.get(path).get_data(as_text=True))
    client.post("/language", data={"lang": lang, "next": path, "csrf_token": token})
    return client.get(path).get_data(as_text=True)


def _records_shown(page: str) -> list[str]:
    shown = re.search(r'data-testid="attachments">(.*?)</dd>', page, re.S).group(1)
    return [unescape(t) for t in re.findall(r'data-testid="attachment-record">([^<]+)</a>', shown)]


def test_the_records_attached_are_named_in_the_language_of_the_page_that_shows_them(portal, tc, records, dev_key):
    """Review 9: the consult kept each record's Vietnamese name alone, and the doctor's English page showed it
    as is ("Test nhanh kháng nguyên SARS-CoV-2: Âm tính"). Now the English is kept beside it (FHIR's translation
    extension on the reference's display): each page names the records in its own language."""
    clinic = portal_signed_in(portal, "clinic")
    _, data = _form(clinic)
    data = {**data, "reason": "R50.9 — Sốt", "question": f"Sốt ({data['key'][:8]}), test nhanh âm tính."}
    r = clinic.post(f"/patients/{LAN}/consult", data={**data, "supporting": [records["xray"], records["rapid"]]})
    assert r.status_code == 302, r.get_data(as_text=True)[:800]
    tid = re.search(r"/consults/([^?]+)", r.headers["Location"]).group(1)
    (sr,) = _asked(tc, dev_key, data["question"])
    assert [s["display"] for s in sr["supportingInfo"]] == [  # the Vietnamese stored as before
        "X-quang kỹ thuật số: X-quang ngực thẳng (20/11/2026 09:30)",
        "Test nhanh kháng nguyên SARS-CoV-2: Âm tính (21/11/2026 08:00)"]
    vi = ["X-quang kỹ thuật số: X-quang ngực thẳng (20/11/2026 09:30)",
          "Test nhanh kháng nguyên SARS-CoV-2: Âm tính (21/11/2026 08:00)"]
    en = ["Digital radiography: X-quang ngực thẳng (20/11/2026 09:30)",
          "SARS-CoV-2 rapid antigen test: Negative (21/11/2026 08:00)"]
    doctor = portal_signed_in(portal, "doctor")
    assert _records_shown(doctor.get(f"/tasks/{tid}").get_data(as_text=True)) == vi
    assert _records_shown(_in(doctor, "en", f"/tasks/{tid}")) == en
    assert _records_shown(clinic.get(f"/consults/{tid}").get_data(as_text=True)) == vi  # the clinic's page alike
    assert _records_shown(_in(clinic, "en", f"/consults/{tid}")) == en
    assert _records_shown(_in(doctor, "vi", f"/tasks/{tid}")) == vi


def test_a_reference_made_elsewhere_is_shown_as_stored_in_either_language():
    from sen_portal.web import results

    made_elsewhere = {"reference": "Observation/x", "display": "Kết quả đo nhịp tim (21/11/2026 07:00)"}
    for lang in ("vi", "en"):
        assert results.reference_display(made_elsewhere, lang) == made_elsewhere["display"]
    kept = {"reference": "Observation/x", **results.with_translation("Nhịp tim: 96", "en", "Heart rate: 96")}
    assert (results.reference_display(kept, "vi"), results.reference_display(kept, "en")) == (
        "Nhịp tim: 96", "Heart rate: 96")
