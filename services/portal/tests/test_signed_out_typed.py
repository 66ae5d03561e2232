"""A cashier's form sent after the session ended (review 8): the signed-out page shows only what the cashier
typed (a reason, an amount), each under its box's label, never the form's token, keys or hidden ids (a page's
other forms' tokens and keys posted with it, the payment chosen, the refund's method, the ids of the payments
the page listed): those were shown as "Nội dung bạn đã nhập (chưa gửi)" as if typed. Flask's test client; no
back-end is called (nothing is sent)."""

from __future__ import annotations

import html
import re
from pathlib import Path

import pytest
from sen_portal.web import typed_text
from werkzeug.datastructures import MultiDict

from tests.support import csrf_token, portal_app, portal_signed_in

PAYMENT = "standard:2b3dfcde3232"
AMOUNT = "Số tiền (đồng; để trống: hoàn toàn bộ số có thể hoàn)"
KEYS = {"txn": "a" * 32, "card-txn": "b" * 32, "cash-txn": "c" * 32}


@pytest.fixture()
def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    return portal_app(tmp_path, monkeypatch)


def _shown(body: str) -> list[tuple[str, str]]:
    return [(html.unescape(label).strip(), html.unescape(text)) for label, text in re.findall(
        r'<label class="typed">([^<]*)<textarea readonly[^>]*data-testid="typed">(.*?)</textarea>', body, re.S)]


def _signed_out_post(app, path: str, data: dict[str, str]) -> str:
    client = portal_signed_in(app, "cashier")
    token = csrf_token(client.get("/login").get_data(as_text=True))  # a token of the session
    client.delete_cookie("sen_portal")  # the session ended meanwhile
    data = {k: (token if v == "TOKEN" else v) for k, v in data.items()}
    r = client.post(path, data=data)
    body = r.get_data(as_text=True)
    assert r.status_code == 400 and ("Bạn đã bị đăng xuất" in body or "You were signed out" in body), body[:800]
    assert token not in body
    return body


def _no_internal_value(body: str) -> None:
    for value in (PAYMENT, *KEYS.values()):
        assert value not in body, value


def test_the_refund_form_sent_signed_out_shows_the_amount_and_reason_under_their_labels(app) -> None:
    body = _signed_out_post(app, "/invoices/i1/refund", {
        "csrf_token": "TOKEN", "cancel-csrf_token": "TOKEN", "payment": PAYMENT, "after": f"{PAYMENT} cash:50d0",
        "amount": "10.000", "method": "cash", "reason": "Người bệnh xin lại", **KEYS})
    assert _shown(body) == [(AMOUNT, "10.000"), ("Lý do", "Người bệnh xin lại")]
    _no_internal_value(body)
    assert "cash:50d0" not in body


def test_the_cancel_form_sent_signed_out_shows_its_reason_only(app) -> None:
    body = _signed_out_post(app, "/invoices/i1/cancel", {
        "cancel-csrf_token": "TOKEN", "cancel-reason": "Tạo nhầm hóa đơn", "payment": PAYMENT, **KEYS})
    assert _shown(body) == [("Lý do", "Tạo nhầm hóa đơn")]
    _no_internal_value(body)


def test_only_the_text_boxes_of_the_form_sent_are_typed_text() -> None:
    """The allow-list: a field no form of the portal types is never shown; of the fields a form hides in one
    form and types in another (a take-on's hidden names, the registration's typed ones), the form sent
    decides."""
    take_on = typed_text(MultiDict({"system": "cccd", "number": "087168004512", "family": "Nguyễn",
                                    "given": "Thị Mai", "reason": "referral", "other": "Chuyển tuyến"}))
    assert [t.text for t in take_on] == ["Chuyển tuyến"]
    register = typed_text(MultiDict({"family": "Nguyễn", "given": "Thị Mai", "cccd": "087168004512",
                                     "gender": "female", "phone": "0913000001"}))
    assert [t.text for t in register] == ["Nguyễn", "Thị Mai", "087168004512", "0913000001"]
    assert typed_text(MultiDict({"whatever": "x", "csrf_token": "t", "password": "p"})) == []


def test_the_form_a_view_names_decides_and_brings_back_no_other_forms_choices() -> None:
    """A reject's reason, its one field, is as many forms' as the take-on's reason, a choice: guessed from the
    fields posted, it was dropped. The view that read the post with its form names it: the reject's reason
    comes back, under its label; the take-on's chosen reason still never does, named or guessed."""
    from sen_portal.web.forms import ReasonForm, TakeOnForm

    reject = MultiDict({"csrf_token": "t", "reason": "Ngoài chuyên khoa.", "version": "3", "confirm": "reject"})
    # guessed, the reason was dropped (the take-on's choice is a candidate) or labelled as another form's
    assert [str(t.label) for t in typed_text(reject)] != ["Reason"]
    assert typed_text(MultiDict({"reason": "Ngoài chuyên khoa.", "version": "3"})) == []
    assert [(str(t.label), t.text) for t in typed_text(reject, ReasonForm)] == [("Reason", "Ngoài chuyên khoa.")]
    take_on = MultiDict({"reason": "referral", "other": "Chuyển tuyến", "number": "087168004512"})
    assert [t.text for t in typed_text(take_on, TakeOnForm)] == ["Chuyển tuyến"]
    assert typed_text(MultiDict({"reason": "referral"}), TakeOnForm) == []
