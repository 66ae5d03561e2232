"""The chart shows the patient's imaging studies (review 7: an ImagingStudy "X-quang ngực thẳng" in the EHR
appeared nowhere). Each a line of "Chẩn đoán hình ảnh" / "Imaging studies", newest first: when (Vietnam's
time), the modality by name in the page's language (DICOM's code), the description, the body site, how many
series and images, and a link to its images when its endpoint has an http(s) address.

Flask's test client; the EHR is scripted at the HTTP transport (test_chart_lists' ``RecordBackends``)."""

from __future__ import annotations

import re

import pytest
from sen_shared.fhir.validate import validate_resource

from services.portal.tests.test_chart_lists import SUBJECT, _chart, _items

DCM = "http://dicom.nema.org/resources/ontology/DCM"
CHEST = {"resourceType": "ImagingStudy", "id": "xq-nguc", "status": "available", "subject": SUBJECT,
         "started": "2026-11-20T02:30:00Z", "modality": [{"system": DCM, "code": "DX"}],
         "description": "X-quang ngực thẳng", "numberOfSeries": 1, "numberOfInstances": 2,
         "contained": [{"resourceType": "Endpoint", "id": "pacs", "status": "active",
                        "connectionType": {"system": "http://terminology.hl7.org/CodeSystem/endpoint-connection-type",
                                           "code": "dicom-wado-rs"},
                        "payloadType": [{"text": "DICOM"}], "address": "https://pacs.bvdk.example/studies/1.2.3"}],
         "endpoint": [{"reference": "#pacs"}],
         "series": [{"uid": "1.2.3.1", "modality": {"system": DCM, "code": "DX"},
                     "bodySite": {"system": "http://snomed.info/sct", "code": "51185008", "display": "Ngực"}}]}
ULTRASOUND = {"resourceType": "ImagingStudy", "id": "sa-bung", "status": "available", "subject": SUBJECT,
              "started": "2026-11-21T08:00:00+07:00", "description": "Siêu âm bụng tổng quát",
              "series": [{"uid": "1.2.4.1", "modality": {"system": DCM, "code": "US"},
                          "instance": [{"uid": "1.2.4.1.1", "sopClass": {"code": "x"}},
                                       {"uid": "1.2.4.1.2", "sopClass": {"code": "x"}},
                                       {"uid": "1.2.4.1.3", "sopClass": {"code": "x"}}]}]}
OLD_CT = {"resourceType": "ImagingStudy", "id": "ct-cu", "status": "available", "subject": SUBJECT,
          "started": "2024-03-01T09:00:00+07:00", "modality": [{"system": DCM, "code": "CT"}],
          "endpoint": [{"reference": "#bad"}],
          "contained": [{"resourceType": "Endpoint", "id": "bad", "status": "active",
                         "connectionType": {"code": "dicom-wado-rs"}, "payloadType": [{"text": "DICOM"}],
                         "address": "javascript:alert(1)"}]}
IN_ERROR = {"resourceType": "ImagingStudy", "id": "sai", "status": "entered-in-error", "subject": SUBJECT,
            "started": "2026-11-22T08:00:00+07:00", "description": "Ghi nhầm"}
RECORD = [OLD_CT, CHEST, IN_ERROR, ULTRASOUND]

EXPECTED = {
    "vi": ["21/11/2026 08:00 — Siêu âm: Siêu âm bụng tổng quát · Loạt ảnh: 1 · Số ảnh: 3",
           "20/11/2026 09:30 — X-quang kỹ thuật số: X-quang ngực thẳng · Vùng chụp: Ngực · Loạt ảnh: 1 · Số ảnh: 2 "
           "· Xem ảnh",
           "01/03/2024 09:00 — Chụp cắt lớp vi tính (CT)"],
    "en": ["21/11/2026 08:00 — Ultrasound: Siêu âm bụng tổng quát · Series: 1 · Images: 3",
           "20/11/2026 09:30 — Digital radiography: X-quang ngực thẳng · Body site: Chest · Series: 1 · Images: 2 "
           "· View the images",
           "01/03/2024 09:00 — Computed tomography"],
}


def test_the_record_is_real_fhir():
    for resource in RECORD:
        assert validate_resource(resource) == "ImagingStudy", resource["id"]


def _studies(page: str) -> list[str]:
    found = re.search(r'data-testid="imaging">(.*?)</ul>', page, re.S)
    return [re.sub(r"\s+:", ":", re.sub(r"\s+", " ", i)) for i in _items(found.group(1))] if found else []


@pytest.mark.parametrize("lang", ["vi", "en"])
def test_the_patients_imaging_studies_are_on_the_chart_newest_first(tmp_path, monkeypatch, lang):
    page = _chart(tmp_path, monkeypatch, RECORD, lang)
    assert _studies(page) == EXPECTED[lang], _studies(page)
    assert f"<h2>{ {'vi': 'Chẩn đoán hình ảnh', 'en': 'Imaging studies'}[lang] }</h2>" in page
    links = re.findall(r'<a href="([^"]*)"[^>]*data-testid="imaging-link"', page)
    assert links == ["https://pacs.bvdk.example/studies/1.2.3"]  # never the javascript: one
    assert "Ghi nhầm" not in page
    assert _studies(_chart(tmp_path, monkeypatch, list(reversed(RECORD)), lang)) == EXPECTED[lang]


# review 9: a series' body site as the code system writes it ("Thorax") was shown as is on the Vietnamese page
SNOMED = "http://snomed.info/sct"
SITES = {"resourceType": "ImagingStudy", "id": "ct-nhieu-vung", "status": "available", "subject": SUBJECT,
         "started": "2026-11-23T08:00:00+07:00", "modality": [{"system": DCM, "code": "CT"}],
         "series": [{"uid": f"1.2.5.{i}", "modality": {"system": DCM, "code": "CT"}, "bodySite": site}
                    for i, site in enumerate([
                        {"system": SNOMED, "code": "51185008", "display": "Thorax"},
                        {"system": SNOMED, "code": "818983003", "display": "Abdomen"},
                        {"system": SNOMED, "code": "122496007", "display": "Lumbar spine"},
                        {"system": SNOMED, "code": "302551006", "display": "Entire thorax"},  # none of the table's
                        {"system": SNOMED, "code": "1234567"}])]}  # no display: its code


def test_the_record_with_body_sites_is_real_fhir():
    assert validate_resource(SITES) == "ImagingStudy"


@pytest.mark.parametrize(("lang", "sites"), [
    ("vi", "Vùng chụp: Ngực, Bụng, Cột sống thắt lưng, Entire thorax, 1234567"),
    ("en", "Body site: Chest, Abdomen, Lumbar spine, Entire thorax, 1234567"),
])
def test_a_series_body_site_is_named_in_the_pages_language(tmp_path, monkeypatch, lang, sites):
    (study,) = _studies(_chart(tmp_path, monkeypatch, [SITES], lang))
    assert f" · {sites} · " in study, study
    assert lang == "en" or "Thorax" not in study


def test_every_body_site_of_the_table_has_a_vietnamese_and_an_english_name():
    from sen_portal.web import imaging

    for code in ("51185008", "818983003", "69536005", "421060004", "816092008", "53120007", "61685007"):
        vi, en = imaging.body_site({"system": SNOMED, "code": code}, "vi"), \
            imaging.body_site({"system": SNOMED, "code": code}, "en")
        assert vi and en and vi != code and en != code, code
    assert imaging.body_site({"system": "http://example.org/other", "code": "51185008", "display": "X"}, "vi") == "X"
