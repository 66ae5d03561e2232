"""A step's confirmation is said on the page it is for, by that page's own load, whatever else the browser asks
for meanwhile (sen_portal.web.notices). Flask's test client; the back-ends are the scripted fakes of other
modules (teleconsult at the HTTP transport: test_visit_changes; billing: test_walk_cashier_and_sources and
test_cashier_money_back).

Three ways a confirmation went missing (ci-local, sessions 29 and 30), each replayed here in the order that lost it:

- an htmx request rendering a page that reads its messages (the invoice page refreshed in place, the list to refund
  as a form of it came back) took every message of the session, the step's sentence for the page about to load
  included: Flask's ``get_flashed_messages`` takes all of them out whichever category it returns;
- a page opened in another tab took them the same way: the cash recorded on one invoice was said on the other;
- the question to the clinic (``asked``): the consult page's free-times box asks for its times at load (htmx, a
  ``$find`` POST to teleconsult, which marks the session written), and the doctor asked her question meanwhile.
  The box's answer, computed from the cookie its request left with, came back after the question's and the
  browser kept its cookie, without the message the question's answer had put in it: a lost update of the cookie
  session. The messages now ride in a cookie of their own, which only a response that adds or takes one sends.
"""

from __future__ import annotations

import html
import re
import time
from typing import Any

import pytest
from sen_shared import http

from services.portal.tests.test_cashier_money_back import CREDIT
from services.portal.tests.test_cashier_money_back import app as money_app  # noqa: F401 - a fixture, by name
from services.portal.tests.test_cashier_money_back import billing as billing  # noqa: F401 - a fixture, by name
from services.portal.tests.test_visit_changes import TID
from services.portal.tests.test_visit_changes import app as app  # noqa: F401 - a fixture, used by name
from services.portal.tests.test_visit_changes import fake as fake  # noqa: F401 - a fixture, used by name
from services.portal.tests.test_walk_cashier_and_sources import _Billing, _cashier
from tests.support import csrf_token, portal_signed_in

HTMX = {"HX-Request": "true"}
ASKED = 'data-testid="asked"'
RECORDED = 'data-testid="cash-recorded"'
FINISHED = 'data-testid="refund-finished"'


def _later_answer(browser: Any, other: Any, answer: Any) -> None:
    """What the browser does with ``answer``, a response to a request that left with the cookies ``other`` (a client
    made of the browser's cookies then) holds: it keeps every cookie the answer sets (or deletes)."""
    for header in answer.headers.getlist("Set-Cookie"):
        name = header.split("=", 1)[0]
        kept = other.get_cookie(name)
        if kept is None:
            browser.delete_cookie(name)
        else:
            browser.set_cookie(name, kept.value)


def _copy(browser: Any) -> Any:
    """A client holding the browser's cookies as they are now: a request leaving now carries them."""
    other = browser.application.test_client()
    for cookie in browser._cookies.values():
        other.set_cookie(cookie.key, cookie.value)
    return other


def _asking(monkeypatch: pytest.MonkeyPatch, fake: Any) -> list[Any]:  # noqa: F811
    """teleconsult's ``$request-info`` on the fake consult: taken (its question kept), the Task answered."""
    asked: list[Any] = []

    def transport(method: str, url: str, **kw: Any) -> http.Response:
        if method == "POST" and url.endswith(f"/fhir/Task/{TID}/$request-info"):
            asked.append(kw.get("json"))
            return http.Response(200, {}, b'{"resourceType": "Task", "id": "t-1", "status": "on-hold"}')
        return fake(method, url, **kw)

    monkeypatch.setattr(http, "request", transport)
    return asked


def test_the_question_is_said_sent_though_the_free_times_answer_came_back_after_it(app, fake,  # noqa: F811
                                                                                    monkeypatch):
    """The order ci-local lost "asked" in: the free-times box's request leaves (the page just shown), the question is
    sent and answered (its message set), then the box's answer arrives, from the older cookie; the page the question
    leads to still says it was sent."""
    fake.change("a-1", "cancelled", "Bác sĩ bận")  # no visit booked: the booking form asks for its times at load
    asked = _asking(monkeypatch, fake)
    doctor = portal_signed_in(app, "doctor")
    page = doctor.get(f"/tasks/{TID}").get_data(as_text=True)
    box = html.unescape(re.search(r'data-testid="free-times-loading" hx-get="([^"]+)"', page).group(1))
    leaving = _copy(doctor)  # the box's request, with the cookies of the page's answer
    sent = doctor.post(f"/tasks/{TID}/request-info", headers={**HTMX, "HX-Current-URL": f"http://localhost/tasks/{TID}"},
                       data={"csrf_token": csrf_token(page), "question": "Xin gửi troponin.", "version": ""})
    assert sent.status_code == 204 and sent.headers["HX-Redirect"] == f"/tasks/{TID}" and len(asked) == 1
    times = leaving.get(box, headers={**HTMX, "HX-Target": "free-times"})
    assert times.status_code == 200 and "/book" in times.get_data(as_text=True)  # the times, as the box shows them
    _later_answer(doctor, leaving, times)
    after = doctor.get(f"/tasks/{TID}").get_data(as_text=True)
    assert after.count(ASKED) == 1, after[:3000]
    assert ASKED not in doctor.get(f"/tasks/{TID}").get_data(as_text=True)  # said once


def test_a_page_opened_in_another_tab_leaves_the_step_to_its_own_page(app, fake, monkeypatch):  # noqa: F811
    """Two tabs: the question asked in one, the worklist opened in the other before the first tab's page loads. The
    worklist says nothing of it and takes nothing; the consult's page then says it once."""
    _asking(monkeypatch, fake)
    doctor = portal_signed_in(app, "doctor")
    page = doctor.get(f"/tasks/{TID}").get_data(as_text=True)
    sent = doctor.post(f"/tasks/{TID}/request-info", data={"csrf_token": csrf_token(page), "question": "Xin ECG.",
                                                            "version": ""})
    assert sent.status_code == 302
    worklist = doctor.get("/worklist")
    assert ASKED not in worklist.get_data(as_text=True)
    after = doctor.get(sent.headers["Location"]).get_data(as_text=True)
    assert after.count(ASKED) == 1


def test_an_htmx_render_of_the_consult_page_takes_no_step(app, fake, monkeypatch):  # noqa: F811
    """A part of the page asked for by htmx (a form's answer in place, a refresh) says nothing and leaves the step to
    the page's own load."""
    _asking(monkeypatch, fake)
    doctor = portal_signed_in(app, "doctor")
    page = doctor.get(f"/tasks/{TID}").get_data(as_text=True)
    sent = doctor.post(f"/tasks/{TID}/request-info", data={"csrf_token": csrf_token(page), "question": "Xin ECG.",
                                                            "version": ""})
    assert ASKED not in doctor.get(f"/tasks/{TID}", headers=HTMX).get_data(as_text=True)
    assert doctor.get(sent.headers["Location"]).get_data(as_text=True).count(ASKED) == 1


def _paid_in_part(tmp_path, monkeypatch, amount: str = "20.000") -> tuple[Any, Any]:
    client = _cashier(tmp_path, monkeypatch, "vi", _Billing())
    token = csrf_token(client.get("/invoices/inv-a").get_data(as_text=True))
    r = client.post("/invoices/inv-a/cash", data={"cash-amount": amount, "csrf_token": token})
    assert r.status_code == 302
    return client, r


@pytest.mark.parametrize("asked", ["/invoices/inv-a", "/invoices/inv-a/status?due=39000"])
def test_an_htmx_ask_of_the_invoice_between_the_cash_and_its_page_leaves_what_was_recorded(tmp_path, monkeypatch,
                                                                                            asked):
    """The invoice page refreshed in place (htmx, ``hx-select``), or its status box's poll, answered between the cash
    form's answer and the page it leads to: the page still says what was recorded and what is still due."""
    client, r = _paid_in_part(tmp_path, monkeypatch)
    between = client.get(asked, headers=HTMX)
    assert RECORDED not in between.get_data(as_text=True)
    page = client.get(r.headers["Location"]).get_data(as_text=True)
    assert page.count(RECORDED) == 1, page[:3000]
    assert RECORDED not in client.get(r.headers["Location"]).get_data(as_text=True)  # said once


def test_the_change_to_give_back_survives_an_htmx_refresh_of_the_invoice(tmp_path, monkeypatch):
    client, r = _paid_in_part(tmp_path, monkeypatch, "50.000")
    client.get("/invoices/inv-a", headers=HTMX)
    assert client.get(r.headers["Location"]).get_data(as_text=True).count('data-testid="cash-change"') == 1


def test_cash_recorded_on_one_invoice_is_not_said_on_another_opened_meanwhile(tmp_path, monkeypatch):
    """The cashier records cash on one invoice and opens another in a second tab before the first tab's page loads:
    the other invoice says nothing of it (it said "Recorded 20.000 ₫ cash" there), and the first says it."""
    client, r = _paid_in_part(tmp_path, monkeypatch)
    other = client.get("/invoices/inv-b").get_data(as_text=True)
    assert RECORDED not in other
    assert client.get(r.headers["Location"]).get_data(as_text=True).count(RECORDED) == 1


def _finished_by_another(client: Any, billing: Any) -> Any:  # noqa: F811
    billing["rows"] = [{**CREDIT, "amount": 5000}]
    billing["started"] = {"amount": 6000, "cashier": "portal-cashier", "reason": "Trả một phần tiền thừa",
                          "startedBy": {"cashier": "thu-ngan-an", "cashierName": "Nguyễn Thị An", "at": None}}
    page = client.get("/refunds").get_data(as_text=True)
    form = {"csrf_token": csrf_token(page), "payment": "cashier:c1", "txn": "k9", "amount": "5000",
            "method": "cash", "reason": "Trả lại tiền thừa", "confirming": "give-back", "confirm": "give-back"}
    r = client.post("/refunds/give-back", data=form)
    assert r.status_code == 302
    return r


def test_a_refund_finished_for_another_cashier_survives_an_htmx_answer_of_the_list(money_app, billing):  # noqa: F811
    """The list to refund rendered for htmx (a give-back's form answered in place) between a give-back's answer and
    the list it leads to: the list still says who started it and what to hand over."""
    client = portal_signed_in(money_app, "cashier")
    r = _finished_by_another(client, billing)
    assert FINISHED not in client.get("/refunds", headers=HTMX).get_data(as_text=True)
    assert client.get("/invoices/inv-a").status_code in (200, 502, 503)  # another page meanwhile: takes nothing
    page = client.get(r.headers["Location"]).get_data(as_text=True)
    assert page.count(FINISHED) == 1, page[:3000]
    assert FINISHED not in client.get(r.headers["Location"]).get_data(as_text=True)


def test_a_step_not_taken_is_not_said_minutes_later_nor_to_the_next_sign_in(tmp_path, monkeypatch):
    """A page whose redirect was not followed: its step is not said when the page is opened minutes later, nor after
    signing out and in again (the messages name the sign-in they were made in)."""
    from sen_portal.web import notices

    client, r = _paid_in_part(tmp_path, monkeypatch)
    real = time.time
    monkeypatch.setattr(notices.time, "time", lambda: real() + notices.KEPT_SECONDS + 1)
    assert RECORDED not in client.get(r.headers["Location"]).get_data(as_text=True)
    monkeypatch.setattr(notices.time, "time", real)

    client, r = _paid_in_part(tmp_path, monkeypatch)
    page = client.get("/invoices").get_data(as_text=True)
    assert client.post("/logout", data={"csrf_token": csrf_token(page)}).status_code in (302, 303)
    again = portal_signed_in(client.application, "cashier")
    again._cookies.update({k: v for k, v in client._cookies.items() if k[2] == notices.COOKIE})
    assert RECORDED not in again.get(r.headers["Location"]).get_data(as_text=True)


def test_the_same_sentence_for_the_same_page_is_kept_once(tmp_path, monkeypatch):
    """A form sent again after its answer was lost, when that answer's cookie did reach the browser: the page says
    what was done once, not twice (the change to give back was said twice)."""
    from flask import g
    from sen_portal.web import notices

    client = _cashier(tmp_path, monkeypatch, "vi", _Billing())
    with client.application.test_request_context("/invoices/inv-a/cash", method="POST"):
        for _ in range(2):
            notices.say("/invoices/inv-a", "cash-change", "Trả lại 30.000 ₫")
        notices.say("/invoices/inv-b", "cash-change", "Trả lại 30.000 ₫")
        assert [n[:3] for n in g.notices] == [["/invoices/inv-a", "cash-change", "Trả lại 30.000 ₫"],
                                              ["/invoices/inv-b", "cash-change", "Trả lại 30.000 ₫"]]
