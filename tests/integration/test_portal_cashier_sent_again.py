"""The cashier's last forms sent in place, each sent twice as a flaky link makes it (the first answer lost, the
same form sent again, as htmx sends it), through the portal's pages against a real billing and EHR (gunicorn
processes on loopback) on the real FerretDB: billing does each thing once, and the second send is answered as the
first (the page after it), never refused for what the first did. The portal runs in this process as its demo
cashier of Trạm Y tế xã Mỹ Hiệp.

- "Mở ca" (/shift): one shift opened, not "a shift is open already";
- "Tạo và phát hành hóa đơn" (/invoices/new): one invoice;
- on an invoice's page: the cash ("Ghi nhận tiền mặt"), one payment; the refund ("Hoàn tiền"), one refund; the
  cancel ("Hủy hóa đơn"), one cancel; the BHYT card ("Ghi thẻ BHYT"), one invoice made again.
Each form's key, made when its page was shown, is billing's Idempotency-Key (billing replays the first answer)."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

import httpx
import pytest

from tests.billing_support import cashier_billing, cashier_ehr, cashier_portal
from tests.integration.test_portal_cashier_money_back import _auth, _field, _invoice
from tests.support import VN_TZ, admin_headers, csrf_token, input_value, portal_signed_in

pytestmark = pytest.mark.integration

CLINIC = "tyt-my-hiep"
LAN, BINH = "bn-0201", "bn-0202"
HX = {"HX-Request": "true"}


@pytest.fixture(scope="module")
def ehr(cashier_services, mongo_client, dev_key):
    patients = [{"resourceType": "Patient", "id": pid, "gender": "female", "birthDate": "1980-05-06",
                 "name": [{"family": family, "given": given, "text": text}],
                 "managingOrganization": {"reference": f"Organization/{CLINIC}"}}
                for pid, family, given, text in ((LAN, "Phạm", ["Thị", "Lan"], "Phạm Thị Lan"),
                                                 (BINH, "Đỗ", ["Văn", "Bình"], "Đỗ Văn Bình"))]
    return cashier_ehr(cashier_services, mongo_client, dev_key, patients)


@pytest.fixture(scope="module")
def billing(cashier_services, mongo_client):
    return cashier_billing(cashier_services, mongo_client)


@pytest.fixture(scope="module")
def cashier(base_env, run_id, ehr, billing, mongo_client):
    with cashier_portal(base_env, run_id, mongo_client, "psa", ehr, billing[0]) as app:
        yield portal_signed_in(app, "cashier")


def twice(cashier: Any, path: str, data: dict[str, Any]) -> str:
    """``data`` posted to ``path`` as htmx sends it, twice (the first answer lost on the way): both answered as
    done, by the same page after (HX-Redirect); that page."""
    first, again = (cashier.post(path, data=data, headers={**HX, "HX-Current-URL": f"http://localhost{path}"})
                    for _ in range(2))
    for r in (first, again):
        said = re.findall(r'class="(?:alert error|error)"[^>]*>([^<]*)', r.get_data(as_text=True))
        assert r.status_code == 204 and r.headers.get("HX-Redirect"), (r.status_code, said)
    assert again.headers["HX-Redirect"] == first.headers["HX-Redirect"]
    return first.headers["HX-Redirect"]


def _summary(billing: tuple[str, Any], dev_key, iid: str) -> dict[str, Any]:
    r = httpx.get(f"{billing[0]}/payments/invoices/{iid}", headers=_auth(dev_key, "cashier", CLINIC), timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


def _invoices(billing: tuple[str, Any], dev_key, pid: str) -> list[dict[str, Any]]:
    r = httpx.get(f"{billing[0]}/fhir/Invoice", params={"subject": f"Patient/{pid}", "_count": "50"},
                  headers=admin_headers(dev_key), timeout=30)
    assert r.status_code == 200, r.text
    return [e["resource"] for e in r.json().get("entry", []) if e.get("search", {}).get("mode", "match") == "match"]


def test_the_shift_open_sent_twice_opens_one_shift(cashier, billing):
    page = cashier.get("/shift").get_data(as_text=True)
    txn = input_value(page, "open-txn")
    assert re.fullmatch(r"[0-9a-f]{32}", txn) and 'id="shift-open-live-error"' in page
    opened = {"which": "open", "open-opening_cash": "300.000", "open-txn": txn, "csrf_token": csrf_token(page)}
    assert twice(cashier, "/shift", opened) == "/shift"  # the second: the shift it opened, not "one is open"
    links = list(billing[1]["shifts"].find({"state": "open"}))
    assert len(links) == 1 and links[0]["opening_cash"] == 300_000
    # another open (another key: another tab's form) is refused as before: one shift is open
    r = cashier.post("/shift", data={**opened, "open-txn": "f" * 32}, headers=HX)
    assert r.status_code == 200 and 'data-testid="shift-expected"' in r.get_data(as_text=True)
    assert billing[1]["shifts"].count_documents({"state": "open"}) == 1


def test_a_new_invoice_issued_twice_is_one_invoice(cashier, billing, dev_key):
    page = cashier.get(f"/invoices/new?p={LAN}&line_service=kham-benh&line_qty=1").get_data(as_text=True)
    assert 'data-live-error="issue-live-error"' in page and 'hx-post="/invoices/new"' in page
    form = {"csrf_token": csrf_token(page), "key": input_value(page, "key"), "patient": LAN,
            "line_service": ["kham-benh"], "line_qty": ["1"], "action": "issue"}
    where = twice(cashier, "/invoices/new", form)
    invoices = _invoices(billing, dev_key, LAN)
    assert len(invoices) == 1 and invoices[0]["status"] == "issued"
    assert where.startswith(f"/invoices/{invoices[0]['id']}?")
    assert "Đã phát hành hóa đơn" in cashier.get(where).get_data(as_text=True)  # said once, after the first


def test_cash_then_a_refund_each_sent_twice_are_one_payment_and_one_refund(cashier, billing, dev_key):
    inv = _invoice(billing[0], dev_key, BINH, "kham-benh")
    owed = inv["totalNet"]["value"]
    page = cashier.get(f"/invoices/{inv['id']}").get_data(as_text=True)
    assert 'data-live-error="cash-live-error"' in page and 'data-live-error="cancel-live-error"' in page
    cash = {"cash-amount": str(owed + 5_000), "cash-keep_credit": "y", "cash-txn": _field(page, "cash-txn"),
            "csrf_token": csrf_token(page)}
    twice(cashier, f"/invoices/{inv['id']}/cash", cash)
    s = _summary(billing, dev_key, inv["id"])
    assert len(s["payments"]) == 1 and s["paid"] == owed + 5_000  # one payment; 5.000 ₫ kept as his credit

    page = cashier.get(f"/invoices/{inv['id']}").get_data(as_text=True)
    assert 'data-live-error="refund-live-error"' in page
    refund = {"payment": s["payments"][0]["id"], "txn": _field(page, "txn"), "method": "cash", "amount": "5.000",
              "reason": "Trả lại tiền thừa.", "after": "", "csrf_token": csrf_token(page),
              "confirming": "refund", "confirm": "refund"}
    twice(cashier, f"/invoices/{inv['id']}/refund", refund)
    s = _summary(billing, dev_key, inv["id"])
    assert len(s["refunds"]) == 1 and s["refunded"] == 5_000


def test_a_cancel_sent_twice_cancels_once_and_is_answered_again(cashier, billing, dev_key):
    inv = _invoice(billing[0], dev_key, LAN, "kham-benh")
    page = cashier.get(f"/invoices/{inv['id']}").get_data(as_text=True)
    cancel = {"cancel-reason": "Lập nhầm dịch vụ.", "cancel-txn": _field(page, "cancel-txn"),
              "csrf_token": csrf_token(page), "confirming": "invoice-cancel", "confirm": "invoice-cancel"}
    assert re.fullmatch(r"[0-9a-f]{32}", cancel["cancel-txn"])
    twice(cashier, f"/invoices/{inv['id']}/cancel", cancel)
    r = httpx.get(f"{billing[0]}/fhir/Invoice/{inv['id']}/_history", headers=admin_headers(dev_key), timeout=30)
    versions = [e["resource"] for e in r.json()["entry"]]
    assert [v["status"] for v in versions].count("cancelled") == 1  # cancelled once, the second send answered


def test_a_bhyt_card_sent_twice_makes_the_invoice_again_once(cashier, billing, dev_key):
    inv = _invoice(billing[0], dev_key, BINH, "kham-benh")
    page = cashier.get(f"/invoices/{inv['id']}").get_data(as_text=True)
    assert 'data-live-error="card-live-error"' in page
    year = datetime.now(VN_TZ).year
    card = {"card-card_number": "HT2878701234568", "card-card_level": "100", "card-card_start": f"01/01/{year - 1}",
            "card-card_end": f"31/12/{year + 1}", "card-txn": _field(page, "card-txn"), "csrf_token": csrf_token(page)}
    where = twice(cashier, f"/invoices/{inv['id']}/card", card)
    again = [i for i in _invoices(billing, dev_key, BINH) if any(
        "invoice-replaces" in e.get("url", "") and e["valueReference"]["reference"] == f"Invoice/{inv['id']}"
        for e in i.get("extension") or [])]
    assert len(again) == 1 and where == f"/invoices/{again[0]['id']}"  # one invoice made again, its page
    assert "Đã ghi thẻ BHYT: hóa đơn được lập lại" in cashier.get(where).get_data(as_text=True)


def test_the_new_invoices_card_recorded_twice_is_one_card(cashier, billing, dev_key):
    """The new invoice's other buttons are sent in place too (session 30): the card ("Ghi thẻ") sent twice as htmx,
    both answered by the page with the card recorded (200, its address the draft's), one Coverage in billing."""
    page = cashier.get(f"/invoices/new?p={LAN}").get_data(as_text=True)
    assert 'data-live-error="charge-card-live-error"' in page
    year = datetime.now(VN_TZ).year
    card = {"csrf_token": csrf_token(page), "key": input_value(page, "key"), "patient": LAN, "action": "record-card",
            "card_number": "HT2878701234567", "card_level": "80", "card_start": f"01/01/{year - 1}",
            "card_end": f"31/12/{year + 1}"}
    for _ in range(2):  # the first answer lost on the way: the same form sent again
        r = cashier.post("/invoices/new", data=card, headers=HX)
        assert r.status_code == 200 and r.headers["HX-Replace-Url"] == f"/invoices/new?p={LAN}"
        assert "Đã ghi thẻ" in r.get_data(as_text=True)
    found = httpx.get(f"{billing[0]}/fhir/Coverage", params={"beneficiary": f"Patient/{LAN}"},
                      headers=admin_headers(dev_key), timeout=30).json()
    assert len([e for e in found.get("entry", []) if e.get("search", {}).get("mode", "match") == "match"]) == 1
