"""``python -m sen_<service>.indexes --wait``, the init container of every Kubernetes web and worker
pod: it creates nothing and exits 0 only once every index the service declares exists."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.integration


def test_the_wait_ends_once_the_indexes_step_has_run(base_env, run_id, mongo_client):
    from sen_portal.indexes import INDEXES
    from sen_shared import mongo

    name = f"sen_t{run_id}_index_wait"
    env = {**os.environ, **base_env, "SEN_DB": name}
    waiting = subprocess.Popen([sys.executable, "-m", "sen_portal.indexes", "--wait"], env=env, cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = waiting.stdout.readline()  # said once the database was looked at
        assert f"{name}: waiting for {len(INDEXES)} of {len(INDEXES)} declared indexes" in first, first
        assert waiting.poll() is None, "the wait ended with no index there"
        assert mongo.missing_indexes(mongo_client[name], INDEXES), "the wait created indexes"
        made = subprocess.run([sys.executable, "-m", "sen_portal.indexes"], env=env, cwd=ROOT,
                              capture_output=True, text=True, timeout=300)
        assert made.returncode == 0, made.stderr
        assert waiting.wait(timeout=120) == 0, waiting.stderr.read()
        assert "declared indexes exist" in waiting.stdout.read()
    finally:
        if waiting.poll() is None:
            waiting.kill()
            waiting.wait()
        mongo_client.drop_database(name)
