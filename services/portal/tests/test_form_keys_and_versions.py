"""What a page's form posts back of its own making (a form's key, the Task version the page showed) goes into
a back-end's request header (``Idempotency-Key``, ``If-Match``): only what the pages make is sent. A key
that is no key (a new line, an emoji, 100 kB) and a version of digits other than ASCII ('١', '²') were a 500
(the header unsendable), found by the session 21 fuzz round. The back-ends are at a port nothing listens
on: a page that reaches them is the portal's 503 page, never its 500."""

from __future__ import annotations

from pathlib import Path

import pytest
from werkzeug.datastructures import MultiDict

from tests.support import csrf_token, portal_app, portal_signed_in

HOSTILE_KEYS = ["a\nb", "😀", "é" * 40, "k" * 100_000, "a\x00b", "0123456789abcdef0123456789ABCDEF"]


@pytest.fixture()
def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    flask_app = portal_app(tmp_path, monkeypatch, SEN_PORTAL_CACHE_SECONDS="0")
    flask_app.config["PROPAGATE_EXCEPTIONS"] = False  # a failing page is the 500 page, as served
    return flask_app


def _post(client, path: str, data: dict[str, str]):
    token = csrf_token(client.get("/login").get_data(as_text=True))
    return client.post(path, data={"csrf_token": token, **data})


@pytest.mark.parametrize("key", HOSTILE_KEYS)
def test_a_refund_whose_form_key_is_no_key_is_sent_with_a_new_one(app, key):
    cashier = portal_signed_in(app, "cashier")
    r = _post(cashier, "/invoices/inv-1/refund", {"payment": "cashier:c1", "reason": "Trả thừa", "method": "cash",
                                                   "txn": key, "confirm": "refund"})
    assert r.status_code == 503, (r.status_code, r.get_data(as_text=True)[-800:])  # billing down, not a 500


@pytest.mark.parametrize("key", HOSTILE_KEYS[:3])
def test_the_refund_key_sent_is_the_forms_or_a_new_one(app, monkeypatch, key):
    from sen_portal.web import cashier as desk

    asked = []

    def answer(method, path, body=None, params=None, key=None):
        asked.append((method, path, key))
        return {"payment": "cashier:c1", "amount": 10000} if method == "POST" else {}

    monkeypatch.setattr(desk, "_json", answer)
    cashier = portal_signed_in(app, "cashier")
    _post(cashier, "/invoices/inv-1/refund", {"payment": "cashier:c1", "reason": "Trả thừa", "method": "cash",
                                              "txn": key, "confirm": "refund"})
    [(_, _, sent)] = [a for a in asked if a[0] == "POST"]
    assert sent.isascii() and sent.startswith("portal-refund-") and key not in sent
    good = "0123456789abcdef" * 2
    _post(cashier, "/invoices/inv-1/refund", {"payment": "cashier:c1", "reason": "Trả thừa", "method": "cash",
                                              "txn": good, "confirm": "refund"})
    assert asked[-1][2].startswith(f"portal-refund-{good}-")  # the page's own key: a second click is the same


def test_a_form_key_is_taken_only_as_the_pages_make_it():
    from sen_portal.web.forms import FormKey, RefundForm

    assert RefundForm.txn.field_class is FormKey
    good = "0123456789abcdef" * 2
    for posted, kept in [(good, good), (good.upper(), None), (good + "0", None), ("a\nb", None), ("", None)]:
        form = RefundForm(formdata=MultiDict({"txn": posted}), meta={"csrf": False})
        assert form.txn.data == kept, posted


@pytest.mark.parametrize("version", ["١", "²", "1²", "3\n", "9" * 40])
@pytest.mark.parametrize("step", ["accept", "start", "reject"])
def test_a_doctors_step_with_a_version_of_other_digits_is_sent_without_it(app, step, version):
    doctor = portal_signed_in(app, "doctor")
    r = _post(doctor, f"/tasks/t-1/{step}", {"version": version, "reason": "Không thuộc chuyên khoa",
                                             "confirm": step})
    assert r.status_code != 500, r.get_data(as_text=True)[-800:]
    assert r.status_code == 503  # teleconsult down: the page says so


def test_page_version_takes_ascii_digits_only(app):
    from sen_portal.web.doctor import page_version

    for posted, seen in [("7", "7"), ("١", ""), ("²", ""), ("7\n", ""), ("", ""), ("9" * 19, ""), ("9" * 18, "9" * 18)]:
        with app.test_request_context("/", method="POST", data={"version": posted}):
            assert page_version() == seen, posted
