"""Issue 15's points that depend on a setting or on a provider's retries, through billing's API on FerretDB:

- a VietQR payload lives ``SEN_QR_TTL_SECONDS`` and then a new one is issued for the same balance;
- SePay retries a delivery it did not see answered 2xx up to 7 times: every delivery of one transfer is
  answered 2xx ``{"success": true}`` and makes one payment, whatever the transfer is (paying an invoice,
  paying a cancelled one: one refund task, naming no invoice: one entry in the unmatched queue, outgoing:
  no payment), so SePay stops retrying and nothing counts twice.
"""

from __future__ import annotations

import base64
import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sen_billing.domain import invoice_port, invoices, vietqr
from sen_shared.auth import issue_dev_token
from sen_shared.fhir.store import Store

from tests.billing_support import BANK, billing_app, make_invoice

pytestmark = pytest.mark.integration

SEPAY_KEY = "sepay-" + uuid.uuid4().hex[:12]
TTL = 2


@pytest.fixture()
def billing(base_env, mongo_client, monkeypatch):
    with billing_app(base_env, mongo_client, monkeypatch, "cfg",
                     {**BANK, "SEN_QR_TTL_SECONDS": str(TTL), "SEN_SEPAY_API_KEY": SEPAY_KEY,
                      "SEN_WEBHOOK_SECRET": "whsec_" + base64.b64encode(b"configured-test-secret").decode(),
                      "SEN_PAYOS_CHECKSUM_KEY": "payos-" + uuid.uuid4().hex,
                      "SEN_CASSO_CHECKSUM_KEY": "casso-" + uuid.uuid4().hex}) as (client, db):
        yield client, db


def cashier(dev_key, facility: str = "org-a") -> dict[str, str]:
    return {"Authorization": f"Bearer {issue_dev_token(dev_key, 'cashier', facility=facility, sub='thu-ngan')}"}


def test_a_payload_lives_the_configured_time_then_a_new_one_is_issued(billing, dev_key) -> None:
    client, db = billing
    iid, code = make_invoice(db, 120_000)
    h = cashier(dev_key)
    r = client.get(f"/fhir/Invoice/{iid}/$vietqr", headers=h)
    assert r.status_code == 200, r.text
    first = r.json()
    [link] = list(db[invoices.QR_CODES].find({"k": iid}))
    assert link["expires"] - link["issued"] == timedelta(seconds=TTL)  # the setting's lifetime, not the default
    assert datetime.fromisoformat(first["expiresAt"]) == link["expires"].replace(microsecond=0)  # to the second
    assert r.headers["X-VietQR-Expires"] == first["expiresAt"]
    expires = link["expires"] if link["expires"].tzinfo else link["expires"].replace(tzinfo=UTC)
    time.sleep(max(0.0, (expires - datetime.now(UTC)).total_seconds()) + 0.05)  # just past it (waiting, not measuring)
    r = client.get(f"/fhir/Invoice/{iid}/$vietqr", headers=h)
    assert r.status_code == 200, r.text
    renewed = r.json()
    assert datetime.fromisoformat(renewed["expiresAt"]) > datetime.fromisoformat(first["expiresAt"])
    assert db[invoices.QR_CODES].count_documents({"k": iid}) == 2  # a new one, the old one kept
    parsed = vietqr.parse(renewed["payload"])  # for the same balance and reference, with a valid CRC
    assert (parsed.amount, parsed.reference, renewed["reference"]) == (120_000, code, code)


def _sepay(client, txid: int, amount: int, note: str, kind: str = "in"):
    body = {"id": txid, "gateway": "Vietcombank", "transactionDate": "2026-12-06 10:02:37",
            "accountNumber": BANK["SEN_BANK_ACCOUNT"], "code": None, "content": note, "transferType": kind,
            "transferAmount": amount, "accumulated": 19_077_000, "subAccount": None,
            "referenceCode": f"MBVCB.{txid}", "description": f"BankAPINotify {note}"}
    return client.post("/webhooks/sepay", json=body, headers={"Authorization": f"Apikey {SEPAY_KEY}"})


def _delivered_eight_times(client, txid: int, amount: int, note: str, kind: str = "in") -> list[dict]:
    """The first delivery and SePay's 7 retries, one after another; each answer's body."""
    answers = [_sepay(client, txid, amount, note, kind) for _ in range(8)]
    assert [a.status_code // 100 for a in answers] == [2] * 8, [a.get_data(as_text=True) for a in answers]
    bodies = [a.json() for a in answers]
    assert all(b["success"] is True for b in bodies), bodies
    return bodies


def test_sepays_retries_of_one_transfer_are_each_answered_2xx_and_count_once(billing) -> None:
    client, db = billing
    base = 800_000_000 + int(uuid.uuid4().hex[:6], 16)
    # paying an invoice
    iid, code = make_invoice(db, 90_000)
    bodies = _delivered_eight_times(client, base, 90_000, f"{code} thanh toan vien phi")
    assert bodies[0]["payments"] == [f"sepay:{base}"] and bodies[0]["duplicates"] == 0
    assert [b["duplicates"] for b in bodies[1:]] == [1] * 7
    assert db["payments"].count_documents({"_id": f"sepay:{base}"}) == 1
    assert invoice_port.balance_due(db, iid) == 0
    assert Store(db, service="billing").read_doc("Invoice", iid)["res"]["status"] == "balanced"
    assert db["receipts"].count_documents({"invoice": iid}) == 1
    # paying a cancelled invoice: one refund task
    cancelled, c_code = make_invoice(db, 40_000, status="cancelled")
    _delivered_eight_times(client, base + 1, 40_000, c_code)
    payment = db["payments"].find_one({"_id": f"sepay:{base + 1}"})
    assert (payment["outcome"], payment["late_invoice"]) == ("late-cancelled", cancelled)
    assert Store(db, service="billing").read_doc("Invoice", cancelled)["res"]["status"] == "cancelled"
    tasks = [t for t in db["refund_tasks"].find({}) if t.get("payment") == f"sepay:{base + 1}"]
    assert len(tasks) == 1, tasks
    # naming no invoice: one transfer waiting for a cashier
    _delivered_eight_times(client, base + 2, 70_000, "HDNOTEXIST1 chuyen khoan")
    assert db["payments"].find_one({"_id": f"sepay:{base + 2}"})["outcome"] == "unmatched"
    assert db["payments"].count_documents({"_id": f"sepay:{base + 2}"}) == 1
    # money going out of the account: answered, never a payment
    _delivered_eight_times(client, base + 3, 10_000, f"{code} chuyen di", kind="out")
    assert db["payments"].find_one({"_id": f"sepay:{base + 3}"}) is None
    assert invoice_port.balance_due(db, iid) == 0


# ------------------------------------------------------------------------------- the base salary

@pytest.mark.parametrize(("salary", "shares"), [
    (None, (250_000, 250_000, 0)),  # the default 2,340,000: 250,000 < 351,000, covered in full
    ("1000000", (250_000, 200_000, 50_000)),  # 250,000 >= 150,000: the card's 80 %
])
def test_the_configured_base_salary_sets_the_threshold_of_a_consults_invoice(base_env, mongo_client, monkeypatch,
                                                                             dev_key, salary, shares) -> None:
    """SEN_BASE_SALARY reaches the consult charge the worker makes (Decree 146/2018 art. 14: under 15 % of it, BHYT
    pays all); the split's own rules are services/billing/tests/test_bhyt.py's."""
    from sen_billing.worker import consult_charge

    from tests.integration.test_billing_invoices import _shares, completed, record_card, requested, token

    extra = {"SEN_FACILITY_LEVELS": '{"org-a": "district"}', **({"SEN_BASE_SALARY": salary} if salary else {})}
    if not salary:
        monkeypatch.delenv("SEN_BASE_SALARY", raising=False)
    with billing_app(base_env, mongo_client, monkeypatch, "sal", extra) as (client, db):
        patient = f"Patient/p-{uuid.uuid4().hex[:6]}"
        cashier_h = token(dev_key, "cashier", "org-a")
        record_card(client, cashier_h, patient, "DN4010123456789")  # 80 %
        sr = f"sr-{uuid.uuid4().hex[:8]}"
        consult_charge(requested(sr, "394579002"), db)
        consult_charge(completed(sr, patient), db)  # as the worker's consumer takes it
        [invoice] = [client.get(f"/fhir/Invoice/{d['_id']}", headers=cashier_h).json() for d in db["Invoice"].find({})]
        assert _shares(invoice) == shares
        assert invoice_port.balance_due(db, invoice["id"]) == shares[2]


# ------------------------------------------------------------------------------- a user's token is no signature

def test_a_users_bearer_token_does_not_authenticate_a_webhook(billing, dev_key) -> None:
    """Webhooks are authenticated by their scheme's signature or key, never by a user's token: an admin's or the
    facility cashier's valid bearer token on an unsigned call is rejected (401, recorded, not applied)."""
    client, db = billing
    iid, code = make_invoice(db, 30_000)
    body = {"type": "transfer.received", "data": {"id": uuid.uuid4().hex[:10], "amount": 30_000, "description": code}}
    sepay = {"id": 990_000 + int(uuid.uuid4().hex[:4], 16), "gateway": "Vietcombank", "content": code,
             "transferType": "in", "transferAmount": 30_000, "transactionDate": "2026-12-06 10:02:37"}
    for role in ("admin", "cashier"):
        token = issue_dev_token(dev_key, role, facility="org-a", sub=f"{role}-x")
        for provider, payload in (("standard", body), ("sepay", sepay), ("payos", {"data": body["data"]}),
                                  ("casso", {"error": 0, "data": body["data"]})):
            r = client.post(f"/webhooks/{provider}", json=payload, headers={"Authorization": f"Bearer {token}"})
            assert r.status_code == 401, (provider, r.status_code, r.get_data(as_text=True))
            assert db["webhook_outcomes"].find_one({"_id": r.json()["inbox"]})["status"] == "rejected"
    assert db["payments"].count_documents({"invoice": iid}) == 0
    assert invoice_port.balance_due(db, iid) == 30_000
