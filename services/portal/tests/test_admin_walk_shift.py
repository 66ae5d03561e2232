"""A shift is a facility's (its cash drawer, its bank account, its daily report): the admin, an account of no
facility, was offered "Mở ca" on /shift and "no shift is open" on an invoice linked her there; billing opened her a
shift of no facility. Now the page says who opens a shift instead of offering it (Vietnamese, English by the
switch), a post of the open is refused in words with nothing sent, and billing's refusal on an invoice says the
same without the link; a facility's cashier is offered the open as before."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from sen_portal.web.backend import BackendError

from services.portal.tests.cashier_support import ShiftBilling
from services.portal.tests.test_cashier_limits_and_shift import _an_invoice_awaiting_payment
from tests.support import csrf_token, portal_app, portal_signed_in

SAID = {"vi": "Ca làm việc thuộc về một cơ sở", "en": "A shift belongs to a facility"}
WHO_VI = "thu ngân của cơ sở mở ca"


@pytest.fixture()
def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    return portal_app(tmp_path, monkeypatch, SEN_PORTAL_CACHE_SECONDS="0")


@pytest.fixture()
def billing(monkeypatch) -> ShiftBilling:
    from sen_portal.web import cashier

    fake = ShiftBilling({"cashTaken": 0, "cashRefunded": 0, "cash": 0, "transfers": 0})
    fake.shift_open = False
    monkeypatch.setattr(cashier, "_json", fake)
    return fake


@pytest.mark.parametrize("lang", ["vi", "en"])
def test_the_admin_is_told_who_opens_a_shift_not_offered_the_open(app, billing, lang):
    client = portal_signed_in(app, "admin", lang)
    r = client.get("/shift")
    page = r.get_data(as_text=True)
    assert r.status_code == 200
    assert 'data-testid="shift-needs-a-facility"' in page and SAID[lang] in page, page
    assert 'name="which" value="open"' not in page and "open-opening_cash" not in page
    token = csrf_token(page)
    posted = client.post("/shift", data={"which": "open", "open-opening_cash": "500.000", "csrf_token": token})
    answer = posted.get_data(as_text=True)
    assert posted.status_code == 403 and SAID[lang] in answer, answer
    assert billing.posted() == []


def test_a_facilitys_cashier_is_offered_the_open(app, billing):
    page = portal_signed_in(app, "cashier").get("/shift").get_data(as_text=True)
    assert 'name="which" value="open"' in page and 'data-testid="shift-needs-a-facility"' not in page


def test_no_shift_open_on_an_invoice_does_not_send_the_admin_to_open_one(app, billing, monkeypatch):
    _an_invoice_awaiting_payment(monkeypatch)

    def refused(method, path, body=None, params=None, key=None):  # noqa: ANN001, ANN202 - as cashier._json
        if path == "/payments/cash":
            raise BackendError("refused", "billing", 409, "open a shift first (POST /payments/shifts)", "Conflict")
        return billing(method, path, body, params, key)

    from sen_portal.web import cashier

    monkeypatch.setattr(cashier, "_json", refused)
    client = portal_signed_in(app, "admin")
    token = csrf_token(client.get("/invoices/inv-a").get_data(as_text=True))
    page = client.post("/invoices/inv-a/cash", data={"cash-amount": "130.000", "csrf_token": token}).get_data(
        as_text=True)
    assert "Chưa có ca làm việc nào mở." in page and WHO_VI in page, page
    assert 'data-testid="open-shift-link"' not in page and not re.search(r'href="/shift', page.split("<main")[-1])
