"""An invoice search answered 503 by the portal (billing stopped or too slow: web.cashier.invoice_search) names
its results as the target (``HX-Retarget: #invoice-results``), and app.js swaps it in: the cashier reads why
nothing was found, in place, not the old results and no "could not be sent" (htmx swaps no 5xx by itself). The
answer is the portal's shape, held by the test (a Playwright route), not timed."""

from __future__ import annotations

import pytest

from tests.browser.test_worklist_outage import answer_503, opened_as, shown_in_place

pytestmark = pytest.mark.integration

SAID = "Dịch vụ thanh toán trả lời quá chậm. Vui lòng thử lại sau giây lát; nội dung bạn đã nhập vẫn được giữ."


def test_an_invoice_search_answered_503_shows_why_in_place(visitor_factory):
    v = opened_as(visitor_factory, "vi-360-invoice-search-outage", "cashier", "/invoices")
    page = v.page
    answer_503(page, r".*/invoices/search$", "section", "invoice-results", SAID)
    page.fill("input[name=q]", "nguyen van a")
    page.locator("form[hx-post$='/invoices/search'] button").click()
    shown_in_place(page, "invoice-results", SAID)
    assert page.input_value("input[name=q]") == "nguyen van a"  # what was typed stays
    v.shot("vi-360-invoice-search-503", full_page=False)
