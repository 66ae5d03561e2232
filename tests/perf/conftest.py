"""Benchmark fixtures: a real ehr process as in production (gunicorn, uvicorn workers), its own database.

Not part of ``make test`` (``tests/perf`` is in ``norecursedirs``); ``make bench`` runs it.
The root ``tests/conftest.py`` provides the servers, the environment and the dev JWT key.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.support import ROOT, web_process


@pytest.fixture(scope="module")
def ehr_process(base_env, run_id, mongo_client, tmp_path_factory):
    """``{"url": base URL, "db": database, "log": log file}`` of a gunicorn ehr with WEB_CONCURRENCY=2."""
    db = f"sen_t{run_id}_bench"
    log = tmp_path_factory.mktemp("bench") / "ehr-web.log"
    env = {**base_env, "SEN_DB": db, "LOG_LEVEL": "WARNING",
           "SEN_ENV": "development"}  # as deployed: no response validation (the tests keep it on)
    # as in production: the indexes step first (a Kubernetes Job there), then the web process;
    # locally `infra.sh tune` indexes FerretDB's PostgreSQL tables for what the step declared
    subprocess.run([sys.executable, "-m", "sen_ehr.indexes"], env={**os.environ, **env}, cwd=ROOT, check=True,
                   timeout=300)
    subprocess.run(["bash", str(ROOT / "deploy" / "local" / "infra.sh"), "tune", db], env={**os.environ, **env},
                   cwd=ROOT, check=True, timeout=300)
    try:
        with web_process("ehr", env, log, WEB_CONCURRENCY=os.environ.get("SEN_BENCH_WORKERS", "2"),
                         GUNICORN_TIMEOUT="120") as url:
            yield {"url": url, "db": db, "log": log}
    finally:
        if os.environ.get("SEN_BENCH_KEEP_DB") == "1":  # for tests/perf/alternate.py on the loaded data
            print(f"\nkept the loaded database {db}; drop it when done")
        else:
            mongo_client.drop_database(db)
