"""Conditional read (FHIR http.html#cread) by ``If-Modified-Since`` as well as ``If-None-Match`` (review: an
integrator's cache sent If-Modified-Since and always got the whole resource back): 304 without a body when the
version is no newer than the HTTP-date (to the second, as Last-Modified says it), else 200; a malformed date is
ignored (RFC 9110 §13.1.3), and so is the date beside If-None-Match (§13.2.2). A vread answers the same way, and
a batch entry's ``ifModifiedSince``. The CapabilityStatement says ``conditionalRead: full-support``."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta
from email.utils import format_datetime, parsedate_to_datetime

import pytest

from tests.support import admin_headers, app_client

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def ehr(base_env, mongo_client):
    with app_client("ehr", base_env, f"sen_cread{uuid.uuid4().hex[:8]}", mongo_client) as (client, _app):
        yield client


@pytest.fixture(scope="module")
def H(dev_key):
    return admin_headers(dev_key)


def _patient(ehr, H) -> tuple[str, str]:
    """A new Patient's id and Last-Modified."""
    r = ehr.post("/fhir/Patient", content=json.dumps({"resourceType": "Patient", "name": [{"family": "Trần"}]}),
                 headers=H)
    assert r.status_code == 201, r.text
    return r.json()["id"], r.headers["Last-Modified"]


def _shifted(http_date: str, seconds: int) -> str:
    return format_datetime(parsedate_to_datetime(http_date) + timedelta(seconds=seconds), usegmt=True)


def test_if_modified_since_answers_304_when_not_modified_since(ehr, H) -> None:
    pid, last = _patient(ehr, H)
    r = ehr.get(f"/fhir/Patient/{pid}", headers={**H, "If-Modified-Since": last})
    assert r.status_code == 304 and r.content == b""
    assert r.headers["ETag"] == 'W/"1"'  # RFC 9110 §15.4.5 (werkzeug leaves Last-Modified out of a 304)
    assert ehr.get(f"/fhir/Patient/{pid}", headers={**H, "If-Modified-Since": _shifted(last, 60)}).status_code == 304
    # changed after the date: the resource, as usual
    r = ehr.get(f"/fhir/Patient/{pid}", headers={**H, "If-Modified-Since": _shifted(last, -1)})
    assert r.status_code == 200 and r.json()["id"] == pid
    # RFC 9110's two obsolete forms are HTTP-dates too
    assert ehr.get(f"/fhir/Patient/{pid}", headers={**H, "If-Modified-Since": "Sunday, 06-Nov-94 08:49:37 GMT"}
                   ).status_code == 200
    assert ehr.get(f"/fhir/Patient/{pid}", headers={**H, "If-Modified-Since": "Sun Nov  6 08:49:37 1994"}
                   ).status_code == 200


@pytest.mark.parametrize("value", ["yesterday", "2026-12-01T00:00:00Z", "", "Sat, 99 Foo 2026 25:61:00 GMT"])
def test_a_malformed_date_is_ignored_not_refused(ehr, H, value: str) -> None:
    pid, _last = _patient(ehr, H)
    r = ehr.get(f"/fhir/Patient/{pid}", headers={**H, "If-Modified-Since": value})
    assert r.status_code == 200 and r.json()["id"] == pid


def test_a_list_of_dates_is_ignored(ehr, H) -> None:
    pid, last = _patient(ehr, H)
    r = ehr.get(f"/fhir/Patient/{pid}", headers={**H, "If-Modified-Since": f"{last}, {last}"})
    assert r.status_code == 200


def test_if_none_match_wins_over_if_modified_since(ehr, H) -> None:
    pid, last = _patient(ehr, H)
    # another version named: 200, whatever the date says
    r = ehr.get(f"/fhir/Patient/{pid}", headers={**H, "If-None-Match": 'W/"7"', "If-Modified-Since": last})
    assert r.status_code == 200
    # this version named: 304, though the date is older
    r = ehr.get(f"/fhir/Patient/{pid}", headers={**H, "If-None-Match": 'W/"1"',
                                                 "If-Modified-Since": _shifted(last, -3600)})
    assert r.status_code == 304
    # '*' and a list holding the version match too
    assert ehr.get(f"/fhir/Patient/{pid}", headers={**H, "If-None-Match": "*"}).status_code == 304
    assert ehr.get(f"/fhir/Patient/{pid}", headers={**H, "If-None-Match": 'W/"5", W/"1"'}).status_code == 304


def test_a_vread_is_a_conditional_read_too(ehr, H) -> None:
    pid, last = _patient(ehr, H)
    body = ehr.get(f"/fhir/Patient/{pid}", headers=H).json()
    assert ehr.put(f"/fhir/Patient/{pid}", content=json.dumps({**body, "gender": "female"}),
                   headers=H).status_code == 200
    v1 = f"/fhir/Patient/{pid}/_history/1"
    assert ehr.get(v1, headers={**H, "If-None-Match": 'W/"1"'}).status_code == 304
    assert ehr.get(v1, headers={**H, "If-Modified-Since": last}).status_code == 304
    r = ehr.get(v1, headers={**H, "If-Modified-Since": _shifted(last, -1)})
    assert r.status_code == 200 and r.json()["meta"]["versionId"] == "1"
    assert ehr.get(f"/fhir/Patient/{pid}/_history/2", headers={**H, "If-None-Match": 'W/"1"'}).status_code == 200


def test_a_batch_entry_reads_conditionally(ehr, H) -> None:
    pid, last = _patient(ehr, H)
    instant = parsedate_to_datetime(last).isoformat().replace("+00:00", "Z")
    batch = {"resourceType": "Bundle", "type": "batch", "entry": [
        {"request": {"method": "GET", "url": f"Patient/{pid}", "ifModifiedSince": instant}},
        {"request": {"method": "GET", "url": f"Patient/{pid}"}}]}
    # the POST's own If-Modified-Since is not the entries'
    r = ehr.post("/fhir", content=json.dumps(batch), headers={**H, "If-Modified-Since": last})
    assert r.status_code == 200, r.text
    first, second = r.json()["entry"]
    assert first["response"]["status"].startswith("304") and "resource" not in first
    assert second["response"]["status"].startswith("200") and second["resource"]["id"] == pid


def test_the_statement_declares_conditional_read(ehr, H) -> None:
    rest = ehr.get("/fhir/metadata", headers=H).json()["rest"][0]
    patient = next(e for e in rest["resource"] if e["type"] == "Patient")
    assert patient["conditionalRead"] == "full-support"


def test_a_computed_slot_reads_conditionally(base_env, mongo_client, dev_key) -> None:
    """teleconsult's Slots are computed (api/scheduling.read_slot), read the engine's way: If-None-Match
    always, If-Modified-Since once a slot has a time (held or booked; a slot never held has none)."""
    from datetime import datetime

    from sen_teleconsult.domain import availability as av

    env = {**base_env, "SEN_TELECONSULT_HOLIDAYS": "", "SEN_JITSI_APP_SECRET": "s3cret-for-tests-0123456789abcdef",
           "SEN_JITSI_BASE_URL": "https://meet.benhvien.example"}
    day = (datetime.now(av.TZ) + timedelta(days=3)).date()
    every = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
    with app_client("teleconsult", env, f"sen_cread{uuid.uuid4().hex[:8]}_tc", mongo_client) as (tc, _app):
        H = admin_headers(dev_key)
        sched = av.schedule_resource("sched-cr", practitioner="Practitioner/bs-cr", organization="Organization/hub",
                                     specialty_code="394579002", specialty_text="Tim mạch",
                                     windows=[(every, "07:00:00", "11:30:00")])
        assert tc.put("/fhir/Schedule/sched-cr", content=json.dumps(sched), headers=H).status_code in (200, 201)
        path = f"/fhir/Slot/sched-cr-{day:%Y%m%d}0700"
        free = tc.get(path, headers=H)
        assert free.status_code == 200 and "Last-Modified" not in free.headers
        assert tc.get(path, headers={**H, "If-None-Match": free.headers["ETag"]}).status_code == 304
        assert tc.get(path, headers={**H, "If-Modified-Since": "Sun, 06 Nov 2095 08:49:37 GMT"}).status_code == 200
        hold = {"resourceType": "Parameters", "parameter": [
            {"name": "start", "valueString": f"{day.isoformat()}T07:00:00+07:00"},
            {"name": "end", "valueString": f"{day.isoformat()}T07:30:00+07:00"}]}
        found = tc.post("/fhir/Appointment/$find", content=json.dumps(hold), headers=H)
        assert found.status_code == 200, found.text
        proposal = found.json()["entry"][0]["resource"]
        booked = tc.post("/fhir/Appointment/$book", content=json.dumps({"resourceType": "Parameters", "parameter": [
            {"name": "appointment-resource", "resource": proposal}]}), headers=H)
        assert booked.status_code == 200, booked.text
        taken = tc.get(path, headers=H)
        assert taken.status_code == 200 and taken.json()["status"] == "busy", taken.text
        last = taken.headers["Last-Modified"]
        assert tc.get(path, headers={**H, "If-Modified-Since": last}).status_code == 304
        assert tc.get(path, headers={**H, "If-Modified-Since": _shifted(last, -1)}).status_code == 200
        assert tc.get(path, headers={**H, "If-None-Match": free.headers["ETag"]}).status_code == 200
