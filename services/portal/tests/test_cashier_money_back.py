"""Money owed back to patients on one list, a covered invoice cancelled, and the cashier's CSV naming
the facility (web/cashier.py, web/daily_report.py), billing and the EHR faked as they answer
(specs/billing.yaml: ``GET /payments/refund-tasks?include=credits``, ``POST /payments/{payment}/refund``,
the daily CSV's ``facility_name``)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from sen_portal.web.backend import BackendError

from services.portal.tests.cashier_support import daily_csv_from_billing
from tests.support import csrf_token, flashed_steps, portal_app, portal_signed_in

CREDIT = {"kind": "credit", "payment": "cashier:c1", "invoice": "inv-over", "reference": "HD7K2M9QX4C",
          "amount": 11000, "credit": 11000, "reason": "invoice-overpaid", "facility": "tyt-my-hiep",
          "createdAt": "2026-12-05T09:05:00+07:00", "receivedAt": "2026-12-05T09:05:00+07:00", "channel": "cash",
          "patient": None, "subject": "Patient/bn-0101", "refunded": False}
TASK = {"kind": "task", "payment": "sepay:t2", "invoice": "inv-gone", "reference": "HD00000000C", "amount": 150000,
        "reason": "invoice-cancelled", "facility": "tyt-my-hiep", "receivedAt": "2026-12-05T08:10:00+07:00",
        "channel": "transfer", "provider": "sepay", "description": "", "refunded": False}


@pytest.fixture()
def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    return portal_app(tmp_path, monkeypatch, SEN_PORTAL_CACHE_SECONDS="0")


@pytest.fixture()
def billing(monkeypatch):
    from sen_portal.web import cashier

    state: dict[str, Any] = {"asked": [], "rows": [TASK, CREDIT], "refuse": None, "names": []}

    def answer(method, path, body=None, params=None, key=None):
        state["asked"].append((method, path, dict(params or {}), body, key))
        if (method, path) == ("GET", "/payments/refund-tasks"):
            return {"tasks": state["rows"]}
        if method == "POST" and path.endswith("/refund"):
            if state["refuse"] is not None:
                raise state["refuse"]
            state["rows"] = [r for r in state["rows"] if r["payment"] != path.split("/")[2]]
            if state.get("started"):  # a give-back another cashier started: recorded at their amount
                return {"payment": path.split("/")[2], **state["started"]}
            return {"payment": path.split("/")[2], "amount": (body or {}).get("amount", 150000)}
        return {}

    def names(ids):
        state["names"].append(list(ids))
        return {"bn-0101": "Lê Văn Tâm"}

    def invoices(service, path, params=None, **_kw):  # an older billing's task names no subject: its Invoice's
        state["searched"] = (service, path, dict(params or {}))
        return {"resourceType": "Bundle", "entry": [{"resource": {
            "resourceType": "Invoice", "id": "inv-gone", "subject": {"reference": "Patient/bn-0101"}}}]}

    monkeypatch.setattr(cashier, "_json", answer)
    monkeypatch.setattr(cashier, "patient_names", names)
    monkeypatch.setattr(cashier, "fhir_get", invoices)
    return state


def row(page: str, kind: str) -> str:
    return re.search(rf'data-testid="refund-row-{kind}">(.*?)</tr>', page, re.S).group(1)


def cell(html: str, testid: str) -> str:
    found = re.search(rf'data-testid="{testid}"[^>]*>(.*?)</(?:td|a)>', html, re.S).group(1)
    return re.sub(r"<[^>]+>", "", found).strip()


def test_an_overpaid_credit_is_listed_with_the_tasks_and_given_back_from_the_list(app, billing):
    client = portal_signed_in(app, "cashier")
    page = client.get("/refunds").get_data(as_text=True)
    assert billing["asked"][-1][2] == {"limit": "50", "include": "credits"}
    credit = row(page, "credit")
    assert cell(credit, "refund-task-amount") == "11.000\u00a0₫"
    assert cell(credit, "refund-task-reason") == "Trả thừa: tiền ghi có của người bệnh"
    assert cell(credit, "refund-task-patient") == "Lê Văn Tâm"  # billing kept no name: the EHR's, one request
    assert billing["names"] == [["bn-0101", "bn-0101"]]
    assert billing["searched"] == ("billing", "/fhir/Invoice", {"_id": "inv-gone", "_elements": "subject"})
    assert cell(credit, "refund-task-received") == "05/12/2026 09:05"
    assert cell(credit, "refund-task-invoice") == "HD7K2M9QX4C" and 'href="/invoices/inv-over"' in credit
    assert 'name="amount" value="11000"' in credit and "Hoàn 11.000\u00a0₫" in credit
    assert "Trả lại tiền người bệnh trả thừa" in credit  # the reason it starts with
    task = row(page, "task")
    # a late transfer's row names the patient too (its invoice's subject), as the credit's row does
    assert cell(task, "refund-task-patient") == "Lê Văn Tâm" and 'name="amount"' not in task  # all of it
    assert "Trả lại tiền chuyển vào hóa đơn đã hủy" in task
    # billing's order
    assert page.index('data-testid="refund-row-task"') < page.index('data-testid="refund-row-credit"')

    txn = re.search(r'name="txn" value="([^"]*)"', credit).group(1)
    form = {"csrf_token": csrf_token(page), "payment": "cashier:c1", "txn": txn, "amount": "11000",
            "method": "cash", "reason": "Trả lại tiền thừa"}
    r = client.post("/refunds/give-back", data=form)  # the first press: the step, nothing given back
    shown = r.get_data(as_text=True)
    assert r.status_code == 200 and not [a for a in billing["asked"] if a[0] == "POST"]
    credit = row(shown, "credit")
    assert "<details open" in credit and 'name="confirm" value="give-back"' in credit
    assert "Sẽ hoàn 11.000\u00a0₫ cho người bệnh bằng tiền mặt." in credit
    assert f'name="txn" value="{txn}"' in credit and "Trả lại tiền thừa</textarea>" in credit  # all kept, its key too
    assert 'data-testid="confirm-step"' not in row(shown, "task") and shown.count('data-testid="confirm-step"') == 1
    r = client.post("/refunds/give-back", data={**form, "confirming": "give-back"})  # the step without the tick
    assert r.status_code == 400 and "Hãy đánh dấu vào ô để xác nhận, hoặc quay lại." in r.get_data(as_text=True)
    assert not [a for a in billing["asked"] if a[0] == "POST"]
    r = client.post("/refunds/give-back", data={**form, "confirming": "give-back", "confirm": "give-back"})
    assert r.status_code == 302 and r.headers["Location"].endswith("/refunds")
    assert flashed_steps(client) == [("/refunds", "refunded=1")]  # said once, by the list
    assert len([a for a in billing["asked"] if a[0] == "POST"]) == 1
    method, path, _params, body, key = billing["asked"][-1]
    assert (method, path) == ("POST", "/payments/cashier:c1/refund")
    assert body == {"reason": "Trả lại tiền thừa", "method": "cash", "amount": 11000}
    assert key.startswith("portal-refund-")
    after = client.get(r.headers["Location"]).get_data(as_text=True)
    assert 'data-testid="given-back">Đã ghi nhận hoàn tiền.' in after
    assert 'data-testid="refund-row-credit"' not in after


def test_a_give_back_refused_or_without_a_reason_is_said_on_the_list(app, billing):
    client = portal_signed_in(app, "cashier")
    page = client.get("/refunds").get_data(as_text=True)
    form = {"csrf_token": csrf_token(page), "payment": "cashier:c1", "txn": "k1", "amount": "11000",
            "method": "transfer", "reason": ""}
    r = client.post("/refunds/give-back", data=form)
    body = r.get_data(as_text=True)
    assert r.status_code == 422 and "Vui lòng sửa các ô được đánh dấu." in body
    credit = row(body, "credit")
    assert "<details open" in credit and 'aria-invalid="true"' in credit and "Nêu lý do." in credit
    assert not [a for a in billing["asked"] if a[0] == "POST"]
    # another cashier gave it back a moment before: billing's 409, said in Vietnamese
    billing["refuse"] = BackendError("refused", "billing", 409, "this invoice's credit (money paid over what was "
                                     "owed) was given back already: nothing is left to refund",
                                     code="Conflict", extra={"refundable": 0, "why": "balanced"})
    form = {**form, "confirm": "give-back"}
    r = client.post("/refunds/give-back", data={**form, "reason": "Trả lại tiền thừa"})
    assert r.status_code == 409
    assert ("Tiền thừa của hóa đơn này (phần trả quá số phải trả) đã được hoàn rồi: không còn gì để hoàn."
            in r.get_data(as_text=True))
    billing["refuse"] = BackendError("refused", "billing", 422, "at most 6000 đồng of this invoice's credit is "
                                     "left to refund", code="Unprocessable Content",
                                     extra={"refundable": 6000, "why": "balanced"})
    r = client.post("/refunds/give-back", data={**form, "reason": "Trả lại tiền thừa"})
    assert "Tiền thừa của hóa đơn này chỉ còn 6.000\u00a0₫ để hoàn." in r.get_data(as_text=True)


def test_the_list_in_english(app, billing):
    page = portal_signed_in(app, "cashier", lang="en").get("/refunds").get_data(as_text=True)
    credit = row(page, "credit")
    assert "Paid more than owed: the patient&#39;s credit" in credit or "Paid more than owed: the patient's credit" \
        in credit
    assert "Give back 11.000\u00a0₫" in credit and "what was paid over the amount owed" in page


def test_a_covered_invoice_is_cancellable_unless_a_payment_on_it_is_kept():
    from sen_portal.web.cashier import cancellable

    covered = {"status": "balanced", "owed": 0, "paid": 0, "balanceDue": 0, "credit": 0}
    assert cancellable(covered)
    assert not cancellable({**covered, "paid": 20000, "credit": 20000})  # refund it first
    assert cancellable({**covered, "paid": 20000, "credit": 0})  # given back
    assert not cancellable({"status": "balanced", "owed": 39000, "paid": 39000, "balanceDue": 0, "credit": 0})
    assert cancellable({"status": "issued", "owed": 39000, "paid": 0, "balanceDue": 39000, "credit": 0})


DAILY = (
    "kind,time,id,provider,channel,invoice,facility,amount,matched,outcome,reference,cashier,shift,note,"
    "facility_name\r\n"
    "payment,2026-12-05T07:07:29+00:00,cashier:c1,cashier,cash,inv-over,tyt-my-hiep,50000,yes,"
    "applied,HD7K2M9QX4C,portal-cashier,sh-1,,Trạm Y tế xã Mỹ Hiệp\r\n"
    "total,2026-12-05,net,,,,,50000,,,,,,,\r\n"
).encode()


def test_the_cashiers_csv_names_the_facility_by_billings_name_when_the_directory_cannot(app, monkeypatch):
    from sen_portal.web import daily_report

    daily_csv_from_billing(monkeypatch, DAILY, {})  # the EHR refuses a cashier's Organization reads
    r = portal_signed_in(app, "cashier").get("/shift/daily-report.csv?day=05/12/2026")
    lines = r.get_data(as_text=True).lstrip("\ufeff").splitlines()
    header, payment = lines[0].split(","), lines[1].split(",")
    assert "facility_name" not in lines[0] and len(header) == 14 and header[6] == "Cơ sở"
    assert payment[6] == "Trạm Y tế xã Mỹ Hiệp" and payment[5] == "HD7K2M9QX4C"
    assert "tyt-my-hiep" not in r.get_data(as_text=True)
    # the directory's name first where it has one; billing's without either: the id, as before
    _h, rows = daily_report.readable(DAILY, {"tyt-my-hiep": "TYT Mỹ Hiệp"})
    assert rows[0][6] == "TYT Mỹ Hiệp"
    _h, rows = daily_report.readable(DAILY.replace("Trạm Y tế xã Mỹ Hiệp".encode(), b""))
    assert rows[0][6] == "tyt-my-hiep"


def test_each_row_is_given_back_the_way_it_came_by_default(app, billing):
    """A cash credit starts at "Tiền mặt", a transfer at "Chuyển khoản" (the cashier may change it)."""
    page = portal_signed_in(app, "cashier").get("/refunds").get_data(as_text=True)
    selects = re.findall(r'<select[^>]*id="method-\d+"[^>]*>.*?</select>', page, re.S)
    chosen = [re.search(r'<option selected value="(\w+)"', s).group(1) for s in selects]
    assert chosen == ["transfer", "cash"], chosen  # billing's order: the SePay transfer's task, the cash credit


def test_a_task_billing_names_the_patient_of_needs_no_invoice_search(app, billing):
    billing["rows"] = [{**TASK, "subject": "Patient/bn-0101", "reason": "invoice-balanced"}]
    page = portal_signed_in(app, "cashier").get("/refunds").get_data(as_text=True)
    assert cell(row(page, "task"), "refund-task-patient") == "Lê Văn Tâm"
    assert "searched" not in billing and billing["names"] == [["bn-0101"]]


LATE = {"id": "standard:t9", "provider": "standard", "channel": "transfer", "amount": 100000, "matched": True,
        "outcome": "late-balanced", "receivedAt": "2026-12-05T09:30:00+07:00", "lateInvoice": "inv-1"}


def _payments_box(app, s: dict) -> str:
    from flask import render_template

    with app.test_request_context():
        return render_template("_invoice_payments.html", s=s, iid="inv-1", pid="bn-0101")


def test_a_late_transfer_given_back_says_so_on_the_invoice_page(app):
    waiting = _payments_box(app, {"payments": [{**LATE, "refundable": 100000}], "refunds": []})
    assert "Đến sau khi hóa đơn đã thanh toán: cần hoàn lại" in waiting
    done = _payments_box(app, {"payments": [{**LATE, "refundable": 0, "refunded": 100000}], "refunds": [
        {"payment": "standard:t9", "amount": 100000, "at": "2026-12-05T10:12:00+07:00", "channel": "transfer",
         "reason": "chuyển trùng"}]})
    outcome = cell(done, "payment-outcome")
    assert outcome == "Đã hoàn 100.000\u00a0₫ (05/12/2026 10:12)" and "cần hoàn lại" not in done


TRANSACTION = "Giao dịch (trên sao kê ngân hàng hoặc sổ quỹ) hoặc khoản tổng"
BILLING_COLUMNS = ("kind,time,id,provider,channel,invoice,facility,amount,matched,outcome,reference,cashier,shift,"
                   "note,facility_name,cashier_name,shift_opened_at")


def _readable(app, columns: str, *lines: str) -> tuple[list[str], list[list[str]]]:
    """Billing's CSV (its columns, then ``columns``) as the portal's Vietnamese page writes it."""
    from sen_portal.web import daily_report

    body = "\r\n".join([f"{BILLING_COLUMNS},{columns}", *lines]) + "\r\n"
    with app.test_request_context():
        return daily_report.readable(body.encode())


def test_the_daily_csv_says_a_late_transfer_was_given_back(app):
    header, rows = _readable(
        app, "refunded_amount,refunded_at",
        "payment,2026-12-05T09:30:00+07:00,standard:t9,standard,transfer,inv-1,tyt-my-hiep,100000,yes,"
        "late-balanced,HD1,,,refund task: invoice-balanced,,,,100000,2026-12-05T10:12:00+07:00",
        "payment,2026-12-05T09:40:00+07:00,standard:t8,standard,transfer,inv-2,tyt-my-hiep,50000,yes,"
        "late-cancelled,HD2,,,refund task: invoice-cancelled,,,,,")
    assert "refunded_amount" not in header and len(header) == len(rows[0])
    outcome, note = header.index("Kết quả"), header.index("Ghi chú")
    assert (rows[0][outcome], rows[0][note]) == ("Đã hoàn 100.000\u00a0₫ (05/12/2026 10:12)",
                                                 "Đã hoàn tiền: hóa đơn đã được thanh toán trước đó")
    assert (rows[1][outcome], rows[1][note]) == ("Đến sau khi hóa đơn đã hủy: cần hoàn lại",
                                                 "Cần hoàn tiền: hóa đơn đã hủy")


def test_the_daily_csv_names_the_shifts_a_transfer_counts_under(app):
    """A webhook transfer has no cashier: "Ca làm việc" names each shift of its facility open when it
    came (billing's ``shift_opened_at`` and ``shift_cashier_name``), as /shift counts it."""
    header, rows = _readable(
        app, "refunded_amount,refunded_at,shift_cashier_name",
        "payment,2026-12-05T09:30:00+07:00,standard:t9,standard,transfer,inv-1,tyt-my-hiep,100000,yes,"
        "applied,HD1,,s1 s2,,,,2026-12-05T07:02:00+07:00 2026-12-05T07:05:00+07:00,,,Lê Thị Thu | Trần Bình",
        "payment,2026-12-05T09:40:00+07:00,cashier:c1,cashier,cash,inv-2,tyt-my-hiep,50000,yes,applied,HD2,"
        "portal-cashier,s1,,,Lê Thị Thu,2026-12-05T07:02:00+07:00,,,Lê Thị Thu")
    shift, who = header.index("Ca làm việc"), header.index("Thu ngân")
    assert "shift_cashier_name" not in header and len(header) == len(rows[0])
    assert (rows[0][shift], rows[0][who]) == ("05/12/2026 07:02 · Lê Thị Thu; 05/12/2026 07:05 · Trần Bình", "")
    assert (rows[1][shift], rows[1][who]) == ("05/12/2026 07:02 · Lê Thị Thu", "Lê Thị Thu")


def test_the_daily_csvs_reference_is_the_banks_not_the_invoices(app):
    """The transaction column is what the cashier matches against the statement (billing's ``bank_reference``),
    on a refund's row too, and cash as the cash book has it (review 8: it was billing's payment id); "Hóa đơn"
    keeps the HD… code. From an older billing: a transfer's transaction. A refund's row is money going out
    (review 9: it showed the transfer it gives back as its own transaction, "Nhận qua: Chuyển khoản", read as
    money received): how it went out, by its own channel, and which transaction it gives back."""
    lines = ["payment,2026-12-05T09:30:00+07:00,sepay:t9,sepay,transfer,inv-1,tyt-my-hiep,100000,yes,"
             "late-balanced,HD1,,,refund task: invoice-balanced,,,,,,,FT26339123456",
             "payment,2026-12-05T09:40:00+07:00,cashier:c1,cashier,cash,inv-2,tyt-my-hiep,50000,yes,applied,HD2,"
             "portal-cashier,s1,,,Lê Thị Thu,2026-12-05T07:02:00+07:00,,,Lê Thị Thu,",
             "refund,2026-12-05T10:00:00+07:00,sepay:t9,cashier,transfer,inv-1,tyt-my-hiep,-100000,,refunded,,"
             "portal-cashier,,chuyển trùng,,Lê Thị Thu,,,,,FT26339123456"]
    header, rows = _readable(app, "refunded_amount,refunded_at,shift_cashier_name,bank_reference", *lines)
    invoice, reference = header.index("Hóa đơn"), header.index(TRANSACTION)
    assert "bank_reference" not in header and "Mã tham chiếu" not in header and len(header) == len(rows[0])
    assert [(r[invoice], r[reference]) for r in rows] == [
        ("HD1", "FT26339123456"), ("HD2", "Tiền mặt · Lê Thị Thu"),
        ("HD1", "Chuyển khoản trả lại · hoàn cho giao dịch FT26339123456")]
    assert [r[header.index("Nhận qua")] for r in rows] == ["SePay", "Tiền mặt", "Hoàn qua: Chuyển khoản"]
    # given back in cash from the drawer: paid out by the cashier, the transfer it gives back named
    cash_back = lines[2].replace(",cashier,transfer,", ",cashier,cash,")
    header, rows = _readable(app, "refunded_amount,refunded_at,shift_cashier_name,bank_reference", cash_back)
    assert rows[0][header.index(TRANSACTION)] == "Chi tiền mặt · Lê Thị Thu · hoàn cho giao dịch FT26339123456"
    assert rows[0][header.index("Nhận qua")] == "Hoàn qua: Tiền mặt"
    # an older billing (no bank_reference column): a transfer's transaction id
    header, rows = _readable(app, "refunded_amount,refunded_at,shift_cashier_name",
                             *(line.rsplit(",", 1)[0] for line in lines))
    assert [r[header.index(TRANSACTION)] for r in rows] == ["t9", "Tiền mặt · Lê Thị Thu", "Chuyển khoản trả lại"]


def test_finishing_a_give_back_another_cashier_started_says_who_and_what_to_hand_over(app, billing):
    """An's give-back of 6.000 ₫ of the credit stopped before it was recorded; the list shows the 5.000 ₫
    left and Bình gives it back: billing records An's 6.000 ₫ under Bình (``startedBy``), and the list
    after says An started it and that 6.000 ₫ is what to hand over, once."""
    billing["rows"] = [{**CREDIT, "amount": 5000}]
    billing["started"] = {"amount": 6000, "cashier": "portal-cashier", "reason": "Trả một phần tiền thừa",
                          "startedBy": {"cashier": "thu-ngan-an", "cashierName": "Nguyễn Thị An", "at": None}}
    client = portal_signed_in(app, "cashier")
    page = client.get("/refunds").get_data(as_text=True)
    form = {"csrf_token": csrf_token(page), "payment": "cashier:c1", "txn": "k9", "amount": "5000",
            "method": "cash", "reason": "Trả lại tiền thừa", "confirming": "give-back", "confirm": "give-back"}
    r = client.post("/refunds/give-back", data=form)
    assert r.status_code == 302
    after = client.get(r.headers["Location"]).get_data(as_text=True)
    note = cell(after.replace("</div>", "</td>"), "refund-finished")
    assert note == ("Nguyễn Thị An đã bắt đầu khoản hoàn tiền này; khoản hoàn được ghi cho bạn: hãy trả người bệnh "
                    "6.000\u00a0₫ (số tiền đã quyết định khi bắt đầu)."), note
    assert 'data-testid="refund-finished"' not in client.get("/refunds").get_data(as_text=True)  # said once
    # a refund one cashier did alone: no such note
    billing["started"] = None
    billing["rows"] = [TASK]
    r = client.post("/refunds/give-back", data={**form, "payment": "sepay:t2", "txn": "k10", "amount": ""})
    assert 'data-testid="refund-finished"' not in client.get(r.headers["Location"]).get_data(as_text=True)


@pytest.mark.parametrize(("refusal", "status"), [
    (BackendError("down", "billing"), 503), (BackendError("slow", "billing"), 503),
    (BackendError("refused", "billing", 403, "this needs one of the roles admin, cashier"), 403),
    # none such, and another facility's payment alike: billing answers it as one it does not hold
    (BackendError("refused", "billing", 404, "no payment cashier:c1"), 404),
    (BackendError("refused", "billing", 409, "refunded already"), 409)])
def test_a_give_back_billing_refused_or_did_not_answer_has_the_pages_status_for_it(app, billing, refusal, status):
    """Billing down, or refusing a payment (another facility's is one it does not hold: 404), was a 409 page
    (as if it conflicted) on the list (and the invoice page's refund, the same helper): the status says which,
    the sentence is as before."""
    client = portal_signed_in(app, "cashier")
    page = client.get("/refunds").get_data(as_text=True)
    form = {"csrf_token": csrf_token(page), "payment": "cashier:c1", "txn": "k1", "amount": "11000",
            "method": "transfer", "reason": "Trả lại tiền thừa", "confirm": "give-back"}
    billing["refuse"] = refusal
    assert client.post("/refunds/give-back", data=form).status_code == status
