"""Registering a patient whose number the EHR says is another patient's it does not name, or after the
user's budget of such numbers is spent, as the clinic nurse sees it.

- 409 naming no holder (``sen_ehr.domain.registered_elsewhere``): the field says the number is another
  patient's, what was typed stays, and the page offers to take the patient on by the number (the EHR's
  ``Patient/$take-on``, the form posting to ``/patients/take-on``): no id anywhere.
- 429 (the numbers of others' patients and wrong take-on numbers spent one budget): the registration page
  again, what was typed kept, saying until when (Vietnamese, English beside it in an English session),
  with Retry-After.

Flask's test client; the EHR is scripted at the HTTP transport (test_patient_take_on_and_same_person's).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import pytest
from sen_shared import http

from services.portal.tests.test_patient_take_on_and_same_person import CCCD, TAM, Ehr, _json, _outcome, _register, _text
from tests.support import csrf_token, portal_app, portal_signed_in

TAKE = {"reason": "Người bệnh đến khám tại cơ sở", "confirm": "take-on"}


class HidingEhr(Ehr):
    """The EHR as it answers a nurse of another facility: the 409 names nobody."""

    def __call__(self, method: str, url: str, *, json: Any = None, **kw: Any) -> http.Response:
        if method == "POST" and urlsplit(url).path.endswith("/fhir/Patient"):
            if "087048006170" in {i["value"] for i in json.get("identifier") or []}:
                from sen_ehr.domain.registered_elsewhere import registered_elsewhere

                return _json(409, registered_elsewhere(CCCD).to_outcome())
        return super().__call__(method, url, json=json, **kw)


class ThrottlingEhr(Ehr):
    def __init__(self, until: str) -> None:
        super().__init__()
        self.until = until

    def __call__(self, method: str, url: str, *, json: Any = None, **kw: Any) -> http.Response:
        if method == "POST" and urlsplit(url).path.endswith("/fhir/Patient"):
            return _outcome(429, "throttled", f"too many wrong numbers: 5 or more in 15 minutes; no number is "
                                              f"compared before {self.until} (retry after 600 seconds)")
        return super().__call__(method, url, json=json, **kw)


def nurse(tmp_path: Any, monkeypatch: Any, ehr: Ehr, lang: str) -> Any:
    monkeypatch.setattr(http, "request", ehr)
    return portal_signed_in(portal_app(tmp_path, monkeypatch, backend="http://127.0.0.1:9",
                                       SEN_PORTAL_CACHE_SECONDS="0"), "clinic", lang)


@pytest.mark.parametrize("lang", ["vi", "en"])
def test_a_number_registered_elsewhere_offers_the_take_on_by_the_number(tmp_path, monkeypatch, lang):
    ehr = HidingEhr()
    c = nurse(tmp_path, monkeypatch, ehr, lang)
    r = _register(c, given="Văn Tâm Út")
    page = r.get_data(as_text=True)
    assert r.status_code == 200 and TAM not in page and ehr.created == []
    text = _text(page)
    assert ("Số CCCD này đã được đăng ký cho một người bệnh khác" if lang == "vi"
            else "This CCCD number is already registered to another patient") in text
    assert 'value="Văn Tâm Út"' in page and 'value="087048006170"' in page  # what was typed is kept
    form = re.search(r'<form method="post" action="/patients/take-on" data-testid="take-on"[^>]*>.*?</form>',
                     page, re.S).group(0)
    assert 'value="087048006170"' in form and 'value="cccd"' in form
    assert ("Tiếp nhận người bệnh tại cơ sở này" if lang == "vi" else "Take this patient on here") in form
    sent = {**dict(re.findall(r'name="([a-z_]+)" type="hidden" value="([^"]*)"', form)), **TAKE,
            "csrf_token": csrf_token(page)}
    r = c.post("/patients/take-on", data=sent)
    assert r.status_code == 302 and urlsplit(r.headers["Location"]).path == f"/patients/{TAM}"
    assert ehr.take_ons[0]["parameter"][0]["valueIdentifier"] == {"system": CCCD, "value": "087048006170"}


@pytest.mark.parametrize("lang", ["vi", "en"])
def test_registration_refused_for_a_while_keeps_what_was_typed_and_says_until_when(tmp_path, monkeypatch, lang):
    until = (datetime.now(UTC) + timedelta(minutes=10)).replace(microsecond=0)
    ehr = ThrottlingEhr(until.isoformat().replace("+00:00", "Z"))
    c = nurse(tmp_path, monkeypatch, ehr, lang)
    r = _register(c, given="Văn Tâm Út")
    assert r.status_code == 429 and 590 <= int(r.headers["Retry-After"]) <= 601
    page = r.get_data(as_text=True)
    assert 'value="Văn Tâm Út"' in page and 'value="087048006170"' in page and 'action=""' not in page
    assert re.search(r'<form method="post" class="card"', page)  # the registration form again
    text = _text(page)
    local = (until + timedelta(hours=7)).strftime("%d/%m/%Y %H:%M")
    if lang == "vi":
        assert "Đã nhập sai số thẻ quá nhiều lần" in text and f"cho đến {local}" in text, text
    else:
        assert "Too many wrong card numbers" in text and f"until {local}" in text
    assert ehr.created == []
