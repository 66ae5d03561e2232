"""What the billing integration suites share: a scratch billing database with its indexes, the
billing app on a fresh database, and an invoice made the way the service makes one (charge item,
draft, issue; optionally cancelled); for the portal's cashier suites, the demo cashier signed in to the
portal."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from types import SimpleNamespace
from typing import Any

from pymongo import MongoClient, monitoring
from sen_billing.domain import invoices, payments, pricing, vietqr
from sen_billing.domain.webhooks import Transfer
from sen_billing.indexes import INDEXES
from sen_shared import mongo
from sen_shared.auth import issue_dev_token
from sen_shared.errors import SenError
from sen_shared.fhir import store as fhir_store
from sen_shared.fhir.outcome import FhirError
from sen_shared.fhir.store import Store


@contextmanager
def scratch_db(mongo_client, tag: str) -> Iterator:
    """A fresh billing database (``sen_billing_<tag><random>``) with its indexes, dropped after."""
    name = f"sen_billing_{tag}{uuid.uuid4().hex[:8]}"
    database = mongo_client[name]
    mongo.ensure_indexes(database, INDEXES)
    try:
        yield database
    finally:
        mongo_client.drop_database(name)


class ReadCounter(monitoring.CommandListener):
    """A pymongo command listener counting, while ``on``, the reads (``find``/``getMore``) as
    ``(command, collection, filter)`` and the documents they returned: what a look-up reads."""

    def __init__(self) -> None:
        self.commands: list[tuple[str, str, dict]] = []
        self.returned = 0
        self.on = False

    def started(self, event) -> None:
        if self.on and event.command_name in ("find", "getMore"):
            coll = event.command.get("find") or event.command.get("collection")
            self.commands.append((event.command_name, coll, dict(event.command.get("filter") or {})))

    def succeeded(self, event) -> None:
        if self.on and event.command_name in ("find", "getMore"):
            cursor = event.reply.get("cursor") or {}
            self.returned += len(cursor.get("firstBatch") or cursor.get("nextBatch") or [])

    def failed(self, event) -> None:
        pass


@contextmanager
def counted_db(mongo_url: str, mongo_client, tag: str) -> Iterator:
    """``(database, ReadCounter)``: a :func:`scratch_db` seen through a client of its own whose reads
    the counter counts."""
    listener = ReadCounter()
    client = MongoClient(mongo_url, tz_aware=True, uuidRepresentation="standard", event_listeners=[listener])
    try:
        with scratch_db(mongo_client, tag) as database:
            yield client[database.name], listener
    finally:
        client.close()


@contextmanager
def billing_app(base_env: dict[str, str], mongo_client, monkeypatch, tag: str,
                extra_env: dict[str, str] | None = None) -> Iterator:
    """``(test client, database)`` of the billing app on a fresh database (``sen_billing_<tag><random>``)
    with the price list loaded; the worker's settings read the same environment, so its consumers
    can be called directly. The database is dropped afterwards."""
    from sen_billing import worker

    from tests.support import app_client

    db_name = f"sen_billing_{tag}{uuid.uuid4().hex[:8]}"
    env = {**base_env, **(extra_env or {})}
    for key, value in {**env, "SEN_DB": db_name}.items():
        monkeypatch.setenv(key, value)
    worker._settings.cache_clear()
    with app_client("billing", env, db_name, mongo_client) as (client, _app):
        db = mongo_client[db_name]
        pricing.load(db)
        yield client, db


BANK = {"SEN_BANK_BIN": "970436", "SEN_BANK_ACCOUNT": "0011001932418", "SEN_BANK_ACCOUNT_NAME": "TYT MY HIEP"}
# the cashier page modules' billing (tests/integration/conftest.py cashier_services): the demo account is the demo
# clinic's, whose name its receipts and daily report print
CASHIER_BANK = {**BANK, "SEN_BANK_ACCOUNT_FACILITIES": json.dumps({BANK["SEN_BANK_ACCOUNT"]: "tyt-my-hiep"}),
                "SEN_FACILITY_NAMES": json.dumps({"tyt-my-hiep": "Trạm Y tế xã Mỹ Hiệp"})}


@contextmanager
def billing_web(base_env: dict[str, str], run_id: str, tmp_path_factory, mongo_client, tag: str,
                extra_env: dict[str, str] | None = None) -> Iterator:
    """``(url, database)`` of a billing web process (gunicorn, as ``make run``) on ``sen_t<run>_<tag>_billing``
    with the price list loaded (what its worker does at start) and the demo bank account; dropped after."""
    from tests.support import web_process

    db = f"sen_t{run_id}_{tag}_billing"
    pricing.load(mongo_client[db])
    try:
        with web_process("billing", {**base_env, **BANK, **(extra_env or {}), "SEN_DB": db},
                         tmp_path_factory.mktemp("billing") / "billing.log") as url:
            yield url, mongo_client[db]
    finally:
        mongo_client.drop_database(db)


def cashier_billing(services: dict[str, str], mongo_client) -> tuple[str, Any]:  # noqa: ANN001 - a MongoClient
    """``(url, database)`` of the session's billing (``cashier_services``) for a module: emptied, the price list
    loaded again (what its worker does at start), as a process of the module's own would find it."""
    from tests.support import emptied

    emptied(mongo_client, services["billing_db"])
    db = mongo_client[services["billing_db"]]
    pricing.load(db)
    return services["billing"], db


def cashier_ehr(services: dict[str, str], mongo_client, dev_key, resources: list[dict[str, Any]]) -> str:  # noqa: ANN001
    """The URL of the session's EHR (``cashier_services``) for a module: emptied, then holding ``resources``
    (each put by an admin at its id)."""
    from tests.support import emptied, put_resources

    emptied(mongo_client, services["ehr_db"])
    put_resources(services["ehr"], dev_key, resources)
    return services["ehr"]


@contextmanager
def cashier_portal(base_env: dict[str, str], run_id: str, mongo_client, tag: str, ehr: str,
                   billing: str) -> Iterator:
    """The portal app (in process, ``TESTING``) in front of ``ehr`` and ``billing``, nothing kept
    between requests (``SEN_PORTAL_CACHE_SECONDS=0``) nor from an earlier module's portal (sen_portal.caches)."""
    from sen_portal import caches

    from tests.support import app_client

    caches.forget_all()

    env = {**base_env, "SEN_EHR_URL": ehr, "SEN_BILLING_URL": billing, "SEN_TELECONSULT_URL": billing,
           "SEN_HTTP_TIMEOUT": "15", "SEN_PORTAL_CACHE_SECONDS": "0"}
    with app_client("portal", env, f"sen_t{run_id}_{tag}_portal", mongo_client) as (_client, app):
        app.app.config["TESTING"] = True
        yield app.app


def fhir_admin(dev_key) -> dict[str, str]:  # noqa: ANN001 - the dev signing key
    """Headers of an admin reading and writing FHIR JSON (:func:`tests.support.admin_headers`)."""
    from tests.support import admin_headers

    return admin_headers(dev_key)


def signed_in_cashier(app):  # noqa: ANN001, ANN201 - the portal's Flask app; its test client
    """A test client of the portal signed in as the demo cashier (through the login form)."""
    from tests.support import csrf_token

    client = app.test_client()
    token = csrf_token(client.get("/login").get_data(as_text=True))
    r = client.post("/login", data={"username": "cashier", "password": "sen-cashier", "csrf_token": token})
    assert r.status_code == 302
    return client


def same_session(app, client):  # noqa: ANN001, ANN201 - the portal's Flask app and a test client of it
    """Another tab of the same browser as ``client``: a new test client with its session cookie."""
    other = app.test_client()
    other.set_cookie("sen_portal", client.get_cookie("sen_portal").value)
    return other


def make_invoice(db, owed: int, facility: str = "org-a", *, status: str = "issued",
                 iid: str | None = None) -> tuple[str, str]:
    """An Invoice for one charge of ``owed`` đồng (no BHYT: owed as given), made by the invoices
    half (draft, then issue: the reference record, the lifecycle chain), left ``status``
    (``draft``, ``issued`` or ``cancelled``); answers (id, reference code)."""
    iid = iid or "inv-" + uuid.uuid4().hex[:12]
    patient = f"Patient/p-{uuid.uuid4().hex[:6]}"
    definition = {"title": "Khám bệnh", "code": {"text": "Khám bệnh"},
                  "extension": [{"url": pricing.COVERED_EXT, "valueBoolean": False}],
                  "propertyGroup": [{"priceComponent": [{"type": "base", "amount": invoices.money(owed)}]}]}
    item = invoices.charge_item(patient=patient, facility=facility, definition=definition)
    item = Store(db, service="billing", emit_events=False).create(item, f"ci-{iid}").resource
    invoices.create_draft(db, iid, patient=patient, facility=facility, items=[item], base_salary=2_340_000)
    if status != "draft":
        invoices.issue(db, iid)
    if status == "cancelled":
        invoices.cancel(db, iid, "nhập nhầm")
    return iid, vietqr.reference_code(iid)


def cash_on_a_new_invoice(client, db, headers: dict[str, str], amount: int):  # noqa: ANN001, ANN201
    """A new invoice of org-a owing 100.000 ₫ (:func:`make_invoice` in ``db``, the app's database), and ``amount``
    đồng of cash taken on it through billing's API (``POST /payments/cash``, transaction ``t-1``) by the cashier
    of ``headers``, their shift open: (the invoice's id, billing's 201 answer)."""
    iid, _code = make_invoice(db, 100_000, facility="org-a")
    cash = client.post("/payments/cash", json={"invoice": iid, "amount": amount, "transactionId": "t-1"},
                       headers=headers)
    assert cash.status_code == 201, cash.text
    return iid, cash


def hand_invoice(client, headers: dict[str, str], patient: str, services: list[str], **body) -> tuple[str, list[str]]:
    """A cashier's invoice by hand through billing's API: a ChargeItem per price-list code in
    ``services``, then the draft Invoice of them (``body``: more of its fields); (invoice id, charge ids)."""
    items = []
    for code in services:
        r = client.post("/fhir/ChargeItem", headers=headers, json={
            "resourceType": "ChargeItem", "status": "billable", "code": {"text": code},
            "subject": {"reference": patient}, "definitionCanonical": [f"ChargeItemDefinition/{code}"]})
        assert r.status_code == 201, r.text
        items.append(r.json()["id"])
    r = client.post("/fhir/Invoice", headers=headers, json={
        "resourceType": "Invoice", "status": "draft", "subject": {"reference": patient},
        "lineItem": [{"chargeItemReference": {"reference": f"ChargeItem/{i}"}} for i in items], **body})
    assert r.status_code == 201, r.text
    return r.json()["id"], items


def pay(db, code: str, amount: int) -> dict:  # noqa: ANN001 - the test database
    """A standard-webhook transfer of ``amount`` naming ``code`` in its note, recorded as billing records
    one (matched, counted, settling the invoice when it is the last đồng); the payment's document."""
    transfer = Transfer(provider="standard", transaction_id=uuid.uuid4().hex[:12], amount=amount,
                        description=f"TT {code}")
    return payments.record_transfer(db, transfer, inbox_id=uuid.uuid4().hex).payment


def race_last_payments(db, made, give_back, amount: int) -> None:  # noqa: ANN001 - the test database
    """For each ``(invoice id, reference code, first payment)`` of ``made``, ``give_back(invoice id, first
    payment, gate)`` and the invoice's last payment of ``amount`` (:func:`pay`) started together (each
    pair waits on its own two-party barrier, ``gate``), eight threads; any error raised in a thread."""
    def final(code: str, gate: threading.Barrier) -> None:
        gate.wait()
        pay(db, code, amount)

    with ThreadPoolExecutor(8) as pool:
        futures = []
        for iid, code, first in made:
            gate = threading.Barrier(2)
            futures += [pool.submit(give_back, iid, first, gate), pool.submit(final, code, gate)]
        for f in futures:
            f.result()


def partly_paid(db, count: int, owed: int, first: int) -> list[tuple[str, str, dict]]:  # noqa: ANN001
    """``count`` issued invoices owing ``owed``, each paid ``first`` once: ``(invoice id, reference code,
    that payment)`` each, as :func:`race_last_payments` takes them."""
    made = []
    for _ in range(count):
        iid, code = make_invoice(db, owed)
        made.append((iid, code, pay(db, code, first)))
    return made


def refunds_at_once(db, payment_id: str, amount: int, **kw) -> list[object]:
    """Twenty cashiers of org-a give back ``amount`` of one payment at the same moment (a barrier), each with
    its own reason; each one's answer: the refund made, or the SenError refusing it. ``kw`` goes to
    ``payments.refund`` (``after_settlement=True``)."""
    cashiers = [SimpleNamespace(roles={"cashier"}, facility="org-a", sub=f"thu-ngan-{n}", name=f"Thu ngân {n}")
                for n in range(20)]
    gate = threading.Barrier(20)
    answers: list[object] = []

    def give_back(n: int) -> None:
        gate.wait()
        try:
            answers.append(payments.refund(db, payment_id, amount, f"lý do {n}", cashiers[n], None, **kw))
        except SenError as err:
            answers.append(err)

    with ThreadPoolExecutor(20) as pool:
        for f in [pool.submit(give_back, n) for n in range(20)]:
            f.result()
    return answers


def cashier_headers(dev_key, **claims: str) -> dict[str, str]:  # noqa: ANN001
    """Headers of a cashier of org-a (a new ``sub`` each call, ``claims`` added) calling billing's JSON API."""
    tok = issue_dev_token(dev_key, "cashier", sub=f"cashier-{uuid.uuid4().hex[:6]}", facility="org-a", **claims)
    return {"Authorization": f"Bearer {tok}", "Content-Type": "application/json", "Accept": "application/json"}


def delivered(event: dict, db, tries: int = 100) -> None:  # noqa: ANN001 - the test database
    """Billing's consult-charge consumer on one delivery of ``event`` until it acks, as the bus redelivers a
    message its consumer did not ack: a delivery racing another (its draft claimed but not written yet) is
    a 409 "try again", whose message the broker delivers again. Bounded: the other writer finishes in
    milliseconds; a run of 100 refusals 50 ms apart raises the last."""
    import time

    from sen_billing.worker import consult_charge

    for attempt in range(tries):
        try:
            consult_charge(event, db)
            return
        except Exception:  # noqa: BLE001 - what the bus's retry tiers take back
            if attempt == tries - 1:
                raise
            time.sleep(0.05)


def in_the_claim_window(monkeypatch, db, iid: str, version: int, first: Callable[[], Any],  # noqa: ANN001
                        **jobs: Callable[[], Any]) -> tuple[Any, dict[str, Any]]:
    """Runs ``first`` with ``jobs`` forced into its window: once it has claimed version ``version`` of
    Invoice ``iid``, its current document not written yet (the store's ``after_claim``), each job runs
    there, in order. Returns what ``first`` answered and what the window saw: ``current``, the status
    of the current document then (None: there was none), and each job's answer, or what it raised, by
    its name. A race under load, made certain."""
    store = Store(db, service="billing", emit_events=False)
    inside: dict[str, Any] = {}

    def paused(w) -> None:  # noqa: ANN001 - the store's Write
        if (w.resource_type, w.rid, w.version) != ("Invoice", iid, version) or inside:
            return
        try:
            inside["current"] = store.read_doc("Invoice", iid)["res"]["status"]
        except FhirError:
            inside["current"] = None
        for name, job in jobs.items():
            try:
                inside[name] = job()
            except Exception as err:  # noqa: BLE001 - the caller asserts it
                inside[name] = err

    monkeypatch.setattr(fhir_store, "after_claim", paused)
    try:
        answer = first()
    finally:
        monkeypatch.setattr(fhir_store, "after_claim", None)
    assert "current" in inside, f"the window never opened: Invoice/{iid} version {version} was not claimed"
    return answer, inside
