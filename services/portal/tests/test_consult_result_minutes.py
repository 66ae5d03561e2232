"""The consult page's whole minutes (``_consult_result.html``, the clinic's ``/consults/<task>`` and the
doctor's ``/tasks/<task>``) show every part teleconsult keeps on the completed Task, in the Ministry form's
order (Circular 49/2017/TT-BYT): the time, the sites taking part, the participants with their roles, the
patient's identity, the history, the findings, the discussion, the conclusion with its ICD-10 codes, the
recommendations, the chair. The sites were missing: teleconsult keeps them as bare ``Organization/…``
references; each is named from the directory (the ``party`` filter), one the directory does not know by
its id, never the raw reference. Flask's test client; teleconsult and the EHR are the scripted fake of
``test_doctor_consult_page`` (at the HTTP transport), the directory's names set."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import pytest

from services.portal.tests.test_doctor_consult_page import OUT, Consult
from services.portal.tests.test_visit_changes import TID, _text
from tests.support import portal_app, portal_signed_in

ICD10 = "http://hl7.org/fhir/sid/icd-10"
MINUTES = {"start": "2026-12-05T09:05:00+07:00", "end": "2026-12-05T09:40:00+07:00",
           "sites": [{"reference": "Organization/bvdk-dong-thap"}, {"reference": "Organization/tyt-my-hiep"},
                     {"reference": "Organization/pkdk-la-gi"}],  # the last one unknown to the directory
           "participants": [{"reference": "Practitioner/bs-nguyen-van-an", "display": "BS. Nguyễn Văn An",
                             "role": "chủ trì; YS. Võ Minh Tâm — cơ sở gửi"}],
           "patientIdentity": "Lê Văn Ba, 62 tuổi, nam", "history": "Tăng huyết áp 5 năm.",
           "findings": {"clinical": "HA 170/100 mmHg.", "laboratory": "Creatinin 90 µmol/L."},
           "discussion": "Kiểm soát kém.", "conclusion": [{"system": ICD10, "code": "I10"}],
           "conclusionText": "Tăng huyết áp độ 2.", "recommendations": "Tăng liều amlodipine.",
           "chair": "Practitioner/bs-nguyen-van-an"}


@pytest.fixture()
def fake(monkeypatch: pytest.MonkeyPatch) -> Consult:
    return Consult.answering(monkeypatch)


@pytest.fixture()
def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake: Consult):
    from sen_portal.web import directory

    monkeypatch.setattr(directory, "names", lambda rtype: {
        "Organization": {"bvdk-dong-thap": "Bệnh viện Đa khoa Đồng Tháp", "tyt-my-hiep": "Trạm Y tế xã Mỹ Hiệp"},
        "Practitioner": {"bs-nguyen-van-an": "BS. Nguyễn Văn An"}}.get(rtype, {}))
    return portal_app(tmp_path, monkeypatch, backend="http://127.0.0.1:9", SEN_PORTAL_CACHE_SECONDS="0")


def _completed(fake: Consult, minutes: dict) -> None:
    fake.status = "completed"
    fake.output = [{"type": {"coding": [{"system": OUT, "code": "minutes"}]}, "valueAttachment": {
        "contentType": "application/json", "data": base64.b64encode(json.dumps(minutes).encode()).decode()}}]


def _minutes(app, user: str, lang: str) -> str:
    path = f"/tasks/{TID}" if user == "doctor" else f"/consults/{TID}"
    r = portal_signed_in(app, user, lang).get(path)
    assert r.status_code == 200, r.get_data(as_text=True)[:800]
    page = r.get_data(as_text=True)
    part = page[page.index('data-testid="minutes"'):]
    return part[:part.index("</dl>")]


@pytest.mark.parametrize("user", ["clinic", "doctor"])
@pytest.mark.parametrize("lang, titles", [
    ("vi", ["Thời gian", "Cơ sở tham gia hội chẩn", "Thành phần tham dự và vai trò", "Thông tin định danh người bệnh",
            "Tiền sử và tình trạng hiện tại", "Thảo luận", "Kết luận", "Hướng điều trị đề xuất", "Chủ trì"]),
    ("en", ["Time", "Sites taking part", "Participants and their roles", "Patient's identity",
            "History and current state", "Discussion", "Conclusion", "Recommendations for treatment",
            "Chair who signs off"])])
def test_the_whole_minutes_show_the_sites_by_name_and_every_part_in_the_forms_order(app, fake, user, lang,
                                                                                      titles):
    _completed(fake, MINUTES)
    minutes = _minutes(app, user, lang)
    sites = re.search(r'data-testid="minutes-sites">(.*?)</dd>', minutes)
    assert sites, minutes
    assert re.findall(r"<span>([^<]*)</span>", sites.group(1)) == [
        "Bệnh viện Đa khoa Đồng Tháp", "Trạm Y tế xã Mỹ Hiệp", "pkdk-la-gi"]
    assert "Organization/" not in minutes and "Practitioner/" not in minutes
    dts = [_text(t).strip() for t in re.findall(r"<dt>(.*?)</dt>", minutes)]
    found = [next(i for i, t in enumerate(dts) if t.startswith(title)) for title in titles]
    assert found == sorted(found), dts  # time and sites first, the chair last, as the Ministry's form
    text = _text(minutes)
    assert text.index("Trạm Y tế xã Mỹ Hiệp") < text.index("BS. Nguyễn Văn An — chủ trì; YS. Võ Minh Tâm — cơ sở gửi") \
        < text.index("Lê Văn Ba, 62 tuổi, nam") < text.index("Tăng huyết áp 5 năm.") < text.index("HA 170/100") \
        < text.index("Creatinin 90") < text.index("Kiểm soát kém.") < text.index("Tăng huyết áp độ 2.") \
        < text.index("I10") < text.index("Tăng liều amlodipine.")
    assert re.search(r'data-testid="minutes-period">05/12/2026 09:05 – 09:40<', minutes), minutes
    assert re.search(r'data-testid="minutes-chair">BS\. Nguyễn Văn An</dd>', minutes), minutes


def test_minutes_without_the_optional_parts_show_no_empty_heading(app, fake):
    """Discussion and patient identity are optional; minutes kept before the sites were shown still read."""
    _completed(fake, {k: v for k, v in MINUTES.items() if k not in ("sites", "discussion", "patientIdentity")})
    minutes = _minutes(app, "clinic", "vi")
    assert "minutes-sites" not in minutes and "Cơ sở tham gia" not in minutes
    assert "Thảo luận" not in minutes and "minutes-patient" not in minutes
    assert "Tăng liều amlodipine." in minutes


@pytest.mark.parametrize("user", ["clinic", "doctor"])
def test_the_chair_is_named_once_with_the_title_typed(app, fake, user):
    """The review's minutes (the participants "BS. Nguyễn Văn An — chủ trì (BVĐK Đồng Tháp)", "YS. Trần Thị
    Hoa — ...", the chair "BS.CKII Nguyễn Văn An") as teleconsult keeps them on the Task: the chair once,
    with the role and the title typed, and signing by that name."""
    from tests.integration.test_ehr_consult_record import signed_minutes

    _completed(fake, signed_minutes(event=False))
    minutes = _minutes(app, user, "vi")
    line = "BS.CKII Nguyễn Văn An — chủ trì (BVĐK Đồng Tháp); YS. Trần Thị Hoa — Trạm Y tế xã Mỹ Hiệp"
    assert f'data-testid="minutes-participants"><span class="pre">{line}</span><br></dd>' in minutes, minutes
    assert minutes.count("Nguyễn Văn An") == 2, minutes  # the participants' line and the chair's
    assert 'data-testid="minutes-chair">BS.CKII Nguyễn Văn An</dd>' in minutes, minutes
