"""Payment webhooks, matching, settlement, cashier operations: billing over gunicorn on FerretDB + RabbitMQ.

Each provider's own published sample goes through the real inbox; the same webhook sent 20
times at once makes one payment; 20 different payments for one invoice at once all count and
make one receipt and one ``billing.invoice.paid``; bad signatures, old timestamps and wrong
amounts leave the invoice as it was.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from sen_billing.domain import invoice_port, vietqr, webhooks
from sen_shared.auth import issue_dev_token
from sen_shared.bus.catalog import load_catalog
from sen_shared.fhir.store import Store

from tests.billing_support import make_invoice
from tests.support import vn_day_with_room, web_process

pytestmark = pytest.mark.integration

PAYOS_KEY = "1a54716c8f0efb2744fb28b6e38b25da7f67a925d98bc1c18bd8faaecadd7675"  # payOS's published sample key
CASSO_KEY = "mgExMrjj4i7a1p8Cs6LmFbpCd8lbw4sSX4LZXPag7TKazeIogtR90tvWYTkwQbvs"  # Casso's published sample key
SEPAY_KEY = "sepay-test-key-" + uuid.uuid4().hex[:8]
STD_SECRET = "whsec_" + base64.b64encode(b"sen-test-standard-webhooks-secret").decode()
ACCOUNT_A, ACCOUNT_B, ACCOUNT_NOBODY = "0011000000001", "0011000000002", "0099000000009"  # receiving accounts
ACCOUNTS = {ACCOUNT_A: "org-a", ACCOUNT_B: "org-b"}  # SEN_BANK_ACCOUNT_FACILITIES: whose queue a transfer joins
NAMES = {"org-a": "Trạm Y tế xã Mỹ Hiệp"}  # SEN_FACILITY_NAMES: the name a receipt prints (org-b: none)
# the module's requests sent one at a time go through one client (httpx.post's defaults; each call gives its timeout),
# where each httpx.post built a client of its own (its TLS context, ~26 ms of CPU) and a new connection; the senders
# (send_standard, send_sepay, send_casso: also sent from threads, at once) and the shift closes sent at once keep theirs
HTTP = httpx.Client()


@pytest.fixture(scope="module")
def billing(base_env: dict[str, str], mongo_client, tmp_path_factory: pytest.TempPathFactory):
    db_name = f"sen_billing_t{uuid.uuid4().hex[:6]}"
    env = {**base_env, "SEN_DB": db_name, "SEN_PAYOS_CHECKSUM_KEY": PAYOS_KEY, "SEN_CASSO_CHECKSUM_KEY": CASSO_KEY,
           "SEN_SEPAY_API_KEY": SEPAY_KEY, "SEN_WEBHOOK_SECRET": STD_SECRET, "SEN_WEBHOOK_MAX_BYTES": "20000",
           "SEN_BANK_ACCOUNT_FACILITIES": json.dumps(ACCOUNTS), "SEN_FACILITY_NAMES": json.dumps(NAMES)}
    from sen_billing.indexes import INDEXES
    from sen_shared import mongo

    mongo.ensure_indexes(mongo_client[db_name], INDEXES)
    log = tmp_path_factory.mktemp("billing") / "web.log"
    with web_process("billing", env, log, WEB_CONCURRENCY="2") as url:
        yield url, mongo_client[db_name]
    mongo_client.drop_database(db_name)


def cashier(dev_key: Path, facility: str = "org-a", sub: str | None = None) -> dict[str, str]:
    token = issue_dev_token(dev_key, "cashier", facility=facility, sub=sub or f"cashier-{uuid.uuid4().hex[:6]}")
    return {"Authorization": f"Bearer {token}"}



def invoice_status(db, iid: str) -> str:
    return Store(db, service="billing").read_doc("Invoice", iid)["res"]["status"]


# ------------------------------------------------------------------------------- senders

def send_standard(url: str, txid: str, amount: int, note: str, *, ts: int | None = None,
                  secret: str = STD_SECRET, account: str = ACCOUNT_A) -> httpx.Response:
    body = json.dumps({"type": "transfer.received", "data": {"id": txid, "amount": amount, "description": note,
                                                             "account": account}},
                      ensure_ascii=False).encode()
    ts_s = str(ts if ts is not None else int(time.time()))
    msg = "msg_" + txid
    headers = {"webhook-id": msg, "webhook-timestamp": ts_s, "content-type": "application/json",
               "webhook-signature": webhooks.standard_signature(msg, ts_s, body, secret)}
    return httpx.post(f"{url}/webhooks/standard", content=body, headers=headers, timeout=30)


def send_sepay(url: str, txid: int, amount: int, note: str, key: str = SEPAY_KEY) -> httpx.Response:
    body = {"id": txid, "gateway": "Vietcombank", "transactionDate": "2025-03-14 10:02:37",
            "accountNumber": "0123499999", "code": None, "content": note, "transferType": "in",
            "transferAmount": amount, "accumulated": 19077000, "subAccount": None,
            "referenceCode": f"MBVCB.{txid}", "description": ""}
    return httpx.post(f"{url}/webhooks/sepay", json=body, headers={"Authorization": f"Apikey {key}"}, timeout=30)


def send_casso(url: str, body: dict, *, t_ms: int | None = None, key: str = CASSO_KEY) -> httpx.Response:
    t = str(t_ms if t_ms is not None else int(time.time() * 1000))
    sig = webhooks.casso_signature(t, body, key)
    return httpx.post(f"{url}/webhooks/casso", content=json.dumps(body, ensure_ascii=False).encode(),
                      headers={"X-Casso-Signature": f"t={t},v1={sig}", "content-type": "application/json"},
                      timeout=30)


# ------------------------------------------------------------------------------- provider samples

def test_payos_published_sample_goes_through_the_inbox(billing) -> None:
    url, db = billing
    # https://payos.vn/docs/tich-hop-webhook/kiem-tra-du-lieu-voi-signature/ (the published sample, as sent)
    sample = {"code": "00", "desc": "success", "success": True, "data": {
        "orderCode": 123, "amount": 3000, "description": "VQRIO123", "accountNumber": "12345678",
        "reference": "TF230204212323", "transactionDateTime": "2023-02-04 18:25:00", "currency": "VND",
        "paymentLinkId": "124c33293c43417ab7879e14c8d9eb18", "code": "00", "desc": "Thành công",
        "counterAccountBankId": "", "counterAccountBankName": "", "counterAccountName": "",
        "counterAccountNumber": "", "virtualAccountName": "", "virtualAccountNumber": ""},
        "signature": "412e915d2871504ed31be63c8f62a149a4410d34c4c42affc9006ef9917eaa03"}
    r = HTTP.post(f"{url}/webhooks/payos", json=sample, timeout=30)
    assert r.status_code == 200, r.text
    assert r.json()["success"] is True
    payment = db["payments"].find_one({"_id": "payos:TF230204212323"})
    assert payment["outcome"] == "unmatched"
    [event] = [json.loads(e["event"]) for e in payment["outbox"]]
    load_catalog().validate(event)
    assert event["data"]["matched"] is False and "invoice" not in event["data"]
    inbox = db["webhook_inbox"].find_one({"provider": "payos"})
    assert json.loads(inbox["body"]) == sample  # the raw body as it came


def test_casso_published_sample_signature_and_sepay_sample(billing) -> None:
    url, db = billing
    # Casso's sample (https://developer.casso.vn/webhook/xu-ly-su-kien-webhook) carries a 2024 timestamp:
    # through the inbox it must be refused as stale (and recorded), never applied
    sample = {"error": 0, "data": {
        "id": 0, "reference": "MA_GIAO_DICH_THU_NGHIEM", "description": "giao dich thu nghiem", "amount": 599000,
        "runningBalance": 25000000, "transactionDateTime": "2024-10-03 15:06:37", "accountNumber": "88888888",
        "bankName": "VPBank", "bankAbbreviation": "VPB", "virtualAccountNumber": "", "virtualAccountName": "",
        "counterAccountName": "NGUYEN VAN A", "counterAccountNumber": "8888888888",
        "counterAccountBankId": "970415", "counterAccountBankName": "VietinBank"}}
    header = ("t=1727948258788,v1=ed0a4bd2e826d5cb69988cdb141e6c1a080e21f3b57eb72cd78192220042b9e7dde0868fc66"
              "7faea8e224900fa7904e7c88dfa098032fb2d6b6996856e8b7ff3")
    r = HTTP.post(f"{url}/webhooks/casso", json=sample, headers={"X-Casso-Signature": header}, timeout=30)
    assert r.status_code == 401 and r.json()["reason"] == "stale"
    assert r.headers["content-type"].startswith("application/problem+json")
    assert db["webhook_outcomes"].find_one({"_id": r.json()["inbox"]})["reason"] == "stale"
    assert db["payments"].find_one({"_id": "casso:0"}) is None
    # the same sample signed now verifies and is recorded
    r = send_casso(url, sample)
    assert r.status_code == 200 and r.json() == {"success": True, "payments": ["casso:0"], "duplicates": 0}
    # SePay's published sample payload (https://developer.sepay.vn/en/sepay-webhooks) with our key
    r = HTTP.post(f"{url}/webhooks/sepay", json={
        "id": 92704, "gateway": "Vietcombank", "transactionDate": "2023-03-25 14:02:37",
        "accountNumber": "0123499999", "code": None, "content": "chuyen tien mua iphone", "transferType": "in",
        "transferAmount": 2277000, "accumulated": 19077000, "subAccount": None,
        "referenceCode": "MBVCB.3278907687", "description": ""}, headers={"Authorization": f"Apikey {SEPAY_KEY}"},
        timeout=30)
    assert r.status_code == 200 and r.json()["success"] is True
    assert db["payments"].find_one({"_id": "sepay:92704"})["amount"] == 2277000


# ------------------------------------------------------------------------------- rejections

def test_bad_signature_old_timestamp_wrong_key_leave_the_invoice_unchanged(billing) -> None:
    url, db = billing
    iid, code = make_invoice(db, 150000)
    tx = uuid.uuid4().hex[:10]
    bad_secret = "whsec_" + base64.b64encode(b"not the secret").decode()
    answers = [send_standard(url, tx, 150000, f"thanh toan {code}", secret=bad_secret),
               send_standard(url, tx, 150000, f"thanh toan {code}", ts=int(time.time()) - 301),
               send_standard(url, tx, 150000, f"thanh toan {code}", ts=int(time.time()) + 400),
               send_sepay(url, 555000 + int(tx[:4], 16), 150000, code, key="wrong"),
               HTTP.post(f"{url}/webhooks/sepay", json={"id": 1}, timeout=30)]
    assert [a.status_code for a in answers] == [401, 401, 401, 401, 401]
    assert [a.json()["reason"] for a in answers] == ["bad_signature", "stale", "stale", "bad_signature",
                                                     "missing_signature"]
    for a in answers:  # each recorded, none applied
        assert db["webhook_outcomes"].find_one({"_id": a.json()["inbox"]})["status"] == "rejected"
        assert db["webhook_inbox"].find_one({"_id": a.json()["inbox"]}) is not None
    assert db["payments"].count_documents({"invoice": iid}) == 0
    assert invoice_status(db, iid) == "issued"
    # a body over the limit, an unknown provider, a verified body that is not JSON
    # (a connection of its own: the server answers before reading the whole body and may close the connection)
    assert httpx.post(f"{url}/webhooks/sepay", content=b"x" * 30000, timeout=30).status_code == 413
    assert HTTP.post(f"{url}/webhooks/momo", json={}, timeout=30).status_code == 404
    r = HTTP.post(f"{url}/webhooks/sepay", content=b"{not json", headers={"Authorization": f"Apikey {SEPAY_KEY}"},
                   timeout=30)
    assert r.status_code == 400 and r.json()["reason"] == "malformed"
    # a body with NUL bytes (PostgreSQL under FerretDB cannot store one): rejected and recorded, not a 500
    for body in (b'{"id": 1\x00}', b"\x00\x00"):
        r = HTTP.post(f"{url}/webhooks/sepay", content=body, headers={"Authorization": f"Apikey {SEPAY_KEY}"},
                       timeout=30)
        assert r.status_code == 400 and r.json()["reason"] == "malformed", r.text
        stored = db["webhook_inbox"].find_one({"_id": r.json()["inbox"]})
        assert stored["size"] == len(body) and "\x00" not in stored["body"] and "\ufffd" in stored["body"]
    r = HTTP.post(f"{url}/webhooks/sepay", content=b"\x00", timeout=30)  # and unsigned: 401, recorded
    assert r.status_code == 401 and db["webhook_inbox"].find_one({"_id": r.json()["inbox"]}) is not None


def test_a_lone_surrogate_a_huge_amount_or_a_deep_body_is_recorded_never_a_500(billing) -> None:
    """A signed call whose transaction id holds a lone surrogate ("\\ud800", no UTF-8 text: BSON cannot
    encode it), whose amount is past any transfer (2**64 fits no BSON integer) or whose body is nested
    past the recursion limit: 400, recorded, not applied (each was a 500, and the id's call was lost). A
    lone surrogate in the note: the transfer counts, the note keeps U+FFFD (hand probes beside tools/fuzz)."""
    url, db = billing
    iid, code = make_invoice(db, 150000)
    sepay = {"gateway": "Vietcombank", "transactionDate": "2025-03-14 10:02:37", "accountNumber": "0123499999",
             "transferType": "in", "referenceCode": "MBVCB.1", "description": ""}
    key = {"Authorization": f"Apikey {SEPAY_KEY}", "Content-Type": "application/json"}
    bodies = [json.dumps({**sepay, "id": "7\ud800", "content": code, "transferAmount": 150000}).encode(),
              json.dumps({**sepay, "id": 7001, "content": code, "transferAmount": 2**64}).encode(),
              b"[" * 5000 + b"]" * 5000]
    for body in bodies:
        r = HTTP.post(f"{url}/webhooks/sepay", content=body, headers=key, timeout=30)
        assert r.status_code == 400 and r.json()["reason"] == "malformed", r.text
        assert db["webhook_inbox"].find_one({"_id": r.json()["inbox"]})["size"] == len(body)
        assert db["webhook_outcomes"].find_one({"_id": r.json()["inbox"]})["status"] == "rejected"
    assert db["payments"].count_documents({"invoice": iid}) == 0
    tx = 700000 + int(uuid.uuid4().hex[:4], 16)
    body = json.dumps({**sepay, "id": tx, "content": f"{code} \udc00", "transferAmount": 150000}).encode()
    r = HTTP.post(f"{url}/webhooks/sepay", content=body, headers=key, timeout=30)
    assert r.status_code == 200, r.text
    assert db["payments"].find_one({"_id": f"sepay:{tx}"})["invoice"] == iid
    assert invoice_status(db, iid) == "balanced"


@pytest.mark.parametrize("amount", [-150000, 1500.5, "150.000", None, True])
def test_a_signed_call_with_an_amount_that_is_not_whole_dong_is_rejected_and_recorded(billing, amount) -> None:
    url, db = billing
    iid, code = make_invoice(db, 150000)
    r = send_standard(url, uuid.uuid4().hex[:10], amount, f"thanh toan {code}")  # type: ignore[arg-type]
    assert r.status_code == 400 and r.json()["reason"] == "malformed"
    assert db["webhook_outcomes"].find_one({"_id": r.json()["inbox"]})["status"] == "rejected"
    assert db["webhook_inbox"].find_one({"_id": r.json()["inbox"]}) is not None
    assert db["payments"].count_documents({"invoice": iid}) == 0
    assert invoice_status(db, iid) == "issued" and invoice_port.balance_due(db, iid) == 150000


def test_wrong_amount_is_flagged_partial_and_the_invoice_stays_issued(billing, dev_key: Path) -> None:
    url, db = billing
    iid, code = make_invoice(db, 200000)
    r = send_standard(url, uuid.uuid4().hex[:10], 20000, f"TT {code}")
    assert r.status_code == 200
    summary = HTTP.get(f"{url}/payments/invoices/{iid}", headers=cashier(dev_key), timeout=30).json()
    assert (summary["status"], summary["paid"], summary["balanceDue"], summary["credit"]) == ("issued", 20000,
                                                                                            180000, 0)
    assert invoice_status(db, iid) == "issued"
    assert db["invoice_balanced"].find_one({"_id": iid}) is None


# ------------------------------------------------------------------------------- concurrency

def test_the_same_webhook_20_times_at_once_makes_one_payment(billing) -> None:
    url, db = billing
    iid, code = make_invoice(db, 500000)
    tx = 900000 + int(uuid.uuid4().hex[:5], 16)
    with ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(lambda _: send_sepay(url, tx, 100000, f"{code} kham benh"), range(20)))
    assert {a.status_code for a in answers} == {200}
    assert db["payments"].count_documents({"_id": f"sepay:{tx}"}) == 1
    assert db["payments"].count_documents({"invoice": iid}) == 1
    assert sum(a.json()["duplicates"] for a in answers) == 19
    assert invoice_port.balance_due(db, iid) == 400000


def test_20_different_payments_at_once_all_count_one_receipt_one_event(billing, dev_key: Path) -> None:
    url, db = billing
    iid, code = make_invoice(db, 20 * 7500)
    with ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(lambda i: send_standard(url, f"{iid}-{i}", 7500, f"chuyen khoan {code}"),
                                range(20)))
    assert {a.status_code for a in answers} == {200}
    assert invoice_port.paid_total(db, iid) == 150000  # the balance is their sum
    assert db["invoice_balanced"].count_documents({"_id": iid}) == 1
    receipt = db["receipts"].find_one({"_id": iid})
    assert receipt["paid"] == 150000 and receipt["number"].startswith("ORG-A-")
    assert db["receipts"].count_documents({"invoice": iid}) == 1
    # each event as the relay will publish it, checked against its schema (publishers skip it at runtime)
    catalog = load_catalog()
    [paid_event] = [json.loads(e["event"]) for e in receipt["outbox"]]
    catalog.validate(paid_event)
    assert paid_event["data"]["amount"] == 150000 and paid_event["data"]["channel"] == "transfer"
    for p in db["payments"].find({"invoice": iid}):
        [event] = [json.loads(e["event"]) for e in p["outbox"]]
        catalog.validate(event)
        assert event["data"]["matched"] is True and event["data"]["invoice"] == f"Invoice/{iid}"
    assert db["receipt_numbers"].count_documents({"invoice": iid}) == 1
    assert invoice_status(db, iid) == "balanced"
    pr = Store(db, service="billing").read_doc("PaymentReconciliation", f"pr-{iid}")["res"]
    assert pr["paymentAmount"] == {"value": 150000, "currency": "VND"} and len(pr["detail"]) == 20
    from sen_shared.fhir.validate import validate_resource

    validate_resource(pr)  # a valid R4 PaymentReconciliation (the settlement writes it past the HTTP checks)
    # the receipt, printable
    h = cashier(dev_key)
    page = HTTP.get(f"{url}/payments/receipts/{iid}/html", headers=h, timeout=30)
    assert page.status_code == 200 and "150.000\u00a0₫" in page.text and receipt["number"] in page.text
    assert "Cơ sở: Trạm Y tế xã Mỹ Hiệp" in page.text and "Cơ sở: org-a" not in page.text  # its name, not id
    pdf = HTTP.get(f"{url}/payments/receipts/{iid}/pdf", headers=h, timeout=60)
    assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF")
    # another facility's cashier sees nothing of it: as if it had no receipt
    assert HTTP.get(f"{url}/payments/receipts/{iid}", headers=cashier(dev_key, "org-b"),
                     timeout=30).status_code == 404


def test_receipt_numbers_follow_each_other_per_facility(billing) -> None:
    url, db = billing
    facility = "org-" + uuid.uuid4().hex[:5]
    invoices = [make_invoice(db, 10000, facility=facility) for _ in range(5)]
    with ThreadPoolExecutor(5) as pool:
        list(pool.map(lambda ic: send_standard(url, f"n-{ic[0]}", 10000, ic[1]), invoices))
    numbers = sorted(db["receipts"].find_one({"_id": iid})["number"] for iid, _ in invoices)
    assert [int(n.rsplit("-", 1)[1]) for n in numbers] == [1, 2, 3, 4, 5]


def test_a_receipt_of_a_facility_without_a_configured_name_prints_its_id(billing, dev_key: Path) -> None:
    url, db = billing
    iid, code = make_invoice(db, 20000, facility="org-b")
    assert send_standard(url, f"nm-{iid}", 20000, code, account=ACCOUNT_B).status_code == 200
    assert db["receipts"].find_one({"_id": iid}) is not None
    page = HTTP.get(f"{url}/payments/receipts/{iid}/html", headers=cashier(dev_key, "org-b"), timeout=30)
    assert page.status_code == 200 and "Cơ sở: org-b" in page.text and "Mỹ Hiệp" not in page.text


# ------------------------------------------------------------------------------- partial, over, late, unmatched

def test_partial_then_over_payment_leaves_a_credit_a_cashier_refunds(billing, dev_key: Path) -> None:
    url, db = billing
    iid, code = make_invoice(db, 100000)
    # the note as a bank mangles it: lower case, spaces, punctuation, diacritics
    mangled = "Thanh toán " + " ".join(code.lower()[i:i + 3] for i in range(0, len(code), 3)) + "."
    assert send_standard(url, uuid.uuid4().hex[:8], 60000, mangled).status_code == 200
    assert invoice_status(db, iid) == "issued"
    tx = uuid.uuid4().hex[:8]
    assert send_standard(url, tx, 70000, f"{code}").status_code == 200
    h = cashier(dev_key)
    summary = HTTP.get(f"{url}/payments/invoices/{iid}", headers=h, timeout=30).json()
    assert (summary["status"], summary["paid"], summary["balanceDue"], summary["credit"]) == ("balanced", 130000,
                                                                                            0, 30000)
    assert invoice_status(db, iid) == "balanced"
    # refund the credit (cash, in a shift), with a reason; more than the credit is refused
    assert HTTP.post(f"{url}/payments/shifts", json={"openingCash": 0}, headers=h, timeout=30).status_code == 201
    too_much = HTTP.post(f"{url}/payments/standard:{tx}/refund", json={"reason": "trả thừa", "amount": 40000},
                          headers=h, timeout=30)
    assert too_much.status_code == 422
    no_reason = HTTP.post(f"{url}/payments/standard:{tx}/refund", json={"reason": ""}, headers=h, timeout=30)
    assert no_reason.status_code == 400  # the spec requires a reason of at least one character
    r = HTTP.post(f"{url}/payments/standard:{tx}/refund", json={"reason": "trả lại tiền thừa"}, headers=h,
                   timeout=30)
    assert r.status_code == 201 and r.json()["amount"] == 30000
    again = HTTP.post(f"{url}/payments/standard:{tx}/refund", json={"reason": "lần nữa"}, headers=h, timeout=30)
    assert again.status_code in (409, 422)
    summary = HTTP.get(f"{url}/payments/invoices/{iid}", headers=h, timeout=30).json()
    assert (summary["credit"], summary["refunded"]) == (0, 30000)
    closed = HTTP.post(f"{url}/payments/shifts/current/close", json={"countedCash": 0, "countedTransfers": 0,
                                                                     "note": "tiền thừa trả từ ví"},
                        headers=h, timeout=30).json()
    assert closed["expected"]["cash"] == -30000 and closed["expected"]["cashRefunded"] == 30000


def test_late_payments_become_refund_tasks(billing, dev_key: Path) -> None:
    url, db = billing
    cancelled, c_code = make_invoice(db, 50000, status="cancelled")
    paid, p_code = make_invoice(db, 50000)
    assert send_standard(url, uuid.uuid4().hex[:8], 50000, p_code).status_code == 200
    assert invoice_status(db, paid) == "balanced"
    late_tx = uuid.uuid4().hex[:8]
    for tx, code in ((uuid.uuid4().hex[:8], c_code), (late_tx, p_code)):
        assert send_standard(url, tx, 50000, code).status_code == 200
    assert invoice_status(db, cancelled) == "cancelled"
    h = cashier(dev_key)
    s_cancelled = HTTP.get(f"{url}/payments/invoices/{cancelled}", headers=h, timeout=30).json()
    assert s_cancelled["paid"] == 0 and s_cancelled["refundTasks"][0]["reason"] == "invoice-cancelled"
    s_paid = HTTP.get(f"{url}/payments/invoices/{paid}", headers=h, timeout=30).json()
    assert s_paid["paid"] == 50000 and s_paid["refundTasks"][0]["reason"] == "invoice-balanced"
    assert db["receipts"].count_documents({"invoice": paid}) == 1  # no second receipt
    r = HTTP.post(f"{url}/payments/standard:{late_tx}/refund", json={"reason": "chuyển trùng", "method": "transfer"},
                   headers=h, timeout=30)
    assert r.status_code == 201 and r.json()["amount"] == 50000


def test_unmatched_transfer_waits_then_a_cashier_assigns_it(billing, dev_key: Path) -> None:
    url, db = billing
    tx = uuid.uuid4().hex[:8]
    assert send_standard(url, tx, 80000, "chuyen tien kham benh cho me").status_code == 200
    h = cashier(dev_key)
    queue = HTTP.get(f"{url}/payments/unmatched", headers=h, timeout=30).json()["payments"]
    assert f"standard:{tx}" in [p["id"] for p in queue]
    iid, _ = make_invoice(db, 80000)
    other, _ = make_invoice(db, 80000, facility="org-b")
    assert HTTP.post(f"{url}/payments/unmatched/standard:{tx}/assign", json={"invoice": other}, headers=h,
                      timeout=30).status_code == 404  # another facility's invoice: as one not held
    r = HTTP.post(f"{url}/payments/unmatched/standard:{tx}/assign", json={"invoice": iid}, headers=h, timeout=30)
    assert r.status_code == 201, r.text
    assert r.json()["reference"] == vietqr.reference_code(iid)  # the portal names the invoice by it
    assert HTTP.post(f"{url}/payments/unmatched/standard:{tx}/assign", json={"invoice": iid}, headers=h,
                      timeout=30).status_code == 409
    assert invoice_status(db, iid) == "balanced"
    queue = HTTP.get(f"{url}/payments/unmatched", headers=h, timeout=30).json()["payments"]
    assert f"standard:{tx}" not in [p["id"] for p in queue]


def test_a_cashier_sees_and_assigns_only_their_facilitys_unmatched_transfers(billing, dev_key: Path) -> None:
    """Issue 15: the queue is facility-scoped by the receiving account. A's cashier does not see B's
    transfer and gets 404 (problem details, as a payment not held) assigning it; B's cashier can; a
    transfer to an account no facility owns is in no cashier's queue, only the admins'."""
    url, db = billing
    tag = uuid.uuid4().hex[:6]
    to_a, to_b, to_nobody = (f"{tag}{n}" for n in "abn")
    assert send_standard(url, to_a, 5000, f"gui tien {tag} a", account=ACCOUNT_A).status_code == 200
    assert send_standard(url, to_b, 6000, f"gui tien {tag} b", account="0011 0000 00002").status_code == 200
    assert send_standard(url, to_nobody, 7000, f"gui tien {tag} n", account=ACCOUNT_NOBODY).status_code == 200
    assert db["unmatched_waiting"].find_one({"_id": f"standard:{to_b}"})["facility"] == "org-b"

    def queue(headers: dict[str, str]) -> list[dict]:
        rows, after = [], None
        while True:
            page = HTTP.get(f"{url}/payments/unmatched", params={"limit": 200, **({"after": after} if after else {})},
                             headers=headers, timeout=30).json()
            rows += page["payments"]
            if not (after := page.get("next")):
                return [p for p in rows if tag in p["description"]]

    a, b = cashier(dev_key, "org-a"), cashier(dev_key, "org-b")
    admin = {"Authorization": f"Bearer {issue_dev_token(dev_key, 'admin', sub='admin-' + tag)}"}
    assert [p["id"] for p in queue(a)] == [f"standard:{to_a}"]
    assert [p["id"] for p in queue(b)] == [f"standard:{to_b}"]
    assert {p["id"] for p in queue(admin)} == {f"standard:{to_a}", f"standard:{to_b}", f"standard:{to_nobody}"}

    iid_a, _ = make_invoice(db, 6000, facility="org-a")
    r = HTTP.post(f"{url}/payments/unmatched/standard:{to_b}/assign", json={"invoice": iid_a}, headers=a, timeout=30)
    assert r.status_code == 404 and r.headers["content-type"].startswith("application/problem+json"), r.text
    assert r.json()["status"] == 404 and r.json()["detail"] == f"no payment standard:{to_b}"
    r = HTTP.post(f"{url}/payments/unmatched/standard:{to_nobody}/assign", json={"invoice": iid_a}, headers=a,
                   timeout=30)
    assert r.status_code == 404, r.text  # the admins' queue: not a cashier's
    assert db["payments"].find_one({"_id": f"assign:standard:{to_b}"}) is None
    iid_b, _ = make_invoice(db, 6000, facility="org-b")
    r = HTTP.post(f"{url}/payments/unmatched/standard:{to_b}/assign", json={"invoice": iid_b}, headers=b, timeout=30)
    assert r.status_code == 201, r.text
    assert queue(b) == [] and [p["id"] for p in queue(a)] == [f"standard:{to_a}"]


def test_an_assignment_sent_again_with_its_key_is_answered_again_not_refused(billing, dev_key: Path) -> None:
    """A cashier's page puts a transfer on an invoice and the answer is lost on a flaky link: sent again with its
    ``Idempotency-Key`` the first answer is replayed (201, the same payment), where a new assignment of it is
    refused (409, no longer in the queue); the transfer is counted once."""
    url, db = billing
    tag = uuid.uuid4().hex[:6]
    assert send_standard(url, tag, 6000, f"gui tien {tag}", account=ACCOUNT_A).status_code == 200
    h = cashier(dev_key, "org-a")
    iid, _ = make_invoice(db, 6000, facility="org-a")
    keyed = {**h, "Idempotency-Key": "portal-assign-" + uuid.uuid4().hex}
    path = f"{url}/payments/unmatched/standard:{tag}/assign"
    first = HTTP.post(path, json={"invoice": iid}, headers=keyed, timeout=30)
    again = HTTP.post(path, json={"invoice": iid}, headers=keyed, timeout=30)
    assert (first.status_code, again.status_code) == (201, 201) and first.json() == again.json(), again.text
    assert HTTP.post(path, json={"invoice": iid}, headers=h, timeout=30).status_code == 409
    assert db["payments"].count_documents({"assigned_from": f"standard:{tag}"}) == 1
    assert invoice_status(db, iid) == "balanced"


def test_hd_before_the_code_still_matches_for_many_random_codes(billing) -> None:
    """A payer writes ``HD <code>`` (the code starts with HD itself): the note folds to ``HDHD…``,
    and for about 1 code in 30 the window at the first HD has a right check symbol too. Random
    invoice ids are drawn until 4 such codes are among them, with 12 ordinary ones: every
    transfer finds its own invoice (a parser taking the first valid window left those 4 unmatched)."""
    url, db = billing
    tricky: list[str] = []
    plain: list[str] = []
    while len(tricky) < 4 or len(plain) < 12:
        iid = "inv-" + uuid.uuid4().hex[:12]
        candidates = vietqr.reference_candidates("HD " + vietqr.reference_code(iid))
        if candidates[0] != vietqr.reference_code(iid):
            tricky.append(iid)
        elif len(plain) < 12:
            plain.append(iid)
    for iid in tricky + plain:
        _, code = make_invoice(db, 90000, iid=iid)
        tx = uuid.uuid4().hex[:10]
        assert send_standard(url, tx, 30000, f"HD {code}").status_code == 200
        payment = db["payments"].find_one({"_id": f"standard:{tx}"})
        assert (payment["invoice"], payment["outcome"]) == (iid, "applied"), (iid, code)


# ------------------------------------------------------------------------------- cashier

def test_cash_in_a_shift_close_with_expected_vs_counted_and_the_daily_csv(billing, dev_key: Path) -> None:
    url, db = billing
    facility = "org-" + uuid.uuid4().hex[:5]
    h = cashier(dev_key, facility)
    iid, code = make_invoice(db, 120000, facility=facility)
    assert HTTP.post(f"{url}/payments/cash", json={"invoice": iid, "amount": 20000}, headers=h,
                      timeout=30).status_code == 409  # no shift open
    assert HTTP.post(f"{url}/payments/shifts", json={"openingCash": 500000}, headers=h, timeout=30).status_code == 201
    assert HTTP.post(f"{url}/payments/shifts", json={}, headers=h, timeout=30).status_code == 409
    r = HTTP.post(f"{url}/payments/cash", json={"invoice": iid, "amount": 20000, "transactionId": "c1"}, headers=h,
                   timeout=30)
    assert r.status_code == 201
    assert HTTP.post(f"{url}/payments/cash", json={"invoice": iid, "amount": 20000, "transactionId": "c1"},
                      headers=h, timeout=30).status_code == 200  # the same desk entry again
    assert send_standard(url, uuid.uuid4().hex[:8], 100000, code).status_code == 200
    other = cashier(dev_key, "org-elsewhere")  # another facility's cashier, in a shift of their own
    assert HTTP.post(f"{url}/payments/shifts", json={}, headers=other, timeout=30).status_code == 201
    assert HTTP.post(f"{url}/payments/cash", json={"invoice": iid, "amount": 1}, headers=other,
                      timeout=30).status_code == 404  # as an invoice not held
    assert HTTP.get(f"{url}/payments/invoices/{iid}", headers=other, timeout=30).status_code == 404
    current = HTTP.get(f"{url}/payments/shifts/current", headers=h, timeout=30).json()
    assert current["expected"]["cash"] == 520000 and current["expected"]["transfers"] == 100000
    closed = HTTP.post(f"{url}/payments/shifts/current/close",
                        json={"countedCash": 510000, "countedTransfers": 100000, "note": "thiếu 10.000"},
                        headers=h, timeout=30).json()
    assert closed["state"] == "closed" and closed["difference"] == {"cash": -10000, "transfers": 0}
    csv_answer = HTTP.get(f"{url}/payments/reports/daily.csv", headers=h, timeout=30)
    assert csv_answer.status_code == 200 and csv_answer.headers["content-type"].startswith("text/csv")
    lines = csv_answer.text.splitlines()
    assert lines[0].startswith("kind,time,id")
    assert any(",cash," in line and "20000" in line for line in lines)
    assert "total" in lines[-1]
    assert HTTP.get(f"{url}/payments/reports/daily.csv?day=nope", headers=h, timeout=30).status_code == 400


def test_a_double_click_on_cash_or_refund_records_one_and_answers_both(billing, dev_key: Path) -> None:
    """The cashier's pages send each form's key twice on a double click: the cash that settled the
    invoice is answered again (200, the same payment), not refused as paid; a refund sent again with
    its ``Idempotency-Key`` replays the first answer (201) where a new refund of the payment is refused."""
    url, db = billing
    facility = "org-" + uuid.uuid4().hex[:5]
    h = cashier(dev_key, facility)
    iid, _code = make_invoice(db, 50000, facility=facility)
    assert HTTP.post(f"{url}/payments/shifts", json={"openingCash": 0}, headers=h, timeout=30).status_code == 201
    cash = {"invoice": iid, "amount": 80000, "transactionId": "dbl-" + uuid.uuid4().hex[:8]}
    first = HTTP.post(f"{url}/payments/cash", json=cash, headers=h, timeout=30)
    assert first.status_code == 201, first.text
    assert invoice_status(db, iid) == "balanced"
    second = HTTP.post(f"{url}/payments/cash", json=cash, headers=h, timeout=30)
    assert second.status_code == 200 and second.json()["id"] == first.json()["id"], second.text
    other = HTTP.post(f"{url}/payments/cash", json={**cash, "amount": 1000}, headers=h, timeout=30)
    assert other.status_code == 422 and "transactionId" in other.json()["detail"]
    assert db["payments"].count_documents({"invoice": iid, "channel": "cash"}) == 1
    # the 30.000 handed over too much, given back once
    pay = first.json()["id"]
    keyed = {**h, "Idempotency-Key": "portal-refund-" + uuid.uuid4().hex}
    body = {"reason": "trả lại tiền thừa", "method": "cash"}
    r1 = HTTP.post(f"{url}/payments/{pay}/refund", json=body, headers=keyed, timeout=30)
    r2 = HTTP.post(f"{url}/payments/{pay}/refund", json=body, headers=keyed, timeout=30)
    assert (r1.status_code, r2.status_code) == (201, 201) and r1.json() == r2.json() and r1.json()["amount"] == 30000
    r3 = HTTP.post(f"{url}/payments/{pay}/refund", json=body, headers=h, timeout=30)
    assert r3.status_code in (409, 422)  # nothing left to give back: a new refund is refused
    assert db["refunds"].count_documents({"payment": pay}) == 1
    closed = HTTP.post(f"{url}/payments/shifts/current/close", json={"countedCash": 50000, "countedTransfers": 0},
                        headers=h, timeout=30).json()
    assert closed["expected"]["cash"] == 50000 and closed["difference"]["cash"] == 0


def test_a_shift_close_sent_again_with_its_key_is_answered_again_not_refused(billing, dev_key: Path) -> None:
    """The cashier's close, its answer lost on a flaky link, sent again with its ``Idempotency-Key``: the close it
    made is replayed (200, the same shift), where a new close is refused (no shift open)."""
    url, _db = billing
    h = cashier(dev_key, "org-" + uuid.uuid4().hex[:5])
    assert HTTP.post(f"{url}/payments/shifts", json={"openingCash": 0}, headers=h, timeout=30).status_code == 201
    keyed = {**h, "Idempotency-Key": "portal-shift-close-" + uuid.uuid4().hex}
    counts = {"countedCash": 0, "countedTransfers": 0}
    first = HTTP.post(f"{url}/payments/shifts/current/close", json=counts, headers=keyed, timeout=30)
    again = HTTP.post(f"{url}/payments/shifts/current/close", json=counts, headers=keyed, timeout=30)
    assert (first.status_code, again.status_code) == (200, 200) and first.json() == again.json(), again.text
    assert HTTP.post(f"{url}/payments/shifts/current/close", json=counts, headers=h, timeout=30).status_code >= 400


def test_webhooks_need_no_token_and_payment_api_needs_a_cashier(billing, dev_key: Path) -> None:
    url, _ = billing
    assert HTTP.get(f"{url}/payments/unmatched", timeout=30).status_code == 401
    doctor = {"Authorization": f"Bearer {issue_dev_token(dev_key, 'doctor')}"}
    assert HTTP.get(f"{url}/payments/unmatched", headers=doctor, timeout=30).status_code == 403


def test_hmac_helper_matches_the_standard_library() -> None:
    # the signature helper is what the README's curl example uses: it must be the spec's HMAC
    body = b'{"a":1}'
    mac = hmac.new(base64.b64decode(STD_SECRET.removeprefix("whsec_")), b"m.1." + body, hashlib.sha256).digest()
    assert webhooks.standard_signature("m", "1", body, STD_SECRET) == "v1," + base64.b64encode(mac).decode()


def test_report_command_writes_the_day_and_keeps_a_copy(billing, base_env: dict[str, str], tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    url, db = billing
    day = vn_day_with_room().isoformat()  # the transfer's day in Vietnam, the report's
    facility = "org-" + uuid.uuid4().hex[:5]
    iid, code = make_invoice(db, 45000, facility=facility)
    assert send_standard(url, uuid.uuid4().hex[:8], 45000, code).status_code == 200
    from sen_billing import report

    for key, value in {**base_env, "SEN_DB": db.name}.items():
        monkeypatch.setenv(key, value)
    out = tmp_path / "r.csv"
    assert report.main(["--day", day, "--facility", facility, "--out", str(out)]) == 0
    text = out.read_text(encoding="utf-8")
    assert "standard:" in text and "45000" in text and f"{iid}" in text
    assert db["reconciliation_reports"].find_one({"_id": f"{day}/{facility}"})["rows"] == 1


@pytest.mark.parametrize("provider", ["standard", "casso", "payos", "sepay"])
def test_devwebhook_prints_a_curl_that_pays_the_invoice(billing, provider: str, capsys: pytest.CaptureFixture,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    import subprocess

    from sen_billing import devwebhook

    url, db = billing
    for key, value in {"SEN_WEBHOOK_SECRET": STD_SECRET, "SEN_CASSO_CHECKSUM_KEY": CASSO_KEY,
                       "SEN_PAYOS_CHECKSUM_KEY": PAYOS_KEY, "SEN_SEPAY_API_KEY": SEPAY_KEY}.items():
        monkeypatch.setenv(key, value)
    iid, code = make_invoice(db, 150000)
    assert devwebhook.main(["--provider", provider, "--reference", code, "--amount", "150000", "--url", url]) == 0
    command = capsys.readouterr().out
    answer = subprocess.run(["sh", "-c", command], capture_output=True, text=True, timeout=60)
    assert json.loads(answer.stdout)["success"] is True, answer.stdout
    assert invoice_status(db, iid) == "balanced"


LOCAL = Path(__file__).resolve().parents[2] / "deploy" / "local"


def run_sh_defaults(*names: str) -> dict[str, str]:
    """What ``deploy/local/run.sh`` exports as ``names`` when the environment sets none: the settings of the demo
    province file, as run.sh takes them (``province.py env``, run by the same interpreter, in a bare environment)."""
    import shlex
    import subprocess

    out = subprocess.run([sys.executable, str(LOCAL / "province.py"), "env", str(LOCAL / "demo-province.json")],
                         env={"PATH": "/usr/bin:/bin"}, capture_output=True, text=True, check=True, timeout=30).stdout
    exported = dict(shlex.split(line.removeprefix("export "))[0].split("=", 1) for line in out.splitlines()
                    if line.startswith("export "))
    return {n: exported[n] for n in names}


def test_a_devwebhook_transfer_naming_no_invoice_waits_in_the_demo_cashiers_queue(
        base_env: dict[str, str], mongo_client, dev_key: Path, tmp_path: Path, capsys: pytest.CaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The README's ``devwebhook --reference HDNOTEXIST1 --amount 70000 | sh`` against billing configured as
    ``make run`` configures it (run.sh's demo account and its owner), from another shell (the account read from
    the ``bank.env`` run.sh writes): each provider's transfer waits in the demo cashier's ``/payments/unmatched``,
    none in the admins' queue of accounts no facility owns."""
    import subprocess

    from sen_billing import devwebhook
    from sen_portal.web.users import DEMO_USERS

    demo = run_sh_defaults("SEN_BANK_ACCOUNT", "SEN_BANK_ACCOUNT_FACILITIES")
    facility = DEMO_USERS["cashier"][0].facility
    assert json.loads(demo["SEN_BANK_ACCOUNT_FACILITIES"]).get(demo["SEN_BANK_ACCOUNT"]) == facility
    db_name = f"sen_billing_d{uuid.uuid4().hex[:6]}"
    env = {**base_env, **demo, "SEN_DB": db_name, "SEN_PAYOS_CHECKSUM_KEY": PAYOS_KEY,
           "SEN_CASSO_CHECKSUM_KEY": CASSO_KEY, "SEN_SEPAY_API_KEY": SEPAY_KEY, "SEN_WEBHOOK_SECRET": STD_SECRET}
    from sen_billing.indexes import INDEXES
    from sen_shared import mongo

    mongo.ensure_indexes(mongo_client[db_name], INDEXES)
    for key in ("SEN_WEBHOOK_SECRET", "SEN_CASSO_CHECKSUM_KEY", "SEN_PAYOS_CHECKSUM_KEY", "SEN_SEPAY_API_KEY"):
        monkeypatch.setenv(key, env[key])
    monkeypatch.delenv("SEN_BANK_ACCOUNT", raising=False)  # another shell: only what run.sh wrote
    monkeypatch.setenv("SEN_STATE_DIR", str(tmp_path))
    (tmp_path / "bank.env").write_text(f"SEN_BANK_ACCOUNT={demo['SEN_BANK_ACCOUNT']}\n")
    try:
        with web_process("billing", env, tmp_path / "web.log") as url:
            paid = {}
            for provider in webhooks.PROVIDERS:
                assert devwebhook.main(["--provider", provider, "--reference", "HDNOTEXIST1", "--amount", "70000",
                                        "--url", url]) == 0
                answer = subprocess.run(["sh", "-c", capsys.readouterr().out], capture_output=True, text=True,
                                        timeout=60)
                [paid[provider]] = json.loads(answer.stdout)["payments"]
            h = cashier(dev_key, facility=facility)
            queue = HTTP.get(f"{url}/payments/unmatched", params={"limit": 200}, headers=h, timeout=30).json()
            assert {p["id"] for p in queue["payments"]} >= set(paid.values())
            admin = {"Authorization": f"Bearer {issue_dev_token(dev_key, 'admin')}"}
            unowned = HTTP.get(f"{url}/payments/unmatched", params={"facility": "_unowned"}, headers=admin,
                                timeout=30).json()
            assert not {p["id"] for p in unowned["payments"]} & set(paid.values())
    finally:
        mongo_client.drop_database(db_name)


def test_the_relay_publishes_payment_received_and_invoice_paid_on_the_bus(billing, amqp_url: str,
                                                                          base_env: dict[str, str]) -> None:
    from kombu import Connection
    from sen_shared.bus.outbox import OutboxRelay
    from sen_shared.bus.publisher import Publisher

    url, db = billing
    prefix = base_env["SEN_BUS_PREFIX"]
    watch = f"{prefix}test.billing-watch.{uuid.uuid4().hex[:6]}"
    iid, code = make_invoice(db, 90000)
    with Publisher(amqp_url, prefix=prefix) as publisher, Connection(amqp_url) as conn:
        publisher.declare()
        ch = conn.default_channel
        ch.queue_declare(queue=watch, durable=False, auto_delete=False)
        for key in ("billing.payment.received", "billing.invoice.paid"):
            ch.queue_bind(queue=watch, exchange=publisher.topology.exchange.name, routing_key=key)
        try:
            assert send_standard(url, uuid.uuid4().hex[:8], 90000, code).status_code == 200
            relay = OutboxRelay(db, publisher, ["payments", "receipts"])
            for _ in range(50):  # other tests' payments wait in the same outbox: drain it
                if not relay.run_once():
                    break
            seen: list[dict] = []
            while True:
                m = ch.basic_get(queue=watch, no_ack=True)
                if m is None:
                    break
                seen.append(json.loads(m.body))
            paid = [e for e in seen if e["type"] == "vn.sen.billing.invoice.paid.v1"
                    and e["data"]["invoice"] == f"Invoice/{iid}"]
            received = [e for e in seen if e["type"] == "vn.sen.billing.payment.received.v1"
                        and e["data"].get("invoice") == f"Invoice/{iid}"]
            assert len(paid) == 1 and len(received) == 1
            assert paid[0]["data"]["reconciliation"] == f"PaymentReconciliation/pr-{iid}"
            assert paid[0]["data"]["facility"] == "Organization/org-a"
            assert db["receipts"].find_one({"_id": iid})["outbox_pending"] is False
        finally:
            ch.queue_delete(queue=watch)


def test_a_settlement_whose_winner_died_is_finished_by_the_repair_job(billing) -> None:
    from datetime import UTC, datetime, timedelta

    from sen_billing.domain import receipts

    _, db = billing
    iid, _ = make_invoice(db, 25000)
    # the winner claimed 'balanced' and died before the receipt: the claim and the payment only
    db["payments"].insert_one({"_id": f"standard:crash-{iid}", "provider": "standard", "channel": "transfer",
                               "amount": 25000, "invoice": iid, "matched": True, "outcome": "applied",
                               "received_at": datetime.now(UTC), "day": "2025-03-14", "facility": "org-a"})
    db["invoice_balanced"].insert_one({"_id": iid, "facility": "org-a", "paid": 25000, "owed": 25000,
                                       "channel": "transfer", "done": False,
                                       "at": datetime.now(UTC) - timedelta(minutes=5)})
    assert db["receipts"].find_one({"_id": iid}) is None
    assert receipts.repair_settlements(db) >= 1
    assert db["receipts"].find_one({"_id": iid})["paid"] == 25000
    assert invoice_status(db, iid) == "balanced"
    assert receipts.repair_settlements(db) == 0  # nothing left to finish


def test_a_shift_closed_from_five_tabs_at_once_closes_once(billing, dev_key: Path) -> None:
    url, db = billing
    h = cashier(dev_key, "org-a", sub=f"cashier-{uuid.uuid4().hex[:6]}")
    assert HTTP.post(f"{url}/payments/shifts", json={"openingCash": 100000}, headers=h, timeout=30).status_code == 201
    body = {"countedCash": 100000, "countedTransfers": 0}
    with ThreadPoolExecutor(5) as pool:
        answers = list(pool.map(lambda _: httpx.post(f"{url}/payments/shifts/current/close", json=body, headers=h,
                                                     timeout=30), range(5)))
    assert sorted(a.status_code for a in answers) == [200, 409, 409, 409, 409]
    [closed] = [a.json() for a in answers if a.status_code == 200]
    assert db["shifts"].count_documents({"state": "closed", "cashier": closed["cashier"]}) == 1


def test_the_unmatched_queue_pages_over_http(billing, dev_key: Path) -> None:
    url, _ = billing
    for _ in range(3):
        assert send_standard(url, uuid.uuid4().hex[:8], 1000, "khong co ma hoa don").status_code == 200
    h = cashier(dev_key)
    first = HTTP.get(f"{url}/payments/unmatched", params={"limit": 1}, headers=h, timeout=30).json()
    assert len(first["payments"]) == 1 and first["next"]
    second = HTTP.get(f"{url}/payments/unmatched", params={"limit": 1, "after": first["next"]}, headers=h,
                       timeout=30).json()
    assert second["payments"][0]["id"] != first["payments"][0]["id"]
    bad = HTTP.get(f"{url}/payments/unmatched", params={"after": "xyz"}, headers=h, timeout=30)
    assert bad.status_code == 400 and bad.headers["content-type"].startswith("application/problem+json")
    assert HTTP.get(f"{url}/payments/unmatched", params={"limit": 0}, headers=h, timeout=30).status_code == 400
