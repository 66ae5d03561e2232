"""Every Sen service started as ``make run`` starts it (gunicorn + uvicorn worker class, and the
worker process), on free loopback ports, seeded with the demo province; for the browser suite.

    python tests/browser/stack.py        # keeps a stack up for a look by hand (Ctrl-C stops it)
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ("ehr", "teleconsult", "billing", "portal")
sys.path.insert(0, str(ROOT))

from tests.support import free_port, stop_processes, wait_ready  # noqa: E402


def facility_names() -> str:
    """SEN_FACILITY_NAMES of the demo province (JSON id -> name), as ``make run`` derives it."""
    demo = json.loads((ROOT / "deploy" / "local" / "demo-province.json").read_text(encoding="utf-8"))
    return json.dumps({o["id"]: o["name"] for o in demo["organizations"]})


def facility_districts() -> str:
    """SEN_FACILITY_DISTRICTS of the demo province (JSON id -> district), as ``make run`` derives it."""
    demo = json.loads((ROOT / "deploy" / "local" / "demo-province.json").read_text(encoding="utf-8"))
    return json.dumps({o["id"]: o["district"] for o in demo["organizations"] if o.get("district")})


@contextmanager
def running_stack(env: dict[str, str], logs: Path, db_prefix: str) -> Iterator[dict[str, str]]:
    """Start the four services (web + worker each); yield their base URLs; stop them."""
    logs.mkdir(parents=True, exist_ok=True)
    ports = {svc: free_port() for svc in SERVICES}
    urls = {svc: f"http://127.0.0.1:{port}" for svc, port in ports.items()}
    common = {**os.environ, **env, "SEN_EHR_URL": urls["ehr"], "SEN_TELECONSULT_URL": urls["teleconsult"],
              "SEN_BILLING_URL": urls["billing"], "HOST": "127.0.0.1", "WEB_CONCURRENCY": "2"}
    common.setdefault("SEN_FACILITY_NAMES", facility_names())  # as make run: the names billing's receipts print
    common.setdefault("SEN_FACILITY_DISTRICTS", facility_districts())  # and a hand invoice's district
    # how long the portal waits for a back-end: 5 s by default, which a page's call took on a loaded test machine
    # (the page then said "trả lời quá chậm" and the test failed); the outage tests hold their answers with
    # Playwright routes, not by timing, and a test's own waits (45 s) stay longer
    common.setdefault("SEN_HTTP_TIMEOUT", "30")
    bindir = Path(sys.executable).parent
    procs: list[subprocess.Popen] = []
    # as make run: each service's indexes step (the four at once: each its own database), then the local
    # PostgreSQL's tuning of those databases
    steps = [subprocess.Popen([sys.executable, "-m", f"sen_{svc}.indexes"], cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, env={**common, "SEN_DB": f"{db_prefix}_{svc}"})
             for svc in SERVICES]
    for svc, step in zip(SERVICES, steps, strict=True):
        out = step.communicate(timeout=300)[0]
        if step.returncode != 0:
            raise AssertionError(f"sen_{svc}.indexes exited {step.returncode}: {out[-2000:].decode(errors='replace')}")
    subprocess.run(["bash", str(ROOT / "deploy" / "local" / "infra.sh"), "tune",
                    *(f"{db_prefix}_{svc}" for svc in SERVICES)], env=common, cwd=ROOT, check=True, timeout=300,
                   capture_output=True)
    try:
        for svc in SERVICES:
            penv = {**common, "SEN_DB": f"{db_prefix}_{svc}", "PORT": str(ports[svc]),
                    "PROMETHEUS_MULTIPROC_DIR": str(logs / f"prom-{svc}")}
            (logs / f"prom-{svc}").mkdir(exist_ok=True)
            procs.append(subprocess.Popen(
                [str(bindir / "gunicorn"), "-c", str(ROOT / "deploy" / "gunicorn.conf.py"), f"sen_{svc}.asgi:app"],
                env=penv, cwd=ROOT, stdout=open(logs / f"{svc}-web.log", "wb"), stderr=subprocess.STDOUT))
            procs.append(subprocess.Popen(
                [sys.executable, "-m", f"sen_{svc}.worker"], env=penv, cwd=ROOT,
                stdout=open(logs / f"{svc}-worker.log", "wb"), stderr=subprocess.STDOUT))
        for svc in SERVICES:
            wait_ready(urls[svc], seconds=90)
        seeded = subprocess.run([sys.executable, str(ROOT / "deploy" / "local" / "seed.py"), "--ehr", urls["ehr"]],
                                env={**common}, cwd=ROOT, capture_output=True, text=True, timeout=120)
        if seeded.returncode != 0:
            raise AssertionError(f"seeding failed: {seeded.stderr[-2000:]}")
        yield urls
    finally:
        stop_processes(procs)


def main() -> int:
    import uuid

    def stop(*_: object) -> None:
        raise KeyboardInterrupt  # SIGTERM too stops the services this started, not just this process

    signal.signal(signal.SIGTERM, stop)

    run = uuid.uuid4().hex[:6]
    key = os.environ.get("SEN_DEV_JWT_KEY") or str(ROOT / ".sen" / "dev-jwt.pem")
    env = {"SEN_ENV": "development", "SEN_DEV_JWT_KEY": key, "LOG_LEVEL": os.environ.get("LOG_LEVEL", "INFO"),
           "SEN_BUS_PREFIX": f"dev{run}.", "SEN_SEPAY_API_KEY": os.environ.get("SEN_SEPAY_API_KEY", "dev-sepay-key"),
           "SEN_BANK_BIN": "970436", "SEN_BANK_ACCOUNT": "0011001932418", "SEN_BANK_ACCOUNT_NAME": "BV DK DONG THAP",
           "SEN_BANK_ACCOUNT_FACILITIES": '{"0011001932418": "tyt-my-hiep"}'}  # the demo cashier's queue
    with running_stack(env, ROOT / ".sen" / f"browser-{run}", f"sen_dev{run}") as urls:
        print(" ".join(f"{k}={v}" for k, v in urls.items()), flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            return 0
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
