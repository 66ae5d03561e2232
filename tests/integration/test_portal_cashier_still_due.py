"""The cashier's "still due" after a partial cash payment, against a real billing (a gunicorn process on loopback)
on the real FerretDB, the portal in this process: a transfer landing between the portal's read of the invoice
and billing's record of the cash (forced here, as the billing race tests force theirs) is counted. The balance
read before the payment less the cash overstated what is owed; the invoice read after it says it."""

from __future__ import annotations

import re

import pytest

from tests.billing_support import make_invoice, pay
from tests.integration.test_portal_cashier_invoice_page import CLINIC, _field, _open_shift
from tests.integration.test_portal_cashier_invoice_page import billing as billing  # noqa: F401 - fixtures, by name
from tests.integration.test_portal_cashier_invoice_page import portal as portal  # noqa: F401
from tests.support import csrf_token, portal_signed_in

pytestmark = pytest.mark.integration


def test_a_transfer_landing_while_cash_is_recorded_is_counted_in_what_is_still_due(portal, billing, monkeypatch):
    from sen_portal.web import cashier

    _url, db = billing
    iid, code = make_invoice(db, 40_000, facility=CLINIC)
    teller = portal_signed_in(portal, "cashier")
    _open_shift(teller)
    page = teller.get(f"/invoices/{iid}").get_data(as_text=True)
    decided = cashier._cash_to_record

    def then_a_transfer(s, received, txn, **kw):  # the form has read 40.000 ₫ due; 15.000 ₫ lands now
        recorded = decided(s, received, txn, **kw)
        pay(db, code, 15_000)
        return recorded

    monkeypatch.setattr(cashier, "_cash_to_record", then_a_transfer)
    r = teller.post(f"/invoices/{iid}/cash", data={"cash-amount": "10.000", "cash-txn": _field(page, "cash-txn"),
                                                   "csrf_token": csrf_token(page)}, follow_redirects=True)
    said = re.search(r'data-testid="cash-recorded">([^<]*)<', r.get_data(as_text=True))
    assert said and said.group(1) == "Đã ghi nhận 10.000\u00a0₫ tiền mặt, còn phải thu 15.000\u00a0₫.", said
