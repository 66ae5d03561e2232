"""The cashier's money back, a covered invoice cancelled and the day's CSV, through the portal's
pages against a real billing and EHR (gunicorn processes on loopback) on the real FerretDB. The
portal runs in this process as its demo cashier of Trạm Y tế xã Mỹ Hiệp (``tyt-my-hiep``).

- Lê Văn Tâm pays an examination in cash with 11.000 ₫ too much: "Cần hoàn tiền" lists that credit
  (his invoice's reference, his name from the EHR, 11.000 ₫, since the payment) beside the refund
  tasks; a give-back is done only once confirmed (the first press shows the step, nothing given back);
  two cashiers give it back from the list at the same moment: it goes back once (billing's
  credit give-backs chain), the second is told so in Vietnamese, and the row leaves the list.
- Trần Thị Hoa's ultrasound is paid in full by BHYT (settled when issued): issued by mistake, it is
  cancelled from its page with a reason (none: the form says so); it then reads cancelled, and
  the day's CSV has no row of it.
- The day's CSV, downloaded by the cashier, names the facility "Trạm Y tế xã Mỹ Hiệp" (billing's
  SEN_FACILITY_NAMES) though the EHR still refuses the cashier's Organization reads.
"""

from __future__ import annotations

import csv
import io
import json
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from sen_shared.auth import issue_dev_token

from tests.billing_support import cashier_billing, cashier_ehr, cashier_portal
from tests.support import csrf_token, portal_signed_in, vn_day_with_room

pytestmark = pytest.mark.integration

FJ = "application/fhir+json"
CLINIC = "tyt-my-hiep"
CLINIC_NAME = "Trạm Y tế xã Mỹ Hiệp"
TAM, HOA = "bn-0101", "bn-0102"
# billing's account and the clinic's name it prints: billing_support.CASHIER_BANK (the session's billing)


def _auth(dev_key: Path, role: str, facility: str | None = None) -> dict[str, str]:
    claims = {"facility": facility} if facility else {}
    return {"Authorization": f"Bearer {issue_dev_token(dev_key, role, **claims)}", "Content-Type": FJ, "Accept": FJ}


@pytest.fixture(scope="module")
def ehr(cashier_services, mongo_client, dev_key):
    patients = [{"resourceType": "Patient", "id": pid, "gender": "male", "birthDate": "1970-01-01",
                 "name": [{"family": family, "given": given, "text": text}],
                 "managingOrganization": {"reference": f"Organization/{CLINIC}"}}
                for pid, family, given, text in ((TAM, "Lê", ["Văn", "Tâm"], "Lê Văn Tâm"),
                                                 (HOA, "Trần", ["Thị", "Hoa"], "Trần Thị Hoa"))]
    org = {"resourceType": "Organization", "id": CLINIC, "name": CLINIC_NAME, "active": True}
    return cashier_ehr(cashier_services, mongo_client, dev_key, [*patients, org])


@pytest.fixture(scope="module")
def billing(cashier_services, mongo_client):
    return cashier_billing(cashier_services, mongo_client)


@pytest.fixture(scope="module")
def portal(base_env, run_id, ehr, billing, mongo_client):
    with cashier_portal(base_env, run_id, mongo_client, "pmb", ehr, billing[0]) as app:
        yield app


def _invoice(url: str, dev_key: Path, pid: str, service: str) -> dict[str, Any]:
    """A hand invoice of one service for ``pid`` at billing's API, issued (as the new-invoice page makes it)."""
    h = _auth(dev_key, "cashier", CLINIC)
    r = httpx.post(f"{url}/fhir/ChargeItem", headers=h, content=json.dumps({
        "resourceType": "ChargeItem", "status": "billable", "code": {"text": service},
        "subject": {"reference": f"Patient/{pid}"}, "definitionCanonical": [f"ChargeItemDefinition/{service}"]}))
    assert r.status_code == 201, r.text
    r = httpx.post(f"{url}/fhir/Invoice", headers=h, content=json.dumps({
        "resourceType": "Invoice", "status": "draft", "subject": {"reference": f"Patient/{pid}"},
        "lineItem": [{"chargeItemReference": {"reference": f"ChargeItem/{r.json()['id']}"}}]}))
    assert r.status_code == 201, r.text
    r = httpx.post(f"{url}/fhir/Invoice/{r.json()['id']}/$issue", headers=h)
    assert r.status_code == 200, r.text
    return r.json()


def _reference(inv: dict[str, Any]) -> str:
    return next(i["value"] for i in inv["identifier"] if i["system"] == "urn:sen:billing:payment-reference")


def _open_shift(cashier: Any) -> None:
    page = cashier.get("/shift").get_data(as_text=True)
    if 'name="open-opening_cash"' in page:
        r = cashier.post("/shift", data={"which": "open", "open-opening_cash": "0", "csrf_token": csrf_token(page)})
        assert r.status_code == 302, r.get_data(as_text=True)[-1500:]


def _field(form: str, name: str) -> str:
    m = re.search(rf'name="{name}"[^>]*value="([^"]*)"', form) or re.search(rf'value="([^"]*)"[^>]*name="{name}"',
                                                                          form)
    return m.group(1) if m else ""


def _credit_rows(page: str) -> list[str]:
    return re.findall(r'<tr role="row" data-testid="refund-row-credit">(.*?)</tr>', page, re.S)


def test_an_overpaid_credit_is_on_the_list_and_two_cashiers_give_it_back_once(portal, billing, dev_key):
    today = vn_day_with_room().strftime("%d/%m/%Y")  # the day in Vietnam of the transfers below
    url, db = billing
    inv = _invoice(url, dev_key, TAM, "kham-benh")
    owed, code = inv["totalNet"]["value"], _reference(inv)
    cashier = portal_signed_in(portal, "cashier")
    _open_shift(cashier)
    shown = cashier.get(f"/invoices/{inv['id']}").get_data(as_text=True)
    r = cashier.post(f"/invoices/{inv['id']}/cash", data={
        "cash-amount": str(owed + 11_000), "csrf_token": csrf_token(shown), "cash-txn": _field(shown, "cash-txn"),
        "cash-keep_credit": "y"})  # the excess kept as his credit (no change given)
    assert r.status_code == 302, r.get_data(as_text=True)[-2000:]

    page = cashier.get("/refunds").get_data(as_text=True)
    [row] = [r for r in _credit_rows(page) if code in r]
    assert re.search(r'data-testid="refund-task-amount">11.000\u00a0₫<', row), row
    assert re.search(r'data-testid="refund-task-patient">Lê Văn Tâm<', row)  # the EHR's name
    assert "Trả thừa: tiền ghi có của người bệnh" in row
    assert re.search(rf'data-testid="refund-task-received">{today} \d\d:\d\d<', row)
    assert f'href="/invoices/{inv["id"]}"' in row

    # two cashiers (two browsers) give it back from the list at the same moment
    others = [portal_signed_in(portal, "cashier") for _ in range(2)]
    forms = []
    for c in others:
        listed = c.get("/refunds").get_data(as_text=True)
        [mine] = [r for r in _credit_rows(listed) if code in r]
        forms.append({"csrf_token": csrf_token(listed), "payment": _field(mine, "payment"),
                      "txn": _field(mine, "txn"), "amount": _field(mine, "amount"), "method": "cash",
                      "reason": "Trả lại tiền thừa"})
    assert forms[0]["amount"] == "11000" and forms[0]["payment"]
    # the first press (no tick) gives nothing back: the list with the row's confirmation step, all kept
    r = others[0].post("/refunds/give-back", data=forms[0])
    shown = r.get_data(as_text=True)
    assert r.status_code == 200, shown[-2000:]
    [asked] = [r for r in _credit_rows(shown) if code in r]
    assert 'name="confirm" value="give-back"' in asked and f'name="txn" value="{forms[0]["txn"]}"' in asked
    assert "Trả lại tiền thừa</textarea>" in asked
    assert not list(db["refunds"].find({"invoice": inv["id"]}))
    forms = [{**f, "confirming": "give-back", "confirm": "give-back"} for f in forms]  # now ticked
    barrier = threading.Barrier(2)

    def give(i: int) -> Any:
        barrier.wait()
        return others[i].post("/refunds/give-back", data=forms[i])

    with ThreadPoolExecutor(2) as pool:
        answers = list(pool.map(give, range(2)))
    assert sorted(a.status_code for a in answers) == [302, 409], [a.status_code for a in answers]
    refused = next(a for a in answers if a.status_code == 409).get_data(as_text=True)
    assert re.search(r'role="alert">[^<]*(đã được hoàn|đã hoàn)', refused), refused[-3000:]
    given = list(db["refunds"].find({"invoice": inv["id"]}))
    assert sum(int(g["amount"]) for g in given) == 11_000 and len(given) == 1
    done = next(i for i, a in enumerate(answers) if a.status_code == 302)
    # "the refund is recorded": said to the cashier who gave it back (flashed in their session), once
    after = others[done].get(answers[done].headers["Location"]).get_data(as_text=True)
    assert 'data-testid="given-back"' in after and not [r for r in _credit_rows(after) if code in r]
    assert 'data-testid="given-back"' not in cashier.get(answers[done].headers["Location"]).get_data(as_text=True)
    summary = httpx.get(f"{url}/payments/invoices/{inv['id']}",
                        headers={**_auth(dev_key, "cashier", CLINIC), "Accept": "application/json"}).json()
    assert summary["credit"] == 0

    # the give-back form without a reason: said on the list, nothing given
    listed = cashier.get("/refunds").get_data(as_text=True)
    r = cashier.post("/refunds/give-back", data={**forms[0], "csrf_token": csrf_token(listed), "reason": " "})
    assert r.status_code == 422 and "Vui lòng sửa các ô được đánh dấu." in r.get_data(as_text=True)


def _shift_cash(cashier: Any) -> int:
    """The cash the open shift expects in the drawer, as /shift shows it."""
    page = cashier.get("/shift").get_data(as_text=True)
    shown = re.search(r"<dd class=\"money\"><strong>([\d.]+)\u00a0₫</strong>", page).group(1)
    return int(shown.replace(".", ""))


def test_cash_over_the_balance_records_the_balance_says_the_change_and_leaves_no_credit(portal, billing, dev_key):
    """More cash than is due: the payment is what is due, the page says the change, the shift's drawer
    grows by what is due (received in, change out) and the patient holds no credit to give back."""
    url, db = billing
    inv = _invoice(url, dev_key, TAM, "kham-benh")
    owed, code = inv["totalNet"]["value"], _reference(inv)
    cashier = portal_signed_in(portal, "cashier")
    _open_shift(cashier)
    before = _shift_cash(cashier)
    shown = cashier.get(f"/invoices/{inv['id']}").get_data(as_text=True)
    form = {"cash-amount": str(owed + 30_000), "csrf_token": csrf_token(shown), "cash-txn": _field(shown, "cash-txn")}
    r = cashier.post(f"/invoices/{inv['id']}/cash", data=form)
    assert r.status_code == 302, r.get_data(as_text=True)[-2000:]
    page = cashier.get(r.headers["Location"]).get_data(as_text=True)
    assert "Tiền thối lại: 30.000\u00a0₫" in page and 'data-testid="paid"' in page
    again = cashier.post(f"/invoices/{inv['id']}/cash", data=form)  # a second click: nothing new
    assert again.status_code == 302
    paid = list(db["payments"].find({"invoice": inv["id"], "channel": "cash"}))
    assert [int(p["amount"]) for p in paid] == [owed]
    summary = httpx.get(f"{url}/payments/invoices/{inv['id']}",
                        headers={**_auth(dev_key, "cashier", CLINIC), "Accept": "application/json"}).json()
    assert summary["status"] == "balanced" and summary["credit"] == 0
    assert _shift_cash(cashier) == before + owed
    assert not [r for r in _credit_rows(cashier.get("/refunds").get_data(as_text=True)) if code in r]


def test_a_paid_invoices_cash_is_refunded_after_payment_from_its_page(portal, billing, dev_key):
    """A paid examination, a charge made in error: the payment's line offers "Hoàn tiền…"; the refund
    (part of it, a reason, confirmed) is recorded only on the second press; the invoice stays paid, its
    refund row says "Đã hoàn sau thanh toán" with the reason, the receipt shows it, the drawer gives it.
    The rest of the same payment is a second refund: the box shows the first (amount, time, who, why) and
    what is left, the confirmation names the amount, both rows and the payment's "2 lần hoàn" show; a
    third is refused in Vietnamese (nothing is left)."""
    url, db = billing
    inv = _invoice(url, dev_key, TAM, "kham-benh")
    owed, iid = inv["totalNet"]["value"], inv["id"]
    cashier = portal_signed_in(portal, "cashier")
    _open_shift(cashier)
    shown = cashier.get(f"/invoices/{iid}").get_data(as_text=True)
    r = cashier.post(f"/invoices/{iid}/cash", data={"cash-amount": str(owed), "csrf_token": csrf_token(shown),
                                                    "cash-txn": _field(shown, "cash-txn")})
    assert r.status_code == 302
    before = _shift_cash(cashier)
    [pay] = [p["_id"] for p in db["payments"].find({"invoice": iid, "channel": "cash"})]
    page = cashier.get(f"/invoices/{iid}").get_data(as_text=True)
    assert 'data-testid="refund-after-link"' in page and 'data-testid="no-refund-paid"' not in page
    page = cashier.get(f"/invoices/{iid}?refund={pay}").get_data(as_text=True)
    assert "Hoàn tiền sau thanh toán" in page and _field(page, "after") == pay
    form = {"payment": pay, "after": _field(page, "after"), "amount": "10.000", "method": "cash",
            "reason": "Thu nhầm dịch vụ", "txn": _field(page, "txn"), "csrf_token": csrf_token(page)}
    step = cashier.post(f"/invoices/{iid}/refund", data=form)
    assert step.status_code == 200 and 'name="confirm" value="refund"' in step.get_data(as_text=True)
    assert db["refunds"].count_documents({"_id": pay}) == 0  # nothing given back at the first press
    r = cashier.post(f"/invoices/{iid}/refund", data={**form, "confirm": "refund"})
    assert r.status_code == 302, r.get_data(as_text=True)[-2000:]
    page = cashier.get(r.headers["Location"]).get_data(as_text=True)
    assert re.search(r'data-testid="refund-after-payment">Đã hoàn sau thanh toán</span> Thu nhầm dịch vụ', page)
    assert 'data-testid="paid"' in page and db["refunds"].find_one({"_id": pay})["after_settlement"] is True
    assert _shift_cash(cashier) == before - 10_000
    receipt = cashier.get(f"/invoices/{iid}/receipt").get_data(as_text=True)
    assert 'data-testid="receipt-refund-after">Đã hoàn sau thanh toán' in receipt

    # the rest of the same payment, a second refund: the box still offers it, with the earlier refund
    # (amount, time, who, why) and what is left; the confirmation names the amount (none typed: all left)
    page = cashier.get(f"/invoices/{iid}?refund={pay}").get_data(as_text=True)
    assert _field(page, "after") == pay, page[-3000:]
    [earlier] = re.findall(r'data-testid="refund-earlier-item">(.*?)</span>', page)
    assert re.fullmatch(r"10.000\u00a0₫ \(\d\d/\d\d/\d{4} \d\d:\d\d · [^·]+ · Thu nhầm dịch vụ\)", earlier), earlier
    left = owed - 10_000
    assert f'data-testid="refund-left">Còn có thể hoàn: {left:,}\u00a0₫'.replace(",", ".") in page
    rest = {**form, "amount": "", "reason": "Dịch vụ không thực hiện", "txn": _field(page, "txn"),
            "csrf_token": csrf_token(page)}
    step = cashier.post(f"/invoices/{iid}/refund", data=rest).get_data(as_text=True)
    assert f"Sẽ hoàn {left:,}\u00a0₫ cho người bệnh".replace(",", ".") in step, step[-3000:]
    r = cashier.post(f"/invoices/{iid}/refund", data={**rest, "confirm": "refund"})
    assert r.status_code == 302, r.get_data(as_text=True)[-2000:]
    page = cashier.get(r.headers["Location"]).get_data(as_text=True)
    rows = re.findall(r'<tr role="row" data-testid="refund-row">(.*?)</tr>', page, re.S)
    assert len(rows) == 2 and "Thu nhầm dịch vụ" in rows[0] and "Dịch vụ không thực hiện" in rows[1]
    assert re.search(rf'data-testid="payment-outcome">Đã hoàn sau thanh toán {owed:,}\u00a0₫ \([^)]*\), 2 lần hoàn'
                     .replace(",", "."), page), page[-4000:]
    assert 'data-testid="no-refund-paid"' in page and 'data-testid="refund-box"' not in page
    assert _shift_cash(cashier) == before - owed
    assert [int(r["amount"]) for r in sorted(db["refunds"].find({"payment": pay}), key=lambda r: r["n"])] == [
        10_000, left]

    # nothing is left: the page's own check says so (422), and past it billing's 409 names who gave it back
    again = cashier.post(f"/invoices/{iid}/refund", data={**form, "txn": "x" * 32, "confirm": "refund"})
    assert again.status_code == 422 and db["refunds"].count_documents({"payment": pay}) == 2
    assert "Khoản thanh toán này không còn gì để hoàn: đã được hoàn rồi" in again.get_data(as_text=True)
    r = cashier.post(f"/invoices/{iid}/refund", data={**form, "amount": "", "txn": "y" * 32, "confirm": "refund"})
    assert r.status_code == 409 and "Khoản tiền này đã được hoàn" in r.get_data(as_text=True)
    assert db["refunds"].count_documents({"payment": pay}) == 2


def test_an_invoice_bhyt_pays_in_full_is_cancelled_from_its_page_and_the_day_does_not_count_it(
        portal, billing, dev_key):
    url, _db = billing
    cov = {"resourceType": "Coverage", "status": "active", "subscriberId": "DN4010123456789",
           "identifier": [{"system": "https://fhir.sen.vn/sid/bhyt", "value": "DN4010123456789"}],
           "beneficiary": {"reference": f"Patient/{HOA}"}, "payor": [{"display": "Bảo hiểm xã hội Việt Nam"}]}
    r = httpx.post(f"{url}/fhir/Coverage", content=json.dumps(cov), headers=_auth(dev_key, "cashier", CLINIC))
    assert r.status_code == 201, r.text
    inv = _invoice(url, dev_key, HOA, "sieu-am-bung")
    assert inv["status"] == "balanced" and inv["totalNet"]["value"] == 0  # settled when issued
    code = _reference(inv)
    cashier = portal_signed_in(portal, "cashier")
    page = cashier.get(f"/invoices/{inv['id']}").get_data(as_text=True)
    assert 'data-testid="covered">✓ Bảo hiểm chi trả toàn bộ' in page and 'id="cancel-box"' in page
    r = cashier.post(f"/invoices/{inv['id']}/cancel", data={"csrf_token": csrf_token(page), "cancel-reason": ""})
    assert r.status_code == 422 and 'id="cancel-box" open' in r.get_data(as_text=True)
    sent = {"csrf_token": csrf_token(page), "cancel-reason": "Nhập nhầm thẻ BHYT"}
    r = cashier.post(f"/invoices/{inv['id']}/cancel", data=sent)  # the first press: the step, nothing cancelled
    assert r.status_code == 200 and 'name="confirm" value="invoice-cancel"' in r.get_data(as_text=True)
    assert "Nhập nhầm thẻ BHYT</textarea>" in r.get_data(as_text=True)
    assert 'data-testid="cancelled"' not in cashier.get(f"/invoices/{inv['id']}").get_data(as_text=True)
    r = cashier.post(f"/invoices/{inv['id']}/cancel", data={**sent, "confirm": "invoice-cancel"})
    assert r.status_code == 302, r.get_data(as_text=True)[-2000:]
    page = cashier.get(r.headers["Location"]).get_data(as_text=True)
    assert 'data-testid="cancelled"' in page and 'data-testid="cancel-reason">Nhập nhầm thẻ BHYT<' in page
    assert 'data-testid="covered"' not in page and '<details class="card" id="cancel-box"' not in page
    receipt = cashier.get(f"/invoices/{inv['id']}/receipt").get_data(as_text=True)
    assert 'data-testid="receipt-cancelled">Hóa đơn này đã bị hủy sau khi thanh toán xong' in receipt
    day = datetime.now(ZoneInfo("Asia/Ho_Chi_Minh")).strftime("%d/%m/%Y")
    report = cashier.get(f"/shift/daily-report.csv?day={day}")
    assert report.status_code == 200 and code not in report.get_data(as_text=True) \
        and inv["id"] not in report.get_data(as_text=True)


def test_the_cashiers_daily_csv_names_the_facility_in_vietnamese(portal, billing, ehr, dev_key):
    day = vn_day_with_room().strftime("%d/%m/%Y")  # the cash's day in Vietnam, the report's too
    url, _db = billing
    inv = _invoice(url, dev_key, TAM, "kham-benh")
    cashier = portal_signed_in(portal, "cashier")
    _open_shift(cashier)
    shown = cashier.get(f"/invoices/{inv['id']}").get_data(as_text=True)
    r = cashier.post(f"/invoices/{inv['id']}/cash", data={
        "cash-amount": str(inv["totalNet"]["value"]), "csrf_token": csrf_token(shown),
        "cash-txn": _field(shown, "cash-txn")})
    assert r.status_code == 302
    # the cashier's EHR access is as it was: no Organization reads
    assert httpx.get(f"{ehr}/fhir/Organization", headers=_auth(dev_key, "cashier", CLINIC)).status_code == 403
    report = cashier.get(f"/shift/daily-report.csv?day={day}")
    assert report.status_code == 200
    rows = list(csv.reader(io.StringIO(report.data.decode("utf-8-sig"))))
    header = rows[0]
    # billing's columns less its reference (folded into the transaction's, 717a8bc) and its facility_name (the name
    # is in "Cơ sở"), who and which shift by name, and the closed shifts' six figures: every one named, in Vietnamese
    assert header == ["Loại dòng", "Thời gian", "Giao dịch (trên sao kê ngân hàng hoặc sổ quỹ) hoặc khoản tổng",
                      "Nhận qua", "Hình thức", "Hóa đơn", "Cơ sở", "Số tiền (đồng)", "Khớp với hóa đơn", "Kết quả",
                      "Thu ngân", "Ca làm việc", "Ghi chú", "Tiền mặt dự kiến (đồng)", "Tiền mặt đếm được (đồng)",
                      "Chênh lệch tiền mặt (đồng)", "Chuyển khoản dự kiến (đồng)", "Chuyển khoản theo sao kê (đồng)",
                      "Chênh lệch chuyển khoản (đồng)", "Ghi nhận sau khi ca đã đóng",
                      "Tiền mặt ghi nhận sau khi ca đóng (đồng)", "Chuyển khoản ghi nhận sau khi ca đóng (đồng)",
                      "Thời gian giao dịch tại ngân hàng", "Tính vào tổng của ngày"]
    mine = [row for row in rows if _reference(inv) in row]
    assert mine and mine[0][header.index("Cơ sở")] == CLINIC_NAME
    assert CLINIC not in report.get_data(as_text=True)
