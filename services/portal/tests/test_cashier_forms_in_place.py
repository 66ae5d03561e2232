"""The cashier's forms the browser still posted, sent in place now (htmx, _form.html's sent_in_place): an answer
lost on the way back (a flaky link) was Chromium's own English error page. Now the page stays, the form's own box
says what happened, what was typed is kept (the form's key too), and sent again the action is done once.

- The refund list's give-back ("Hoàn …", /refunds): its box is the list (#refund-list), the row's step, errors and
  billing's refusals said in it (200 to htmx); done, the list again (204 + HX-Redirect). Sent again with the same
  key, billing's Idempotency-Key replays the first refund.

Flask's test client; billing faked as it answers (test_cashier_money_back's fake)."""

from __future__ import annotations

import re

from sen_portal.web.backend import BackendError

from services.portal.tests.test_cashier_money_back import app, billing, row  # noqa: F401 - fixtures
from tests.support import csrf_token, flashed_steps, portal_signed_in


def hx(page: str) -> dict[str, str]:
    return {"HX-Request": "true", "HX-Current-URL": f"http://localhost{page}"}


def _posts(state) -> list[tuple]:
    return [a for a in state["asked"] if a[0] == "POST"]


def test_the_give_back_is_sent_in_place_its_step_and_refusal_said_in_the_list(app, billing):  # noqa: F811
    client = portal_signed_in(app, "cashier")
    page = client.get("/refunds").get_data(as_text=True)
    credit = row(page, "credit")
    form = re.search(r'<form method="post" action="/refunds/give-back"[^>]*>', credit).group(0)
    assert 'hx-post="/refunds/give-back"' in form and 'hx-target="#refund-list"' in form
    assert 'hx-select="#refund-list"' in form and 'data-live-error="give-back-live-error-2"' in form
    assert re.search(r'<div id="give-back-live-error-2" class="alert error" role="alert" hidden>'
                     r'Không gửi được yêu cầu', credit)
    assert page.count('id="refund-list"') == 1
    txn = re.search(r'name="txn" value="([^"]*)"', credit).group(1)
    fields = {"csrf_token": csrf_token(page), "payment": "cashier:c1", "txn": txn, "amount": "11000",
              "method": "cash", "reason": "Trả lại tiền thừa"}
    # the first press: the row's step in the list's box, 200 (htmx swaps a 2xx only); nothing given back
    r = client.post("/refunds/give-back", data=fields, headers=hx("/refunds"))
    said = r.get_data(as_text=True)
    assert r.status_code == 200 and "HX-Redirect" not in r.headers and not _posts(billing)
    assert 'id="refund-list"' in said and 'name="confirm" value="give-back"' in row(said, "credit")
    # no reason: the row's errors, 200 to htmx (422 to a browser's post, as before)
    r = client.post("/refunds/give-back", data={**fields, "reason": ""}, headers=hx("/refunds"))
    assert r.status_code == 200 and "Nêu lý do." in r.get_data(as_text=True)
    assert client.post("/refunds/give-back", data={**fields, "reason": ""}).status_code == 422
    # confirmed: done, the list again by HX-Redirect, said once there
    confirmed = {**fields, "confirming": "give-back", "confirm": "give-back"}
    r = client.post("/refunds/give-back", data=confirmed, headers=hx("/refunds"))
    assert r.status_code == 204 and r.headers["HX-Redirect"] == "/refunds"
    assert flashed_steps(client) == [("/refunds", "refunded=1")]
    first = _posts(billing)
    assert len(first) == 1 and first[0][1] == "/payments/cashier:c1/refund"
    # its answer lost, sent again: the same request and key (billing's Idempotency-Key replays the first refund)
    r = client.post("/refunds/give-back", data=confirmed, headers=hx("/refunds"))
    assert r.status_code == 204
    again = _posts(billing)
    assert len(again) == 2 and again[1][1:] == first[0][1:]  # path, params, body and Idempotency-Key the same


def test_a_give_back_refused_is_said_in_the_lists_box(app, billing):  # noqa: F811
    client = portal_signed_in(app, "cashier")
    page = client.get("/refunds").get_data(as_text=True)
    billing["refuse"] = BackendError("refused", "billing", 409, "this invoice's credit (money paid over what was "
                                     "owed) was given back already: nothing is left to refund",
                                     code="Conflict", extra={"refundable": 0, "why": "balanced"})
    fields = {"csrf_token": csrf_token(page), "payment": "cashier:c1", "txn": "k1", "amount": "11000",
              "method": "cash", "reason": "Trả lại tiền thừa", "confirming": "give-back", "confirm": "give-back"}
    r = client.post("/refunds/give-back", data=fields, headers=hx("/refunds"))
    said = r.get_data(as_text=True)
    assert r.status_code == 200 and "HX-Redirect" not in r.headers
    box = said[said.index('id="refund-list"'):]
    assert "Tiền thừa của hóa đơn này (phần trả quá số phải trả) đã được hoàn rồi" in box
    assert client.post("/refunds/give-back", data=fields).status_code == 409  # a browser's post: as before
