# ruff: noqa: F811 - the fixtures imported from consult_stack are parameters by name
"""The minutes printed (``/patients/<pid>/consult-records/<cid>.pdf``) against a real EHR and teleconsult
(gunicorn processes on loopback), the real FerretDB and RabbitMQ: the consult submitted through teleconsult, its
record stored by the EHR's own handler of ``teleconsult.consult.completed`` (as its consumer does), the portal
in this process. The EHR decides who may print: the clinic of the patient; the hub doctor once granted the
patient, not before; no one another facility's patient. The clinic's consult page finds the record through the
EHR's Composition search by the consult's ServiceRequest. The PDF read back with ``pdftotext``."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.consult_stack import *  # noqa: F403 - its fixtures, used by name
from tests.integration.test_portal_consult_patients import CLINIC, HUB, ICD10, LAN, _grant, _headers
from tests.support import portal_signed_in

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(not shutil.which("pdftotext"), reason="poppler's pdftotext reads the PDF")]
DOCTOR = "Practitioner/bs-nguyen-van-an"


def _completed(sr: str, patient: str) -> dict[str, Any]:
    """``teleconsult.consult.completed`` for the consult ``sr`` as teleconsult sends it (the clinic's site
    first: the doctor held the consult when signing)."""
    return {"id": str(uuid.uuid4()), "data": {
        "serviceRequest": f"ServiceRequest/{sr}", "patient": f"Patient/{patient}", "performer": DOCTOR,
        "completedAt": "2026-12-05T09:40:00+07:00",
        "period": {"start": "2026-12-05T09:00:00+07:00", "end": "2026-12-05T09:35:00+07:00"},
        "minutes": {"participants": [{"display": "BS.CKII Nguyễn Văn An", "reference": DOCTOR,
                                      "role": "chủ trì; BS. Trần Thị Bích — thư ký; YS. Võ Minh Tâm — cơ sở gửi"}],
                    "sites": [{"reference": f"Organization/{CLINIC}"}, {"reference": f"Organization/{HUB}"}],
                    "summary": "Tăng huyết áp 5 năm.", "findings": "Lâm sàng: HA 170/100 mmHg.",
                    "conclusion": {"system": ICD10, "code": "I10"}, "conclusionText": "Tăng huyết áp độ 2.",
                    "recommendations": "Tăng liều amlodipine.", "chair": DOCTOR}}}


def _record(mongo_client: Any, ehr_db: str, sr: str, patient: str) -> str:
    from sen_ehr.domain.consult_record import handle_consult_completed, record_ids

    handle_consult_completed(_completed(sr, patient), mongo_client[ehr_db])
    return record_ids(f"ServiceRequest/{sr}")[1]


def _text(pdf: bytes, tmp_path: Path) -> str:
    path = tmp_path / f"{uuid.uuid4().hex}.pdf"
    path.write_bytes(pdf)
    out = subprocess.run(["pdftotext", str(path), "-"], capture_output=True, text=True, check=True).stdout
    return re.sub(r"\s+", " ", out)


def test_who_may_print_the_minutes_is_who_the_ehr_lets_read_the_record(portal, tc, ehr, ehr_db, mongo_client,
                                                                        dev_key, tmp_path):
    clinic_token = _headers(dev_key, "clinic", facility=CLINIC, practitioner="ys-vo-minh-tam", sub="portal-clinic")
    sr = {"resourceType": "ServiceRequest", "status": "active", "intent": "order", "priority": "routine",
          "subject": {"reference": f"Patient/{LAN}"}, "requester": {"reference": f"Organization/{CLINIC}"},
          "reasonCode": [{"coding": [{"system": ICD10, "code": "I10"}], "text": "Tăng huyết áp"}],
          "note": [{"text": "Xin ý kiến tuyến trên."}], "performer": [{"reference": f"Organization/{HUB}"}]}
    r = httpx.post(f"{tc}/fhir/ServiceRequest/$submit", content=json.dumps(sr), headers=clinic_token, timeout=30)
    assert r.status_code == 201, r.text
    ids = {e["resource"]["resourceType"]: e["resource"]["id"] for e in r.json()["entry"]}
    cid = _record(mongo_client, ehr_db, ids["ServiceRequest"], LAN)
    path = f"/patients/{LAN}/consult-records/{cid}.pdf"

    # the clinic of the patient: the form, the hub (the consult's performer, named by the EHR) at its head
    clinic = portal_signed_in(portal, "clinic")
    r = clinic.get(path)
    assert r.status_code == 200 and r.mimetype == "application/pdf", r.get_data(as_text=True)[:800]
    text = _text(r.data, tmp_path)
    for said in ("BỆNH VIỆN ĐA KHOA ĐỒNG THÁP", "CỘNG HÒA XÃ HỘI CHỦ NGHĨA VIỆT NAM", "BIÊN BẢN HỘI CHẨN TỪ XA",
                 "Nguyễn Thị Lan", "09:00 – 09:35, ngày 05/12/2026", "I10 — Tăng huyết áp vô căn (nguyên phát)",
                 "THƯ KÝ", "CHỦ TRÌ HỘI CHẨN"):
        assert said in text, (said, text)
    assert text.rindex("BS.CKII Nguyễn Văn An") > text.index("CHỦ TRÌ HỘI CHẨN")
    assert text.rindex("BS. Trần Thị Bích") > text.index("THƯ KÝ")
    # from the clinic's consult page: the record found by the consult's ServiceRequest
    r = clinic.get(f"/consults/{ids['Task']}/minutes.pdf")
    assert r.status_code == 302 and r.headers["Location"].endswith(path), (r.status_code, r.headers)

    # the hub doctor: not before the patient is granted (the EHR's 404, the page's), then as the clinic
    doctor = portal_signed_in(portal, "doctor")
    r = doctor.get(path)
    assert r.status_code == 404 and "Biên bản hội chẩn này không tồn tại" in r.get_data(as_text=True)
    _grant(mongo_client, ehr_db, LAN, DOCTOR, f"ServiceRequest/{ids['ServiceRequest']}")
    r = doctor.get(path)
    assert r.status_code == 200 and "BIÊN BẢN HỘI CHẨN TỪ XA" in _text(r.data, tmp_path)


def test_another_facilitys_record_is_not_printed(portal, ehr, ehr_db, mongo_client, dev_key):
    other = {"resourceType": "Patient", "id": "p-khac", "gender": "female", "birthDate": "1975-01-01",
             "name": [{"family": "Phạm", "given": ["Thị", "Khác"]}],
             "managingOrganization": {"reference": "Organization/tyt-khac"}}
    r = httpx.put(f"{ehr}/fhir/Patient/p-khac", content=json.dumps(other), headers=_headers(dev_key, "admin"),
                  timeout=30)
    assert r.status_code in (200, 201), r.text
    cid = _record(mongo_client, ehr_db, f"sr-khac-{uuid.uuid4().hex[:8]}", "p-khac")
    clinic = portal_signed_in(portal, "clinic")
    for lang, words in (("vi", "Biên bản hội chẩn này không tồn tại"), ("en", "This consult record does not exist")):
        with clinic.session_transaction() as kept:
            kept["lang"] = lang
        r = clinic.get(f"/patients/p-khac/consult-records/{cid}.pdf")
        assert r.status_code == 404 and r.mimetype == "text/html" and words in r.get_data(as_text=True)
