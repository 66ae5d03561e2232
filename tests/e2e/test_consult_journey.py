"""The consult journey end to end, through HTTP only, with the processes `make run` starts.

The EHR and teleconsult run as in production (gunicorn with the uvicorn worker class, each
service's worker process: consumers, outbox relay, sweeps), after their index step, and the demo
province is seeded with ``deploy/local/seed.py`` (the EHR's facilities, practitioners and
patients; the hub specialists' Schedules). Then a clinic submits a consult, a hub doctor
accepts it, the clinic finds a slot with the specialist, holds it and books it, the doctor
completes the consult with the minutes before the visit's time (the visit is then cancelled, its slot
free again: only a visit that has begun is fulfilled), and the EHR record holds them: an Encounter of class
VR and a Composition, made from ``teleconsult.consult.completed``. And the referral grant: the accepting
doctor reads the patient's record through the grant his acceptance sent over RabbitMQ to the EHR's worker,
a doctor of another facility does not, and the grant outlives the consult's completion or cancellation.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sen_shared.auth import issue_dev_token

from tests.support import free_port, stop_processes, wait_ready

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ("ehr", "teleconsult")
FJ = "application/fhir+json"
ICD10 = "http://hl7.org/fhir/sid/icd-10"
HUB, CLINIC, PATIENT = "bvdk-dong-thap", "tyt-my-hiep", "bn-0001"  # from deploy/local/demo-province.json
DOCTOR, CARDIO = "bs-nguyen-van-an", "394579002"
pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def province(base_env, run_id, tmp_path_factory, mongo_client):
    logs = tmp_path_factory.mktemp("journey")
    ports = {svc: free_port() for svc in SERVICES}
    urls = {svc: f"http://127.0.0.1:{port}" for svc, port in ports.items()}
    bindir = Path(sys.executable).parent
    envs = {svc: {**os.environ, **base_env, "SEN_DB": f"sen_t{run_id}_journey_{svc}", "HOST": "127.0.0.1",
                  "PORT": str(ports[svc]), "WEB_CONCURRENCY": "1", "LOG_LEVEL": "INFO",
                  "SEN_EHR_URL": urls["ehr"], "SEN_TELECONSULT_URL": urls["teleconsult"],
                  "SEN_NOTIFY_FILE": str(logs / "reminders.jsonl"), "SEN_SCHEDULING_SWEEP_SECONDS": "1",
                  "SEN_TELECONSULT_HOLD_MINUTES": "0.25",  # 15 s: the worker's sweep is seen releasing one
                  "PROMETHEUS_MULTIPROC_DIR": str(logs / f"prom-{svc}")}
            for svc in SERVICES}
    procs: dict[str, subprocess.Popen] = {}
    try:
        for svc in SERVICES:  # as deploy/local/run.sh: indexes, then web and worker
            subprocess.run([sys.executable, "-m", f"sen_{svc}.indexes"], env=envs[svc], cwd=ROOT, check=True,
                           capture_output=True, timeout=300)
            procs[f"{svc}-web"] = subprocess.Popen(
                [str(bindir / "gunicorn"), "-c", str(ROOT / "deploy" / "gunicorn.conf.py"), f"sen_{svc}.asgi:app"],
                env=envs[svc], stdout=open(logs / f"{svc}-web.log", "wb"), stderr=subprocess.STDOUT, cwd=ROOT)
            procs[f"{svc}-worker"] = subprocess.Popen(
                [sys.executable, "-m", f"sen_{svc}.worker"], env=envs[svc],
                stdout=open(logs / f"{svc}-worker.log", "wb"), stderr=subprocess.STDOUT, cwd=ROOT)
        for svc in SERVICES:
            wait_ready(urls[svc], proc=procs[f"{svc}-web"], log=logs / f"{svc}-web.log")
        seeded = subprocess.run([sys.executable, "deploy/local/seed.py", "--ehr", urls["ehr"],
                                 "--teleconsult", urls["teleconsult"]], env=envs["ehr"], cwd=ROOT,
                                capture_output=True, text=True, timeout=120)
        assert seeded.returncode == 0, seeded.stderr
        yield {"urls": urls, "logs": logs, "procs": procs, "seed": seeded.stderr}
    finally:
        stop_processes(procs)
        for svc in SERVICES:
            mongo_client.drop_database(f"sen_t{run_id}_journey_{svc}")


def _headers(dev_key: Path, role: str, **claims: Any) -> dict[str, str]:
    return {"Authorization": f"Bearer {issue_dev_token(dev_key, role, **claims)}", "Content-Type": FJ, "Accept": FJ}


def _post(url: str, body: Any, headers: dict[str, str]) -> httpx.Response:
    return httpx.post(url, content=json.dumps(body), headers=headers, timeout=30)


def _params(*items: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Parameters", "parameter": list(items)}


def _minutes(appointment: str, start: str, end: str, *, hub: str = HUB, clinic: str = CLINIC, doctor: str = DOCTOR,
             clinician: str = "ys-vo-minh-tam", patient: str = PATIENT) -> dict[str, Any]:
    """The minutes of a consult at ``hub`` asked by ``clinic`` (the demo province's unless named), chaired by
    ``doctor`` with the clinic's ``clinician``."""
    return _params(
        {"name": "start", "valueDateTime": start}, {"name": "end", "valueDateTime": end},
        {"name": "site", "valueReference": {"reference": f"Organization/{hub}"}},
        {"name": "site", "valueReference": {"reference": f"Organization/{clinic}"}},
        {"name": "participant", "part": [{"name": "who", "valueReference": {"reference": f"Practitioner/{doctor}"}},
                                         {"name": "role", "valueString": "Chủ trì hội chẩn"}]},
        {"name": "participant", "part": [
            {"name": "who", "valueReference": {"reference": f"Practitioner/{clinician}"}},
            {"name": "role", "valueString": "Y sĩ điều trị tuyến xã"}]},
        {"name": "patient-identity", "valueString": f"Nữ, 58 tuổi, mã BN {patient}"},
        {"name": "history", "valueString": "Hồi hộp, khó thở khi gắng sức 3 tháng nay."},
        {"name": "findings-clinical", "valueString": "Mạch 118 lần/phút, không đều; HA 130/80."},
        {"name": "findings-laboratory", "valueString": "TSH 0,05 mUI/L."},
        {"name": "discussion", "valueString": "Rung nhĩ đáp ứng thất nhanh, nghĩ do cường giáp."},
        {"name": "conclusion", "valueCoding": {"system": ICD10, "code": "I48.9", "display": "Rung nhĩ"}},
        {"name": "recommendations", "valueString": "Kiểm soát tần số tim, điều trị cường giáp, tái khám sau 2 tuần."},
        {"name": "chair", "valueReference": {"reference": f"Practitioner/{doctor}"}},
        {"name": "appointment", "valueReference": {"reference": appointment}},
    )


def _wait(predicate, seconds: float = 60.0) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = predicate()
        if found:
            return found
        time.sleep(0.5)
    raise AssertionError("not reached in time")


def test_submit_accept_find_hold_book_complete_and_the_record_holds_the_minutes(province, dev_key, mongo_client,
                                                                                 run_id):
    tc, ehr = province["urls"]["teleconsult"], province["urls"]["ehr"]
    assert "schedules" in province["seed"]
    clinic = _headers(dev_key, "clinic", facility=CLINIC, sub="nv-my-hiep")
    doctor = _headers(dev_key, "doctor", facility=HUB, practitioner=DOCTOR, sub=DOCTOR)
    admin = _headers(dev_key, "admin")

    # the clinic submits
    sr = {"resourceType": "ServiceRequest", "status": "active", "intent": "order", "priority": "urgent",
          "subject": {"reference": f"Patient/{PATIENT}"},
          "reasonCode": [{"coding": [{"system": ICD10, "code": "I48.9", "display": "Rung nhĩ"}]}],
          "note": [{"text": "Nhịp tim nhanh không đều, xin ý kiến điều trị?"}],
          "performer": [{"reference": f"Organization/{HUB}"}],
          "performerType": {"coding": [{"system": "http://snomed.info/sct", "code": CARDIO}], "text": "Tim mạch"}}
    r = _post(f"{tc}/fhir/ServiceRequest/$submit", sr, clinic)
    assert r.status_code == 201, r.text
    ids = {e["resource"]["resourceType"]: e["resource"]["id"] for e in r.json()["entry"]}
    sr_ref, task_id = f"ServiceRequest/{ids['ServiceRequest']}", ids["Task"]

    # a hub doctor accepts
    r = _post(f"{tc}/fhir/Task/{task_id}/$accept", _params(), doctor)
    assert r.status_code == 200, r.text

    # the clinic finds a slot with the seeded cardiologist, holds it, books it
    now = datetime.now().astimezone()
    r = _post(f"{tc}/fhir/Appointment/$find", _params(
        {"name": "start", "valueDateTime": now.isoformat(timespec="seconds")},
        {"name": "end", "valueDateTime": (now + timedelta(days=14)).isoformat(timespec="seconds")},
        {"name": "specialty", "valueCode": CARDIO},
        {"name": "patient-reference", "valueReference": {"reference": f"Patient/{PATIENT}"}},
        {"name": "service-request", "valueReference": {"reference": sr_ref}},
        {"name": "_count", "valueInteger": 3}), clinic)
    assert r.status_code == 200, r.text
    proposals = [e["resource"] for e in r.json()["entry"]]
    assert proposals and all(p["participant"][-1]["actor"]["reference"] == f"Practitioner/{DOCTOR}"
                             for p in proposals)
    proposal = proposals[0]
    assert proposal["basedOn"] == [{"reference": sr_ref}]
    r = _post(f"{tc}/fhir/Appointment/$hold", _params({"name": "appointment-resource", "resource": proposal}), clinic)
    assert r.status_code == 200, r.text
    held = r.json()["entry"][0]["resource"]
    assert held["status"] == "pending"
    slot = httpx.get(f"{tc}/fhir/{proposal['slot'][0]['reference']}", headers=clinic, timeout=30).json()
    assert slot["status"] == "busy-tentative"
    r = _post(f"{tc}/fhir/Appointment/$book", _params(
        {"name": "appointment-reference", "valueReference": {"reference": f"Appointment/{held['id']}"}}), clinic)
    assert r.status_code == 200, r.text
    booked = r.json()["entry"][0]["resource"]
    assert booked["status"] == "booked"
    assert any(e["url"].endswith("appointment-video-room") for e in booked["extension"])
    assert httpx.get(f"{tc}/fhir/{proposal['slot'][0]['reference']}", headers=clinic,
                     timeout=30).json()["status"] == "busy"

    # the doctor starts the consult (reviews the record): in progress; the visit is still to come
    r = _post(f"{tc}/fhir/Task/{task_id}/$start", _params(), doctor)
    assert r.status_code == 200 and r.json()["status"] == "in-progress", r.text

    # the doctor answers from the record before the visit's time and signs the minutes now: the consult
    # is complete, and the visit still to come is cancelled (its slot offered again), not fulfilled
    signed = datetime.now().astimezone()
    r = _post(f"{tc}/fhir/Task/{task_id}/$complete",
              _minutes(f"Appointment/{booked['id']}", (signed - timedelta(minutes=30)).isoformat(timespec="seconds"),
                       signed.isoformat(timespec="seconds")), doctor)
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "completed"
    appt = httpx.get(f"{tc}/fhir/Appointment/{booked['id']}", headers=admin, timeout=30).json()
    assert appt["status"] == "cancelled" and appt["cancelationReason"]["text"], appt
    assert httpx.get(f"{tc}/fhir/{proposal['slot'][0]['reference']}", headers=clinic,
                     timeout=30).json()["status"] == "free"
    task = httpx.get(f"{tc}/fhir/Task/{task_id}", headers=clinic, timeout=30).json()
    assert task["status"] == "completed"  # the requesting clinic sees the result

    # the EHR record holds the minutes: an Encounter of class VR and a Composition
    def encounter() -> list[dict[str, Any]]:
        r = httpx.get(f"{ehr}/fhir/Encounter?subject=Patient/{PATIENT}", headers=admin, timeout=30)
        return [e["resource"] for e in r.json().get("entry", []) if e["resource"]["resourceType"] == "Encounter"]

    encounters = _wait(encounter, 90)
    assert encounters[0]["class"]["code"] == "VR"
    r = httpx.get(f"{ehr}/fhir/Composition?subject=Patient/{PATIENT}", headers=admin, timeout=30)
    compositions = [e["resource"] for e in r.json().get("entry", []) if e["resource"]["resourceType"] == "Composition"]
    assert len(compositions) == 1
    text = json.dumps(compositions[0], ensure_ascii=False)
    assert "I48.9" in text and "Kiểm soát tần số tim" in text

    # the booking's event left through the worker's outbox relay
    links = mongo_client[f"sen_t{run_id}_journey_teleconsult"]["slot_links"]
    assert _wait(lambda: links.find_one({"ap": booked["id"], "st": "booked", "outbox_pending": False}), 60)
    for name, proc in province["procs"].items():
        assert proc.poll() is None, f"{name} exited"


def test_the_worker_releases_a_hold_nobody_confirms(province, dev_key):
    tc = province["urls"]["teleconsult"]
    clinic = _headers(dev_key, "clinic", facility=CLINIC, sub="nv-my-hiep")
    now = datetime.now().astimezone()
    r = _post(f"{tc}/fhir/Appointment/$find", _params(
        {"name": "start", "valueDateTime": (now + timedelta(days=3)).isoformat(timespec="seconds")},
        {"name": "end", "valueDateTime": (now + timedelta(days=17)).isoformat(timespec="seconds")},
        {"name": "specialty", "valueCode": "394583002"}, {"name": "_count", "valueInteger": 1}), clinic)
    proposal = r.json()["entry"][0]["resource"]
    r = _post(f"{tc}/fhir/Appointment/$hold", _params({"name": "appointment-resource", "resource": proposal}), clinic)
    held = r.json()["entry"][0]["resource"]
    slot = proposal["slot"][0]["reference"]
    assert httpx.get(f"{tc}/fhir/{slot}", headers=clinic, timeout=30).json()["status"] == "busy-tentative"

    def released() -> bool:
        appt = httpx.get(f"{tc}/fhir/Appointment/{held['id']}", headers=_headers(dev_key, "admin"), timeout=30)
        return appt.json()["status"] == "cancelled"

    _wait(released, 90)  # the sweep's free link made the Appointment cancelled (nobody else claimed it)
    assert httpx.get(f"{tc}/fhir/{slot}", headers=clinic, timeout=30).json()["status"] == "free"


def _submitted(tc: str, clinic: dict[str, str], patient: str) -> tuple[str, str]:
    """A consult about ``patient`` submitted by the demo clinic to the hub: (ServiceRequest ref, Task id)."""
    sr = {"resourceType": "ServiceRequest", "status": "active", "intent": "order", "priority": "routine",
          "subject": {"reference": f"Patient/{patient}"},
          "reasonCode": [{"coding": [{"system": ICD10, "code": "I10", "display": "Tăng huyết áp"}]}],
          "note": [{"text": "Huyết áp khó kiểm soát, xin ý kiến?"}],
          "performer": [{"reference": f"Organization/{HUB}"}]}
    r = _post(f"{tc}/fhir/ServiceRequest/$submit", sr, clinic)
    assert r.status_code == 201, r.text
    ids = {e["resource"]["resourceType"]: e["resource"]["id"] for e in r.json()["entry"]}
    return f"ServiceRequest/{ids['ServiceRequest']}", ids["Task"]


def test_the_accepting_doctor_reads_the_referred_record_and_the_grant_lasts_its_days_past_the_consult(
        province, dev_key, mongo_client, run_id):
    """Issue 14's referral grant through every process, as `make run` starts them: a hub doctor accepts a
    consult; the step's ``teleconsult.consult.accepted`` and ``teleconsult.referral.granted`` leave by
    teleconsult's outbox relay over the real RabbitMQ; the EHR worker's consumer (``ehr.referral-grants``)
    stores the grant; the doctor then reads the patient's record over HTTP. A doctor neither of the hub nor
    assigned is answered 404 as for an id never stored. The grant is the accepting doctor's own (his
    ``Practitioner`` reference: he reads it signed in at another facility too), and it lasts
    ``SEN_REFERRAL_GRANT_DAYS`` from the acceptance whatever becomes of the consult: completed or cancelled,
    the record stays readable (the EHR README, *Access and audit*).

    The hub's other doctors read the patient from the submission on, through the grant the submission
    gives the hub Organization (they triage with the record: teleconsult README, *Events*)."""
    tc, ehr = province["urls"]["teleconsult"], province["urls"]["ehr"]
    clinic = _headers(dev_key, "clinic", facility=CLINIC, sub="nv-my-hiep")
    doctor = _headers(dev_key, "doctor", facility=HUB, practitioner=DOCTOR, sub=DOCTOR)
    colleague = _headers(dev_key, "doctor", facility=HUB, practitioner="bs-tran-thi-bich", sub="bs-tran-thi-bich")
    # the accepting doctor signed in at another facility: only a grant to him personally lets him in
    away = _headers(dev_key, "doctor", facility="ttyt-huyen-cao-lanh", practitioner=DOCTOR, sub=DOCTOR)
    stranger = _headers(dev_key, "doctor", facility="ttyt-huyen-cao-lanh", practitioner="bs-pham-thu-ha",
                        sub="bs-pham-thu-ha")  # a doctor of another facility, not assigned
    ehr_db = mongo_client[f"sen_t{run_id}_journey_ehr"]
    steps = mongo_client[f"sen_t{run_id}_journey_teleconsult"]["consult_steps"]

    def read(who: dict[str, str], patient: str) -> httpx.Response:
        return httpx.get(f"{ehr}/fhir/Patient/{patient}", headers=who, timeout=30)

    def hidden(who: dict[str, str], patient: str) -> None:
        """404, the very answer an id never stored gets."""
        r, unknown = read(who, patient), read(who, "bn-never-stored")
        assert r.status_code == 404 == unknown.status_code, r.text
        assert r.text.replace(patient, "?") == unknown.text.replace("bn-never-stored", "?")

    for patient, closing in (("bn-0002", "$complete"), ("bn-0007", "$cancel")):
        for who in (doctor, colleague, away, stranger):
            hidden(who, patient)  # a clinic's patient: no hub doctor reads it before a consult
        sr_ref, task_id = _submitted(tc, clinic, patient)
        _wait(lambda: read(colleague, patient).status_code == 200, 90)  # the hub's grant: triage with the record
        hidden(away, patient)  # not the doctor's own yet
        hidden(stranger, patient)

        r = _post(f"{tc}/fhir/Task/{task_id}/$accept", _params(), doctor)
        assert r.status_code == 200 and r.json()["owner"]["reference"] == f"Practitioner/{DOCTOR}", r.text
        # the step's two events went out through the relay; the EHR's consumer stored the doctor's grant
        link = _wait(lambda: steps.find_one({"k": task_id, "op": "$accept", "outbox_pending": False}), 60)
        assert link is not None
        grant = _wait(lambda: ehr_db["grants"].find_one({"grantee": f"Practitioner/{DOCTOR}", "reason": sr_ref}), 90)
        assert grant["patient"] == f"Patient/{patient}"
        accepted = datetime.fromisoformat(json.loads(r.text)["executionPeriod"]["start"])
        assert grant["expires"].astimezone() - accepted > timedelta(days=29)  # SEN_REFERRAL_GRANT_DAYS (30)
        assert read(doctor, patient).status_code == 200
        assert read(away, patient).json()["id"] == patient  # his own grant, wherever he signs in
        hidden(stranger, patient)  # not of the hub, not assigned: hidden

        # the consult ends; the grant outlives it until it expires
        if closing == "$complete":
            now = datetime.now().astimezone()
            minutes = _minutes("", (now - timedelta(minutes=20)).isoformat(timespec="seconds"),
                               now.isoformat(timespec="seconds"), patient=patient)
            minutes["parameter"] = [p for p in minutes["parameter"] if p["name"] != "appointment"]  # no visit
            r = _post(f"{tc}/fhir/Task/{task_id}/$complete", minutes, doctor)
        else:
            r = _post(f"{tc}/fhir/Task/{task_id}/$cancel", _params({"name": "reason", "valueString": "Đã chuyển viện"}),
                      clinic)
        assert r.status_code == 200 and r.json()["status"] in ("completed", "cancelled"), r.text
        assert _wait(lambda: steps.find_one({"k": task_id, "op": closing, "outbox_pending": False}), 60)
        assert read(doctor, patient).status_code == 200
        assert read(away, patient).status_code == 200
        hidden(stranger, patient)
