"""A clinic nurse at 360 px on a slow link (review): registering a patient of another facility, the same
patient twice, an impossible birth date, and records that do not exist.

- The CCCD typed is another facility's patient's: the page offers "Tiếp nhận người bệnh tại cơ sở này"
  (the EHR's ``$take-on`` with that number and the reason), not a link to a chart the nurse may not
  open; taken on, the chart opens. A number the EHR refuses is a 403 page, never an outage.
- The same name (accents aside), birth date and sex as a patient of the facility: listed with links,
  registered only with the tick ("Có thể người bệnh đã được đăng ký").
- A birth date more than 120 years ago, or in the future, is refused readably.
- A record a back-end does not know is 404 "Không tìm thấy", one it refuses 403 "Không được phép",
  an outage still 503.

Flask's test client; the EHR and teleconsult are scripted at the HTTP transport.
"""

from __future__ import annotations

import json
import re
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from sen_shared import http

from tests.support import csrf_token, portal_app, portal_signed_in

CCCD = "https://fhir.sen.vn/sid/cccd"
TAM = "bn-0005"


def _text(page: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", page))


def _json(status: int, body: Any) -> http.Response:
    return http.Response(status, {"Content-Type": "application/fhir+json"}, json.dumps(body).encode())


def _outcome(status: int, code: str, text: str = "") -> http.Response:
    return _json(status, {"resourceType": "OperationOutcome",
                          "issue": [{"severity": "error", "code": code, "diagnostics": text}]})


class Ehr:
    """An EHR whose patient Huỳnh Văn Tâm (CCCD 087048006170) is another facility's: a registration with
    that CCCD is 409, the patient is not readable until taken on; ``same``: the facility's patients its
    name search answers; ``take_on_status``: what ``$take-on`` answers."""

    def __init__(self, same: list[dict[str, Any]] | None = None, take_on_status: int = 201) -> None:
        self.same = same or []
        self.take_on_status = take_on_status
        self.created: list[Any] = []
        self.take_ons: list[Any] = []
        self.searches: list[dict[str, Any]] = []
        self.taken = False
        self.tam_born = "1948-01-01"  # his record's date of birth

    def __call__(self, method: str, url: str, *, json: Any = None, params: Any = None, **_: Any) -> http.Response:
        path = urlsplit(url).path
        query = {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
        query.update(params or {})
        if method == "POST" and path.endswith("/fhir/Patient"):
            values = {i["value"] for i in json.get("identifier") or []}
            if "087048006170" in values:
                from sen_shared.fhir.unique import duplicate

                return _json(409, duplicate("Patient", f"{CCCD}|087048006170", TAM).to_outcome())
            self.created.append(json)
            return _json(201, {**json, "id": f"bn-moi-{len(self.created)}"})
        if method == "POST" and path.endswith("/fhir/Patient/$take-on"):  # by the number alone
            self.take_ons.append(json)
            value = json["parameter"][0]["valueIdentifier"]["value"]
            if value != "087048006170":
                return _outcome(403, "forbidden", "forbidden: no patient holds the identifier given")
            self.taken = True
            return _json(201, {"resourceType": "Parameters", "parameter": [
                {"name": "patient", "valueReference": {"reference": f"Patient/{TAM}"}}]})
        if method == "POST" and path.endswith(f"/fhir/Patient/{TAM}/$take-on"):
            self.take_ons.append(json)
            if self.take_on_status >= 400:
                return _outcome(self.take_on_status, "forbidden", "forbidden: the identifier given is not this "
                                                                  "patient's")
            self.taken = True
            return _json(self.take_on_status, {"resourceType": "Parameters", "parameter": []})
        if method == "GET" and path.endswith("/fhir/Patient"):
            if "_id" in query:
                found = [{"resource": {"resourceType": "Patient", "id": TAM}}] if self.taken else []
                return _json(200, {"resourceType": "Bundle", "type": "searchset", "entry": found})
            self.searches.append(query)
            return _json(200, {"resourceType": "Bundle", "type": "searchset",
                               "entry": [{"resource": p} for p in self.same]})
        if method == "GET" and path.endswith(f"/fhir/Patient/{TAM}/$everything"):
            if not self.taken:  # another facility's patient: the EHR answers as for a missing one (117548d)
                return _outcome(404, "not-found", f"Patient/{TAM} not found")
            return _json(200, {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": {
                "resourceType": "Patient", "id": TAM, "name": [{"family": "Huỳnh", "given": ["Văn", "Tâm"]}],
                "birthDate": self.tam_born, "gender": "male"}}]})
        if method == "GET" and path.endswith("/fhir/Task"):
            return _json(200, {"resourceType": "Bundle", "type": "searchset", "entry": []})
        return _outcome(404, "not-found")


def _register(c: Any, **fields: str) -> Any:
    page = c.get("/patients/new").get_data(as_text=True)
    data = {"family": "Huỳnh", "given": "Văn Tâm", "gender": "male", "birth_date": "01/01/1948",
            "cccd": "087048006170", "csrf_token": csrf_token(page), **fields}
    return c.post("/patients/new", data=data)


# ------------------------------------------------------------------ 1. a patient of another facility

TAKE = {"reason": "Người bệnh đến khám tại cơ sở", "confirm": "take-on"}  # the default reason, confirmed

@pytest.mark.parametrize("lang", ["vi", "en"])
def test_another_facilitys_patient_is_offered_to_take_on_and_the_chart_opens(tmp_path, monkeypatch, lang):
    ehr = Ehr()
    monkeypatch.setattr(http, "request", ehr)
    c = portal_signed_in(portal_app(tmp_path, monkeypatch, backend="http://127.0.0.1:9",
                                    SEN_PORTAL_CACHE_SECONDS="0"), "clinic", lang)
    page = _register(c).get_data(as_text=True)
    box = re.search(r'<div class="alert error" role="alert" id="registered-already">.*?</form>.*?</div>', page,
                    re.S).group(0)
    assert f'href="/patients/{TAM}"' not in box  # no link to a chart the nurse may not open
    form = re.search(r'<form method="post" action="/patients/bn-0005/take-on" data-testid="take-on"[^>]*>.*?</form>',
                     box, re.S).group(0)
    assert 'value="087048006170"' in form and 'value="cccd"' in form
    assert ("Tiếp nhận người bệnh tại cơ sở này" if lang == "vi" else "Take this patient on here") in form
    assert ehr.created == []

    sent = {"csrf_token": csrf_token(page), "system": "cccd", "number": "087048006170"}
    # the first press: nothing asked of the EHR; the reason (the default chosen) and the step to confirm
    r = c.post(f"/patients/{TAM}/take-on", data={**sent, "reason": "Người bệnh đến khám tại cơ sở"})
    step = r.get_data(as_text=True)
    assert r.status_code == 200 and ehr.take_ons == []
    form = re.search(r'<form method="post" action="/patients/bn-0005/take-on" data-testid="take-on"[^>]*>.*?</form>',
                     step, re.S).group(0)
    assert re.search(r'<input checked[^>]*value="Người bệnh đến khám tại cơ sở"', form)
    assert 'value="087048006170"' in form
    assert 'name="confirm" value="take-on"' in form
    assert ("Người bệnh giữ thẻ này sẽ được tiếp nhận tại cơ sở của bạn" if lang == "vi"
            else "The patient holding this card will be taken on at your facility") in _text(form)
    r = c.post(f"/patients/{TAM}/take-on", data={**sent, **TAKE})
    assert r.status_code == 302 and urlsplit(r.headers["Location"]).path == f"/patients/{TAM}"
    params = ehr.take_ons[0]["parameter"]
    assert params == [{"name": "identifier", "valueIdentifier": {"system": CCCD, "value": "087048006170"}},
                      {"name": "reason", "valueString": "Người bệnh đến khám tại cơ sở"}]
    chart = c.get(r.headers["Location"])
    assert chart.status_code == 200
    text = _text(chart.get_data(as_text=True))
    assert "Huỳnh Văn Tâm" in text
    assert ("Đã tiếp nhận người bệnh tại cơ sở này" if lang == "vi" else "The patient is taken on") in text


@pytest.mark.parametrize("lang", ["vi", "en"])
def test_the_nurse_gives_the_reason_the_record_keeps(tmp_path, monkeypatch, lang):
    """The reason was fixed ("Người bệnh đến khám tại cơ sở") though the page says the record keeps why: a short
    list with that one chosen, and "Khác" with the nurse's own words (the EHR keeps 1 to 500 characters)."""
    ehr = Ehr()
    monkeypatch.setattr(http, "request", ehr)
    c = portal_signed_in(portal_app(tmp_path, monkeypatch, backend="http://127.0.0.1:9",
                                    SEN_PORTAL_CACHE_SECONDS="0"), "clinic", lang)
    token = csrf_token(c.get("/patients").get_data(as_text=True))
    page = c.post("/patients/search", data={"q": "087048006170", "csrf_token": token}).get_data(as_text=True)
    form = re.search(r'<form method="post" action="/patients/take-on" data-testid="take-on"[^>]*>.*?</form>', page,
                     re.S).group(0)
    assert re.findall(r'<input[^>]*name="reason"[^>]*type="radio" value="([^"]*)"', form) == [
        "Người bệnh đến khám tại cơ sở", "Người bệnh được chuyển đến cơ sở", "Cấp cứu tại cơ sở", "other"]
    assert re.search(r'<input checked[^>]*value="Người bệnh đến khám tại cơ sở"', form) and 'maxlength="500"' in form
    assert ("Khác" if lang == "vi" else "Other") in _text(form) and 'name="confirm"' not in form
    sent = {"csrf_token": token, "system": "cccd", "number": "087048006170", "reason": "other"}
    for other, said in (("", "Hãy viết lý do." if lang == "vi" else "Write the reason."),
                        ("x" * 501, "Viết tối đa 500 ký tự." if lang == "vi" else "Write at most 500 characters.")):
        r = c.post("/patients/take-on", data={**sent, "other": other, "confirm": "take-on"})
        body = r.get_data(as_text=True)
        assert r.status_code == 400 and ehr.take_ons == [] and said in _text(body)
        assert re.search(r'<input checked[^>]*value="other"', body)
    why = "Người nhà đưa đến, mất thẻ cũ"
    r = c.post("/patients/take-on", data={**sent, "other": why})  # not confirmed yet: kept, nothing sent
    assert r.status_code == 200 and ehr.take_ons == [] and f'value="{why}"' in r.get_data(as_text=True)
    r = c.post("/patients/take-on", data={**sent, "other": why, "confirm": "take-on"})
    assert r.status_code == 302
    assert ehr.take_ons[-1]["parameter"][1] == {"name": "reason", "valueString": why}
    r = c.post("/patients/take-on", data={**sent, "reason": "Cấp cứu tại cơ sở", "confirm": "take-on"})
    assert r.status_code == 302 and ehr.take_ons[-1]["parameter"][1]["valueString"] == "Cấp cứu tại cơ sở"
    # a reason not on the list is not taken
    r = c.post("/patients/take-on", data={**sent, "reason": "Bất kỳ", "confirm": "take-on"})
    assert r.status_code == 400 and len(ehr.take_ons) == 2


def test_a_number_the_ehr_refuses_is_a_403_page_and_a_bad_form_sends_nothing(tmp_path, monkeypatch):
    ehr = Ehr(take_on_status=403)
    monkeypatch.setattr(http, "request", ehr)
    c = portal_signed_in(portal_app(tmp_path, monkeypatch, backend="http://127.0.0.1:9"), "clinic")
    token = csrf_token(c.get("/patients/new").get_data(as_text=True))
    r = c.post(f"/patients/{TAM}/take-on", data={"csrf_token": token, "system": "cccd", "number": "087048006171",
                                                  **TAKE})
    assert r.status_code == 403
    text = _text(r.get_data(as_text=True))
    assert "Không được phép" in text and "số vừa nhập không phải của người bệnh" in text
    assert "tạm thời" not in text
    for bad in ({"system": "cccd", "number": "Huỳnh Văn Tâm"}, {"system": "mrn", "number": "087048006170"},
                {"system": "cccd"}):
        r = c.post(f"/patients/{TAM}/take-on", data={"csrf_token": token, **bad})
        assert r.status_code == 400 and "Đăng ký người bệnh" in _text(r.get_data(as_text=True))
    assert len(ehr.take_ons) == 1


@pytest.mark.parametrize("lang", ["vi", "en"])
def test_another_facilitys_chart_says_how_to_take_the_patient_on(tmp_path, monkeypatch, lang):
    monkeypatch.setattr(http, "request", Ehr())
    c = portal_signed_in(portal_app(tmp_path, monkeypatch, backend="http://127.0.0.1:9"), "clinic", lang)
    r = c.get(f"/patients/{TAM}")
    page = r.get_data(as_text=True)
    assert r.status_code == 404 and f"<h1>{'Không tìm thấy' if lang == 'vi' else 'Not found'}</h1>" in page
    said = ("hãy tìm theo số CCCD hoặc số thẻ bảo hiểm y tế để tiếp nhận" if lang == "vi"
            else "search their CCCD or health insurance number to take them on")
    assert said in _text(page) and 'href="/patients"' in page


def test_only_clinic_staff_take_patients_on(tmp_path, monkeypatch):
    ehr = Ehr()
    monkeypatch.setattr(http, "request", ehr)
    c = portal_signed_in(portal_app(tmp_path, monkeypatch, backend="http://127.0.0.1:9"), "doctor")
    token = csrf_token(c.get("/patients").get_data(as_text=True))
    r = c.post(f"/patients/{TAM}/take-on", data={"csrf_token": token, "system": "cccd", "number": "087048006170",
                                                  **TAKE})
    assert r.status_code == 403 and ehr.take_ons == []


@pytest.mark.parametrize("lang", ["vi", "en"])
def test_a_search_of_a_whole_number_no_patient_of_the_clinic_holds_offers_to_take_the_patient_on(
        tmp_path, monkeypatch, lang):
    ehr = Ehr()
    monkeypatch.setattr(http, "request", ehr)
    c = portal_signed_in(portal_app(tmp_path, monkeypatch, backend="http://127.0.0.1:9",
                                    SEN_PORTAL_CACHE_SECONDS="0"), "clinic", lang)
    token = csrf_token(c.get("/patients").get_data(as_text=True))
    for htmx in ({}, {"HX-Request": "true"}):
        page = c.post("/patients/search", data={"q": "0870 4800 6170", "csrf_token": token},
                      headers=htmx).get_data(as_text=True)
        form = re.search(r'<form method="post" action="/patients/take-on" data-testid="take-on"[^>]*>.*?</form>', page,
                         re.S).group(0)
        assert dict(re.findall(r'name="(system|number)"[^>]*value="([^"]*)"', form)) == {
            "system": "cccd", "number": "087048006170"}
        assert ("Tiếp nhận người bệnh tại cơ sở này" if lang == "vi" else "Take this patient on here") in form
    # a name, or a part of a number, never offers it
    for q in ("Huỳnh Văn Tâm", "08704800617"):
        page = c.post("/patients/search", data={"q": q, "csrf_token": token}).get_data(as_text=True)
        assert 'data-testid="take-on"' not in page
    r = c.post("/patients/take-on", data={"csrf_token": token, "system": "cccd", "number": "087048006170",
                                          **TAKE})
    assert r.status_code == 302 and urlsplit(r.headers["Location"]).path == f"/patients/{TAM}"
    assert ehr.take_ons[-1]["parameter"][0]["valueIdentifier"] == {"system": CCCD, "value": "087048006170"}
    assert c.get(r.headers["Location"]).status_code == 200
    r = c.post("/patients/take-on", data={"csrf_token": token, "system": "cccd", "number": "087048006171",
                                          **TAKE})
    assert r.status_code == 403
    text = _text(r.get_data(as_text=True))
    said = ("không tìm thấy người bệnh nào có số này" if lang == "vi"
            else "found no patient with this number to take on")
    assert said in text


def test_a_doctors_search_never_offers_to_take_on(tmp_path, monkeypatch):
    monkeypatch.setattr(http, "request", Ehr())
    c = portal_signed_in(portal_app(tmp_path, monkeypatch, backend="http://127.0.0.1:9"), "doctor")
    token = csrf_token(c.get("/patients").get_data(as_text=True))
    page = c.post("/patients/search", data={"q": "087048006170", "csrf_token": token}).get_data(as_text=True)
    assert "Không có người bệnh phù hợp" in _text(page) and 'data-testid="take-on"' not in page


# ------------------------------------------------------------------ 3. the same patient twice

BINH = {"resourceType": "Patient", "id": "bn-0100", "gender": "male", "birthDate": "1980-05-01",
        "name": [{"family": "TRẦN", "given": ["van", "Bình"]}]}
BAO = {**BINH, "id": "bn-0101", "name": [{"family": "Trần", "given": ["Văn", "Bảo"]}]}


@pytest.mark.parametrize("lang", ["vi", "en"])
def test_the_same_name_birth_date_and_sex_is_listed_and_registered_only_with_the_tick(tmp_path, monkeypatch, lang):
    ehr = Ehr(same=[BINH, BAO])
    monkeypatch.setattr(http, "request", ehr)
    c = portal_signed_in(portal_app(tmp_path, monkeypatch, backend="http://127.0.0.1:9"), "clinic", lang)
    fields = {"family": "Trần", "given": "Văn  Bình", "gender": "male", "birth_date": "01/05/1980", "cccd": ""}
    r = _register(c, **fields)
    page = r.get_data(as_text=True)
    assert r.status_code == 200 and ehr.created == []
    assert ehr.searches[-1]["family"] == "Trần" and ehr.searches[-1]["birthdate"] == "1980-05-01"
    assert ehr.searches[-1]["gender"] == "male"
    box = re.search(r'<div class="alert warn" role="alert" data-testid="same-person">.*?</div>', page, re.S).group(0)
    assert re.findall(r'href="/patients/([^"]+)"', box) == ["bn-0100"]  # Bảo is another name
    said = "Có thể người bệnh đã được đăng ký" if lang == "vi" else "This patient may be registered already"
    assert said in _text(box)
    tick = re.search(r'<input type="checkbox" name="again" value="([^"]*)"', box).group(1)
    assert tick == "bn-0100"
    # sent again without the tick: still nothing; with it: one patient
    token = csrf_token(page)
    c.post("/patients/new", data={**fields, "csrf_token": token})
    assert ehr.created == []
    r = c.post("/patients/new", data={**fields, "csrf_token": token, "again": tick})
    assert r.status_code == 302 and len(ehr.created) == 1
    # a tick for the patients shown before does not cover one registered since
    ehr.same = [BINH, {**BINH, "id": "bn-0102"}]
    r = c.post("/patients/new", data={**fields, "csrf_token": token, "again": tick})
    assert r.status_code == 200 and len(ehr.created) == 1


def test_no_one_of_that_name_registers_at_once(tmp_path, monkeypatch):
    ehr = Ehr(same=[BAO])
    monkeypatch.setattr(http, "request", ehr)
    c = portal_signed_in(portal_app(tmp_path, monkeypatch, backend="http://127.0.0.1:9"), "clinic")
    r = _register(c, family="Trần", given="Văn Bình", birth_date="01/05/1980", cccd="")
    assert r.status_code == 302 and len(ehr.created) == 1


def test_the_ehr_not_answering_the_check_registers_nothing(tmp_path, monkeypatch):
    c = portal_signed_in(portal_app(tmp_path, monkeypatch), "clinic")  # nothing listens at the back-ends
    r = _register(c, family="Trần", given="Văn Bình", birth_date="01/05/1980", cccd="")
    assert r.status_code == 200
    assert "Dịch vụ hồ sơ sức khỏe" in _text(r.get_data(as_text=True))


@pytest.mark.parametrize(("typed", "vi", "en"), [
    ("01/05/1880", "Ngày sinh 01/05/1880 cách đây hơn 120 năm: hãy kiểm tra lại năm sinh.",
     "The date of birth 01/05/1880 is more than 120 years ago: check the year."),
    ("tomorrow", "Ngày sinh không thể ở tương lai.", "The date of birth cannot be in the future."),
])
def test_a_birth_date_over_120_years_ago_or_in_the_future_is_refused(tmp_path, monkeypatch, typed, vi, en):
    from sen_portal.web.formatting import today

    if typed == "tomorrow":
        typed = (today() + timedelta(days=1)).strftime("%d/%m/%Y")
    ehr = Ehr()
    monkeypatch.setattr(http, "request", ehr)
    app = portal_app(tmp_path, monkeypatch, backend="http://127.0.0.1:9")
    for lang, sentence in (("vi", vi), ("en", en)):
        c = portal_signed_in(app, "clinic", lang)
        page = _register(c, family="Trần", given="Văn Bình", birth_date=typed, cccd="").get_data(as_text=True)
        assert re.search(r'<p class="error" id="birth_date-error">(.*?)</p>', page).group(1) == sentence
    assert ehr.created == []


def test_120_years_ago_today_is_still_a_date_of_birth(tmp_path, monkeypatch):
    from sen_portal.web.formatting import today

    ehr = Ehr()
    monkeypatch.setattr(http, "request", ehr)
    c = portal_signed_in(portal_app(tmp_path, monkeypatch, backend="http://127.0.0.1:9"), "clinic")
    t = today()
    oldest = t.replace(year=t.year - 120, day=28 if (t.month, t.day) == (2, 29) else t.day)
    r = _register(c, family="Trần", given="Văn Bình", birth_date=oldest.strftime("%d/%m/%Y"), cccd="")
    assert r.status_code == 302 and len(ehr.created) == 1


# ------------------------------------------------------------------ 2. not found / not allowed, not an outage

class Refusing:
    def __init__(self, status: int) -> None:
        self.status = status

    def __call__(self, method: str, url: str, **_: Any) -> http.Response:
        code = {403: "forbidden", 404: "not-found", 410: "deleted"}[self.status]
        return _outcome(self.status, code, "refused")


@pytest.mark.parametrize(("status", "vi", "en"), [(404, "Không tìm thấy", "Not found"),
                                                  (410, "Không tìm thấy", "Not found"),
                                                  (403, "Không được phép", "Not allowed")])
@pytest.mark.parametrize("path", ["/consults/00000000-0000-0000-0000-000000000000", "/patients/bn-0005"])
def test_a_record_refused_by_a_back_end_is_not_found_or_not_allowed(tmp_path, monkeypatch, status, vi, en, path):
    monkeypatch.setattr(http, "request", Refusing(status))
    app = portal_app(tmp_path, monkeypatch, backend="http://127.0.0.1:9")
    for lang, title in (("vi", vi), ("en", en)):
        r = portal_signed_in(app, "clinic", lang).get(path)
        assert r.status_code == status if status != 410 else r.status_code == 404
        page = r.get_data(as_text=True)
        assert f"<h1>{title}</h1>" in page
        assert "Dịch vụ tạm thời không dùng được" not in page and "Service unavailable" not in page


def test_the_unknown_consult_of_the_review_is_404(tmp_path, monkeypatch):
    monkeypatch.setattr(http, "request", Ehr())  # teleconsult's Task search finds nothing
    r = portal_signed_in(portal_app(tmp_path, monkeypatch, backend="http://127.0.0.1:9"), "clinic").get(
        "/consults/00000000-0000-0000-0000-000000000000")
    assert r.status_code == 404
    text = _text(r.get_data(as_text=True))
    assert "Không tìm thấy" in text and "Dịch vụ hội chẩn từ xa không có hồ sơ này." in text


def test_an_outage_is_still_service_unavailable(tmp_path, monkeypatch):
    r = portal_signed_in(portal_app(tmp_path, monkeypatch), "clinic").get("/consults/task-1")
    assert r.status_code == 503 and "Dịch vụ tạm thời không dùng được" in r.get_data(as_text=True)


# ------------------------------------------------------------------ 4. telling them apart; typed details that differ

def test_each_same_person_entry_shows_what_tells_it_apart_on_the_record(tmp_path, monkeypatch):
    first = {**BINH, "meta": {"versionId": "1", "lastUpdated": "2026-03-02T01:30:00.000Z"},
             "identifier": [{"system": CCCD, "value": "087077001234"}],
             "address": [{"line": ["Xã Mỹ Hiệp"], "district": "Huyện Cao Lãnh", "state": "Đồng Tháp"}],
             "telecom": [{"system": "phone", "value": "0912345678"}]}
    second = {**BINH, "id": "bn-0102", "meta": {"versionId": "3", "lastUpdated": "2026-11-20T10:05:00.000Z"},
              "identifier": [{"system": "https://fhir.sen.vn/sid/bhyt", "value": "DN4797900005678"}]}
    bare = {**BINH, "id": "bn-0103"}
    ehr = Ehr(same=[first, second, bare])
    monkeypatch.setattr(http, "request", ehr)
    app = portal_app(tmp_path, monkeypatch, backend="http://127.0.0.1:9")
    for lang in ("vi", "en"):
        c = portal_signed_in(app, "clinic", lang)
        page = _register(c, family="Trần", given="Văn Bình", birth_date="01/05/1980", cccd="").get_data(as_text=True)
        assert {"address", "telecom"} <= set(ehr.searches[-1]["_elements"].split(","))
        entries = [_text(e) for e in re.findall(r'<li data-testid="same-person-entry">(.*?)</li>', page, re.S)]
        assert len(entries) == 3 and len(set(entries)) == 3
        a, b, n = entries
        registered = "đăng ký lúc 02/03/2026 08:30" if lang == "vi" else "registered 02/03/2026 08:30"
        assert registered in a and "CCCD ••••••••1234" in a and "087077001234" not in page
        assert "Xã Mỹ Hiệp, Huyện Cao Lãnh, Đồng Tháp" in a and "0912345678" in a
        changed = "hồ sơ sửa lần cuối lúc 20/11/2026 17:05" if lang == "vi" else "record last changed 20/11/2026 17:05"
        assert changed in b and "•••••••••••5678" in b and "DN4797900005678" not in page
        nothing = ("hồ sơ không có số thẻ, địa chỉ hay số điện thoại" if lang == "vi"
                   else "no card, address or phone on the record")
        assert nothing in n
        links = re.findall(r'<li data-testid="same-person-entry"><a href="/patients/([^"]+)"', page)
        assert links == ["bn-0100", "bn-0102", "bn-0103"]


def _take_on_from_the_form(c: Any, **fields: str) -> Any:
    page = _register(c, **fields).get_data(as_text=True)
    form = re.search(r'<form method="post" action="/patients/bn-0005/take-on" data-testid="take-on"[^>]*>.*?</form>',
                     page, re.S).group(0)
    assert re.search(r'<input checked[^>]*value="Người bệnh đến khám tại cơ sở"', form)  # the default reason chosen
    sent = {**dict(re.findall(r'name="([a-z_]+)" type="hidden" value="([^"]*)"', form)), **TAKE,
            "csrf_token": csrf_token(page)}
    return c.post(f"/patients/{TAM}/take-on", data=sent)


@pytest.mark.parametrize("lang", ["vi", "en"])
def test_taking_on_from_the_form_says_which_typed_details_differ_from_the_record(tmp_path, monkeypatch, lang):
    ehr = Ehr()
    ehr.tam_born = "1948-06-17"
    monkeypatch.setattr(http, "request", ehr)
    c = portal_signed_in(portal_app(tmp_path, monkeypatch, backend="http://127.0.0.1:9",
                                    SEN_PORTAL_CACHE_SECONDS="0"), "clinic", lang)
    r = _take_on_from_the_form(c, given="Văn Tam", gender="female")
    assert r.status_code == 302 and "1948" not in r.headers["Location"] and "Tam" not in r.headers["Location"]
    box = re.search(r'<div class="alert ok" role="status" data-testid="taken-on">.*?</div>',
                    c.get(r.headers["Location"]).get_data(as_text=True), re.S).group(0)
    said = _text(box)
    if lang == "vi":
        assert "Đã tiếp nhận người bệnh tại cơ sở này" in said
        assert "Ngày sinh trên hồ sơ là 17/06/1948, khác với ngày đã nhập 01/01/1948." in said
        assert "Họ tên trên hồ sơ là Huỳnh Văn Tâm, khác với họ tên đã nhập Huỳnh Văn Tam." in said
        assert "Giới tính trên hồ sơ là nam, khác với giới tính đã nhập nữ." in said
        assert "Hồ sơ không bị thay đổi" in said
    else:
        assert "The date of birth on the record is 17/06/1948, not the 01/01/1948 typed." in said
        assert "The name on the record is Huỳnh Văn Tâm, not the Huỳnh Văn Tam typed." in said
    assert ehr.created == []  # nothing written but the grant
    # said once: the chart opened again is the chart
    assert 'data-testid="taken-on-differs"' not in c.get(r.headers["Location"]).get_data(as_text=True)


def test_taking_on_with_the_records_details_or_from_a_search_says_nothing_more(tmp_path, monkeypatch):
    ehr = Ehr()
    monkeypatch.setattr(http, "request", ehr)
    c = portal_signed_in(portal_app(tmp_path, monkeypatch, backend="http://127.0.0.1:9",
                                    SEN_PORTAL_CACHE_SECONDS="0"), "clinic")
    r = _take_on_from_the_form(c, family="HUỲNH", given=" văn  tâm")  # case and spacing are no difference
    page = c.get(r.headers["Location"]).get_data(as_text=True)
    assert 'data-testid="taken-on"' in page and 'data-testid="taken-on-differs"' not in page
    token = csrf_token(page)
    r = c.post("/patients/take-on", data={"csrf_token": token, "system": "cccd", "number": "087048006170",
                                          **TAKE})
    page = c.get(r.headers["Location"]).get_data(as_text=True)
    assert 'data-testid="taken-on"' in page and 'data-testid="taken-on-differs"' not in page
    # a typed detail that is not a date or a sex is a bad form, never a 500
    r = c.post(f"/patients/{TAM}/take-on", data={"csrf_token": token, "system": "cccd", "number": "087048006170",
                                                  "birth_date": "01/01/1948"})
    assert r.status_code == 400
