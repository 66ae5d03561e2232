"""The teleconsultation minutes printed for the patient's paper file (``/patients/<pid>/consult-records/<cid>.pdf``):
the EHR's consult record (built here by ``sen_ehr.domain.consult_record.build_composition`` from the event
teleconsult sends) as the Ministry's form, read back with poppler's ``pdftotext``: the hub at the top left, the
national motto, the title, the sections in the record page's order, the diagnosis with its ICD-10 code and
Vietnamese title, Vietnam times, the chair's and the secretary's signature blocks with their names, numbered
pages; who may print it is who may open the record page; the links on the record page and the clinic's
consult page.

Flask's test client; the EHR and teleconsult faked at the portal's calls to them."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from services.portal.tests.test_clinic_consult_page import Backends, sign_in
from tests.support import portal_app

needs_pdftotext = pytest.mark.skipif(not shutil.which("pdftotext"), reason="poppler's pdftotext reads the PDF")

NAMES = {"Organization": {"bvdk-dong-thap": "Bệnh viện Đa khoa tỉnh Đồng Tháp", "tyt-my-hiep": "Trạm Y tế xã Mỹ Hiệp"},
         "Practitioner": {"bs-an": "Nguyễn Văn An"}}


@pytest.fixture()
def client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    with portal_app(tmp_path, monkeypatch).test_client() as c:
        yield c


def _event_data(**minutes: Any) -> dict[str, Any]:
    """A ``teleconsult.consult.completed`` event's data as teleconsult builds it from the portal's minutes (the
    clinic's site first: the doctor had taken the consult, so the Task's owner was no Organization)."""
    return {"serviceRequest": "ServiceRequest/sr1", "patient": "Patient/p1", "performer": "Practitioner/bs-an",
            "completedAt": "2026-12-05T02:40:00+00:00",  # 09:40 in Vietnam
            "period": {"start": "2026-12-05T02:00:00Z", "end": "2026-12-05T02:35:00Z"},
            "minutes": {"participants": [{"display": "BS.CKII Nguyễn Văn An", "reference": "Practitioner/bs-an",
                                          "role": "chủ trì; BS. Trần Thị Bích — thư ký; "
                                                  "YS. Võ Minh Tâm — cơ sở gửi, Trạm Y tế xã Mỹ Hiệp"}],
                        "sites": [{"reference": "Organization/tyt-my-hiep"},
                                  {"reference": "Organization/bvdk-dong-thap"}],
                        "summary": "Tăng huyết áp 5 năm, đau đầu.", "findings": "Lâm sàng: HA 170/100 mmHg.",
                        "discussion": "Kiểm soát huyết áp kém.",
                        "conclusion": {"system": "http://hl7.org/fhir/sid/icd-10", "code": "I10"},
                        "diagnoses": [{"system": "http://hl7.org/fhir/sid/icd-10", "code": "I10"},
                                      {"system": "http://hl7.org/fhir/sid/icd-10", "code": "I50"}],
                        "conclusionText": "Tăng huyết áp độ 2.", "recommendations": "Tăng liều amlodipine.",
                        "chair": "Practitioner/bs-an", **minutes}}


def _record(**minutes: Any) -> dict[str, Any]:
    from sen_ehr.domain.consult_record import build_composition

    return build_composition(_event_data(**minutes), "c1", "e1")


class Fakes(Backends):
    """The clinic's consult fakes (``Backends``) with the EHR's consult record ``c1`` of patient ``p1`` and the
    directory's names; ``teleconsult_down``: teleconsult answers nothing."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, comp: dict[str, Any] | None,
                 teleconsult_down: bool = False) -> None:
        from sen_portal.web import clinic, directory, minutes_print
        from sen_portal.web.backend import BackendError

        super().__init__(monkeypatch)
        self.task = {**self.task, "status": "completed", "owner": {"reference": "Practitioner/bs-an"}}
        self.sr = {**self.sr, "performer": [{"reference": "Organization/bvdk-dong-thap"}]}
        self.composition_searches: list[dict[str, str]] = []
        faked = clinic.fhir_get

        def fhir_get(service: str, path: str, params: dict[str, str] | None = None, **kw: Any) -> dict[str, Any]:
            if service == "teleconsult" and teleconsult_down:
                raise BackendError("unavailable", "teleconsult", None)
            if (service, path) == ("ehr", "/fhir/Composition/c1"):
                if comp is None:
                    raise BackendError("refused", "ehr", 404)
                return comp
            if (service, path) == ("ehr", "/fhir/Composition"):
                self.composition_searches.append(dict(params or {}))
                return {"resourceType": "Bundle", "entry": [{"resource": comp}] if comp else []}
            return faked(service, path, params, **kw)

        for module in (clinic, minutes_print):
            monkeypatch.setattr(module, "fhir_get", fhir_get)
        monkeypatch.setattr(directory, "names", lambda rtype: NAMES.get(rtype, {}))


def _text(pdf: bytes, tmp_path: Path, *layout: str) -> str:
    path = tmp_path / "minutes.pdf"
    path.write_bytes(pdf)
    return subprocess.run(["pdftotext", *layout, str(path), "-"], capture_output=True, text=True,
                          check=True).stdout


def _pdf(client, lang: str = "vi", user: str = "clinic") -> Any:
    sign_in(client, user)
    with client.session_transaction() as kept:
        kept["lang"] = lang
    return client.get("/patients/p1/consult-records/c1.pdf")


@needs_pdftotext
@pytest.mark.parametrize("lang", ["vi", "en"])
def test_the_minutes_print_as_the_ministrys_form(client, monkeypatch, tmp_path, lang):
    """Vietnamese whatever the page's language: the form filed is the Ministry's."""
    Fakes(monkeypatch, _record())
    r = _pdf(client, lang)
    assert r.status_code == 200 and r.mimetype == "application/pdf", r.get_data(as_text=True)[:500]
    assert r.headers["Cache-Control"] == "no-store"
    assert r.headers["Content-Disposition"] == 'inline; filename="bien-ban-hoi-chan-c1.pdf"'
    text = _text(r.data, tmp_path)
    flat = re.sub(r"\s+", " ", text)
    assert "CỘNG HÒA XÃ HỘI CHỦ NGHĨA VIỆT NAM" in text and "Độc lập - Tự do - Hạnh phúc" in text, text
    assert "BIÊN BẢN HỘI CHẨN TỪ XA" in text
    # the hub that held the consult (the ServiceRequest's performer), though the clinic is the first site
    assert "BỆNH VIỆN ĐA KHOA TỈNH ĐỒNG THÁP" in flat, flat
    # Vietnam's time, from instants written in UTC
    assert "09:00 – 09:35, ngày 05/12/2026 (giờ Việt Nam)" in flat and "Ngày 05 tháng 12 năm 2026" in flat, flat
    assert "Lê Văn Cường" in flat and "nam" in flat  # the patient
    # the sections in the record page's order, with its titles
    titles = ["Cơ sở tham gia hội chẩn", "Thành phần tham dự và vai trò", "Tiền sử và tình trạng hiện tại",
              "Kết quả đã xem xét (lâm sàng, cận lâm sàng, hình ảnh)", "Thảo luận", "Kết luận",
              "Hướng điều trị đề xuất"]
    at = [flat.index(f"{n}. {t}") for n, t in enumerate(titles, start=1)]
    assert at == sorted(at), flat
    assert flat.index("Trạm Y tế xã Mỹ Hiệp") < flat.index("BS.CKII Nguyễn Văn An — chủ trì") \
        < flat.index("BS. Trần Thị Bích — thư ký") < flat.index("HA 170/100 mmHg") < flat.index("Kiểm soát")
    assert "Lâm sàng:" not in flat
    # each diagnosis with its ICD-10 code and Vietnamese title
    assert "I10 — Tăng huyết áp vô căn (nguyên phát)" in flat and "I50 — Suy tim" in flat, flat
    assert "Tăng huyết áp độ 2." in flat and "Tăng liều amlodipine." in flat
    # the signature blocks with the names: the chair as the minutes name them (title typed), the secretary
    assert re.search(r"THƯ KÝ\s+CHỦ TRÌ HỘI CHẨN", text), text
    assert flat.count("(Ký, ghi rõ họ tên)") == 2
    assert flat.rindex("BS. Trần Thị Bích") > flat.index("CHỦ TRÌ HỘI CHẨN")
    assert flat.rindex("BS.CKII Nguyễn Văn An") > flat.index("CHỦ TRÌ HỘI CHẨN")
    assert "Trang 1/1" in flat
    assert "Organization/" not in flat and "Practitioner/" not in flat


@needs_pdftotext
def test_the_page_size_is_a4_and_long_minutes_number_their_pages(client, monkeypatch, tmp_path):
    Fakes(monkeypatch, _record(findings="Lâm sàng: " + "\n".join(f"Dòng khám {n}: bình thường." for n in range(120))))
    r = _pdf(client)
    assert r.status_code == 200
    info = subprocess.run(["pdfinfo", "-"], input=r.data, capture_output=True, check=True).stdout.decode()
    assert re.search(r"Page size:\s+595(\.\d+)? x 841(\.\d+)? pts \(A4\)", info), info
    pages = int(re.search(r"Pages:\s+(\d+)", info).group(1))
    assert pages >= 2
    flat = re.sub(r"\s+", " ", _text(r.data, tmp_path))
    assert all(f"Trang {n}/{pages}" in flat for n in range(1, pages + 1)), flat


@needs_pdftotext
def test_without_teleconsult_or_a_secretary_the_record_alone_prints(client, monkeypatch, tmp_path):
    """Teleconsult down: the hub is the portal's among the record's sites; minutes naming no secretary leave
    the secretary's block to be signed and named by hand."""
    comp = _record(participants=[{"display": "BS.CKII Nguyễn Văn An", "reference": "Practitioner/bs-an",
                                  "role": "chủ trì; YS. Võ Minh Tâm — cơ sở gửi"}])
    Fakes(monkeypatch, comp, teleconsult_down=True)
    r = _pdf(client)
    assert r.status_code == 200
    text = _text(r.data, tmp_path)
    assert "BỆNH VIỆN ĐA KHOA TỈNH ĐỒNG THÁP" in re.sub(r"\s+", " ", text)
    flat = re.sub(r"\s+", " ", text)
    assert "Thư ký" not in flat and "THƯ KÝ" in flat
    assert flat.rindex("BS.CKII Nguyễn Văn An") > flat.index("CHỦ TRÌ HỘI CHẨN")


def test_the_secretary_is_the_participant_whose_role_says_so():
    from sen_portal.web.minutes_print import secretary

    lines = ["BS.CKII Nguyễn Văn An — chủ trì, thư ký tạm", "ĐD. Lê Thị Hoa — Thu ky", "BS. Phạm Văn Tư — secretary"]
    assert secretary(lines, "BS.CKII Nguyễn Văn An") == "ĐD. Lê Thị Hoa"  # accents off; never the chair
    assert secretary(["YS. Võ Minh Tâm — cơ sở gửi"], "BS. An") == ""


# a page's CSRF token (Flask-WTF's, signed with the second it was made): two loads of one page differ there only
_TOKEN = re.compile(r'("X-CSRFToken": "|name="csrf_token" value=")[^"]*"')


def _untokened(page: str) -> str:
    """``page`` with its CSRF tokens' values left out."""
    return _TOKEN.sub(r'\1"', page)


@pytest.mark.parametrize("lang, words", [("vi", "Không tìm thấy"), ("en", "Not found")])
def test_a_record_there_is_none_of_is_the_pages_404_in_the_users_language(client, monkeypatch, lang, words):
    for comp in (None, {**_record(), "subject": {"reference": "Patient/p2"}}):  # none; another patient's
        Fakes(monkeypatch, comp)
        r = _pdf(client, lang)
        page = r.get_data(as_text=True)
        assert r.status_code == 404 and r.mimetype == "text/html" and words in page, page[:800]
        # the record page's own (its address aside: the language switch comes back to it)
        assert _untokened(page.replace("c1.pdf", "c1")) == _untokened(
            client.get("/patients/p1/consult-records/c1").get_data(as_text=True))


def test_the_404_is_the_record_pages_own_though_its_token_was_made_a_second_later(client, monkeypatch):
    """The comparison above, its two loads' CSRF tokens made seconds apart (as under load: it failed once in a
    shuffled run of the suite, the pages differing in the token's time alone)."""
    import itertools
    import time

    clock = itertools.count(int(time.time()), 2)
    monkeypatch.setattr("itsdangerous.timed.time.time", lambda: next(clock))
    Fakes(monkeypatch, None)
    page = _pdf(client, "vi").get_data(as_text=True).replace("c1.pdf", "c1")
    other = client.get("/patients/p1/consult-records/c1").get_data(as_text=True)
    assert page != other and _untokened(page) == _untokened(other)

def test_who_may_not_open_the_record_page_may_not_print_it(client, monkeypatch):
    Fakes(monkeypatch, _record())
    for user in ("cashier", "health-dept"):
        r = _pdf(client, user=user)
        assert r.status_code == 403, user
        page = client.get("/patients/p1/consult-records/c1").get_data(as_text=True)
        assert _untokened(r.get_data(as_text=True).replace("c1.pdf", "c1")) == _untokened(page)
    with client.session_transaction() as kept:
        kept.clear()
    r = client.get("/patients/p1/consult-records/c1.pdf")  # signed out: to the sign-in, back here after
    assert r.status_code == 302 and "next=/patients/p1/consult-records/c1.pdf" in r.headers["Location"]


@needs_pdftotext
def test_the_hub_doctor_prints_it_too(client, monkeypatch, tmp_path):
    Fakes(monkeypatch, _record())
    r = _pdf(client, user="doctor")
    assert r.status_code == 200 and "BIÊN BẢN HỘI CHẨN TỪ XA" in _text(r.data, tmp_path)


def test_the_record_page_links_the_print(client, monkeypatch):
    Fakes(monkeypatch, _record())
    sign_in(client)
    page = client.get("/patients/p1/consult-records/c1").get_data(as_text=True)
    assert '<a href="/patients/p1/consult-records/c1.pdf" data-testid="print-minutes">In biên bản</a>' in page


def test_the_clinics_completed_consult_links_the_print_which_finds_the_record(client, monkeypatch):
    fakes = Fakes(monkeypatch, _record())
    sign_in(client)
    with client.session_transaction() as kept:
        kept["lang"] = "en"
    page = client.get("/consults/t1").get_data(as_text=True)
    assert '<a href="/consults/t1/minutes.pdf" data-testid="print-minutes">Print the minutes</a>' in page
    r = client.get("/consults/t1/minutes.pdf")
    assert r.status_code == 302 and r.headers["Location"].endswith("/patients/p1/consult-records/c1.pdf")
    assert fakes.composition_searches == [{
        "identifier": "https://sen.vn/fhir/sid/consult-service-request|sr1", "subject": "Patient/p1",
        "_count": "1", "_elements": "identifier,subject"}]


def test_a_consult_not_completed_has_no_print_and_one_without_a_record_yet_is_the_records_404(client, monkeypatch):
    fakes = Fakes(monkeypatch, None)
    fakes.task = {**fakes.task, "status": "in-progress"}
    sign_in(client)
    assert "print-minutes" not in client.get("/consults/t1").get_data(as_text=True)
    r = client.get("/consults/t1/minutes.pdf")  # the EHR has not stored it yet
    assert r.status_code == 404 and "Biên bản hội chẩn này không tồn tại" in r.get_data(as_text=True)


@pytest.mark.parametrize("lang, words", [
    ("vi", ["Biên bản đang được lưu vào hồ sơ", "Hội chẩn vừa hoàn thành: biên bản đang được lưu vào hồ sơ của "
            "người bệnh. Vui lòng thử lại sau giây lát."]),
    ("en", ["The minutes are being filed", "The consult was completed moments ago: its minutes are being filed "
            "into the patient's record. Try again in a moment."])])
def test_a_consult_completed_moments_ago_whose_record_is_not_stored_yet_says_it_is_being_filed(
        client, monkeypatch, lang, words):
    """Teleconsult says completed, the EHR has no record yet (the completed event on its way): not the record's
    404 "does not exist", a page saying it is being filed, with the link again; 202 with Retry-After (not the
    PDF yet). Once the EHR has stored it, the same link prints it."""
    fakes = Fakes(monkeypatch, None)
    sign_in(client)
    with client.session_transaction() as kept:
        kept["lang"] = lang
    r = client.get("/consults/t1/minutes.pdf")
    page = r.get_data(as_text=True)
    assert r.status_code == 202 and r.mimetype == "text/html", (r.status_code, page[-800:])
    assert r.headers["Retry-After"] == "5" and r.headers["Cache-Control"] == "no-store"
    flat = re.sub(r"\s+", " ", page)
    assert all(w in flat for w in words), flat[-1200:]
    assert "không tồn tại" not in flat and "does not exist" not in flat
    assert '<a href="/consults/t1/minutes.pdf" data-testid="print-minutes">' in page
    assert fakes.composition_searches  # the EHR was asked
    Fakes(monkeypatch, _record())  # the EHR has stored it meanwhile
    r = client.get("/consults/t1/minutes.pdf")
    assert r.status_code == 302 and r.headers["Location"].endswith("/patients/p1/consult-records/c1.pdf")
