"""The cashier's forms the browser still posted, sent in place now (htmx, _form.html's sent_in_place): an answer
lost on the way back (a flaky link) was Chromium's own English error page. Now the page stays, the form's own box
says what happened, what was typed is kept (the form's key too), and sent again the action is done once.

- The refund list's give-back ("Hoàn …", /refunds): its box is the list (#refund-list), the row's step, errors and
  billing's refusals said in it (200 to htmx); done, the list again (204 + HX-Redirect). Sent again with the same
  key, billing's Idempotency-Key replays the first refund.
- The unmatched transfers' assignment ("Gán", /unmatched): its box is the queue (#unmatched-list), done, a row's
  error and the other facility's step said in it (200 to htmx). Each row carries a key made when the queue is
  shown; the assignment goes with it as its Idempotency-Key, so sent again billing replays the first answer.
- The shift's close ("Đóng ca", /shift): its box is the page's main; the step, the errors and the closed shift said
  there (200 to htmx); the close goes with the form's key as its Idempotency-Key, so sent again billing replays it.

Flask's test client; billing faked as it answers (test_cashier_money_back's and test_cashier_lists' fakes)."""

from __future__ import annotations

import re

import pytest
from sen_portal.web.backend import BackendError

from services.portal.tests import test_cashier_lists as lists
from services.portal.tests.cashier_support import ShiftBilling
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


@pytest.fixture()
def queue(monkeypatch):
    """test_cashier_lists' billing, the assignment's Idempotency-Key kept too: one transfer waiting, two invoices."""
    from sen_portal.web import cashier

    state = lists.billing.__wrapped__(monkeypatch)
    state["keys"] = []

    def post(method, path, body=None, params=None, key=None):
        state["posted"].append((method, path, body))
        state["keys"].append(key)
        return {"invoice": "inv-a", "reference": "HD00000000A"}

    monkeypatch.setattr(cashier, "_json", post)
    state["invoices"] = [lists.invoice("inv-a", "pa", 104000, "HD00000000A", "2026-12-05T13:06:00+07:00")]
    state["summaries"] = {"inv-a": lists.summary("inv-a", "issued", 104000, 0)}
    state["unmatched"] = [{"id": "standard:t2", "amount": 104000, "receivedAt": "2026-12-05T13:21:00+07:00",
                           "description": "mai tra not", "facility": "tyt-my-hiep"}]
    return state


def test_the_assignment_is_sent_in_place_with_the_rows_key_so_sent_again_it_is_the_same(app, queue):  # noqa: F811
    client = portal_signed_in(app, "cashier")
    page = client.get("/unmatched").get_data(as_text=True)
    assert page.count('id="unmatched-list"') == 1
    form = re.search(r'<form method="post" class="row"[^>]*>', page).group(0)
    assert 'hx-post="/unmatched"' in form and 'hx-target="#unmatched-list"' in form
    assert 'hx-select="#unmatched-list"' in form and 'data-live-error="unmatched-live-error-1"' in form
    assert re.search(r'<div id="unmatched-live-error-1" class="alert error" role="alert" hidden>'
                     r'Không gửi được yêu cầu', page)
    txn = re.search(r'name="txn" value="([0-9a-f]{32})"', page).group(1)
    fields = {"payment": "standard:t2", "invoice": "", "txn": txn, "csrf_token": csrf_token(page)}
    # nothing chosen: the row's error in the queue's box, 200 to htmx (422 to a browser's post, as before)
    r = client.post("/unmatched", data=fields, headers=hx("/unmatched"))
    said = r.get_data(as_text=True)
    assert r.status_code == 200 and 'data-testid="unmatched-row-error"' in said and not queue["posted"]
    assert f'name="txn" value="{txn}"' in said  # the row keeps its key
    assert client.post("/unmatched", data=fields).status_code == 422
    # assigned: said in the box; its answer lost, sent again with the same key
    fields["invoice"] = "inv-a"
    for _ in range(2):
        r = client.post("/unmatched", data=fields, headers=hx("/unmatched"))
        done = re.search(r'data-testid="unmatched-done">(.*?)</div>', r.get_data(as_text=True), re.S).group(1)
        assert r.status_code == 200 and 'href="/invoices/inv-a">HD00000000A</a>' in done
    assert queue["posted"] == [("POST", "/payments/unmatched/standard:t2/assign", {"invoice": "inv-a"})] * 2
    assert queue["keys"][0] == queue["keys"][1] and queue["keys"][0].startswith(f"portal-assign-{txn}-")
    # another row's key, or another invoice: another request
    client.post("/unmatched", data={**fields, "invoice": "HD00000000B"}, headers=hx("/unmatched"))
    assert queue["keys"][2] != queue["keys"][0]


class KeyedShiftBilling(ShiftBilling):
    """The shift's billing, each close's Idempotency-Key kept."""

    def __call__(self, method, path, body=None, params=None, key=None):  # noqa: ANN001, ANN204 - as cashier._json
        if path == "/payments/shifts/current/close":
            self.keys = [*getattr(self, "keys", []), key]
        return super().__call__(method, path, body, params, key)


def test_the_shift_close_is_sent_in_place_with_its_key_so_sent_again_it_is_the_same(app, monkeypatch):  # noqa: F811
    from sen_portal.web import cashier

    shift = KeyedShiftBilling({"cash": 500000, "transfers": 0, "cashTaken": 500000, "cashRefunded": 0})
    monkeypatch.setattr(cashier, "_json", shift)
    client = portal_signed_in(app, "cashier")
    page = client.get("/shift").get_data(as_text=True)
    form = re.search(r'<form method="post"[^>]*hx-post="/shift"[^>]*>', page).group(0)
    assert 'hx-target="#main"' in form and 'hx-select="#main"' in form
    assert 'data-live-error="shift-close-live-error"' in form
    assert re.search(r'<div id="shift-close-live-error" class="alert error" role="alert" hidden>'
                     r'Không gửi được yêu cầu', page)
    txn = re.search(r'name="close-txn" type="hidden" value="([0-9a-f]{32})"', page).group(1)
    fields = {"which": "close", "close-counted_cash": "500.000", "close-counted_transfers": "0",
              "close-txn": txn, "csrf_token": csrf_token(page)}
    r = client.post("/shift", data=fields, headers=hx("/shift"))  # the first press: the step, in place
    said = r.get_data(as_text=True)
    assert r.status_code == 200 and 'name="confirm" value="shift-close"' in said and not shift.posted()
    assert f'value="{txn}"' in said  # the key kept with the counts
    assert client.post("/shift", data={**fields, "close-counted_cash": ""}, headers=hx("/shift")).status_code == 200
    confirmed = {**fields, "confirming": "shift-close", "confirm": "shift-close"}
    for _ in range(2):  # its answer lost, sent again: the same request and key (billing replays the close)
        r = client.post("/shift", data=confirmed, headers=hx("/shift"))
        assert r.status_code == 200 and 'data-testid="shift-summary"' in r.get_data(as_text=True)
    assert len(shift.posted()) == 2 and shift.posted()[0] == shift.posted()[1]
    assert shift.keys[0] == shift.keys[1] and shift.keys[0].startswith(f"portal-shift-close-{txn}-")
