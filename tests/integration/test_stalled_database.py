"""A stalled database holds up only the requests that wait for it, never the worker's event loop.

The ehr runs as deployed (gunicorn, one uvicorn worker) on a FerretDB of this test's own (the
project's binary, over the shared PostgreSQL; the shared FerretDB on 27017 is never paused). A
doctor (facility-scoped: the access facts are database queries too) reads a Patient and one of its
versions; FerretDB is stopped with SIGSTOP for 2 s while those reads wait for it; ``/healthz``,
sent to the same worker meanwhile, is answered before the reads are, and the reads are answered
once FerretDB goes on. (Before the one request path, the version read ran on the event loop and
this test failed: ``/healthz`` waited for the database.)
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import httpx
import pytest
from sen_shared.auth import issue_dev_token

from tests.own_database import own_ferretdb as own_ferretdb_process
from tests.support import wait_for, web_process

pytestmark = pytest.mark.integration

FJ = "application/fhir+json"
STALL_SECONDS = 2.0
FACILITY = "tyt-dung-lai"


@pytest.fixture()
def own_ferretdb():
    """A FerretDB of this test only (its own port and state), over the project's PostgreSQL."""
    with own_ferretdb_process() as fd:
        yield {"url": fd.url, "pid": fd.pid, "port": fd.port}


def unread_at(port: int) -> list[str]:
    """The connections to 127.0.0.1:``port`` holding bytes its server has not read (the kernel's
    /proc/net/tcp: established, receive queue above 0): requests waiting for a stopped server."""
    local = f"0100007F:{port:04X}"
    waiting = []
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1] == local and fields[3] == "01" and int(fields[4].split(":")[1], 16) > 0:
            waiting.append(fields[2])  # the client's end
    return waiting


def test_healthz_is_answered_while_a_doctors_read_waits_for_a_stalled_database(own_ferretdb, base_env, run_id,
                                                                                dev_key, tmp_path):
    from pymongo import MongoClient

    db = f"sen_t{run_id}_stall"
    env = {**base_env, "MONGO_URL": own_ferretdb["url"], "SEN_DB": db}
    admin = {"Authorization": f"Bearer {issue_dev_token(dev_key, 'admin')}", "Content-Type": FJ, "Accept": FJ}
    doctor = {**admin, "Authorization": f"Bearer {issue_dev_token(dev_key, 'doctor', facility=FACILITY)}"}
    try:
        with web_process("ehr", env, tmp_path / "ehr.log", WEB_CONCURRENCY="1") as url:
            with httpx.Client(base_url=url, timeout=30) as c:
                patient = {"resourceType": "Patient", "name": [{"family": "Lê", "given": ["Thị", "Hồng"]}],
                           "managingOrganization": {"reference": f"Organization/{FACILITY}"}}
                pid = c.post("/fhir/Patient", json=patient, headers=admin).json()["id"]
                assert c.get(f"/fhir/Patient/{pid}", headers=doctor).status_code == 200  # connections made

            answered: list[str] = []
            read_status: dict[str, int] = {}

            def doctors_read(path: str) -> None:
                with httpx.Client(base_url=url, timeout=30) as rc:
                    read_status[path] = rc.get(path, headers=doctor).status_code
                answered.append("read")

            reads = [f"/fhir/Patient/{pid}", f"/fhir/Patient/{pid}/_history/1"]
            os.kill(own_ferretdb["pid"], signal.SIGSTOP)
            stalled_until = time.monotonic() + STALL_SECONDS
            try:
                readers = [threading.Thread(target=doctors_read, args=(path,)) for path in reads]
                for reader in readers:
                    reader.start()
                # the reads are in the worker, waiting for the database: their queries lie unread at it
                wait_for(lambda: len(unread_at(own_ferretdb["port"])) >= len(reads), timeout=30)
                assert not answered, "a read did not wait for the stopped database"
                with httpx.Client(base_url=url, timeout=30) as hc:
                    health = hc.get("/healthz")
                answered.append("healthz")
                assert health.status_code == 200 and health.json()["status"] == "ok"
                time.sleep(max(0.0, stalled_until - time.monotonic()))  # the rest of the stall the reads must outlast
            finally:
                os.kill(own_ferretdb["pid"], signal.SIGCONT)
            for reader in readers:
                reader.join(30)
            assert answered == ["healthz", "read", "read"]  # /healthz did not wait for the database
            assert read_status == dict.fromkeys(reads, 200)  # and the reads went on once it did
    finally:
        client = MongoClient(own_ferretdb["url"])
        client.drop_database(db)
        client.close()
