"""The invoices list read by the admin (walk of session 28): "Hóa đơn mới" (new invoice) was offered to an account
of no facility, whose click led only to the refusal "Hóa đơn mới do thu ngân của một cơ sở lập…" (web.invoice_new):
offered to a facility's cashier alone. Billing faked as in test_cashier_lists."""

from __future__ import annotations

import pytest

from services.portal.tests.test_cashier_lists import app, billing, invoice, summary  # noqa: F401 - fixtures
from tests.support import portal_signed_in


@pytest.mark.parametrize(("user", "offered"), [("cashier", True), ("admin", False)])
def test_a_new_invoice_is_offered_to_a_facilitys_cashier_only(app, billing, user, offered):  # noqa: F811
    billing["invoices"] = [invoice("inv-open", "pa", 20000, "HD00000000D", "2026-12-05T11:00:00+07:00")]
    billing["summaries"] = {"inv-open": summary("inv-open", "issued", 20000, 0)}
    client = portal_signed_in(app, user)
    page = client.get("/invoices").get_data(as_text=True)
    assert "HD00000000D" in page  # the list itself, for both
    assert ('data-testid="new-invoice"' in page) is offered
    assert (client.get("/invoices/new").status_code == 200) is offered  # what the link would have led to
