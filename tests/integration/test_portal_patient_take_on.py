"""The clinic nurse's registration journey against a real EHR and teleconsult (gunicorn processes on
loopback), the real FerretDB and RabbitMQ; the portal in this process (Flask's test client), signed in
as the demo clinic (Trạm Y tế xã Mỹ Hiệp).

- Huỳnh Văn Tâm is a patient of TTYT huyện Cao Lãnh. Registering him with his CCCD is refused (the EHR
  names no one the clinic may not see) and the page offers to take him on here by the number; taken on
  (twice: a double click), his chart opens and a consult can be requested for him; the EHR holds ONE
  grant and an AuditEvent saying why. Before, his chart was a 404 page "Không tìm thấy" (the EHR does
  not tell a clinic that another facility's patient exists), and his CCCD searched nothing.
- Trần Văn Bình without a CCCD, registered twice: the second time the first is listed (the EHR's own
  search, accents aside) and nothing is stored until the tick; a patient of another facility of the
  same name and birth date is never listed.
- A consult that does not exist is a 404 page "Không tìm thấy" (teleconsult's answer), not an outage.
"""

from __future__ import annotations

import json
import random
import re
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from tests.integration.consult_stack import *  # noqa: F403 - its fixtures, used by name
from tests.integration.test_portal_consult_patients import CLINIC, _headers
from tests.support import csrf_token, portal_signed_in

pytestmark = pytest.mark.integration

CCCD = "https://fhir.sen.vn/sid/cccd"
CAO_LANH = "ttyt-cao-lanh"


TAKE = {"reason": "Người bệnh đến khám tại cơ sở", "confirm": "take-on"}  # the default reason, confirmed


def _text(page: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", page))


def _register(c: Any, **fields: str) -> Any:
    page = c.get("/patients/new").get_data(as_text=True)
    return c.post("/patients/new", data={"gender": "male", "csrf_token": csrf_token(page), **fields})


def _letters(n: int = 6) -> str:
    """Random letters that make a name unique in the run: a name is letters only (the registration form
    refuses digits), so no number."""
    return "".join(random.choice("bcdghklmnpqrstvx") for _ in range(n))


def _admin_patient(ehr: str, dev_key: Any, org: str, family: str, given: str, born: str,
                   cccd: str | None = None) -> str:
    body: dict[str, Any] = {"resourceType": "Patient", "gender": "male", "birthDate": born,
                            "name": [{"family": family, "given": given.split()}],
                            "managingOrganization": {"reference": f"Organization/{org}"}}
    if cccd:
        body["identifier"] = [{"system": CCCD, "value": cccd}]
    r = httpx.post(f"{ehr}/fhir/Patient", content=json.dumps(body), headers=_headers(dev_key, "admin"))
    assert r.status_code == 201, r.text
    return r.json()["id"]


def test_a_patient_of_another_facility_is_taken_on_and_the_chart_opens(portal, ehr, ehr_db, dev_key, mongo_client):
    cccd = f"0870{random.randrange(10**8):08d}"
    given = f"Văn Tâm {_letters().title()}"  # no namesake of this birth date on the clinic's list, whatever ran before
    tam = _admin_patient(ehr, dev_key, CAO_LANH, "Huỳnh", given, "1948-01-01", cccd)
    c = portal_signed_in(portal, "clinic")
    before = c.get(f"/patients/{tam}")
    assert before.status_code == 404 and "Không tìm thấy" in _text(before.get_data(as_text=True))
    token = csrf_token(c.get("/patients").get_data(as_text=True))
    found = c.post("/patients/search", data={"q": cccd, "csrf_token": token}).get_data(as_text=True)
    assert f"/patients/{tam}" not in found  # a search alone never reaches another facility's patient

    r = _register(c, family="Huỳnh", given=given, birth_date="01/01/1948", cccd=cccd)
    page = r.get_data(as_text=True)
    assert r.status_code == 200
    # the EHR names no patient the clinic may not see: the take-on by the number (Patient/$take-on)
    form = re.search(r'<form method="post" action="/patients/take-on" data-testid="take-on"[^>]*>.*?</form>',
                     page, re.S)
    assert form is not None and "Tiếp nhận người bệnh tại cơ sở này" in form.group(0)
    assert tam not in page
    fields = dict(re.findall(r'name="(system|number)"[^>]*value="([^"]*)"', form.group(0)))
    assert fields == {"system": "cccd", "number": cccd}

    # the first press: the reason (the default chosen) and the step to confirm; nothing asked of the EHR
    step = c.post("/patients/take-on", data={"csrf_token": csrf_token(page), **fields,
                                                    "reason": "Người bệnh đến khám tại cơ sở"})
    assert step.status_code == 200 and 'name="confirm" value="take-on"' in step.get_data(as_text=True)
    assert mongo_client[ehr_db]["grants"].count_documents({"patient": f"Patient/{tam}"}) == 0
    assert c.get(f"/patients/{tam}").status_code == 404
    answers = [c.post("/patients/take-on", data={"csrf_token": csrf_token(page), **fields, **TAKE})
               for _ in range(2)]  # a double click on the confirmed step
    assert [a.status_code for a in answers] == [302, 302]
    assert {urlsplit(a.headers["Location"]).path for a in answers} == {f"/patients/{tam}"}
    chart = c.get(answers[0].headers["Location"])
    text = _text(chart.get_data(as_text=True))
    assert chart.status_code == 200 and "Huỳnh Văn Tâm" in text and "Đã tiếp nhận người bệnh tại cơ sở này" in text
    assert c.get(f"/patients/{tam}/consult").status_code == 200  # the consult form opens for him

    db = mongo_client[ehr_db]
    grants = list(db["grants"].find({"patient": f"Patient/{tam}"}))
    reason = "Người bệnh đến khám tại cơ sở"
    assert [(g["grantee"], g["reason"]) for g in grants] == [(f"Organization/{CLINIC}", reason)]
    trail = httpx.get(f"{ehr}/fhir/AuditEvent", params={"patient": f"Patient/{tam}", "subtype": "take-on",
                                                        "_count": "20"}, headers=_headers(dev_key, "admin")).json()
    events = [e["resource"] for e in trail.get("entry", [])]
    assert len(events) == 2 and {e["purposeOfEvent"][0]["text"] for e in events} == {"Người bệnh đến khám tại cơ sở"}


def test_taking_on_says_the_typed_birth_date_differs_and_changes_nothing(portal, ehr, dev_key):
    cccd = f"0870{random.randrange(10**8):08d}"
    given = f"Văn Tâm {_letters().capitalize()}"  # no patient the clinic reaches is listed as the same person
    tam = _admin_patient(ehr, dev_key, CAO_LANH, "Huỳnh", given, "1948-06-17", cccd)
    c = portal_signed_in(portal, "clinic")
    page = _register(c, family="Huỳnh", given=given, birth_date="01/01/1948", cccd=cccd).get_data(as_text=True)
    form = re.search(r'<form method="post" action="/patients/take-on" data-testid="take-on"[^>]*>.*?</form>',
                     page, re.S).group(0)
    sent = {**dict(re.findall(r'name="([a-z_]+)" type="hidden" value="([^"]*)"', form)), **TAKE,
            "csrf_token": csrf_token(page)}
    r = c.post("/patients/take-on", data=sent)
    assert r.status_code == 302 and "1948" not in r.headers["Location"]
    text = _text(c.get(r.headers["Location"]).get_data(as_text=True))
    assert "Đã tiếp nhận người bệnh tại cơ sở này" in text
    assert "Ngày sinh trên hồ sơ là 17/06/1948, khác với ngày đã nhập 01/01/1948." in text
    assert "Họ tên trên hồ sơ" not in text and "Giới tính trên hồ sơ" not in text
    record = httpx.get(f"{ehr}/fhir/Patient/{tam}", headers=_headers(dev_key, "admin")).json()
    assert record["birthDate"] == "1948-06-17" and record["meta"]["versionId"] == "1"


def test_a_wrong_number_takes_no_one_on(portal, ehr, ehr_db, dev_key, mongo_client):
    cccd = f"0870{random.randrange(10**8):08d}"
    tam = _admin_patient(ehr, dev_key, CAO_LANH, "Huỳnh", "Văn Tâm", "1948-01-01", cccd)
    c = portal_signed_in(portal, "clinic")
    token = csrf_token(c.get("/patients/new").get_data(as_text=True))
    wrong = cccd[:-1] + str((int(cccd[-1]) + 1) % 10)
    r = c.post(f"/patients/{tam}/take-on", data={"csrf_token": token, "system": "cccd", "number": wrong, **TAKE})
    assert r.status_code == 403 and "Không được phép" in _text(r.get_data(as_text=True))
    assert c.get(f"/patients/{tam}").status_code == 404
    assert mongo_client[ehr_db]["grants"].count_documents({"patient": f"Patient/{tam}"}) == 0


def test_the_same_patient_registered_again_is_listed_and_needs_the_tick(portal, ehr, dev_key):
    given = f"Văn Bình {random.choice(['An', 'Ân', 'Ấn'])}{_letters()}"
    other = _admin_patient(ehr, dev_key, CAO_LANH, "Trần", given, "1980-05-01")  # another facility's
    c = portal_signed_in(portal, "clinic")
    fields = {"family": "Trần", "given": given, "birth_date": "01/05/1980", "cccd": ""}
    first = _register(c, **fields)
    assert first.status_code == 302, _text(first.get_data(as_text=True))[:500]
    binh = urlsplit(first.headers["Location"]).path.rsplit("/", 1)[1]

    r = _register(c, **{**fields, "family": "TRAN", "given": given.upper()})  # the same, typed without accents
    page = r.get_data(as_text=True)
    assert r.status_code == 200
    box = re.search(r'<div class="alert warn" role="alert" data-testid="same-person">.*?</div>', page, re.S).group(0)
    assert "Có thể người bệnh đã được đăng ký" in _text(box)
    assert "đăng ký lúc" in _text(box)  # when it was registered: the record's meta, no more asked of the EHR
    assert re.findall(r'href="/patients/([^"]+)"', box) == [binh]  # never the other facility's
    assert other not in page
    tick = re.search(r'name="again" value="([^"]*)"', box).group(1)
    again = c.post("/patients/new", data={**fields, "gender": "male", "csrf_token": csrf_token(page), "again": tick})
    assert again.status_code == 302
    assert urlsplit(again.headers["Location"]).path != f"/patients/{binh}"


def test_a_consult_that_does_not_exist_is_not_found(portal):
    r = portal_signed_in(portal, "clinic").get("/consults/00000000-0000-0000-0000-000000000000")
    text = _text(r.get_data(as_text=True))
    assert r.status_code == 404 and "Không tìm thấy" in text and "tạm thời" not in text


def test_a_search_of_the_whole_cccd_takes_the_patient_on(portal, ehr, ehr_db, dev_key, mongo_client):
    """The review's second way in: the CCCD searched finds none of the clinic's patients; the page offers
    to take on the patient holding it (the EHR's Patient/$take-on), and his chart opens."""
    cccd = f"0870{random.randrange(10**8):08d}"
    tam = _admin_patient(ehr, dev_key, CAO_LANH, "Huỳnh", "Văn Tâm", "1948-01-01", cccd)
    c = portal_signed_in(portal, "clinic")
    token = csrf_token(c.get("/patients").get_data(as_text=True))
    page = c.post("/patients/search", data={"q": cccd, "csrf_token": token}).get_data(as_text=True)
    form = re.search(r'<form method="post" action="/patients/take-on" data-testid="take-on"[^>]*>.*?</form>', page,
                     re.S)
    assert form is not None and tam not in page  # the patient is not shown before he is taken on
    fields = dict(re.findall(r'name="(system|number)"[^>]*value="([^"]*)"', form.group(0)))
    # another reason, the nurse's own words ("Khác"): what the EHR keeps
    why = "Người nhà đưa đến khám, thẻ cũ bị mất"
    r = c.post("/patients/take-on", data={"csrf_token": token, **fields, "reason": "other", "other": why,
                                          "confirm": "take-on"})
    assert r.status_code == 302 and urlsplit(r.headers["Location"]).path == f"/patients/{tam}"
    assert c.get(r.headers["Location"]).status_code == 200
    page = c.post("/patients/search", data={"q": cccd, "csrf_token": token}).get_data(as_text=True)
    assert f'href="/patients/{tam}"' in page  # now one of the clinic's patients
    assert [g["reason"] for g in mongo_client[ehr_db]["grants"].find({"patient": f"Patient/{tam}"})] == [why]
    # a number nobody holds: a readable 403, nothing granted
    r = c.post("/patients/take-on", data={"csrf_token": token, "system": "cccd", "number": "000000000009", **TAKE})
    assert r.status_code == 403 and "không tìm thấy người bệnh nào có số này" in _text(r.get_data(as_text=True))


def test_a_take_on_sent_in_place_twice_after_its_answer_was_lost_grants_once(portal, ehr, ehr_db, dev_key,
                                                                             mongo_client):
    """The take-on form is sent in place (the page's main its box): the first press asks to confirm (the step
    swapped into main, 200), the confirmed one goes to the chart by HX-Redirect; sent again after that answer
    was lost, the EHR answers the grant it made: the same chart, one grant."""
    cccd = f"0870{random.randrange(10**8):08d}"
    tam = _admin_patient(ehr, dev_key, CAO_LANH, "Huỳnh", f"Văn Tâm {_letters().capitalize()}", "1948-06-17", cccd)
    c = portal_signed_in(portal, "clinic")
    page = c.get("/patients/new").get_data(as_text=True)
    hx = {"HX-Request": "true", "HX-Current-URL": "http://localhost/patients/new"}
    sent = {"csrf_token": csrf_token(page), "system": "cccd", "number": cccd, "reason": TAKE["reason"]}
    r = c.post(f"/patients/{tam}/take-on", data=sent, headers=hx)  # the first press: the step, nothing done
    assert r.status_code == 200 and 'data-testid="confirm-step"' in r.get_data(as_text=True)
    assert mongo_client[ehr_db]["grants"].count_documents({"patient": f"Patient/{tam}"}) == 0
    for _ in range(2):
        r = c.post(f"/patients/{tam}/take-on", data={**sent, **TAKE}, headers=hx)
        assert r.status_code == 204 and r.headers["HX-Redirect"] == f"/patients/{tam}", r.get_data(as_text=True)
    assert mongo_client[ehr_db]["grants"].count_documents({"patient": f"Patient/{tam}"}) == 1
    assert c.get(f"/patients/{tam}").status_code == 200
