"""deploy/gunicorn.conf.py: importable, driven by the environment, accepted by gunicorn."""

from __future__ import annotations

import contextlib
import http.client
import importlib.util
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CONF = ROOT / "deploy/gunicorn.conf.py"
HERE = Path(__file__).resolve().parent


def load(monkeypatch, **env):
    for key in ("PORT", "WEB_CONCURRENCY", "SEN_SERVICE", "PROMETHEUS_MULTIPROC_DIR", "LOG_LEVEL",
                "GUNICORN_GRACEFUL_TIMEOUT"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    spec = importlib.util.spec_from_file_location("sen_gunicorn_conf", CONF)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_worker_class_and_no_preload(monkeypatch):
    conf = load(monkeypatch)
    assert conf.worker_class == "sen_shared.serving.SenUvicornWorker"
    assert conf.preload_app is False
    assert conf.accesslog is None
    assert conf.workers == 2 and conf.graceful_timeout == 25


def test_settings_come_from_the_environment(monkeypatch):
    conf = load(monkeypatch, PORT="9123", WEB_CONCURRENCY="5", LOG_LEVEL="debug", GUNICORN_GRACEFUL_TIMEOUT="7")
    assert conf.bind == ["0.0.0.0:9123"]
    assert conf.workers == 5 and conf.loglevel == "debug" and conf.graceful_timeout == 7


@pytest.mark.parametrize("service, port", [("ehr", 8081), ("teleconsult", 8082), ("billing", 8083), ("portal", 8080)])
def test_default_port_is_the_services(monkeypatch, service, port):
    assert load(monkeypatch, SEN_SERVICE=service).bind == [f"0.0.0.0:{port}"]


def test_bad_numbers_stop_with_a_clear_message(monkeypatch):
    with pytest.raises(SystemExit, match="WEB_CONCURRENCY"):
        load(monkeypatch, WEB_CONCURRENCY="many")


def test_prometheus_dir_is_emptied_at_start_and_dead_workers_are_marked(monkeypatch, tmp_path):
    prom = tmp_path / "prom"
    conf = load(monkeypatch, PROMETHEUS_MULTIPROC_DIR=str(prom))

    class Log:
        def info(self, *args):
            pass

    server = type("Server", (), {"log": Log(), "cfg": type("Cfg", (), {"workers": 1})()})()
    prom.mkdir()
    (prom / "counter_999.db").write_bytes(b"stale")
    conf.on_starting(server)
    assert prom.is_dir() and not any(prom.iterdir())
    (prom / "gauge_livesum_4242.db").write_bytes(b"")
    (prom / "gauge_livesum_1111.db").write_bytes(b"")
    conf.child_exit(server, type("Worker", (), {"pid": 4242})())
    assert sorted(p.name for p in prom.iterdir()) == ["gauge_livesum_1111.db"]


def test_gunicorn_accepts_the_configuration(tmp_path):
    env = {**os.environ, "PORT": "18765", "WEB_CONCURRENCY": "1", "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "p")}
    proc = subprocess.run([sys.executable, "-m", "gunicorn", "--check-config", "-c", str(CONF), "stub_asgi:app"],
                          cwd=HERE, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@contextlib.contextmanager
def stub_gunicorn(workers: int, **env_extra: str):
    """A real gunicorn with deploy/gunicorn.conf.py serving tests/deploy/stub_asgi.py: (port, master pid),
    once every worker answers."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "PORT": str(port), "HOST": "127.0.0.1", "WEB_CONCURRENCY": str(workers),
           "LOG_LEVEL": "WARNING", **env_extra}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    proc = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", str(CONF), "stub_asgi:app"], cwd=HERE, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2):  # noqa: S310 - loopback
                    pass
                if len(worker_pids(proc.pid)) == workers:
                    break
            except OSError:
                pass
            time.sleep(0.2)
        else:
            raise AssertionError("gunicorn did not answer")
        yield port, proc.pid
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def worker_pids(master: int) -> list[int]:
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    return sorted(int(p) for p in children)


def get(conn: http.client.HTTPConnection) -> dict:
    conn.request("GET", "/")
    r = conn.getresponse()
    answer = json.loads(r.read())
    assert r.status == 200
    return answer


def test_a_worker_freezes_what_its_app_loaded_out_of_the_garbage_collector():
    """post_worker_init runs in the uvicorn worker: the stub app sees a non-empty frozen generation."""
    with stub_gunicorn(1) as (port, _):
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as r:  # noqa: S310 - loopback
            assert json.loads(r.read())["frozen"] > 1000


