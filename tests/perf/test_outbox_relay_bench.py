"""Outbox relay benchmark: how fast one relay empties a backlog, alone.

``SEN_BENCH_RELAY_EVENTS`` (default 2,000) payments, each with its ``billing.payment.received`` event in its
outbox (one insert each, as billing's webhook writes them: ``new_document``), wait in a fresh database of their
own (billing's outbox index, ``infra.sh tune``). One :class:`OutboxRelay` (a validating publisher, as the worker's)
then runs passes until nothing is pending: every event published to the run's own exchange and confirmed by the
broker (a queue bound to it, so ``mandatory`` routes), every outbox emptied. Timed from its first pass to the
pass that finds nothing left.

Prints one markdown table (also written to ``.sen/bench/relay.md``): seconds, events/s, the CPU an event by
process (this process, which is the relay; FerretDB; PostgreSQL; RabbitMQ) and where the relay's wall time
went (its pending queries, its publishing with the confirms' waits, its outbox updates; ``_publish`` is the
relay's one-event-at-a-time publishing before 5517d7c, so the same file measures either). No timing
assertions; it asserts that every event reached the queue and that nothing is left pending.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

from sen_shared.bus import OutboxRelay, make_event, new_document
from sen_shared.bus.outbox import PENDING, outbox_indexes
from sen_shared.mongo import ensure_indexes

from tests.integration.test_bus import _bus, queue_depth
from tests.perf.test_ehr_bench import cpu_seconds, cpu_used, load_average, machine
from tests.support import ROOT

EVENTS = int(os.environ.get("SEN_BENCH_RELAY_EVENTS", "2000"))
READER = "portal.reporting"  # binds "#": every event is routed to its queue
COLLECTION = "payments"


def _event(i: int) -> dict:
    with open(ROOT / "specs" / "events" / "examples" / "billing.payment.received.json", encoding="utf-8") as f:
        data = json.load(f)["data"]
    return make_event("billing.payment.received", {**data, "payment": f"standard:rb{i:07d}"},
                      subject=data["invoice"])


def _rabbit_cpu() -> float:
    """CPU seconds used so far by the broker's Erlang VM (``beam.smp``), 0 when not found."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if b"beam.smp" not in (entry / "cmdline").read_bytes().split(b"\0")[0]:
                continue
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        total += (int(fields[11]) + int(fields[12])) / tick
    return total


class _Timed:
    """Wall time spent in a few of the relay's own methods (wrapped on the instance)."""

    def __init__(self, relay: OutboxRelay, names: dict[str, str]) -> None:
        self.seconds: Counter = Counter()
        for attr, label in names.items():
            original = getattr(relay, attr, None)
            if original is None:
                continue
            setattr(relay, attr, self._wrap(original, label))

    def _wrap(self, fun, label: str):
        def timed(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return fun(*args, **kwargs)
            finally:
                self.seconds[label] += time.perf_counter() - t0
        return timed


def test_relay_empties_a_backlog(amqp_url, base_env, mongo_client, run_id) -> None:
    db_name = f"sen_t{run_id}_relaybench"
    db = mongo_client[db_name]
    ensure_indexes(db, outbox_indexes([COLLECTION]))
    for bus in _bus(amqp_url, base_env, [READER]):
        try:
            docs = [new_document({"_id": f"standard:rb{i:07d}", "amount": 10000, "outcome": "partial"}, [_event(i)])
                    for i in range(EVENTS)]
            for start in range(0, EVENTS, 500):
                db[COLLECTION].insert_many(docs[start:start + 500], ordered=False)
            subprocess.run(["bash", str(ROOT / "deploy" / "local" / "infra.sh"), "tune", db_name],
                           env={**os.environ, **base_env}, cwd=ROOT, check=True, timeout=300, capture_output=True)
            with bus.publisher(validate=True) as pub:
                pub.declare()  # connected before the clock starts, as a running worker is
                relay = OutboxRelay(db, pub, [COLLECTION])
                timed = _Timed(relay, {"_pending": "pending queries", "_publish": "publishing (confirms waited)",
                                       "_publish_batch": "publishing (confirms waited)",
                                       "_empty": "marking sent"})
                cpu0, rabbit0, load0 = cpu_seconds(), _rabbit_cpu(), load_average()
                t0 = time.perf_counter()
                passes = published = 0
                while (n := relay.run_once()) or db[COLLECTION].count_documents({PENDING: True}):
                    passes, published = passes + 1, published + n
                    assert passes < EVENTS * 2, "the relay makes no progress"
                wall = time.perf_counter() - t0
                used = cpu_used(cpu0)
                used["RabbitMQ"] = _rabbit_cpu() - rabbit0
            delivered = queue_depth(bus, bus.topology.queue_name(READER))
        finally:
            mongo_client.drop_database(db_name)

    cpu = {k: v * 1000 / EVENTS for k, v in used.items() if k in ("load generator", "FerretDB", "PostgreSQL",
                                                                     "RabbitMQ")}
    names = {"load generator": "relay"}
    cpu_text = ", ".join(f"{ms:.2f} {names.get(k, k)}" for k, ms in sorted(cpu.items(), key=lambda kv: -kv[1]))
    split = ", ".join(f"{label} {s:.2f} s" for label, s in timed.seconds.most_common())
    rows = [
        "| measure | result |",
        "|---|---|",
        f"| {EVENTS:,} pending events (one a payment) → all published, confirmed and marked sent | {wall:.2f} s, "
        f"{passes} passes |",
        f"| events/s | {EVENTS / wall:,.0f} |",
        f"| CPU an event | {sum(cpu.values()):.2f} ms ({cpu_text}) |",
        f"| the relay's wall time | {split} |",
    ]
    header = (f"Outbox relay benchmark, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, "
              "FerretDB, one relay in this process. Machine: "
              f"{machine()}; load average {load0} at the start, {load_average()} at the end.")
    table = "\n".join([header, "", *rows])
    print("\n" + table + "\n")
    out = ROOT / ".sen" / "bench" / "relay.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(table + "\n", "utf-8")
    # correctness, not timing
    assert delivered >= EVENTS  # at least once (a relay may publish again what it could not mark)
    assert published >= EVENTS
