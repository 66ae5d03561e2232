"""Property-based fuzz of every Sen service's HTTP API from its OpenAPI spec (schemathesis).

    set -a; eval "$(bash deploy/local/infra.sh env)"; set +a
    .venv/bin/python tools/fuzz/api_fuzz.py [--examples 30] [--seed 1] [--services ehr,billing]
                                            [--roles none,admin,clinic,doctor,cashier,health-dept]

Starts each service as the integration tests do (gunicorn on a free loopback port, a database of
its own, a development signing key of its own; the portal's back-ends are the processes started
here), then runs ``schemathesis run`` against the served spec once per role (``none``: no token)
with a fixed seed and a bounded number of examples per operation. Checks: no 5xx, and every error
answer (4xx) is a FHIR OperationOutcome under /fhir or RFC 9457 problem JSON elsewhere. The
databases are dropped at the end. Reports land in ``--out`` (default .sen/fuzz).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import uuid
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.support import web_process  # noqa: E402

SERVICES = ("ehr", "teleconsult", "billing", "portal")
ROLES = ("none", "admin", "clinic", "doctor", "cashier", "health-dept")


def token(key: Path, role: str) -> str:
    from sen_shared.auth import issue_dev_token

    extra = {"facility": "fuzz-org"} if role in ("clinic", "cashier", "doctor") else {}
    if role == "doctor":
        extra["practitioner"] = "fuzz-pr"
    return issue_dev_token(key, role, **extra)


def served_spec(url: str, name: str, out: Path, key: Path, deep: bool) -> Path:
    """The spec as the service serves it (or merges it at start), deepened (:func:`deepen`) on demand. Its
    requests go through one client (each ``httpx.get`` or ``httpx.post`` built a client of its own: its TLS
    context, ~35 ms of CPU, for each of the EHR's 39 seeding POSTs)."""
    import httpx

    path = out / f"{name}.openapi.json"
    with httpx.Client(timeout=20) as client:
        r = client.get(f"{url}/openapi.json", timeout=10)
        if r.status_code == 200 and r.headers.get("content-type", "").startswith("application/json"):
            spec = r.json()
        else:
            from sen_shared.web import load_spec

            spec = load_spec(f"{name}.yaml")
        if deep and any(p.startswith("/fhir") for p in spec.get("paths", {})):
            cap = client.get(f"{url}/fhir/metadata", timeout=10).json()
            types = sorted(r["type"] for rest in cap.get("rest", []) for r in rest.get("resource", []))
            spec = deepen(spec, types, seed(url, key, types, client))
    path.write_text(json.dumps(spec))
    return path


# query parameters a FHIR operation reads though its spec leaves them open (FHIR search parameters):
# declared in the fuzzed copy so that schemathesis sends them, with anything in them
_SEARCH = ("_id", "_count", "_sort", "_cursor", "_offset", "_include", "_revinclude", "_elements", "_summary",
           "_total", "_since", "_lastUpdated", "identifier", "status", "subject", "patient", "name", "date",
           "code", "specialty", "facility", "priority", "start", "end", "practitioner", "organization",
           "schedule", "_has:Patient:link:_id", "day")
_STR = {"type": "string"}
_REF = {"type": "object", "properties": {"reference": _STR}}
_ELEMENT = {"type": "object", "properties": {
    "name": _STR, "valueString": _STR, "valueCode": _STR, "valueInteger": {"type": "integer"},
    "valueDateTime": _STR, "valueReference": _REF, "valueIdentifier": {
        "type": "object", "properties": {"system": _STR, "value": _STR}}, "resource": {"type": "object"}}}


def deepen(spec: dict, types: list[str], ids: list[str]) -> dict:
    """The spec with what a client plausibly sends made likely: ``{type}`` one of the served types,
    ``{id}`` one of the seeded ids, a body one of those types with the elements the handlers read
    (status, subject, identifier, Parameters' parameter), and the FHIR search parameters declared
    on the reads and operations that take them (their schemas stay open: anything may be sent)."""
    comps = spec.setdefault("components", {})
    params = comps.setdefault("parameters", {})
    if "Type" in params:
        params["Type"]["schema"] = {"type": "string", "enum": types}
    if "Id" in params and ids:
        params["Id"]["schema"] = {"type": "string", "enum": ids}
    body = {"type": "object", "required": ["resourceType"], "additionalProperties": True, "properties": {
        "resourceType": {"type": "string", "enum": [*types, "Parameters", "Bundle"]},
        "id": _STR, "status": _STR, "intent": _STR, "priority": _STR, "subject": _REF, "patient": _REF,
        "for": _REF, "owner": _REF, "requester": _REF, "start": _STR, "end": _STR,
        "identifier": {"type": "array", "items": {"type": "object", "properties": {"system": _STR, "value": _STR}}},
        "name": {"type": "array", "items": {"type": "object", "properties": {
            "family": _STR, "given": {"type": "array", "items": _STR}}}},
        "parameter": {"type": "array", "items": _ELEMENT},
        "type": _STR, "entry": {"type": "array", "items": {"type": "object", "properties": {
            "request": {"type": "object", "properties": {"method": {"enum": ["GET", "POST", "PUT", "DELETE"]},
                                                          "url": _STR}},
            "resource": {"type": "object"}, "fullUrl": _STR}}}}}
    for name in ("Resource", "ResourceOrNothing"):
        if name in comps.get("schemas", {}):
            comps["schemas"][name] = {**body, "nullable": name == "ResourceOrNothing"}
    for path, item in spec.get("paths", {}).items():
        if not path.startswith("/fhir"):
            continue
        for method in ("get", "post"):
            op = item.get(method)
            if op is None or "{id}" in path and method == "post":
                continue
            declared = {prm.get("name") for prm in op.get("parameters", []) if isinstance(prm, dict)}
            op.setdefault("parameters", []).extend(
                {"name": n, "in": "query", "required": False, "schema": _STR} for n in _SEARCH if n not in declared)
    return spec


def seed(url: str, key: Path, types: list[str], client: Any) -> list[str]:
    """A few resources made by the admin on the server (the ones a bare body makes), their ids; sent through
    ``client`` (an ``httpx.Client``)."""
    headers = {"Authorization": f"Bearer {token(key, 'admin')}", "Content-Type": "application/fhir+json"}
    bodies = {"Patient": {"name": [{"family": "Nguyễn", "given": ["Văn", "An"]}], "gender": "male",
                          "identifier": [{"system": "https://fhir.sen.vn/sid/cccd", "value": "001080000001"}]},
              "Organization": {"name": "Trạm Y tế Fuzz"}, "Practitioner": {"name": [{"family": "Lê"}]}}
    ids = ["missing-1"]
    for rtype in types:
        r = client.post(f"{url}/fhir/{rtype}", headers=headers, timeout=20,
                        json={"resourceType": rtype, **bodies.get(rtype, {})})
        if r.status_code == 201:
            ids.append(r.json()["id"])
    return ids


def bad_error_bodies(found: Path) -> list[str]:
    """The 4xx/5xx answers that are neither an OperationOutcome (/fhir) nor problem JSON, as the run's
    :mod:`tools.fuzz.answers` handler wrote them to ``found`` (none when it wrote nothing)."""
    if not found.exists():
        return []
    return [json.loads(line) for line in found.read_text(encoding="utf-8").splitlines() if line]


def start_services(stack: ExitStack, wanted: list[str], base: dict[str, str], out: Path,
                   prefix: str) -> tuple[dict[str, str], list[str]]:
    """Start ``wanted`` (and, for the portal, the back-ends it calls) on free loopback ports, each on a
    database ``{prefix}_{name}`` of its own; their URLs and the database names (drop them at the end).
    The processes stop when ``stack`` closes."""
    urls: dict[str, str] = {}
    dbs: list[str] = []
    for name in SERVICES:
        if name not in wanted and not (name != "portal" and "portal" in wanted):
            continue
        db = f"{prefix}_{name}"
        dbs.append(db)
        env = {"SEN_HTTP_TIMEOUT": "10", **base, "SEN_DB": db, "SEN_EHR_URL": urls.get("ehr", ""),
               "SEN_TELECONSULT_URL": urls.get("teleconsult", ""), "SEN_BILLING_URL": urls.get("billing", "")}
        env = {k: v for k, v in env.items() if v}
        urls[name] = stack.enter_context(web_process(name, env, out / f"{name}.log"))
    return urls, dbs


@dataclass
class Result:
    tag: str
    rc: int | str  # schemathesis's exit code, or "timeout"
    output: str  # schemathesis's report: each failure with the curl command that reproduces it
    bad: list[str]  # error answers neither OperationOutcome nor problem JSON (:mod:`tools.fuzz.answers`)
    seconds: float

    @property
    def ok(self) -> bool:
        return self.rc == 0 and not self.bad


def fuzz(name: str, url: str, spec: Path, out: Path, key: Path, role: str, *, examples: int, seed_: int = 1,
         phases: str = "examples,coverage,fuzzing", checks: str = "not_a_server_error", timeout: int = 300,
         deterministic: bool = False, har: bool = True) -> Result:
    """One ``schemathesis run`` of ``spec`` against ``url`` as ``role`` (``none``: no token), its report in
    ``out`` and, with ``har``, a HAR of every call. Each answer is judged as the run records it
    (:mod:`tools.fuzz.answers`, loaded as schemathesis's hooks), the bad ones in ``{tag}.bad.txt``.
    ``deterministic``: derandomized generation, no example database (a regression guard)."""
    tag = f"{name}-{role}"
    found = out / f"{tag}.bad.jsonl"
    found.unlink(missing_ok=True)
    cmd = [str(Path(sys.executable).parent / "schemathesis"), "run", str(spec), "--url", url,
           "--checks", checks, "--max-examples", str(examples), "--seed", str(seed_),
           "--phases", phases, "--workers", "1", "--request-timeout", "20",
           "--suppress-health-check", "all",
           "--exclude-path-regex", "^/(metrics|healthz|readyz)$", "--no-color"]
    if har:
        (out / f"{tag}.har").unlink(missing_ok=True)
        cmd += ["--report", "har", "--report-har-path", str(out / f"{tag}.har")]
    if deterministic:
        cmd.append("--generation-deterministic")  # no example database either
    if role != "none":
        cmd += ["--header", f"Authorization: Bearer {token(key, role)}"]
    started = time.monotonic()
    try:
        env = {**os.environ, "SCHEMATHESIS_HOOKS": str(Path(__file__).with_name("answers.py")),
               "SEN_FUZZ_BAD_ANSWERS": str(found)}
        p = subprocess.run(cmd, cwd=out, capture_output=True, text=True, timeout=timeout, env=env)
        text, rc = p.stdout + p.stderr, p.returncode
    except subprocess.TimeoutExpired as err:
        got = err.stdout or b""
        text, rc = got.decode() if isinstance(got, bytes) else got, "timeout"
    (out / f"{tag}.txt").write_text(text)
    bad = bad_error_bodies(found)
    (out / f"{tag}.bad.txt").write_text("\n".join(bad))
    return Result(tag, rc, text, bad, time.monotonic() - started)


def hostile_run(name: str, url: str, spec: Path, out: Path, key: Path, role: str) -> bool:
    """:func:`tools.fuzz.hostile.probe` of ``spec`` as ``role``, its bad answers in ``{name}-{role}.hostile.txt``;
    whether any answer was bad."""
    from tools.fuzz.hostile import probe

    started = time.monotonic()
    sent, bad = probe(url, json.loads(spec.read_text()), token(key, role) if role != "none" else None)
    (out / f"{name}-{role}.hostile.txt").write_text("\n".join(bad))
    print(f"{name}-{role} hostile: {sent} requests {time.monotonic() - started:.0f}s, bad answers {len(bad)}"
          + "".join(f"\n  {b}" for b in bad[:20]), flush=True)
    return bool(bad)


def drop_databases(mongo_url: str, dbs: list[str]) -> None:
    from pymongo import MongoClient

    client = MongoClient(mongo_url)
    for db in dbs:
        client.drop_database(db)
    client.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--services", default=",".join(SERVICES))
    ap.add_argument("--roles", default=",".join(ROLES))
    ap.add_argument("--examples", type=int, default=30)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--timeout", type=int, default=300, help="seconds one schemathesis run may take")
    ap.add_argument("--out", default=str(ROOT / ".sen" / "fuzz"))
    ap.add_argument("--phases", default="examples,coverage,fuzzing")
    ap.add_argument("--checks", default="not_a_server_error,status_code_conformance,content_type_conformance")
    ap.add_argument("--deep", action="store_true", help="served types, seeded ids and search parameters (deepen)")
    ap.add_argument("--deterministic", action="store_true", help="derandomized generation, no example database")
    ap.add_argument("--hostile", action="store_true",
                    help="and per role the hand-written hostile requests of tools/fuzz/hostile.py")
    a = ap.parse_args()
    out = Path(a.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    key = out / "dev-jwt.pem"
    run = uuid.uuid4().hex[:6]
    base = {"MONGO_URL": os.environ["MONGO_URL"], "AMQP_URL": os.environ["AMQP_URL"], "SEN_ENV": "test",
            "SEN_BUS_PREFIX": f"fz{run}.", "SEN_DEV_JWT_KEY": str(key), "LOG_LEVEL": "WARNING"}
    wanted = a.services.split(",")
    dbs: list[str] = []
    failed = False
    try:
        with ExitStack() as stack:
            urls, dbs = start_services(stack, wanted, base, out, f"sen_fuzz{run}")
            for name, url in urls.items():
                print(f"{name}: {url} (db sen_fuzz{run}_{name})", flush=True)
            for name in wanted:
                spec = served_spec(urls[name], name, out, key, a.deep)
                for role in a.roles.split(","):
                    r = fuzz(name, urls[name], spec, out, key, role, examples=a.examples, seed_=a.seed,
                             phases=a.phases, checks=a.checks, timeout=a.timeout, deterministic=a.deterministic)
                    summary = [ln for ln in r.output.splitlines()
                               if "passed" in ln or "failed" in ln or "error" in ln][-3:]
                    print(f"{r.tag}: rc={r.rc} {r.seconds:.0f}s, bad error bodies {len(r.bad)}; "
                          + " | ".join(s.strip() for s in summary), flush=True)
                    failed |= not r.ok
                    if a.hostile:
                        failed |= hostile_run(name, urls[name], spec, out, key, role)
    finally:
        drop_databases(os.environ["MONGO_URL"], dbs)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
