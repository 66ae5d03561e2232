"""deploy/compose.yaml and deploy/Dockerfile, checked offline.

Compose: there is no `docker compose` plugin here (only the docker client), so the file is
loaded by composecheck, a small program on compose-go (the library `docker compose config`
is built on; tools.sh builds it), and validated against the compose-spec JSON schema that
compose-go ships (read from the Go module cache, see tools.sh compose-schema). The Dockerfile
gets a small lint of our own (hadolint is not available).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
COMPOSE = ROOT / "deploy/compose.yaml"
DOCKERFILE = ROOT / "deploy/Dockerfile"
SERVICES = {"ehr": 8081, "teleconsult": 8082, "billing": 8083, "portal": 8080}


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def compose_project() -> dict:
    """The project as compose-go normalizes it (what `docker compose config` prints)."""
    proc = subprocess.run(["bash", str(HERE / "tools.sh"), "composecheck"], capture_output=True, text=True,
                          timeout=900)
    if proc.returncode == 3:
        pytest.skip(f"composecheck cannot be built here: {proc.stderr.strip()}")
    assert proc.returncode == 0, proc.stderr
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SEN_", "COMPOSE_"))}
    out = subprocess.run([proc.stdout.strip(), str(COMPOSE)], capture_output=True, text=True, timeout=60, env=env)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


@pytest.fixture(scope="module")
def compose_schema() -> dict:
    proc = subprocess.run(["bash", str(HERE / "tools.sh"), "compose-schema"], capture_output=True, text=True,
                          timeout=600)
    if proc.returncode == 3:
        pytest.skip(f"the compose-spec schema cannot be fetched here: {proc.stderr.strip()}")
    assert proc.returncode == 0, proc.stderr
    return json.loads(Path(proc.stdout.strip().splitlines()[-1]).read_text())


def test_docker_compose_config_when_the_plugin_exists():
    docker = shutil.which("docker")
    if not docker or subprocess.run([docker, "compose", "version"], capture_output=True).returncode != 0:
        pytest.skip("no `docker compose` plugin here (only the client); composecheck covers it")
    proc = subprocess.run([docker, "compose", "-f", str(COMPOSE), "config", "-q"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_compose_matches_the_compose_spec_schema(compose, compose_schema):
    schema = compose_schema
    errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(compose), key=str)
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors)


def test_the_schema_rejects_a_broken_compose_file(compose, compose_schema):
    schema = compose_schema
    broken = {**compose, "services": {**compose["services"], "mongo": {**compose["services"]["mongo"],
                                                                       "healthcheck": {"test": 42}}}}
    assert list(jsonschema.Draft202012Validator(schema).iter_errors(broken))


def test_compose_go_loads_the_file(compose_project):
    expected = {"mongo", "rabbitmq", "dev-key"} | {f"{s}-{r}" for s in SERVICES for r in ("web", "worker", "indexes")}
    assert set(compose_project["services"]) == expected


def test_compose_infrastructure_images_and_healthchecks(compose_project):
    services = compose_project["services"]
    assert services["mongo"]["image"].startswith("mongo:7")
    assert "--replSet" in services["mongo"]["command"]
    assert "rs.initiate" in " ".join(services["mongo"]["healthcheck"]["test"])
    assert re.match(r"rabbitmq:(3\.13|4\.\d+)-management$", services["rabbitmq"]["image"])
    assert "default_queue_type = quorum" in compose_project["configs"]["rabbitmq-conf"]["content"]
    for name in ("mongo", "rabbitmq"):
        assert services[name]["healthcheck"]["test"][0] in {"CMD", "CMD-SHELL"}


def test_compose_start_order_and_environment(compose_project):
    services = compose_project["services"]
    for name, port in SERVICES.items():
        idx, web, worker = (services[f"{name}-{r}"] for r in ("indexes", "web", "worker"))
        assert idx["command"] == ["indexes", name] and idx["restart"] == "no"
        assert idx["depends_on"]["mongo"]["condition"] == "service_healthy"
        for proc, role in ((web, "web"), (worker, "worker")):
            assert proc["command"] == [role, name]
            deps = {k: v["condition"] for k, v in proc["depends_on"].items()}
            assert deps[f"{name}-indexes"] == "service_completed_successfully"
            assert deps["mongo"] == deps["rabbitmq"] == "service_healthy"
            env = proc["environment"]
            assert env["MONGO_URL"].startswith("mongodb://mongo:27017/") and "replicaSet=rs0" in env["MONGO_URL"]
            assert env["AMQP_URL"].startswith("amqp://") and env["SEN_SERVICE"] == name
            assert proc["read_only"] is True
        assert web["environment"]["PORT"] == str(port)
        assert [(p["published"], p["target"]) for p in web["ports"]] == [(str(port), port)]
        assert "/readyz" in " ".join(web["healthcheck"]["test"]) and str(port) in " ".join(web["healthcheck"]["test"])
        assert "healthcheck" not in worker or worker["healthcheck"].get("disable")


# ------------------------------------------------------------------------ Dockerfile lint
def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs: continuation lines joined, heredoc bodies skipped."""
    out, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        line = lines[i].strip()
        i += 1
        if not line or line.startswith("#"):
            continue
        while line.endswith("\\") and i < len(lines):
            line = line[:-1] + " " + lines[i].strip()
            i += 1
        instr, _, args = line.partition(" ")
        out.append((instr.upper(), args.strip()))
        heredoc = re.search(r"<<-?'?\"?(\w+)'?\"?", args)
        if heredoc and instr.upper() in {"RUN", "COPY"}:
            while i < len(lines) and lines[i].strip() != heredoc.group(1):
                i += 1
            i += 1
    return out


def lint_dockerfile(text: str) -> list[str]:
    problems = []
    instructions = dockerfile_instructions(text)
    args = {}
    for instr, rest in instructions:
        if instr == "FROM":
            break
        if instr == "ARG" and "=" in rest:
            k, v = rest.split("=", 1)
            args[k] = v
    stages = set()
    for instr, rest in instructions:
        if instr == "FROM":
            parts = [p for p in rest.split() if not p.startswith("--")]
            image = re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), parts[0])
            if image not in stages:
                name = image.split("@", 1)[0].rsplit("/", 1)[-1]
                if "@sha256:" not in image and ":" not in name:
                    problems.append(f"FROM {image}: no tag")
                elif name.endswith(":latest"):
                    problems.append(f"FROM {image}: latest")
            if len(parts) >= 3 and parts[1].upper() == "AS":
                stages.add(parts[2])
        if instr == "ADD" and re.search(r"https?://|git@", rest):
            problems.append(f"ADD {rest}: fetch with a checked download instead")
        if instr == "RUN" and re.search(r"\b(curl|wget)\b.*\|\s*(ba)?sh", rest):
            problems.append("RUN pipes a download into a shell")
    users = [rest for instr, rest in instructions if instr == "USER"]
    if not users:
        problems.append("no USER: the image would run as root")
    elif users[-1].split(":")[0] in {"root", "0"}:
        problems.append(f"last USER is {users[-1]}")
    last_from = max(i for i, (instr, _) in enumerate(instructions) if instr == "FROM")
    if not any(instr == "USER" for instr, _ in instructions[last_from:]):
        problems.append("the final stage sets no USER")
    return problems


def test_dockerfile_lint():
    assert lint_dockerfile(DOCKERFILE.read_text()) == []


@pytest.mark.parametrize("bad, problem", [
    ("FROM python\nUSER 1000\n", "no tag"),
    ("FROM python:latest\nUSER 1000\n", "latest"),
    ("FROM python:3.11-slim\nADD https://example.com/x.tgz /x\nUSER 1000\n", "ADD"),
    ("FROM python:3.11-slim\nRUN echo hi\n", "no USER"),
    ("FROM python:3.11-slim\nUSER 1000\nUSER root\n", "last USER"),
])
def test_dockerfile_lint_catches(bad, problem):
    assert any(problem in p for p in lint_dockerfile(bad))


def test_dockerfile_installs_with_constraints_and_runs_every_role():
    text = DOCKERFILE.read_text()
    assert re.search(r"^FROM \$\{PYTHON_IMAGE\} AS runtime", text, re.M)
    assert "ARG PYTHON_IMAGE=python:3.11-slim" in text
    assert text.count("-c constraints.txt") >= 2
    assert "ARG SERVICE" in text
    assert "COPY deploy/gunicorn.conf.py /app/deploy/gunicorn.conf.py" in text
    assert 'ENTRYPOINT ["/usr/local/bin/sen"]' in text


def test_the_image_carries_the_portals_npm_packages():
    """The portal's pages load htmx and Chart.js from SEN_PORTAL_ASSETS, by default the checkout's
    services/portal/node_modules, which no image had: every page's scripts were 404 in a container."""
    text = DOCKERFILE.read_text()
    stages = dict(re.findall(r"^FROM \S+ AS (\w+)\n(.*?)(?=^FROM |\Z)", text, re.M | re.S))
    npm = [name for name, body in stages.items() if "npm ci" in body]
    assert npm, "no stage installs the portal's packages with npm ci"
    body = stages[npm[0]]
    assert "services/portal/package-lock.json" in body, "npm ci without the portal's lock file"
    copied = re.search(rf"^COPY --from={npm[0]} (\S+)/node_modules (\S+)$", stages["runtime"], re.M)
    assert copied, "the runtime stage does not copy the packages"
    assert re.search(rf"^ENV SEN_PORTAL_ASSETS={re.escape(copied.group(2))}$", stages["runtime"], re.M)
    from sen_portal.config import PortalSettings

    assert PortalSettings.model_fields["assets_dir"].validation_alias == "SEN_PORTAL_ASSETS"


def test_the_image_can_print_pdfs():
    """Billing's receipts and the portal's consult minutes are printed by WeasyPrint (sen_shared.pdf), which
    loads pango and needs a font with Vietnamese letters; the slim runtime image had neither, so every PDF
    failed in a container."""
    text = DOCKERFILE.read_text()
    runtime = re.search(r"^FROM \S+ AS runtime\n(.*)", text, re.M | re.S).group(1)
    installs = " ".join(rest for instr, rest in dockerfile_instructions(runtime)
                        if instr == "RUN" and "apt-get install" in rest)
    assert {"libpango-1.0-0", "libpangoft2-1.0-0", "libharfbuzz-subset0", "fonts-dejavu-core"} <= set(installs.split())
    assert "rm -rf /var/lib/apt/lists/*" in installs
    assert runtime.index("apt-get install") < runtime.index("USER 10001")  # as root, before the user it runs as


def _entrypoint_script() -> str:
    text = DOCKERFILE.read_text()
    m = re.search(r"COPY --chmod=0755 <<'SH' /usr/local/bin/sen\n(.*?)\nSH\n", text, re.S)
    assert m, "the entrypoint heredoc is missing"
    return m.group(1) + "\n"


@pytest.mark.parametrize("argv, env, expected", [
    (["web", "ehr"], {}, "gunicorn -c /app/deploy/gunicorn.conf.py sen_ehr.asgi:app"),
    (["worker", "billing"], {}, "python -m sen_billing.worker"),
    (["indexes"], {"SEN_SERVICE": "portal"}, "python -m sen_portal.indexes"),
    (["indexes", "ehr", "--wait"], {}, "python -m sen_ehr.indexes --wait"),  # the pods' init container
    (["web"], {"SEN_SERVICE": "teleconsult"}, "gunicorn -c /app/deploy/gunicorn.conf.py sen_teleconsult.asgi:app"),
])
def test_entrypoint_dispatches_roles(tmp_path, argv, env, expected):
    script = tmp_path / "sen"
    script.write_text(_entrypoint_script())
    fake = tmp_path / "bin"
    fake.mkdir()
    for tool in ("gunicorn", "python"):
        (fake / tool).write_text(f'#!/bin/sh\necho {tool} "$@"\n')
        (fake / tool).chmod(0o755)
    run_env = {"PATH": f"{fake}:/usr/bin:/bin", **env}
    out = subprocess.run(["sh", str(script), *argv], capture_output=True, text=True, env=run_env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == expected


def test_entrypoint_refuses_a_role_without_a_service(tmp_path):
    script = tmp_path / "sen"
    script.write_text(_entrypoint_script())
    out = subprocess.run(["sh", str(script), "web"], capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"})
    assert out.returncode == 64 and "say which service" in out.stderr
