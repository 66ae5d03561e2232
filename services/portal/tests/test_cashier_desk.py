"""The cashier's desk pages (web/cashier.py) with the Flask test client, billing and the EHR faked as
they answer: the queue shows what the patient pays (after BHYT), the amount boxes read amounts typed
as the pages write them, the unmatched transfers' choices name the patient (the same amount first),
and the invoice page's QR follows the balance due after a partial payment."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from sen_portal.web.backend import BackendError

from tests.support import csrf_token, portal_app, portal_signed_in

REF = "urn:sen:billing:payment-reference"


@pytest.fixture()
def client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A cashier signed in (Vietnamese pages), nothing kept between requests."""
    return portal_signed_in(portal_app(tmp_path, monkeypatch, SEN_PORTAL_CACHE_SECONDS="0"), "cashier")


def bundle(resources: list[dict[str, Any]]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": r} for r in resources]}


def invoice(iid: str, pid: str, gross: int, net: int | None = None, ref: str = "HD7K2M9QX4C") -> dict[str, Any]:
    inv = {"resourceType": "Invoice", "id": iid, "status": "issued", "date": "2026-12-05T09:00:00+07:00",
           "subject": {"reference": f"Patient/{pid}"}, "totalGross": {"value": gross, "currency": "VND"},
           "identifier": [{"system": REF, "value": ref}]}
    if net is not None:
        inv["totalNet"] = {"value": net, "currency": "VND"}
    return inv


PATIENTS = {"pa": ("Nguyễn", ["Văn", "A"]), "pb": ("Trần", ["Thị", "Bích"])}


@pytest.fixture()
def ehr(monkeypatch) -> list[dict[str, Any]]:
    """The EHR's Patient search by ``_id`` (the names); returns the searches asked."""
    from sen_portal.web import patients as patient_module

    asked: list[dict[str, Any]] = []

    def fhir_get(service, path, params=None, **_kw):
        assert (service, path) == ("ehr", "/fhir/Patient")
        asked.append(dict(params or {}))
        ids = str((params or {}).get("_id", "")).split(",")
        return bundle([{"resourceType": "Patient", "id": p, "name": [{"family": f, "given": g}]}
                       for p, (f, g) in PATIENTS.items() if p in ids])

    monkeypatch.setattr(patient_module, "fhir_get", fhir_get)
    return asked


def test_the_queue_shows_what_the_patient_pays_after_bhyt(client, monkeypatch, ehr):
    from sen_portal.web import cashier

    invoices = [invoice("inv-a", "pa", 384000, 92800),  # BHYT 80 %: the patient pays 92.800
                invoice("inv-b", "pb", 39000, ref="HD00000000A")]  # no net given: the gross is what is owed
    monkeypatch.setattr(cashier, "fhir_get", lambda *a, **k: bundle(invoices))
    monkeypatch.setattr(cashier, "shared_get", lambda *a, **k: {})  # no summary: the Invoice's total for the patient
    page = client.get("/invoices").get_data(as_text=True)
    amounts = re.findall(r'data-testid="invoice-amount">([^<]*)<', page)
    assert amounts == ["92.800\u00a0₫", "39.000\u00a0₫"]
    assert re.findall(r'data-testid="invoice-gross">([^<]*)<', page) == ["Tổng trước BHYT 384.000\u00a0₫"]
    assert "Còn phải trả" in page and "Số tiền phải trả" not in page and len(ehr) == 1
    rows = cashier.queue_rows(invoices, {}, {})
    assert [r["amount"] for r in rows] == [92800, 39000] and rows[1]["gross"] is None
    full = invoice("inv-c", "pa", 39000, 0)  # BHYT pays it all: nothing for the patient, not the gross
    assert cashier.patient_pays(full) == 0


def _desk(balance: int = 39000, paid: int = 0, qr: dict[str, Any] | None = None) -> Any:
    inv = invoice("inv-a", "pa", 39000)

    def shared_get(service, path, params=None, **_kw):
        assert service == "billing"
        return {"status": "issued", "owed": 39000, "paid": paid, "balanceDue": balance, "reference": "HD7K2M9QX4C",
                "resource": inv, "qr": qr, **({} if path.endswith("/desk") else {"resource": None})}

    return shared_get


def test_cash_typed_as_the_pages_write_amounts_is_taken(client, monkeypatch, ehr):
    from sen_portal.web import cashier

    sent: list[tuple[str, str, Any]] = []
    monkeypatch.setattr(cashier, "shared_get", _desk())
    monkeypatch.setattr(cashier, "_json", lambda method, path, body=None, params=None, key=None: sent.append(
        (method, path, body)) or {})
    page = client.get("/invoices/inv-a?p=pa").get_data(as_text=True)
    # the cash's transactionId is made with the page: a double click sends it twice, billing records one
    txn = re.search(r'name="cash-txn" type="hidden" value="([0-9a-f]{32})"', page).group(1)
    other = client.get("/invoices/inv-a?p=pa").get_data(as_text=True)
    assert txn not in other  # a new page is a new payment
    client.post("/invoices/inv-a/cash?p=pa", data={"cash-amount": "39.000", "cash-txn": txn,
                                                   "csrf_token": csrf_token(page)})
    client.post("/invoices/inv-a/cash?p=pa", data={"cash-amount": "39.000", "cash-txn": txn,
                                                   "csrf_token": csrf_token(page)})
    assert [s[2]["transactionId"] for s in sent] == [txn, txn]
    sent.clear()
    box = re.search(r'<input[^>]*name="cash-amount"[^>]*>', page).group(0)
    assert 'value="39.000"' in box and 'inputmode="numeric"' in box and 'type="text"' in box  # not type=number
    token = csrf_token(page)
    for typed in ("50.000", "50.000 ₫", "50,000", "50000"):  # all of it kept (the excess the patient's credit)
        r = client.post("/invoices/inv-a/cash?p=pa", data={"cash-amount": typed, "cash-keep_credit": "y",
                                                           "csrf_token": token})
        assert r.status_code == 302, typed
        assert sent[-1][:2] == ("POST", "/payments/cash") and sent[-1][2]["amount"] == 50000, typed
    sent.clear()
    for typed, message in (("abc", "Hãy ghi số tiền bằng đồng, ví dụ 50.000."), ("50.5", "ví dụ 50.000"),
                           ("", "Nhập số tiền"), ("  ", "Nhập số tiền"), ("0", "0 đồng")):
        r = client.post("/invoices/inv-a/cash?p=pa", data={"cash-amount": typed, "csrf_token": token})
        body = r.get_data(as_text=True)
        assert r.status_code == 422 and message in body, typed
        assert "Not a valid integer" not in body
        kept = re.search(r'<input[^>]*name="cash-amount"[^>]*value="' + re.escape(typed) + '"', body)
        assert kept or not typed.strip()
    assert sent == []  # no payment for what is no amount
    r = client.post("/invoices/inv-a/cash?p=pa", data={"cash-amount": "abc", "csrf_token": token})
    errors = re.findall(r'<p class="error" id="cash-amount-error">([^<]*)</p>', r.get_data(as_text=True))
    assert errors == ["Hãy ghi số tiền bằng đồng, ví dụ 50.000."]  # one message, not also a range's


def test_refund_and_shift_amounts_read_the_same_way(client, monkeypatch, ehr):
    from sen_portal.web import cashier

    sent: list[tuple[str, str, Any]] = []
    shift_open = False

    def billing(method, path, body=None, params=None, key=None):
        sent.append((method, path, body, key))
        if (method, path) == ("GET", "/payments/shifts/current"):
            if not shift_open:
                raise BackendError("refused", "billing", 404, "no shift open")
            return {"openedAt": "2026-12-05T07:00:00+07:00", "openingCash": 1500000,
                    "expected": {"cashTaken": 0, "cashRefunded": 1000000, "cash": 500000, "transfers": 150000}}
        if path == "/payments/shifts/current/close":
            return {"expected": {"cash": 0, "transfers": 0}, "counted": {"cash": 0, "transfers": 0},
                    "difference": {"cash": 0, "transfers": 0}}
        return {}

    monkeypatch.setattr(cashier, "_json", billing)
    page = client.get("/shift").get_data(as_text=True)
    box = re.search(r'<input[^>]*inputmode="numeric"[^>]*name="open-opening_cash"[^>]*>', page).group(0)
    assert 'value="0"' not in box  # asked, not assumed: the cashier types what the drawer holds
    token = csrf_token(page)
    r = client.post("/shift", data={"which": "open", "open-opening_cash": "1.500.000 ₫", "csrf_token": token})
    assert r.status_code == 302 and sent[-1][2] == {"openingCash": 1500000}
    shift_open = True
    r = client.post("/shift", data={"which": "close", "confirm": "shift-close", "close-counted_cash": "500 000",
                                    "close-counted_transfers": "150.000", "csrf_token": token})
    posted = [s for s in sent if s[0] == "POST"]  # the page then reads the last closed shifts (a GET)
    assert r.status_code == 200 and posted[-1][2] == {"countedCash": 500000, "countedTransfers": 150000}
    sent.clear()
    r = client.post("/shift", data={"which": "close", "confirm": "shift-close", "close-counted_cash": "năm trăm",
                                    "close-counted_transfers": "0", "csrf_token": token})
    assert r.status_code == 422 and "ví dụ 50.000" in r.get_data(as_text=True)
    assert [s for s in sent if s[0] == "POST"] == []

    payments = [{"id": "pay-1", "receivedAt": "2026-12-05T09:05:00+07:00", "channel": "cash", "amount": 39000,
                 "outcome": "applied"}]

    def desk(service, path, params=None, **_kw):
        return {"status": "balanced", "owed": 39000, "paid": 39000, "balanceDue": 0, "reference": "HD7K2M9QX4C",
                "resource": invoice("inv-a", "pa", 39000), "qr": None, "payments": payments}

    monkeypatch.setattr(cashier, "shared_get", desk)
    page = client.get("/invoices/inv-a?p=pa").get_data(as_text=True)
    form_key = re.search(r'<input id="txn" name="txn" type="hidden" value="([0-9a-f]{32})"', page).group(1)
    keys = []
    for typed, amount in (("20.000", 20000), ("", None), ("", None)):
        r = client.post("/invoices/inv-a/refund?p=pa", data={"payment": "pay-1", "amount": typed, "method": "cash",
                                                             "reason": "thu thừa", "csrf_token": token,
                                                             "confirm": "refund",
                                                             "txn": form_key})
        assert r.status_code == 302, typed
        assert sent[-1][2].get("amount") == amount and sent[-1][1] == "/payments/pay-1/refund"
        keys.append(sent[-1][3])
    # the form's key and what it asks: the same click twice is one key (billing replays its answer), a
    # changed amount another
    assert keys[0].startswith(f"portal-refund-{form_key}-") and keys[1] == keys[2] != keys[0]


def test_unmatched_choices_name_the_patient_and_list_the_same_amount_first(client, monkeypatch, ehr):
    from sen_portal.web import cashier

    transfers = [{"id": "standard:t1", "amount": 39000, "receivedAt": "2026-12-05T09:00:00+07:00",
                  "description": "ck kham benh"},
                 {"id": "standard:t2", "amount": 150000, "receivedAt": "2026-12-05T09:30:00+07:00",
                  "description": "chuyen tien"}]
    issued = [invoice("inv-x", "pa", 150000, ref="HD00000000X"),
              invoice("inv-y", "pb", 195000, 39000, ref="HD00000000Y")]  # BHYT: the patient owes 39.000
    monkeypatch.setattr(cashier, "shared_get", lambda *a, **k: {"payments": transfers})
    monkeypatch.setattr(cashier, "fhir_get", lambda *a, **k: bundle(issued))
    page = client.get("/unmatched").get_data(as_text=True)
    heads = re.findall(r'<th scope="col" role="columnheader"[^>]*>([^<]*)</th>', page)
    assert heads[0] == "Thời điểm nhận" and "Đã tiếp nhận" not in page
    selects = re.findall(r"<select[^>]*>(.*?)</select>", page, re.S)
    options = [re.findall(r'<option value="(inv-[^"]*)"[^>]*>([^<]*)</option>', s) for s in selects]
    assert [o[0] for o in options[0]] == ["inv-y", "inv-x"]  # the 39.000 transfer: the 39.000 invoice first
    assert [o[0] for o in options[1]] == ["inv-x", "inv-y"]
    assert options[0][0][1] == "HD00000000Y · Trần Thị Bích · 39.000\u00a0₫ · 05/12/2026 09:00"
    assert options[1][0][1].startswith("HD00000000X · Nguyễn Văn A · 150.000\u00a0₫")
    assert len(ehr) == 1 and ehr[0]["_id"] == "pa,pb"  # one EHR request for every choice


def test_after_a_partial_transfer_the_status_box_replaces_the_qr_with_the_new_balance(client, monkeypatch, ehr):
    """The page's QR asks for the balance due when shown; a partial transfer lowers the balance, and
    the status poll (which carries the amount the QR shows) then swaps in billing's new code, so no
    one scans the old amount and pays it all again."""
    from sen_portal.web import cashier

    old = {"payload": "00020101021238...5406392005802VN6304ABCD", "reference": "HD7K2M9QX4C", "amount": 39000,
           "expiresAt": "2099-12-05T09:15:00+07:00"}
    new = {"payload": "00020101021238...5406190005802VN6304EF01", "reference": "HD7K2M9QX4C", "amount": 19000,
           "expiresAt": "2099-12-05T09:20:00+07:00"}
    asked: list[str] = []

    def billing(method, path, body=None, params=None):
        asked.append(path)
        assert (method, path) == ("GET", "/fhir/Invoice/inv-a/$vietqr")
        return new

    monkeypatch.setattr(cashier, "_json", billing)
    monkeypatch.setattr(cashier, "shared_get", _desk(qr=old))
    page = client.get("/invoices/inv-a?p=pa").get_data(as_text=True)
    assert re.search(r'data-testid="qr-amount">39.000\u00a0₫', page)
    poll = re.search(r'hx-get="([^"]*/status[^"]*)"', page).group(1).replace("&amp;", "&")
    # 2099-12-05 09:15 +07:00; what the payments box shows (its digest), the patient's id and that the page
    # offers the cancel (cx) ride along
    assert re.fullmatch(r"/invoices/inv-a/status\?due=39000&until=4100120100&pays=[0-9a-f]{12}&p=pa&cx=1", poll), poll
    first_img = re.search(r'<img src="([^"]*qr.svg[^"]*)"', page).group(1)

    answer = client.get(poll).get_data(as_text=True)  # nothing paid yet: the QR stays as it is
    assert 'id="qr-box"' not in answer and asked == []

    monkeypatch.setattr(cashier, "shared_get", _desk(balance=19000, paid=20000, qr=old))  # 20.000 transferred
    answer = client.get(poll).get_data(as_text=True)
    assert asked == ["/fhir/Invoice/inv-a/$vietqr"]
    box = re.search(r'<div id="qr-box" hx-swap-oob="true">(.*?)</div>', answer, re.S)
    assert box and re.search(r'data-testid="qr-amount">19.000\u00a0₫', box.group(1))
    img = re.search(r'<img src="([^"]*qr.svg[^"]*)"', box.group(1)).group(1)
    assert img != first_img  # a new image URL: the browser draws the new code
    # the next poll
    assert re.search(r'hx-get="/invoices/inv-a/status\?due=19000&amp;until=4100120400&amp;pays=[0-9a-f]{12}&amp;p=pa"',
                     answer)
    # the cash form's prefill follows: 19.000 now (app.js keeps an amount the cashier typed)
    cash = re.search(r'<div id="cash-fields" data-due="19000" hx-swap-oob="true">(.*?)</div>\s*</div>', answer, re.S)
    assert cash and re.search(r'<input[^>]*name="cash-amount"[^>]*value="19.000"', cash.group(1))
    assert re.search(r'name="cash-txn" type="hidden" value="[0-9a-f]{32}"', cash.group(1))
    assert 'data-due="39000"' in page  # what the page's prefill was
    asked.clear()
    assert 'id="qr-box"' not in client.get("/invoices/inv-a/status?due=19000").get_data(as_text=True)
    assert asked == []

    def down(method, path, body=None, params=None):
        raise BackendError("down", "billing")

    monkeypatch.setattr(cashier, "_json", down)  # billing gives no new code: the old one goes all the same
    answer = client.get(poll).get_data(as_text=True)
    assert re.search(r'<div id="qr-box" hx-swap-oob="true" hidden></div>', answer)
    # asked again
    assert re.search(r'hx-get="/invoices/inv-a/status\?due=39000&amp;until=4100120100&amp;pays=[0-9a-f]{12}&amp;p=pa"',
                     answer)
