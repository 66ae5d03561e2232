"""Compare ehr servers by loading them in turn, a few seconds each, round after round.

    python -m tests.perf.alternate --rounds 8 --seconds 3 http://127.0.0.1:18091 http://127.0.0.1:18092
    python -m tests.perf.alternate --role doctor --facility tyt-bench-0 ...   # a facility's doctor
    python -m tests.perf.alternate --path /api/session --clients 100 --masters 123,456 ...

Each server (a different commit, setting or database server) runs on its own port against the
same loaded database; only one is loaded at a time, by the bench's load generator with 16
connections reading random Patients, and the order flips every round. The machine's speed
drifts by a quarter between quarter-hours; alternating every few seconds spreads that drift
over all the servers alike, where two tables minutes apart measure mostly the drift. Loading
two at once (``README.md``, "Comparing two versions") also cancels it, but favours the version
that keeps more work in flight at the database. Prints, per server, the figures over all its
rounds and each round's p99. Needs ``SEN_DEV_JWT_KEY`` (as ``make token``). ``--path`` loads one path
(``/api/session``: the request path alone, no database) instead of Patient reads; ``--masters`` (the
gunicorn master of each server, in the order of the bases) adds the CPU a request took in each
server's processes (``/proc/<pid>/stat`` utime + stime of the master and its workers).
"""

from __future__ import annotations

import argparse
import os
import random
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx
from sen_shared.auth import issue_dev_token

from tests.perf import loadgen
from tests.perf.loadgen import percentile as pct


def patient_ids(base: str, headers: dict[str, str], want: int = 2000) -> list[str]:
    ids: list[str] = []
    url: str | None = f"{base}/fhir/Patient?_count=500&_elements=id"
    with httpx.Client(headers=headers, timeout=60) as c:
        while url and len(ids) < want:
            page = c.get(url).raise_for_status().json()
            ids += [e["resource"]["id"] for e in page.get("entry", ())]
            url = next((link["url"] for link in page.get("link", ()) if link["relation"] == "next"), None)
    if not ids:
        raise SystemExit(f"no Patient at {base}: load the database first (make bench leaves none)")
    return ids


def tree_cpu(master: int) -> float:
    """CPU seconds of a process and its children so far (``/proc``; 0 where it is gone)."""
    tick = os.sysconf("SC_CLK_TCK")
    pids = [master] + [int(p) for p in Path(f"/proc/{master}/task/{master}/children").read_text().split()]
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / tick  # utime, stime
    return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("bases", nargs="+", help="base URLs of the servers to compare")
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--role", default="admin", help="the token's role (clinic and doctor read their facility's)")
    ap.add_argument("--facility", default=None, help="the token's facility (clinic, doctor)")
    ap.add_argument("--path", default=None, help="GET this path instead of random Patients (e.g. /api/session)")
    ap.add_argument("--masters", default=None, help="gunicorn master pids, comma separated, one per base")
    args = ap.parse_args()
    claims = {"facility": args.facility} if args.facility else {}
    token = issue_dev_token(Path(os.environ["SEN_DEV_JWT_KEY"]), args.role, **claims)
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/fhir+json"}
    if args.path:
        paths = [args.path] * 100_000
    else:
        ids = patient_ids(args.bases[0], headers)
        rng = random.Random(7)
        paths = [f"/fhir/Patient/{rng.choice(ids)}" for _ in range(100_000)]
    masters = dict(zip(args.bases, map(int, args.masters.split(",")), strict=True)) if args.masters else {}

    def load(base: str, seconds: float, start: int) -> tuple[list[float], float]:
        host, port = urlsplit(base).hostname, urlsplit(base).port
        t0 = time.perf_counter()
        c0 = tree_cpu(masters[base]) if base in masters else 0.0
        lat, statuses = loadgen.run(host, port, headers, iter(paths[start:] + paths[:start]), args.clients,
                                    time.monotonic() + seconds)
        if set(statuses) != {200}:
            raise SystemExit(f"{base} answered {dict(statuses)}")
        if base in masters:
            results[base]["cpu"] += tree_cpu(masters[base]) - c0
        return lat, time.perf_counter() - t0

    results = {base: {"lat": [], "wall": 0.0, "p99s": [], "cpu": 0.0} for base in args.bases}
    for base in args.bases:  # warm each server up once
        load(base, 2.0, 0)
    results = {base: {"lat": [], "wall": 0.0, "p99s": [], "cpu": 0.0} for base in args.bases}
    for r in range(args.rounds):
        for base in args.bases if r % 2 == 0 else args.bases[::-1]:
            lat, wall = load(base, args.seconds, r * 997)
            res = results[base]
            res["lat"] += lat
            res["wall"] += wall
            res["p99s"].append(round(pct(lat, 99), 1))
    for base, res in results.items():
        lat = res["lat"]
        cpu = f", server CPU {1000 * res['cpu'] / len(lat):.3f} ms a request" if base in masters else ""
        print(f"{base}: {len(lat) / res['wall']:,.0f} requests/s, p50 {pct(lat, 50):.1f} ms, p95 {pct(lat, 95):.1f}, "
              f"p99 {pct(lat, 99):.1f}{cpu}; p99 by round {res['p99s']}")


if __name__ == "__main__":
    main()
