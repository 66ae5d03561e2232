"""Shared fixtures for the deployment tests: the repository paths and the rendered overlays.

Kustomize rendering is offline: tools.sh builds kustomize v5.5.0 from its Go module into
$HOME/.local/share/sen/bin once (Go module proxy only); when it cannot be built, `kubectl
kustomize` (which embeds kustomize) is used if present; only when neither exists are the
rendering tests skipped, saying why.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
K8S = ROOT / "k8s"
OVERLAYS = ("dev", "prod")


def _kustomize_command() -> tuple[list[str] | None, str]:
    try:
        out = subprocess.run(["bash", str(HERE / "tools.sh"), "kustomize"], capture_output=True, text=True,
                             timeout=900)
    except subprocess.TimeoutExpired:
        out = None
    if out is not None and out.returncode == 0:
        return [out.stdout.strip().splitlines()[-1], "build"], ""
    why = "tools.sh kustomize: " + (out.stderr.strip().splitlines()[-1] if out and out.stderr.strip() else "timed out")
    if out is not None and out.returncode != 3:
        pytest.fail(f"building kustomize failed: {out.stderr}")  # a broken script must not turn into a skip
    kubectl = shutil.which("kubectl")
    if kubectl and subprocess.run([kubectl, "kustomize", "--help"], capture_output=True).returncode == 0:
        return [kubectl, "kustomize"], ""
    return None, why + "; and no kubectl with kustomize"


@pytest.fixture(scope="session")
def kustomize() -> list[str]:
    cmd, why = _kustomize_command()
    if cmd is None:
        pytest.skip(f"kustomize cannot be built or found on this machine ({why})")
    return cmd


@pytest.fixture(scope="session")
def k8s_tree(tmp_path_factory) -> Path:
    """A copy of k8s/ where the prod overlay has its secrets.env and its province.env (the committed examples)."""
    dst = tmp_path_factory.mktemp("k8s") / "k8s"
    shutil.copytree(K8S, dst, ignore=shutil.ignore_patterns("secrets.env", "province.env"))
    for name in ("secrets", "province"):
        shutil.copy(dst / f"overlays/prod/{name}.example.env", dst / f"overlays/prod/{name}.env")
    return dst


@pytest.fixture(scope="session")
def rendered(kustomize, k8s_tree) -> dict[str, list[dict]]:
    out = {}
    for overlay in OVERLAYS:
        proc = subprocess.run([*kustomize, str(k8s_tree / "overlays" / overlay)], capture_output=True, text=True,
                              timeout=120)
        assert proc.returncode == 0, f"kustomize build overlays/{overlay} failed:\n{proc.stderr}"
        out[overlay] = [d for d in yaml.safe_load_all(proc.stdout) if d]
    return out
