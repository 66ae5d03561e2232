"""Regression guard for "no 500 for anything a client can send": a small, derandomized run of
tools/fuzz/api_fuzz.py (schemathesis, fixed seed) against each service's JSON API.

Each of ehr, teleconsult, billing and the portal runs as its own gunicorn process on a loopback
port and a database of its own (dropped at the end); the FHIR APIs are fuzzed from the deepened
spec (served resource types, seeded ids, resource-shaped bodies, FHIR search parameters), with an
admin token (admin may call every handler). A 5xx, or an error answer that is neither an
OperationOutcome under /fhir nor RFC 9457 problem JSON elsewhere, fails the test with the request
that reproduces it. The same services then get the hand-written hostile requests of tools/fuzz/hostile.py
(what schemathesis does not generate), judged alike. The full fuzz (every role, 30 examples) stays a tool:
see tools/fuzz/README.md.
"""

from __future__ import annotations

import functools
import json
import os
from contextlib import ExitStack
from pathlib import Path

import pytest

from tools.fuzz.api_fuzz import ROOT, SERVICES, drop_databases, fuzz, served_spec, start_services, token
from tools.fuzz.hostile import QUICK, probe

pytestmark = [pytest.mark.integration, pytest.mark.slow]

EXAMPLES = 3  # per operation and phase; with the coverage phase's own cases: well under 90 s for all four
SEED = 1


@pytest.fixture(scope="module")
def fuzz_stack(base_env, run_id, mongo_url, tmp_path_factory):
    """``(urls, out, spec)``: the four services, their logs' folder, and ``spec(name)``, a service's deepened spec
    (:func:`tools.fuzz.api_fuzz.served_spec`), made once for the module and fuzzed and probed by each test on that
    service, where each test made it again: the same spec but for the ids of the resources seeded each time.
    Teleconsult and billing seed none (their ``{id}`` is ``missing-1`` alone); the EHR's hostile requests put its
    last seeded id (a Specimen's) under the first served type, OperationDefinition and Patient, where it names
    nothing anyway. Loopback traffic goes to no proxy (NO_PROXY, for the services and the fuzzers): schemathesis's
    requests then does not read the proxy variables for each request. The fuzzers keep Hypothesis's files in the
    checkout's .hypothesis, as the in-process tests do, where they kept them in the module's new folder: its Unicode
    tables (derived from the Python build alone) were then computed again for each module (~3 s of CPU); the runs
    are derandomized, so no example database is read or written there."""
    out = tmp_path_factory.mktemp("api-fuzz")
    key = Path(base_env["SEN_DEV_JWT_KEY"])
    dbs: list[str] = []
    try:
        with ExitStack() as stack, pytest.MonkeyPatch.context() as mp:
            mp.setenv("NO_PROXY", ",".join(filter(None, [os.environ.get("NO_PROXY"), "127.0.0.1", "localhost"])))
            mp.setenv("HYPOTHESIS_STORAGE_DIRECTORY", str(ROOT / ".hypothesis"))
            urls, dbs = start_services(stack, list(SERVICES), base_env, out, f"sen_t{run_id}_fz")

            @functools.cache
            def spec(name: str) -> Path:
                return served_spec(urls[name], name, out, key, deep=True)

            yield urls, out, spec
    finally:
        drop_databases(mongo_url, dbs)


def _failures(output: str) -> str:
    """Schemathesis's failure report: each failing case with its curl command (its Authorization header is
    filtered: send ``Bearer $(make token ROLE=admin)`` to a server with the same key)."""
    start, end = output.find("FAILURES"), output.find("WARNINGS")
    if start < 0:
        return output[-6000:]
    return output[start : end if end > start else None][:12000]


# admin reaches every handler but teleconsult's doctor-only Task operations ($accept, $start, $complete...):
# those get a doctor's pass of their own
RUNS = [(name, "admin") for name in SERVICES] + [("teleconsult", "doctor")]


@pytest.mark.parametrize(("name", "role"), RUNS, ids=[f"{n}-{r}" for n, r in RUNS])
def test_no_server_error_nor_bare_error_body(name, role, fuzz_stack, base_env):
    urls, out, spec = fuzz_stack
    key = Path(base_env["SEN_DEV_JWT_KEY"])
    r = fuzz(name, urls[name], spec(name), out, key, role, examples=EXAMPLES, seed_=SEED, deterministic=True,
             timeout=240, har=False)
    log = (out / f"{name}.log").read_text(errors="replace")[-4000:]
    assert r.rc == 0, f"{r.tag}: schemathesis rc={r.rc}\n{_failures(r.output)}\n--- {name} log ---\n{log}"
    assert not r.bad, (f"{r.tag}: error answers neither OperationOutcome nor problem JSON:\n" + "\n".join(r.bad)
                       + f"\n--- {name} log ---\n{log}")


@pytest.mark.parametrize("name", SERVICES)
def test_hostile_requests_get_no_server_error_nor_bare_error_body(name, fuzz_stack, base_env):
    """The requests schemathesis does not generate (tools/fuzz/hostile.py: bodies nested past the recursion
    limit, lone surrogates and NUL in bodies and queries, 2**64, calendar edge dates, a leading //, header
    garbage) to every operation, admin token, four query values a parameter: each was a 500 somewhere once."""
    urls, out, spec_of = fuzz_stack
    key = Path(base_env["SEN_DEV_JWT_KEY"])
    spec = json.loads(spec_of(name).read_text())
    sent, bad = probe(urls[name], spec, token(key, "admin"), values=QUICK)
    log = (out / f"{name}.log").read_text(errors="replace")[-4000:]
    assert not bad, f"{name}: {len(bad)} of {sent} hostile requests answered badly:\n" + "\n".join(bad[:30]) + \
        f"\n--- {name} log ---\n{log}"
