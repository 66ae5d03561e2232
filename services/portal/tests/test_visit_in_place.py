"""The hub doctor's last forms the browser posted are sent in place (htmx), as the minutes, the question and the
reject are (test_minutes_in_place.py): a free time to book or to move the visit to, the visit's cancel and its
no-show (into the visit's box, ``#visit``), and the consult given to another doctor (``#consult-reassign``).
A connection lost on the way keeps the page and what was typed (tests/browser/test_slow_link.py); each form
carries a key made when the page is shown, and the request it makes carries an ``Idempotency-Key`` of it and of
what it asks, so the same press sent again after its answer was lost books, moves, cancels, marks or gives the
consult once: teleconsult replays its first answer (faked here at the transport, as ``sen_shared.idempotency_key``
does), and a visit found already as the form asked is said done without sending anything. A time taken meanwhile
(teleconsult's 409) is said in the visit's box with the free times found again, the rest of the page kept.
Without JavaScript the forms post as before. Flask's test client, teleconsult faked at the HTTP client."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from sen_shared import http

from services.portal.tests.test_consult_takeover import BINH, CUONG, Takeover
from services.portal.tests.test_visit_changes import TID, TZ, FakeTeleconsult, _outcome, _text
from tests.support import csrf_token, flashed_steps, portal_app, portal_signed_in

HTMX = {"HX-Request": "true", "HX-Current-URL": f"http://localhost/tasks/{TID}/slots", "HX-Target": "visit"}


class Replaying:
    """teleconsult's ``Idempotency-Key`` at the transport: a request with a key already answered is answered as
    the first time, nothing done again; ``sent``: each POST's path and key."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.kept, self.sent = inner, {}, []

    def __call__(self, method: str, url: str, **kw: Any) -> http.Response:
        key = (kw.get("headers") or {}).get("Idempotency-Key")
        if method == "POST":
            self.sent.append((urlsplit(url).path, key))
        if key and key in self.kept:
            return self.kept[key]
        r = self.inner(method, url, **kw)
        if key and r.status_code < 500:
            self.kept[key] = r
        return r

    def keys(self, op: str) -> list[str | None]:
        return [k for p, k in self.sent if p.endswith(op)]


class Booking(FakeTeleconsult):
    """The visit's operations, and ``$hold`` / ``$book`` as teleconsult answers them: a slot someone else took
    (``taken``) or one of an active visit is 409 (a conflict)."""

    def __call__(self, method: str, url: str, **kw: Any) -> http.Response:
        path = urlsplit(url).path
        if method == "POST" and path.endswith("/fhir/Appointment/$hold"):
            proposal = kw["json"]["parameter"][0]["resource"]
            slot = proposal["slot"][0]["reference"]
            if slot[5:] in self.taken or any(a["slot"] == proposal["slot"] for a in self.active()):
                return _outcome(409, f"{slot} is already booked by another appointment; find another slot")
            held = self.book(datetime.fromisoformat(proposal["start"]), "pending")
            held["slot"] = proposal["slot"]
            return self._bundle([held])
        if method == "POST" and path.endswith("/fhir/Appointment/$book"):
            aid = kw["json"]["parameter"][0]["valueReference"]["reference"].split("/")[-1]
            if self.appts[aid]["status"] != "pending":
                return _outcome(409, f"Appointment/{aid} is {self.appts[aid]['status']}: it cannot be booked")
            self.change(aid, "booked")
            return self._bundle([self.appts[aid]])
        return super().__call__(method, url, **kw)


@pytest.fixture()
def fake(monkeypatch: pytest.MonkeyPatch) -> Booking:
    f = Booking(datetime.now(TZ).replace(second=0, microsecond=0) + timedelta(days=1))
    monkeypatch.setattr(http, "request", Replaying(f))
    return f


@pytest.fixture()
def sent(fake: Booking) -> Replaying:
    return http.request  # type: ignore[return-value]


@pytest.fixture()
def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake: Booking):
    return portal_app(tmp_path, monkeypatch, backend="http://127.0.0.1:9", SEN_PORTAL_CACHE_SECONDS="0")


def _forms(page: str, action: str) -> list[tuple[str, dict[str, str]]]:
    """Each form posting to ``action``: its opening tag and its fields."""
    found = re.findall(rf'(<form method="post" action="/tasks/{TID}/{action}"[^>]*>)(.*?)</form>', page, re.S)
    return [(tag, dict(re.findall(r'name="([\w-]+)" (?:type="\w+" )?value="([^"]*)"', body))) for tag, body in found]


def _visit_box(page: str) -> str:
    start = page.index('<section class="card" id="visit">')
    return page[start:page.index("</section>", start)]


def _in_visit_box(tag: str, action: str) -> None:
    assert f'hx-post="/tasks/{TID}/{action}"' in tag and 'hx-target="#visit"' in tag, tag
    assert 'hx-select="#visit"' in tag and 'data-live-error="visit-live-error"' in tag, tag


def _slots(c: Any, days: int = 7) -> str:
    r = c.get(f"/tasks/{TID}/slots", query_string={"start": datetime.now(TZ).strftime("%d/%m/%Y"), "days": days})
    assert r.status_code == 200, r.get_data(as_text=True)[:800]
    return r.get_data(as_text=True)


def test_a_free_time_booked_in_place_and_pressed_again_books_one_visit(app, fake, sent):
    fake.appts.clear()  # no visit yet: the free times book one
    c = portal_signed_in(app, "doctor")
    page = _slots(c)
    box = _visit_box(page)
    assert re.search(r'<div id="visit-live-error" class="alert error" role="alert" hidden>Không gửi được yêu cầu '
                     r"do lỗi kết nối\. Nội dung bạn đã nhập vẫn được giữ; hãy thử lại\.</div>", box)
    buttons = _forms(page, "book")
    assert len(buttons) == 3
    for tag, fields in buttons:
        _in_visit_box(tag, "book")
        assert re.fullmatch(r"[0-9a-f]{32}", fields["key"]) and fields["search_days"] == "7"
    assert len({f["key"] for _, f in buttons}) == 1  # one key a page shown
    chosen = buttons[1][1]
    r = c.post(f"/tasks/{TID}/book", headers=HTMX, data=chosen)
    assert r.status_code == 204 and r.headers["HX-Redirect"] == f"/tasks/{TID}"
    assert flashed_steps(c) == [(f"/tasks/{TID}", "booked=1")]
    # its answer lost on the way back, the same time pressed again: teleconsult answers both steps as the first
    # time, one visit booked
    r = c.post(f"/tasks/{TID}/book", headers=HTMX, data=chosen)
    assert r.status_code == 204 and r.headers["HX-Redirect"] == f"/tasks/{TID}"
    assert [a["status"] for a in fake.appts.values()] == ["booked"]
    holds, books = sent.keys("/$hold"), sent.keys("/$book")
    assert len(holds) == 2 and holds[0] == holds[1] and chosen["key"] in holds[0]
    assert len(books) == 2 and books[0] == books[1] and holds[0] != books[0]
    # another page shown is another key
    assert _forms(_slots(c), "visit/move")[0][1]["key"] != chosen["key"]


def test_a_time_taken_meanwhile_is_said_in_the_visit_box_with_the_free_times_again(app, fake, sent):
    fake.appts.clear()
    c = portal_signed_in(app, "doctor")
    page = _slots(c, days=5)
    chosen = _forms(page, "book")[0][1]
    fake.taken.add(chosen["slot"])  # someone else books it meanwhile
    r = c.post(f"/tasks/{TID}/book", headers=HTMX, data=chosen)
    body = r.get_data(as_text=True)
    assert r.status_code == 200 and "HX-Retarget" not in r.headers and fake.active() == []
    box = _visit_box(body)
    said = re.search(r'<div class="alert error" role="alert" data-testid="visit-problem">([^<]+)</div>', box)
    assert said and said.group(1) == "Giờ này vừa được một lịch hẹn khác đặt. Hãy chọn giờ khác."
    again = _forms(box, "book")  # the next step: the free times of the same search, found again
    assert len(again) == 3 and all(f["search_days"] == "5" for _, f in again)
    assert [p for p, _ in sent.sent].count("/fhir/Appointment/$find") == 2
    # without JavaScript: the page, the refusal above, the free times again (409)
    plain = c.post(f"/tasks/{TID}/book", data=chosen)
    assert plain.status_code == 409 and "Giờ này vừa được một lịch hẹn khác đặt" in _text(plain.get_data(as_text=True))
    assert len(_forms(plain.get_data(as_text=True), "book")) == 3


def test_a_move_sent_in_place_and_again_moves_the_visit_once(app, fake, sent):
    c = portal_signed_in(app, "doctor")
    page = _slots(c)
    buttons = _forms(page, "visit/move")
    for tag, fields in buttons:
        _in_visit_box(tag, "visit/move")
    chosen = buttons[2][1]
    r = c.post(f"/tasks/{TID}/visit/move", headers=HTMX, data=chosen)
    assert r.status_code == 204 and r.headers["HX-Redirect"] == f"/tasks/{TID}"
    assert flashed_steps(c) == [(f"/tasks/{TID}", "visit=moved")]
    r = c.post(f"/tasks/{TID}/visit/move", headers=HTMX, data=chosen)  # the answer lost: sent again
    assert r.status_code == 204 and r.headers["HX-Redirect"] == f"/tasks/{TID}"
    assert flashed_steps(c) == [(f"/tasks/{TID}", "visit=moved")]  # kept once: said done once, by the page
    [moved] = fake.active()
    assert moved["slot"] == [{"reference": f"Slot/{chosen['slot']}"}] and len(fake.appts) == 2
    assert len(sent.keys("/a-1/$reschedule")) == 1 and chosen["key"] in sent.keys("/a-1/$reschedule")[0]
    # a time taken meanwhile: said in the box, the visit where it was, the times again
    other = _forms(_slots(c), "visit/move")[0][1]
    fake.taken.add(other["slot"])
    r = c.post(f"/tasks/{TID}/visit/move", headers=HTMX, data=other)
    box = _visit_box(r.get_data(as_text=True))
    assert r.status_code == 200 and "HX-Retarget" not in r.headers and fake.active() == [moved]
    assert "Giờ này vừa có người khác đặt" in _text(box) and len(_forms(box, "visit/move")) == 3


def test_a_visit_moved_by_someone_else_to_another_time_is_still_said_so(app, fake, sent):
    c = portal_signed_in(app, "doctor")
    chosen = _forms(_slots(c), "visit/move")[0][1]
    fake.book(datetime.now(TZ) + timedelta(days=5))  # another tab moved it elsewhere
    fake.change("a-1", "cancelled", "rescheduled")
    r = c.post(f"/tasks/{TID}/visit/move", headers=HTMX, data=chosen)
    assert r.status_code == 200 and r.headers["HX-Retarget"] == "#main"  # the whole page: what it is now
    assert "đã được người khác thay đổi" in _text(r.get_data(as_text=True)) and not sent.keys("$reschedule")


def test_a_cancel_sent_in_place_and_again_cancels_the_visit_once(app, fake, sent):
    c = portal_signed_in(app, "doctor")
    page = c.get(f"/tasks/{TID}").get_data(as_text=True)
    [(tag, fields)] = _forms(page, "visit/cancel")
    _in_visit_box(tag, "visit/cancel")
    assert re.fullmatch(r"[0-9a-f]{32}", fields["visit-key"])
    sent_form = {"csrf_token": csrf_token(page), "appointment": "a-1", "visit-key": fields["visit-key"],
                 "visit-reason": "Bệnh nhân chuyển viện"}
    headers = {**HTMX, "HX-Current-URL": f"http://localhost/tasks/{TID}"}
    r = c.post(f"/tasks/{TID}/visit/cancel", headers=headers, data={**sent_form, "visit-reason": ""})
    assert r.status_code == 200 and "Nêu lý do." in _text(_visit_box(r.get_data(as_text=True)))
    r = c.post(f"/tasks/{TID}/visit/cancel", headers=headers, data=sent_form)  # the step, in the box
    box = _visit_box(r.get_data(as_text=True))
    assert r.status_code == 200 and 'data-testid="confirm-tick"' in box and "Bệnh nhân chuyển viện</textarea>" in box
    assert f'value="{fields["visit-key"]}"' in box  # the key kept through the step
    confirmed = {**sent_form, "confirming": "visit-cancel", "confirm": "visit-cancel"}
    r = c.post(f"/tasks/{TID}/visit/cancel", headers=headers, data=confirmed)
    assert r.status_code == 204 and r.headers["HX-Redirect"] == f"/tasks/{TID}"
    assert flashed_steps(c) == [(f"/tasks/{TID}", "visit=cancelled")]
    r = c.post(f"/tasks/{TID}/visit/cancel", headers=headers, data=confirmed)  # the answer lost: sent again
    assert r.status_code == 204 and flashed_steps(c) == [(f"/tasks/{TID}", "visit=cancelled")]  # kept once
    assert len(sent.keys("/a-1/$cancel")) == 1 and fields["visit-key"] in sent.keys("/a-1/$cancel")[0]
    assert fake.appts["a-1"]["cancelationReason"] == {"text": "Bệnh nhân chuyển viện"}


def test_a_visit_cancelled_by_someone_else_for_another_reason_is_still_said_so(app, fake, sent):
    c = portal_signed_in(app, "doctor")
    page = c.get(f"/tasks/{TID}").get_data(as_text=True)
    fake.change("a-1", "cancelled", "Phòng khám báo bận")
    r = c.post(f"/tasks/{TID}/visit/cancel", headers=HTMX, data={
        "csrf_token": csrf_token(page), "appointment": "a-1", "visit-reason": "Trùng lịch",
        "confirming": "visit-cancel", "confirm": "visit-cancel"})
    assert r.status_code == 200 and r.headers["HX-Retarget"] == "#main"
    assert "đã bị người khác hủy" in _text(r.get_data(as_text=True)) and not sent.keys("$cancel")


def test_a_no_show_sent_in_place_and_again_is_marked_once(app, fake, sent):
    fake.appts.clear()
    fake.book(datetime.now(TZ) - timedelta(minutes=20))
    c = portal_signed_in(app, "doctor")
    page = c.get(f"/tasks/{TID}").get_data(as_text=True)
    [(tag, fields)] = _forms(page, "visit/noshow")
    _in_visit_box(tag, "visit/noshow")
    headers = {**HTMX, "HX-Current-URL": f"http://localhost/tasks/{TID}"}
    r = c.post(f"/tasks/{TID}/visit/noshow", headers=headers, data=fields)  # the step, in the box
    box = _visit_box(r.get_data(as_text=True))
    assert r.status_code == 200 and 'data-testid="confirm-tick"' in box and f'value="{fields["key"]}"' in box
    confirmed = {**fields, "confirming": "visit-noshow", "confirm": "visit-noshow"}
    for times in (1, 2):  # the second: its answer lost, sent again
        r = c.post(f"/tasks/{TID}/visit/noshow", headers=headers, data=confirmed)
        assert r.status_code == 204 and r.headers["HX-Redirect"] == f"/tasks/{TID}"
        assert flashed_steps(c) == [(f"/tasks/{TID}", "visit=noshow")]  # kept once, however often sent
    assert len(sent.keys("$noshow")) == 1 and fields["key"] in sent.keys("$noshow")[0]
    assert fake.appts["a-2"]["status"] == "noshow"


class Giving(Takeover):
    """``$reassign`` gives the consult to the doctor named (its next version), as teleconsult does."""

    def __call__(self, method: str, url: str, **kw: Any) -> http.Response:
        r = super().__call__(method, url, **kw)
        if urlsplit(url).path.endswith(f"/fhir/Task/{TID}/$reassign") and r.status_code == 200:
            given = kw["json"]["parameter"][0]["valueReference"]["reference"]
            self.change("requested", given, "2026-12-05T09:45:00+07:00")
        return r


@pytest.fixture()
def giving(monkeypatch: pytest.MonkeyPatch) -> Giving:
    from sen_portal.web import directory

    g = Giving(datetime.now(TZ) + timedelta(days=1))
    g.status, g.owner, g.version, g.history = "requested", "Organization/bvdk-dong-thap", 1, g.history[:1]
    monkeypatch.setattr(http, "request", Replaying(g))
    monkeypatch.setattr(directory, "names", lambda rtype: {
        "Organization": {"bvdk-dong-thap": "Bệnh viện Đa khoa Đồng Tháp", "tyt-my-hiep": "Trạm Y tế xã Mỹ Hiệp"},
        "Practitioner": {"bs-nguyen-van-an": "BS. Nguyễn Văn An", "bs-tran-thi-binh": "BS. Trần Thị Bình",
                         "bs-le-van-cuong": "BS. Lê Văn Cường"}}[rtype])
    return g


def test_a_consult_given_in_place_and_given_again_is_given_once(tmp_path, monkeypatch, giving):
    from sen_portal.web import doctor

    monkeypatch.setattr(doctor, "_hub_doctors", lambda facility, me: [(BINH, "BS. Trần Thị Bình"),
                                                                      (CUONG, "BS. Lê Văn Cường")])
    app = portal_app(tmp_path, monkeypatch, backend="http://127.0.0.1:9", SEN_PORTAL_CACHE_SECONDS="0")
    c = portal_signed_in(app, "doctor")
    page = c.get(f"/tasks/{TID}").get_data(as_text=True)
    [(tag, fields)] = _forms(page, "reassign")
    assert f'hx-post="/tasks/{TID}/reassign"' in tag and 'hx-target="#consult-reassign"' in tag
    assert 'data-live-error="reassign-live-error"' in tag and 'id="reassign-live-error"' in page
    headers = {**HTMX, "HX-Current-URL": f"http://localhost/tasks/{TID}", "HX-Target": "consult-reassign"}
    chosen = {**fields, "practitioner": CUONG}
    r = c.post(f"/tasks/{TID}/reassign", headers=headers, data=chosen)  # the step: in the box, nothing sent
    body = r.get_data(as_text=True)
    assert r.status_code == 200 and "HX-Retarget" not in r.headers and giving.step_headers == []
    [(tag, step)] = _forms(body[body.index('<div id="consult-reassign">'):], "reassign")
    assert 'data-testid="reassign-confirm"' in tag and step["key"] == fields["key"] and step["practitioner"] == CUONG
    confirmed = {**step, "confirming": "reassign", "confirm": "reassign"}
    r = c.post(f"/tasks/{TID}/reassign", headers=headers, data=confirmed)
    assert r.status_code == 204 and r.headers["HX-Redirect"] == "/worklist"
    assert flashed_steps(c) == [("/worklist", "reassigned=bs-le-van-cuong")]
    # its answer lost on the way back, sent again on the same version: teleconsult replays its first answer
    r = c.post(f"/tasks/{TID}/reassign", headers=headers, data=confirmed)
    assert r.status_code == 204 and r.headers["HX-Redirect"] == "/worklist"
    assert giving.ops == ["reassign"] and giving.owner == CUONG and giving.version == 2
    keys = Replaying.keys(http.request, "$reassign")  # type: ignore[arg-type]
    assert len(keys) == 2 and keys[0] == keys[1] and fields["key"] in keys[0]
