"""The Kubernetes CronJob ``billing-daily-report``, run as its manifest says: the day's CSV is kept in
``reconciliation_reports``, and what the job prints (the cluster's logs) is JSON lines only, never the
CSV's rows (cashiers' names, refund reasons written by hand)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.integration


def test_the_daily_report_job_logs_json_and_keeps_the_csv(base_env, run_id, mongo_client):
    job = yaml.safe_load((ROOT / "k8s/base/billing/report-cronjob.yaml").read_text())
    (container,) = job["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    argv = container["args"]
    assert argv[:3] == ["python", "-m", "sen_billing.report"]
    name = f"sen_t{run_id}_report_job"
    env = {**os.environ, **base_env, "SEN_DB": name, "SEN_SERVICE": "billing", "LOG_LEVEL": "INFO"}  # as sen-config
    args = [a.replace("/tmp/", f"{os.environ.get('TMPDIR', '/tmp')}/{run_id}-") for a in argv[3:]]
    try:
        proc = subprocess.run([sys.executable, "-m", "sen_billing.report", "--day", "2026-11-30", *args], env=env,
                              cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        lines = [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
        assert lines, "the job says nothing"
        records = [json.loads(line) for line in lines]  # not JSON: the CSV (or anything else) went to the log
        assert any(r["message"] == "reconciliation report kept" and r["day"] == "2026-11-30" for r in records)
        kept = mongo_client[name]["reconciliation_reports"].find_one({"_id": "2026-11-30/all"})
        assert kept["csv"].startswith("kind,time,id,")
    finally:
        mongo_client.drop_database(name)
        for a in args:
            if a.startswith("/"):
                Path(a).unlink(missing_ok=True)
