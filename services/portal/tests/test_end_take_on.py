"""Ending a take-on from the chart, and the EHR's 429 for too many wrong numbers, as the clinic nurse sees them.

- The chart of a patient taken on here (another facility manages them) offers "Kết thúc tiếp nhận /
  End take-on" with a reason and a tick confirming it; the facility's own patient offers nothing.
- Without the reason or the tick nothing is sent: the chart again, saying what is missing, the reason
  typed kept. Sent: the EHR's ``$end-take-on`` with the reason, then the chart, which says the
  take-on ended and when (the EHR's 403 from then on), in Vietnamese time.
- The EHR refusing the end (the facility never took the patient on) is said on the chart.
- ``$take-on`` answered 429 (too many wrong numbers): a readable page saying until when, Retry-After.

Flask's test client; the EHR is scripted at the HTTP transport (test_patient_take_on_and_same_person's).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import pytest
from sen_shared import http

from services.portal.tests.test_patient_take_on_and_same_person import TAM, Ehr, _json, _outcome, _text
from tests.support import csrf_token, portal_app, portal_signed_in

ENDED = "2026-12-05T04:30:00Z"  # 11:30 in Asia/Ho_Chi_Minh


class EndingEhr(Ehr):
    """Huỳnh Văn Tâm taken on by the demo clinic (``own``: its own patient instead); ``$end-take-on``
    answers ``end_status``, and once ended his chart is refused saying so."""

    def __init__(self, end_status: int = 200, own: bool = False, take_on_status: int = 201) -> None:
        super().__init__(take_on_status=take_on_status)
        self.taken, self.own, self.end_status = True, own, end_status
        self.ends: list[Any] = []
        self.ended: str | None = None

    def __call__(self, method: str, url: str, *, json: Any = None, params: Any = None, **kw: Any) -> http.Response:
        path = urlsplit(url).path
        if method == "POST" and path.endswith(f"/fhir/Patient/{TAM}/$end-take-on"):
            self.ends.append(json)
            if self.end_status == 403:
                return _outcome(403, "forbidden", "forbidden: your facility has not taken this patient on")
            self.ended = ENDED
            return _json(200, {"resourceType": "Parameters", "parameter": [
                {"name": "ended", "valueDateTime": ENDED}]})
        if method == "GET" and path.endswith(f"/fhir/Patient/{TAM}/$everything"):
            if self.ended:
                return _outcome(403, "forbidden", f"forbidden: Patient/{TAM} is not managed by your facility (your "
                                                  f"facility's take-on of this patient was ended at {self.ended})")
            if self.own:
                return _json(200, {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": {
                    "resourceType": "Patient", "id": TAM, "name": [{"family": "Huỳnh"}],
                    "managingOrganization": {"reference": "Organization/tyt-my-hiep"}}}]})
        return super().__call__(method, url, json=json, params=params, **kw)


def nurse(tmp_path: Any, monkeypatch: Any, ehr: Ehr, lang: str = "vi") -> Any:
    monkeypatch.setattr(http, "request", ehr)
    return portal_signed_in(portal_app(tmp_path, monkeypatch, backend="http://127.0.0.1:9",
                                       SEN_PORTAL_CACHE_SECONDS="0"), "clinic", lang)


def end_form(page: str) -> str:
    m = re.search(r'<section class="card" id="end-take-on" data-testid="end-take-on">.*?</section>', page, re.S)
    assert m, page[-3000:]
    return m.group(0)


@pytest.mark.parametrize("lang", ["vi", "en"])
def test_the_chart_of_a_patient_taken_on_offers_to_end_it_and_then_says_it_ended(tmp_path, monkeypatch, lang):
    ehr = EndingEhr()
    c = nurse(tmp_path, monkeypatch, ehr, lang)
    page = c.get(f"/patients/{TAM}").get_data(as_text=True)
    form = end_form(page)
    assert f'action="/patients/{TAM}/end-take-on#end-take-on"' in form
    assert ("Kết thúc tiếp nhận" if lang == "vi" else "End take-on") in form
    assert 'data-testid="end-take-on-confirm"' in form and 'name="reason"' in form

    r = c.post(f"/patients/{TAM}/end-take-on", data={"csrf_token": csrf_token(page), "confirm": "y",
                                                       "reason": "Người bệnh đã chuyển về cơ sở quản lý"})
    assert r.status_code == 302 and urlsplit(r.headers["Location"]).path == f"/patients/{TAM}"
    assert ehr.ends == [{"resourceType": "Parameters", "parameter": [
        {"name": "reason", "valueString": "Người bệnh đã chuyển về cơ sở quản lý"}]}]
    chart = c.get(r.headers["Location"])
    assert chart.status_code == 403
    text = _text(chart.get_data(as_text=True))
    if lang == "vi":
        assert "Đã kết thúc tiếp nhận" in text and "kết thúc tiếp nhận người bệnh này lúc 05/12/2026 11:30" in text
        assert "tiếp nhận lại" in text
    else:
        assert "Take-on ended" in text and "take-on of this patient ended at 05/12/2026 11:30" in text


@pytest.mark.parametrize(("data", "said"), [
    ({"reason": "Người bệnh đã chuyển đi"}, "Hãy đánh dấu vào ô để xác nhận kết thúc tiếp nhận."),
    ({"confirm": "y", "reason": "  "}, "Nêu lý do."),
])
def test_without_the_reason_or_the_tick_nothing_is_ended(tmp_path, monkeypatch, data, said):
    ehr = EndingEhr()
    c = nurse(tmp_path, monkeypatch, ehr)
    page = c.get(f"/patients/{TAM}").get_data(as_text=True)
    r = c.post(f"/patients/{TAM}/end-take-on", data={"csrf_token": csrf_token(page), **data})
    assert r.status_code == 400
    form = end_form(r.get_data(as_text=True))
    assert said in _text(form) and data["reason"].strip() in form
    assert ehr.ends == []


def test_the_facilitys_own_patient_offers_no_end_and_a_refused_end_is_said(tmp_path, monkeypatch):
    c = nurse(tmp_path, monkeypatch, EndingEhr(own=True))
    page = c.get(f"/patients/{TAM}").get_data(as_text=True)
    assert 'data-testid="end-take-on"' not in page

    ehr = EndingEhr(end_status=403)
    monkeypatch.setattr(http, "request", ehr)
    page = c.get(f"/patients/{TAM}").get_data(as_text=True)
    r = c.post(f"/patients/{TAM}/end-take-on", data={"csrf_token": csrf_token(page), "confirm": "y",
                                                       "reason": "nhầm"})
    assert r.status_code == 403 and len(ehr.ends) == 1
    assert "cơ sở của bạn chưa tiếp nhận người bệnh này" in _text(end_form(r.get_data(as_text=True)))


@pytest.mark.parametrize("lang", ["vi", "en"])
def test_too_many_wrong_numbers_is_a_readable_429_saying_until_when(tmp_path, monkeypatch, lang):
    until = (datetime.now(UTC) + timedelta(minutes=10)).replace(microsecond=0)
    iso = until.isoformat().replace("+00:00", "Z")

    class Throttled(EndingEhr):
        def __call__(self, method: str, url: str, **kw: Any) -> http.Response:
            if method == "POST" and urlsplit(url).path.endswith("/$take-on"):
                self.take_ons.append(kw.get("json"))
                return _outcome(429, "throttled", f"too many wrong numbers: 5 or more in 15 minutes; no number is "
                                                  f"compared before {iso} (retry after 600 seconds)")
            return super().__call__(method, url, **kw)

    ehr = Throttled()
    c = nurse(tmp_path, monkeypatch, ehr, lang)
    token = csrf_token(c.get("/patients/new").get_data(as_text=True))
    for path in ("/patients/take-on", f"/patients/{TAM}/take-on"):
        r = c.post(path, data={"csrf_token": token, "system": "cccd", "number": "087048006170",
                               "reason": "Người bệnh đến khám tại cơ sở", "confirm": "take-on"})
        assert r.status_code == 429
        assert 590 <= int(r.headers["Retry-After"]) <= 601
        text = _text(r.get_data(as_text=True))
        local = (until + timedelta(hours=7)).strftime("%d/%m/%Y %H:%M")
        if lang == "vi":
            assert "Nhập sai số quá nhiều lần" in text and f"cho đến {local}" in text
        else:
            assert "Too many wrong numbers" in text and f"until {local}" in text
    assert len(ehr.take_ons) == 2
