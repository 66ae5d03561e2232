"""What an integrating system meets first on Sen's FHIR servers (review 11, a hospital information system's
vendor with curl): the CapabilityStatement read without a token (clients discover a server, and how to get a
token, from it; SMART), a malformed id refused with a message saying what an id is (not jsonschema's dump of
the schema), and a history that applies the filters it is given: system ``_history?_type=Patient`` is the
Patients' history, and a parameter history does not take (``_at``) is a 400 naming it, not ignored."""

from __future__ import annotations

import json
import uuid

import pytest

from tests.support import admin_headers, app_client

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def ehr(base_env, mongo_client):
    with app_client("ehr", base_env, f"sen_int{uuid.uuid4().hex[:8]}_ehr", mongo_client) as (client, _app):
        yield client


@pytest.fixture(scope="module")
def H(dev_key):
    return admin_headers(dev_key)


def test_the_capability_statement_needs_no_token_and_the_data_does(ehr) -> None:
    r = ehr.get("/fhir/metadata", headers={"Accept": "application/fhir+json"})
    assert r.status_code == 200, r.text
    assert r.json()["resourceType"] == "CapabilityStatement"
    r = ehr.get("/fhir/Patient", headers={"Accept": "application/fhir+json"})
    assert r.status_code == 401 and r.json()["issue"][0]["code"] == "login"


@pytest.mark.parametrize("bad", ["a_b", "x" * 65, "bn 1"])
def test_a_malformed_id_is_refused_saying_what_an_id_is(ehr, H, bad) -> None:
    r = ehr.get(f"/fhir/Patient/{bad}", headers=H)
    assert r.status_code == 400
    diagnostics = r.json()["issue"][0]["diagnostics"]
    assert "Failed validating" not in diagnostics and "On instance" not in diagnostics, diagnostics
    assert diagnostics.startswith("the path parameter 'id' ") and "is not a FHIR logical id" in diagnostics
    assert "^[A-Za-z0-9\\-\\.]{1,64}$" in diagnostics and len(diagnostics) < 300


def test_a_long_id_is_shown_cut_short(ehr, H) -> None:
    diagnostics = ehr.get(f"/fhir/Patient/{'a' * 3000}", headers=H).json()["issue"][0]["diagnostics"]
    assert "a" * 67 + "..." in diagnostics and "a" * 71 not in diagnostics


def test_history_applies_type_and_refuses_what_it_does_not_take(ehr, H) -> None:
    for body in ({"resourceType": "Patient", "gender": "male"},
                 {"resourceType": "Organization", "name": "Trạm Y tế Mỹ Hiệp"}):
        assert ehr.post(f"/fhir/{body['resourceType']}", content=json.dumps(body), headers=H).status_code == 201
    every = ehr.get("/fhir/_history", headers=H).json()
    assert {e["request"]["url"].split("/")[0] for e in every["entry"]} >= {"Patient", "Organization"}
    r = ehr.get("/fhir/_history", params={"_type": "Patient", "_count": "1"}, headers=H)
    assert r.status_code == 200, r.text
    seen, body = [], r.json()
    while True:
        seen += [e["request"]["url"].split("/")[0] for e in body["entry"]]
        nxt = [link["url"] for link in body["link"] if link["relation"] == "next"]
        if not nxt:
            break
        body = ehr.get(nxt[0], headers=H).json()
    assert seen and set(seen) == {"Patient"}, seen
    for path, params in (("/fhir/_history", {"_at": "2026"}), ("/fhir/Patient/_history", {"_type": "Observation"}),
                         ("/fhir/_history", {"_type": "Nope"})):
        r = ehr.get(path, params=params, headers=H)
        assert r.status_code in (400, 404), (path, params, r.text)
        issue = r.json()["issue"][0]
        assert issue["code"] == "not-supported", issue
        assert next(iter(params)) in issue["diagnostics"] or params["_type"] in issue["diagnostics"], issue


def test_the_fhir_version_asked_for_or_sent_is_r4_or_refused(ehr, H) -> None:
    def accept(value: str) -> dict[str, str]:
        return {**H, "Accept": value}

    for ok in ("application/fhir+json; fhirVersion=4.0", "application/fhir+json;fhirVersion=4.0.1",
               "application/json", "application/fhir+json; fhirVersion=3.0, application/fhir+json; fhirVersion=4.0"):
        assert ehr.get("/fhir/Patient", params={"_count": "1"}, headers=accept(ok)).status_code == 200, ok
    r = ehr.get("/fhir/Patient", headers=accept("application/fhir+json; fhirVersion=3.0"))
    assert r.status_code == 406
    issue = r.json()["issue"][0]
    assert issue["code"] == "not-supported" and "fhirVersion=4.0" in issue["diagnostics"], issue
    body = json.dumps({"resourceType": "Patient", "gender": "female"})
    r = ehr.post("/fhir/Patient", content=body, headers={**H, "Content-Type": "application/fhir+json; fhirVersion=5.0"})
    assert r.status_code == 415 and "fhirVersion=4.0" in r.json()["issue"][0]["diagnostics"], r.text
    r = ehr.post("/fhir/Patient", content=body, headers={**H, "Content-Type": "application/fhir+json; fhirVersion=4.0"})
    assert r.status_code == 201, r.text


def test_last_modified_is_an_http_date_and_a_bundle_entry_keeps_the_instant(ehr, H) -> None:
    """Last-Modified was the FHIR instant (2026-12-05T23:55:17.352Z), which HTTP clients and caches, parsing
    an HTTP-date, read as nothing."""
    from datetime import UTC, datetime
    from email.utils import parsedate_to_datetime

    def same_second(header: str, instant: str) -> None:
        assert header.endswith(" GMT") and header[3:5] == ", ", header
        when = datetime.fromisoformat(instant.replace("Z", "+00:00")).astimezone(UTC).replace(microsecond=0)
        assert parsedate_to_datetime(header) == when, (header, instant)

    made = ehr.post("/fhir/Patient", content=json.dumps({"resourceType": "Patient", "gender": "other"}), headers=H)
    body = made.json()
    same_second(made.headers["Last-Modified"], body["meta"]["lastUpdated"])
    pid = body["id"]
    read = ehr.get(f"/fhir/Patient/{pid}", headers=H)
    same_second(read.headers["Last-Modified"], read.json()["meta"]["lastUpdated"])
    vread = ehr.get(f"/fhir/Patient/{pid}/_history/1", headers=H)
    same_second(vread.headers["Last-Modified"], vread.json()["meta"]["lastUpdated"])
    updated = ehr.put(f"/fhir/Patient/{pid}", content=json.dumps({**body, "gender": "female"}), headers=H)
    same_second(updated.headers["Last-Modified"], updated.json()["meta"]["lastUpdated"])
    batch = {"resourceType": "Bundle", "type": "batch",
             "entry": [{"request": {"method": "GET", "url": f"Patient/{pid}"}}]}
    entry = ehr.post("/fhir", content=json.dumps(batch), headers=H).json()["entry"][0]
    assert entry["response"]["lastModified"] == entry["resource"]["meta"]["lastUpdated"]  # an instant, as R4 says


def test_if_none_exist_takes_the_query_also_given_with_its_type(ehr, H) -> None:
    """R4 says If-None-Exist (and a Bundle entry's ifNoneExist) holds what follows the '?'; R4's own Bundle-xds
    example writes 'Patient?identifier=...', which was a 400 'unknown search parameter Patient?identifier'."""
    number = uuid.uuid4().hex[:12]
    body = json.dumps({"resourceType": "Patient", "identifier": [{"system": "urn:his:mrn", "value": number}]})
    first = ehr.post("/fhir/Patient", content=body, headers={**H, "If-None-Exist": f"identifier=urn:his:mrn|{number}"})
    assert first.status_code == 201, first.text
    again = ehr.post("/fhir/Patient", content=body,
                     headers={**H, "If-None-Exist": f"Patient?identifier=urn:his:mrn|{number}"})
    assert again.status_code == 200 and again.json()["id"] == first.json()["id"], again.text
    tx = {"resourceType": "Bundle", "type": "transaction", "entry": [{
        "resource": json.loads(body),
        "request": {"method": "POST", "url": "Patient", "ifNoneExist": f"Patient?identifier=urn:his:mrn|{number}"}}]}
    r = ehr.post("/fhir", content=json.dumps(tx), headers=H)
    assert r.status_code == 200, r.text
    assert r.json()["entry"][0]["response"]["status"].startswith("200")
    found = ehr.get("/fhir/Patient", params={"identifier": f"urn:his:mrn|{number}", "_summary": "count"}, headers=H)
    assert found.json()["total"] == 1
