"""Kubernetes manifests: render each overlay offline, validate against the Kubernetes 1.30
OpenAPI schemas (kubernetes-validate bundles them), and check Sen's own invariants."""

from __future__ import annotations

import functools
import ipaddress
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "k8s"
OVERLAYS = ("dev", "prod")  # as in conftest.py

K8S_VERSION = "1.30.0"
SERVICES = {"ehr": 8081, "teleconsult": 8082, "billing": 8083, "portal": 8080}
WORKLOADS = {"Deployment", "StatefulSet", "Job", "DaemonSet", "CronJob"}


def by_kind(objs: list[dict], kind: str) -> dict[str, dict]:
    return {o["metadata"]["name"]: o for o in objs if o["kind"] == kind}


def pod_spec(obj: dict) -> dict:
    spec = obj["spec"]["jobTemplate"]["spec"] if obj["kind"] == "CronJob" else obj["spec"]
    return spec["template"]["spec"]


def all_containers(obj: dict) -> list[dict]:
    spec = pod_spec(obj)
    return spec.get("initContainers", []) + spec["containers"]


def workloads(objs: list[dict]) -> list[dict]:
    return [o for o in objs if o["kind"] in WORKLOADS]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_object_matches_the_kubernetes_schema(rendered, overlay):
    errors = []
    for obj in rendered[overlay]:
        try:
            kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            errors.append(f"{obj['kind']}/{obj['metadata']['name']}: {exc.message} at {list(exc.path)}")
    assert not errors, "\n".join(errors)


def test_the_schema_validator_rejects_a_broken_object(rendered):
    web = dict(by_kind(rendered["prod"], "Deployment")["ehr-web"])
    broken = {**web, "spec": {**web["spec"], "replicas": "three", "surprise": True}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_service_has_web_worker_service_hpa_pdb_and_indexes_job(rendered, overlay):
    objs = rendered[overlay]
    deployments, services, jobs = by_kind(objs, "Deployment"), by_kind(objs, "Service"), by_kind(objs, "Job")
    hpas, pdbs = by_kind(objs, "HorizontalPodAutoscaler"), by_kind(objs, "PodDisruptionBudget")
    for name, port in SERVICES.items():
        web, worker = deployments[f"{name}-web"], deployments[f"{name}-worker"]
        assert pod_spec(web)["containers"][0]["args"] == ["web", name]
        assert pod_spec(worker)["containers"][0]["args"] == ["worker", name]
        assert pod_spec(jobs[f"{name}-indexes"])["containers"][0]["args"] == ["indexes", name]
        svc = services[name]
        assert svc["spec"]["selector"] == web["spec"]["selector"]["matchLabels"]
        assert svc["spec"]["ports"][0]["port"] == port
        assert hpas[f"{name}-web"]["spec"]["scaleTargetRef"]["name"] == f"{name}-web"
        assert pdbs[f"{name}-web"]["spec"]["selector"]["matchLabels"] == web["spec"]["selector"]["matchLabels"]
        assert "replicas" not in web["spec"], "the HPA owns the web replica count"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_web_and_worker_pods_wait_for_their_indexes(rendered, overlay):
    """No process of a release serves before the indexes it declares exist: its pod's init container
    waits for them (``sen indexes <svc> --wait``, creating nothing), with the indexes Job's image and
    database, whatever order ``kubectl apply`` starts the Job and the rollout in."""
    deployments, jobs = by_kind(rendered[overlay], "Deployment"), by_kind(rendered[overlay], "Job")
    for name in SERVICES:
        job = pod_spec(jobs[f"{name}-indexes"])["containers"][0]
        job_env = {e["name"]: e for e in job["env"]}
        for role in ("web", "worker"):
            (init,) = pod_spec(deployments[f"{name}-{role}"])["initContainers"]
            assert init["args"] == ["indexes", name, "--wait"], f"{name}-{role}"
            assert init["image"] == job["image"]
            env = {e["name"]: e for e in init["env"]}
            for key in ("SEN_DB", "MONGO_URL"):
                assert env[key] == job_env[key], f"{name}-{role}: {key}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_web_probes_ports_and_env(rendered, overlay):
    deployments = by_kind(rendered[overlay], "Deployment")
    for name, port in SERVICES.items():
        c = pod_spec(deployments[f"{name}-web"])["containers"][0]
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        assert ports == {"http": port}
        for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
            get = c[probe]["httpGet"]
            assert get["path"] == path, f"{name}: {probe}"
            assert ports.get(get["port"], get["port"]) == port, f"{name}: {probe} port"
        env = {e["name"]: e for e in c["env"]}
        assert env["PORT"]["value"] == str(port)
        mounts = {m["mountPath"] for m in c["volumeMounts"]}
        assert {"/tmp", env["PROMETHEUS_MULTIPROC_DIR"]["value"]} <= mounts


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_pod_runs_as_non_root_and_restricted(rendered, overlay):
    for obj in workloads(rendered[overlay]):
        spec = pod_spec(obj)
        where = f"{obj['kind']}/{obj['metadata']['name']}"
        assert spec["securityContext"]["runAsNonRoot"] is True, where
        assert spec["securityContext"]["runAsUser"] != 0, where
        assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", where
        for c in all_containers(obj):
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, f"{where}/{c['name']}"
            assert sc["capabilities"]["drop"] == ["ALL"], f"{where}/{c['name']}"
            assert sc.get("runAsUser", 1) != 0, f"{where}/{c['name']}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_sen_containers_have_read_only_root_and_writable_tmp(rendered, overlay):
    for obj in workloads(rendered[overlay]):
        if obj["metadata"]["labels"].get("sen.vn/role") != "app":
            continue
        volumes = {v["name"]: v for v in pod_spec(obj)["volumes"]}
        for c in all_containers(obj):
            assert c["securityContext"]["readOnlyRootFilesystem"] is True
            tmp = next(m for m in c["volumeMounts"] if m["mountPath"] == "/tmp")
            assert "emptyDir" in volumes[tmp["name"]]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_container_has_requests_and_a_memory_limit(rendered, overlay):
    for obj in workloads(rendered[overlay]):
        for c in all_containers(obj):
            res = c.get("resources", {})
            where = f"{obj['kind']}/{obj['metadata']['name']}/{c['name']}"
            assert {"cpu", "memory"} <= set(res.get("requests", {})), where
            assert "memory" in res.get("limits", {}), where


def test_prod_images_are_pinned_and_never_latest(rendered):
    for obj in workloads(rendered["prod"]):
        for c in all_containers(obj):
            image = c["image"]
            ref = image.split("@", 1)[0]
            tag = ref.rsplit(":", 1)[1] if ":" in ref.rsplit("/", 1)[-1] else None
            assert "@sha256:" in image or tag, f"{obj['metadata']['name']}: {image} has no tag"
            assert tag != "latest", f"{obj['metadata']['name']}: {image}"
    sen_images = {c["image"] for o in workloads(rendered["prod"]) for c in all_containers(o)
                  if o["metadata"]["labels"].get("sen.vn/role") == "app"}
    assert sen_images == {"registry.example.vn/sen/sen:1.0.0"}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_secret_values_come_from_the_generated_secret(rendered, overlay):
    objs = rendered[overlay]
    secrets = by_kind(objs, "Secret")
    assert len(secrets) == 1
    (secret_name, secret), = secrets.items()
    assert secret_name.startswith("sen-secrets")
    keys = set(secret["data"])
    sensitive = ("URL", "PASS", "PASSWORD", "COOKIE", "KEYFILE", "USERNAME", "USER")
    for obj in workloads(objs):
        for c in all_containers(obj):
            for e in c.get("env", []):
                if e["name"] in {"MONGO_URL", "AMQP_URL"} or e["name"].endswith(sensitive[1:]):
                    if e["name"].endswith("_URL") and e["name"] not in {"MONGO_URL", "AMQP_URL"}:
                        continue
                    ref = e.get("valueFrom", {}).get("secretKeyRef")
                    assert ref, f"{obj['metadata']['name']}: {e['name']} is inline"
                    assert ref["name"] == secret_name
                    assert ref["key"] in keys or ref.get("optional"), f"{e['name']}: no {ref['key']} in {secret_name}"
    for cm in by_kind(objs, "ConfigMap").values():
        for key, value in cm.get("data", {}).items():
            assert "@" not in value.split("://", 1)[-1].split("/", 1)[0], f"credentials in ConfigMap {key}"


def test_no_real_secret_is_committed():
    committed = list(K8S.rglob("*.env"))
    assert not [p for p in committed if p.name == "secrets.env"], "secrets.env must not be in the tree"
    for example in K8S.glob("overlays/*/*.example.env"):
        assert "EXAMPLE" in example.read_text(encoding="utf-8").splitlines()[0].upper()
    assert {"secrets.env", "province.env"} <= set((K8S / "overlays/prod/.gitignore").read_text().split())


def test_prod_runs_three_member_datastores_and_ha_web(rendered):
    objs = rendered["prod"]
    sts = by_kind(objs, "StatefulSet")
    assert sts["mongo"]["spec"]["replicas"] == 3 and sts["rabbitmq"]["spec"]["replicas"] == 3
    init = pod_spec(by_kind(objs, "Job")["mongo-init"])["containers"][0]
    assert {"name": "MONGO_REPLICAS", "value": "3"} in init["env"]
    for hpa in by_kind(objs, "HorizontalPodAutoscaler").values():
        assert hpa["spec"]["minReplicas"] >= 2
    config = by_kind(objs, "ConfigMap")
    assert next(v for k, v in config.items() if k.startswith("sen-config"))["data"]["SEN_ENV"] == "production"


def _run_mongo_init(obj: dict, env: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess:
    """The mongo-init Job's script, with a stand-in ``mongosh`` that answers every call."""
    (init,) = pod_spec(obj)["containers"]
    fake = tmp_path / "bin"
    fake.mkdir(exist_ok=True)
    (fake / "mongosh").write_text("#!/bin/sh\necho 1\n")
    (fake / "mongosh").chmod(0o755)
    literal = {e["name"]: e["value"] for e in init["env"] if "value" in e}
    return subprocess.run(init["command"], env={"PATH": f"{fake}:/usr/bin:/bin", **literal, **env},
                          capture_output=True, text=True, timeout=60)


def test_mongo_init_refuses_the_templates_placeholder_password(rendered, tmp_path):
    job = by_kind(rendered["prod"], "Job")["mongo-init"]
    users = {"ROOT_USER": "root", "APP_USER": "sen"}
    left = _run_mongo_init(job, {**users, "ROOT_PASS": "CHANGE_ME", "APP_PASS": "9f3kQ2xZ"}, tmp_path)
    assert left.returncode == 1 and "CHANGE_ME" in left.stderr, left.stderr
    filled = _run_mongo_init(job, {**users, "ROOT_PASS": "Qw8nZ3rT", "APP_PASS": "9f3kQ2xZ"}, tmp_path)
    assert filled.returncode == 0, filled.stderr


def test_dev_datastores_agree_on_their_size(rendered):
    objs = rendered["dev"]
    mongo = by_kind(objs, "StatefulSet")["mongo"]["spec"]["replicas"]
    init = pod_spec(by_kind(objs, "Job")["mongo-init"])["containers"][0]
    assert {"name": "MONGO_REPLICAS", "value": str(mongo)} in init["env"]


def test_rabbitmq_cluster_uses_k8s_discovery_and_quorum_queues(rendered):
    objs = rendered["prod"]
    cm = next(o for n, o in by_kind(objs, "ConfigMap").items() if n.startswith("rabbitmq-config"))
    conf = dict(line.split(" = ", 1) for line in cm["data"]["sen.conf"].splitlines()
                if " = " in line and not line.startswith("#"))
    assert conf["cluster_formation.peer_discovery_backend"] == "rabbit_peer_discovery_k8s"
    assert conf["default_queue_type"] == "quorum"
    sts = by_kind(objs, "StatefulSet")["rabbitmq"]
    assert conf["cluster_formation.k8s.service_name"] == sts["spec"]["serviceName"]
    assert "rabbitmq_peer_discovery_k8s" in cm["data"]["enabled_plugins"]
    binding = by_kind(objs, "RoleBinding")["rabbitmq-peer-discovery"]
    assert binding["subjects"][0]["namespace"] == "sen"
    headless = by_kind(objs, "Service")[sts["spec"]["serviceName"]]
    assert headless["spec"]["clusterIP"] == "None"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_ingress_routes_root_to_portal(rendered, overlay):
    ingress = by_kind(rendered[overlay], "Ingress")["sen"]
    paths = {p["path"]: p["backend"]["service"]["name"] for p in ingress["spec"]["rules"][0]["http"]["paths"]}
    assert paths["/"] == "portal"
    services = by_kind(rendered[overlay], "Service")
    assert set(paths.values()) <= set(services)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_network_policies_deny_by_default_and_let_apps_reach_their_stores(rendered, overlay):
    nps = by_kind(rendered[overlay], "NetworkPolicy")
    deny = nps["default-deny"]["spec"]
    assert deny["podSelector"] == {} and set(deny["policyTypes"]) == {"Ingress", "Egress"}
    assert "ingress" not in deny and "egress" not in deny
    egress = nps["app-egress"]["spec"]["egress"]
    allowed = {(r["to"][0].get("podSelector", {}).get("matchLabels", {}).get("app.kubernetes.io/name"),
                r["ports"][0]["port"]) for r in egress}
    assert {("mongo", 27017), ("rabbitmq", 5672)} <= allowed
    assert "allow-dns" in nps


def _egress_ports(policies: list[dict], labels: dict[str, str]) -> set[int]:
    """The TCP ports the NetworkPolicies let a pod with ``labels`` reach (any destination)."""
    ports = set()
    for np in policies:
        selector = np["spec"]["podSelector"].get("matchLabels", {})
        if "matchExpressions" in np["spec"]["podSelector"] or not selector.items() <= labels.items():
            continue
        for rule in np["spec"].get("egress", []):
            for p in rule.get("ports", []):
                ports.update(range(p["port"], p.get("endPort", p["port"]) + 1))
    return ports


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_teleconsult_worker_may_send_reminders_by_smtp(rendered, overlay):
    """SEN_NOTIFY_SENDER=smtp: the default-deny policy let the worker reach only MongoDB, RabbitMQ, the
    services and HTTPS, so no reminder ever left by SMTP (25, 465 or 587, as the relay takes them)."""
    worker = by_kind(rendered[overlay], "Deployment")["teleconsult-worker"]
    labels = worker["spec"]["template"]["metadata"]["labels"]
    allowed = _egress_ports(list(by_kind(rendered[overlay], "NetworkPolicy").values()), labels)
    assert {25, 465, 587} <= allowed
    web = by_kind(rendered[overlay], "Deployment")["billing-web"]["spec"]["template"]["metadata"]["labels"]
    assert not {25, 465, 587} & _egress_ports(list(by_kind(rendered[overlay], "NetworkPolicy").values()), web)


def _selects(selector: dict, labels: dict[str, str]) -> bool:
    """Whether a label selector (matchLabels and matchExpressions) selects ``labels``."""
    if not selector.get("matchLabels", {}).items() <= labels.items():
        return False
    tests = {"In": lambda k, v: labels.get(k) in v, "NotIn": lambda k, v: labels.get(k) not in v,
             "Exists": lambda k, v: k in labels, "DoesNotExist": lambda k, v: k not in labels}
    return all(tests[e["operator"]](e["key"], e.get("values", [])) for e in selector.get("matchExpressions", []))


def _allows_port(rule: dict, port: int) -> bool:
    return not rule.get("ports") or any(
        p.get("protocol", "TCP") == "TCP" and p["port"] <= port <= p.get("endPort", p["port"]) for p in rule["ports"])


def _may_reach_address(policies: list[dict], labels: dict[str, str], address: str, port: int) -> bool:
    """Whether the NetworkPolicies let a pod with ``labels`` open a TCP connection to ``address:port`` outside
    the cluster (an ipBlock holding it, or a rule naming no destination)."""
    ip = ipaddress.ip_address(address)
    for np in policies:
        if "Egress" not in np["spec"]["policyTypes"] or not _selects(np["spec"]["podSelector"], labels):
            continue
        for rule in np["spec"].get("egress", []):
            if not _allows_port(rule, port):
                continue
            if not rule.get("to"):
                return True
            for block in (peer["ipBlock"] for peer in rule["to"] if "ipBlock" in peer):
                if ip in ipaddress.ip_network(block["cidr"]) and not any(
                        ip in ipaddress.ip_network(x) for x in block.get("except", [])):
                    return True
    return False


def _ingress_controller_may_reach(policies: list[dict], labels: dict[str, str], port: int) -> bool:
    """Whether the NetworkPolicies let the ingress controller (namespace ingress-nginx) reach a pod with
    ``labels`` on ``port``."""
    return _namespace_may_reach(policies, "ingress-nginx", labels, port)


def _namespace_may_reach(policies: list[dict], namespace: str, labels: dict[str, str], port: int) -> bool:
    """Whether the NetworkPolicies let any pod of ``namespace`` reach a pod with ``labels`` on ``port``."""
    controller_ns = {"kubernetes.io/metadata.name": namespace}
    for np in policies:
        if "Ingress" not in np["spec"]["policyTypes"] or not _selects(np["spec"]["podSelector"], labels):
            continue
        for rule in np["spec"].get("ingress", []):
            if _allows_port(rule, port) and (not rule.get("from") or any(
                    "namespaceSelector" in peer and _selects(peer["namespaceSelector"], controller_ns)
                    and not peer.get("podSelector", {}) for peer in rule["from"])):
                return True
    return False


def _pod_labels(objs: list[dict]) -> dict[str, dict[str, str]]:
    """Each workload's pod labels, by workload name."""
    return {o["metadata"]["name"]: (o["spec"]["jobTemplate"]["spec"] if o["kind"] == "CronJob" else o["spec"])
            ["template"]["metadata"]["labels"] for o in workloads(objs)}


def _nginx_size(text: str) -> int:
    """An nginx size (``2000000``, ``512k``, ``2m``, ``1g``) in bytes."""
    units = {"k": 1024, "m": 1024**2, "g": 1024**3}
    text = str(text).strip().lower()
    return int(text[:-1]) * units[text[-1]] if text[-1] in units else int(text)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_ehr_fhir_api_is_exposed_to_the_provinces_systems(rendered, overlay):
    """A hospital HIS and the national health data platform exchange FHIR with the EHR: on a host of its own,
    /fhir only (not the EHR's /metrics or /api), to the EHR's web port, behind TLS in production; the bearer
    token is the EHR's to check (no authentication at the edge); the edge's body limit is the EHR's own
    (at least SEN_MAX_BODY_BYTES, so an oversized body gets the EHR's 413 OperationOutcome, and not much more);
    requests and connections per client limited. Before: no Ingress reached the EHR."""
    objs = rendered[overlay]
    ingresses = by_kind(objs, "Ingress")
    fhir = ingresses["sen-fhir"]
    assert fhir["spec"]["ingressClassName"] == "nginx"  # the annotations below are ingress-nginx's
    (rule,) = fhir["spec"]["rules"]
    assert rule["host"] not in {r["host"] for r in ingresses["sen"]["spec"]["rules"]}
    routes = {(p["path"], p["pathType"]): (p["backend"]["service"]["name"], p["backend"]["service"]["port"])
              for p in rule["http"]["paths"]}
    assert routes == {("/fhir", "Prefix"): ("ehr", {"name": "http"})}
    (port,) = by_kind(objs, "Service")["ehr"]["spec"]["ports"]
    assert port["name"] == "http" and port["port"] == SERVICES["ehr"]
    notes = fhir["metadata"]["annotations"]
    assert not [k for k in notes if k.startswith("nginx.ingress.kubernetes.io/auth-")]
    (config,) = [cm for name, cm in by_kind(objs, "ConfigMap").items() if name.startswith("sen-config")]
    env = {e["name"]: e.get("value") for e in pod_spec(by_kind(objs, "Deployment")["ehr-web"])["containers"][0]["env"]}
    service_limit = int(env.get("SEN_MAX_BODY_BYTES") or config["data"]["SEN_MAX_BODY_BYTES"])
    edge_limit = _nginx_size(notes["nginx.ingress.kubernetes.io/proxy-body-size"])
    assert service_limit <= edge_limit <= service_limit * 1.1, (service_limit, edge_limit)
    for key in ("limit-rps", "limit-connections"):
        assert int(notes[f"nginx.ingress.kubernetes.io/{key}"]) > 0, key
    if overlay == "prod":
        assert [t for t in fhir["spec"]["tls"] if rule["host"] in t["hosts"] and t["secretName"]]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_ingress_controller_reaches_the_services_the_ingresses_route_to_and_no_other(rendered, overlay):
    """Default deny: an Ingress's backend the controller may not reach answers 504 (the EHR's FHIR API did,
    its pods open only to Sen's own processes); a web pod no Ingress routes to stays closed to it."""
    objs = rendered[overlay]
    routed = {p["backend"]["service"]["name"] for ing in by_kind(objs, "Ingress").values()
              for r in ing["spec"]["rules"] for p in r["http"]["paths"]}
    assert routed == {"portal", "billing", "ehr"}
    policies, labels = list(by_kind(objs, "NetworkPolicy").values()), _pod_labels(objs)
    for name, port in SERVICES.items():
        assert _ingress_controller_may_reach(policies, labels[f"{name}-web"], port) == (name in routed), name
        assert not _ingress_controller_may_reach(policies, labels[f"{name}-worker"], port), name


OPS_PATHS = tuple(yaml.safe_load((ROOT / "specs/common/ops.yaml").read_text(encoding="utf-8"))["paths"])


def _routes(ingress: dict) -> list[tuple[str, str, str]]:
    """An Ingress's (host, path, pathType, service) routes."""
    return [(rule["host"], p["path"], p["pathType"], p["backend"]["service"]["name"])
            for rule in ingress["spec"]["rules"] for p in rule["http"]["paths"]]


def _matches(path: str, path_type: str, request_path: str) -> bool:
    """Whether an Ingress path matches a request's path, as networking.k8s.io/v1 defines it (``Prefix``: by whole
    path elements; ingress-nginx serves ``ImplementationSpecific`` as a prefix too)."""
    if path_type == "Exact":
        return request_path == path
    prefix = path.rstrip("/")
    return request_path == prefix or request_path.startswith(prefix + "/")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_no_public_ingress_reaches_a_services_operational_endpoints(rendered, overlay):
    """Security review (session 28): the Ingress ``sen`` sent every path of the portal's public host to the portal,
    so its /metrics (request counts, latencies, process figures), /healthz, /readyz and /admin/indexes answered
    anyone. Every Sen service serves specs/common/ops.yaml's paths: no Ingress path may reach one of them (they
    stay inside: Prometheus and the kubelet reach each pod directly)."""
    for name, ingress in by_kind(rendered[overlay], "Ingress").items():
        for host, path, path_type, service in _routes(ingress):
            assert service in SERVICES, (name, path)
            reached = [ops for ops in OPS_PATHS if _matches(path, path_type, ops)]
            assert not reached, f"{name}: {host}{path} ({path_type}) reaches {service}'s {reached}"


@functools.cache
def _portal_pages() -> list[str]:
    """A request path of each route of the portal's pages (its Flask app, variables filled in) and of its own
    OpenAPI spec (the reporting API), from an app built in a process of its own (no database is reached)."""
    code = ("import json; from sen_portal.app import create_app\n"
            "print(json.dumps([r.rule for r in create_app().app.url_map.iter_rules() if r.endpoint != 'static']))")
    env = {"PATH": os.environ["PATH"], "SEN_ENV": "development", "SEN_DEV_JWT_KEY": "/nonexistent/dev-key.pem",
           "MONGO_URL": "mongodb://127.0.0.1:9/none", "AMQP_URL": "amqp://127.0.0.1:9//"}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    rules = json.loads(proc.stdout.strip().splitlines()[-1])
    rules += list(yaml.safe_load((ROOT / "specs/portal.yaml").read_text(encoding="utf-8"))["paths"])
    fill = re.compile(r"<[^>]+>|\{[^}]+\}")
    return sorted({fill.sub("x", rule) for rule in rules})


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_portals_ingress_routes_each_of_its_pages_to_it(rendered, overlay):
    """The Ingress ``sen`` names the portal's top-level paths instead of sending it everything: each route of the
    portal's pages and of its reporting API must be among them (a page added under a new path is named here),
    and the flask app's own ``/static`` (which no page uses: the portal's files are ``/assets``) is left out."""
    pytest.importorskip("sen_portal")
    routes = _routes(by_kind(rendered[overlay], "Ingress")["sen"])
    assert {service for *_, service in routes} == {"portal"}
    pages = _portal_pages()
    assert "/consults/x" in pages and "/api/reports/dashboard" in pages  # the app's routes and the spec's
    unrouted = [page for page in pages if not any(_matches(path, kind, page) for _, path, kind, _ in routes)]
    assert not unrouted, f"portal pages the Ingress sen does not route (name them in k8s/base/ingress.yaml): {unrouted}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_prometheus_still_scrapes_every_web_pods_metrics(rendered, overlay):
    """With /metrics off the public address, Prometheus (namespace monitoring) still scrapes each web pod: the pod's
    annotations name its web port and /metrics, a path every service serves (specs/common/ops.yaml), and the
    NetworkPolicies let the monitoring namespace reach that port."""
    objs = rendered[overlay]
    policies, labels = list(by_kind(objs, "NetworkPolicy").values()), _pod_labels(objs)
    assert "/metrics" in OPS_PATHS
    for name, port in SERVICES.items():
        template = by_kind(objs, "Deployment")[f"{name}-web"]["spec"]["template"]
        notes = template["metadata"]["annotations"]
        assert notes["prometheus.io/scrape"] == "true", name
        assert notes["prometheus.io/path"] == "/metrics", name
        assert int(notes["prometheus.io/port"]) == port, name
        assert {p["containerPort"] for p in template["spec"]["containers"][0]["ports"]} == {port}, name
        assert _namespace_may_reach(policies, "monitoring", labels[f"{name}-web"], port), name


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_payment_webhooks_have_an_ingress_of_their_own_with_rate_limits(rendered, overlay):
    """Security review (session 28): /webhooks was a path of the Ingress ``sen``, with no rate limit, while a call
    failing verification still has its raw body stored, so anyone could grow billing's inbox as fast as they
    could send. Its own Ingress ``sen-webhooks`` on the portal's host (the address the providers are given):
    /webhooks only, to billing; a rate limit per client address that still lets the design load (300 calls/s)
    come from one provider's address, bursts above it and connections open at once; the body limit billing's own
    (SEN_WEBHOOK_MAX_BYTES), so a larger body never reaches a pod. deploy/README.md says the numbers."""
    objs = rendered[overlay]
    ingresses = by_kind(objs, "Ingress")
    hooks = ingresses["sen-webhooks"]
    assert hooks["spec"]["ingressClassName"] == "nginx"  # the annotations below are ingress-nginx's
    routes = _routes(hooks)
    assert [(path, kind, service) for _, path, kind, service in routes] == [("/webhooks", "Prefix", "billing")]
    assert {host for host, *_ in routes} == {host for host, *_ in _routes(ingresses["sen"])}
    for name, ingress in ingresses.items():  # no other Ingress reaches them without the limits
        if name != "sen-webhooks":
            assert not [r for r in _routes(ingress) if _matches(r[1], r[2], "/webhooks/payos")], name
    notes = hooks["metadata"]["annotations"]
    rps = int(notes["nginx.ingress.kubernetes.io/limit-rps"])
    assert rps >= 300  # the whole design load may come from one provider's address through one controller
    assert int(notes["nginx.ingress.kubernetes.io/limit-burst-multiplier"]) >= 2
    assert int(notes["nginx.ingress.kubernetes.io/limit-connections"]) >= 300
    (config,) = [cm for name, cm in by_kind(objs, "ConfigMap").items() if name.startswith("sen-config")]
    service_limit = int(config["data"]["SEN_WEBHOOK_MAX_BYTES"])
    assert _nginx_size(notes["nginx.ingress.kubernetes.io/proxy-body-size"]) == service_limit
    readme = (ROOT / "deploy" / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("### The payment webhooks"):]
    section = section[:section.index("\n### ", 1)]
    assert f"limit-rps: {rps}" in section and "limit-whitelist" in section and "SEN_WEBHOOK_MAX_BYTES" in section


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_no_sen_process_reaches_a_private_address_unless_the_overlay_opens_it(rendered, overlay):
    """HTTPS to public addresses (a public OIDC issuer, banks) is open; the province's private network is not,
    until an overlay names its identity server (k8s/components/identity-server)."""
    objs = rendered[overlay]
    policies = list(by_kind(objs, "NetworkPolicy").values())
    assert "identity-server-egress" not in by_kind(objs, "NetworkPolicy")
    apps = {n: lb for n, lb in _pod_labels(objs).items() if lb.get("sen.vn/role") == "app"}
    assert len(apps) >= 2 * len(SERVICES)
    for name, labels in apps.items():
        assert _may_reach_address(policies, labels, "203.0.113.10", 443), name
        for address in ("10.20.0.15", "172.16.4.2", "192.168.1.10"):
            assert not _may_reach_address(policies, labels, address, 443), f"{name} -> {address}"


def _prod_tree(tmp_path: Path, province_env: str | None) -> Path:
    """The prod overlay of a copy of k8s/: the committed example as its secrets.env, and ``province_env`` as its
    province.env (None: no province.env)."""
    tree = tmp_path / "k8s"
    shutil.copytree(K8S, tree, ignore=shutil.ignore_patterns("secrets.env", "province.env"))
    prod = tree / "overlays/prod"
    shutil.copy(prod / "secrets.example.env", prod / "secrets.env")
    if province_env is not None:
        (prod / "province.env").write_text(province_env, encoding="utf-8")
    return prod


def _prod_with_identity_server(tmp_path: Path, data: dict[str, str] | None) -> Path:
    """A copy of k8s/ whose prod overlay enables the identity server as its kustomization's comment says (the
    component, and with ``data`` its settings file holding them)."""
    prod = _prod_tree(tmp_path, (K8S / "overlays/prod/province.example.env").read_text(encoding="utf-8"))
    text = (prod / "kustomization.yaml").read_text()
    component = "# components:\n#   - ../../components/identity-server\n"
    settings = "  # - identity-server.yaml\n"
    assert text.count(component) == 1 and text.count(settings) == 1, "the comment enabling it changed"
    text = text.replace(component, "components:\n  - ../../components/identity-server\n")
    if data is not None:
        text = text.replace(settings, "  - identity-server.yaml\n")
        doc = yaml.safe_load((prod / "identity-server.yaml").read_text())
        (prod / "identity-server.yaml").write_text(yaml.safe_dump({**doc, "data": data}))
    (prod / "kustomization.yaml").write_text(text)
    return prod


def test_an_overlay_opens_its_identity_server_on_a_private_address(kustomize, tmp_path):
    """Keycloak inside the province's network (its JWKS behind SEN_JWKS_URL): the overlay's identity-server.yaml
    names its address block and port, and every Sen process, and nothing else, may reach exactly those."""
    prod = _prod_with_identity_server(tmp_path, {"cidr": "10.20.0.15/32", "port": "8443"})
    proc = subprocess.run([*kustomize, str(prod)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    objs = [d for d in yaml.safe_load_all(proc.stdout) if d]
    for obj in objs:
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
    assert not [o for o in objs if o["kind"] == "ConfigMap" and o["metadata"]["name"] == "identity-server"]
    opened = by_kind(objs, "NetworkPolicy")["identity-server-egress"]
    assert opened["metadata"]["namespace"] == "sen"
    assert opened["spec"]["egress"][0]["ports"][0]["port"] == 8443  # a number: a string names a container port
    policies = list(by_kind(objs, "NetworkPolicy").values())
    for name, labels in _pod_labels(objs).items():
        app = labels.get("sen.vn/role") == "app"
        assert _may_reach_address(policies, labels, "10.20.0.15", 8443) == app, name
        assert not _may_reach_address(policies, labels, "10.20.0.16", 8443), name
        assert not _may_reach_address(policies, labels, "10.20.0.15", 22), name


def test_the_identity_server_component_without_its_address_does_not_build(kustomize, tmp_path):
    prod = _prod_with_identity_server(tmp_path, None)
    proc = subprocess.run([*kustomize, str(prod)], capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "identity-server" in proc.stderr


def test_namespaces_enforce_restricted_pod_security(rendered):
    for overlay in OVERLAYS:
        (ns,) = by_kind(rendered[overlay], "Namespace").values()
        assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
        assert all(o["metadata"].get("namespace") == ns["metadata"]["name"]
                   for o in rendered[overlay] if o["kind"] != "Namespace")


def test_generated_service_manifests_are_up_to_date():
    proc = subprocess.run([sys.executable, str(ROOT / "k8s/gen_services.py"), "--check"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_prod_serves_every_host_over_tls_where_ingress_nginx_adds_hsts(rendered):
    """The services send no Strict-Transport-Security: ingress-nginx adds it to the HTTPS answers of a TLS host
    (its ConfigMap's ``hsts``, on by default). So in production every Ingress host is under ``tls`` and plain HTTP
    is redirected (``ssl-redirect``); deploy/README.md says where HSTS comes from and how to check it."""
    for name, ingress in by_kind(rendered["prod"], "Ingress").items():
        tls_hosts = {h for t in ingress["spec"].get("tls", []) if t.get("secretName") for h in t["hosts"]}
        assert {r["host"] for r in ingress["spec"]["rules"]} <= tls_hosts, name
        assert ingress["metadata"]["annotations"].get("nginx.ingress.kubernetes.io/ssl-redirect") == "true", name
    readme = (ROOT / "deploy" / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("### HTTPS and HSTS"):]
    assert "Strict-Transport-Security" in section and "hsts" in section and "ssl-redirect" in section


SECOND_PROVINCE = ROOT / "tests/e2e/provinces/bac-sen.json"
OVERLAYS_OWN = {"SEN_ENV": "production", "WEB_CONCURRENCY": "3", "SEN_PORTAL_COOKIE_SECURE": "true"}


def _dotenv(path: Path) -> str:
    """What ``province.py dotenv`` prints for the province file at ``path``, run where no setting is set."""
    proc = subprocess.run([sys.executable, str(ROOT / "deploy/local/province.py"), "dotenv", str(path)],
                          env={"PATH": os.environ["PATH"]}, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def _build(kustomize: list[str], overlay: Path) -> subprocess.CompletedProcess:
    return subprocess.run([*kustomize, str(overlay)], capture_output=True, text=True, timeout=120)


def _counted_before_sen(tmp_path: Path) -> Path:
    """The second province with its baseline a number (``goal.beforeSen``), not its facilities marked."""
    data = json.loads(SECOND_PROVINCE.read_text(encoding="utf-8"))
    data["priceList"] = str(SECOND_PROVINCE.parent / data["priceList"])
    for org in data["organizations"]:
        org.pop("teleconsultBeforeSen", None)
    data["goal"]["beforeSen"] = 3
    path = tmp_path / "counted.json"
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    return path


@pytest.mark.parametrize("baseline", ["named", "counted"])
def test_prod_gives_the_pods_what_province_py_prints(kustomize, tmp_path, baseline):
    """The province's settings are one file the prod overlay reads, province.env as ``province.py dotenv`` writes
    it: every line reaches the ConfigMap as printed. Before, the overlay's literals (hub bvdk-tinh, goal 120,
    baseline 15, 1,200,000 residents) were merged over the province's and won."""
    printed = _dotenv(SECOND_PROVINCE if baseline == "named" else _counted_before_sen(tmp_path))
    proc = _build(kustomize, _prod_tree(tmp_path, printed))
    assert proc.returncode == 0, proc.stderr
    (config,) = [o["data"] for o in yaml.safe_load_all(proc.stdout)
                 if o and o["kind"] == "ConfigMap" and o["metadata"]["name"].startswith("sen-config")]
    lines = dict(line.split("=", 1) for line in printed.splitlines())
    assert {name: config.get(name) for name in lines} == lines
    assert config["SEN_PORTAL_HUB"] == config["SEN_CONSULT_DEFAULT_HUB"] == "bvdk-bac-sen"
    assert (config["SEN_REPORT_FACILITY_GOAL"], config["SEN_REPORT_POPULATION"]) == ("8", "12")
    if baseline == "named":  # a number beside the list would make the portal refuse both
        assert json.loads(config["SEN_REPORT_BASELINE_FACILITIES"]) == ["bvdk-bac-sen"]
        assert "SEN_REPORT_FACILITY_BASELINE" not in config
    else:
        assert config["SEN_REPORT_FACILITY_BASELINE"] == "3" and "SEN_REPORT_BASELINE_FACILITIES" not in config
    assert {name: config[name] for name in OVERLAYS_OWN} == OVERLAYS_OWN


@pytest.mark.parametrize("province_env", [None, "", "# to be written\n"], ids=["missing", "empty", "comment"])
def test_prod_without_the_provinces_settings_does_not_build(kustomize, tmp_path, province_env):
    """No province.env, or one without the province's settings (the shell's ``> province.env`` leaves an empty
    file when province.py refuses the province file): the build fails naming what is missing, where the pods
    would otherwise get a ConfigMap with none of them (billing with no bank, teleconsult with no hub). Kustomize
    words the error; the overlay, where it points, says what to run."""
    proc = _build(kustomize, _prod_tree(tmp_path, province_env))
    assert proc.returncode != 0 and not proc.stdout.strip()
    assert ("province.env" if province_env is None else "SEN_PORTAL_HUB") in proc.stderr, proc.stderr
    command = "deploy/local/province.py dotenv my-province.json > k8s/overlays/prod/province.env"
    for name in ("kustomization.yaml", "province.example.env"):
        assert command in (K8S / "overlays/prod" / name).read_text(encoding="utf-8"), name


@pytest.mark.parametrize("name", sorted(OVERLAYS_OWN))
def test_a_province_env_may_not_set_the_overlays_own_settings(kustomize, tmp_path, name):
    proc = _build(kustomize, _prod_tree(tmp_path, _dotenv(SECOND_PROVINCE) + f"{name}=x\n"))
    assert proc.returncode != 0 and f"illegally repeats the key `{name}`" in proc.stderr, proc.stderr


def test_the_province_example_is_what_province_py_prints_for_the_demo():
    """province.example.env shows the file's shape with the demo's values; regenerate its lines (below the
    comment) with ``province.py dotenv deploy/local/demo-province.json`` when the demo or province.py changes."""
    example = (K8S / "overlays/prod/province.example.env").read_text(encoding="utf-8").splitlines()
    assert [line for line in example if not line.startswith("#")] == \
        _dotenv(ROOT / "deploy/local/demo-province.json").splitlines()
