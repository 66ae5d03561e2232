"""CPU a request costs the shared request path, measured in process: trees compared in turn.

    python -m tests.perf.request_cpu --rounds 6 /tmp/old /work/main          # ehr reads by id
    python -m tests.perf.request_cpu --what healthz /tmp/old /work/main
    python -m tests.perf.request_cpu --what session ...   # GET /api/session: bearer check, no database
    python -m tests.perf.request_cpu --what post ...      # POST /fhir/Patient/$validate: a JSON body
    python -m tests.perf.request_cpu --what error ...     # a 400 the handler raises: the error handlers

Each run is a fresh process on one source tree (``<tree>/shared/src`` and ``<tree>/services/ehr/src``
first on ``sys.path``): it builds the ehr app as ``create_app()`` does (``SEN_ENV=development``, so
no response validation, as deployed), warms it up, then sends ``--requests`` requests one after the
other through connexion's ASGI app (httpx's ASGI transport on uvloop, the loop uvicorn runs) and
prints the process's CPU (``time.process_time``: every thread, user and system) per request. The
trees take turns, the order flipped every round, so the machine's drift falls on all alike; the
median of each tree's rounds is printed. ``--what client`` runs the same client against a bare ASGI
app: what the figure holds that is not the server's (subtract it).

No gunicorn, no uvicorn HTTP parsing, no sockets: the figure is the Python a request costs between
uvicorn and the database (connexion's middleware, the thread pool handoff, Flask, the handler), which
is what the shared request path is. Needs FerretDB (``MONGO_URL``) and ``SEN_DEV_JWT_KEY``.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DB = "sen_request_cpu"


def child(what: str, n: int) -> None:
    import httpx
    import uvloop

    headers: dict[str, str] = {}
    if what == "client":
        async def app(scope, receive, send):  # noqa: ANN001, ANN202 - a bare ASGI app
            if scope["type"] != "http":
                return
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"application/json"), (b"content-length", b"2")]})
            await send({"type": "http.response.body", "body": b"{}"})
    else:
        from sen_ehr.app import create_app
        from sen_shared.auth import issue_dev_token

        app = create_app()
        gc.freeze()  # as deploy/gunicorn.conf.py's post_worker_init does once the app is loaded
        if os.environ.get("SEN_GC_THRESHOLD"):  # an experiment: the young generation's threshold
            gc.set_threshold(int(os.environ["SEN_GC_THRESHOLD"]), *gc.get_threshold()[1:])
        token = issue_dev_token(Path(os.environ["SEN_DEV_JWT_KEY"]), "admin")
        headers = {"Authorization": f"Bearer {token}", "Accept": "application/fhir+json",
                   "Content-Type": "application/fhir+json"}

    async def main() -> None:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://sen") as c:
            path = "/healthz"
            body: bytes | None = None
            if what == "session":
                path = "/api/session"
            elif what == "post":  # a validated JSON body (connexion's body validator), no database
                path = "/fhir/Patient/$validate"
                body = json.dumps({"resourceType": "Patient", "name": [{"family": "Nguyễn", "given": ["Văn An"]}],
                                   "gender": "male", "birthDate": "1980-01-02"}).encode()
            elif what == "error":  # a FhirError raised in the handler: the error handler's path, no database
                path = "/fhir/Patient/" + "x" * 70  # longer than an id may be
            if what in ("read", "search"):
                found = (await c.get("/fhir/Patient?identifier=urn:vn:cccd|001099012345", headers=headers)).json()
                if found.get("entry"):
                    pid = found["entry"][0]["resource"]["id"]
                else:
                    patient = {"resourceType": "Patient", "name": [{"family": "Nguyễn", "given": ["Văn An"]}],
                               "identifier": [{"system": "urn:vn:cccd", "value": "001099012345"}],
                               "gender": "male", "birthDate": "1980-01-02"}
                    r = await c.post("/fhir/Patient", headers=headers, content=json.dumps(patient))
                    assert r.status_code == 201, r.text
                    pid = r.json()["id"]
                path = f"/fhir/Patient/{pid}" if what == "read" else "/fhir/Patient?identifier=001099012345"
            method = "GET" if body is None else "POST"
            expect = 400 if what == "error" else 200
            for _ in range(300):
                r = await c.request(method, path, headers=headers, content=body)
                assert r.status_code == expect, r.text
            shim = ctypes.CDLL(os.environ["SEN_CALLGRIND_SHIM"]) if os.environ.get("SEN_CALLGRIND_SHIM") else None
            if shim is not None:
                shim.sen_cg_zero()  # count the measured requests only
            c0 = time.process_time()
            for _ in range(n):
                r = await c.request(method, path, headers=headers, content=body)
            cpu = time.process_time() - c0
            if shim is not None:
                shim.sen_cg_dump()
            assert r.status_code == expect, r.text
            print(json.dumps({"ms": 1000 * cpu / n}))

    uvloop.run(main())


SHIM_C = """#include <valgrind/callgrind.h>
void sen_cg_zero(void) { CALLGRIND_ZERO_STATS; }
void sen_cg_dump(void) { CALLGRIND_DUMP_STATS_AT("measured"); }
"""


def callgrind_shim(workdir: Path) -> Path:
    """A two-function library the child calls to zero callgrind's counts and dump them (valgrind's
    client requests are inline machine code: C only)."""
    (workdir / "shim.c").write_text(SHIM_C)
    subprocess.run(["cc", "-shared", "-fPIC", "-O1", "-o", str(workdir / "libshim.so"), str(workdir / "shim.c")],
                   check=True)
    return workdir / "libshim.so"


def run_one(tree: Path, what: str, n: int, valgrind: Path | None = None) -> float:
    """CPU ms a request, or with ``valgrind`` (a work dir holding the shim) instructions a request."""
    env = {**os.environ, "SEN_DB": DB, "SEN_ENV": "development", "LOG_LEVEL": os.environ.get("LOG_LEVEL", "WARNING"),
           "PYTHONPATH": os.pathsep.join([str(tree / "shared" / "src"), str(tree / "services" / "ehr" / "src"),
                                          str(ROOT)])}
    cmd = [sys.executable, "-m", "tests.perf.request_cpu", "--child", "--what", what, "--requests", str(n)]
    if valgrind is not None:
        for old in valgrind.glob("cg.out*"):
            old.unlink()
        env["SEN_CALLGRIND_SHIM"] = str(valgrind / "libshim.so")
        cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={valgrind}/cg.out.%p", *cmd]
    out = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=1800)
    if out.returncode:
        raise SystemExit(f"{tree}: {out.stderr[-2000:]}")
    if valgrind is None:
        return json.loads(out.stdout.strip().splitlines()[-1])["ms"]
    for dump in valgrind.glob("cg.out.*"):  # the dump made at the end of the measured requests
        text = dump.read_text(errors="replace")
        if "measured" in text.split("\nevents:", 1)[0]:
            return int(text.rsplit("\nsummary:", 1)[1].split()[0]) / n
    raise SystemExit(f"{tree}: no callgrind dump of the measured requests in {valgrind}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("trees", nargs="*", type=Path, default=[ROOT])
    ap.add_argument("--what", default="read",
                    choices=["read", "search", "healthz", "session", "post", "client", "error"])
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--valgrind", action="store_true",
                    help="count instructions (callgrind; every thread, user space only) instead of CPU time")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.what, args.requests)
        return
    if args.valgrind:  # instruction counts do not drift with the machine: one run per tree
        with tempfile.TemporaryDirectory() as tmp:
            shim = callgrind_shim(Path(tmp))
            for tree in args.trees:
                ir = run_one(tree, args.what, args.requests, valgrind=shim.parent)
                print(f"{tree}: {args.what} {ir / 1000:,.1f} thousand instructions a request ({args.requests})")
        return
    runs: dict[Path, list[float]] = {t: [] for t in args.trees}
    load = [Path("/proc/loadavg").read_text().split()[0]]
    for r in range(args.rounds):
        for tree in args.trees if r % 2 == 0 else args.trees[::-1]:
            runs[tree].append(run_one(tree, args.what, args.requests))
        load.append(Path("/proc/loadavg").read_text().split()[0])
    for tree, ms in runs.items():
        print(f"{tree}: {args.what} {statistics.median(ms):.3f} ms CPU a request (median of {len(ms)}; "
              f"{' '.join(f'{m:.3f}' for m in ms)})")
    print(f"load average (1 min) by round: {' '.join(load)}")


if __name__ == "__main__":
    main()
