"""The cashier's lists (web/cashier.py) with the Flask test client, billing and the EHR faked as they
answer: a search finds paid and cancelled invoices (with their status, and money to give back), the
queue and the unmatched transfers' choices show what is left to pay (not the invoice's total), the
queue is oldest first, an assignment names its invoice, the admin reads facilities by name, the
QR's validity follows billing's current code, and the admin's home lists every page they may open."""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.support import csrf_token, portal_app, portal_signed_in

REF = "urn:sen:billing:payment-reference"


@pytest.fixture()
def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    return portal_app(tmp_path, monkeypatch, SEN_PORTAL_CACHE_SECONDS="0")


@pytest.fixture()
def client(app):
    return portal_signed_in(app, "cashier")


def bundle(resources: list[dict[str, Any]]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": r} for r in resources]}


def invoice(iid: str, pid: str, total: int, ref: str, date: str, status: str = "issued") -> dict[str, Any]:
    return {"resourceType": "Invoice", "id": iid, "status": status, "date": date,
            "subject": {"reference": f"Patient/{pid}"}, "totalGross": {"value": total, "currency": "VND"},
            "identifier": [{"system": REF, "value": ref}]}


PATIENTS = {"pa": ("Nguyễn", ["Thị", "Mai"]), "pb": ("Trần", ["Thị", "Ánh", "Tuyết"]), "pc": ("Lê", ["Văn", "Bình"])}
PHONES = {"pa": "0913000001"}  # as the EHR keeps it (deploy/local/seed.py): the digits alone


def summary(iid: str, status: str, owed: int, paid: int, **more: Any) -> dict[str, Any]:
    due = 0 if status == "cancelled" else max(0, owed - paid)
    return {"invoice": iid, "status": status, "owed": owed, "paid": paid, "balanceDue": due,
            "credit": max(0, paid - owed), "refunded": 0, "payments": [], "refundTasks": [], **more}


@pytest.fixture()
def billing(monkeypatch):
    """Billing's Invoice search, the payment summaries and the unmatched queue, as billing answers
    them; the EHR's Patient searches (by name, by ``_id``). Returns what was asked."""
    from sen_portal.web import cashier
    from sen_portal.web import patients as patient_module

    state: dict[str, Any] = {"invoices": [], "summaries": {}, "unmatched": [], "asked": [], "posted": []}

    def fhir_get(service, path, params=None, **_kw):
        params = dict(params or {})
        state["asked"].append((service, path, params))
        if service == "ehr":
            q = params.get("name", "").lower()
            ids = str(params.get("_id", "")).split(",")
            return bundle([{"resourceType": "Patient", "id": p, "name": [{"family": f, "given": g}]}
                           for p, (f, g) in PATIENTS.items()
                           if p in ids or (q and q in "tran thi anh tuyet" and p == "pb")
                           or ("phone" in params and params["phone"] == PHONES.get(p))])
        assert (service, path) == ("billing", "/fhir/Invoice")
        found = state["invoices"]
        if "status" in params:
            found = [i for i in found if i["status"] == params["status"]]
        if "identifier" in params:
            code = params["identifier"].split("|")[1]
            found = [i for i in found if i["identifier"][0]["value"] == code]
        if "subject" in params:
            found = [i for i in found if i["subject"]["reference"] in params["subject"].split(",")]
        return bundle(found)

    def shared_get(service, path, params=None, **_kw):
        if path == "/payments/invoices":  # several summaries in one request, as billing answers them
            ids = [v for k, v in params if k == "id"]
            state["asked"].append((service, path, {"id": ids}))
            state["batches"] = state.get("batches", 0) + 1
            return {"summaries": [{**state["summaries"][i], "invoice": i} for i in ids if i in state["summaries"]]}
        state["asked"].append((service, path, dict(params or {})))
        if path == "/payments/unmatched":
            return {"payments": state["unmatched"]}
        iid = path.removeprefix("/payments/invoices/")
        return state["summaries"][iid]

    def post(method, path, body=None, params=None, key=None):
        state["posted"].append((method, path, body))
        return {}

    monkeypatch.setattr(cashier, "fhir_get", fhir_get)
    monkeypatch.setattr(cashier, "shared_get", shared_get)
    monkeypatch.setattr(cashier, "_json", post)
    monkeypatch.setattr(patient_module, "fhir_get", fhir_get)
    return state


def rows(page: str, testid: str) -> list[str]:
    return [re.sub(r"<[^>]+>", "", m).strip() for m in re.findall(rf'data-testid="{testid}"[^>]*>(.*?)</(?:td|a|span)>',
                                                                   page, re.S)]


def test_a_search_finds_paid_and_cancelled_invoices_with_their_status_and_money_to_give_back(client, billing):
    billing["invoices"] = [
        invoice("inv-paid", "pb", 39000, "HDDATX5307H", "2026-12-05T09:00:00+07:00", "balanced"),
        invoice("inv-gone", "pb", 50000, "HD00000000C", "2026-12-05T10:00:00+07:00", "cancelled"),
        invoice("inv-open", "pb", 20000, "HD00000000D", "2026-12-05T11:00:00+07:00")]
    late = {"payment": "standard:t9", "invoice": "inv-paid", "amount": 39000, "reason": "invoice-balanced"}
    billing["summaries"] = {"inv-paid": summary("inv-paid", "balanced", 39000, 39000, refundTasks=[late]),
                            "inv-gone": summary("inv-gone", "cancelled", 50000, 0),
                            "inv-open": summary("inv-open", "issued", 20000, 0)}
    page = client.get("/invoices").get_data(as_text=True)
    token = csrf_token(page)
    found = client.post("/invoices/search", data={"q": "tran thi anh tuyet", "csrf_token": token}).get_data(
        as_text=True)
    assert "Tìm thấy 3 hóa đơn" in found
    assert rows(found, "invoice-reference") == ["HD00000000D", "HD00000000C", "HDDATX5307H"]  # newest first
    assert rows(found, "invoice-status") == ["Chờ thanh toán", "Đã hủy", "Đã thanh toán"]
    assert rows(found, "invoice-amount")[:2] == ["20.000\u00a0₫", "—"]  # a cancelled invoice: nothing due
    # the late transfer to the paid invoice: a way there, to give it back
    refund = re.findall(r'<a class="badge breach" href="([^"]*)" data-testid="invoice-refund">([^<]*)</a>', found)
    assert refund == [("/invoices/inv-paid?p=pb", "Cần hoàn tiền")]
    searches = [p for s, path, p in billing["asked"] if s == "billing" and path == "/fhir/Invoice" and "subject" in p]
    assert searches and "status" not in searches[-1]  # every status
    billing["summaries"]["inv-paid"]["refunded"] = 39000  # given back: nothing to refund any more
    by_ref = client.post("/invoices/search", data={"q": "hddatx5307h", "csrf_token": token}).get_data(as_text=True)
    assert "Tìm thấy 1 hóa đơn" in by_ref and rows(by_ref, "invoice-status") == ["Đã thanh toán"]
    assert "invoice-refund" not in by_ref
    late_payment = {"id": "standard:t9", "amount": 39000, "lateInvoice": "inv-paid", "refundable": 39000}
    billing["summaries"]["inv-paid"].update(refunded=0, payments=[late_payment])  # billing's per-payment answer
    again = client.post("/invoices/search", data={"q": "hddatx5307h", "csrf_token": token}).get_data(as_text=True)
    assert "invoice-refund" in again
    late_payment.update(refundable=0, refunded=39000)
    again = client.post("/invoices/search", data={"q": "hddatx5307h", "csrf_token": token}).get_data(as_text=True)
    assert "invoice-refund" not in again
    none = client.post("/invoices/search", data={"q": "le thi khong co", "csrf_token": token}).get_data(as_text=True)
    assert "Không có hóa đơn nào khớp" in none


@pytest.mark.parametrize("typed", ["0913000001", "0913 000 001", "0913.000.001", "+84 913 000 001", "84913000001"])
def test_a_phone_number_said_across_the_counter_finds_the_patients_invoices(client, billing, typed):
    """A patient who gives her phone number: the EHR's Patient search by phone (the digits as the record
    keeps them, whatever spaces, dots or +84 the cashier typed), then her invoices; not a name search
    of digits, which found nothing."""
    billing["invoices"] = [invoice("inv-a", "pa", 39000, "HDE3AEM0RMH", "2026-12-05T09:00:00+07:00"),
                           invoice("inv-c", "pc", 50000, "HD00000000C", "2026-12-05T10:00:00+07:00")]
    billing["summaries"] = {"inv-a": summary("inv-a", "issued", 39000, 0),
                            "inv-c": summary("inv-c", "issued", 50000, 0)}
    token = csrf_token(client.get("/invoices").get_data(as_text=True))
    found = client.post("/invoices/search", data={"q": typed, "csrf_token": token}).get_data(as_text=True)
    assert "Tìm thấy 1 hóa đơn" in found, found
    assert rows(found, "invoice-reference") == ["HDE3AEM0RMH"]
    asked = [p for s, path, p in billing["asked"] if s == "ehr" and path == "/fhir/Patient" and "_id" not in p]
    assert asked[-1].get("phone") == "0913000001" and "name" not in asked[-1]


def test_a_name_or_a_short_number_is_not_taken_for_a_phone():
    from sen_portal.web.cashier import typed_phone

    assert [typed_phone(q) for q in ("nguyen thi mai", "12345", "HD 3XE8 MDCCJ", "0913 000 00")] == [None] * 4


def test_the_queue_shows_what_is_left_to_pay_oldest_first(client, billing):
    billing["invoices"] = [
        invoice("inv-b", "pb", 39000, "HD00000000B", "2026-12-05T13:09:00+07:00"),
        invoice("inv-a", "pa", 114000, "HD00000000A", "2026-12-05T13:06:00+07:00"),
        invoice("inv-c", "pc", 20000, "HD00000000E", "2026-12-05T13:10:00+07:00")]
    billing["summaries"] = {"inv-a": summary("inv-a", "issued", 114000, 10000),  # 10.000 transferred
                            "inv-b": summary("inv-b", "issued", 39000, 0),
                            "inv-c": summary("inv-c", "issued", 20000, 0)}
    page = client.get("/invoices").get_data(as_text=True)
    assert rows(page, "invoice-reference") == ["HD00000000A", "HD00000000B", "HD00000000E"]  # 13:06, 13:09, 13:10
    assert "Cũ nhất trước" in page
    amounts = rows(page, "invoice-amount")
    assert amounts[0].startswith("104.000\u00a0₫") and "Đã trả 10.000\u00a0₫ trên 114.000\u00a0₫" in amounts[0]
    assert amounts[1:] == ["39.000\u00a0₫", "20.000\u00a0₫"]
    assert billing["batches"] == 1  # every row's summary in one request to billing
    queue = [p for s, path, p in billing["asked"] if path == "/fhir/Invoice"]
    assert queue == [{"status": "issued", "_count": "50", "_sort": "date"}]


def test_unmatched_choices_are_what_is_left_to_pay_and_the_assignment_names_its_invoice(client, billing):
    billing["invoices"] = [invoice("inv-a", "pa", 114000, "HD00000000A", "2026-12-05T13:06:00+07:00"),
                           invoice("inv-b", "pb", 114000, "HD00000000B", "2026-12-05T13:09:00+07:00"),
                           invoice("inv-d", "pc", 50000, "HD00000000F", "2026-12-05T13:01:00+07:00")]
    billing["summaries"] = {"inv-a": summary("inv-a", "issued", 114000, 10000),
                            "inv-b": summary("inv-b", "issued", 114000, 0),
                            "inv-d": summary("inv-d", "issued", 50000, 50000)}  # paid meanwhile: no choice
    billing["unmatched"] = [{"id": "standard:t1", "amount": 114000, "receivedAt": "2026-12-05T13:20:00+07:00",
                             "description": "ck", "facility": "tyt-my-hiep"},
                            {"id": "standard:t2", "amount": 104000, "receivedAt": "2026-12-05T13:21:00+07:00",
                             "description": "mai tra not", "facility": "tyt-my-hiep"}]
    page = client.get("/unmatched").get_data(as_text=True)
    selects = re.findall(r"<select[^>]*>(.*?)</select>", page, re.S)
    options = [re.findall(r'<option value="(inv-[^"]*)"([^>]*)>([^<]*)</option>', s) for s in selects]
    assert [o[0] for o in options[0]] == ["inv-b", "inv-a"]  # 114.000: the unpaid 114.000 one, not Mai's
    assert [o[0] for o in options[1]] == ["inv-a", "inv-b"]  # 104.000: what Mai has left to pay
    assert "data-same-amount" in options[1][0][1] and "data-same-amount" not in options[0][1][1]
    assert options[1][0][2] == "HD00000000A · Nguyễn Thị Mai · còn phải trả 104.000\u00a0₫ · 05/12/2026 13:06"
    assert options[0][0][2].startswith("HD00000000B · Trần Thị Ánh Tuyết · 114.000\u00a0₫ ·")
    r = client.post("/unmatched", data={"payment": "standard:t2", "invoice": "inv-a", "csrf_token": csrf_token(page)})
    done = re.search(r'data-testid="unmatched-done">(.*?)</div>', r.get_data(as_text=True), re.S).group(1)
    assert billing["posted"] == [("POST", "/payments/unmatched/standard:t2/assign", {"invoice": "inv-a"})]
    assert done == 'Đã gán chuyển khoản vào hóa đơn <a href="/invoices/inv-a">HD00000000A</a>.'


def test_the_admin_reads_the_unmatched_transfers_facility_by_name(app, billing, monkeypatch):
    from sen_portal.web import directory

    monkeypatch.setattr(directory, "org_names", lambda: {"tyt-my-hiep": "Trạm Y tế xã Mỹ Hiệp"})
    billing["unmatched"] = [{"id": "standard:t1", "amount": 114000, "receivedAt": "2026-12-05T13:20:00+07:00",
                             "description": "ck", "facility": "tyt-my-hiep"},
                            {"id": "standard:t2", "amount": 5000, "receivedAt": "2026-12-05T13:21:00+07:00",
                             "description": "?", "facility": "tyt-khac"}]
    page = portal_signed_in(app, "admin").get("/unmatched").get_data(as_text=True)
    assert rows(page, "unmatched-facility") == ["Trạm Y tế xã Mỹ Hiệp", "tyt-khac"]  # unnamed: its id
    # the facility filter names them too, by name only (review 9: "Trạm Y tế xã Mỹ Hiệp (tyt-my-hiep)")
    select = re.search(r'data-testid="unmatched-facility-filter">(.*?)</select>', page, re.S).group(1)
    options = [o.strip() for o in re.findall(r"<option[^>]*>([^<]*)</option>", select)]
    assert "Trạm Y tế xã Mỹ Hiệp" in options and not any("(tyt-" in o for o in options), options


def _at(iso: str) -> int:
    return int(datetime.fromisoformat(iso).timestamp())


def test_the_qr_says_until_when_billings_current_code_is_valid(client, billing, monkeypatch):
    """The page's QR may be a kept answer whose code has expired meanwhile, and the page stays open:
    the page asks billing again for an expired code, and the status poll (carrying the shown code's
    expiry) swaps in billing's current code once the shown one has expired."""
    from sen_portal.web import cashier

    inv = invoice("inv-a", "pa", 39000, "HD00000000A", "2026-12-05T13:06:00+07:00")
    expired = {"payload": "0002010102...OLD", "reference": "HD00000000A", "amount": 39000,
               "expiresAt": "2026-12-05T13:24:55+07:00"}
    current = {"payload": "0002010102...NEW", "reference": "HD00000000A", "amount": 39000,
               "expiresAt": "2099-12-05T13:39:55+07:00"}
    asked: list[str] = []

    def desk(service, path, params=None, **_kw):
        return {**summary("inv-a", "issued", 39000, 0), "resource": inv,
                "qr": expired if path.endswith("/desk") else None}

    def vietqr(method, path, body=None, params=None, key=None):
        asked.append(path)
        return current

    monkeypatch.setattr(cashier, "shared_get", desk)
    monkeypatch.setattr(cashier, "_json", vietqr)
    page = client.get("/invoices/inv-a?p=pa").get_data(as_text=True)
    assert asked == ["/fhir/Invoice/inv-a/$vietqr"]
    assert "Mã có hiệu lực đến 05/12/2099 13:39." in page and "13:24" not in page
    poll = re.search(r'hx-get="([^"]*/status[^"]*)"', page).group(1).replace("&amp;", "&")
    until = _at(current["expiresAt"])
    assert re.fullmatch(rf"/invoices/inv-a/status\?due=39000&until={until}&pays=[0-9a-f]{{12}}&p=pa&cx=1", poll), poll
    asked.clear()
    assert 'id="qr-box"' not in client.get(poll).get_data(as_text=True) and asked == []  # still valid
    shown_expired = f"/invoices/inv-a/status?due=39000&until={_at(expired['expiresAt'])}"
    answer = client.get(shown_expired).get_data(as_text=True)  # a page open since before 13:24:55
    assert asked == ["/fhir/Invoice/inv-a/$vietqr"]
    box = re.search(r'<div id="qr-box" hx-swap-oob="true">(.*?)</div>', answer, re.S).group(1)
    assert "05/12/2099 13:39." in box  # date first, as every other time
    assert f"until={_at(current['expiresAt'])}" in answer  # the next poll compares with the new code's time


def test_the_admins_home_lists_every_page(app):
    page = portal_signed_in(app, "admin").get("/").get_data(as_text=True)
    tiles = re.search(r'<ul class="tiles">(.*?)</ul>', page, re.S).group(1)
    for label in ("Bảng giá", "Chuyển khoản chưa khớp", "Ca làm việc", "Lịch làm việc", "Hóa đơn", "Bảng điều hành"):
        assert f">{label}</a>" in tiles, label


def _issued_by(inv: dict[str, Any], facility: str) -> dict[str, Any]:
    return {**inv, "issuer": {"reference": f"Organization/{facility}"}}


def test_the_admin_is_offered_the_queues_facilitys_invoices_first_and_confirms_another_facilitys(
        app, billing, monkeypatch):
    """Review 8: an admin putting Mỹ Hiệp's waiting transfer on an invoice was offered every facility's
    invoices in one list (Tháp Mười's HD494AP7J4M first), and the assignment went through silently. Now
    the transfer's own facility's invoices come first, the others' under their facility's name, and an
    invoice of another facility is assigned only once the admin confirms a step naming both facilities."""
    from sen_portal.web import directory

    monkeypatch.setattr(directory, "org_names", lambda: {"tyt-my-hiep": "Trạm Y tế xã Mỹ Hiệp",
                                                         "tyt-thap-muoi": "Trạm Y tế xã Tháp Mười"})
    billing["invoices"] = [
        _issued_by(invoice("inv-tm", "pc", 250000, "HD494AP7J4M", "2026-12-05T08:00:00+07:00"), "tyt-thap-muoi"),
        _issued_by(invoice("inv-mh", "pa", 250000, "HD00000000A", "2026-12-05T09:00:00+07:00"), "tyt-my-hiep"),
        _issued_by(invoice("inv-mh2", "pb", 90000, "HD00000000B", "2026-12-05T10:00:00+07:00"), "tyt-my-hiep")]
    billing["summaries"] = {i["id"]: summary(i["id"], "issued", i["totalGross"]["value"], 0)
                            for i in billing["invoices"]}
    billing["unmatched"] = [{"id": "standard:t1", "amount": 250000, "receivedAt": "2026-12-05T13:20:00+07:00",
                             "description": "ck", "facility": "tyt-my-hiep"}]
    admin = portal_signed_in(app, "admin")
    page = admin.get("/unmatched").get_data(as_text=True)
    select = re.search(r"<select[^>]*name=\"invoice\"[^>]*>(.*?)</select>", page, re.S).group(1)
    groups = re.findall(r'<optgroup label="([^"]*)"[^>]*>(.*?)</optgroup>', select, re.S)
    assert [label for label, _ in groups] == ["Trạm Y tế xã Mỹ Hiệp (cơ sở của chuyển khoản này)",
                                              "Trạm Y tế xã Tháp Mười"]
    assert [re.findall(r'value="([^"]+)"', body) for _, body in groups] == [["inv-mh", "inv-mh2"], ["inv-tm"]]
    token = csrf_token(page)
    # Tháp Mười's invoice: nothing assigned, the step names both facilities and the invoice
    r = admin.post("/unmatched", data={"payment": "standard:t1", "invoice": "inv-tm", "csrf_token": token})
    step = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", r.get_data(as_text=True)))
    assert r.status_code == 200 and billing["posted"] == []
    assert ("Chuyển khoản này đến tài khoản của Trạm Y tế xã Mỹ Hiệp và đang chờ trong hàng của cơ sở đó; "
            "hóa đơn HD494AP7J4M là của Trạm Y tế xã Tháp Mười.") in step
    assert 'name="confirm" value="assign-other-facility"' in r.get_data(as_text=True)
    assert re.search(r'<option value="inv-tm" selected>', r.get_data(as_text=True))  # the choice kept
    # the step sent without its tick: still nothing, said on the tick
    r = admin.post("/unmatched", data={"payment": "standard:t1", "invoice": "inv-tm", "csrf_token": token,
                                       "confirming": "assign-other-facility"})
    assert r.status_code == 400 and billing["posted"] == []
    # the reference typed (HD…) is the same invoice: asked too
    r = admin.post("/unmatched", data={"payment": "standard:t1", "invoice": "hd494ap7j4m", "csrf_token": token})
    assert r.status_code == 200 and billing["posted"] == [] and 'value="assign-other-facility"' in r.get_data(
        as_text=True)
    r = admin.post("/unmatched", data={"payment": "standard:t1", "invoice": "inv-tm", "csrf_token": token,
                                       "confirm": "assign-other-facility"})
    assert r.status_code == 200 and billing["posted"] == [
        ("POST", "/payments/unmatched/standard:t1/assign", {"invoice": "inv-tm"})]
    # its own facility's invoice: no step
    billing["posted"].clear()
    r = admin.post("/unmatched", data={"payment": "standard:t1", "invoice": "inv-mh", "csrf_token": token})
    assert billing["posted"] == [("POST", "/payments/unmatched/standard:t1/assign", {"invoice": "inv-mh"})]
    assert 'value="assign-other-facility"' not in r.get_data(as_text=True)


def test_an_unknown_facility_in_the_admins_unmatched_link_is_refused_with_a_readable_page(app, billing, monkeypatch):
    """Review 8: ``/unmatched?facility=nope`` added "nope" to the select and said no transfer waits."""
    from sen_portal.web import directory

    monkeypatch.setattr(directory, "org_names", lambda: {"tyt-my-hiep": "Trạm Y tế xã Mỹ Hiệp"})
    admin = portal_signed_in(app, "admin")
    for wanted in ("nope", "<b>x</b>"):
        r = admin.get("/unmatched", query_string={"facility": wanted})
        page = r.get_data(as_text=True)
        assert r.status_code == 400, wanted
        assert "Cơ sở trong đường dẫn không thuộc danh sách các cơ sở" in page and "<option" not in page
        assert 'href="/unmatched"' in page and "Không có chuyển khoản nào đang chờ" not in page
    assert admin.get("/unmatched?facility=tyt-my-hiep").status_code == 200
    assert admin.get("/unmatched?facility=_unowned").status_code == 200
    asked = [p for s, path, p in billing["asked"] if path == "/payments/unmatched"]
    assert [p.get("facility") for p in asked] == ["tyt-my-hiep", "_unowned"]  # nothing asked for the refused ones
