"""The clinic's answer to the hub's question and either side's message are sent in place (htmx), as the consult
form is: on a clinic's flaky link a connection lost while the browser posted them was Chromium's own English
"This site can't be reached", the answer's files gone, and a message sent again after Back was a second message
(the page came back with a new form key). Now the page stays, says so in the form's own box (app.js's
data-live-error, tests/browser/test_slow_link.py) and the form is sent again with the same key: one answer, one
file, one message. Done: the consult's page (HX-Redirect), saying once that it was sent; refused: the box again,
with the refusal and what was typed, even once the consult is no longer on hold. Flask's test client, the
back-ends scripted (test_clinic_consult_page.Backends)."""

from __future__ import annotations

import io
import re

from sen_portal.web.backend import BackendError

from services.portal.tests.test_clinic_consult_page import (  # noqa: F401 - client: a fixture
    PDF,
    Backends,
    _by_id,
    client,
    sign_in,
)
from tests.support import csrf_token, flashed_steps

HTMX = {"HX-Request": "true", "HX-Current-URL": "http://localhost/consults/t1", "HX-Target": "consult-answer"}


def _answer_form(page: str) -> tuple[str, str]:
    box = _by_id(page, "consult-answer")
    form = re.search(r"<form[^>]*>", box).group(0)
    return box, form


def test_the_answer_is_sent_in_place_and_twice_is_answered_once(client, monkeypatch):  # noqa: F811
    backends = Backends(monkeypatch)
    backends.on_hold()
    sign_in(client)
    page = client.get("/consults/t1").get_data(as_text=True)
    box, form = _answer_form(page)
    assert 'hx-post="/consults/t1/answer"' in form and 'hx-target="#consult-answer"' in form
    assert 'hx-select="#consult-answer"' in form and 'hx-encoding="multipart/form-data"' in form
    # the box app.js shows when the connection fails on the way, in the box, hidden until then
    assert 'data-live-error="answer-live-error"' in form
    assert re.search(r'<div id="answer-live-error" class="alert error" role="alert" hidden>Không gửi được yêu cầu do '
                     r"lỗi kết nối\. Nội dung bạn đã nhập vẫn được giữ; hãy thử lại\.</div>", box)
    key = re.search(r'name="key" type="hidden" value="([0-9a-f]{32})"', box).group(1)
    for _ in range(2):  # the answer lost on the way back, sent again: the same form, the same key
        r = client.post("/consults/t1/answer", headers=HTMX, content_type="multipart/form-data", data={
            "answer": "Phim X quang kèm theo.", "key": key, "csrf_token": csrf_token(page),
            "files": [(io.BytesIO(PDF), "x-quang.pdf", "application/pdf")]})
        assert r.status_code == 204 and r.headers["HX-Redirect"] == "/consults/t1" and "HX-Refresh" not in r.headers
    assert flashed_steps(client) == [("/consults/t1", "answered=1")]  # kept once, said once by the page it leads to
    docs = [h for (path, _), h in zip(backends.posted, backends.headers) if path == "/fhir/DocumentReference"]
    answers = [h for (path, _), h in zip(backends.posted, backends.headers) if path.endswith("/$provide-info")]
    assert len(docs) == 2 and docs[0]["If-None-Exist"] == docs[1]["If-None-Exist"]  # one file
    assert len(answers) == 2 and answers[0]["Idempotency-Key"] == answers[1]["Idempotency-Key"]  # one answer
    assert len(backends.files) == 1


def test_an_answer_refused_in_place_comes_back_in_its_box_with_what_was_typed(client, monkeypatch):  # noqa: F811
    from sen_portal.web import clinic

    backends = Backends(monkeypatch)
    backends.on_hold()
    sign_in(client)
    page = client.get("/consults/t1").get_data(as_text=True)
    backends.task.update(status="requested")  # the hub took its question back meanwhile

    def refuse(service, path, body, **kw):
        raise BackendError("refused", "teleconsult", 409, "the Task is not on-hold", code="business-rule")

    monkeypatch.setattr(clinic, "fhir_post", refuse)
    r = client.post("/consults/t1/answer", headers=HTMX, data={"answer": "Huyết áp đo lại 150/90.",
                                                               "csrf_token": csrf_token(page)})
    assert r.status_code == 200  # htmx swaps only a 2xx: the box with the refusal
    box = _by_id(r.get_data(as_text=True), "consult-answer")
    assert "Huyết áp đo lại 150/90.</textarea>" in box
    assert re.search(r'<div class="alert error" role="alert" data-testid="answer-problem">[^<]+</div>', box)
    # without htmx: the page, the refusal above, as before (422)
    plain = client.post("/consults/t1/answer", data={"answer": "Huyết áp đo lại 150/90.",
                                                     "csrf_token": csrf_token(page)})
    assert plain.status_code == 422 and "Huyết áp đo lại 150/90.</textarea>" in plain.get_data(as_text=True)


def _messages(monkeypatch) -> list[dict[str, str]]:
    """The headers of each $message the portal sends (teleconsult's answer: none needed)."""
    from sen_portal.web import backend

    sent: list[dict[str, str]] = []

    def call(service, method, path, **kw):
        assert (service, method) == ("teleconsult", "POST") and path == "/fhir/Task/t1/$message"
        sent.append(kw.get("headers") or {})

    monkeypatch.setattr(backend, "call", call)
    return sent


def test_a_message_is_sent_in_place_and_twice_is_one_message(client, monkeypatch):  # noqa: F811
    from sen_portal.web import doctor

    Backends(monkeypatch)
    sent = _messages(monkeypatch)
    monkeypatch.setattr(doctor, "_hub_doctors", lambda facility, me: [])
    for user, page_path, action in (("clinic", "/consults/t1", "/consults/t1/message"),
                                    ("doctor", "/tasks/t1", "/tasks/t1/message")):
        sign_in(client, user)
        page = client.get(page_path).get_data(as_text=True)
        box = _by_id(page, "consult-message")
        form = re.search(r"<form[^>]*>", box).group(0)
        assert f'hx-post="{action}"' in form and 'hx-target="#consult-message"' in form
        assert 'hx-select="#consult-message"' in form and 'data-live-error="message-live-error"' in form
        assert re.search(r'<div id="message-live-error" class="alert error" role="alert" hidden>Không gửi được', box)
        key = re.search(r'name="key" type="hidden" value="([0-9a-f]{32})"', box).group(1)
        sent.clear()
        for _ in range(2):  # the way back lost, sent again: the same form, the same key
            r = client.post(action, headers={**HTMX, "HX-Target": "consult-message",
                                             "HX-Current-URL": f"http://localhost{page_path}"},
                            data={"text": "Sáng nay sốt 39,5 °C.", "key": key, "csrf_token": csrf_token(page)})
            assert r.status_code == 204 and r.headers["HX-Redirect"] == f"{page_path}#consult-thread"
            # the same page, to its thread: htmx's location.href only scrolls there; reloaded, it shows the message
            assert r.headers["HX-Refresh"] == "true"
        assert len(sent) == 2 and sent[0]["Idempotency-Key"] == sent[1]["Idempotency-Key"]
        # nothing typed, in place: the box again with its error (200: htmx swaps no 4xx)
        empty = client.post(action, headers=HTMX, data={"text": "", "key": key, "csrf_token": csrf_token(page)})
        assert empty.status_code == 200 and 'id="text-error"' in _by_id(empty.get_data(as_text=True), "consult-message")
        assert len(sent) == 2


def test_signed_out_while_typing_the_sign_in_opens_in_a_new_tab_from_a_form_sent_in_place(client, monkeypatch):  # noqa: F811
    """The session ended while the nurse typed a long answer: sent in place, the problem box's "Đăng nhập lại"
    took the tab to the sign-in page, away from the answer and its files. It opens a new tab now and says so;
    a page the browser posted (no htmx) has no page left behind to keep: the link as before."""
    Backends(monkeypatch)
    sign_in(client)
    page = client.get("/consults/t1").get_data(as_text=True)
    with client.session_transaction() as s:
        s.clear()  # the session ended
    in_place = client.post("/consults/t1/answer", headers=HTMX, data={"answer": "Dài…", "csrf_token": csrf_token(page)})
    said = in_place.get_data(as_text=True)
    # 400: its CSRF token was the ended session's (web._csrf_error)
    assert in_place.status_code == 400 and in_place.headers["HX-Retarget"] == "#page-problem"
    link = re.search(r'<a href="/login\?next=[^"]*" data-testid="back"[^>]*>', said).group(0)
    assert 'target="_blank"' in link and 'rel="noopener"' in link
    assert "Trang đăng nhập mở trong thẻ mới: nội dung bạn đã nhập vẫn ở trang này." in said
    plain = client.post("/consults/t1/answer", data={"answer": "Dài…", "csrf_token": csrf_token(page)})
    assert 'target="_blank"' not in plain.get_data(as_text=True) and 'data-testid="new-tab"' not in plain.get_data(
        as_text=True)
