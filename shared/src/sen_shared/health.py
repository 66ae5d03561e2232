"""Liveness, readiness, metrics and the other operational endpoints of every web process."""

from __future__ import annotations

import os
import time
from typing import Any

from kombu import Connection
from prometheus_client import REGISTRY as DEFAULT_REGISTRY
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from . import mongo
from .auth import current_principal, require_roles
from .responses import json_response
from .runtime import current

REQUESTS = Counter("sen_http_requests_total", "HTTP requests", ["service", "method", "status"])
LATENCY = Histogram("sen_http_request_seconds", "HTTP request latency", ["service", "method"],
                    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))

_broker_ok_until = 0.0


def healthz() -> tuple[Any, int, dict[str, str]]:
    return json_response({"status": "ok", "service": current().settings.service})


def _check_broker(url: str) -> None:
    global _broker_ok_until
    if time.monotonic() < _broker_ok_until:
        return
    with Connection(url, connect_timeout=2, transport_options={"max_retries": 0}) as conn:
        conn.ensure_connection(max_retries=1, timeout=2)
    _broker_ok_until = time.monotonic() + 2.0


def readyz() -> tuple[Any, int, dict[str, str]]:
    rt = current()
    checks: dict[str, str] = {}
    try:
        mongo.ping(rt.db)
        checks["mongodb"] = "ok"
    except Exception as err:  # noqa: BLE001 - any failure means "not ready": say which
        checks["mongodb"] = f"unavailable: {type(err).__name__}"
    try:
        _check_broker(rt.settings.amqp_url)
        checks["broker"] = "ok"
    except Exception as err:  # noqa: BLE001
        checks["broker"] = f"unavailable: {type(err).__name__}"
    ok = all(v == "ok" for v in checks.values())
    return json_response({"status": "ok" if ok else "unavailable", "service": rt.settings.service,
                          "checks": checks}, 200 if ok else 503)


def metrics() -> tuple[bytes, int, dict[str, str]]:
    registry = DEFAULT_REGISTRY
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    # the spec names "text/plain"; Prometheus reads that as its text format
    return generate_latest(registry), 200, {"Content-Type": "text/plain"}


@require_roles("admin")
def create_indexes() -> tuple[Any, int, dict[str, str]]:
    rt = current()
    return json_response({"created": mongo.ensure_indexes(rt.db, rt.indexes)})


def session() -> tuple[Any, int, dict[str, str]]:
    p = current_principal()
    return json_response({"sub": p.sub, "roles": sorted(p.roles), "facility": p.facility,
                          "practitioner": p.practitioner, "service": current().settings.service})
