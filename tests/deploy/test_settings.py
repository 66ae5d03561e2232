"""The settings the Kubernetes manifests give each Sen process, checked against what the process reads.

Each Sen container of a rendered overlay gets its environment as the kubelet would build it (the
ConfigMap of ``envFrom``, then ``env``, with ``secretKeyRef`` values from the generated Secret), and its
service's settings are loaded from exactly that in a fresh interpreter, as the process does at start.
The prod overlay's template holds placeholders an operator replaces: filled in, every process starts;
left in, the processes refuse to start and name the variable.
"""

from __future__ import annotations

import base64
import os
import re
import secrets
import subprocess
import sys
from functools import cache
from importlib import import_module
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ("ehr", "teleconsult", "billing", "portal")
SETTINGS = {"ehr": "sen_ehr.config:EhrSettings", "teleconsult": "sen_teleconsult.config:TeleconsultSettings",
            "billing": "sen_billing.config:BillingSettings", "portal": "sen_portal.config:PortalSettings"}
# read by something other than the settings classes: gunicorn.conf.py and the image's entrypoint
OUTSIDE_SETTINGS = {"PORT", "WEB_CONCURRENCY", "FORWARDED_ALLOW_IPS", "PROMETHEUS_MULTIPROC_DIR", "SEN_SERVICE",
                    "LOG_LEVEL"}
PLACEHOLDER = "CHANGE_ME"


@cache
def aliases(service: str) -> frozenset[str]:
    """The environment variables the service's settings class reads."""
    module, name = SETTINGS[service].split(":")
    cls = getattr(import_module(module), name)
    return frozenset((f.validation_alias if isinstance(f.validation_alias, str) else field).upper()
                     for field, f in cls.model_fields.items())


def sen_containers(objs: list[dict]) -> list[tuple[str, dict]]:
    out = []
    for o in objs:
        if o["kind"] not in {"Deployment", "Job", "CronJob"} or o["metadata"]["labels"].get("sen.vn/role") != "app":
            continue
        spec = o["spec"]["jobTemplate"]["spec"] if o["kind"] == "CronJob" else o["spec"]
        pod = spec["template"]["spec"]
        out += [(f"{o['kind']}/{o['metadata']['name']}/{c['name']}", c)
                for c in pod.get("initContainers", []) + pod["containers"]]
    return out


def filled(key: str, value: str) -> str:
    """The template's value as the operator fills it in: a fresh secret of the right form."""
    if PLACEHOLDER not in value:
        return value
    if key == "SEN_WEBHOOK_SECRET":  # Standard Webhooks: 'whsec_' + base64
        return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
    return value.replace(PLACEHOLDER, secrets.token_urlsafe(24))


def container_env(objs: list[dict], container: dict, fill: bool) -> dict[str, str]:
    """The container's environment as the kubelet builds it; ``fill``: the template's placeholders
    replaced by fresh values, as the operator does."""
    maps = {o["metadata"]["name"]: o.get("data", {}) for o in objs if o["kind"] == "ConfigMap"}
    secret_data = {o["metadata"]["name"]: {k: base64.b64decode(v).decode() for k, v in o.get("data", {}).items()}
                   for o in objs if o["kind"] == "Secret"}
    if fill:
        secret_data = {n: {k: filled(k, v) for k, v in d.items()} for n, d in secret_data.items()}
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        env.update(maps[source["configMapRef"]["name"]])
    for e in container.get("env", []):
        if "value" in e:
            env[e["name"]] = e["value"]
            continue
        ref = e["valueFrom"]["secretKeyRef"]
        value = secret_data[ref["name"]].get(ref["key"])
        assert value is not None or ref.get("optional"), f"{e['name']}: key {ref['key']} not in {ref['name']}"
        if value is not None:
            env[e["name"]] = value
    return env


def start_settings(env: dict[str, str]) -> subprocess.CompletedProcess:
    """Load the service's settings from ``env`` alone, as its process does at start."""
    service = env["SEN_SERVICE"]
    code = f"from sen_{service}.config import settings_from_env; print(settings_from_env().env)"
    return subprocess.run([sys.executable, "-c", code], env={"PATH": os.environ["PATH"], **env}, cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def same_env(objs: list[dict]) -> list[tuple[list[str], dict]]:
    """The Sen containers grouped by the environment the manifests give them (before any placeholder is
    filled in): ``(where, one of the containers)`` per environment. Containers of the same environment start
    the same process on the same settings (a web and its wait-for-indexes, a service's Deployments and Job), so
    one start in a fresh interpreter answers for all of them."""
    groups: dict[tuple, tuple[list[str], dict]] = {}
    for where, container in sen_containers(objs):
        key = tuple(sorted(container_env(objs, container, fill=False).items()))
        groups.setdefault(key, ([], container))[0].append(where)
    return list(groups.values())


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_every_sen_process_starts_with_the_settings_its_manifest_gives_it(rendered, overlay):
    objs = rendered[overlay]
    failures = []
    for wheres, container in same_env(objs):
        env = container_env(objs, container, fill=True)
        proc = start_settings(env)
        if proc.returncode != 0:
            failures += [f"{where}: {proc.stderr.strip()[-300:]}" for where in wheres]
        else:
            assert proc.stdout.strip() == ("production" if overlay == "prod" else "development"), wheres
    assert not failures, "\n".join(failures)


def test_the_prod_template_left_unfilled_is_refused_at_start(rendered):
    """secrets.example.env copied as it is: the placeholders never serve; the process exits 78 naming
    the variable (the processes that read a placeholder)."""
    objs = rendered["prod"]
    refused = {}
    for wheres, container in same_env(objs):
        env = container_env(objs, container, fill=False)
        if not any(PLACEHOLDER in v for v in env.values()):
            continue
        proc = start_settings(env)
        refused |= {where: (proc.returncode, proc.stderr) for where in wheres}
    assert refused, "the prod template has no placeholder any process reads"
    for where, (code, err) in refused.items():
        assert code == 78, f"{where} started with the template's placeholders: {err}"
        assert re.search(r"configuration error: [A-Z_]+[ :]", err), err


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_every_variable_the_manifests_set_is_read(rendered, overlay):
    """No dead or misspelled setting: each variable a Sen container gets is one its service reads."""
    objs = rendered[overlay]
    unread = set()
    for where, container in sen_containers(objs):
        env = container_env(objs, container, fill=True)
        service = env["SEN_SERVICE"]
        for name in env:
            if name in OUTSIDE_SETTINGS or name in aliases(service):
                continue
            # the shared ConfigMap goes to every service: a key there is read by one of them
            shared = any(name in aliases(s) for s in SERVICES)
            in_map = all(e["name"] != name for e in container.get("env", []))
            if not (shared and in_map):
                unread.add(f"{where}: {name}")
    assert not unread, "\n".join(sorted(unread))


def documented(name: str, text: str) -> bool:
    if f"`{name}`" in text or re.search(rf"\b{name}\b", text):
        return True
    # a family written once: `SEN_SMTP_*`
    return any(name.startswith(prefix) for prefix in re.findall(r"`([A-Z_]+_)\*`", text))


@pytest.mark.parametrize("service", SERVICES)
def test_every_setting_a_service_reads_is_documented(service):
    """In the top-level README's configuration table or the service's own README."""
    text = (ROOT / "README.md").read_text() + (ROOT / "services" / service / "README.md").read_text()
    missing = sorted(n for n in aliases(service) if n != "SERVICE" and not documented(n, text))
    assert not missing, f"{service} reads {missing}, documented nowhere"
