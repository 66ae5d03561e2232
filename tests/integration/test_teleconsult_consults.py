"""Consult requests end to end over HTTP, against a real EHR, the real FerretDB and RabbitMQ.

The EHR and teleconsult run as in production (gunicorn + uvicorn worker) on loopback ports;
the EHR holds the clinics, the hub, the patients and a supporting Observation. Covered:
submission (``$submit`` and a transaction Bundle), the EHR's refusals (unknown patient, another
clinic's patient, EHR down, EHR slow: nothing created), ``Idempotency-Key`` (10 retries at once:
one ServiceRequest, one Task; another body: 422), 20 doctors racing ``$accept`` (one wins), the
whole step sequence to ``$complete``, illegal transitions (409 with the state), the SLA breach
(one event however many sweeps), the worklist's order and filters, clinic isolation, and the
events reaching the EHR's and billing's queues.
"""

from __future__ import annotations

import base64
import json
import socket
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sen_shared.auth import issue_dev_token
from sen_shared.bus.outbox import entry_event

from tests.hiding_support import answered_as_missing
from tests.integration.test_bus import _bus, drain
from tests.support import emptied, put_resources, web_process

pytestmark = pytest.mark.integration

FJ = "application/fhir+json"
ICD10 = "http://hl7.org/fhir/sid/icd-10"
HUB, CLINIC_A, CLINIC_B = "bvdk-tinh", "tyt-an-binh", "tyt-phu-tan"
CARDIO = "394579002"
# the module's one-at-a-time reads, puts and deletes go through one client (its defaults are httpx.get's: 5 s,
# no redirects followed), where each httpx.get built a client of its own (its TLS context, ~26 ms of CPU) and a
# new connection; the posts (post(): also sent from threads, at once) keep theirs
HTTP = httpx.Client()


# --------------------------------------------------------------------------- the services

def _tok(dev_key: Path, role: str, **claims: Any) -> dict[str, str]:
    return {"Authorization": f"Bearer {issue_dev_token(dev_key, role, **claims)}", "Content-Type": FJ,
            "Accept": FJ}


@pytest.fixture(scope="module")
def tokens(dev_key):
    return {
        "admin": _tok(dev_key, "admin"),
        "a": _tok(dev_key, "clinic", facility=CLINIC_A, sub="nv-an-binh"),
        "b": _tok(dev_key, "clinic", facility=CLINIC_B, sub="nv-phu-tan"),
        # clinic staff whose token names their Practitioner (as the portal's demo clinic user's does)
        "a_pr": _tok(dev_key, "clinic", facility=CLINIC_A, practitioner="ys-an-binh", sub="ys-an-binh"),
        "dr": _tok(dev_key, "doctor", facility=HUB, practitioner="dr-0", sub="dr-0"),
        "dr2": _tok(dev_key, "doctor", facility=HUB, practitioner="dr-2", sub="dr-2"),
        "other_hub": _tok(dev_key, "doctor", facility="bv-khac", practitioner="dr-x", sub="dr-x"),
    }


def ehr_seed() -> list[dict[str, Any]]:
    """What the EHR holds at the start of each module on these services: the hub, the two clinics, their
    patients, a supporting Observation each and dr-2's role at the hub."""
    return [
        {"resourceType": "Organization", "id": HUB, "name": "Bệnh viện Đa khoa tỉnh"},
        {"resourceType": "Organization", "id": CLINIC_A, "name": "Trạm Y tế xã An Bình",
         "address": [{"district": "Huyện Phú Tân", "state": "An Giang"}]},
        {"resourceType": "Organization", "id": CLINIC_B, "name": "Trạm Y tế xã Phú Tân"},
        {"resourceType": "Patient", "id": "pa", "name": [{"family": "Nguyễn", "given": ["Văn", "An"]}],
         "managingOrganization": {"reference": f"Organization/{CLINIC_A}"}},
        {"resourceType": "Patient", "id": "pb", "name": [{"family": "Trần", "given": ["Thị", "Bích"]}],
         "managingOrganization": {"reference": f"Organization/{CLINIC_B}"}},
        {"resourceType": "Patient", "id": "pab", "name": [{"family": "Lê", "given": ["Văn", "Cường"]}],
         "managingOrganization": {"reference": f"Organization/{CLINIC_A}"},
         "generalPractitioner": [{"reference": f"Organization/{CLINIC_B}"}]},
        {"resourceType": "Observation", "id": "obs-a", "status": "final",
         "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
         "subject": {"reference": "Patient/pa"}, "valueQuantity": {"value": 112, "unit": "/min"}},
        {"resourceType": "Observation", "id": "obs-b", "status": "final",
         "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
         "subject": {"reference": "Patient/pb"}, "valueQuantity": {"value": 80, "unit": "/min"}},
        {"resourceType": "PractitionerRole", "id": "role-dr-2", "practitioner": {"reference": "Practitioner/dr-2"},
         "organization": {"reference": f"Organization/{HUB}"}},
    ]


def teleconsult_env(base_env: dict[str, str], tc_db: str, ehr: str) -> dict[str, str]:
    """Teleconsult's settings in these modules: a 5 s EHR timeout, dr-lead the hub's lead on duty, a retried
    Idempotency-Key waiting up to 20 s for the first request's answer."""
    return {**base_env, "SEN_DB": tc_db, "SEN_EHR_URL": ehr, "SEN_HTTP_TIMEOUT": "5",
            "SEN_ON_DUTY_LEADS": json.dumps({HUB: "Practitioner/dr-lead"}), "SEN_IDEMPOTENCY_WAIT_SECONDS": "20"}


@pytest.fixture(scope="module")
def ehr(tcc_services, mongo_client, dev_key):
    """The session's EHR (its URL; tcc_services, tests/integration/conftest.py) with nothing from an earlier
    module in it or in teleconsult's database: :func:`ehr_seed` alone, as a process of the module's own held."""
    emptied(mongo_client, tcc_services["ehr_db"], tcc_services["tc_db"])
    put_resources(tcc_services["ehr"], dev_key, ehr_seed())
    return tcc_services["ehr"]


@pytest.fixture(scope="module")
def ehr_db(tcc_services):
    return tcc_services["ehr_db"]


@pytest.fixture(scope="module")
def tc_db(tcc_services):
    return tcc_services["tc_db"]


@pytest.fixture(scope="module")
def tc_env(base_env, tc_db, ehr):
    return teleconsult_env(base_env, tc_db, ehr)


@pytest.fixture(scope="module")
def tc(tcc_services, ehr):
    """The session's teleconsult (its URL), on :func:`teleconsult_env` and the emptied ``tc_db``."""
    return tcc_services["tc"]


@pytest.fixture(scope="module")
def db(mongo_client, tc_db, tc):
    return mongo_client[tc_db]


@pytest.fixture(scope="module")
def consults(tc_env, tc):
    """The workflow in this process, on the service's database (the worker's sweeps)."""
    import os

    from sen_teleconsult import worker
    from sen_teleconsult.config import settings_from_env

    old = dict(os.environ)
    os.environ.update(tc_env)
    try:
        settings = settings_from_env()
    finally:
        os.environ.clear()
        os.environ.update(old)
    return worker._consults(settings)


def service_request(patient: str = "Patient/pa", priority: str = "urgent", **extra: Any) -> dict[str, Any]:
    return {"resourceType": "ServiceRequest", "status": "active", "intent": "order", "priority": priority,
            "subject": {"reference": patient},
            "reasonCode": [{"coding": [{"system": ICD10, "code": "I21.9", "display": "Nhồi máu cơ tim cấp"}]}],
            "note": [{"text": "Đau ngực 2 giờ, ST chênh lên DII, DIII, aVF: xin ý kiến can thiệp?"}],
            "performer": [{"reference": f"Organization/{HUB}"}],
            "performerType": {"coding": [{"system": "http://snomed.info/sct", "code": CARDIO}], "text": "Tim mạch"},
            **extra}


def post(url: str, body: Any, headers: dict[str, str], **extra: str) -> httpx.Response:
    return httpx.post(url, content=json.dumps(body), headers={**headers, **extra}, timeout=30)


def submit(tc: str, tokens, body: dict[str, Any] | None = None, who: str = "a", **headers: str) -> httpx.Response:
    return post(f"{tc}/fhir/ServiceRequest/$submit", body or service_request(), tokens[who], **headers)


def submitted(r: httpx.Response) -> tuple[str, str]:
    assert r.status_code == 201, r.text
    by_type = {e["resource"]["resourceType"]: e["resource"]["id"] for e in r.json()["entry"]}
    return by_type["ServiceRequest"], by_type["Task"]


def op(tc: str, task: str, name: str, who: str, tokens, params: list[dict[str, Any]] | None = None,
       **headers: str) -> httpx.Response:
    body = {"resourceType": "Parameters", "parameter": params or []}
    return post(f"{tc}/fhir/Task/{task}/{name}", body, tokens[who], **headers)


def diag(r: httpx.Response) -> str:
    body = r.json()
    assert body["resourceType"] == "OperationOutcome", body
    return body["issue"][0]["diagnostics"]


def count(db, rtype: str, **flt: Any) -> int:
    return db[rtype].count_documents(flt)


def minutes(start: str = "2025-03-14T09:00:00+07:00", end: str = "2025-03-14T09:40:00+07:00") -> list[dict]:
    return [
        {"name": "start", "valueDateTime": start}, {"name": "end", "valueDateTime": end},
        {"name": "site", "valueReference": {"reference": f"Organization/{HUB}"}},
        {"name": "site", "valueReference": {"reference": f"Organization/{CLINIC_A}"}},
        {"name": "participant", "part": [{"name": "who", "valueReference": {"reference": "Practitioner/dr-0"}},
                                         {"name": "role", "valueString": "Chủ trì"}]},
        {"name": "participant", "part": [{"name": "who", "valueReference": {"reference": "Practitioner/bs-xa"}},
                                         {"name": "role", "valueString": "Bác sĩ điều trị tuyến xã"}]},
        {"name": "patient-identity", "valueString": "Nam, 45 tuổi, mã BN pa"},
        {"name": "history", "valueString": "Đau ngực trái 2 giờ, vã mồ hôi."},
        {"name": "findings-clinical", "valueString": "HA 90/60, mạch 112."},
        {"name": "findings-imaging", "valueString": "ECG: ST chênh lên thành dưới."},
        {"name": "discussion", "valueString": "Thống nhất nhồi máu cơ tim cấp thành dưới."},
        {"name": "conclusion", "valueCoding": {"system": ICD10, "code": "I21.1", "display": "NMCT thành dưới"}},
        {"name": "recommendations", "valueString": "Chuyển tuyến tỉnh can thiệp mạch vành cấp cứu."},
        {"name": "chair", "valueReference": {"reference": "Practitioner/dr-0"}},
    ]


# --------------------------------------------------------------------------- submission

def test_submit_creates_service_request_and_task_owned_by_the_hub_due_by_priority(tc, tokens, db):
    r = submit(tc, tokens, service_request(supportingInfo=[{"reference": "Observation/obs-a"}]))
    sr_id, task_id = submitted(r)
    assert r.headers["Location"].endswith(f"/Task/{task_id}")
    task = HTTP.get(f"{tc}/fhir/Task/{task_id}", headers=tokens["a"]).json()
    sr = HTTP.get(f"{tc}/fhir/ServiceRequest/{sr_id}", headers=tokens["a"]).json()
    assert task["status"] == "requested" and task["intent"] == "order" and task["priority"] == "urgent"
    assert task["owner"] == {"reference": f"Organization/{HUB}"}
    assert task["requester"] == {"reference": f"Organization/{CLINIC_A}"}
    assert task["focus"] == {"reference": f"ServiceRequest/{sr_id}"}
    authored = datetime.fromisoformat(task["authoredOn"])
    due = datetime.fromisoformat(task["restriction"]["period"]["end"])
    assert due - authored == timedelta(hours=24) and task["authoredOn"].endswith("+07:00")
    assert sr["status"] == "active" and sr["intent"] == "order"
    assert any(c["code"] == "11429006" for cc in sr["category"] for c in cc["coding"])
    assert sr["requester"] == {"reference": f"Organization/{CLINIC_A}"}
    # who and when: on the version, and in the audit trail
    assert task["meta"]["extension"][0]["valueReference"]["display"] == "nv-an-binh"
    link = db.consult_steps.find_one({"_id": f"{task_id}/1"})
    event, grant = [entry_event(e) for e in link["outbox"]]
    assert grant["type"] == "vn.sen.teleconsult.referral.granted.v1"
    assert grant["data"]["grantee"] == f"Organization/{HUB}" and grant["data"]["patient"] == "Patient/pa"
    assert event["type"] == "vn.sen.teleconsult.consult.requested.v1"
    assert event["data"]["district"] == "Huyện Phú Tân" and event["data"]["specialty"] == CARDIO
    assert event["data"]["dueAt"] == task["restriction"]["period"]["end"]
    audit = HTTP.get(f"{tc}/fhir/AuditEvent?entity=Task/{task_id}", headers=tokens["admin"]).json()
    assert any(e["resource"].get("subtype") or e["resource"]["action"] == "C" for e in audit["entry"])


def test_a_transaction_bundle_submits_the_same_way(tc, tokens):
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": "urn:uuid:0b9f7e2c-0c7e-4a8e-9d4c-3c7a1f0e2d11", "resource": service_request(priority="routine"),
         "request": {"method": "POST", "url": "ServiceRequest"}},
        {"resource": {"resourceType": "Task", "status": "requested", "intent": "order",
                      "owner": {"reference": f"Organization/{HUB}"}},
         "request": {"method": "POST", "url": "Task"}}]}
    r = post(f"{tc}/fhir", bundle, tokens["a"])
    assert r.status_code == 200, r.text
    assert r.json()["type"] == "transaction-response"
    task = next(e["resource"] for e in r.json()["entry"] if e["resource"]["resourceType"] == "Task")
    assert task["status"] == "requested" and task["priority"] == "routine"
    bad = {**bundle, "entry": [*bundle["entry"], {"resource": {"resourceType": "Communication", "status": "completed"},
                                                   "request": {"method": "POST", "url": "Communication"}}]}
    assert post(f"{tc}/fhir", bad, tokens["a"]).status_code == 422


def test_the_task_carries_the_consults_reason_however_it_was_submitted(tc, tokens):
    """Task.reasonCode (R4: one CodeableConcept) is the ServiceRequest's first reason, or the client's
    own Task's: a list of Tasks (the portal's worklist) shows why without reading the ServiceRequests."""
    first = {"coding": [{"system": ICD10, "code": "I21.9", "display": "Nhồi máu cơ tim cấp"}]}
    second = {"coding": [{"system": ICD10, "code": "I10", "display": "Tăng huyết áp vô căn"}]}

    def task_of(r: httpx.Response) -> dict[str, Any]:
        assert r.status_code in (200, 201), r.text  # $submit 201, a transaction 200
        answered = next(e["resource"] for e in r.json()["entry"] if e["resource"]["resourceType"] == "Task")
        stored = HTTP.get(f"{tc}/fhir/Task/{answered['id']}", headers=tokens["a"]).json()
        assert stored["reasonCode"] == answered["reasonCode"]
        return stored

    bare = submit(tc, tokens, service_request(reasonCode=[first, second]))
    assert task_of(bare)["reasonCode"] == first
    params = {"resourceType": "Parameters",
              "parameter": [{"name": "resource", "resource": service_request(reasonCode=[second])}]}
    assert task_of(submit(tc, tokens, params))["reasonCode"] == second

    def bundle(task: dict[str, Any]) -> dict[str, Any]:
        return {"resourceType": "Bundle", "type": "transaction", "entry": [
            {"resource": service_request(priority="routine", reasonCode=[first]),
             "request": {"method": "POST", "url": "ServiceRequest"}},
            {"resource": {"resourceType": "Task", "status": "requested", "intent": "order",
                          "owner": {"reference": f"Organization/{HUB}"}, **task},
             "request": {"method": "POST", "url": "Task"}}]}

    assert task_of(post(f"{tc}/fhir", bundle({}), tokens["a"]))["reasonCode"] == first
    own = {"coding": [{"system": ICD10, "code": "I21.1"}], "text": "NMCT thành dưới"}
    assert task_of(post(f"{tc}/fhir", bundle({"reasonCode": own}), tokens["a"]))["reasonCode"] == own  # kept
    # R4's Task.reasonCode is one CodeableConcept: a list (R5's CodeableReference style) is refused
    r = post(f"{tc}/fhir", bundle({"reasonCode": [own]}), tokens["a"])
    assert r.status_code == 422 and "reasonCode" in diag(r)
    r = post(f"{tc}/fhir", bundle({"reasonCode": {"coding": "I21.1"}}), tokens["a"])
    assert r.status_code == 400 and "reasonCode" in str(r.json()), r.text
    r = post(f"{tc}/fhir", bundle({"reasonCode": {"coding": [{"system": ICD10, "code": "I21.99"}]}}), tokens["a"])
    assert r.status_code == 422 and diag(r).startswith("I21.99 is not an ICD-10 code"), r.text


@pytest.mark.parametrize("change, status, says", [
    ({"subject": {"reference": "Patient/nobody"}}, 422, "Patient/nobody is not known to the EHR"),
    # another facility's patient or record: the EHR answers as for one it does not hold (not telling that it exists)
    ({"subject": {"reference": "Patient/pb"}}, 422, "Patient/pb is not known to the EHR"),
    ({"supportingInfo": [{"reference": "Observation/obs-b"}]}, 422, "Observation/obs-b is not known to the EHR"),
    # the patient and the records are read in one batch: the refusal names the record refused
    ({"supportingInfo": [{"reference": "Observation/obs-a"}, {"reference": "Observation/nope"}]}, 422,
     "Observation/nope is not known to the EHR"),
    ({"subject": {"reference": "Patient/nobody"}, "supportingInfo": [{"reference": "Observation/obs-a"}]}, 422,
     "Patient/nobody is not known to the EHR"),
    ({"priority": "whenever"}, 422, "priority"),
    ({"reasonCode": [{"text": "đau ngực"}]}, 422, "ICD-10"),
    # the list (sen_shared.icd10), not the shape: WHO's I21 stops at one decimal, E11.65 is US-only
    ({"reasonCode": [{"coding": [{"system": ICD10, "code": "I21.99"}]}]}, 422, "I21.99 is not an ICD-10 code"),
    ({"reasonCode": [{"coding": [{"system": ICD10, "code": "B02.9"}]},
                     {"coding": [{"system": ICD10, "code": "E11.65"}]}]}, 422, "E11.65 is not an ICD-10 code"),
    ({"note": []}, 422, "clinical question"),
    ({"requester": {"reference": f"Organization/{CLINIC_B}"}}, 403, "your facility"),
])
def test_a_bad_or_forbidden_submission_is_refused_and_creates_nothing(tc, tokens, db, change, status, says):
    before = (count(db, "ServiceRequest"), count(db, "Task"))
    r = submit(tc, tokens, service_request(**change))
    assert r.status_code == status, r.text
    assert says in diag(r)
    assert (count(db, "ServiceRequest"), count(db, "Task")) == before


def test_a_conclusion_code_not_in_the_list_is_refused_and_the_task_is_unchanged(tc, tokens, db):
    """``$complete`` checks each conclusion against sen_shared.icd10: E11.65 (ICD-10-CM, US) is
    refused by name with nothing written; B02.9 (WHO) completes the consult."""
    _, task_id = submitted(submit(tc, tokens, service_request(
        reasonCode=[{"coding": [{"system": ICD10, "code": "B02.9", "display": "Bệnh Zoster không biến chứng"}]}])))
    assert op(tc, task_id, "$accept", "dr", tokens).status_code == 200
    before = HTTP.get(f"{tc}/fhir/Task/{task_id}", headers=tokens["dr"]).json()
    steps = db.consult_steps.count_documents({"k": task_id})

    def conclude(code: str) -> list[dict[str, Any]]:
        return [p if p["name"] != "conclusion" else {"name": "conclusion", "valueCoding": {"system": ICD10,
                                                                                           "code": code}}
                for p in minutes()]

    for bad in ("E11.65", "I21.99"):
        r = op(tc, task_id, "$complete", "dr", tokens, conclude(bad))
        assert r.status_code == 422 and diag(r).startswith(f"{bad} is not an ICD-10 code"), r.text
    two = [*conclude("B02.9"), {"name": "conclusion", "valueCoding": {"system": ICD10, "code": "E11.65"}}]
    r = op(tc, task_id, "$complete", "dr", tokens, two)  # one bad code of two: the whole step refused
    assert r.status_code == 422 and "E11.65" in diag(r), r.text
    assert HTTP.get(f"{tc}/fhir/Task/{task_id}", headers=tokens["dr"]).json() == before
    assert db.consult_steps.count_documents({"k": task_id}) == steps
    r = op(tc, task_id, "$complete", "dr", tokens, conclude("B02.9"))
    assert r.status_code == 200 and r.json()["status"] == "completed", r.text
    assert r.json()["output"][0]["valueCodeableConcept"]["coding"][0]["code"] == "B02.9"


def test_ehr_down_or_slow_is_a_clear_refusal_and_nothing_is_created(tc_env, tokens, tmp_path, mongo_client, run_id):
    # the EHR's port: bound, not listening, so a connection there is refused (a down EHR); then listening and never
    # answering, the kernel completing the handshake (a hung EHR). One teleconsult process sees both.
    ehr_port = socket.socket()
    ehr_port.bind(("127.0.0.1", 0))
    name = f"sen_t{run_id}_tcc_down"
    env = {**tc_env, "SEN_DB": name, "SEN_EHR_URL": f"http://127.0.0.1:{ehr_port.getsockname()[1]}",
           "SEN_HTTP_TIMEOUT": "1"}
    try:
        with web_process("teleconsult", env, tmp_path / "tc.log") as url:
            for status, says in ((503, "cannot be reached"), (504, "did not answer within 1 s")):
                if status == 504:
                    ehr_port.listen(16)
                key = str(uuid.uuid4())
                r = submit(url, tokens, **{"Idempotency-Key": key})
                assert r.status_code == status, r.text
                assert says in diag(r) and "nothing was created" in diag(r)
                db = mongo_client[name]
                assert count(db, "ServiceRequest") == count(db, "Task") == count(db, "consult_steps") == 0
                # a 5xx is not kept under the Idempotency-Key: the clinic's retry runs again
                kept = [d for d in db.idempotency_keys.find({}, {"n": 1, "released": 1}) if key in d["_id"]]
                assert kept and not [d for d in kept if d["_id"].endswith("/answer")]
                assert max(kept, key=lambda d: d.get("n", 0))["released"] is True
    finally:
        ehr_port.close()
        mongo_client.drop_database(name)


# --------------------------------------------------------------------------- Idempotency-Key

def test_one_submission_sent_ten_times_at_once_with_one_key_makes_one_consult(tc, tokens, db):
    key = f"kham-{uuid.uuid4()}"
    body = service_request(note=[{"text": f"Câu hỏi {key}"}])
    with ThreadPoolExecutor(10) as pool:
        answers = list(pool.map(lambda _: submit(tc, tokens, body, **{"Idempotency-Key": key}), range(10)))
    assert [a.status_code for a in answers] == [201] * 10, [a.text for a in answers]
    ids = {submitted(a) for a in answers}
    assert len(ids) == 1
    sr_id, task_id = ids.pop()
    stored = [d for d in db.ServiceRequest.find({}, {"res": 1}) if key in d["res"]]
    assert len(stored) == 1 and stored[0]["_id"] == sr_id
    assert count(db, "Task", _id=task_id) == 1 and count(db, "consult_steps", k=task_id) == 1
    # once more, later: the first answer again; another body under the key: 422
    again = submit(tc, tokens, body, **{"Idempotency-Key": key})
    assert again.status_code == 201 and submitted(again) == (sr_id, task_id)
    other = submit(tc, tokens, service_request(priority="stat"), **{"Idempotency-Key": key})
    assert other.status_code == 422 and "different request" in diag(other)
    # keys are the caller's: another clinic's same key is a request of its own (here: not its patient, which
    # the EHR answers as one it does not hold)
    assert submit(tc, tokens, body, who="b", **{"Idempotency-Key": key}).status_code == 422


def test_a_refusal_is_kept_and_replayed(tc, tokens):
    key = str(uuid.uuid4())
    first = submit(tc, tokens, service_request(subject={"reference": "Patient/nobody"}), **{"Idempotency-Key": key})
    second = submit(tc, tokens, service_request(subject={"reference": "Patient/nobody"}), **{"Idempotency-Key": key})
    assert first.status_code == second.status_code == 422 and first.content == second.content


# --------------------------------------------------------------------------- the Task's steps

def test_twenty_doctors_accepting_at_once_exactly_one_wins(tc, tokens, dev_key, db):
    _, task_id = submitted(submit(tc, tokens))
    doctors = [_tok(dev_key, "doctor", facility=HUB, practitioner=f"dr-race-{i}", sub=f"dr-race-{i}")
               for i in range(20)]
    barrier = threading.Barrier(20)

    def accept(h: dict[str, str]) -> httpx.Response:
        barrier.wait()
        return post(f"{tc}/fhir/Task/{task_id}/$accept", {"resourceType": "Parameters"}, h)

    with ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(accept, doctors))
    codes = sorted(a.status_code for a in answers)
    assert codes == [200] + [409] * 19, [a.text for a in answers if a.status_code not in (200, 409)]
    winner = next(a for a in answers if a.status_code == 200).json()
    assert winner["status"] == "accepted" and winner["meta"]["versionId"] == "2"
    for a in answers:
        if a.status_code == 409:
            assert "'accepted'" in diag(a)
    links = list(db.consult_steps.find({"k": task_id}))
    assert sorted(link["n"] for link in links) == [1, 2]
    task = HTTP.get(f"{tc}/fhir/Task/{task_id}", headers=tokens["admin"]).json()
    assert task["owner"] == winner["owner"] and task["meta"]["versionId"] == "2"
    assert len(HTTP.get(f"{tc}/fhir/Task/{task_id}/_history", headers=tokens["admin"]).json()["entry"]) == 2
    events = [entry_event(e)["type"] for link in links for e in link["outbox"]]
    assert events.count("vn.sen.teleconsult.consult.accepted.v1") == 1
    assert events.count("vn.sen.teleconsult.referral.granted.v1") == 2  # the hub's (submission), the winner's


def test_the_whole_consult_from_submission_to_minutes(tc, tokens, db):
    sr_id, task_id = submitted(submit(tc, tokens))
    # illegal transitions are 409 with the current state
    r = op(tc, task_id, "$complete", "dr", tokens, minutes())
    assert r.status_code == 409 and "'requested'" in diag(r)
    assert op(tc, task_id, "$provide-info", "a", tokens, [{"name": "answer", "valueString": "x"}]).status_code == 409
    assert op(tc, "no-such-task", "$accept", "dr", tokens).status_code == 404
    # another hub's doctor may not accept (as if the Task did not exist), nor the clinic (its role: 403)
    assert op(tc, task_id, "$accept", "other_hub", tokens).status_code == 404
    assert op(tc, task_id, "$accept", "a", tokens).status_code == 403
    key = str(uuid.uuid4())
    r = op(tc, task_id, "$accept", "dr", tokens, **{"Idempotency-Key": key})
    assert r.status_code == 200 and r.json()["owner"] == {"reference": "Practitioner/dr-0"}
    again = op(tc, task_id, "$accept", "dr", tokens, **{"Idempotency-Key": key})
    assert again.status_code == 200 and again.content == r.content  # replayed, not a 409
    # reassign to a practitioner the EHR ties to the hub; one it does not: 422
    bad = op(tc, task_id, "$reassign", "dr", tokens, [{"name": "practitioner",
                                                      "valueReference": {"reference": "Practitioner/nobody"}}])
    assert bad.status_code == 422, bad.text
    r = op(tc, task_id, "$reassign", "dr", tokens, [{"name": "practitioner",
                                                    "valueReference": {"reference": "Practitioner/dr-2"}}])
    assert r.status_code == 200 and r.json()["owner"] == {"reference": "Practitioner/dr-2"}
    # the hub asks, the clinic answers: a Communication thread
    r = op(tc, task_id, "$request-info", "dr2", tokens, [{"name": "question", "valueString": "Xin men tim?"}])
    assert r.status_code == 200 and r.json()["status"] == "on-hold"
    r = op(tc, task_id, "$provide-info", "a", tokens, [
        {"name": "answer", "valueString": "Troponin I 2,3 ng/mL"},
        {"name": "attachment", "valueReference": {"reference": "Observation/obs-a", "display": "Troponin I.pdf"}}])
    assert r.status_code == 200 and r.json()["status"] == "accepted"
    thread = HTTP.get(f"{tc}/fhir/Communication?based-on=ServiceRequest/{sr_id}", headers=tokens["a"]).json()
    comms = sorted((e["resource"] for e in thread["entry"]), key=lambda c: "inResponseTo" in c)  # question first
    assert len(comms) == 2
    assert comms[0]["sender"] == {"reference": "Practitioner/dr-2"}
    assert [c["meta"]["extension"][0]["valueReference"]["display"] for c in comms] == ["dr-2", "nv-an-binh"]
    assert comms[1]["inResponseTo"] == [{"reference": f"Communication/{comms[0]['id']}"}]
    assert comms[1]["payload"][1:] == [{"contentReference": {"reference": "Observation/obs-a",
                                                             "display": "Troponin I.pdf"}}]  # its name kept
    # reject needs a reason (and an accepted consult is not rejected)
    assert op(tc, task_id, "$reject", "dr", tokens).status_code == 422
    assert op(tc, task_id, "$reject", "dr", tokens, [{"name": "reason", "valueString": "x"}]).status_code == 409
    # the minutes: checked, then Task and ServiceRequest completed
    incomplete = [p for p in minutes() if p["name"] != "conclusion"]
    r = op(tc, task_id, "$complete", "dr2", tokens, incomplete)
    assert r.status_code == 422 and "conclusion" in diag(r)
    written = {"name": "conclusion-text", "valueString": "Nhồi máu cơ tim cấp thành dưới, Killip II."}
    r = op(tc, task_id, "$complete", "dr2", tokens, [*minutes(), written])
    assert r.status_code == 200, r.text
    task = r.json()
    assert task["status"] == "completed"
    assert task["executionPeriod"] == {"start": "2025-03-14T09:00:00+07:00", "end": "2025-03-14T09:40:00+07:00"}
    outputs = {o["type"]["coding"][0]["code"]: o for o in task["output"]}
    assert outputs["conclusion"]["valueCodeableConcept"]["coding"][0]["code"] == "I21.1"
    # the conclusion as written is the conclusion's text; the advice stays the advice alone
    assert outputs["conclusion"]["valueCodeableConcept"]["text"] == written["valueString"]
    assert outputs["recommendations"]["valueString"] == "Chuyển tuyến tỉnh can thiệp mạch vành cấp cứu."
    record = json.loads(base64.b64decode(outputs["minutes"]["valueAttachment"]["data"]))
    assert record["chair"] == "Practitioner/dr-0" and record["discussion"].startswith("Thống nhất")
    # the requesting clinic sees the result on its Task
    seen = HTTP.get(f"{tc}/fhir/Task/{task_id}", headers=tokens["a"]).json()
    assert seen["status"] == "completed" and seen["output"] == task["output"]
    sr = HTTP.get(f"{tc}/fhir/ServiceRequest/{sr_id}", headers=tokens["a"]).json()
    assert sr["status"] == "completed"
    # the patient as the EHR named them at submission (family then given, with the diacritics)
    assert sr["subject"] == seen["for"] == {"reference": "Patient/pa", "display": "Nguyễn Văn An"}
    assert op(tc, task_id, "$cancel", "a", tokens).status_code == 409
    # every version says who made it
    history = HTTP.get(f"{tc}/fhir/Task/{task_id}/_history", headers=tokens["admin"]).json()["entry"]
    who = [e["resource"]["meta"]["extension"][0]["valueReference"]["display"] for e in history]
    assert who == ["dr-2", "nv-an-binh", "dr-2", "dr-0", "dr-0", "nv-an-binh"]
    # and the audit trail names each step, who took it and when
    trail = HTTP.get(f"{tc}/fhir/AuditEvent?entity=Task/{task_id}&_count=200", headers=tokens["admin"]).json()
    steps = {(c["code"], e["resource"]["agent"][0]["altId"]) for e in trail["entry"]
             for c in e["resource"].get("subtype", []) if c["code"].startswith("$")}
    assert {("$submit", "nv-an-binh"), ("$accept", "dr-0"), ("$reassign", "dr-0"), ("$request-info", "dr-2"),
            ("$provide-info", "nv-an-binh"), ("$complete", "dr-2")} <= steps
    assert all(e["resource"]["recorded"] for e in trail["entry"])
    [completed] = [entry_event(e) for link in db.consult_steps.find({"k": task_id}) for e in link["outbox"]
                   if entry_event(e)["type"].endswith("consult.completed.v1")]
    data = completed["data"]
    assert data["performer"] == "Practitioner/dr-2" and data["minutes"]["conclusion"]["code"] == "I21.1"
    # the conclusion as written travels as its own field; the advice alone as the recommendations
    assert data["minutes"]["conclusionText"] == written["valueString"]
    assert data["minutes"]["recommendations"] == "Chuyển tuyến tỉnh can thiệp mạch vành cấp cứu."
    # every part the EHR's record keeps: the discussion, the sites taking part, the chair who signed
    assert data["minutes"]["discussion"] == record["discussion"] and data["minutes"]["sites"] == record["sites"]
    assert data["minutes"]["chair"] == record["chair"]
    assert data["priority"] == "urgent" and data["district"] == "Huyện Phú Tân"
    assert data["patient"] == "Patient/pa" and data["patientDisplay"] == "Nguyễn Văn An"  # for billing's receipt


def test_the_clinic_cancels_its_own_consult_only(tc, tokens):
    sr_id, task_id = submitted(submit(tc, tokens))
    assert op(tc, task_id, "$cancel", "b", tokens).status_code == 404  # another clinic's: as if it did not exist
    assert op(tc, task_id, "$cancel", "dr", tokens).status_code == 403  # a doctor cancels no consult
    r = op(tc, task_id, "$cancel", "a", tokens, [{"name": "reason", "valueString": "Bệnh nhân đã chuyển viện"}])
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    sr = HTTP.get(f"{tc}/fhir/ServiceRequest/{sr_id}", headers=tokens["a"]).json()
    assert sr["status"] == "revoked"
    assert op(tc, task_id, "$accept", "dr", tokens).status_code == 409


def test_rejection_with_a_reason(tc, tokens, db):
    sr_id, task_id = submitted(submit(tc, tokens))
    reason = [{"name": "reason", "valueString": "Cần chuyển chuyên khoa Thần kinh"}]
    r = op(tc, task_id, "$reject", "dr", tokens, reason)
    assert r.status_code == 200 and r.json()["statusReason"]["text"] == "Cần chuyển chuyên khoa Thần kinh"
    [event] = [entry_event(e) for link in db.consult_steps.find({"k": task_id}) for e in link["outbox"]
               if entry_event(e)["type"].endswith("rejected.v1")]
    assert event["data"]["reason"] == "Cần chuyển chuyên khoa Thần kinh"


def test_workflow_resources_are_not_written_beside_the_operations(tc, tokens):
    _, task_id = submitted(submit(tc, tokens))
    task = HTTP.get(f"{tc}/fhir/Task/{task_id}", headers=tokens["admin"]).json()
    r = HTTP.put(f"{tc}/fhir/Task/{task_id}", content=json.dumps({**task, "status": "completed"}),
                  headers=tokens["admin"])
    assert r.status_code == 405 and "$accept" in diag(r)
    assert HTTP.delete(f"{tc}/fhir/Task/{task_id}", headers=tokens["admin"]).status_code == 405
    # nor through a transaction Bundle (its writes do not pass through create/update)
    sneaky = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": {"resourceType": "Appointment", "id": "x", "status": "booked", "participant": [
            {"actor": {"reference": "Practitioner/dr-0"}, "status": "accepted"}]},
         "request": {"method": "PUT", "url": "Appointment/x"}}]}
    r = post(f"{tc}/fhir", sneaky, tokens["admin"])  # refused for its entry (422 naming it), not [base]'s 405
    assert r.status_code == 422 and "Appointment" in diag(r) and "allow" not in r.headers
    assert r.json()["issue"][0]["expression"] == ["Bundle.entry[0]"]


# --------------------------------------------------------------------------- isolation and worklist

def test_a_clinic_sees_and_acts_on_its_own_facilitys_consults_only(tc, tokens):
    # both clinics reach patient pab in the EHR, and both ask about it: each sees its own consult only
    sr_a, task_a = submitted(submit(tc, tokens, service_request(patient="Patient/pab")))
    sr_b, task_b = submitted(submit(tc, tokens, service_request(patient="Patient/pab"), who="b"))
    for who, mine, theirs in (("a", task_a, task_b), ("b", task_b, task_a)):
        H = tokens[who]
        assert HTTP.get(f"{tc}/fhir/Task/{mine}", headers=H).status_code == 200
        assert HTTP.get(f"{tc}/fhir/Task/{theirs}", headers=H).status_code == 404  # as if it did not exist
        assert HTTP.get(f"{tc}/fhir/Task/{theirs}/_history", headers=H).status_code == 404
        assert HTTP.get(f"{tc}/fhir/Task/{theirs}/_history/1", headers=H).status_code == 404
        assert HTTP.get(f"{tc}/fhir/Task/{mine}/_history/1", headers=H).status_code == 200
        found = HTTP.get(f"{tc}/fhir/Task?patient=Patient/pab&_count=500", headers=H).json()
        assert {e["resource"]["id"] for e in found["entry"]} == {mine}
        wl = HTTP.get(f"{tc}/fhir/Task/$worklist?_count=500", headers=H).json()
        assert mine in {e["resource"]["id"] for e in wl["entry"]}
        assert theirs not in {e["resource"]["id"] for e in wl["entry"]}
        assert op(tc, theirs, "$cancel", who, tokens).status_code == 404
    srs = HTTP.get(f"{tc}/fhir/ServiceRequest?subject=Patient/pab", headers=tokens["b"]).json()
    assert {e["resource"]["id"] for e in srs["entry"]} == {sr_b}
    assert HTTP.get(f"{tc}/fhir/ServiceRequest/{sr_a}", headers=tokens["b"]).status_code == 404
    # the hub's doctors see both; another hub's see neither
    wl = HTTP.get(f"{tc}/fhir/Task/$worklist?_count=500", headers=tokens["dr"]).json()
    assert {task_a, task_b} <= {e["resource"]["id"] for e in wl["entry"]}
    assert HTTP.get(f"{tc}/fhir/Task/{task_a}", headers=tokens["dr"]).status_code == 200
    assert HTTP.get(f"{tc}/fhir/Task/{task_a}", headers=tokens["other_hub"]).status_code == 404
    wl = HTTP.get(f"{tc}/fhir/Task/$worklist", headers=tokens["other_hub"]).json()
    assert not {task_a, task_b} & {e["resource"]["id"] for e in wl.get("entry", [])}


def test_another_facilitys_consult_is_answered_as_one_that_does_not_exist(tc, tokens):
    """Another clinic, another hub's doctor: every read of a consult's resources and every step or message on
    its Task answers byte for byte what a made-up id gets (404), so no one learns which consults exist
    elsewhere (a 403 told it); the AuditEvent records each refusal as the 403 it is, and nothing changes.
    A role that takes no such step is 403 whatever the id: it tells nothing about one."""
    sr_id, task_id = submitted(submit(tc, tokens))
    assert op(tc, task_id, "$accept", "dr", tokens).status_code == 200
    r = op(tc, task_id, "$request-info", "dr", tokens, [{"name": "question", "valueString": "Xin điện tim?"}])
    assert r.status_code == 200, r.text
    [question] = _thread(tc, tokens, "admin", sr_id)
    version = r.json()["meta"]["versionId"]

    def body(params: list[dict[str, Any]] | None = None) -> str:
        return json.dumps({"resourceType": "Parameters", "parameter": params or []})

    steps = {"b": [("$cancel", []), ("$provide-info", [{"name": "answer", "valueString": "Đây"}])],
             "other_hub": [("$accept", []), ("$start", []), ("$reject", [{"name": "reason", "valueString": "Không"}]),
                           ("$request-info", [{"name": "question", "valueString": "?"}]),
                           ("$reassign", [{"name": "practitioner",
                                           "valueReference": {"reference": "Practitioner/dr-x"}}]),
                           ("$complete", minutes())]}
    with httpx.Client(base_url=tc, timeout=30) as c:
        for who in ("b", "other_hub"):
            for rtype, rid in (("Task", task_id), ("ServiceRequest", sr_id), ("Communication", question)):
                for path in (f"/fhir/{rtype}/{rid}", f"/fhir/{rtype}/{rid}/_history",
                             f"/fhir/{rtype}/{rid}/_history/1"):
                    answer = answered_as_missing(c, "GET", path, rid, headers=tokens[who])
                    assert answer.json()["resourceType"] == "OperationOutcome"
            for name, params in [*steps[who], ("$message", [{"name": "text", "valueString": "Chào"}])]:
                answer = answered_as_missing(c, "POST", f"/fhir/Task/{task_id}/{name}", task_id, headers=tokens[who],
                                             content=body(params))
                assert diag(answer) == f"Task/{task_id} is not known", name
    # a role that takes no such step: 403, a made-up id alike
    for rid in (task_id, "khong-co"):
        assert op(tc, rid, "$accept", "a", tokens).status_code == 403
        assert op(tc, rid, "$cancel", "dr", tokens).status_code == 403
        assert op(tc, rid, "$message", "admin", tokens, [{"name": "text", "valueString": "x"}]).status_code == 403
    task = HTTP.get(f"{tc}/fhir/Task/{task_id}", headers=tokens["admin"]).json()
    assert (task["status"], task["meta"]["versionId"]) == ("on-hold", version)  # nothing changed
    assert set(_thread(tc, tokens, "admin", sr_id)) == {question}
    # the trail says what was refused, and why
    trail = HTTP.get(f"{tc}/fhir/AuditEvent?entity=Task/{task_id}&_count=500", headers=tokens["admin"]).json()
    refused = {(next((t["code"] for t in e["resource"]["subtype"][1:]), e["resource"]["subtype"][0]["code"]),
                e["resource"]["agent"][0]["altId"], e["resource"]["outcomeDesc"])
               for e in trail["entry"] if e["resource"].get("outcomeDesc", "").startswith("403")}
    for name, _ in steps["other_hub"]:
        assert (name, "dr-x", f"403: this consult was sent to another hub (Organization/{HUB})") in refused, refused
    for name in ("$cancel", "$provide-info", "$message"):
        assert (name, "nv-phu-tan", "403: this consult belongs to another facility") in refused, refused
    # reads: refused by whose patient it is or whose consult (the first rule that refuses says why)
    for interaction in ("read", "vread", "history-instance"):
        for sub in ("dr-x", "nv-phu-tan"):
            assert any(i == interaction and who == sub for i, who, _ in refused), (interaction, sub, refused)


def _thread(tc: str, tokens, who: str, sr_id: str) -> dict[str, dict[str, Any]]:
    """The consult's Communications ``who`` finds by ``based-on`` (as the portal's consult page asks)."""
    r = HTTP.get(f"{tc}/fhir/Communication?based-on=ServiceRequest/{sr_id}&_count=50", headers=tokens[who])
    assert r.status_code == 200, r.text
    return {e["resource"]["id"]: e["resource"] for e in r.json().get("entry") or []}


def test_a_clinic_reads_and_finds_its_thread_whoever_of_it_sent_the_answer(tc, tokens):
    """A clinic user whose token names a Practitioner answers the hub's question: the answer's sender
    is that Practitioner and its recipient the doctor, yet the clinic reads it by id, by version and
    finds it by ``based-on`` with the question (both are tagged with the requesting clinic); another
    clinic gets 404 (as if they did not exist) and finds nothing; the hub's doctor reads and finds both,
    another hub not."""
    from sen_teleconsult.domain import consults as rules

    sr_id, task_id = submitted(submit(tc, tokens, who="a_pr"))
    assert op(tc, task_id, "$accept", "dr", tokens).status_code == 200
    r = op(tc, task_id, "$request-info", "dr", tokens, [{"name": "question", "valueString": "Xin kết quả men tim?"}])
    assert r.status_code == 200, r.text
    r = op(tc, task_id, "$provide-info", "a_pr", tokens, [{"name": "answer", "valueString": "Troponin I 2,3 ng/mL"}])
    assert r.status_code == 200 and r.json()["status"] == "accepted", r.text
    thread = _thread(tc, tokens, "admin", sr_id)
    [answer] = [c for c in thread.values() if "inResponseTo" in c]
    [question] = [c for c in thread.values() if "inResponseTo" not in c]
    assert answer["sender"] == {"reference": "Practitioner/ys-an-binh"}
    assert answer["recipient"] == [{"reference": "Practitioner/dr-0"}]
    assert question["recipient"] == [{"reference": f"Organization/{CLINIC_A}"}]  # the consult's requester
    for who in ("a_pr", "a", "dr"):  # the clinic (whoever of it asks) and the hub
        for c in (question, answer):
            assert HTTP.get(f"{tc}/fhir/Communication/{c['id']}", headers=tokens[who]).status_code == 200, who
            assert HTTP.get(f"{tc}/fhir/Communication/{c['id']}/_history/1", headers=tokens[who]).status_code == 200
        assert set(_thread(tc, tokens, who, sr_id)) == {question["id"], answer["id"]}, who
    for who in ("b", "other_hub"):
        for c in (question, answer):
            assert HTTP.get(f"{tc}/fhir/Communication/{c['id']}", headers=tokens[who]).status_code == 404, who
            assert HTTP.get(f"{tc}/fhir/Communication/{c['id']}/_history/1", headers=tokens[who]).status_code == 404
        assert _thread(tc, tokens, who, sr_id) == {}, who
    # nor does another clinic find it by any other search
    found = HTTP.get(f"{tc}/fhir/Communication?_count=500", headers=tokens["b"]).json()
    assert not {question["id"], answer["id"]} & {e["resource"]["id"] for e in found.get("entry") or []}
    for c in (question, answer):  # what they are read and found by
        assert rules.requester_of(c) == f"Organization/{CLINIC_A}" and rules.hub_of(c) == f"Organization/{HUB}"


def test_the_worklist_puts_the_most_urgent_first_and_filters(tc, tokens):
    made = {}
    for priority in ("routine", "stat", "urgent", "asap"):
        made[priority] = submitted(submit(tc, tokens, service_request(priority=priority)))[1]
    wl = HTTP.get(f"{tc}/fhir/Task/$worklist?_count=500", headers=tokens["dr"])
    assert wl.status_code == 200, wl.text
    order = [e["resource"]["id"] for e in wl.json()["entry"]]
    ranks = [e["resource"]["priority"] for e in wl.json()["entry"]]
    assert ranks == sorted(ranks, key=["stat", "asap", "urgent", "routine"].index)
    assert [order.index(made[p]) for p in ("stat", "asap", "urgent", "routine")] == sorted(
        order.index(made[p]) for p in made)
    dues = [e["resource"]["restriction"]["period"]["end"] for e in wl.json()["entry"]
            if e["resource"]["priority"] == "urgent"]
    assert dues == sorted(dues)
    stat = HTTP.get(f"{tc}/fhir/Task/$worklist?priority=stat&facility={CLINIC_A}&specialty={CARDIO}&status=requested",
                     headers=tokens["dr"]).json()
    assert made["stat"] in {e["resource"]["id"] for e in stat["entry"]}
    assert {e["resource"]["priority"] for e in stat["entry"]} == {"stat"}
    none = HTTP.get(f"{tc}/fhir/Task/$worklist?specialty=nope", headers=tokens["dr"]).json()
    assert none.get("entry", []) == [] and none["total"] == 0
    assert HTTP.get(f"{tc}/fhir/Task/$worklist?status=bogus", headers=tokens["dr"]).status_code == 400
    paged = HTTP.get(f"{tc}/fhir/Task/$worklist?_count=2", headers=tokens["dr"]).json()
    assert len(paged["entry"]) == 2 and any(link["relation"] == "next" for link in paged["link"])


# --------------------------------------------------------------------------- SLA

def test_an_sla_breach_publishes_exactly_one_event_escalates_and_is_flagged(tc, tokens, consults, db):
    _, task_id = submitted(submit(tc, tokens, service_request(priority="stat")))
    later = datetime.now(UTC) + timedelta(hours=1, minutes=1)
    consults.sweep_breaches(datetime.now(UTC))
    assert db.sla_breaches.count_documents({"_id": task_id}) == 0  # not due yet
    with ThreadPoolExecutor(5) as pool:  # sweepers racing (two workers, say)
        list(pool.map(lambda _: consults.sweep_breaches(later), range(5)))
    consults.sweep_breaches(later + timedelta(minutes=5))  # and a later round
    [breach] = list(db.sla_breaches.find({"_id": task_id}))
    [event] = [entry_event(e) for e in breach["outbox"]]
    assert event["type"] == "vn.sen.teleconsult.consult.sla_breached.v1"
    assert event["data"]["escalatedTo"] == "Practitioner/dr-lead"
    task = HTTP.get(f"{tc}/fhir/Task/{task_id}", headers=tokens["dr"]).json()
    assert task["businessStatus"]["coding"][0]["code"] == "sla-breached"
    assert {"url": "https://sen.vn/fhir/StructureDefinition/escalated-to",
            "valueReference": {"reference": "Practitioner/dr-lead"}} in task["extension"]
    escalations = [link for link in db.consult_steps.find({"k": task_id}) if link["op"] == "$escalate"]
    assert len(escalations) == 1
    wl = HTTP.get(f"{tc}/fhir/Task/$worklist?priority=stat&_count=500", headers=tokens["dr"]).json()
    [entry] = [e for e in wl["entry"] if e["resource"]["id"] == task_id]
    assert entry["search"]["extension"] == [{"url": "https://sen.vn/fhir/StructureDefinition/sla-breached",
                                             "valueBoolean": True}]
    # the consult can still be accepted after a breach, and goes on; the breach stays recorded once
    assert op(tc, task_id, "$accept", "dr", tokens).status_code == 200
    assert op(tc, task_id, "$request-info", "dr", tokens, [{"name": "question", "valueString": "?"}]).status_code == 200
    r = op(tc, task_id, "$provide-info", "a", tokens, [{"name": "answer", "valueString": "Đây"}])
    assert r.status_code == 200 and r.json()["businessStatus"]["coding"][0]["code"] == "sla-breached"
    consults.sweep_breaches(later + timedelta(hours=1))
    assert len([link for link in db.consult_steps.find({"k": task_id}) if link["op"] == "$escalate"]) == 1
    assert db.sla_breaches.count_documents({"_id": task_id}) == 1


# --------------------------------------------------------------------------- events on the bus

def test_completed_consult_events_reach_the_ehr_and_billing_queues(tc, ehr, ehr_db, tokens, db, amqp_url,
                                                                    base_env):
    from sen_teleconsult.worker import OUTBOX_COLLECTIONS

    sr_id, task_id = submitted(submit(tc, tokens))
    assert op(tc, task_id, "$accept", "dr", tokens).status_code == 200
    assert op(tc, task_id, "$complete", "dr", tokens, minutes()).status_code == 200
    bus_gen = _bus(amqp_url, base_env, ["ehr.consult-record", "billing.consult-charge", "ehr.referral-grants",
                                        "portal.reporting"])
    bus = next(bus_gen)
    try:
        bus.relay_all(db, OUTBOX_COLLECTIONS)  # returns once the broker confirmed every event: they are queued

        def mine(queue: str) -> list[dict]:
            got = [json.loads(m.body) for m in drain(bus, bus.topology.queue_name(queue))]
            return [e for e in got if e["subject"] == f"ServiceRequest/{sr_id}"]

        def completed(queue: str) -> list[dict]:
            return [e for e in mine(queue) if e["type"] == "vn.sen.teleconsult.consult.completed.v1"]

        [ehr_event] = completed("ehr.consult-record")
        [billing_event] = completed("billing.consult-charge")  # (billing also reads consult.requested)
        assert ehr_event == billing_event and ehr_event["type"] == "vn.sen.teleconsult.consult.completed.v1"
        assert ehr_event["data"]["task"] == f"Task/{task_id}"
        # billing's consumer names the patient on the consult's invoice from the event (no EHR call)
        from sen_billing.domain import invoice_port, invoices, pricing

        billing_db = db.client[f"{db.name}_billing"]
        pricing.load(billing_db)
        inv_id = invoices.charge_consult(billing_db, billing_event, level_of=lambda _f: "district",
                                         base_salary=2_340_000)
        invoice = invoice_port.get(billing_db, inv_id)
        assert invoice.status == "issued" and invoice.patient_display == "Nguyễn Văn An"
        assert invoice.resource["subject"] == {"reference": "Patient/pa", "display": "Nguyễn Văn An"}
        grants = mine("ehr.referral-grants")  # the hub at submission (triage), the doctor at acceptance
        assert sorted(g["data"]["grantee"] for g in grants) == [f"Organization/{HUB}", "Practitioner/dr-0"]
        assert {g["data"]["patient"] for g in grants} == {"Patient/pa"}
        kinds = sorted(e["type"].split(".")[-2] for e in mine("portal.reporting"))
        assert kinds == ["accepted", "completed", "granted", "granted", "requested"]
        # the EHR's consumer stores it (Encounter + Composition), once however often it comes
        from sen_ehr.domain import consult_record

        ehr_store = db.client[ehr_db]
        assert consult_record.handle_consult_completed(ehr_event, ehr_store) == (True, True)
        assert consult_record.handle_consult_completed(ehr_event, ehr_store) == (False, False)
        enc_id, comp_id = consult_record.record_ids(f"ServiceRequest/{sr_id}")
        r = HTTP.get(f"{ehr}/fhir/Composition/{comp_id}", headers=tokens["admin"])
        assert r.status_code == 200 and r.json()["subject"] == {"reference": "Patient/pa"}
        assert HTTP.get(f"{ehr}/fhir/Encounter/{enc_id}", headers=tokens["admin"]).json()["class"]["code"] == "VR"
    finally:
        next(bus_gen, None)
        db.client.drop_database(f"{db.name}_billing")
    doc = db.consult_steps.find_one({"_id": f"{task_id}/3"})
    assert doc["outbox"] == [] and doc["outbox_pending"] is False


# --------------------------------------------------------------------------- crashes

def test_a_step_claimed_but_not_written_is_rolled_forward_by_the_next_one(tc, tokens, consults, db, monkeypatch):
    """A crash between a step's claim (its link) and its writes: the next reader finishes it."""
    from sen_teleconsult.workflow import Actor, Consults

    _, task_id = submitted(submit(tc, tokens))
    doctor = type("P", (), {"sub": "dr-0", "roles": frozenset({"doctor"}), "facility": HUB,
                            "practitioner": "dr-0", "scopes": frozenset()})()
    with monkeypatch.context() as m:
        m.setattr(Consults, "roll_forward", lambda self, link: None)  # the process dies after its insert
        consults.accept(task_id, Actor.of(doctor))
    assert db.consult_steps.count_documents({"k": task_id}) == 2
    assert HTTP.get(f"{tc}/fhir/Task/{task_id}", headers=tokens["dr"]).json()["status"] == "requested"
    # the next step (another doctor asks the clinic) first applies the accept, then itself
    r = op(tc, task_id, "$request-info", "dr2", tokens, [{"name": "question", "valueString": "Điện tim?"}])
    assert r.status_code == 200 and r.json()["meta"]["versionId"] == "3", r.text
    history = HTTP.get(f"{tc}/fhir/Task/{task_id}/_history", headers=tokens["admin"]).json()["entry"]
    assert [e["resource"]["status"] for e in history] == ["on-hold", "accepted", "requested"]


def test_an_answer_claimed_before_the_requester_tag_is_tagged_when_rolled_forward(tc, tokens, consults, db,
                                                                                 monkeypatch):
    """A $provide-info link claimed by a process without the requester tag (an upgrade: its
    Communication untagged in the link), whose writes were not made: the next step's roll-forward
    creates the Communication with the tag, so the clinic reads and finds its answer."""
    from sen_teleconsult import workflow
    from sen_teleconsult.domain import consults as rules
    from sen_teleconsult.workflow import Actor, Consults

    sr_id, task_id = submitted(submit(tc, tokens, who="a_pr"))
    assert op(tc, task_id, "$accept", "dr", tokens).status_code == 200
    assert op(tc, task_id, "$request-info", "dr", tokens, [{"name": "question", "valueString": "Men tim?"}]) \
        .status_code == 200
    staff = type("P", (), {"sub": "ys-an-binh", "roles": frozenset({"clinic"}), "facility": CLINIC_A,
                           "practitioner": "ys-an-binh", "scopes": frozenset()})()
    tag_thread = workflow._tag_thread

    def old_tagging(comm: dict, facts: dict) -> dict:  # as the old code tagged: no requester tag
        comm = tag_thread(comm, facts)
        comm["meta"]["tag"] = [t for t in comm["meta"]["tag"] if t["system"] != rules.REQUESTER_TAG]
        return comm

    with monkeypatch.context() as m:
        m.setattr(workflow, "_tag_thread", old_tagging)  # the link is claimed as the old code wrote it
        m.setattr(Consults, "roll_forward", lambda self, link: None)  # the process dies after its insert
        link = consults.provide_info(task_id, Actor.of(staff), "Troponin âm tính", [])
    comm = json.loads(link["communication_json"])
    assert rules.requester_of(comm) is None  # the claimed link carries no requester tag
    assert HTTP.get(f"{tc}/fhir/Communication/{comm['id']}", headers=tokens["admin"]).status_code == 404
    assert op(tc, task_id, "$start", "dr", tokens).status_code == 200  # the next step rolls it forward
    got = HTTP.get(f"{tc}/fhir/Communication/{comm['id']}", headers=tokens["a_pr"])
    assert got.status_code == 200, got.text
    assert rules.requester_of(got.json()) == f"Organization/{CLINIC_A}"
    assert comm["id"] in _thread(tc, tokens, "a", sr_id) and not _thread(tc, tokens, "b", sr_id)


def test_a_submission_that_stopped_before_its_chain_is_finished_by_the_next_reader(tc, tokens, db):
    """The transaction stored ServiceRequest + Task, then the process died before link 1."""
    _, task_id = submitted(submit(tc, tokens))
    db.consult_steps.delete_many({"k": task_id})  # as if link 1 had never been inserted
    r = op(tc, task_id, "$accept", "dr", tokens)
    assert r.status_code == 200, r.text
    links = sorted(db.consult_steps.find({"k": task_id}), key=lambda link: link["n"])
    assert [link["op"] for link in links] == ["$submit", "$accept"]
    requested = [entry_event(e) for e in links[0]["outbox"]]
    assert requested[0]["type"] == "vn.sen.teleconsult.consult.requested.v1"
    assert requested[0]["data"]["requester"] == f"Organization/{CLINIC_A}"


def test_a_retry_after_a_lost_answer_finds_the_consult_the_first_try_made(tc, tokens, db):
    """The transaction stored the consult, then the request failed (a 5xx is not kept under the
    key, and the chain was not started): the retry with the same key answers that consult."""
    key = str(uuid.uuid4())
    body = service_request(note=[{"text": f"Lần thử {key}"}])
    sr_id, task_id = submitted(submit(tc, tokens, body, **{"Idempotency-Key": key}))
    chain = f"nv-an-binh@{CLINIC_A}|{key}"  # the key as the caller's (sen_shared.idempotency_key)
    assert db.idempotency_keys.delete_many({"k": chain}).deleted_count == 1
    assert db.idempotency_keys.delete_one({"_id": f"{chain}/answer"}).deleted_count == 1
    db.consult_steps.delete_many({"k": task_id})
    again = submit(tc, tokens, body, **{"Idempotency-Key": key})
    assert submitted(again) == (sr_id, task_id)
    assert len([d for d in db.ServiceRequest.find({}, {"res": 1}) if key in d["res"]]) == 1
    assert [link["op"] for link in db.consult_steps.find({"k": task_id})] == ["$submit"]


def test_a_retry_whose_first_try_committed_answers_that_consult(tc, tokens, db):
    """The first try's link 1 (the commit point) and resources are in, its answer was lost (a 5xx
    is not kept under the key): the retry with the same key answers the same consult, whole."""
    key = str(uuid.uuid4())
    body = service_request(note=[{"text": f"Lần thử {key}"}])
    sr_id, task_id = submitted(submit(tc, tokens, body, **{"Idempotency-Key": key}))
    chain = f"nv-an-binh@{CLINIC_A}|{key}"
    db.idempotency_keys.delete_many({"k": chain})
    db.idempotency_keys.delete_one({"_id": f"{chain}/answer"})
    again = submit(tc, tokens, body, **{"Idempotency-Key": key})
    assert submitted(again) == (sr_id, task_id)
    assert {e["resource"]["meta"]["versionId"] for e in again.json()["entry"]} == {"1"}
    assert len([d for d in db.ServiceRequest.find({}, {"res": 1}) if key in d["res"]]) == 1
    assert db.consult_steps.count_documents({"k": task_id}) == 1


def _committed_only(consults, monkeypatch, note: str) -> str:
    """A submission whose process died right after its commit point (link 1): nothing else written."""
    from sen_shared.fhir.outcome import FhirError
    from sen_teleconsult.domain import consults as rules
    from sen_teleconsult.workflow import Actor, Consults

    clinic = type("P", (), {"sub": "nv-an-binh", "roles": frozenset({"clinic"}), "facility": CLINIC_A,
                            "practitioner": None, "scopes": frozenset()})()
    sub = rules.check_submission(service_request(note=[{"text": note}]), clinic=f"Organization/{CLINIC_A}",
                                 default_hub=None)
    with monkeypatch.context() as m:
        m.setattr(Consults, "finish_submission", lambda self, link: {})  # dies after link 1
        with pytest.raises(FhirError):  # its answer reads the versions 1 it never wrote
            consults.create(sub, Actor.of(clinic), "http://sen/fhir", None)
    link = consults.db.consult_steps.find_one({"op": "$submit", "sr_json": {"$exists": True},
                                               "facts.requestedAt": {"$exists": True}},
                                              sort=[("at", -1)])
    assert link is not None and note in link["sr_json"]
    return link["k"]


def test_a_submission_that_died_after_its_commit_point_is_finished_by_the_next_step(tc, tokens, consults, db,
                                                                                     monkeypatch):
    task_id = _committed_only(consults, monkeypatch, "Chết sau điểm cam kết (bước kế tiếp)")
    assert HTTP.get(f"{tc}/fhir/Task/{task_id}", headers=tokens["admin"]).status_code == 404
    r = op(tc, task_id, "$accept", "dr", tokens)
    assert r.status_code == 200 and r.json()["meta"]["versionId"] == "2", r.text
    task = HTTP.get(f"{tc}/fhir/Task/{task_id}", headers=tokens["a"]).json()
    sr_id = task["focus"]["reference"].split("/", 1)[1]
    sr = HTTP.get(f"{tc}/fhir/ServiceRequest/{sr_id}", headers=tokens["a"])
    assert sr.status_code == 200 and sr.json()["status"] == "active", sr.text
    assert db.grants.count_documents({"reason": f"ServiceRequest/{sr_id}"}) == 2


def test_a_submission_that_died_after_its_commit_point_is_finished_before_its_event_goes_out(
        tc, tokens, consults, db, monkeypatch):
    """Nobody reads it: the worker's relay gate holds link 1 back while it is young, then makes the
    consult whole before its consult.requested is published."""
    from sen_teleconsult.workflow import SubmissionGate

    task_id = _committed_only(consults, monkeypatch, "Chết sau điểm cam kết (relay)")
    pending = list(db.consult_steps.find({"_id": f"{task_id}/1"}, {"outbox": 1, **dict.fromkeys(
        SubmissionGate.fields, 1)}))
    assert SubmissionGate(consults, grace=timedelta(minutes=5))(pending) == []  # its request may be at it
    assert HTTP.get(f"{tc}/fhir/Task/{task_id}", headers=tokens["admin"]).status_code == 404
    assert [d["_id"] for d in SubmissionGate(consults, grace=timedelta(0))(pending)] == [f"{task_id}/1"]
    task = HTTP.get(f"{tc}/fhir/Task/{task_id}", headers=tokens["a"])
    assert task.status_code == 200 and task.json()["status"] == "requested", task.text
    assert task.json()["meta"]["versionId"] == "1"
    sr_id = task.json()["focus"]["reference"].split("/", 1)[1]
    assert HTTP.get(f"{tc}/fhir/ServiceRequest/{sr_id}", headers=tokens["a"]).status_code == 200
    assert HTTP.get(f"{tc}/fhir/Task/{task_id}", headers=tokens["dr"]).status_code == 200  # the hub's doctor
    # a second pass (another relay, a redelivery) changes nothing
    assert [d["_id"] for d in SubmissionGate(consults, grace=timedelta(0))(pending)] == [f"{task_id}/1"]
    assert db.Task_history.count_documents({"id": task_id}) == 1


# --------------------------------------------------------------------------- in-progress, hub scope, paging

def test_the_specialist_starting_the_consult_puts_the_task_in_progress(tc, tokens, db):
    sr_id, task_id = submitted(submit(tc, tokens))
    r = op(tc, task_id, "$start", "dr", tokens)  # not accepted yet
    assert r.status_code == 409 and "'requested'" in diag(r)
    assert op(tc, task_id, "$accept", "dr", tokens).status_code == 200
    assert op(tc, task_id, "$start", "a", tokens).status_code == 403  # the clinic does not start it
    assert op(tc, task_id, "$start", "other_hub", tokens).status_code == 404  # another hub's: as if missing
    r = op(tc, task_id, "$start", "dr", tokens)
    assert r.status_code == 200, r.text
    task = r.json()
    assert task["status"] == "in-progress" and task["owner"] == {"reference": "Practitioner/dr-0"}
    assert task["executionPeriod"]["start"]
    assert op(tc, task_id, "$start", "dr", tokens).status_code == 409  # once
    # the step is a link of the Task's chain, like every other step
    assert [link["state"] for link in db.consult_steps.find({"k": task_id}).sort("n", 1)] == [
        "requested", "accepted", "in-progress"]
    wl = HTTP.get(f"{tc}/fhir/Task/$worklist?status=in-progress&_count=500", headers=tokens["dr"]).json()
    assert task_id in {e["resource"]["id"] for e in wl["entry"]}
    # a question during the visit puts it on hold; the clinic's answer resumes it in progress
    r = op(tc, task_id, "$request-info", "dr", tokens, [{"name": "question", "valueString": "Siêu âm tim?"}])
    assert r.status_code == 200 and r.json()["status"] == "on-hold"
    r = op(tc, task_id, "$provide-info", "a", tokens, [{"name": "answer", "valueString": "EF 45%"}])
    assert r.status_code == 200 and r.json()["status"] == "in-progress"
    r = op(tc, task_id, "$complete", "dr", tokens, minutes())
    assert r.status_code == 200 and r.json()["status"] == "completed", r.text


def test_doctors_see_their_own_hubs_consults_not_those_of_a_patient_granted_to_them(tc, tokens):
    """Patient pab has a consult at HUB and one at another hub: the other hub's doctor reaches the
    patient (its own consult's grant) but sees only its own consult, in reads, searches and the worklist."""
    sr_1, task_1 = submitted(submit(tc, tokens, service_request(patient="Patient/pab")))
    other = service_request(patient="Patient/pab", performer=[{"reference": "Organization/bv-khac"}])
    sr_2, task_2 = submitted(submit(tc, tokens, other))
    assert op(tc, task_1, "$request-info", "dr", tokens,
              [{"name": "question", "valueString": "Xin điện tim?"}]).status_code == 200
    X, D = tokens["other_hub"], tokens["dr"]
    for rtype, mine, theirs in (("Task", task_2, task_1), ("ServiceRequest", sr_2, sr_1)):
        assert HTTP.get(f"{tc}/fhir/{rtype}/{mine}", headers=X).status_code == 200
        assert HTTP.get(f"{tc}/fhir/{rtype}/{theirs}", headers=X).status_code == 404  # as if it did not exist
        assert HTTP.get(f"{tc}/fhir/{rtype}/{theirs}/_history/1", headers=X).status_code == 404
        assert HTTP.get(f"{tc}/fhir/{rtype}/{theirs}/_history", headers=X).status_code == 404
        assert HTTP.get(f"{tc}/fhir/{rtype}/{theirs}", headers=D).status_code == 200
        assert HTTP.get(f"{tc}/fhir/{rtype}/{mine}", headers=D).status_code == 404
    found = HTTP.get(f"{tc}/fhir/Task?patient=Patient/pab&_count=500", headers=X).json()
    assert {e["resource"]["id"] for e in found["entry"]} == {task_2}
    found = HTTP.get(f"{tc}/fhir/ServiceRequest?subject=Patient/pab&_count=500", headers=X).json()
    assert {e["resource"]["id"] for e in found["entry"]} == {sr_2}
    found = HTTP.get(f"{tc}/fhir/Communication?based-on=ServiceRequest/{sr_1}", headers=X).json()
    assert found.get("entry", []) == []
    found = HTTP.get(f"{tc}/fhir/Communication?based-on=ServiceRequest/{sr_1}", headers=D).json()
    assert len(found["entry"]) == 1
    wl = HTTP.get(f"{tc}/fhir/Task/$worklist?_count=500", headers=X).json()
    assert {e["resource"]["id"] for e in wl["entry"]} == {task_2} and wl["total"] == 1
    wl = HTTP.get(f"{tc}/fhir/Task/$worklist?_count=500", headers=D).json()
    assert task_1 in {e["resource"]["id"] for e in wl["entry"]} and task_2 not in {
        e["resource"]["id"] for e in wl["entry"]}
    assert op(tc, task_1, "$accept", "other_hub", tokens).status_code == 404


def test_worklist_pages_walk_the_whole_ordered_list_once(tc, tokens):
    for priority in ("routine", "stat", "asap", "routine", "urgent", "stat", "asap"):
        submitted(submit(tc, tokens, service_request(priority=priority)))
    whole = HTTP.get(f"{tc}/fhir/Task/$worklist?_count=500", headers=tokens["dr"]).json()
    ids = [e["resource"]["id"] for e in whole["entry"]]
    assert whole["total"] == len(ids) >= 7 and len(set(ids)) == len(ids)
    walked, url, pages = [], f"{tc}/fhir/Task/$worklist?_count=3", 0
    while url:
        page = HTTP.get(url, headers=tokens["dr"]).json()
        assert page["total"] == whole["total"]
        walked += [e["resource"]["id"] for e in page.get("entry", [])]
        url = next((link["url"] for link in page["link"] if link["relation"] == "next"), None)
        pages += 1
    assert walked == ids and pages == -(-len(ids) // 3)
    beyond = HTTP.get(f"{tc}/fhir/Task/$worklist?_count=3&_offset=100000", headers=tokens["dr"]).json()
    assert beyond.get("entry", []) == [] and beyond["total"] == whole["total"]


def test_worklist_pages_are_a_keyset_consults_leaving_or_joining_shift_nothing(tc, tokens):
    """The ``next`` link is a cursor after the page's last row: a consult of an earlier page that is
    rejected, and a stat one submitted, between two pages take no consult off the pages to come nor show
    one twice; a cursor not made by the worklist is 400 with an OperationOutcome."""
    mine = {submitted(submit(tc, tokens, service_request(priority=priority)))[1]
            for priority in ("routine", "urgent", "asap", "routine", "stat", "urgent", "routine", "asap")}
    whole = HTTP.get(f"{tc}/fhir/Task/$worklist?_count=500", headers=tokens["dr"]).json()
    ids = [e["resource"]["id"] for e in whole["entry"]]
    # the first page ends one row after this test's first consult, which is rejected (the module's other
    # consults above it may be in states a reject refuses, or be other tests' to keep)
    k = next(i for i, tid in enumerate(ids) if tid in mine)
    first = HTTP.get(f"{tc}/fhir/Task/$worklist?_count={k + 2}", headers=tokens["dr"]).json()
    shown = [e["resource"]["id"] for e in first["entry"]]
    assert shown == ids[:k + 2]
    victim = ids[k]
    r = op(tc, victim, "$reject", "dr", tokens, [{"name": "reason", "valueString": "Không thuộc chuyên khoa"}])
    assert r.status_code == 200, r.text
    _, newcomer = submitted(submit(tc, tokens, service_request(priority="stat")))  # at the end of the stat ones
    url = next(link["url"] for link in first["link"] if link["relation"] == "next")
    assert "_cursor=" in url and "_offset" not in url
    walked = []
    while url:
        page = HTTP.get(url, headers=tokens["dr"]).json()
        assert page["total"] == whole["total"]  # one rejected, one submitted
        walked += [e["resource"]["id"] for e in page.get("entry", [])]
        url = next((link["url"] for link in page["link"] if link["relation"] == "next"), None)
    now = [e["resource"]["id"] for e in HTTP.get(f"{tc}/fhir/Task/$worklist?_count=500",
                                                   headers=tokens["dr"]).json()["entry"]]
    assert victim not in now and newcomer in now
    # the pages after the first: what the list holds now after its last row, each once, in order; every
    # consult the first answer had after it is there, none of the first page again
    assert walked == now[now.index(shown[-1]) + 1:]
    assert [i for i in walked if i != newcomer] == ids[k + 2:]
    for bad in ("abc", "x.y", ids[0], first["link"][-1]["url"].split("_cursor=")[-1][:-3] + "AAA"):
        r = HTTP.get(f"{tc}/fhir/Task/$worklist", params={"_cursor": bad}, headers=tokens["dr"])
        assert r.status_code == 400, bad
        assert r.json()["resourceType"] == "OperationOutcome" and "_cursor" in r.text


def test_the_worklist_read_at_once_is_the_per_priority_answer(tc, tokens, consults, monkeypatch):
    """A small worklist is read in one query and split by priority (workflow.WORKLIST_ONE_READ); a
    large one by a count and a read per priority: both give the same Tasks in the same order, the
    same total, page by page, for the hub's doctor and the requesting clinic."""
    from sen_shared.auth import Principal
    from sen_teleconsult import workflow

    for priority in ("asap", "routine", "stat", "urgent", "routine"):
        submitted(submit(tc, tokens, service_request(priority=priority)))
    who = [Principal(sub="dr", roles=frozenset({"doctor"}), facility=HUB),
           Principal(sub="cl", roles=frozenset({"clinic"}), facility=CLINIC_A)]
    for principal in who:
        for statuses in (["requested", "accepted", "on-hold", "in-progress"], ["requested"]):
            for offset, count in ((0, 500), (0, 3), (2, 3), (4, 2), (1000, 5)):
                def answer(principal=principal, statuses=statuses, offset=offset, count=count):
                    page, total = consults.worklist(principal, statuses=statuses, specialty=None, facility=None,
                                                    priority=None, offset=offset, count=count)
                    return [t["id"] for t, _ in page], [b for _, b in page], total

                monkeypatch.setattr(workflow, "WORKLIST_ONE_READ", 10_000)
                at_once = answer()
                # the read at once holds up to WORKLIST_ONE_READ Tasks (exactly as many: still one read), one
                # more is the per-priority path's (-1: always it), never a list cut at the read's limit
                for most in (at_once[2], at_once[2] - 1, -1):
                    monkeypatch.setattr(workflow, "WORKLIST_ONE_READ", most)
                    assert answer() == at_once, (principal.sub, statuses, offset, count, most)
            monkeypatch.setattr(workflow, "WORKLIST_ONE_READ", 10_000)
            rows, _ = consults.worklist_page(principal, statuses=statuses, specialty=None, facility=None,
                                             priority=None)
            for i in (0, 2, len(rows) - 2, len(rows) - 1):
                def keyset(principal=principal, statuses=statuses, after=rows[i][2]):
                    page, total = consults.worklist_page(principal, statuses=statuses, specialty=None,
                                                         facility=None, priority=None, count=3, after=after)
                    return [t["id"] for t, _, _ in page], total

                monkeypatch.setattr(workflow, "WORKLIST_ONE_READ", 10_000)
                at_once = keyset()
                assert at_once == ([t["id"] for t, _, _ in rows[i + 1:i + 4]], len(rows)), (principal.sub, i)
                monkeypatch.setattr(workflow, "WORKLIST_ONE_READ", -1)
                assert keyset() == at_once, (principal.sub, statuses, i)
        whole = consults.worklist(principal, statuses=["requested"], specialty=None, facility=None, priority=None)
        ranks = [workflow.rules.PRIORITY_RANK[t["priority"]] for t, _ in whole[0]]
        assert whole[1] >= 5 and ranks == sorted(ranks)


def test_the_open_worklist_matches_open_consults_only_and_closed_ones_on_request(tc, tokens, db):
    _, task_id = submitted(submit(tc, tokens, service_request(priority="stat")))
    open_tags = {"https://sen.vn/fhir/CodeSystem/consult-open|open",
                 f"https://sen.vn/fhir/CodeSystem/consult-open-at-hub|Organization/{HUB}",
                 f"https://sen.vn/fhir/CodeSystem/consult-open-from|Organization/{CLINIC_A}"}
    assert open_tags <= set(db.Task.find_one({"_id": task_id})["sp__tag"])
    for who in ("dr", "a", "admin"):
        wl = HTTP.get(f"{tc}/fhir/Task/$worklist?_count=500", headers=tokens[who]).json()
        assert task_id in {e["resource"]["id"] for e in wl["entry"]}, who
    assert op(tc, task_id, "$reject", "dr", tokens, [{"name": "reason", "valueString": "Không thuộc chuyên khoa"}]
              ).status_code == 200
    assert not open_tags & set(db.Task.find_one({"_id": task_id})["sp__tag"])  # the closing step took them off
    for who in ("dr", "a", "admin"):
        wl = HTTP.get(f"{tc}/fhir/Task/$worklist?_count=500", headers=tokens[who]).json()
        assert task_id not in {e["resource"]["id"] for e in wl.get("entry", [])}, who
        closed = HTTP.get(f"{tc}/fhir/Task/$worklist?status=rejected&_count=500", headers=tokens[who]).json()
        assert task_id in {e["resource"]["id"] for e in closed["entry"]}, who
    other = HTTP.get(f"{tc}/fhir/Task/$worklist?status=rejected&_count=500", headers=tokens["other_hub"]).json()
    assert task_id not in {e["resource"]["id"] for e in other.get("entry", [])}


# --------------------------------------------------------------------------- backfill of tags

CLINIC_A_STAFF = type("P", (), {"sub": "nv-an-binh", "roles": frozenset({"clinic"}), "facility": CLINIC_A,
                                "practitioner": None, "scopes": frozenset()})()


def _old_consult(consults, note: str) -> tuple[str, str]:
    """A consult of clinic A to the hub as the submission stored it before the tags existed: the
    ServiceRequest and Task versions 1 without hub or open-consult tags, then link 1 of its chain."""
    from sen_teleconsult.domain import consults as rules
    from sen_teleconsult.workflow import Actor

    sub = rules.check_submission(service_request(note=[{"text": note}]), clinic=f"Organization/{CLINIC_A}",
                                 default_hub=None)
    sr_id, task_id = str(uuid.uuid4()), str(uuid.uuid4())
    now = datetime.now(UTC).astimezone().replace(microsecond=0)
    due = now + timedelta(hours=24)
    sr = {**sub.service_request, "id": sr_id, "authoredOn": now.isoformat()}
    task = {**rules.new_task(sub, f"ServiceRequest/{sr_id}", requested=now.isoformat(), due=due.isoformat(),
                             district=None), "id": task_id}
    assert rules.hub_of(task) is None and rules.hub_of(sr) is None
    store = consults.store()
    store.create(sr, sr_id)
    store.create(task, task_id)
    facts = {"serviceRequest": f"ServiceRequest/{sr_id}", "task": f"Task/{task_id}", "patient": sub.patient,
             "requester": sub.requester, "hub": sub.hub, "priority": sub.priority, "specialty": sub.specialty,
             "district": None, "requestedAt": now.isoformat(), "dueAt": due.isoformat()}
    consults.start_chain(task_id, facts, task, Actor.of(CLINIC_A_STAFF))
    return sr_id, task_id


def test_tasks_and_appointments_stored_before_the_tags_are_tagged_by_the_backfill(tc, tokens, consults, db):
    """A consult and its Appointment stored the old way (no hub, open-consult or clinic tags: only
    admins could read the Appointment, and no doctor of the hub saw the Task): after the worker's
    backfill the hub's doctor reads both and the worklist lists the Task; a second run changes nothing."""
    from sen_teleconsult import backfill
    from sen_teleconsult.domain import availability as av
    from sen_teleconsult.domain import consults as rules

    sr_id, task_id = _old_consult(consults, "Hồ sơ cũ, chưa gắn nhãn")
    store = consults.store()
    # its Appointment as booked before the party tags: on a slot of the hub's schedule
    schedule = av.schedule_resource("lich-cu", practitioner="Practitioner/dr-0", organization=f"Organization/{HUB}",
                                    specialty_code=CARDIO, specialty_text="Tim mạch",
                                    windows=[(["mon", "tue", "wed", "thu", "fri", "sat", "sun"], "07:00:00",
                                              "17:00:00")], slot_minutes=30)
    r = HTTP.put(f"{tc}/fhir/Schedule/lich-cu", content=json.dumps(schedule), headers=tokens["admin"])
    assert r.status_code in (200, 201), r.text
    start = datetime.now(av.TZ) + timedelta(days=2)
    slot = next(iter(av.slots_between(av.from_schedule(schedule), start, start + timedelta(days=1))))
    appt_id = str(uuid.uuid4())
    appt = {"resourceType": "Appointment", "id": appt_id, "status": "booked",
            "start": slot.start.isoformat(), "end": slot.end.isoformat(),
            "slot": [{"reference": f"Slot/{slot.id}"}], "basedOn": [{"reference": f"ServiceRequest/{sr_id}"}],
            "participant": [{"actor": {"reference": "Patient/pa"}, "status": "accepted"},
                            {"actor": {"reference": "Practitioner/dr-0"}, "status": "accepted"}]}
    w = store.prepare_create(appt, appt_id)
    w.doc["sq"] = 1
    store.apply(w)

    def reads(who: str) -> tuple[int, int]:
        return (HTTP.get(f"{tc}/fhir/Task/{task_id}", headers=tokens[who]).status_code,
                HTTP.get(f"{tc}/fhir/Appointment/{appt_id}", headers=tokens[who]).status_code)

    def listed() -> bool:
        wl = HTTP.get(f"{tc}/fhir/Task/$worklist?_count=500", headers=tokens["dr"]).json()
        return task_id in {e["resource"]["id"] for e in wl.get("entry") or []}

    assert reads("admin") == (200, 200)
    assert reads("dr")[0] != 200 and reads("dr")[1] != 200 and reads("a")[1] != 200
    assert not listed()

    assert task_id in backfill.untagged_tasks(db) and appt_id in backfill.untagged_appointments(db)
    counts = backfill.run_once(consults)
    assert counts is not None and counts["tasks"] >= 1 and counts["appointments"] >= 1 and not counts["failed"]
    assert reads("dr") == (200, 200)
    assert reads("a") == (200, 200)
    assert reads("b")[1] == 404 and reads("other_hub")[1] == 404
    assert listed()
    got = HTTP.get(f"{tc}/fhir/Task/{task_id}", headers=tokens["dr"]).json()
    assert got["status"] == "requested" and got["meta"]["versionId"] == "2"
    assert {t["system"] for t in got["meta"]["tag"]} >= {rules.HUB_TAG, rules.OPEN_TAG, rules.OPEN_AT_HUB_TAG}
    # once done, a worker that starts does not run it again; and run again it would change nothing
    assert backfill.run_once(consults) is None
    assert backfill.backfill(consults) == {"tasks": 0, "appointments": 0, "service_requests": 0,
                                           "communications": 0, "no_hub": 0, "no_requester": 0, "failed": 0}
    assert db.Task_history.count_documents({"id": task_id}) == 2
    assert db.Appointment_history.count_documents({"id": appt_id}) == 2
    # and the consult goes on from its tagged version
    r = op(tc, task_id, "$accept", "dr", tokens)
    assert r.status_code == 200 and r.json()["meta"]["versionId"] == "3", r.text


def test_service_requests_and_communications_stored_before_the_tags_are_tagged_by_the_backfill(
        tc, tokens, consults, db):
    """A consult's ServiceRequest and a Communication of its thread stored without the hub tag (no
    doctor of the hub could read them), and the clinic's answer stored with the hub tag but without
    the requesting-clinic tag (sent by the clinic user's Practitioner: the clinic could not read or
    find it): after the backfill the hub's doctor and the clinic read and find all, another hub and
    another clinic still not; each got one new version; run again, nothing."""
    from sen_teleconsult import backfill
    from sen_teleconsult.domain import consults as rules

    sr_id, task_id = _old_consult(consults, "Hồ sơ cũ: yêu cầu và trao đổi chưa gắn nhãn")
    comm_id = str(uuid.uuid4())  # a question of the hub's doctor as $request-info stored it before the tags
    consults.store().create({
        "resourceType": "Communication", "id": comm_id, "status": "completed",
        "basedOn": [{"reference": f"ServiceRequest/{sr_id}"}], "about": [{"reference": f"Task/{task_id}"}],
        "subject": {"reference": "Patient/pa"}, "sent": "2025-03-14T09:00:00+07:00",
        "sender": {"reference": "Practitioner/dr-0"}, "recipient": [{"reference": f"Organization/{CLINIC_A}"}],
        "payload": [{"contentString": "Xin bổ sung điện tâm đồ lúc vào viện."}]}, comm_id)

    # the clinic's answer as $provide-info stored it before the requester tag: the hub's tag, sent by
    # the Practitioner the clinic user's token named, to the doctor (no clinic party at all)
    answer_id = str(uuid.uuid4())
    consults.store().create(rules.tag_hub({
        "resourceType": "Communication", "id": answer_id, "status": "completed",
        "basedOn": [{"reference": f"ServiceRequest/{sr_id}"}], "about": [{"reference": f"Task/{task_id}"}],
        "inResponseTo": [{"reference": f"Communication/{comm_id}"}],
        "subject": {"reference": "Patient/pa"}, "sent": "2025-03-14T09:20:00+07:00",
        "sender": {"reference": "Practitioner/ys-an-binh"}, "recipient": [{"reference": "Practitioner/dr-0"}],
        "payload": [{"contentString": "Điện tâm đồ lúc vào viện: ST chênh lên DII, DIII."}]},
        f"Organization/{HUB}"), answer_id)

    def reads(who: str, comm: str = comm_id) -> tuple[int, int]:
        return (HTTP.get(f"{tc}/fhir/ServiceRequest/{sr_id}", headers=tokens[who]).status_code,
                HTTP.get(f"{tc}/fhir/Communication/{comm}", headers=tokens[who]).status_code)

    # before the backfill: an untagged message is read by the clinic it names (sender or recipient),
    # the answer its Practitioner sent is not, and a clinic's search finds neither (it goes by the tag)
    assert reads("admin") == (200, 200) and reads("a") == (200, 200)
    assert reads("dr") == (404, 404)
    assert reads("a", answer_id)[1] == 404 and reads("dr", answer_id)[1] == 200
    assert _thread(tc, tokens, "a", sr_id) == {}
    assert sr_id in backfill.untagged_service_requests(db)
    assert {(comm_id, f"ServiceRequest/{sr_id}"), (answer_id, f"ServiceRequest/{sr_id}")} \
        <= set(backfill.untagged_communications(db))

    counts = backfill.backfill(consults)
    assert counts["service_requests"] >= 1 and counts["communications"] >= 2 and not counts["failed"]
    for comm in (comm_id, answer_id):
        assert reads("dr", comm) == (200, 200) and reads("a", comm) == (200, 200)
        assert reads("a_pr", comm) == (200, 200)
        assert reads("other_hub", comm) == (404, 404) and reads("b", comm) == (404, 404)
    assert set(_thread(tc, tokens, "a", sr_id)) == set(_thread(tc, tokens, "dr", sr_id)) == {comm_id, answer_id}
    assert _thread(tc, tokens, "b", sr_id) == {} and _thread(tc, tokens, "other_hub", sr_id) == {}
    for rtype, rid in (("ServiceRequest", sr_id), ("Communication", comm_id), ("Communication", answer_id)):
        got = HTTP.get(f"{tc}/fhir/{rtype}/{rid}", headers=tokens["dr"]).json()
        assert got["meta"]["versionId"] == "2" and rules.hub_of(got) == f"Organization/{HUB}"
        assert got["status"] in ("active", "completed")  # the status as it was
        if rtype == "Communication":
            assert rules.requester_of(got) == f"Organization/{CLINIC_A}"
    # version 1 of the answer (untagged) is judged by its current version, as its read is
    assert HTTP.get(f"{tc}/fhir/Communication/{answer_id}/_history/1", headers=tokens["a"]).status_code == 200
    assert HTTP.get(f"{tc}/fhir/Communication/{answer_id}/_history/1", headers=tokens["b"]).status_code == 404
    again = backfill.backfill(consults)
    assert again["service_requests"] == 0 and again["communications"] == 0
    assert db.ServiceRequest_history.count_documents({"id": sr_id}) == 2
    assert db.Communication_history.count_documents({"id": comm_id}) == 2
    assert db.Communication_history.count_documents({"id": answer_id}) == 2
    # the reminders' Communications (no sender) are not the consult's thread: left as they are
    assert all(not cid.startswith("rem-") for cid, _ in backfill.untagged_communications(db))


@pytest.mark.parametrize("first", ["retag", "status step"])
def test_a_status_step_racing_the_retag_of_its_service_request_keeps_both_versions(
        tc, tokens, consults, db, monkeypatch, first):
    """The clinic cancels an old consult (its ServiceRequest becomes revoked) while the backfill tags
    the same ServiceRequest. Both claim version 2 of it by its history insert; the first holds its
    claim until the other has lost it. Exactly one wins version 2, the loser decides again and puts
    its change on version 3: the ServiceRequest ends revoked AND tagged, nothing is lost."""
    from sen_shared.fhir import store as store_mod
    from sen_shared.fhir.body import unpack
    from sen_shared.fhir.outcome import FhirError
    from sen_teleconsult import backfill
    from sen_teleconsult.domain import consults as rules
    from sen_teleconsult.workflow import Actor

    sr_id, task_id = _old_consult(consults, f"Hồ sơ cũ: hủy trong lúc gắn nhãn ({first})")
    hub = f"Organization/{HUB}"

    def retag() -> None:
        assert backfill.retag_by_claim(consults, "ServiceRequest", sr_id, hub) is True

    def cancel() -> None:
        consults.cancel(task_id, Actor.of(CLINIC_A_STAFF), "Bệnh nhân đã chuyển viện")

    winner, loser = (retag, cancel) if first == "retag" else (cancel, retag)
    lost, errors, threads = threading.Event(), [], []
    original = store_mod.Store.claim_version

    def claim_version(self, w, extra=None):
        try:
            return original(self, w, extra)
        except FhirError as err:
            if (w.resource_type, w.rid, w.version, err.status) == ("ServiceRequest", sr_id, 2, 409):
                lost.set()
            raise

    def run_loser() -> None:
        try:
            loser()
        except BaseException as err:  # noqa: BLE001 - reported by the test below
            errors.append(err)

    def after_claim(w) -> None:  # the winner holds version 2 claimed, its current write not yet made
        if (w.resource_type, w.rid, w.version) == ("ServiceRequest", sr_id, 2) and not threads:
            threads.append(threading.Thread(target=run_loser))
            threads[0].start()
            assert lost.wait(30), "the other writer never claimed version 2"

    monkeypatch.setattr(store_mod.Store, "claim_version", claim_version)
    monkeypatch.setattr(store_mod, "after_claim", after_claim)
    winner()
    assert threads, "the winner never claimed version 2"
    threads[0].join(30)
    assert not errors, errors
    assert lost.is_set()

    history = {d["v"]: unpack(d)["res"] for d in db.ServiceRequest_history.find({"id": sr_id})}
    assert sorted(history) == [1, 2, 3]  # one version each, none lost
    v2, v3 = history[2], history[3]
    if first == "retag":  # version 2: the tag on the status as it was; version 3: the cancel on top
        assert (v2["status"], rules.hub_of(v2)) == ("active", hub)
    else:  # version 2: the cancel (untagged, as it found it); version 3: the tag on top
        assert (v2["status"], rules.hub_of(v2)) == ("revoked", None)
    assert (v3["status"], rules.hub_of(v3)) == ("revoked", hub)
    got = HTTP.get(f"{tc}/fhir/ServiceRequest/{sr_id}", headers=tokens["dr"])
    assert got.status_code == 200 and got.json()["status"] == "revoked" and got.json()["meta"]["versionId"] == "3"
    assert HTTP.get(f"{tc}/fhir/Task/{task_id}", headers=tokens["a"]).json()["status"] == "cancelled"
