"""Gunicorn settings for every Sen web process (containers, Kubernetes and ``make run``).

    gunicorn -c deploy/gunicorn.conf.py sen_ehr.asgi:app

Everything comes from the environment, with defaults that work on a laptop:

==========================  =============================================================
``PORT``                    port to listen on (default: the service's port, 8000 if unknown)
``HOST``                    address to bind (default ``0.0.0.0``)
``WEB_CONCURRENCY``         worker processes (default 2)
``GUNICORN_TIMEOUT``        seconds a silent worker lives before it is killed (default 60)
``GUNICORN_GRACEFUL_TIMEOUT``  seconds in-flight requests get on SIGTERM (default 25; keep it
                            below the pod's ``terminationGracePeriodSeconds``)
``GUNICORN_KEEPALIVE``      keep-alive seconds (default 5; above the load balancer's idle timeout
                            is wrong, below it is right)
``GUNICORN_MAX_REQUESTS``   recycle a worker after this many requests (default 0 = never)
``FORWARDED_ALLOW_IPS``     proxies whose X-Forwarded-* headers are trusted (default 127.0.0.1)
``LOG_LEVEL``               DEBUG, INFO, WARNING or ERROR (default INFO)
``PROMETHEUS_MULTIPROC_DIR``  when set, emptied at start and cleaned as workers exit
==========================  =============================================================

The worker class is ``sen_shared.serving.SenUvicornWorker``: ``uvicorn_worker.UvicornWorker``
(connexion 3 is ASGI; ``uvicorn.workers`` is deprecated) configured through its ``CONFIG_KWARGS``
only. Only gunicorn's documented settings and server hooks are used here. The app is not
preloaded: pymongo and kombu connect lazily inside each worker. There is no access log: it would
print query strings (patient names); the app logs requests itself.
"""

from __future__ import annotations

import gc
import os
import shutil
import sys
from pathlib import Path

SERVICE_PORTS = {"portal": 8080, "ehr": 8081, "teleconsult": 8082, "billing": 8083}


def _env_int(name: str, default: int, minimum: int = 0) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SystemExit(f"gunicorn.conf.py: {name} must be an integer, got {raw!r}") from None
    if value < minimum:
        raise SystemExit(f"gunicorn.conf.py: {name} must be >= {minimum}, got {value}")
    return value


def _service_name(argv: list[str] | None = None) -> str:
    """The service this process serves: SEN_SERVICE, else guessed from ``sen_<name>.asgi:app``."""
    name = os.environ.get("SEN_SERVICE", "").strip()
    if name:
        return name
    for arg in argv if argv is not None else sys.argv:
        if arg.startswith("sen_") and ".asgi" in arg:
            return arg[len("sen_"):].split(".", 1)[0]
    return ""


def _default_port() -> int:
    return SERVICE_PORTS.get(_service_name(), 8000)


def _log_level() -> str:
    level = os.environ.get("LOG_LEVEL", "INFO").strip().upper() or "INFO"
    return level if level in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"} else "INFO"


def _worker_tmp_dir() -> str | None:
    """Heartbeat files on tmpfs when there is one (a container's /dev/shm), else the default."""
    configured = os.environ.get("GUNICORN_WORKER_TMP_DIR", "").strip()
    if configured:
        return configured
    shm = Path("/dev/shm")  # noqa: S108 - gunicorn heartbeat files, not data
    return str(shm) if shm.is_dir() and os.access(shm, os.W_OK) else None


def _logconfig() -> dict:
    """One JSON object a line on stderr, like sen_shared.logs (python-json-logger when present)."""
    try:
        import pythonjsonlogger.json  # noqa: F401

        formatter = {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "fmt": "%(asctime)s %(levelname)s %(name)s %(process)d %(message)s",
            "rename_fields": {"asctime": "time", "levelname": "level", "name": "logger", "process": "pid"},
        }
    except ImportError:  # still one line a record, and parseable enough
        formatter = {"format": '{"time": "%(asctime)s", "level": "%(levelname)s", "logger": "%(name)s", '
                               '"pid": %(process)d, "message": %(message)r}'}
    level = _log_level()
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": formatter},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "json",
                                "stream": "ext://sys.stderr"}},
        "loggers": {
            "gunicorn.error": {"level": level, "handlers": ["stderr"], "propagate": False},
            "gunicorn.access": {"level": "WARNING", "handlers": [], "propagate": False},
            "uvicorn.access": {"level": "WARNING", "handlers": [], "propagate": False},
        },
        "root": {"level": level, "handlers": ["stderr"]},
    }


# --------------------------------------------------------------------------- settings
wsgi_app = None  # given on the command line: sen_<service>.asgi:app
bind = [f"{os.environ.get('HOST', '0.0.0.0')}:{_env_int('PORT', _default_port(), 1)}"]
workers = _env_int("WEB_CONCURRENCY", 2, 1)
worker_class = "sen_shared.serving.SenUvicornWorker"
preload_app = False
timeout = _env_int("GUNICORN_TIMEOUT", 60, 1)
graceful_timeout = _env_int("GUNICORN_GRACEFUL_TIMEOUT", 25, 1)
keepalive = _env_int("GUNICORN_KEEPALIVE", 5, 0)
max_requests = _env_int("GUNICORN_MAX_REQUESTS", 0, 0)
max_requests_jitter = max_requests // 10
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1")
worker_tmp_dir = _worker_tmp_dir()
proc_name = f"sen-{_service_name() or 'web'}"
accesslog = None
errorlog = "-"
loglevel = _log_level().lower()
logconfig_dict = _logconfig()
capture_output = False
control_socket_disable = True  # gunicorn >= 25 opens a control socket by default; nothing uses it


# --------------------------------------------------------------------------- hooks
def prometheus_dir() -> Path | None:
    raw = os.environ.get("PROMETHEUS_MULTIPROC_DIR", "").strip()
    return Path(raw) if raw else None


def reset_prometheus_dir() -> Path | None:
    """Create the multiprocess directory and empty it: stale files from a previous run would be summed."""
    path = prometheus_dir()
    if path is None:
        return None
    path.mkdir(parents=True, exist_ok=True)
    for entry in path.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
    return path


def on_starting(server) -> None:  # master, before any worker is forked
    path = reset_prometheus_dir()
    if path is not None:
        server.log.info("prometheus multiprocess dir %s emptied", path)


def post_worker_init(worker) -> None:  # in the worker, once the app is loaded
    """Freeze what the app loaded out of Python's cyclic garbage collector.

    A worker holds some 100,000 long-lived objects (the app, the FHIR definitions and models);
    every full collection walked them all, stopping the worker's event loop for 55-65 ms about
    once every 2,000 requests. Frozen, they are never scanned: full collections take 5 ms.
    """
    gc.freeze()


def child_exit(server, worker) -> None:  # master, after a worker died
    if prometheus_dir() is None:
        return
    try:
        from prometheus_client import multiprocess
    except ImportError:
        return
    multiprocess.mark_process_dead(worker.pid)
