"""The chart's copy of the minutes shows every part the doctor signed: a reviewer completed a consult with
every field filled, Thảo luận ("Kiểm soát kém.") among them, and the chart's consult record had no
discussion (the EHR wrote no section for it). Here the record is the one the EHR builds from the
``teleconsult.consult.completed`` event (``sen_ehr.domain.consult_record.build_composition``), read by
the portal's consult-record page: the discussion under its heading, the sites taking part by name, the
minutes' time and the chair who signed, in the page's language.

Flask's test client; the EHR and teleconsult faked at the portal's calls to them."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from services.portal.tests.test_clinic_consult_page import Backends, sign_in
from tests.support import portal_app


@pytest.fixture()
def client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    with portal_app(tmp_path, monkeypatch).test_client() as c:
        yield c


def _event_data(**minutes):
    """A ``teleconsult.consult.completed`` event's data as teleconsult builds it from the portal's minutes."""
    return {"serviceRequest": "ServiceRequest/sr1", "patient": "Patient/p1", "performer": "Practitioner/bs-an",
            "completedAt": "2026-12-05T09:40:00+07:00",
            "period": {"start": "2026-12-05T09:00:00+07:00", "end": "2026-12-05T09:35:00+07:00"},
            "minutes": {"participants": [{"display": "BS. Nguyễn Văn An", "reference": "Practitioner/bs-an",
                                          "role": "chủ trì; YS. Võ Minh Tâm — cơ sở gửi"}],
                        "summary": "Tăng huyết áp 5 năm.", "findings": "Lâm sàng: HA 170/100 mmHg.",
                        "conclusion": {"system": "http://hl7.org/fhir/sid/icd-10", "code": "I10"},
                        "conclusionText": "Tăng huyết áp độ 2.", "recommendations": "Tăng liều amlodipine.",
                        **minutes}}


def _page(client, monkeypatch, comp, lang):
    from sen_portal.web import clinic, directory

    Backends(monkeypatch)
    monkeypatch.setattr(directory, "names", lambda rtype: {
        "Organization": {"hub": "Bệnh viện Đa khoa tỉnh", "tyt-an-binh": "Trạm y tế xã An Bình"},
        "Practitioner": {"bs-an": "BS. Nguyễn Văn An"}}.get(rtype, {}))
    monkeypatch.setattr(clinic, "fhir_get", lambda service, path, *a, **kw: comp)
    sign_in(client)
    with client.session_transaction() as kept:  # the page's language, as the header's switch sets it
        kept["lang"] = lang
    r = client.get("/patients/p1/consult-records/c1")
    assert r.status_code == 200
    return r.get_data(as_text=True)


@pytest.mark.parametrize("lang, discussion, sites", [("vi", "Thảo luận", "Cơ sở tham gia hội chẩn"),
                                                    ("en", "Discussion", "Sites taking part")])
def test_the_charts_minutes_show_the_discussion_the_sites_and_the_time(client, monkeypatch, lang, discussion,
                                                                       sites):
    from sen_ehr.domain.consult_record import build_composition

    data = _event_data(discussion="Kiểm soát kém.\nCần theo dõi thêm.", chair="Practitioner/bs-an",
                       sites=[{"reference": "Organization/hub"}, {"reference": "Organization/tyt-an-binh"}])
    page = _page(client, monkeypatch, build_composition(data, "c1", "e1"), lang)
    assert re.search(rf"<h2>{discussion}</h2>\s*<p class=\"pre\" data-testid=\"record-discussion\">"
                     r"Kiểm soát kém.\nCần theo dõi thêm.</p>", page), page
    # the minutes' order: the sites, the participants, ..., the findings, the discussion, the conclusion
    assert page.index(f"<h2>{sites}</h2>") < page.index("BS. Nguyễn Văn An — chủ trì") \
        < page.index("HA 170/100") < page.index("Kiểm soát kém.") < page.index("Tăng huyết áp độ 2.")
    assert re.search(r'<ul data-testid="record-sites"><li>Bệnh viện Đa khoa tỉnh</li><li>Trạm y tế xã An Bình</li>'
                     r"</ul>", page), page
    assert "Organization/" not in page
    assert re.search(r'data-testid="record-time">05/12/2026 09:00 – 09:35<', page), page
    assert 'data-testid="record-chair">BS. Nguyễn Văn An<' in page


def test_minutes_without_a_discussion_show_no_empty_heading(client, monkeypatch):
    """A consult completed without one (the field is optional), or a record stored before the EHR kept it."""
    from sen_ehr.domain.consult_record import build_composition

    page = _page(client, monkeypatch, build_composition(_event_data(), "c1", "e1"), "vi")
    assert "Thảo luận" not in page and "record-discussion" not in page and "record-sites" not in page
    assert "<h2>Kết luận</h2>" in page


def test_the_chair_is_named_once_with_the_title_typed(client, monkeypatch):
    """The review's minutes (the participants "BS. Nguyễn Văn An — chủ trì (BVĐK Đồng Tháp)", "YS. Trần Thị
    Hoa — ...", the chair "BS.CKII Nguyễn Văn An"), from the portal through teleconsult to the EHR's record:
    the page read the chair twice in the participants and "Chủ trì ký biên bản: Nguyễn Văn An" (the
    directory's name, the title typed lost)."""
    from sen_ehr.domain.consult_record import build_composition

    from tests.integration.test_ehr_consult_record import signed_minutes

    data = {**_event_data(), "performer": "Practitioner/bs-nguyen-van-an", "minutes": signed_minutes()}
    monkeypatch.setattr("sen_portal.web.directory.names", lambda rtype: {
        "Practitioner": {"bs-nguyen-van-an": "Nguyễn Văn An"}}.get(rtype, {}))
    page = _page(client, monkeypatch, build_composition(data, "c1", "e1"), "vi")
    assert "<p>BS.CKII Nguyễn Văn An — chủ trì (BVĐK Đồng Tháp); YS. Trần Thị Hoa — Trạm Y tế xã Mỹ Hiệp</p>" in page
    assert page.count("Nguyễn Văn An") == 2, page  # the participants' line and the chair's
    assert '<dt>Chủ trì ký biên bản</dt><dd data-testid="record-chair">BS.CKII Nguyễn Văn An</dd>' in page, page
