"""The clinic nurse ends a take-on, and meets the limit of wrong numbers, against a real EHR (gunicorn on
loopback) and the real FerretDB; the portal in this process, signed in as the demo clinic.

- Huỳnh Văn Tâm of TTYT huyện Cao Lãnh, taken on at Trạm Y tế xã Mỹ Hiệp by his CCCD: his chart offers
  "Kết thúc tiếp nhận"; without the tick nothing ends; with a reason and the tick the EHR records one
  end (and an AuditEvent with the reason) and the chart says the take-on ended; his CCCD takes him on
  again (a new grant) and the chart opens.
- Wrong CCCD numbers until the EHR's limit (5 in 15 minutes): then even the right number is refused with
  a readable 429 page saying until when, and no grant is made.
"""

from __future__ import annotations

import random
import re
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from tests.integration.consult_stack import *  # noqa: F403 - its fixtures, used by name
from tests.integration.test_portal_consult_patients import CLINIC, _headers
from tests.integration.test_portal_patient_take_on import CAO_LANH, _admin_patient, _text
from tests.support import csrf_token, portal_signed_in

pytestmark = pytest.mark.integration

ENDING = "Người bệnh đã chuyển về cơ sở quản lý"


def _take_on(c: Any, cccd: str) -> Any:
    token = csrf_token(c.get("/patients").get_data(as_text=True))
    return c.post("/patients/take-on", data={"csrf_token": token, "system": "cccd", "number": cccd,
                                             "reason": "Người bệnh đến khám tại cơ sở", "confirm": "take-on"})


def test_the_nurse_ends_a_take_on_and_the_chart_says_so(portal, ehr, ehr_db, dev_key, mongo_client):
    cccd = f"0870{random.randrange(10**8):08d}"
    tam = _admin_patient(ehr, dev_key, CAO_LANH, "Huỳnh", "Văn Tâm", "1948-01-01", cccd)
    c = portal_signed_in(portal, "clinic")
    r = _take_on(c, cccd)
    assert r.status_code == 302 and urlsplit(r.headers["Location"]).path == f"/patients/{tam}"
    page = c.get(f"/patients/{tam}").get_data(as_text=True)
    form = re.search(r'<section class="card" id="end-take-on" data-testid="end-take-on">.*?</section>', page, re.S)
    assert form is not None and "Kết thúc tiếp nhận" in form.group(0)

    r = c.post(f"/patients/{tam}/end-take-on", data={"csrf_token": csrf_token(page), "reason": ENDING})
    assert r.status_code == 400 and "Hãy đánh dấu vào ô" in _text(r.get_data(as_text=True))
    assert c.get(f"/patients/{tam}").status_code == 200  # nothing ended

    r = c.post(f"/patients/{tam}/end-take-on", data={"csrf_token": csrf_token(page), "reason": ENDING,
                                                     "confirm": "y"})
    assert r.status_code == 302
    chart = c.get(r.headers["Location"])
    text = _text(chart.get_data(as_text=True))
    assert chart.status_code == 403 and "Đã kết thúc tiếp nhận" in text
    assert "Cơ sở của bạn đã kết thúc tiếp nhận người bệnh này lúc" in text

    db = mongo_client[ehr_db]
    ends = list(db["grants"].find({"patient": f"Patient/{tam}", "kind": "take-on-end"}))
    assert [(e["grantee"], e["reason"]) for e in ends] == [(f"Organization/{CLINIC}", ENDING)]
    trail = httpx.get(f"{ehr}/fhir/AuditEvent", params={"patient": f"Patient/{tam}", "subtype": "end-take-on"},
                      headers=_headers(dev_key, "admin")).json()
    assert [e["resource"]["purposeOfEvent"][0]["text"] for e in trail.get("entry", [])] == [ENDING]

    # he comes back with his card: taken on again, the chart opens
    r = _take_on(c, cccd)
    assert r.status_code == 302
    assert c.get(f"/patients/{tam}").status_code == 200
    assert db["grants"].count_documents({"patient": f"Patient/{tam}", "kind": "take-on"}) == 2


def test_too_many_wrong_numbers_then_even_the_right_one_is_a_readable_429(portal, ehr, ehr_db, dev_key,
                                                                          mongo_client):
    cccd = f"0870{random.randrange(10**8):08d}"
    tam = _admin_patient(ehr, dev_key, CAO_LANH, "Huỳnh", "Văn Tâm", "1948-01-01", cccd)
    wrong = cccd[:-1] + str((int(cccd[-1]) + 1) % 10)
    c = portal_signed_in(portal, "clinic")
    db = mongo_client[ehr_db]
    try:
        statuses = [_take_on(c, wrong).status_code for _ in range(6)]
        assert statuses.count(403) <= 5 and statuses[-1] == 429, statuses  # the EHR's default: 5 in 15 minutes
        r = _take_on(c, cccd)
        assert r.status_code == 429 and int(r.headers["Retry-After"]) > 0
        text = _text(r.get_data(as_text=True))
        assert "Nhập sai số quá nhiều lần" in text and "không kiểm tra thêm số nào của bạn cho đến" in text
        assert db["grants"].count_documents({"patient": f"Patient/{tam}"}) == 0
    finally:
        db["take_on_failures"].delete_many({})  # the demo clinic's other tests here give wrong numbers too
