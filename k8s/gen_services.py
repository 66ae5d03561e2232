#!/usr/bin/env python3
"""Write k8s/base/services/<service>.yaml: the same six objects for each Sen service.

    python k8s/gen_services.py          # rewrite the files
    python k8s/gen_services.py --check  # exit 1 when a file differs from what would be written

The four services differ only in name and port, so the manifests are generated rather than
copied by hand; tests/deploy checks that the committed files match this script.
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

SERVICES = {"ehr": 8081, "teleconsult": 8082, "billing": 8083, "portal": 8080}
TMP = "/tmp"  # noqa: S108 - an emptyDir mount point inside the container
PROMETHEUS_DIR = f"{TMP}/prometheus"
IMAGE = "sen"  # the overlays set the registry and tag (kustomize `images:`)
UID = 10001
OUT = Path(__file__).resolve().parent / "base" / "services"


def labels(name: str, component: str) -> dict:
    return {"app.kubernetes.io/name": name, "app.kubernetes.io/component": component,
            "app.kubernetes.io/part-of": "sen", "sen.vn/role": "app"}


def selector(name: str, component: str) -> dict:
    return {"app.kubernetes.io/name": name, "app.kubernetes.io/component": component}


POD_SECURITY = {"runAsNonRoot": True, "runAsUser": UID, "runAsGroup": UID, "fsGroup": UID,
                "seccompProfile": {"type": "RuntimeDefault"}}
CONTAINER_SECURITY = {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                      "runAsNonRoot": True, "capabilities": {"drop": ["ALL"]}}


WEBHOOK_SECRETS = ("SEN_PAYOS_CHECKSUM_KEY", "SEN_CASSO_CHECKSUM_KEY", "SEN_SEPAY_API_KEY", "SEN_WEBHOOK_SECRET")


def secrets(name: str, role: str) -> list[tuple[str, bool]]:
    """The service's own secrets a process of ``role`` reads from sen-secrets, each with whether it
    may be left out of the Secret (optional: that feature is then off)."""
    out = [("MONGO_URL", False), ("AMQP_URL", False)]
    if name == "billing" and role == "web":  # the payment webhooks' secrets (a provider left out is off)
        out += [(key, True) for key in WEBHOOK_SECRETS]
    if name == "portal":
        # every portal process refuses to start in production without the session cookie's key
        out.append(("SEN_PORTAL_SECRET_KEY", False))
        if role == "web":
            out.append(("SEN_OIDC_CLIENT_SECRET", True))  # left out: the portal is a public OIDC client
    if name == "teleconsult" and role in ("web", "worker"):
        out.append(("SEN_JITSI_APP_SECRET", True))  # left out: join links carry no signed JWT
        if role == "worker":
            out.append(("SEN_SMTP_PASSWORD", True))  # the reminders' SMTP login, with SEN_NOTIFY_SENDER=smtp
    return out


def env(name: str, role: str, port: int | None) -> list[dict]:
    out = [{"name": "SEN_SERVICE", "value": name}, {"name": "SEN_DB", "value": f"sen_{name}"}]
    if port is not None:
        out += [{"name": "PORT", "value": str(port)},
                {"name": "PROMETHEUS_MULTIPROC_DIR", "value": PROMETHEUS_DIR}]
    for key, optional in secrets(name, role):
        ref = {"name": "sen-secrets", "key": key, **({"optional": True} if optional else {})}
        out.append({"name": key, "valueFrom": {"secretKeyRef": ref}})
    return out


def container(name: str, role: str, port: int | None, resources: dict) -> dict:
    c = {"name": role, "image": IMAGE, "imagePullPolicy": "IfNotPresent", "args": [role, name],
         "envFrom": [{"configMapRef": {"name": "sen-config"}}], "env": env(name, role, port),
         "resources": resources, "securityContext": CONTAINER_SECURITY,
         "volumeMounts": [{"name": "tmp", "mountPath": TMP}]}
    if port is not None:
        c["ports"] = [{"name": "http", "containerPort": port, "protocol": "TCP"}]
        c["volumeMounts"].append({"name": "prometheus", "mountPath": PROMETHEUS_DIR})
        c["startupProbe"] = {"httpGet": {"path": "/healthz", "port": "http"},
                             "periodSeconds": 2, "timeoutSeconds": 2, "failureThreshold": 30}
        c["readinessProbe"] = {"httpGet": {"path": "/readyz", "port": "http"},
                               "periodSeconds": 10, "timeoutSeconds": 3, "failureThreshold": 3}
        c["livenessProbe"] = {"httpGet": {"path": "/healthz", "port": "http"},
                              "periodSeconds": 10, "timeoutSeconds": 3, "failureThreshold": 6}
        # let the endpoints controller and the ingress stop sending traffic before SIGTERM
        c["lifecycle"] = {"preStop": {"exec": {"command": ["sleep", "5"]}}}
    return c


JOB_RESOURCES = {"requests": {"cpu": "50m", "memory": "128Mi"}, "limits": {"memory": "256Mi"}}


def wait_for_indexes(name: str) -> dict:
    """The init container of web and worker pods: waits until the service's declared indexes exist
    (the <name>-indexes Job makes them), so no process of a release serves before them, on a first
    install or an upgrade adding one, whatever order `kubectl apply` starts things in."""
    c = container(name, "indexes", None, JOB_RESOURCES)
    return {**c, "name": "wait-for-indexes", "args": ["indexes", name, "--wait"]}


def pod_spec(name: str, role: str, port: int | None, resources: dict, **extra) -> dict:
    volumes = [{"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}}]
    if port is not None:
        volumes.append({"name": "prometheus", "emptyDir": {"medium": "Memory", "sizeLimit": "64Mi"}})
    spec = {"automountServiceAccountToken": False, "securityContext": POD_SECURITY}
    spec.update(extra)
    if role in ("web", "worker"):
        spec["initContainers"] = [wait_for_indexes(name)]
    spec["containers"] = [container(name, role, port, resources)]
    spec["volumes"] = volumes
    return spec


def manifests(name: str, port: int) -> list[dict]:
    web_res = {"requests": {"cpu": "250m", "memory": "384Mi"}, "limits": {"memory": "768Mi"}}
    worker_res = {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "512Mi"}}
    job_res = JOB_RESOURCES
    web = {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": f"{name}-web", "labels": labels(name, "web")},
        "spec": {
            # no `replicas`: the HorizontalPodAutoscaler owns it (re-applying must not reset it)
            "revisionHistoryLimit": 5,
            "selector": {"matchLabels": selector(name, "web")},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": "25%"}},
            "template": {
                "metadata": {"labels": labels(name, "web"),
                             "annotations": {"prometheus.io/scrape": "true", "prometheus.io/port": str(port),
                                             "prometheus.io/path": "/metrics"}},
                "spec": pod_spec(
                    name, "web", port, web_res, terminationGracePeriodSeconds=40,
                    topologySpreadConstraints=[{"maxSkew": 1, "topologyKey": "kubernetes.io/hostname",
                                                "whenUnsatisfiable": "ScheduleAnyway",
                                                "labelSelector": {"matchLabels": selector(name, "web")}}]),
            },
        },
    }
    worker = {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": f"{name}-worker", "labels": labels(name, "worker")},
        "spec": {
            "replicas": 1, "revisionHistoryLimit": 5,
            "selector": {"matchLabels": selector(name, "worker")},
            "template": {"metadata": {"labels": labels(name, "worker")},
                         "spec": pod_spec(name, "worker", None, worker_res, terminationGracePeriodSeconds=60)},
        },
    }
    service = {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "labels": labels(name, "web")},
        "spec": {"type": "ClusterIP", "selector": selector(name, "web"),
                 "ports": [{"name": "http", "port": port, "targetPort": "http", "protocol": "TCP"}]},
    }
    hpa = {
        "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": f"{name}-web", "labels": labels(name, "web")},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": f"{name}-web"},
            "minReplicas": 2, "maxReplicas": 6,
            "metrics": [{"type": "Resource", "resource": {
                "name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}}}],
            "behavior": {"scaleDown": {"stabilizationWindowSeconds": 300}},
        },
    }
    pdb = {
        "apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
        "metadata": {"name": f"{name}-web", "labels": labels(name, "web")},
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": selector(name, "web")}},
    }
    job = {
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": f"{name}-indexes", "labels": labels(name, "indexes")},
        "spec": {
            "backoffLimit": 6, "activeDeadlineSeconds": 900, "ttlSecondsAfterFinished": 86400,
            "template": {"metadata": {"labels": labels(name, "indexes")},
                         "spec": pod_spec(name, "indexes", None, job_res, restartPolicy="OnFailure")},
        },
    }
    return [web, worker, service, hpa, pdb, job]


class _NoAliases(yaml.SafeDumper):
    def ignore_aliases(self, data) -> bool:
        return True


def render(name: str, port: int) -> str:
    head = (f"# {name}: web Deployment, worker Deployment, Service, HorizontalPodAutoscaler,\n"
            f"# PodDisruptionBudget and the indexes Job. Generated by k8s/gen_services.py: edit that.\n")
    docs = (yaml.dump(m, Dumper=_NoAliases, sort_keys=False, width=120) for m in manifests(name, port))
    return head + "".join("---\n" + doc for doc in docs)


def main(argv: list[str]) -> int:
    check = "--check" in argv
    stale = []
    OUT.mkdir(parents=True, exist_ok=True)
    for name, port in SERVICES.items():
        path = OUT / f"{name}.yaml"
        text = render(name, port)
        if check:
            if not path.exists() or path.read_text() != text:
                stale.append(str(path))
        else:
            path.write_text(text)
    if stale:
        print("stale (run python k8s/gen_services.py):", *stale, sep="\n  ")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
