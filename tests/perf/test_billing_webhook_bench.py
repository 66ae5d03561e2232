"""Billing webhook benchmark (``make bench``): the payment inbox under load, a third of it duplicates.

A gunicorn billing (``SEN_BENCH_WORKERS``, default 2) on its own FerretDB database after its
index step. ``INVOICES`` issued invoices owe 30.000 ₫ each; the load is ``UNIQUE`` signed
transfers of 10.000 ₫ (three per invoice, so the third one settles it: balanced claim, receipt
number, PaymentReconciliation, Invoice update, receipt with its event), providers in turn
(Standard Webhooks, Casso v2, SePay), and ``UNIQUE // 2`` exact re-sends of earlier calls (a
provider's retries: a third of all requests), mixed in. The invoices' payments interleave
(``_transfer_order``): once under way, one new transfer in three settles an invoice, as calls for
many invoices arrive at once. ``SEN_BENCH_ORDER=bunched`` sends the first payments of all invoices,
then the second, then the settling third (the order of sessions 12-18: its last third settles an
invoice with every new transfer, about three times the settlements a second). Measured with the closed-loop load
generator (``loadgen``: one thread, keep-alive connections), ``CLIENTS`` clients.

Billing's worker (``python -m sen_billing.worker``) runs beside the web process, as in production: its
outbox relay publishes the events the calls stored (``billing.payment.received`` in each payment,
``billing.invoice.paid`` in each receipt) on the run's RabbitMQ prefix, and its CPU counts as
``worker`` in the CPU a request. After the last call is answered the bench waits until the worker's
outbox is empty (every event of the load published: what a cashier's live page and the EHR's and
portal's consumers wait for) and reports that relay lag; a target counts as met only when the lag is
at most ``MAX_LAG`` (1 s).

Prints one markdown table with the issue's 2-core targets beside (also written to
``.sen/bench/billing.md``). No timing assertions; it asserts that every answer was 200, that
there is exactly one payment per transaction, and one receipt per settled invoice.
"""

from __future__ import annotations

import base64
import json
import os
import random
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from urllib.parse import urlsplit

import pytest
from sen_billing.domain import invoice_port, vietqr, webhooks
from sen_billing.worker import OUTBOX_COLLECTIONS
from sen_shared.bus.outbox import PENDING
from sen_shared.claims import advance
from sen_shared.fhir.store import Store

from tests.perf import loadgen
from tests.perf.test_ehr_bench import cpu_seconds, cpu_used, machine
from tests.support import ROOT, stop_processes, wait_for, web_process

INVOICES = int(os.environ.get("SEN_BENCH_INVOICES", "700"))
UNIQUE = INVOICES * 3
CLIENTS = int(os.environ.get("SEN_BENCH_CLIENTS", "8"))
STD_SECRET = "whsec_" + base64.b64encode(b"bench-standard-webhooks-secret!!").decode()
CASSO_KEY = "bench-casso-" + uuid.uuid4().hex
SEPAY_KEY = "bench-sepay-" + uuid.uuid4().hex
MAX_SECONDS = float(os.environ.get("SEN_BENCH_MAX_SECONDS", "600"))


@pytest.fixture(scope="module")
def billing(base_env, run_id, mongo_client, tmp_path_factory):
    db = f"sen_t{run_id}_billbench"
    env = {**base_env, "SEN_DB": db, "LOG_LEVEL": "WARNING", "SEN_ENV": "development",
           "SEN_WEBHOOK_SECRET": STD_SECRET, "SEN_CASSO_CHECKSUM_KEY": CASSO_KEY, "SEN_SEPAY_API_KEY": SEPAY_KEY}
    subprocess.run([sys.executable, "-m", "sen_billing.indexes"], env={**os.environ, **env}, cwd=ROOT, check=True,
                   timeout=300, capture_output=True)
    subprocess.run(["bash", str(ROOT / "deploy" / "local" / "infra.sh"), "tune", db], env={**os.environ, **env},
                   cwd=ROOT, check=True, timeout=300, capture_output=True)
    logs = tmp_path_factory.mktemp("billbench")
    # billing's worker beside it, as in production: its outbox relay publishes each payment's and receipt's
    # event (its CPU counts as 'worker', test_ehr_bench.cpu_seconds)
    with (logs / "billing-worker.log").open("wb") as out:
        worker = subprocess.Popen([sys.executable, "-m", "sen_billing.worker"], env={**os.environ, **env}, cwd=ROOT,
                                  stdout=out, stderr=subprocess.STDOUT)
    try:
        # started when its price list is loaded (before its relay and consumers), so its start is not measured
        wait_for(lambda: worker.poll() is not None or mongo_client[db]["ChargeItemDefinition"].count_documents({}) > 0,
                 timeout=120)
        assert worker.poll() is None, f"billing's worker stopped: see {logs / 'billing-worker.log'}"
        with web_process("billing", env, logs / "billing-web.log",
                         WEB_CONCURRENCY=os.environ.get("SEN_BENCH_WORKERS", "2"), GUNICORN_TIMEOUT="120") as url:
            yield url, mongo_client[db], worker
    finally:
        stop_processes([worker])
        mongo_client.drop_database(db)


def _invoices(db) -> list[str]:
    store = Store(db, service="billing", emit_events=False)
    codes = []
    for _ in range(INVOICES):
        iid = "inv-" + uuid.uuid4().hex[:12]
        code = vietqr.reference_code(iid)
        store.create({"resourceType": "Invoice", "status": "issued", "issuer": {"reference": "Organization/org-bench"},
                      "identifier": [{"system": invoice_port.REFERENCE_SYSTEM, "value": code}],
                      "totalNet": {"value": int(os.environ.get("SEN_BENCH_OWED", "30000")), "currency": "VND"}}, iid)
        link = advance(db[invoice_port.STATES], iid, None, {"state": "issued"})  # its lifecycle chain
        # the reference record after the issued link, with its number, as issue() leaves them, and the
        # number beside the Invoice's resource (issue() writes it with the issued version)
        db[invoice_port.REFERENCES].insert_one({"_id": code, "invoice": iid, invoice_port.ISSUED_LINK: link["n"]})
        db["Invoice"].update_one({"_id": iid}, {"$set": {invoice_port.ISSUED_LINK_FIELD: link["n"]}})
        codes.append(code)
    return codes


def _request(host: str, port: int, i: int, code: str, now: float, series: str = "b",
             kind: int | None = None) -> bytes:
    note, txid, kind = f"thanh toan {code}", f"{series}{i:07d}", i % 3 if kind is None else kind
    if kind == 0:
        body = json.dumps({"type": "transfer.received", "data": {"id": txid, "amount": 10000,
                                                                 "description": note}}).encode()
        ts = str(int(now))
        headers = {"webhook-id": f"msg_{txid}", "webhook-timestamp": ts, "Content-Type": "application/json",
                   "webhook-signature": webhooks.standard_signature(f"msg_{txid}", ts, body, STD_SECRET)}
        return loadgen.post_bytes(host, port, "/webhooks/standard", headers, body)
    if kind == 1:
        obj = {"error": 0, "data": {"id": i, "reference": f"FT{txid}", "description": note, "amount": 10000,
                                    "transactionDateTime": "2025-03-14 10:00:00", "accountNumber": "0011001932418"}}
        t = str(int(now * 1000))
        headers = {"X-Casso-Signature": f"t={t},v1={webhooks.casso_signature(t, obj, CASSO_KEY)}",
                   "Content-Type": "application/json"}
        return loadgen.post_bytes(host, port, "/webhooks/casso", headers, json.dumps(obj).encode())
    obj = {"id": i, "gateway": "Vietcombank", "transactionDate": "2025-03-14 10:00:00",
           "accountNumber": "0011001932418", "code": None, "content": note, "transferType": "in",
           "transferAmount": 10000, "accumulated": 0,
           "subAccount": None, "referenceCode": f"FT{txid}", "description": ""}
    return loadgen.post_bytes(host, port, "/webhooks/sepay", {"Authorization": f"Apikey {SEPAY_KEY}",
                                                              "Content-Type": "application/json"},
                              json.dumps(obj).encode())


LAG = 50
ORDER = "bunched" if os.environ.get("SEN_BENCH_ORDER") == "bunched" else "interleaved"


def _transfer_order() -> list[tuple[int, int]]:
    """(invoice, provider) of each new transfer in sending order: at step ``s`` invoice ``s`` gets its
    first payment, invoice ``s - LAG`` its second and invoice ``s - 2 * LAG`` its third (the settling
    one), so after the first ``2 * LAG`` steps one new transfer in three settles an invoice, as banks'
    calls for many invoices interleave; the providers take the three roles in turn."""
    order = []
    for s in range(INVOICES + 2 * LAG):
        for j in range(3):  # which payment of its invoice: 0 its first, 2 the settling one
            v = s - j * LAG
            if 0 <= v < INVOICES:
                order.append((v, (v + j) % 3))
    return order


def _load(db, host: str, port: int, series: str, base: int = 0) -> list[bytes]:
    """``INVOICES`` new invoices and their ``UNIQUE`` transfers (transaction ids ``<series>NNNNNNN``
    and, for Casso and SePay, numbers from ``base`` on: a multiple of 3, the providers' turn), a
    third of all requests re-sends of calls already sent (a provider retrying), mixed in."""
    codes = _invoices(db)
    now = time.time()
    if ORDER == "bunched":
        unique = [_request(host, port, base + i, codes[i % INVOICES], now, series) for i in range(UNIQUE)]
    else:
        unique = [_request(host, port, base + i, codes[v], now, series, kind)
                  for i, (v, kind) in enumerate(_transfer_order())]
    rng = random.Random(15)
    load: list[bytes] = []
    sent = 0
    for i, req in enumerate(unique):
        load.append(req)
        sent += 1
        if i % 2 == 1:
            load.append(unique[rng.randrange(0, sent)])
    return load


def mark(ok: bool) -> str:
    """A target's status in a table row."""
    return "met" if ok else "**missed**"


MAX_LAG = 1.0  # seconds: every event of the load published this soon after the last call was answered, or missed
LAG_WAIT = 120.0  # seconds the bench waits for the worker's outbox to empty


def relay_lag(db, worker) -> tuple[float, int]:
    """Seconds from now (the last call answered) until billing's worker has published every event the load
    stored: no document of its outbox collections (``OUTBOX_COLLECTIONS``) still ``outbox_pending``, polled
    every 50 ms; and the documents still pending then. ``inf`` when the outbox is not empty within ``LAG_WAIT``
    seconds (or the worker stopped)."""
    t0 = time.monotonic()
    while True:
        left = sum(db[name].count_documents({PENDING: True}) for name in OUTBOX_COLLECTIONS)
        if not left:
            return time.monotonic() - t0, 0
        if time.monotonic() - t0 > LAG_WAIT or worker.poll() is not None:
            return float("inf"), left
        time.sleep(0.05)


def lag_row(lag: float, left: int) -> str:
    """The table row of the relay lag (:func:`relay_lag`)."""
    result = (f"{lag * 1000:,.0f} ms" if left == 0
              else f"not empty after {LAG_WAIT:.0f} s: {left} documents' events unpublished")
    return (f"| relay lag: last call answered → billing's worker's outbox empty (every event published) | {result} "
            f"| ≤ {MAX_LAG * 1000:,.0f} ms | {mark(lag <= MAX_LAG)} |")


def test_webhook_inbox_throughput_with_duplicates(billing) -> None:
    url, db, worker = billing
    started = time.monotonic()
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    load = _load(db, host, port, "b")
    cpu0 = cpu_seconds()
    t0 = time.perf_counter()
    lat, statuses = loadgen.run(host, port, {}, iter(load), CLIENTS, time.monotonic() + MAX_SECONDS)
    wall = time.perf_counter() - t0
    lag, left = relay_lag(db, worker)
    used = cpu_used(cpu0)
    n = len(lat)
    cpu = {k: v * 1000 / n for k, v in used.items()} if n else {}
    cpu_text = ", ".join(f"{ms:.1f} {kind}" for kind, ms in sorted(cpu.items(), key=lambda kv: -kv[1]) if ms >= 0.05)
    rate = n / wall if wall else 0.0
    p50, p99 = loadgen.percentile(lat, 50), loadgen.percentile(lat, 99)
    payments = db["payments"].count_documents({})
    receipts = db["receipts"].count_documents({})

    rows = [
        "| measure | result | target | |",
        "|---|---|---|---|",
        f"| webhooks (Standard Webhooks, Casso v2, SePay in turn), {CLIENTS} clients, {n - UNIQUE} of {n} "
        f"duplicates | {rate:,.0f}/s | ≥ 300/s | {mark(rate >= 300 and lag <= MAX_LAG)} |",
        f"| the same, latency | p50 {p50:.1f} ms, p99 {p99:.1f} ms | p99 ≤ 50 ms | "
        f"{mark(p99 <= 50 and lag <= MAX_LAG)} |",
        lag_row(lag, left),
        f"| CPU a request, every process of the machine (until every event was published) | "
        f"{sum(cpu.values()):.1f} ms ({cpu_text}) | | |",
        f"| outcome | {payments} payments for {UNIQUE} transactions; {receipts} of {INVOICES} invoices settled "
        f"(receipt, PaymentReconciliation, Invoice balanced) | one each | |",
    ]
    load_avg = os.getloadavg()[0]
    header = [f"Billing webhook benchmark, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC: gunicorn WEB_CONCURRENCY="
              f"{os.environ.get('SEN_BENCH_WORKERS', '2')}, FerretDB, invoices' payments {ORDER}. "
              f"Machine: {machine()}; load average "
              f"{load_avg:.1f} at the end.", ""]
    unexpected = {k: v for k, v in statuses.items() if k != 200}
    table = "\n".join(header + rows + ["", f"Unexpected answers: {unexpected or 'none'}."])
    print("\n" + table + "\n")
    out = ROOT / ".sen" / "bench" / "billing.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(table + "\n", "utf-8")
    print(f"written to {out.relative_to(ROOT)}; total {time.monotonic() - started:.0f} s")
    # correctness, not timing
    assert not unexpected
    assert n == len(load)
    assert payments == UNIQUE and receipts == INVOICES


RATE = float(os.environ.get("SEN_BENCH_RATE", "300"))
MAX_CONNS = int(os.environ.get("SEN_BENCH_MAX_CONNS", "64"))


def test_webhook_inbox_at_the_targets_rate(billing) -> None:
    """The issue's target read as a rate: calls arriving at ``RATE`` a second (300, the target's
    figure) whatever became of the earlier ones, as a bank's webhooks arrive, not a fixed number of
    clients each waiting for its answer (the test above: its clients keep the server saturated, so
    its p99 is the latency at the machine's ceiling). The same load as above on new invoices: a
    third re-sends, every third new transfer settling its invoice. Latency counts from when each
    call was due (``loadgen.run_rate``: a call waiting for a connection or for the server counts
    that wait). Prints the offered and the achieved rate, p50/p99 and CPU a call."""
    url, db, worker = billing
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    load = _load(db, host, port, "r", base=3_000_000)
    payments0, receipts0 = db["payments"].count_documents({}), db["receipts"].count_documents({})
    cpu0 = cpu_seconds()
    lat, statuses, elapsed = loadgen.run_rate(host, port, load, RATE, MAX_CONNS, time.monotonic() + MAX_SECONDS)
    lag, left = relay_lag(db, worker)
    used = cpu_used(cpu0)
    n = len(lat)
    cpu = {k: v * 1000 / n for k, v in used.items()} if n else {}
    cpu_text = ", ".join(f"{ms:.1f} {kind}" for kind, ms in sorted(cpu.items(), key=lambda kv: -kv[1]) if ms >= 0.05)
    achieved = n / elapsed if elapsed else 0.0
    p50, p99 = loadgen.percentile(lat, 50), loadgen.percentile(lat, 99)
    payments = db["payments"].count_documents({}) - payments0
    receipts = db["receipts"].count_documents({}) - receipts0

    rows = [
        "| measure | result | target | |",
        "|---|---|---|---|",
        f"| webhooks arriving at {RATE:,.0f}/s (open loop, up to {MAX_CONNS} connections), {n - UNIQUE} of {n} "
        f"duplicates | {achieved:,.0f}/s answered | ≥ 300/s | {mark(achieved >= 300 * 0.99 and lag <= MAX_LAG)} |",
        f"| the same, latency from each call's due time | p50 {p50:.1f} ms, p99 {p99:.1f} ms | p99 ≤ 50 ms | "
        f"{mark(p99 <= 50 and lag <= MAX_LAG)} |",
        lag_row(lag, left),
        f"| CPU a request, every process of the machine (until every event was published) | "
        f"{sum(cpu.values()):.1f} ms ({cpu_text}) | | |",
        f"| outcome | {payments} payments for {UNIQUE} transactions; {receipts} of {INVOICES} invoices settled | "
        "one each | |",
    ]
    unexpected = {k: v for k, v in statuses.items() if k != 200}
    title = (f"Billing webhooks at a rate, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, invoices' payments {ORDER}; "
             "load average "
             f"{os.getloadavg()[0]:.1f} at the end.")
    table = "\n".join([title, "", *rows, "", f"Unexpected answers: {unexpected or 'none'}."])
    print("\n" + table + "\n")
    out = ROOT / ".sen" / "bench" / "billing.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("a", encoding="utf-8") as f:
        f.write("\n" + table + "\n")
    # correctness, not timing
    assert not unexpected
    assert n == len(load)
    assert payments == UNIQUE and receipts == INVOICES


class _Commands:
    """Counts the database commands (round trips) of the requests made while ``on``."""

    def __init__(self) -> None:
        self.on = False
        self.names: list[str] = []

    def started(self, event) -> None:
        if self.on:
            self.names.append(f"{event.command_name} {event.command.get(event.command_name)}")

    def succeeded(self, event) -> None:
        pass

    def failed(self, event) -> None:
        pass


def test_webhook_round_trips_by_kind(base_env, run_id, mongo_client) -> None:
    """Database round trips of a partial payment, a settling one, retries, an unmatched and a late one, in process
    (pymongo's command monitoring on the app's own client). Printed; no assertion on timing."""
    from pymongo import monitoring

    from tests.support import app_client

    commands = _Commands()
    monitoring.register(type("L", (monitoring.CommandListener,), {
        "started": lambda self, e: commands.started(e), "succeeded": lambda self, e: None,
        "failed": lambda self, e: None})())
    db_name = f"sen_t{run_id}_billrt"
    # a URL of its own, so the app gets a client made after the listener was registered (a
    # process keeps one client per URL; an earlier test's would not report its commands)
    url = base_env["MONGO_URL"]
    url += ("&" if "?" in url else ("?" if url.endswith("/") else "/?")) + "connectTimeoutMS=20001"
    env = {**base_env, "MONGO_URL": url, "SEN_ENV": "development", "SEN_WEBHOOK_SECRET": STD_SECRET}
    from sen_billing.indexes import INDEXES
    from sen_shared import mongo

    mongo.ensure_indexes(mongo_client[db_name], INDEXES)
    with app_client("billing", env, db_name, mongo_client) as (client, _app):
        db = mongo_client[db_name]
        global INVOICES
        saved, INVOICES = INVOICES, 2
        try:
            codes = _invoices(db)
        finally:
            INVOICES = saved

        def send(i: int, code: str) -> tuple[int, list[str]]:
            note = f"thanh toan {code}" if code else "chuyen tien kham benh"  # no code: unmatched
            body = json.dumps({"type": "transfer.received", "data": {"id": f"rt{i}", "amount": 10000,
                                                                     "description": note}}).encode()
            ts = str(int(time.time()))
            headers = {"webhook-id": f"msg_rt{i}", "webhook-timestamp": ts, "Content-Type": "application/json",
                       "webhook-signature": webhooks.standard_signature(f"msg_rt{i}", ts, body, STD_SECRET)}
            commands.names.clear()
            commands.on = True
            try:
                answer = client.post("/webhooks/standard", content=body, headers=headers)
            finally:
                commands.on = False
            return answer.status_code, list(commands.names)

        # warm-up on the other invoice (first-use look-ups of the process are not per request)
        for i in range(3):
            send(100 + i, codes[1])
        rows = []
        seen: dict[str, list[str]] = {}
        for kind, i in (("partial payment", 1), ("partial payment", 2), ("retry", 2), ("settling payment", 3),
                        ("retry of the settling payment", 3), ("unmatched transfer (no code in its note)", 4),
                        ("late payment (its invoice balanced)", 5)):
            status, names = send(i, "" if i == 4 else codes[0])
            assert status == 200 and names, f"{kind}: {status}, no database command seen"
            rows.append(f"| {kind} | {len(names)} | {'; '.join(names)} |")
            seen[kind] = names
    table = "\n".join(["| request | round trips | commands |", "|---|---:|---|", *rows])
    print("\n" + table + "\n")
    # the commands each kind sends, in order (the README's Performance section says why each one
    # stays): a change that adds one, or reorders them, fails here, not only in a bench's figure
    for kind, names in ROUND_TRIPS.items():
        assert seen[kind] == names, f"{kind}: {seen[kind]}"


# after its insert a new transfer reads the day records of its facility's shifts closed meanwhile
# (find shift_days: a close that finished before the insert reports it, shifts.after_money_in)
_PARTIAL = ["insert webhook_inbox", "find Invoice", "insert payments", "find shift_days", "find payments"]
ROUND_TRIPS = {
    "partial payment": _PARTIAL,
    "retry": ["insert webhook_inbox", "find payments", "find invoice_balanced", "find payments"],
    "settling payment": [*_PARTIAL, "insert invoice_givebacks", "insert invoice_balanced", "insert invoice_states",
                         "insert receipt_numbers", "insert PaymentReconciliation_history",
                         "insert PaymentReconciliation", "insert Invoice_history", "update Invoice",
                         "insert receipts"],
    "retry of the settling payment": ["insert webhook_inbox", "find payments", "find invoice_balanced"],
    "unmatched transfer (no code in its note)": ["insert webhook_inbox", "insert unmatched_waiting",
                                                 "insert payments"],
    "late payment (its invoice balanced)": ["insert webhook_inbox", "find Invoice", "insert payments",
                                            "find shift_days", "insert refund_tasks"],
}
