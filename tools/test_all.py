"""``make test``: the whole suite as two pytest runs at once, then the broker's fault tests alone.

One pytest process keeps one core busy for most of the suite (unit tests, a test client, one request at a
time), so on this project's two-core machines the suite took 31 minutes serially. The browser suite
(``tests/browser``: its own stack of every service and Chromium) runs beside everything else: each run has
its own run id, database names and bus prefix (``tests/conftest.py``), and fault tests that stop a
database start their own (``tests/own_database.py``). The tests that stop and start the shared RabbitMQ
(their names say ``broker_restart``; ``tests.conftest.rabbit_restart`` refuses any other) would cut both
runs' connections: they run last, alone.

Each run's output goes to ``.sen/test-logs/<run>.log``; everything but the browser run is shown as it
goes, the browser run's log after it. The last line sums the three runs; the exit status is non-zero if
any run failed. Extra arguments go to every run.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LOGS = ROOT / ".sen" / "test-logs"
RESTARTS = "broker_restart"
PYTEST = [sys.executable, "-m", "pytest"]


def own_temp(name: str) -> dict[str, str]:
    """The environment of a run with pytest's temporary folders of its own: two runs at once must not number
    or clean up each other's."""
    return {**os.environ, "PYTEST_DEBUG_TEMPROOT": tempfile.mkdtemp(prefix=f"sen-test-{name}-")}


def summary(text: str) -> dict[str, int]:
    """The counts of pytest's last summary line ("3 failed, 120 passed, 2 skipped in 10.0s")."""
    lines = [line for line in text.splitlines() if re.search(r"\d+ (passed|failed|error)", line)]
    if not lines:
        return {}
    return {word: int(n) for n, word in re.findall(r"(\d+) (\w+)", lines[-1].split(" in ")[0])}


def main(extra: list[str]) -> int:
    LOGS.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    browser_log = LOGS / "browser.log"
    with browser_log.open("w") as out:
        browser = subprocess.Popen([*PYTEST, "tests/browser", *extra], cwd=ROOT, stdout=out,
                                   stderr=subprocess.STDOUT, env=own_temp("browser"))
    rest_cmd = [*PYTEST, "--ignore=tests/browser", "-k", f"not {RESTARTS}", *extra]
    results: dict[str, tuple[int, dict[str, int]]] = {}
    results["rest"] = run_shown("rest", rest_cmd)
    code = browser.wait()
    text = browser_log.read_text(errors="replace")
    print(f"\n{'=' * 30} the browser suite, run beside it ({browser_log.relative_to(ROOT)}) {'=' * 30}",
          flush=True)
    print(text, flush=True)
    results["browser"] = (code, summary(text))
    results[RESTARTS] = run_shown(RESTARTS, [*PYTEST, "tests/integration/test_bus.py",
                                             "tests/integration/test_outbox.py", "-k", RESTARTS, *extra])
    totals: dict[str, int] = {}
    for _, counts in results.values():
        for word, n in counts.items():
            totals[word] = totals.get(word, 0) + n
    failed = [name for name, (code, counts) in results.items() if code != 0 or not counts]
    words = ", ".join(f"{n} {word}" for word, n in sorted(totals.items(), key=lambda kv: kv[0] != "failed"))
    runs = "; ".join(f"{name}: exit {code}" for name, (code, _) in results.items())
    verdict = f"FAILED in {', '.join(failed)}" if failed else "all passed"
    print(f"{'=' * 20} make test: {words} in {time.monotonic() - started:.0f}s ({runs}) -- {verdict} "
          f"{'=' * 20}", flush=True)
    return 1 if failed else 0


def run_shown(name: str, cmd: list[str]) -> tuple[int, dict[str, int]]:
    """Run ``cmd``, its output shown as it goes and kept in its log."""
    log = LOGS / f"{name}.log"
    print(f"{'=' * 30} {name}: {' '.join(cmd[2:])} {'=' * 30}", flush=True)
    with log.open("w") as out, subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                                text=True, errors="replace", env=own_temp(name)) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            sys.stdout.write(line)
            sys.stdout.flush()
            out.write(line)
        code = proc.wait()
    return code, summary(log.read_text(errors="replace"))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
