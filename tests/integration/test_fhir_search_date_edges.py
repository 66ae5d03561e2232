"""FHIR date searches at the ends of the calendar (year 1, year 9999) answer, never a 500.

Found by probing the FHIR search parameters the specs leave open (tools/fuzz/api_fuzz.py --deep):
``ap`` widened the value by a tenth of its distance from now past year 1 or 9999, and a dateTime in
the first hours of year 1 east of UTC has no UTC datetime: both raised OverflowError. They are now
held at the ends of the searchable range (sen_shared.fhir.search.dates.MIN/MAX).
"""

from __future__ import annotations

import json

import pytest

from tests.support import admin_headers, app_client

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def ehr(base_env, run_id, mongo_client, dev_key):
    with app_client("ehr", base_env, f"sen_t{run_id}_ehr_date_edges", mongo_client) as (client, _app):
        headers = admin_headers(dev_key)
        for birth in ("1980-05-01", "0001-01-01", "9999-12-31"):
            body = {"resourceType": "Patient", "name": [{"family": "Phạm", "given": [birth]}], "birthDate": birth}
            r = client.post("/fhir/Patient", content=json.dumps(body), headers=headers)
            assert r.status_code == 201, r.text
        yield client, headers


def _born(client, headers, query: str) -> list[str]:
    r = client.get(f"/fhir/Patient?{query}", headers=headers)
    assert r.status_code == 200, r.text
    return sorted(e["resource"]["birthDate"] for e in r.json().get("entry", []))


@pytest.mark.parametrize(("query", "found"), [
    ("birthdate=ap0001", ["0001-01-01"]),
    ("birthdate=ap0001-01-01T00:00:00%2B14:00", ["0001-01-01"]),
    ("birthdate=ap9999", ["9999-12-31"]),
    ("birthdate=ap9999-12-31", ["9999-12-31"]),
    ("birthdate=ap1980-05-01", ["1980-05-01"]),
    ("birthdate=eq0001-01-01T05:00:00%2B14:00", []),
    ("birthdate=ge0001-01-01T00:00:00%2B14:00", ["0001-01-01", "1980-05-01", "9999-12-31"]),
    ("birthdate=lt0001-01-01T15:00:00%2B14:00", []),
])
def test_a_date_at_the_end_of_the_calendar_is_searched(ehr, query, found):
    client, headers = ehr
    assert _born(client, headers, query) == found


@pytest.mark.parametrize("query", ["_lastUpdated=ap0001", "_lastUpdated=ap9999"])
def test_last_updated_at_the_end_of_the_calendar_finds_nothing(ehr, query):
    client, headers = ehr
    assert _born(client, headers, query) == []
