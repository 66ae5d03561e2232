"""Reporting read model benchmark (``make bench``): events/s through the handler, and dashboard p95.

Feeds CloudEvents of a province's mix (observations, patients, consults requested/accepted,
SLA breaches, payments; event times over the last 12 weeks, 165 facilities in 10 districts)
straight into the ``portal.reporting`` handler (``record_event``: one fact insert each) on its
own FerretDB database:

1. 5,000 events with nothing counted yet today, on 1 thread and on 4 threads (as 1 or 4
   consumers call it; concurrent calls' facts are inserted together);
2. filled to ~50,000 counted today (4 threads, rate printed), then 5,000 more on 1 and 4 threads;
3. 4,000 queued events drained through RabbitMQ by 1 and by 4 real ``portal.reporting``
   consumers (the worker runs 4; their facts are inserted together);
4. the dashboard (12 weeks): the first call right after the load (it sums the slots that closed,
   which the worker's sealer would have done within 10 s) and a few more with the last
   minutes' facts still open; then, once every slot is closed, p50/p95 of 200 calls at 4 clients
   for all districts and for one.

Prints one markdown table (also written to ``.sen/bench/reporting.md``). No timing assertions.
"""

from __future__ import annotations

import os
import random
import subprocess
import threading
import time
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from sen_portal.domain.dashboard import dashboard
from sen_portal.domain.report_facts import VN
from sen_portal.domain.reporting import FACTS, INDEXES, SLOT, record_event, slot_name, slot_start
from sen_shared.bus import make_event

from tests.perf.test_ehr_bench import machine

ROOT = Path(__file__).resolve().parents[2]
MEASURE = 5_000
FILL_TO = 50_000
BUS_EVENTS = 4_000
DISTRICTS = ["Cao Lãnh", "Tháp Mười", "Hồng Ngự", "Tam Nông", "Thanh Bình", "Lấp Vò", "Lai Vung", "Châu Thành",
             "Tân Hồng", "Sa Đéc"]
FACILITIES = [(f"Organization/tyt-{i:03d}", DISTRICTS[i % len(DISTRICTS)]) for i in range(165)]
PRIORITIES = ["routine", "routine", "routine", "urgent", "urgent", "asap", "stat"]


def event(rng: random.Random, today: date) -> dict:
    when = datetime.combine(today - timedelta(days=rng.randrange(84)), datetime.min.time(), VN) \
        + timedelta(minutes=rng.randrange(7 * 60, 17 * 60))
    fac, district = rng.choice(FACILITIES)
    roll = rng.random()
    if roll < 0.40:
        key, data = "ehr.observation.created", {"resourceType": "Observation", "id": uuid.uuid4().hex, "versionId": "1"}
    elif roll < 0.60:
        key, data = "ehr.patient.created", {"resourceType": "Patient", "id": uuid.uuid4().hex, "versionId": "1"}
    elif roll < 0.75:
        key, data = "teleconsult.consult.requested", {"requester": fac, "district": district,
                                                      "priority": rng.choice(PRIORITIES),
                                                      "requestedAt": when.isoformat()}
    elif roll < 0.85:
        key, data = "teleconsult.consult.accepted", {
            "requester": fac, "district": district, "priority": rng.choice(PRIORITIES),
            "requestedAt": when.isoformat(),
            "acceptedAt": (when + timedelta(minutes=rng.randrange(2, 240))).isoformat()}
    elif roll < 0.88:
        key, data = "teleconsult.consult.sla_breached", {"requester": fac, "district": district,
                                                         "priority": rng.choice(PRIORITIES),
                                                         "breachedAt": when.isoformat()}
    else:
        key, data = "billing.payment.received", {"facility": fac, "district": district,
                                                 "amount": rng.randrange(20, 500) * 1000,
                                                 "channel": "transfer" if rng.random() < 0.7 else "cash",
                                                 "receivedAt": when.isoformat(), "matched": True}
    return {"specversion": "1.0", "id": str(uuid.uuid4()), "source": "/sen/bench", "type": f"vn.sen.{key}.v1",
            "time": when.astimezone(UTC).isoformat(), "data": data}


def feed(db, events: list[dict], threads: int) -> float:
    """Events/s of ``record_event`` over ``events`` shared out to ``threads`` consumers."""
    def run(k: int) -> None:
        for e in events[k::threads]:
            record_event(db, e)

    ts = [threading.Thread(target=run, args=(k,)) for k in range(threads)]
    t0 = time.perf_counter()
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return len(events) / (time.perf_counter() - t0)


def through_the_bus(amqp_url: str, prefix: str, db, events: list[dict], consumers: int) -> float:
    """Events/s of ``consumers`` real portal.reporting consumers draining a backlog of ``events``."""
    from kombu import Connection
    from sen_portal.domain.reporting import count_event
    from sen_shared.bus import EventConsumer, Publisher, Topology, load_catalog

    catalog = load_catalog().only(["portal.reporting"])
    topology = Topology(catalog, prefix)
    with Connection(amqp_url) as conn:
        topology.declare(conn.default_channel)
    try:
        with Publisher(amqp_url, prefix=prefix, catalog=catalog, validate=False) as pub:
            for e in events:
                pub.publish(e)
        stop = threading.Event()
        cs = [EventConsumer(amqp_url, topology, "portal.reporting", count_event, db) for _ in range(consumers)]
        ts = [threading.Thread(target=c.run, args=(stop,), daemon=True) for c in cs]
        t0 = time.perf_counter()
        for t in ts:
            t.start()
        deadline = time.monotonic() + 120
        while sum(c.handled for c in cs) < len(events) and time.monotonic() < deadline:
            time.sleep(0.01)
        rate = sum(c.handled for c in cs) / (time.perf_counter() - t0)
        stop.set()
        for t in ts:
            t.join(15)
        return rate
    finally:
        with Connection(amqp_url) as conn:
            topology.delete(conn.default_channel)


def timed_calls(fn, calls: int, clients: int) -> list[float]:
    out: list[float] = []
    lock = threading.Lock()

    def run(n: int) -> None:
        for _ in range(n):
            t0 = time.perf_counter()
            fn()
            ms = (time.perf_counter() - t0) * 1000
            with lock:
                out.append(ms)

    ts = [threading.Thread(target=run, args=(calls // clients,)) for _ in range(clients)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return sorted(out)


def pct(values: list[float], p: float) -> float:
    return values[max(0, min(len(values) - 1, int(round(p / 100 * len(values) + 0.5)) - 1))]


@pytest.mark.integration
@pytest.mark.timeout(600)
def test_reporting_bench(mongo_client, run_id, base_env):
    started = time.monotonic()
    name = f"sen_t{run_id}_bench_reporting"
    mongo_client.drop_database(name)
    db = mongo_client[name]
    try:
        for ix in INDEXES:
            db[ix.collection].create_indexes([ix.model()])
        subprocess.run(["bash", str(ROOT / "deploy" / "local" / "infra.sh"), "tune", name],
                       env={**os.environ, **base_env}, cwd=ROOT, check=True, timeout=300, capture_output=True)
        rng = random.Random(13)
        today = datetime.now(VN).date()
        rates: list[tuple[int, int, float]] = []  # (counted before, threads, events/s)
        for threads in (1, 4):
            before = db[FACTS].count_documents({})
            rates.append((before, threads, feed(db, [event(rng, today) for _ in range(MEASURE)], threads)))
        fill = FILL_TO - db[FACTS].count_documents({})
        fill_rate = feed(db, [event(rng, today) for _ in range(fill)], 4)
        counted = db[FACTS].count_documents({})
        for threads in (1, 4):
            before = db[FACTS].count_documents({})
            rates.append((before, threads, feed(db, [event(rng, today) for _ in range(MEASURE)], threads)))
        bus: list[tuple[int, int, float]] = []  # (counted before, consumers, events/s) through RabbitMQ
        for consumers in (1, 4):
            before = db[FACTS].count_documents({})
            # EHR events, valid against their schemas (the consumer validates what it receives)
            events = [make_event(f"ehr.{kind}.created", {"resourceType": kind.capitalize(), "id": uuid.uuid4().hex,
                                                         "versionId": "1"}, subject=f"{kind.capitalize()}/x")
                      for kind in rng.choices(["observation", "patient"], [2, 1], k=BUS_EVENTS)]
            bus.append((before, consumers, through_the_bus(
                base_env["AMQP_URL"], f"{base_env['SEN_BUS_PREFIX']}{uuid.uuid4().hex[:6]}.", db, events, consumers)))
        total = db[FACTS].count_documents({})
        print(f"\nhandler: {rates}; bus: {bus}")

        start, end = today - timedelta(days=83), today
        # right after the load: the first call sums the slots that closed (no sealer runs here),
        # the next ones add the facts of the open slot(s) to the sealed totals
        t0 = time.perf_counter()
        dashboard(db, start, end, None)
        seal_s = time.perf_counter() - t0
        now = datetime.now(VN)
        open_slots = [slot_name(slot_start(now - k * SLOT)) for k in (0, 1, 2)]
        live_facts = sum(db[FACTS].count_documents({"slot": s}) for s in open_slots)
        live = timed_calls(lambda: dashboard(db, start, end, None), 5, 1)
        print(f"first call {seal_s:.1f} s; then with ~{live_facts:,} facts in the open slots: {live}")
        later = datetime.now(VN) + SLOT + timedelta(minutes=2)
        figures = dashboard(db, start, end, None, now=later)
        all_d = timed_calls(lambda: dashboard(db, start, end, None, now=later), 200, 4)
        one_d = timed_calls(lambda: dashboard(db, start, end, "Cao Lãnh", now=later), 200, 4)
        print(f"first call (seals) {seal_s:.1f} s; all districts {pct(all_d, 50):.0f}/{pct(all_d, 95):.0f} ms; "
              f"one district {pct(one_d, 50):.0f}/{pct(one_d, 95):.0f} ms")

        rows = [
            "| measure | result | target | |",
            "|---|---|---|---|",
        ]
        for before, threads, rate in rates:
            rows.append(f"| handler, {before:,} counted today, {threads} consumer thread{'s' * (threads > 1)} "
                        f"({MEASURE:,} events) | {rate:,.0f} events/s | ≥ 1,000 events/s "
                        f"| {'met' if rate >= 1000 else '**missed**'} |")
        for before, consumers, rate in bus:
            rows.append(f"| through RabbitMQ: {consumers} portal.reporting consumer{'s' * (consumers > 1)} draining "
                        f"{BUS_EVENTS:,} queued events ({before:,} counted today) | {rate:,.0f} events/s "
                        f"| ≥ 1,000 events/s | {'met' if rate >= 1000 else '**missed**'} |")
        rows += [
            f"| fill to {counted:,} (4 threads) | {fill_rate:,.0f} events/s | | |",
            f"| dashboard, 12 weeks, all districts, 4 clients (200 calls) | p50 {pct(all_d, 50):.0f} ms, "
            f"p95 {pct(all_d, 95):.0f} ms | | |",
            f"| dashboard, 12 weeks, one district, 4 clients (200 calls) | p50 {pct(one_d, 50):.0f} ms, "
            f"p95 {pct(one_d, 95):.0f} ms | | |",
            f"| first dashboard right after the load (sums the closed slots of {total:,} facts; the worker's "
            f"sealer does this within 10 s) | {seal_s:.1f} s | | |",
            f"| dashboard right after the load, ~{live_facts:,} facts in the open slots | p50 {pct(live, 50):.0f} ms "
            f"(5 calls) | | |",
        ]
        header = [f"Reporting read model benchmark, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC: {total:,} events "
                  f"(event times over 12 weeks, 165 facilities, 10 districts), FerretDB.",
                  f"Machine: {machine()}.", ""]
        footer = ["", f"Dashboard figures at the end: facilities {figures['facilities_using']}, "
                  f"EHR coverage {figures['ehr_coverage']['patients']:,} patients."]
        table = "\n".join(header + rows + footer)
        print("\n" + table + "\n")
        out = ROOT / ".sen" / "bench" / "reporting.md"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(table + "\n", "utf-8")
        print(f"written to {out.relative_to(ROOT)}; total {time.monotonic() - started:.0f} s")
        assert total == counted + 2 * MEASURE + 2 * BUS_EVENTS  # every event counted once
    finally:
        mongo_client.drop_database(name)
