"""`make run` on a fresh machine: ``infra.sh packages`` installs what the processes need besides the servers.

The README promises that a fresh Debian-like machine needs only Python 3.11, Go and root for apt-get, but
``make run`` ran ``npm ci`` (the portal's htmx, Chart.js) with no npm, and billing prints receipts with
WeasyPrint, which loads pango: neither was installed, so the first ``make run`` stopped at ``npm: command
not found`` and a receipt's PDF could not be made. The script runs here with stand-ins for ``apt-get``,
``ldconfig``, ``id`` and ``npm`` on a PATH of their own; nothing is installed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "deploy" / "local" / "infra.sh"
PANGO = "\tlibpangoft2-1.0.so.0 (libc6,x86-64) => /usr/lib/x86_64-linux-gnu/libpangoft2-1.0.so.0"


def _stub(path: Path, body: str) -> None:
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(0o755)


def run_packages(tmp_path: Path, *, npm: bool, pango: bool, uid: int = 0) -> tuple[subprocess.CompletedProcess, str]:
    """``infra.sh packages`` on a machine with (or without) npm and pango; what it asked apt-get to do."""
    bin_dir, log = tmp_path / "bin", tmp_path / "apt.log"
    bin_dir.mkdir()
    for tool in ("dirname", "grep", "mkdir", "touch", "cat"):
        os.symlink(shutil.which(tool), bin_dir / tool)
    _stub(bin_dir / "apt-get", f'echo "$*" >>{log}')
    _stub(bin_dir / "id", f"echo {uid}")
    _stub(bin_dir / "ldconfig", f"printf '%s\\n' '{PANGO if pango else ''}'")
    if npm:
        _stub(bin_dir / "npm", "exit 0")
    proc = subprocess.run([shutil.which("bash"), str(INFRA), "packages"], capture_output=True, text=True, timeout=60,
                          env={"PATH": str(bin_dir), "SEN_STATE_DIR": str(tmp_path / "state"),
                               "HOME": str(tmp_path)})
    return proc, log.read_text() if log.exists() else ""


def test_a_fresh_machine_gets_npm_and_weasyprints_libraries(tmp_path):
    proc, apt = run_packages(tmp_path, npm=False, pango=False)
    assert proc.returncode == 0, proc.stderr
    update, install = apt.splitlines()
    assert update.startswith("update")
    assert install.split()[:3] == ["install", "-y", "-qq"]
    assert {"npm", "libpango-1.0-0", "libpangoft2-1.0-0", "fonts-dejavu-core"} <= set(install.split())


@pytest.mark.parametrize(("npm", "pango", "wanted"), [(True, False, "libpango-1.0-0"), (False, True, "npm")])
def test_only_what_is_missing_is_installed(tmp_path, npm, pango, wanted):
    proc, apt = run_packages(tmp_path, npm=npm, pango=pango)
    assert proc.returncode == 0, proc.stderr
    install = apt.splitlines()[-1].split()
    assert wanted in install
    assert ("npm" in install) is not npm and ("libpango-1.0-0" in install) is not pango


def test_a_machine_with_both_installs_nothing(tmp_path):
    proc, apt = run_packages(tmp_path, npm=True, pango=True)
    assert proc.returncode == 0, proc.stderr
    assert apt == ""


def test_without_root_it_names_what_is_missing(tmp_path):
    proc, apt = run_packages(tmp_path, npm=False, pango=True, uid=1000)
    assert proc.returncode != 0
    assert "npm" in proc.stderr and apt == ""


def test_make_runs_it_before_npm_ci():
    out = subprocess.run(["make", "-n", "-B", "assets"], cwd=ROOT, capture_output=True, text=True, timeout=60,
                         check=True).stdout
    lines = out.splitlines()
    packages = next(i for i, line in enumerate(lines) if "infra.sh packages" in line)
    npm_ci = next(i for i, line in enumerate(lines) if "npm ci" in line)
    assert packages < npm_ci
