"""Benchmark fixtures: a real ehr process as in production (gunicorn, uvicorn workers), its own database.

Not part of ``make test`` (``tests/perf`` is in ``norecursedirs``); ``make bench`` runs it.
The root ``tests/conftest.py`` provides the servers, the environment and the dev JWT key.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ehr_process(base_env, run_id, mongo_client, tmp_path_factory):
    """``{"url": base URL, "db": database, "log": log file}`` of a gunicorn ehr with WEB_CONCURRENCY=2."""
    port = free_port()
    db = f"sen_t{run_id}_bench"
    log = tmp_path_factory.mktemp("bench") / "ehr-web.log"
    env = {**os.environ, **base_env, "SEN_DB": db, "HOST": "127.0.0.1", "PORT": str(port),
           "WEB_CONCURRENCY": os.environ.get("SEN_BENCH_WORKERS", "2"), "LOG_LEVEL": "WARNING",
           "SEN_ENV": "development",  # as deployed: no response validation (the tests keep it on)
           "GUNICORN_TIMEOUT": "120"}
    # as in production: the indexes step first (a Kubernetes Job there), then the web process;
    # locally `infra.sh tune` indexes FerretDB's PostgreSQL tables for what the step declared
    subprocess.run([sys.executable, "-m", "sen_ehr.indexes"], env=env, cwd=ROOT, check=True, timeout=300)
    subprocess.run(["bash", str(ROOT / "deploy" / "local" / "infra.sh"), "tune"], env=env, cwd=ROOT, check=True,
                   timeout=300)
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "gunicorn"), "-c", str(ROOT / "deploy" / "gunicorn.conf.py"),
         "sen_ehr.asgi:app"], env=env, cwd=ROOT, stdout=open(log, "wb"), stderr=subprocess.STDOUT)
    try:
        deadline, last = time.monotonic() + 60, None
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise AssertionError(f"ehr exited {proc.returncode}: {log.read_text()[-2000:]}")
            try:
                last = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5)
                if last.status_code == 200:
                    break
            except httpx.HTTPError as err:
                last = err
            time.sleep(0.3)
        else:
            raise AssertionError(f"ehr not ready: {last!r}")
        yield {"url": f"http://127.0.0.1:{port}", "db": db, "log": log}
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        mongo_client.drop_database(db)
