"""What a reviewer walking the portal found, fixed:

- the chart's copy of the minutes names the chair who signed them off (the EHR's Composition keeps the
  chair as its professional attester), as the consult page's full minutes do;
- a page a form's POST rendered (an empty answer, a refused refund) takes its own GET address in the
  history (static/own-address.js), and a GET of a POST-only address goes to the page the form belongs to;
- the cashier reads "Chuyển khoản ngân hàng", not the webhook scheme's name; the QR code's expiry is date
  first, as every other time; the demo administrator's name is not half English.

Flask's test client; teleconsult, the EHR and billing faked at the portal's calls to them."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from services.portal.tests.test_clinic_consult_page import Backends, sign_in
from tests.support import csrf_token, portal_app, portal_signed_in


@pytest.fixture()
def client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    with portal_app(tmp_path, monkeypatch).test_client() as c:
        yield c


# ------------------------------------------------------------------ 1. the chair on the chart's minutes

def _record(**more):
    """A consult record as the EHR builds it (sen_ehr.domain.consult_record.build_composition)."""
    from sen_portal.web import clinic

    return {"resourceType": "Composition", "id": "c1", "subject": {"reference": "Patient/p1"},
            "date": "2026-12-05T09:40:00+07:00", "author": [{"reference": "Practitioner/bs-nguyen-van-an"}],
            "identifier": {"system": clinic.CONSULT_RECORD_SYSTEM, "value": "sr1"},
            "section": [{"title": "Kết luận", "code": {"coding": [{"code": "conclusion"}]},
                         "text": {"div": "<div><p>Tăng huyết áp độ 2.</p></div>"}}], **more}


@pytest.mark.parametrize("lang, label", [("vi", "Chủ trì ký biên bản"), ("en", "Chair who signs off")])
def test_the_charts_minutes_name_the_chair_who_signed_them(client, monkeypatch, lang, label):
    from sen_portal.web import clinic, directory

    Backends(monkeypatch)
    monkeypatch.setattr(directory, "names", lambda rtype: {
        "Organization": {}, "Practitioner": {"bs-nguyen-van-an": "BS. Nguyễn Văn An"}}[rtype])
    comp = _record(attester=[{"mode": "professional", "time": "2026-12-05T09:40:00+07:00",
                              "party": {"reference": "Practitioner/bs-nguyen-van-an"}}])
    monkeypatch.setattr(clinic, "fhir_get", lambda service, path, *a, **kw: comp)
    sign_in(client)
    with client.session_transaction() as kept:  # the page's language, as the header's switch sets it
        kept["lang"] = lang
    page = client.get("/patients/p1/consult-records/c1").get_data(as_text=True)
    assert re.search(rf'<dt>{label}</dt><dd data-testid="record-chair">BS. Nguyễn Văn An</dd>', page), page
    # a record without an attester (none the EHR wrote so) says nothing of a chair
    comp.pop("attester")
    assert "record-chair" not in client.get("/patients/p1/consult-records/c1").get_data(as_text=True)


def test_the_ehr_keeps_the_chair_as_the_professional_attester():
    """What the chart reads is what the EHR writes: the minutes' performer as the professional attester."""
    from sen_ehr.domain.consult_record import build_composition
    from sen_portal.web.clinic import consult_record

    data = {"serviceRequest": "ServiceRequest/sr1", "patient": "Patient/p1", "performer": "Practitioner/bs-an",
            "completedAt": "2026-12-05T09:40:00+07:00",
            "period": {"start": "2026-12-05T09:00:00+07:00", "end": "2026-12-05T09:40:00+07:00"},
            "minutes": {"participants": [{"display": "BS. An", "reference": "Practitioner/bs-an", "role": "chủ trì"}],
                        "summary": "s", "findings": "f", "recommendations": "r",
                        "conclusion": {"system": "http://hl7.org/fhir/sid/icd-10", "code": "I10"}}}
    record = consult_record(build_composition(data, "c1", "e1"))
    # named as the minutes' participant of that reference is (the title as typed), the chart's name for them
    assert record is not None and record["chair"] == {"reference": "Practitioner/bs-an", "display": "BS. An"}


# ------------------------------------------------------------------ 3. a page a POST rendered, and a GET of its address

def test_an_empty_answer_leaves_the_nurse_at_the_consults_own_address(client, monkeypatch):
    backends = Backends(monkeypatch)
    backends.on_hold()
    sign_in(client)
    page = client.get("/consults/t1").get_data(as_text=True)
    assert "own-address.js" not in page  # a page a GET answered is at its own address already
    refused = client.post("/consults/t1/answer", data={"answer": "", "csrf_token": csrf_token(page)})
    assert refused.status_code == 422 and not backends.posted
    assert re.search(r'<script src="/assets/own-address.js\?v=\w+" data-address="/consults/t1" defer></script>',
                     refused.get_data(as_text=True))
    # the address opened again (a reload after the script did not run, a bookmark): the consult's page
    again = client.get("/consults/t1/answer")
    assert again.status_code == 303 and again.headers["Location"] == "/consults/t1"


def test_a_refused_refund_leaves_the_cashier_at_the_invoices_own_address(tmp_path, monkeypatch):
    from sen_portal.web import cashier

    from services.portal.tests.test_cashier_live_and_refunds import CASH, Billing

    fake = Billing()
    fake.s.update(status="balanced", paid=80000, balanceDue=0, credit=30000,
                  payments=[{**CASH, "amount": 80000, "refundable": 30000}])
    monkeypatch.setattr(cashier, "shared_get", fake.shared_get)
    monkeypatch.setattr(cashier, "_json", fake.json)
    monkeypatch.setattr(cashier, "patient_names", lambda ids: {"pa": "Lê Thị Hoa"})
    c = portal_signed_in(portal_app(tmp_path, monkeypatch, SEN_PORTAL_CACHE_SECONDS="0"), "cashier")
    page = c.get("/invoices/inv-a?p=pa").get_data(as_text=True)
    assert "own-address.js" not in page
    r = c.post("/invoices/inv-a/refund?p=pa", data={"payment": "cashier:c-1", "method": "cash", "reason": "",
                                                    "csrf_token": csrf_token(page)})
    assert r.status_code == 422
    assert re.search(r'<script src="/assets/own-address.js\?v=\w+" data-address="/invoices/inv-a\?p=pa" defer>',
                     r.get_data(as_text=True))
    again = c.get("/invoices/inv-a/refund?p=pa")
    assert again.status_code == 303 and again.headers["Location"] == "/invoices/inv-a?p=pa"


def test_a_get_of_a_post_only_address_with_no_page_above_is_still_the_readable_page(tmp_path, monkeypatch):
    c = portal_signed_in(portal_app(tmp_path, monkeypatch), "cashier")
    r = c.get("/logout")
    assert r.status_code == 405 and "Không thể mở trang này theo cách này" in r.get_data(as_text=True)
    # only a GET (or HEAD) is sent on: another method is still refused, readably
    assert c.put("/invoices/inv-a/refund?p=pa").status_code == 405
    assert c.head("/invoices/inv-a/refund?p=pa").status_code == 303


# ------------------------------------------------------------------ 5. wording and formats

@pytest.mark.parametrize("lang, bank, cash, payos", [
    ("vi", "Chuyển khoản ngân hàng", "Tiền mặt", "Chuyển khoản (payOS)"),
    ("en", "Direct bank transfer", "Cash", "Bank transfer (payOS)")])
def test_a_transfer_the_bank_reported_reads_as_a_bank_transfer(tmp_path, monkeypatch, lang, bank, cash, payos):
    from sen_portal.web.formatting import payment_method, received_through

    app = portal_app(tmp_path, monkeypatch)
    with app.test_request_context(headers={"Accept-Language": lang}):
        from flask import session

        session["lang"] = lang
        assert payment_method("standard", "transfer") == received_through("standard", "transfer") == bank
        assert payment_method("cashier", "cash") == cash and payment_method("payos", "transfer") == payos
        assert received_through("payos", "transfer") == "payOS"
        for provider in ("standard", "payos", "casso", "sepay", None):
            assert "Standard Webhooks" not in payment_method(provider, "transfer") + received_through(provider, "x")


def test_the_qr_codes_expiry_is_date_first_as_every_other_time(tmp_path, monkeypatch):
    from sen_portal.web import cashier

    from services.portal.tests.test_cashier_live_and_refunds import Billing

    fake = Billing()
    qr = {"amount": 50000, "reference": "HD7K2M9QX4C", "expiresAt": "2099-12-05T18:59:06+07:00"}
    monkeypatch.setattr(cashier, "shared_get", lambda service, path, params=None, **kw: {
        **fake.shared_get(service, path, params), **({"qr": qr} if path.endswith("/desk") else {})})
    monkeypatch.setattr(cashier, "patient_names", lambda ids: {"pa": "Lê Thị Hoa"})
    c = portal_signed_in(portal_app(tmp_path, monkeypatch, SEN_PORTAL_CACHE_SECONDS="0"), "cashier")
    page = c.get("/invoices/inv-a?p=pa").get_data(as_text=True)
    assert "Mã có hiệu lực đến 05/12/2099 18:59." in page and "18:59:06" not in page


def test_the_demo_administrator_is_named_in_vietnamese_only():
    from sen_portal.web.users import DEMO_USERS

    names = [user.name for user, _ in DEMO_USERS.values()]
    assert DEMO_USERS["admin"][0].name == "Quản trị viên"
    assert not any("/" in n or "Admin" in n for n in names), names
