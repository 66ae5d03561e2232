"""Fixtures every suite shares: the real servers, isolated per test run.

MongoDB (FerretDB locally) and RabbitMQ are the real thing: the session starts
them with deploy/local/infra.sh unless MONGO_URL and AMQP_URL point at running
servers. Each run gets its own database names and bus prefix, so runs and
suites never see each other's data.
"""

from __future__ import annotations

import os
import signal
import subprocess
import uuid
from pathlib import Path

import prometheus_client  # noqa: F401 - fix its value class now, before any test sets PROMETHEUS_MULTIPROC_DIR
import pytest

ROOT = Path(__file__).resolve().parents[1]
INFRA = ROOT / "deploy" / "local" / "infra.sh"


def _infra_env() -> dict[str, str]:
    out = subprocess.run(["bash", str(INFRA), "env"], check=True, capture_output=True, text=True).stdout
    return dict(line.split("=", 1) for line in out.split())


@pytest.fixture(scope="session")
def servers() -> dict[str, str]:
    """MONGO_URL and AMQP_URL of running servers (started when needed)."""
    if os.environ.get("MONGO_URL") and os.environ.get("AMQP_URL"):
        return {"MONGO_URL": os.environ["MONGO_URL"], "AMQP_URL": os.environ["AMQP_URL"]}
    subprocess.run(["bash", str(INFRA), "up"], check=True)
    return _infra_env()


@pytest.fixture(scope="session")
def run_id() -> str:
    return uuid.uuid4().hex[:8]


@pytest.fixture(scope="session")
def mongo_url(servers: dict[str, str]) -> str:
    return servers["MONGO_URL"]


@pytest.fixture(scope="session")
def amqp_url(servers: dict[str, str]) -> str:
    _brokers_used.append(servers["AMQP_URL"])
    return servers["AMQP_URL"]


@pytest.fixture(scope="session")
def dev_key(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("jwt") / "dev-jwt.pem"


_brokers_used: list[str] = []


@pytest.fixture(scope="session", autouse=True)
def _remove_run_topology(run_id: str):
    """At the end, delete the exchanges and queues this run declared under its prefix (processes
    started by the tests declare the whole catalog), so runs do not pile up on the broker."""
    yield
    if not _brokers_used:
        return
    from kombu import Connection
    from sen_shared.bus import Topology, load_catalog

    with Connection(_brokers_used[0], connect_timeout=5) as conn:
        Topology(load_catalog(), prefix=f"t{run_id}.").delete(conn.default_channel)


@pytest.fixture(scope="session")
def base_env(mongo_url: str, amqp_url: str, run_id: str, dev_key: Path) -> dict[str, str]:
    """Environment for a Sen process of this test run (add SEN_DB per service); a portal's demo users sign in
    through cheap password hashes (tests.support.demo_password_hashes)."""
    from tests.support import demo_password_hashes

    return {"MONGO_URL": mongo_url, "AMQP_URL": amqp_url, "SEN_ENV": "test",
            "SEN_BUS_PREFIX": f"t{run_id}.", "SEN_DEV_JWT_KEY": str(dev_key), "LOG_LEVEL": "WARNING",
            "SEN_PORTAL_DEMO_PASSWORD_HASHES": demo_password_hashes()}


@pytest.fixture(scope="session")
def mongo_client(mongo_url: str):
    from pymongo import MongoClient

    client = MongoClient(mongo_url, tz_aware=True, uuidRepresentation="standard")
    yield client
    client.close()


@pytest.fixture()
def fresh_db(mongo_client, run_id: str, request: pytest.FixtureRequest):
    """A database of its own for one test, dropped afterwards."""
    name = f"sen_t{run_id}_{uuid.uuid4().hex[:6]}"
    yield mongo_client[name]
    mongo_client.drop_database(name)


def rabbit_restart(seconds: float = 2) -> None:
    """Stop the local broker's application and start it again (fault tests)."""
    subprocess.run(["bash", str(INFRA), "rabbit-restart", str(seconds)], check=True)


def rabbitmqctl(*args: str) -> str:
    return subprocess.run(["bash", str(INFRA), "rabbitmqctl", *args], check=True, capture_output=True,
                          text=True).stdout


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The browser suite last: Playwright's sync API keeps an asyncio loop running on the main
    thread while its session-wide browser is open, and tests that call ``asyncio.run`` (the
    awaited reads) fail under it; its stack of every service also need not run beside the rest."""
    items.sort(key=lambda item: "tests/browser/" in str(item.fspath).replace("\\", "/"))


_deploy_tools: list[subprocess.Popen] = []


def pytest_collection_finish(session: pytest.Session) -> None:
    """The deployment tests' Go tools (kustomize, composecheck: tests/deploy/tools.sh) built in the background from
    the run's start, at a low priority, when the run has deployment tests. On a fresh machine (CI) their first
    fixtures built them in line: the module proxy's downloads and the compiles, 37 s of wall at load 1 and 124 s +
    26 s in a run at load 12, while the unit tests at the run's start leave one of the two cores idle. tools.sh
    builds a tool once at a time (flock): a fixture asking for it meanwhile waits for this build and finds it
    fresh, and says what it said before when it cannot be built (its own call of tools.sh). Already built, this
    is two short bash runs."""
    if session.config.option.collectonly:
        return
    if any("tests/deploy/" in str(item.fspath).replace("\\", "/") for item in session.items):
        script = str(ROOT / "tests" / "deploy" / "tools.sh")
        _deploy_tools.append(subprocess.Popen(
            ["nice", "-n", "10", "bash", "-c", 'bash "$0" kustomize; bash "$0" composecheck', script],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """A background build of the deployment tools still running (a run stopped early) is stopped with the run."""
    for proc in _deploy_tools:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
        proc.wait()


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    """Where the run's time went: the 15 slowest modules, setup and teardown included (a module or session
    fixture's start counts in the first test that asked for it), so the next cut starts from the numbers."""
    seconds: dict[str, float] = {}
    tests: dict[str, int] = {}
    for reports in terminalreporter.stats.values():
        for rep in reports:
            if isinstance(rep, pytest.TestReport):
                module = rep.nodeid.split("::", 1)[0]
                seconds[module] = seconds.get(module, 0.0) + rep.duration
                tests[module] = tests.get(module, 0) + (rep.when == "call")
    if not seconds:
        return
    total = sum(seconds.values())
    terminalreporter.write_sep("=", f"slowest modules (setup included), of {total:.0f} s in {len(seconds)} modules")
    ranked = sorted(seconds.items(), key=lambda kv: -kv[1])
    for module, took in ranked[:15]:
        terminalreporter.write_line(f"{took:8.1f} s {100 * took / total:5.1f}% {tests[module]:4d} tests  {module}")
    every = os.environ.get("SEN_DURATIONS_FILE")  # every module's, to a file (tab-separated), when asked
    if every:
        Path(every).write_text("".join(f"{took:.1f}\t{tests[module]}\t{module}\n" for module, took in ranked),
                               encoding="utf-8")
