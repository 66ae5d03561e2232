"""What the portal says when a back-end refuses, when a date range is wrong, after the language switch,
and a consult's status as its reader sees it: in the user's language, never the services' English.

The refusals are those billing and teleconsult answer the portal's calls with (their wording is the
one of ``sen_billing.domain.payments``/``invoices``/``shifts`` and ``sen_teleconsult.domain``); the
page tests answer at the HTTP transport (``sen_shared.http.request``), so the portal reads the
OperationOutcome or RFC 9457 problem as it arrives."""

from __future__ import annotations

import json
import logging
import re
from datetime import date
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from flask import session
from sen_portal.domain.dashboard import RangeError, check_range
from sen_portal.web import backend_message
from sen_portal.web.auth import safe_next
from sen_portal.web.backend import BackendError
from sen_portal.web.dashboard import page_csv, range_problem
from sen_shared import http

from tests.support import csrf_token, portal_app, portal_signed_in

TID, SR, PATIENT = "t-1", "sr-1", "Patient/p-1"


@pytest.fixture()
def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    return portal_app(tmp_path, monkeypatch, backend="http://127.0.0.1:9", SEN_PORTAL_CACHE_SECONDS="0")


def _said(app: Any, err: BackendError, lang: str = "vi") -> str:
    with app.test_request_context("/"):
        session["lang"] = lang
        return backend_message(err)


def _text(page: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", page))


# ------------------------------------------------------------------ the mapping of refusals

def _billing(status: int, detail: str, title: str = "Conflict", **extra: Any) -> BackendError:
    return BackendError("refused", "billing", status, detail, title, extra)


def _fhir(service: str, status: int, code: str, detail: str) -> BackendError:
    return BackendError("refused", service, status, detail, code)


def test_billings_refusals_are_sentences_with_the_amount_in_dong(app) -> None:
    nothing = _billing(422, "at most 0 đồng of this payment can be refunded", "Bad Request", refundable=0)
    assert _said(app, nothing).startswith("Khoản thanh toán này không còn gì để hoàn")
    assert _said(app, nothing, "en").startswith("Nothing is left to refund on this payment")
    some = _billing(422, "at most 150000 đồng of this payment can be refunded", "Bad Request", refundable=150000)
    assert _said(app, some) == "Chỉ có thể hoàn tối đa 150.000\u00a0₫ từ khoản thanh toán này."
    assert _said(app, some, "en") == "At most 150.000\u00a0₫ of this payment can be refunded."
    # without billing's ``refundable`` member the detail's number is read
    assert "150.000\u00a0₫" in _said(app, _billing(422, "at most 150000 đồng of this payment can be refunded",
                                                   "Bad Request"))
    cases = {
        _billing(409, "invoice inv-a is balanced, not awaiting payment"): "Hóa đơn này đã được thanh toán",
        _billing(409, "invoice inv-a is cancelled, not awaiting payment"): "Hóa đơn này đã bị hủy",
        _billing(409, "this payment was refunded already"): "Khoản thanh toán này đã được hoàn rồi.",
        _billing(409, "this payment is being given back meanwhile; try again"):
            "Có người đang hoàn khoản thanh toán này. Tải lại trang để xem còn lại bao nhiêu rồi thử lại.",
        _billing(409, "a shift is open already; close it first"): "Đang có một ca làm việc mở",
        _billing(409, "open a shift first (POST /payments/shifts)"): "Chưa có ca làm việc nào mở",
        _billing(409, "no shift is open"): "Chưa có ca làm việc nào mở",
        _billing(409, "the shift was closed meanwhile"): "Ca làm việc vừa thay đổi",
        _billing(409, "this transfer was assigned already"): "đã được gán vào một hóa đơn rồi",
        _fhir("billing", 409, "conflict",
              "Invoice/inv-a is balanced: a paid invoice is not cancelled (only its credit is refunded)"):
            "Hóa đơn này đã thanh toán đủ: không hủy được nữa",
        _fhir("billing", 409, "conflict", "Invoice/inv-a has payments; refund them before cancelling"):
            "Hóa đơn này đã có khoản thanh toán",
        _fhir("billing", 409, "conflict", "Invoice/inv-a is cancelled"): "Hóa đơn này đã bị hủy rồi.",
        _fhir("billing", 409, "conflict", "Invoice/inv-a changed meanwhile (issued); try again"):
            "Hồ sơ này vừa được thay đổi",
        _fhir("billing", 412, "conflict", "ChargeItemDefinition/kham-benh is no longer at version 3"):
            "Hồ sơ này vừa được thay đổi",
        # a detail the portal passes on itself (the desk's ``qrProblem``): no status, no code
        BackendError("refused", "billing", 0, "Invoice/inv-a has nothing left to pay"):
            "Hóa đơn này không còn gì phải trả.",
    }
    for err, sentence in cases.items():
        said = _said(app, err)
        assert sentence in said, (err.detail, said)
        assert "inv-a" not in said and "Invoice/" not in said


def test_teleconsults_refusals_are_sentences_with_the_visits_time(app) -> None:
    cases = {
        _fhir("teleconsult", 409, "conflict", "Slot/s-0709 is already booked by another appointment; find another "
              "slot"): "Giờ này vừa được một lịch hẹn khác đặt",
        _fhir("teleconsult", 409, "not-found", "Slot/s-0709 is not offered (the doctor is on leave)"):
            "Giờ này không còn trống",
        _fhir("teleconsult", 409, "business-rule", "ServiceRequest/sr-1 already has a visit at "
              "2026-12-07T09:00:00+07:00 (Appointment/a-1): move it (Appointment/a-1/$reschedule) or cancel it "
              "($cancel) instead of booking another"): "đã có lịch khám lúc 07/12/2026 09:00",
        _fhir("teleconsult", 409, "business-rule", "$accept is not allowed: the Task is 'cancelled' (it needs "
              "requested, received)"): "hiện ở trạng thái “Đã hủy”",
        _fhir("teleconsult", 409, "business-rule", "Appointment/a-1 is cancelled: it cannot be rescheduled"):
            "Lịch khám này vừa bị hủy",
        _fhir("teleconsult", 409, "business-rule", "Appointment/a-1 has not started yet: it cannot be a no-show"):
            "Lịch khám chưa bắt đầu",
        _fhir("teleconsult", 409, "conflict", "Appointment/a-1 was changed by someone else meanwhile; read it "
              "again"): "Hồ sơ này vừa được thay đổi",
        _fhir("teleconsult", 409, "conflict", "Task/t-1 is changing too fast; retry"): "Hồ sơ này vừa được thay đổi",
    }
    for err, sentence in cases.items():
        said = _said(app, err)
        assert sentence in said, (err.detail, said)
        assert not re.search(r"(Slot|Appointment|ServiceRequest|Task)/", said)
    assert "visit at 07/12/2026 09:00" in _said(app, next(iter(e for e in cases if "has a visit" in e.detail)), "en")


def test_an_unknown_refusal_is_the_generic_sentence_in_vietnamese_and_the_detail_in_english_and_the_log(
        app, caplog: pytest.LogCaptureFixture) -> None:
    err = _fhir("teleconsult", 422, "processing", "Patient/p-9 is not known to the EHR")
    caplog.set_level(logging.INFO)
    vi = _said(app, err)
    assert vi.startswith("Dịch vụ hội chẩn từ xa từ chối yêu cầu. Hãy kiểm tra") and "Patient/" not in vi
    assert _said(app, err, "en") == ("The teleconsult service refused the request: "
                                     "Patient/p-9 is not known to the EHR")
    logged = [r for r in caplog.records if getattr(r, "backend_detail", None) == err.detail]
    assert logged and logged[0].backend_code == "processing" and logged[0].backend_status == 422
    changed = _fhir("billing", 409, "conflict", "something new")
    assert _said(app, changed).startswith("Dịch vụ thanh toán từ chối vì hồ sơ vừa được thay đổi. Hãy tải lại")
    assert _said(app, changed, "en").endswith("the record changed meanwhile: something new")
    # a refusal without a detail never shows the bare status
    assert "422" not in _said(app, BackendError("refused", "billing", 422), "en")


def test_the_answers_code_and_members_reach_the_error(app, monkeypatch: pytest.MonkeyPatch) -> None:
    from sen_portal.web.backend import call

    answers = {
        "/problem": (422, {"type": "about:blank", "title": "Bad Request", "status": 422, "refundable": 0,
                           "detail": "at most 0 đồng of this payment can be refunded"}),
        "/outcome": (409, {"resourceType": "OperationOutcome", "issue": [
            {"severity": "error", "code": "business-rule", "diagnostics": "Appointment/a is booked: x"}]}),
        "/typed": (409, {"type": "https://sen.vn/problems/x", "title": "Conflict", "detail": "d"}),
    }

    def fake(method: str, url: str, **_: Any) -> http.Response:
        status, body = answers[urlsplit(url).path]
        return http.Response(status, {}, json.dumps(body).encode())

    monkeypatch.setattr(http, "request", fake)
    got = {}
    with app.test_request_context("/"):
        session["user"] = {"username": "cashier", "role": "cashier", "name": "x", "facility": "tyt-my-hiep"}
        for path in answers:
            with pytest.raises(BackendError) as err:
                call("billing", "GET", path)
            got[path] = err.value
    assert (got["/problem"].code, got["/problem"].extra) == ("Bad Request", {"refundable": 0})
    assert got["/outcome"].code == "business-rule" and got["/outcome"].detail == "Appointment/a is booked: x"
    assert got["/typed"].code == "https://sen.vn/problems/x"


# ------------------------------------------------------------------ the pages, answered at the transport

DESK = {"invoice": "inv-a", "status": "balanced", "owed": 39000, "paid": 39000, "balanceDue": 0,
        "reference": "HD7K2M9QX4C", "qr": None, "credit": 0,
        "payments": [{"id": "p-1", "amount": 39000, "channel": "cash", "at": "2026-12-05T09:00:00+07:00"}],
        "resource": {"resourceType": "Invoice", "id": "inv-a", "status": "balanced",
                     "date": "2026-12-05T09:00:00+07:00", "subject": {"reference": "Patient/bn-0001"}}}


class Backends:
    """Billing's desk and refund, teleconsult's consult t-1 (``task_status``) and its operations; the
    refusals they answer are set by a test (``refusals``: path suffix -> (status, body))."""

    def __init__(self) -> None:
        self.task_status = "requested"
        self.refusals: dict[str, tuple[int, dict[str, Any]]] = {}
        self.calls: list[tuple[str, str]] = []

    def __call__(self, method: str, url: str, **_: Any) -> http.Response:
        path = urlsplit(url).path
        self.calls.append((method, path))
        for suffix, (status, body) in self.refusals.items():
            if path.endswith(suffix):
                return http.Response(status, {}, json.dumps(body).encode())
        if path.endswith("/desk"):
            return self._json(DESK)
        if path.endswith("/fhir/Task/$worklist") or (path.endswith("/fhir/Task") and method == "GET"):
            task = {"resourceType": "Task", "id": TID, "status": self.task_status, "intent": "order",
                    "priority": "routine", "for": {"reference": PATIENT}, "authoredOn": "2026-12-04T08:00:00+07:00",
                    "basedOn": [{"reference": f"ServiceRequest/{SR}"}],
                    "requester": {"reference": "Organization/tyt-my-hiep"}}
            sr = {"resourceType": "ServiceRequest", "id": SR, "status": "active", "intent": "order",
                  "subject": {"reference": PATIENT}, "note": [{"text": "Xin ý kiến."}]}
            return self._json({"resourceType": "Bundle", "type": "searchset",
                               "entry": [{"resource": task}, {"resource": sr}]})
        if method == "GET":
            return self._json({"resourceType": "Bundle", "type": "searchset", "entry": []})
        return self._json({"resourceType": "Bundle", "type": "collection", "entry": []})

    @staticmethod
    def _json(body: Any) -> http.Response:
        return http.Response(200, {}, json.dumps(body).encode())


@pytest.fixture()
def backends(monkeypatch: pytest.MonkeyPatch) -> Backends:
    b = Backends()
    monkeypatch.setattr(http, "request", b)
    return b


def test_a_refused_refund_reads_as_a_sentence_on_the_invoice_page(app, backends) -> None:
    backends.refusals["/payments/p-1/refund"] = (422, {
        "type": "about:blank", "title": "Bad Request", "status": 422, "refundable": 0,
        "detail": "at most 0 đồng of this payment can be refunded"})
    for lang, sentence in (("vi", "Khoản thanh toán này không còn gì để hoàn"),
                           ("en", "Nothing is left to refund on this payment")):
        c = portal_signed_in(app, "cashier", lang)
        page = c.get("/invoices/inv-a").get_data(as_text=True)
        r = c.post("/invoices/inv-a/refund", data={"csrf_token": csrf_token(page), "payment": "p-1",
                                                   "method": "cash", "reason": "Trả nhầm", "confirm": "refund"})
        body = _text(r.get_data(as_text=True))
        assert r.status_code == 422 and sentence in body, body[:2000]  # billing's status (cashier.refusal_status)
        assert "at most" not in body and "đồng of this payment" not in body


def test_a_taken_time_and_a_consult_gone_meanwhile_read_as_sentences_on_the_consult_page(app, backends) -> None:
    backends.refusals["/fhir/Task/t-1/$accept"] = (409, {"resourceType": "OperationOutcome", "issue": [
        {"severity": "error", "code": "business-rule", "expression": ["Task.status"],
         "diagnostics": "$accept is not allowed: the Task is 'cancelled' (it needs requested, received)"}]})
    backends.refusals["/fhir/Appointment/$hold"] = (409, {"resourceType": "OperationOutcome", "issue": [
        {"severity": "error", "code": "conflict",
         "diagnostics": "Slot/s-0709 is already booked by another appointment; find another slot"}]})
    c = portal_signed_in(app, "doctor")
    page = c.get(f"/tasks/{TID}").get_data(as_text=True)
    r = c.post(f"/tasks/{TID}/accept", data={"csrf_token": csrf_token(page)})
    body = _text(r.get_data(as_text=True))
    assert r.status_code == 409 and "Ca hội chẩn này hiện ở trạng thái “Đã hủy”" in body, body[:2000]
    assert "is not allowed" not in body
    r = c.post(f"/tasks/{TID}/book", data={"csrf_token": csrf_token(page), "slot": "s-0709",
                                           "start": "2026-12-07T09:00:00+07:00", "end": "2026-12-07T09:30:00+07:00"})
    body = _text(r.get_data(as_text=True))
    assert r.status_code == 409 and "Giờ này vừa được một lịch hẹn khác đặt. Hãy chọn giờ khác." in body
    assert "Slot/" not in body and "already booked" not in body


# ------------------------------------------------------------------ a consult's status, by its reader

def test_a_requested_consult_is_new_to_the_hub_doctor_and_waiting_for_the_hub_to_the_clinic(app, backends) -> None:
    doctor = portal_signed_in(app, "doctor")
    r = doctor.get("/worklist")
    assert r.status_code == 200 and "Mới – chờ tiếp nhận" in _text(r.get_data(as_text=True))
    assert "Chờ tuyến trên" not in r.get_data(as_text=True)
    assert "New – to triage" in portal_signed_in(app, "doctor", "en").get("/worklist").get_data(as_text=True)
    clinic = portal_signed_in(app, "clinic")
    r = clinic.get(f"/consults/{TID}")
    assert r.status_code == 200, r.get_data(as_text=True)[:1000]
    body = _text(r.get_data(as_text=True))
    assert "Chờ tuyến trên" in body and "chờ tiếp nhận" not in body


# ------------------------------------------------------------------ the language switch, a 405

def test_the_switch_keeps_the_query_and_leaves_a_post_only_page_for_a_page_that_answers_a_get(
        app, backends) -> None:
    c = portal_signed_in(app, "doctor")
    page = c.get("/worklist?status=requested").get_data(as_text=True)
    assert 'name="next" value="/worklist?status=requested"' in page
    token = csrf_token(page)

    def switch(nxt: str, lang: str = "en", **headers: str) -> str:
        r = c.post("/language", data={"lang": lang, "next": nxt, "csrf_token": token}, headers=headers)
        assert r.status_code == 302
        return r.headers["Location"]

    assert switch("/worklist?status=requested") == "/worklist?status=requested"
    # the page a booking refused rendered (POST only): the page the doctor came from, if it is this site's
    assert switch(f"/tasks/{TID}/book", Referer=f"http://localhost/tasks/{TID}?booked=1") == f"/tasks/{TID}?booked=1"
    # the Referer is that POST's own address (the browser's), or another site: the page above it
    assert switch(f"/tasks/{TID}/book", Referer=f"http://localhost/tasks/{TID}/book") == f"/tasks/{TID}"
    assert switch(f"/tasks/{TID}/book", Referer=f"https://evil.example/tasks/{TID}") == f"/tasks/{TID}"
    # the free-time search is a GET: the switch keeps it, its query too
    assert switch(f"/tasks/{TID}/slots?start=07/12/2026&days=7") == f"/tasks/{TID}/slots?start=07/12/2026&days=7"
    assert switch("/invoices/inv-a/cash") == "/invoices/inv-a"
    assert switch("/logout") == "/"  # nothing above it: home (which sends each role to its page)
    for bad in ("//evil.example/x", "/\\evil.example", "https://evil.example/", "/\\/evil.example", "/a\r\nb"):
        assert switch(bad) == "/", bad
    assert safe_next("/dashboard?start=01/11/2026&end=30/11/2026") == "/dashboard?start=01/11/2026&end=30/11/2026"


def test_a_get_of_a_post_only_page_is_the_readable_error_page_in_the_users_language(app, backends) -> None:
    """A POST-only address with no page above it (a form's own page is where a GET of the others goes)."""
    for lang, title in (("vi", "Không thể mở trang này theo cách này"), ("en", "This page cannot be opened this way")):
        c = portal_signed_in(app, "doctor", lang)
        r = c.get("/logout")
        body = r.get_data(as_text=True)
        assert r.status_code == 405 and r.mimetype == "text/html" and title in body
        assert f'<html lang="{lang}">' in body and "POST" in r.headers["Allow"] and "GET" not in r.headers["Allow"]
        assert "no-store" in r.headers["Cache-Control"]
    r = portal_signed_in(app, "doctor").get(f"/tasks/{TID}/book")
    assert r.status_code == 303 and r.headers["Location"] == f"/tasks/{TID}"
    r = portal_signed_in(app, "cashier").get("/invoices/inv-a/refund")
    assert r.status_code == 303 and r.headers["Location"] == "/invoices/inv-a"


# ------------------------------------------------------------------ the dashboard's range and CSV

def test_a_wrong_date_range_is_said_in_the_users_language_with_dates_as_people_write_them(app) -> None:
    with pytest.raises(RangeError) as err:
        check_range(date(2026, 12, 5), date(2026, 12, 1))
    assert (err.value.code, err.value.start, err.value.end) == ("start-after-end", date(2026, 12, 5),
                                                                date(2026, 12, 1))
    assert str(err.value) == "start (2026-12-05) is after end (2026-12-01)"  # the API's detail, as before
    with app.test_request_context("/"):
        assert range_problem(err.value).startswith("Ngày bắt đầu 05/12/2026 sau ngày kết thúc 01/12/2026")
    with pytest.raises(RangeError) as long:
        check_range(date(2020, 1, 1), date(2026, 12, 1))
    with app.test_request_context("/"):
        session["lang"] = "en"
        assert range_problem(long.value).startswith("The range is 2527 days long")
    c = portal_signed_in(app, "health-dept")
    r = c.get("/dashboard?start=05/12/2026&end=01/12/2026")
    body = _text(r.get_data(as_text=True))
    assert r.status_code == 400 and "Ngày bắt đầu 05/12/2026 sau ngày kết thúc 01/12/2026" in body
    assert "is after end" not in body


def test_the_pages_csv_has_headers_in_the_users_language_and_the_facilitys_name_beside_its_id(app) -> None:
    header = ["week", "facility", "district", "count"]
    rows = [["2026-W45", "Organization/tyt-my-hiep", "Cao Lãnh", 3], ["2026-W45", None, "Cao Lãnh", 1]]
    names = {"tyt-my-hiep": "Trạm Y tế xã Mỹ Hiệp"}
    with app.test_request_context("/"):
        got = page_csv(header, rows, names)
    assert got == (["Tuần (ISO)", "Mã cơ sở", "Cơ sở", "Huyện", "Số lượng"],
                   [["2026-W45", "Organization/tyt-my-hiep", "Trạm Y tế xã Mỹ Hiệp", "Cao Lãnh", 3],
                    ["2026-W45", None, "", "Cao Lãnh", 1]])
    with app.test_request_context("/"):
        session["lang"] = "en"
        assert page_csv(["start", "end", "district", "transfer_amount"], [["a", "b", None, 1]], {})[0] == [
            "From", "To", "District", "Bank transfers (đồng)"]
