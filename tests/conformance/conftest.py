"""Conformance fixtures: the official FHIR R4 example package, fetched when missing.

``tools/fhir/fetch-examples.sh`` unpacks ``hl7.fhir.r4.examples@4.0.1`` (npm) into
``.sen/fhir/hl7.fhir.r4.examples/package``; a fresh clone (CI) fetches it here, once.
The report the corpus test builds is printed in the terminal summary.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / ".sen" / "fhir" / "hl7.fhir.r4.examples"
REPORT_KEY = pytest.StashKey[list[str]]()


@pytest.fixture(scope="session")
def r4_examples_dir() -> Path:
    package = EXAMPLES / "package"
    if not package.is_dir():
        subprocess.run(["bash", str(ROOT / "tools" / "fhir" / "fetch-examples.sh"), str(EXAMPLES)],
                       check=True, cwd=ROOT, timeout=600)
    assert package.is_dir(), f"{package} missing after fetch-examples.sh"
    return package


@pytest.fixture(scope="session")
def conformance_report(request: pytest.FixtureRequest) -> list[str]:
    """Lines printed after the run (visible without -s)."""
    return request.config.stash.setdefault(REPORT_KEY, [])


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:  # noqa: ARG001 - pytest hook
    lines = config.stash.get(REPORT_KEY, [])
    if lines:
        terminalreporter.section("FHIR R4 conformance corpus")
        for line in lines:
            terminalreporter.write_line(line)
