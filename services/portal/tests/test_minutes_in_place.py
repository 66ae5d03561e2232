"""The hub doctor's minutes are sent in place (htmx), as the clinic's answer and the consult's messages are
(test_answer_in_place.py): the minutes are a long form filled between two patients, and a connection lost while
the browser posted them was Chromium's own English "This site can't be reached", Back perhaps losing the text.
Now the page stays, the form's own box says the connection failed (app.js's data-live-error,
tests/browser/test_slow_link.py) and the minutes are sent again on the version the page showed (If-Match): the
consult is completed once. Done: the consult's page (HX-Redirect), saying once that it is completed; refused by
the form's checks or by teleconsult: the box again (200), the refusal in it and what was typed kept; the
consult changed meanwhile (cancelled, completed): the whole page (HX-Retarget #main), saying what changed, the
minutes kept below. Without JavaScript a plain post as before. Flask's test client, teleconsult faked at the
HTTP client (test_consult_takeover.Takeover)."""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import urlsplit

import pytest
from sen_shared import http

from services.portal.tests.test_consult_takeover import ME, Takeover, _minutes, _minutes_page
from services.portal.tests.test_visit_changes import TID, _text
from tests.support import flashed_steps, portal_app, portal_signed_in

HTMX = {"HX-Request": "true", "HX-Current-URL": f"http://localhost/tasks/{TID}", "HX-Target": "consult-minutes"}
TYPED = "BS. Nguyễn Văn An — chủ trì"


AFTER = {"complete": ("completed", ME, "2026-12-05T10:15:00+07:00"),
         "request-info": ("on-hold", ME, "2026-12-05T10:20:00+07:00")}


class Signing(Takeover):
    """``$complete`` (``$request-info``) on the Task's version completes it (puts it on hold): its next version,
    as teleconsult does; ``refuse``: teleconsult's refusal of ``$complete`` instead (an OperationOutcome, 409)."""

    refuse: str | None = None

    def __call__(self, method: str, url: str, **kw: Any) -> http.Response:
        if urlsplit(url).path.endswith(f"/fhir/Task/{TID}/$complete") and method == "POST" and self.refuse:
            outcome = {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "business-rule",
                                                                      "diagnostics": self.refuse}]}
            return http.Response(409, {}, json.dumps(outcome).encode())
        r = super().__call__(method, url, **kw)
        step = re.search(rf"/fhir/Task/{TID}/\$(complete|request-info)$", urlsplit(url).path)
        if step and method == "POST" and r.status_code == 200:
            self.change(*AFTER[step.group(1)])
        return r


@pytest.fixture()
def fake(monkeypatch: pytest.MonkeyPatch) -> Signing:
    from sen_portal.web import directory

    monkeypatch.setattr(directory, "names", lambda rtype: {
        "Organization": {"bvdk-dong-thap": "Bệnh viện Đa khoa Đồng Tháp", "tyt-my-hiep": "Trạm Y tế xã Mỹ Hiệp"},
        "Practitioner": {"bs-nguyen-van-an": "BS. Nguyễn Văn An"}}[rtype])
    return Signing.answering(monkeypatch)


@pytest.fixture()
def app(tmp_path, monkeypatch: pytest.MonkeyPatch, fake: Signing):
    return portal_app(tmp_path, monkeypatch, backend="http://127.0.0.1:9", SEN_PORTAL_CACHE_SECONDS="0")


def _box(page: str) -> str:
    """The minutes' box (#consult-minutes) of a page or of an answer swapped into it."""
    start = page.index('<div id="consult-minutes">')
    end = page.index("</form></section>", start)
    return page[start:end]


def test_the_minutes_are_sent_in_place_and_sent_again_complete_the_consult_once(app, fake):
    c = portal_signed_in(app, "doctor")
    page = _minutes_page(c, fake)
    box = _box(page)
    form = re.search(r"<form[^>]*>", box).group(0)
    assert f'hx-post="/tasks/{TID}/complete"' in form and 'hx-target="#consult-minutes"' in form
    assert 'hx-select="#consult-minutes"' in form and 'data-live-error="minutes-live-error"' in form
    # the diagnosis box's suggestions are its own requests: they inherit neither the box nor the busy button
    assert 'hx-disinherit="hx-select hx-disabled-elt"' in form
    # the box app.js shows when the connection fails on the way, hidden until then, in the page's language
    assert re.search(r'<div id="minutes-live-error" class="alert error" role="alert" hidden>Không gửi được yêu cầu '
                     r"do lỗi kết nối\. Nội dung bạn đã nhập vẫn được giữ; hãy thử lại\.</div>", box)
    minutes = {**_minutes(page, TYPED), "version": "3"}
    r = c.post(f"/tasks/{TID}/complete", headers=HTMX, data=minutes)
    assert r.status_code == 204 and r.headers["HX-Redirect"] == f"/tasks/{TID}" and "HX-Refresh" not in r.headers
    assert flashed_steps(c) == [(f"/tasks/{TID}", "done=1")]
    # its answer lost on the way back, the same form sent again (the page's version): nothing sent twice; the
    # page (whole: the form is gone) says the doctor completed it, the minutes below
    r = c.post(f"/tasks/{TID}/complete", headers=HTMX, data=minutes)
    body = r.get_data(as_text=True)
    assert r.status_code == 200 and r.headers["HX-Retarget"] == "#main" and r.headers["HX-Reselect"] == "#main"
    assert r.headers["HX-Reswap"] == "outerHTML"
    assert len(fake.completed) == 1 and [h for _, h in fake.step_headers] == [{"If-Match": 'W/"3"'}] * 2
    assert "Bạn đã hoàn thành ca hội chẩn này lúc 05/12/2026 10:15" in _text(body)
    assert '<div id="consult-minutes"></div>' in body  # nothing to sign any more


def test_minutes_refused_in_place_come_back_in_their_box_with_what_was_typed(app, fake):
    c = portal_signed_in(app, "doctor")
    page = _minutes_page(c, fake)
    # the form's own check (a field left empty): the box again with its error, 200 (htmx swaps only a 2xx)
    r = c.post(f"/tasks/{TID}/complete", headers=HTMX, data={**_minutes(page, TYPED), "findings": "", "version": "3"})
    assert r.status_code == 200 and "HX-Retarget" not in r.headers and fake.step_headers == []
    box = _box(r.get_data(as_text=True))
    assert 'id="findings-error"' in box and "Tăng huyết áp 5 năm.</textarea>" in box
    # teleconsult's refusal: said in the box, the minutes kept
    fake.refuse = "the consult's visit is still to come"
    r = c.post(f"/tasks/{TID}/complete", headers=HTMX, data={**_minutes(page, TYPED), "version": "3"})
    assert r.status_code == 200 and "HX-Retarget" not in r.headers and fake.completed == []
    box = _box(r.get_data(as_text=True))
    assert re.search(r'<div class="alert error" role="alert" data-testid="minutes-problem">[^<]+</div>', box)
    assert "HA 170/100 mmHg.</textarea>" in box and "Tăng huyết áp 5 năm.</textarea>" in box
    # without JavaScript: the page, the refusal above, as before (409)
    plain = c.post(f"/tasks/{TID}/complete", data={**_minutes(page, TYPED), "version": "3"})
    assert plain.status_code == 409 and "HX-Retarget" not in plain.headers
    assert "HA 170/100 mmHg.</textarea>" in plain.get_data(as_text=True)


def test_minutes_on_a_consult_cancelled_meanwhile_swap_the_whole_page_saying_so(app, fake):
    c = portal_signed_in(app, "doctor")
    page = _minutes_page(c, fake)
    fake.change("cancelled", ME, "2026-12-05T09:40:00+07:00")
    r = c.post(f"/tasks/{TID}/complete", headers=HTMX, data={**_minutes(page, TYPED), "version": "3"})
    body = r.get_data(as_text=True)
    assert r.status_code == 200 and r.headers["HX-Retarget"] == "#main" and fake.completed == []
    assert "Phòng khám đã hủy ca hội chẩn này lúc 05/12/2026 09:40." in _text(body)
    unsent = body[body.index('data-testid="unsent"'):]
    assert "HA 170/100 mmHg." in unsent and "Amlodipin." in unsent


def test_a_question_to_the_clinic_is_sent_in_place_and_sent_again_asks_once(app, fake):
    """The doctor's question (typed: often long) goes the minutes' way: done, the consult's page saying it was
    asked; its answer lost and sent again on the page's version, nothing is asked twice and the page says a
    question is open; empty, the box again with its error."""
    c = portal_signed_in(app, "doctor")
    page = _minutes_page(c, fake, "accepted")
    box = page[page.index('<div id="consult-question">'):]
    form = re.search(r"<form[^>]*>", box).group(0)
    assert f'hx-post="/tasks/{TID}/request-info"' in form and 'hx-target="#consult-question"' in form
    assert 'data-live-error="question-live-error"' in form and 'id="question-live-error"' in box
    asked = {"csrf_token": re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page).group(1),
             "question": "Xin gửi kết quả siêu âm tim gần nhất.", "version": "3"}
    empty = c.post(f"/tasks/{TID}/request-info", headers=HTMX, data={**asked, "question": ""})
    assert empty.status_code == 200 and "HX-Retarget" not in empty.headers and fake.step_headers == []
    assert 'id="question-error"' in empty.get_data(as_text=True).split('<div id="consult-question">')[1]

    r = c.post(f"/tasks/{TID}/request-info", headers=HTMX, data=asked)
    assert r.status_code == 204 and r.headers["HX-Redirect"] == f"/tasks/{TID}"
    assert flashed_steps(c) == [(f"/tasks/{TID}", "asked=1")]
    r = c.post(f"/tasks/{TID}/request-info", headers=HTMX, data=asked)  # the answer lost: sent again
    assert r.status_code == 200 and r.headers["HX-Retarget"] == "#main"
    assert [h for _, h in fake.step_headers] == [{"If-Match": 'W/"3"'}] * 2
    assert "Trong lúc đó đã có câu hỏi gửi phòng khám (05/12/2026 10:20): ca hội chẩn đang chờ trả lời." in \
        _text(r.get_data(as_text=True))


def test_a_reject_is_sent_in_place_its_confirmation_in_its_box(app, fake):
    """The reject's reason (typed) goes the same way, its confirmation step too: pressed, the box again with the
    step and the reason, nothing sent; confirmed, the worklist (HX-Redirect) saying it was rejected."""
    fake.status, fake.owner, fake.version, fake.history = "requested", "Organization/bvdk-dong-thap", 1, \
        fake.history[:1]
    c = portal_signed_in(app, "doctor")
    page = c.get(f"/tasks/{TID}").get_data(as_text=True)
    box = page[page.index('<div id="consult-reject">'):]
    form = re.search(r"<form[^>]*>", box).group(0)
    assert f'hx-post="/tasks/{TID}/reject"' in form and 'data-live-error="reject-live-error"' in form
    reject = {"csrf_token": re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', box).group(1),
              "reason": "Ngoài chuyên khoa của bệnh viện.", "version": "1"}
    r = c.post(f"/tasks/{TID}/reject", headers={**HTMX, "HX-Target": "consult-reject"}, data=reject)
    body = r.get_data(as_text=True)
    assert r.status_code == 200 and "HX-Retarget" not in r.headers and fake.step_headers == []
    swapped = body[body.index('<div id="consult-reject">'):]
    assert 'data-testid="confirm-tick"' in swapped and "Ngoài chuyên khoa của bệnh viện.</textarea>" in swapped
    r = c.post(f"/tasks/{TID}/reject", headers={**HTMX, "HX-Target": "consult-reject"},
               data={**reject, "confirming": "reject", "confirm": "reject"})
    assert r.status_code == 204 and r.headers["HX-Redirect"] == "/worklist" and fake.ops == ["reject"]
    assert flashed_steps(c) == [("/worklist", "rejected=1")]
