"""A real third-party FHIR client (fhirpy, sync) against a real ehr process (gunicorn, uvicorn workers).

Create, search (accent-insensitive name, CCCD identifier), update, conditional create
(``If-None-Exist``), conditional update, read-back and a transaction Bundle with ``urn:uuid``
references, all through fhirpy's own API over real HTTP.
"""

from __future__ import annotations

import socket
import uuid
from pathlib import Path

import pytest
from fhirpy import SyncFHIRClient
from sen_shared.auth import issue_dev_token

from tests.support import web_process

ROOT = Path(__file__).resolve().parents[2]
CCCD = "http://sen.vn/fhir/sid/cccd"
pytestmark = pytest.mark.integration


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ehr_url(base_env, run_id, mongo_client, tmp_path_factory):
    db = f"sen_t{run_id}_fhirpy"
    log = tmp_path_factory.mktemp("fhirpy") / "ehr-web.log"
    try:
        with web_process("ehr", {**base_env, "SEN_DB": db}, log) as url:
            yield f"{url}/fhir"
    finally:
        mongo_client.drop_database(db)


@pytest.fixture(scope="module")
def token(dev_key) -> str:
    return issue_dev_token(dev_key, "admin")


@pytest.fixture(scope="module")
def client(ehr_url, token) -> SyncFHIRClient:
    return SyncFHIRClient(ehr_url, authorization=f"Bearer {token}")


def _cccd() -> str:
    return str(uuid.uuid4().int)[:12]


def _ids(resources) -> set[str]:
    return {r.id for r in resources}


def test_create_search_update(client):
    cccd = _cccd()
    patient = client.resource("Patient", name=[{"family": "Nguyễn", "given": ["Thị", "Hồng"]}], gender="female",
                              birthDate="1990-02-03", identifier=[{"system": CCCD, "value": cccd}],
                              address=[{"city": "Cao Lãnh", "state": "Đồng Tháp", "country": "VN"}])
    patient.save()
    assert patient.id
    assert patient.meta.versionId == "1"

    assert patient.id in _ids(client.resources("Patient").search(name="nguyen").limit(1000).fetch_all())
    assert patient.id in _ids(client.resources("Patient").search(family="NGUYỄN").fetch_all())
    assert patient.id in _ids(client.resources("Patient").search(**{"address-city": "cao lanh"}).fetch_all())
    found = client.resources("Patient").search(identifier=f"{CCCD}|{cccd}").fetch_all()
    assert _ids(found) == {patient.id}
    assert found[0]["name"][0]["family"] == "Nguyễn"
    # (fhirpy's .count() adds Aidbox's `_totalMethod`, an unknown parameter to a plain FHIR server)
    assert client.resources("Patient").search(identifier=f"{CCCD}|000000000000").fetch() == []

    patient["telecom"] = [{"system": "phone", "value": "+84 912 345 678"}]
    patient.save()
    assert patient.meta.versionId == "2"
    read = client.reference("Patient", patient.id).to_resource()
    assert read["telecom"][0]["value"] == "+84 912 345 678"
    assert read.meta.versionId == "2"
    assert read["name"][0]["given"] == ["Thị", "Hồng"]


def test_conditional_create_if_none_exist(ehr_url, token, client):
    cccd = _cccd()
    body = {"resourceType": "Patient", "name": [{"family": "Đặng", "given": ["Văn", "Bình"]}],
            "identifier": [{"system": CCCD, "value": cccd}]}
    conditional = SyncFHIRClient(ehr_url, authorization=f"Bearer {token}",
                                 extra_headers={"If-None-Exist": f"identifier={CCCD}|{cccd}"})
    first = conditional.resource("Patient", **body).save()
    second = conditional.resource("Patient", **body).save()
    assert first.id and second.id == first.id  # the second create found the first
    assert _ids(client.resources("Patient").search(identifier=f"{CCCD}|{cccd}").fetch_all()) == {first.id}
    assert first.id in _ids(client.resources("Patient").search(name="dang").fetch_all())


def test_conditional_update(client):
    cccd = _cccd()
    search = client.resources("Patient").search(identifier=f"{CCCD}|{cccd}")
    body = client.resource("Patient", name=[{"family": "Trần", "given": ["Minh"]}],
                           identifier=[{"system": CCCD, "value": cccd}])
    created, was_created = search.update(body)
    assert was_created
    body["gender"] = "male"
    updated, was_created = search.update(body)
    assert not was_created
    assert updated.id == created.id and updated.meta.versionId == "2" and updated["gender"] == "male"


def test_transaction_bundle(client):
    cccd = _cccd()
    pid = f"urn:uuid:{uuid.uuid4()}"
    bundle = {
        "resourceType": "Bundle", "type": "transaction",
        "entry": [
            {"fullUrl": pid, "resource": {"resourceType": "Patient", "name": [{"family": "Lê", "given": ["Thu"]}],
                                          "identifier": [{"system": CCCD, "value": cccd}]},
             "request": {"method": "POST", "url": "Patient", "ifNoneExist": f"identifier={CCCD}|{cccd}"}},
            {"resource": {"resourceType": "Observation", "status": "final",
                          "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
                          "subject": {"reference": pid}, "effectiveDateTime": "2024-03-01T08:00:00+07:00",
                          "valueQuantity": {"value": 72, "unit": "/min", "system": "http://unitsofmeasure.org",
                                            "code": "/min"}},
             "request": {"method": "POST", "url": "Observation"}},
        ],
    }
    response = client.execute("", method="post", data=bundle)
    assert response["resourceType"] == "Bundle" and response["type"] == "transaction-response"
    statuses = [e["response"]["status"] for e in response["entry"]]
    assert [s.split()[0] for s in statuses] == ["201", "201"]
    patient_ref = response["entry"][0]["response"]["location"].split("/_history")[0]
    patient_id = patient_ref.rstrip("/").split("/")[-1]

    observations = client.resources("Observation").search(patient=patient_id, code="http://loinc.org|8867-4")
    obs = observations.fetch_all()
    assert len(obs) == 1
    assert obs[0]["subject"]["reference"] == f"Patient/{patient_id}"  # urn:uuid rewritten

    # the same bundle again: the conditional entry finds the patient, the observation is new
    again = client.execute("", method="post", data=bundle)
    assert [e["response"]["status"].split()[0] for e in again["entry"]] == ["200", "201"]
    assert len(observations.fetch_all()) == 2
    assert len(client.resources("Patient").search(identifier=f"{CCCD}|{cccd}").fetch_all()) == 1
