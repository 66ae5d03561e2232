"""Issue 15's daily reconciliation report 'also as a Kubernetes CronJob': every overlay deploys it, daily after
midnight in Vietnam, one run at a time, with billing's image and settings; and its command, as the manifest
gives it (no ``--day``), reports yesterday in Asia/Ho_Chi_Minh."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from tests.support import vn_day_with_room

ROOT = Path(__file__).resolve().parents[2]
OVERLAYS = ("dev", "prod")


def _named(objs: list[dict], kind: str, name: str) -> dict:
    [obj] = [o for o in objs if o["kind"] == kind and o["metadata"]["name"] == name]
    return obj


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_overlay_runs_the_report_daily_after_midnight_in_vietnam(rendered, overlay):
    job = _named(rendered[overlay], "CronJob", "billing-daily-report")
    spec = job["spec"]
    minute, hour, *every = spec["schedule"].split()
    assert every == ["*", "*", "*"] and (int(hour), int(minute)) < (6, 0), spec["schedule"]  # daily, early morning
    assert spec["timeZone"] == "Asia/Ho_Chi_Minh" and spec["concurrencyPolicy"] == "Forbid"
    pod = spec["jobTemplate"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["args"][:3] == ["python", "-m", "sen_billing.report"] and "--day" not in container["args"]
    assert "--out" in container["args"]  # the CSV to a file, one JSON line to the log
    web = _named(rendered[overlay], "Deployment", "billing-web")
    (web_container,) = web["spec"]["template"]["spec"]["containers"]
    assert container["image"] == web_container["image"]
    assert container["envFrom"] and container["envFrom"] == web_container["envFrom"]  # billing's settings


@pytest.mark.integration
def test_the_jobs_command_without_a_day_reports_yesterday_in_vietnam(base_env, run_id, mongo_client, tmp_path):
    import yaml

    job = yaml.safe_load((ROOT / "k8s/base/billing/report-cronjob.yaml").read_text(encoding="utf-8"))
    (container,) = job["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    args = [str(tmp_path / Path(a).name) if a.startswith("/") else a for a in container["args"][3:]]
    name = f"sen_t{run_id}_report_default_day"
    today = vn_day_with_room()
    try:
        proc = subprocess.run([sys.executable, "-m", "sen_billing.report", *args],
                              env={**os.environ, **base_env, "SEN_DB": name, "SEN_SERVICE": "billing"},
                              cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        kept = [d["_id"] for d in mongo_client[name]["reconciliation_reports"].find({})]
        assert kept == [f"{(today - timedelta(days=1)).isoformat()}/all"]
    finally:
        mongo_client.drop_database(name)
