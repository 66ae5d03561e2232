"""The consult form of a patient the EHR refuses the clinic nurse (review 4): the chart's page, not a form.

- ``/patients/<id>/consult`` of another facility's patient (not taken on; the EHR answers 404 as for no such
  patient, 117548d) is the chart's 404 page with the way in (search their CCCD or health insurance number to
  take them on), never saying the patient exists; no form. A doctor's 404 page has no such hint.
- No such patient (``bn-9999``, ``new``): the chart's 404 page, the same words, no form.
- The form sent after the facility's take-on ended (a tab left open): the chart's 403 page saying when it
  ended and how to take the patient on again, what was typed shown to copy (an htmx form: the page's
  problem box, the form and what was typed left in place), nothing sent to teleconsult nor stored.
- The take-on ending between the portal's read and teleconsult's ``$submit`` (teleconsult refuses): the
  same page, not teleconsult's bare "not allowed".

Flask's test client; the EHR and teleconsult are scripted at the HTTP transport (as test_end_take_on's).
"""

from __future__ import annotations

import html
import re
from typing import Any
from urllib.parse import urlsplit

import pytest
from sen_shared import http

from services.portal.tests.test_patient_take_on_and_same_person import _json, _outcome, _text
from tests.support import csrf_token, portal_app, portal_signed_in

TAM, OTHER = "bn-0005", "bn-0003"  # Tâm taken on by the demo clinic; another facility's patient
ENDED = "2026-12-05T04:30:00Z"  # 11:30 in Asia/Ho_Chi_Minh
REASON = "I10 — Tăng huyết áp vô căn (nguyên phát)"
QUESTION = "Huyết áp 180/110 dù đã dùng hai thuốc, xin ý kiến tuyến trên."


class Backends:
    """The EHR reads Tâm while ``ended`` is None (then refuses him saying when the take-on ended), refuses
    :data:`OTHER`, knows no one else; teleconsult's calls are kept in ``teleconsult`` (its ``$submit``
    refused with 403 when ``submit_refused``), the EHR's writes in ``stored``."""

    def __init__(self) -> None:
        self.ended: str | None = None
        self.submit_refused = False
        self.teleconsult: list[tuple[str, str]] = []
        self.stored: list[str] = []

    def __call__(self, method: str, url: str, *, json: Any = None, params: Any = None, **_: Any) -> http.Response:
        path = urlsplit(url).path
        if "/ServiceRequest" in path or "/Task" in path:
            self.teleconsult.append((method, path))
            if path.endswith("/$submit") and self.submit_refused:
                self.ended = ENDED  # the take-on ended while the form was on its way
                return _outcome(403, "forbidden", "forbidden: you may not do this")
            if method == "GET":
                return _json(200, {"resourceType": "Bundle", "type": "searchset", "entry": []})
            return _json(201, {"resourceType": "Bundle", "type": "transaction-response", "entry": [
                {"resource": {"resourceType": "Task", "id": "t-moi", "status": "requested"}}]})
        if method != "GET":
            self.stored.append(path)
            return _json(201, {**(json or {}), "id": "d1"})
        if path.endswith(f"/fhir/Patient/{TAM}"):
            if self.ended:
                return _outcome(403, "forbidden", f"forbidden: Patient/{TAM} is not managed by your facility (your "
                                                  f"facility's take-on of this patient was ended at {self.ended})")
            return _json(200, {"resourceType": "Patient", "id": TAM, "birthDate": "1948-01-01",
                               "name": [{"family": "Huỳnh", "given": ["Văn", "Tâm"]}]})
        if f"/fhir/Patient/{OTHER}" in path:  # its read and its $everything: the EHR hides them as missing
            return _outcome(404, "not-found", f"Patient/{OTHER} not found")
        return _outcome(404, "not-found", "not found")


def nurse(tmp_path: Any, monkeypatch: Any, backends: Backends, lang: str = "vi") -> Any:
    monkeypatch.setattr(http, "request", backends)
    return portal_signed_in(portal_app(tmp_path, monkeypatch, backend="http://127.0.0.1:9",
                                       SEN_PORTAL_CACHE_SECONDS="0"), "clinic", lang)


def no_form(page: str) -> None:
    assert 'id="consult-form"' not in page and 'hx-post="/patients/' not in page
    assert 'name="question"' not in page and 'name="reason"' not in page


@pytest.mark.parametrize("lang", ["vi", "en"])
def test_another_facilitys_patient_is_the_charts_404_page_with_the_way_in_not_a_form(tmp_path, monkeypatch, lang):
    backends = Backends()
    c = nurse(tmp_path, monkeypatch, backends, lang)
    chart = c.get(f"/patients/{OTHER}")
    r = c.get(f"/patients/{OTHER}/consult")
    page = r.get_data(as_text=True)
    assert r.status_code == chart.status_code == 404
    no_form(page)
    text = html.unescape(_text(page))
    if lang == "vi":
        assert "Không tìm thấy" in text and "tìm theo số CCCD" in text and "để tiếp nhận" in text
        assert "không thuộc cơ sở của bạn" not in text  # nothing says the patient exists
        assert "Dịch vụ hồ sơ sức khỏe" not in text
    else:
        assert "search their CCCD" in text and "take them on" in text and "not one of your facility" not in text
    # a made-up id reads the same: the page tells nothing apart
    missing = c.get("/patients/bn-9999")
    assert missing.status_code == 404 and _text(missing.get_data(as_text=True)) == _text(chart.get_data(as_text=True))
    assert 'href="/clinic"' in page or 'data-testid="back"' in page
    # the same page as the chart's (one mechanism)
    assert re.search(r'<section class="card narrow" id="problem">.*?</section>', page, re.S).group(0) == \
        re.search(r'<section class="card narrow" id="problem">.*?</section>', chart.get_data(as_text=True),
                  re.S).group(0)
    assert backends.teleconsult == [] and backends.stored == []


@pytest.mark.parametrize("pid", ["bn-9999", "new"])
def test_no_such_patient_is_the_404_page_not_a_form(tmp_path, monkeypatch, pid):
    backends = Backends()
    c = nurse(tmp_path, monkeypatch, backends)
    r = c.get(f"/patients/{pid}/consult")
    page = r.get_data(as_text=True)
    assert r.status_code == 404
    no_form(page)
    assert "Không tìm thấy" in _text(page) and "không có hồ sơ này" not in _text(page)
    assert "tìm theo số CCCD" in html.unescape(_text(page))  # a clinic's way in, as for another facility's


def test_a_doctors_404_page_of_a_patient_has_no_take_on_hint(tmp_path, monkeypatch):
    monkeypatch.setattr(http, "request", Backends())
    c = portal_signed_in(portal_app(tmp_path, monkeypatch, backend="http://127.0.0.1:9",
                                    SEN_PORTAL_CACHE_SECONDS="0"), "doctor", "vi")
    r = c.get("/patients/bn-9999")
    assert r.status_code == 404 and "Không tìm thấy" in _text(r.get_data(as_text=True))
    assert "CCCD" not in html.unescape(_text(r.get_data(as_text=True)))


def _open_form(c: Any) -> dict[str, str]:
    page = c.get(f"/patients/{TAM}/consult").get_data(as_text=True)
    assert 'name="question"' in page
    key = re.search(r'name="key"[^>]*value="([0-9a-f]{32})"', page) or \
        re.search(r'value="([0-9a-f]{32})"[^>]*name="key"', page)
    return {"csrf_token": csrf_token(page), "key": key.group(1), "patient": TAM, "priority": "routine",
            "reason": REASON, "question": QUESTION}


@pytest.mark.parametrize("lang", ["vi", "en"])
def test_the_form_sent_after_the_take_on_ended_says_so_keeps_the_text_and_sends_nothing(tmp_path, monkeypatch, lang):
    backends = Backends()
    c = nurse(tmp_path, monkeypatch, backends, lang)
    data = _open_form(c)
    backends.teleconsult.clear()  # the form's look for a consult just sent (clinic.just_sent): a read
    backends.ended = ENDED  # the take-on ended while the tab was open
    r = c.post(f"/patients/{TAM}/consult", data=data)
    page = r.get_data(as_text=True)
    assert r.status_code == 403
    text = _text(page)
    if lang == "vi":
        assert "đã kết thúc tiếp nhận người bệnh này" in text
        assert "05/12/2026 11:30" in text and "để tiếp nhận lại" in text
    else:
        assert "take-on of this patient ended at 05/12/2026 11:30" in text and "take them on again" in text
    assert 'data-testid="typed"' in page and QUESTION in page  # what was typed, to copy
    no_form(page.replace('data-testid="typed"', ""))
    assert backends.teleconsult == [] and backends.stored == []


def test_an_htmx_form_sent_after_the_take_on_ended_is_said_in_the_pages_problem_box(tmp_path, monkeypatch):
    backends = Backends()
    c = nurse(tmp_path, monkeypatch, backends)
    data = _open_form(c)
    backends.teleconsult.clear()  # the form's look for a consult just sent (clinic.just_sent): a read
    backends.ended = ENDED
    r = c.post(f"/patients/{TAM}/consult", data=data,
               headers={"HX-Request": "true", "HX-Current-URL": f"http://localhost/patients/{TAM}/consult"})
    assert r.status_code == 403 and r.headers["HX-Retarget"] == "#page-problem"
    assert "05/12/2026 11:30" in _text(r.get_data(as_text=True))
    assert backends.teleconsult == [] and backends.stored == []


def test_teleconsult_refusing_as_the_take_on_ends_is_said_with_the_way_in(tmp_path, monkeypatch):
    backends = Backends()
    c = nurse(tmp_path, monkeypatch, backends)
    data = _open_form(c)
    backends.submit_refused = True
    r = c.post(f"/patients/{TAM}/consult", data=data)
    text = _text(r.get_data(as_text=True))
    assert r.status_code == 403 and ("POST", "/fhir/ServiceRequest/$submit") in backends.teleconsult
    assert "05/12/2026 11:30" in text and "để tiếp nhận lại" in text
    assert "Dịch vụ hội chẩn từ xa từ chối" not in text and QUESTION in r.get_data(as_text=True)


def test_the_patient_readable_still_gets_the_form_and_the_request_is_sent(tmp_path, monkeypatch):
    backends = Backends()
    c = nurse(tmp_path, monkeypatch, backends)
    data = _open_form(c)
    r = c.post(f"/patients/{TAM}/consult", data=data)
    assert r.status_code == 302 and r.headers["Location"].startswith("/consults/t-moi")
    assert ("POST", "/fhir/ServiceRequest/$submit") in backends.teleconsult
