"""The payment journey end to end, with the billing processes `make run` starts.

Billing runs as in production (its index step, gunicorn with the uvicorn worker class, its
worker process: the consult-charge consumer and the outbox relay) on FerretDB and RabbitMQ.
A consult is completed (``teleconsult.consult.completed`` published on the bus, as the
teleconsult service does), billing issues its Invoice (``billing.invoice.issued`` seen on the
bus), the cashier reads its VietQR (``$vietqr``: the payload, the reference and the amount
due), the bank's aggregator reports the transfer with a signed webhook (Standard Webhooks, the
note as a bank mangles it), the Invoice turns ``balanced``, ``billing.invoice.paid`` is seen on
the bus, and the receipt is a PDF.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from sen_billing.devwebhook import signed_request
from sen_shared.auth import issue_dev_token
from sen_shared.bus.catalog import load_catalog
from sen_shared.bus.events import make_event

from tests.support import free_port, stop_processes, wait_ready

ROOT = Path(__file__).resolve().parents[2]
STD_SECRET = "whsec_" + base64.b64encode(b"e2e-payment-journey-secret").decode()
pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def billing(base_env, run_id, tmp_path_factory, mongo_client):
    logs = tmp_path_factory.mktemp("payjourney")
    port = free_port()
    db = f"sen_t{run_id}_payjourney"
    env = {**os.environ, **base_env, "SEN_DB": db, "HOST": "127.0.0.1", "PORT": str(port),
           "WEB_CONCURRENCY": "1", "LOG_LEVEL": "INFO", "SEN_WEBHOOK_SECRET": STD_SECRET,
           "SEN_BANK_BIN": "970436", "SEN_BANK_ACCOUNT": "0011001932418", "SEN_BANK_ACCOUNT_NAME": "BENH VIEN SEN",
           "PROMETHEUS_MULTIPROC_DIR": str(logs / "prom")}
    bindir = Path(sys.executable).parent
    subprocess.run([sys.executable, "-m", "sen_billing.indexes"], env=env, cwd=ROOT, check=True,
                   capture_output=True, timeout=300)
    procs = {
        "web": subprocess.Popen([str(bindir / "gunicorn"), "-c", str(ROOT / "deploy" / "gunicorn.conf.py"),
                                 "sen_billing.asgi:app"], env=env, stdout=open(logs / "web.log", "wb"),
                                stderr=subprocess.STDOUT, cwd=ROOT),
        "worker": subprocess.Popen([sys.executable, "-m", "sen_billing.worker"], env=env,
                                   stdout=open(logs / "worker.log", "wb"), stderr=subprocess.STDOUT, cwd=ROOT),
    }
    try:
        url = f"http://127.0.0.1:{port}"
        wait_ready(url, proc=procs["web"], log=logs / "web.log")
        yield {"url": url, "logs": logs, "prefix": base_env["SEN_BUS_PREFIX"]}
    finally:
        stop_processes(procs)
        mongo_client.drop_database(db)


class BusWatch:
    """A queue of this test bound to billing's events, read with basic_get."""

    def __init__(self, amqp_url: str, prefix: str, keys: list[str]) -> None:
        from kombu import Connection
        from sen_shared.bus.publisher import Publisher

        self.publisher = Publisher(amqp_url, prefix=prefix)
        self.publisher.declare()
        self.conn = Connection(amqp_url)
        self.channel = self.conn.default_channel
        self.queue = f"{prefix}test.payment-journey.{uuid.uuid4().hex[:6]}"
        self.channel.queue_declare(queue=self.queue, durable=False, auto_delete=False)
        for key in keys:
            self.channel.queue_bind(queue=self.queue, exchange=self.publisher.topology.exchange.name, routing_key=key)
        self.seen: list[dict[str, Any]] = []

    def wait_for(self, predicate, seconds: float = 60.0) -> dict[str, Any]:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            for event in self.seen:
                if predicate(event):
                    return event
            m = self.channel.basic_get(queue=self.queue, no_ack=True)
            if m is None:
                time.sleep(0.1)
                continue
            self.seen.append(json.loads(m.body))
        raise AssertionError(f"no such event in {seconds} s; seen: {[e['type'] for e in self.seen]}")

    def close(self) -> None:
        self.channel.queue_delete(queue=self.queue)
        self.conn.release()
        self.publisher.close()


def test_consult_completed_to_invoice_paid_and_receipt(billing, amqp_url: str, dev_key: Path) -> None:
    url = billing["url"]
    watch = BusWatch(amqp_url, billing["prefix"], ["billing.invoice.issued", "billing.invoice.paid",
                                                    "billing.payment.received"])
    try:
        # 1. the consult is completed (what teleconsult publishes)
        with open(load_catalog().path.parent / "examples" / "teleconsult.consult.completed.json",
                  encoding="utf-8") as f:
            example = json.load(f)
        sr = f"ServiceRequest/sr-e2e-{uuid.uuid4().hex[:8]}"
        data = {**example["data"], "serviceRequest": sr, "task": f"Task/tk-e2e-{uuid.uuid4().hex[:8]}"}
        watch.publisher.publish(make_event("teleconsult.consult.completed", data, subject=sr))

        # 2. billing issues the consult's invoice
        issued = watch.wait_for(lambda e: e["type"] == "vn.sen.billing.invoice.issued.v1"
                                and e["data"].get("consult") == sr, seconds=90)
        invoice = issued["data"]["invoice"]
        iid = invoice.split("/", 1)[1]
        facility = issued["data"]["facility"].split("/", 1)[1]
        cashier = {"Authorization": f"Bearer {issue_dev_token(dev_key, 'cashier', facility=facility)}"}
        assert issued["data"]["patientShare"] > 0

        # 3. the cashier shows the QR: payload, reference, amount due
        qr = httpx.get(f"{url}/fhir/Invoice/{iid}/$vietqr", headers={**cashier, "Accept": "application/json"},
                       timeout=30)
        assert qr.status_code == 200, qr.text
        qr_body = qr.json()
        reference, amount = qr_body["reference"], int(qr_body["amount"])
        assert amount == issued["data"]["patientShare"]
        assert reference in qr_body["payload"]

        # 4. the aggregator reports the transfer, the note as the bank wrote it
        mangled = f"CT DEN:0123 {reference[:5].lower()} {reference[5:]} thanh toán viện phí"
        headers, body = signed_request("standard", mangled, amount, uuid.uuid4().hex[:12], STD_SECRET, time.time())
        r = httpx.post(f"{url}/webhooks/standard", content=body,
                       headers={**headers, "Content-Type": "application/json"}, timeout=30)
        assert r.status_code == 200 and r.json()["success"] is True, r.text

        # 5. balanced; billing.invoice.paid on the bus (once the worker's relay sends it)
        paid = watch.wait_for(lambda e: e["type"] == "vn.sen.billing.invoice.paid.v1"
                              and e["data"]["invoice"] == invoice)
        assert paid["data"]["amount"] == amount and paid["data"]["channel"] == "transfer"
        received = watch.wait_for(lambda e: e["type"] == "vn.sen.billing.payment.received.v1"
                                  and e["data"].get("invoice") == invoice)
        assert received["data"]["matched"] is True
        fhir = httpx.get(f"{url}/fhir/Invoice/{iid}", headers={**cashier, "Accept": "application/fhir+json"},
                         timeout=30)
        assert fhir.json()["status"] == "balanced"

        pr_id = paid["data"]["reconciliation"].split("/", 1)[1]
        pr = httpx.get(f"{url}/fhir/PaymentReconciliation/{pr_id}",
                       headers={**cashier, "Accept": "application/fhir+json"}, timeout=30)
        assert pr.status_code == 200 and pr.json()["paymentAmount"]["value"] == amount

        # 6. the receipt, as PDF
        pdf = httpx.get(f"{url}/payments/receipts/{iid}/pdf", headers=cashier, timeout=60)
        assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF")
        receipt = httpx.get(f"{url}/payments/receipts/{iid}", headers=cashier, timeout=30).json()
        assert receipt["paid"] == amount and receipt["reconciliation"] == paid["data"]["reconciliation"]
        # it names the patient as the consult's event did (the EHR's name at the consult's submission)
        assert receipt["patient"] == data["patientDisplay"] == "Phạm Thị Hồng"
        page = httpx.get(f"{url}/payments/receipts/{iid}/html", headers=cashier, timeout=30)
        assert page.status_code == 200 and "Phạm Thị Hồng" in page.text
    finally:
        watch.close()
