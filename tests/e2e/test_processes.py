"""Every service started as in production: gunicorn (uvicorn worker class, no
preload) for web and the worker process, against the real FerretDB and RabbitMQ.
All four answer /readyz; tokens are enforced over real HTTP; SIGTERM stops them."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from sen_shared.auth import TokenVerifier

from tests.support import stop_processes
from tests.support import wait_ready as wait_url

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ["ehr", "teleconsult", "billing", "portal"]
pytestmark = pytest.mark.integration


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def suite(base_env, run_id, tmp_path_factory, mongo_client):
    logs = tmp_path_factory.mktemp("logs")
    procs: dict[str, subprocess.Popen] = {}
    ports = {svc: free_port() for svc in SERVICES}
    bindir = Path(sys.executable).parent
    for svc in SERVICES:
        env = {**os.environ, **base_env, "SEN_DB": f"sen_t{run_id}_e2e_{svc}", "HOST": "127.0.0.1",
               "PORT": str(ports[svc]), "WEB_CONCURRENCY": "1", "LOG_LEVEL": "INFO",
               "PROMETHEUS_MULTIPROC_DIR": str(logs / f"prom-{svc}")}
        procs[f"{svc}-web"] = subprocess.Popen(
            [str(bindir / "gunicorn"), "-c", str(ROOT / "deploy" / "gunicorn.conf.py"), f"sen_{svc}.asgi:app"],
            env=env, stdout=open(logs / f"{svc}-web.log", "wb"), stderr=subprocess.STDOUT, cwd=ROOT)
        procs[f"{svc}-worker"] = subprocess.Popen(
            [sys.executable, "-m", f"sen_{svc}.worker"],
            env=env, stdout=open(logs / f"{svc}-worker.log", "wb"), stderr=subprocess.STDOUT, cwd=ROOT)
    try:
        yield {"ports": ports, "procs": procs, "logs": logs}
    finally:
        stop_processes(procs)
        for svc in SERVICES:
            mongo_client.drop_database(f"sen_t{run_id}_e2e_{svc}")


def wait_ready(port: int) -> httpx.Response:
    """The service on ``port`` answering its /readyz with 200 (tests.support.wait_ready): that answer."""
    return wait_url(f"http://127.0.0.1:{port}")


def test_all_four_services_are_ready(suite):
    for svc, port in suite["ports"].items():
        r = wait_ready(port)
        assert r.json()["service"] == svc
        assert r.json()["checks"] == {"mongodb": "ok", "broker": "ok"}
    for name, proc in suite["procs"].items():
        assert proc.poll() is None, f"{name} exited: {(suite['logs'] / (name + '.log')).read_text()[-2000:]}"


def test_tokens_are_enforced_over_http(suite, dev_key):
    from sen_shared.auth import issue_dev_token

    port = suite["ports"]["portal"]
    wait_ready(port)
    base = f"http://127.0.0.1:{port}"
    assert httpx.get(f"{base}/api/reports/events").status_code == 401
    cashier = {"Authorization": f"Bearer {issue_dev_token(dev_key, 'cashier')}"}
    assert httpx.get(f"{base}/api/reports/events", headers=cashier).status_code == 403
    dept = {"Authorization": f"Bearer {issue_dev_token(dev_key, 'health-dept')}"}
    assert httpx.get(f"{base}/api/reports/events", headers=dept).status_code == 200


def test_make_token_prints_only_a_valid_token(dev_key):
    out = subprocess.run(["make", "token", "ROLE=doctor"], cwd=ROOT,
                         env={**{k: v for k, v in os.environ.items() if k not in ("MAKELEVEL", "MAKEFLAGS", "MFLAGS")},
                              "SEN_DEV_JWT_KEY": str(dev_key)}, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert len(lines) == 1
    principal = TokenVerifier(issuer="sen-dev", audience="sen", dev_key_path=dev_key).verify(lines[0])
    assert principal.roles == frozenset({"doctor"})


def test_correlation_id_follows_a_request_into_events_and_handlers_and_logs_hold_no_patient_data(
        suite, dev_key):
    from sen_shared.auth import issue_dev_token

    for port in suite["ports"].values():
        wait_ready(port)
    cid = f"trace-{os.getpid()}-{int(time.time())}"
    patient = {"resourceType": "Patient", "name": [{"family": "Quách", "given": ["Thị", "Ngọc", "Hoà"]}],
               "identifier": [{"system": "https://fhir.sen.vn/sid/cccd", "value": "087199123456"}]}
    admin = {"Authorization": f"Bearer {issue_dev_token(dev_key, 'admin')}"}
    r = httpx.post(f"http://127.0.0.1:{suite['ports']['ehr']}/fhir/Patient", json=patient, timeout=10,
                   headers={**admin, "Content-Type": "application/fhir+json", "X-Correlation-ID": cid})
    assert r.status_code == 201, r.text
    assert r.headers["x-correlation-id"] == cid
    httpx.get(f"http://127.0.0.1:{suite['ports']['ehr']}/fhir/Patient?name=quach&identifier=087199123456",
              headers=admin, timeout=10)
    # the ehr worker's relay publishes ehr.patient.created; the portal worker counts it
    deadline = time.monotonic() + 60
    handled = []
    while True:  # read every 100 ms, and not slept on once the line is there
        lines = (suite["logs"] / "portal-worker.log").read_text(errors="replace").splitlines()
        handled = [json.loads(line) for line in lines if cid in line and line.startswith("{")]
        if handled or time.monotonic() >= deadline:
            break
        time.sleep(0.1)
    assert handled, "the portal worker never logged the event with the request's correlation id"
    assert handled[0]["correlation_id"] == cid and handled[0]["message"] == "event handled"
    web = (suite["logs"] / "ehr-web.log").read_text(errors="replace")
    assert cid in web  # the request's own log line
    everything = "".join(p.read_text(errors="replace") for p in suite["logs"].glob("*.log"))
    for secret in ("Quách", "Ngọc", "quach", "087199123456"):
        assert secret not in everything, f"patient data {secret!r} in the logs"


def test_the_ehr_takes_no_audit_event_from_a_client(suite, dev_key, run_id, mongo_client):
    """The audit trail is written by the server only (sen_shared.fhir.capability.SERVER_WRITTEN): an AuditEvent
    posted through the API, an admin's too, is a 405 saying so, and nothing is stored or left to relay (an
    admin's post was stored before, with an ehr.auditevent.created in its outbox)."""
    from sen_shared.auth import issue_dev_token

    wait_ready(suite["ports"]["ehr"])
    event = {"resourceType": "AuditEvent", "type": {"system": "http://dicom.nema.org/resources/ontology/DCM",
                                                   "code": "110110"},
             "recorded": "2026-11-22T10:00:00+07:00", "agent": [{"requestor": True, "altId": "import"}],
             "source": {"observer": {"display": "imported"}}}
    admin = {"Authorization": f"Bearer {issue_dev_token(dev_key, 'admin')}", "Content-Type": "application/fhir+json"}
    r = httpx.post(f"http://127.0.0.1:{suite['ports']['ehr']}/fhir/AuditEvent", json=event, headers=admin,
                   timeout=10)
    assert r.status_code == 405, r.text
    assert "written by the server" in r.json()["issue"][0]["diagnostics"], r.text
    db = mongo_client[f"sen_t{run_id}_e2e_ehr"]
    assert db["AuditEvent"].count_documents({"sp_altid": "import"}) == 0
    assert db["AuditEvent_history"].count_documents({}) == 0


def test_answers_over_http_carry_the_security_headers_and_no_server_banner(suite):
    """As gunicorn serves them: uvicorn's ``server: uvicorn`` is off (sen_shared.serving), the shared
    middleware's headers are on (sen_shared.web.SECURITY_HEADERS)."""
    for svc, port in suite["ports"].items():
        r = wait_ready(port)
        assert "server" not in r.headers, (svc, r.headers)
        assert r.headers["x-content-type-options"] == "nosniff", svc
        assert r.headers["content-security-policy"] == "default-src 'none'; frame-ancestors 'none'", svc
        assert r.headers["cache-control"] == "private, no-cache", svc
        assert r.headers["date"]  # uvicorn's Date stays


def test_sigterm_stops_every_process(suite):
    for port in suite["ports"].values():
        wait_ready(port)
    for p in suite["procs"].values():
        p.send_signal(signal.SIGTERM)
    for name, p in suite["procs"].items():
        assert p.wait(timeout=40) == 0 or p.returncode in (0, -signal.SIGTERM), name
