"""The consult form of a patient the real EHR refuses the clinic nurse (review 4), against a real EHR and
teleconsult (gunicorn on loopback), the real FerretDB and RabbitMQ; the portal in this process, signed in as
the demo clinic (Trạm Y tế xã Mỹ Hiệp).

- Huỳnh Văn Tâm of TTYT huyện Cao Lãnh, not taken on: ``/patients/<id>/consult`` is the chart's 404 page, as
  for one the EHR does not know (the EHR does not tell a clinic that another facility's patient exists), with
  the way in (search the CCCD to take him on) as on every clinic's 404 of a patient, no form.
- Taken on, the form opens; the take-on ended while it was open: sending it is the chart's 403 page saying
  the take-on ended and how to take him on again, what was typed shown, and teleconsult holds no consult
  of his.
"""

from __future__ import annotations

import random
import re
from urllib.parse import urlsplit

import httpx
import pytest

from tests.integration.consult_stack import *  # noqa: F403 - its fixtures, used by name
from tests.integration.test_portal_consult_patients import CLINIC, _headers
from tests.integration.test_portal_end_take_on import _take_on
from tests.integration.test_portal_patient_take_on import CAO_LANH, _admin_patient, _text
from tests.support import csrf_token, portal_signed_in

pytestmark = pytest.mark.integration

QUESTION = "Huyết áp 180/110 dù đã dùng hai thuốc, xin ý kiến tuyến trên."


def _no_form(page: str) -> None:
    assert 'id="consult-form"' not in page and 'name="question"' not in page and 'name="reason"' not in page


def test_the_consult_form_of_a_patient_not_ones_own_or_unknown_is_the_charts_page(portal, ehr, dev_key):
    cccd = f"0870{random.randrange(10**8):08d}"
    tam = _admin_patient(ehr, dev_key, CAO_LANH, "Huỳnh", "Văn Tâm", "1948-01-01", cccd)
    c = portal_signed_in(portal, "clinic")
    r = c.get(f"/patients/{tam}/consult")
    page = r.get_data(as_text=True)
    assert r.status_code == 404 and "Không tìm thấy" in _text(page)
    _no_form(page)
    assert "Dịch vụ hồ sơ sức khỏe từ chối" not in _text(page)
    # the way in, said as to any clinic's 404 of a patient (not that he exists): his card, the search's take-on
    assert "tìm theo số CCCD" in _text(page) and "để tiếp nhận" in _text(page)
    for pid in ("bn-khong-co-9999", "new"):
        r = c.get(f"/patients/{pid}/consult")
        assert r.status_code == 404 and "Không tìm thấy" in _text(r.get_data(as_text=True))
        _no_form(r.get_data(as_text=True))


def test_the_form_sent_after_the_take_on_ended_says_so_and_sends_nothing(portal, ehr, tc, dev_key):
    cccd = f"0870{random.randrange(10**8):08d}"
    tam = _admin_patient(ehr, dev_key, CAO_LANH, "Huỳnh", "Văn Tâm", "1948-01-01", cccd)
    c = portal_signed_in(portal, "clinic")
    assert _take_on(c, cccd).status_code == 302
    form_page = c.get(f"/patients/{tam}/consult").get_data(as_text=True)
    assert 'name="question"' in form_page
    key = re.search(r'name="key"[^>]*value="([0-9a-f]{32})"', form_page) or \
        re.search(r'value="([0-9a-f]{32})"[^>]*name="key"', form_page)
    # the take-on ends (from the chart, another tab) while the form is open
    chart = c.get(f"/patients/{tam}").get_data(as_text=True)
    ended = c.post(f"/patients/{tam}/end-take-on", data={"csrf_token": csrf_token(chart), "confirm": "y",
                                                         "reason": "Người bệnh đã chuyển về cơ sở quản lý"})
    assert ended.status_code == 302 and urlsplit(ended.headers["Location"]).path == f"/patients/{tam}"

    r = c.post(f"/patients/{tam}/consult", data={
        "csrf_token": csrf_token(form_page), "key": key.group(1), "patient": tam, "priority": "routine",
        "reason": "I10 — Tăng huyết áp vô căn (nguyên phát)", "question": QUESTION})
    page = r.get_data(as_text=True)
    text = _text(page)
    assert r.status_code == 403
    assert "Cơ sở của bạn đã kết thúc tiếp nhận người bệnh này lúc" in text and "để tiếp nhận lại" in text
    assert 'data-testid="typed"' in page and QUESTION in page
    assert "Dịch vụ hội chẩn từ xa từ chối" not in text
    clinic = _headers(dev_key, "clinic", facility=CLINIC, practitioner="ys-vo-minh-tam", sub="portal-clinic")
    tasks = httpx.get(f"{tc}/fhir/Task", params={"requester": f"Organization/{CLINIC}"}, headers=clinic)
    assert tasks.status_code == 200, tasks.text
    assert not [e for e in tasks.json().get("entry") or []
                if (e["resource"].get("for") or {}).get("reference") == f"Patient/{tam}"]
